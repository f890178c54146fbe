/*
 * app: the commands of the `warren` binary, each returning the process exit
 * status (0 ok, 1 failure, 2 usage). main.c only parses arguments.
 *
 *   run    load the config, compile every handler, start the workers, and
 *          serve until SIGTERM/SIGINT; then drain within shutdown.grace.
 *   check  load the config and compile every handler, and lint each for reads
 *          and writes of undeclared globals (lint.h); print every problem
 *          as FILE:LINE:COL: message.
 */
#ifndef WR_APP_H
#define WR_APP_H

/* What check does with the undeclared globals it finds: fail (the default),
 * warn (listed, exit 0), or not look. */
typedef enum { WR_LINT_ERROR = 0, WR_LINT_WARN, WR_LINT_OFF } wr_lint_mode;

int wr_app_run(const char *config_path);
int wr_app_check(const char *config_path, wr_lint_mode lint);

#endif
