/* fcgi_params: the FastCGI parameters a front end sends, read into the request the endpoints see. */
#include "fastcgi/fcgi_params.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Copies the first n bytes of each part into buf as one string. */
static const char *join_path(char *buf, size_t len, const char *a, size_t alen, const char *b)
{
    if (alen >= len) alen = len - 1;
    memcpy(buf, a, alen);
    snprintf(buf + alen, len - alen, "%s", b);
    return buf;
}

/* The variables read before the request can be put together. */
struct seen {
    const char *request_uri, *document_uri, *script_name, *path_info, *content_length, *request_start;
};

#define IS(name) (len == sizeof name - 1 && memcmp(n, name, sizeof name - 1) == 0)

/* Notes variable n (len bytes, not NUL-terminated) = v. An empty value counts
 * as absent: some front ends send every CGI variable, empty or not (Caddy:
 * DOCUMENT_URI and SCRIPT_NAME). The last of repeated names wins. */
static void take(struct request *req, struct seen *s, const char *n, size_t len, const char *v)
{
    if (!*v) return;
    switch (len) { /* the length first: most names (HTTP_*) match none */
    case 9:
        if (IS("PATH_INFO")) s->path_info = v;
        break;
    case 10:
        if (IS("REQUEST_ID")) req->request_id = v;
        break;
    case 11:
        if (IS("REQUEST_URI")) s->request_uri = v;
        else if (IS("REMOTE_ADDR")) req->remote_addr = v;
        else if (IS("SCRIPT_NAME")) s->script_name = v;
        break;
    case 12:
        if (IS("DOCUMENT_URI")) s->document_uri = v;
        else if (IS("QUERY_STRING")) req->query = v;
        break;
    case 13:
        if (IS("REQUEST_START")) s->request_start = v;
        break;
    case 14:
        if (IS("REQUEST_METHOD")) req->method = v;
        else if (IS("CONTENT_LENGTH")) s->content_length = v;
        break;
    }
}

/* Puts the request together from what take noted. */
static void finish(struct request *req, const struct seen *s, char *path_buf, size_t path_len)
{
    /* Nginx sends DOCUMENT_URI (decoded, normalised); other front ends send
     * REQUEST_URI (Caddy, lighttpd, Apache, HAProxy, h2o), or only the CGI pair
     * SCRIPT_NAME + PATH_INFO (cgi-fcgi and hand-written clients). */
    size_t request_path_len = s->request_uri ? strcspn(s->request_uri, "?") : 0;
    if (s->document_uri) req->path = s->document_uri;
    else if (request_path_len) req->path = join_path(path_buf, path_len, s->request_uri, request_path_len, "");
    else if (s->script_name || s->path_info)
        req->path = join_path(path_buf, path_len, s->script_name ? s->script_name : "",
                              s->script_name ? strlen(s->script_name) : 0, s->path_info ? s->path_info : "");
    else req->path = "/";
    req->request_uri = s->request_uri;
    if (!req->query) req->query = "";
    if (!req->method) req->method = "GET";
    if (s->content_length) {
        char *end;
        errno = 0;
        long long n = strtoll(s->content_length, &end, 10);
        req->content_length = errno || *end || n < 0 ? -1 : n;
    }
    if (s->request_start) req->request_start = parse_stamp(s->request_start);
}

void fcgi_params_to_request(struct request *req, char **envp, char *path_buf, size_t path_len)
{
    memset(req, 0, sizeof *req);
    struct seen s = {0};
    for (char **e = envp; e && *e; e++) {
        switch (**e) { /* the initials of take's names: the others (HTTP_*, SERVER_*) are not scanned */
        case 'C': case 'D': case 'P': case 'Q': case 'R': case 'S': {
            const char *eq = strchr(*e, '=');
            if (eq) take(req, &s, *e, (size_t)(eq - *e), eq + 1);
            break;
        }
        }
    }
    finish(req, &s, path_buf, path_len);
}

void fcgi_pairs_to_request(struct request *req, const struct fcgi_pair *pairs, size_t npairs, char *path_buf,
                           size_t path_len)
{
    memset(req, 0, sizeof *req);
    struct seen s = {0};
    for (size_t i = 0; i < npairs; i++) take(req, &s, pairs[i].name, pairs[i].name_len, pairs[i].value);
    finish(req, &s, path_buf, path_len);
}
