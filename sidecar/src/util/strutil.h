/*
 * strutil: the few string helpers the parsers share (config, URLs, ${}
 * expansion): printf into a fresh buffer, copy a byte range, and show
 * untrusted text safely inside a one-line message.
 *
 * Every returned string is malloc'd and owned by the caller; NULL means out
 * of memory. Pure apart from allocation.
 */
#ifndef WR_STRUTIL_H
#define WR_STRUTIL_H

#include <stdarg.h>
#include <stddef.h>

/* vsnprintf / snprintf into a buffer of the right size; NULL when out of memory. */
char *wr_str_vformat(const char *fmt, va_list ap);
char *wr_str_format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The N bytes at S as a NUL-terminated copy (S need not be terminated). */
char *wr_str_dup_range(const char *s, size_t n);

/*
 * The first MAX bytes of S (N bytes) into OUT (at least MAX + 4 bytes), for a
 * message: control characters become '?' (a newline would split the message's
 * line in two), and "..." marks a cut.
 */
void wr_str_printable(const char *s, size_t n, size_t max, char *out);

#endif
