/* fcgi_memory_reuse.c: /memory-test as the Python peer's allocator serves it: one block kept and reused, never returned (RSS stays up). */
#include <stdio.h>
#include <stdlib.h>

#include "libfcgi_loop.h"
#include "memory_answer.h"

/* The block of this process: grown to the largest mb asked for, never freed, as a
 * Python worker's freed 10 MiB stays in its allocator's arena for the next request. */
static volatile unsigned long *memory_reuse_block;
static size_t memory_reuse_bytes;

static void memory_reuse_respond(FCGX_Request *request)
{
    long mb = memory_query_mb(FCGX_GetParam("QUERY_STRING", request->envp));
    if (mb == 0) {
        memory_answer(request, "400 Bad Request", "{\"error\":\"bad_request\",\"param\":\"mb\"}");
        return;
    }
    size_t bytes = (size_t)mb << 20;
    if (bytes > memory_reuse_bytes) {
        void *grown = realloc((void *)memory_reuse_block, bytes);
        if (!grown) {
            memory_answer(request, "507 Insufficient Storage", "{\"error\":\"insufficient_storage\"}");
            return;
        }
        memory_reuse_block = grown;
        memory_reuse_bytes = bytes;
    }
    /* On pages that stay resident: no page fault. */
    unsigned long checksum = memory_touch(memory_reuse_block, bytes);
    char body[128];
    snprintf(body, sizeof body, "{\"mb\":%ld,\"held_mb\":%zu,\"checksum\":%lu}", mb, memory_reuse_bytes >> 20,
             checksum);
    memory_answer(request, "200 OK", body);
}

int main(int argc, char **argv)
{
    return libfcgi_loop_main(argc, argv, "fcgi-memory-reuse", memory_reuse_respond);
}
