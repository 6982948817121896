/* compute: the CPU and memory kernels behind the load endpoints; no I/O. */
#define _GNU_SOURCE
#include "core/compute.h"

#include "base/huge_block.h"
#include "base/proc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

long compute_count_primes(long n)
{
    long count = n >= 2 ? 1 : 0;
    for (long k = 3; k <= n; k += 2) {
        int prime = 1;
        for (long d = 3; d * d <= k; d += 2) {
            if (k % d == 0) {
                prime = 0;
                break;
            }
        }
        count += prime;
    }
    return count;
}

uint64_t compute_fib_naive(int n)
{
    return n < 2 ? (uint64_t)n : compute_fib_naive(n - 1) + compute_fib_naive(n - 2);
}

/* Slots hold F(n) + 1 so that zero means "not computed yet"; F(93) + 1 still
 * fits. A slot is only ever written with its final value, so threads racing
 * on one are harmless. */
#define FIB_MAX 93
static _Atomic uint64_t fib_memo[FIB_MAX + 1];

uint64_t compute_fib_memo(int n)
{
    uint64_t slot = atomic_load_explicit(&fib_memo[n], memory_order_relaxed);
    if (slot) return slot - 1;
    uint64_t v = n < 2 ? (uint64_t)n : compute_fib_memo(n - 1) + compute_fib_memo(n - 2);
    atomic_store_explicit(&fib_memo[n], v + 1, memory_order_relaxed);
    return v;
}

/* F(2k) = F(k)(2F(k+1) - F(k)), F(2k+1) = F(k)^2 + F(k+1)^2, from the top bit down. */
uint64_t compute_fib_fast(int n)
{
    uint64_t a = 0, b = 1; /* F(k), F(k+1) */
    for (int bit = 6; bit >= 0; bit--) {
        uint64_t c = a * (2 * b - a);
        uint64_t d = a * a + b * b;
        if ((n >> bit) & 1) {
            a = d;
            b = c + d;
        } else {
            a = c;
            b = d;
        }
    }
    return a;
}

/* MiB kept mapped by hold=1; those blocks are released when the process ends. */
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;
static long held_total_mb;

static long held_adjust(long delta_mb)
{
    pthread_mutex_lock(&held_lock);
    held_total_mb += delta_mb;
    long total = held_total_mb;
    pthread_mutex_unlock(&held_lock);
    return total;
}

enum memory_status compute_touch_memory(long mb, int hold, long max_held_mb,
                                        struct memory_report *out)
{
    size_t len = (size_t)mb << 20;
    /* One word per base page, whatever size of page backs the block: the
     * checksum depends on mb only. */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);

    if (hold) { /* reserve before mapping, so concurrent requests cannot overshoot */
        if (held_adjust(mb) > max_held_mb) {
            held_adjust(-mb);
            return MEMORY_OVER_LIMIT;
        }
    }

    out->rss_before_kb = proc_rss_kb(0);
    unsigned char *block = huge_block_map(len);
    if (!block) {
        if (hold) held_adjust(-mb);
        return MEMORY_NO_MEMORY;
    }
    for (size_t off = 0, i = 1; off < len; off += page, i++) *(uint64_t *)(block + off) = i * 0x9E3779B97F4A7C15ull;
    uint64_t sum = 0;
    for (size_t off = 0; off < len; off += page) sum = (sum << 7 | sum >> 57) ^ *(uint64_t *)(block + off);
    out->checksum = sum;
    out->rss_peak_kb = proc_rss_kb(0);

    if (!hold) munmap(block, len);
    out->held_mb = held_adjust(0);
    out->rss_after_kb = proc_rss_kb(0);
    return MEMORY_OK;
}
