/*
 * numfmt: integers as decimal text, without printf. The batch path writes
 * several numbers per message (Redis arguments and lengths, record values,
 * journal entries); snprintf's machinery cost more there than the numbers
 * themselves. Pure.
 */
#ifndef WR_NUMFMT_H
#define WR_NUMFMT_H

#include <stddef.h>
#include <stdint.h>

/* Longest text either function writes (sign, 20 digits, NUL). */
#define WR_NUMFMT_MAX 22

/* Write V in decimal at OUT (room for WR_NUMFMT_MAX bytes), NUL-terminated.
 * Returns the number of characters written, the NUL not counted. */
size_t wr_fmt_u64(char *out, uint64_t v);
size_t wr_fmt_i64(char *out, int64_t v);

#endif
