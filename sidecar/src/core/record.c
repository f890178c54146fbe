/*
 * record: the idempotency record's key and value. See record.h.
 */
#define _GNU_SOURCE /* memrchr */
#include "record.h"

#include "numfmt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int wr_record_key(const char *prefix, const char *subscription, const char *key, char *out,
                  size_t cap)
{
    int n = snprintf(out, cap, "%s%s:%s", prefix, subscription, key);
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* Digits from *P up to END or a '|': at most 18 of them. Returns 0, or -1. */
static int digits(const char **p, const char *end, int64_t *out)
{
    const char *s = *p;
    int64_t v = 0;
    int n = 0;
    while (s < end && *s >= '0' && *s <= '9') {
        if (++n > 18) {
            return -1;
        }
        v = v * 10 + (*s - '0');
        s++;
    }
    if (n == 0) {
        return -1;
    }
    *p = s;
    *out = v;
    return 0;
}

/* Expect '|' at *P and step over it. */
static int bar(const char **p, const char *end)
{
    if (*p >= end || **p != '|') {
        return -1;
    }
    (*p)++;
    return 0;
}

/*
 * "|<text>|<digits>" at *P: the text into *TEXT and *LEN, up to the next '|'
 * (with LAST, up to the last one: the text may then hold '|'), the number
 * into *NUM. Returns 0 with *P past the digits, or -1.
 */
static int text_and_number(const char **p, const char *end, int last, const char **text,
                           size_t *len, int64_t *num)
{
    if (bar(p, end) != 0) {
        return -1;
    }
    size_t n = (size_t)(end - *p);
    const char *b = last ? memrchr(*p, '|', n) : memchr(*p, '|', n);
    if (b == NULL) {
        return -1;
    }
    *text = *p;
    *len = (size_t)(b - *p);
    *p = b + 1;
    return digits(p, end, num);
}

int wr_record_parse(const char *v, size_t n, wr_record *r)
{
    memset(r, 0, sizeof(*r));
    const char *p = v, *end = v + n;
    int64_t starts;
    if (n < 3 || (v[0] != 'p' && v[0] != 'r' && v[0] != 'd') || v[1] != '|') {
        return -1;
    }
    p += 2;
    if (digits(&p, end, &starts) != 0 || starts > 1000000000) {
        return -1;
    }
    r->starts = (int)starts;
    switch (v[0]) {
    case 'r':
        if (p != end) {
            return -1;
        }
        break;
    case 'p':
        /* the token runs up to the last '|' */
        if (text_and_number(&p, end, 1, &r->token, &r->token_len, &r->lease_until) != 0 ||
            p != end) {
            return -1;
        }
        break;
    case 'd':
        if (text_and_number(&p, end, 0, &r->outcome, &r->outcome_len, &r->done_at) != 0) {
            return -1;
        }
        r->entry = "";
        if (p < end) {
            if (bar(&p, end) != 0) {
                return -1;
            }
            r->entry = p;
            r->entry_len = (size_t)(end - p);
        }
        break;
    }
    r->state = v[0];
    return 0;
}

int wr_record_from_hash(const char *const *fields, const char *const *values, int n, wr_record *r)
{
    memset(r, 0, sizeof(*r));
    const char *state = NULL;
    r->entry = "";
    for (int i = 0; i < n; i++) {
        const char *f = fields[i], *v = values[i];
        if (strcmp(f, "state") == 0) {
            state = v;
        } else if (strcmp(f, "starts") == 0) {
            r->starts = atoi(v);
        } else if (strcmp(f, "token") == 0) {
            r->token = v;
            r->token_len = strlen(v);
        } else if (strcmp(f, "lease_until") == 0) {
            r->lease_until = strtoll(v, NULL, 10);
        } else if (strcmp(f, "outcome") == 0) {
            r->outcome = v;
            r->outcome_len = strlen(v);
        } else if (strcmp(f, "done_at") == 0) {
            r->done_at = strtoll(v, NULL, 10);
        }
    }
    if (state == NULL) {
        return -1;
    }
    r->state = strcmp(state, "processing") == 0 ? 'p'
               : strcmp(state, "released") == 0 ? 'r'
               : strcmp(state, "done") == 0     ? 'd'
                                                : 0;
    return r->state != 0 ? 0 : -1;
}

const char *wr_record_state_name(char state)
{
    switch (state) {
    case 'p':
        return "processing";
    case 'r':
        return "released";
    case 'd':
        return "done";
    }
    return NULL;
}

char *wr_record_done(int starts, const char *outcome, int64_t done_at, const char *entry)
{
    /* built by hand: one per handled message, on the batch path */
    size_t ol = strlen(outcome), el = entry ? strlen(entry) : 0;
    char *v = malloc(ol + el + 2 * WR_NUMFMT_MAX + 8);
    if (v != NULL) {
        char *p = v;
        *p++ = 'd';
        *p++ = '|';
        p += wr_fmt_i64(p, starts);
        *p++ = '|';
        memcpy(p, outcome, ol);
        p += ol;
        *p++ = '|';
        p += wr_fmt_i64(p, done_at);
        *p++ = '|';
        memcpy(p, entry ? entry : "", el);
        p[el] = '\0';
    }
    return v;
}

char *wr_record_released(int starts)
{
    char *v = malloc(24);
    if (v != NULL) {
        snprintf(v, 24, "r|%d", starts < 0 ? 0 : starts);
    }
    return v;
}
