/* fuzz_fcgi_codec: the libFuzzer entry for the FastCGI codec; the work is in fuzz_fcgi_codec_one.c. */
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_fcgi_codec_one.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    if (fuzz_fcgi_codec_one(data, size, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_fcgi_codec: %s\n", err);
        abort();
    }
    return 0;
}
