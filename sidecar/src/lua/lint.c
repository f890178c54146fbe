/*
 * lint: undeclared globals in handler sources. See lint.h.
 */
#include "lint.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "lua_rt.h"
#include "scripts.h"

/* A handler that publishes the names of its sandbox's globals, then of ctx's
 * fields, one line each: the sandbox tells what it declares. */
static const char probe_source[] =
    "local names = {}\n"
    "for k in pairs(_G) do names[#names + 1] = k end\n"
    "return { handle = function(event, ctx)\n"
    "  local fields = {}\n"
    "  for k in pairs(ctx) do fields[#fields + 1] = k end\n"
    "  ctx.publish('', 'names', table.concat(names, ' ') .. '\\n' .. table.concat(fields, ' '))\n"
    "end }\n";

/*
 * The sandbox's globals and ctx's fields as two space-separated lists in
 * NAMES (malloc'd, the lists split by a newline). Returns 0, or -1 with ERR.
 */
static int sandbox_names(char **names, char *err, size_t errcap)
{
    wr_lua_opts o = {.handler_path = "/warren-lint/probe.lua",
                     .source = probe_source,
                     .source_len = sizeof(probe_source) - 1,
                     .version = "000000000000",
                     .subscription = "lint",
                     .queue = "lint",
                     .timeout_ms = 5000,
                     .max_attempts = 1};
    wr_lua *L = wr_lua_create(&o, err, errcap);
    if (L == NULL) {
        return -1;
    }
    amqp_envelope_t d;
    memset(&d, 0, sizeof(d));
    d.message.body = amqp_cstring_bytes("{}");
    d.message.properties._flags = AMQP_BASIC_MESSAGE_ID_FLAG;
    d.message.properties.message_id = amqp_cstring_bytes("lint");
    wr_envelope env;
    const char *reason;
    char detail[256];
    wr_envelope_decode(&d, 1024, 0, &env, &reason, detail, sizeof(detail));
    wr_lua_call call = {
        .idempotency_key = "lint", .trace_id = "0123456789abcdef0123456789abcdef", .attempt = 1};
    wr_lua_result res;
    int rc = -1;
    if (wr_lua_handle(L, &env, &call, &res) == WR_OUT_OK && res.pub_count == 1) {
        *names = strndup(res.pubs[0].body, res.pubs[0].body_len);
        rc = *names != NULL ? 0 : -1;
        if (rc != 0) {
            snprintf(err, errcap, "out of memory");
        }
    } else {
        snprintf(err, errcap, "the sandbox probe failed: %s", res.error);
    }
    wr_lua_destroy(L);
    return rc;
}

/* [-0, +1] A set (name -> true) of the space-separated names in S[0, N). */
static void push_set(lua_State *L, const char *s, size_t n)
{
    lua_newtable(L);
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && s[j] != ' ') {
            j++;
        }
        if (j > i) {
            lua_pushlstring(L, s + i, j - i);
            lua_pushboolean(L, 1);
            lua_rawset(L, -3);
        }
        i = j + 1;
    }
}

static char *dup_field(lua_State *L, int idx, const char *name)
{
    lua_getfield(L, idx, name);
    const char *s = lua_tostring(L, -1);
    char *c = strdup(s ? s : "");
    lua_pop(L, 1);
    return c;
}

int wr_lint_handler(const char *path, wr_lint_report *out, char *err, size_t errcap)
{
    memset(out, 0, sizeof(*out));
    char *names = NULL;
    if (sandbox_names(&names, err, errcap) != 0) {
        return -1;
    }
    char *nl = strchr(names, '\n');
    size_t globals_len = nl ? (size_t)(nl - names) : strlen(names);
    const char *fields = nl ? nl + 1 : "";
    int rc = -1;
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        snprintf(err, errcap, "out of memory");
        free(names);
        return -1;
    }
    luaL_openlibs(L);
    /* stack: lint */
    if (luaL_loadbuffer(L, wr_lua_lint, strlen(wr_lua_lint), "=lint.lua") != 0 ||
        lua_pcall(L, 0, 1, 0) != 0) {
        snprintf(err, errcap, "the lint does not load: %s", lua_tostring(L, -1));
        goto out;
    }
    lua_pushstring(L, path);
    push_set(L, names, globals_len);
    push_set(L, fields, strlen(fields));
    /* stack: lint, path, declared, ctx_names -> problems */
    if (lua_pcall(L, 3, 1, 0) != 0) {
        snprintf(err, errcap, "the lint failed: %s", lua_tostring(L, -1));
        goto out;
    }
    int n = (int)lua_objlen(L, -1);
    out->items = calloc((size_t)(n > 0 ? n : 1), sizeof(*out->items));
    if (out->items == NULL) {
        snprintf(err, errcap, "out of memory");
        goto out;
    }
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        wr_lint_problem *p = &out->items[out->count++];
        p->file = dup_field(L, -1, "file");
        p->msg = dup_field(L, -1, "msg");
        lua_getfield(L, -1, "line");
        p->line = (int)lua_tointeger(L, -1);
        lua_getfield(L, -2, "col");
        p->col = (int)lua_tointeger(L, -1);
        lua_pop(L, 3);
        if (p->file == NULL || p->msg == NULL) {
            snprintf(err, errcap, "out of memory");
            wr_lint_report_free(out);
            goto out;
        }
    }
    rc = 0;
out:
    lua_close(L);
    free(names);
    return rc;
}

void wr_lint_report_free(wr_lint_report *r)
{
    for (int i = 0; i < r->count; i++) {
        free(r->items[i].file);
        free(r->items[i].msg);
    }
    free(r->items);
    r->items = NULL;
    r->count = 0;
}
