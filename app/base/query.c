/* query: reading parameters out of a URL query string. */
#include "base/query.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes src[0..len) into buf; an invalid escape is kept as it is,
 * a decoded NUL or a value longer than buf is refused. */
static int decode(const char *src, size_t len, char *buf, size_t buflen)
{
    size_t o = 0;
    if (buflen == 0) return -1;
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%' && i + 2 < len) {
            int hi = hex_value(src[i + 1]);
            int lo = hex_value(src[i + 2]);
            if (hi >= 0 && lo >= 0) {
                c = (char)(hi * 16 + lo);
                i += 2;
            }
        }
        if (c == '\0' || o + 1 >= buflen) return -1;
        buf[o++] = c;
    }
    buf[o] = '\0';
    return 0;
}

enum query_found query_get(const char *query, const char *name, char *buf, size_t buflen)
{
    char key[64];
    const char *p = query ? query : "";
    while (*p) {
        size_t pair_len = strcspn(p, "&;");
        const char *eq = memchr(p, '=', pair_len);
        size_t key_len = eq ? (size_t)(eq - p) : pair_len;
        if (decode(p, key_len, key, sizeof key) == 0 && strcmp(key, name) == 0) {
            const char *val = eq ? eq + 1 : p + pair_len;
            size_t val_len = (size_t)(p + pair_len - val);
            return decode(val, val_len, buf, buflen) == 0 ? QUERY_FOUND : QUERY_INVALID;
        }
        p += pair_len;
        if (*p) p++;
    }
    return QUERY_ABSENT;
}

int query_parse_long(const char *text, long *out)
{
    const char *p = text;
    if (*p == '-' || *p == '+') p++;
    if (*p == '\0') return -1;
    for (const char *d = p; *d; d++)
        if (*d < '0' || *d > '9') return -1;
    errno = 0;
    long v = strtol(text, NULL, 10);
    if (errno == ERANGE) return -1;
    *out = v;
    return 0;
}

int query_get_long(const char *query, const char *name, long def, long lo, long hi, long *out)
{
    char buf[32];
    long v;
    switch (query_get(query, name, buf, sizeof buf)) {
    case QUERY_ABSENT:
        *out = def;
        return 0;
    case QUERY_INVALID:
        return -1;
    case QUERY_FOUND:
        break;
    }
    if (query_parse_long(buf, &v) != 0 || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}
