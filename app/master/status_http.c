/* status_http: /healthz, /readyz, /status and /metrics served by libmicrohttpd in the master's loop. */
#define _GNU_SOURCE
#include "master/status_http.h"

#include <fcntl.h>
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

/* Clients served at once per status socket: more are refused, never evicted. */
#define STATUS_MAX_CLIENTS 256
/* A client silent this long is dropped. */
#define STATUS_CLIENT_TIMEOUT_S 5

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

struct status_reply {
    int code;
    const char *type;
    char *body; /* malloc'd */
    size_t len;
};

static void status_reply_json(struct status_reply *r, int code, json_t *body)
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

/* path and method from the request line; full: the query has a `full` key. */
static void status_respond(struct status_server *s, const char *method, const char *path, int full,
                           struct status_reply *r)
{
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        status_reply_json(r, 405, json_pack("{s:s}", "error", "method_not_allowed"));
        return;
    }
    if (strcmp(path, "/healthz") == 0) {
        status_reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
        return;
    }
    if (strcmp(path, "/readyz") != 0 && strcmp(path, "/status") != 0 && strcmp(path, "/metrics") != 0) {
        status_reply_json(r, 404, json_pack("{s:s}", "error", "not_found"));
        return;
    }
    struct status_view v;
    s->snapshot(s->ctx, &v);
    if (strcmp(path, "/readyz") == 0) {
        int up;
        json_t *body = probe_readyz_json(v.probe, &up);
        /* Draining: the load balancer must stop routing here, whatever the backends. */
        if (v.draining && body &&
            (json_object_set_new(body, "status", json_string("draining")) != 0 ||
             json_object_set_new(body, "draining", json_true()) != 0)) {
            json_decref(body);
            body = NULL;
        }
        status_reply_json(r, up && !v.draining ? 200 : 503, body);
    } else if (strcmp(path, "/status") == 0) {
        status_reply_json(r, 200, status_json(&v, &s->peaks, full));
    } else {
        FILE *m = open_memstream(&r->body, &r->len);
        if (m) {
            status_metrics_text(&v, &s->peaks, m);
            fclose(m);
        }
        r->code = 200;
        r->type = "text/plain; version=0.0.4; charset=utf-8";
    }
}

/* ---- the HTTP server: libmicrohttpd, driven by the master's loop ---- */

static enum MHD_Result status_has_full(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    (void)value;
    if (strcmp(key, "full") != 0) return MHD_YES;
    *(int *)cls = 1;
    return MHD_NO;
}

static enum MHD_Result status_answer(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
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
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, status_has_full, &full);
    struct status_reply r = {0};
    status_respond(cls, method, url, full, &r);
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

static void status_mhd_log(void *cls, const char *fmt, va_list ap)
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

static int status_daemon_start(struct status_server *s, struct status_daemon *d, int listen_fd)
{
    d->fd = listen_fd;
    int fd = fcntl(listen_fd, F_DUPFD_CLOEXEC, 3); /* libmicrohttpd closes the one it gets */
    if (fd < 0) return -1;
    d->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL, status_answer, s,
                            MHD_OPTION_EXTERNAL_LOGGER, status_mhd_log, NULL, MHD_OPTION_LISTEN_SOCKET, fd,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)STATUS_MAX_CLIENTS, MHD_OPTION_CONNECTION_TIMEOUT,
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
        if (status_daemon_start(s, &keep[nkeep], listeners[j].fd) == 0) nkeep++;
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
