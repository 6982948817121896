/* Unit tests of huge_block: the fresh block /memory-test and the fresh-block baseline map. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <sys/mman.h>

#include "base/huge_block.h"

/* Every size starts on a huge page from one huge page up (a multiple of it, or with a
 * 4 KiB tail), and every byte of it is there to write. */
static void blocks_start_on_a_huge_page_and_are_whole(void **state)
{
    (void)state;
    static const size_t mb[] = {1, 2, 3, 4, 10, 11};
    for (size_t k = 0; k < sizeof mb / sizeof mb[0]; k++) {
        for (int round = 0; round < 4; round++) {
            size_t len = mb[k] << 20;
            unsigned char *block = huge_block_map(len);
            assert_non_null(block);
            if (len >= HUGE_BLOCK_PAGE) assert_int_equal((uintptr_t)block % HUGE_BLOCK_PAGE, 0);
            memset(block, 0xa5, len);
            assert_int_equal(block[len - 1], 0xa5);
            assert_int_equal(munmap(block, len), 0);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(blocks_start_on_a_huge_page_and_are_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
