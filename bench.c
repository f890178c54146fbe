#include "lua_rt.h"
#include <stdio.h>
#include <string.h>
#include <time.h>
static amqp_bytes_t B(const char *s){amqp_bytes_t b={strlen(s),(void*)s};return b;}
int main(int argc, char **argv) {
    wr_lua_opts o; memset(&o, 0, sizeof o);
    o.handler_path = argv[1]; o.subscription = "s"; o.queue = "q"; o.timeout_ms = 5000;
    char err[1024];
    wr_lua *L = wr_lua_create(&o, err, sizeof err);
    if (!L) { printf("%s\n", err); return 1; }
    const char *body = "{\"id\":\"o-1\",\"customer\":{\"name\":\"Ada   Lovelace\"},\"items\":[{\"qty\":2,\"price\":3.5},{\"qty\":1,\"price\":10},{\"qty\":4,\"price\":1.25}]}";
    wr_envelope env; memset(&env, 0, sizeof env);
    env.id = B("m-1"); env.type = B("t"); env.body = B(body); env.is_json = 1;
    wr_lua_call call = {.idempotency_key = "k", .attempt = 1};
    wr_lua_result res;
    int n = 200000;
    struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++) { if (wr_lua_handle(L, &env, &call, &res) != WR_OUT_OK) { printf("fail %s\n", res.error); return 1; } }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    printf("%d messages in %.3f s: %.1f us/message\n", n, s, s / n * 1e6);
    return 0;
}
