/* fcgi_memory_fresh.c: /memory-test's own work in a bare libfcgi loop: a fresh block per request, mapped by perfcgi's own
 * code (base/huge_block) and returned before the answer. */
#include <stdio.h>
#include <sys/mman.h>

#include "base/huge_block.h"
#include "libfcgi_loop.h"
#include "memory_answer.h"

static void memory_fresh_respond(FCGX_Request *request)
{
    long mb = memory_query_mb(FCGX_GetParam("QUERY_STRING", request->envp));
    if (mb == 0) {
        memory_answer(request, "400 Bad Request", "{\"error\":\"bad_request\",\"param\":\"mb\"}");
        return;
    }
    size_t bytes = (size_t)mb << 20;
    volatile unsigned long *block = huge_block_map(bytes);
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
