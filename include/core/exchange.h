/* exchange: one request and its response as the endpoints see them, free of any I/O. */
#ifndef PERFCGI_EXCHANGE_H
#define PERFCGI_EXCHANGE_H

#include <jansson.h>
#include <stddef.h>

#include "core/backend.h"
#include "base/settings.h"

/* What the driver read from the FastCGI parameters. */
struct request {
    const char *method;       /* REQUEST_METHOD */
    const char *path;         /* DOCUMENT_URI, or REQUEST_URI without its query */
    const char *query;        /* QUERY_STRING, "" when absent */
    long long content_length; /* CONTENT_LENGTH, 0 when absent */
    const char *remote_addr;  /* REMOTE_ADDR, for the access log */
    const char *request_uri;  /* REQUEST_URI (as the client sent it), or NULL: for the access log */
    const char *request_id;   /* REQUEST_ID (Nginx's $request_id), or NULL: for the access log */
    double request_start;     /* REQUEST_START (Nginx's $msec: seconds since the epoch), 0 when absent */
    const char *too_large;    /* the driver dropped params over its limits: why (answered 413), or NULL */
};

struct response {
    int status;
    char *body; /* one JSON object, malloc'd */
    size_t body_len;
    const char *cache_control;
    const char *x_cache; /* HIT, MISS, BYPASS or NULL */
    int retry_after;     /* seconds; 0 sends no header */
    int allow;           /* send Allow: GET, HEAD */
};

struct endpoint;

/* Room for the private state of the exchange's endpoint (its struct endpoint's
 * state_size): kept in the exchange, so that no request allocates it. */
#define EXCHANGE_STATE_MAX 1024

/* One request in flight: the driver owns the storage and runs `op` between steps.
 * It holds what every exchange has; what one endpoint keeps lives in `state`. */
struct exchange {
    struct request req;
    const struct settings *cfg;
    const struct endpoint *route; /* NULL until routed, and when no endpoint serves the path */
    int head_only;
    double started_ms;
    double deadline_ms;  /* backend waits end here with 504 */
    double pool_wait_ms; /* waited for pool connections, summed over its operations (/metrics) */
    struct backend_op op;
    struct response resp;
    union {
        max_align_t align;
        unsigned char bytes[EXCHANGE_STATE_MAX];
    } state; /* its endpoint's state_size bytes zeroed once routed */
};

/* Begins an exchange; the strings of req must outlive it. */
void exchange_start(struct exchange *ex, const struct request *req, const struct settings *cfg);
/* Runs the endpoint up to its next backend operation or to its answer;
 * res is NULL on the first call, then the result of ex->op. */
enum step exchange_step(struct exchange *ex, const struct backend_result *res);
/* Releases what the exchange holds (its endpoint's clear first), ready for exchange_start again. */
void exchange_clear(struct exchange *ex);
/* Writes the CGI response headers (Status, Content-Type, ...) of a finished
 * exchange into buf; returns their length, or 0 if buf is too small. */
size_t exchange_head(const struct exchange *ex, char *buf, size_t buflen);

/* For the endpoints (app/core/answer.c). */

/* The endpoint's private state: EXCHANGE_STATE_MAX bytes, aligned for any type. */
static inline void *exchange_state(struct exchange *ex)
{
    return ex->state.bytes;
}
/* Answers 200 with obj (its reference taken) plus elapsed_ms and worker, and the
 * route's Cache-Control. */
enum step exchange_reply(struct exchange *ex, json_t *obj);
/* The same answer for a body known in advance: members is the start of its JSON
 * object, without the closing brace ("{\"message\":\"...\""), the bytes
 * exchange_reply would write for that object; no JSON is built. */
enum step exchange_reply_members(struct exchange *ex, const char *members);
/* elapsed_ms (milliseconds) as every answer writes it, rounded to the microsecond,
 * into out; returns its length. */
#define EXCHANGE_ELAPSED_TEXT 32
size_t exchange_elapsed_text(double ms, char out[EXCHANGE_ELAPSED_TEXT]);
enum step exchange_error(struct exchange *ex, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
enum step exchange_bad_param(struct exchange *ex, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
enum step exchange_backend_error(struct exchange *ex, const struct backend_result *res,
                                 const char *backend);

#endif
