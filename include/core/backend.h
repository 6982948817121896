/* backend: the one backend operation an endpoint may ask for, how to ask for it, and its result. */
#ifndef PERFCGI_BACKEND_H
#define PERFCGI_BACKEND_H

#include <stddef.h>

enum backend_kind { BACKEND_NONE, BACKEND_REDIS, BACKEND_PG, BACKEND_SLEEP, BACKEND_HTTP };

#define BACKEND_MAX_ARGS 8

/* What an endpoint's step returns: its answer is ready, or the operation it asked for
 * (struct exchange's `op`) must run first. */
enum step { STEP_DONE, STEP_BACKEND };

/* What an endpoint asks a driver to run. Strings are owned by the endpoint. */
struct backend_op {
    enum backend_kind kind;
    /* BACKEND_REDIS: one command as an argument vector */
    int argc;
    const char *argv[BACKEND_MAX_ARGS];
    size_t argvlen[BACKEND_MAX_ARGS];
    /* BACKEND_PG: one parameterised query, results in text format */
    const char *sql;
    int nparams;
    const char *params[BACKEND_MAX_ARGS];
    /* BACKEND_SLEEP: wait this long, then resume (no I/O) */
    int sleep_ms;
    /* BACKEND_HTTP: one GET of this URL */
    const char *url;
};

enum backend_status {
    BACKEND_OK,           /* the operation ran; look at the reply */
    BACKEND_DOWN,         /* the server is unreachable or the connection broke */
    BACKEND_POOL_TIMEOUT, /* no pool connection within pool_timeout */
    BACKEND_DEADLINE,     /* the request's deadline passed while waiting */
    BACKEND_FAILED,       /* the server answered with an error */
};

enum redis_reply_kind { REDIS_NIL, REDIS_STRING, REDIS_STATUS, REDIS_INTEGER, REDIS_ERROR, REDIS_OTHER };

#define BACKEND_MAX_COLS 8

/* What the driver hands back. Pointers stay valid until the endpoint returns. */
struct backend_result {
    enum backend_status status;
    /* redis */
    enum redis_reply_kind redis_kind;
    const char *str; /* STRING, STATUS or ERROR text; http: the body */
    size_t len;
    long long integer;
    /* postgresql: the first row, text values; NULL for SQL NULL */
    int nrows;
    int ncols;
    const char *values[BACKEND_MAX_COLS];
    double pool_wait_ms; /* time spent waiting for a pool connection */
    double db_ms;        /* time of the query round trip */
    /* http: the answer's status (body in str, len) and the round trip */
    int http_status;
    double http_ms;
    char message[160];   /* why, when status != BACKEND_OK */
};

/* The operation builders: each fills op with one operation (the strings must stay valid
 * until its result comes back) and returns STEP_BACKEND, so that an endpoint's step ends
 * with `return backend_pg(&ex->op, ...);`. A new kind of operation is a new builder here
 * and its case in each driver. */
enum step backend_redis(struct backend_op *op, int argc, const char *const *argv);
enum step backend_pg(struct backend_op *op, const char *sql, int nparams, const char *const *params);
enum step backend_sleep(struct backend_op *op, int ms);
enum step backend_http(struct backend_op *op, const char *url);

#endif
