/* fcgi_nonblocking.c: a bare non-blocking FastCGI responder (epoll, kept-alive connections): a bound for perfcgi's event worker. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fcgi_records.h"
#include "listen_socket.h"
#include "prefork.h"
#include "response.h"

/* Past this much unsent output a connection is not read: a client that sends
 * requests without reading the answers cannot make the buffer grow without end. */
#define OUTPUT_HIGH_WATER (64 * 1024)
#define READ_CHUNK (16 * 1024)
#define MAX_EVENTS 256

struct conn {
    int fd;
    uint32_t interest; /* the epoll events registered now */
    struct fcgi_reader reader;
    unsigned active_id; /* the request being received; 0: none (ids start at 1) */
    int keep_conn;      /* its BEGIN_REQUEST had FCGI_KEEP_CONN */
    int closing;        /* an answer without FCGI_KEEP_CONN is queued: close once it is written */
    unsigned char *out;
    size_t out_len, out_sent, out_cap;
};

static void conn_close(struct conn *c)
{
    close(c->fd);
    free(c->out);
    free(c);
}

/* Room for `more` bytes at the end of the output; NULL when memory is out. */
static unsigned char *output_room(struct conn *c, size_t more)
{
    if (c->out_len + more > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 1024;
        while (cap < c->out_len + more) cap *= 2;
        unsigned char *grown = realloc(c->out, cap);
        if (!grown) return NULL;
        c->out = grown;
        c->out_cap = cap;
    }
    unsigned char *at = c->out + c->out_len;
    c->out_len += more;
    return at;
}

/* Queues one record with its content; returns -1 when memory is out. */
static int queue_record(struct conn *c, unsigned type, unsigned request_id, const void *content, size_t length)
{
    unsigned char *at = output_room(c, FCGI_HEADER_LEN + length);
    if (!at) return -1;
    fcgi_header(at, type, request_id, length);
    if (length) memcpy(at + FCGI_HEADER_LEN, content, length);
    return 0;
}

static int queue_end_request(struct conn *c, unsigned request_id, unsigned protocol_status)
{
    const unsigned char body[8] = {0, 0, 0, 0, (unsigned char)protocol_status, 0, 0, 0}; /* appStatus 0 */
    return queue_record(c, FCGI_END_REQUEST, request_id, body, sizeof body);
}

/* The request is over: without FCGI_KEEP_CONN the connection goes with it. */
static int finish_request(struct conn *c, unsigned request_id, unsigned protocol_status)
{
    if (request_id == c->active_id) {
        c->active_id = 0;
        if (!c->keep_conn) c->closing = 1;
    }
    return queue_end_request(c, request_id, protocol_status);
}

/* Management records (request id 0): GET_VALUES gets an empty answer (no variable
 * is offered), any other type FCGI_UNKNOWN_TYPE, as the specification asks. */
static int answer_management(struct conn *c, const struct fcgi_record *rec)
{
    if (rec->type == FCGI_GET_VALUES) return queue_record(c, FCGI_GET_VALUES_RESULT, 0, NULL, 0);
    const unsigned char body[8] = {(unsigned char)rec->type};
    return queue_record(c, FCGI_UNKNOWN_TYPE, 0, body, sizeof body);
}

static int begin_request(struct conn *c, const struct fcgi_record *rec)
{
    if (rec->content_length < 8) return -1;
    if (c->active_id) return queue_end_request(c, rec->request_id, FCGI_CANT_MPX_CONN);
    c->active_id = rec->request_id;
    c->keep_conn = rec->head[2] & FCGI_KEEP_CONN;
    unsigned role = (unsigned)rec->head[0] << 8 | rec->head[1];
    return role == FCGI_RESPONDER ? 0 : finish_request(c, rec->request_id, FCGI_UNKNOWN_ROLE);
}

/* The end of STDIN: the whole request is in, the fixed answer goes out. */
static int answer(struct conn *c, unsigned request_id)
{
    if (queue_record(c, FCGI_STDOUT, request_id, BASELINE_RESPONSE, BASELINE_RESPONSE_LEN) != 0 ||
        queue_record(c, FCGI_STDOUT, request_id, NULL, 0) != 0)
        return -1;
    return finish_request(c, request_id, FCGI_REQUEST_COMPLETE);
}

/* Acts on one complete record; -1: the connection cannot go on. PARAMS, STDIN
 * data and records of other requests carry nothing this answer needs. */
static int handle_record(struct conn *c, const struct fcgi_record *rec)
{
    if (rec->request_id == 0) return answer_management(c, rec);
    if (rec->type == FCGI_BEGIN_REQUEST) return begin_request(c, rec);
    if (rec->request_id != c->active_id) return 0;
    if (rec->type == FCGI_ABORT_REQUEST) return finish_request(c, rec->request_id, FCGI_REQUEST_COMPLETE);
    if (rec->type == FCGI_STDIN && rec->content_length == 0) return answer(c, rec->request_id);
    return 0;
}

/* Reads what the socket has and acts on every complete record; -1: close it. */
static int read_input(struct conn *c)
{
    unsigned char buf[READ_CHUNK];
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (n == 0) { /* the client is done sending: what is queued still goes out, then the connection ends */
        c->closing = 1;
        return 0;
    }
    for (size_t at = 0; at < (size_t)n && !c->closing;) {
        size_t used;
        struct fcgi_record rec;
        enum fcgi_read_result r = fcgi_read(&c->reader, buf + at, (size_t)n - at, &used, &rec);
        at += used;
        if (r == FCGI_READ_BAD) return -1;
        if (r == FCGI_READ_RECORD && handle_record(c, &rec) != 0) return -1;
    }
    return 0;
}

/* Sends what the socket takes; -1: the peer is gone, or the last answer is out and the connection ends. */
static int write_output(struct conn *c)
{
    while (c->out_sent < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno == EAGAIN ? 0 : -1;
        }
        c->out_sent += (size_t)n;
    }
    c->out_len = c->out_sent = 0;
    return c->closing ? -1 : 0;
}

/* Readable unless closing or too far behind on output; writable while output waits. */
static int update_interest(int epoll_fd, struct conn *c)
{
    size_t pending = c->out_len - c->out_sent;
    uint32_t want = (pending ? EPOLLOUT : 0) | (c->closing || pending > OUTPUT_HIGH_WATER ? 0 : EPOLLIN);
    if (want == c->interest) return 0;
    struct epoll_event ev = {.events = want, .data.ptr = c};
    c->interest = want;
    return epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void on_conn_event(int epoll_fd, struct conn *c, uint32_t events)
{
    int ok = 1;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR) && !c->closing) ok = read_input(c) == 0;
    if (ok) ok = write_output(c) == 0 && update_interest(epoll_fd, c) == 0;
    if (!ok) conn_close(c);
}

/* One connection per wake-up: with EPOLLEXCLUSIVE the next one may wake another
 * process, so connections spread over the processes as they would over perfcgi's. */
static void accept_one(int epoll_fd, int listen_fd)
{
    int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return; /* taken by another process, or out of descriptors for now */
    struct conn *c = calloc(1, sizeof *c);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (!c || epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        free(c);
        close(fd);
        return;
    }
    c->fd = fd;
    c->interest = EPOLLIN;
}

static void serve(void *ctx)
{
    int listen_fd = *(int *)ctx;
    /* Created in each process: an epoll instance shared across fork would mix their connections. */
    int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = NULL};
    if (epoll_fd < 0 || epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &ev) != 0) {
        perror("fcgi-nonblocking: epoll");
        return;
    }
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epoll_fd, events, MAX_EVENTS, -1);
        if (n < 0 && errno != EINTR) {
            perror("fcgi-nonblocking: epoll_wait");
            return;
        }
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr)
                on_conn_event(epoll_fd, events[i].data.ptr, events[i].events);
            else
                accept_one(epoll_fd, listen_fd);
        }
    }
}

int main(int argc, char **argv)
{
    struct baseline_args args;
    if (baseline_args_parse(argc, argv, &args) != 0) return 2;
    int listen_fd = listen_socket_open(&args);
    if (listen_fd < 0) return 1;
    int rc = prefork_run(args.processes, serve, &listen_fd);
    if (args.unix_path) unlink(args.unix_path);
    return rc;
}
