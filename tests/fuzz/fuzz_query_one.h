/* fuzz_query_one: one fuzz input through the query parser, shared by the fuzzer and the corpus replay. */
#ifndef PERFCGI_FUZZ_QUERY_ONE_H
#define PERFCGI_FUZZ_QUERY_ONE_H

#include <stddef.h>
#include <stdint.h>

/*
 * data is "NAME\nQUERY" (no newline: the name is "n" and all of data is the
 * query). Runs query_get, query_parse_long and query_get_long on it and checks
 * what their contracts promise. Returns 0, or -1 with the broken property in err.
 */
int fuzz_query_one(const uint8_t *data, size_t size, char *err, size_t errlen);

#endif
