/*
 * cloudevent: read a CloudEvent (spec 1.0) out of an AMQP message, in either
 * content mode of the CloudEvents AMQP protocol binding, as RabbitMQ users
 * meet it:
 *
 *   binary      the attributes in headers, the data as the body. The binding
 *               names them "cloudEvents:<attribute>"; SDKs that cannot put a
 *               ':' in a name send "cloudEvents_<attribute>", and Spring's
 *               and others' AMQP 0-9-1 mappings "ce-" / "ce_": all four are
 *               read. `datacontenttype` is the AMQP content type. A message
 *               is a binary CloudEvent when it has a prefixed `specversion`.
 *   structured  content type application/cloudevents+json: the body is the
 *               JSON event format, attributes and `data` together.
 *
 * wr_cloudevent_read() returns the attributes as one JSON object (what
 * event.cloudevent shows handlers: id, source, type, specversion, time,
 * subject, dataschema, datacontenttype, and every extension), the type (which
 * selects the contract), the id (the message id when the AMQP message has
 * none) and, in structured mode, the data as JSON text (what the handler and
 * the contract see as the event's body).
 *
 * wr_cloudevent_structured() writes one in structured mode, for
 * ctx.publish(..., {cloudevent = {..., mode = "structured"}}).
 *
 * Pure: no I/O, unit-tested in tests/unit/test_cloudevent.c.
 */
#ifndef WR_CLOUDEVENT_H
#define WR_CLOUDEVENT_H

#include <stddef.h>

#include "envelope.h"

typedef enum { WR_CE_NONE = 0, WR_CE_BINARY, WR_CE_STRUCTURED } wr_ce_mode;

typedef struct {
    wr_ce_mode mode;
    char *attributes; /* JSON object text, malloc'd */
    char *type;       /* malloc'd */
    char *id;         /* malloc'd */
    char *data;       /* structured mode: the data as JSON text (malloc'd), NULL when the
                         event has no JSON data */
    size_t data_len;
} wr_cloudevent;

/*
 * Read ENV as a CloudEvent into CE. Returns 1 when it is one, 0 when it is
 * not (CE->mode WR_CE_NONE), -1 when it claims to be one but is not valid
 * (a structured body that is not a JSON object, a missing or empty id,
 * source, type or specversion, a specversion other than 1.0, data_base64),
 * with the reason in ERR. Free with wr_cloudevent_clear().
 */
int wr_cloudevent_read(const wr_envelope *env, wr_cloudevent *ce, char *err, size_t errcap);
void wr_cloudevent_clear(wr_cloudevent *ce);

/* The attributes of a CloudEvent warren emits (subject may be NULL). */
typedef struct {
    const char *id, *type, *source, *subject, *time, *traceparent;
} wr_ce_attrs;

#define WR_CE_STRUCTURED_TYPE "application/cloudevents+json"

/*
 * The body of a structured-mode CloudEvent (content type
 * WR_CE_STRUCTURED_TYPE): the JSON event format with specversion "1.0", the
 * attributes A, and the data BODY (LEN bytes) of content type CONTENT_TYPE
 * (NULL: JSON): JSON data as "data" (datacontenttype application/json), any
 * other as "data" when it is UTF-8 text without NUL bytes, else as
 * "data_base64" (datacontenttype the content type given). Returns the
 * malloc'd text and *OUT_LEN, or NULL when out of memory.
 */
char *wr_cloudevent_structured(const wr_ce_attrs *a, const char *content_type, const char *body,
                               size_t len, size_t *out_len);

#endif
