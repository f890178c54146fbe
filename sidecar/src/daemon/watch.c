/*
 * watch: directory watches plus stat comparison. See watch.h.
 */
#define _DEFAULT_SOURCE /* inotify's IN_* and struct stat's st_mtim */
#include "watch.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DIR_MASK                                                                                   \
    (IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE | IN_MOVED_FROM | IN_ATTRIB |            \
     IN_DELETE_SELF | IN_MOVE_SELF)

typedef struct {
    char *path;
    char *dir;
    int wd;           /* watch descriptor of dir, -1 when not watched */
    char *target_dir; /* directory of the file the path resolves to, when it is a
                         symlink elsewhere (an edit there changes the file too) */
    int target_wd;
    int exists;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
} entry;

struct wr_watch {
    int fd;
    entry *files;
    int n;
    int pending;       /* events arrived since the last comparison */
    double last_event; /* monotonic ms */
};

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* stat E's path (following symlinks); 1 if anything differs from before. */
static int refresh(entry *e)
{
    struct stat st;
    int exists = stat(e->path, &st) == 0;
    int changed = exists != e->exists;
    if (exists) {
        changed |= st.st_dev != e->dev || st.st_ino != e->ino || st.st_size != e->size ||
                   st.st_mtim.tv_sec != e->mtime.tv_sec || st.st_mtim.tv_nsec != e->mtime.tv_nsec;
        e->dev = st.st_dev;
        e->ino = st.st_ino;
        e->size = st.st_size;
        e->mtime = st.st_mtim;
    }
    e->exists = exists;
    return changed;
}

static void add_watches(wr_watch *w)
{
    for (int i = 0; i < w->n; i++) {
        entry *e = &w->files[i];
        if (e->wd < 0) {
            /* directories shared by several files get the same wd back */
            e->wd = inotify_add_watch(w->fd, e->dir, DIR_MASK);
        }
        /* follow the symlink (again: a ConfigMap update points it elsewhere) */
        char *real = realpath(e->path, NULL);
        char *rdir = real ? strdup(dirname(real)) : NULL;
        free(real);
        if (rdir != NULL && strcmp(rdir, e->dir) != 0 &&
            (e->target_dir == NULL || strcmp(rdir, e->target_dir) != 0)) {
            free(e->target_dir);
            e->target_dir = rdir;
            e->target_wd = inotify_add_watch(w->fd, rdir, DIR_MASK);
            rdir = NULL;
        }
        free(rdir);
    }
}

wr_watch *wr_watch_create(const char *const *paths, int n, char *err, unsigned long errcap)
{
    wr_watch *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    w->files = calloc((size_t)(n > 0 ? n : 1), sizeof(*w->files));
    if (w->fd < 0 || w->files == NULL) {
        snprintf(err, errcap, "inotify: %s", strerror(errno));
        wr_watch_destroy(w);
        return NULL;
    }
    w->n = n;
    for (int i = 0; i < n; i++) {
        entry *e = &w->files[i];
        e->wd = -1;
        e->target_wd = -1;
        e->path = strdup(paths[i]);
        char *tmp = strdup(paths[i]);
        e->dir = tmp ? strdup(dirname(tmp)) : NULL;
        free(tmp);
        if (e->path == NULL || e->dir == NULL) {
            snprintf(err, errcap, "out of memory");
            wr_watch_destroy(w);
            return NULL;
        }
        refresh(e);
    }
    add_watches(w);
    for (int i = 0; i < n; i++) {
        if (w->files[i].wd < 0) {
            snprintf(err, errcap, "cannot watch %s: %s", w->files[i].dir, strerror(errno));
            wr_watch_destroy(w);
            return NULL;
        }
    }
    return w;
}

void wr_watch_destroy(wr_watch *w)
{
    if (w == NULL) {
        return;
    }
    if (w->fd >= 0) {
        close(w->fd);
    }
    for (int i = 0; i < w->n; i++) {
        free(w->files[i].path);
        free(w->files[i].dir);
        free(w->files[i].target_dir);
    }
    free(w->files);
    free(w);
}

int wr_watch_fd(const wr_watch *w)
{
    return w->fd;
}

int wr_watch_rescan(wr_watch *w)
{
    int changed = 0;
    add_watches(w); /* a directory that came back (or was replaced) */
    for (int i = 0; i < w->n; i++) {
        changed |= refresh(&w->files[i]);
    }
    return changed;
}

int wr_watch_check(wr_watch *w, int settle_ms, int *wait_ms)
{
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t len = read(w->fd, buf, sizeof(buf));
        if (len <= 0) {
            break;
        }
        for (char *p = buf; p < buf + len;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            if (ev->mask & (IN_IGNORED | IN_Q_OVERFLOW | IN_DELETE_SELF | IN_MOVE_SELF)) {
                /* the kernel dropped a watch (or events): watch again, compare all */
                for (int i = 0; i < w->n; i++) {
                    if (ev->wd == w->files[i].wd || (ev->mask & IN_Q_OVERFLOW)) {
                        w->files[i].wd = -1;
                    }
                    if (ev->wd == w->files[i].target_wd || (ev->mask & IN_Q_OVERFLOW)) {
                        free(w->files[i].target_dir); /* re-resolved by add_watches */
                        w->files[i].target_dir = NULL;
                        w->files[i].target_wd = -1;
                    }
                }
            }
            w->pending = 1;
            w->last_event = mono_ms();
            p += sizeof(struct inotify_event) + ev->len;
        }
    }
    if (!w->pending) {
        *wait_ms = -1;
        return 0;
    }
    double quiet = mono_ms() - w->last_event;
    if (quiet < settle_ms) {
        *wait_ms = settle_ms - (int)quiet + 1;
        return 0;
    }
    w->pending = 0;
    *wait_ms = -1;
    add_watches(w);
    /* Something happened in a watched directory: report it even when no
     * watched file's stat changed, because a file the watched ones depend on
     * (a module a handler requires) may have. The caller compares content. */
    wr_watch_rescan(w);
    return 1;
}
