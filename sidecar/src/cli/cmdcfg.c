/*
 * cmdcfg: the config file and the subscription of a command. See cmdcfg.h.
 */
#include "cmdcfg.h"

#include <stdio.h>
#include <string.h>

wr_config *wr_cmd_load(const char *path, int *problems)
{
    wr_config_errors errs = {0};
    wr_config *cfg = wr_config_load(path, &errs);
    if (cfg == NULL) {
        for (int i = 0; i < errs.count; i++) {
            fprintf(stderr, "%s\n", errs.lines[i]);
        }
        if (errs.dropped > 0) {
            fprintf(stderr, "(%d more errors not shown)\n", errs.dropped);
        }
    }
    if (problems != NULL) {
        *problems = errs.count + errs.dropped;
        if (cfg == NULL && *problems == 0) {
            *problems = 1;
        }
    }
    wr_config_errors_free(&errs);
    return cfg;
}

const wr_subscription *wr_cmd_find_subscription(const wr_config *cfg, const char *name)
{
    for (int i = 0; cfg != NULL && name != NULL && i < cfg->sub_count; i++) {
        if (strcmp(cfg->subs[i].name, name) == 0) {
            return &cfg->subs[i];
        }
    }
    return NULL;
}

const wr_subscription *wr_cmd_subscription(const wr_config *cfg, const char *name, const char *cmd)
{
    const wr_subscription *sub = wr_cmd_find_subscription(cfg, name);
    if (sub != NULL) {
        return sub;
    }
    fprintf(stderr, "%s: no subscription '%s' in %s (have:", cmd, name, cfg->path);
    for (int i = 0; i < cfg->sub_count; i++) {
        fprintf(stderr, " %s", cfg->subs[i].name);
    }
    fprintf(stderr, ")\n");
    return NULL;
}
