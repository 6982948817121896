/* decimal: numbers written in decimal, and rounded for it, without printf or libm, for what
 * every request writes. */
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

/*
 * x rounded to the nearest whole number, halves away from zero: libm's round(). Here
 * because it was the one libm function a worker called on every request, and a first
 * call maps 64 KiB of libm's code into each worker (the kernel maps the pages around
 * the one touched). Exact: x minus its integer part is exact in a double.
 */
static inline double decimal_round(double x)
{
    if (!(x > -9e18 && x < 9e18)) return x; /* NaN, or so large it is whole */
    double whole = (double)(long long)x;
    if (x - whole >= 0.5) whole += 1;
    else if (x - whole <= -0.5) whole -= 1;
    return __builtin_copysign(whole, x);
}

#endif
