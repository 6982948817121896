/* backend: the builders of the operations an endpoint asks its driver to run. */
#include "core/backend.h"

#include <string.h>

enum step backend_redis(struct backend_op *op, int argc, const char *const *argv)
{
    memset(op, 0, sizeof *op);
    op->kind = BACKEND_REDIS;
    op->argc = argc;
    for (int i = 0; i < argc; i++) {
        op->argv[i] = argv[i];
        op->argvlen[i] = strlen(argv[i]);
    }
    return STEP_BACKEND;
}

enum step backend_pg(struct backend_op *op, const char *sql, int nparams, const char *const *params)
{
    memset(op, 0, sizeof *op);
    op->kind = BACKEND_PG;
    op->sql = sql;
    op->nparams = nparams;
    for (int i = 0; i < nparams; i++) op->params[i] = params[i];
    return STEP_BACKEND;
}

enum step backend_sleep(struct backend_op *op, int ms)
{
    memset(op, 0, sizeof *op);
    op->kind = BACKEND_SLEEP;
    op->sleep_ms = ms;
    return STEP_BACKEND;
}

enum step backend_http(struct backend_op *op, const char *url)
{
    memset(op, 0, sizeof *op);
    op->kind = BACKEND_HTTP;
    op->url = url;
    return STEP_BACKEND;
}
