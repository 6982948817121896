/* decimal: unsigned numbers written in decimal without printf, for what every request writes. */
#ifndef PERFCGI_DECIMAL_H
#define PERFCGI_DECIMAL_H

#include <stddef.h>

/* The digits of a 64-bit number, at most. */
#define DECIMAL_MAX 20

/* Writes v's digits at out (no NUL); returns how many. */
static inline size_t decimal_write(char *out, unsigned long long v)
{
    char digits[DECIMAL_MAX];
    size_t n = 0, len = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) out[len++] = digits[--n];
    return len;
}

#endif
