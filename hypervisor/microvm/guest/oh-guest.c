/* oh-guest: the workspace guest program. It serves multiplexed channels (exec, spawn, files,
 * untar, PTY sessions, clock and RNG) on one byte stream, the virtio-serial port
 * org.openhosting.guest. The protocol is described in hypervisor/microvm/guestd.py and
 * docs/workspaces-guest.md; this file follows it.
 *
 * One thread, one poll loop. Every byte that flows is bounded: the host may send at most WINDOW
 * unacknowledged input bytes per channel, the guest sends output only against the host's credit
 * and stops reading children while its outgoing buffer holds OUT_CAP bytes, so a slow reader of
 * one channel stalls only that channel's producer (its pipe fills up), never the others.
 *
 * File operations run with the workspace user's file-system identity (setfsuid/setfsgid, which
 * also drops root's DAC capabilities for the call); children run as the user after setgid/setuid.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/openat2.h>
#include <linux/random.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAGIC "OHGUEST1"
#define MAX_PAYLOAD 65536
#define HEAD 9
#define WINDOW (256 * 1024)
#define OUT_CAP (1024 * 1024)
#define MAX_CHANS 64
#define LIST_CAP (8 << 20)
#define ERR_CAP 4096
#define MAX_ARGS 512

enum { T_NOP, T_HELLO, T_OPEN, T_DATA, T_STDERR, T_EOF, T_WINDOW, T_RESIZE, T_CLOSE, T_OK, T_END, T_ERROR };
enum { OP_EXEC = 1, OP_SPAWN, OP_PUT, OP_GET, OP_STAT, OP_LIST, OP_UNTAR, OP_PTY, OP_SYNC };

/* ---- configuration ---------------------------------------------------------------------- */

static const char *port_name = "org.openhosting.guest", *device_path;
static int port_fd = -1, port_is_socket, no_clock, no_user_setup;
/* --only OPS: the operations this instance serves (comma-separated names; all when unset). The
   terminal port runs a second oh-guest with --only pty,exec, so that the process holding it (the
   terminal service) can open shells and run commands but cannot touch files or the clock. */
static const char *only_ops;
static const char *user_name = "user";
static uid_t user_uid = 1000;
static gid_t user_gid = 1000;
static char user_home[1024] = "/home/user", user_shell[256] = "", workspace[2048] = "";
static int sig_fd;
static sigset_t old_mask;

static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) { static const char m[] = "oh-guest: out of memory\n"; if (write(2, m, sizeof m - 1)) {} _exit(70); }
    return q;
}

static int write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) { if (errno == EINTR) continue; return -1; }
        p += w; n -= (size_t)w;
    }
    return 0;
}

/* ---- outgoing frames -------------------------------------------------------------------- */

static char *ob;
static size_t ob_len, ob_size;

static void ob_put(const void *p, size_t n) {
    if (ob_len + n > ob_size) {
        ob_size = (ob_len + n) * 2;
        ob = xrealloc(ob, ob_size);
    }
    memcpy(ob + ob_len, p, n);
    ob_len += n;
}

static void put_u32(unsigned char *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static uint32_t get_u32(const unsigned char *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }

static void send_frame(int type, uint32_t chan, const void *p, size_t n) {
    unsigned char h[HEAD];
    h[0] = (unsigned char)type;
    put_u32(h + 1, chan);
    put_u32(h + 5, (uint32_t)n);
    ob_put(h, HEAD);
    if (n) ob_put(p, n);
}

/* key=value\0 records */
struct kvb { char buf[8192]; size_t n; };

static void kv(struct kvb *b, const char *key, const char *fmt, ...) {
    if (b->n >= sizeof b->buf - 2) return;
    int k = snprintf(b->buf + b->n, sizeof b->buf - b->n, "%s=", key);
    if (k < 0 || (size_t)k >= sizeof b->buf - b->n) return;
    va_list ap;
    va_start(ap, fmt);
    int v = vsnprintf(b->buf + b->n + k, sizeof b->buf - b->n - k, fmt, ap);
    va_end(ap);
    if (v < 0 || (size_t)(k + v) >= sizeof b->buf - b->n) { b->buf[b->n] = 0; return; }
    b->n += (size_t)(k + v) + 1;
}

static void send_window(uint32_t chan, uint32_t n) {
    unsigned char p[4];
    put_u32(p, n);
    send_frame(T_WINDOW, chan, p, 4);
}

static const char *kind_of(int err) {
    switch (err) {
    case ENOENT: return "notfound";
    case EACCES: case EPERM: case EROFS: return "access";
    case ENOTDIR: return "notdir";
    case EISDIR: return "notfile";
    case EEXIST: return "exists";
    case EXDEV: return "outside";
    case ENOSPC: case EDQUOT: return "nospace";
    case EFBIG: return "toolarge";
    default: return "io";
    }
}

static void send_error(uint32_t chan, const char *kind, int err, const char *fmt, ...) {
    struct kvb b = { .n = 0 };
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    kv(&b, "kind", "%s", kind);
    kv(&b, "errno", "%d", err);
    kv(&b, "message", "%s", msg);
    send_frame(T_ERROR, chan, b.buf, b.n);
}

/* ---- requests ------------------------------------------------------------------------------ */

struct req { const char *p; size_t n; };

static const char *req_get(struct req r, const char *key) {
    size_t kl = strlen(key);
    for (size_t i = 0; i < r.n;) {
        const char *s = r.p + i;
        size_t l = strnlen(s, r.n - i);
        if (l > kl && s[kl] == '=' && memcmp(s, key, kl) == 0) return s + kl + 1;
        i += l + 1;
    }
    return 0;
}

static int req_all(struct req r, const char *key, char **out, int max) {
    size_t kl = strlen(key);
    int n = 0;
    for (size_t i = 0; i < r.n && n < max;) {
        const char *s = r.p + i;
        size_t l = strnlen(s, r.n - i);
        if (l > kl && s[kl] == '=' && memcmp(s, key, kl) == 0) out[n++] = (char *)s + kl + 1;
        i += l + 1;
    }
    out[n] = 0;
    return n;
}

static long long req_num(struct req r, const char *key, long long dflt) {
    const char *v = req_get(r, key);
    return v ? strtoll(v, 0, 0) : dflt;
}

/* ---- identities ------------------------------------------------------------------------------ */

static void as_user(uid_t uid, gid_t gid) {
    if (uid == 0) return;
    setgroups(1, &gid);
    setfsgid(gid);
    setfsuid(uid);
}

static void as_root(void) {
    setfsuid(0);
    setfsgid(0);
    setgroups(0, 0);
}

/* In a child: become uid/gid for good, default signals, the user's environment. */
static void child_setup(uid_t uid, gid_t gid, const char *cwd) {
    signal(SIGIO, SIG_DFL);
    sigprocmask(SIG_SETMASK, &old_mask, 0);
    signal(SIGPIPE, SIG_DFL);             /* ignored here, and ignored signals survive exec */
    signal(SIGHUP, SIG_DFL);
    int adj = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (adj >= 0) { write_all(adj, "0", 1); close(adj); }
    if (setgroups(1, &gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0) _exit(126);
    if (cwd && chdir(cwd) != 0) _exit(126);
}

static char **make_env(struct req r, uid_t uid, int pty) {
    static char *env[MAX_ARGS + 16];
    static char home[1100], user[300], shell[300], logname[310];
    char *given[MAX_ARGS];
    int n = 0;
    if (!req_get(r, "clearenv")) {
        int is_user = uid == user_uid;
        snprintf(home, sizeof home, "HOME=%s", is_user ? user_home : uid == 0 ? "/root" : "/");
        snprintf(user, sizeof user, "USER=%s", is_user ? user_name : uid == 0 ? "root" : "nobody");
        snprintf(logname, sizeof logname, "LOGNAME=%s", user + 5);
        snprintf(shell, sizeof shell, "SHELL=%s", user_shell);
        env[n++] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        env[n++] = home; env[n++] = user; env[n++] = logname; env[n++] = shell;
        env[n++] = "LANG=C.UTF-8";
        if (pty) env[n++] = "TERM=xterm-256color";
    }
    int g = req_all(r, "env", given, MAX_ARGS - 1);
    for (int i = 0; i < g; i++) {                 /* a given NAME=VALUE replaces a default */
        const char *eq = strchr(given[i], '=');
        size_t kl = eq ? (size_t)(eq - given[i]) + 1 : strlen(given[i]);
        int j;
        for (j = 0; j < n; j++) if (strncmp(env[j], given[i], kl) == 0) break;
        if (j < n) env[j] = given[i]; else env[n++] = given[i];
    }
    env[n] = 0;
    return env;
}

/* ---- channels ------------------------------------------------------------------------------ */

struct chan {
    int used, op, phase, lay;
    uint32_t id;
    pid_t pid;
    int reaped, status, draining, timed_out, cancelled, kill_after_ms;
    int in_fd, out_fd, err_fd, collect;
    char *ib; size_t ib_len; int in_eof; uint32_t unacked;
    long long credit, deadline, kill_at, bytes, limit;
    int file_fd, dir_fd, beneath_fd;
    char beneath[2048];
    DIR *dir;
    char tmp_name[64], name[4096];
    mode_t mode;
    uid_t uid; gid_t gid;
    char *lbuf; size_t lb_len; char ebuf[ERR_CAP]; size_t eb_len;
};

static struct chan chans[MAX_CHANS];

static struct chan *find_chan(uint32_t id) {
    for (int i = 0; i < MAX_CHANS; i++) if (chans[i].used && chans[i].id == id) return &chans[i];
    return 0;
}

static void close_fd(int *fd) { if (*fd >= 0) { close(*fd); *fd = -1; } }

/* Forget a channel; its processes are killed unless `keep`. No frame is sent. */
static void chan_free(struct chan *c, int keep) {
    if (c->pid > 0 && !c->reaped && !keep) {
        if (c->op == OP_PTY) kill(-c->pid, SIGHUP);
        else if (kill(-c->pid, SIGKILL) != 0) kill(c->pid, SIGKILL);
    }
    if (c->op == OP_PUT && c->dir_fd >= 0 && c->tmp_name[0]) unlinkat(c->dir_fd, c->tmp_name, 0);
    close_fd(&c->in_fd); close_fd(&c->out_fd); close_fd(&c->err_fd);
    close_fd(&c->file_fd);
    if (c->dir) closedir(c->dir); else close_fd(&c->dir_fd);
    close_fd(&c->beneath_fd);
    free(c->ib); free(c->lbuf);
    memset(c, 0, sizeof *c);
}

static struct chan *chan_new(uint32_t id, int op, struct req r) {
    struct chan *c = 0;
    for (int i = 0; i < MAX_CHANS; i++) if (!chans[i].used) { c = &chans[i]; break; }
    if (!c) return 0;
    memset(c, 0, sizeof *c);
    c->used = 1; c->id = id; c->op = op;
    c->in_fd = c->out_fd = c->err_fd = c->file_fd = c->dir_fd = c->beneath_fd = -1;
    c->credit = WINDOW;
    c->uid = (uid_t)req_num(r, "uid", user_uid);
    c->gid = (gid_t)req_num(r, "gid", c->uid == user_uid ? user_gid : c->uid);
    return c;
}

static void reset_all(void) {
    for (int i = 0; i < MAX_CHANS; i++) if (chans[i].used) chan_free(&chans[i], 0);
}

/* A path of a request: relative ones are relative to the workspace. */
static const char *resolve(const char *path, char *out, size_t size) {
    if (!path || !path[0]) return workspace;
    if (path[0] == '/') return path;
    snprintf(out, size, "%s/%s", workspace, path);
    return out;
}

/* Open a path of a request as the caller (fsuid must be set). With `beneath`, the path is taken
   inside that directory (absolute ones must start with it) and resolving it may not leave it,
   through `..` or symbolic links alike (openat2 RESOLVE_BENEATH): EXDEV. */
static int open_in(struct chan *c, const char *path, int flags) {
    char buf[4096];
    if (c->beneath_fd < 0) return open(resolve(path, buf, sizeof buf), flags | O_CLOEXEC);
    const char *rel = path ? path : "";
    size_t bl = strlen(c->beneath);
    if (rel[0] == '/') {
        if (strncmp(rel, c->beneath, bl) != 0 || (rel[bl] != '/' && rel[bl] != 0)) { errno = EXDEV; return -1; }
        rel += bl;
        while (*rel == '/') rel++;
    }
    if (!*rel) rel = ".";
    struct open_how how = { .flags = (uint64_t)(flags | O_CLOEXEC), .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
    return (int)syscall(SYS_openat2, c->beneath_fd, rel, &how, sizeof how);
}

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* fork + exec argv as c->uid in cwd, with the given fds as 0, 1, 2 (-1: /dev/null). 0, or errno
   of the exec (reported through a close-on-exec pipe). */
static int start_child(struct chan *c, char **argv, char **env, const char *cwd, int fd0, int fd1, int fd2,
                       const char *out_path, const char *err_path, int pty_slave) {
    int ep[2];
    if (pipe2(ep, O_CLOEXEC) != 0) return errno;
    pid_t pid = fork();
    if (pid < 0) { int e = errno; close(ep[0]); close(ep[1]); return e; }
    if (pid == 0) {
        setsid();
        if (pty_slave >= 0) ioctl(pty_slave, TIOCSCTTY, 0);
        int null = open("/dev/null", O_RDWR);
        int fds[3] = { fd0 >= 0 ? fd0 : null, fd1 >= 0 ? fd1 : null, fd2 >= 0 ? fd2 : null };
        for (int i = 0; i < 3; i++) {           /* move them out of the way, then into place */
            int d = fcntl(fds[i], F_DUPFD_CLOEXEC, 10);
            fds[i] = d;
        }
        for (int i = 0; i < 3; i++) dup2(fds[i], i);
        child_setup(c->uid, c->gid, 0);
        int e = 0;
        if (cwd ? chdir(cwd) != 0 : c->dir_fd >= 0 && fchdir(c->dir_fd) != 0) e = errno;
        if (!e && out_path) {
            int fd = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd < 0) e = errno; else { dup2(fd, 1); close(fd); }
        }
        if (!e && err_path) {
            int fd = open(err_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd < 0) e = errno; else { dup2(fd, 2); close(fd); }
        }
        if (!e) {
            for (char **v = env; *v; v++)
                if (strncmp(*v, "PATH=", 5) == 0) { setenv("PATH", *v + 5, 1); break; }
            execvpe(argv[0], argv, env);
            e = errno;
        }
        write_all(ep[1], &e, sizeof e);
        _exit(127);
    }
    close(ep[1]);
    int e = 0;
    ssize_t got;
    while ((got = read(ep[0], &e, sizeof e)) < 0 && errno == EINTR) {}
    close(ep[0]);
    if (got == (ssize_t)sizeof e && e) {
        while (waitpid(pid, 0, 0) < 0 && errno == EINTR) {}
        return e;
    }
    c->pid = pid;
    return 0;
}

/* ---- operations ---------------------------------------------------------------------------- */

static void op_exec(struct chan *c, struct req r) {
    char *argv[MAX_ARGS];
    if (req_all(r, "argv", argv, MAX_ARGS - 1) == 0) { send_error(c->id, "badrequest", EINVAL, "no argv"); chan_free(c, 0); return; }
    char cwd_buf[4096];
    const char *cwd = resolve(req_get(r, "cwd"), cwd_buf, sizeof cwd_buf);
    int in[2] = { -1, -1 }, out[2], err[2];
    int want_in = req_num(r, "stdin", 0) != 0;
    if ((want_in && pipe2(in, O_CLOEXEC) != 0) || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
        send_error(c->id, "io", errno, "pipe: %s", strerror(errno)); chan_free(c, 0); return;
    }
    int e = start_child(c, argv, make_env(r, c->uid, 0), cwd, in[0], out[1], err[1], 0, 0, -1);
    close_fd(&in[0]); close(out[1]); close(err[1]);
    c->in_fd = in[1]; c->out_fd = out[0]; c->err_fd = err[0];
    if (e) {
        send_error(c->id, e == ENOENT ? "notfound" : kind_of(e), e, "cannot run %s: %s", argv[0], strerror(e));
        chan_free(c, 0);
        return;
    }
    if (c->in_fd >= 0) set_nonblock(c->in_fd);
    set_nonblock(c->out_fd); set_nonblock(c->err_fd);
    long long timeout = req_num(r, "timeout_ms", 0);
    c->kill_after_ms = (int)req_num(r, "kill_after_ms", 2000);
    if (timeout > 0) c->deadline = now_ms() + timeout;
    struct kvb b = { .n = 0 };
    kv(&b, "pid", "%d", c->pid);
    send_frame(T_OK, c->id, b.buf, b.n);
}

static void op_spawn(struct chan *c, struct req r) {
    char *argv[MAX_ARGS];
    if (req_all(r, "argv", argv, MAX_ARGS - 1) == 0) { send_error(c->id, "badrequest", EINVAL, "no argv"); chan_free(c, 0); return; }
    char cwd_buf[4096];
    const char *cwd = resolve(req_get(r, "cwd"), cwd_buf, sizeof cwd_buf);
    int e = start_child(c, argv, make_env(r, c->uid, 0), cwd, -1, -1, -1,
                        req_get(r, "stdout"), req_get(r, "stderr"), -1);
    if (e) send_error(c->id, e == ENOENT ? "notfound" : kind_of(e), e, "cannot start %s: %s", argv[0], strerror(e));
    else {
        struct kvb b = { .n = 0 };
        kv(&b, "pid", "%d", c->pid);
        send_frame(T_END, c->id, b.buf, b.n);
    }
    chan_free(c, 1);                               /* it outlives the channel; reaped when it ends */
}

/* Split path into its directory (opened as the user, into c->dir_fd) and last name (c->name). */
static int open_parent(struct chan *c, const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) { snprintf(dir, sizeof dir, "."); snprintf(c->name, sizeof c->name, "%s", path); }
    else {
        size_t dl = (size_t)(slash - path);
        if (dl == 0) dl = 1;
        if (dl >= sizeof dir) return ENAMETOOLONG;
        memcpy(dir, path, dl); dir[dl] = 0;
        snprintf(c->name, sizeof c->name, "%s", slash + 1);
    }
    if (!c->name[0] || !strcmp(c->name, ".") || !strcmp(c->name, "..")) return EISDIR;
    c->dir_fd = open_in(c, dir, O_RDONLY | O_DIRECTORY);
    return c->dir_fd < 0 ? errno : 0;
}

static void op_put(struct chan *c, struct req r) {
    const char *path = req_get(r, "path");
    if (!path || !path[0]) { send_error(c->id, "badrequest", EINVAL, "no path"); chan_free(c, 0); return; }
    c->mode = (mode_t)req_num(r, "mode", 0644) & 07777;
    as_user(c->uid, c->gid);
    int e = open_parent(c, path);
    struct stat st;
    const char *kind = 0;
    if (e == ENOENT || e == ENOTDIR) kind = "noparent";
    else if (e == EISDIR) kind = "notfile";
    else if (e) kind = kind_of(e);
    else if (fstatat(c->dir_fd, c->name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(st.st_mode)) {
        kind = "notfile"; e = EEXIST;
    } else {
        for (int i = 0; i < 100 && c->file_fd < 0; i++) {
            snprintf(c->tmp_name, sizeof c->tmp_name, ".oh-put-%d-%u-%d", getpid(), c->id, rand());
            c->file_fd = openat(c->dir_fd, c->tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (c->file_fd < 0 && errno != EEXIST) break;
        }
        if (c->file_fd < 0) { e = errno; kind = kind_of(e); c->tmp_name[0] = 0; }
    }
    as_root();
    if (kind) {
        send_error(c->id, kind, e, "%s: %s", path, kind[0] == 'n' && !strcmp(kind, "noparent")
                   ? "parent directory missing" : strerror(e));
        chan_free(c, 0);
        return;
    }
    c->limit = req_num(r, "limit", 0);
    send_frame(T_OK, c->id, 0, 0);
}

static void put_finish(struct chan *c) {
    int e = 0;
    as_user(c->uid, c->gid);
    if (fchmod(c->file_fd, c->mode) != 0) e = errno;
    struct stat st;
    if (!e && fstatat(c->dir_fd, c->name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(st.st_mode)) e = EEXIST;
    else if (!e && renameat(c->dir_fd, c->tmp_name, c->dir_fd, c->name) != 0) e = errno;
    else if (!e) c->tmp_name[0] = 0;
    as_root();
    if (e) send_error(c->id, e == EEXIST ? "notfile" : kind_of(e), e, "%s: %s", c->name, strerror(e));
    else {
        struct kvb b = { .n = 0 };
        kv(&b, "size", "%lld", c->bytes);
        send_frame(T_END, c->id, b.buf, b.n);
    }
    chan_free(c, 0);
}

static void stat_fields(struct kvb *b, const struct stat *st) {
    char t = S_ISREG(st->st_mode) ? 'f' : S_ISDIR(st->st_mode) ? 'd' : S_ISLNK(st->st_mode) ? 'l'
           : S_ISCHR(st->st_mode) ? 'c' : S_ISBLK(st->st_mode) ? 'b' : S_ISFIFO(st->st_mode) ? 'p' : 's';
    kv(b, "type", "%c", t);
    kv(b, "size", "%lld", (long long)st->st_size);
    kv(b, "mode", "%o", st->st_mode & 07777);
    kv(b, "mtime", "%lld.%09ld", (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
    kv(b, "uid", "%u", st->st_uid);
    kv(b, "gid", "%u", st->st_gid);
}

static void op_get(struct chan *c, struct req r) {
    const char *path = req_get(r, "path");
    if (!path || !path[0]) { send_error(c->id, "badrequest", EINVAL, "no path"); chan_free(c, 0); return; }
    as_user(c->uid, c->gid);
    c->file_fd = open_in(c, path, O_RDONLY | O_NOCTTY | O_NONBLOCK);
    int e = c->file_fd < 0 ? errno : 0;
    as_root();
    struct stat st;
    if (!e && fstat(c->file_fd, &st) != 0) e = errno;
    if (!e && !S_ISREG(st.st_mode)) e = EISDIR;
    if (e) {
        send_error(c->id, e == EISDIR ? "notfile" : kind_of(e), e, "%s: %s", path,
                   e == EISDIR ? "not a regular file" : strerror(e));
        chan_free(c, 0);
        return;
    }
    fcntl(c->file_fd, F_SETFL, 0);
    struct kvb b = { .n = 0 };
    stat_fields(&b, &st);
    send_frame(T_OK, c->id, b.buf, b.n);
}

static void op_stat(struct chan *c, struct req r) {
    const char *path = req_get(r, "path");
    struct stat st;
    int follow = req_num(r, "follow", 1) != 0;
    as_user(c->uid, c->gid);
    int fd = path ? open_in(c, path, O_PATH | (follow ? 0 : O_NOFOLLOW)) : -1;
    int e = !path ? EINVAL : fd < 0 || fstat(fd, &st) != 0 ? errno : 0;
    if (fd >= 0) close(fd);
    as_root();
    if (e) send_error(c->id, kind_of(e), e, "%s: %s", path ? path : "", strerror(e));
    else {
        struct kvb b = { .n = 0 };
        stat_fields(&b, &st);
        send_frame(T_END, c->id, b.buf, b.n);
    }
    chan_free(c, 0);
}

static void op_list(struct chan *c, struct req r) {
    const char *path = req_get(r, "path");
    if (!path) path = "";
    as_user(c->uid, c->gid);
    c->dir_fd = open_in(c, path, O_RDONLY | O_DIRECTORY);
    int e = c->dir_fd < 0 ? errno : 0;
    as_root();
    if (!e && !(c->dir = fdopendir(c->dir_fd))) e = errno;
    if (e) { send_error(c->id, kind_of(e), e, "%s: %s", path, strerror(e)); chan_free(c, 0); return; }
    send_frame(T_OK, c->id, 0, 0);
}

/* Entries as NUL-ended fields: name, type, type followed (links), size, mode (octal), mtime. */
static void list_more(struct chan *c) {
    char buf[MAX_PAYLOAD];
    size_t n = 0;
    int done = 0;
    as_user(c->uid, c->gid);
    while (n < sizeof buf - 400 && (long long)n < c->credit) {
        errno = 0;
        struct dirent *d = readdir(c->dir);
        if (!d) { done = 1; break; }
        if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, "..")) continue;
        struct stat st, target;
        if (fstatat(c->dir_fd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        struct kvb t = { .n = 0 };
        stat_fields(&t, &st);
        char followed = '-';
        if (S_ISLNK(st.st_mode) && fstatat(c->dir_fd, d->d_name, &target, 0) == 0)
            followed = S_ISDIR(target.st_mode) ? 'd' : S_ISREG(target.st_mode) ? 'f' : 'o';
        else if (!S_ISLNK(st.st_mode)) followed = t.buf[5];
        int len = snprintf(buf + n, sizeof buf - n, "%s%c%c%c%c%c%lld%c%o%c%lld%c", d->d_name, 0,
                           t.buf[5], 0, followed, 0, (long long)st.st_size, 0, st.st_mode & 07777, 0,
                           (long long)st.st_mtim.tv_sec, 0);
        if (len < 0 || (size_t)len >= sizeof buf - n) break;
        n += (size_t)len;
    }
    as_root();
    if (n) { send_frame(T_DATA, c->id, buf, n); c->credit -= (long long)n; }
    if (done) { send_frame(T_END, c->id, 0, 0); chan_free(c, 0); }
}

static void get_more(struct chan *c) {
    char buf[MAX_PAYLOAD];
    size_t want = c->credit < (long long)sizeof buf ? (size_t)c->credit : sizeof buf;
    ssize_t got = read(c->file_fd, buf, want);
    if (got < 0 && errno == EINTR) return;
    if (got < 0) { send_error(c->id, "io", errno, "read: %s", strerror(errno)); chan_free(c, 0); return; }
    if (got == 0) {
        struct kvb b = { .n = 0 };
        kv(&b, "size", "%lld", c->bytes);
        send_frame(T_END, c->id, b.buf, b.n);
        chan_free(c, 0);
        return;
    }
    send_frame(T_DATA, c->id, buf, (size_t)got);
    c->credit -= got;
    c->bytes += got;
}

#include "lay.h"

static void op_untar(struct chan *c, struct req r) {
    const char *dest = req_get(r, "dest");
    if (!dest) dest = "";
    as_user(c->uid, c->gid);
    c->dir_fd = open_in(c, dest, O_RDONLY | O_DIRECTORY);
    int e = c->dir_fd < 0 ? errno : 0;
    as_root();
    if (e) { send_error(c->id, e == ENOENT ? "noparent" : kind_of(e), e, "%s: %s", dest, strerror(e)); chan_free(c, 0); return; }
    c->file_fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (c->file_fd < 0) {
        char tmp[] = "/tmp/.oh-untar-XXXXXX";
        c->file_fd = mkostemp(tmp, O_CLOEXEC);
        if (c->file_fd >= 0) unlink(tmp);
    }
    if (c->file_fd < 0) { send_error(c->id, "io", errno, "temporary file: %s", strerror(errno)); chan_free(c, 0); return; }
    c->limit = req_num(r, "limit", 16 << 20);
    c->lay = req_num(r, "lay", 0) != 0;
    send_frame(T_OK, c->id, 0, 0);
}

/* Whether the directory `dir_fd` has no entries (then no member can go below a link in it). */
static int dir_empty(int dir_fd) {
    int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return 0;
    DIR *d = fdopendir(fd);
    if (!d) { close(fd); return 0; }
    struct dirent *e;
    int empty = 1;
    while (empty && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
    closedir(d);
    return empty;
}

/* Phases of untar after the archive is in: 1 list it (tar -t, as the user), 2 extract (tar -x).
   The listing is for the check only this side can make (no member below a link that exists in the
   destination), so an empty destination goes straight to 2; the host has checked the members
   (tarcheck.py). A tar.gz (by its magic) is read through gzip, a plain tar as it is: one exec fewer
   each, and under TCG every fresh exec is translated anew. A plain tar the host wrote itself
   (`lay` in the request: tarcheck.canonical) into an empty destination is extracted here, no
   exec at all (lay.h). */
static void untar_step(struct chan *c) {
    int out[2], err[2];
    unsigned char magic[2] = { 0, 0 };
    int gz = pread(c->file_fd, magic, 2, 0) == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    lseek(c->file_fd, 0, SEEK_SET);
    if (c->phase == 0 && dir_empty(c->dir_fd)) {
        if (c->lay && !gz) {
            const char *bad = 0;
            char why[600];
            as_user(c->uid, c->gid);
            long long members = lay_tar(c->file_fd, c->dir_fd, &bad, why, sizeof why);
            as_root();
            if (members < 0) send_error(c->id, bad ? "badarchive" : "io", bad ? EINVAL : EIO, "%s", bad ? bad : why);
            else {
                struct kvb b = { .n = 0 };
                kv(&b, "members", "%lld", members);
                send_frame(T_END, c->id, b.buf, b.n);
            }
            chan_free(c, 0);
            return;
        }
        c->phase = 1;
        c->bytes = -1;                  /* members: not listed */
    }
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
        send_error(c->id, "io", errno, "pipe: %s", strerror(errno)); chan_free(c, 0); return;
    }
    char *list[] = { "tar", gz ? "-tzf" : "-tf", "-", 0 };
    char *extract[] = { "tar", gz ? "-xzf" : "-xf", "-", "--no-same-owner", "--no-overwrite-dir",
                        "--delay-directory-restore", 0 };
    struct req none = { "", 0 };
    c->phase++;
    c->reaped = c->draining = 0; c->eb_len = 0;
    int e = start_child(c, c->phase == 1 ? list : extract, make_env(none, c->uid, 0), 0,
                        c->file_fd, out[1], err[1], 0, 0, -1);
    close(out[1]); close(err[1]);
    c->out_fd = out[0]; c->err_fd = err[0];
    set_nonblock(c->out_fd); set_nonblock(c->err_fd);
    c->collect = 1;
    if (e) { send_error(c->id, "io", e, "cannot run tar: %s", strerror(e)); chan_free(c, 0); }
}

/* Every member's existing parent directories must be real directories below dest, not links. */
static const char *untar_check(struct chan *c, long long *members) {
    char *p = c->lbuf, *end = c->lbuf + c->lb_len;
    *members = 0;
    as_user(c->uid, c->gid);
    const char *bad = 0;
    while (p < end && !bad) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) nl = end;
        *nl = 0;
        char name[4096];
        size_t n = 0;
        for (char *s = p; *s && n < sizeof name - 1; s++) {       /* tar's escape quoting */
            if (*s == '\\' && s[1] == '\\') { name[n++] = '\\'; s++; }
            else if (*s == '\\') { bad = "a member name tar had to quote"; break; }
            else name[n++] = *s;
        }
        name[n] = 0;
        p = nl + 1;
        if (bad || !name[0]) continue;
        (*members)++;
        if (name[0] == '/') { bad = "an absolute member name"; break; }
        int dir = dup(c->dir_fd);
        char *save, *comp = strtok_r(name, "/", &save);
        while (comp && !bad) {
            char *next = strtok_r(0, "/", &save);
            if (!strcmp(comp, "..")) bad = "a member name with ..";
            else if (next && strcmp(comp, ".")) {
                struct stat st;
                if (fstatat(dir, comp, &st, AT_SYMLINK_NOFOLLOW) != 0) break;     /* tar makes the rest */
                if (S_ISLNK(st.st_mode)) { bad = "a member under a symbolic link"; break; }
                if (!S_ISDIR(st.st_mode)) break;
                int sub = openat(dir, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (sub < 0) break;
                close(dir);
                dir = sub;
            }
            comp = next;
        }
        close(dir);
    }
    as_root();
    return bad;
}

static void untar_done_phase(struct chan *c) {
    int ok = WIFEXITED(c->status) && WEXITSTATUS(c->status) == 0;
    close_fd(&c->out_fd); close_fd(&c->err_fd);
    c->ebuf[c->eb_len < ERR_CAP ? c->eb_len : ERR_CAP - 1] = 0;
    if (!ok) {
        send_error(c->id, c->phase == 1 ? "badarchive" : "io", EIO, "tar: %s", c->ebuf);
        chan_free(c, 0);
        return;
    }
    if (c->phase == 1) {
        long long members;
        const char *bad = untar_check(c, &members);
        if (bad) { send_error(c->id, "unsafe", EPERM, "refused: %s", bad); chan_free(c, 0); return; }
        c->bytes = members;
        free(c->lbuf); c->lbuf = 0; c->lb_len = 0;
        untar_step(c);
        return;
    }
    struct kvb b = { .n = 0 };
    if (c->bytes >= 0) kv(&b, "members", "%lld", c->bytes);
    send_frame(T_END, c->id, b.buf, b.n);
    chan_free(c, 0);
}

static void op_pty(struct chan *c, struct req r) {
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    char name[128];
    int slave = -1, e = 0;
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0 || ptsname_r(master, name, sizeof name) != 0
            || (slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0)
        e = errno ? errno : EIO;
    if (e) {
        send_error(c->id, "io", e, "pty: %s", strerror(e));
        if (master >= 0) close(master);
        chan_free(c, 0);
        return;
    }
    if (fchown(slave, c->uid, c->gid) != 0 || fchmod(slave, 0620) != 0) {}
    struct winsize ws = { (unsigned short)req_num(r, "rows", 24), (unsigned short)req_num(r, "cols", 80), 0, 0 };
    ioctl(master, TIOCSWINSZ, &ws);
    char *argv[MAX_ARGS];
    char login[300];
    if (req_all(r, "argv", argv, MAX_ARGS - 1) == 0) {
        const char *shell = user_shell;
        const char *base = strrchr(shell, '/');
        snprintf(login, sizeof login, "-%s", base ? base + 1 : shell);    /* a login shell */
        char path[300], *real[] = { login, 0 }, cwd_buf[4096];
        snprintf(path, sizeof path, "%s", shell);
        const char *cwd = resolve(req_get(r, "cwd"), cwd_buf, sizeof cwd_buf);
        int ep[2];
        if (pipe2(ep, O_CLOEXEC) != 0) e = errno;
        pid_t pid = e ? -1 : fork();
        if (pid == 0) {
            setsid();
            ioctl(slave, TIOCSCTTY, 0);
            dup2(slave, 0); dup2(slave, 1); dup2(slave, 2);
            child_setup(c->uid, c->gid, 0);
            int ce = 0;
            if (chdir(cwd) != 0 && chdir(user_home) != 0) ce = errno;
            if (!ce) { execve(path, real, make_env(r, c->uid, 1)); ce = errno; }
            write_all(ep[1], &ce, sizeof ce);
            _exit(127);
        }
        if (pid > 0) {
            close(ep[1]);
            int ce = 0;
            ssize_t got;
            while ((got = read(ep[0], &ce, sizeof ce)) < 0 && errno == EINTR) {}
            close(ep[0]);
            if (got == (ssize_t)sizeof ce && ce) { e = ce; waitpid(pid, 0, 0); }
            else c->pid = pid;
        } else if (!e) { e = errno; close(ep[0]); close(ep[1]); }
    } else {
        char cwd_buf[4096];
        e = start_child(c, argv, make_env(r, c->uid, 1), resolve(req_get(r, "cwd"), cwd_buf, sizeof cwd_buf),
                        slave, slave, slave, 0, 0, slave);
    }
    close(slave);
    if (e) { send_error(c->id, kind_of(e), e, "cannot start the shell: %s", strerror(e)); close(master); chan_free(c, 0); return; }
    set_nonblock(master);
    c->out_fd = master;
    c->in_fd = dup(master);
    fcntl(c->in_fd, F_SETFD, FD_CLOEXEC);
    struct kvb b = { .n = 0 };
    kv(&b, "pid", "%d", c->pid);
    send_frame(T_OK, c->id, b.buf, b.n);
}

static void op_sync(struct chan *c, struct req r) {
    struct kvb b = { .n = 0 };
    const char *sec = req_get(r, "sec");
    if (sec && !no_clock) {
        struct timespec t = { strtoll(sec, 0, 10), (long)req_num(r, "nsec", 0) };
        kv(&b, "clock", "%s", clock_settime(CLOCK_REALTIME, &t) == 0 ? "set" : strerror(errno));
    } else kv(&b, "clock", "skipped");
    const char *hex = req_get(r, "seed");
    if (hex) {
        struct { struct rand_pool_info info; unsigned char buf[512]; } pool;
        size_t n = 0;
        for (const char *h = hex; h[0] && h[1] && n < sizeof pool.buf; h += 2) {
            unsigned a, v;
            if (sscanf(h, "%1x%1x", &a, &v) != 2) break;
            pool.buf[n++] = (unsigned char)(a << 4 | v);
        }
        pool.info.entropy_count = (int)n * 8;
        pool.info.buf_size = (int)n;
        int rnd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
        int ok = rnd >= 0;
        if (ok) {
            /* buf follows info directly in memory: rand_pool_info ends in a flexible array */
            ok = ioctl(rnd, RNDADDENTROPY, &pool) == 0;
            if (!ok) write_all(rnd, pool.buf, n);        /* mixed in, not credited */
            ioctl(rnd, RNDRESEEDCRNG);
            close(rnd);
        }
        kv(&b, "seeded", "%zu", n);
    }
    send_frame(T_END, c->id, b.buf, b.n);
    chan_free(c, 0);
}

/* ---- incoming frames ----------------------------------------------------------------------- */

static void input_data(struct chan *c, const unsigned char *p, size_t n) {
    if (c->op == OP_PUT || c->op == OP_UNTAR) {
        if (c->op == OP_UNTAR && c->phase > 0) return;
        c->bytes += (long long)n;
        if (c->limit > 0 && c->bytes > c->limit) {
            send_error(c->id, "toolarge", EFBIG, "more than %lld bytes", c->limit);
            chan_free(c, 0);
            return;
        }
        if (write_all(c->file_fd, p, n) != 0) {
            int e = errno;
            send_error(c->id, kind_of(e), e, "write: %s", strerror(e));
            chan_free(c, 0);
            return;
        }
        c->unacked += (uint32_t)n;
        if (c->unacked >= WINDOW / 4) { send_window(c->id, c->unacked); c->unacked = 0; }
        return;
    }
    if (c->in_fd < 0) { send_window(c->id, (uint32_t)n); return; }   /* nobody reads: dropped */
    c->ib = xrealloc(c->ib, c->ib_len + n);
    memcpy(c->ib + c->ib_len, p, n);
    c->ib_len += n;
}

static void input_eof(struct chan *c) {
    c->in_eof = 1;
    if (c->op == OP_PUT) put_finish(c);
    else if (c->op == OP_UNTAR && c->phase == 0) untar_step(c);
    else if (c->op == OP_EXEC && c->ib_len == 0) close_fd(&c->in_fd);
}

static void host_close(struct chan *c) {
    if (c->op == OP_EXEC && c->pid > 0 && !c->reaped) {
        c->cancelled = 1;
        if (kill(-c->pid, SIGTERM) != 0) kill(c->pid, SIGTERM);
        c->kill_at = now_ms() + c->kill_after_ms;
        close_fd(&c->in_fd);
        return;                                      /* its END comes when it has ended */
    }
    struct kvb b = { .n = 0 };
    kv(&b, "cancelled", "1");
    send_frame(T_END, c->id, b.buf, b.n);
    chan_free(c, 0);
}

/* Is `op` one of the comma-separated names in `list`? */
static int op_listed(const char *list, const char *op) {
    size_t len = strlen(op);
    for (const char *s = list; *s;) {
        const char *end = strchr(s, ',');
        size_t n = end ? (size_t)(end - s) : strlen(s);
        if (n == len && strncmp(s, op, n) == 0) return 1;
        if (!end) break;
        s = end + 1;
    }
    return 0;
}

static void handle(int type, uint32_t id, const unsigned char *p, size_t n) {
    if (type == T_HELLO) {
        if (n != 16 || memcmp(p, MAGIC, 8) != 0) return;
        reset_all();
        ob_len = 0;                                  /* whatever was queued belongs to the old host */
        send_frame(T_HELLO, 0, p, 16);
        return;
    }
    struct chan *c = find_chan(id);
    if (type == T_OPEN) {
        struct req r = { (const char *)p, n };
        const char *op = req_get(r, "op");
        static const char *names[] = { "", "exec", "spawn", "put", "get", "stat", "list", "untar", "pty", "sync-time" };
        int code = 0;
        for (int i = 1; op && i < (int)(sizeof names / sizeof names[0]); i++) if (!strcmp(op, names[i])) code = i;
        if (c) { send_error(id, "badrequest", EBUSY, "channel %u is open", id); return; }
        if (!code) { send_error(id, "badrequest", EINVAL, "unknown operation"); return; }
        if (only_ops && !op_listed(only_ops, op)) {
            send_error(id, "badrequest", EPERM, "operation %s is not served on this port", op);
            return;
        }
        if (!(c = chan_new(id, code, r))) { send_error(id, "busy", EAGAIN, "too many channels"); return; }
        const char *beneath = req_get(r, "beneath");
        if (beneath) {
            snprintf(c->beneath, sizeof c->beneath, "%s", beneath);
            as_user(c->uid, c->gid);
            c->beneath_fd = open(beneath, O_PATH | O_DIRECTORY | O_CLOEXEC);
            int e = errno;
            as_root();
            if (c->beneath_fd < 0) { send_error(id, kind_of(e), e, "%s: %s", beneath, strerror(e)); chan_free(c, 0); return; }
        }
        void (*ops[])(struct chan *, struct req) = { 0, op_exec, op_spawn, op_put, op_get, op_stat, op_list,
                                                     op_untar, op_pty, op_sync };
        ops[code](c, r);
        return;
    }
    if (!c) return;                                  /* a channel that already ended */
    switch (type) {
    case T_DATA: input_data(c, p, n); break;
    case T_EOF: input_eof(c); break;
    case T_WINDOW: if (n == 4) c->credit += get_u32(p); break;
    case T_RESIZE:
        if (n == 4 && c->op == OP_PTY && c->out_fd >= 0) {
            struct winsize ws = { (unsigned short)(p[0] << 8 | p[1]), (unsigned short)(p[2] << 8 | p[3]), 0, 0 };
            ioctl(c->out_fd, TIOCSWINSZ, &ws);
        }
        break;
    case T_CLOSE: host_close(c); break;
    }
}

static unsigned char in_buf[2 * (MAX_PAYLOAD + HEAD)];
static size_t in_len;
static int synced = 1;

/* Out of step (a frame that cannot be): skip to the next HELLO. The host starts every connection
   with a run of NOP bytes longer than any frame, then a HELLO, so a half-read frame of an earlier
   connection is always completed by NOPs and the HELLO is read in step. */
static void parse(void) {
    static const unsigned char sync[HEAD + 8] = { T_HELLO, 0, 0, 0, 0, 0, 0, 0, 16, 'O', 'H', 'G', 'U', 'E', 'S', 'T', '1' };
    size_t pos = 0;
    for (;;) {
        if (!synced) {
            unsigned char *hit = memmem(in_buf + pos, in_len - pos, sync, sizeof sync);
            if (!hit) { if (in_len - pos > sizeof sync) pos = in_len - sizeof sync; break; }
            pos = (size_t)(hit - in_buf);
            synced = 1;
        }
        if (pos < in_len && in_buf[pos] == T_NOP) { pos++; continue; }
        if (in_len - pos < HEAD) break;
        int type = in_buf[pos];
        uint32_t id = get_u32(in_buf + pos + 1), n = get_u32(in_buf + pos + 5);
        if (n > MAX_PAYLOAD || type > T_CLOSE) { synced = 0; reset_all(); pos++; continue; }
        if (in_len - pos < HEAD + n) break;
        handle(type, id, in_buf + pos + HEAD, n);
        pos += HEAD + n;
    }
    memmove(in_buf, in_buf + pos, in_len - pos);
    in_len -= pos;
}

/* ---- children and their pipes -------------------------------------------------------------- */

static int port_news;                     /* SIGIO: the port's host end connected, or data came */

static void reap(void) {
    struct signalfd_siginfo si;
    while (read(sig_fd, &si, sizeof si) > 0) if (si.ssi_signo == SIGIO) port_news = 1;
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        for (int i = 0; i < MAX_CHANS; i++) {
            struct chan *c = &chans[i];
            if (!c->used || c->pid != pid || c->reaped) continue;
            c->reaped = 1; c->status = st; c->draining = 1;
            if (c->op != OP_PTY) kill(-pid, SIGKILL);     /* what it left in its session */
        }
    }
}

/* Read what fd has; forward as `type` or collect it. 0 when fd is done. */
static int pump(struct chan *c, int fd, int type) {
    char buf[MAX_PAYLOAD];
    size_t want = sizeof buf;
    if (!c->collect && c->credit < (long long)want) want = (size_t)c->credit;
    if (want == 0) return 1;
    ssize_t got = read(fd, buf, want);
    if (got < 0 && errno == EINTR) return 1;
    if (got < 0 && errno == EAGAIN) return !c->draining;
    if (got <= 0) return 0;                          /* EOF, or EIO: a PTY whose slave is closed */
    if (c->collect) {
        if (type == T_STDERR) {
            size_t take = (size_t)got < ERR_CAP - 1 - c->eb_len ? (size_t)got : ERR_CAP - 1 - c->eb_len;
            memcpy(c->ebuf + c->eb_len, buf, take);
            c->eb_len += take;
        } else if (c->lb_len + (size_t)got <= LIST_CAP) {
            c->lbuf = xrealloc(c->lbuf, c->lb_len + (size_t)got);
            memcpy(c->lbuf + c->lb_len, buf, (size_t)got);
            c->lb_len += (size_t)got;
        }
        return 1;
    }
    send_frame(type, c->id, buf, (size_t)got);
    c->credit -= got;
    return 1;
}

static void feed_child(struct chan *c) {
    while (c->ib_len > 0) {
        ssize_t w = write(c->in_fd, c->ib, c->ib_len);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) return;
        if (w < 0) { w = (ssize_t)c->ib_len; close_fd(&c->in_fd); }   /* EPIPE: the reader is gone */
        memmove(c->ib, c->ib + w, c->ib_len - (size_t)w);
        c->ib_len -= (size_t)w;
        c->unacked += (uint32_t)w;
        if (c->in_fd < 0) break;
    }
    if (c->unacked >= WINDOW / 4 || (c->ib_len == 0 && c->unacked)) { send_window(c->id, c->unacked); c->unacked = 0; }
    if (c->ib_len == 0 && c->in_eof && c->op == OP_EXEC) close_fd(&c->in_fd);
}

static void finish_process(struct chan *c) {
    if (c->op == OP_UNTAR) { untar_done_phase(c); return; }
    struct kvb b = { .n = 0 };
    if (WIFEXITED(c->status)) kv(&b, "exit", "%d", WEXITSTATUS(c->status));
    if (WIFSIGNALED(c->status)) kv(&b, "signal", "%d", WTERMSIG(c->status));
    if (c->timed_out) kv(&b, "timed_out", "1");
    if (c->cancelled) kv(&b, "cancelled", "1");
    send_frame(T_END, c->id, b.buf, b.n);
    chan_free(c, 0);
}

/* ---- the port -------------------------------------------------------------------------------- */

static int find_port(const char *wanted, char *path, size_t size) {
    DIR *dir = opendir("/sys/class/virtio-ports");
    if (!dir) return -1;
    struct dirent *e;
    int found = -1;
    while (found < 0 && (e = readdir(dir)) != 0) {
        if (e->d_name[0] == '.') continue;
        char name[128];
        snprintf(path, size, "/sys/class/virtio-ports/%s/name", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t n = read(fd, name, sizeof name - 1);
        close(fd);
        if (n <= 0) continue;
        name[n] = 0;
        if (name[n - 1] == '\n') name[n - 1] = 0;
        if (strcmp(name, wanted) == 0) { snprintf(path, size, "/dev/%s", e->d_name); found = 0; }
    }
    closedir(dir);
    return found;
}

/* ---- the workspace user ---------------------------------------------------------------------- */

static void user_setup(void) {
    char line[2048];
    int found = 0;
    FILE *f = fopen("/etc/passwd", "re");
    while (f && fgets(line, sizeof line, f)) {
        char *fields[7] = { 0 }, *s = line;
        for (int i = 0; i < 7 && s; i++) { fields[i] = s; s = strchr(s, ':'); if (s) *s++ = 0; }
        if (!fields[6] || strcmp(fields[0], user_name) != 0) continue;
        user_uid = (uid_t)atoi(fields[2]); user_gid = (gid_t)atoi(fields[3]);
        snprintf(user_home, sizeof user_home, "%s", fields[5]);
        fields[6][strcspn(fields[6], "\n")] = 0;
        snprintf(user_shell, sizeof user_shell, "%s", fields[6]);
        found = 1;
    }
    if (f) fclose(f);
    const char *shell = access("/bin/bash", X_OK) == 0 ? "/bin/bash" : "/bin/sh";
    if (!found) {
        snprintf(user_shell, sizeof user_shell, "%s", shell);
        int fd = open("/etc/passwd", O_WRONLY | O_APPEND | O_CLOEXEC);
        if (fd >= 0) {
            dprintf(fd, "%s:x:%u:%u::%s:%s\n", user_name, user_uid, user_gid, user_home, shell);
            close(fd);
        }
        if ((fd = open("/etc/group", O_WRONLY | O_APPEND | O_CLOEXEC)) >= 0) {
            dprintf(fd, "%s:x:%u:\n", user_name, user_gid);
            close(fd);
        }
        if ((fd = open("/etc/shadow", O_WRONLY | O_APPEND | O_CLOEXEC)) >= 0) {
            dprintf(fd, "%s:!:19000:0:99999:7:::\n", user_name);
            close(fd);
        }
    }
    if (!user_shell[0] || access(user_shell, X_OK) != 0) snprintf(user_shell, sizeof user_shell, "%s", shell);
}

static void make_dir(const char *path) {
    if (mkdir(path, 0755) == 0 && chown(path, user_uid, user_gid) != 0) {}
}

/* ---- main ------------------------------------------------------------------------------------ */

static void usage(void) {
    fprintf(stderr, "usage: oh-guest [--port NAME | --device PATH | --fd N] [--user NAME] [--uid N --gid N]\n"
                    "                [--home DIR] [--workspace DIR] [--shell PATH] [--no-user-setup] [--no-clock]\n"
                    "                [--only OP,OP...]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int fd_arg = -1, uid_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : 0;
        if (!strcmp(a, "--no-clock")) no_clock = 1;
        else if (!strcmp(a, "--no-user-setup")) no_user_setup = 1;
        else if (!v) usage();
        else if (!strcmp(a, "--port")) port_name = v, i++;
        else if (!strcmp(a, "--only")) only_ops = v, i++;
        else if (!strcmp(a, "--device")) device_path = v, i++;
        else if (!strcmp(a, "--fd")) fd_arg = atoi(v), i++;
        else if (!strcmp(a, "--user")) user_name = v, i++;
        else if (!strcmp(a, "--uid")) user_uid = (uid_t)atoi(v), uid_given = 1, i++;
        else if (!strcmp(a, "--gid")) user_gid = (gid_t)atoi(v), i++;
        else if (!strcmp(a, "--home")) snprintf(user_home, sizeof user_home, "%s", v), i++;
        else if (!strcmp(a, "--workspace")) snprintf(workspace, sizeof workspace, "%s", v), i++;
        else if (!strcmp(a, "--shell")) snprintf(user_shell, sizeof user_shell, "%s", v), i++;
        else usage();
    }
    if (!no_user_setup && !uid_given) user_setup();
    if (!user_shell[0] || access(user_shell, X_OK) != 0)
        snprintf(user_shell, sizeof user_shell, "%s", access("/bin/bash", X_OK) == 0 ? "/bin/bash" : "/bin/sh");
    if (!workspace[0]) snprintf(workspace, sizeof workspace, "%s/workspace", user_home);
    make_dir(user_home);
    make_dir(workspace);

    int adj = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (adj >= 0) { write_all(adj, "-1000", 5); close(adj); }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGIO);
    sigprocmask(SIG_BLOCK, &mask, &old_mask);
    sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    setgroups(0, 0);
    umask(022);
    srand((unsigned)getpid() ^ (unsigned)now_ms());

    char path[300];
    if (fd_arg >= 0) port_fd = fd_arg;
    else {
        if (!device_path) {
            for (int i = 0; i < 100 && find_port(port_name, path, sizeof path) != 0; i++) usleep(100000);
            device_path = path;
        }
        port_fd = open(device_path, O_RDWR | O_NOCTTY | O_CLOEXEC);
    }
    if (port_fd < 0) { fprintf(stderr, "oh-guest: cannot open the port: %s\n", strerror(errno)); return 1; }
    fcntl(port_fd, F_SETFD, FD_CLOEXEC);
    struct stat st;
    port_is_socket = fstat(port_fd, &st) == 0 && S_ISSOCK(st.st_mode);
    if (isatty(port_fd)) {
        struct termios t;
        tcgetattr(port_fd, &t);
        cfmakeraw(&t);
        tcsetattr(port_fd, TCSANOW, &t);
    }
    set_nonblock(port_fd);
    /* virtio_console signals SIGIO when the host end connects: no need to look often meanwhile */
    fcntl(port_fd, F_SETOWN, getpid());
    fcntl(port_fd, F_SETFL, fcntl(port_fd, F_GETFL) | O_ASYNC);

    long long port_retry_at = 0, backoff = 2;
    static struct pollfd pf[2 + 3 * MAX_CHANS];
    static int who[2 + 3 * MAX_CHANS];
    for (;;) {
        long long now = now_ms(), wait = -1;
        int n = 0, port_slot = -1;
        pf[n].fd = sig_fd; pf[n].events = POLLIN; who[n++] = -1;
        if (now >= port_retry_at) {
            pf[n].fd = port_fd; pf[n].events = POLLIN | (ob_len ? POLLOUT : 0); port_slot = n; who[n++] = -1;
        } else wait = port_retry_at - now;
        int room = ob_len < OUT_CAP;
        for (int i = 0; i < MAX_CHANS; i++) {
            struct chan *c = &chans[i];
            if (!c->used) continue;
            int can_send = room && c->credit > 0;
            if ((c->op == OP_GET || c->op == OP_LIST) && can_send) wait = 0;
            if (c->out_fd >= 0 && (c->collect || can_send)) {
                if (c->draining) wait = 0;
                pf[n].fd = c->out_fd; pf[n].events = POLLIN; who[n++] = i;
            }
            if (c->err_fd >= 0 && (c->collect || can_send)) {
                if (c->draining) wait = 0;
                pf[n].fd = c->err_fd; pf[n].events = POLLIN; who[n++] = i;
            }
            if (c->in_fd >= 0 && c->ib_len > 0) { pf[n].fd = c->in_fd; pf[n].events = POLLOUT; who[n++] = i; }
            if (c->reaped && c->out_fd < 0 && c->err_fd < 0) wait = 0;
            long long due = c->reaped ? 0 : c->kill_at ? c->kill_at : c->deadline;
            if (due) { long long left = due > now ? due - now : 0; if (wait < 0 || left < wait) wait = left; }
        }
        if (poll(pf, (nfds_t)n, (int)wait) < 0 && errno != EINTR) return 1;
        if (pf[0].revents) reap();
        if (port_news) { port_news = 0; port_retry_at = 0; backoff = 2; }
        if (port_slot >= 0 && (pf[port_slot].revents & (POLLIN | POLLHUP | POLLERR))) {
            /* A virtio port hands out one 4 KiB buffer per read: read on while there is more (up
               to 64 reads) rather than going round the loop for each. */
            for (int reads = 0;; reads++) {
                if (in_len == sizeof in_buf) parse();
                ssize_t got = read(port_fd, in_buf + in_len, sizeof in_buf - in_len);
                if (got > 0) {
                    in_len += (size_t)got;
                    backoff = 2;
                    if (reads < 64) continue;
                } else if (reads == 0 && (got == 0 || (errno != EAGAIN && errno != EINTR))) {
                    if (port_is_socket || (got < 0 && errno != EIO)) return 0;   /* the host end is gone for good */
                    /* a virtio port without a host reads as ended: look again later (SIGIO comes
                       when the host connects; else a little later each time, at most 256 ms: in a
                       clone restored from a template, whose wait had grown long, the SIGIO of its
                       host's connection does not always come, and a workspace's create waited up
                       to a second for the HELLO; at 128 ms an idle workspace's wake-ups cost 0.6%
                       of a core more under TCG) */
                    port_retry_at = now_ms() + backoff;
                    if (backoff < 256) backoff *= 2;
                }
                break;
            }
            parse();
        }
        if (ob_len) {
            ssize_t w = write(port_fd, ob, ob_len);
            if (w > 0) { memmove(ob, ob + w, ob_len - (size_t)w); ob_len -= (size_t)w; }
        }
        for (int k = 1; k < n; k++) {
            int i = who[k];
            if (i < 0 || !chans[i].used) continue;
            struct chan *c = &chans[i];
            if (pf[k].fd == c->in_fd && (pf[k].revents & (POLLOUT | POLLERR | POLLHUP))) feed_child(c);
            else if (pf[k].fd == c->out_fd && (pf[k].revents || c->draining)) {
                if (!pump(c, c->out_fd, T_DATA)) close_fd(&c->out_fd);
            } else if (pf[k].fd == c->err_fd && (pf[k].revents || c->draining)) {
                if (!pump(c, c->err_fd, T_STDERR)) close_fd(&c->err_fd);
            }
        }
        now = now_ms();
        for (int i = 0; i < MAX_CHANS; i++) {
            struct chan *c = &chans[i];
            if (!c->used) continue;
            int can_send = ob_len < OUT_CAP && c->credit > 0;
            if (c->op == OP_GET && can_send) get_more(c);
            else if (c->op == OP_LIST && can_send) list_more(c);
            else if (c->pid > 0 && !c->reaped) {
                if (c->deadline && now >= c->deadline && !c->timed_out) {
                    c->timed_out = 1;
                    if (kill(-c->pid, SIGTERM) != 0) kill(c->pid, SIGTERM);
                    c->kill_at = now + c->kill_after_ms;
                } else if (c->kill_at && now >= c->kill_at) {
                    if (kill(-c->pid, SIGKILL) != 0) kill(c->pid, SIGKILL);
                    c->kill_at = 0; c->deadline = 0;
                }
            } else if (c->pid > 0 && c->reaped && c->out_fd < 0 && c->err_fd < 0) finish_process(c);
        }
    }
}
