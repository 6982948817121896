/* status: the master's HTTP operations endpoints (/healthz, /readyz, ...). */
#define _GNU_SOURCE
#include "status.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "clock.h"
#include "pg_pool.h"
#include "redis_client.h"

#define STATUS_MAX_CLIENTS 32
#define STATUS_HEAD_MAX 4096
/* A client that has not sent its request head by then is dropped. */
#define STATUS_READ_TIMEOUT_MS 5000.0
#define READY_TIMEOUT_MS 1000

struct status_client {
    int fd;
    size_t len;
    double since_ms;
    char buf[STATUS_HEAD_MAX];
};

struct status_server {
    const struct listener *listeners;
    int nlisteners;
    struct status_client clients[STATUS_MAX_CLIENTS];
};

static size_t http_response(char *out, size_t outlen, int code, const char *text, json_t *body, int head_only)
{
    char *json = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    size_t len = json ? strlen(json) : 0;
    int n = snprintf(out, outlen,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nConnection: close\r\n\r\n%s",
                     code, text, len, head_only || !json ? "" : json);
    free(json);
    return n < 0 ? 0 : (size_t)n >= outlen ? outlen - 1 : (size_t)n;
}

static size_t readyz(const struct status_view *v, char *out, size_t outlen, int head_only)
{
    char redis_err[160] = "ok", pg_err[160] = "ok";
    int redis_ok = redis_client_ping(v->cfg->redis_url, READY_TIMEOUT_MS, redis_err, sizeof redis_err) == 0;
    int pg_ok = pg_ping(v->cfg->database_url, READY_TIMEOUT_MS, pg_err, sizeof pg_err) == 0;
    json_t *body = json_pack("{s:s,s:s,s:s}", "status", redis_ok && pg_ok ? "ok" : "unavailable", "redis",
                             redis_ok ? "ok" : redis_err, "postgresql", pg_ok ? "ok" : pg_err);
    if (redis_ok && pg_ok) return http_response(out, outlen, 200, "OK", body, head_only);
    json_object_set_new(body, "backend", json_string(!pg_ok ? "postgresql" : "redis"));
    return http_response(out, outlen, 503, "Service Unavailable", body, head_only);
}

size_t status_respond(const struct status_view *v, const char *head, char *out, size_t outlen)
{
    char method[16], target[1024];
    if (sscanf(head, "%15s %1023s", method, target) != 2)
        return http_response(out, outlen, 400, "Bad Request", json_pack("{s:s}", "error", "bad_request"), 0);
    int head_only = strcmp(method, "HEAD") == 0;
    if (!head_only && strcmp(method, "GET") != 0)
        return http_response(out, outlen, 405, "Method Not Allowed",
                             json_pack("{s:s}", "error", "method_not_allowed"), 0);
    target[strcspn(target, "?")] = '\0';
    if (strcmp(target, "/healthz") == 0)
        return http_response(out, outlen, 200, "OK", json_pack("{s:s}", "status", "ok"), head_only);
    if (strcmp(target, "/readyz") == 0) return readyz(v, out, outlen, head_only);
    return http_response(out, outlen, 404, "Not Found", json_pack("{s:s}", "error", "not_found"), head_only);
}

struct status_server *status_server_new(const struct listener *listeners, int n)
{
    struct status_server *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->listeners = listeners;
    s->nlisteners = n;
    /* The master accepts until EAGAIN and must never block there. */
    for (int i = 0; i < n; i++) fcntl(listeners[i].fd, F_SETFL, fcntl(listeners[i].fd, F_GETFL) | O_NONBLOCK);
    for (int i = 0; i < STATUS_MAX_CLIENTS; i++) s->clients[i].fd = -1;
    return s;
}

static void drop(struct status_client *c)
{
    close(c->fd);
    c->fd = -1;
    c->len = 0;
}

void status_server_free(struct status_server *s)
{
    if (!s) return;
    for (int i = 0; i < STATUS_MAX_CLIENTS; i++)
        if (s->clients[i].fd >= 0) drop(&s->clients[i]);
    free(s);
}

int status_server_pollfds(const struct status_server *s, struct pollfd *fds, int max)
{
    int n = 0;
    for (int i = 0; i < s->nlisteners && n < max; i++) fds[n++] = (struct pollfd){.fd = s->listeners[i].fd, .events = POLLIN};
    for (int i = 0; i < STATUS_MAX_CLIENTS && n < max; i++)
        fds[n++] = (struct pollfd){.fd = s->clients[i].fd, .events = POLLIN}; /* fd -1 is skipped by poll */
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
        slot->len = 0;
        slot->since_ms = clock_ms();
    }
}

static void read_client(struct status_client *c, const struct status_view *view)
{
    ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len, 0);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        drop(c);
        return;
    }
    c->len += (size_t)r;
    c->buf[c->len] = '\0';
    if (!strstr(c->buf, "\r\n\r\n") && !strstr(c->buf, "\n\n")) {
        if (c->len < sizeof c->buf - 1) return;
        c->buf[0] = '\0'; /* too long: answered as a bad request */
    }
    char out[16384];
    size_t n = status_respond(view, c->buf, out, sizeof out);
    /* The answer fits the socket buffer of a fresh connection. */
    ssize_t w = send(c->fd, out, n, MSG_NOSIGNAL);
    (void)w;
    drop(c);
}

void status_server_handle(struct status_server *s, const struct pollfd *fds, int n, const struct status_view *view)
{
    double now = clock_ms();
    for (int i = 0; i < n; i++) {
        if (i < s->nlisteners) {
            if (fds[i].revents & POLLIN) accept_clients(s, fds[i].fd);
            continue;
        }
        struct status_client *c = &s->clients[i - s->nlisteners];
        if (c->fd >= 0 && c->fd == fds[i].fd && fds[i].revents) read_client(c, view);
    }
    for (int i = 0; i < STATUS_MAX_CLIENTS; i++)
        if (s->clients[i].fd >= 0 && now - s->clients[i].since_ms > STATUS_READ_TIMEOUT_MS) drop(&s->clients[i]);
}
