/* endpoints: the seven endpoints as state machines over backend results. */
#ifndef PERFCGI_ENDPOINTS_H
#define PERFCGI_ENDPOINTS_H

#include "core/exchange.h"

enum fib_method { FIB_NAIVE, FIB_MEMO, FIB_FAST };

int endpoint_none_parse(struct exchange *ex);
enum step endpoint_hello(struct exchange *ex, const struct backend_result *res);

int endpoint_cpu_parse(struct exchange *ex);
enum step endpoint_cpu(struct exchange *ex, const struct backend_result *res);

int endpoint_io_parse(struct exchange *ex);
enum step endpoint_io(struct exchange *ex, const struct backend_result *res);

int endpoint_mixed_parse(struct exchange *ex);
enum step endpoint_mixed(struct exchange *ex, const struct backend_result *res);

int endpoint_cached_parse(struct exchange *ex);
enum step endpoint_cached(struct exchange *ex, const struct backend_result *res);

int endpoint_fib_parse(struct exchange *ex);
enum step endpoint_fib(struct exchange *ex, const struct backend_result *res);

int endpoint_memory_parse(struct exchange *ex);
enum step endpoint_memory(struct exchange *ex, const struct backend_result *res);

#endif
