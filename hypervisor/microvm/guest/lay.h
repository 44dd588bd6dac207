/* lay.h: oh-guest's own extraction of a plain tar into an empty directory, as the user (included by
 * oh-guest.c; its hash is part of the binary's cache key, build.py).
 *
 * Only for archives the host has checked and written itself (tarcheck.canonical): GNU format as
 * Python's tarfile writes it (regular files, directories, symbolic and hard links; names longer than
 * 100 bytes in 'L'/'K' records before their member), names relative without `..`, no member below a
 * link of the archive, hard links only to earlier files. Anything else is refused as a bad archive;
 * the checks here do not trust the host's: every directory on a member's way is opened O_NOFOLLOW
 * below the destination, so nothing is written outside it whatever the archive says.
 *
 * What it does is what `tar -xf - --no-same-owner --no-overwrite-dir --delay-directory-restore`
 * does as the user: missing parents made, a later member replaces an earlier file of its name,
 * modes masked by the umask, modification times kept, directories' modes and times set at the end.
 * Under TCG this saves the exec of tar, which a fresh clone translates anew (0.1-0.2 s).
 */

#define LAY_BLOCK 512

struct lay_dir { char *name; mode_t mode; struct timespec mtime; };

struct lay {
    int src, root;            /* the archive (read with pread), the destination directory */
    off_t at;
    mode_t umask;
    long long members;
    char *long_name, *long_link;
    struct lay_dir *dirs; size_t ndirs, cap;
    const char *bad;          /* a format problem: refused as a bad archive */
    char why[512];            /* what failed (errno text), with `bad` unset: an I/O error */
};

/* An octal field; -1 when it is not one (base-256 and other forms are not written by the host). */
static long long lay_octal(const unsigned char *p, size_t n) {
    long long v = 0;
    size_t i = 0;
    while (i < n && p[i] == ' ') i++;
    if (i == n || p[i] < '0' || p[i] > '7') return -1;
    for (; i < n && p[i] >= '0' && p[i] <= '7'; i++) {
        if (v > (LLONG_MAX >> 3)) return -1;
        v = v * 8 + (p[i] - '0');
    }
    return v;
}

/* n bytes at l->at: 0; 1 at the archive's end (nothing left); -1 when it ends inside them. */
static int lay_read(struct lay *l, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(l->src, (char *)buf + got, n - got, l->at + (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return got == 0 && r == 0 ? 1 : -1;
        got += (size_t)r;
    }
    l->at += (off_t)n;
    return 0;
}

/* A member's data as a string (an 'L' or 'K' record), into *out. */
static int lay_string(struct lay *l, long long size, char **out) {
    if (size <= 0 || size >= 4096) { l->bad = "a long-name record of a bad size"; return -1; }
    free(*out);
    *out = xrealloc(0, (size_t)size + 1);
    if (lay_read(l, *out, (size_t)size) != 0) { l->bad = "the archive ends inside a record"; return -1; }
    (*out)[size] = 0;
    l->at += (LAY_BLOCK - size % LAY_BLOCK) % LAY_BLOCK;
    return 0;
}

/* The directory that holds `name` (opened below root, each step O_NOFOLLOW, missing ones made when
   `make`), and the name's last component in *last. -2: the name is the destination itself ("."),
   -1: errno or l->bad says why. */
static int lay_parent(struct lay *l, char *name, char **last, int make) {
    char *save = 0, *comp = strtok_r(name, "/", &save);
    while (comp && !strcmp(comp, ".")) comp = strtok_r(0, "/", &save);
    *last = 0;
    if (!comp) return -2;
    int dir = dup(l->root);
    for (;;) {
        char *next = strtok_r(0, "/", &save);
        while (next && !strcmp(next, ".")) next = strtok_r(0, "/", &save);
        if (!strcmp(comp, "..")) { l->bad = "a member name with .."; close(dir); return -1; }
        if (!next) { *last = comp; return dir; }
        if (make && mkdirat(dir, comp, 0755) != 0 && errno != EEXIST) { int e = errno; close(dir); errno = e; return -1; }
        int sub = openat(dir, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int e = errno;
        close(dir);
        if (sub < 0) { errno = e == ELOOP ? ENOTDIR : e; return -1; }
        dir = sub;
        comp = next;
    }
}

/* Make room for a new non-directory `last` in dir: an earlier file or link of that name goes. */
static int lay_clear(int dir, const char *last) {
    struct stat st;
    if (fstatat(dir, last, &st, AT_SYMLINK_NOFOLLOW) != 0) return errno == ENOENT ? 0 : -1;
    if (S_ISDIR(st.st_mode)) { errno = EISDIR; return -1; }
    return unlinkat(dir, last, 0);
}

static int lay_copy(struct lay *l, int fd, long long size) {
    char buf[65536];
    while (size > 0) {
        size_t n = size < (long long)sizeof buf ? (size_t)size : sizeof buf;
        if (lay_read(l, buf, n) != 0) { l->bad = "the archive ends inside a file"; return -1; }
        if (write_all(fd, buf, n) != 0) return -1;
        size -= (long long)n;
    }
    return 0;
}

/* One member: header `h` read; its data follows at l->at. 0, or -1 (l->bad, or errno). */
static int lay_member(struct lay *l, const unsigned char *h) {
    long long size = lay_octal(h + 124, 12), mode = lay_octal(h + 100, 8), mtime = lay_octal(h + 136, 12);
    char type = (char)h[156];
    off_t data_at = l->at;
    if (size < 0 || mode < 0) { l->bad = "a header with a bad size or mode"; return -1; }
    if (type == 'L') return lay_string(l, size, &l->long_name);
    if (type == 'K') return lay_string(l, size, &l->long_link);
    char name[4096], link[4096];
    if (l->long_name) snprintf(name, sizeof name, "%s", l->long_name);
    else snprintf(name, sizeof name, "%.100s", (const char *)h);
    if (l->long_link) snprintf(link, sizeof link, "%s", l->long_link);
    else snprintf(link, sizeof link, "%.100s", (const char *)h + 157);
    free(l->long_name); free(l->long_link);
    l->long_name = l->long_link = 0;
    int reg = type == '0' || type == 0 || type == '7';
    if ((!reg && type != '5' && type != '2' && type != '1') || (!reg && size != 0)) {
        l->bad = "a member of a type this extraction does not make";
        return -1;
    }
    if (name[0] == '/') { l->bad = "an absolute member name"; return -1; }
    l->members++;
    char path[4096], *last;
    snprintf(path, sizeof path, "%s", name);
    int dir = lay_parent(l, path, &last, 1);
    if (dir == -2 && type == '5') return 0;       /* "./": the destination itself */
    if (dir < 0) {
        if (dir == -2) l->bad = "a member that is not a directory named as the destination";
        else if (!l->bad) snprintf(l->why, sizeof l->why, "%.300s: %s", name, strerror(errno));
        return -1;
    }
    mode_t perm = (mode_t)mode & 0777 & ~l->umask;
    struct timespec times[2] = { { 0, UTIME_OMIT }, { mtime >= 0 ? mtime : 0, mtime >= 0 ? 0 : UTIME_OMIT } };
    int rc = 0;
    if (type == '5') {
        /* as tar --no-overwrite-dir: a directory that is there already (made for an earlier member)
           keeps its mode, and takes this member's time */
        mode_t keep = perm;
        if (mkdirat(dir, last, 0700) != 0) {
            struct stat st;
            if (errno != EEXIST || fstatat(dir, last, &st, AT_SYMLINK_NOFOLLOW) != 0) rc = -1;
            else if (!S_ISDIR(st.st_mode)) {
                if (unlinkat(dir, last, 0) != 0 || mkdirat(dir, last, 0700) != 0) rc = -1;
            } else keep = (mode_t)-1;
        }
        struct lay_dir *known = 0;
        for (size_t i = 0; rc == 0 && keep == (mode_t)-1 && i < l->ndirs && !known; i++)
            if (!strcmp(l->dirs[i].name, name)) known = &l->dirs[i];
        if (known) known->mtime = times[1];
        else if (rc == 0) {
            if (l->ndirs == l->cap) {
                l->cap = l->cap ? 2 * l->cap : 64;
                l->dirs = xrealloc(l->dirs, l->cap * sizeof *l->dirs);
            }
            l->dirs[l->ndirs++] = (struct lay_dir){ strdup(name), keep, times[1] };
        }
    } else if (lay_clear(dir, last) != 0) {
        rc = -1;
    } else if (type == '2') {
        rc = symlinkat(link, dir, last) != 0 || utimensat(dir, last, times, AT_SYMLINK_NOFOLLOW) != 0 ? -1 : 0;
    } else if (type == '1') {
        char target[4096], *tlast;
        snprintf(target, sizeof target, "%s", link);
        int tdir = lay_parent(l, target, &tlast, 0);
        if (tdir < 0) {
            if (tdir == -2) errno = EISDIR;
            rc = -1;
        } else {
            rc = linkat(tdir, tlast, dir, last, 0) != 0 ? -1 : 0;
            int e = errno;
            close(tdir);
            errno = e;
        }
    } else {
        int fd = openat(dir, last, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) rc = -1;
        else {
            rc = lay_copy(l, fd, size) != 0 || fchmod(fd, perm) != 0 || futimens(fd, times) != 0 ? -1 : 0;
            int e = errno;
            close(fd);
            errno = e;
        }
    }
    int e = errno;
    close(dir);
    errno = e;
    if (rc != 0) {
        if (!l->bad) snprintf(l->why, sizeof l->why, "%.300s: %s", name, strerror(errno));
        return -1;
    }
    l->at = data_at + (off_t)((size + LAY_BLOCK - 1) / LAY_BLOCK * LAY_BLOCK);
    return 0;
}

/* Directories last, deepest first: their modes (which may forbid writing in them) and times. */
static int lay_dirs(struct lay *l) {
    int rc = 0;
    for (size_t i = l->ndirs; i-- > 0;) {
        struct lay_dir *d = &l->dirs[i];
        char path[4096], *last;
        snprintf(path, sizeof path, "%s", d->name);
        int dir = lay_parent(l, path, &last, 0);
        if (dir < 0) {
            if (dir == -1) rc = -1;
        }
        else {
            struct timespec times[2] = { { 0, UTIME_OMIT }, d->mtime };
            int sub = openat(dir, last, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0 || (d->mode != (mode_t)-1 && fchmod(sub, d->mode) != 0) || futimens(sub, times) != 0) rc = -1;
            if (rc != 0 && !l->why[0] && !l->bad) snprintf(l->why, sizeof l->why, "%.300s: %s", d->name, strerror(errno));
            if (sub >= 0) close(sub);
            close(dir);
        }
        free(d->name);
    }
    free(l->dirs);
    return rc;
}

/* Extract the archive in `src` into `root`; the number of members, or -1 (then *bad says a format
   problem, else `why` an I/O error). Runs with the caller's file-system identity. */
static long long lay_tar(int src, int root, const char **bad, char *why, size_t why_size) {
    struct lay l = { .src = src, .root = root };
    l.umask = umask(0);
    umask(l.umask);
    unsigned char h[LAY_BLOCK];
    int rc = 0, zeros = 0;
    while (rc == 0) {
        int end = lay_read(&l, h, LAY_BLOCK);
        if (end == 1) break;                   /* the end, without end blocks: taken, as tar does */
        if (end < 0) { l.bad = "the archive ends inside a header"; rc = -1; break; }
        int zero = 1;
        for (int i = 0; i < LAY_BLOCK && zero; i++) zero = !h[i];
        if (zero) { if (++zeros == 2) break; continue; }
        zeros = 0;
        long long sum = lay_octal(h + 148, 8), got = 0;
        for (int i = 0; i < LAY_BLOCK; i++) got += (i >= 148 && i < 156) ? ' ' : h[i];
        if (sum != got) { l.bad = "a header with a bad checksum"; rc = -1; break; }
        rc = lay_member(&l, h);
    }
    if (rc == 0 && (l.long_name || l.long_link)) { l.bad = "a long-name record without its member"; rc = -1; }
    if (lay_dirs(&l) != 0 && rc == 0) rc = -1;
    free(l.long_name); free(l.long_link);
    *bad = l.bad;
    snprintf(why, why_size, "%s", l.why[0] ? l.why : "extraction failed");
    return rc == 0 ? l.members : -1;
}
