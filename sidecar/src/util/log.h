/*
 * log: the sidecar's structured log, one JSON object per line on stdout.
 *
 * A line is built field by field in a caller-owned buffer (no allocation) and
 * written with one write(2), so lines from different worker threads never
 * interleave. Field names are stable, they are part of the interface operators
 * grep and ship to their log stores:
 *
 *     {"ts":"2026-11-30T01:22:34.123Z","level":"info","msg":"message handled",
 *      "subscription":"orders","message_id":"o-1","outcome":"ok","duration_ms":0.41}
 *
 * The level is set once at start-up (and by a config reload); checking it is a
 * relaxed atomic load, so callers test wr_log_enabled() before formatting
 * anything expensive.
 */
#ifndef WR_LOG_H
#define WR_LOG_H

#include <stddef.h>
#include <stdint.h>

/* The levels, in order; config.h reads log.level into one. */
typedef enum { WR_LOG_DEBUG = 0, WR_LOG_INFO, WR_LOG_WARN, WR_LOG_ERROR } wr_log_level;

#define WR_LOG_LINE_MAX 8192
#define WR_LOG_VALUE_MAX 4096 /* bytes one string value may take, escaped */

/*
 * Every line is one JSON object of valid UTF-8, at most WR_LOG_LINE_MAX
 * bytes with its newline, whatever it is given: invalid UTF-8 becomes U+FFFD,
 * a string longer than WR_LOG_VALUE_MAX bytes (escaped) or than what is left
 * of the line is cut on a character boundary and ends in "...(N more bytes)"
 * (N counted in the original), a field that does not fit at all is left out,
 * and a line that lost anything ends with "truncated":true.
 */
typedef struct {
    char buf[WR_LOG_LINE_MAX];
    size_t len;
    int truncated; /* something was cut or left out: the line ends with "truncated":true */
} wr_logline;

void wr_log_set_level(wr_log_level level);
/* Write lines to FD instead of stdout (warren exec keeps stdout for its report). */
void wr_log_set_fd(int fd);
int wr_log_enabled(wr_log_level level);
const char *wr_log_level_name(wr_log_level level);

/* Start a line with ts, level and msg. */
void wr_log_begin(wr_logline *l, wr_log_level level, const char *msg);
/* Add a string field; VAL may hold any bytes (escaped as JSON; invalid UTF-8 is
 * replaced by U+FFFD). A NULL VAL writes null. */
void wr_log_str(wr_logline *l, const char *key, const char *val);
void wr_log_strn(wr_logline *l, const char *key, const char *val, size_t n);
void wr_log_int(wr_logline *l, const char *key, long long val);
void wr_log_num(wr_logline *l, const char *key, double val);
void wr_log_bool(wr_logline *l, const char *key, int val);
/* Add a field whose value is already valid JSON (an object from the Lua side); its
 * invalid UTF-8 is replaced, and when it does not fit it is written as a cut string. */
void wr_log_raw(wr_logline *l, const char *key, const char *json, size_t n);
/* Close the line and write it to stdout. */
void wr_log_end(wr_logline *l);

/* One-call form for lines with only a message: printf-style (cut like any string). */
void wr_logf(wr_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Append VAL (N bytes) to OUT as a JSON string body (without the quotes),
 * escaping as needed. Returns the number of bytes written, or -1 when it would
 * not fit in CAP bytes (nothing useful written then).
 */
long wr_json_escape(char *out, size_t cap, const char *val, size_t n);

/* Length of the valid UTF-8 sequence at S (N bytes available), 0 if invalid there. */
size_t wr_utf8_seq_len(const unsigned char *s, size_t n);

/* Milliseconds since the epoch, and a monotonic clock in milliseconds. */
int64_t wr_now_ms(void);
double wr_mono_ms(void);
/* Format epoch milliseconds as "2026-11-30T01:22:34.123Z" into OUT (>= 25 bytes). */
void wr_format_time(int64_t ms, char *out, size_t cap);

#endif
