/* fuzz_query: the libFuzzer entry for the query parser; the work is in fuzz_query_one.c. */
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_query_one.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    if (fuzz_query_one(data, size, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_query: %s\n", err);
        abort();
    }
    return 0;
}
