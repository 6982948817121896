/* escape: request data written into log lines, so that no client can split, forge or break one. */
#include "base/escape.h"

#include <string.h>

#include "base/utf8.h"

static const char hex[] = "0123456789abcdef", HEX[] = "0123456789ABCDEF";

size_t escape_text(char *out, size_t max, const char *in)
{
    size_t at = 0;
    for (const unsigned char *p = (const unsigned char *)(in ? in : ""); *p; p++) {
        char seq[4] = {(char)*p};
        size_t n = 1;
        if (*p < 0x20 || *p == 0x7f) {
            seq[0] = '\\', seq[1] = 'x', seq[2] = hex[*p >> 4], seq[3] = hex[*p & 15];
            n = 4;
        } else if (*p == '\\' || *p == '"') {
            seq[0] = '\\', seq[1] = (char)*p;
            n = 2;
        }
        if (at + n > max) break; /* never half a sequence */
        memcpy(out + at, seq, n);
        at += n;
    }
    return at;
}

size_t escape_json(char *out, size_t max, const char *in)
{
    size_t at = 0;
    const unsigned char *p = (const unsigned char *)(in ? in : "");
    while (*p) {
        char seq[6];
        const char *from = seq;
        size_t n, take = 1;
        if (*p < 0x20 || *p == 0x7f) {
            memcpy(seq, "\\u00", 4);
            seq[4] = hex[*p >> 4], seq[5] = hex[*p & 15];
            n = 6;
        } else if (*p == '\\' || *p == '"') {
            seq[0] = '\\', seq[1] = (char)*p;
            n = 2;
        } else if ((take = utf8_seq_len(p, 4)) != 0) { /* a NUL ends a cut sequence: never read past it */
            from = (const char *)p;
            n = take;
        } else {
            seq[0] = '%', seq[1] = HEX[*p >> 4], seq[2] = HEX[*p & 15]; /* as /status shows them */
            n = 3;
            take = 1;
        }
        if (at + n > max) break; /* never half a sequence */
        memcpy(out + at, from, n);
        at += n;
        p += take;
    }
    return at;
}
