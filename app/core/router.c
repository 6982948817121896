/* router: which endpoint serves a path. */
#include "core/router.h"

#include <string.h>

#include "core/endpoints.h"

#define NO_STORE "no-store"

const struct route router_table[] = {
    {"/", "hello", endpoint_none_parse, endpoint_hello, "public, max-age=1"},
    {"/cpu-intensive", "cpu_intensive", endpoint_cpu_parse, endpoint_cpu, NO_STORE},
    {"/io-intensive", "io_intensive", endpoint_io_parse, endpoint_io, NO_STORE},
    {"/mixed", "mixed", endpoint_mixed_parse, endpoint_mixed, NO_STORE},
    {"/cached-data", "cached_data", endpoint_cached_parse, endpoint_cached, "public, max-age=5"},
    {"/expensive-computation", "expensive_computation", endpoint_fib_parse, endpoint_fib,
     "public, max-age=3600"},
    {"/memory-test", "memory_test", endpoint_memory_parse, endpoint_memory, NO_STORE},
    {NULL, NULL, NULL, NULL, NULL},
};

const struct route *router_find(const char *path)
{
    for (const struct route *r = router_table; r->path; r++)
        if (strcmp(r->path, path) == 0) return r;
    return NULL;
}
