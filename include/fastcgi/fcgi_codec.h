/* fcgi_codec: FastCGI 1.0 responder records read from and written to buffers, for the event worker. */
#ifndef PERFCGI_FCGI_CODEC_H
#define PERFCGI_FCGI_CODEC_H

#include <stddef.h>
#include <stdint.h>

/*
 * No I/O here: the event worker feeds what it read from a connection to a
 * parser, acts on one event at a time, and appends its answers to an output
 * buffer it writes out when the socket lets it. The names avoid libfcgi's
 * <fastcgi.h> macros (FCGI_STDIN, FCGI_KEEP_CONN, ...) so both can be included.
 */

/* Record types (FastCGI 1.0, section 8). */
enum fcgi_record_type {
    FCGI_REC_BEGIN_REQUEST = 1,
    FCGI_REC_ABORT_REQUEST = 2,
    FCGI_REC_END_REQUEST = 3,
    FCGI_REC_PARAMS = 4,
    FCGI_REC_STDIN = 5,
    FCGI_REC_STDOUT = 6,
    FCGI_REC_STDERR = 7,
    FCGI_REC_DATA = 8,
    FCGI_REC_GET_VALUES = 9,
    FCGI_REC_GET_VALUES_RESULT = 10,
    FCGI_REC_UNKNOWN_TYPE = 11,
};

enum fcgi_role { FCGI_ROLE_RESPONDER = 1, FCGI_ROLE_AUTHORIZER = 2, FCGI_ROLE_FILTER = 3 };

/* The protocolStatus of FCGI_END_REQUEST. */
enum fcgi_status {
    FCGI_STATUS_REQUEST_COMPLETE = 0,
    FCGI_STATUS_CANT_MPX_CONN = 1,
    FCGI_STATUS_OVERLOADED = 2,
    FCGI_STATUS_UNKNOWN_ROLE = 3,
};

/* The flags byte of FCGI_BEGIN_REQUEST. */
#define FCGI_FLAG_KEEP_CONN 1
/* The most content one record carries. */
#define FCGI_CONTENT_MAX 65535u

/* A growable output (or scratch) buffer owned by the caller. */
struct fcgi_buf {
    uint8_t *data;
    size_t len, cap;
};

void fcgi_buf_init(struct fcgi_buf *b);
void fcgi_buf_free(struct fcgi_buf *b);
/* Makes room for `extra` more bytes after len; 0, or -1 when out of memory. */
int fcgi_buf_reserve(struct fcgi_buf *b, size_t extra);

/* What one connection may send per request; a zero field takes its default. */
/* Params over a limit do not end the connection: the request goes on to its
 * end with its PARAMS_DONE marked too_large, for the caller to answer 413. A
 * body over its limit is a protocol error. */
struct fcgi_limits {
    size_t max_params_bytes; /* encoded FCGI_PARAMS stream; default 64 KiB */
    size_t max_params;       /* name-value pairs; default 8192 */
    size_t max_stdin_bytes;  /* request body; default 1 MiB */
};

/* One decoded parameter. The value is NUL-terminated; the name is not, use
 * name_len. */
struct fcgi_pair {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

enum fcgi_event_type {
    FCGI_EV_NEED_MORE,    /* all the input was consumed and nothing is complete */
    FCGI_EV_BEGIN,        /* a responder request starts: request_id, keep_conn */
    FCGI_EV_PARAMS_DONE,  /* pairs/npairs are ready; fcgi_param works until the reset;
                             too_large: the params went over the limits */
    FCGI_EV_STDIN,        /* data/len: a chunk of the body, pointing into the fed input */
    FCGI_EV_STDIN_END,    /* the body is complete */
    FCGI_EV_ABORT,        /* the web server aborts the active request: end it */
    FCGI_EV_REJECT,       /* answer fcgi_write_end_request(out, request_id, 0, protocol_status) */
    FCGI_EV_GET_VALUES,   /* answer fcgi_write_get_values_result(out, data, len, ...) */
    FCGI_EV_UNKNOWN_TYPE, /* answer fcgi_write_unknown_type(out, record_type) */
    FCGI_EV_ERROR,        /* protocol error (error says why): close this connection */
};

struct fcgi_event {
    enum fcgi_event_type type;
    uint16_t request_id; /* BEGIN, PARAMS_DONE, STDIN, STDIN_END, ABORT, REJECT */
    int role;            /* BEGIN, REJECT */
    int keep_conn;       /* BEGIN, REJECT: the connection stays open after this request */
    int protocol_status; /* REJECT: FCGI_STATUS_UNKNOWN_ROLE, or FCGI_STATUS_CANT_MPX_CONN for a
                            second request while one is active (which goes on) */
    int record_type;     /* UNKNOWN_TYPE */
    /* STDIN: valid while the fed input is; GET_VALUES: the record's content,
     * valid until the next feed. */
    const uint8_t *data;
    size_t len;
    /* PARAMS_DONE: valid until fcgi_parser_reset_request (or
     * fcgi_parser_take_params); fcgi_pairs_to_request reads them. */
    const struct fcgi_pair *pairs;
    size_t npairs;
    int too_large;     /* PARAMS_DONE: over the limits; pairs are those kept before, error says why */
    const char *error; /* ERROR, and PARAMS_DONE when too_large: a message kept by the parser */
};

/*
 * The state of one connection. Only request_id and keep_conn are meant to be
 * read by the caller: the active request (0 when none) and its flag. The rest
 * is private.
 */
struct fcgi_parser {
    uint16_t request_id;
    int keep_conn;

    struct fcgi_limits limits;
    uint8_t header[8];
    size_t header_len;
    int stage, action;
    uint8_t rec_type;
    uint16_t rec_id;
    size_t rec_len, content_left, padding_left;
    uint8_t begin[8];
    size_t begin_len;
    int request_state;
    size_t stdin_bytes;
    int params_over; /* the active request's params went over a limit */
    struct fcgi_buf params, mgmt;
    struct fcgi_pair *pairs;
    size_t npairs, pairs_cap;
    int failed;
    char error[128];
};

/* limits may be NULL for the defaults. */
void fcgi_parser_init(struct fcgi_parser *p, const struct fcgi_limits *limits);
void fcgi_parser_free(struct fcgi_parser *p);

/*
 * Reads records from data[0..len) up to the next event, which it returns and
 * describes in *ev; *consumed is how much of data it used (all of it for
 * FCGI_EV_NEED_MORE). Call again with the rest until FCGI_EV_NEED_MORE; an
 * event that used up the input is the last one it holds, so a caller may also
 * stop there. Records may be split anywhere across calls; padding is skipped.
 * Records of a request that is not active (never begun, rejected, or ended
 * early by the caller) are skipped. Protocol errors: a version other than 1,
 * a BEGIN_REQUEST that is not 8 bytes or names the active request, PARAMS
 * after their end, STDIN before the end of PARAMS or after its own end, DATA,
 * a record type that only applications send, malformed name-value pairs, and
 * the body's limit. After FCGI_EV_ERROR every call returns the same error.
 */
enum fcgi_event_type fcgi_parser_feed(struct fcgi_parser *p, const uint8_t *data, size_t len, size_t *consumed,
                                      struct fcgi_event *ev);

/*
 * Ends the active request once its END_REQUEST is written: its params are
 * released, and its records still in flight (say the rest of a body answered
 * early) are skipped. A kept connection may then begin the next request.
 */
void fcgi_parser_reset_request(struct fcgi_parser *p);

/* Hands the active request's decoded params (the memory its pairs' strings
 * are in) over to the caller, to free: they then outlive the request, whose
 * end would let the parser reuse that memory. fcgi_param finds none after. */
void *fcgi_parser_take_params(struct fcgi_parser *p);

/*
 * The room a parser keeps for a request's params (their bytes and their pairs),
 * so that the next request on its connection needs no malloc. A caller holding
 * many idle connections lends it out between requests (fcgi_parser_give_room)
 * and gives one back before feeding the parser again (fcgi_parser_take_room): a
 * few rooms then serve them all. A parser without one allocates its own.
 */
struct fcgi_room {
    struct fcgi_buf params;
    struct fcgi_pair *pairs;
    size_t pairs_cap;
};

/* Moves the parser's room to *room when it has one and no request is active;
 * returns whether it did. */
int fcgi_parser_give_room(struct fcgi_parser *p, struct fcgi_room *room);
/* Gives a parser without a room the one in *room; returns whether it did (then
 * *room is the parser's). */
int fcgi_parser_take_room(struct fcgi_parser *p, const struct fcgi_room *room);
void fcgi_room_free(struct fcgi_room *room);

/* The value of parameter `name` of the active request, or NULL (absent, or
 * before FCGI_EV_PARAMS_DONE). The first of repeated names wins. */
const char *fcgi_param(const struct fcgi_parser *p, const char *name);

/*
 * Writers append whole records to b. Each returns 0, or -1 (b unchanged) when
 * out of memory or when an argument cannot be encoded.
 */

/* One record of up to FCGI_CONTENT_MAX bytes, padded to a multiple of 8. */
int fcgi_write_record(struct fcgi_buf *b, int type, uint16_t request_id, const void *content, size_t len);
/* A stream's data in as many records as it takes; nothing when len is 0,
 * since an empty record ends the stream (write that with fcgi_write_record). */
int fcgi_write_stream(struct fcgi_buf *b, int type, uint16_t request_id, const void *data, size_t len);
int fcgi_write_stdout(struct fcgi_buf *b, uint16_t request_id, const void *data, size_t len);
int fcgi_write_stdout_end(struct fcgi_buf *b, uint16_t request_id);
int fcgi_write_end_request(struct fcgi_buf *b, uint16_t request_id, uint32_t app_status, int protocol_status);
int fcgi_write_unknown_type(struct fcgi_buf *b, int type);

/* What this server tells FCGI_GET_VALUES. */
struct fcgi_values {
    unsigned max_conns, max_reqs;
    int mpxs_conns;
};
/* Answers the names asked in `query` (the content of FCGI_GET_VALUES) that
 * it knows, each once; -1 also when query is not name-value pairs. */
int fcgi_write_get_values_result(struct fcgi_buf *b, const uint8_t *query, size_t query_len,
                                 const struct fcgi_values *v);

/* For clients and tests: FCGI_BEGIN_REQUEST, and one name-value pair
 * appended to b as PARAMS (or GET_VALUES) content; lengths up to 2^31-1. */
int fcgi_write_begin_request(struct fcgi_buf *b, uint16_t request_id, int role, int flags);
int fcgi_encode_param(struct fcgi_buf *b, const char *name, size_t name_len, const char *value, size_t value_len);

#endif
