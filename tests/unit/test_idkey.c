/*
 * test_idkey: which key identifies a message (idkey.c): the message id, a
 * header (string or integer), a JSON field by dot path, and the body hash
 * when the key is missing and the policy allows it.
 */
#include <string.h>

#include "check.h"
#include "idkey.h"

#include <openssl/evp.h>

static wr_envelope env_of(const char *id, const char *body, amqp_table_t *headers)
{
    wr_envelope e;
    memset(&e, 0, sizeof(e));
    if (id != NULL) {
        e.id = amqp_cstring_bytes(id);
    }
    e.body = amqp_cstring_bytes(body);
    e.headers = headers;
    e.is_json = 1;
    return e;
}

static int derive(wr_key_source src, const char *arg, int hash, const wr_envelope *e, char *out,
                  char *why)
{
    wr_idem_policy p = {
        .enabled = 1, .source = src, .key_arg = (char *)arg, .missing_key_hash = hash};
    return wr_idkey_derive(&p, e, out, WR_IDKEY_MAX + 1, why, 256);
}

/* Ids of published events: <key>:<subscription>:<n>, or a digest when that
 * would not fit in an AMQP message id. */
static void test_event_ids(void)
{
    char id[WR_EVENT_ID_CAP];
    CHECK_INT(wr_idkey_event_id("o-1", 3, "orders", 2, id), strlen("o-1:orders:2"));
    CHECK_STR(id, "o-1:orders:2");
    char key[300];
    memset(key, 'k', 244);
    key[244] = '\0';
    /* 244 + 1 + 6 + 1 + 1 = 253: still plain */
    CHECK_INT(wr_idkey_event_id(key, 244, "orders", 1, id), 253);
    memset(key, 'k', 250);
    key[250] = '\0';
    size_t n = wr_idkey_event_id(key, 250, "orders", 12, id);
    CHECK_INT(n, 7 + 64 + 3);
    CHECK(strncmp(id, "sha256:", 7) == 0);
    CHECK_STR(id + 71, ":12");
    char again[WR_EVENT_ID_CAP];
    wr_idkey_event_id(key, 250, "orders", 12, again);
    CHECK_STR(again, id); /* the same every time */
    wr_idkey_event_id(key, 250, "ledger", 12, again);
    CHECK(strcmp(again, id) != 0); /* another subscription, another id */
    /* the digest of "<key>:orders", computed here independently of the code */
    memset(key, 'k', 250);
    memcpy(key + 250, ":orders", 8);
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(key, 257, md, &mdlen, EVP_sha256(), NULL);
    char hexs[65];
    for (int i = 0; i < 32; i++) {
        snprintf(hexs + 2 * i, 3, "%02x", md[i]);
    }
    CHECK(strncmp(id + 7, hexs, 64) == 0);
}

int main(void)
{
    test_event_ids();
    char key[WR_IDKEY_MAX + 1], why[256];

    wr_envelope e = env_of("m-1", "{}", NULL);
    CHECK_INT(derive(WR_KEY_MESSAGE_ID, NULL, 0, &e, key, why), 0);
    CHECK_STR(key, "m-1");

    e = env_of(NULL, "{}", NULL);
    CHECK_INT(derive(WR_KEY_MESSAGE_ID, NULL, 0, &e, key, why), WR_RS_MISSING_KEY);
    CHECK_STR(why, "the message has no message_id");

    amqp_table_entry_t h[2];
    h[0].key = amqp_cstring_bytes("x-idem");
    h[0].value.kind = AMQP_FIELD_KIND_UTF8;
    h[0].value.value.bytes = amqp_cstring_bytes("order-77");
    h[1].key = amqp_cstring_bytes("x-seq");
    h[1].value.kind = AMQP_FIELD_KIND_I64;
    h[1].value.value.i64 = 4200000000LL;
    amqp_table_t table = {.num_entries = 2, .entries = h};
    e = env_of("m-2", "{}", &table);
    CHECK_INT(derive(WR_KEY_HEADER, "x-idem", 0, &e, key, why), 0);
    CHECK_STR(key, "order-77");
    CHECK_INT(derive(WR_KEY_HEADER, "x-seq", 0, &e, key, why), 0);
    CHECK_STR(key, "4200000000");
    CHECK_INT(derive(WR_KEY_HEADER, "x-other", 0, &e, key, why), WR_RS_MISSING_KEY);
    CHECK_STR(why, "the message has no header 'x-other'");

    e = env_of("m-3", "{\"order\": {\"id\": \"o-9\", \"n\": 12, \"f\": 1.5}, \"e\": \"\"}", NULL);
    CHECK_INT(derive(WR_KEY_JSON, "order.id", 0, &e, key, why), 0);
    CHECK_STR(key, "o-9");
    CHECK_INT(derive(WR_KEY_JSON, "order.n", 0, &e, key, why), 0);
    CHECK_STR(key, "12");
    CHECK_INT(derive(WR_KEY_JSON, "order.missing", 0, &e, key, why), WR_RS_MISSING_KEY);
    CHECK_STR(why, "the body has no JSON field 'order.missing'");
    CHECK_INT(derive(WR_KEY_JSON, "order.f", 0, &e, key, why), WR_RS_MISSING_KEY);
    CHECK_STR(why, "the JSON field 'order.f' is not a string or an integer");
    CHECK_INT(derive(WR_KEY_JSON, "order", 0, &e, key, why), WR_RS_MISSING_KEY);
    CHECK_STR(why, "the JSON field 'order' is not a string or an integer");
    CHECK_INT(derive(WR_KEY_JSON, "e", 0, &e, key, why), WR_RS_MISSING_KEY);
    CHECK_STR(why, "the JSON field 'e' is empty");
    CHECK_INT(derive(WR_KEY_JSON, "order.id.deeper", 0, &e, key, why), WR_RS_MISSING_KEY);

    /* a body of a JSON content type that is not JSON is invalid-json, as the
     * handler's decoding would find it, with or without a body hash */
    e = env_of("m-4", "not json", NULL);
    CHECK_INT(derive(WR_KEY_JSON, "order.id", 0, &e, key, why), WR_RS_INVALID_JSON);
    CHECK_STR(why, "the key is the JSON field 'order.id', but the body is not JSON "
                   "(invalid token near 'not')");
    CHECK_INT(derive(WR_KEY_JSON, "order.id", 1, &e, key, why), WR_RS_INVALID_JSON);
    /* under another content type the body need not be JSON: the key is missing */
    e.is_json = 0;
    CHECK_INT(derive(WR_KEY_JSON, "order.id", 0, &e, key, why), WR_RS_MISSING_KEY);
    CHECK_INT(derive(WR_KEY_JSON, "order.id", 1, &e, key, why), WR_RS_NONE);
    CHECK_STR(key, "sha256:7ccfa1fbf3940e6f0c0375d87c0f9235a50514e14cb427bdfaf5077987b26ccf");
    e = env_of("m-4", "{\"order\": {}}", NULL);
    CHECK_INT(derive(WR_KEY_JSON, "order.id", 0, &e, key, why), WR_RS_MISSING_KEY);
    CHECK_STR(why, "the body has no JSON field 'order.id'");

    /* body-hash: a missing key becomes the SHA-256 of the body */
    e = env_of(NULL, "abc", NULL);
    CHECK_INT(derive(WR_KEY_MESSAGE_ID, NULL, 1, &e, key, why), 0);
    CHECK_STR(key, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    e = env_of("m-5", "{}", NULL);
    CHECK_INT(derive(WR_KEY_JSON, "nope", 1, &e, key, why), 0);
    CHECK_STR(key, "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");

    /* a key longer than WR_IDKEY_MAX is refused, not truncated */
    char longid[WR_IDKEY_MAX + 2];
    memset(longid, 'k', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    e = env_of(longid, "{}", NULL);
    CHECK_INT(derive(WR_KEY_MESSAGE_ID, NULL, 0, &e, key, why), WR_RS_MISSING_KEY);
    CHECK_STR(why, "the message_id is 513 bytes, longer than the 512 allowed for a key");
    return check_report("test_idkey");
}
