/* fuzz_fcgi_codec_one: one fuzz input through the FastCGI codec, shared by the fuzzer and the corpus replay. */
#ifndef PERFCGI_FUZZ_FCGI_CODEC_ONE_H
#define PERFCGI_FUZZ_FCGI_CODEC_ONE_H

#include <stddef.h>
#include <stdint.h>

/*
 * Parses data as one connection's bytes, acting like a server on each event:
 * whole, where every event must sit where a plain walk over the records puts
 * it (with their content); cut in pieces where a hash of data says, which
 * must give the same events and answers; and now and then with a server that
 * ends requests in the middle of a body. Everything the server wrote must read
 * back, and decoded params must encode and parse back the same. Returns 0, or
 * -1 with the broken property in err.
 */
int fuzz_fcgi_codec_one(const uint8_t *data, size_t size, char *err, size_t errlen);

#endif
