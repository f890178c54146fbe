/*
 * numfmt: integers as decimal text. See numfmt.h.
 */
#include "numfmt.h"

size_t wr_fmt_u64(char *out, uint64_t v)
{
    char tmp[WR_NUMFMT_MAX];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++) {
        out[i] = tmp[n - 1 - i];
    }
    out[n] = '\0';
    return n;
}

size_t wr_fmt_i64(char *out, int64_t v)
{
    if (v >= 0) {
        return wr_fmt_u64(out, (uint64_t)v);
    }
    out[0] = '-';
    /* -(v + 1) + 1: no overflow for INT64_MIN */
    return 1 + wr_fmt_u64(out + 1, (uint64_t)(-(v + 1)) + 1);
}
