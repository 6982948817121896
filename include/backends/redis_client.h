/* redis_client: a blocking Redis connection that reconnects by itself (blocking I/O under redis_conn's rules). */
#ifndef PERFCGI_REDIS_CLIENT_H
#define PERFCGI_REDIS_CLIENT_H

#include <stddef.h>

#include "core/backend.h"
#include "backends/redis_conn.h"
#include "base/redis_url.h"

struct redis_client;

/* Does not connect: the first command does. NULL with err on a bad URL. */
struct redis_client *redis_client_new(const char *url, char *err, size_t errlen);
void redis_client_free(struct redis_client *c);
/* Runs one command; res points into a reply kept until the next call. */
void redis_client_run(struct redis_client *c, const struct backend_op *op, struct backend_result *res);

/* PING on a connection of its own: 0 when Redis answers. */
int redis_client_ping(const char *url, int timeout_ms, char *err, size_t errlen);

#endif
