/* Unit tests of fcgi_codec: records in any cut, every event, every protocol error, limits and writers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fastcgi.h> /* libfcgi's constants, to check ours against */

#include "fastcgi/fcgi_codec.h"

/* ---- helpers ---- */

static void append(struct fcgi_buf *b, const void *d, size_t n)
{
    assert_int_equal(fcgi_buf_reserve(b, n), 0);
    if (n) memcpy(b->data + b->len, d, n);
    b->len += n;
}

static void appendf(struct fcgi_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void appendf(struct fcgi_buf *b, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    append(b, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* A record written byte by byte, for what the writers refuse to produce. */
static void raw(struct fcgi_buf *b, int version, int type, unsigned id, size_t len, int pad, const void *content)
{
    uint8_t h[8] = {(uint8_t)version, (uint8_t)type, (uint8_t)(id >> 8), (uint8_t)id,
                    (uint8_t)(len >> 8), (uint8_t)len, (uint8_t)pad, 0};
    static const uint8_t zeros[256];
    append(b, h, sizeof h);
    append(b, content, content ? len : 0);
    append(b, zeros, (size_t)pad);
}

static void param(struct fcgi_buf *c, const char *name, const char *value)
{
    assert_int_equal(fcgi_encode_param(c, name, strlen(name), value, strlen(value)), 0);
}

static void begin(struct fcgi_buf *b, unsigned id, int flags)
{
    assert_int_equal(fcgi_write_begin_request(b, (uint16_t)id, FCGI_ROLE_RESPONDER, flags), 0);
}

/* The params stream of c and its empty end record. */
static void params(struct fcgi_buf *b, unsigned id, const struct fcgi_buf *c)
{
    assert_int_equal(fcgi_write_stream(b, FCGI_REC_PARAMS, (uint16_t)id, c->data, c->len), 0);
    assert_int_equal(fcgi_write_record(b, FCGI_REC_PARAMS, (uint16_t)id, NULL, 0), 0);
}

static void body(struct fcgi_buf *b, unsigned id, const char *text)
{
    assert_int_equal(fcgi_write_stream(b, FCGI_REC_STDIN, (uint16_t)id, text, strlen(text)), 0);
    assert_int_equal(fcgi_write_record(b, FCGI_REC_STDIN, (uint16_t)id, NULL, 0), 0);
}

/* A request as Nginx sends it. */
static void nginx_request(struct fcgi_buf *b, unsigned id, int flags, const char *query, const char *text)
{
    struct fcgi_buf c;
    fcgi_buf_init(&c);
    param(&c, "QUERY_STRING", query);
    param(&c, "REQUEST_METHOD", text ? "POST" : "GET");
    param(&c, "CONTENT_LENGTH", text ? "5" : "");
    param(&c, "DOCUMENT_URI", "/cpu-intensive");
    param(&c, "REMOTE_ADDR", "127.0.0.1");
    begin(b, id, flags);
    params(b, id, &c);
    body(b, id, text ? text : "");
    fcgi_buf_free(&c);
}

/*
 * Feeds data in pieces of `piece` bytes (0: all at once) and writes what
 * happens as text, one line per event, the chunks of a body merged. Acts as a
 * server: ends the request on STDIN_END and ABORT.
 */
static void transcript(struct fcgi_parser *p, const uint8_t *data, size_t len, size_t piece, struct fcgi_buf *t)
{
    int in_stdin = 0;
    size_t stdin_len = 0;
    for (size_t off = 0; off < len || (len == 0 && off == 0);) {
        size_t n = piece && piece < len - off ? piece : len - off;
        size_t pos = 0;
        for (;;) {
            struct fcgi_event ev;
            size_t used;
            enum fcgi_event_type type = fcgi_parser_feed(p, data + off + pos, n - pos, &used, &ev);
            pos += used;
            if (type == FCGI_EV_NEED_MORE) {
                assert_int_equal(pos, n);
                break;
            }
            if (type == FCGI_EV_STDIN) {
                if (!in_stdin) appendf(t, "STDIN %u ", ev.request_id);
                in_stdin = 1;
                append(t, ev.data, ev.len);
                stdin_len += ev.len;
                continue;
            }
            if (in_stdin) appendf(t, " (%zu)\n", stdin_len);
            in_stdin = 0;
            stdin_len = 0;
            switch (type) {
            case FCGI_EV_BEGIN:
                appendf(t, "BEGIN %u keep=%d\n", ev.request_id, ev.keep_conn);
                break;
            case FCGI_EV_PARAMS_DONE:
                appendf(t, "PARAMS %u:", ev.request_id);
                for (size_t i = 0; i < ev.npairs; i++) {
                    if (ev.pairs[i].value_len <= 40)
                        appendf(t, " %.*s=%s", (int)ev.pairs[i].name_len, ev.pairs[i].name, ev.pairs[i].value);
                    else
                        appendf(t, " %.*s=<%zu bytes>", (int)ev.pairs[i].name_len, ev.pairs[i].name,
                                ev.pairs[i].value_len);
                }
                if (ev.too_large) appendf(t, " TOO_LARGE: %s", ev.error);
                appendf(t, "\n");
                break;
            case FCGI_EV_STDIN_END:
                appendf(t, "STDIN_END %u\n", ev.request_id);
                fcgi_parser_reset_request(p);
                break;
            case FCGI_EV_ABORT:
                appendf(t, "ABORT %u\n", ev.request_id);
                fcgi_parser_reset_request(p);
                break;
            case FCGI_EV_REJECT:
                appendf(t, "REJECT %u role=%d status=%d\n", ev.request_id, ev.role, ev.protocol_status);
                break;
            case FCGI_EV_GET_VALUES:
                appendf(t, "GET_VALUES %zu bytes\n", ev.len);
                break;
            case FCGI_EV_UNKNOWN_TYPE:
                appendf(t, "UNKNOWN_TYPE %d (request %u)\n", ev.record_type, ev.request_id);
                break;
            case FCGI_EV_ERROR:
                appendf(t, "ERROR %s\n", ev.error);
                append(t, "", 1);
                t->len--;
                return;
            default:
                fail_msg("unexpected event %d", type);
            }
        }
        off += n;
        if (len == 0) break;
    }
    if (in_stdin) appendf(t, " (%zu)\n", stdin_len);
    append(t, "", 1); /* NUL-terminated, not counted */
    t->len--;
}

/* The transcript of data fed in pieces, with a fresh parser. */
static char *run(const struct fcgi_buf *b, size_t piece, const struct fcgi_limits *limits)
{
    struct fcgi_parser p;
    struct fcgi_buf t;
    fcgi_parser_init(&p, limits);
    fcgi_buf_init(&t);
    transcript(&p, b->data, b->len, piece, &t);
    fcgi_parser_free(&p);
    return (char *)t.data;
}

/* Feeds until the next event that is not NEED_MORE; asserts its type. */
static void expect(struct fcgi_parser *p, const struct fcgi_buf *b, size_t *off, enum fcgi_event_type type,
                   struct fcgi_event *ev)
{
    size_t used;
    enum fcgi_event_type got = fcgi_parser_feed(p, b->data + *off, b->len - *off, &used, ev);
    *off += used;
    if (got == FCGI_EV_ERROR && type != FCGI_EV_ERROR) fail_msg("error: %s", ev->error);
    assert_int_equal(got, type);
    assert_int_equal(ev->type, type);
}

static const char nginx_transcript[] =
    "BEGIN 1 keep=0\n"
    "PARAMS 1: QUERY_STRING=n=5 REQUEST_METHOD=POST CONTENT_LENGTH=5 DOCUMENT_URI=/cpu-intensive "
    "REMOTE_ADDR=127.0.0.1\n"
    "STDIN 1 hello (5)\n"
    "STDIN_END 1\n";

/* ---- tests ---- */

static void constants_agree_with_libfcgi(void **state)
{
    (void)state;
    assert_int_equal(FCGI_REC_BEGIN_REQUEST, FCGI_BEGIN_REQUEST);
    assert_int_equal(FCGI_REC_ABORT_REQUEST, FCGI_ABORT_REQUEST);
    assert_int_equal(FCGI_REC_END_REQUEST, FCGI_END_REQUEST);
    assert_int_equal(FCGI_REC_PARAMS, FCGI_PARAMS);
    assert_int_equal(FCGI_REC_STDIN, FCGI_STDIN);
    assert_int_equal(FCGI_REC_STDOUT, FCGI_STDOUT);
    assert_int_equal(FCGI_REC_STDERR, FCGI_STDERR);
    assert_int_equal(FCGI_REC_DATA, FCGI_DATA);
    assert_int_equal(FCGI_REC_GET_VALUES, FCGI_GET_VALUES);
    assert_int_equal(FCGI_REC_GET_VALUES_RESULT, FCGI_GET_VALUES_RESULT);
    assert_int_equal(FCGI_REC_UNKNOWN_TYPE, FCGI_UNKNOWN_TYPE);
    assert_int_equal(FCGI_ROLE_RESPONDER, FCGI_RESPONDER);
    assert_int_equal(FCGI_ROLE_AUTHORIZER, FCGI_AUTHORIZER);
    assert_int_equal(FCGI_ROLE_FILTER, FCGI_FILTER);
    assert_int_equal(FCGI_STATUS_REQUEST_COMPLETE, FCGI_REQUEST_COMPLETE);
    assert_int_equal(FCGI_STATUS_CANT_MPX_CONN, FCGI_CANT_MPX_CONN);
    assert_int_equal(FCGI_STATUS_OVERLOADED, FCGI_OVERLOADED);
    assert_int_equal(FCGI_STATUS_UNKNOWN_ROLE, FCGI_UNKNOWN_ROLE);
    assert_int_equal(FCGI_FLAG_KEEP_CONN, FCGI_KEEP_CONN);
    assert_int_equal(FCGI_CONTENT_MAX, FCGI_MAX_LENGTH);
}

static void whole_request_in_one_feed(void **state)
{
    (void)state;
    struct fcgi_buf b;
    fcgi_buf_init(&b);
    nginx_request(&b, 1, 0, "n=5", "hello");

    struct fcgi_parser p;
    struct fcgi_event ev;
    size_t off = 0;
    fcgi_parser_init(&p, NULL);
    expect(&p, &b, &off, FCGI_EV_BEGIN, &ev);
    assert_int_equal(ev.request_id, 1);
    assert_int_equal(ev.role, FCGI_ROLE_RESPONDER);
    assert_int_equal(ev.keep_conn, 0);
    assert_int_equal(p.request_id, 1);
    assert_null(fcgi_param(&p, "QUERY_STRING")); /* not before PARAMS_DONE */

    expect(&p, &b, &off, FCGI_EV_PARAMS_DONE, &ev);
    assert_int_equal(ev.npairs, 5);
    assert_string_equal(fcgi_param(&p, "QUERY_STRING"), "n=5");
    assert_string_equal(fcgi_param(&p, "REQUEST_METHOD"), "POST");
    assert_string_equal(fcgi_param(&p, "DOCUMENT_URI"), "/cpu-intensive");
    assert_null(fcgi_param(&p, "QUERY"));
    assert_null(fcgi_param(&p, "HTTP_HOST"));
    assert_memory_equal(ev.pairs[0].name, "QUERY_STRING", 12);
    assert_string_equal(ev.pairs[0].value, "n=5");
    assert_memory_equal(ev.pairs[4].name, "REMOTE_ADDR", 11);
    assert_string_equal(ev.pairs[4].value, "127.0.0.1");
    assert_int_equal(ev.pairs[1].name_len, 14);
    assert_memory_equal(ev.pairs[1].name, "REQUEST_METHOD", 14);
    assert_int_equal(ev.pairs[1].value_len, 4);

    expect(&p, &b, &off, FCGI_EV_STDIN, &ev);
    assert_int_equal(ev.len, 5);
    assert_memory_equal(ev.data, "hello", 5);
    assert_ptr_equal(ev.data, b.data + off - 5); /* the chunk is the caller's bytes, not a copy */
    expect(&p, &b, &off, FCGI_EV_STDIN_END, &ev);
    assert_int_equal(ev.request_id, 1);
    expect(&p, &b, &off, FCGI_EV_NEED_MORE, &ev);
    assert_int_equal(off, b.len);

    fcgi_parser_reset_request(&p);
    assert_int_equal(p.request_id, 0);
    assert_null(fcgi_param(&p, "QUERY_STRING"));
    fcgi_parser_free(&p);

    char *t = run(&b, 0, NULL);
    assert_string_equal(t, nginx_transcript);
    free(t);
    fcgi_buf_free(&b);
}

/* A request that outlives its end on the connection (its client hung up while
 * it waits on a backend) takes its params over: the next request on the
 * connection does not overwrite them. */
static void taken_params_outlive_the_request(void **state)
{
    (void)state;
    struct fcgi_buf b;
    fcgi_buf_init(&b);
    nginx_request(&b, 1, FCGI_FLAG_KEEP_CONN, "n=5", "");
    nginx_request(&b, 2, FCGI_FLAG_KEEP_CONN, "n=6", "");
    struct fcgi_parser p;
    struct fcgi_event ev;
    size_t off = 0;
    fcgi_parser_init(&p, NULL);
    expect(&p, &b, &off, FCGI_EV_BEGIN, &ev);
    expect(&p, &b, &off, FCGI_EV_PARAMS_DONE, &ev);
    const char *first = fcgi_param(&p, "QUERY_STRING");
    void *taken = fcgi_parser_take_params(&p);
    assert_non_null(taken);
    assert_null(fcgi_param(&p, "QUERY_STRING"));
    expect(&p, &b, &off, FCGI_EV_STDIN_END, &ev);
    fcgi_parser_reset_request(&p);
    expect(&p, &b, &off, FCGI_EV_BEGIN, &ev);
    expect(&p, &b, &off, FCGI_EV_PARAMS_DONE, &ev);
    assert_string_equal(fcgi_param(&p, "QUERY_STRING"), "n=6");
    assert_string_equal(first, "n=5");
    free(taken);
    fcgi_parser_free(&p);
    fcgi_buf_free(&b);
}

/* Between requests a parser lends its room out; a parser given a room decodes
 * into it, and one without allocates its own. */
static void a_room_goes_from_one_parser_to_another_between_requests(void **state)
{
    (void)state;
    struct fcgi_buf b;
    fcgi_buf_init(&b);
    nginx_request(&b, 1, FCGI_FLAG_KEEP_CONN, "n=5", "");
    struct fcgi_parser p, q;
    struct fcgi_event ev;
    struct fcgi_room room;
    size_t off = 0;
    fcgi_parser_init(&p, NULL);
    fcgi_parser_init(&q, NULL);
    assert_false(fcgi_parser_give_room(&p, &room)); /* none yet */
    expect(&p, &b, &off, FCGI_EV_BEGIN, &ev);
    expect(&p, &b, &off, FCGI_EV_PARAMS_DONE, &ev);
    assert_false(fcgi_parser_give_room(&p, &room)); /* a request is active */
    expect(&p, &b, &off, FCGI_EV_STDIN_END, &ev);
    fcgi_parser_reset_request(&p);
    assert_true(fcgi_parser_give_room(&p, &room));
    assert_non_null(room.params.data);
    assert_non_null(room.pairs);
    assert_false(fcgi_parser_give_room(&p, &room)); /* lent already */
    assert_true(fcgi_parser_take_room(&q, &room));
    assert_false(fcgi_parser_take_room(&q, &room)); /* it has one */
    const void *lent = room.params.data;
    off = 0;
    expect(&q, &b, &off, FCGI_EV_BEGIN, &ev);
    expect(&q, &b, &off, FCGI_EV_PARAMS_DONE, &ev);
    assert_ptr_equal(q.params.data, lent);
    assert_string_equal(fcgi_param(&q, "QUERY_STRING"), "n=5");
    expect(&q, &b, &off, FCGI_EV_STDIN_END, &ev);
    off = 0; /* p, without its room, allocates another */
    expect(&p, &b, &off, FCGI_EV_BEGIN, &ev);
    expect(&p, &b, &off, FCGI_EV_PARAMS_DONE, &ev);
    assert_string_equal(fcgi_param(&p, "QUERY_STRING"), "n=5");
    fcgi_parser_free(&p);
    fcgi_parser_free(&q);
    fcgi_buf_free(&b);
}

static void any_cut_gives_the_same_events(void **state)
{
    (void)state;
    struct fcgi_buf b;
    fcgi_buf_init(&b);
    nginx_request(&b, 1, 0, "n=5", "hello");
    static const size_t pieces[] = {1, 2, 3, 7, 8, 9, 13, 64};
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
        char *t = run(&b, pieces[i], NULL);
        assert_string_equal(t, nginx_transcript);
        free(t);
    }
    /* One byte at a time, every byte but the last gives NEED_MORE or an event
     * and nothing is lost between feeds. */
    struct fcgi_parser p;
    struct fcgi_event ev;
    size_t used, events = 0;
    fcgi_parser_init(&p, NULL);
    for (size_t i = 0; i < b.len; i++) {
        enum fcgi_event_type type = fcgi_parser_feed(&p, b.data + i, 1, &used, &ev);
        assert_int_equal(used, 1);
        if (type != FCGI_EV_NEED_MORE) events++;
        if (type != FCGI_EV_STDIN && type != FCGI_EV_NEED_MORE)
            assert_int_equal(fcgi_parser_feed(&p, b.data + i + 1, 0, &used, &ev), FCGI_EV_NEED_MORE);
    }
    assert_int_equal(events, 3 + 5); /* BEGIN, PARAMS_DONE, five 1-byte chunks, STDIN_END */
    fcgi_parser_free(&p);
    fcgi_buf_free(&b);
}

static void kept_connection_carries_requests_back_to_back(void **state)
{
    (void)state;
    struct fcgi_buf b;
    fcgi_buf_init(&b);
    nginx_request(&b, 1, FCGI_FLAG_KEEP_CONN, "n=1", NULL);
    nginx_request(&b, 1, FCGI_FLAG_KEEP_CONN, "n=2", "abcde");
    nginx_request(&b, 9, FCGI_FLAG_KEEP_CONN, "n=3", NULL);
    const char *want = "BEGIN 1 keep=1\n"
                       "PARAMS 1: QUERY_STRING=n=1 REQUEST_METHOD=GET CONTENT_LENGTH= DOCUMENT_URI=/cpu-intensive "
                       "REMOTE_ADDR=127.0.0.1\n"
                       "STDIN_END 1\n"
                       "BEGIN 1 keep=1\n"
                       "PARAMS 1: QUERY_STRING=n=2 REQUEST_METHOD=POST CONTENT_LENGTH=5 DOCUMENT_URI=/cpu-intensive "
                       "REMOTE_ADDR=127.0.0.1\n"
                       "STDIN 1 abcde (5)\n"
                       "STDIN_END 1\n"
                       "BEGIN 9 keep=1\n"
                       "PARAMS 9: QUERY_STRING=n=3 REQUEST_METHOD=GET CONTENT_LENGTH= DOCUMENT_URI=/cpu-intensive "
                       "REMOTE_ADDR=127.0.0.1\n"
                       "STDIN_END 9\n";
    for (size_t piece = 0; piece < 12; piece += 11) {
        char *t = run(&b, piece, NULL);
        assert_string_equal(t, want);
        free(t);
    }
    fcgi_buf_free(&b);
}

static void params_take_1_and_4_byte_lengths(void **state)
{
    (void)state;
    struct fcgi_buf c, b;
    fcgi_buf_init(&c);
    fcgi_buf_init(&b);
    char v200[201];
    memset(v200, 'v', 200);
    v200[200] = '\0';
    param(&c, "SHORT", "x");
    assert_int_equal(c.len, 2 + 5 + 1);
    assert_int_equal(c.data[0], 5);
    assert_int_equal(c.data[1], 1);
    param(&c, "HTTP_COOKIE", v200);
    static const uint8_t four[] = {11, 0x80, 0, 0, 200};
    assert_memory_equal(c.data + 8, four, sizeof four); /* 127 and below in 1 byte, else 4 with the high bit */
    /* A 4-byte length may also carry a small value. */
    static const uint8_t small_as_4[] = {0x80, 0, 0, 3, 0x80, 0, 0, 2, 'A', 'B', 'C', 'x', 'y'};
    append(&c, small_as_4, sizeof small_as_4);
    begin(&b, 1, 0);
    params(&b, 1, &c);

    struct fcgi_parser p;
    struct fcgi_event ev;
    size_t off = 0;
    fcgi_parser_init(&p, NULL);
    expect(&p, &b, &off, FCGI_EV_BEGIN, &ev);
    expect(&p, &b, &off, FCGI_EV_PARAMS_DONE, &ev);
    assert_int_equal(ev.npairs, 3);
    assert_string_equal(fcgi_param(&p, "SHORT"), "x");
    assert_string_equal(fcgi_param(&p, "HTTP_COOKIE"), v200);
    assert_string_equal(fcgi_param(&p, "ABC"), "xy");
    fcgi_parser_free(&p);

    /* A 70000-byte value, split over two records, where the limits allow it. */
    char *big = malloc(70001);
    assert_non_null(big);
    memset(big, 'q', 70000);
    big[70000] = '\0';
    c.len = b.len = 0;
    param(&c, "QUERY_STRING", big);
    param(&c, "AFTER", "1");
    begin(&b, 2, 0);
    params(&b, 2, &c);
    assert_int_equal(b.data[8 + 8 + 4], 0xff); /* the first PARAMS record is full: 65528 bytes */
    assert_int_equal(b.data[8 + 8 + 5], 0xf8);
    struct fcgi_limits roomy = {.max_params_bytes = 128 * 1024};
    fcgi_parser_init(&p, &roomy);
    off = 0;
    expect(&p, &b, &off, FCGI_EV_BEGIN, &ev);
    expect(&p, &b, &off, FCGI_EV_PARAMS_DONE, &ev);
    assert_int_equal(ev.pairs[0].value_len, 70000);
    assert_string_equal(fcgi_param(&p, "QUERY_STRING"), big);
    assert_string_equal(fcgi_param(&p, "AFTER"), "1");
    fcgi_parser_free(&p);

    /* The same with the default limits is too much: the second record is
     * dropped, the pair it ends with it, and the request goes on. */
    body(&b, 2, "");
    for (size_t piece = 0; piece < 10; piece += 3) {
        char *t = run(&b, piece, NULL);
        assert_string_equal(t, "BEGIN 2 keep=0\nPARAMS 2: TOO_LARGE: the FastCGI params (headers and CGI variables) "
                               "are over 65536 bytes\nSTDIN_END 2\n");
        free(t);
    }
    free(big);
    fcgi_buf_free(&c);
    fcgi_buf_free(&b);
}

static void empty_params_and_empty_pairs(void **state)
{
    (void)state;
    struct fcgi_buf b, c;
    fcgi_buf_init(&b);
    fcgi_buf_init(&c);
    begin(&b, 1, 0);
    params(&b, 1, &c); /* no params at all: only the end record */
    struct fcgi_parser p;
    struct fcgi_event ev;
    size_t off = 0;
    fcgi_parser_init(&p, NULL);
    expect(&p, &b, &off, FCGI_EV_BEGIN, &ev);
    expect(&p, &b, &off, FCGI_EV_PARAMS_DONE, &ev);
    assert_int_equal(ev.npairs, 0);
    assert_null(fcgi_param(&p, "QUERY_STRING"));
    fcgi_parser_free(&p);

    b.len = 0;
    param(&c, "", "no name");
    param(&c, "EMPTY", "");
    param(&c, "EMPTY", "second");      /* the first of repeated names wins */
    param(&c, "A=B", "name with '='"); /* looked up by its length, not as text */
    begin(&b, 1, 0);
    params(&b, 1, &c);
    fcgi_parser_init(&p, NULL);
    off = 0;
    expect(&p, &b, &off, FCGI_EV_BEGIN, &ev);
    expect(&p, &b, &off, FCGI_EV_PARAMS_DONE, &ev);
    assert_int_equal(ev.npairs, 4);
    assert_string_equal(fcgi_param(&p, ""), "no name");
    assert_string_equal(fcgi_param(&p, "EMPTY"), "");
    assert_string_equal(fcgi_param(&p, "A=B"), "name with '='");
    assert_null(fcgi_param(&p, "A"));
    assert_int_equal(ev.pairs[0].name_len, 0);
    fcgi_parser_free(&p);
    fcgi_buf_free(&b);
    fcgi_buf_free(&c);
}

static void padding_is_skipped(void **state)
{
    (void)state;
    struct fcgi_buf b, c;
    fcgi_buf_init(&b);
    fcgi_buf_init(&c);
    param(&c, "QUERY_STRING", "n=5");
    raw(&b, 1, FCGI_REC_BEGIN_REQUEST, 1, 8, 255, "\0\1\1\0\0\0\0\0");
    raw(&b, 1, FCGI_REC_PARAMS, 1, c.len, 1, c.data);
    raw(&b, 1, FCGI_REC_PARAMS, 1, 0, 200, NULL);
    raw(&b, 1, FCGI_REC_STDIN, 1, 3, 7, "abc");
    raw(&b, 1, FCGI_REC_STDIN, 1, 2, 0, "de");
    raw(&b, 1, FCGI_REC_STDIN, 1, 0, 9, NULL);
    const char *want = "BEGIN 1 keep=1\nPARAMS 1: QUERY_STRING=n=5\nSTDIN 1 abcde (5)\nSTDIN_END 1\n";
    for (size_t piece = 0; piece < 300; piece += 37) {
        char *t = run(&b, piece, NULL);
        assert_string_equal(t, want);
        free(t);
    }
    fcgi_buf_free(&b);
    fcgi_buf_free(&c);
}

static void get_values_round_trip(void **state)
{
    (void)state;
    struct fcgi_buf q, b, out;
    fcgi_buf_init(&q);
    fcgi_buf_init(&b);
    fcgi_buf_init(&out);
    param(&q, "FCGI_MAX_CONNS", "");
    param(&q, "FCGI_UNHEARD_OF", "");
    param(&q, "FCGI_MPXS_CONNS", "");
    param(&q, "FCGI_MAX_CONNS", ""); /* asked twice, answered once */
    assert_int_equal(fcgi_write_record(&b, FCGI_REC_GET_VALUES, 0, q.data, q.len), 0);

    struct fcgi_parser p;
    struct fcgi_event ev;
    size_t off = 0;
    fcgi_parser_init(&p, NULL);
    expect(&p, &b, &off, FCGI_EV_GET_VALUES, &ev);
    assert_int_equal(ev.request_id, 0);
    assert_int_equal(ev.len, q.len);
    assert_memory_equal(ev.data, q.data, q.len);
    struct fcgi_values v = {.max_conns = 50, .max_reqs = 51, .mpxs_conns = 0};
    assert_int_equal(fcgi_write_get_values_result(&out, ev.data, ev.len, &v), 0);
    expect(&p, &b, &off, FCGI_EV_NEED_MORE, &ev);
    fcgi_parser_free(&p);

    /* The answer: a GET_VALUES_RESULT of request 0 holding exactly these pairs. */
    struct fcgi_buf want;
    fcgi_buf_init(&want);
    param(&want, "FCGI_MAX_CONNS", "50");
    param(&want, "FCGI_MPXS_CONNS", "0");
    assert_true(out.len >= 8);
    assert_int_equal(out.data[0], 1);
    assert_int_equal(out.data[1], FCGI_REC_GET_VALUES_RESULT);
    assert_int_equal(out.data[2] << 8 | out.data[3], 0);
    assert_int_equal(out.data[4] << 8 | out.data[5], want.len);
    assert_int_equal(out.len, 8 + want.len + out.data[6]);
    assert_int_equal((want.len + out.data[6]) % 8, 0);
    assert_memory_equal(out.data + 8, want.data, want.len);

    /* Nothing asked, an empty answer; a malformed query is refused. */
    out.len = 0;
    assert_int_equal(fcgi_write_get_values_result(&out, NULL, 0, &v), 0);
    static const uint8_t empty_result[] = {1, FCGI_REC_GET_VALUES_RESULT, 0, 0, 0, 0, 0, 0};
    assert_int_equal(out.len, sizeof empty_result);
    assert_memory_equal(out.data, empty_result, sizeof empty_result);
    assert_int_equal(fcgi_write_get_values_result(&out, q.data, 5, &v), -1);
    assert_int_equal(out.len, sizeof empty_result);

    /* Management records may come in the middle of a request. */
    b.len = 0;
    nginx_request(&b, 1, 0, "n=5", NULL);
    struct fcgi_buf mid;
    fcgi_buf_init(&mid);
    append(&mid, b.data, 16); /* BEGIN_REQUEST */
    assert_int_equal(fcgi_write_record(&mid, FCGI_REC_GET_VALUES, 0, q.data, q.len), 0);
    append(&mid, b.data + 16, b.len - 16);
    char *t = run(&mid, 0, NULL), line[64];
    snprintf(line, sizeof line, "BEGIN 1 keep=0\nGET_VALUES %zu bytes\nPARAMS 1:", q.len);
    assert_non_null(strstr(t, line));
    free(t);
    fcgi_buf_free(&mid);
    fcgi_buf_free(&want);
    fcgi_buf_free(&q);
    fcgi_buf_free(&b);
    fcgi_buf_free(&out);
}

static void unknown_types_are_answered(void **state)
{
    (void)state;
    struct fcgi_buf b, out;
    fcgi_buf_init(&b);
    fcgi_buf_init(&out);
    assert_int_equal(fcgi_write_record(&b, 200, 0, "?", 1), 0);           /* an unknown management record */
    assert_int_equal(fcgi_write_record(&b, FCGI_REC_PARAMS, 0, NULL, 0), 0); /* not a management type */
    nginx_request(&b, 3, 0, "n=5", NULL);
    b.len -= 8; /* the empty STDIN record goes after a record of a newer protocol */
    assert_int_equal(fcgi_write_record(&b, 42, 3, "future", 6), 0);
    body(&b, 3, "");
    char *t = run(&b, 0, NULL);
    assert_string_equal(t, "UNKNOWN_TYPE 200 (request 0)\n"
                           "UNKNOWN_TYPE 4 (request 0)\n"
                           "BEGIN 3 keep=0\n"
                           "PARAMS 3: QUERY_STRING=n=5 REQUEST_METHOD=GET CONTENT_LENGTH= DOCUMENT_URI=/cpu-intensive "
                           "REMOTE_ADDR=127.0.0.1\n"
                           "UNKNOWN_TYPE 42 (request 3)\n"
                           "STDIN_END 3\n");
    free(t);
    assert_int_equal(fcgi_write_unknown_type(&out, 200), 0);
    static const uint8_t want[] = {1, FCGI_REC_UNKNOWN_TYPE, 0, 0, 0, 8, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(out.len, sizeof want);
    assert_memory_equal(out.data, want, sizeof want);
    assert_int_equal(fcgi_write_unknown_type(&out, 256), -1);
    fcgi_buf_free(&b);
    fcgi_buf_free(&out);
}

static void abort_ends_the_request_and_its_rest_is_skipped(void **state)
{
    (void)state;
    struct fcgi_buf b, c;
    fcgi_buf_init(&b);
    fcgi_buf_init(&c);
    param(&c, "REQUEST_METHOD", "POST");
    begin(&b, 1, FCGI_FLAG_KEEP_CONN);
    params(&b, 1, &c);
    assert_int_equal(fcgi_write_stream(&b, FCGI_REC_STDIN, 1, "part", 4), 0);
    assert_int_equal(fcgi_write_record(&b, FCGI_REC_ABORT_REQUEST, 1, NULL, 0), 0);
    body(&b, 1, "rest"); /* already on its way: skipped */
    nginx_request(&b, 1, 0, "n=5", NULL);
    char *t = run(&b, 0, NULL);
    assert_string_equal(t, "BEGIN 1 keep=1\n"
                           "PARAMS 1: REQUEST_METHOD=POST\n"
                           "STDIN 1 part (4)\n"
                           "ABORT 1\n"
                           "BEGIN 1 keep=0\n"
                           "PARAMS 1: QUERY_STRING=n=5 REQUEST_METHOD=GET CONTENT_LENGTH= DOCUMENT_URI=/cpu-intensive "
                           "REMOTE_ADDR=127.0.0.1\n"
                           "STDIN_END 1\n");
    free(t);
    /* An abort for a request that is not active is ignored. */
    b.len = 0;
    assert_int_equal(fcgi_write_record(&b, FCGI_REC_ABORT_REQUEST, 5, NULL, 0), 0);
    t = run(&b, 0, NULL);
    assert_string_equal(t, "");
    free(t);
    fcgi_buf_free(&b);
    fcgi_buf_free(&c);
}

static void an_answer_before_the_body_skips_the_body(void **state)
{
    (void)state;
    struct fcgi_buf b, c;
    fcgi_buf_init(&b);
    fcgi_buf_init(&c);
    param(&c, "CONTENT_LENGTH", "999999");
    begin(&b, 1, FCGI_FLAG_KEEP_CONN);
    params(&b, 1, &c);
    size_t params_end = b.len;
    assert_int_equal(fcgi_write_stream(&b, FCGI_REC_STDIN, 1, "0123456789", 10), 0);
    assert_int_equal(fcgi_write_record(&b, FCGI_REC_STDIN, 1, NULL, 0), 0);
    nginx_request(&b, 2, 0, "n=1", NULL);

    struct fcgi_parser p;
    struct fcgi_event ev;
    size_t off = 0;
    fcgi_parser_init(&p, NULL);
    expect(&p, &b, &off, FCGI_EV_BEGIN, &ev);
    expect(&p, &b, &off, FCGI_EV_PARAMS_DONE, &ev);
    assert_int_equal(off, params_end);
    /* Half of the body record arrives, the server answers 413 and ends the request. */
    size_t used;
    assert_int_equal(fcgi_parser_feed(&p, b.data + off, 12, &used, &ev), FCGI_EV_STDIN);
    assert_int_equal(used, 12);
    assert_int_equal(ev.len, 4);
    off += used;
    fcgi_parser_reset_request(&p);
    expect(&p, &b, &off, FCGI_EV_BEGIN, &ev); /* the rest of the body and its end are skipped */
    assert_int_equal(ev.request_id, 2);
    expect(&p, &b, &off, FCGI_EV_PARAMS_DONE, &ev);
    assert_string_equal(fcgi_param(&p, "QUERY_STRING"), "n=1");
    assert_string_equal(fcgi_param(&p, "CONTENT_LENGTH"), "");
    expect(&p, &b, &off, FCGI_EV_STDIN_END, &ev);
    fcgi_parser_free(&p);
    fcgi_buf_free(&b);
    fcgi_buf_free(&c);
}

static void other_roles_and_second_requests_are_rejected(void **state)
{
    (void)state;
    struct fcgi_buf b, c;
    fcgi_buf_init(&b);
    fcgi_buf_init(&c);
    param(&c, "QUERY_STRING", "n=5");
    assert_int_equal(fcgi_write_begin_request(&b, 1, FCGI_ROLE_AUTHORIZER, FCGI_FLAG_KEEP_CONN), 0);
    params(&b, 1, &c);
    body(&b, 1, "ignored");
    begin(&b, 2, FCGI_FLAG_KEEP_CONN);
    params(&b, 2, &c);
    begin(&b, 3, 0); /* while 2 is active */
    params(&b, 3, &c);
    body(&b, 3, "not mine");
    body(&b, 2, "mine");
    char *t = run(&b, 0, NULL);
    assert_string_equal(t, "REJECT 1 role=2 status=3\n"
                           "BEGIN 2 keep=1\n"
                           "PARAMS 2: QUERY_STRING=n=5\n"
                           "REJECT 3 role=1 status=1\n"
                           "STDIN 2 mine (4)\n"
                           "STDIN_END 2\n");
    free(t);
    fcgi_buf_free(&b);
    fcgi_buf_free(&c);
}

/* Each stream ends in this error, whole or cut in pieces. */
static void expect_error(const struct fcgi_buf *b, const struct fcgi_limits *limits, const char *message)
{
    for (size_t piece = 0; piece < 10; piece += 3) {
        char *t = run(b, piece, limits);
        const char *e = strstr(t, "ERROR ");
        if (!e || strncmp(e + 6, message, strlen(message)) != 0 || strcmp(e + 6 + strlen(message), "\n") != 0)
            fail_msg("wanted the error \"%s\" (piece %zu), got:\n%s", message, piece, t);
        free(t);
    }
}

static void protocol_errors(void **state)
{
    (void)state;
    struct fcgi_buf b, c;
    fcgi_buf_init(&b);
    fcgi_buf_init(&c);
    param(&c, "QUERY_STRING", "n=5");

    raw(&b, 0, FCGI_REC_BEGIN_REQUEST, 1, 8, 0, "\0\1\0\0\0\0\0\0");
    expect_error(&b, NULL, "unsupported FastCGI version 0");
    b.len = 0;
    nginx_request(&b, 1, FCGI_FLAG_KEEP_CONN, "", NULL);
    raw(&b, 2, FCGI_REC_BEGIN_REQUEST, 1, 8, 0, "\0\1\0\0\0\0\0\0");
    expect_error(&b, NULL, "unsupported FastCGI version 2");

    b.len = 0;
    raw(&b, 1, FCGI_REC_BEGIN_REQUEST, 1, 7, 1, "\0\1\0\0\0\0\0");
    expect_error(&b, NULL, "FCGI_BEGIN_REQUEST of 7 bytes instead of 8");
    b.len = 0;
    raw(&b, 1, FCGI_REC_BEGIN_REQUEST, 1, 9, 7, "\0\1\0\0\0\0\0\0\0");
    expect_error(&b, NULL, "FCGI_BEGIN_REQUEST of 9 bytes instead of 8");

    b.len = 0;
    begin(&b, 1, 0);
    params(&b, 1, &c);
    begin(&b, 1, 0);
    expect_error(&b, NULL, "FCGI_BEGIN_REQUEST for request 1, which is already active");

    b.len = 0;
    begin(&b, 1, 0);
    assert_int_equal(fcgi_write_stream(&b, FCGI_REC_PARAMS, 1, c.data, c.len), 0);
    body(&b, 1, "x");
    expect_error(&b, NULL, "request 1: FCGI_STDIN before the end of its params");

    b.len = 0;
    begin(&b, 1, 0);
    params(&b, 1, &c);
    params(&b, 1, &c);
    expect_error(&b, NULL, "request 1: FCGI_PARAMS after the end of its params");

    /* A body record after the end of the body (the server has not ended the
     * request yet: it is still active). */
    b.len = 0;
    begin(&b, 1, 0);
    params(&b, 1, &c);
    body(&b, 1, "");
    assert_int_equal(fcgi_write_stream(&b, FCGI_REC_STDIN, 1, "late", 4), 0);
    struct fcgi_parser p;
    struct fcgi_event ev;
    size_t off = 0;
    fcgi_parser_init(&p, NULL);
    expect(&p, &b, &off, FCGI_EV_BEGIN, &ev);
    expect(&p, &b, &off, FCGI_EV_PARAMS_DONE, &ev);
    expect(&p, &b, &off, FCGI_EV_STDIN_END, &ev);
    expect(&p, &b, &off, FCGI_EV_ERROR, &ev);
    assert_string_equal(ev.error, "request 1: FCGI_STDIN after the end of its body");
    /* and the error stays */
    size_t used = 1;
    assert_int_equal(fcgi_parser_feed(&p, b.data, b.len, &used, &ev), FCGI_EV_ERROR);
    assert_int_equal(used, 0);
    assert_string_equal(ev.error, "request 1: FCGI_STDIN after the end of its body");
    fcgi_parser_free(&p);

    b.len = 0;
    begin(&b, 1, 0);
    params(&b, 1, &c);
    assert_int_equal(fcgi_write_record(&b, FCGI_REC_DATA, 1, "data", 4), 0);
    expect_error(&b, NULL, "request 1: FCGI_DATA is not part of the responder role");

    static const struct {
        int type;
        const char *message;
    } outbound[] = {
        {FCGI_REC_END_REQUEST, "FCGI_END_REQUEST record (request 1) sent to the application"},
        {FCGI_REC_STDOUT, "FCGI_STDOUT record (request 1) sent to the application"},
        {FCGI_REC_STDERR, "FCGI_STDERR record (request 1) sent to the application"},
        {FCGI_REC_GET_VALUES, "FCGI_GET_VALUES record (request 1) sent to the application"},
        {FCGI_REC_GET_VALUES_RESULT, "FCGI_GET_VALUES_RESULT record (request 1) sent to the application"},
        {FCGI_REC_UNKNOWN_TYPE, "FCGI_UNKNOWN_TYPE record (request 1) sent to the application"},
    };
    for (size_t i = 0; i < sizeof outbound / sizeof outbound[0]; i++) {
        b.len = 0;
        assert_int_equal(fcgi_write_record(&b, outbound[i].type, 1, NULL, 0), 0);
        expect_error(&b, NULL, outbound[i].message);
    }

    static const uint8_t bad_query[] = {14, 0, 'F', 'C', 'G', 'I'};
    b.len = 0;
    assert_int_equal(fcgi_write_record(&b, FCGI_REC_GET_VALUES, 0, bad_query, sizeof bad_query), 0);
    expect_error(&b, NULL, "malformed name-value pair in FCGI_GET_VALUES");

    /* Malformed params: a value past the end, lengths of 2^31-1, a cut length. */
    static const struct {
        uint8_t bytes[10];
        size_t len;
    } bad_params[] = {
        {{5, 10, 'N', 'A', 'M', 'E', 'X', 'v'}, 8},
        {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 'a', 'b'}, 10},
        {{0x80, 0, 0, 1, 0x81, 0}, 6},
        {{3}, 1},
    };
    for (size_t i = 0; i < sizeof bad_params / sizeof bad_params[0]; i++) {
        b.len = 0;
        begin(&b, 1, 0);
        assert_int_equal(fcgi_write_record(&b, FCGI_REC_PARAMS, 1, bad_params[i].bytes, bad_params[i].len), 0);
        assert_int_equal(fcgi_write_record(&b, FCGI_REC_PARAMS, 1, NULL, 0), 0);
        expect_error(&b, NULL, "request 1: malformed name-value pair in FCGI_PARAMS");
    }
    fcgi_buf_free(&b);
    fcgi_buf_free(&c);
}

static void limits_are_enforced(void **state)
{
    (void)state;
    struct fcgi_limits tight = {.max_params_bytes = 40, .max_params = 3, .max_stdin_bytes = 10};
    struct fcgi_buf b, c;
    fcgi_buf_init(&b);
    fcgi_buf_init(&c);

    /* Exactly at every limit: 40 bytes of params in 3 pairs, a 10-byte body. */
    param(&c, "A", "1");                    /* 4 bytes */
    param(&c, "B", "2");                    /* 4 bytes */
    param(&c, "QUERY_STRING", "0123456789abcdefghij"); /* 2 + 12 + 20 = 34... */
    c.len -= 2;                                         /* ...cut to 32: rewrite its value length */
    c.data[8 + 1] = 18;
    assert_int_equal(c.len, 40);
    begin(&b, 1, 0);
    params(&b, 1, &c);
    body(&b, 1, "0123456789");
    char *t = run(&b, 1, &tight);
    assert_string_equal(t, "BEGIN 1 keep=0\nPARAMS 1: A=1 B=2 QUERY_STRING=0123456789abcdefgh\n"
                           "STDIN 1 0123456789 (10)\nSTDIN_END 1\n");
    free(t);

    /* One byte more of params, in a second record: that record is dropped at
     * its header, the request goes on marked too large with the pairs before,
     * and the kept connection serves the next request. */
    b.len = 0;
    begin(&b, 1, FCGI_FLAG_KEEP_CONN);
    assert_int_equal(fcgi_write_record(&b, FCGI_REC_PARAMS, 1, c.data, c.len), 0);
    assert_int_equal(fcgi_write_record(&b, FCGI_REC_PARAMS, 1, "\0", 1), 0);
    assert_int_equal(fcgi_write_record(&b, FCGI_REC_PARAMS, 1, NULL, 0), 0);
    body(&b, 1, "0123456789");
    struct fcgi_buf small;
    fcgi_buf_init(&small);
    param(&small, "A", "1");
    begin(&b, 2, 0);
    params(&b, 2, &small);
    body(&b, 2, "");
    for (size_t piece = 0; piece < 10; piece += 3) {
        t = run(&b, piece, &tight);
        assert_string_equal(t, "BEGIN 1 keep=1\nPARAMS 1: A=1 B=2 QUERY_STRING=0123456789abcdefgh TOO_LARGE: the "
                               "FastCGI params (headers and CGI variables) are over 40 bytes\n"
                               "STDIN 1 0123456789 (10)\nSTDIN_END 1\nBEGIN 2 keep=0\nPARAMS 2: A=1\nSTDIN_END 2\n");
        free(t);
    }
    fcgi_buf_free(&small);

    /* A fourth pair: the first three are kept. */
    c.len = 0;
    param(&c, "A", "1");
    param(&c, "B", "2");
    param(&c, "C", "3");
    param(&c, "D", "4");
    b.len = 0;
    begin(&b, 1, 0);
    params(&b, 1, &c);
    t = run(&b, 1, &tight);
    assert_string_equal(t, "BEGIN 1 keep=0\nPARAMS 1: A=1 B=2 C=3 TOO_LARGE: more than 3 FastCGI params (headers and "
                           "CGI variables)\n");
    free(t);

    /* An eleventh byte of body, over two records. */
    c.len = 0;
    b.len = 0;
    begin(&b, 1, 0);
    params(&b, 1, &c);
    assert_int_equal(fcgi_write_record(&b, FCGI_REC_STDIN, 1, "0123456", 7), 0);
    assert_int_equal(fcgi_write_record(&b, FCGI_REC_STDIN, 1, "789a", 4), 0);
    expect_error(&b, &tight, "request 1: body over 10 bytes");
    t = run(&b, 0, &tight);
    assert_non_null(strstr(t, "STDIN 1 0123456 (7)\nERROR"));
    free(t);

    /* The defaults: 8192 pairs pass (more than Nginx's default buffers can
     * forward), 8193 are too many. */
    c.len = 0;
    for (int i = 0; i < 8193; i++) {
        char name[16];
        snprintf(name, sizeof name, "H%d", i);
        if (i == 8192) {
            b.len = 0;
            begin(&b, 1, 0);
            params(&b, 1, &c);
            t = run(&b, 0, NULL);
            assert_non_null(strstr(t, "PARAMS 1: H0=1"));
            assert_non_null(strstr(t, " H8191=1\n"));
            free(t);
        }
        param(&c, name, "1");
    }
    b.len = 0;
    begin(&b, 1, 0);
    params(&b, 1, &c);
    t = run(&b, 0, NULL);
    assert_non_null(strstr(t, " H8191=1 TOO_LARGE: more than 8192 FastCGI params (headers and CGI variables)\n"));
    free(t);
    fcgi_buf_free(&b);
    fcgi_buf_free(&c);
}

/* Rewrites the STDOUT records of out as STDIN records of a request, so the
 * parser reads them back; checks the framing on the way. */
static char *stdout_read_back(const struct fcgi_buf *out, size_t *records, size_t *largest)
{
    struct fcgi_buf b;
    fcgi_buf_init(&b);
    begin(&b, 1, 0);
    assert_int_equal(fcgi_write_record(&b, FCGI_REC_PARAMS, 1, NULL, 0), 0);
    size_t start = b.len;
    append(&b, out->data, out->len);
    *records = *largest = 0;
    for (size_t pos = start; pos < b.len;) {
        uint8_t *h = b.data + pos;
        size_t len = (size_t)h[4] << 8 | h[5];
        assert_int_equal(h[0], 1);
        assert_int_equal(h[1], FCGI_REC_STDOUT);
        assert_int_equal(h[6], (8 - len % 8) % 8);
        h[1] = FCGI_REC_STDIN;
        (*records)++;
        if (len > *largest) *largest = len;
        pos += 8 + len + h[6];
        assert_true(pos <= b.len);
    }
    struct fcgi_limits roomy = {.max_stdin_bytes = 1 << 24};
    char *t = run(&b, 0, &roomy);
    fcgi_buf_free(&b);
    return t;
}

static void writers_decode_back(void **state)
{
    (void)state;
    struct fcgi_buf out;
    fcgi_buf_init(&out);

    assert_int_equal(fcgi_write_stdout(&out, 1, "", 0), 0);
    assert_int_equal(out.len, 0); /* an empty record would end the stream */
    assert_int_equal(fcgi_write_stdout(&out, 1, "Status: 200 OK\r\n\r\n", 18), 0);
    assert_int_equal(fcgi_write_stdout(&out, 1, "{}", 2), 0);
    assert_int_equal(fcgi_write_stdout_end(&out, 1), 0);
    static const uint8_t head[] = {1, FCGI_REC_STDOUT, 0, 1, 0, 18, 6, 0, 'S'};
    assert_memory_equal(out.data, head, sizeof head);
    assert_int_equal(out.len, (8 + 24) + (8 + 8) + 8);
    size_t records, largest;
    char *t = stdout_read_back(&out, &records, &largest);
    assert_string_equal(t, "BEGIN 1 keep=0\nPARAMS 1:\nSTDIN 1 Status: 200 OK\r\n\r\n{} (20)\nSTDIN_END 1\n");
    assert_int_equal(records, 3);
    free(t);

    /* A large answer goes out in records of 65528 bytes: no padding needed. */
    size_t n = 200000;
    char *big = malloc(n + 1);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++) big[i] = (char)('a' + i % 26);
    big[n] = '\0';
    out.len = 0;
    assert_int_equal(fcgi_write_stdout(&out, 1, big, n), 0);
    assert_int_equal(fcgi_write_stdout_end(&out, 1), 0);
    assert_int_equal(out.len, 4 * 8 + n + (8 - n % 65528 % 8) % 8 + 8);
    assert_int_equal(out.data[4] << 8 | out.data[5], 65528);
    assert_int_equal(out.data[6], 0);
    t = stdout_read_back(&out, &records, &largest);
    assert_int_equal(records, 5); /* 65528 * 3 + 3416, and the end */
    assert_int_equal(largest, 65528);
    assert_true(strncmp(t, "BEGIN 1 keep=0\nPARAMS 1:\nSTDIN 1 ", 33) == 0);
    assert_memory_equal(t + 33, big, n);
    assert_string_equal(t + 33 + n, " (200000)\nSTDIN_END 1\n");
    free(t);
    free(big);

    /* END_REQUEST, BEGIN_REQUEST; what cannot be encoded leaves out unchanged. */
    out.len = 0;
    assert_int_equal(fcgi_write_end_request(&out, 0x1234, 0xdeadbeef, FCGI_STATUS_UNKNOWN_ROLE), 0);
    static const uint8_t end[] = {1, 3, 0x12, 0x34, 0, 8, 0, 0, 0xde, 0xad, 0xbe, 0xef, 3, 0, 0, 0};
    assert_int_equal(out.len, sizeof end);
    assert_memory_equal(out.data, end, sizeof end);
    out.len = 0;
    assert_int_equal(fcgi_write_begin_request(&out, 7, FCGI_ROLE_RESPONDER, FCGI_FLAG_KEEP_CONN), 0);
    static const uint8_t beg[] = {1, 1, 0, 7, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0};
    assert_memory_equal(out.data, beg, sizeof beg);
    size_t len = out.len;
    assert_int_equal(fcgi_write_record(&out, FCGI_REC_STDOUT, 1, out.data, FCGI_CONTENT_MAX + 1), -1);
    assert_int_equal(fcgi_write_end_request(&out, 1, 0, 256), -1);
    assert_int_equal(fcgi_write_begin_request(&out, 1, 0x10000, 0), -1);
    assert_int_equal(fcgi_encode_param(&out, "x", (size_t)0x80000000u, "", 0), -1);
    assert_int_equal(out.len, len);
    assert_int_equal(fcgi_buf_reserve(&out, SIZE_MAX), -1);
    fcgi_buf_free(&out);
}

static void encoded_params_decode_back(void **state)
{
    (void)state;
    /* Values with every byte, including NUL and '=', and lengths around 127/128. */
    struct fcgi_buf c, b;
    fcgi_buf_init(&c);
    fcgi_buf_init(&b);
    char value[300];
    for (size_t i = 0; i < sizeof value; i++) value[i] = (char)i;
    static const size_t lens[] = {0, 1, 127, 128, 129, 255, 256, 300};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        char name[16];
        int nl = snprintf(name, sizeof name, "V%zu", lens[i]);
        assert_int_equal(fcgi_encode_param(&c, name, (size_t)nl, value, lens[i]), 0);
    }
    begin(&b, 1, 0);
    params(&b, 1, &c);
    struct fcgi_parser p;
    struct fcgi_event ev;
    size_t off = 0;
    fcgi_parser_init(&p, NULL);
    expect(&p, &b, &off, FCGI_EV_BEGIN, &ev);
    expect(&p, &b, &off, FCGI_EV_PARAMS_DONE, &ev);
    assert_int_equal(ev.npairs, sizeof lens / sizeof lens[0]);
    for (size_t i = 0; i < ev.npairs; i++) {
        assert_int_equal(ev.pairs[i].value_len, lens[i]);
        assert_memory_equal(ev.pairs[i].value, value, lens[i]);
        assert_int_equal(ev.pairs[i].value[lens[i]], '\0');
    }
    fcgi_parser_free(&p);
    fcgi_buf_free(&c);
    fcgi_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(constants_agree_with_libfcgi),
        cmocka_unit_test(whole_request_in_one_feed),
        cmocka_unit_test(taken_params_outlive_the_request),
        cmocka_unit_test(any_cut_gives_the_same_events),
        cmocka_unit_test(kept_connection_carries_requests_back_to_back),
        cmocka_unit_test(params_take_1_and_4_byte_lengths),
        cmocka_unit_test(empty_params_and_empty_pairs),
        cmocka_unit_test(padding_is_skipped),
        cmocka_unit_test(get_values_round_trip),
        cmocka_unit_test(unknown_types_are_answered),
        cmocka_unit_test(abort_ends_the_request_and_its_rest_is_skipped),
        cmocka_unit_test(an_answer_before_the_body_skips_the_body),
        cmocka_unit_test(other_roles_and_second_requests_are_rejected),
        cmocka_unit_test(protocol_errors),
        cmocka_unit_test(a_room_goes_from_one_parser_to_another_between_requests),
        cmocka_unit_test(limits_are_enforced),
        cmocka_unit_test(writers_decode_back),
        cmocka_unit_test(encoded_params_decode_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
