/*
 * log: JSON lines on stdout. See log.h for the format and the rules.
 *
 * Everything is formatted into the caller's wr_logline; the only shared state
 * is the level, an atomic int written at start-up and on reload.
 */
#include "log.h"

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
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char buf[128]; /* room for any int the compiler can imagine in each field */
    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    size_t n = strlen(buf) < cap ? strlen(buf) : cap - 1;
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

long wr_json_escape(char *out, size_t cap, const char *val, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)val;
    size_t o = 0;
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        char esc[8];
        size_t elen = 0;
        size_t take = 1;
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c, elen = 2;
        } else if (c == '\n') {
            esc[0] = '\\', esc[1] = 'n', elen = 2;
        } else if (c == '\r') {
            esc[0] = '\\', esc[1] = 'r', elen = 2;
        } else if (c == '\t') {
            esc[0] = '\\', esc[1] = 't', elen = 2;
        } else if (c < 0x20 || c == 0x7F) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4], esc[5] = hex[c & 15], elen = 6;
        } else if (c < 0x80) {
            esc[0] = (char)c, elen = 1;
        } else {
            take = wr_utf8_seq_len(s + i, n - i);
            if (take == 0) {
                memcpy(esc, "\xEF\xBF\xBD", 3), elen = 3, take = 1; /* U+FFFD */
            } else {
                memcpy(esc, s + i, take), elen = take;
            }
        }
        if (o + elen >= cap) {
            return -1;
        }
        memcpy(out + o, esc, elen);
        o += elen;
        i += take;
    }
    return (long)o;
}

/* Append raw bytes; on overflow mark the line truncated and append nothing. */
static int put(wr_logline *l, const char *s, size_t n)
{
    /* keep room for the closing ,"truncated":true}\n */
    if (l->truncated || l->len + n + 24 >= sizeof(l->buf)) {
        l->truncated = 1;
        return -1;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    return 0;
}

static int put_quoted(wr_logline *l, const char *s, size_t n)
{
    if (l->truncated || put(l, "\"", 1) < 0) {
        return -1;
    }
    long w = wr_json_escape(l->buf + l->len, sizeof(l->buf) - l->len - 24, s, n);
    if (w < 0) {
        l->truncated = 1;
        return -1;
    }
    l->len += (size_t)w;
    return put(l, "\"", 1);
}

static void put_key(wr_logline *l, const char *key)
{
    size_t before = l->len;
    if (put(l, ",", 1) < 0 || put_quoted(l, key, strlen(key)) < 0 || put(l, ":", 1) < 0) {
        l->len = before;
        l->truncated = 1;
    }
}

void wr_log_begin(wr_logline *l, wr_log_level level, const char *msg)
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
    put_quoted(l, msg, strlen(msg));
}

void wr_log_strn(wr_logline *l, const char *key, const char *val, size_t n)
{
    size_t before = l->len;
    put_key(l, key);
    int rc = val ? put_quoted(l, val, n) : put(l, "null", 4);
    if (rc < 0) {
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
    put_key(l, key);
    if (put(l, num, (size_t)n) < 0) {
        l->len = before;
    }
}

void wr_log_num(wr_logline *l, const char *key, double val)
{
    char num[40];
    int n = snprintf(num, sizeof(num), "%.3f", val);
    size_t before = l->len;
    put_key(l, key);
    if (put(l, num, (size_t)n) < 0) {
        l->len = before;
    }
}

void wr_log_bool(wr_logline *l, const char *key, int val)
{
    size_t before = l->len;
    put_key(l, key);
    if (put(l, val ? "true" : "false", val ? 4 : 5) < 0) {
        l->len = before;
    }
}

void wr_log_raw(wr_logline *l, const char *key, const char *json, size_t n)
{
    size_t before = l->len;
    put_key(l, key);
    if (put(l, json, n) < 0) {
        l->len = before;
    }
}

void wr_log_end(wr_logline *l)
{
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
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    wr_logline l;
    wr_log_begin(&l, level, msg);
    wr_log_end(&l);
}
