/* endpoint: what one endpoint file defines, and the helpers every endpoint shares. */
#ifndef PERFCGI_ENDPOINT_H
#define PERFCGI_ENDPOINT_H

#include <stddef.h>

#include "core/backend.h"
#include "core/exchange.h"

/*
 * An endpoint is one file, app/core/endpoints/<name>.c, that defines
 * `const struct endpoint endpoint_<name>`: the Makefile lists those files and
 * core/routes.c routes to each (README: adding an endpoint). It keeps what it needs
 * between steps in a private struct, exchange_state(ex), whose state_size bytes are
 * zeroed before its parse and first step; ENDPOINT_STATE_FITS checks at compile time
 * that the struct fits.
 */
struct endpoint {
    const char *path;
    const char *name;          /* label in logs and metrics */
    const char *cache_control; /* of a successful answer */
    size_t state_size;         /* of its private state (the bytes zeroed); at most EXCHANGE_STATE_MAX */
    /* Reads and checks the parameters into its state; answers 400 itself and returns -1
     * when one is bad. NULL: it takes none. */
    int (*parse)(struct exchange *ex);
    /* Runs up to its next backend operation or to its answer: res is NULL on the first
     * call, then the result of ex->op. */
    enum step (*step)(struct exchange *ex, const struct backend_result *res);
    /* Frees what its state holds (called by exchange_clear); NULL: nothing to free. */
    void (*clear)(struct exchange *ex);
};

#define ENDPOINT_STATE_FITS(type) \
    _Static_assert(sizeof(type) <= EXCHANGE_STATE_MAX, #type " must fit in the exchange's private state")

/* Reads the integer parameter `name` (def when absent) into *out; when it is not an
 * integer in [lo, hi], answers 400 naming it and returns -1. */
int endpoint_param_long(struct exchange *ex, const char *name, long def, long lo, long hi, long *out);

#endif
