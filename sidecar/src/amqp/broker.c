/*
 * broker: an AMQP connection with one channel, used by one worker thread.
 * See broker.h for the model; this file maps rabbitmq-c's two error
 * vocabularies (amqp_status_enum and amqp_rpc_reply_t) onto ours.
 */
#include "broker.h"

#include <amqp_tcp_socket.h>
#include <amqp_ssl_socket.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define CH 1

/* What a publish of the current batch was: to match a basic.return to it. */
typedef struct {
    amqp_bytes_t exchange;
    amqp_bytes_t routing_key;
    amqp_bytes_t message_id;
} pub_ref;

struct wr_broker {
    amqp_connection_state_t conn;
    int open; /* login done: close politely on destroy */
    int down; /* unusable: the worker must rebuild */
    int consuming;
    int blocked;
    atomic_int *blocked_mirror; /* NULL, or where the blocked state is published */
    char name[128];             /* the connection name, for logs */
    char consumer_tag[WR_BROKER_MAX_CONSUMERS][64]; /* one per consumed queue */
    int consumers;
    char later[WR_BROKER_MAX_CONSUMERS][256]; /* queues to consume at later_ms (copies:
                                                  a worker may plan anew meanwhile) */
    int nlater;
    double later_ms;
    char err[512];

    /* inbox: deliveries read by the pump and not yet taken, FIFO */
    amqp_envelope_t **inbox;
    size_t inbox_head, inbox_len, inbox_cap;

    /* publisher confirms */
    uint64_t next_seq; /* sequence number of our next publish on the channel */
    wr_confirm batch;
    pub_ref *refs;
    size_t refs_cap;
};

static int fail(wr_broker *b, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Record an error, mark the connection down when RC says so, and return RC. */
static int fail(wr_broker *b, int rc, const char *fmt, ...)
{
    char msg[sizeof(b->err)]; /* the arguments may include b->err itself */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    memcpy(b->err, msg, sizeof(msg));
    if (rc == WR_BROKER_DOWN || rc == WR_BROKER_CONFLICT) {
        b->down = 1;
    }
    return rc;
}

/*
 * Turn the reply of the last RPC into our vocabulary. A server exception
 * (channel.close or connection.close) is answered with its close-ok, so the
 * broker sees a clean shutdown of that channel; either way we rebuild.
 * Precondition failures (406) on declarations become WR_BROKER_CONFLICT.
 */
static int check_reply(wr_broker *b, amqp_rpc_reply_t r, const char *what)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return WR_BROKER_OK;
    case AMQP_RESPONSE_NONE:
        return fail(b, WR_BROKER_DOWN, "%s: no reply from the broker", what);
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        return fail(b, WR_BROKER_DOWN, "%s: %s", what, amqp_error_string2(r.library_error));
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        break;
    }
    if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_t *m = r.reply.decoded;
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(b->conn, CH, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        int rc = m->reply_code == 406 ? WR_BROKER_CONFLICT : WR_BROKER_DOWN;
        return fail(b, rc, "%s: channel closed by the broker: %u %.*s", what, m->reply_code,
                    (int)m->reply_text.len, (char *)m->reply_text.bytes);
    }
    if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_connection_close_t *m = r.reply.decoded;
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(b->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        b->open = 0;
        return fail(b, WR_BROKER_DOWN, "%s: connection closed by the broker: %u %.*s", what,
                    m->reply_code, (int)m->reply_text.len, (char *)m->reply_text.bytes);
    }
    return fail(b, WR_BROKER_DOWN, "%s: unexpected server reply 0x%08x", what, r.reply.id);
}

static int check_status(wr_broker *b, int status, const char *what)
{
    if (status == AMQP_STATUS_OK) {
        return WR_BROKER_OK;
    }
    return fail(b, WR_BROKER_DOWN, "%s: %s", what, amqp_error_string2(status));
}

static amqp_table_entry_t bool_entry(const char *key, int val)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_BOOLEAN;
    e.value.value.boolean = val;
    return e;
}

/* ---- TLS ------------------------------------------------------------------------ */

/*
 * What the certificate check saw, for a message that says which check failed
 * and why: rabbitmq-c reports only "peer cert verification failed" or
 * "hostname verification failed". Reached from OpenSSL's verify callback
 * through the SSL_CTX's app data while wr_broker_open_socket() runs.
 */
typedef struct {
    int failed;        /* the chain did not verify: error, depth, subject */
    int error;         /* X509_V_ERR_* */
    int depth;         /* 0: the broker's own certificate */
    char subject[160]; /* of the certificate that failed */
    char names[200];   /* the broker's certificate: its DNS and IP names, or its CN */
} tls_diag;

/* The names a certificate is valid for (subjectAltName DNS and IP, else CN) into OUT. */
static void cert_names(X509 *cert, char *out, size_t cap)
{
    size_t used = 0;
    GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);

    out[0] = '\0';
    for (int i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans) && used < cap; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        char ip[64] = "";
        const char *name = NULL;
        if (g->type == GEN_DNS) {
            name = (const char *)ASN1_STRING_get0_data(g->d.dNSName);
        } else if (g->type == GEN_IPADD && ASN1_STRING_length(g->d.iPAddress) == 4) {
            const unsigned char *a = ASN1_STRING_get0_data(g->d.iPAddress);
            snprintf(ip, sizeof(ip), "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
            name = ip;
        } else if (g->type == GEN_IPADD) {
            name = "(an IPv6 address)";
        }
        if (name != NULL) {
            used += (size_t)snprintf(out + used, cap - used, "%s'%s'", used ? ", " : "", name);
        }
    }
    GENERAL_NAMES_free(sans);
    if (out[0] == '\0') {
        char cn[128];
        if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn)) >
            0) {
            snprintf(out, cap, "'%s' (its common name)", cn);
        } else {
            snprintf(out, cap, "no name at all");
        }
    }
}

/* OpenSSL's verify callback: remember the first failure and the broker's names; the
 * verdict itself is rabbitmq-c's (it checks the result after the handshake). */
static int tls_verify_cb(int ok, X509_STORE_CTX *store)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    tls_diag *d = ssl != NULL ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
    X509 *cert = X509_STORE_CTX_get_current_cert(store);
    int depth = X509_STORE_CTX_get_error_depth(store);

    if (d == NULL || cert == NULL) {
        return ok;
    }
    if (depth == 0 && d->names[0] == '\0') {
        cert_names(cert, d->names, sizeof(d->names));
    }
    if (!ok && !d->failed) {
        d->failed = 1;
        d->error = X509_STORE_CTX_get_error(store);
        d->depth = depth;
        X509_NAME_oneline(X509_get_subject_name(cert), d->subject, sizeof(d->subject));
    }
    return ok;
}

/* A client key must never prompt for a passphrase on the terminal: refuse instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

/* OpenSSL's last error on this thread as ": text" into OUT ("" when none); clears the queue. */
void wr_broker_tls_reason(char *out, size_t cap)
{
    unsigned long e = ERR_peek_last_error();
    out[0] = '\0';
    if (e != 0) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof(buf));
        const char *r = ERR_reason_error_string(e);
        snprintf(out, cap, ": %s", r != NULL ? r : buf);
    }
    ERR_clear_error();
}

/*
 * Set up SOCK (a new SSL socket) from URL->tls: the CA to trust (else the
 * system's), the client certificate and key, peer and host name checks on,
 * and DIAG to collect what the check sees. Returns 0, or -1 with ERR.
 */
static int tls_setup(amqp_socket_t *sock, const wr_amqp_url *url, tls_diag *diag, char *err,
                     size_t errcap)
{
    const wr_amqp_tls *tls = url->tls;
    SSL_CTX *ctx = amqp_ssl_socket_get_context(sock);
    char why[300];

    ERR_clear_error();
    amqp_ssl_socket_set_verify_peer(sock, 1);
    amqp_ssl_socket_set_verify_hostname(sock, 1);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, tls_verify_cb);
    SSL_CTX_set_app_data(ctx, diag);
    if (tls != NULL && tls->ca != NULL) {
        if (amqp_ssl_socket_set_cacert(sock, tls->ca) != AMQP_STATUS_OK) {
            wr_broker_tls_reason(why, sizeof(why));
            snprintf(err, errcap, "TLS: cannot load the CA certificates of amqp.tls.ca '%s'%s",
                     tls->ca, why);
            return -1;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        wr_broker_tls_reason(why, sizeof(why));
        snprintf(err, errcap, "TLS: cannot load the system's CA certificates%s", why);
        return -1;
    }
    if (tls != NULL && tls->cert != NULL && tls->key != NULL &&
        amqp_ssl_socket_set_key(sock, tls->cert, tls->key) != AMQP_STATUS_OK) {
        wr_broker_tls_reason(why, sizeof(why));
        snprintf(err, errcap,
                 "TLS: cannot load the client certificate '%s' with key '%s'%s (PEM files; "
                 "an encrypted key is not supported)",
                 tls->cert, tls->key, why);
        return -1;
    }
    return 0;
}

/* Why opening URL's TLS connection failed with STATUS, from DIAG, into ERR. */
static void tls_failure(const wr_amqp_url *url, int status, const tls_diag *diag, char *err,
                        size_t errcap)
{
    char why[300];
    wr_broker_tls_reason(why, sizeof(why));
    switch (status) {
    case AMQP_STATUS_SSL_PEER_VERIFY_FAILED:
        if (diag->failed) {
            snprintf(err, errcap,
                     "TLS: the broker %s:%d is not trusted: %s (certificate %s, depth %d); "
                     "amqp.tls.ca names the CA to trust",
                     url->host, url->port, X509_verify_cert_error_string(diag->error),
                     diag->subject, diag->depth);
        } else {
            snprintf(err, errcap, "TLS: the broker %s:%d sent no usable certificate", url->host,
                     url->port);
        }
        return;
    case AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED:
        snprintf(err, errcap,
                 "TLS: the broker's certificate does not name host '%s' (it names %s); use a "
                 "name from its certificate in amqp.url",
                 url->host, diag->names[0] ? diag->names : "nothing");
        return;
    case AMQP_STATUS_SSL_CONNECTION_FAILED:
        snprintf(err, errcap, "TLS handshake with %s:%d failed%s", url->host, url->port,
                 why[0] ? why : " (is it a TLS port? does the broker want a client certificate?)");
        return;
    default:
        snprintf(err, errcap, "cannot connect to %s:%d: %s%s", url->host, url->port,
                 amqp_error_string2(status), why);
        return;
    }
}

int wr_broker_open_socket(amqp_connection_state_t conn, const wr_amqp_url *url, int64_t timeout_ms,
                          char *err, size_t errcap)
{
    amqp_socket_t *sock = url->ssl ? amqp_ssl_socket_new(conn) : amqp_tcp_socket_new(conn);
    tls_diag diag;

    memset(&diag, 0, sizeof(diag));
    if (sock == NULL) {
        snprintf(err, errcap, "cannot create a socket");
        return -1;
    }
    if (url->ssl && tls_setup(sock, url, &diag, err, errcap) != 0) {
        SSL_CTX_set_app_data((SSL_CTX *)amqp_ssl_socket_get_context(sock), NULL);
        return -1;
    }
    struct timeval tv = {.tv_sec = (time_t)(timeout_ms / 1000),
                         .tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000};
    int status = amqp_socket_open_noblock(sock, url->host, url->port, &tv);
    if (url->ssl) {
        SSL_CTX_set_app_data((SSL_CTX *)amqp_ssl_socket_get_context(sock), NULL);
    }
    if (status != AMQP_STATUS_OK) {
        if (url->ssl) {
            tls_failure(url, status, &diag, err, errcap);
        } else {
            snprintf(err, errcap, "cannot connect to %s:%d: %s", url->host, url->port,
                     amqp_error_string2(status));
        }
        return -1;
    }
    return 0;
}

/* Why a login failed, as check_reply says it (without a wr_broker to close). */
static void login_reason(amqp_rpc_reply_t r, char *out, size_t cap)
{
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        snprintf(out, cap, "login: %s", amqp_error_string2(r.library_error));
    } else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
               r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_connection_close_t *m = r.reply.decoded;
        snprintf(out, cap, "login: connection closed by the broker: %u %.*s", m->reply_code,
                 (int)m->reply_text.len, (char *)m->reply_text.bytes);
    } else if (r.reply_type == AMQP_RESPONSE_NONE) {
        snprintf(out, cap, "login: no reply from the broker");
    } else {
        snprintf(out, cap, "login: unexpected server reply 0x%08x", r.reply.id);
    }
}

int wr_broker_connect(amqp_connection_state_t conn, const wr_amqp_url *url, int heartbeat_s,
                      int64_t timeout_ms, const char *name, char *err, size_t errcap)
{
    if (wr_broker_open_socket(conn, url, timeout_ms, err, errcap) != 0) {
        return -1;
    }
    struct timeval tv = {.tv_sec = (time_t)(timeout_ms / 1000),
                         .tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000};
    amqp_set_handshake_timeout(conn, &tv);

    amqp_table_entry_t caps[] = {
        bool_entry("consumer_cancel_notify", 1),
        bool_entry("connection.blocked", 1),
        bool_entry("basic.nack", 1),
        bool_entry("publisher_confirms", 1),
    };
    amqp_table_entry_t props[3];
    props[0].key = amqp_cstring_bytes("capabilities");
    props[0].value.kind = AMQP_FIELD_KIND_TABLE;
    props[0].value.value.table.num_entries = (int)(sizeof(caps) / sizeof(caps[0]));
    props[0].value.value.table.entries = caps;
    props[1].key = amqp_cstring_bytes("connection_name");
    props[1].value.kind = AMQP_FIELD_KIND_UTF8;
    props[1].value.value.bytes = amqp_cstring_bytes(name);
    props[2].key = amqp_cstring_bytes("product");
    props[2].value.kind = AMQP_FIELD_KIND_UTF8;
    props[2].value.value.bytes = amqp_cstring_bytes("warren " WARREN_VERSION);
    amqp_table_t table = {.num_entries = 3, .entries = props};

    amqp_rpc_reply_t r =
        amqp_login_with_properties(conn, url->vhost, 0, AMQP_DEFAULT_FRAME_SIZE, heartbeat_s,
                                   &table, AMQP_SASL_METHOD_PLAIN, url->user, url->password);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        return 0;
    }
    char why[512], tls_why[300] = "";
    login_reason(r, why, sizeof(why));
    if (url->ssl && r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        /* With TLS 1.3 the broker judges our certificate after the handshake:
         * its alert ("unknown ca", "certificate required") surfaces here, unless
         * the connection was reset before we read it. */
        wr_broker_tls_reason(tls_why, sizeof(tls_why));
        if (tls_why[0] == '\0') {
            snprintf(tls_why, sizeof(tls_why),
                     " (the broker closed the TLS connection: does it refuse our "
                     "client certificate, or want one?)");
        }
    }
    snprintf(err, errcap, "%s%s (broker %s:%d, vhost '%s', user '%s')", why, tls_why, url->host,
             url->port, url->vhost, url->user);
    return -1;
}

wr_broker *wr_broker_create(const wr_amqp_url *url, int heartbeat_s, int64_t connect_timeout_ms,
                            const char *name, char *err, size_t errcap)
{
    wr_broker *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    snprintf(b->name, sizeof(b->name), "%s", name);
    wr_confirm_init(&b->batch);
    b->next_seq = 1;
    b->conn = amqp_new_connection();
    if (b->conn == NULL) {
        snprintf(err, errcap, "out of memory");
        goto fail;
    }
    if (wr_broker_connect(b->conn, url, heartbeat_s, connect_timeout_ms, name, err, errcap) != 0) {
        snprintf(b->err, sizeof(b->err), "%s", err);
        goto fail;
    }
    b->open = 1;
    amqp_channel_open(b->conn, CH);
    if (check_reply(b, amqp_get_rpc_reply(b->conn), "channel.open") != WR_BROKER_OK) {
        snprintf(err, errcap, "%s", b->err);
        goto fail;
    }
    amqp_confirm_select(b->conn, CH);
    if (check_reply(b, amqp_get_rpc_reply(b->conn), "confirm.select") != WR_BROKER_OK) {
        snprintf(err, errcap, "%s", b->err);
        goto fail;
    }
    return b;

fail:
    wr_broker_destroy(b);
    return NULL;
}

void wr_broker_release(amqp_envelope_t *e)
{
    if (e != NULL) {
        amqp_destroy_envelope(e);
        free(e);
    }
}

static void set_blocked(wr_broker *b, int blocked)
{
    b->blocked = blocked;
    if (b->blocked_mirror != NULL) {
        atomic_store(b->blocked_mirror, blocked);
    }
}

void wr_broker_mirror_blocked(wr_broker *b, atomic_int *flag)
{
    b->blocked_mirror = flag;
    atomic_store(flag, b->blocked);
}

void wr_broker_destroy(wr_broker *b)
{
    if (b == NULL) {
        return;
    }
    set_blocked(b, 0);
    if (b->conn != NULL) {
        if (b->open && !b->down) {
            /* Best effort: a bounded wait, the broker requeues our unacked either way. */
            struct timeval tv = {.tv_sec = 2, .tv_usec = 0};
            amqp_set_rpc_timeout(b->conn, &tv);
            amqp_channel_close(b->conn, CH, AMQP_REPLY_SUCCESS);
            amqp_connection_close(b->conn, AMQP_REPLY_SUCCESS);
        }
        amqp_destroy_connection(b->conn);
    }
    for (size_t i = b->inbox_head; i < b->inbox_len; i++) {
        wr_broker_release(b->inbox[i]);
    }
    free(b->inbox);
    free(b->refs);
    wr_confirm_free(&b->batch);
    free(b);
}

const char *wr_broker_error(const wr_broker *b)
{
    return b->err;
}

#define PROBE_CH 2 /* throwaway channel: a passive declare of a missing queue closes it */

/*
 * Whether QUEUE exists already, whatever its type and arguments: a passive
 * queue.declare on a channel of its own, since a missing queue closes the
 * channel that asked (404) and CH must survive. Returns 1 it exists, 0 it
 * does not, or WR_BROKER_DOWN.
 */
static int queue_exists(wr_broker *b, const char *queue)
{
    amqp_channel_open(b->conn, PROBE_CH);
    int rc = check_reply(b, amqp_get_rpc_reply(b->conn), "channel.open");
    if (rc != WR_BROKER_OK) {
        return rc;
    }
    amqp_queue_declare(b->conn, PROBE_CH, amqp_cstring_bytes(queue), 1, 0, 0, 0, amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(b->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        rc = check_reply(b, amqp_channel_close(b->conn, PROBE_CH, AMQP_REPLY_SUCCESS),
                         "channel.close");
        return rc == WR_BROKER_OK ? 1 : rc;
    }
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_t *m = r.reply.decoded;
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(b->conn, PROBE_CH, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        if (m->reply_code == 404) {
            return 0;
        }
        return fail(b, WR_BROKER_DOWN, "queue.declare passive of '%s': %u %.*s", queue,
                    m->reply_code, (int)m->reply_text.len, (char *)m->reply_text.bytes);
    }
    return check_reply(b, r, "queue.declare passive");
}

int wr_broker_declare(wr_broker *b, const wr_topology *t)
{
    for (int i = 0; i < t->exchange_count; i++) {
        const wr_exchange_decl *x = &t->exchanges[i];
        amqp_table_entry_t xarg;
        amqp_table_t xargs = amqp_empty_table;
        if (x->hash_header != NULL) {
            /* x-consistent-hash: hash this header instead of the routing key */
            xarg.key = amqp_cstring_bytes("hash-header");
            xarg.value.kind = AMQP_FIELD_KIND_UTF8;
            xarg.value.value.bytes = amqp_cstring_bytes(x->hash_header);
            xargs = (amqp_table_t){.num_entries = 1, .entries = &xarg};
        }
        amqp_exchange_declare(b->conn, CH, amqp_cstring_bytes(x->name), amqp_cstring_bytes(x->type),
                              0, 1, 0, 0, xargs);
        int rc = check_reply(b, amqp_get_rpc_reply(b->conn), "exchange.declare");
        if (rc != WR_BROKER_OK) {
            return fail(b, rc, "%s (exchange '%s' of type %s: %s)", b->err, x->name, x->type,
                        x->hash_header != NULL
                            ? "partitions need RabbitMQ's rabbitmq_consistent_hash_exchange "
                              "plugin enabled, and no other exchange of that name"
                            : "if it exists with another type or durability, set declare: "
                              "false on the binding or make them match");
        }
    }
    for (int i = 0; i < t->queue_count; i++) {
        const wr_queue_decl *q = &t->queues[i];
        amqp_table_entry_t args[7];
        int n = 0;
        if (q->single_active) {
            args[n] = bool_entry("x-single-active-consumer", 1);
            n++;
        }
        if (q->quorum) {
            args[n].key = amqp_cstring_bytes("x-queue-type");
            args[n].value.kind = AMQP_FIELD_KIND_UTF8;
            args[n].value.value.bytes = amqp_cstring_bytes("quorum");
            n++;
            if (q->dead_letter_exchange != NULL) {
                /* a quorum queue dead-letters at most once unless told otherwise:
                 * a retry copy must not vanish between the delay queue and its
                 * target */
                args[n].key = amqp_cstring_bytes("x-dead-letter-strategy");
                args[n].value.kind = AMQP_FIELD_KIND_UTF8;
                args[n].value.value.bytes = amqp_cstring_bytes("at-least-once");
                n++;
                args[n].key = amqp_cstring_bytes("x-overflow");
                args[n].value.kind = AMQP_FIELD_KIND_UTF8;
                args[n].value.value.bytes = amqp_cstring_bytes("reject-publish");
                n++;
            }
        }
        if (q->message_ttl_ms >= 0) {
            args[n].key = amqp_cstring_bytes("x-message-ttl");
            args[n].value.kind = AMQP_FIELD_KIND_I64;
            args[n].value.value.i64 = q->message_ttl_ms;
            n++;
        }
        if (q->dead_letter_exchange != NULL) {
            args[n].key = amqp_cstring_bytes("x-dead-letter-exchange");
            args[n].value.kind = AMQP_FIELD_KIND_UTF8;
            args[n].value.value.bytes = amqp_cstring_bytes(q->dead_letter_exchange);
            n++;
        }
        if (q->dead_letter_routing_key != NULL) {
            args[n].key = amqp_cstring_bytes("x-dead-letter-routing-key");
            args[n].value.kind = AMQP_FIELD_KIND_UTF8;
            args[n].value.value.bytes = amqp_cstring_bytes(q->dead_letter_routing_key);
            n++;
        }
        if (strcmp(q->role, "main") == 0) {
            /* the consumed queue is the service's: one that exists is taken as it is
             * (a quorum queue, say, which a plain declaration would conflict with) */
            int rc = queue_exists(b, q->name);
            if (rc < 0) {
                return rc;
            }
            if (rc == 1) {
                continue;
            }
        }
        amqp_table_t table = {.num_entries = n, .entries = args};
        amqp_queue_declare(b->conn, CH, amqp_cstring_bytes(q->name), 0, q->durable, 0, 0, table);
        int rc = check_reply(b, amqp_get_rpc_reply(b->conn), "queue.declare");
        if (rc != WR_BROKER_OK) {
            return fail(b, rc,
                        "%s (%s queue '%s': it exists with other arguments; delete it or "
                        "declare it with the arguments warren expects)",
                        b->err, q->role, q->name);
        }
    }
    for (int i = 0; i < t->binding_count; i++) {
        const wr_binding_decl *d = &t->bindings[i];
        amqp_queue_bind(b->conn, CH, amqp_cstring_bytes(d->queue), amqp_cstring_bytes(d->exchange),
                        amqp_cstring_bytes(d->routing_key), amqp_empty_table);
        int rc = check_reply(b, amqp_get_rpc_reply(b->conn), "queue.bind");
        if (rc != WR_BROKER_OK) {
            return fail(b, rc, "%s (binding queue '%s' to exchange '%s' with key '%s')", b->err,
                        d->queue, d->exchange, d->routing_key);
        }
    }
    return WR_BROKER_OK;
}

int wr_broker_consume(wr_broker *b, const char *queue, int prefetch)
{
    return wr_broker_consume_all(b, &queue, 1, 1, prefetch);
}

/* Start a consumer on each of the N QUEUES. */
static int consume_queues(wr_broker *b, const char *const *queues, int n)
{
    int rc = WR_BROKER_OK;
    for (int i = 0; i < n && b->consumers < WR_BROKER_MAX_CONSUMERS; i++) {
        amqp_basic_consume_ok_t *ok =
            amqp_basic_consume(b->conn, CH, amqp_cstring_bytes(queues[i]), amqp_empty_bytes, 0, 0,
                               0, amqp_empty_table);
        rc = check_reply(b, amqp_get_rpc_reply(b->conn), "basic.consume");
        if (rc != WR_BROKER_OK) {
            return fail(b, rc, "%s (queue '%s')", b->err, queues[i]);
        }
        char *tag = b->consumer_tag[b->consumers++];
        snprintf(tag, sizeof(b->consumer_tag[0]), "%.*s", (int)ok->consumer_tag.len,
                 (char *)ok->consumer_tag.bytes);
        b->consuming = 1;
    }
    return rc;
}

int wr_broker_consume_all(wr_broker *b, const char *const *queues, int n, int now, int prefetch)
{
    amqp_basic_qos(b->conn, CH, 0, (uint16_t)prefetch, 0);
    int rc = check_reply(b, amqp_get_rpc_reply(b->conn), "basic.qos");
    if (rc != WR_BROKER_OK) {
        return rc;
    }
    b->consumers = 0;
    now = now < n ? now : n;
    b->nlater = 0;
    for (int i = now; i < n && b->nlater < WR_BROKER_MAX_CONSUMERS; i++) {
        snprintf(b->later[b->nlater++], sizeof(b->later[0]), "%s", queues[i]);
    }
    b->later_ms = wr_mono_ms() + WR_TOPO_STANDBY_MS;
    return consume_queues(b, queues, now);
}

int wr_broker_cancel(wr_broker *b)
{
    if (!b->consuming || b->down) {
        return b->down ? WR_BROKER_DOWN : WR_BROKER_OK;
    }
    b->consuming = 0;
    b->nlater = 0;
    int rc = WR_BROKER_OK;
    for (int i = 0; i < b->consumers && rc == WR_BROKER_OK; i++) {
        amqp_basic_cancel(b->conn, CH, amqp_cstring_bytes(b->consumer_tag[i]));
        rc = check_reply(b, amqp_get_rpc_reply(b->conn), "basic.cancel");
    }
    b->consumers = 0;
    /* Deliveries the broker sent before cancel-ok arrived before it too: rabbitmq-c
     * kept them aside while it waited for the reply. File them in the inbox now,
     * so the caller's "return everything" covers them; read later, they would be
     * taken for new deliveries after a nack of every tag had already returned
     * them (and their ack would close the channel: unknown delivery tag). */
    while (rc == WR_BROKER_OK && (amqp_frames_enqueued(b->conn) || amqp_data_in_buffer(b->conn))) {
        int prc = wr_broker_poll(b, 0);
        if (prc == WR_BROKER_DOWN) {
            rc = prc;
        } else if (prc == WR_BROKER_TIMEOUT) {
            break;
        }
    }
    return rc;
}

int wr_broker_consuming(const wr_broker *b)
{
    return b->consuming && !b->down;
}

int wr_broker_blocked(const wr_broker *b)
{
    return b->blocked;
}

static int inbox_push(wr_broker *b, amqp_envelope_t *e)
{
    if (b->inbox_head == b->inbox_len) {
        b->inbox_head = b->inbox_len = 0;
    }
    if (b->inbox_len == b->inbox_cap) {
        if (b->inbox_head > 0) {
            memmove(b->inbox, b->inbox + b->inbox_head,
                    (b->inbox_len - b->inbox_head) * sizeof(*b->inbox));
            b->inbox_len -= b->inbox_head;
            b->inbox_head = 0;
        } else {
            size_t cap = b->inbox_cap ? b->inbox_cap * 2 : 128;
            amqp_envelope_t **in = realloc(b->inbox, cap * sizeof(*in));
            if (in == NULL) {
                return -1;
            }
            b->inbox = in;
            b->inbox_cap = cap;
        }
    }
    b->inbox[b->inbox_len++] = e;
    return 0;
}

/* Read the content that follows a basic.deliver into a new envelope in the inbox. */
static int on_deliver(wr_broker *b, const amqp_basic_deliver_t *d)
{
    amqp_envelope_t *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        return fail(b, WR_BROKER_DOWN, "out of memory reading a delivery");
    }
    e->channel = CH;
    e->delivery_tag = d->delivery_tag;
    e->redelivered = d->redelivered;
    e->consumer_tag = amqp_bytes_malloc_dup(d->consumer_tag);
    e->exchange = amqp_bytes_malloc_dup(d->exchange);
    e->routing_key = amqp_bytes_malloc_dup(d->routing_key);
    amqp_rpc_reply_t r = amqp_read_message(b->conn, CH, &e->message, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        /* amqp_read_message frees what it allocated on failure */
        amqp_bytes_free(e->consumer_tag);
        amqp_bytes_free(e->exchange);
        amqp_bytes_free(e->routing_key);
        free(e);
        return check_reply(b, r, "reading a delivery");
    }
    if (inbox_push(b, e) < 0) {
        wr_broker_release(e);
        return fail(b, WR_BROKER_DOWN, "out of memory queueing a delivery");
    }
    return WR_BROKER_OK;
}

static int bytes_eq(amqp_bytes_t a, amqp_bytes_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.bytes, b.bytes, a.len) == 0);
}

/*
 * A mandatory publish came back unroutable. The frame carries no sequence
 * number, so find the first pending publish of the batch with the same
 * exchange, routing key and message id (duplicates of one message in a batch
 * go to the same place, so whichever we pick, the outcome is the same).
 */
static int on_return(wr_broker *b, const amqp_basic_return_t *m)
{
    amqp_message_t msg;
    amqp_rpc_reply_t r = amqp_read_message(b->conn, CH, &msg, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        return check_reply(b, r, "reading a returned message");
    }
    amqp_bytes_t id = (msg.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
                          ? msg.properties.message_id
                          : amqp_empty_bytes;
    for (size_t i = 0; i < b->batch.count; i++) {
        if (wr_confirm_state(&b->batch, i) == WR_PUB_PENDING &&
            bytes_eq(b->refs[i].exchange, m->exchange) &&
            bytes_eq(b->refs[i].routing_key, m->routing_key) &&
            bytes_eq(b->refs[i].message_id, id)) {
            wr_confirm_on_return(&b->batch, i);
            break;
        }
    }
    wr_logline l;
    if (wr_log_enabled(WR_LOG_WARN)) {
        wr_log_begin(&l, WR_LOG_WARN, "publish returned unroutable");
        wr_log_strn(&l, "exchange", m->exchange.bytes, m->exchange.len);
        wr_log_strn(&l, "routing_key", m->routing_key.bytes, m->routing_key.len);
        wr_log_strn(&l, "message_id", id.bytes, id.len);
        wr_log_strn(&l, "reply_text", m->reply_text.bytes, m->reply_text.len);
        wr_log_end(&l);
    }
    amqp_destroy_message(&msg);
    return WR_BROKER_OK;
}

/* Handle one method frame that arrived outside an RPC. */
static int on_method(wr_broker *b, const amqp_frame_t *f)
{
    amqp_method_number_t id = f->payload.method.id;
    void *m = f->payload.method.decoded;
    switch (id) {
    case AMQP_BASIC_DELIVER_METHOD:
        return on_deliver(b, m);
    case AMQP_BASIC_ACK_METHOD: {
        amqp_basic_ack_t *a = m;
        wr_confirm_on_ack(&b->batch, a->delivery_tag, a->multiple, 1);
        return WR_BROKER_OK;
    }
    case AMQP_BASIC_NACK_METHOD: {
        amqp_basic_nack_t *a = m;
        wr_confirm_on_ack(&b->batch, a->delivery_tag, a->multiple, 0);
        return WR_BROKER_OK;
    }
    case AMQP_BASIC_RETURN_METHOD:
        return on_return(b, m);
    case AMQP_BASIC_CANCEL_METHOD: {
        /* the broker cancelled our consumer (queue deleted, node failover) */
        amqp_basic_cancel_t *c = m;
        b->consuming = 0;
        wr_logf(WR_LOG_WARN, "consumer %.*s cancelled by the broker (queue deleted?)",
                (int)c->consumer_tag.len, (char *)c->consumer_tag.bytes);
        if (!c->nowait) {
            amqp_basic_cancel_ok_t ok = {.consumer_tag = c->consumer_tag};
            amqp_send_method(b->conn, CH, AMQP_BASIC_CANCEL_OK_METHOD, &ok);
        }
        return WR_BROKER_OK;
    }
    case AMQP_CONNECTION_BLOCKED_METHOD: {
        amqp_connection_blocked_t *bl = m;
        set_blocked(b, 1);
        wr_logline l;
        wr_log_begin(&l, WR_LOG_WARN, "broker blocked publishing");
        wr_log_str(&l, "connection", b->name);
        wr_log_strn(&l, "reason", bl->reason.bytes, bl->reason.len);
        wr_log_end(&l);
        return WR_BROKER_OK;
    }
    case AMQP_CONNECTION_UNBLOCKED_METHOD: {
        set_blocked(b, 0);
        wr_logline l;
        wr_log_begin(&l, WR_LOG_INFO, "broker unblocked publishing");
        wr_log_str(&l, "connection", b->name);
        wr_log_end(&l);
        return WR_BROKER_OK;
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
        amqp_channel_close_t *c = m;
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(b->conn, CH, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        return fail(b, WR_BROKER_DOWN, "channel closed by the broker: %u %.*s", c->reply_code,
                    (int)c->reply_text.len, (char *)c->reply_text.bytes);
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
        amqp_connection_close_t *c = m;
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(b->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        b->open = 0;
        return fail(b, WR_BROKER_DOWN, "connection closed by the broker: %u %.*s", c->reply_code,
                    (int)c->reply_text.len, (char *)c->reply_text.bytes);
    }
    default:
        return WR_BROKER_OK;
    }
}

int wr_broker_poll(wr_broker *b, int timeout_ms)
{
    if (b->down) {
        return WR_BROKER_DOWN;
    }
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    amqp_frame_t f;
    int status = amqp_simple_wait_frame_noblock(b->conn, &f, &tv);
    if (status == AMQP_STATUS_TIMEOUT) {
        return WR_BROKER_TIMEOUT;
    }
    if (status != AMQP_STATUS_OK) {
        return check_status(b, status, "reading from the broker");
    }
    int rc = WR_BROKER_OK;
    if (f.frame_type == AMQP_FRAME_METHOD) {
        rc = on_method(b, &f);
    }
    amqp_maybe_release_buffers(b->conn);
    return rc;
}

/* Read one frame, waiting at most until DEADLINE (wr_mono_ms()): what
 * wr_broker_poll returns, WR_BROKER_TIMEOUT once the deadline has passed. */
static int poll_until(wr_broker *b, double deadline)
{
    double left = deadline - wr_mono_ms();
    if (left <= 0) {
        return WR_BROKER_TIMEOUT;
    }
    return wr_broker_poll(b, (int)left + 1);
}

int wr_broker_take(wr_broker *b, amqp_envelope_t **out, int max, int timeout_ms, int *n)
{
    if (b->nlater > 0 && b->consuming && !b->down && wr_mono_ms() >= b->later_ms) {
        /* the standby consumers (wr_broker_consume_all) */
        const char *later[WR_BROKER_MAX_CONSUMERS];
        for (int i = 0; i < b->nlater; i++) {
            later[i] = b->later[i];
        }
        int nlater = b->nlater;
        b->nlater = 0;
        if (consume_queues(b, later, nlater) != WR_BROKER_OK) {
            *n = 0;
            return WR_BROKER_DOWN;
        }
    }
    *n = 0;
    double deadline = wr_mono_ms() + timeout_ms;
    /* wait for the first delivery */
    while (b->inbox_head == b->inbox_len) {
        int rc = poll_until(b, deadline);
        if (rc == WR_BROKER_TIMEOUT) {
            return WR_BROKER_OK;
        }
        if (rc != WR_BROKER_OK) {
            return rc;
        }
    }
    /* then everything already buffered, without waiting */
    while ((size_t)max > b->inbox_len - b->inbox_head &&
           (amqp_frames_enqueued(b->conn) || amqp_data_in_buffer(b->conn))) {
        int rc = wr_broker_poll(b, 0);
        if (rc == WR_BROKER_TIMEOUT) {
            break;
        }
        if (rc != WR_BROKER_OK) {
            return rc;
        }
    }
    while (*n < max && b->inbox_head < b->inbox_len) {
        out[(*n)++] = b->inbox[b->inbox_head++];
    }
    return WR_BROKER_OK;
}

uint64_t wr_broker_next_seq(const wr_broker *b)
{
    return b->next_seq;
}

int wr_broker_publish(wr_broker *b, amqp_bytes_t exchange, amqp_bytes_t routing_key, int mandatory,
                      const amqp_basic_properties_t *props, amqp_bytes_t body, uint64_t *seq)
{
    if (b->down) {
        return WR_BROKER_DOWN;
    }
    long i = wr_confirm_add(&b->batch);
    if (i < 0) {
        return fail(b, WR_BROKER_DOWN, "out of memory tracking publishes");
    }
    if ((size_t)i >= b->refs_cap) {
        size_t cap = b->refs_cap ? b->refs_cap * 2 : 64;
        pub_ref *r = realloc(b->refs, cap * sizeof(*r));
        if (r == NULL) {
            return fail(b, WR_BROKER_DOWN, "out of memory tracking publishes");
        }
        b->refs = r;
        b->refs_cap = cap;
    }
    b->refs[i].exchange = exchange;
    b->refs[i].routing_key = routing_key;
    b->refs[i].message_id =
        (props->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) ? props->message_id : amqp_empty_bytes;
    *seq = b->next_seq++;
    int status = amqp_basic_publish(b->conn, CH, exchange, routing_key, mandatory, 0, props, body);
    return check_status(b, status, "basic.publish");
}

/* 1 while a publish before UPTO has no answer yet. */
static int unanswered_before(const wr_broker *b, uint64_t upto)
{
    for (size_t i = 0; i < b->batch.count && b->batch.first_seq + i < upto; i++) {
        if (wr_confirm_state(&b->batch, i) == WR_PUB_PENDING) {
            return 1;
        }
    }
    return 0;
}

int wr_broker_confirm_wait(wr_broker *b, uint64_t upto, int timeout_ms)
{
    double deadline = wr_mono_ms() + timeout_ms;
    while (b->batch.pending > 0 && unanswered_before(b, upto)) {
        int rc = poll_until(b, deadline);
        if (rc == WR_BROKER_TIMEOUT || rc == WR_BROKER_DOWN) {
            return rc;
        }
    }
    return WR_BROKER_OK;
}

wr_pub_state wr_broker_confirm_state(const wr_broker *b, uint64_t seq)
{
    if (seq < b->batch.first_seq) {
        return WR_PUB_NACKED; /* released already: nobody should ask */
    }
    return wr_confirm_state(&b->batch, (size_t)(seq - b->batch.first_seq));
}

void wr_broker_confirm_release(wr_broker *b, uint64_t upto)
{
    if (upto <= b->batch.first_seq) {
        return;
    }
    size_t n = (size_t)(upto - b->batch.first_seq);
    if (n > b->batch.count) {
        n = b->batch.count;
    }
    if (n < b->batch.count) {
        memmove(b->refs, b->refs + n, (b->batch.count - n) * sizeof(*b->refs));
    }
    wr_confirm_trim(&b->batch, n);
}

int wr_broker_ack(wr_broker *b, uint64_t delivery_tag, int multiple)
{
    if (b->down) {
        return WR_BROKER_DOWN;
    }
    return check_status(b, amqp_basic_ack(b->conn, CH, delivery_tag, multiple), "basic.ack");
}

int wr_broker_nack(wr_broker *b, uint64_t delivery_tag, int multiple, int requeue)
{
    if (b->down) {
        return WR_BROKER_DOWN;
    }
    return check_status(b, amqp_basic_nack(b->conn, CH, delivery_tag, multiple, requeue),
                        "basic.nack");
}

int wr_broker_queue_depth(wr_broker *b, const char *queue, uint32_t *messages, uint32_t *consumers)
{
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(b->conn, CH, amqp_cstring_bytes(queue), 1, 0, 0, 0, amqp_empty_table);
    int rc = check_reply(b, amqp_get_rpc_reply(b->conn), "queue.declare passive");
    if (rc != WR_BROKER_OK) {
        return rc;
    }
    *messages = ok->message_count;
    *consumers = ok->consumer_count;
    return WR_BROKER_OK;
}
