"""``oh-run``: the one program a sandbox run starts in the guest, and how it is built.

Under TCG every exec in the guest costs tens of milliseconds (``date`` alone ~60 ms, a ``head | tee |
cat`` pipeline ~200 ms, measured in docs/sandboxes.md), so the per-run chores are done by one small
static program instead of a shell script:

    oh-run SECONDS NANOSECONDS SEED_HEX WORKDIR COMMAND_FILE OUTPUT_FILE LIMIT   (command on stdin)

1. sets the clock (a paused clone's clock stopped when it was paused);
2. mixes SEED (host randomness) into the kernel's pool and forces a CRNG reseed (RNDRESEEDCRNG);
3. writes its stdin (the user's command, sent as guest-exec input-data, never argv) to COMMAND_FILE;
4. forks ``/bin/sh COMMAND_FILE`` in WORKDIR, in its own session, stdin /dev/null, stdout and
   stderr on one pipe (interleaved as written), with oom_score_adj 0 (oh-run itself keeps qemu-ga's
   -1000, so the collector outlives an OOM in the guest);
5. copies the first LIMIT bytes of that pipe to its stdout (qemu-ga's capture) and to OUTPUT_FILE (a
   copy the host reads when a run is cut short), and drains the rest, so a flood never reaches the
   agent and the program is never stopped by a full pipe;
6. when the shell exits, kills what it left in its session (background jobs holding the pipe), and
   exits with the shell's status (128+N for a signal).

The host compiles it once (`build`, gcc -static, cached by source hash) and the template copies it to
the guest's tmpfs before its state is saved; images do not need to carry it.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void say(int fd, const char *a, const char *b) {
    if (write(fd, a, strlen(a)) < 0 || write(fd, b, strlen(b)) < 0 || write(fd, "\n", 1) < 0) {}
}

static void write_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0) { if (errno == EINTR) continue; return; }
        buf += w; n -= (size_t)w;
    }
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int main(int argc, char **argv) {
    if (argc != 8) { say(2, "usage: oh-run SEC NSEC SEED WORKDIR COMMAND OUTPUT LIMIT", ""); return 125; }

    struct timespec now = { strtoll(argv[1], 0, 10), strtol(argv[2], 0, 10) };
    clock_settime(CLOCK_REALTIME, &now);

    unsigned char seed[512];
    size_t n = 0;
    for (const char *h = argv[3]; h[0] && h[1] && n < sizeof seed; h += 2) {
        int a = hexval(h[0]), b = hexval(h[1]);
        if (a < 0 || b < 0) break;
        seed[n++] = (unsigned char)(a << 4 | b);
    }
    int rnd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    if (rnd >= 0) {
        write_all(rnd, (const char *)seed, n);
        ioctl(rnd, RNDRESEEDCRNG);
        close(rnd);
    }

    static char buf[65536];
    int cmd = open(argv[5], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (cmd < 0) { say(1, "oh-run: cannot write ", argv[5]); return 125; }
    for (;;) {
        ssize_t got = read(0, buf, sizeof buf);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        write_all(cmd, buf, (size_t)got);
    }
    close(cmd);

    int out = open(argv[6], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    long long limit = strtoll(argv[7], 0, 10);
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) { say(1, "oh-run: pipe failed", ""); return 125; }

    pid_t child = fork();
    if (child < 0) { say(1, "oh-run: fork failed", ""); return 125; }
    if (child == 0) {
        setsid();
        int adj = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        if (adj >= 0) { write_all(adj, "0", 1); close(adj); }
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0) dup2(null, 0);
        dup2(pipefd[1], 1);
        dup2(pipefd[1], 2);
        if (chdir(argv[4]) != 0) { say(2, "oh-run: cannot enter ", argv[4]); _exit(125); }
        execl("/bin/sh", "sh", argv[5], (char *)0);
        say(2, "oh-run: cannot run /bin/sh", "");
        _exit(127);
    }
    close(pipefd[1]);

    long long sent = 0;
    int status = 0, exited = 0;
    for (;;) {
        struct pollfd p = { pipefd[0], POLLIN, 0 };
        int ready = poll(&p, 1, exited ? 1000 : 50);
        if (ready < 0 && errno == EINTR) continue;
        if (ready > 0) {
            ssize_t got = read(pipefd[0], buf, sizeof buf);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) break;                       /* every writer is gone */
            if (sent < limit) {
                size_t take = (size_t)((long long)got < limit - sent ? got : limit - sent);
                write_all(1, buf, take);
                if (out >= 0) write_all(out, buf, take);
                sent += (long long)take;
            }
        }
        if (!exited && waitpid(child, &status, WNOHANG) == child) {
            exited = 1;
            kill(-child, SIGKILL);                     /* what it left behind in its session */
        } else if (exited && ready == 0) {
            break;                                     /* something escaped the session and holds the pipe */
        }
    }
    if (!exited) {
        while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
        kill(-child, SIGKILL);
    }
    if (out >= 0) close(out);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 125;
}
"""

DIGEST = hashlib.sha256(SOURCE.encode()).hexdigest()[:16]


def build(cache_dir: Path, *, compiler: str | None = None) -> Path | None:
    """The static ``oh-run`` binary for this source, compiled into ``cache_dir`` once; None when no C
    compiler (or no static libc) is available, and the caller falls back to a shell wrapper."""
    target = Path(cache_dir) / f"oh-run-{DIGEST}"
    if target.exists():
        return target
    cc = compiler or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        src = Path(tmp) / "oh-run.c"
        src.write_text(SOURCE)
        out = Path(tmp) / "oh-run"
        done = subprocess.run([cc, "-static", "-Os", "-s", "-Wall", "-o", str(out), str(src)],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            return None
        out.replace(target)
    return target
