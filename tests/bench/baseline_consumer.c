/*
 * wr-baseline-consumer: the fastest honest hand-written rabbitmq-c consumer,
 * the yardstick for warren's throughput benchmark (tests/bench/run.sh).
 *
 * Connect, basic.qos prefetch N, basic.consume with manual acks, and for each
 * delivery do nothing but count it; ack with `multiple` every M deliveries
 * (and once more at the end). Stop after K deliveries, or when nothing
 * arrived for --idle-timeout seconds. Prints one line of JSON:
 *
 *   {"consumer":"baseline","messages":50000,"elapsed_s":3.412,"msgs_per_s":14654.2,...}
 *
 * The clock starts when basic.consume-ok came back and stops when the last
 * ack has been written to the socket (the same two points warren's "consuming"
 * and last "message handled" log lines mark). A passive queue.declare after
 * the clock stops reports how many messages are left ready in the queue.
 *
 * With --latency (tests/bench/orders.sh's latency runs) it acks as soon as
 * nothing more is buffered instead: after each delivery, when rabbitmq-c holds
 * no further frame and no unread byte, one ack with `multiple` covers every
 * delivery since the last ack. Each body carries its publisher's clock
 * ("sent_us": CLOCK_REALTIME in microseconds, anywhere in the body); the time
 * from that stamp to the ack covering the message is recorded, and the JSON
 * line gets "latency_us": {"count","p50","p90","p99","max"} (nearest rank)
 * and "unstamped" (deliveries without a stamp).
 *
 * Exit status: 0 all K consumed; 1 error; 2 usage; 3 idle timeout before K.
 *
 *   wr-baseline-consumer --url amqp://guest:guest@127.0.0.1:5900/ --queue q --count 50000
 *       [--prefetch 100] [--ack-every 50] [--idle-timeout 10] [--latency]
 */
#include <sys/resource.h>
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
    fprintf(stderr, "usage: wr-baseline-consumer --url AMQP_URL --queue QUEUE --count K\n"
                    "                            [--prefetch N (100)] [--ack-every M (50)]\n"
                    "                            [--idle-timeout SECONDS (10)] [--latency]\n");
    exit(2);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CLOCK_REALTIME in microseconds: the clock the publisher stamps bodies with. */
static int64_t realtime_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The body's "sent_us": stamp (digits after the key), or -1 when it has none. */
static int64_t body_stamp(amqp_bytes_t body)
{
    static const char key[] = "\"sent_us\":";
    const size_t klen = sizeof(key) - 1;
    const char *b = body.bytes;
    for (size_t i = 0; i + klen < body.len; i++) {
        if (memcmp(b + i, key, klen) != 0) {
            continue;
        }
        int64_t v = 0;
        size_t j = i + klen, digits = 0;
        while (j < body.len && b[j] >= '0' && b[j] <= '9' && digits < 18) {
            v = v * 10 + (b[j] - '0');
            j++;
            digits++;
        }
        return digits > 0 ? v : -1;
    }
    return -1;
}

/* This process's peak resident set (VmHWM), in KiB, or -1. Not getrusage's
 * ru_maxrss: Linux carries that over exec, from the process that forked us. */
static long vm_hwm_kb(void)
{
    long kb = -1;
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL) {
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmHWM:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Latencies recorded in --latency mode: a growing array. */
typedef struct {
    int64_t *v;
    size_t n, cap;
} samples;

static void samples_push(samples *s, int64_t x)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        int64_t *v = realloc(s->v, cap * sizeof(*v));
        if (v == NULL) {
            fprintf(stderr, "wr-baseline-consumer: out of memory\n");
            exit(1);
        }
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
}

/* Nearest-rank percentile P (0-100] of the sorted samples. */
static int64_t rank(const samples *s, double p)
{
    double r = p / 100.0 * (double)s->n;
    size_t i = (size_t)r;
    if ((double)i < r) {
        i++;
    }
    return s->v[i > 0 ? i - 1 : 0];
}

static long parse_long(const char *name, const char *s, long min, long max)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "wr-baseline-consumer: %s: expected an integer from %ld to %ld, got '%s'\n",
                name, min, max, s);
        exit(2);
    }
    return v;
}

/* Fails with a message unless the RPC reply is normal. */
static void die_on_reply(amqp_rpc_reply_t r, const char *what)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return;
    case AMQP_RESPONSE_NONE:
        fprintf(stderr, "wr-baseline-consumer: %s: missing RPC reply\n", what);
        break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        fprintf(stderr, "wr-baseline-consumer: %s: %s\n", what,
                amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            fprintf(stderr, "wr-baseline-consumer: %s: connection closed by the broker: %d %.*s\n",
                    what, m->reply_code, (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            fprintf(stderr, "wr-baseline-consumer: %s: channel closed by the broker: %d %.*s\n",
                    what, m->reply_code, (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else {
            fprintf(stderr, "wr-baseline-consumer: %s: broker error, method 0x%08x\n", what,
                    (unsigned)r.reply.id);
        }
        break;
    }
    exit(1);
}

static void die_on_status(int status, const char *what)
{
    if (status < 0) {
        fprintf(stderr, "wr-baseline-consumer: %s: %s\n", what, amqp_error_string2(status));
        exit(1);
    }
}

int main(int argc, char **argv)
{
    const char *url = NULL, *queue = NULL;
    long count = -1, prefetch = 100, ack_every = 50, idle_timeout_s = 10;
    int latency = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage();
        }
        if (strcmp(a, "--latency") == 0) {
            latency = 1;
            continue;
        }
        if (i + 1 >= argc) {
            usage();
        }
        const char *v = argv[++i];
        if (strcmp(a, "--url") == 0) {
            url = v;
        } else if (strcmp(a, "--queue") == 0) {
            queue = v;
        } else if (strcmp(a, "--count") == 0) {
            count = parse_long(a, v, 1, 1000000000L);
        } else if (strcmp(a, "--prefetch") == 0) {
            prefetch = parse_long(a, v, 1, 65535);
        } else if (strcmp(a, "--ack-every") == 0) {
            ack_every = parse_long(a, v, 1, 1000000);
        } else if (strcmp(a, "--idle-timeout") == 0) {
            idle_timeout_s = parse_long(a, v, 1, 3600);
        } else {
            usage();
        }
    }
    if (url == NULL || queue == NULL || count < 0) {
        usage();
    }

    /* amqp_parse_url writes into its argument. */
    char *url_buf = strdup(url);
    if (url_buf == NULL) {
        fprintf(stderr, "wr-baseline-consumer: out of memory\n");
        return 1;
    }
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    if (amqp_parse_url(url_buf, &ci) != AMQP_STATUS_OK || ci.ssl) {
        fprintf(stderr,
                "wr-baseline-consumer: --url: expected amqp://user:password@host:port/vhost\n");
        return 2;
    }
    const char *vhost = (ci.vhost == NULL || ci.vhost[0] == '\0') ? "/" : ci.vhost;

    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(conn);
    if (conn == NULL || sock == NULL) {
        fprintf(stderr, "wr-baseline-consumer: out of memory\n");
        return 1;
    }
    struct timeval connect_tv = {.tv_sec = 5, .tv_usec = 0};
    die_on_status(amqp_socket_open_noblock(sock, ci.host, ci.port, &connect_tv), "connect");
    die_on_reply(amqp_login(conn, vhost, 0, AMQP_DEFAULT_FRAME_SIZE, 0, AMQP_SASL_METHOD_PLAIN,
                            ci.user, ci.password),
                 "login");
    amqp_channel_open(conn, 1);
    die_on_reply(amqp_get_rpc_reply(conn), "channel.open");
    amqp_basic_qos(conn, 1, 0, (uint16_t)prefetch, 0);
    die_on_reply(amqp_get_rpc_reply(conn), "basic.qos");
    amqp_basic_consume(conn, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0 /* no_local */,
                       0 /* no_ack: manual acks */, 0 /* exclusive */, amqp_empty_table);
    die_on_reply(amqp_get_rpc_reply(conn), "basic.consume");

    double t0 = now_s();
    double t_first = 0, t_last = 0, t_end = 0;
    long got = 0;
    long unacked = 0;
    uint64_t last_tag = 0;
    int idle = 0;
    /* --latency: the stamps of the deliveries not acked yet, and the results */
    int64_t *pending = calloc((size_t)prefetch + 1, sizeof(*pending));
    size_t npending = 0;
    long unstamped = 0;
    samples lat = {0};
    if (pending == NULL) {
        fprintf(stderr, "wr-baseline-consumer: out of memory\n");
        return 1;
    }
    struct timeval idle_tv = {.tv_sec = idle_timeout_s, .tv_usec = 0};

    while (got < count) {
        amqp_envelope_t env;
        amqp_maybe_release_buffers(conn);
        amqp_rpc_reply_t r = amqp_consume_message(conn, &env, &idle_tv, 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            if (got == 0) {
                t_first = now_s();
            }
            got++;
            t_last = now_s(); /* where the clock stops if we end idle (vDSO: ~20 ns) */
            last_tag = env.delivery_tag;
            if (latency) {
                int64_t st = body_stamp(env.message.body);
                unstamped += st < 0;
                if (npending < (size_t)prefetch) {
                    pending[npending++] = st;
                }
            }
            amqp_destroy_envelope(&env);
            unacked++;
            if (latency) {
                /* ack what we hold as soon as nothing more is buffered */
                if (!amqp_frames_enqueued(conn) && !amqp_data_in_buffer(conn)) {
                    die_on_status(amqp_basic_ack(conn, 1, last_tag, 1), "basic.ack");
                    int64_t t = realtime_us();
                    for (size_t i = 0; i < npending; i++) {
                        if (pending[i] >= 0) {
                            samples_push(&lat, t - pending[i]);
                        }
                    }
                    npending = 0;
                    unacked = 0;
                }
                continue;
            }
            if (unacked >= ack_every) {
                die_on_status(amqp_basic_ack(conn, 1, last_tag, 1), "basic.ack");
                unacked = 0;
            }
            continue;
        }
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_TIMEOUT) {
            idle = 1;
            break;
        }
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            /* A frame that is not a delivery: fatal for a benchmark, but say which. */
            amqp_frame_t f;
            die_on_status(amqp_simple_wait_frame(conn, &f), "reading a non-delivery frame");
            if (f.frame_type == AMQP_FRAME_METHOD) {
                switch (f.payload.method.id) {
                case AMQP_BASIC_ACK_METHOD:
                case AMQP_CHANNEL_FLOW_METHOD:
                    continue;
                case AMQP_BASIC_CANCEL_METHOD:
                    fprintf(stderr, "wr-baseline-consumer: consumer cancelled by the broker\n");
                    return 1;
                case AMQP_CHANNEL_CLOSE_METHOD:
                case AMQP_CONNECTION_CLOSE_METHOD:
                    fprintf(stderr, "wr-baseline-consumer: closed by the broker (method 0x%08x)\n",
                            (unsigned)f.payload.method.id);
                    return 1;
                default:
                    continue;
                }
            }
            continue;
        }
        die_on_reply(r, "consume");
    }
    if (unacked > 0) {
        die_on_status(amqp_basic_ack(conn, 1, last_tag, 1), "basic.ack");
        int64_t t = realtime_us();
        for (size_t i = 0; i < npending; i++) {
            if (pending[i] >= 0) {
                samples_push(&lat, t - pending[i]);
            }
        }
        npending = 0;
    }
    t_end = idle ? (got > 0 ? t_last : t0) : now_s();

    /* Not timed: a round trip on the channel (after our acks, in order) that
     * also says how many messages are left ready. */
    long left = -1;
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(conn, 1, amqp_cstring_bytes(queue),
                                                     1 /* passive */, 0, 0, 0, amqp_empty_table);
    if (ok != NULL) {
        left = (long)ok->message_count;
    }
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    free(url_buf);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                   (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    double elapsed = t_end - t0;
    if (elapsed <= 0) {
        elapsed = 1e-9;
    }
    printf("{\"consumer\":\"baseline\",\"queue\":\"%s\",\"messages\":%ld,\"requested\":%ld,"
           "\"elapsed_s\":%.3f,\"msgs_per_s\":%.1f,\"first_delivery_after_s\":%.3f,"
           "\"prefetch\":%ld,\"ack_every\":%ld,\"left_in_queue\":%ld,\"idle_timeout\":%s,"
           "\"cpu_s\":%.3f,\"vm_hwm_kb\":%ld",
           queue, got, count, elapsed, (double)got / elapsed, got > 0 ? t_first - t0 : 0.0,
           prefetch, ack_every, left, idle ? "true" : "false", cpu_s, vm_hwm_kb());
    if (latency && lat.n > 0) {
        qsort(lat.v, lat.n, sizeof(*lat.v), cmp_i64);
        printf(",\"unstamped\":%ld,\"latency_us\":{\"count\":%zu,\"p50\":%lld,\"p90\":%lld,"
               "\"p99\":%lld,\"max\":%lld}",
               unstamped, lat.n, (long long)rank(&lat, 50), (long long)rank(&lat, 90),
               (long long)rank(&lat, 99), (long long)lat.v[lat.n - 1]);
    } else if (latency) {
        printf(",\"unstamped\":%ld,\"latency_us\":null", unstamped);
    }
    printf("}\n");
    free(lat.v);
    free(pending);
    fflush(stdout);
    return got < count ? 3 : 0;
}
