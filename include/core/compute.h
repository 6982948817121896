/* compute: the CPU and memory kernels behind the load endpoints; no I/O. */
#ifndef PERFCGI_COMPUTE_H
#define PERFCGI_COMPUTE_H

#include <stddef.h>
#include <stdint.h>

/* Primes <= n by trial division (2, then odd divisors while d*d <= k). */
long compute_count_primes(long n);

/* Fibonacci F(n): plain double recursion, n <= 40 is sensible. */
uint64_t compute_fib_naive(int n);
/* F(n), n <= 93, through a table shared by every request of this process. */
uint64_t compute_fib_memo(int n);
/* F(n), n <= 93, by fast doubling. */
uint64_t compute_fib_fast(int n);


struct memory_report {
    long rss_before_kb, rss_peak_kb, rss_after_kb;
    long held_mb; /* held by this process after the call */
    uint64_t checksum;
};

enum memory_status { MEMORY_OK, MEMORY_OVER_LIMIT, MEMORY_NO_MEMORY };

/*
 * Maps mb MiB, writes every page, checksums it, then unmaps it; with hold the
 * block stays mapped in this process (a simulated leak) unless that would put
 * more than max_held_mb in it.
 */
enum memory_status compute_touch_memory(long mb, int hold, long max_held_mb,
                                        struct memory_report *out);

#endif
