/* http_async: the event worker's upstream HTTP client: libcurl's multi-socket interface
 * driven by the libuv loop. */
#ifndef PERFCGI_HTTP_ASYNC_H
#define PERFCGI_HTTP_ASYNC_H

#include <stddef.h>

#include <uv.h>

#include "core/backend.h"

struct http_async;

/* Called once per http_async_run; res->str (the body) is valid only during the call.
 * A call made before http_async_run returns carries no body (only a failure). */
typedef void (*http_async_cb)(void *ctx, const struct backend_result *res);

/* NULL with err when out of memory. libcurl starts on the first GET (if it cannot, that
 * GET fails with BACKEND_DOWN and why). Connections are kept for reuse. */
struct http_async *http_async_new(uv_loop_t *loop, char *err, size_t errlen);
/* Fails the transfers under way with BACKEND_DOWN and closes every connection. */
void http_async_free(struct http_async *a);
/* Starts op's GET, many at once, giving up at deadline_ms (monotonic); op->url must
 * live until cb. */
void http_async_run(struct http_async *a, const struct backend_op *op, double deadline_ms, http_async_cb cb,
                    void *ctx);

#endif
