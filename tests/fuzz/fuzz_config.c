/*
 * fuzz_config: any text as warren.yaml, through the whole loader (libyaml,
 * ${} expansion from the environment, the schema walk, merging, handler path
 * resolution).
 *
 * The config "lives" in a private directory that holds a handler h.lua, so
 * loads can succeed; a few environment variables exist for ${} to find.
 * libFuzzer's -timeout catches inputs that make the loader slow (nesting,
 * aliases), ASan and UBSan what they always catch. Checked here: a config
 * that loads has at least one subscription and no errors; one that does not
 * has at least one error; every error line starts with the file's name, is
 * one line and stays short (messages quote at most a few bytes of any value, or of a key),
 * and none carries the value of WR_FUZZ_SECRET (which only ${} can bring in,
 * unless the input holds it literally) except a URL's, shown masked: only its
 * userinfo is a secret, the fuzzer may put this one in a vhost.
 */
#define _GNU_SOURCE /* memmem */

#include "config.h"

#include <unistd.h>

#include "fuzz.h"

static char cfg_dir[64];
static char cfg_path[256];

/* Remove the private directory and its handler when the fuzzer exits. */
static void cleanup(void)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/h.lua", cfg_dir);
    unlink(path);
    rmdir(cfg_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char path[300];
    (void)argc;
    (void)argv;
    snprintf(cfg_dir, sizeof(cfg_dir), "/tmp/wr-fuzz-config-XXXXXX");
    if (mkdtemp(cfg_dir) == NULL) {
        perror("mkdtemp");
        exit(2);
    }
    atexit(cleanup);
    const char *dir = cfg_dir;
    snprintf(path, sizeof(path), "%s/h.lua", dir);
    FILE *fp = fopen(path, "w");
    if (fp == NULL) {
        perror(path);
        exit(2);
    }
    fputs("return { handle = function() end }\n", fp);
    fclose(fp);
    snprintf(cfg_path, sizeof(cfg_path), "%s/warren.yaml", dir);
    setenv("WR_FUZZ_URL", "amqp://guest:guest@127.0.0.1:5672/", 1);
    setenv("WR_FUZZ_NUM", "5", 1);
    setenv("WR_FUZZ_EMPTY", "", 1);
    setenv("WR_FUZZ_SECRET", "fz-S3cr3t-fz", 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wr_config_errors errs;
    wr_config *cfg = wr_config_parse(cfg_path, (const char *)data, size, &errs);
    size_t plen = strlen(cfg_path);
    static const char secret[] = "fz-S3cr3t-fz";
    int literal = memmem(data, size, secret, sizeof(secret) - 1) != NULL;

    if (cfg != NULL) {
        FZ_ASSERT(errs.count == 0 && errs.dropped == 0);
        FZ_ASSERT(cfg->sub_count >= 1 && cfg->subs != NULL);
        wr_config_free(cfg);
    } else {
        FZ_ASSERT(errs.count + errs.dropped >= 1);
    }
    FZ_ASSERT(errs.count <= WR_CONFIG_MAX_ERRORS);
    for (int i = 0; i < errs.count; i++) {
        const char *line = errs.lines[i];
        FZ_ASSERT(strncmp(line, cfg_path, plen) == 0 && line[plen] == ':');
        FZ_ASSERT(strlen(line) < 2048 && strchr(line, '\n') == NULL);
        FZ_ASSERT(literal || strstr(line, secret) == NULL || strstr(line, " URL '") != NULL);
    }
    wr_config_errors_free(&errs);
    return 0;
}
