/*
 * confirm: per-batch publisher-confirm bookkeeping. See confirm.h.
 */
#include "confirm.h"

#include <stdlib.h>
#include <string.h>

void wr_confirm_init(wr_confirm *c)
{
    memset(c, 0, sizeof(*c));
    c->first_seq = 1;
}

void wr_confirm_free(wr_confirm *c)
{
    free(c->state);
    memset(c, 0, sizeof(*c));
}

void wr_confirm_reset(wr_confirm *c, uint64_t next_seq)
{
    c->first_seq = next_seq;
    c->count = 0;
    c->pending = 0;
}

void wr_confirm_trim(wr_confirm *c, size_t n)
{
    if (n > c->count) {
        n = c->count;
    }
    for (size_t i = 0; i < n; i++) {
        if (c->state[i] == WR_PUB_PENDING) {
            c->pending--;
        }
    }
    if (n > 0 && n < c->count) {
        memmove(c->state, c->state + n, c->count - n);
    }
    c->count -= n;
    c->first_seq += n;
}

long wr_confirm_add(wr_confirm *c)
{
    if (c->count == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        unsigned char *s = realloc(c->state, cap);
        if (s == NULL) {
            return -1;
        }
        c->state = s;
        c->cap = cap;
    }
    c->state[c->count] = WR_PUB_PENDING;
    c->pending++;
    return (long)c->count++;
}

/* Settle entry I with NEW_STATE if it is still pending. */
static void settle(wr_confirm *c, size_t i, wr_pub_state new_state)
{
    if (c->state[i] == WR_PUB_PENDING) {
        c->state[i] = (unsigned char)new_state;
        c->pending--;
    }
}

void wr_confirm_on_ack(wr_confirm *c, uint64_t tag, int multiple, int ack)
{
    wr_pub_state s = ack ? WR_PUB_ACKED : WR_PUB_NACKED;
    if (tag < c->first_seq) {
        return;
    }
    uint64_t last = tag - c->first_seq; /* index of the tagged entry */
    if (multiple) {
        size_t end = last < c->count ? (size_t)last + 1 : c->count;
        for (size_t i = 0; i < end; i++) {
            settle(c, i, s);
        }
    } else if (last < c->count) {
        settle(c, (size_t)last, s);
    }
}

void wr_confirm_on_return(wr_confirm *c, size_t index)
{
    if (index >= c->count) {
        return;
    }
    if (c->state[index] == WR_PUB_PENDING) {
        c->pending--;
    }
    c->state[index] = WR_PUB_RETURNED;
}

wr_pub_state wr_confirm_state(const wr_confirm *c, size_t index)
{
    return index < c->count ? (wr_pub_state)c->state[index] : WR_PUB_NACKED;
}
