/* fcgi_memory_reuse.c: /memory-test as the Python peer's allocator serves it: one block kept and reused, never returned (RSS stays up). */
#include <fcgiapp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libfcgi_loop.h"

/* As perfcgi's /memory-test: mb defaults to 10, at most max_request_mb's default. */
#define MEMORY_REUSE_DEFAULT_MB 10
#define MEMORY_REUSE_MAX_MB 256

/* The block of this process: grown to the largest mb asked for, never freed, as a
 * Python worker's freed 10 MiB stays in its allocator's arena for the next request. */
static volatile unsigned long *memory_reuse_block;
static size_t memory_reuse_bytes;

/* mb from the query string, or 0 when it is not 1..MEMORY_REUSE_MAX_MB. */
static long memory_reuse_mb(const char *query)
{
    const char *at = query;
    while (at && *at) {
        if (strncmp(at, "mb=", 3) == 0) {
            char *end;
            long mb = strtol(at + 3, &end, 10);
            return end != at + 3 && (*end == '\0' || *end == '&') && mb >= 1 && mb <= MEMORY_REUSE_MAX_MB ? mb : 0;
        }
        at = strchr(at, '&');
        if (at) at++;
    }
    return MEMORY_REUSE_DEFAULT_MB;
}

/* Formatted here: libfcgi's own FCGX_FPrintF knows no %zu. */
static void memory_reuse_answer(FCGX_Request *request, const char *status, const char *body)
{
    char answer[512];
    int len = snprintf(answer, sizeof answer,
                       "Status: %s\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
                       "Content-Length: %zu\r\n\r\n%s",
                       status, strlen(body), body);
    FCGX_PutStr(answer, len < (int)sizeof answer ? len : (int)sizeof answer - 1, request->out);
}

static void memory_reuse_respond(FCGX_Request *request)
{
    long mb = memory_reuse_mb(FCGX_GetParam("QUERY_STRING", request->envp));
    if (mb == 0) {
        memory_reuse_answer(request, "400 Bad Request", "{\"error\":\"bad_request\",\"param\":\"mb\"}");
        return;
    }
    size_t bytes = (size_t)mb << 20;
    if (bytes > memory_reuse_bytes) {
        void *grown = realloc((void *)memory_reuse_block, bytes);
        if (!grown) {
            memory_reuse_answer(request, "507 Insufficient Storage", "{\"error\":\"insufficient_storage\"}");
            return;
        }
        memory_reuse_block = grown;
        memory_reuse_bytes = bytes;
    }
    /* What perfcgi's /memory-test does with its fresh block: a word per page written,
     * read back, summed; here on pages that stay resident, so no page fault. */
    size_t words_per_page = (size_t)sysconf(_SC_PAGESIZE) / sizeof *memory_reuse_block;
    size_t pages = bytes / (words_per_page * sizeof *memory_reuse_block);
    for (size_t i = 0; i < pages; i++) memory_reuse_block[i * words_per_page] = i ^ 0x5a5a5a5aUL;
    unsigned long checksum = 0;
    for (size_t i = 0; i < pages; i++) checksum += memory_reuse_block[i * words_per_page];
    char body[128];
    snprintf(body, sizeof body, "{\"mb\":%ld,\"held_mb\":%zu,\"checksum\":%lu}", mb, memory_reuse_bytes >> 20,
             checksum);
    memory_reuse_answer(request, "200 OK", body);
}

int main(int argc, char **argv)
{
    return libfcgi_loop_main(argc, argv, "fcgi-memory-reuse", memory_reuse_respond);
}
