"""``oh-run``: the one program a sandbox run starts in the guest, and how it is built.

Under TCG every exec in the guest costs tens of milliseconds (``date`` alone ~60 ms, a ``head | tee |
cat`` pipeline ~200 ms, measured in docs/sandboxes.md), so the per-run chores are done by one small
static program instead of a shell script:

    oh-run SECONDS NANOSECONDS SEED_HEX WORKDIR COMMAND_FILE OUTPUT_FILE LIMIT   (records on stdin)

1. sets the clock (a paused clone's clock stopped when it was paused);
2. mixes SEED (host randomness) into the kernel's pool and forces a CRNG reseed (RNDRESEEDCRNG);
3. unpacks its stdin (guest-exec input-data, so neither travels in argv nor costs agent round trips
   of its own): records ``<T><name length> <data length>\n<name><data>``, where T is ``F`` (a file
   for WORKDIR, a plain name) or ``C`` (the user's command, written to COMMAND_FILE);
4. forks ``/bin/sh COMMAND_FILE`` in WORKDIR, in its own session, stdin /dev/null, stdout and
   stderr on one pipe (interleaved as written), with oom_score_adj 0 (oh-run itself keeps qemu-ga's
   -1000, so the collector outlives an OOM in the guest);
5. copies the first LIMIT bytes of that pipe to its stdout (qemu-ga's capture) and to OUTPUT_FILE (a
   copy the host reads when a run is cut short), and drains the rest, so a flood never reaches the
   agent and the program is never stopped by a full pipe;
6. when the shell exits, kills what it left in its session (background jobs holding the pipe), and
   exits with the shell's status (128+N for a signal);
7. just before that, rings the host: writes ``done N`` to the virtio-serial port named
   ``org.openhosting.done`` when the VM has one and the host listens (best effort; the host then
   asks qemu-ga for the result at once instead of polling it every few milliseconds).

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
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
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

/* Tell the host the run is over: one line on the virtio-serial port named DONE_PORT. No udev in
   the guest, so the port is found by its name in sysfs. Any failure is ignored (no such port, the
   host not listening: ENODEV); the host then notices the end by polling qemu-ga. */
#define DONE_PORT "org.openhosting.done"
static void ring(int code) {
    DIR *dir = opendir("/sys/class/virtio-ports");
    if (!dir) return;
    struct dirent *e;
    while ((e = readdir(dir)) != 0) {
        if (e->d_name[0] == '.') continue;
        char path[300], name[64];
        snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t n = read(fd, name, sizeof name - 1);
        close(fd);
        if (n <= 0) continue;
        name[n] = 0;
        if (name[n - 1] == '\n') name[n - 1] = 0;
        if (strcmp(name, DONE_PORT) != 0) continue;
        snprintf(path, sizeof path, "/dev/%s", e->d_name);
        fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0) {
            char line[32];
            int len = snprintf(line, sizeof line, "done %d\n", code);
            if (write(fd, line, (size_t)len) < 0) {}
            close(fd);
        }
        break;
    }
    closedir(dir);
}

/* stdin, read through one buffer */
static char in[65536];
static size_t in_pos, in_len;

static int in_byte(void) {
    if (in_pos == in_len) {
        ssize_t got;
        do got = read(0, in, sizeof in); while (got < 0 && errno == EINTR);
        if (got <= 0) return -1;
        in_pos = 0;
        in_len = (size_t)got;
    }
    return (unsigned char)in[in_pos++];
}

static int in_copy(int fd, long long n) {
    while (n > 0) {
        if (in_pos == in_len) {
            int c = in_byte();
            if (c < 0) return -1;
            in_pos--;
        }
        size_t take = in_len - in_pos;
        if ((long long)take > n) take = (size_t)n;
        write_all(fd, in + in_pos, take);
        in_pos += take;
        n -= (long long)take;
    }
    return 0;
}

/* The records on stdin: files into WORKDIR, the command into COMMAND_FILE. NULL, or what is wrong. */
static const char *unpack(const char *workdir, const char *command_file) {
    for (;;) {
        int type = in_byte(), c = 0;
        if (type < 0) return 0;
        char head[64], name[256], path[4096];
        size_t h = 0;
        while (h < sizeof head - 1 && (c = in_byte()) >= 0 && c != '\n') head[h++] = (char)c;
        if (c != '\n') return "malformed input";
        head[h] = 0;
        char *end;
        long long name_len = strtoll(head, &end, 10), data_len = strtoll(end, &end, 10);
        if (name_len < 0 || name_len >= (long long)sizeof name || data_len < 0) return "malformed input";
        for (long long i = 0; i < name_len; i++) {
            if ((c = in_byte()) < 0) return "truncated input";
            name[i] = (char)c;
        }
        name[name_len] = 0;
        int fd;
        if (type == 'C') {
            fd = open(command_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        } else if (type == 'F') {
            if (!name[0] || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, "..")
                    || strlen(name) != (size_t)name_len)
                return "bad file name";
            snprintf(path, sizeof path, "%s/%s", workdir, name);
            fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
        } else {
            return "malformed input";
        }
        if (fd < 0) return "cannot write a file";
        int copied = in_copy(fd, data_len);
        close(fd);
        if (copied < 0) return "truncated input";
    }
}

static int finish(int code) {
    ring(code);
    return code;
}

int main(int argc, char **argv) {
    if (argc != 8) { say(2, "usage: oh-run SEC NSEC SEED WORKDIR COMMAND OUTPUT LIMIT", ""); return finish(125); }

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
    const char *bad = unpack(argv[4], argv[5]);
    if (bad) { say(1, "oh-run: ", bad); return finish(125); }

    int out = open(argv[6], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    long long limit = strtoll(argv[7], 0, 10);
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) { say(1, "oh-run: pipe failed", ""); return finish(125); }

    pid_t child = fork();
    if (child < 0) { say(1, "oh-run: fork failed", ""); return finish(125); }
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
    if (WIFEXITED(status)) return finish(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return finish(128 + WTERMSIG(status));
    return finish(125);
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
