/*
 * fuzz_url: any text as an AMQP URL, a Redis URL, something to mask, an
 * http.listen address and a duration.
 *
 * Checked beyond memory safety: a URL that parses has a host and a port from
 * 1 to 65535, and when its userinfo has a password (text between ':' and
 * the last '@'), the redacted form has "***" right before that '@', so the
 * password is gone; wr_url_mask() never lengthens a string by more than the
 * three bytes of "***" and keeps everything from the last '@' on.
 */
#include "config.h"

#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

/* The redacted form hides the password: "***" ends right before the last '@'. */
static void check_redacted(const char *text, const char *scheme_end, const char *redacted)
{
    const char *at = strrchr(scheme_end, '@');
    const char *colon = at != NULL ? memchr(scheme_end, ':', (size_t)(at - scheme_end)) : NULL;
    if (colon == NULL) {
        return;
    }
    const char *rat = strrchr(redacted, '@');
    FZ_ASSERT(rat != NULL && rat - redacted >= 3 && memcmp(rat - 3, "***", 3) == 0);
    FZ_ASSERT(strcmp(rat, at) == 0);
    (void)text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    const char *why;
    memcpy(text, data, size);
    text[size] = '\0';

    wr_amqp_url a;
    if (wr_amqp_url_parse(text, &a, &why) == 0) {
        FZ_ASSERT(a.host != NULL && a.host[0] != '\0');
        FZ_ASSERT(a.port >= 1 && a.port <= 65535);
        FZ_ASSERT(a.vhost != NULL && a.user != NULL && a.password != NULL);
        check_redacted(text, strstr(text, "://") + 3, a.redacted);
        wr_amqp_url_clear(&a);
    } else {
        FZ_ASSERT(why != NULL && a.url == NULL && a.password == NULL);
    }

    wr_redis_url r;
    if (wr_redis_url_parse(text, &r, &why) == 0) {
        FZ_ASSERT(r.host != NULL && r.host[0] != '\0');
        FZ_ASSERT(r.port >= 1 && r.port <= 65535 && r.db >= 0);
        check_redacted(text, text + 8, r.redacted);
        wr_redis_url_clear(&r);
    } else {
        FZ_ASSERT(why != NULL && r.url == NULL && r.password == NULL);
    }

    char *masked = wr_url_mask(text);
    FZ_ASSERT(masked != NULL);
    FZ_ASSERT(strlen(masked) <= strlen(text) + 3);
    const char *at = strrchr(text, '@');
    if (at != NULL) {
        FZ_ASSERT(strrchr(masked, '@') != NULL && strcmp(strrchr(masked, '@'), at) == 0);
    }
    free(masked);

    char host[64];
    int port;
    int rc = wr_listen_parse(text, host, sizeof(host), &port, &why);
    if (rc == 0) {
        FZ_ASSERT(port >= 0 && port <= 65535 && strlen(host) >= 7);
    }

    int64_t ms;
    if (wr_config_parse_duration(text, &ms) == 0) {
        FZ_ASSERT(ms >= 0);
    }
    free(text);
    return 0;
}
