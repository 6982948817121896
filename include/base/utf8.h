/* utf8: where a valid UTF-8 sequence ends, for text that must come out as valid JSON. */
#ifndef PERFCGI_UTF8_H
#define PERFCGI_UTF8_H

#include <stddef.h>

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0 if invalid:
 * overlong forms, surrogates and code points past U+10FFFF are invalid too. */
static inline size_t utf8_seq_len(const unsigned char *p, size_t n)
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

#endif
