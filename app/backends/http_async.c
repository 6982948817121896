/* http_async: upstream GETs overlapped on the event loop: curl_multi_socket_action, with
 * libcurl's sockets watched by uv_poll and its timeout kept by a uv_timer. */
#include "backends/http_async.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/http_common.h"
#include "base/list.h"

struct http_async {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer; /* libcurl's next timeout */
    struct list_node transfers;
    struct list_node sockets;
    int reaping, freeing; /* a callback of the reap freed it: done once the reap ends */
};

/* One GET under way. */
struct http_transfer {
    struct list_node node;
    CURL *easy;
    struct http_reply reply;
    http_async_cb cb;
    void *ctx;
};

/* One socket libcurl asked to watch; it goes when libcurl says CURL_POLL_REMOVE. */
struct http_socket {
    struct list_node node;
    uv_poll_t poll;
    curl_socket_t fd;
    struct http_async *owner;
};

static void http_socket_closed(uv_handle_t *h)
{
    free(h->data);
}

/* libcurl forgets the socket itself. The worker's last sweep may have closed the
 * handle already (see http_async_free): then it is left to the process's end. */
static void http_socket_close(struct http_socket *s)
{
    list_remove(&s->node);
    if (uv_is_closing((uv_handle_t *)&s->poll)) return;
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, http_socket_closed);
}

static void http_transfer_free(struct http_async *a, struct http_transfer *t)
{
    list_remove(&t->node);
    curl_multi_remove_handle(a->multi, t->easy);
    curl_easy_cleanup(t->easy);
    http_reply_free(&t->reply);
    free(t);
}

static void http_async_destroy(struct http_async *a);

/* Hands every finished transfer its result. */
static void http_async_reap(struct http_async *a)
{
    CURLMsg *msg;
    int left;
    a->reaping = 1;
    while (!a->freeing && (msg = curl_multi_info_read(a->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        struct http_transfer *t = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        struct backend_result res;
        http_common_result(t->easy, msg->data.result, &t->reply, &res);
        http_async_cb cb = t->cb;
        void *ctx = t->ctx;
        /* The callback may start the next GET: the body stays ours until it returns. */
        list_remove(&t->node);
        curl_multi_remove_handle(a->multi, t->easy);
        cb(ctx, &res);
        curl_easy_cleanup(t->easy);
        http_reply_free(&t->reply);
        free(t);
    }
    a->reaping = 0;
    if (a->freeing) http_async_destroy(a);
}

static void http_async_on_poll(uv_poll_t *h, int status, int events)
{
    struct http_socket *s = h->data;
    struct http_async *a = s->owner;
    int flags = 0;
    if (status < 0) flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    }
    int running;
    curl_multi_socket_action(a->multi, s->fd, flags, &running);
    http_async_reap(a);
}

static void http_async_on_timer(uv_timer_t *t)
{
    struct http_async *a = t->data;
    int running;
    curl_multi_socket_action(a->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    http_async_reap(a);
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for what libcurl waits on, or stop watching it. */
static int http_async_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    struct http_async *a = userp;
    struct http_socket *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) http_socket_close(s);
        return 0;
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) return -1;
        if (uv_poll_init_socket(a->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        s->fd = fd;
        s->owner = a;
        list_push_back(&a->sockets, &s->node);
        curl_multi_assign(a->multi, fd, s);
    }
    int events = 0;
    if (what & CURL_POLL_IN) events |= UV_READABLE;
    if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, http_async_on_poll);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: libcurl wants a call after timeout_ms (-1: none). It must
 * not be called from here, so even 0 goes through the timer. */
static int http_async_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct http_async *a = userp;
    if (timeout_ms < 0) uv_timer_stop(&a->timer);
    else uv_timer_start(&a->timer, http_async_on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* libcurl starts on the first GET, not with the worker: its global set-up (the TLS
 * library's included) maps in pages that a worker never asked for /async-request would
 * keep resident for nothing. */
struct http_async *http_async_new(uv_loop_t *loop, char *err, size_t errlen)
{
    struct http_async *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->loop = loop;
    list_init(&a->transfers);
    list_init(&a->sockets);
    uv_timer_init(loop, &a->timer);
    a->timer.data = a;
    return a;
}

/* The multi handle, made on the first GET; 0, or -1 and why. */
static int http_async_start(struct http_async *a, char *err, size_t errlen)
{
    if (a->multi) return 0;
    if (http_common_init(err, errlen) != 0) return -1;
    if (!(a->multi = curl_multi_init())) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    curl_multi_setopt(a->multi, CURLMOPT_SOCKETFUNCTION, http_async_socket_cb);
    curl_multi_setopt(a->multi, CURLMOPT_SOCKETDATA, a);
    curl_multi_setopt(a->multi, CURLMOPT_TIMERFUNCTION, http_async_timer_cb);
    curl_multi_setopt(a->multi, CURLMOPT_TIMERDATA, a);
    return 0;
}

static void http_async_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void http_async_destroy(struct http_async *a)
{
    struct list_node *n;
    while ((n = list_first(&a->transfers))) {
        struct http_transfer *t = list_entry(n, struct http_transfer, node);
        struct backend_result res = {.status = BACKEND_DOWN};
        snprintf(res.message, sizeof res.message, "the worker is stopping");
        http_async_cb cb = t->cb;
        void *ctx = t->ctx;
        http_transfer_free(a, t);
        cb(ctx, &res);
    }
    if (a->multi) curl_multi_cleanup(a->multi); /* closes the kept connections, through socket_cb */
    while ((n = list_first(&a->sockets))) http_socket_close(list_entry(n, struct http_socket, node));
    uv_timer_stop(&a->timer);
    if (!uv_is_closing((uv_handle_t *)&a->timer)) uv_close((uv_handle_t *)&a->timer, http_async_timer_closed);
}

/* Called from a transfer's callback (the worker's last request ending), it waits for
 * the reap to finish. */
void http_async_free(struct http_async *a)
{
    if (!a || a->freeing) return;
    a->freeing = 1;
    if (!a->reaping) http_async_destroy(a);
}

void http_async_run(struct http_async *a, const struct backend_op *op, double deadline_ms, http_async_cb cb,
                    void *ctx)
{
    struct backend_result res;
    memset(&res, 0, sizeof res);
    if (http_async_start(a, res.message, sizeof res.message) != 0) {
        res.status = BACKEND_DOWN;
        cb(ctx, &res);
        return;
    }
    struct http_transfer *t = calloc(1, sizeof *t);
    if (!t || !(t->easy = curl_easy_init())) {
        free(t);
        memset(&res, 0, sizeof res);
        res.status = BACKEND_DOWN;
        snprintf(res.message, sizeof res.message, "out of memory");
        cb(ctx, &res);
        return;
    }
    t->cb = cb;
    t->ctx = ctx;
    list_init(&t->node);
    if (http_common_prepare(t->easy, op, deadline_ms, &t->reply, &res) != 0 ||
        curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t) != CURLE_OK) {
        curl_easy_cleanup(t->easy);
        free(t);
        cb(ctx, &res);
        return;
    }
    CURLMcode mrc = curl_multi_add_handle(a->multi, t->easy);
    if (mrc != CURLM_OK) {
        memset(&res, 0, sizeof res);
        res.status = BACKEND_DOWN;
        snprintf(res.message, sizeof res.message, "%s", curl_multi_strerror(mrc));
        curl_easy_cleanup(t->easy);
        free(t);
        cb(ctx, &res);
        return;
    }
    list_push_back(&a->transfers, &t->node);
}
