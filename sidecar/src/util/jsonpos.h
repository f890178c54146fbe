/*
 * jsonpos: where each member and element of a parsed JSON text starts, so
 * checks made on the jansson tree can report FILE:LINE:COL like the config.
 *
 * jansson gives a position only for syntax errors; once a text parses, its
 * values carry none. wr_jsonpos_index() walks the text and the tree side by
 * side (the text must be the one the tree was parsed from, with
 * JSON_REJECT_DUPLICATES so a key names one member) and records, for every
 * object member, where its key and its value start, and for every array
 * element where it starts. Lookups go by container and key or index (jansson
 * shares true, false and null between trees, so a value alone cannot say
 * where it is).
 *
 * Lines and columns are 1-based; columns count characters (UTF-8 sequences),
 * as jansson's own error positions do. Pure: no I/O.
 */
#ifndef WR_JSONPOS_H
#define WR_JSONPOS_H

#include <jansson.h>
#include <stddef.h>

typedef struct wr_jsonpos wr_jsonpos;

/* A position in the text. */
typedef struct {
    int line;
    int col;
} wr_textpos;

/* Index TEXT (LEN bytes), which ROOT was parsed from. NULL when out of memory
 * or when the text does not match the tree. Free with wr_jsonpos_free(). */
wr_jsonpos *wr_jsonpos_index(const char *text, size_t len, const json_t *root);
void wr_jsonpos_free(wr_jsonpos *p);

/* Where the root value starts. */
wr_textpos wr_jsonpos_root(const wr_jsonpos *p);

/* Where member KEY of object OBJ starts: its key (VALUE = 0) or its value
 * (VALUE = 1). {0, 0} when OBJ has no such member in the index. */
wr_textpos wr_jsonpos_member(const wr_jsonpos *p, const json_t *obj, const char *key, int value);

/* Where element I of array ARR starts; {0, 0} when unknown. */
wr_textpos wr_jsonpos_element(const wr_jsonpos *p, const json_t *arr, size_t i);

#endif
