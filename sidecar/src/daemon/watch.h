/*
 * watch: notice when files change on disk, including the ways Kubernetes and
 * editors change them.
 *
 * A ConfigMap volume holds `handler.lua -> ..data/handler.lua`, and an update
 * swaps `..data` atomically: no event ever names handler.lua, and a watch on
 * the file itself dies after the first update (docs/architecture.md). Editors save by
 * writing a temporary file and renaming it over the original. So this module
 * watches the *directories* of the files, treats any event as "something may
 * have changed", waits for the events to settle (debounce), then stat()s each
 * watched path (following symlinks) and compares device, inode, size and
 * nanosecond mtime with what it saw last. Only a real difference counts.
 * Watches that the kernel drops (IN_IGNORED, queue overflow) are re-added,
 * and a periodic re-stat catches anything the events missed.
 *
 * The caller polls wr_watch_fd() (readable when events arrived) and calls
 * wr_watch_check() when it is readable and on a timer; wr_watch_check says
 * whether any file changed. One thread.
 */
#ifndef WR_WATCH_H
#define WR_WATCH_H

typedef struct wr_watch wr_watch;

/* Watch the files PATHS[0..N) (their directories). Returns NULL with ERR. */
wr_watch *wr_watch_create(const char *const *paths, int n, char *err, unsigned long errcap);
void wr_watch_destroy(wr_watch *w);

/* The inotify descriptor: poll it for POLLIN. */
int wr_watch_fd(const wr_watch *w);

/*
 * Drain pending events. Returns 1 when events arrived in a watched directory
 * and have settled (the caller compares contents: an event may concern a
 * sibling file, such as a module a handler requires), 0 otherwise. Events are
 * debounced: after the last event, nothing is compared until SETTLE_MS have
 * passed without another (call again on a timer meanwhile; *WAIT_MS says how
 * long to wait, or -1 when nothing is pending).
 */
int wr_watch_check(wr_watch *w, int settle_ms, int *wait_ms);

/* Re-stat every file now, events or not (the periodic backstop). Returns 1 on
 * a change. */
int wr_watch_rescan(wr_watch *w);

#endif
