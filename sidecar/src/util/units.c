/*
 * units.c: durations and sizes, parsed and formatted (see units.h).
 */
#include "units.h"

#include <stdio.h>
#include <string.h>

/* The units of a duration, largest first. */
static const struct {
    const char *unit;
    int64_t ms;
} duration_units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};

/*
 * Format a millisecond count the way a user would write it: the largest units
 * that add up exactly ("5m", "1m30s", "250ms", "0s").
 */
void wr_units_format_duration(int64_t ms, char *out, size_t len)
{
    size_t used = 0;

    out[0] = '\0';
    if (ms == 0) {
        snprintf(out, len, "0s");
        return;
    }
    for (size_t i = 0; i < sizeof(duration_units) / sizeof(duration_units[0]) && used < len; i++) {
        if (ms >= duration_units[i].ms) {
            int n = snprintf(out + used, len - used, "%lld%s",
                             (long long)(ms / duration_units[i].ms), duration_units[i].unit);
            used += n > 0 ? (size_t)n : 0;
            ms %= duration_units[i].ms;
        }
    }
}

/*
 * The decimal digits at P (at least one) into *N. Returns the character after
 * them, or NULL when P does not start with a digit or the number overflows
 * int64.
 */
static const char *digits(const char *p, int64_t *n)
{
    if (*p < '0' || *p > '9') {
        return NULL;
    }
    *n = 0;
    while (*p >= '0' && *p <= '9') {
        if (*n > (INT64_MAX - (*p - '0')) / 10) {
            return NULL;
        }
        *n = *n * 10 + (*p - '0');
        p++;
    }
    return p;
}

/*
 * A duration is one or more <digits><unit> terms (ms, s, m, h, d) added up,
 * or a bare "0". Anything else, including an overflow of int64 milliseconds,
 * returns -1 and leaves *MS alone.
 */
int wr_units_parse_duration(const char *text, int64_t *ms)
{
    int64_t total = 0;
    const char *p = text;

    if (text == NULL || *text == '\0') {
        return -1;
    }
    if (strcmp(text, "0") == 0) {
        *ms = 0;
        return 0;
    }
    while (*p != '\0') {
        int64_t n, scale = 0;
        p = digits(p, &n);
        if (p == NULL) {
            return -1;
        }
        /* the longest unit that matches: "ms" is not "m" followed by "s" */
        size_t unit_len = 0;
        for (size_t i = 0; i < sizeof(duration_units) / sizeof(duration_units[0]); i++) {
            size_t l = strlen(duration_units[i].unit);
            if (l > unit_len && strncmp(p, duration_units[i].unit, l) == 0) {
                unit_len = l;
                scale = duration_units[i].ms;
            }
        }
        if (unit_len == 0) {
            return -1;
        }
        p += unit_len;
        if (n > INT64_MAX / scale || total > INT64_MAX - n * scale) {
            return -1;
        }
        total += n * scale;
    }
    *ms = total;
    return 0;
}

static const struct {
    const char *unit;
    int64_t bytes;
} size_units[] = {{"GiB", 1LL << 30}, {"MiB", 1LL << 20}, {"KiB", 1LL << 10}, {"B", 1}};

/*
 * A size is digits with an optional IEC unit (B, KiB, MiB, GiB): "65536",
 * "512KiB", "4MiB". Decimal units (KB, MB) are refused rather than guessed.
 * Returns 0 with the byte count in *BYTES, or -1 (also on overflow).
 */
int wr_units_parse_size(const char *text, int64_t *bytes)
{
    int64_t n;
    const char *p = digits(text, &n);

    if (p == NULL) {
        return -1;
    }
    if (*p == '\0') {
        *bytes = n;
        return 0;
    }
    for (size_t i = 0; i < sizeof(size_units) / sizeof(size_units[0]); i++) {
        if (strcmp(p, size_units[i].unit) == 0) {
            if (n > INT64_MAX / size_units[i].bytes) {
                return -1;
            }
            *bytes = n * size_units[i].bytes;
            return 0;
        }
    }
    return -1;
}

/* Format a byte count in the largest IEC unit that divides it ("512KiB", "1B"). */
void wr_units_format_size(int64_t bytes, char *out, size_t len)
{
    for (size_t i = 0; i < sizeof(size_units) / sizeof(size_units[0]); i++) {
        if (bytes != 0 && bytes % size_units[i].bytes == 0) {
            snprintf(out, len, "%lld%s", (long long)(bytes / size_units[i].bytes),
                     size_units[i].unit);
            return;
        }
    }
    snprintf(out, len, "%lldB", (long long)bytes);
}
