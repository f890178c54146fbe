/*
 * amqp_compat: include rabbitmq-c the way this build needs it. With -std=c11
 * and _POSIX_C_SOURCE, <amqp.h> uses struct timeval before anything declares
 * it, so <sys/time.h> must come first (docs/architecture.md, "rabbitmq-c").
 */
#ifndef WR_AMQP_COMPAT_H
#define WR_AMQP_COMPAT_H
#include <sys/time.h>
#include <amqp.h>
#include <amqp_framing.h>
#endif
