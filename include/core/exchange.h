/* exchange: one request and its response as the endpoints see them, free of any I/O. */
#ifndef PERFCGI_EXCHANGE_H
#define PERFCGI_EXCHANGE_H

#include <jansson.h>

#include "core/backend.h"
#include "base/settings.h"

/* What the driver read from the FastCGI parameters. */
struct request {
    const char *method;       /* REQUEST_METHOD */
    const char *path;         /* DOCUMENT_URI, or REQUEST_URI without its query */
    const char *query;        /* QUERY_STRING, "" when absent */
    long long content_length; /* CONTENT_LENGTH, 0 when absent */
    const char *remote_addr;  /* REMOTE_ADDR, for the access log */
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

struct route;

/* Parameters of the endpoints, parsed once before the first step. */
struct params {
    long n, ms, category, mb, hold;
    int method;
};

/* One request in flight: the driver owns the storage and runs `op` between steps. */
struct exchange {
    struct request req;
    const struct settings *cfg;
    const struct route *route;
    int head_only;
    double started_ms;
    double deadline_ms; /* backend waits end here with 504 */
    int state;          /* the endpoint's own step counter */
    struct params p;
    /* endpoint state that outlives a backend step */
    char key[48], lock_key[48], token[48], arg[2][48];
    char *value; /* malloc'd */
    double wait_until_ms, pool_wait_ms, db_ms;
    int poll_ms;
    int bypass, lock_held;
    json_t *reply; /* the answer, kept while a last backend step runs */
    struct backend_op op;
    struct response resp;
};

/* What a step returns: the response is ready, or `op` must run first. */
enum step { STEP_DONE, STEP_BACKEND };

/* Begins an exchange; the strings of req must outlive it. */
void exchange_start(struct exchange *ex, const struct request *req, const struct settings *cfg);
/* Runs the endpoint up to its next backend operation or to its answer;
 * res is NULL on the first call, then the result of ex->op. */
enum step exchange_step(struct exchange *ex, const struct backend_result *res);
/* Releases what the exchange holds, ready for exchange_start again. */
void exchange_clear(struct exchange *ex);
/* Writes the CGI response headers (Status, Content-Type, ...) of a finished
 * exchange into buf; returns their length, or 0 if buf is too small. */
size_t exchange_head(const struct exchange *ex, char *buf, size_t buflen);

/* For the endpoints. */
enum step exchange_reply(struct exchange *ex, json_t *obj);
enum step exchange_error(struct exchange *ex, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
enum step exchange_bad_param(struct exchange *ex, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
enum step exchange_backend_error(struct exchange *ex, const struct backend_result *res,
                                 const char *backend);
enum step exchange_redis(struct exchange *ex, int argc, const char *const *argv);
enum step exchange_pg(struct exchange *ex, const char *sql, int nparams, const char *const *params);
enum step exchange_sleep(struct exchange *ex, int ms);

#endif
