/* oh-run: the one program that runs sandbox commands in the guest (host side: runport.py, run.py).

   Under TCG every exec in the guest costs tens of milliseconds, so the per-run chores are done by one
   small static program instead of a shell script. Two modes:

   Served (the pool's normal path; no guest agent involved), started once in the template before its
   state is saved, so every clone has it running:
       oh-run --serve PORT_NAME WORKDIR COMMAND_FILE OUTPUT_FILE
   It opens the virtio-serial port PORT_NAME and serves requests on it, one after the other. A request
   is a series of records "<T><name length> <data length>\n<name><data>": H (data "SECONDS NANOSECONDS
   SEED_HEX LIMIT"), any number of F (a file for WORKDIR, a plain name), one C (the command, written to
   COMMAND_FILE) and E (the end). oh-run answers "A\n" once it has the whole request, then
   "O<length>\n<bytes>" frames of output and finally "X<status>\n".

   One-shot (through the guest agent, for clones without the port or daemon):
       oh-run SECONDS NANOSECONDS SEED_HEX WORKDIR COMMAND_FILE OUTPUT_FILE LIMIT   (F and C records on stdin)
   writes the output to stdout (qemu-ga captures it), exits with the command's status and, just before,
   writes "done N" to the port org.openhosting.run if there is one.

   Either way a run sets the clock, mixes SEED into the kernel's pool and forces a CRNG reseed, writes
   the files and the command, forks /bin/sh COMMAND_FILE in WORKDIR in its own session (stdout and
   stderr on one pipe, oom_score_adj 0), passes on the first LIMIT bytes of that pipe (copied to
   OUTPUT_FILE) and drains the rest, and when the shell exits kills what it left in its session. The
   status is the shell's (128+N for a signal; 125 when oh-run itself could not run it).

   Built by the host (build.py: gcc -static, cached by the hash of this file). */

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DONE_PORT "org.openhosting.run"

static void say(int fd, const char *a, const char *b) {
    if (write(fd, a, strlen(a)) < 0 || write(fd, b, strlen(b)) < 0 || write(fd, "\n", 1) < 0) {}
}

static int write_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0) { if (errno == EINTR) continue; return -1; }
        buf += w; n -= (size_t)w;
    }
    return 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* The device of the virtio-serial port called `wanted` (no udev in the guest: found through sysfs). */
static int find_port(const char *wanted, char *path, size_t size) {
    DIR *dir = opendir("/sys/class/virtio-ports");
    if (!dir) return -1;
    struct dirent *e;
    int found = -1;
    while (found < 0 && (e = readdir(dir)) != 0) {
        if (e->d_name[0] == '.') continue;
        char name[64];
        snprintf(path, size, "/sys/class/virtio-ports/%s/name", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t n = read(fd, name, sizeof name - 1);
        close(fd);
        if (n <= 0) continue;
        name[n] = 0;
        if (name[n - 1] == '\n') name[n - 1] = 0;
        if (strcmp(name, wanted) == 0) {
            snprintf(path, size, "/dev/%s", e->d_name);
            found = 0;
        }
    }
    closedir(dir);
    return found;
}

/* One-shot mode: tell the host the run is over (best effort: no port, or nobody listening). */
static void ring(int code) {
    char path[300];
    if (find_port(DONE_PORT, path, sizeof path) != 0) return;
    int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return;
    char line[32];
    int len = snprintf(line, sizeof line, "done %d\n", code);
    if (write(fd, line, (size_t)len) < 0) {}
    close(fd);
}

static void set_clock_and_seed(long long sec, long nsec, const char *hex) {
    struct timespec now = { sec, nsec };
    clock_settime(CLOCK_REALTIME, &now);
    unsigned char seed[512];
    size_t n = 0;
    for (const char *h = hex; h[0] && h[1] && n < sizeof seed; h += 2) {
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
}

/* The input (stdin, or the port when served), read through one buffer. */
static int in_fd = 0;
static char in[65536];
static size_t in_pos, in_len;

static int in_byte(void) {
    if (in_pos == in_len) {
        ssize_t got;
        for (int idle = 0;;) {
            got = read(in_fd, in, sizeof in);
            if (got > 0) break;
            if (got < 0 && errno == EINTR) continue;
            /* A port reads as ended while the guest has not yet seen the host connect (that news
               travels on another virtqueue than the data): give it up to two seconds. */
            if (got < 0 || in_fd == 0 || ++idle > 2000) return -1;
            struct timespec pause = { 0, 1000 * 1000 };
            nanosleep(&pause, 0);
        }
        in_pos = 0;
        in_len = (size_t)got;
    }
    return (unsigned char)in[in_pos++];
}

static int in_copy(int fd, char *to, long long n) {   /* into fd, or into `to` */
    while (n > 0) {
        if (in_pos == in_len) {
            if (in_byte() < 0) return -1;
            in_pos--;
        }
        size_t take = in_len - in_pos;
        if ((long long)take > n) take = (size_t)n;
        if (to) { memcpy(to, in + in_pos, take); to += take; }
        else write_all(fd, in + in_pos, take);
        in_pos += take;
        n -= (long long)take;
    }
    return 0;
}

/* The length of the last request's command: an empty one runs nothing and answers status 0, as
   /bin/sh would, without the fork and exec (a workspace's wake-up after a resume is such a run). */
static long long command_len = -1;

/* Records up to E (or the end of the input): the header, the files into workdir, the command
   into command_file. NULL, or what is wrong. */
static const char *unpack(const char *workdir, const char *command_file, long long *limit) {
    for (;;) {
        int type = in_byte(), c = 0;
        if (type < 0) return in_fd == 0 ? 0 : "the host went away";
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
        if (type == 'E') return 0;
        if (type == 'H') {
            char line[1200];
            if (data_len >= (long long)sizeof line) return "malformed input";
            if (in_copy(-1, line, data_len) < 0) return "truncated input";
            line[data_len] = 0;
            char *p = line;
            long long sec = strtoll(p, &p, 10);
            long nsec = strtol(p, &p, 10);
            while (*p == ' ') p++;
            char *hex = p;
            while (*p && *p != ' ') p++;
            if (*p) *p++ = 0;
            *limit = strtoll(p, 0, 10);
            set_clock_and_seed(sec, nsec, hex);
            continue;
        }
        int fd;
        if (type == 'C') {
            command_len = data_len;
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
        int copied = in_copy(fd, 0, data_len);
        close(fd);
        if (copied < 0) return "truncated input";
    }
}

/* Output: plain to `to` (one-shot), or framed O<length>\n<bytes> on the port (served). */
static void emit(int to, int framed, const char *buf, size_t n) {
    if (framed) {
        char head[32];
        int len = snprintf(head, sizeof head, "O%zu\n", n);
        if (write_all(to, head, (size_t)len) < 0) return;
    }
    write_all(to, buf, n);
}

/* Run /bin/sh command_file in workdir; pass on the first `limit` bytes of its output. Its status. */
static int run(const char *workdir, const char *command_file, const char *output_file, long long limit,
               int to, int framed) {
    static char buf[65536];
    int out = open(output_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) { emit(to, framed, "oh-run: pipe failed\n", 20); return 125; }

    pid_t child = fork();
    if (child < 0) { emit(to, framed, "oh-run: fork failed\n", 20); return 125; }
    if (child == 0) {
        setsid();
        int adj = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        if (adj >= 0) { write_all(adj, "0", 1); close(adj); }
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0) dup2(null, 0);
        dup2(pipefd[1], 1);
        dup2(pipefd[1], 2);
        if (chdir(workdir) != 0) { say(2, "oh-run: cannot enter ", workdir); _exit(125); }
        execl("/bin/sh", "sh", command_file, (char *)0);
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
                emit(to, framed, buf, take);
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
    close(pipefd[0]);
    if (!exited) {
        while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
        kill(-child, SIGKILL);
    }
    if (out >= 0) close(out);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 125;
}

/* Served mode: requests on the port, one after the other, for the life of the VM. */
static int serve(const char *port_name, const char *workdir, const char *command_file, const char *output_file) {
    char path[300];
    int adj = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (adj >= 0) { write_all(adj, "-1000", 5); close(adj); }
    if (find_port(port_name, path, sizeof path) != 0) { say(2, "oh-run: no port named ", port_name); return 125; }
    int port = open(path, O_RDWR | O_CLOEXEC);
    if (port < 0) { say(2, "oh-run: cannot open ", path); return 125; }
    in_fd = port;
    for (;;) {
        /* A request begins with its first byte. With nobody on the host side the port polls
           readable and reads as ended at once: that is no request (answering it would put a reply
           in the port that the next host reads as the answer to its own request), so wait. */
        while (in_pos == in_len) {
            struct pollfd p = { port, POLLIN, 0 };
            if (poll(&p, 1, -1) > 0 && (p.revents & POLLIN)) {
                ssize_t got = read(port, in, sizeof in);
                if (got > 0) { in_pos = 0; in_len = (size_t)got; break; }
            }
            struct timespec pause = { 0, 5 * 1000 * 1000 };
            nanosleep(&pause, 0);
        }
        long long limit = 0;
        command_len = -1;
        const char *bad = unpack(workdir, command_file, &limit);
        if (bad) {
            in_pos = in_len = 0;                      /* drop the rest of a broken request */
            char line[128];
            int len = snprintf(line, sizeof line, "oh-run: %s\n", bad);
            write_all(port, "A\n", 2);
            emit(port, 1, line, (size_t)len);
            write_all(port, "X125\n", 5);
            continue;
        }
        write_all(port, "A\n", 2);
        int code = command_len == 0 ? 0 : run(workdir, command_file, output_file, limit, port, 1);
        char line[32];
        int len = snprintf(line, sizeof line, "X%d\n", code);
        write_all(port, line, (size_t)len);
    }
}

int main(int argc, char **argv) {
    if (argc == 6 && strcmp(argv[1], "--serve") == 0) return serve(argv[2], argv[3], argv[4], argv[5]);
    if (argc != 8) {
        say(2, "usage: oh-run SEC NSEC SEED WORKDIR COMMAND OUTPUT LIMIT | oh-run --serve PORT WORKDIR COMMAND OUTPUT", "");
        return 125;
    }
    set_clock_and_seed(strtoll(argv[1], 0, 10), strtol(argv[2], 0, 10), argv[3]);
    long long limit = strtoll(argv[7], 0, 10);
    const char *bad = unpack(argv[4], argv[5], &limit);
    int code;
    if (bad) { say(1, "oh-run: ", bad); code = 125; }
    else code = command_len == 0 ? 0 : run(argv[4], argv[5], argv[6], limit, 1, 0);
    ring(code);
    return code;
}
