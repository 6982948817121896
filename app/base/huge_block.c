/* huge_block: a fresh anonymous block on transparent huge pages, as /memory-test maps it. */
#define _DEFAULT_SOURCE /* MADV_HUGEPAGE */
#include "base/huge_block.h"

#include <stdint.h>
#include <sys/mman.h>

/*
 * Touching a block on huge pages takes one page fault per 2 MiB instead of 512 (the
 * kernel zeroes the same bytes either way; the faults are what cost). mmap only
 * promises page alignment, though newer kernels align a multiple of 2 MiB themselves:
 * the exact size is mapped first, and only when its start is not on a huge page is it
 * over-mapped by one huge page, the head and the tail given back. A tail shorter than
 * a huge page (odd mb) stays on 4 KiB pages: the block is exactly len bytes, so the RSS
 * it shows is what was asked. Where the over-map or madvise fails (no THP, THP
 * "never") the block is still correct, only slower to touch.
 */
void *huge_block_map(size_t len)
{
    int prot = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS;
    unsigned char *block = mmap(NULL, len, prot, flags, -1, 0);
    if (block == MAP_FAILED) return NULL;
    if (len < HUGE_BLOCK_PAGE) return block;
    if ((uintptr_t)block % HUGE_BLOCK_PAGE) {
        unsigned char *raw = mmap(NULL, len + HUGE_BLOCK_PAGE, prot, flags, -1, 0);
        if (raw != MAP_FAILED) {
            munmap(block, len);
            size_t head = HUGE_BLOCK_PAGE - (uintptr_t)raw % HUGE_BLOCK_PAGE;
            if (head == HUGE_BLOCK_PAGE) head = 0;
            block = raw + head;
            if (head) munmap(raw, head);
            munmap(block + len, HUGE_BLOCK_PAGE - head);
        }
    }
    madvise(block, len - len % HUGE_BLOCK_PAGE, MADV_HUGEPAGE);
    return block;
}
