/* fcgi_records.h: a streaming reader of FastCGI records (spec 1.0), fed whatever a read returned. */
#ifndef BENCH_FCGI_RECORDS_H
#define BENCH_FCGI_RECORDS_H

#include <stddef.h>

enum {
    FCGI_HEADER_LEN = 8,
    FCGI_VERSION_1 = 1,
    FCGI_BEGIN_REQUEST = 1,
    FCGI_ABORT_REQUEST = 2,
    FCGI_END_REQUEST = 3,
    FCGI_PARAMS = 4,
    FCGI_STDIN = 5,
    FCGI_STDOUT = 6,
    FCGI_GET_VALUES = 9,
    FCGI_GET_VALUES_RESULT = 10,
    FCGI_UNKNOWN_TYPE = 11,
    FCGI_RESPONDER = 1,
    FCGI_KEEP_CONN = 1,
    FCGI_REQUEST_COMPLETE = 0,
    FCGI_CANT_MPX_CONN = 1,
    FCGI_UNKNOWN_ROLE = 3,
};

/* A record read to its end. Only the first bytes of its content are kept: the
 * responders need BEGIN_REQUEST's 8-byte body and nothing else. */
struct fcgi_record {
    unsigned type;
    unsigned request_id;
    size_t content_length;
    unsigned char head[8]; /* the first min(8, content_length) content bytes */
};

/* Where the reader is within the current record; zero-initialise it for a new connection. */
struct fcgi_reader {
    unsigned char header[FCGI_HEADER_LEN];
    size_t header_have;
    size_t content_left, padding_left;
    struct fcgi_record record;
};

enum fcgi_read_result {
    FCGI_READ_MORE,   /* all of the input is consumed and no record is complete */
    FCGI_READ_RECORD, /* *record is complete; the input after *used is still to read */
    FCGI_READ_BAD,    /* not FastCGI 1.0: the connection is beyond repair */
};

/* Reads from data[0..len) until the end of a record or of the input, whichever
 * comes first; *used says how many bytes it took. Records may be split anywhere
 * across calls, and one call's input may hold several records. */
enum fcgi_read_result fcgi_read(struct fcgi_reader *reader, const unsigned char *data, size_t len, size_t *used,
                                struct fcgi_record *record);

/* Writes a record header for a record of `content_length` bytes and no padding into out[0..8). */
void fcgi_header(unsigned char *out, unsigned type, unsigned request_id, size_t content_length);

#endif
