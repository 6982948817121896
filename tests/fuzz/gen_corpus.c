/* gen_corpus: writes the checked-in fuzz corpus (`make fuzz-corpus`), so every seed is reproducible. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastcgi/fcgi_codec.h"

static const char *out_dir;

static void save(const char *target, const char *name, const void *data, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/%s", out_dir, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static void must(int rc)
{
    if (rc != 0) {
        fprintf(stderr, "gen_corpus: a writer failed\n");
        exit(1);
    }
}

/* A raw record, for what the writers refuse to produce (bad versions, odd
 * padding, lengths that lie). */
static void raw(struct fcgi_buf *b, int version, int type, unsigned id, size_t len, int pad, const void *content,
                size_t have)
{
    uint8_t h[8] = {(uint8_t)version, (uint8_t)type, (uint8_t)(id >> 8), (uint8_t)id,
                    (uint8_t)(len >> 8), (uint8_t)len, (uint8_t)pad, 0};
    must(fcgi_buf_reserve(b, sizeof h + have + (size_t)pad));
    memcpy(b->data + b->len, h, sizeof h);
    b->len += sizeof h;
    if (have) memcpy(b->data + b->len, content, have);
    b->len += have;
    memset(b->data + b->len, 0, (size_t)pad);
    b->len += (size_t)pad;
}

static void param(struct fcgi_buf *c, const char *name, const char *value)
{
    must(fcgi_encode_param(c, name, strlen(name), value, strlen(value)));
}

/* What Nginx's stock fastcgi_params send for one request. */
static void nginx_params(struct fcgi_buf *c, const char *method, const char *uri, const char *query,
                         const char *length)
{
    char request_uri[512];
    snprintf(request_uri, sizeof request_uri, "%s%s%s", uri, *query ? "?" : "", query);
    param(c, "QUERY_STRING", query);
    param(c, "REQUEST_METHOD", method);
    param(c, "CONTENT_TYPE", *length ? "application/json" : "");
    param(c, "CONTENT_LENGTH", length);
    param(c, "SCRIPT_NAME", uri);
    param(c, "REQUEST_URI", request_uri);
    param(c, "DOCUMENT_URI", uri);
    param(c, "DOCUMENT_ROOT", "/usr/share/nginx/html");
    param(c, "SERVER_PROTOCOL", "HTTP/1.1");
    param(c, "REQUEST_SCHEME", "http");
    param(c, "GATEWAY_INTERFACE", "CGI/1.1");
    param(c, "SERVER_SOFTWARE", "nginx/1.22.1");
    param(c, "REMOTE_ADDR", "127.0.0.1");
    param(c, "REMOTE_PORT", "51234");
    param(c, "SERVER_ADDR", "127.0.0.1");
    param(c, "SERVER_PORT", "8080");
    param(c, "SERVER_NAME", "localhost");
    param(c, "REDIRECT_STATUS", "200");
    param(c, "HTTP_HOST", "localhost:8080");
    param(c, "HTTP_USER_AGENT", "wrk/4.2.0");
    param(c, "HTTP_ACCEPT", "*/*");
}

/* One whole request as Nginx sends it: params in one record, then the body. */
static void request(struct fcgi_buf *b, unsigned id, int flags, const char *method, const char *uri,
                    const char *query, const char *body)
{
    struct fcgi_buf c;
    fcgi_buf_init(&c);
    char length[32] = "";
    if (body) snprintf(length, sizeof length, "%zu", strlen(body));
    nginx_params(&c, method, uri, query, length);
    must(fcgi_write_begin_request(b, (uint16_t)id, FCGI_ROLE_RESPONDER, flags));
    must(fcgi_write_stream(b, FCGI_REC_PARAMS, (uint16_t)id, c.data, c.len));
    must(fcgi_write_record(b, FCGI_REC_PARAMS, (uint16_t)id, NULL, 0));
    if (body) must(fcgi_write_stream(b, FCGI_REC_STDIN, (uint16_t)id, body, strlen(body)));
    must(fcgi_write_record(b, FCGI_REC_STDIN, (uint16_t)id, NULL, 0));
    fcgi_buf_free(&c);
}

static void begin_params(struct fcgi_buf *b, unsigned id, const struct fcgi_buf *c)
{
    must(fcgi_write_begin_request(b, (uint16_t)id, FCGI_ROLE_RESPONDER, FCGI_FLAG_KEEP_CONN));
    must(fcgi_write_stream(b, FCGI_REC_PARAMS, (uint16_t)id, c->data, c->len));
    must(fcgi_write_record(b, FCGI_REC_PARAMS, (uint16_t)id, NULL, 0));
}

static void save_buf(const char *name, struct fcgi_buf *b)
{
    save("fcgi_codec", name, b->data, b->len);
    b->len = 0;
}

static void fcgi_corpus(void)
{
    struct fcgi_buf b, c;
    fcgi_buf_init(&b);
    fcgi_buf_init(&c);

    request(&b, 1, 0, "GET", "/cpu-intensive", "n=1000", NULL);
    save_buf("nginx_get", &b);

    for (int i = 0; i < 3; i++) request(&b, 1, FCGI_FLAG_KEEP_CONN, "GET", "/cached-data", "category=3", NULL);
    save_buf("nginx_keepalive_3_requests", &b);

    request(&b, 1, FCGI_FLAG_KEEP_CONN, "POST", "/mixed", "",
            "{\"items\":[1,2,3],\"note\":\"a body sent in a POST, echoed by no endpoint\"}");
    request(&b, 1, FCGI_FLAG_KEEP_CONN, "HEAD", "/io-intensive", "ms=5", NULL);
    save_buf("nginx_post_then_head", &b);

    /* Params cut into records of odd sizes, one cut inside a 4-byte length. */
    char v200[201];
    memset(v200, 'v', 200);
    v200[200] = '\0';
    param(&c, "QUERY_STRING", "n=5&ms=1");
    param(&c, "HTTP_COOKIE", v200);
    param(&c, "REQUEST_METHOD", "GET");
    must(fcgi_write_begin_request(&b, 1, FCGI_ROLE_RESPONDER, 0));
    size_t cuts[] = {1, 7, 13, 16, 200};
    size_t off = 0;
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0] && off < c.len; i++) {
        size_t n = cuts[i] < c.len - off ? cuts[i] : c.len - off;
        must(fcgi_write_record(&b, FCGI_REC_PARAMS, 1, c.data + off, n));
        off += n;
    }
    must(fcgi_write_stream(&b, FCGI_REC_PARAMS, 1, c.data + off, c.len - off));
    must(fcgi_write_record(&b, FCGI_REC_PARAMS, 1, NULL, 0));
    must(fcgi_write_record(&b, FCGI_REC_STDIN, 1, NULL, 0));
    save_buf("params_split_records", &b);
    c.len = 0;

    /* 4-byte lengths of small values, an empty name and value. */
    static const uint8_t odd_pairs[] = {0x80, 0, 0, 3, 0x80, 0, 0, 2, 'A', 'B', 'C', 'x', 'y', 0, 0, 1, 0, 'N'};
    must(fcgi_write_begin_request(&b, 7, FCGI_ROLE_RESPONDER, FCGI_FLAG_KEEP_CONN));
    must(fcgi_write_record(&b, FCGI_REC_PARAMS, 7, odd_pairs, sizeof odd_pairs));
    must(fcgi_write_record(&b, FCGI_REC_PARAMS, 7, NULL, 0));
    must(fcgi_write_record(&b, FCGI_REC_STDIN, 7, NULL, 0));
    save_buf("params_4byte_lengths", &b);

    /* Lengths with every bit set: 2^31-1 must be refused, not added up. */
    static const uint8_t huge_pair[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 'a', 'b'};
    must(fcgi_write_begin_request(&b, 1, FCGI_ROLE_RESPONDER, 0));
    must(fcgi_write_record(&b, FCGI_REC_PARAMS, 1, huge_pair, sizeof huge_pair));
    must(fcgi_write_record(&b, FCGI_REC_PARAMS, 1, NULL, 0));
    save_buf("params_length_2g", &b);

    static const uint8_t short_pair[] = {5, 10, 'N', 'A', 'M', 'E', 'X', 'v'};
    must(fcgi_write_begin_request(&b, 1, FCGI_ROLE_RESPONDER, 0));
    must(fcgi_write_record(&b, FCGI_REC_PARAMS, 1, short_pair, sizeof short_pair));
    must(fcgi_write_record(&b, FCGI_REC_PARAMS, 1, NULL, 0));
    save_buf("params_truncated_pair", &b);

    static const uint8_t cut_len[] = {0x81, 0x00};
    must(fcgi_write_begin_request(&b, 1, FCGI_ROLE_RESPONDER, 0));
    must(fcgi_write_record(&b, FCGI_REC_PARAMS, 1, cut_len, sizeof cut_len));
    must(fcgi_write_record(&b, FCGI_REC_PARAMS, 1, NULL, 0));
    save_buf("params_cut_4byte_length", &b);

    /* A body record of the largest size, and records with the most padding. */
    uint8_t *body = malloc(FCGI_CONTENT_MAX);
    if (!body) exit(1);
    for (size_t i = 0; i < FCGI_CONTENT_MAX; i++) body[i] = (uint8_t)('a' + i % 26);
    param(&c, "REQUEST_METHOD", "POST");
    param(&c, "CONTENT_LENGTH", "65535");
    begin_params(&b, 1, &c);
    raw(&b, 1, FCGI_REC_STDIN, 1, FCGI_CONTENT_MAX, 1, body, FCGI_CONTENT_MAX);
    must(fcgi_write_record(&b, FCGI_REC_STDIN, 1, NULL, 0));
    save_buf("stdin_record_65535", &b);
    free(body);

    must(fcgi_write_begin_request(&b, 1, FCGI_ROLE_RESPONDER, FCGI_FLAG_KEEP_CONN));
    raw(&b, 1, FCGI_REC_PARAMS, 1, c.len, 255, c.data, c.len);
    raw(&b, 1, FCGI_REC_PARAMS, 1, 0, 255, NULL, 0);
    raw(&b, 1, FCGI_REC_STDIN, 1, 3, 255, "abc", 3);
    raw(&b, 1, FCGI_REC_STDIN, 1, 0, 255, NULL, 0);
    save_buf("padding_255", &b);

    /* Headers promising more than the input holds. */
    raw(&b, 1, FCGI_REC_BEGIN_REQUEST, 1, 8, 0, "\0\1\1\0\0\0\0\0", 8);
    raw(&b, 1, FCGI_REC_PARAMS, 1, FCGI_CONTENT_MAX, 255, c.data, c.len);
    save_buf("truncated_content", &b);
    raw(&b, 1, FCGI_REC_BEGIN_REQUEST, 1, 8, 0, "\0\1\1\0\0\0\0\0", 8);
    must(fcgi_buf_reserve(&b, 7));
    memcpy(b.data + b.len, "\1\4\0\1\0\20\0", 7);
    b.len += 7;
    save_buf("truncated_header", &b);

    /* Zero-length records: empty params and body, an abort with no body. */
    must(fcgi_write_begin_request(&b, 3, FCGI_ROLE_RESPONDER, FCGI_FLAG_KEEP_CONN));
    must(fcgi_write_record(&b, FCGI_REC_PARAMS, 3, NULL, 0));
    must(fcgi_write_record(&b, FCGI_REC_STDIN, 3, NULL, 0));
    must(fcgi_write_begin_request(&b, 4, FCGI_ROLE_RESPONDER, FCGI_FLAG_KEEP_CONN));
    must(fcgi_write_record(&b, FCGI_REC_ABORT_REQUEST, 4, NULL, 0));
    save_buf("zero_length_records", &b);

    begin_params(&b, 1, &c);
    must(fcgi_write_stream(&b, FCGI_REC_STDIN, 1, "part of a body", 14));
    must(fcgi_write_record(&b, FCGI_REC_ABORT_REQUEST, 1, NULL, 0));
    must(fcgi_write_stream(&b, FCGI_REC_STDIN, 1, "the rest, skipped", 17));
    must(fcgi_write_record(&b, FCGI_REC_STDIN, 1, NULL, 0));
    request(&b, 1, 0, "GET", "/cpu-intensive", "n=10", NULL);
    save_buf("abort_mid_body", &b);

    /* Management records. */
    struct fcgi_buf q;
    fcgi_buf_init(&q);
    param(&q, "FCGI_MAX_CONNS", "");
    param(&q, "FCGI_MAX_REQS", "");
    param(&q, "FCGI_MPXS_CONNS", "");
    param(&q, "FCGI_SOMETHING_ELSE", "");
    must(fcgi_write_record(&b, FCGI_REC_GET_VALUES, 0, q.data, q.len));
    must(fcgi_write_record(&b, FCGI_REC_GET_VALUES, 0, NULL, 0));
    request(&b, 1, FCGI_FLAG_KEEP_CONN, "GET", "/status", "", NULL);
    must(fcgi_write_record(&b, FCGI_REC_GET_VALUES, 0, q.data, 18));
    save_buf("get_values", &b);
    fcgi_buf_free(&q);

    must(fcgi_write_record(&b, 200, 0, "?", 1));
    must(fcgi_write_record(&b, FCGI_REC_PARAMS, 0, NULL, 0));
    must(fcgi_write_record(&b, FCGI_REC_BEGIN_REQUEST, 0, "\0\1\0\0\0\0\0\0", 8));
    begin_params(&b, 1, &c);
    must(fcgi_write_record(&b, 42, 1, "future", 6));
    must(fcgi_write_record(&b, 0, 1, NULL, 0));
    must(fcgi_write_record(&b, FCGI_REC_STDIN, 1, NULL, 0));
    save_buf("unknown_types", &b);

    /* Requests to refuse while the connection goes on. */
    must(fcgi_write_begin_request(&b, 1, FCGI_ROLE_AUTHORIZER, FCGI_FLAG_KEEP_CONN));
    must(fcgi_write_stream(&b, FCGI_REC_PARAMS, 1, c.data, c.len));
    must(fcgi_write_record(&b, FCGI_REC_PARAMS, 1, NULL, 0));
    must(fcgi_write_record(&b, FCGI_REC_STDIN, 1, NULL, 0));
    must(fcgi_write_begin_request(&b, 2, FCGI_ROLE_FILTER, FCGI_FLAG_KEEP_CONN));
    must(fcgi_write_record(&b, FCGI_REC_DATA, 2, "data", 4));
    request(&b, 1, 0, "GET", "/", "", NULL);
    save_buf("unknown_roles", &b);

    begin_params(&b, 1, &c);
    must(fcgi_write_begin_request(&b, 2, FCGI_ROLE_RESPONDER, 0));
    must(fcgi_write_stream(&b, FCGI_REC_PARAMS, 2, c.data, c.len));
    must(fcgi_write_stream(&b, FCGI_REC_STDIN, 1, "one", 3));
    must(fcgi_write_stream(&b, FCGI_REC_STDIN, 2, "two", 3));
    must(fcgi_write_record(&b, FCGI_REC_STDIN, 1, NULL, 0));
    save_buf("multiplexed_second_request", &b);

    /* Protocol errors. */
    raw(&b, 0, FCGI_REC_BEGIN_REQUEST, 1, 8, 0, "\0\1\0\0\0\0\0\0", 8);
    save_buf("err_version_0", &b);
    request(&b, 1, FCGI_FLAG_KEEP_CONN, "GET", "/", "", NULL);
    raw(&b, 2, FCGI_REC_BEGIN_REQUEST, 1, 8, 0, "\0\1\0\0\0\0\0\0", 8);
    save_buf("err_version_2_after_request", &b);
    raw(&b, 1, FCGI_REC_BEGIN_REQUEST, 1, 7, 1, "\0\1\0\0\0\0\0", 7);
    save_buf("err_begin_7_bytes", &b);
    begin_params(&b, 1, &c);
    must(fcgi_write_begin_request(&b, 1, FCGI_ROLE_RESPONDER, 0));
    save_buf("err_begin_twice", &b);
    must(fcgi_write_begin_request(&b, 1, FCGI_ROLE_RESPONDER, 0));
    must(fcgi_write_record(&b, FCGI_REC_STDIN, 1, "x", 1));
    save_buf("err_stdin_before_params_end", &b);
    begin_params(&b, 1, &c);
    must(fcgi_write_record(&b, FCGI_REC_PARAMS, 1, c.data, 4));
    save_buf("err_params_after_end", &b);
    begin_params(&b, 1, &c);
    must(fcgi_write_record(&b, FCGI_REC_STDIN, 1, NULL, 0));
    must(fcgi_write_record(&b, FCGI_REC_STDIN, 1, "late", 4));
    save_buf("err_stdin_after_end", &b);
    begin_params(&b, 1, &c);
    must(fcgi_write_record(&b, FCGI_REC_DATA, 1, "data", 4));
    save_buf("err_data_for_responder", &b);
    must(fcgi_write_record(&b, FCGI_REC_STDOUT, 1, "Status: 200\r\n", 13));
    save_buf("err_stdout_to_app", &b);
    must(fcgi_write_record(&b, FCGI_REC_GET_VALUES, 5, NULL, 0));
    save_buf("err_get_values_with_id", &b);
    static const uint8_t bad_query[] = {14, 0, 'F', 'C', 'G', 'I'};
    must(fcgi_write_record(&b, FCGI_REC_GET_VALUES, 0, bad_query, sizeof bad_query));
    save_buf("err_get_values_malformed", &b);

    /* Over the default limits: 300 pairs, 70000 bytes of params. */
    for (int i = 0; i < 300; i++) {
        char name[32];
        snprintf(name, sizeof name, "HTTP_X_%d", i);
        param(&c, name, "1");
    }
    begin_params(&b, 1, &c);
    save_buf("too_many_params", &b);
    c.len = 0;
    char *v70k = malloc(70001);
    if (!v70k) exit(1);
    memset(v70k, 'q', 70000);
    v70k[70000] = '\0';
    param(&c, "QUERY_STRING", v70k);
    free(v70k);
    begin_params(&b, 1, &c);
    must(fcgi_write_record(&b, FCGI_REC_STDIN, 1, NULL, 0));
    save_buf("params_70000_byte_value", &b);
    c.len = 0;

    /* Garbage: pseudo-random bytes, and bytes that look like a version 1 header. */
    uint32_t x = 2463534242u;
    must(fcgi_buf_reserve(&b, 512));
    for (int i = 0; i < 512; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        b.data[b.len++] = (uint8_t)x;
    }
    save_buf("garbage_random", &b);
    must(fcgi_buf_reserve(&b, 64));
    memset(b.data, 1, 64);
    b.len = 64;
    save_buf("garbage_all_ones", &b);
    save_buf("empty", &b);

    fcgi_buf_free(&b);
    fcgi_buf_free(&c);
}

static void query_corpus(void)
{
    static const struct {
        const char *file, *text;
    } seeds[] = {
        {"plain", "n\nn=10"},
        {"second_of_many", "ms\nn=5&ms=20&category=3"},
        {"repeated_key", "n\nn=10&n=20"},
        {"semicolons", "n\na=1;n=7;b"},
        {"percent_escapes", "n\nn=%31%30"},
        {"escaped_name", "n\n%6e=7"},
        {"plus_is_space", "m\nm=a+b"},
        {"bad_escapes", "m\nm=%zz%4%"},
        {"nul_escape", "n\nn=1%002"},
        {"nul_in_name", "n\nn%00=5&n=6"},
        {"empty_query", "n\n"},
        {"empty_value", "n\nn="},
        {"bare_name", "n\nn"},
        {"empty_pairs", "n\n&&;&n=3&"},
        {"empty_name", "\n=5"},
        {"no_newline", "n=42"},
        {"negative", "n\nn=-5"},
        {"plus_sign", "n\nn=+5"},
        {"escaped_plus", "n\nn=%2B5"},
        {"sign_only", "n\nn=-"},
        {"spaces", "n\nn=+5+"},
        {"hex", "n\nn=0x10"},
        {"leading_zeros", "n\nn=-0000000000000000000000042"},
        {"long_max", "n\nn=9223372036854775807"},
        {"long_max_plus_1", "n\nn=9223372036854775808"},
        {"long_min", "n\nn=-9223372036854775808"},
        {"long_min_minus_1", "n\nn=-9223372036854775809"},
        {"whole_query_number", "x\n-123"},
        {"long_name", "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn\n"
                      "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn=1"},
        {"value_31_chars", "n\nn=1234567890123456789012345678901"},
        {"value_32_chars", "n\nn=12345678901234567890123456789012"},
    };
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++)
        save("query", seeds[i].file, seeds[i].text, strlen(seeds[i].text));

    /* Very long: many pairs before the one asked for, and a long value. */
    size_t cap = 20000, len = 0;
    char *s = malloc(cap);
    if (!s) exit(1);
    len += (size_t)snprintf(s, cap, "n\n");
    while (len < 9000) len += (size_t)snprintf(s + len, cap - len, "k%zu=%zu&", len, len);
    len += (size_t)snprintf(s + len, cap - len, "n=5");
    save("query", "very_long", s, len);
    len = (size_t)snprintf(s, cap, "n\nn=");
    while (len < 5000) s[len++] = '9';
    save("query", "very_long_number", s, len);
    free(s);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_corpus DIR (it writes DIR/fcgi_codec and DIR/query)\n");
        return 2;
    }
    out_dir = argv[1];
    fcgi_corpus();
    query_corpus();
    return 0;
}
