/* fuzz_query_one: one fuzz input through the query parser, shared by the fuzzer and the corpus replay. */
#include "fuzz_query_one.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/query.h"

/* Helpers are prefixed fq_: the corpus replay includes this file and
 * fuzz_fcgi_codec_one.c into one translation unit. */

static int fq_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fq_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static char *fq_strndup(const uint8_t *d, size_t n)
{
    char *s = malloc(n + 1);
    if (!s) abort();
    if (n) memcpy(s, d, n);
    s[n] = '\0'; /* an embedded NUL simply ends the string early, as in a C caller */
    return s;
}

/* The canonical decimal form of a text query_parse_long accepted: no '+',
 * no leading zeros, no "-0". */
static void fq_canonical(const char *text, char *out, size_t outlen)
{
    int neg = *text == '-';
    if (*text == '-' || *text == '+') text++;
    while (text[0] == '0' && text[1]) text++;
    snprintf(out, outlen, "%s%s", neg && strcmp(text, "0") ? "-" : "", text);
}

int fuzz_query_one(const uint8_t *data, size_t size, char *err, size_t errlen)
{
    const uint8_t *nl = memchr(data, '\n', size);
    char *name = nl ? fq_strndup(data, (size_t)(nl - data)) : fq_strndup((const uint8_t *)"n", 1);
    char *query = nl ? fq_strndup(nl + 1, size - (size_t)(nl + 1 - data)) : fq_strndup(data, size);
    int rc = 0;

    /* query_get with a small buffer of exactly its size, then a large one:
     * whatever fits the small one reads the same in the large one. buflen 0
     * is not tried: query_get writes its terminating NUL before checking. */
    size_t small_len = 1 + size % 40;
    char *small = malloc(small_len), big[4096];
    if (!small) abort();
    enum query_found fs = query_get(query, name, small, small_len);
    enum query_found fb = query_get(query, name, big, sizeof big);
    if (fs != QUERY_ABSENT && fs != QUERY_FOUND && fs != QUERY_INVALID)
        rc = fq_fail(err, errlen, "query_get returned %d", fs);
    else if ((fs == QUERY_ABSENT) != (fb == QUERY_ABSENT))
        rc = fq_fail(err, errlen, "absent with one buffer size and not the other");
    else if (fs == QUERY_FOUND && strlen(small) >= small_len)
        rc = fq_fail(err, errlen, "a value longer than its buffer");
    else if (fs == QUERY_FOUND && (fb != QUERY_FOUND || strcmp(small, big) != 0))
        rc = fq_fail(err, errlen, "the value depends on the buffer size");
    free(small);

    /* query_parse_long on the whole query text: accepted texts are exactly
     * an optional sign and digits, and the number prints back the same. */
    long v = 0;
    if (rc == 0 && query_parse_long(query, &v) == 0) {
        const char *d = query + (*query == '-' || *query == '+');
        char canon[64], printed[32];
        if (!*d || strspn(d, "0123456789") != strlen(d)) {
            rc = fq_fail(err, errlen, "query_parse_long accepted a non-integer");
        } else {
            fq_canonical(query, canon, sizeof canon);
            snprintf(printed, sizeof printed, "%ld", v);
            if (strcmp(canon, printed) != 0)
                rc = fq_fail(err, errlen, "query_parse_long read %s as %ld", canon, v);
        }
    }

    /* query_get_long: the default when absent, else a value in [lo, hi] or -1. */
    if (rc == 0) {
        long lo = (long)(size % 7) - 3, hi = lo + (long)(size % 1000);
        long def = LONG_MIN + (long)size, out = 12345;
        if (size % 3 == 0) lo = LONG_MIN, hi = LONG_MAX;
        int r = query_get_long(query, name, def, lo, hi, &out);
        /* What it should say, from query_get and query_parse_long (its own
         * buffer holds 31 characters). */
        long x = 0;
        int good = fb == QUERY_FOUND && strlen(big) < 32 && query_parse_long(big, &x) == 0 && x >= lo && x <= hi;
        if (fb == QUERY_ABSENT && (r != 0 || out != def))
            rc = fq_fail(err, errlen, "query_get_long does not give the default for an absent name");
        else if (fb != QUERY_ABSENT && good && (r != 0 || out != x))
            rc = fq_fail(err, errlen, "query_get_long refused or misread %ld in [%ld, %ld]", x, lo, hi);
        else if (fb != QUERY_ABSENT && !good && r != -1)
            rc = fq_fail(err, errlen, "query_get_long accepted a bad value (gave %ld)", out);
    }
    free(name);
    free(query);
    return rc;
}
