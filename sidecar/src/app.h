/*
 * app: the commands of the `warren` binary, each returning the process exit
 * status (0 ok, 1 failure, 2 usage). main.c only parses arguments.
 *
 *   run    load the config, compile every handler, start the workers, and
 *          serve until SIGTERM/SIGINT; then drain within shutdown.grace.
 *   check  load the config and compile every handler; print every problem
 *          as FILE:LINE:COL: message.
 */
#ifndef WR_APP_H
#define WR_APP_H

int wr_app_run(const char *config_path);
int wr_app_check(const char *config_path);

#endif
