/* http_client: the blocking drivers' upstream HTTP client: libcurl's easy interface. */
#ifndef PERFCGI_HTTP_CLIENT_H
#define PERFCGI_HTTP_CLIENT_H

#include <stddef.h>

#include "core/backend.h"

struct http_client;

/* One per thread (a handle is never shared): it keeps its connection for the next
 * request. NULL with err when libcurl cannot start. */
struct http_client *http_client_new(char *err, size_t errlen);
void http_client_free(struct http_client *c);

/* Runs op's GET, giving up at deadline_ms (monotonic). res->str (the body) stays
 * valid until the next run. */
void http_client_run(struct http_client *c, const struct backend_op *op, double deadline_ms,
                     struct backend_result *res);

#endif
