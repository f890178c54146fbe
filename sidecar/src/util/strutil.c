/*
 * strutil.c: string helpers shared by the parsers (see strutil.h).
 */
#include "strutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* vsnprintf into a fresh buffer; NULL only when out of memory. */
char *wr_str_vformat(const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        return NULL;
    }
    char *s = malloc((size_t)n + 1);
    if (s != NULL) {
        vsnprintf(s, (size_t)n + 1, fmt, ap);
    }
    return s;
}

char *wr_str_format(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = wr_str_vformat(fmt, ap);
    va_end(ap);
    return s;
}

char *wr_str_dup_range(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/*
 * The first MAX bytes of S (N bytes) into OUT (at least MAX + 4 bytes), for a
 * message: control characters become '?' (a newline would split the message's
 * line in two), and "..." marks a cut.
 */
void wr_str_printable(const char *s, size_t n, size_t max, char *out)
{
    size_t k = n < max ? n : max;
    for (size_t i = 0; i < k; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    strcpy(out + k, n > max ? "..." : "");
}
