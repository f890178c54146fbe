/*
 * contracts: a service's event contracts (a YAML file named by a
 * subscription's `contracts` key), compiled once, and the check every
 * message of that subscription passes before its handler runs.
 *
 * The file, in the shape teams write by hand:
 *
 *   events:
 *     order.created:              # the event type (AMQP `type`, else routing key)
 *       version: 2                # the version handlers are written for
 *       schema: { ... }           # JSON Schema, draft 7 (schema.h)
 *       examples: [ {...} ]       # optional: events that must validate
 *       backwards_compatible_with:
 *         - version: 1
 *           upcaster: upcasters/order_created_v1.lua   # v1 -> v2 (must exist)
 *           schema: { ... }       # optional
 *           examples: [ {...} ]   # optional
 *
 * Every problem is reported as FILE:LINE:COL: message (schemas are compiled
 * here, so an unsupported keyword is an error at its line). Paths are
 * relative to the contracts file's directory.
 *
 * wr_contracts_check() decides what one event is: valid; invalid
 * (schema-invalid, with its violations); of a version no contract knows
 * (version-unknown); of an older version that needs upcasting
 * (WR_CT_UPCAST: the caller runs the upcasters); of a type without a
 * contract (passed or dead-lettered, per subscription). A compiled
 * wr_contracts is read-only after loading, so the workers of a subscription
 * share one; its counters (warren_contract_events_total) are atomic.
 *
 * Pure: reads the file it is given and nothing else; no sockets.
 * Unit-tested in tests/unit/test_contracts.c.
 */
#ifndef WR_CONTRACTS_H
#define WR_CONTRACTS_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "cloudevent.h"
#include "config.h"
#include "envelope.h"
#include "outcome.h"
#include "schema.h"

typedef struct wr_contracts wr_contracts;
struct wr_lua; /* lua_rt.h */

/* What an event is, by its contract. */
typedef enum {
    WR_CT_VALID = 0,       /* its type and version have a contract, and it validates */
    WR_CT_NO_CONTRACT,     /* its type has none: pass it on (unknown_types: pass) */
    WR_CT_INVALID,         /* schema-invalid */
    WR_CT_VERSION_UNKNOWN, /* version-unknown: newer than the contract, or not listed */
    WR_CT_UNKNOWN_TYPE,    /* unknown-type: no contract and unknown_types: dlq */
    WR_CT_UPCAST,          /* an older version listed with an upcaster */
    WR_CT_UPCAST_FAILED,   /* upcast-failed: its chain failed or its result is invalid
                              (counted by wr_contracts_upcast; also counted as upcast) */
    WR_CT_COUNT
} wr_ct_result;

/* How a subscription reads its events' versions and treats unknown types. */
typedef struct {
    const char *version_header; /* header (or top-level JSON field) with the version */
    int64_t default_version;    /* for events that carry none (0 in a wr_contract_policy:
                                   the type's current version) */
    int unknown_dlq;            /* 1: a type without a contract goes to the DLQ */
} wr_contract_opts;

/*
 * Load and compile contracts file PATH. Returns the contracts, or NULL with
 * every problem found in ERR (lines "FILE:LINE:COL: message" separated by
 * '\n', cut to CAP bytes).
 */
wr_contracts *wr_contracts_load(const char *path, char *err, size_t cap);

/* The same from TEXT (LEN bytes) as if read from PATH. */
wr_contracts *wr_contracts_parse(const char *path, const char *text, size_t len, char *err,
                                 size_t cap);

/* Take a reference to C (a worker's, while it checks events against it). Returns C. */
wr_contracts *wr_contracts_ref(wr_contracts *c);

/* Drop a reference; the last one frees C. NULL is fine. */
void wr_contracts_free(wr_contracts *c);

/*
 * The version of C as logs, `warren status` and metrics show it: 12 hex
 * digits of FNV-1a over the file's text and every upcaster's path and source,
 * so the same files have the same version in every process and an edit to an
 * upcaster changes it.
 */
const char *wr_contracts_digest(const wr_contracts *c);

/* The contracts file (absolute). */
const char *wr_contracts_path(const wr_contracts *c);

/* The files C was read from, for the reload watcher: the contracts file, then
 * every upcaster, into PATHS (at most CAP; they point into C). Returns how many. */
int wr_contracts_files(const wr_contracts *c, const char **paths, int cap);

/*
 * A reloaded C takes over the counters of OLD (the version it replaces), so
 * warren_contract_events_total keeps counting across reloads, including the
 * events workers still check against OLD. Call before C is shared. Returns 0,
 * or -1 when out of memory (C then keeps counters of its own).
 */
int wr_contracts_adopt_counts(wr_contracts *c, const wr_contracts *old);

/* Number of event types in C. */
int wr_contracts_count(const wr_contracts *c);

/*
 * The version of an event: header OPTS->version_header's value (VERSION,
 * VERSION_LEN bytes; NULL when absent) when it has one, else BODY's
 * top-level member of that name, else OPTS->default_version. Returns 0 and
 * sets *OUT, or -1 when the version given is not a positive integer.
 */
int wr_contracts_version(const wr_contract_opts *opts, const char *version, size_t version_len,
                         const json_t *body, int64_t *out);

/*
 * Check event BODY of type TYPE (TYPE_LEN bytes) and version VERSION against
 * C. DETAIL (CAP bytes) gets the explanation for anything but WR_CT_VALID
 * and WR_CT_NO_CONTRACT: "order.created v2: /items/0/quantity: minimum: 0 <
 * 1; ..." (violations capped at MAX_VIOLATIONS). Counts the result.
 */
#define WR_CONTRACTS_MAX_VIOLATIONS 10
wr_ct_result wr_contracts_check(wr_contracts *c, const wr_contract_opts *opts, const char *type,
                                size_t type_len, int64_t version, const json_t *body, char *detail,
                                size_t cap);

/*
 * The check the worker makes before the handler: the event's type and
 * version from envelope ENV (version header per POLICY, else the body's
 * field, else the default), its JSON body parsed, then wr_contracts_check().
 * Returns the reason to dead-letter it (WR_RS_SCHEMA_INVALID,
 * WR_RS_VERSION_UNKNOWN, WR_RS_UNKNOWN_TYPE, WR_RS_INVALID_JSON) with DETAIL,
 * or WR_RS_NONE to go on, with *RESULT (WR_CT_VALID, WR_CT_NO_CONTRACT or
 * WR_CT_UPCAST) and *VERSION set.
 */
wr_reason wr_contracts_check_envelope(wr_contracts *c, const wr_contract_policy *policy,
                                      const wr_envelope *env, wr_ct_result *result,
                                      int64_t *version, char *detail, size_t cap);

/*
 * What a worker (and `warren exec`) makes of decoded envelope ENV before its
 * handler runs, once its idempotency key is derived: the CloudEvent it may
 * be (cloudevent.h, into CE, which the caller clears: its type then selects
 * the contract, its id stands in for a missing message id, its data is the
 * body in structured mode), then, with contracts C (NULL: none),
 * wr_contracts_check_envelope under POLICY, ENV's version then showing the
 * version found. Returns the reason to dead-letter it (invalid-cloudevent,
 * schema-invalid, version-unknown, unknown-type, invalid-json) with DETAIL,
 * or WR_RS_NONE with *UPCAST_FROM: the version to upcast from before the
 * handler runs (wr_contracts_upcast_envelope), 0 for none. *VERSION (may be
 * NULL) gets the version its contract found, also for an event refused, or 0.
 */
wr_reason wr_contracts_admit(wr_contracts *c, const wr_contract_policy *policy, wr_envelope *env,
                             wr_cloudevent *ce, int64_t *upcast_from, int64_t *version,
                             char *detail, size_t cap);

/* One step of an upcast chain: the upcaster that turns FROM into FROM + 1. */
typedef struct {
    int64_t from;
    const char *path; /* the upcaster file (absolute) */
    const char *src;  /* its source, read at load */
    size_t len;
} wr_upcast_step;

#define WR_CONTRACTS_MAX_CHAIN 32

/*
 * The upcasters that take an event of TYPE from version FROM to the current
 * one, in order, into STEPS (at most CAP; they point into C). Returns the
 * number of steps, 0 when FROM is the current version, -1 when there is no
 * such chain (FROM unknown). The loader makes sure every listed version has
 * a complete chain.
 */
int wr_contracts_chain(const wr_contracts *c, const char *type, size_t type_len, int64_t from,
                       wr_upcast_step *steps, int cap);

/*
 * What wr_contracts_upcast did, step by step: WHAT is "upcast" (one upcaster,
 * FROM -> TO) or "validate" (the result against TO, the current version);
 * BODY (LEN bytes) is the result, or NULL with ERR when the step failed.
 */
typedef void (*wr_upcast_show)(void *ud, const char *what, int64_t from, int64_t to,
                               const char *body, size_t len, const char *err);

/*
 * Upcast event BODY (LEN bytes of JSON) of TYPE from version FROM to the
 * current one, as a worker does before its handler and as `warren exec` shows
 * it: its contract's upcaster chain runs in Lua state L (lua_rt.h), then the
 * result must validate against the current schema. Returns 0 with *OUT
 * (malloc'd JSON, the caller frees it) and *OUT_LEN, or -1 with DETAIL
 * ("order.created: v1 -> v2: /path/up.lua:3: boom", or the violations) and
 * the event counted as upcast-failed. Without SHOW the chain runs at once
 * under one handler timeout; with SHOW each upcaster runs on its own and
 * SHOW(UD, ...) hears of each step and of the validation.
 */
int wr_contracts_upcast(wr_contracts *c, struct wr_lua *L, const char *type, size_t type_len,
                        int64_t from, const char *body, size_t len, char **out, size_t *out_len,
                        char *detail, size_t cap, wr_upcast_show show, void *ud);

/*
 * wr_contracts_upcast for ENV (admitted with *UPCAST_FROM = FROM): returns
 * the body the handler gets (malloc'd, *LEN bytes; the caller points ENV's
 * body at it for the call and frees it), ENV's version then the current one
 * and its original_version the one received; or NULL with DETAIL
 * (upcast-failed, counted).
 */
char *wr_contracts_upcast_envelope(wr_contracts *c, struct wr_lua *L, wr_envelope *env,
                                   int64_t from, size_t *len, char *detail, size_t cap,
                                   wr_upcast_show show, void *ud);

/*
 * Validate BODY (LEN bytes of JSON), an event of TYPE upcast from FROM, against
 * the current version's schema. Returns 0 when it validates; -1 with DETAIL:
 * "order.created v1 -> v2: /items: required: ..." (or why it is not JSON).
 */
int wr_contracts_validate_current(wr_contracts *c, const char *type, size_t type_len, int64_t from,
                                  const char *body, size_t len, char *detail, size_t cap);

/*
 * validate_outgoing: check BODY (LEN bytes), an event a handler publishes as
 * TYPE, against TYPE's current version. Returns 0 when it validates, 1 when
 * TYPE has no contract (nothing to check), -1 with DETAIL ("order.confirmed
 * v1: /total: type: string, not number", or why it is not JSON).
 */
int wr_contracts_validate_outgoing(wr_contracts *c, const char *type, size_t type_len,
                                   const char *body, size_t len, char *detail, size_t cap);

/* "valid", "no-contract", "schema-invalid", "version-unknown", "unknown-type", "upcast",
 * "upcast-failed". */
const char *wr_ct_result_name(wr_ct_result r);

/* The current version of TYPE (its contract's `version`), or -1 without a contract. */
int64_t wr_contracts_current(const wr_contracts *c, const char *type, size_t type_len);

/*
 * Write the counters as Prometheus text, every series labelled with
 * subscription SUB: warren_contract_events_total{subscription,type,version,
 * result}. Events of types without a contract count under type="" (one
 * series, however many types producers invent).
 */
void wr_contracts_render(const wr_contracts *c, const char *sub, FILE *fp);

/*
 * `warren check`: validate every example of every contract against its
 * version's schema. Writes one "FILE:LINE:COL: message" line per problem to
 * FP and returns how many there were.
 */
int wr_contracts_check_examples(const wr_contracts *c, FILE *fp);

/*
 * `warren check`: compile every upcaster in Lua state L (a subscription's,
 * lua_rt.h) and run each example of an older version through its chain; the
 * result must validate against the current schema. One "FILE:LINE:COL:
 * message" line per problem to FP; returns how many. With SHOW, each example
 * upcast is described on SHOW ("order.created example 0: v1 -> v2 valid").
 */
int wr_contracts_check_upcasts(wr_contracts *c, struct wr_lua *L, FILE *fp, FILE *show);

#endif
