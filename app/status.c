/* status: the master's HTTP operations endpoints: /healthz, /readyz, /status, /metrics. */
#define _GNU_SOURCE
#include "status.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "clock.h"
#include "pg_pool.h"
#include "redis_client.h"
#include "router.h"

#define STATUS_MAX_CLIENTS 32
#define STATUS_HEAD_MAX 4096
/* A client that has not finished its exchange by then is dropped. */
#define STATUS_CLIENT_TIMEOUT_MS 5000.0
/* /readyz runs in the master's loop: each probe gets at most this long. */
#define READY_TIMEOUT_MS 500

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

static json_t *status_json(const struct status_view *v, const struct status_peaks *p, int full)
{
    struct totals t;
    add_up(v, &t);
    double now = clock_wall_s();
    json_t *restarts = json_object();
    for (int r = 0; r < RESTART_REASONS; r++)
        json_object_set_new(restarts, master_restart_reason_names[r], json_integer((json_int_t)v->stats->restarts[r]));
    json_t *o = json_object();
    json_object_set_new(o, "pool", json_string("perfcgi"));
    json_object_set_new(o, "worker_class", json_string(settings_class_name(v->cfg->worker_class)));
    json_object_set_new(o, "start_time", json_integer((json_int_t)v->stats->start_wall_s));
    json_object_set_new(o, "start_since", json_integer((json_int_t)(now - v->stats->start_wall_s)));
    json_object_set_new(o, "accepted_conn", json_integer((json_int_t)t.accepted));
    json_object_set_new(o, "listen_queue", json_integer(t.listen_queue));
    json_object_set_new(o, "max_listen_queue", json_integer(p->max_listen_queue > t.listen_queue ? p->max_listen_queue : t.listen_queue));
    json_object_set_new(o, "listen_queue_len", json_integer(t.listen_queue_len));
    json_object_set_new(o, "idle_processes", json_integer(t.idle));
    json_object_set_new(o, "active_processes", json_integer(t.active));
    json_object_set_new(o, "total_processes", json_integer(t.total));
    json_object_set_new(o, "max_active_processes", json_integer(p->max_active > t.active ? p->max_active : t.active));
    json_object_set_new(o, "max_children_reached", json_integer((json_int_t)p->max_children_reached));
    json_object_set_new(o, "slow_requests", json_integer((json_int_t)t.c.slow_requests));
    json_object_set_new(o, "worker_restarts", restarts);
    if (!full) return o;
    json_t *rows = json_array();
    int64_t now_us = scoreboard_now_us();
    for (int i = 0; i < v->nslots; i++) {
        const struct scoreboard_slot *s = &v->slots[i];
        int state = atomic_load(&s->state);
        pid_t pid = atomic_load(&s->pid);
        if (state == SLOT_FREE || pid == 0) continue;
        int64_t started = atomic_load(&s->request_started_us);
        double duration = state == SLOT_BUSY && started ? (double)(now_us - started) / 1e3 : atomic_load(&s->last_duration_ms);
        char uri[sizeof s->last_uri];
        memcpy(uri, s->last_uri, sizeof uri);
        uri[sizeof uri - 1] = '\0';
        json_array_append_new(rows, json_pack("{s:i,s:s,s:i,s:I,s:f,s:I,s:s}", "pid", (int)pid, "state",
                                              state_names[state], "active_requests", atomic_load(&s->active),
                                              "requests", (json_int_t)atomic_load(&s->requests),
                                              "request_duration_ms", round(duration * 1e3) / 1e3, "rss_kb",
                                              (json_int_t)atomic_load(&s->rss_kb), "last_uri", uri));
    }
    json_object_set_new(o, "processes", rows);
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
    for (int r = 0; router_table[r].path && r < SCOREBOARD_ROUTES - 1; r++) endpoint[r] = router_table[r].name;

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
    metric(out, "pool_connects_total", "counter", "PostgreSQL connections opened.");
    fprintf(out, "perfcgi_pool_connects_total %" PRIu64 "\n", c->pool_connects);
    metric(out, "pool_connect_failures_total", "counter", "PostgreSQL connections that failed to open.");
    fprintf(out, "perfcgi_pool_connect_failures_total %" PRIu64 "\n", c->pool_connect_failures);
}

/* ---- HTTP ---- */

static void http_head(FILE *out, int code, const char *text, const char *type, size_t len)
{
    fprintf(out,
            "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n%s%s\r\n",
            code, text, type, len, code == 405 ? "Allow: GET, HEAD\r\n" : "",
            code == 503 ? "Retry-After: 1\r\n" : "");
}

static void http_json(FILE *out, int code, const char *text, json_t *body, int head_only)
{
    char *json = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    size_t len = json ? strlen(json) : 0;
    http_head(out, code, text, "application/json", len);
    if (!head_only && json) fputs(json, out);
    free(json);
}

static void readyz(const struct status_view *v, FILE *out, int head_only)
{
    char redis_err[160] = "ok", pg_err[160] = "ok";
    int redis_ok = redis_client_ping(v->cfg->redis_url, READY_TIMEOUT_MS, redis_err, sizeof redis_err) == 0;
    int pg_ok = pg_ping(v->cfg->database_url, READY_TIMEOUT_MS, pg_err, sizeof pg_err) == 0;
    json_t *body = json_pack("{s:s,s:s,s:s}", "status", redis_ok && pg_ok ? "ok" : "unavailable", "redis",
                             redis_ok ? "ok" : redis_err, "postgresql", pg_ok ? "ok" : pg_err);
    if (redis_ok && pg_ok) {
        http_json(out, 200, "OK", body, head_only);
        return;
    }
    json_object_set_new(body, "error", json_string("backend_unavailable"));
    json_object_set_new(body, "backend", json_string(!pg_ok ? "postgresql" : "redis"));
    http_json(out, 503, "Service Unavailable", body, head_only);
}

void status_respond(const struct status_view *v, const struct status_peaks *peaks, const char *head, FILE *out)
{
    char method[16], target[1024];
    if (sscanf(head, "%15s %1023s", method, target) != 2) {
        http_json(out, 400, "Bad Request", json_pack("{s:s}", "error", "bad_request"), 0);
        return;
    }
    int head_only = strcmp(method, "HEAD") == 0;
    if (!head_only && strcmp(method, "GET") != 0) {
        http_json(out, 405, "Method Not Allowed", json_pack("{s:s}", "error", "method_not_allowed"), 0);
        return;
    }
    char *query = strchr(target, '?');
    if (query) *query++ = '\0';
    if (strcmp(target, "/healthz") == 0) {
        http_json(out, 200, "OK", json_pack("{s:s}", "status", "ok"), head_only);
    } else if (strcmp(target, "/readyz") == 0) {
        readyz(v, out, head_only);
    } else if (strcmp(target, "/status") == 0) {
        int full = query && (strcmp(query, "full") == 0 || strncmp(query, "full&", 5) == 0 || strstr(query, "&full"));
        http_json(out, 200, "OK", status_json(v, peaks, full), head_only);
    } else if (strcmp(target, "/metrics") == 0) {
        char *text = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&text, &len);
        if (m) {
            metrics_text(v, peaks, m);
            fclose(m);
        }
        http_head(out, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", len);
        if (!head_only && text) fwrite(text, 1, len, out);
        free(text);
    } else {
        http_json(out, 404, "Not Found", json_pack("{s:s}", "error", "not_found"), head_only);
    }
}

/* ---- the server in the master's loop ---- */

struct status_client {
    int fd;
    double since_ms;
    size_t len;
    char head[STATUS_HEAD_MAX];
    char *out; /* the answer, once the head is read */
    size_t out_len, out_off;
};

struct status_server {
    const struct listener *listeners;
    int nlisteners;
    status_snapshot_fn snapshot;
    const void *ctx;
    struct status_peaks peaks;
    struct status_client clients[STATUS_MAX_CLIENTS];
};

void status_server_set_listeners(struct status_server *s, const struct listener *listeners, int n)
{
    s->listeners = listeners;
    s->nlisteners = n;
    /* The master accepts until EAGAIN and must never block there. */
    for (int i = 0; i < n; i++) fcntl(listeners[i].fd, F_SETFL, fcntl(listeners[i].fd, F_GETFL) | O_NONBLOCK);
}

struct status_server *status_server_new(const struct listener *listeners, int n, status_snapshot_fn snapshot,
                                        const void *ctx)
{
    struct status_server *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->snapshot = snapshot;
    s->ctx = ctx;
    for (int i = 0; i < STATUS_MAX_CLIENTS; i++) s->clients[i].fd = -1;
    status_server_set_listeners(s, listeners, n);
    return s;
}

static void drop(struct status_client *c)
{
    close(c->fd);
    free(c->out);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

void status_server_free(struct status_server *s)
{
    if (!s) return;
    for (int i = 0; i < STATUS_MAX_CLIENTS; i++)
        if (s->clients[i].fd >= 0) drop(&s->clients[i]);
    free(s);
}

void status_sample(struct status_server *s)
{
    struct status_view v;
    s->snapshot(s->ctx, &v);
    status_peaks_sample(&s->peaks, &v);
}

int status_server_pollfds(const struct status_server *s, struct pollfd *fds, int max)
{
    int n = 0;
    for (int i = 0; i < s->nlisteners && n < max; i++) fds[n++] = (struct pollfd){.fd = s->listeners[i].fd, .events = POLLIN};
    for (int i = 0; i < STATUS_MAX_CLIENTS && n < max; i++) {
        const struct status_client *c = &s->clients[i];
        fds[n++] = (struct pollfd){.fd = c->fd, .events = c->out ? POLLOUT : POLLIN}; /* fd -1 is skipped */
    }
    return n;
}

static void accept_clients(struct status_server *s, int listen_fd)
{
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        struct status_client *slot = NULL;
        for (int i = 0; i < STATUS_MAX_CLIENTS && !slot; i++)
            if (s->clients[i].fd < 0) slot = &s->clients[i];
        if (!slot) { /* full: the oldest connection makes room */
            slot = &s->clients[0];
            for (int i = 1; i < STATUS_MAX_CLIENTS; i++)
                if (s->clients[i].since_ms < slot->since_ms) slot = &s->clients[i];
            drop(slot);
        }
        slot->fd = fd;
        slot->since_ms = clock_ms();
    }
}

static void read_client(struct status_server *s, struct status_client *c)
{
    ssize_t r = recv(c->fd, c->head + c->len, sizeof c->head - 1 - c->len, 0);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        drop(c);
        return;
    }
    c->len += (size_t)r;
    c->head[c->len] = '\0';
    if (!strstr(c->head, "\r\n\r\n") && !strstr(c->head, "\n\n")) {
        if (c->len < sizeof c->head - 1) return;
        c->head[0] = '\0'; /* too long: answered as a bad request */
    }
    struct status_view v;
    s->snapshot(s->ctx, &v);
    FILE *out = open_memstream(&c->out, &c->out_len);
    if (!out) {
        drop(c);
        return;
    }
    status_respond(&v, &s->peaks, c->head, out);
    fclose(out);
}

static void write_client(struct status_client *c)
{
    ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
    if (w < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (w > 0) c->out_off += (size_t)w;
    if (w < 0 || c->out_off == c->out_len) drop(c);
}

void status_server_handle(struct status_server *s, const struct pollfd *fds, int n)
{
    double now = clock_ms();
    for (int i = 0; i < n; i++) {
        if (i < s->nlisteners) {
            if (fds[i].revents & POLLIN) accept_clients(s, fds[i].fd);
            continue;
        }
        struct status_client *c = &s->clients[i - s->nlisteners];
        if (c->fd < 0 || c->fd != fds[i].fd || !fds[i].revents) continue;
        if (!c->out) read_client(s, c);
        if (c->fd >= 0 && c->out) write_client(c);
    }
    for (int i = 0; i < STATUS_MAX_CLIENTS; i++)
        if (s->clients[i].fd >= 0 && now - s->clients[i].since_ms > STATUS_CLIENT_TIMEOUT_MS) drop(&s->clients[i]);
}
