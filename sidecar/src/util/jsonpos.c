/*
 * jsonpos: positions of the members and elements of a JSON text. See jsonpos.h.
 *
 * The walk trusts that jansson accepted the text already, but still checks
 * every step against the tree and the text's end: a mismatch makes the index
 * fail rather than point at the wrong place. The entries are then sorted by
 * container, so a lookup reads only its container's entries (an event's
 * large "data" never slows down a lookup in its "http" list).
 */
#include "jsonpos.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const json_t *parent; /* the object or array */
    char *key;            /* the member's key; NULL for an array element */
    size_t index;         /* the element's index */
    wr_textpos key_pos;   /* members: where the key starts */
    wr_textpos value_pos; /* where the value starts */
} entry;

struct wr_jsonpos {
    entry *e;
    size_t n, cap;
    wr_textpos root;
};

typedef struct {
    const char *s;
    size_t len, i;
    int line, col; /* of s[i] */
    wr_jsonpos *p;
    int failed;
} scanner;

/* Step past s[i], keeping line and column (characters, not bytes). */
static void adv(scanner *sc)
{
    if (sc->i >= sc->len) {
        sc->failed = 1;
        return;
    }
    char c = sc->s[sc->i++];
    if (c == '\n') {
        sc->line++;
        sc->col = 1;
    } else if (sc->i < sc->len && ((unsigned char)sc->s[sc->i] & 0xC0) != 0x80) {
        sc->col++; /* the next byte starts a new character */
    }
}

static int at(const scanner *sc, char c)
{
    return sc->i < sc->len && sc->s[sc->i] == c;
}

static void skip_ws(scanner *sc)
{
    while (sc->i < sc->len && (sc->s[sc->i] == ' ' || sc->s[sc->i] == '\t' ||
                               sc->s[sc->i] == '\n' || sc->s[sc->i] == '\r')) {
        adv(sc);
    }
}

static wr_textpos here(const scanner *sc)
{
    return (wr_textpos){sc->line, sc->col};
}

/* Step over the string starting at the quote at s[i]; sets *ESCAPED when it
 * holds a backslash escape. */
static void skip_string(scanner *sc, int *escaped)
{
    adv(sc);
    while (!sc->failed && sc->i < sc->len && sc->s[sc->i] != '"') {
        if (sc->s[sc->i] == '\\') {
            *escaped = 1;
            adv(sc);
        }
        adv(sc);
    }
    if (!at(sc, '"')) {
        sc->failed = 1;
        return;
    }
    adv(sc);
}

static int add(scanner *sc, const json_t *parent, char *key, size_t index, wr_textpos kp,
               wr_textpos vp)
{
    wr_jsonpos *p = sc->p;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 32;
        entry *e = realloc(p->e, cap * sizeof(*e));
        if (e == NULL) {
            free(key);
            sc->failed = 1;
            return -1;
        }
        p->e = e;
        p->cap = cap;
    }
    p->e[p->n++] = (entry){parent, key, index, kp, vp};
    return 0;
}

/* The key whose quoted text is S[a, b), unescaped (malloc'd), or NULL. */
static char *key_text(const char *s, size_t a, size_t b, int escaped)
{
    if (!escaped) {
        char *k = malloc(b - a - 1);
        if (k != NULL) {
            memcpy(k, s + a + 1, b - a - 2);
            k[b - a - 2] = '\0';
        }
        return k;
    }
    json_t *j = json_loadb(s + a, b - a, JSON_DECODE_ANY, NULL);
    char *k = json_is_string(j) ? strdup(json_string_value(j)) : NULL;
    json_decref(j);
    return k;
}

static void walk(scanner *sc, const json_t *node);

/* Step into the object or array opening at s[i]. Returns 1 when members or
 * elements follow, 0 when it is empty (and stepped over, up to CLOSE). */
static int open_nonempty(scanner *sc, char close)
{
    adv(sc); /* { or [ */
    skip_ws(sc);
    if (at(sc, close)) {
        adv(sc);
        return 0;
    }
    return 1;
}

/* After a member or element: 1 past a ',' (another follows), 0 past CLOSE
 * (the container ends) or on anything else (the scan fails). */
static int more_follow(scanner *sc, char close)
{
    skip_ws(sc);
    if (at(sc, ',')) {
        adv(sc);
        return 1;
    }
    if (at(sc, close)) {
        adv(sc);
    } else {
        sc->failed = 1;
    }
    return 0;
}

static void walk_object(scanner *sc, const json_t *obj)
{
    if (!open_nonempty(sc, '}')) {
        return;
    }
    while (!sc->failed) {
        skip_ws(sc);
        if (!at(sc, '"')) {
            sc->failed = 1;
            return;
        }
        wr_textpos kp = here(sc);
        size_t a = sc->i;
        int escaped = 0;
        skip_string(sc, &escaped);
        if (sc->failed) {
            return;
        }
        char *key = key_text(sc->s, a, sc->i, escaped);
        const json_t *child = key != NULL ? json_object_get(obj, key) : NULL;
        skip_ws(sc);
        if (child == NULL || !at(sc, ':')) {
            free(key);
            sc->failed = 1;
            return;
        }
        adv(sc);
        skip_ws(sc);
        if (add(sc, obj, key, 0, kp, here(sc)) != 0) {
            return;
        }
        walk(sc, child);
        if (!more_follow(sc, '}')) {
            return;
        }
    }
}

static void walk_array(scanner *sc, const json_t *arr)
{
    if (!open_nonempty(sc, ']')) {
        return;
    }
    for (size_t i = 0; !sc->failed; i++) {
        skip_ws(sc);
        const json_t *child = json_array_get(arr, i);
        if (child == NULL || add(sc, arr, NULL, i, here(sc), here(sc)) != 0) {
            sc->failed = 1;
            return;
        }
        walk(sc, child);
        if (!more_follow(sc, ']')) {
            return;
        }
    }
}

/* Walk the value starting at s[i] (no white space before it), which is NODE. */
static void walk(scanner *sc, const json_t *node)
{
    if (sc->failed || sc->i >= sc->len) {
        sc->failed = 1;
        return;
    }
    char c = sc->s[sc->i];
    if (c == '{' && json_is_object(node)) {
        walk_object(sc, node);
    } else if (c == '[' && json_is_array(node)) {
        walk_array(sc, node);
    } else if (c == '"' && json_is_string(node)) {
        int escaped = 0;
        skip_string(sc, &escaped);
    } else if (c != '{' && c != '[' && c != '"') {
        /* a number, true, false or null */
        while (sc->i < sc->len && strchr(",]} \t\r\n", sc->s[sc->i]) == NULL) {
            adv(sc);
        }
    } else {
        sc->failed = 1;
    }
}

/* Order entries by container (then by file order, which the walk gave). */
static int by_parent(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->parent != y->parent) {
        return (uintptr_t)x->parent < (uintptr_t)y->parent ? -1 : 1;
    }
    return x->key_pos.line != y->key_pos.line
               ? (x->key_pos.line < y->key_pos.line ? -1 : 1)
               : (x->key_pos.col > y->key_pos.col) - (x->key_pos.col < y->key_pos.col);
}

/* The first entry of container PARENT, or P->n when it has none. */
static size_t first_of(const wr_jsonpos *p, const json_t *parent)
{
    size_t lo = 0, hi = p->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((uintptr_t)p->e[mid].parent < (uintptr_t)parent) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

wr_jsonpos *wr_jsonpos_index(const char *text, size_t len, const json_t *root)
{
    wr_jsonpos *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return NULL;
    }
    scanner sc = {.s = text, .len = len, .line = 1, .col = 1, .p = p};
    skip_ws(&sc);
    p->root = here(&sc);
    walk(&sc, root);
    if (sc.failed) {
        wr_jsonpos_free(p);
        return NULL;
    }
    if (p->n > 1) {
        qsort(p->e, p->n, sizeof(*p->e), by_parent);
    }
    return p;
}

void wr_jsonpos_free(wr_jsonpos *p)
{
    if (p == NULL) {
        return;
    }
    for (size_t i = 0; i < p->n; i++) {
        free(p->e[i].key);
    }
    free(p->e);
    free(p);
}

wr_textpos wr_jsonpos_root(const wr_jsonpos *p)
{
    return p->root;
}

wr_textpos wr_jsonpos_member(const wr_jsonpos *p, const json_t *obj, const char *key, int value)
{
    for (size_t i = first_of(p, obj); i < p->n && p->e[i].parent == obj; i++) {
        const entry *e = &p->e[i];
        if (e->key != NULL && strcmp(e->key, key) == 0) {
            return value ? e->value_pos : e->key_pos;
        }
    }
    return (wr_textpos){0, 0};
}

wr_textpos wr_jsonpos_element(const wr_jsonpos *p, const json_t *arr, size_t i)
{
    size_t first = first_of(p, arr);
    /* an array's elements are its entries, in order */
    if (first + i < p->n && p->e[first + i].parent == arr && p->e[first + i].key == NULL &&
        p->e[first + i].index == i) {
        return p->e[first + i].value_pos;
    }
    return (wr_textpos){0, 0};
}
