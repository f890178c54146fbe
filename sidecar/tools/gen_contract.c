/*
 * gen_contract: a build tool. Reads sidecar/lua/contract.lua (the texts and
 * limits of the handler API, which the busted kit loads as it is) and writes
 * a C header of macros, so the C side uses the very same texts:
 *
 *   ERRORS.<key>          ->  #define WR_E_<KEY> "..."
 *   HTTP_ERRORS.<key>     ->  #define WR_EH_<KEY> "..."
 *   STORE_ERRORS.<key>    ->  #define WR_ES_<KEY> "..."
 *   BREAKER_ERRORS.<key>  ->  #define WR_EB_<KEY> "..."
 *   LIMITS.<key>          ->  #define WR_LIMIT_<KEY> <integer>
 *
 * A text's %d becomes %lld (the C side passes long long, whatever the type it
 * holds the value in), %s, %.<n>s and %% stay; any other conversion fails the
 * build, since string.format and printf would not print it alike.
 *
 *   gen_contract <contract.lua> <out.h>
 *
 * Exit status 0, or 1 with the reason on stderr (the build stops).
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *table;
    const char *prefix;
} groups[] = {{"ERRORS", "WR_E_"},
              {"HTTP_ERRORS", "WR_EH_"},
              {"STORE_ERRORS", "WR_ES_"},
              {"BREAKER_ERRORS", "WR_EB_"}};

static int fail(const char *what, const char *key, const char *why)
{
    fprintf(stderr, "gen_contract: %s.%s: %s\n", what, key, why);
    return -1;
}

/* Write TEXT as a C string literal with its conversions turned into C's.
 * Returns 0, or -1 (said on stderr) on a conversion C and Lua do not share. */
static int put_text(FILE *out, const char *group, const char *key, const char *s, size_t n)
{
    fputc('"', out);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            size_t j = i + 1;
            if (j < n && (s[j] == '%' || s[j] == 's')) {
                fprintf(out, "%%%c", s[j]);
                i = j;
                continue;
            }
            if (j < n && s[j] == 'd') {
                fputs("%lld", out);
                i = j;
                continue;
            }
            if (j < n && s[j] == '.') {
                size_t k = j + 1;
                while (k < n && isdigit((unsigned char)s[k])) {
                    k++;
                }
                if (k > j + 1 && k < n && s[k] == 's') {
                    fprintf(out, "%.*s", (int)(k - i + 1), s + i);
                    i = k;
                    continue;
                }
            }
            return fail(group, key, "a conversion other than %s, %.<n>s, %d or %%");
        }
        if (c == '"' || c == '\\') {
            fprintf(out, "\\%c", c);
        } else if (c == '\n') {
            fputs("\\n", out);
        } else if (c < 0x20 || c >= 0x7f) {
            fprintf(out, "\\%03o", c);
        } else {
            fputc(c, out);
        }
    }
    fputc('"', out);
    return 0;
}

/* Write NAME in capitals after PREFIX. */
static void put_name(FILE *out, const char *prefix, const char *name)
{
    fputs(prefix, out);
    for (const char *p = name; *p != '\0'; p++) {
        fputc(toupper((unsigned char)*p), out);
    }
}

/* The string keys of the table at the top of the stack, sorted (the output
 * does not depend on the hash order). The caller frees the array. */
static const char **sorted_keys(lua_State *L, int *count)
{
    int n = 0, cap = 16;
    const char **keys = malloc((size_t)cap * sizeof(*keys));
    lua_pushnil(L);
    while (keys != NULL && lua_next(L, -2) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            continue;
        }
        if (n == cap) {
            cap *= 2;
            const char **k = realloc(keys, (size_t)cap * sizeof(*keys));
            if (k == NULL) {
                free(keys);
                return NULL;
            }
            keys = k;
        }
        keys[n++] = lua_tostring(L, -1); /* the table keeps the string alive */
    }
    for (int i = 1; i < n; i++) { /* insertion sort: a few dozen keys */
        for (int j = i; j > 0 && strcmp(keys[j - 1], keys[j]) > 0; j--) {
            const char *t = keys[j];
            keys[j] = keys[j - 1];
            keys[j - 1] = t;
        }
    }
    *count = n;
    return keys;
}

/* One group of texts (the table at the top of the stack). */
static int put_group(lua_State *L, FILE *out, const char *group, const char *prefix)
{
    int n = 0;
    const char **keys = sorted_keys(L, &n);
    if (keys == NULL) {
        return fail(group, "*", "out of memory");
    }
    fprintf(out, "\n/* %s */\n", group);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        lua_getfield(L, -1, keys[i]);
        if (lua_type(L, -1) != LUA_TSTRING) {
            rc = fail(group, keys[i], "not a string");
        } else {
            size_t len;
            const char *s = lua_tolstring(L, -1, &len);
            fputs("#define ", out);
            put_name(out, prefix, keys[i]);
            fputc(' ', out);
            rc = put_text(out, group, keys[i], s, len);
            fputc('\n', out);
        }
        lua_pop(L, 1);
    }
    free(keys);
    return rc;
}

/* LIMITS (the table at the top of the stack): whole numbers. */
static int put_limits(lua_State *L, FILE *out)
{
    int n = 0;
    const char **keys = sorted_keys(L, &n);
    if (keys == NULL) {
        return fail("LIMITS", "*", "out of memory");
    }
    fputs("\n/* LIMITS */\n", out);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        lua_getfield(L, -1, keys[i]);
        double v = lua_tonumber(L, -1);
        if (lua_type(L, -1) != LUA_TNUMBER || v != (double)(long long)v || v < 0) {
            rc = fail("LIMITS", keys[i], "not a whole number >= 0");
        } else {
            fputs("#define ", out);
            put_name(out, "WR_LIMIT_", keys[i]);
            fprintf(out, " %lld\n", (long long)v);
        }
        lua_pop(L, 1);
    }
    free(keys);
    return rc;
}

static int generate(lua_State *L, const char *in, FILE *out)
{
    if (luaL_loadfile(L, in) != 0 || lua_pcall(L, 0, 1, 0) != 0) {
        fprintf(stderr, "gen_contract: %s\n", lua_tostring(L, -1));
        return -1;
    }
    if (!lua_istable(L, -1)) {
        fprintf(stderr, "gen_contract: %s does not return a table\n", in);
        return -1;
    }
    fprintf(out, "/* Generated from sidecar/lua/contract.lua by sidecar/tools/gen_contract.c: "
                 "do not edit. */\n#ifndef WR_CONTRACT_H\n#define WR_CONTRACT_H\n");
    for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++) {
        lua_getfield(L, -1, groups[g].table);
        if (!lua_istable(L, -1)) {
            return fail(groups[g].table, "*", "missing");
        }
        if (put_group(L, out, groups[g].table, groups[g].prefix) != 0) {
            return -1;
        }
        lua_pop(L, 1);
    }
    lua_getfield(L, -1, "LIMITS");
    if (!lua_istable(L, -1) || put_limits(L, out) != 0) {
        return lua_istable(L, -1) ? -1 : fail("LIMITS", "*", "missing");
    }
    fputs("\n#endif\n", out);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: gen_contract <contract.lua> <out.h>\n");
        return 1;
    }
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        fprintf(stderr, "gen_contract: cannot create a Lua state\n");
        return 1;
    }
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", argv[2]);
    FILE *out = fopen(tmp, "w");
    if (out == NULL) {
        perror(tmp);
        lua_close(L);
        return 1;
    }
    int rc = generate(L, argv[1], out);
    lua_close(L);
    if (fclose(out) != 0 || rc != 0 || rename(tmp, argv[2]) != 0) {
        remove(tmp);
        return 1;
    }
    return 0;
}
