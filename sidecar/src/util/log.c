/*
 * log: JSON lines on stdout. See log.h for the format and the rules.
 *
 * Everything is formatted into the caller's wr_logline; the only shared state
 * is the level, an atomic int written at start-up and on reload.
 */
#include "log.h"

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_level = WR_LOG_INFO;
static atomic_int log_fd = STDOUT_FILENO;

void wr_log_set_fd(int fd)
{
    atomic_store(&log_fd, fd);
}

void wr_log_set_level(wr_log_level level)
{
    atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
}

int wr_log_enabled(wr_log_level level)
{
    return (int)level >= atomic_load_explicit(&log_level, memory_order_relaxed);
}

const char *wr_log_level_name(wr_log_level level)
{
    switch (level) {
    case WR_LOG_DEBUG:
        return "debug";
    case WR_LOG_INFO:
        return "info";
    case WR_LOG_WARN:
        return "warn";
    case WR_LOG_ERROR:
        return "error";
    }
    return "info";
}

int64_t wr_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double wr_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

void wr_format_time(int64_t ms, char *out, size_t cap)
{
    /* floor division: a time before 1970 keeps its milliseconds in 0..999 */
    int64_t rem = ms % 1000 < 0 ? ms % 1000 + 1000 : ms % 1000;
    time_t secs = (time_t)(ms / 1000 - (ms % 1000 < 0 ? 1 : 0));
    /* Every log line starts with the time: the part down to the second is kept
     * per thread and made again only when the second changes (gmtime and a
     * printf per line showed in profiles of the batch path). */
    static _Thread_local time_t cached_secs = -1;
    static _Thread_local char cached[96];
    static _Thread_local size_t cached_len;
    if (secs != cached_secs || cached_len == 0) {
        struct tm tm;
        if (gmtime_r(&secs, &tm) == NULL) {
            memset(&tm, 0, sizeof(tm)); /* a year gmtime cannot represent: 1900-01-00 */
        }
        /* room for any int the compiler can imagine in each field */
        snprintf(cached, sizeof(cached), "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        cached_len = strlen(cached);
        cached_secs = secs;
    }
    char buf[128];
    memcpy(buf, cached, cached_len);
    char *p = buf + cached_len;
    *p++ = '.';
    *p++ = (char)('0' + rem / 100);
    *p++ = (char)('0' + rem / 10 % 10);
    *p++ = (char)('0' + rem % 10);
    *p++ = 'Z';
    size_t len = (size_t)(p - buf);
    size_t n = len < cap ? len : cap - 1;
    memcpy(out, buf, n);
    out[n] = '\0';
}

/*
 * Length of the valid UTF-8 sequence starting at S (at most N bytes), or 0 if
 * the bytes there are not valid UTF-8 (overlongs and surrogates included).
 */
size_t wr_utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    unsigned cp;
    if (c < 0x80) {
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2, min = 0x80, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, min = 0x800, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, min = 0x10000, cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        return 0;
    }
    return len;
}

/*
 * The JSON form of the character at S (N bytes left) into ESC (at least 8
 * bytes): quotes, backslashes and control characters escaped, valid UTF-8
 * copied, any byte that does not start a valid sequence replaced by U+FFFD.
 * Returns its length; *TAKE gets the source bytes it stands for.
 */
static size_t escape_char(const unsigned char *s, size_t n, char *esc, size_t *take)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char c = s[0];

    *take = 1;
    if (c == '"' || c == '\\') {
        esc[0] = '\\', esc[1] = (char)c;
        return 2;
    } else if (c == '\n') {
        memcpy(esc, "\\n", 2);
        return 2;
    } else if (c == '\r') {
        memcpy(esc, "\\r", 2);
        return 2;
    } else if (c == '\t') {
        memcpy(esc, "\\t", 2);
        return 2;
    } else if (c < 0x20 || c == 0x7F) {
        memcpy(esc, "\\u00", 4);
        esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
        return 6;
    } else if (c < 0x80) {
        esc[0] = (char)c;
        return 1;
    }
    size_t len = wr_utf8_seq_len(s, n);
    if (len == 0) {
        memcpy(esc, "\xEF\xBF\xBD", 3); /* U+FFFD */
        return 3;
    }
    memcpy(esc, s, len);
    *take = len;
    return len;
}

/*
 * Escape whole characters of VAL (N bytes) into OUT while they fit in CAP
 * bytes. Returns the bytes written; *USED gets the source bytes consumed
 * (N when everything fitted).
 */
static size_t escape_some(char *out, size_t cap, const char *val, size_t n, size_t *used)
{
    const unsigned char *s = (const unsigned char *)val;
    size_t o = 0, i = 0;

    while (i < n) {
        /* a run of characters that need no escape: copied at once */
        size_t j = i;
        while (j < n && s[j] >= 0x20 && s[j] < 0x7F && s[j] != '"' && s[j] != '\\') {
            j++;
        }
        if (j > i) {
            size_t run = j - i < cap - o ? j - i : cap - o;
            memcpy(out + o, s + i, run);
            o += run;
            i += run;
            if (i < j) {
                break; /* out of room */
            }
            continue;
        }
        char esc[8];
        size_t take;
        size_t elen = escape_char(s + i, n - i, esc, &take);
        if (o + elen > cap) {
            break;
        }
        memcpy(out + o, esc, elen);
        o += elen;
        i += take;
    }
    *used = i;
    return o;
}

long wr_json_escape(char *out, size_t cap, const char *val, size_t n)
{
    size_t used;
    size_t o = escape_some(out, cap > 0 ? cap - 1 : 0, val, n, &used);
    return used == n ? (long)o : -1;
}

/*
 * Room kept at the end of every line for what wr_log_end adds:
 * ,"truncated":true}\n (19 bytes).
 */
#define RESERVE 24
/* Room kept inside a cut string for the marker "...(N more bytes)". */
#define MARK_MAX 40

/* Bytes a string value may still take in L, its quotes included (0: none). */
static size_t room(const wr_logline *l)
{
    return l->len + RESERVE < sizeof(l->buf) ? sizeof(l->buf) - RESERVE - l->len : 0;
}

/* Append raw bytes if they fit (keeping RESERVE free); otherwise mark the line truncated. */
static int put(wr_logline *l, const char *s, size_t n)
{
    if (n > room(l)) {
        l->truncated = 1;
        return -1;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    return 0;
}

/*
 * Append S (HAVE bytes of a string TOTAL bytes long) as a JSON string of at
 * most MAX bytes between its quotes. What does not fit is cut on a character
 * boundary and replaced by "...(N more bytes)", and the line is marked
 * truncated. Returns -1 (nothing appended) only when not even a cut string
 * fits what is left of the line.
 */
static int put_string(wr_logline *l, const char *s, size_t have, size_t total, size_t max)
{
    size_t left = room(l), used, w;

    if (left < 2 + MARK_MAX + 8) {
        l->truncated = 1;
        return -1;
    }
    if (max > left - 2) {
        max = left - 2;
    }
    l->buf[l->len++] = '"';
    w = escape_some(l->buf + l->len, max, s, have, &used);
    if (used < have || have < total) {
        w = escape_some(l->buf + l->len, max - MARK_MAX, s, have, &used);
        w += (size_t)snprintf(l->buf + l->len + w, MARK_MAX, "...(%zu more bytes)", total - used);
        l->truncated = 1;
    }
    l->len += w;
    l->buf[l->len++] = '"';
    return 0;
}

static int put_quoted(wr_logline *l, const char *s, size_t n)
{
    return put_string(l, s, n, n, WR_LOG_VALUE_MAX);
}

static int put_key(wr_logline *l, const char *key)
{
    size_t before = l->len;
    if (put(l, ",", 1) < 0 || put_string(l, key, strlen(key), strlen(key), 256) < 0 ||
        put(l, ":", 1) < 0) {
        l->len = before;
        l->truncated = 1;
        return -1;
    }
    return 0;
}

/* Start L with ts and level, up to the value of "msg". */
static void begin_line(wr_logline *l, wr_log_level level)
{
    char ts[32];
    wr_format_time(wr_now_ms(), ts, sizeof(ts));
    l->len = 0;
    l->truncated = 0;
    put(l, "{\"ts\":\"", 7);
    put(l, ts, strlen(ts));
    put(l, "\",\"level\":\"", 11);
    const char *name = wr_log_level_name(level);
    put(l, name, strlen(name));
    put(l, "\",\"msg\":", 8);
}

void wr_log_begin(wr_logline *l, wr_log_level level, const char *msg)
{
    begin_line(l, level);
    put_quoted(l, msg, strlen(msg));
}

void wr_log_strn(wr_logline *l, const char *key, const char *val, size_t n)
{
    size_t before = l->len;
    if (put_key(l, key) < 0 || (val ? put_quoted(l, val, n) : put(l, "null", 4)) < 0) {
        l->len = before;
    }
}

void wr_log_str(wr_logline *l, const char *key, const char *val)
{
    wr_log_strn(l, key, val, val ? strlen(val) : 0);
}

void wr_log_int(wr_logline *l, const char *key, long long val)
{
    char num[32];
    int n = snprintf(num, sizeof(num), "%lld", val);
    size_t before = l->len;
    if (put_key(l, key) < 0 || put(l, num, (size_t)n) < 0) {
        l->len = before;
    }
}

void wr_log_num(wr_logline *l, const char *key, double val)
{
    char num[40];
    int n;
    /* JSON has no NaN or infinities; %.3f of a huge number would not fit NUM. */
    if (!isfinite(val)) {
        n = snprintf(num, sizeof(num), "null");
    } else if (fabs(val) < 1e15) {
        n = snprintf(num, sizeof(num), "%.3f", val);
    } else {
        n = snprintf(num, sizeof(num), "%.17g", val);
    }
    size_t before = l->len;
    if (put_key(l, key) < 0 || put(l, num, (size_t)n) < 0) {
        l->len = before;
    }
}

void wr_log_bool(wr_logline *l, const char *key, int val)
{
    size_t before = l->len;
    if (put_key(l, key) < 0 || put(l, val ? "true" : "false", val ? 4 : 5) < 0) {
        l->len = before;
    }
}

/*
 * JSON from elsewhere (lua-cjson's encoding of ctx.log's fields) is valid
 * JSON but not always valid UTF-8: cjson copies string bytes as they are.
 * Every byte that does not start a valid sequence is replaced by U+FFFD,
 * which keeps the JSON valid (such bytes can only sit inside strings). JSON
 * that does not fit what is left of the line cannot be cut as JSON: it is
 * written as a string instead, cut like any other.
 */
void wr_log_raw(wr_logline *l, const char *key, const char *json, size_t n)
{
    const unsigned char *s = (const unsigned char *)json;
    size_t before = l->len, i = 0;

    if (put_key(l, key) < 0) {
        l->len = before;
        return;
    }
    size_t start = l->len, left = room(l);
    while (i < n) {
        size_t len = wr_utf8_seq_len(s + i, n - i);
        const char *src = len > 0 ? json + i : "\xEF\xBF\xBD";
        size_t w = len > 0 ? len : 3;
        if (l->len - start + w > left) {
            break;
        }
        memcpy(l->buf + l->len, src, w);
        l->len += w;
        i += len > 0 ? len : 1;
    }
    if (i < n) {
        l->len = start;
        if (put_quoted(l, json, n) < 0) {
            l->len = before;
        }
    }
}

void wr_log_end(wr_logline *l)
{
    /* RESERVE keeps room for this whatever was added before */
    if (l->truncated) {
        memcpy(l->buf + l->len, ",\"truncated\":true", 17);
        l->len += 17;
    }
    l->buf[l->len++] = '}';
    l->buf[l->len++] = '\n';
    size_t off = 0;
    while (off < l->len) {
        ssize_t w = write(atomic_load(&log_fd), l->buf + off, l->len - off);
        if (w <= 0) {
            break; /* nowhere left to report it */
        }
        off += (size_t)w;
    }
}

void wr_logf(wr_log_level level, const char *fmt, ...)
{
    if (!wr_log_enabled(level)) {
        return;
    }
    char msg[WR_LOG_VALUE_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    size_t have = strlen(msg), total = n > 0 ? (size_t)n : have;
    wr_logline l;
    begin_line(&l, level);
    if (put_string(&l, msg, have, total, WR_LOG_VALUE_MAX) < 0) {
        put(&l, "\"\"", 2);
    }
    wr_log_end(&l);
}
