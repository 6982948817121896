/* fcgi_params: the FastCGI parameters a front end sends, read into the request the endpoints see. */
#include "fastcgi/fcgi_params.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A variable's value, NULL when it is absent or empty: some front ends send
 * every CGI variable, empty or not (Caddy: DOCUMENT_URI and SCRIPT_NAME). */
static const char *param_value(const char *kv, const char *name, size_t name_len)
{
    return strncmp(kv, name, name_len) == 0 && kv[name_len] ? kv + name_len : NULL;
}

/* Nginx's $msec, "1764621049.123": digits, a point, digits; anything else
 * counts as absent (0). Read as one integer over a power of ten, so that the
 * quotient is the correctly rounded double, at a tenth of strtod's cost (no
 * locale, exponent or hexadecimal). Digits past 2^53 are dropped. */
static double parse_stamp(const char *s)
{
    const uint64_t exact = (uint64_t)1 << 53;
    uint64_t n = 0, scale = 1;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > (exact - 9) / 10) return 0;
        n = n * 10 + (uint64_t)(*p - '0');
    }
    if (p == s) return 0;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            if (n <= (exact - 9) / 10) {
                n = n * 10 + (uint64_t)(*p - '0');
                scale *= 10;
            }
    return *p || !n ? 0 : (double)n / (double)scale;
}

#define PARAM(kv, name) param_value(kv, name "=", sizeof name)

/* Copies the first n bytes of each part into buf as one string. */
static const char *join_path(char *buf, size_t len, const char *a, size_t alen, const char *b)
{
    if (alen >= len) alen = len - 1;
    memcpy(buf, a, alen);
    snprintf(buf + alen, len - alen, "%s", b);
    return buf;
}

void fcgi_params_to_request(struct request *req, char **envp, char *path_buf, size_t path_len)
{
    memset(req, 0, sizeof *req);
    const char *request_uri = NULL, *document_uri = NULL, *script_name = NULL, *path_info = NULL,
               *content_length = NULL, *request_start = NULL, *v;
    for (char **e = envp; e && *e; e++) {
        const char *kv = *e;
        switch (kv[0]) {
        case 'C':
            if ((v = PARAM(kv, "CONTENT_LENGTH"))) content_length = v;
            break;
        case 'D':
            if ((v = PARAM(kv, "DOCUMENT_URI"))) document_uri = v;
            break;
        case 'P':
            if ((v = PARAM(kv, "PATH_INFO"))) path_info = v;
            break;
        case 'Q':
            if ((v = PARAM(kv, "QUERY_STRING"))) req->query = v;
            break;
        case 'R':
            if ((v = PARAM(kv, "REQUEST_METHOD"))) req->method = v;
            else if ((v = PARAM(kv, "REQUEST_URI"))) request_uri = v;
            else if ((v = PARAM(kv, "REQUEST_ID"))) req->request_id = v;
            else if ((v = PARAM(kv, "REQUEST_START"))) request_start = v;
            else if ((v = PARAM(kv, "REMOTE_ADDR"))) req->remote_addr = v;
            break;
        case 'S':
            if ((v = PARAM(kv, "SCRIPT_NAME"))) script_name = v;
            break;
        }
    }
    /* Nginx sends DOCUMENT_URI (decoded, normalised); other front ends send
     * REQUEST_URI (Caddy, lighttpd, Apache, HAProxy, h2o), or only the CGI pair
     * SCRIPT_NAME + PATH_INFO (cgi-fcgi and hand-written clients). */
    size_t request_path_len = request_uri ? strcspn(request_uri, "?") : 0;
    if (document_uri) req->path = document_uri;
    else if (request_path_len) req->path = join_path(path_buf, path_len, request_uri, request_path_len, "");
    else if (script_name || path_info)
        req->path = join_path(path_buf, path_len, script_name ? script_name : "",
                              script_name ? strlen(script_name) : 0, path_info ? path_info : "");
    else req->path = "/";
    req->request_uri = request_uri;
    if (!req->query) req->query = "";
    if (!req->method) req->method = "GET";
    if (content_length) {
        char *end;
        errno = 0;
        long long n = strtoll(content_length, &end, 10);
        req->content_length = errno || *end || n < 0 ? -1 : n;
    }
    if (request_start) req->request_start = parse_stamp(request_start);
}
