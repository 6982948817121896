/* huge_block: a fresh anonymous block on transparent huge pages, as /memory-test maps it. */
#ifndef PERFCGI_HUGE_BLOCK_H
#define PERFCGI_HUGE_BLOCK_H

#include <stddef.h>

/* The size of a transparent huge page (one PMD) with 4 KiB base pages, on x86-64 and arm64. */
#define HUGE_BLOCK_PAGE ((size_t)2 << 20)

/*
 * Maps exactly len bytes, private and anonymous, starting on a huge-page boundary when
 * len is at least one huge page, with huge pages asked for over its whole 2 MiB part;
 * NULL when memory is out. Given back with munmap(block, len). Standalone (libc only):
 * the benchmark's fresh-block baseline maps with it too.
 */
void *huge_block_map(size_t len);

#endif
