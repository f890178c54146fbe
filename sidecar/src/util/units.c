/*
 * units.c: durations and sizes, parsed and formatted (see units.h).
 */
#include "units.h"

#include <stdio.h>
#include <string.h>

/*
 * Format a millisecond count the way a user would write it: the largest units
 * that add up exactly ("5m", "1m30s", "250ms", "0s").
 */
void wr_units_format_duration(int64_t ms, char *out, size_t len)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
    size_t used = 0;

    out[0] = '\0';
    if (ms == 0) {
        snprintf(out, len, "0s");
        return;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]) && used < len; i++) {
        if (ms >= units[i].ms) {
            int n = snprintf(out + used, len - used, "%lld%s", (long long)(ms / units[i].ms),
                             units[i].unit);
            used += n > 0 ? (size_t)n : 0;
            ms %= units[i].ms;
        }
    }
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
        int64_t n = 0, scale;
        if (*p < '0' || *p > '9') {
            return -1;
        }
        while (*p >= '0' && *p <= '9') {
            if (n > (INT64_MAX - (*p - '0')) / 10) {
                return -1;
            }
            n = n * 10 + (*p - '0');
            p++;
        }
        if (p[0] == 'm' && p[1] == 's') {
            scale = 1;
            p += 2;
        } else if (*p == 's') {
            scale = 1000;
            p++;
        } else if (*p == 'm') {
            scale = 60000;
            p++;
        } else if (*p == 'h') {
            scale = 3600000;
            p++;
        } else if (*p == 'd') {
            scale = 86400000;
            p++;
        } else {
            return -1;
        }
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
    int64_t n = 0;
    const char *p = text;

    if (*p < '0' || *p > '9') {
        return -1;
    }
    while (*p >= '0' && *p <= '9') {
        if (n > (INT64_MAX - (*p - '0')) / 10) {
            return -1;
        }
        n = n * 10 + (*p - '0');
        p++;
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
