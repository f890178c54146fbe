/*
 * storebuf: the write buffer behind ctx.store, and how reads see it.
 *
 * A handler's ctx.store writes are not sent to Redis while it runs: they are
 * recorded here, in order, and applied after the handler succeeded by the
 * same server-side script that marks the message's idempotency record done
 * (idem.h). So a message's writes happen exactly once, all or nothing, with
 * its "done" mark; a handler that fails (or a worker that dies) applies none.
 *
 * Reads must still see the handler's own writes (read-your-writes inside one
 * message). For that the buffer keeps, next to the ordered list of writes, an
 * overlay per key: what the buffered writes say about the key (deleted; set to
 * a known value; incremented by N over whatever Redis holds; hash fields set,
 * deleted or incremented; set members added or removed; a TTL). A read asks
 * the overlay first; only what it cannot answer alone is fetched from Redis
 * (the "base", through a callback, so this module does no I/O and is unit
 * tested with a fake) and merged: get after incrby is base + delta, hgetall
 * merges hset/hdel/hincrby over the base hash, sismember honours sadd/srem,
 * del then get is nil.
 *
 * Types: a key is a string, a hash or a set. Within one message the first
 * write on a key fixes its kind; a write of another kind (hset on a key this
 * message incremented) is refused at once, unless a del or set came between.
 * Whether the kind matches what Redis holds is checked by the commit script
 * before anything of the message is applied (idem.c).
 *
 * Reads are also checked at commit (optimistic concurrency): every value a
 * read fetched from Redis is kept as a guard (the command, the key, what it
 * saw), and the commit script compares each guard with what Redis holds then,
 * before applying anything. If another message changed what this one read
 * (two workers handling an order's create and its cancel at once), the
 * commit is refused as a conflict and the message runs again from fresh
 * state. So a message's reads and writes commit as if it ran alone. TTL reads
 * are not guarded (a TTL changes by itself).
 *
 * Keys given here are full Redis keys (the caller adds the service prefix).
 * Strings are binary-safe (pointer + length). Errors are returned as -1 with
 * a message in ERR (no "ctx.store." prefix: the caller adds the call's name).
 *
 * A wr_storebuf belongs to one worker and is reset between messages.
 */
#ifndef WR_STOREBUF_H
#define WR_STOREBUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct wr_storebuf wr_storebuf;

/* A borrowed byte string. */
typedef struct {
    const char *p;
    size_t n;
} wr_sbstr;

/* The write operations, as the commit script names them. */
typedef enum {
    WR_SB_SET = 0, /* a = value, num = ttl ms (0: none) */
    WR_SB_DEL,
    WR_SB_INCRBY,  /* num = increment */
    WR_SB_EXPIRE,  /* num = ttl ms */
    WR_SB_HSET,    /* a = field, b = value */
    WR_SB_HDEL,    /* a = field */
    WR_SB_HINCRBY, /* a = field, num = increment */
    WR_SB_SADD,    /* a = member */
    WR_SB_SREM,    /* a = member */
} wr_sb_op;

/* One buffered write, in the order the handler made it. */
typedef struct {
    wr_sb_op op;
    int key;       /* index: wr_storebuf_key() */
    wr_sbstr a, b; /* see wr_sb_op; owned by the buffer */
    int64_t num;
} wr_sb_write;

/* What Redis holds for one read (filled by the fetch callback). */
typedef struct {
    int present;     /* GET, HGET: a value exists */
    wr_sbstr str;    /* GET, HGET */
    int64_t num;     /* EXISTS, SISMEMBER (0/1), PTTL (ms, -1 no expiry, -2 no key) */
    wr_sbstr *items; /* HGETALL: field, value, field, value...; SMEMBERS: members */
    size_t count;    /* entries in items */
} wr_sb_base;

/*
 * Fetch CMD ("GET", "HGET", "HGETALL", "SMEMBERS", "SISMEMBER", "EXISTS",
 * "PTTL") for KEY (and ARG: the field or member, when the command takes one)
 * from Redis into OUT. What OUT points to must stay valid until the next call
 * of the callback or until the read that asked returns. Returns 0, or -1 with
 * the reason in ERR (for example WRONGTYPE, or the connection failed).
 */
typedef int (*wr_sb_fetch)(void *ud, const char *cmd, wr_sbstr key, wr_sbstr arg, wr_sb_base *out,
                           char *err, size_t errcap);

/* The answer to a read. ITEMS is malloc'd (free with wr_sb_result_free); the
 * strings it points to are the buffer's or the base's (valid until the next
 * write, reset or fetch). */
typedef struct {
    int present;     /* get, hget: a value exists */
    wr_sbstr str;    /* get, hget */
    int64_t num;     /* exists, sismember, pttl */
    wr_sbstr *items; /* hgetall: field, value pairs; smembers: members */
    size_t count;
} wr_sb_result;

void wr_sb_result_free(wr_sb_result *r);

/* A buffer allowing MAX_WRITES buffered writes per message. NULL: out of memory. */
wr_storebuf *wr_storebuf_create(int max_writes);
void wr_storebuf_destroy(wr_storebuf *b);

/* Forget every write and overlay (before each message, and after its commit). */
void wr_storebuf_reset(wr_storebuf *b);

/*
 * Buffer one write on KEY. A and B as wr_sb_op says (unused ones ignored),
 * NUM the increment or TTL in ms. Returns 0, or -1 with ERR:
 * "more than N writes in one message", "key 'k' holds a hash in this
 * message", "value is not an integer or out of range", ...
 * An expire of a key this message deleted is buffered as a no-op, as Redis
 * would do.
 */
int wr_storebuf_write(wr_storebuf *b, wr_sb_op op, wr_sbstr key, wr_sbstr a, wr_sbstr bval,
                      int64_t num, char *err, size_t errcap);

/*
 * Reads: CMD as for wr_sb_fetch ("GET", "HGET", "HGETALL", "SMEMBERS",
 * "SISMEMBER", "EXISTS", "PTTL"), answered from the overlay, fetching the
 * base through FETCH only when needed. Returns 0 with OUT filled, or -1 with
 * ERR (the fetch failed, or a buffered increment meets a non-integer base).
 */
int wr_storebuf_read(wr_storebuf *b, const char *cmd, wr_sbstr key, wr_sbstr arg, wr_sb_fetch fetch,
                     void *ud, wr_sb_result *out, char *err, size_t errcap);

/*
 * A read as wr_storebuf_read() answers it, but keeping no guard (and adding no
 * key): how a later message of the same batch sees this one's writes (the
 * worker chains the batch's buffers: a read of message n goes through the
 * buffers of the messages before it that succeeded, down to Redis). What OUT
 * points to stays valid until the next read or peek of B.
 */
int wr_storebuf_peek(wr_storebuf *b, const char *cmd, wr_sbstr key, wr_sbstr arg, wr_sb_fetch fetch,
                     void *ud, wr_sb_result *out, char *err, size_t errcap);

/* The buffered writes in order, and the keys they (and the guards) refer to. */
const wr_sb_write *wr_storebuf_writes(const wr_storebuf *b, int *count);
int wr_storebuf_key_count(const wr_storebuf *b);
wr_sbstr wr_storebuf_key(const wr_storebuf *b, int i);

/* One read checked at commit: CMD on KEY (ARG: field or member) saw ITEMS:
 * GET/HGET: the value (count 1) or nothing (count 0); EXISTS/SISMEMBER: "0" or
 * "1"; HGETALL: field, value pairs; SMEMBERS: the members. */
typedef struct {
    const char *cmd;
    int key; /* index: wr_storebuf_key() */
    wr_sbstr arg;
    wr_sbstr *items; /* owned by the buffer */
    size_t count;
} wr_sb_guard;

/* The reads to check at commit (see above). */
const wr_sb_guard *wr_storebuf_guards(const wr_storebuf *b, int *count);

/*
 * A GET guard on KEY that saw nothing now expects VALUE instead: for a write
 * the worker itself made to KEY after this message read it, on behalf of a
 * later message of the same batch (a retried message taking its ordering
 * key's hold, which an earlier message of that key read), that must not make
 * this earlier message's commit a conflict. A guard that saw a value is left
 * as it is. Returns 1 when a guard changed, 0 when none did, -1 when out of
 * memory (the guard is then unchanged).
 */
int wr_storebuf_guard_expect(wr_storebuf *b, wr_sbstr key, wr_sbstr value);

/* The commit script's name for OP ("set", "del", "incrby", ...). */
const char *wr_sb_op_name(wr_sb_op op);

#endif
