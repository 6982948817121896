/* fcgi_memory_fresh.c: /memory-test's own work in a bare libfcgi loop: a fresh block per request, on huge pages where the kernel gives them, returned before the answer. */
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>

#include "libfcgi_loop.h"
#include "memory_answer.h"

/* A transparent huge page (one PMD) with 4 KiB base pages, on x86-64 and arm64. */
#define HUGE_PAGE ((size_t)2 << 20)

/* bytes mapped from a huge-page boundary, huge pages asked for: the cheapest way to
 * fault a fresh block in, as perfcgi maps it. NULL when memory is out. */
static void *memory_fresh_map(size_t bytes)
{
    unsigned char *raw = mmap(NULL, bytes + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    size_t head = (HUGE_PAGE - (uintptr_t)raw % HUGE_PAGE) % HUGE_PAGE;
    if (head) munmap(raw, head);
    munmap(raw + head + bytes, HUGE_PAGE - head);
    madvise(raw + head, bytes - bytes % HUGE_PAGE, MADV_HUGEPAGE);
    return raw + head;
}

static void memory_fresh_respond(FCGX_Request *request)
{
    long mb = memory_query_mb(FCGX_GetParam("QUERY_STRING", request->envp));
    if (mb == 0) {
        memory_answer(request, "400 Bad Request", "{\"error\":\"bad_request\",\"param\":\"mb\"}");
        return;
    }
    size_t bytes = (size_t)mb << 20;
    volatile unsigned long *block = memory_fresh_map(bytes);
    if (!block) {
        memory_answer(request, "507 Insufficient Storage", "{\"error\":\"insufficient_storage\"}");
        return;
    }
    unsigned long checksum = memory_touch(block, bytes);
    munmap((void *)block, bytes);
    char body[128];
    snprintf(body, sizeof body, "{\"mb\":%ld,\"held_mb\":0,\"checksum\":%lu}", mb, checksum);
    memory_answer(request, "200 OK", body);
}

int main(int argc, char **argv)
{
    return libfcgi_loop_main(argc, argv, "fcgi-memory-fresh", memory_fresh_respond);
}
