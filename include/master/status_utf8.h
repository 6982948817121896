/* status_utf8: strings others wrote (workers, backend servers) made safe to show as JSON. */
#ifndef PERFCGI_STATUS_UTF8_H
#define PERFCGI_STATUS_UTF8_H

#include <stddef.h>

/* Copies a string (not trusted to be terminated within inlen, nor to be UTF-8)
 * as valid UTF-8: bytes that are not become %XX, as in a URI; cut to fit
 * outlen, on a whole character. */
void status_utf8_clean(const char *in, size_t inlen, char *out, size_t outlen);

#endif
