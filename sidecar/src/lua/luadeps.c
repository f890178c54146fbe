/*
 * luadeps: the modules a handler's text requires. See luadeps.h.
 */
#include "luadeps.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

static int ident(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

static const char *skip_space(const char *p, const char *end)
{
    while (p < end && isspace((unsigned char)*p)) {
        p++;
    }
    return p;
}

static void add(char (*names)[WR_LUADEPS_NAME_MAX], int max, int *n, const char *s, size_t len)
{
    if (len == 0 || len >= WR_LUADEPS_NAME_MAX) {
        return;
    }
    if ((len == 5 && memcmp(s, "cjson", 5) == 0) ||
        (len == 10 && memcmp(s, "cjson.safe", 10) == 0)) {
        return;
    }
    for (int i = 0; i < *n; i++) {
        if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0) {
            return;
        }
    }
    if (*n < max) {
        memcpy(names[*n], s, len);
        names[*n][len] = '\0';
        (*n)++;
    }
}

int wr_luadeps_scan(const char *src, size_t len, char (*names)[WR_LUADEPS_NAME_MAX], int max,
                    int *dynamic)
{
    static const char word[] = "require";
    const size_t wl = sizeof(word) - 1;
    const char *end = src + len;
    int n = 0;
    for (const char *p = src; p + wl <= end; p++) {
        if (memcmp(p, word, wl) != 0 ||
            (p > src && (ident(p[-1]) || p[-1] == '.' || p[-1] == ':')) ||
            (p + wl < end && ident(p[wl]))) {
            continue;
        }
        const char *q = skip_space(p + wl, end);
        int paren = q < end && *q == '(';
        if (paren) {
            q = skip_space(q + 1, end);
        }
        if (q < end && (*q == '"' || *q == '\'')) {
            const char *s = q + 1, *e = s;
            while (e < end && *e != *q && *e != '\n') {
                e++;
            }
            if (e < end && *e == *q) {
                add(names, max, &n, s, (size_t)(e - s));
            }
        } else if (q + 1 < end && q[0] == '[' && q[1] == '[') {
            const char *s = q + 2, *e = s;
            while (e + 1 < end && !(e[0] == ']' && e[1] == ']')) {
                e++;
            }
            if (e + 1 < end) {
                add(names, max, &n, s, (size_t)(e - s));
            }
        } else if (paren) {
            *dynamic = 1; /* require(expression): any module could be loaded */
        }
        p = q > p ? q - 1 : p;
    }
    return n;
}

int wr_luadeps_path(const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    if (n == 0 || !ident(name[0]) || n + 5 > cap) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!ident(name[i]) && name[i] != '.') {
            return -1;
        }
        out[i] = name[i] == '.' ? '/' : name[i];
    }
    memcpy(out + n, ".lua", 5);
    return 0;
}
