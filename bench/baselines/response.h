/* response.h: the one answer every baseline gives, as perfcgi's `/` would without its extra headers. */
#ifndef BENCH_RESPONSE_H
#define BENCH_RESPONSE_H

#define BASELINE_BODY "{\"message\":\"Hello, World!\"}"
/* The CGI head and the body: what goes on FastCGI's STDOUT stream. */
#define BASELINE_RESPONSE                                                                          \
    "Status: 200 OK\r\n"                                                                           \
    "Content-Type: application/json\r\n"                                                           \
    "Content-Length: 27\r\n"                                                                       \
    "\r\n" BASELINE_BODY
#define BASELINE_RESPONSE_LEN (sizeof BASELINE_RESPONSE - 1)

_Static_assert(sizeof BASELINE_BODY - 1 == 27, "Content-Length must match the body");

#endif
