/* query: reading parameters out of a URL query string. */
#ifndef PERFCGI_QUERY_H
#define PERFCGI_QUERY_H

#include <stddef.h>

enum query_found { QUERY_ABSENT = 0, QUERY_FOUND = 1, QUERY_INVALID = -1 };

/*
 * Finds the first `name=value` pair of `query` whose percent-decoded name is
 * `name` and writes its decoded value ('+' is a space) into buf. A value that
 * does not fit buf or decodes to a NUL byte is QUERY_INVALID.
 */
enum query_found query_get(const char *query, const char *name, char *buf, size_t buflen);

/* Parses a whole decimal integer with an optional sign; 0 on success, -1 otherwise. */
int query_parse_long(const char *text, long *out);

/*
 * Reads integer parameter `name`: its default when absent, else it must be a
 * decimal integer in [lo, hi]. Returns 0, or -1 when the value is bad.
 */
int query_get_long(const char *query, const char *name, long def, long lo, long hi, long *out);

#endif
