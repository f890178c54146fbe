/*
 * units: durations and byte sizes as people write them in a configuration.
 *
 * A duration is one or more <digits><unit> terms added up, the units being
 * ms, s, m, h and d ("250ms", "5s", "1m30s", "7d"), or a bare "0". A size is
 * digits with an optional IEC unit: B, KiB, MiB or GiB ("65536", "512KiB",
 * "4MiB"); decimal units (KB, MB) are refused rather than guessed.
 *
 * The formatters write the shortest exact spelling the parsers read back,
 * so a value shown in a message or in the reference can be pasted into a
 * file. Pure: no allocation, no global state.
 */
#ifndef WR_UNITS_H
#define WR_UNITS_H

#include <stddef.h>
#include <stdint.h>

/*
 * Parse duration TEXT. Returns 0 with milliseconds in *MS, or -1 for
 * anything else (NULL or empty text, no unit, unknown unit, a sign,
 * an overflow of int64 milliseconds), leaving *MS alone.
 */
int wr_units_parse_duration(const char *text, int64_t *ms);

/*
 * Write MS (not negative) into OUT (LEN bytes) with the largest units that
 * add up exactly: 300000 -> "5m", 90000 -> "1m30s", 250 -> "250ms", 0 -> "0s".
 * 32 bytes hold any int64.
 */
void wr_units_format_duration(int64_t ms, char *out, size_t len);

/*
 * Parse size TEXT. Returns 0 with the byte count in *BYTES, or -1 (no
 * digits, an unknown unit, an overflow), leaving *BYTES alone.
 */
int wr_units_parse_size(const char *text, int64_t *bytes);

/*
 * Write BYTES into OUT (LEN bytes) in the largest IEC unit that divides it:
 * 524288 -> "512KiB", 1 -> "1B", 0 -> "0B".
 */
void wr_units_format_size(int64_t bytes, char *out, size_t len);

#endif
