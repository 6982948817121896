/* memory_answer.h: what the two /memory-test baselines share: reading mb, and writing an answer. */
#ifndef BENCH_MEMORY_ANSWER_H
#define BENCH_MEMORY_ANSWER_H

#include <fcgiapp.h>
#include <stddef.h>

/* As perfcgi's /memory-test: mb defaults to 10, at most max_request_mb's default. */
#define MEMORY_DEFAULT_MB 10
#define MEMORY_MAX_MB 256

/* mb from the query string, or 0 when it is not 1..MEMORY_MAX_MB. */
long memory_query_mb(const char *query);
/* The CGI head and a JSON body, uncached as perfcgi's /memory-test. */
void memory_answer(FCGX_Request *request, const char *status, const char *body);
/* Writes a word on each page of block (bytes long), reads them back and returns their sum:
 * the work perfcgi's /memory-test does on its block. */
unsigned long memory_touch(volatile unsigned long *block, size_t bytes);

#endif
