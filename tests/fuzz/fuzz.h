/*
 * fuzz.h: what the libFuzzer targets in tests/fuzz/ share.
 *
 * A target reads its input through an fz_in: bytes taken in order, and
 * zeros (or empty strings) once the input is used up, so every input, even
 * an empty one, decodes to some case. FZ_ASSERT aborts with a message, which
 * libFuzzer reports as a crash and saves as an artifact, like any sanitizer
 * finding.
 */
#ifndef WR_FUZZ_H
#define WR_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FZ_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct {
    const uint8_t *p;
    size_t n;
} fz_in;

/* The next byte, 0 once the input is used up. */
static inline uint8_t fz_u8(fz_in *in)
{
    if (in->n == 0) {
        return 0;
    }
    in->n--;
    return *in->p++;
}

/* The next two bytes, big-endian. */
static inline uint16_t fz_u16(fz_in *in)
{
    uint16_t hi = fz_u8(in);
    return (uint16_t)(hi << 8 | fz_u8(in));
}

/* The next eight bytes, big-endian, as a signed number. */
static inline int64_t fz_i64(fz_in *in)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | fz_u8(in);
    }
    return (int64_t)v;
}

/* Up to WANT bytes (fewer when the input ends): *P points at them. Returns the count. */
static inline size_t fz_take(fz_in *in, size_t want, const uint8_t **p)
{
    if (want > in->n) {
        want = in->n;
    }
    *p = in->p;
    in->p += want;
    in->n -= want;
    return want;
}

/* A string of at most 255 bytes (a length byte, then the bytes) copied into OUT,
 * NUL-terminated (OUT has room for 256 bytes). Returns its length. */
static inline size_t fz_str8(fz_in *in, char *out)
{
    const uint8_t *p;
    size_t n = fz_take(in, fz_u8(in), &p);
    memcpy(out, p, n);
    out[n] = '\0';
    return n;
}

#endif
