/* Unit tests of what drivers read from their peers: FastCGI parameters and redis_url. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/redis_client.h"
#include "fastcgi/fcgi_params.h"

static void assert_same_string(const char *a, const char *b)
{
    if (a && b) assert_string_equal(a, b);
    else assert_ptr_equal(a, b);
}

/* Reads envp with fcgi_params_to_request, and the same variables as the
 * codec's pairs with fcgi_pairs_to_request (the event worker's way): both
 * must give the same request. */
static void to_request(struct request *req, char **envp, char *path_buf, size_t path_len)
{
    struct fcgi_pair pairs[16];
    size_t n = 0;
    for (char **e = envp; *e; e++, n++) {
        assert_true(n < sizeof pairs / sizeof pairs[0]);
        const char *eq = strchr(*e, '=');
        pairs[n] = (struct fcgi_pair){*e, (size_t)(eq - *e), eq + 1, strlen(eq + 1)};
    }
    char other_buf[1024];
    assert_true(path_len <= sizeof other_buf);
    struct request other;
    fcgi_pairs_to_request(&other, pairs, n, other_buf, path_len);
    fcgi_params_to_request(req, envp, path_buf, path_len);
    assert_string_equal(req->method, other.method);
    assert_string_equal(req->path, other.path);
    assert_string_equal(req->query, other.query);
    assert_same_string(req->request_uri, other.request_uri);
    assert_same_string(req->request_id, other.request_id);
    assert_same_string(req->remote_addr, other.remote_addr);
    assert_int_equal(req->content_length, other.content_length);
    assert_true(req->request_start == other.request_start);
}

static void nginx_params_use_document_uri(void **state)
{
    (void)state;
    char *envp[] = {"REQUEST_METHOD=HEAD", "REQUEST_URI=/cpu-intensive?n=5", "DOCUMENT_URI=/cpu-intensive",
                    "QUERY_STRING=n=5", "CONTENT_LENGTH=", NULL};
    struct request req;
    char path[64];
    to_request(&req, envp, path, sizeof path);
    assert_string_equal(req.method, "HEAD");
    assert_string_equal(req.path, "/cpu-intensive");
    assert_string_equal(req.query, "n=5");
    assert_int_equal(req.content_length, 0);
}

/* Nginx's request id and its clock as it built the request, for the access log. */
static void request_id_and_start_for_the_access_log(void **state)
{
    (void)state;
    char *envp[] = {"REQUEST_METHOD=GET", "REQUEST_URI=/?a=%22", "REQUEST_ID=4f9c0e6a1b2d3c4e5f60718293a4b5c6",
                    "REQUEST_START=1796157049.123", NULL};
    struct request req;
    char path[64];
    to_request(&req, envp, path, sizeof path);
    assert_string_equal(req.request_uri, "/?a=%22");
    assert_string_equal(req.request_id, "4f9c0e6a1b2d3c4e5f60718293a4b5c6");
    assert_true(req.request_start == 1796157049.123);
    /* Other precisions read the same as strtod would: seconds alone, microseconds,
     * and digits past a double's precision dropped. */
    const char *stamps[] = {"1796157049", "1796157049.123456", "1796157049.1234567891234"};
    for (size_t i = 0; i < sizeof stamps / sizeof *stamps; i++) {
        char kv[64];
        snprintf(kv, sizeof kv, "REQUEST_START=%s", stamps[i]);
        char *one[] = {kv, NULL};
        to_request(&req, one, path, sizeof path);
        assert_true(fabs(req.request_start - strtod(stamps[i], NULL)) < 1e-6);
    }

    char *bad[] = {"REQUEST_START=soon", "REQUEST_ID=", NULL};
    to_request(&req, bad, path, sizeof path);
    assert_true(req.request_start == 0);
    assert_null(req.request_id);
    assert_null(req.request_uri);
    const char *not_times[] = {"REQUEST_START=-1", "REQUEST_START=nan", "REQUEST_START=inf", "REQUEST_START=1.5x",
                               "REQUEST_START=.5", "REQUEST_START=0.000", "REQUEST_START=1e9",
                               "REQUEST_START=99999999999999999999"};
    for (size_t i = 0; i < sizeof not_times / sizeof *not_times; i++) {
        char *one[] = {(char *)not_times[i], NULL};
        to_request(&req, one, path, sizeof path);
        assert_true(req.request_start == 0);
    }
}

static void other_clients_fall_back_to_request_uri(void **state)
{
    (void)state;
    char *envp[] = {"REQUEST_METHOD=GET", "REQUEST_URI=/mixed?n=5&ms=1", "CONTENT_LENGTH=12", NULL};
    struct request req;
    char path[64];
    to_request(&req, envp, path, sizeof path);
    assert_string_equal(req.path, "/mixed");
    assert_string_equal(req.query, "");
    assert_int_equal(req.content_length, 12);

    char *bad[] = {"CONTENT_LENGTH=12x", NULL};
    to_request(&req, bad, path, sizeof path);
    assert_int_equal(req.content_length, -1);
    assert_string_equal(req.method, "GET");
    assert_string_equal(req.path, "/");
}

/* Caddy sends every CGI variable, the empty ones too. */
static void empty_variables_count_as_missing(void **state)
{
    (void)state;
    char *caddy[] = {"REQUEST_METHOD=GET", "DOCUMENT_URI=", "SCRIPT_NAME=", "PATH_INFO=/cpu-intensive",
                     "REQUEST_URI=/cpu-intensive?n=7", "QUERY_STRING=n=7", "CONTENT_LENGTH=", NULL};
    struct request req;
    char path[64];
    to_request(&req, caddy, path, sizeof path);
    assert_string_equal(req.path, "/cpu-intensive");
    assert_string_equal(req.query, "n=7");
    assert_int_equal(req.content_length, 0);

    char *root[] = {"REQUEST_METHOD=", "DOCUMENT_URI=", "SCRIPT_NAME=", "REQUEST_URI=/?x=1", NULL};
    to_request(&req, root, path, sizeof path);
    assert_string_equal(req.path, "/");
    assert_string_equal(req.method, "GET");

    /* A REQUEST_URI that is only a query names no path: the CGI pair does. */
    char *query_only[] = {"REQUEST_URI=?x=1", "SCRIPT_NAME=/mixed", NULL};
    to_request(&req, query_only, path, sizeof path);
    assert_string_equal(req.path, "/mixed");
}

/* Without DOCUMENT_URI and REQUEST_URI the path is SCRIPT_NAME + PATH_INFO,
 * cut to the buffer (16 bytes here), never past it. */
static void cgi_pair_names_the_path(void **state)
{
    (void)state;
    static const struct {
        const char *script_name, *path_info, *path;
    } cases[] = {
        {"SCRIPT_NAME=/app", "PATH_INFO=/mixed", "/app/mixed"},
        {"SCRIPT_NAME=", "PATH_INFO=/mixed", "/mixed"},
        {"SCRIPT_NAME=/cpu-intensive", "PATH_INFO=", "/cpu-intensive"},
        {"SCRIPT_NAME=/0123456789abcdef", "PATH_INFO=/tail", "/0123456789abcd"},
        {"SCRIPT_NAME=/ab", "PATH_INFO=/0123456789abcdef", "/ab/0123456789a"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *envp[] = {(char *)cases[i].script_name, (char *)cases[i].path_info, NULL};
        struct request req;
        char path[16];
        to_request(&req, envp, path, sizeof path);
        assert_string_equal(req.path, cases[i].path);
    }
}

static void redis_urls_parse(void **state)
{
    (void)state;
    struct redis_address a;
    char err[256];
    assert_int_equal(redis_url_parse("redis://127.0.0.1:16379/2", &a, err, sizeof err), 0);
    assert_string_equal(a.host, "127.0.0.1");
    assert_int_equal(a.port, 16379);
    assert_int_equal(a.db, 2);
    assert_int_equal(redis_url_parse("redis://:s3cret@cache", &a, err, sizeof err), 0);
    assert_string_equal(a.host, "cache");
    assert_int_equal(a.port, 6379);
    assert_string_equal(a.password, "s3cret");
    assert_int_equal(redis_url_parse("unix:///run/redis.sock?db=3", &a, err, sizeof err), 0);
    assert_string_equal(a.unix_path, "/run/redis.sock");
    assert_int_equal(a.db, 3);
    const char *bad[] = {"http://x",         "redis://",         "redis://h:0", "redis://h:99999",
                         "redis://h:6379/x", "redis://:s3cret@h:0", "unix:"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(redis_url_parse(bad[i], &a, err, sizeof err), -1);
        /* Says what is wrong without echoing the URL, which may hold a password. */
        assert_non_null(strstr(err, "not redis://"));
        assert_null(strstr(err, "s3cret"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nginx_params_use_document_uri),
        cmocka_unit_test(request_id_and_start_for_the_access_log),
        cmocka_unit_test(other_clients_fall_back_to_request_uri),
        cmocka_unit_test(empty_variables_count_as_missing),
        cmocka_unit_test(cgi_pair_names_the_path),
        cmocka_unit_test(redis_urls_parse),
    };
    return cmocka_run_group_tests_name("params", tests, NULL, NULL);
}
