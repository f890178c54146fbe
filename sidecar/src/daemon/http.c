/*
 * http: /metrics, /healthz and /readyz over libmicrohttpd. See http.h.
 */
#include "http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "status.h"
#include "statusjson.h"

struct wr_http {
    struct MHD_Daemon *d;
    wr_metrics *m;
    int port;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **state)
{
    wr_http *h = cls;
    (void)version;
    (void)upload;
    (void)upload_size;
    (void)state;
    char *body = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&body, &len);
    if (fp == NULL) {
        return MHD_NO;
    }
    unsigned status = MHD_HTTP_OK;
    const char *type = "text/plain; charset=utf-8";
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (strcmp(url, "/metrics") == 0 && get) {
        type = "text/plain; version=0.0.4; charset=utf-8";
        wr_metrics_render(h->m, fp);
    } else if (strcmp(url, "/healthz") == 0 && get) {
        status = wr_metrics_live(h->m, fp) ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
    } else if (strcmp(url, "/readyz") == 0 && get) {
        status = wr_metrics_ready(h->m, fp) ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
    } else if (strcmp(url, "/status") == 0 && get) {
        type = "application/json";
        json_t *st = wr_status_json(h->m);
        if (st == NULL || json_dumpf(st, fp, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0) {
            status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        }
        json_decref(st);
    } else if (strcmp(url, "/metrics") == 0 || strcmp(url, "/healthz") == 0 ||
               strcmp(url, "/readyz") == 0 || strcmp(url, "/status") == 0) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        fprintf(fp, "only GET\n");
    } else {
        status = MHD_HTTP_NOT_FOUND;
        fprintf(fp, "not found; try /metrics, /healthz, /readyz or /status\n");
    }
    if (fclose(fp) != 0) {
        free(body);
        return MHD_NO;
    }
    return reply(c, status, type, body, len);
}

wr_http *wr_http_start(const char *host, int port, wr_metrics *m, char *err, size_t errcap)
{
    wr_http *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    h->m = m;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        snprintf(err, errcap, "http.listen: '%s' is not an IPv4 address", host);
        free(h);
        return NULL;
    }
    h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, (uint16_t)port, NULL,
                            NULL, answer, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (h->d == NULL) {
        snprintf(err, errcap, "cannot listen on %s:%d (address in use, or not ours?)", host, port);
        free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info != NULL ? info->port : port;
    return h;
}

int wr_http_port(const wr_http *h)
{
    return h->port;
}

void wr_http_stop(wr_http *h)
{
    if (h == NULL) {
        return;
    }
    MHD_stop_daemon(h->d);
    free(h);
}
