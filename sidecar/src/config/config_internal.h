/*
 * config_internal: what the files of the config module share, and nothing
 * outside sidecar/src/config/ includes. The module's public face is config.h.
 *
 *   config_schema.c  the field tables: every key, its type, default, bounds,
 *                    flags and description, section by section
 *   config_types.c   one ops record per field type (cfg_type_ops): how a
 *                    value of that type is read, described, copied, freed
 *                    and shown in the reference
 *   config_load.c    the walk of the YAML document against the tables, with
 *                    errors collected as FILE:LINE:COL
 *   config_check.c   checks that span fields or elements, run after a
 *                    section is walked (the sections' finish hooks)
 *   config_merge.c   retry, idempotency and breaker merged over the defaults;
 *                    inherited subscription values
 *   config_ref.c     the reference table (`warren config-reference`)
 *   config.c         the public entry points: load, parse, free
 */
#ifndef WR_CONFIG_INTERNAL_H
#define WR_CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <yaml.h>

#include "config.h"

#define PATH_BUF 256           /* dotted key paths such as subscriptions[3].bindings[0].type */
#define MAX_FIELDS 24          /* most keys any one section has */
#define AMQP_SHORTSTR 255      /* AMQP names (queues, exchanges, routing keys) are shortstrs */
#define MAX_BODY (512LL << 20) /* RabbitMQ's own ceiling on a message body */
#define DAY_MS 86400000LL      /* one day in milliseconds */
#define MAX_DELAYS 20          /* most entries in retry.delays */
#define MAX_LIST                                                                                   \
    1000 /* most subscriptions, and most named breakers (their checks                              \
            compare every entry with every other) */

/*
 * Limits on hostile or broken input, each reported as FILE:LINE:COL. A real
 * configuration is a few KiB, nests six levels and holds a few hundred values;
 * these bound the time and memory a file can cost far above that.
 */
#define MAX_FILE (1 << 20)          /* bytes read from the file: 1 MiB */
#define MAX_YAML_DEPTH 32           /* nested YAML collections, the top-level mapping included */
#define MAX_VALUES 100000           /* values the walk visits (an alias counts once per use) */
#define ECHO_MAX 8                  /* values up to this many bytes are quoted in messages */
#define KEY_ECHO_MAX 64             /* keys and names are quoted up to this many bytes */
#define URL_ECHO_MAX 200            /* URLs (masked) are quoted up to this many bytes */
#define GOT_MAX (KEY_ECHO_MAX + 48) /* room for cfg_describe_value's phrase */

typedef enum {
    T_STRING,    /* char *; min/max bound the length in bytes */
    T_PATH,      /* char *; a file relative to the config's directory, made absolute */
    T_INT,       /* int; min/max bound the value */
    T_DURATION,  /* int64_t milliseconds; min/max bound the value */
    T_SIZE,      /* int64_t bytes, written 65536, 512KiB, 4MiB; min/max bound the value */
    T_BOOL,      /* int, 0 or 1 */
    T_ENUM,      /* int: the index of the value in enum_values */
    T_ENUM_STR,  /* char *: one of enum_values, copied */
    T_NUMBER,    /* double; min/max bound the value (whole numbers) */
    T_DURLIST,   /* int64_t * milliseconds (malloc'd) + int count; min/max bound each item,
                    max_count the number of items (at least one) */
    T_KEY,       /* idempotency key: wr_key_source at offset, char * argument at arg_offset */
    T_AMQP_URL,  /* wr_amqp_url */
    T_REDIS_URL, /* wr_redis_url */
    T_STRLIST,   /* char ** (NULL-terminated) + int count; a single string is a list of one */
    T_SECTION,   /* nested mapping whose fields live in the same struct */
    T_LIST,      /* list of mappings: element array + int count; min and max (0: none)
                    bound the length */
    T_NAMED      /* mapping of names to mappings: element array at offset, names (char **)
                    at arg_offset, int count; names are limited like F_IDENT strings;
                    max (0: none) bounds the count */
} field_type;

#define F_REQUIRED 0x1u /* the key must be present */
#define F_LIVE 0x2u     /* a reload applies a change without restarting */
#define F_IDENT 0x4u    /* string limited to [A-Za-z0-9_.-] */
/* F_INHERIT: unset, it is copied from the wr_config field at inherit_offset (the
 * type needs unset and plain_size: int, duration, size). */
#define F_INHERIT 0x8u
#define F_NONE 0x10u /* T_DURATION: "none" is accepted too, stored as 0 */
/* F_MERGE: starts unset (cfg_mark_unset_fields); once the whole file is walked,
 * cfg_merge_policies() fills it from the defaults, else from def. */
#define F_MERGE 0x20u
#define F_GT_MIN 0x40u /* T_NUMBER: min itself is excluded (0 < r <= 1) */
#define F_KEYNAME                                                                                  \
    0x80u /* the value is a mapping key (a breaker's name): quoted in messages up                  \
             to KEY_ECHO_MAX bytes, where other values stop at ECHO_MAX */

typedef struct loader loader;
typedef struct section section;

typedef struct {
    const char *name;
    field_type type;
    size_t offset;                  /* where the value goes in the section's struct */
    size_t count_offset;            /* T_STRLIST, T_LIST, T_DURLIST, T_NAMED: where the count
                                       goes */
    size_t arg_offset;              /* T_KEY: where the key's argument (char *) goes;
                                       T_NAMED: where the names (char **) go */
    const char *def;                /* default as it would be written in YAML; NULL: none */
    const char *def_doc;            /* what the reference shows when def alone would not do */
    int64_t min, max;               /* bounds, see field_type */
    int max_count;                  /* T_DURLIST: most items */
    unsigned flags;                 /* F_* */
    const char *const *enum_values; /* T_ENUM, T_ENUM_STR: NULL-terminated */
    const section *sub;             /* T_SECTION, T_LIST, T_NAMED: the nested fields */
    void *(*locate)(loader *ld);    /* T_SECTION: where its struct lives when not in the
                                       parent's (at offset); then the loader owns it */
    const char *merge_from;         /* T_SECTION, T_NAMED of F_MERGE fields: the section they
                                       are merged over, shown as their default in the
                                       reference */
    size_t inherit_offset;          /* F_INHERIT: the wr_config field holding the default */
    const char *desc;               /* one line for the reference table */
} field;

/*
 * A section is a list of fields plus, for list elements, the element size and
 * a hook run after each element (or the section's mapping) is walked (for
 * checks that span fields or elements, like uniqueness).
 */
struct section {
    const field *fields;
    size_t nfields;
    size_t elem_size; /* T_LIST and T_NAMED elements */
    void (*finish)(loader *ld, void *elems, int index, yaml_node_t *node, const char *path);
};

#define NFIELDS(a) (sizeof(a) / sizeof((a)[0]))

/* Fields are reached by byte offset from the start of their struct. */
#define AT(base, off, type) ((type *)((char *)(base) + (off)))

typedef struct {
    int line, col; /* 1-based; 0 for errors without a position */
    char *text;    /* the full "FILE:LINE:COL: message" */
} error_entry;

struct loader {
    const char *file; /* the path as given, prefix of every message */
    const char *dir;  /* the config's directory, absolute */
    yaml_document_t *doc;
    error_entry errs[WR_CONFIG_MAX_ERRORS];
    int nerr;
    int dropped;
    wr_retry_policy def_retry;     /* defaults.retry: as written, then merged over def */
    wr_idem_policy def_idem;       /* defaults.idempotency, likewise */
    wr_breaker_policy def_breaker; /* defaults.breaker, likewise */
    long values;                   /* values visited by the walk so far (MAX_VALUES) */
    bool exhausted;                /* MAX_VALUES was reached: the walk stops */
};

/* Where a scalar was found and how messages show it. */
typedef struct {
    int line, col;
    const char *path; /* the dotted key */
    const char *got;  /* the value as messages show it (cfg_describe_value) */
} scalar_at;

/*
 * What a field type means (config_types.c has one record per type, found with
 * cfg_ops): the one place that knows how values of the type are read, shown,
 * copied and freed, in the spirit of Redis's standardConfig table. Code that
 * walks fields calls through the record and never switches on f->type. A
 * NULL hook means the type has nothing to do there.
 */
typedef struct {
    /* Read the (expanded) scalar TEXT into the field at BASE; errors at AT. */
    void (*parse)(loader *ld, const field *f, void *base, const char *text, const scalar_at *at);
    /* Types that are not scalars (lists, mappings) read their whole node instead. */
    void (*parse_node)(loader *ld, const field *f, void *base, yaml_node_t *node, const char *path);
    /* What the type accepts, after "expected" in messages: fixed words, or words
     * that depend on the field's bounds or values (then expects_fn). */
    const char *expects;
    void (*expects_fn)(const field *f, char *out, size_t len);
    /* The reference's type column, likewise. */
    const char *ref_type;
    void (*ref_type_fn)(const field *f, char *out, size_t len);
    /* F_MERGE and F_INHERIT: mark the value unset; tell whether it is set. */
    void (*unset)(const field *f, void *base);
    bool (*is_set)(const field *f, const void *base);
    /* F_MERGE: copy the value from SRC to DST (both the structs holding it). */
    void (*copy)(loader *ld, const field *f, void *dst, const void *src, const char *path);
    /* F_MERGE: give the value its built-in default f->def; NULL: parse f->def as text. */
    void (*set_default)(loader *ld, const field *f, void *base, const char *path);
    /* Free what the value holds and reset it (not BASE itself). */
    void (*free)(const field *f, void *base);
    size_t plain_size;    /* int, int64_t or double stored as is: its size (F_INHERIT copies
                             it from the wr_config); 0 for other types */
    bool bare;            /* written bare in YAML: a quoted "6" is refused as a string */
    bool nested;          /* T_SECTION: the fields of f->sub live in the parent's struct (or
                             where f->locate says): defaults, marks and merges go into them */
    const char *ref_rows; /* mappings and lists: the reference lists their keys under
                             this prefix, a format of the key ("%s[]."); NULL: a value */
} cfg_type_ops;

#define NODE_LINE(n) ((int)(n)->start_mark.line + 1)
#define NODE_COL(n) ((int)(n)->start_mark.column + 1)

/* config_schema.c */
extern const section cfg_backoff_section;
extern const section cfg_retry_section;
extern const section cfg_idem_section;
extern const section cfg_breaker_section;
extern const section cfg_subscription_section;
extern const section cfg_top_section;

/* config_types.c */
const cfg_type_ops *cfg_ops(const field *f);
/* "an integer from 1 to 65535", "a duration like ...": what F accepts, for messages. */
void cfg_expected_phrase(const field *f, char *out, size_t len);
/* The reference's type column for F: "integer, 1 to 65535". */
void cfg_reference_type(const field *f, char *out, size_t len);
/* True when F (F_MERGE or F_INHERIT) holds a value in BASE. */
bool cfg_is_set(const field *f, const void *base);
void cfg_url_error(loader *ld, int line, int col, const char *path, const char *kind,
                   const char *text, const char *why);
/* Free what the fields of SEC hold in BASE (not BASE itself). */
void cfg_free_fields(const section *sec, void *base);

/* config_load.c */
void cfg_make_path(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cfg_join_key(char *out, const char *parent, const char *key);
void cfg_add_error(loader *ld, int line, int col, char *text);
void cfg_err_at(loader *ld, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
bool cfg_is_null_scalar(const yaml_node_t *n);
const char *cfg_node_kind(const yaml_node_t *n);
void cfg_describe_value(const field *f, const char *text, char *out, size_t cap);
void cfg_quote_if_short(const char *text, char *out, size_t cap);
void cfg_kind_error(loader *ld, const field *f, yaml_node_t *node, const char *path);
void cfg_expected_error(loader *ld, const field *f, const scalar_at *at);
void cfg_set_scalar(loader *ld, const field *f, void *base, const char *text, int line, int col,
                    const char *path);
bool cfg_spend(loader *ld, yaml_node_t *node, const char *path);
bool cfg_has_nul(const yaml_node_t *node);
char *cfg_expanded_scalar(loader *ld, yaml_node_t *node, const char *path);
void *cfg_section_base(loader *ld, const field *f, void *base);
void cfg_mark_unset_fields(const section *sec, void *base);
void cfg_walk_mapping(loader *ld, const section *sec, void *base, yaml_node_t *node,
                      const char *path);
yaml_node_t *cfg_find_value(loader *ld, yaml_node_t *map, const char *key);
yaml_node_t *cfg_find_mapping(loader *ld, yaml_node_t *map, const char *key);
char *cfg_read_file(const char *path, size_t *len, const char **what);
char *cfg_config_dir(const char *path);
void cfg_offset_position(const char *buf, size_t len, size_t offset, int *line, int *col);
void cfg_yaml_error(loader *ld, yaml_parser_t *parser, const char *buf, size_t len);
bool cfg_check_depth(loader *ld, const char *buf, size_t len);
void cfg_sort_errors(loader *ld);

/* config_check.c */
void cfg_finish_amqp(loader *ld, void *base, int index, yaml_node_t *node, const char *path);
void cfg_finish_redis(loader *ld, void *base, int index, yaml_node_t *node, const char *path);
void cfg_finish_http(loader *ld, void *base, int index, yaml_node_t *node, const char *path);
void cfg_finish_ordering(loader *ld, void *base, int index, yaml_node_t *node, const char *path);
void cfg_finish_gate(loader *ld, void *elems, int index, yaml_node_t *node, const char *path);
void cfg_check_gates(loader *ld, wr_config *cfg, yaml_node_t *root);
void cfg_finish_subscription(loader *ld, void *elems, int index, yaml_node_t *node,
                             const char *path);
void cfg_finish_retry(loader *ld, void *elems, int index, yaml_node_t *node, const char *path);

/* config_merge.c */
void cfg_merge_policies(loader *ld, wr_config *cfg, yaml_node_t *root);
void cfg_inherit_defaults(wr_config *cfg);

#endif
