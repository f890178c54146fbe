/*
 * envexpand: environment variables in configuration values.
 *
 * In a value, "${VAR}" is the variable's value (an error when it is not
 * set), "${VAR:-default}" the variable or, when it is unset or empty, the
 * default (itself expanded, so defaults nest: at most WR_ENV_MAX_DEPTH
 * levels), and "$$" a literal '$'. Any other '$' stays as it is. A name is
 * letters, digits and '_', not starting with a digit, at most
 * WR_ENV_MAX_NAME bytes.
 *
 * Error messages name the variable but never echo the value or the text
 * around it, which may hold secrets. Reads the environment (getenv), touches
 * nothing else.
 */
#ifndef WR_ENVEXPAND_H
#define WR_ENVEXPAND_H

#define WR_ENV_MAX_VALUE (64 << 10) /* bytes of one expanded value: 64 KiB */
#define WR_ENV_MAX_DEPTH 8          /* ${VAR:-default} nested in a default */
#define WR_ENV_MAX_NAME 128         /* bytes in the name of a ${VAR} */

/*
 * Expand TEXT into a new string in *OUT (malloc'd, the caller's). Returns
 * NULL on success, else a malloc'd message (the caller frees it; *OUT is
 * then NULL), such as "environment variable 'X' is not set (write
 * ${X:-default} to give a default)" or "the value is longer than 64 KiB".
 */
char *wr_env_expand(const char *text, char **out);

#endif
