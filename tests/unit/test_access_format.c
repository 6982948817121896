/* Unit tests of access_format: compiling access_log_format, rendering lines, escaping, JSON lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "base/access_format.h"
#include "base/escape.h"

static char line[ACCESS_LINE_MAX];
static char err[512];

/* 2026-12-01T20:30:49.123456Z */
#define NOW_US 1796157049123456LL

static struct access_record sample(void)
{
    return (struct access_record){
        .remote_addr = "127.0.0.1", .method = "GET", .path = "/cpu-intensive", .query = "n=5&x=1",
        .request_uri = "/cpu-intensive?n=5&x=1", .request_id = "0123456789abcdef0123456789abcdef",
        .endpoint = "cpu_intensive", .worker_class = "event", .status = 200, .body_bytes = 58,
        .took_us = 1234567, .now_us = NOW_US, .queue_wait_us = 2500, .pid = 6091,
    };
}

static const char *render(const char *spec, const struct access_record *r)
{
    struct access_format f;
    if (access_format_compile(&f, spec, err, sizeof err) != 0) fail_msg("%s: %s", spec, err);
    size_t n = access_format_render(&f, r, line);
    access_format_free(&f);
    assert_true(n < sizeof line);
    line[n] = '\0';
    return line;
}

static int setup_utc(void **state)
{
    (void)state;
    setenv("TZ", "UTC", 1);
    tzset();
    return 0;
}

/* The line perfcgi wrote before access_log_format, as it wrote it (snprintf with
 * the fields escaped into buffers of these sizes): the default must not change a byte. */
static const char *old_line(const struct access_record *r, char *out, size_t outlen)
{
    char remote[64], method[64], path[1024], query[1100], when[64];
    time_t sec = (time_t)(r->now_us / 1000000);
    struct tm tm;
    localtime_r(&sec, &tm);
    strftime(when, sizeof when, "%d/%b/%Y:%H:%M:%S %z", &tm);
    remote[escape_text(remote, sizeof remote - 1, r->remote_addr)] = '\0';
    method[escape_text(method, sizeof method - 1, r->method)] = '\0';
    path[escape_text(path, sizeof path - 1, r->path)] = '\0';
    query[escape_text(query, sizeof query - 1, r->query)] = '\0';
    snprintf(out, outlen, "%s - - [%s] \"%s %s%s%s\" %d %zu %.3f %ld\n",
             r->remote_addr && *r->remote_addr ? remote : "-", when, method, path, *r->query ? "?" : "", query,
             r->status, r->body_bytes, (double)r->took_us / 1e3, r->pid);
    return out;
}

static void default_is_the_line_of_before(void **state)
{
    (void)state;
    struct access_record r = sample();
    assert_string_equal(render("default", &r),
                        "127.0.0.1 - - [01/Dec/2026:20:30:49 +0000] \"GET /cpu-intensive?n=5&x=1\" 200 58 "
                        "1234.567 6091\n");
    static char big[5000], old[8192];
    memset(big, 'a', sizeof big - 1);
    const char *paths[] = {"/", "/a\r\n\"b\\", big, "/caf\xc3\xa9"};
    const char *queries[] = {"", "n=1", big, "q=\x01\x7f"};
    const char *remotes[] = {NULL, "", "::1", big};
    const int64_t took[] = {0, 1, 999, 1000, 123456789};
    for (size_t i = 0; i < 4 * 4 * 4 * 5; i++) {
        r.path = paths[i % 4];
        r.query = queries[i / 4 % 4];
        r.remote_addr = remotes[i / 16 % 4];
        r.took_us = took[i / 64];
        assert_string_equal(render("default", &r), old_line(&r, old, sizeof old));
    }
}

static void every_variable_in_text(void **state)
{
    (void)state;
    struct access_record r = sample();
    assert_string_equal(render("$remote_addr|$request|$request_method|$request_uri|$uri|$args|$status|"
                               "$body_bytes_sent|$request_time|$request_time_ms|$msec|$time_local|"
                               "$time_iso8601|$pid|$request_id|$queue_wait|$worker_class|$endpoint",
                               &r),
                        "127.0.0.1|GET /cpu-intensive?n=5&x=1|GET|/cpu-intensive?n=5&x=1|/cpu-intensive|n=5&x=1|"
                        "200|58|1.235|1234.567|1796157049.123|01/Dec/2026:20:30:49 +0000|"
                        "2026-12-01T20:30:49+00:00|6091|0123456789abcdef0123456789abcdef|0.003|event|"
                        "cpu_intensive\n");
    /* Unknown or empty values are "-", as in Nginx's log. */
    r.remote_addr = NULL, r.request_uri = NULL, r.request_id = NULL, r.endpoint = NULL, r.query = "";
    r.queue_wait_us = -1;
    assert_string_equal(render("$remote_addr $request_uri $request_id $endpoint $args $queue_wait [$request]", &r),
                        "- - - - - - [GET /cpu-intensive]\n");
}

static void braces_percent_and_literals(void **state)
{
    (void)state;
    struct access_record r = sample();
    assert_string_equal(render("${status}ok ${uri}x $status% 100%% %(s)sx", &r),
                        "200ok /cpu-intensivex 200% 100% 200x\n");
    assert_string_equal(render("no variables", &r), "no variables\n");
}

static void gunicorn_atoms(void **state)
{
    (void)state;
    struct access_record r = sample();
    assert_string_equal(render("%(h)s %(t)s \"%(r)s\" %(s)s %(b)s %(m)s %(U)s %(q)s %(D)s %(M)s %(L)s %(p)s", &r),
                        "127.0.0.1 [01/Dec/2026:20:30:49 +0000] \"GET /cpu-intensive?n=5&x=1\" 200 58 GET "
                        "/cpu-intensive n=5&x=1 1234567 1234 1.234567 <6091>\n");
}

static void bad_formats_name_the_culprit(void **state)
{
    (void)state;
    struct {
        const char *spec, *expect;
    } cases[] = {
        {"$remote_addr $host", "unknown variable '$host'"},
        {"${nope}", "unknown variable '$nope'"},
        {"${uri", "'$' at offset 0 is not followed by a variable name and '}'"},
        {"x $ y", "'$' at offset 2 is not followed by a variable name"},
        {"%(a)s", "unknown atom '%(a)s'"},
        {"%(h)", "unknown atom '%(h)'"},
        {"%(hh)s", "unknown atom '%(hh)s'"},
        {"%({x-request-id}i)s", "unknown atom '%({x-request-id}i)s'"},
        {"", "is empty"},
        {"$request $request $request $request $request $request $request $request", "could outgrow 16384"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct access_format f;
        assert_int_equal(access_format_compile(&f, cases[i].spec, err, sizeof err), -1);
        if (!strstr(err, cases[i].expect)) fail_msg("%s: %s, not %s", cases[i].spec, err, cases[i].expect);
        assert_null(f.segs);
    }
}

static void text_escapes_request_data(void **state)
{
    (void)state;
    struct access_record r = sample();
    r.path = "/a\r\n127.0.0.1 - - [x] \"GET /forged\" 200 1 1.0 1\\";
    r.query = "q=\"\x1b[31m";
    r.request_uri = "/a%0d%0a\"";
    r.request_id = "id\nforged";
    assert_string_equal(render("$uri|$args|$request_uri|$request_id|$request", &r),
                        "/a\\x0d\\x0a127.0.0.1 - - [x] \\\"GET /forged\\\" 200 1 1.0 1\\\\|q=\\\"\\x1b[31m|"
                        "/a%0d%0a\\\"|id\\x0aforged|GET /a\\x0d\\x0a127.0.0.1 - - [x] \\\"GET /forged\\\" 200 1 "
                        "1.0 1\\\\?q=\\\"\\x1b[31m\n");
}

static void json_escape_is_valid_json(void **state)
{
    (void)state;
    char out[64];
    struct {
        const char *in, *want;
    } cases[] = {
        {"a\"b\\c", "a\\\"b\\\\c"},
        {"\r\n\x01\x1f\x7f", "\\u000d\\u000a\\u0001\\u001f\\u007f"},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
        {"\xff\xfe", "%FF%FE"},
        {"\xc0\xaf", "%C0%AF"},             /* overlong "/" */
        {"\xed\xa0\x80", "%ED%A0%80"},      /* a surrogate */
        {"\xf4\x90\x80\x80", "%F4%90%80%80"}, /* past U+10FFFF */
        {"x\xc3", "x%C3"},                  /* cut at the end */
        {"\xe2\x82x", "%E2%82x"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        out[escape_json(out, sizeof out - 1, cases[i].in)] = '\0';
        assert_string_equal(out, cases[i].want);
    }
    /* Cut between sequences, never inside one. */
    assert_int_equal(escape_json(out, 7, "ab\n"), 2);
    assert_int_equal(escape_json(out, 8, "ab\n"), 8);
    assert_int_equal(escape_json(out, 4, "abc\xe2\x82\xac"), 3);
    assert_int_equal(escape_json(out, 5, "ab\xff"), 5);
    assert_int_equal(escape_json(out, 4, "ab\xff"), 2);
}

/* Parses a JSON line back: one object, one line, the fields in order. */
static json_t *parse_line(const char *text)
{
    size_t n = strlen(text);
    assert_true(n > 0 && text[n - 1] == '\n');
    assert_null(memchr(text, '\n', n - 1));
    json_error_t jerr;
    json_t *obj = json_loadb(text, n - 1, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj) fail_msg("not JSON (%s at %d): %s", jerr.text, jerr.position, text);
    assert_true(json_is_object(obj));
    return obj;
}

static void json_lines_have_every_variable(void **state)
{
    (void)state;
    struct access_record r = sample();
    json_t *obj = parse_line(render("json", &r));
    static const char *const keys[] = {
        "remote_addr", "request", "request_method", "request_uri", "uri", "args", "status", "body_bytes_sent",
        "request_time", "request_time_ms", "msec", "time_local", "time_iso8601", "pid", "request_id",
        "queue_wait", "worker_class", "endpoint",
    };
    assert_int_equal(json_object_size(obj), sizeof keys / sizeof keys[0]);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) assert_non_null(json_object_get(obj, keys[i]));
    assert_string_equal(json_string_value(json_object_get(obj, "request")), "GET /cpu-intensive?n=5&x=1");
    assert_string_equal(json_string_value(json_object_get(obj, "uri")), "/cpu-intensive");
    assert_string_equal(json_string_value(json_object_get(obj, "args")), "n=5&x=1");
    assert_string_equal(json_string_value(json_object_get(obj, "time_iso8601")), "2026-12-01T20:30:49+00:00");
    assert_string_equal(json_string_value(json_object_get(obj, "worker_class")), "event");
    assert_int_equal(json_integer_value(json_object_get(obj, "status")), 200);
    assert_int_equal(json_integer_value(json_object_get(obj, "body_bytes_sent")), 58);
    assert_int_equal(json_integer_value(json_object_get(obj, "pid")), 6091);
    assert_true(json_real_value(json_object_get(obj, "request_time")) == 1.235);
    assert_true(json_real_value(json_object_get(obj, "queue_wait")) == 0.003);
    assert_true(json_real_value(json_object_get(obj, "msec")) == 1796157049.123);
    json_decref(obj);
    /* The exact bytes of the start, the field order included. */
    assert_memory_equal(line, "{\"remote_addr\":\"127.0.0.1\",\"request\":\"GET /cpu-intensive?n=5&x=1\",", 66);

    /* Unknown values are null; an empty query is "". */
    r.remote_addr = "", r.request_uri = NULL, r.request_id = NULL, r.endpoint = NULL, r.query = "";
    r.queue_wait_us = -1;
    obj = parse_line(render("json", &r));
    const char *nulls[] = {"remote_addr", "request_uri", "request_id", "endpoint", "queue_wait"};
    for (size_t i = 0; i < 5; i++) assert_true(json_is_null(json_object_get(obj, nulls[i])));
    assert_string_equal(json_string_value(json_object_get(obj, "args")), "");
    json_decref(obj);
}

/* Every byte a client can put in a URI: one valid line that reads back as what
 * was sent (valid UTF-8 as is, other bytes as %XX). */
static void json_survives_any_byte(void **state)
{
    (void)state;
    char every[256];
    for (int i = 1; i < 256; i++) every[i - 1] = (char)i;
    every[255] = '\0';
    struct access_record r = sample();
    r.path = r.query = r.request_uri = r.request_id = r.method = r.remote_addr = every;
    json_t *obj = parse_line(render("json", &r));
    const char *uri = json_string_value(json_object_get(obj, "uri"));
    assert_non_null(uri);
    for (int i = 1; i < 0x80; i++) assert_int_equal((unsigned char)uri[i - 1], i);
    assert_memory_equal(uri + 127, "%80%81", 6);
    json_decref(obj);

    /* Cut to bounds, the longest line still one valid object within the limit. */
    static char big[20000];
    memset(big, '\n', sizeof big - 1);
    r.path = r.query = r.request_uri = r.request_id = r.method = r.remote_addr = r.endpoint = big;
    json_decref(parse_line(render("json", &r)));
    assert_true(strlen(line) < ACCESS_LINE_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(default_is_the_line_of_before),
        cmocka_unit_test(every_variable_in_text),
        cmocka_unit_test(braces_percent_and_literals),
        cmocka_unit_test(gunicorn_atoms),
        cmocka_unit_test(bad_formats_name_the_culprit),
        cmocka_unit_test(text_escapes_request_data),
        cmocka_unit_test(json_escape_is_valid_json),
        cmocka_unit_test(json_lines_have_every_variable),
        cmocka_unit_test(json_survives_any_byte),
    };
    return cmocka_run_group_tests_name("access_format", tests, setup_utc, NULL);
}
