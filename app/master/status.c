/* status: the master's HTTP operations endpoints: /healthz, /readyz, /status, /metrics. */
#define _GNU_SOURCE
#include "master/status.h"

#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "base/clock.h"
#include "base/log.h"
#include "master/probe.h"
#include "core/endpoint.h"
#include "core/routes.h"

/* Clients served at once per status socket: more are refused, never evicted. */
#define STATUS_MAX_CLIENTS 256
/* A client silent this long is dropped. */
#define STATUS_CLIENT_TIMEOUT_S 5

/* ---- the figures ---- */

struct totals {
    struct scoreboard_counters c;
    uint64_t accepted;
    int idle, active, total, pool_open, pool_busy;
    int listen_queue, listen_queue_len;
};

static void add_up(const struct status_view *v, struct totals *t)
{
    memset(t, 0, sizeof *t);
    t->c = v->stats->totals;
    t->accepted = v->stats->requests_before;
    for (int i = 0; i < v->nslots; i++) {
        const struct scoreboard_slot *s = &v->slots[i];
        int state = atomic_load(&s->state);
        if (state == SLOT_FREE || atomic_load(&s->pid) == 0) continue;
        t->total++;
        if (state == SLOT_BUSY) t->active++;
        else if (state == SLOT_IDLE) t->idle++;
        t->accepted += atomic_load(&s->requests) + (uint64_t)atomic_load(&s->active);
        t->pool_open += atomic_load(&s->pool_open);
        t->pool_busy += atomic_load(&s->pool_busy);
        scoreboard_add(&t->c, &s->counters);
    }
    for (int i = 0; i < v->nlisteners; i++) {
        int queued, backlog;
        if (listener_queue(&v->listeners[i], &queued, &backlog) == 0) {
            t->listen_queue += queued;
            t->listen_queue_len += backlog;
        }
    }
}

void status_peaks_sample(struct status_peaks *p, const struct status_view *v)
{
    struct totals t;
    add_up(v, &t);
    if (t.listen_queue > p->max_listen_queue) p->max_listen_queue = t.listen_queue;
    if (t.active > p->max_active) p->max_active = t.active;
    int all_busy = t.total > 0 && t.active == t.total;
    if (all_busy && !p->all_busy) p->max_children_reached++;
    p->all_busy = all_busy;
}

static const char *const state_names[] = {"free", "starting", "idle", "busy"};

/* A worker writes its slot: a state it never should have reads as "unknown". */
static const char *state_name(int state)
{
    return state >= 0 && state < (int)(sizeof state_names / sizeof state_names[0]) ? state_names[state] : "unknown";
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    size_t len;
    unsigned min;
    unsigned cp;
    if (p[0] < 0x80) return 1;
    if ((p[0] & 0xE0) == 0xC0) len = 2, min = 0x80, cp = p[0] & 0x1F;
    else if ((p[0] & 0xF0) == 0xE0) len = 3, min = 0x800, cp = p[0] & 0x0F;
    else if ((p[0] & 0xF8) == 0xF0) len = 4, min = 0x10000, cp = p[0] & 0x07;
    else return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

/* Copies a worker-written string (not trusted to be terminated or UTF-8) as
 * valid UTF-8: bytes that are not become %XX, as in a URI. */
static void utf8_clean(const char *in, size_t inlen, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)in;
    size_t n = strnlen(in, inlen), o = 0;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_seq(p + i, n - i);
        if (len == 0) {
            if (o + 3 >= outlen) break;
            out[o++] = '%';
            out[o++] = hex[p[i] >> 4];
            out[o++] = hex[p[i] & 15];
            i++;
            continue;
        }
        if (o + len >= outlen) break;
        memcpy(out + o, p + i, len);
        o += len;
        i += len;
    }
    out[o] = '\0';
}

/* json_object_set_new that remembers a failure (a NULL value, no memory). */
static void put(json_t *o, const char *key, json_t *value, int *ok)
{
    if (json_object_set_new(o, key, value) != 0) *ok = 0;
}

/* NULL if any part could not be built: the caller answers 500 rather than
 * leave a row or a figure out silently. */
static json_t *status_json(const struct status_view *v, const struct status_peaks *p, int full)
{
    struct totals t;
    add_up(v, &t);
    double now = clock_wall_s();
    int ok = 1;
    json_t *restarts = json_object();
    for (int r = 0; r < RESTART_REASONS; r++)
        put(restarts, master_restart_reason_names[r], json_integer((json_int_t)v->stats->restarts[r]), &ok);
    json_t *o = json_object();
    if (!o || !restarts) {
        json_decref(o);
        json_decref(restarts);
        return NULL;
    }
    put(o, "pool", json_string("perfcgi"), &ok);
    put(o, "worker_class", json_string(settings_class_name(v->cfg->worker_class)), &ok);
    put(o, "start_time", json_integer((json_int_t)v->stats->start_wall_s), &ok);
    put(o, "start_since", json_integer((json_int_t)(now - v->stats->start_wall_s)), &ok);
    put(o, "accepted_conn", json_integer((json_int_t)t.accepted), &ok);
    put(o, "listen_queue", json_integer(t.listen_queue), &ok);
    put(o, "max_listen_queue", json_integer(p->max_listen_queue > t.listen_queue ? p->max_listen_queue : t.listen_queue), &ok);
    put(o, "listen_queue_len", json_integer(t.listen_queue_len), &ok);
    put(o, "idle_processes", json_integer(t.idle), &ok);
    put(o, "active_processes", json_integer(t.active), &ok);
    put(o, "total_processes", json_integer(t.total), &ok);
    put(o, "max_active_processes", json_integer(p->max_active > t.active ? p->max_active : t.active), &ok);
    put(o, "max_children_reached", json_integer((json_int_t)p->max_children_reached), &ok);
    put(o, "slow_requests", json_integer((json_int_t)t.c.slow_requests), &ok);
    put(o, "worker_restarts", restarts, &ok);
    if (full) {
        json_t *rows = json_array();
        int64_t now_us = clock_us();
        for (int i = 0; rows && i < v->nslots; i++) {
            const struct scoreboard_slot *s = &v->slots[i];
            int state = atomic_load(&s->state);
            pid_t pid = atomic_load(&s->pid);
            if (state == SLOT_FREE || pid == 0) continue;
            int64_t started = atomic_load(&s->request_started_us);
            double duration =
                state == SLOT_BUSY && started ? (double)(now_us - started) / 1e3 : atomic_load(&s->last_duration_ms);
            if (!isfinite(duration)) duration = 0; /* JSON has no NaN: the row would be lost */
            char uri[3 * sizeof s->last_uri];
            utf8_clean(s->last_uri, sizeof s->last_uri, uri, sizeof uri);
            json_t *row = json_pack("{s:i,s:s,s:i,s:I,s:f,s:I,s:s}", "pid", (int)pid, "state", state_name(state),
                                    "active_requests", atomic_load(&s->active), "requests",
                                    (json_int_t)atomic_load(&s->requests), "request_duration_ms",
                                    round(duration * 1e3) / 1e3, "rss_kb", (json_int_t)atomic_load(&s->rss_kb),
                                    "last_uri", uri);
            if (json_array_append_new(rows, row) != 0) ok = 0;
        }
        put(o, "processes", rows, &ok);
    }
    if (!ok) {
        log_error("status: cannot build the /status answer (out of memory?)");
        json_decref(o);
        return NULL;
    }
    return o;
}

static void metric(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP perfcgi_%s %s\n# TYPE perfcgi_%s %s\n", name, help, name, type);
}

static void metrics_text(const struct status_view *v, const struct status_peaks *p, FILE *out)
{
    struct totals t;
    add_up(v, &t);
    const struct scoreboard_counters *c = &t.c;
    const char *endpoint[SCOREBOARD_ROUTES];
    for (int r = 0; r < SCOREBOARD_ROUTES; r++) endpoint[r] = "other";
    for (int r = 0; r < ROUTE_COUNT; r++) endpoint[r] = route_table[r]->name;

    metric(out, "start_time_seconds", "gauge", "When the master started, in seconds since the epoch.");
    fprintf(out, "perfcgi_start_time_seconds %.3f\n", v->stats->start_wall_s);
    metric(out, "accepted_connections_total", "counter", "Requests accepted by the workers.");
    fprintf(out, "perfcgi_accepted_connections_total %" PRIu64 "\n", t.accepted);
    metric(out, "listen_queue", "gauge", "Connections waiting in the kernel's accept queues.");
    fprintf(out, "perfcgi_listen_queue %d\n", t.listen_queue);
    metric(out, "listen_queue_max", "gauge", "Most connections seen waiting in the accept queues.");
    fprintf(out, "perfcgi_listen_queue_max %d\n", p->max_listen_queue > t.listen_queue ? p->max_listen_queue : t.listen_queue);
    metric(out, "listen_queue_length", "gauge", "Size of the accept queues.");
    fprintf(out, "perfcgi_listen_queue_length %d\n", t.listen_queue_len);
    metric(out, "processes", "gauge", "Worker processes by state.");
    fprintf(out, "perfcgi_processes{state=\"idle\"} %d\nperfcgi_processes{state=\"active\"} %d\n", t.idle, t.active);
    metric(out, "processes_max_active", "gauge", "Most workers seen busy at once.");
    fprintf(out, "perfcgi_processes_max_active %d\n", p->max_active > t.active ? p->max_active : t.active);
    metric(out, "max_children_reached_total", "counter", "Times every worker was seen busy.");
    fprintf(out, "perfcgi_max_children_reached_total %" PRIu64 "\n", p->max_children_reached);
    metric(out, "slow_requests_total", "counter", "Requests that took more than half of timeout.");
    fprintf(out, "perfcgi_slow_requests_total %" PRIu64 "\n", c->slow_requests);
    metric(out, "worker_restarts_total", "counter", "Workers replaced, by reason.");
    for (int r = 0; r < RESTART_REASONS; r++)
        fprintf(out, "perfcgi_worker_restarts_total{reason=\"%s\"} %" PRIu64 "\n", master_restart_reason_names[r],
                v->stats->restarts[r]);

    static const char *const classes[CLASS_COUNT] = {"2xx", "4xx", "5xx"};
    metric(out, "requests_total", "counter", "Requests answered, by endpoint and status class.");
    for (int r = 0; r < SCOREBOARD_ROUTES; r++)
        for (int k = 0; k < CLASS_COUNT; k++)
            fprintf(out, "perfcgi_requests_total{endpoint=\"%s\",status=\"%s\"} %" PRIu64 "\n", endpoint[r], classes[k],
                    c->requests[r][k]);
    metric(out, "request_duration_seconds", "histogram", "Time spent in the worker per request, by endpoint.");
    for (int r = 0; r < SCOREBOARD_ROUTES; r++) {
        uint64_t cumulative = 0;
        for (int b = 0; b < SCOREBOARD_BUCKETS; b++) {
            cumulative += c->latency_bucket[r][b];
            fprintf(out, "perfcgi_request_duration_seconds_bucket{endpoint=\"%s\",le=\"%g\"} %" PRIu64 "\n",
                    endpoint[r], scoreboard_bucket_le[b], cumulative);
        }
        fprintf(out, "perfcgi_request_duration_seconds_bucket{endpoint=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", endpoint[r],
                c->latency_count[r]);
        fprintf(out, "perfcgi_request_duration_seconds_sum{endpoint=\"%s\"} %.6f\n", endpoint[r],
                (double)c->latency_sum_us[r] / 1e6);
        fprintf(out, "perfcgi_request_duration_seconds_count{endpoint=\"%s\"} %" PRIu64 "\n", endpoint[r],
                c->latency_count[r]);
    }
    static const char *const cache[CACHE_COUNT] = {"hit", "miss", "bypass"};
    metric(out, "cache_requests_total", "counter", "Redis cache lookups of /cached-data, by result.");
    for (int k = 0; k < CACHE_COUNT; k++)
        fprintf(out, "perfcgi_cache_requests_total{result=\"%s\"} %" PRIu64 "\n", cache[k], c->cache[k]);
    metric(out, "pool_connections", "gauge", "PostgreSQL connections of every worker's pool, by state.");
    fprintf(out, "perfcgi_pool_connections{state=\"open\"} %d\nperfcgi_pool_connections{state=\"busy\"} %d\n",
            t.pool_open, t.pool_busy);
    metric(out, "pool_checkouts_total", "counter", "PostgreSQL connections checked out of the pools.");
    fprintf(out, "perfcgi_pool_checkouts_total %" PRIu64 "\n", c->pool_checkouts);
    metric(out, "pool_timeouts_total", "counter", "Checkouts that gave up after pool_timeout.");
    fprintf(out, "perfcgi_pool_timeouts_total %" PRIu64 "\n", c->pool_timeouts);
    metric(out, "pool_wait_seconds_total", "counter", "Time requests waited for a PostgreSQL connection of their pool.");
    fprintf(out, "perfcgi_pool_wait_seconds_total %.6f\n", (double)c->pool_wait_us / 1e6);
    metric(out, "pool_connects_total", "counter", "PostgreSQL connections opened.");
    fprintf(out, "perfcgi_pool_connects_total %" PRIu64 "\n", c->pool_connects);
    metric(out, "pool_connect_failures_total", "counter", "PostgreSQL connections that failed to open.");
    fprintf(out, "perfcgi_pool_connect_failures_total %" PRIu64 "\n", c->pool_connect_failures);
}

/* ---- the server's state ---- */

struct status_daemon {
    int fd; /* the master's listening socket it serves (it holds a duplicate) */
    struct MHD_Daemon *d;
};

struct status_server {
    status_snapshot_fn snapshot;
    const void *ctx;
    struct status_peaks peaks;
    struct status_daemon daemons[SETTINGS_MAX_BINDS];
    int ndaemons;
};

/* ---- answers ---- */

struct reply {
    int code;
    const char *type;
    char *body; /* malloc'd */
    size_t len;
};

static void reply_json(struct reply *r, int code, json_t *body)
{
    r->code = code;
    r->type = "application/json";
    r->body = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!r->body) { /* the answer itself could not be built */
        r->code = 500;
        r->body = strdup("{\"error\":\"internal\"}");
    }
    r->len = r->body ? strlen(r->body) : 0;
}

static void readyz(const struct status_view *v, struct reply *r)
{
    char err[PROBE_BACKENDS][3 * 160];
    int up[PROBE_BACKENDS], all = 1, down = -1;
    for (int i = 0; i < PROBE_BACKENDS; i++) {
        char why[160];
        up[i] = probe_board_ready(v->probe, (enum probe_backend)i, why, sizeof why);
        utf8_clean(why, sizeof why, err[i], sizeof err[i]); /* a server's message, in any encoding */
        all &= up[i];
    }
    /* PostgreSQL first: nothing works without it, while Redis is only a cache. */
    if (!up[PROBE_PG]) down = PROBE_PG;
    else if (!up[PROBE_REDIS]) down = PROBE_REDIS;
    json_t *body = json_pack("{s:s,s:s,s:s}", "status", all ? "ok" : "unavailable", "redis",
                             up[PROBE_REDIS] ? "ok" : err[PROBE_REDIS], "postgresql", up[PROBE_PG] ? "ok" : err[PROBE_PG]);
    if (!all && body &&
        (json_object_set_new(body, "error", json_string("backend_unavailable")) != 0 ||
         json_object_set_new(body, "backend", json_string(probe_backend_names[down])) != 0)) {
        json_decref(body);
        body = NULL;
    }
    reply_json(r, all ? 200 : 503, body);
}

/* path and method from the request line; full: the query has a `full` key. */
static void respond(struct status_server *s, const char *method, const char *path, int full, struct reply *r)
{
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        reply_json(r, 405, json_pack("{s:s}", "error", "method_not_allowed"));
        return;
    }
    if (strcmp(path, "/healthz") == 0) {
        reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
        return;
    }
    if (strcmp(path, "/readyz") != 0 && strcmp(path, "/status") != 0 && strcmp(path, "/metrics") != 0) {
        reply_json(r, 404, json_pack("{s:s}", "error", "not_found"));
        return;
    }
    struct status_view v;
    s->snapshot(s->ctx, &v);
    if (strcmp(path, "/readyz") == 0) {
        readyz(&v, r);
    } else if (strcmp(path, "/status") == 0) {
        reply_json(r, 200, status_json(&v, &s->peaks, full));
    } else {
        FILE *m = open_memstream(&r->body, &r->len);
        if (m) {
            metrics_text(&v, &s->peaks, m);
            fclose(m);
        }
        r->code = 200;
        r->type = "text/plain; version=0.0.4; charset=utf-8";
    }
}

/* ---- the HTTP server: libmicrohttpd, driven by the master's loop ---- */

static enum MHD_Result has_full(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    (void)value;
    if (strcmp(key, "full") != 0) return MHD_YES;
    *(int *)cls = 1;
    return MHD_NO;
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size, void **req_cls)
{
    (void)version;
    (void)upload_data;
    (void)req_cls;
    if (*upload_data_size) { /* a body (405 anyway): read and dropped */
        *upload_data_size = 0;
        return MHD_YES;
    }
    int full = 0;
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, has_full, &full);
    struct reply r = {0};
    respond(cls, method, url, full, &r);
    struct MHD_Response *resp = MHD_create_response_from_buffer(r.len, r.body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(r.body);
        return MHD_NO;
    }
    int ok = MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r.type) == MHD_YES &&
             MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") == MHD_YES &&
             MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close") == MHD_YES &&
             (r.code != 405 || MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD") == MHD_YES) &&
             (r.code != 503 || MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1") == MHD_YES);
    enum MHD_Result rc = ok ? MHD_queue_response(conn, (unsigned)r.code, resp) : MHD_NO;
    MHD_destroy_response(resp);
    return rc;
}

/* At most this many lines a second: a flood of clients over the connection
 * limit must not flood the log as well. */
#define STATUS_LOG_PER_S 5

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    static long second;
    static int lines;
    long now = (long)(clock_ms() / 1e3);
    if (second != now) {
        second = now;
        lines = 0;
    }
    if (lines++ >= STATUS_LOG_PER_S) return;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    log_warning("status server: %s", line);
}

static int daemon_start(struct status_server *s, struct status_daemon *d, int listen_fd)
{
    d->fd = listen_fd;
    int fd = fcntl(listen_fd, F_DUPFD_CLOEXEC, 3); /* libmicrohttpd closes the one it gets */
    if (fd < 0) return -1;
    d->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL, answer, s, MHD_OPTION_EXTERNAL_LOGGER,
                            mhd_log, NULL, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)STATUS_MAX_CLIENTS, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned)STATUS_CLIENT_TIMEOUT_S, MHD_OPTION_END);
    if (!d->d) {
        close(fd);
        return -1;
    }
    return 0;
}

void status_server_set_listeners(struct status_server *s, const struct listener *listeners, int n)
{
    struct status_daemon keep[SETTINGS_MAX_BINDS];
    int nkeep = 0;
    for (int i = 0; i < s->ndaemons; i++) {
        int still = 0;
        for (int j = 0; j < n; j++) still |= listeners[j].fd == s->daemons[i].fd;
        if (still) keep[nkeep++] = s->daemons[i];
        else MHD_stop_daemon(s->daemons[i].d);
    }
    for (int j = 0; j < n; j++) {
        int running = 0;
        for (int i = 0; i < nkeep; i++) running |= keep[i].fd == listeners[j].fd;
        if (running) continue;
        if (daemon_start(s, &keep[nkeep], listeners[j].fd) == 0) nkeep++;
        else log_error("status: cannot serve %s", listeners[j].addr);
    }
    memcpy(s->daemons, keep, sizeof keep[0] * (size_t)nkeep);
    s->ndaemons = nkeep;
}

struct status_server *status_server_new(const struct listener *listeners, int n, status_snapshot_fn snapshot,
                                        const void *ctx)
{
    struct status_server *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->snapshot = snapshot;
    s->ctx = ctx;
    status_server_set_listeners(s, listeners, n);
    if (s->ndaemons != n) {
        status_server_free(s);
        return NULL;
    }
    return s;
}

void status_server_free(struct status_server *s)
{
    if (!s) return;
    status_server_set_listeners(s, NULL, 0);
    free(s);
}

int status_server_pollfds(const struct status_server *s, struct pollfd *fds, int max, int *timeout_ms)
{
    int n = 0;
    for (int i = 0; i < s->ndaemons && n < max; i++) {
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemons[i].d, MHD_DAEMON_INFO_EPOLL_FD);
        if (info) fds[n++] = (struct pollfd){.fd = info->epoll_fd, .events = POLLIN};
        MHD_UNSIGNED_LONG_LONG t;
        if (MHD_get_timeout(s->daemons[i].d, &t) == MHD_YES && t < (MHD_UNSIGNED_LONG_LONG)*timeout_ms)
            *timeout_ms = (int)t;
    }
    return n;
}

void status_server_run(struct status_server *s)
{
    for (int i = 0; i < s->ndaemons; i++) MHD_run(s->daemons[i].d);
}

void status_sample(struct status_server *s)
{
    struct status_view v;
    s->snapshot(s->ctx, &v);
    status_peaks_sample(&s->peaks, &v);
}
