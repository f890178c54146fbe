/*
 * scripts: the server-side Lua scripts of the idempotency records, as C
 * strings. The sources are sidecar/scripts/claim.lua and finish.lua (each
 * opening with its KEYS/ARGV layout and what it returns), with record.lua (the
 * record format's helpers) in front of each; the build embeds them
 * (cmake/embed_scripts.cmake). tests/scripts/ runs them directly against a
 * throwaway redis-server, and the offline model (commit_model.lua) beside
 * them.
 */
#ifndef WR_SCRIPTS_H
#define WR_SCRIPTS_H

extern const char wr_script_claim[];  /* claim a batch's records (idem.h) */
extern const char wr_script_finish[]; /* finish them, with their ctx.store writes */
extern const char wr_script_gate[];   /* causal gates: park, take, sent, sweep (gates.h) */

/* warren's own Lua (sidecar/lua/), run in a plain LuaJIT state of its own, never
 * in a handler's: */
extern const char wr_lua_commit_model[]; /* the commit script over an in-memory Redis
                                            (offcommit.h) */
extern const char wr_lua_lint[];         /* undeclared globals in handlers (lint.h) */
/* and in every handler state, before any handler code: */
extern const char wr_lua_sandbox[];  /* the handler's globals (lua_rt.c; the kit loads it too) */
extern const char wr_lua_contract[]; /* the API's texts and limits: the C side uses them as
                                        macros (generated/contract.h), the kit loads them */

#endif
