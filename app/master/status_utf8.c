/* status_utf8: strings others wrote (workers, backend servers) made safe to show as JSON. */
#define _GNU_SOURCE
#include "master/status_utf8.h"

#include <string.h>

#include "base/utf8.h"

void status_utf8_clean(const char *in, size_t inlen, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)in;
    size_t n = strnlen(in, inlen), o = 0;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_seq_len(p + i, n - i);
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
