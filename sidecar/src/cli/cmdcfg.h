/*
 * cmdcfg: what every `warren` command does first with its -c FILE: load the
 * configuration, saying each problem on stderr (FILE:LINE:COL: message, and
 * how many more were not shown), and find the subscription the command names,
 * saying which there are when it is not one of them.
 */
#ifndef WR_CMDCFG_H
#define WR_CMDCFG_H

#include "config.h"

/* Load PATH. NULL after its problems were printed; *PROBLEMS (when not NULL)
 * says how many there were (at least 1 when NULL is returned). */
wr_config *wr_cmd_load(const char *path, int *problems);

/* The subscription NAME of CFG, or NULL (nothing said). */
const wr_subscription *wr_cmd_find_subscription(const wr_config *cfg, const char *name);

/* The subscription NAME of CFG, or NULL after "CMD: no subscription 'NAME' in
 * FILE (have: a b c)" on stderr. */
const wr_subscription *wr_cmd_subscription(const wr_config *cfg, const char *name, const char *cmd);

#endif
