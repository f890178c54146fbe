/*
 * test_offcommit: a message's ctx.store commit without Redis (offcommit.c):
 * the sidecar's commit script (finish.lua) over the in-memory model, given a
 * storebuf's writes and guarded reads and the state before (as `warren exec`
 * reads it from the event file). Exact texts: they are the script's own, the
 * ones the sidecar puts in its DLQ headers.
 */
#include <jansson.h>
#include <string.h>

#include "check.h"
#include "offcommit.h"
#include "storebuf.h"

#define PREFIX "warren:store:"

static wr_sbstr S(const char *c)
{
    return (wr_sbstr){c, strlen(c)};
}

/* Buffer one write on PREFIX KEY. */
static void put(wr_storebuf *b, wr_sb_op op, const char *key, const char *a, const char *v,
                int64_t num)
{
    char full[256], err[256];
    snprintf(full, sizeof(full), PREFIX "%s", key);
    CHECK_INT(wr_storebuf_write(b, op, S(full), S(a), S(v), num, err, sizeof(err)), 0);
}

/* A fetch over a JSON object of strings (GET only): what the handler read. */
static int fetch(void *ud, const char *cmd, wr_sbstr key, wr_sbstr arg, wr_sb_base *out, char *err,
                 size_t errcap)
{
    (void)arg;
    (void)err;
    (void)errcap;
    json_t *seed = ud;
    char k[256];
    snprintf(k, sizeof(k), "%.*s", (int)(key.n - strlen(PREFIX)), key.p + strlen(PREFIX));
    json_t *v = json_object_get(seed, k);
    if (strcmp(cmd, "GET") == 0 && json_is_string(v)) {
        out->present = 1;
        out->str = S(json_string_value(v));
    }
    return 0;
}

static wr_offcommit_result run(wr_storebuf *b, const char *seed, const char *at_commit, char *why)
{
    json_t *s = json_loads(seed, 0, NULL);
    json_t *c = at_commit ? json_loads(at_commit, 0, NULL) : NULL;
    wr_offcommit_result r = wr_offcommit_run(b, PREFIX, s, c, 1767225600.0, why, 512);
    json_decref(s);
    json_decref(c);
    return r;
}

int main(void)
{
    char why[512], err[256];
    wr_storebuf *b = wr_storebuf_create(256);

    /* the case of the issue: a hincrby on a key the store holds as a string */
    put(b, WR_SB_HINCRBY, "customer:c-7", "refunded_cents", "", 100);
    CHECK_INT(run(b, "{\"customer:c-7\": \"500\"}", NULL, why), WR_OFFCOMMIT_REFUSED);
    CHECK_STR(why, "ctx.store.hincrby: key warren:store:customer:c-7 holds a string in Redis");
    CHECK_STR(wr_offcommit_name(WR_OFFCOMMIT_REFUSED), "refused");
    /* the same write over a hash applies */
    CHECK_INT(run(b, "{\"customer:c-7\": {\"refunded_cents\": \"500\"}}", NULL, why),
              WR_OFFCOMMIT_APPLIED);
    CHECK_STR(why, "");
    wr_storebuf_reset(b);

    /* Redis's integer grammar, in the script's words */
    put(b, WR_SB_INCRBY, "n", "", "", 1);
    CHECK_INT(run(b, "{\"n\": \"05\"}", NULL, why), WR_OFFCOMMIT_REFUSED);
    CHECK_STR(why, "ctx.store.incrby: the value of warren:store:n is not an integer or would "
                   "overflow");
    CHECK_INT(run(b, "{\"n\": \"-5\"}", NULL, why), WR_OFFCOMMIT_APPLIED);
    wr_storebuf_reset(b);

    /* every write checked before any applies: one bad write refuses the message */
    put(b, WR_SB_SET, "a", "x", "", 0);
    put(b, WR_SB_SADD, "tags", "m", "", 0);
    put(b, WR_SB_HSET, "tags2", "f", "v", 0);
    CHECK_INT(run(b, "{\"tags2\": [\"m\"]}", NULL, why), WR_OFFCOMMIT_REFUSED);
    CHECK_STR(why, "ctx.store.hset: key warren:store:tags2 holds a set in Redis");
    wr_storebuf_reset(b);

    /* played forward: del, then a hincrby over what was a string */
    put(b, WR_SB_DEL, "x", "", "", 0);
    put(b, WR_SB_HINCRBY, "x", "f", "", 3);
    CHECK_INT(run(b, "{\"x\": \"text\"}", NULL, why), WR_OFFCOMMIT_APPLIED);
    wr_storebuf_reset(b);

    /* a read that another message changed before the commit: a conflict */
    json_t *seed = json_loads("{\"stock:tea\": \"5\"}", 0, NULL);
    wr_sb_result r;
    char full[] = PREFIX "stock:tea";
    CHECK_INT(wr_storebuf_read(b, "GET", S(full), S(""), fetch, seed, &r, err, sizeof(err)), 0);
    wr_sb_result_free(&r);
    put(b, WR_SB_INCRBY, "stock:tea", "", "", -1);
    CHECK_INT(run(b, "{\"stock:tea\": \"5\"}", NULL, why), WR_OFFCOMMIT_APPLIED);
    CHECK_INT(run(b, "{\"stock:tea\": \"5\"}", "{\"stock:tea\": \"3\"}", why),
              WR_OFFCOMMIT_CONFLICT);
    CHECK_STR(why, "conflict: warren:store:stock:tea changed since the handler read it");
    CHECK_INT(run(b, "{\"stock:tea\": \"5\"}", "{\"stock:tea\": null}", why),
              WR_OFFCOMMIT_CONFLICT);
    wr_storebuf_reset(b);
    /* a blind write does not care what another message did meanwhile */
    put(b, WR_SB_INCRBY, "stock:tea", "", "", -1);
    CHECK_INT(run(b, "{\"stock:tea\": \"5\"}", "{\"stock:tea\": \"3\"}", why),
              WR_OFFCOMMIT_APPLIED);
    /* ... unless what it now meets cannot take it */
    CHECK_INT(run(b, "{\"stock:tea\": \"5\"}", "{\"stock:tea\": {\"f\": \"1\"}}", why),
              WR_OFFCOMMIT_REFUSED);
    CHECK_STR(why, "ctx.store.incrby: key warren:store:stock:tea holds a hash in Redis");
    json_decref(seed);

    wr_storebuf_destroy(b);
    return check_report("test_offcommit");
}
