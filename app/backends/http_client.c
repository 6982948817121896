/* http_client: one upstream GET at a time, blocking, on a kept libcurl easy handle. */
#include "backends/http_client.h"

#include <stdio.h>
#include <stdlib.h>

#include "backends/http_common.h"

struct http_client {
    CURL *easy; /* keeps its connection between requests */
    struct http_reply reply;
};

struct http_client *http_client_new(char *err, size_t errlen)
{
    if (http_common_init(err, errlen) != 0) return NULL;
    struct http_client *c = calloc(1, sizeof *c);
    if (c) c->easy = curl_easy_init();
    if (!c || !c->easy) {
        free(c);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return c;
}

void http_client_free(struct http_client *c)
{
    if (!c) return;
    curl_easy_cleanup(c->easy);
    http_reply_free(&c->reply);
    free(c);
}

void http_client_run(struct http_client *c, const struct backend_op *op, double deadline_ms,
                     struct backend_result *res)
{
    if (http_common_prepare(c->easy, op, deadline_ms, &c->reply, res) != 0) return;
    CURLcode rc = curl_easy_perform(c->easy);
    http_common_result(c->easy, rc, &c->reply, res);
}
