/* endpoint: the helpers every endpoint shares. */
#include "core/endpoint.h"

#include "base/query.h"

int endpoint_param_long(struct exchange *ex, const char *name, long def, long lo, long hi, long *out)
{
    if (query_get_long(ex->req.query, name, def, lo, hi, out) == 0) return 0;
    exchange_bad_param(ex, name, "%s must be an integer in [%ld, %ld]", name, lo, hi);
    return -1;
}
