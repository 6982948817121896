/* router: which endpoint serves a path. */
#ifndef PERFCGI_ROUTER_H
#define PERFCGI_ROUTER_H

#include "core/exchange.h"

struct route {
    const char *path;
    const char *name; /* label for logs and metrics */
    /* Reads and checks the parameters into ex->p; answers 400 itself and
     * returns -1 when one is bad. */
    int (*parse)(struct exchange *ex);
    enum step (*step)(struct exchange *ex, const struct backend_result *res);
    const char *cache_control; /* of a successful answer */
};

const struct route *router_find(const char *path);
/* The table itself, for metrics; ends with a NULL path. */
extern const struct route router_table[];

#endif
