/* worker_event: the event class: one libuv loop multiplexing FastCGI connections,
 * with Redis and PostgreSQL driven from the same loop. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "fastcgi/fcgi_codec.h"
#include "base/list.h"
#include "base/log.h"
#include "backends/http_async.h"
#include "backends/pg_async.h"
#include "backends/redis_async.h"
#include "base/scoreboard.h"
#include "fastcgi/fcgi_params.h"
#include "worker/accept_backlog.h"
#include "worker/worker.h"
#include "worker/worker_request.h"

struct ev_conn;

/* What a connection's deadline is for. */
enum ev_due { DUE_NONE, DUE_IDLE, DUE_READ };

/* A worker that leaves new connections to a sibling (scoreboard_should_yield:
 * the first idle one, or when all are busy, one holding fewer than ACCEPT_SLACK
 * connections under this one) pauses accepting for ACCEPT_YIELD_MS; a connection
 * still waiting after the pause is its own to take, and so are those queued behind
 * it (event_worker_on_yield_over, worker/accept_backlog). */
#define ACCEPT_SLACK 2
#define ACCEPT_YIELD_MS 2
/* A connection with more unsent output than this is not read until the client
 * takes some: one that sends records and never reads the answers cannot make
 * the worker buffer without bound. One read (16 KiB) adds at most twice its
 * size in answers, so the output stays below OUT_CAP + 32 KiB. */
#define OUT_CAP (64 * 1024)
/* How long a worker goes without beginning a request, after connections closed,
 * before it hands the memory they freed back to the kernel (event_worker_on_rest). */
#define REST_MS 1000

/* About the requests a worker has in flight at once under a steady load. */
#define EV_SPARES_MAX 8

/* One request from its params to its answer. It outlives its connection when
 * the web server hangs up while a backend operation is under way. */
struct ev_req {
    struct event_worker *w;
    struct ev_conn *conn; /* NULL once the connection is gone */
    uint16_t id;
    void *params; /* the parser's params, handed over when the request outlives them */
    int sleep_ready;
    int started;                  /* the exchange runs (the body has arrived) */
    int in_start, finished_early; /* a backend answered before its start returned */
    /* From here on each field is set before it is read (wr by worker_request_begin,
     * but for its reading flag; ex by exchange_start): a new request zeroes only
     * what comes before wr. */
    struct worker_request wr;
    uv_timer_t sleep;
    struct backend_result early;
    char path[1024];      /* the path, when put together from two params */
    char too_large[128];  /* why the params were refused, the parser's message */
    struct exchange ex;
};

struct ev_conn {
    struct event_worker *w;
    struct list_node link; /* in w->conns */
    int fd;
    uv_poll_t poll;
    int watching; /* the UV_READABLE | UV_WRITABLE events poll watches now */
    uv_timer_t timer; /* fires at or before due */
    enum ev_due due_kind; /* keepalive_timeout between requests, request_read_timeout while one arrives */
    uint64_t due;         /* when due_kind is up, on the loop's clock (ms) */
    uint64_t timer_due;   /* when the timer fires, if active */
    int handles_open;
    struct fcgi_parser parser;
    struct fcgi_buf out;
    size_t out_off;
    struct ev_req *req;
    int served;  /* requests answered on this connection */
    int reading; /* a request has begun and its body has not all arrived */
    int close_after_flush, closing;
};

struct event_worker {
    uv_loop_t loop;
    const struct worker_env *env;
    const struct settings *cfg;
    struct redis_async *redis;
    struct pg_async *pool;
    struct http_async *http;
    uv_poll_t listeners[SETTINGS_MAX_BINDS];
    int accepting;
    uv_signal_t sig_term, sig_usr1;
    uv_timer_t yield; /* listeners paused while siblings take new connections */
    struct accept_backlog backlog; /* per listener, connections that outwaited a pause: taken without yielding */
    struct list_node conns; /* newest first */
    int nconns, nreqs;
    /* Ended requests' structs, kept for the next ones to take without a malloc:
     * a few per worker, not one per connection, which would hold them on every
     * idle kept connection (thousands after a burst). */
    struct ev_req *spares;
    int nspares;
    /* Likewise the buffers of connections between requests (ev_conn_lend): a
     * thousand kept connections then hold their structs only. */
    struct fcgi_room rooms[EV_SPARES_MAX];
    struct fcgi_buf outs[EV_SPARES_MAX];
    int nrooms, nouts;
    uv_timer_t rest; /* armed by a connection's close: malloc_trim once the worker rests */
    unsigned long begun, begun_at_rest; /* requests begun, in all and when rest was armed */
    int stopping;
    int draining; /* max_requests taken: no new connection, kept ones close */
};

static void ev_conn_close(struct ev_conn *c);
static void ev_conn_flush(struct ev_conn *c);
static void event_worker_on_accept(uv_poll_t *h, int status, int events);
static void event_worker_publish_connections(struct event_worker *w);
static void event_worker_listen(struct event_worker *w);
static void event_worker_maybe_exit(struct event_worker *w);
static void event_worker_drain(struct event_worker *w);

/* ---- requests ---- */

static void ev_req_release(struct ev_req *r)
{
    free(r->params);
    free(r);
}

static void ev_req_free_cb(uv_handle_t *h)
{
    ev_req_release(h->data);
}

/* An ended request's struct is kept as a spare, for a next request to take
 * without a malloc (one with a sleep timer is not: its handle closes
 * asynchronously; nor one holding params it took over). */
static void ev_req_free(struct ev_req *r)
{
    struct event_worker *w = r->w;
    w->nreqs--;
    exchange_clear(&r->ex);
    if (r->sleep_ready) {
        r->sleep.data = r;
        uv_close((uv_handle_t *)&r->sleep, ev_req_free_cb);
    } else if (!r->params && w->nspares < EV_SPARES_MAX) {
        r->conn = (struct ev_conn *)w->spares; /* the list's link, while it is a spare */
        w->spares = r;
        w->nspares++;
    } else {
        ev_req_release(r);
    }
}

/* The request's strings point into the parser's params, which stay until the
 * request ends on its connection; one that outlives that (ev_req_abandon)
 * takes them over. Params over the codec's limits are answered 413 (with the
 * params kept before the limit, for the log). */
static struct ev_req *ev_req_new(struct ev_conn *c, const struct fcgi_event *e)
{
    struct event_worker *w = c->w;
    struct ev_req *r = w->spares;
    if (r) {
        w->spares = (struct ev_req *)r->conn;
        w->nspares--;
    } else if (!(r = malloc(sizeof *r))) {
        return NULL;
    }
    memset(r, 0, offsetof(struct ev_req, wr));
    r->wr.reading = 0;
    struct request req;
    fcgi_pairs_to_request(&req, e->pairs, e->npairs, r->path, sizeof r->path);
    if (!req.remote_addr) req.remote_addr = "";
    if (e->too_large) {
        snprintf(r->too_large, sizeof r->too_large, "%s", e->error);
        req.too_large = r->too_large;
    }
    r->w = c->w;
    r->conn = c;
    r->id = c->parser.request_id;
    exchange_start(&r->ex, &req, c->w->cfg);
    c->w->nreqs++;
    c->w->begun++;
    return r;
}

/* The answer is ready: write it (if anyone still listens), count it, let go. */
static void ev_req_finish(struct ev_req *r)
{
    struct ev_conn *c = r->conn;
    struct event_worker *w = r->w;
    struct pg_pool_stats ps;
    pg_async_stats(w->pool, &ps);
    worker_request_end(w->env, &r->wr, &r->ex, &ps);
    if (c) {
        /* The head and a short body in one record: one record less to write and
         * for the web server to read. */
        char out[2048];
        size_t n = exchange_head(&r->ex, out, 512);
        size_t body_len = r->ex.head_only ? 0 : r->ex.resp.body_len;
        if (body_len <= sizeof out - n) {
            if (body_len) memcpy(out + n, r->ex.resp.body, body_len);
            n += body_len;
            body_len = 0;
        }
        int failed = fcgi_write_stdout(&c->out, r->id, out, n) != 0;
        if (body_len) failed |= fcgi_write_stdout(&c->out, r->id, r->ex.resp.body, body_len) != 0;
        failed |= fcgi_write_stdout_end(&c->out, r->id) != 0;
        failed |= fcgi_write_end_request(&c->out, r->id, 0, FCGI_STATUS_REQUEST_COMPLETE) != 0;
        c->req = NULL;
        c->served++;
        if (failed || !c->parser.keep_conn) c->close_after_flush = 1;
        fcgi_parser_reset_request(&c->parser);
        ev_conn_flush(c);
    }
    ev_req_free(r);
    event_worker_maybe_exit(w);
}

/* The client is gone (hung up, or aborted the request). A request under way
 * finishes unheard; one that never began is over now, counted as 499 (client
 * closed), so that it does not stay "in flight" on the scoreboard. */
static void ev_req_abandon(struct ev_req *r)
{
    r->params = fcgi_parser_take_params(&r->conn->parser);
    r->conn = NULL;
    if (r->started) return;
    r->started = 1;
    r->ex.resp.status = 499;
    ev_req_finish(r);
}

static void ev_op_done(void *ctx, const struct backend_result *res);

static void ev_op_on_sleep(uv_timer_t *t)
{
    struct backend_result res = {.status = BACKEND_OK};
    ev_op_done(t->data, &res);
}

/* Starts ex.op; its result comes back through ev_op_done. */
static void ev_op_start(struct ev_req *r)
{
    struct event_worker *w = r->w;
    switch (r->ex.op.kind) {
    case BACKEND_REDIS:
        redis_async_run(w->redis, &r->ex.op, ev_op_done, r);
        break;
    case BACKEND_PG:
        pg_async_run(w->pool, &r->ex.op, r->ex.deadline_ms, ev_op_done, r);
        break;
    case BACKEND_HTTP:
        http_async_run(w->http, &r->ex.op, r->ex.deadline_ms, ev_op_done, r);
        break;
    case BACKEND_SLEEP:
        if (!r->sleep_ready) {
            uv_timer_init(&w->loop, &r->sleep);
            r->sleep_ready = 1;
        }
        r->sleep.data = r;
        uv_timer_start(&r->sleep, ev_op_on_sleep, (uint64_t)r->ex.op.sleep_ms, 0);
        break;
    case BACKEND_NONE: {
        struct backend_result res = {.status = BACKEND_OK};
        ev_op_done(r, &res);
        break;
    }
    }
}

/* Steps the endpoint from res until it answers or waits on a backend. An
 * operation that fails at once answers inside ev_op_start: that result is
 * carried here instead of recursing. */
static void ev_req_advance(struct ev_req *r, const struct backend_result *res)
{
    worker_request_doing(&r->wr, &r->ex, INFLIGHT_CPU);
    enum step s = exchange_step(&r->ex, res);
    while (s == STEP_BACKEND) {
        r->in_start = 1;
        r->finished_early = 0;
        worker_request_doing(&r->wr, &r->ex, INFLIGHT_WAITING);
        ev_op_start(r);
        r->in_start = 0;
        if (!r->finished_early) return;
        worker_request_doing(&r->wr, &r->ex, INFLIGHT_CPU);
        s = exchange_step(&r->ex, &r->early);
    }
    worker_request_doing(&r->wr, &r->ex, INFLIGHT_ANSWERING);
    ev_req_finish(r);
}

static void ev_op_done(void *ctx, const struct backend_result *res)
{
    struct ev_req *r = ctx;
    if (r->in_start) { /* only failures come back this early: no reply memory to keep */
        r->early = *res;
        r->early.str = NULL;
        r->finished_early = 1;
        return;
    }
    ev_req_advance(r, res);
}

/* ---- connections ---- */

/*
 * glibc's malloc keeps what a burst of connections freed (their structs and
 * buffers, 2 KiB and more each, interleaved with what stays) and returns none
 * of it while the heap's top is in use: after thousands of connections a worker
 * held megabytes it no longer used. Once it has rested REST_MS since the last
 * close, with no request begun, malloc_trim gives the free pages back, as
 * jemalloc's decay does on its own. A worker under load re-arms instead (one
 * timer start a second, never per request).
 */
static void event_worker_on_rest(uv_timer_t *t)
{
    struct event_worker *w = t->data;
    if (w->stopping) return;
    if (w->nreqs || w->begun != w->begun_at_rest) {
        w->begun_at_rest = w->begun;
        uv_timer_start(&w->rest, event_worker_on_rest, REST_MS, 0);
        return;
    }
    malloc_trim(0);
}

static void event_worker_rest_soon(struct event_worker *w)
{
    if (w->stopping || uv_is_active((uv_handle_t *)&w->rest)) return;
    w->begun_at_rest = w->begun;
    uv_timer_start(&w->rest, event_worker_on_rest, REST_MS, 0);
}

static void ev_conn_handle_closed(uv_handle_t *h)
{
    struct ev_conn *c = h->data;
    if (--c->handles_open == 0) {
        fcgi_parser_free(&c->parser);
        fcgi_buf_free(&c->out);
        free(c);
    }
}

static void ev_conn_close(struct ev_conn *c)
{
    if (c->closing) return;
    c->closing = 1;
    struct event_worker *w = c->w;
    if (c->req) {
        struct ev_req *r = c->req;
        c->req = NULL;
        ev_req_abandon(r);
    }
    list_remove(&c->link);
    w->nconns--;
    uv_poll_stop(&c->poll);
    c->watching = 0;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->poll, ev_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, ev_conn_handle_closed);
    close(c->fd);
    if (!w->accepting && !w->stopping && !w->draining) { /* room again under worker_connections */
        w->accepting = 1;
        event_worker_listen(w);
    }
    event_worker_publish_connections(w);
    event_worker_rest_soon(w);
    event_worker_maybe_exit(w);
}

static void ev_conn_on_timer(uv_timer_t *t)
{
    struct ev_conn *c = t->data;
    uint64_t now = uv_now(&c->w->loop);
    if (c->due_kind == DUE_NONE) return;
    if (now < c->due) { /* the deadline moved on since the timer was set */
        c->timer_due = c->due;
        uv_timer_start(&c->timer, ev_conn_on_timer, c->due - now, 0);
        return;
    }
    if (c->due_kind == DUE_READ)
        log_info("closing a FastCGI connection: request %u not received within request_read_timeout (%g s)",
                 c->parser.request_id, c->w->cfg->request_read_timeout);
    ev_conn_close(c);
}

/*
 * Gives the connection its deadline, `seconds` from now (DUE_NONE: none). The
 * timer is only set again when it must fire sooner than it will; a later
 * deadline is kept here, and the timer, when it fires, sets itself for the
 * rest (libev's "be smart about timeouts"): a request on a kept connection
 * costs no timer operation instead of three.
 */
static void ev_conn_deadline(struct ev_conn *c, enum ev_due kind, double seconds)
{
    c->due_kind = kind;
    if (kind == DUE_NONE) return;
    uint64_t ms = (uint64_t)(seconds * 1e3);
    if (!ms) ms = 1;
    c->due = uv_now(&c->w->loop) + ms;
    if (uv_is_active((uv_handle_t *)&c->timer) && c->timer_due <= c->due) return;
    c->timer_due = c->due;
    uv_timer_start(&c->timer, ev_conn_on_timer, ms, 0);
}

static void ev_conn_on_io(uv_poll_t *h, int status, int events);

static size_t ev_conn_pending(const struct ev_conn *c)
{
    return c->out.len - c->out_off;
}

/* Reads while the output is under OUT_CAP; writes while there is output. Only
 * a change reaches libuv: each uv_poll_start takes the descriptor out of epoll
 * and puts it back, two system calls. */
static void ev_conn_watch(struct ev_conn *c)
{
    size_t pending = ev_conn_pending(c);
    int events = (pending <= OUT_CAP ? UV_READABLE : 0) | (pending ? UV_WRITABLE : 0);
    if (events == c->watching) return;
    c->watching = events;
    uv_poll_start(&c->poll, events, ev_conn_on_io);
}

/* A connection between requests lends its parser's room and its emptied output
 * buffer to the worker's spares (freed beyond EV_SPARES_MAX), and borrows them
 * back when a request arrives: the few in use at once serve every connection. */
static void ev_conn_lend(struct ev_conn *c)
{
    struct event_worker *w = c->w;
    struct fcgi_room room;
    if (fcgi_parser_give_room(&c->parser, &room)) {
        if (w->nrooms < EV_SPARES_MAX) w->rooms[w->nrooms++] = room;
        else fcgi_room_free(&room);
    }
    if (c->out.data && !ev_conn_pending(c)) {
        c->out.len = c->out_off = 0;
        if (w->nouts < EV_SPARES_MAX) w->outs[w->nouts++] = c->out;
        else fcgi_buf_free(&c->out);
        fcgi_buf_init(&c->out);
    }
}

static void ev_conn_borrow(struct ev_conn *c)
{
    struct event_worker *w = c->w;
    if (w->nrooms && fcgi_parser_take_room(&c->parser, &w->rooms[w->nrooms - 1])) w->nrooms--;
    if (!c->out.data && w->nouts) c->out = w->outs[--w->nouts];
}

/* With no request under way a connection waits keepalive_timeout for the next
 * one, from the last time it made progress (an answer taken in part counts:
 * a client that stops reading is idle too). */
static void ev_conn_idle(struct ev_conn *c)
{
    if (c->req || c->reading || c->closing) return;
    /* Past max_requests the served ones go (Nginx retries a request that meets
     * the closed connection); a stop closes none (see event_worker_on_term). */
    if (c->w->draining && c->served) {
        ev_conn_close(c);
        return;
    }
    ev_conn_deadline(c, DUE_IDLE, c->w->cfg->keepalive_timeout);
    ev_conn_lend(c);
}

static void ev_conn_flush(struct ev_conn *c)
{
    int progress = 0;
    while (ev_conn_pending(c)) {
        ssize_t n = send(c->fd, c->out.data + c->out_off, ev_conn_pending(c), MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            progress = 1;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            ev_conn_watch(c);
            if (progress || c->due_kind == DUE_NONE) ev_conn_idle(c);
            return;
        }
        ev_conn_close(c);
        return;
    }
    c->out.len = c->out_off = 0;
    if (c->close_after_flush) {
        ev_conn_close(c);
        return;
    }
    ev_conn_watch(c);
    ev_conn_idle(c);
}

/* Acts on one parser event; returns -1 once the connection is closed. Answers
 * to records are queued in c->out; ev_conn_read writes them once per read. */
static int ev_conn_event(struct ev_conn *c, const struct fcgi_event *e)
{
    struct event_worker *w = c->w;
    switch (e->type) {
    case FCGI_EV_BEGIN:
        /* From here the request must arrive whole within request_read_timeout. */
        c->reading = 1;
        ev_conn_deadline(c, DUE_READ, w->cfg->request_read_timeout);
        return 0;
    case FCGI_EV_PARAMS_DONE: {
        /* Past max_requests, a kept connection is closed unanswered: Nginx
         * retries the request on a fresh connection, to another worker. One
         * accepted before the limit still gets its answer (Nginx would not
         * retry a request that fails on a fresh connection). */
        int taken = worker_take_request();
        if (!taken && c->served) {
            ev_conn_close(c);
            return -1;
        }
        c->req = ev_req_new(c, e);
        if (!c->req) {
            if (taken) worker_give_back_request();
            ev_conn_close(c);
            return -1;
        }
        worker_request_begin(&c->req->wr, &c->req->ex);
        if (worker_at_limit()) event_worker_drain(w);
        return 0;
    }
    case FCGI_EV_STDIN_END: {
        struct ev_req *r = c->req;
        c->reading = 0;
        ev_conn_deadline(c, DUE_NONE, 0);
        if (r && !r->started) {
            r->started = 1;
            ev_req_advance(r, NULL);
        }
        return c->closing ? -1 : 0;
    }
    case FCGI_EV_ABORT:
        /* The web server gave up: end the request now; the exchange runs to
         * its end unheard. */
        if (c->req) {
            struct ev_req *r = c->req;
            c->req = NULL;
            ev_req_abandon(r);
        }
        c->reading = 0;
        fcgi_write_end_request(&c->out, e->request_id, 0, FCGI_STATUS_REQUEST_COMPLETE);
        if (!c->parser.keep_conn) c->close_after_flush = 1;
        fcgi_parser_reset_request(&c->parser);
        return 0;
    case FCGI_EV_REJECT:
        fcgi_write_end_request(&c->out, e->request_id, 0, e->protocol_status);
        /* Without FCGI_KEEP_CONN the connection ends with this answer, unless
         * a request is active on it (being read or run): that one goes on. */
        if (!e->keep_conn && !c->parser.request_id && !c->req) c->close_after_flush = 1;
        return 0;
    case FCGI_EV_GET_VALUES: {
        struct fcgi_values v = {(unsigned)w->cfg->worker_connections, (unsigned)w->cfg->worker_connections, 0};
        fcgi_write_get_values_result(&c->out, e->data, e->len, &v);
        return 0;
    }
    case FCGI_EV_UNKNOWN_TYPE:
        fcgi_write_unknown_type(&c->out, e->record_type);
        return 0;
    case FCGI_EV_ERROR:
        log_debug("closing a FastCGI connection: %s", e->error);
        ev_conn_close(c);
        return -1;
    case FCGI_EV_STDIN:
    case FCGI_EV_NEED_MORE:
        return 0;
    }
    return 0;
}

/* Reads and acts on what the client sent, at most 16 reads at a time, and not
 * while the client leaves more than OUT_CAP of answers unread (ev_conn_watch
 * resumes reading once it takes them). */
static void ev_conn_read(struct ev_conn *c)
{
    uint8_t buf[16384];
    for (int rounds = 0; rounds < 16 && ev_conn_pending(c) <= OUT_CAP; rounds++) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            ev_conn_close(c);
            return;
        }
        if (n < 0) return;
        ev_conn_borrow(c);
        size_t pos = 0;
        while (pos < (size_t)n && !c->close_after_flush) {
            struct fcgi_event e;
            size_t used = 0;
            enum fcgi_event_type t = fcgi_parser_feed(&c->parser, buf + pos, (size_t)n - pos, &used, &e);
            pos += used;
            if (ev_conn_event(c, &e) != 0) return;
            if (t == FCGI_EV_NEED_MORE) break;
        }
        if (ev_conn_pending(c) || c->close_after_flush) ev_conn_flush(c);
        if (c->closing || c->close_after_flush || (size_t)n < sizeof buf) return;
    }
}

static void ev_conn_on_io(uv_poll_t *h, int status, int events)
{
    struct ev_conn *c = h->data;
    if (status < 0) {
        ev_conn_close(c);
        return;
    }
    if (events & UV_WRITABLE) ev_conn_flush(c);
    if (!c->closing && (events & UV_READABLE)) ev_conn_read(c);
}

static void event_worker_publish_connections(struct event_worker *w)
{
    if (!scoreboard_self) return;
    atomic_store(&scoreboard_self->connections, w->nconns);
    atomic_store(&scoreboard_self->accepting, w->accepting && !w->draining && !w->stopping);
}

static void event_worker_listen(struct event_worker *w)
{
    for (int i = 0; i < w->env->nlisteners; i++) uv_poll_start(&w->listeners[i], UV_READABLE, event_worker_on_accept);
}

static void event_worker_unlisten(struct event_worker *w)
{
    for (int i = 0; i < w->env->nlisteners; i++) uv_poll_stop(&w->listeners[i]);
}

/* Takes one connection waiting on listener fd_listen: ACCEPT_TOOK; ACCEPT_NONE when
 * none waits (another worker took it), else why not. */
static enum accept_outcome event_worker_accept_one(struct event_worker *w, int fd_listen)
{
    /* Stopping, the backlog is taken whatever the cap: else it would be reset. */
    if (w->nconns >= w->cfg->worker_connections && !w->stopping) return ACCEPT_FULL;
    int fd = accept4(fd_listen, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? ACCEPT_NONE : ACCEPT_FAILED;
    struct ev_conn *c = calloc(1, sizeof *c);
    if (!c || uv_poll_init_socket(&w->loop, &c->poll, fd) != 0) {
        free(c);
        close(fd);
        return ACCEPT_FAILED;
    }
    c->w = w;
    c->fd = fd;
    c->poll.data = c;
    uv_timer_init(&w->loop, &c->timer);
    c->timer.data = c;
    c->handles_open = 2;
    fcgi_parser_init(&c->parser, NULL);
    fcgi_buf_init(&c->out);
    list_push_front(&w->conns, &c->link);
    w->nconns++;
    c->watching = UV_READABLE;
    uv_poll_start(&c->poll, c->watching, ev_conn_on_io);
    ev_conn_idle(c);
    if (w->nconns >= w->cfg->worker_connections) { /* full: stop accepting until one closes */
        w->accepting = 0;
        event_worker_unlisten(w);
    }
    event_worker_publish_connections(w);
    return ACCEPT_TOOK;
}

/* The pause is over. A connection still waiting has outwaited the sibling it was left
 * to (busy with many connections, or a burst of them): this worker takes it, and the
 * ones queued behind it now without yielding (the queue is read only then: a pause
 * that finds none costs no more than before). */
static void event_worker_on_yield_over(uv_timer_t *t)
{
    struct event_worker *w = t->data;
    if (w->stopping || w->draining || !w->accepting) return;
    for (int i = 0; i < w->env->nlisteners; i++)
        if (event_worker_accept_one(w, w->env->listeners[i].fd) == ACCEPT_TOOK)
            accept_backlog_seen(&w->backlog, i, worker_backlog(w->env, i));
    if (w->accepting) event_worker_listen(w);
}

static void event_worker_on_accept(uv_poll_t *h, int status, int events)
{
    (void)events;
    struct event_worker *w = h->data;
    if (status < 0 || w->stopping || w->draining) return;
    int i = (int)(h - w->listeners), owed = accept_backlog_owed(&w->backlog, i);
    /* Every event worker wakes for a new connection; all but the one that
     * should take it step back for a moment (scoreboard_should_yield). */
    if (!owed && scoreboard_should_yield(w->nconns, ACCEPT_SLACK)) {
        event_worker_unlisten(w);
        uv_timer_start(&w->yield, event_worker_on_yield_over, ACCEPT_YIELD_MS, 0);
        return;
    }
    /* One connection per wakeup: the next one is chosen for again, with this
     * one counted. */
    enum accept_outcome r = event_worker_accept_one(w, w->env->listeners[i].fd);
    if (owed) accept_backlog_after(&w->backlog, i, r);
}

/* ---- the worker ---- */

static void event_worker_close_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Stopping, nothing in flight and no connection left: close the rest; the
 * loop then ends. */
static void event_worker_maybe_exit(struct event_worker *w)
{
    if (!w->stopping || w->nreqs > 0 || !list_empty(&w->conns)) return;
    while (w->spares) {
        struct ev_req *r = w->spares;
        w->spares = (struct ev_req *)r->conn;
        ev_req_release(r);
    }
    w->nspares = 0;
    while (w->nrooms) fcgi_room_free(&w->rooms[--w->nrooms]);
    while (w->nouts) fcgi_buf_free(&w->outs[--w->nouts]);
    if (w->redis) {
        redis_async_free(w->redis);
        w->redis = NULL;
    }
    if (w->pool) {
        pg_async_free(w->pool);
        w->pool = NULL;
    }
    if (w->http) {
        http_async_free(w->http);
        w->http = NULL;
    }
    uv_walk(&w->loop, event_worker_close_handle, NULL);
}

/* Every request of max_requests taken: take no new connection, and close the
 * kept ones once idle (now, or after their answer: ev_conn_idle), so that Nginx
 * sends the next requests to the other workers while the master replaces
 * this one. */
static void event_worker_drain(struct event_worker *w)
{
    if (w->draining || w->stopping) return;
    w->draining = 1;
    event_worker_unlisten(w);
    event_worker_publish_connections(w);
    uv_timer_stop(&w->yield);
    struct list_node *pos, *tmp;
    list_for_each_safe(pos, tmp, &w->conns) {
        struct ev_conn *c = list_entry(pos, struct ev_conn, link);
        if (!c->req && !c->reading && !ev_conn_pending(c) && c->served) ev_conn_close(c);
    }
}

static void event_worker_on_term(uv_signal_t *s, int signum)
{
    (void)signum;
    struct event_worker *w = s->data;
    if (w->stopping) return;
    w->stopping = 1;
    worker_stopping = 1;
    event_worker_unlisten(w);
    /* Connections queued on the listeners now are answered, not reset when the
     * master closes them (past max_requests, the replacement takes them). */
    for (int i = 0; i < w->env->nlisteners && !w->draining; i++) {
        int fd = w->env->listeners[i].fd;
        for (int n = worker_backlog(w->env, i); n > 0 && event_worker_accept_one(w, fd) == ACCEPT_TOOK; n--) {
        }
    }
    event_worker_publish_connections(w);
    uv_timer_stop(&w->yield);
    /* Kept connections are not closed here, nor after their next answer: a
     * server-side close races with the request its client may be sending on
     * the connection (Nginx may even have it cached before it sees the FIN).
     * The client closes them (Nginx drops idle ones a second before
     * keepalive_timeout, and every one after its keepalive_time), else their
     * keepalive timer does, else the master at graceful_timeout. */
    event_worker_maybe_exit(w);
}

static void event_worker_on_usr1(uv_signal_t *s, int signum)
{
    (void)s;
    (void)signum;
    if (log_reopen() != 0) log_warning("cannot reopen the logs (still writing the old files): %s", strerror(errno));
}

int worker_event_run(const struct worker_env *env)
{
    struct event_worker *w = calloc(1, sizeof *w);
    char err[256];
    if (!w || uv_loop_init(&w->loop) != 0) return WORKER_EXIT_BOOT_FAILED;
    list_init(&w->conns);
    w->env = env;
    w->cfg = env->cfg;
    w->redis = redis_async_new(&w->loop, env->cfg->redis_url, err, sizeof err);
    w->pool = pg_async_new(&w->loop, env->cfg, worker_publish_pool);
    if (w->redis) w->http = http_async_new(&w->loop, err, sizeof err);
    if (!w->redis || !w->pool || !w->http) {
        log_error("cannot set up the backends: %s", w->redis && w->http ? "out of memory" : err);
        return WORKER_EXIT_BOOT_FAILED;
    }
    for (int i = 0; i < env->nlisteners; i++) {
        if (uv_poll_init_socket(&w->loop, &w->listeners[i], env->listeners[i].fd) != 0) {
            log_error("cannot watch %s", env->listeners[i].addr);
            return WORKER_EXIT_BOOT_FAILED;
        }
        w->listeners[i].data = w;
        uv_poll_start(&w->listeners[i], UV_READABLE, event_worker_on_accept);
    }
    w->accepting = 1;
    event_worker_publish_connections(w);
    uv_timer_init(&w->loop, &w->yield);
    w->yield.data = w;
    uv_timer_init(&w->loop, &w->rest);
    w->rest.data = w;
    /* libuv's own signal handling wakes the loop; these replace the
     * flag-only handlers the other classes use. */
    uv_signal_init(&w->loop, &w->sig_term);
    w->sig_term.data = w;
    uv_signal_start(&w->sig_term, event_worker_on_term, SIGTERM);
    uv_signal_init(&w->loop, &w->sig_usr1);
    uv_signal_start(&w->sig_usr1, event_worker_on_usr1, SIGUSR1);
    /* A TERM that came while booting (the master retires workers still starting
     * on a HUP) only set the flag: act on it now. */
    if (worker_stopping) event_worker_on_term(&w->sig_term, SIGTERM);
    worker_ready(env);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
    free(w);
    return 0;
}
