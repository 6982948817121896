/* fcgi_codec: FastCGI 1.0 responder records read from and written to buffers, for the event worker. */
#include "fastcgi/fcgi_codec.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEADER_LEN 8
#define VERSION_1 1
#define PAIR_LEN_MAX 0x7fffffffu
/* The largest multiple of 8 a record holds: full stream records need no padding. */
#define STREAM_CHUNK (FCGI_CONTENT_MAX & ~(size_t)7)

#define DEFAULT_MAX_PARAMS_BYTES (64u * 1024)
/* Only a bound on the pairs' index: the bytes limit is the real one. Nginx
 * forwards 1000 headers at most by default (max_headers), or, where it has no
 * such limit, about 6500 short ones in its default header buffers (4 x 8k). */
#define DEFAULT_MAX_PARAMS 8192u
#define DEFAULT_MAX_STDIN_BYTES (1024u * 1024)

/* Where the parser is within the current record. */
enum stage { STAGE_HEADER, STAGE_CONTENT, STAGE_PADDING };

/* What the current record's content is for, decided from its header. */
enum action { ACT_SKIP, ACT_BEGIN, ACT_ABORT, ACT_PARAMS, ACT_STDIN, ACT_GET_VALUES, ACT_UNKNOWN };

/* The active request's streams. */
enum request_state { REQ_NONE, REQ_PARAMS, REQ_STDIN, REQ_DONE };

/* ---- buffers ---- */

void fcgi_buf_init(struct fcgi_buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
}

void fcgi_buf_free(struct fcgi_buf *b)
{
    free(b->data);
    fcgi_buf_init(b);
}

int fcgi_buf_reserve(struct fcgi_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len) return -1;
    size_t need = b->len + extra;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) return -1;
    b->data = d;
    b->cap = cap;
    return 0;
}

/* Appends without checking: the caller reserved the room. */
static void buf_put(struct fcgi_buf *b, const void *src, size_t n)
{
    if (n) memcpy(b->data + b->len, src, n);
    b->len += n;
}

/* ---- name-value pairs ---- */

/* Reads one pair length (1 byte below 128, else 4 bytes with the high bit
 * set) at *pos; -1 when the bytes run out. */
static int read_pair_len(const uint8_t *s, size_t n, size_t *pos, size_t *out)
{
    if (*pos >= n) return -1;
    if (s[*pos] < 0x80) {
        *out = s[(*pos)++];
        return 0;
    }
    if (n - *pos < 4) return -1;
    const uint8_t *q = s + *pos;
    *out = ((size_t)(q[0] & 0x7f) << 24) | ((size_t)q[1] << 16) | ((size_t)q[2] << 8) | q[3];
    *pos += 4;
    return 0;
}

/* Steps over the pair at *pos, giving where its name and value start; -1
 * when its lengths point past the end of s. The subtractions cannot wrap:
 * *pos <= n is kept at every step. */
static inline int next_pair(const uint8_t *s, size_t n, size_t *pos, size_t *name_at, size_t *name_len,
                            size_t *value_len)
{
    size_t nl, vl;
    if (n - *pos >= 2 && s[*pos] < 0x80 && s[*pos + 1] < 0x80) { /* most pairs: two one-byte lengths */
        nl = s[*pos];
        vl = s[*pos + 1];
        *pos += 2;
    } else if (read_pair_len(s, n, pos, &nl) != 0 || read_pair_len(s, n, pos, &vl) != 0) {
        return -1;
    }
    if (nl > n - *pos || vl > n - *pos - nl) return -1;
    *name_at = *pos;
    *name_len = nl;
    *value_len = vl;
    *pos += nl + vl;
    return 0;
}

static size_t pair_len_size(size_t len)
{
    return len < 0x80 ? 1 : 4;
}

static void put_pair_len(struct fcgi_buf *b, size_t len)
{
    if (len < 0x80) {
        uint8_t c = (uint8_t)len;
        buf_put(b, &c, 1);
    } else {
        uint8_t q[4] = {(uint8_t)(0x80 | (len >> 24)), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};
        buf_put(b, q, 4);
    }
}

int fcgi_encode_param(struct fcgi_buf *b, const char *name, size_t name_len, const char *value, size_t value_len)
{
    if (name_len > PAIR_LEN_MAX || value_len > PAIR_LEN_MAX) return -1;
    size_t total = pair_len_size(name_len) + pair_len_size(value_len) + name_len;
    if (value_len > SIZE_MAX - total || fcgi_buf_reserve(b, total + value_len) != 0) return -1;
    put_pair_len(b, name_len);
    put_pair_len(b, value_len);
    buf_put(b, name, name_len);
    buf_put(b, value, value_len);
    return 0;
}

/* ---- the parser ---- */

static size_t or_default(size_t v, size_t def)
{
    return v ? v : def;
}

void fcgi_parser_init(struct fcgi_parser *p, const struct fcgi_limits *limits)
{
    memset(p, 0, sizeof *p);
    struct fcgi_limits l = limits ? *limits : (struct fcgi_limits){0};
    p->limits.max_params_bytes = or_default(l.max_params_bytes, DEFAULT_MAX_PARAMS_BYTES);
    p->limits.max_params = or_default(l.max_params, DEFAULT_MAX_PARAMS);
    p->limits.max_stdin_bytes = or_default(l.max_stdin_bytes, DEFAULT_MAX_STDIN_BYTES);
    p->stage = STAGE_HEADER;
    fcgi_buf_init(&p->params);
    fcgi_buf_init(&p->mgmt);
}

void fcgi_parser_free(struct fcgi_parser *p)
{
    fcgi_buf_free(&p->params);
    fcgi_buf_free(&p->mgmt);
    free(p->pairs);
    p->pairs = NULL;
    p->npairs = p->pairs_cap = 0;
}

void fcgi_parser_reset_request(struct fcgi_parser *p)
{
    p->request_id = 0;
    p->keep_conn = 0;
    p->request_state = REQ_NONE;
    p->stdin_bytes = 0;
    p->params.len = 0;
    p->params_over = 0;
    p->npairs = 0;
    /* A record of the ended request may be half read: skip the rest of it. */
    if (p->action == ACT_PARAMS || p->action == ACT_STDIN || p->action == ACT_ABORT) p->action = ACT_SKIP;
}

void *fcgi_parser_take_params(struct fcgi_parser *p)
{
    void *data = p->params.data;
    fcgi_buf_init(&p->params);
    p->npairs = 0;
    return data;
}

int fcgi_parser_give_room(struct fcgi_parser *p, struct fcgi_room *room)
{
    if (p->request_state != REQ_NONE || (!p->params.data && !p->pairs)) return 0;
    room->params = p->params;
    room->params.len = 0;
    room->pairs = p->pairs;
    room->pairs_cap = p->pairs_cap;
    fcgi_buf_init(&p->params);
    p->pairs = NULL;
    p->npairs = p->pairs_cap = 0;
    return 1;
}

int fcgi_parser_take_room(struct fcgi_parser *p, const struct fcgi_room *room)
{
    if (p->params.data || p->pairs) return 0;
    p->params = room->params;
    p->pairs = room->pairs;
    p->pairs_cap = room->pairs_cap;
    p->npairs = 0;
    return 1;
}

void fcgi_room_free(struct fcgi_room *room)
{
    fcgi_buf_free(&room->params);
    free(room->pairs);
    room->pairs = NULL;
    room->pairs_cap = 0;
}

static enum fcgi_event_type parser_fail(struct fcgi_parser *p, struct fcgi_event *ev, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Makes the parser fail for good: the connection cannot be resynchronised. */
static enum fcgi_event_type parser_fail(struct fcgi_parser *p, struct fcgi_event *ev, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->error, sizeof p->error, fmt, ap);
    va_end(ap);
    p->failed = 1;
    ev->type = FCGI_EV_ERROR;
    ev->error = p->error;
    return FCGI_EV_ERROR;
}

static enum fcgi_event_type emit(struct fcgi_event *ev, enum fcgi_event_type type, uint16_t request_id)
{
    ev->type = type;
    ev->request_id = request_id;
    return type;
}

static const char *type_name(int type)
{
    static const char *const names[] = {"0",          "BEGIN_REQUEST", "ABORT_REQUEST",     "END_REQUEST",
                                        "PARAMS",     "STDIN",         "STDOUT",            "STDERR",
                                        "DATA",       "GET_VALUES",    "GET_VALUES_RESULT", "UNKNOWN_TYPE"};
    return type >= 0 && type <= FCGI_REC_UNKNOWN_TYPE ? names[type] : "?";
}

/* Notes that the active request's params went over a limit: the rest of them
 * is read and dropped, and PARAMS_DONE says too_large with the reason. */
static void params_over(struct fcgi_parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void params_over(struct fcgi_parser *p, const char *fmt, ...)
{
    if (p->params_over) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->error, sizeof p->error, fmt, ap);
    va_end(ap);
    p->params_over = 1;
}

/* Doubles the room for pairs; the room stays for the connection's next
 * requests. */
static int grow_pairs(struct fcgi_parser *p)
{
    size_t cap = p->pairs_cap ? p->pairs_cap * 2 : 32;
    struct fcgi_pair *pairs = realloc(p->pairs, cap * sizeof *pairs);
    if (!pairs) return -1;
    p->pairs = pairs;
    p->pairs_cap = cap;
    return 0;
}

/*
 * Decodes the PARAMS stream in place, in one pass: names and values stay
 * where they are, each value ended by a NUL over the first length byte of
 * the next pair once that is read (or the byte after the stream, reserved
 * here). A malformed stream fails the parser
 * for good, so pairs decoded before it are never seen. Params over a limit
 * give the pairs kept before it (a pair cut there ends them), so that the
 * answer can still be logged with its method and path.
 */
static enum fcgi_event_type params_done(struct fcgi_parser *p, struct fcgi_event *ev)
{
    if (fcgi_buf_reserve(&p->params, 1) != 0 || (p->pairs_cap == 0 && grow_pairs(p) != 0))
        return parser_fail(p, ev, "out of memory for params");
    uint8_t *s = p->params.data;
    size_t n = p->params.len, pos = 0, at, nl, vl, count = 0;
    size_t end = SIZE_MAX; /* where the previous value ends, for its NUL */
    while (pos < n) {
        if (next_pair(s, n, &pos, &at, &nl, &vl) != 0) {
            if (p->params_over) break;
            return parser_fail(p, ev, "request %u: malformed name-value pair in FCGI_PARAMS", p->request_id);
        }
        if (count == p->limits.max_params) {
            params_over(p, "more than %zu FastCGI params (headers and CGI variables)", p->limits.max_params);
            break;
        }
        if (count + 1 > p->pairs_cap && grow_pairs(p) != 0)
            return parser_fail(p, ev, "out of memory for %zu params", count + 1);
        if (end != SIZE_MAX) s[end] = '\0';
        p->pairs[count] = (struct fcgi_pair){(const char *)s + at, nl, (const char *)s + at + nl, vl};
        end = at + nl + vl;
        count++;
    }
    if (end != SIZE_MAX) s[end] = '\0';
    p->npairs = count;
    p->request_state = REQ_STDIN;
    ev->pairs = p->pairs;
    ev->npairs = count;
    ev->too_large = p->params_over;
    if (p->params_over) ev->error = p->error;
    return emit(ev, FCGI_EV_PARAMS_DONE, p->request_id);
}

/* Decides from a complete header what its record's content is for; the
 * errors that the header alone shows are reported here, before any content. */
static enum fcgi_event_type on_header(struct fcgi_parser *p, struct fcgi_event *ev)
{
    const uint8_t *h = p->header;
    if (h[0] != VERSION_1) return parser_fail(p, ev, "unsupported FastCGI version %u", h[0]);
    p->rec_type = h[1];
    p->rec_id = (uint16_t)(h[2] << 8 | h[3]);
    p->rec_len = (size_t)h[4] << 8 | h[5];
    p->content_left = p->rec_len;
    p->padding_left = h[6];
    p->stage = STAGE_CONTENT;
    int active = p->request_state != REQ_NONE && p->rec_id == p->request_id;
    unsigned id = p->rec_id;

    /* Management records: FCGI_GET_VALUES is the only one of version 1. */
    if (id == 0) {
        if (p->rec_type != FCGI_REC_GET_VALUES) {
            p->action = ACT_UNKNOWN;
            return FCGI_EV_NEED_MORE;
        }
        p->mgmt.len = 0;
        if (fcgi_buf_reserve(&p->mgmt, p->rec_len) != 0) return parser_fail(p, ev, "out of memory for FCGI_GET_VALUES");
        p->action = ACT_GET_VALUES;
        return FCGI_EV_NEED_MORE;
    }
    switch (p->rec_type) {
    case FCGI_REC_BEGIN_REQUEST:
        if (p->rec_len != sizeof p->begin)
            return parser_fail(p, ev, "FCGI_BEGIN_REQUEST of %zu bytes instead of 8", p->rec_len);
        if (active) return parser_fail(p, ev, "FCGI_BEGIN_REQUEST for request %u, which is already active", id);
        p->begin_len = 0;
        p->action = ACT_BEGIN;
        break;
    case FCGI_REC_ABORT_REQUEST:
        p->action = active ? ACT_ABORT : ACT_SKIP;
        break;
    case FCGI_REC_PARAMS:
        /* Records of requests that are not active (ended early, rejected) are
         * still on their way: they are skipped, as libfcgi does. */
        if (!active) {
            p->action = ACT_SKIP;
            break;
        }
        if (p->request_state != REQ_PARAMS)
            return parser_fail(p, ev, "request %u: FCGI_PARAMS after the end of its params", id);
        p->action = ACT_PARAMS;
        if (p->rec_len > p->limits.max_params_bytes - p->params.len)
            params_over(p, "the FastCGI params (headers and CGI variables) are over %zu bytes", p->limits.max_params_bytes);
        if (p->params_over) break; /* its content is dropped */
        if (fcgi_buf_reserve(&p->params, p->rec_len) != 0) return parser_fail(p, ev, "out of memory for params");
        break;
    case FCGI_REC_STDIN:
        if (!active) {
            p->action = ACT_SKIP;
            break;
        }
        if (p->request_state == REQ_PARAMS)
            return parser_fail(p, ev, "request %u: FCGI_STDIN before the end of its params", id);
        if (p->request_state == REQ_DONE)
            return parser_fail(p, ev, "request %u: FCGI_STDIN after the end of its body", id);
        if (p->rec_len > p->limits.max_stdin_bytes - p->stdin_bytes)
            return parser_fail(p, ev, "request %u: body over %zu bytes", id, p->limits.max_stdin_bytes);
        p->action = ACT_STDIN;
        break;
    case FCGI_REC_DATA:
        if (active) return parser_fail(p, ev, "request %u: FCGI_DATA is not part of the responder role", id);
        p->action = ACT_SKIP;
        break;
    case FCGI_REC_END_REQUEST:
    case FCGI_REC_STDOUT:
    case FCGI_REC_STDERR:
    case FCGI_REC_GET_VALUES:
    case FCGI_REC_GET_VALUES_RESULT:
    case FCGI_REC_UNKNOWN_TYPE:
        return parser_fail(p, ev, "FCGI_%s record (request %u) sent to the application", type_name(p->rec_type), id);
    default:
        p->action = ACT_UNKNOWN;
        break;
    }
    return FCGI_EV_NEED_MORE;
}

/* Acts on a record whose content has all been read. */
static enum fcgi_event_type on_content_end(struct fcgi_parser *p, struct fcgi_event *ev)
{
    p->stage = STAGE_PADDING;
    switch (p->action) {
    case ACT_BEGIN: {
        int role = p->begin[0] << 8 | p->begin[1];
        ev->role = role;
        ev->keep_conn = (p->begin[2] & FCGI_FLAG_KEEP_CONN) != 0;
        if (p->request_state != REQ_NONE || role != FCGI_ROLE_RESPONDER) {
            /* One request at a time per connection (FCGI_MPXS_CONNS is 0):
             * a second one is refused as the specification says, and the
             * active one goes on. */
            ev->protocol_status = p->request_state != REQ_NONE ? FCGI_STATUS_CANT_MPX_CONN : FCGI_STATUS_UNKNOWN_ROLE;
            return emit(ev, FCGI_EV_REJECT, p->rec_id);
        }
        p->request_id = p->rec_id;
        p->keep_conn = ev->keep_conn;
        p->request_state = REQ_PARAMS;
        p->stdin_bytes = 0;
        p->params.len = 0;
        p->params_over = 0;
        p->npairs = 0;
        return emit(ev, FCGI_EV_BEGIN, p->rec_id);
    }
    case ACT_ABORT:
        return emit(ev, FCGI_EV_ABORT, p->rec_id);
    case ACT_PARAMS:
        return p->rec_len == 0 ? params_done(p, ev) : FCGI_EV_NEED_MORE;
    case ACT_STDIN:
        if (p->rec_len != 0) return FCGI_EV_NEED_MORE;
        p->request_state = REQ_DONE;
        return emit(ev, FCGI_EV_STDIN_END, p->rec_id);
    case ACT_GET_VALUES: {
        size_t pos = 0, at, nl, vl;
        while (pos < p->mgmt.len)
            if (next_pair(p->mgmt.data, p->mgmt.len, &pos, &at, &nl, &vl) != 0)
                return parser_fail(p, ev, "malformed name-value pair in FCGI_GET_VALUES");
        ev->data = p->mgmt.data;
        ev->len = p->mgmt.len;
        return emit(ev, FCGI_EV_GET_VALUES, 0);
    }
    case ACT_UNKNOWN:
        ev->record_type = p->rec_type;
        return emit(ev, FCGI_EV_UNKNOWN_TYPE, p->rec_id);
    default:
        return FCGI_EV_NEED_MORE;
    }
}

/* Takes what it can of the current record's content from data[0..len). */
static enum fcgi_event_type on_content(struct fcgi_parser *p, const uint8_t *data, size_t len, size_t *used,
                                       struct fcgi_event *ev)
{
    size_t n = len < p->content_left ? len : p->content_left;
    *used = n;
    p->content_left -= n;
    switch (p->action) {
    case ACT_STDIN:
        p->stdin_bytes += n;
        ev->data = data;
        ev->len = n;
        return emit(ev, FCGI_EV_STDIN, p->rec_id);
    case ACT_BEGIN:
        memcpy(p->begin + p->begin_len, data, n); /* on_header checked rec_len is 8 */
        p->begin_len += n;
        break;
    case ACT_PARAMS:
        if (!p->params_over) buf_put(&p->params, data, n); /* on_header reserved rec_len */
        break;
    case ACT_GET_VALUES:
        buf_put(&p->mgmt, data, n);
        break;
    default:
        break;
    }
    return FCGI_EV_NEED_MORE;
}

enum fcgi_event_type fcgi_parser_feed(struct fcgi_parser *p, const uint8_t *data, size_t len, size_t *consumed,
                                      struct fcgi_event *ev)
{
    size_t off = 0;
    enum fcgi_event_type t = FCGI_EV_NEED_MORE;
    memset(ev, 0, sizeof *ev);
    if (p->failed) {
        *consumed = 0;
        ev->type = FCGI_EV_ERROR;
        ev->error = p->error;
        return FCGI_EV_ERROR;
    }
    while (t == FCGI_EV_NEED_MORE) {
        if (p->stage == STAGE_HEADER) {
            if (off == len) break;
            size_t n = HEADER_LEN - p->header_len;
            if (n > len - off) n = len - off;
            memcpy(p->header + p->header_len, data + off, n);
            p->header_len += n;
            off += n;
            if (p->header_len < HEADER_LEN) break;
            p->header_len = 0;
            t = on_header(p, ev);
        } else if (p->stage == STAGE_CONTENT) {
            /* An empty record completes without input. */
            if (p->content_left == 0) {
                t = on_content_end(p, ev);
                continue;
            }
            if (off == len) break;
            size_t used;
            t = on_content(p, data + off, len - off, &used, ev);
            off += used;
        } else {
            size_t n = len - off < p->padding_left ? len - off : p->padding_left;
            p->padding_left -= n;
            off += n;
            if (p->padding_left == 0)
                p->stage = STAGE_HEADER;
            else
                break;
        }
    }
    *consumed = off;
    ev->type = t;
    return t;
}

const char *fcgi_param(const struct fcgi_parser *p, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < p->npairs; i++)
        if (p->pairs[i].name_len == len && memcmp(p->pairs[i].name, name, len) == 0) return p->pairs[i].value;
    return NULL;
}

/* ---- writers ---- */

static size_t padding_for(size_t len)
{
    return (8 - (len & 7)) & 7;
}

/* Appends one record; the caller reserved HEADER_LEN + len + padding. */
static void put_record(struct fcgi_buf *b, int type, uint16_t request_id, const void *content, size_t len)
{
    static const uint8_t zeros[8];
    size_t pad = padding_for(len);
    uint8_t h[HEADER_LEN] = {VERSION_1,      (uint8_t)type, (uint8_t)(request_id >> 8), (uint8_t)request_id,
                             (uint8_t)(len >> 8), (uint8_t)len, (uint8_t)pad,              0};
    buf_put(b, h, sizeof h);
    buf_put(b, content, len);
    buf_put(b, zeros, pad);
}

int fcgi_write_record(struct fcgi_buf *b, int type, uint16_t request_id, const void *content, size_t len)
{
    if (type < 0 || type > 255 || len > FCGI_CONTENT_MAX) return -1;
    if (fcgi_buf_reserve(b, HEADER_LEN + len + padding_for(len)) != 0) return -1;
    put_record(b, type, request_id, content, len);
    return 0;
}

int fcgi_write_stream(struct fcgi_buf *b, int type, uint16_t request_id, const void *data, size_t len)
{
    if (type < 0 || type > 255) return -1;
    if (len == 0) return 0;
    size_t records = len / STREAM_CHUNK + (len % STREAM_CHUNK != 0);
    /* One reservation for all records, so a failure leaves b unchanged. */
    size_t framing = records * HEADER_LEN + padding_for(len % STREAM_CHUNK);
    if (len > SIZE_MAX - framing || fcgi_buf_reserve(b, len + framing) != 0) return -1;
    const uint8_t *d = data;
    for (size_t off = 0; off < len; off += STREAM_CHUNK) {
        size_t n = len - off < STREAM_CHUNK ? len - off : STREAM_CHUNK;
        put_record(b, type, request_id, d + off, n);
    }
    return 0;
}

int fcgi_write_stdout(struct fcgi_buf *b, uint16_t request_id, const void *data, size_t len)
{
    return fcgi_write_stream(b, FCGI_REC_STDOUT, request_id, data, len);
}

int fcgi_write_stdout_end(struct fcgi_buf *b, uint16_t request_id)
{
    return fcgi_write_record(b, FCGI_REC_STDOUT, request_id, NULL, 0);
}

int fcgi_write_end_request(struct fcgi_buf *b, uint16_t request_id, uint32_t app_status, int protocol_status)
{
    if (protocol_status < 0 || protocol_status > 255) return -1;
    uint8_t c[8] = {(uint8_t)(app_status >> 24), (uint8_t)(app_status >> 16), (uint8_t)(app_status >> 8),
                    (uint8_t)app_status, (uint8_t)protocol_status};
    return fcgi_write_record(b, FCGI_REC_END_REQUEST, request_id, c, sizeof c);
}

int fcgi_write_unknown_type(struct fcgi_buf *b, int type)
{
    if (type < 0 || type > 255) return -1;
    uint8_t c[8] = {(uint8_t)type};
    return fcgi_write_record(b, FCGI_REC_UNKNOWN_TYPE, 0, c, sizeof c);
}

int fcgi_write_begin_request(struct fcgi_buf *b, uint16_t request_id, int role, int flags)
{
    if (role < 0 || role > 0xffff || flags < 0 || flags > 255) return -1;
    uint8_t c[8] = {(uint8_t)(role >> 8), (uint8_t)role, (uint8_t)flags};
    return fcgi_write_record(b, FCGI_REC_BEGIN_REQUEST, request_id, c, sizeof c);
}

int fcgi_write_get_values_result(struct fcgi_buf *b, const uint8_t *query, size_t query_len,
                                 const struct fcgi_values *v)
{
    struct {
        const char *name;
        unsigned value;
        int asked;
    } known[] = {
        {"FCGI_MAX_CONNS", v->max_conns, 0},
        {"FCGI_MAX_REQS", v->max_reqs, 0},
        {"FCGI_MPXS_CONNS", v->mpxs_conns ? 1u : 0u, 0},
    };
    size_t pos = 0, at, nl, vl;
    while (pos < query_len) {
        if (next_pair(query, query_len, &pos, &at, &nl, &vl) != 0) return -1;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            if (nl == strlen(known[i].name) && memcmp(query + at, known[i].name, nl) == 0) known[i].asked = 1;
    }
    /* Each name at most once: a query repeating names cannot make the
     * answer outgrow one record. Three short pairs fit this easily. */
    uint8_t space[128];
    struct fcgi_buf content = {space, 0, sizeof space};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (!known[i].asked) continue;
        char num[16];
        int n = snprintf(num, sizeof num, "%u", known[i].value);
        size_t name_len = strlen(known[i].name);
        put_pair_len(&content, name_len);
        put_pair_len(&content, (size_t)n);
        buf_put(&content, known[i].name, name_len);
        buf_put(&content, num, (size_t)n);
    }
    return fcgi_write_record(b, FCGI_REC_GET_VALUES_RESULT, 0, content.data, content.len);
}
