/* http_common: the rules of an upstream HTTP GET both drivers share: the options, the body
 * cap, and how an outcome becomes a backend_result. The drivers only move the bytes. */
#ifndef PERFCGI_HTTP_COMMON_H
#define PERFCGI_HTTP_COMMON_H

#include <stddef.h>

#include <curl/curl.h>

#include "core/backend.h"

/* A longer answer is a fault of the upstream (BACKEND_DOWN), not something to buffer. */
#define HTTP_BODY_MAX (1024 * 1024)

/* What one transfer collects: the body (NUL-terminated) and curl's error text. */
struct http_reply {
    char *data;
    size_t len, cap;
    int over_cap;
    double started_ms;
    char error[CURL_ERROR_SIZE];
};

/* curl_global_init, once per process (any thread may call it first); 0, or -1 and why. */
int http_common_init(char *err, size_t errlen);

/* Sets h up for op's GET, ending at deadline_ms (monotonic), its body into reply.
 * 0, or -1 with res failed (the deadline has passed, or curl refused an option). */
int http_common_prepare(CURL *h, const struct backend_op *op, double deadline_ms, struct http_reply *reply,
                        struct backend_result *res);

/* The outcome of h's transfer as a result; res->str points into reply. */
void http_common_result(CURL *h, CURLcode rc, const struct http_reply *reply, struct backend_result *res);

void http_reply_free(struct http_reply *reply);

#endif
