/* status_utf8: strings others wrote (workers, backend servers) made safe to show as JSON. */
#define _GNU_SOURCE
#include "master/status_utf8.h"

#include <string.h>

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0 if invalid. */
static size_t status_utf8_seq(const unsigned char *p, size_t n)
{
    size_t len;
    unsigned min;
    unsigned cp;
    if (p[0] < 0x80) return 1;
    if ((p[0] & 0xE0) == 0xC0) len = 2, min = 0x80, cp = p[0] & 0x1F;
    else if ((p[0] & 0xF0) == 0xE0) len = 3, min = 0x800, cp = p[0] & 0x0F;
    else if ((p[0] & 0xF8) == 0xF0) len = 4, min = 0x10000, cp = p[0] & 0x07;
    else return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

void status_utf8_clean(const char *in, size_t inlen, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)in;
    size_t n = strnlen(in, inlen), o = 0;
    for (size_t i = 0; i < n;) {
        size_t len = status_utf8_seq(p + i, n - i);
        if (len == 0) {
            if (o + 3 >= outlen) break;
            out[o++] = '%';
            out[o++] = hex[p[i] >> 4];
            out[o++] = hex[p[i] & 15];
            i++;
            continue;
        }
        if (o + len >= outlen) break;
        memcpy(out + o, p + i, len);
        o += len;
        i += len;
    }
    out[o] = '\0';
}
