/* memory_answer.c: what the two /memory-test baselines share: reading mb, and writing an answer. */
#include "memory_answer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

long memory_query_mb(const char *query)
{
    const char *at = query;
    while (at && *at) {
        if (strncmp(at, "mb=", 3) == 0) {
            char *end;
            long mb = strtol(at + 3, &end, 10);
            return end != at + 3 && (*end == '\0' || *end == '&') && mb >= 1 && mb <= MEMORY_MAX_MB ? mb : 0;
        }
        at = strchr(at, '&');
        if (at) at++;
    }
    return MEMORY_DEFAULT_MB;
}

/* Formatted here: libfcgi's own FCGX_FPrintF knows no %zu. */
void memory_answer(FCGX_Request *request, const char *status, const char *body)
{
    char answer[512];
    int len = snprintf(answer, sizeof answer,
                       "Status: %s\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
                       "Content-Length: %zu\r\n\r\n%s",
                       status, strlen(body), body);
    FCGX_PutStr(answer, len < (int)sizeof answer ? len : (int)sizeof answer - 1, request->out);
}

unsigned long memory_touch(volatile unsigned long *block, size_t bytes)
{
    size_t words_per_page = (size_t)sysconf(_SC_PAGESIZE) / sizeof *block;
    size_t pages = bytes / (words_per_page * sizeof *block);
    for (size_t i = 0; i < pages; i++) block[i * words_per_page] = i ^ 0x5a5a5a5aUL;
    unsigned long checksum = 0;
    for (size_t i = 0; i < pages; i++) checksum += block[i * words_per_page];
    return checksum;
}
