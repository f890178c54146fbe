/*
 * lua_pattern: string.find, string.match, string.gmatch and string.gsub that
 * the handler's deadline can stop, and a table.sort whose comparisons it can.
 *
 * The deadline is checked by a hook between VM instructions and at calls
 * (lua_rt.c). A C function that runs long without calling anything is out of
 * its reach: LuaJIT's pattern matcher backtracks without limit (measured:
 * body:match("^%s*(.-)%s*$") over 40 KB of spaces, 5 s; ("a"):rep(200)
 * :find(".-.-.-.-b"), 18 s, both under a 100 ms deadline, while AMQP
 * heartbeats stopped), its plain find compares in O(subject x needle), and
 * table.sort without a comparator compares in C, 4 million numbers in about
 * 2 s.
 *
 * So every state gets its own implementation of Lua 5.1 patterns (as the
 * reference manual, section 5.4.1, and LuaJIT define them: the same classes,
 * ASCII only, %b, %f, back-references, position captures, at most 32
 * captures, "pattern too complex" past 200 nested items, the same error
 * texts), which counts its steps and checks the deadline every
 * TICK_EVERY of them. A plain find (a pattern without magic characters, or
 * the plain flag) searches in linear time: memmem over chunks for short
 * needles, Knuth-Morris-Pratt (its table in the state's memory) for long
 * ones, checking the deadline as it goes. table.sort without a comparator
 * gets one written in C, so that each comparison is a call the hook sees.
 * The functions replace the ones in the string and table libraries before
 * the sandbox copies them, so string methods (s:find) use them too.
 */
#define _GNU_SOURCE /* memmem */
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <string.h>

#include "lua_api.h"

#define MAX_CAPTURES 32
#define MAX_NESTING 200   /* LuaJIT's LJ_MAX_XLEVEL: "pattern too complex" beyond */
#define TICK_EVERY 16384  /* matcher steps between deadline checks */
#define CHUNK (1u << 20)  /* plain find: bytes searched between deadline checks */
#define SHORT_NEEDLE 4096 /* plain find: longer needles use KMP */
#define CAP_OPEN (-1)     /* capture length: still open */
#define CAP_POSITION (-2) /* capture length: a position capture () */
#define ESC '%'

typedef unsigned char uchar;

typedef struct {
    lua_State *L;
    const char *src_init; /* the subject */
    const char *src_end;
    int level;      /* captures opened so far */
    int nesting;    /* match() calls active: MAX_NESTING at most */
    unsigned steps; /* since the last deadline check */
    struct {
        const char *init;
        ptrdiff_t len; /* or CAP_OPEN, CAP_POSITION */
    } cap[MAX_CAPTURES];
} matcher;

/* One unit of work: every TICK_EVERY of them, let the deadline stop us. */
static void step(matcher *m)
{
    if (++m->steps >= TICK_EVERY) {
        m->steps = 0;
        wr_lua_check_deadline(m->L);
    }
}

/* ---- character classes --------------------------------------------------------- */

static int is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

/* Whether C is in class %CL (a letter; its upper case is the complement),
 * else whether C is CL itself. ASCII only, like LuaJIT. */
static int class_has(int c, int cl)
{
    int in;
    switch (cl | 0x20) {
    case 'a':
        in = is_alpha(c);
        break;
    case 'c':
        in = c < 0x20 || c == 0x7f;
        break;
    case 'd':
        in = is_digit(c);
        break;
    case 'g':
        in = c > 0x20 && c < 0x7f;
        break;
    case 'l':
        in = c >= 'a' && c <= 'z';
        break;
    case 'p':
        in = c > 0x20 && c < 0x7f && !is_alpha(c) && !is_digit(c);
        break;
    case 's':
        in = c == ' ' || (c >= '\t' && c <= '\r');
        break;
    case 'u':
        in = c >= 'A' && c <= 'Z';
        break;
    case 'w':
        in = is_alpha(c) || is_digit(c);
        break;
    case 'x':
        in = is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
        break;
    case 'z':
        in = c == 0;
        break;
    default:
        return cl == c;
    }
    if (!is_alpha(cl)) {
        return cl == c; /* e.g. '[' | 0x20 is '{', not a class */
    }
    return (cl & 0x20) ? in : !in;
}

/* Whether C is in the set [...] from P (at '[') to END (at its ']'). */
static int set_has(int c, const char *p, const char *end)
{
    int yes = 1;
    if (p[1] == '^') {
        yes = 0;
        p++;
    }
    while (++p < end) {
        if (*p == ESC) {
            p++;
            if (class_has(c, (uchar)*p)) {
                return yes;
            }
        } else if (p[1] == '-' && p + 2 < end) {
            if ((uchar)p[0] <= c && c <= (uchar)p[2]) {
                return yes;
            }
            p += 2;
        } else if ((uchar)*p == c) {
            return yes;
        }
    }
    return !yes;
}

/* Past the single-character class that starts at P. */
static const char *class_end(matcher *m, const char *p)
{
    char c = *p++;
    if (c == ESC) {
        if (*p == '\0') {
            luaL_error(m->L, "malformed pattern (ends with '%%')");
        }
        return p + 1;
    }
    if (c == '[') {
        if (*p == '^') {
            p++;
        }
        do { /* a ']' right after '[' or '[^' is part of the set */
            if (*p == '\0') {
                luaL_error(m->L, "malformed pattern (missing ']')");
            }
            if (*p++ == ESC && *p != '\0') {
                p++;
            }
        } while (*p != ']');
        return p + 1;
    }
    return p;
}

/* Whether C matches the class from P to END (as class_end found it). */
static int class_matches(int c, const char *p, const char *end)
{
    switch (*p) {
    case '.':
        return 1;
    case ESC:
        return class_has(c, (uchar)p[1]);
    case '[':
        return set_has(c, p, end - 1);
    default:
        return (uchar)*p == c;
    }
}

/* ---- matching ------------------------------------------------------------------- */

static const char *do_match(matcher *m, const char *s, const char *p);

/* The capture that %N (N the character '1'..'9') refers to. */
static int capture_index(matcher *m, int n)
{
    n -= '1';
    if (n < 0 || n >= m->level || m->cap[n].len == CAP_OPEN) {
        luaL_error(m->L, "invalid capture index");
    }
    return n;
}

static const char *greedy(matcher *m, const char *s, const char *p, const char *ep)
{
    ptrdiff_t n = 0;
    while (s + n < m->src_end && class_matches((uchar)s[n], p, ep)) {
        step(m);
        n++;
    }
    for (; n >= 0; n--) { /* the longest run first, then one shorter at a time */
        const char *r = do_match(m, s + n, ep + 1);
        if (r != NULL) {
            return r;
        }
    }
    return NULL;
}

static const char *lazy(matcher *m, const char *s, const char *p, const char *ep)
{
    for (;;) {
        const char *r = do_match(m, s, ep + 1);
        if (r != NULL) {
            return r;
        }
        if (s < m->src_end && class_matches((uchar)*s, p, ep)) {
            s++;
        } else {
            return NULL;
        }
    }
}

static const char *open_capture(matcher *m, const char *s, const char *p, ptrdiff_t what)
{
    if (m->level >= MAX_CAPTURES) {
        luaL_error(m->L, "too many captures");
    }
    m->cap[m->level].init = s;
    m->cap[m->level].len = what;
    m->level++;
    const char *r = do_match(m, s, p);
    if (r == NULL) {
        m->level--;
    }
    return r;
}

static const char *close_capture(matcher *m, const char *s, const char *p)
{
    int l = m->level - 1;
    while (l >= 0 && m->cap[l].len != CAP_OPEN) {
        l--;
    }
    if (l < 0) {
        luaL_error(m->L, "invalid pattern capture");
    }
    m->cap[l].len = s - m->cap[l].init;
    const char *r = do_match(m, s, p);
    if (r == NULL) {
        m->cap[l].len = CAP_OPEN;
    }
    return r;
}

/* %bxy at P (pointing at x): a balanced run of x ... y starting at S. */
static const char *balanced(matcher *m, const char *s, const char *p)
{
    if (p[0] == '\0' || p[1] == '\0') {
        luaL_error(m->L, "unbalanced pattern");
    }
    if (s >= m->src_end || *s != p[0]) {
        return NULL;
    }
    int open = 1;
    while (++s < m->src_end) {
        step(m);
        if (*s == p[1]) {
            if (--open == 0) {
                return s + 1;
            }
        } else if (*s == p[0]) {
            open++;
        }
    }
    return NULL;
}

/*
 * Match the pattern from P (NUL-terminated, like LuaJIT's) against the
 * subject from S. Returns the end of the match, or NULL. Single items
 * without a quantifier loop here; the rest recurses, at most MAX_NESTING
 * deep.
 */
static const char *do_match(matcher *m, const char *s, const char *p)
{
    if (++m->nesting > MAX_NESTING) {
        luaL_error(m->L, "pattern too complex");
    }
    for (;;) {
        step(m);
        if (*p == '\0') {
            break; /* the end of the pattern: matched */
        }
        if (*p == '(') {
            s = p[1] == ')' ? open_capture(m, s, p + 2, CAP_POSITION)
                            : open_capture(m, s, p + 1, CAP_OPEN);
            break;
        }
        if (*p == ')') {
            s = close_capture(m, s, p + 1);
            break;
        }
        if (*p == '$' && p[1] == '\0') {
            if (s != m->src_end) {
                s = NULL;
            }
            break;
        }
        if (*p == ESC && p[1] == 'b') {
            s = balanced(m, s, p + 2);
            if (s == NULL) {
                break;
            }
            p += 4;
            continue;
        }
        if (*p == ESC && p[1] == 'f') {
            p += 2;
            if (*p != '[') {
                luaL_error(m->L, "missing '[' after '%%f' in pattern");
            }
            const char *ep = class_end(m, p);
            int before = s == m->src_init ? '\0' : (uchar)s[-1];
            int here = s < m->src_end ? (uchar)*s : '\0';
            if (set_has(before, p, ep - 1) || !set_has(here, p, ep - 1)) {
                s = NULL;
                break;
            }
            p = ep;
            continue;
        }
        if (*p == ESC && is_digit((uchar)p[1])) {
            /* a back-reference %1..%9 (%0 is "invalid capture index") */
            int l = capture_index(m, (uchar)p[1]);
            size_t len = (size_t)m->cap[l].len;
            if ((size_t)(m->src_end - s) >= len && memcmp(m->cap[l].init, s, len) == 0) {
                s += len;
                p += 2;
                continue;
            }
            s = NULL;
            break;
        }
        /* a single-character class, perhaps with a quantifier */
        const char *ep = class_end(m, p);
        int hit = s < m->src_end && class_matches((uchar)*s, p, ep);
        if (*ep == '?') {
            const char *r;
            if (hit && (r = do_match(m, s + 1, ep + 1)) != NULL) {
                s = r;
                break;
            }
            p = ep + 1;
            continue;
        }
        if (*ep == '*') {
            s = greedy(m, s, p, ep);
            break;
        }
        if (*ep == '+') {
            s = hit ? greedy(m, s + 1, p, ep) : NULL;
            break;
        }
        if (*ep == '-') {
            s = lazy(m, s, p, ep);
            break;
        }
        if (!hit) {
            s = NULL;
            break;
        }
        s++;
        p = ep;
    }
    m->nesting--;
    return s;
}

/* ---- results -------------------------------------------------------------------- */

/* Push capture I of a match from S to E (the whole match when there are no
 * captures and I is 0). */
static void push_capture(matcher *m, int i, const char *s, const char *e)
{
    if (i >= m->level) {
        if (i != 0) {
            luaL_error(m->L, "invalid capture index");
        }
        lua_pushlstring(m->L, s, (size_t)(e - s));
        return;
    }
    ptrdiff_t len = m->cap[i].len;
    if (len == CAP_OPEN) {
        luaL_error(m->L, "unfinished capture");
    }
    if (len == CAP_POSITION) {
        lua_pushinteger(m->L, (lua_Integer)(m->cap[i].init - m->src_init + 1));
    } else {
        lua_pushlstring(m->L, m->cap[i].init, (size_t)len);
    }
}

/* Push every capture (or the whole match when S is not NULL and there are
 * none); returns how many. */
static int push_captures(matcher *m, const char *s, const char *e)
{
    int n = (m->level == 0 && s != NULL) ? 1 : m->level;
    luaL_checkstack(m->L, n, "too many captures");
    for (int i = 0; i < n; i++) {
        push_capture(m, i, s, e);
    }
    return n;
}

static void start(matcher *m, lua_State *L, const char *s, size_t len)
{
    m->L = L;
    m->src_init = s;
    m->src_end = s + len;
    m->level = 0;
    m->nesting = 0;
    m->steps = 0;
}

/* ---- plain search --------------------------------------------------------------- */

/* The first occurrence of NEEDLE (M bytes) in HAY (N bytes), or NULL; linear
 * in N + M, and the deadline is checked along the way. */
static const char *plain_find(lua_State *L, const char *hay, size_t n, const char *needle, size_t m)
{
    if (m == 0) {
        return hay;
    }
    if (m > n) {
        return NULL;
    }
    if (m <= SHORT_NEEDLE) {
        for (size_t off = 0; off + m <= n; off += CHUNK) {
            size_t len = n - off < CHUNK + m - 1 ? n - off : CHUNK + m - 1;
            const char *r = memmem(hay + off, len, needle, m);
            if (r != NULL) {
                return r;
            }
            wr_lua_check_deadline(L);
        }
        return NULL;
    }
    /* Knuth-Morris-Pratt: fail[i] = length of the longest proper border of
     * needle[0..i]; the table lives in the state (its memory limit holds) */
    uint32_t *fail = lua_newuserdata(L, m * sizeof(*fail));
    fail[0] = 0;
    unsigned steps = 0;
    for (size_t i = 1, k = 0; i < m; i++) {
        while (k > 0 && needle[i] != needle[k]) {
            k = fail[k - 1];
        }
        if (needle[i] == needle[k]) {
            k++;
        }
        fail[i] = (uint32_t)k;
        if (++steps == CHUNK) {
            steps = 0;
            wr_lua_check_deadline(L);
        }
    }
    const char *found = NULL;
    for (size_t i = 0, k = 0; i < n; i++) {
        while (k > 0 && hay[i] != needle[k]) {
            k = fail[k - 1];
        }
        if (hay[i] == needle[k]) {
            k++;
        }
        if (k == m) {
            found = hay + i + 1 - m;
            break;
        }
        if (++steps == CHUNK) {
            steps = 0;
            wr_lua_check_deadline(L);
        }
    }
    lua_pop(L, 1);
    return found;
}

/* Whether P (LEN bytes) holds a character that makes it a pattern. */
static int has_magic(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] != '\0' && strchr("^$*+?.([%-", p[i]) != NULL) {
            return 1;
        }
    }
    return 0;
}

/* ---- the library functions ------------------------------------------------------ */

/* string.find (FIND) and string.match. */
static int find_or_match(lua_State *L, int find)
{
    size_t len, plen;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *p = luaL_checklstring(L, 2, &plen);
    lua_Integer init = luaL_optinteger(L, 3, 1);
    size_t st;
    if (init < 0) {
        init += (lua_Integer)len;
    } else {
        init--;
    }
    st = init < 0 ? 0 : (size_t)init > len ? len : (size_t)init;
    if (find && (lua_toboolean(L, 4) || !has_magic(p, plen))) {
        const char *q = plain_find(L, s + st, len - st, p, plen);
        if (q == NULL) {
            lua_pushnil(L);
            return 1;
        }
        lua_pushinteger(L, (lua_Integer)(q - s) + 1);
        lua_pushinteger(L, (lua_Integer)(q - s) + (lua_Integer)plen);
        return 2;
    }
    matcher m;
    start(&m, L, s, len);
    int anchor = *p == '^';
    p += anchor;
    const char *from = s + st;
    do {
        m.level = 0;
        m.nesting = 0;
        const char *e = do_match(&m, from, p);
        if (e != NULL) {
            if (!find) {
                return push_captures(&m, from, e);
            }
            lua_pushinteger(L, (lua_Integer)(from - s) + 1);
            lua_pushinteger(L, (lua_Integer)(e - s));
            return push_captures(&m, NULL, NULL) + 2;
        }
    } while (from++ < m.src_end && !anchor);
    lua_pushnil(L);
    return 1;
}

static int str_find(lua_State *L)
{
    return find_or_match(L, 1);
}

static int str_match(lua_State *L)
{
    return find_or_match(L, 0);
}

/* The iterator string.gmatch returns: upvalues subject, pattern, position. */
static int gmatch_next(lua_State *L)
{
    size_t len;
    const char *s = lua_tolstring(L, lua_upvalueindex(1), &len);
    const char *p = lua_tostring(L, lua_upvalueindex(2));
    size_t pos = (size_t)lua_tointeger(L, lua_upvalueindex(3));
    matcher m;
    start(&m, L, s, len);
    for (const char *from = s + pos; from <= m.src_end; from++) {
        m.level = 0;
        m.nesting = 0;
        step(&m);
        const char *e = do_match(&m, from, p);
        if (e != NULL) {
            size_t next = (size_t)(e - s) + (e == from); /* an empty match moves on */
            lua_pushinteger(L, (lua_Integer)next);
            lua_replace(L, lua_upvalueindex(3));
            return push_captures(&m, from, e);
        }
    }
    return 0;
}

static int str_gmatch(lua_State *L)
{
    luaL_checkstring(L, 1);
    luaL_checkstring(L, 2);
    lua_settop(L, 2);
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, gmatch_next, 3);
    return 1;
}

/* Add the replacement string (argument 3) for a match from S to E. */
static void add_template(matcher *m, luaL_Buffer *b, const char *s, const char *e)
{
    size_t len;
    const char *r = lua_tolstring(m->L, 3, &len);
    for (size_t i = 0; i < len; i++) {
        step(m);
        if (r[i] != ESC) {
            luaL_addchar(b, r[i]);
            continue;
        }
        i++; /* r[len] is the string's NUL: "%" at the end adds it, as LuaJIT does */
        if (!is_digit((uchar)r[i])) {
            luaL_addchar(b, r[i]);
        } else if (r[i] == '0') {
            luaL_addlstring(b, s, (size_t)(e - s));
        } else {
            push_capture(m, r[i] - '1', s, e);
            luaL_addvalue(b);
        }
    }
}

static void add_replacement(matcher *m, luaL_Buffer *b, const char *s, const char *e)
{
    lua_State *L = m->L;
    switch (lua_type(L, 3)) {
    case LUA_TNUMBER:
    case LUA_TSTRING:
        add_template(m, b, s, e);
        return;
    case LUA_TFUNCTION: {
        lua_pushvalue(L, 3);
        int n = push_captures(m, s, e);
        lua_call(L, n, 1);
        break;
    }
    default: /* a table */
        push_capture(m, 0, s, e);
        lua_gettable(L, 3);
        break;
    }
    if (!lua_toboolean(L, -1)) { /* nil or false: keep the original text */
        lua_pop(L, 1);
        lua_pushlstring(L, s, (size_t)(e - s));
    } else if (!lua_isstring(L, -1)) {
        luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    }
    luaL_addvalue(b);
}

static int str_gsub(lua_State *L)
{
    size_t len;
    const char *src = luaL_checklstring(L, 1, &len);
    const char *p = luaL_checkstring(L, 2);
    int tr = lua_type(L, 3);
    lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)len + 1);
    if (tr != LUA_TNUMBER && tr != LUA_TSTRING && tr != LUA_TFUNCTION && tr != LUA_TTABLE) {
        return luaL_argerror(L, 3, "string/function/table expected");
    }
    int anchor = *p == '^';
    p += anchor;
    matcher m;
    start(&m, L, src, len);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lua_Integer n = 0;
    while (n < max) {
        m.level = 0;
        m.nesting = 0;
        const char *e = do_match(&m, src, p);
        if (e != NULL) {
            n++;
            add_replacement(&m, &b, src, e);
        }
        if (e != NULL && e > src) {
            src = e;
        } else if (src < m.src_end) {
            luaL_addchar(&b, *src++);
        } else {
            break;
        }
        if (anchor) {
            break;
        }
    }
    luaL_addlstring(&b, src, (size_t)(m.src_end - src));
    luaL_pushresult(&b);
    lua_pushinteger(L, n);
    return 2;
}

/* ---- table.sort --------------------------------------------------------------- */

/* a < b, as table.sort compares without a comparator (metamethods included) */
static int less_than(lua_State *L)
{
    lua_pushboolean(L, lua_lessthan(L, 1, 2));
    return 1;
}

/* table.sort(t [, comp]): LuaJIT's, with less_than when there is no comp. */
static int sort_guarded(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 1);
        lua_pushvalue(L, lua_upvalueindex(2));
    } else {
        luaL_checktype(L, 2, LUA_TFUNCTION);
    }
    lua_settop(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 2, 0);
    return 0;
}

void wr_lua_pattern_inject(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"find", str_find}, {"match", str_match}, {"gmatch", str_gmatch}, {"gsub", str_gsub}};
    lua_getglobal(L, "string");
    for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
        lua_pushcfunction(L, fns[i].func);
        lua_setfield(L, -2, fns[i].name);
    }
    lua_pop(L, 1);
    lua_getglobal(L, "table"); /* -- table */
    lua_getfield(L, -1, "sort");
    lua_pushcfunction(L, less_than);
    lua_pushcclosure(L, sort_guarded, 2);
    lua_setfield(L, -2, "sort");
    lua_pop(L, 1);
}
