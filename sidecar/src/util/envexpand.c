/*
 * envexpand.c: ${VAR}, ${VAR:-default} and $$ in configuration values (see envexpand.h).
 */
#include "envexpand.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "strutil.h"

#define NAME_ECHO_MAX 64 /* an invalid name is quoted up to this many bytes */

typedef struct {
    char *buf;
    size_t len, cap;
    bool oom;
    bool too_long; /* more than WR_ENV_MAX_VALUE bytes were added: the rest is dropped */
} strbuf;

static void sb_add(strbuf *sb, const char *s, size_t n)
{
    if (sb->oom || sb->too_long) {
        return;
    }
    if (n > WR_ENV_MAX_VALUE || sb->len + n > WR_ENV_MAX_VALUE) {
        sb->too_long = true;
        return;
    }
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 64;
        while (cap < sb->len + n + 1) {
            cap *= 2;
        }
        char *b = realloc(sb->buf, cap);
        if (b == NULL) {
            sb->oom = true;
            return;
        }
        sb->buf = b;
        sb->cap = cap;
    }
    memcpy(sb->buf + sb->len, s, n);
    sb->len += n;
    sb->buf[sb->len] = '\0';
}

static bool valid_env_name(const char *s, size_t n)
{
    if (n == 0 || (s[0] >= '0' && s[0] <= '9')) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_')) {
            return false;
        }
    }
    return true;
}

/*
 * Find the '}' that closes the "${" whose body starts at IN[START], skipping
 * "$$" and nested "${...}" (at most WR_ENV_MAX_DEPTH deep in all). Returns
 * NULL with the index just past it in *END, or a malloc'd error message.
 */
static char *closing_brace(const char *in, size_t n, size_t start, size_t *end)
{
    size_t j = start, depth = 1;
    while (j < n && depth > 0) {
        if (in[j] == '$' && j + 1 < n && (in[j + 1] == '$' || in[j + 1] == '{')) {
            depth += in[j + 1] == '{';
            if (depth > WR_ENV_MAX_DEPTH) {
                return wr_str_format("${} defaults nested more than %d deep", WR_ENV_MAX_DEPTH);
            }
            j += 2;
            continue;
        }
        if (in[j] == '}') {
            depth--;
        }
        j++;
    }
    if (depth > 0) {
        return strdup("unterminated '${' (write $$ for a literal '$')");
    }
    *end = j;
    return NULL;
}

/*
 * Expand [IN, IN+N) into SB: "$$" is a literal '$', "${VAR}" the variable
 * (an error when unset), "${VAR:-default}" the variable or, when it is unset
 * or empty, the default (itself expanded, so defaults may nest, up to
 * WR_ENV_MAX_DEPTH levels in all: checked while the closing '}' is looked
 * for, so the text is scanned a bounded number of times and the recursion
 * stays shallow). Any other '$' is kept as it is. Stops as soon as SB is
 * full (WR_ENV_MAX_VALUE). Returns NULL, or an error message (malloc'd) that names
 * the variable but never echoes the text, which may hold secrets.
 */
static char *expand_into(strbuf *sb, const char *in, size_t n)
{
    size_t i = 0, lit = 0;

    while (i < n && !sb->too_long) {
        if (in[i] != '$' || i + 1 >= n || (in[i + 1] != '$' && in[i + 1] != '{')) {
            i++;
            continue;
        }
        sb_add(sb, in + lit, i - lit);
        if (in[i + 1] == '$') {
            sb_add(sb, "$", 1);
            i += 2;
            lit = i;
            continue;
        }
        size_t j = n;
        char *err = closing_brace(in, n, i + 2, &j);
        if (err != NULL) {
            return err;
        }
        const char *body = in + i + 2;
        size_t blen = j - 1 - (i + 2);
        const char *dash = NULL;
        for (size_t k = 0; k + 1 < blen; k++) {
            if (body[k] == ':' && body[k + 1] == '-') {
                dash = body + k;
                break;
            }
        }
        size_t namelen = dash != NULL ? (size_t)(dash - body) : blen;
        if (namelen == 0) {
            return strdup("empty environment variable name in '${}'");
        }
        if (namelen > WR_ENV_MAX_NAME) {
            return wr_str_format("environment variable name longer than %d bytes", WR_ENV_MAX_NAME);
        }
        if (!valid_env_name(body, namelen)) {
            char shown[NAME_ECHO_MAX + 4];
            wr_str_printable(body, namelen, NAME_ECHO_MAX, shown);
            return wr_str_format("invalid environment variable name '%s' (letters, digits and '_')",
                                 shown);
        }
        char *name = wr_str_dup_range(body, namelen);
        if (name == NULL) {
            return strdup("out of memory");
        }
        const char *value = getenv(name);
        if (dash == NULL && value == NULL) {
            char *msg = wr_str_format("environment variable '%s' is not set "
                                      "(write ${%s:-default} to give a default)",
                                      name, name);
            free(name);
            return msg;
        }
        free(name);
        if (dash != NULL && (value == NULL || value[0] == '\0')) {
            err = expand_into(sb, dash + 2, (size_t)(body + blen - (dash + 2)));
            if (err != NULL) {
                return err;
            }
        } else {
            sb_add(sb, value, strlen(value));
        }
        i = j;
        lit = i;
    }
    sb_add(sb, in + lit, n - lit);
    return NULL;
}

/* Expand TEXT into a new string in *OUT. Returns NULL or a malloc'd error message. */
char *wr_env_expand(const char *text, char **out)
{
    strbuf sb = {0};
    char *err;

    *out = NULL;
    sb_add(&sb, "", 0);
    err = expand_into(&sb, text, strlen(text));
    if (err == NULL && sb.too_long) {
        err = wr_str_format("the value is longer than %d KiB", WR_ENV_MAX_VALUE >> 10);
    }
    if (err == NULL && sb.oom) {
        err = strdup("out of memory");
    }
    if (err != NULL) {
        free(sb.buf);
        return err;
    }
    *out = sb.buf;
    return NULL;
}
