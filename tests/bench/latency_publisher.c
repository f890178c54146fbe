/*
 * wr-bench-publisher: the open-loop publisher of the orders benchmark's
 * latency runs (tests/bench/orders.sh --latency RATE).
 *
 * Message i is due at start + i / RATE, whatever the consumer does: the
 * publisher sleeps until that moment (CLOCK_MONOTONIC, absolute), publishes
 * every message that is due, and never waits for the broker (no publisher
 * confirms). Each body is stamped at the moment it is handed to the socket:
 * "sent_us" (CLOCK_REALTIME, microseconds) is put in front of the stored JSON,
 * so the consumers and the observer measure from the real send time. Written
 * in C so that the publisher's own CPU and stalls stay small next to what is
 * measured; its lag behind the schedule is reported.
 *
 * Input (--messages FILE): one message per line, "<message_id>\t<json>", the
 * JSON object as published without the stamp. Each message is published
 * persistent, content type application/json, type order.created, to QUEUE
 * through the default exchange.
 *
 * Output: --sent FILE gets "<message_id> <sent_us>" per message; stdout one
 * line of JSON: {"published":N,"seconds":S,"rate":R,"lag_p99_ms":..,"lag_max_ms":..}
 * (lag: how late each publish was against its due time, nearest rank).
 *
 * Exit status: 0 all published; 1 error; 2 usage.
 *
 *   wr-bench-publisher --url amqp://guest:guest@127.0.0.1:5900/ --queue q --rate 1000
 *       --messages msgs.tsv --sent sent.txt
 */
#include <sys/time.h> /* before amqp.h under -std=c11 */

#include <amqp.h>
#include <amqp_tcp_socket.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(void)
{
    fprintf(stderr, "usage: wr-bench-publisher --url AMQP_URL --queue QUEUE --rate MSGS_PER_S\n"
                    "                          --messages FILE --sent FILE\n");
    exit(2);
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "wr-bench-publisher: %s: %s\n", what, why);
    exit(1);
}

static int64_t clock_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* One message from the input file: its id and the JSON after the opening brace. */
typedef struct {
    char *id;
    char *rest;
    size_t rest_len;
} message;

/* Reads the whole input file; returns the number of messages (dies on error). */
static size_t read_messages(const char *path, message **out)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        die(path, strerror(errno));
    }
    size_t n = 0, cap = 0;
    message *m = NULL;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, f)) > 0) {
        if (line[len - 1] == '\n') {
            line[--len] = '\0';
        }
        char *tab = strchr(line, '\t');
        if (tab == NULL || tab[1] != '{') {
            die(path, "expected <message_id>\\t<json object> on every line");
        }
        *tab = '\0';
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            m = realloc(m, cap * sizeof(*m));
            if (m == NULL) {
                die("read", "out of memory");
            }
        }
        m[n].id = strdup(line);
        m[n].rest = strdup(tab + 2); /* after the '{' */
        if (m[n].id == NULL || m[n].rest == NULL) {
            die("read", "out of memory");
        }
        m[n].rest_len = strlen(m[n].rest);
        n++;
    }
    free(line);
    fclose(f);
    *out = m;
    return n;
}

int main(int argc, char **argv)
{
    const char *url = NULL, *queue = NULL, *in_path = NULL, *sent_path = NULL;
    double rate = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--url") == 0) {
            url = argv[i + 1];
        } else if (strcmp(argv[i], "--queue") == 0) {
            queue = argv[i + 1];
        } else if (strcmp(argv[i], "--rate") == 0) {
            rate = strtod(argv[i + 1], NULL);
        } else if (strcmp(argv[i], "--messages") == 0) {
            in_path = argv[i + 1];
        } else if (strcmp(argv[i], "--sent") == 0) {
            sent_path = argv[i + 1];
        } else {
            usage();
        }
    }
    if (argc % 2 == 0 || !url || !queue || !in_path || !sent_path || rate <= 0 || rate > 1e6) {
        usage();
    }

    message *msgs = NULL;
    size_t n = read_messages(in_path, &msgs);
    int64_t *sent_us = calloc(n + 1, sizeof(*sent_us));
    int64_t *lag_ns = calloc(n + 1, sizeof(*lag_ns));
    char *body = malloc(65536);
    if (sent_us == NULL || lag_ns == NULL || body == NULL) {
        die("start", "out of memory");
    }

    char *url_buf = strdup(url); /* amqp_parse_url writes into its argument */
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    if (url_buf == NULL || amqp_parse_url(url_buf, &ci) != AMQP_STATUS_OK || ci.ssl) {
        die("--url", "expected amqp://user:password@host:port/vhost");
    }
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(conn);
    if (sock == NULL) {
        die("connect", "out of memory");
    }
    struct timeval tv = {.tv_sec = 5, .tv_usec = 0};
    int st = amqp_socket_open_noblock(sock, ci.host, ci.port, &tv);
    if (st != AMQP_STATUS_OK) {
        die("connect", amqp_error_string2(st));
    }
    const char *vhost = (ci.vhost == NULL || ci.vhost[0] == '\0') ? "/" : ci.vhost;
    amqp_rpc_reply_t r = amqp_login(conn, vhost, 0, AMQP_DEFAULT_FRAME_SIZE, 0,
                                    AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        die("login", "refused or failed");
    }
    amqp_channel_open(conn, 1);
    if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) {
        die("channel.open", "failed");
    }

    amqp_basic_properties_t props;
    memset(&props, 0, sizeof(props));
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                   AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = 2; /* persistent */
    props.type = amqp_cstring_bytes("order.created");
    amqp_bytes_t rkey = amqp_cstring_bytes(queue);

    const double period_ns = 1e9 / rate;
    const int64_t start = clock_ns(CLOCK_MONOTONIC) + 20000000; /* 20 ms from now */
    for (size_t i = 0; i < n; i++) {
        int64_t due = start + (int64_t)((double)i * period_ns);
        struct timespec ts = {.tv_sec = due / 1000000000, .tv_nsec = due % 1000000000};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
        }
        int64_t us = clock_ns(CLOCK_REALTIME) / 1000;
        int len = snprintf(body, 65536, "{\"sent_us\":%lld,", (long long)us);
        if (len < 0 || (size_t)len + msgs[i].rest_len >= 65536) {
            die("publish", "message too long");
        }
        memcpy(body + len, msgs[i].rest, msgs[i].rest_len);
        props.message_id = amqp_cstring_bytes(msgs[i].id);
        amqp_bytes_t b = {.len = (size_t)len + msgs[i].rest_len, .bytes = body};
        st = amqp_basic_publish(conn, 1, amqp_empty_bytes, rkey, 0, 0, &props, b);
        if (st != AMQP_STATUS_OK) {
            die("basic.publish", amqp_error_string2(st));
        }
        sent_us[i] = us;
        lag_ns[i] = clock_ns(CLOCK_MONOTONIC) - due;
    }
    double seconds = (double)(clock_ns(CLOCK_MONOTONIC) - start) / 1e9;
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);

    FILE *f = fopen(sent_path, "w");
    if (f == NULL) {
        die(sent_path, strerror(errno));
    }
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "%s %lld\n", msgs[i].id, (long long)sent_us[i]);
    }
    if (fclose(f) != 0) {
        die(sent_path, strerror(errno));
    }

    qsort(lag_ns, n, sizeof(*lag_ns), cmp_i64);
    size_t k99 = n > 0 ? (size_t)((99 * n + 99) / 100) : 1; /* nearest rank: ceil(0.99 n) */
    printf("{\"published\":%zu,\"seconds\":%.3f,\"rate\":%.1f,\"lag_p99_ms\":%.3f,"
           "\"lag_max_ms\":%.3f}\n",
           n, seconds, seconds > 0 ? (double)n / seconds : 0.0,
           n > 0 ? (double)lag_ns[k99 - 1] / 1e6 : 0.0, n > 0 ? (double)lag_ns[n - 1] / 1e6 : 0.0);
    for (size_t i = 0; i < n; i++) {
        free(msgs[i].id);
        free(msgs[i].rest);
    }
    free(msgs);
    free(sent_us);
    free(lag_ns);
    free(body);
    free(url_buf);
    return 0;
}
