/* Unit tests of compute: the prime counter, the three Fibonacci methods, memory touching. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <unistd.h>

#include "core/compute.h"

static void primes_match_known_counts(void **state)
{
    (void)state;
    assert_int_equal(compute_count_primes(2), 1);
    assert_int_equal(compute_count_primes(3), 2);
    assert_int_equal(compute_count_primes(10), 4);
    assert_int_equal(compute_count_primes(100), 25);
    assert_int_equal(compute_count_primes(1000), 168);
    assert_int_equal(compute_count_primes(50000), 5133);
}

static void fibonacci_methods_agree(void **state)
{
    (void)state;
    for (int n = 0; n <= 30; n++) {
        uint64_t naive = compute_fib_naive(n);
        assert_true(naive == compute_fib_fast(n));
        assert_true(naive == compute_fib_memo(n));
    }
    for (int n = 31; n <= 93; n++) assert_true(compute_fib_fast(n) == compute_fib_memo(n));
}

static void fibonacci_edges(void **state)
{
    (void)state;
    assert_true(compute_fib_fast(0) == 0);
    assert_true(compute_fib_fast(1) == 1);
    assert_true(compute_fib_fast(93) == 12200160415121876738ull);
    assert_true(compute_fib_memo(93) == 12200160415121876738ull);
    assert_true(compute_fib_naive(30) == 832040);
}

static void memory_touch_is_deterministic_and_released(void **state)
{
    (void)state;
    struct memory_report a, b;
    assert_int_equal(compute_touch_memory(4, 0, 0, &a), MEMORY_OK);
    assert_int_equal(compute_touch_memory(4, 0, 0, &b), MEMORY_OK);
    assert_true(a.checksum == b.checksum);
    assert_int_equal(a.held_mb, 0);
    assert_true(a.rss_peak_kb >= a.rss_before_kb + 3 * 1024);
}

/* AddressSanitizer keeps the shadow of an address range the first time it is unmapped:
 * an eighth of the block. */
#if defined(__SANITIZE_ADDRESS__)
#define MEMORY_SHADOW_KB(mb) ((mb) * 1024 / 8)
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MEMORY_SHADOW_KB(mb) ((mb) * 1024 / 8)
#endif
#endif
#ifndef MEMORY_SHADOW_KB
#define MEMORY_SHADOW_KB(mb) 0
#endif

/* Each size gives its RSS back whole, whether it fills 2 MiB pages (10), is smaller than
 * one (1) or leaves a tail (11), and shows in RSS while touched; the checksums are the
 * ones the block always had, for 4 KiB pages. */
static void memory_touch_returns_every_size(void **state)
{
    (void)state;
    static const struct {
        long mb;
        uint64_t checksum;
    } sizes[] = {{1, 0xb487c37de60dae3aull}, {10, 0xcf8f4f73428d4a29ull}, {11, 0x03293ab21dbc3214ull}};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        for (int round = 0; round < 3; round++) {
            struct memory_report r;
            assert_int_equal(compute_touch_memory(sizes[k].mb, 0, 0, &r), MEMORY_OK);
            assert_true(r.rss_peak_kb >= r.rss_before_kb + sizes[k].mb * 1024 * 9 / 10);
            assert_true(r.rss_after_kb - r.rss_before_kb <= 1024 + MEMORY_SHADOW_KB(sizes[k].mb));
            assert_int_equal(r.held_mb, 0);
            if (sysconf(_SC_PAGESIZE) == 4096) assert_true(r.checksum == sizes[k].checksum);
        }
    }
}

static void memory_hold_respects_the_limit(void **state)
{
    (void)state;
    struct memory_report r;
    assert_int_equal(compute_touch_memory(3, 1, 8, &r), MEMORY_OK);
    assert_int_equal(r.held_mb, 3);
    assert_true(r.rss_after_kb >= r.rss_before_kb + 3 * 1024 * 9 / 10);
    assert_int_equal(compute_touch_memory(5, 1, 8, &r), MEMORY_OK);
    assert_int_equal(r.held_mb, 8);
    assert_int_equal(compute_touch_memory(1, 1, 8, &r), MEMORY_OVER_LIMIT);
    assert_int_equal(compute_touch_memory(1, 0, 8, &r), MEMORY_OK);
    assert_int_equal(r.held_mb, 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(primes_match_known_counts),
        cmocka_unit_test(fibonacci_methods_agree),
        cmocka_unit_test(fibonacci_edges),
        cmocka_unit_test(memory_touch_is_deterministic_and_released),
        cmocka_unit_test(memory_touch_returns_every_size),
        cmocka_unit_test(memory_hold_respects_the_limit),
    };
    return cmocka_run_group_tests_name("compute", tests, NULL, NULL);
}
