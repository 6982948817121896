/* http_common: the options, the body cap and the result mapping of an upstream GET. */
#include "backends/http_common.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"

static pthread_once_t http_once = PTHREAD_ONCE_INIT;
static CURLcode http_init_rc = CURLE_FAILED_INIT;

static void http_global_init(void)
{
    http_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Once, whichever thread gets here first: curl_global_init must not run twice at once. */
int http_common_init(char *err, size_t errlen)
{
    pthread_once(&http_once, http_global_init);
    if (http_init_rc == CURLE_OK) return 0;
    snprintf(err, errlen, "libcurl failed to initialise: %s", curl_easy_strerror(http_init_rc));
    return -1;
}

/* curl's write callback: appends to the reply, refusing (and so failing the transfer)
 * past HTTP_BODY_MAX. */
static size_t http_reply_write(char *data, size_t size, size_t nmemb, void *userp)
{
    struct http_reply *r = userp;
    size_t n = size * nmemb;
    if (n > HTTP_BODY_MAX - r->len) {
        r->over_cap = 1;
        return 0;
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n + 1) cap *= 2;
        char *p = realloc(r->data, cap);
        if (!p) return 0;
        r->data = p;
        r->cap = cap;
    }
    memcpy(r->data + r->len, data, n);
    r->len += n;
    r->data[r->len] = '\0';
    return n;
}

static void http_fail(struct backend_result *res, enum backend_status status, const char *why)
{
    memset(res, 0, sizeof *res);
    res->status = status;
    snprintf(res->message, sizeof res->message, "%.*s", (int)sizeof res->message - 1, why);
}

int http_common_prepare(CURL *h, const struct backend_op *op, double deadline_ms, struct http_reply *reply,
                        struct backend_result *res)
{
    reply->len = 0;
    reply->over_cap = 0;
    reply->error[0] = '\0';
    if (reply->data) reply->data[0] = '\0';
    reply->started_ms = clock_ms();
    long left_ms = (long)(deadline_ms - reply->started_ms);
    if (left_ms < 1) {
        http_fail(res, BACKEND_DEADLINE, "the deadline passed before the request was sent");
        return -1;
    }
    /* No signals (threads; the event loop), no redirects, HTTP only, and the whole
     * exchange, connecting included, bounded by what is left of the deadline. */
    CURLcode rc = CURLE_OK;
    if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_URL, op->url);
    if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, left_ms);
    if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)HTTP_BODY_MAX);
    if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_USERAGENT, "perfcgi");
    if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_ERRORBUFFER, reply->error);
    if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, http_reply_write);
    if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_WRITEDATA, reply);
    if (rc != CURLE_OK) {
        http_fail(res, BACKEND_DOWN, curl_easy_strerror(rc));
        return -1;
    }
    return 0;
}

void http_common_result(CURL *h, CURLcode rc, const struct http_reply *reply, struct backend_result *res)
{
    double round_trip_ms = clock_ms() - reply->started_ms;
    memset(res, 0, sizeof *res);
    if (rc == CURLE_OPERATION_TIMEDOUT) {
        http_fail(res, BACKEND_DEADLINE, reply->error[0] ? reply->error : curl_easy_strerror(rc));
    } else if (reply->over_cap || rc == CURLE_FILESIZE_EXCEEDED) {
        char why[80];
        snprintf(why, sizeof why, "the answer is over %d bytes", HTTP_BODY_MAX);
        http_fail(res, BACKEND_DOWN, why);
    } else if (rc != CURLE_OK) {
        /* refused, unresolved, reset, cut short: the upstream is not there to answer */
        http_fail(res, BACKEND_DOWN, reply->error[0] ? reply->error : curl_easy_strerror(rc));
    } else {
        long code = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        res->status = BACKEND_OK;
        res->http_status = (int)code;
        res->str = reply->data ? reply->data : "";
        res->len = reply->len;
    }
    res->http_ms = round_trip_ms;
}

void http_reply_free(struct http_reply *reply)
{
    free(reply->data);
    reply->data = NULL;
    reply->len = reply->cap = 0;
}
