/* fuzz_fcgi_codec_one: one fuzz input through the FastCGI codec, shared by the fuzzer and the corpus replay. */
#include "fuzz_fcgi_codec_one.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastcgi/fcgi_codec.h"

/*
 * Helpers are prefixed fc_: the corpus replay includes this file and
 * fuzz_query_one.c into one translation unit.
 */

/* What the server answers to FCGI_GET_VALUES. */
static const struct fcgi_values fc_values = {7, 9, 0};

/* A sequence to compare: items, with the chunks of one stream merged into a
 * run, so that two runs that cut a stream differently compare equal. */
struct fc_log {
    struct fcgi_buf b;
    int run_kind; /* 0: no run open */
    unsigned run_id;
    size_t run_len_at;
};

enum { FC_STDIN_RUN = 1, FC_STDOUT_RUN = 2, FC_EVENT = 0x40, FC_RECORD = 0x80 };

/* A record as a plain walk over the whole input finds it. */
struct fc_rec {
    size_t content_start, content_end; /* content_end may lie past a truncated input */
    int type;
    unsigned id;
};

struct fc_run {
    struct fcgi_parser p;
    struct fcgi_buf out;  /* what the server wrote */
    struct fc_log events; /* what the parser reported */
    struct fc_log wrote;  /* the stdout the server asked for */
    struct fc_log got;    /* the stdout read back from out */
    struct fc_log all;    /* every record of out, stdout merged */
    uint64_t seed;
    int roundtrip; /* re-encode the params (one run does; it does not change the logs) */
    uint16_t due;  /* a request whose answer waits for the next event */
    int impatient; /* answers at the first chunk of a body, in the middle of its record */
    size_t stdin_total; /* body bytes given to the active request */
    /* The run fed the whole input at once checks each event against the
     * records there: the input, its records, the offset after the current
     * event, and where the active request's BEGIN_REQUEST ended. */
    const uint8_t *input;
    struct fc_rec *recs;
    size_t nrecs, at, begin_at;
    int closed;    /* an error ended the connection */
    size_t events_seen;
    char *err;
    size_t errlen;
};

static int fc_fail(struct fc_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fc_fail(struct fc_run *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, r->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static void fc_put(struct fcgi_buf *b, const void *d, size_t n)
{
    if (fcgi_buf_reserve(b, n) != 0) abort(); /* the fuzzer's memory limit reports it */
    if (n) memcpy(b->data + b->len, d, n);
    b->len += n;
}

static void fc_put_u64(struct fcgi_buf *b, uint64_t v)
{
    fc_put(b, &v, sizeof v);
}

static void fc_close_run(struct fc_log *l)
{
    if (!l->run_kind) return;
    uint64_t n = l->b.len - l->run_len_at - sizeof n;
    memcpy(l->b.data + l->run_len_at, &n, sizeof n);
    l->run_kind = 0;
}

static void fc_log_chunk(struct fc_log *l, int kind, unsigned id, const void *d, size_t n)
{
    if (n == 0) return;
    if (l->run_kind != kind || l->run_id != id) {
        fc_close_run(l);
        uint8_t h[3] = {(uint8_t)kind, (uint8_t)(id >> 8), (uint8_t)id};
        fc_put(&l->b, h, sizeof h);
        l->run_len_at = l->b.len;
        fc_put_u64(&l->b, 0);
        l->run_kind = kind;
        l->run_id = id;
    }
    fc_put(&l->b, d, n);
}

static void fc_log_item(struct fc_log *l, int kind, unsigned id, const void *d, size_t n)
{
    fc_close_run(l);
    uint8_t h[3] = {(uint8_t)kind, (uint8_t)(id >> 8), (uint8_t)id};
    fc_put(&l->b, h, sizeof h);
    fc_put_u64(&l->b, n);
    fc_put(&l->b, d, n);
}

static uint64_t fc_hash(const uint8_t *d, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ d[i]) * 1099511628211ull;
    return h;
}

static uint64_t fc_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The harness's own pair-length reader, independent of the codec's. */
static int fc_pair_len(const uint8_t *s, size_t n, size_t *pos, size_t *out)
{
    if (*pos >= n) return -1;
    if (!(s[*pos] & 0x80)) {
        *out = s[(*pos)++];
        return 0;
    }
    if (n - *pos < 4) return -1;
    *out = ((size_t)(s[*pos] & 0x7f) << 24) | ((size_t)s[*pos + 1] << 16) | ((size_t)s[*pos + 2] << 8) | s[*pos + 3];
    *pos += 4;
    return 0;
}

/* The answers the server writes; their stdout is also noted in `wrote`. */
static int fc_stdout(struct fc_run *r, uint16_t id, const uint8_t *d, size_t n)
{
    size_t before = r->out.len;
    if (fcgi_write_stdout(&r->out, id, d, n) != 0) return fc_fail(r, "fcgi_write_stdout failed");
    if (n == 0 && r->out.len != before) return fc_fail(r, "fcgi_write_stdout of nothing wrote a record");
    fc_log_chunk(&r->wrote, FC_STDOUT_RUN, id, d, n);
    return 0;
}

static int fc_answer(struct fc_run *r, uint16_t id, uint32_t app_status)
{
    if (fcgi_write_stdout_end(&r->out, id) != 0 ||
        fcgi_write_end_request(&r->out, id, app_status, FCGI_STATUS_REQUEST_COMPLETE) != 0)
        return fc_fail(r, "writing the end of request %u failed", id);
    fc_log_item(&r->wrote, FC_RECORD + FCGI_REC_STDOUT, id, NULL, 0);
    fcgi_parser_reset_request(&r->p);
    if (r->p.request_id != 0 || fcgi_param(&r->p, "") != NULL) return fc_fail(r, "reset left a request behind");
    return 0;
}

/* Encodes the decoded params again and parses them with a fresh parser:
 * the same pairs must come out. */
static int fc_roundtrip(struct fc_run *r, const struct fcgi_event *ev)
{
    struct fcgi_buf content, stream;
    fcgi_buf_init(&content);
    fcgi_buf_init(&stream);
    int rc = -1;
    for (size_t i = 0; i < ev->npairs; i++)
        if (fcgi_encode_param(&content, ev->pairs[i].name, ev->pairs[i].name_len, ev->pairs[i].value,
                              ev->pairs[i].value_len) != 0) {
            fc_fail(r, "fcgi_encode_param failed");
            goto out;
        }
    if (fcgi_write_begin_request(&stream, ev->request_id, FCGI_ROLE_RESPONDER, FCGI_FLAG_KEEP_CONN) != 0 ||
        fcgi_write_stream(&stream, FCGI_REC_PARAMS, ev->request_id, content.data, content.len) != 0 ||
        fcgi_write_record(&stream, FCGI_REC_PARAMS, ev->request_id, NULL, 0) != 0) {
        fc_fail(r, "writing the params again failed");
        goto out;
    }
    size_t len_before = stream.len;
    if (fcgi_write_record(&stream, FCGI_REC_STDIN, 1, stream.data, FCGI_CONTENT_MAX + 1) == 0 ||
        stream.len != len_before) {
        fc_fail(r, "a record over 65535 bytes was written");
        goto out;
    }
    struct fcgi_parser q;
    fcgi_parser_init(&q, &r->p.limits);
    struct fcgi_event e1, e2, e3;
    size_t u1, u2, u3;
    enum fcgi_event_type t1 = fcgi_parser_feed(&q, stream.data, stream.len, &u1, &e1);
    enum fcgi_event_type t2 = fcgi_parser_feed(&q, stream.data + u1, stream.len - u1, &u2, &e2);
    enum fcgi_event_type t3 = fcgi_parser_feed(&q, stream.data + u1 + u2, stream.len - u1 - u2, &u3, &e3);
    if (t1 != FCGI_EV_BEGIN || t2 != FCGI_EV_PARAMS_DONE || t3 != FCGI_EV_NEED_MORE || u1 + u2 + u3 != stream.len) {
        fc_fail(r, "re-encoded params parse as events %d %d %d (%s)", t1, t2, t3, t2 == FCGI_EV_ERROR ? e2.error : "");
    } else if (e2.npairs != ev->npairs) {
        fc_fail(r, "re-encoded params give %zu pairs, not %zu", e2.npairs, ev->npairs);
    } else {
        rc = 0;
        for (size_t i = 0; i < ev->npairs && rc == 0; i++) {
            const struct fcgi_pair *x = &ev->pairs[i], *y = &e2.pairs[i];
            if (x->name_len != y->name_len || x->value_len != y->value_len ||
                memcmp(x->name, y->name, x->name_len) != 0 || memcmp(x->value, y->value, x->value_len) != 0)
                rc = fc_fail(r, "re-encoded pair %zu differs", i);
        }
    }
    fcgi_parser_free(&q);
out:
    fcgi_buf_free(&content);
    fcgi_buf_free(&stream);
    return rc;
}

static int fc_params_done(struct fc_run *r, const struct fcgi_event *ev)
{
    if (ev->request_id != r->p.request_id || ev->npairs != r->p.npairs)
        return fc_fail(r, "PARAMS_DONE disagrees with the parser");
    struct fcgi_buf s;
    fcgi_buf_init(&s);
    int rc = 0;
    for (size_t i = 0; i < ev->npairs && rc == 0; i++) {
        const struct fcgi_pair *x = &ev->pairs[i];
        if (x->value != x->name + x->name_len || x->value[x->value_len] != '\0') {
            rc = fc_fail(r, "pair %zu is not decoded in place (name, value, NUL)", i);
            break;
        }
        /* A lookup by a name without NUL finds the first pair of that name
         * (tried on the first pairs only: it is quadratic). */
        if (i < 64 && x->name_len < 256 && !memchr(x->name, '\0', x->name_len)) {
            char name[256];
            memcpy(name, x->name, x->name_len);
            name[x->name_len] = '\0';
            size_t first = 0;
            while (ev->pairs[first].name_len != x->name_len || memcmp(ev->pairs[first].name, name, x->name_len))
                first++;
            if (fcgi_param(&r->p, name) != ev->pairs[first].value)
                rc = fc_fail(r, "fcgi_param misses pair %zu", i);
        }
        fc_put_u64(&s, x->name_len);
        fc_put_u64(&s, x->value_len);
        fc_put(&s, x->name, x->name_len);
        fc_put(&s, "=", 1);
        fc_put(&s, x->value, x->value_len);
    }
    if (rc == 0 && ev->too_large) fc_put(&s, ev->error, strlen(ev->error));
    if (rc == 0) fc_log_item(&r->events, FC_EVENT + ev->type, ev->request_id, s.data, s.len);
    fcgi_buf_free(&s);
    if (rc == 0 && r->roundtrip) rc = fc_roundtrip(r, ev);
    /* Now and then answer before the body, as for a bad request: the rest of
     * that request must then be skipped. */
    if (rc == 0 && ((r->seed >> 5) & 3) == 0) rc = fc_answer(r, ev->request_id, 400);
    return rc;
}

static int fc_get_values(struct fc_run *r, const struct fcgi_event *ev)
{
    fc_log_item(&r->events, FC_EVENT + ev->type, 0, ev->data, ev->len);
    if (fcgi_write_get_values_result(&r->out, ev->data, ev->len, &fc_values) != 0)
        return fc_fail(r, "cannot answer a GET_VALUES the parser accepted");
    return 0;
}

/* The answer to a whole request: now and then a large one, to split over
 * several records. */
static int fc_finish(struct fc_run *r, uint16_t id)
{
    if ((r->seed & 31) == 0) {
        size_t n = (size_t)(r->seed >> 32) % 140000 + 1;
        uint8_t *big = malloc(n);
        if (!big) abort();
        for (size_t i = 0; i < n; i++) big[i] = (uint8_t)(i * 31 + 7);
        int rc = fc_stdout(r, id, big, n);
        free(big);
        if (rc) return rc;
    }
    return fc_answer(r, id, (uint32_t)r->seed);
}

static int fc_handle(struct fc_run *r, const struct fcgi_event *ev);

/* Acts as a server would on one event. Now and then it answers a request
 * only after the next event, so that records still reach it while it is
 * active. */
static int fc_on_event(struct fc_run *r, const struct fcgi_event *ev)
{
    uint16_t due = r->due;
    r->due = 0;
    if (fc_handle(r, ev) != 0) return -1;
    if (due && r->p.request_id == due) return fc_finish(r, due);
    return 0;
}

static int fc_handle(struct fc_run *r, const struct fcgi_event *ev)
{
    int fields[4] = {ev->role, ev->keep_conn, ev->protocol_status, ev->record_type};
    switch (ev->type) {
    case FCGI_EV_BEGIN:
        if (ev->request_id == 0 || r->p.request_id != ev->request_id || ev->role != FCGI_ROLE_RESPONDER ||
            r->p.keep_conn != ev->keep_conn)
            return fc_fail(r, "BEGIN disagrees with the parser");
        if (fcgi_param(&r->p, "QUERY_STRING") != NULL) return fc_fail(r, "params before PARAMS_DONE");
        r->stdin_total = 0;
        fc_log_item(&r->events, FC_EVENT + ev->type, ev->request_id, fields, sizeof fields);
        return 0;
    case FCGI_EV_PARAMS_DONE:
        return fc_params_done(r, ev);
    case FCGI_EV_STDIN:
        if (ev->len == 0 || ev->request_id != r->p.request_id) return fc_fail(r, "empty or foreign STDIN chunk");
        r->stdin_total += ev->len;
        if (r->stdin_total > r->p.limits.max_stdin_bytes) return fc_fail(r, "a body over the limit");
        fc_log_chunk(&r->events, FC_STDIN_RUN, ev->request_id, ev->data, ev->len);
        if (fc_stdout(r, ev->request_id, ev->data, ev->len) != 0) return -1;
        return r->impatient ? fc_answer(r, ev->request_id, 413) : 0;
    case FCGI_EV_STDIN_END:
        if (ev->request_id != r->p.request_id) return fc_fail(r, "STDIN_END of another request");
        fc_log_item(&r->events, FC_EVENT + ev->type, ev->request_id, NULL, 0);
        if ((r->seed >> 7) & 1) {
            r->due = ev->request_id;
            return 0;
        }
        return fc_finish(r, ev->request_id);
    case FCGI_EV_ABORT:
        if (ev->request_id != r->p.request_id) return fc_fail(r, "ABORT of another request");
        fc_log_item(&r->events, FC_EVENT + ev->type, ev->request_id, NULL, 0);
        return fc_answer(r, ev->request_id, 1);
    case FCGI_EV_REJECT:
        if (ev->request_id == 0 || ev->request_id == r->p.request_id ||
            (ev->protocol_status == FCGI_STATUS_UNKNOWN_ROLE && ev->role == FCGI_ROLE_RESPONDER) ||
            (ev->protocol_status == FCGI_STATUS_CANT_MPX_CONN && r->p.request_id == 0) ||
            (ev->protocol_status != FCGI_STATUS_UNKNOWN_ROLE && ev->protocol_status != FCGI_STATUS_CANT_MPX_CONN))
            return fc_fail(r, "REJECT of request %u with status %d makes no sense", ev->request_id,
                           ev->protocol_status);
        fc_log_item(&r->events, FC_EVENT + ev->type, ev->request_id, fields, sizeof fields);
        if (fcgi_write_end_request(&r->out, ev->request_id, 0, ev->protocol_status) != 0)
            return fc_fail(r, "cannot write END_REQUEST");
        return 0;
    case FCGI_EV_GET_VALUES:
        return fc_get_values(r, ev);
    case FCGI_EV_UNKNOWN_TYPE:
        if (ev->record_type >= FCGI_REC_BEGIN_REQUEST && ev->record_type <= FCGI_REC_UNKNOWN_TYPE &&
            ev->request_id != 0)
            return fc_fail(r, "type %d called unknown", ev->record_type);
        fc_log_item(&r->events, FC_EVENT + ev->type, ev->request_id, fields, sizeof fields);
        if (fcgi_write_unknown_type(&r->out, ev->record_type) != 0) return fc_fail(r, "cannot write UNKNOWN_TYPE");
        return 0;
    case FCGI_EV_ERROR: {
        if (!ev->error || !ev->error[0]) return fc_fail(r, "an error without a message");
        fc_log_item(&r->events, FC_EVENT + ev->type, 0, ev->error, strlen(ev->error));
        struct fcgi_event again;
        size_t used = 1;
        static const uint8_t byte = 1;
        if (fcgi_parser_feed(&r->p, &byte, 1, &used, &again) != FCGI_EV_ERROR || used != 0)
            return fc_fail(r, "the parser went on after an error");
        r->closed = 1;
        return 0;
    }
    case FCGI_EV_NEED_MORE:
        break;
    }
    return fc_fail(r, "unexpected event %d", ev->type);
}

/* The records of data, up to the first one of another version (where the
 * parser stops). */
static void fc_walk(struct fc_run *r, const uint8_t *data, size_t size)
{
    r->input = data;
    r->recs = malloc((size / 8 + 1) * sizeof *r->recs);
    if (!r->recs) abort();
    for (size_t pos = 0; size - pos >= 8;) {
        const uint8_t *h = data + pos;
        size_t len = (size_t)h[4] << 8 | h[5];
        r->recs[r->nrecs++] = (struct fc_rec){pos + 8, pos + 8 + len, h[1], (unsigned)h[2] << 8 | h[3]};
        if (h[0] != 1) break;
        pos += 8 + len + h[6];
        if (pos > size) break;
    }
}

/* The record whose content (or the place of it) holds offset x. */
static const struct fc_rec *fc_rec_at(const struct fc_run *r, size_t x)
{
    size_t lo = 0, hi = r->nrecs;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->recs[mid].content_start <= x)
            lo = mid;
        else
            hi = mid;
    }
    if (lo < r->nrecs && r->recs[lo].content_start <= x && x <= r->recs[lo].content_end) return &r->recs[lo];
    return NULL;
}

/* The params of the active request, read straight from its PARAMS records
 * with the harness's own decoder, must be the pairs the parser gave; or, when
 * it says they are too large, they must be, and it gave the first of them. */
static int fc_same_params(struct fc_run *r, const struct fcgi_event *ev)
{
    struct fcgi_buf raw;
    fcgi_buf_init(&raw);
    for (size_t i = 0; i < r->nrecs; i++) {
        const struct fc_rec *x = &r->recs[i];
        if (x->type == FCGI_REC_PARAMS && x->id == ev->request_id && x->content_start >= r->begin_at &&
            x->content_end <= r->at)
            fc_put(&raw, r->input + x->content_start, x->content_end - x->content_start);
    }
    size_t q = 0, i = 0, nl, vl;
    int rc = 0;
    while (rc == 0 && q < raw.len) {
        if (fc_pair_len(raw.data, raw.len, &q, &nl) || fc_pair_len(raw.data, raw.len, &q, &vl) || nl > raw.len - q ||
            vl > raw.len - q - nl) {
            /* Past the pairs given, params too large need not be well formed. */
            if (!ev->too_large || i < ev->npairs) rc = fc_fail(r, "the parser accepted malformed params");
            break;
        }
        if (i < ev->npairs && (ev->pairs[i].name_len != nl || ev->pairs[i].value_len != vl ||
                               memcmp(ev->pairs[i].name, raw.data + q, nl) ||
                               memcmp(ev->pairs[i].value, raw.data + q + nl, vl)))
            rc = fc_fail(r, "pair %zu is not the one sent", i);
        else if (i >= ev->npairs && !ev->too_large)
            rc = fc_fail(r, "pair %zu was sent and not given", i);
        q += nl + vl;
        i++;
    }
    int over = raw.len > r->p.limits.max_params_bytes || i > r->p.limits.max_params;
    if (rc == 0 && i < ev->npairs) rc = fc_fail(r, "%zu pairs sent, %zu given", i, ev->npairs);
    if (rc == 0 && over != ev->too_large)
        rc = fc_fail(r, over ? "params over the limits were accepted" : "params within the limits were refused");
    if (rc == 0 && ev->too_large && (!ev->error || !ev->error[0])) rc = fc_fail(r, "too large without a reason");
    fcgi_buf_free(&raw);
    return rc;
}

/* Each event happens where a plain walk over the input says it should: at
 * the end of the content of a record of the matching type and request, with
 * that record's content. Errors come at the start or the end of a content. */
static int fc_check_place(struct fc_run *r, const struct fcgi_event *ev)
{
    const struct fc_rec *x = fc_rec_at(r, r->at);
    if (!x) return fc_fail(r, "event %d at offset %zu, outside any record", ev->type, r->at);
    const uint8_t *c = r->input + x->content_start;
    size_t len = x->content_end - x->content_start;
    int type = -1;
    switch (ev->type) {
    case FCGI_EV_STDIN:
        if (x->type != FCGI_REC_STDIN || x->id != ev->request_id || r->at - ev->len < x->content_start ||
            memcmp(ev->data, r->input + r->at - ev->len, ev->len))
            return fc_fail(r, "a body chunk at %zu that is not in a body record", r->at);
        return 0;
    case FCGI_EV_ERROR:
        if (r->at != x->content_start && r->at != x->content_end)
            return fc_fail(r, "an error in the middle of a record (offset %zu)", r->at);
        return 0;
    case FCGI_EV_BEGIN:
    case FCGI_EV_REJECT:
        type = FCGI_REC_BEGIN_REQUEST;
        if (len != 8 || ev->role != (c[0] << 8 | c[1]) || ev->keep_conn != (c[2] & 1))
            return fc_fail(r, "BEGIN_REQUEST read wrong");
        break;
    case FCGI_EV_PARAMS_DONE:
        type = len == 0 ? FCGI_REC_PARAMS : -1;
        break;
    case FCGI_EV_STDIN_END:
        type = len == 0 ? FCGI_REC_STDIN : -1;
        break;
    case FCGI_EV_ABORT:
        type = FCGI_REC_ABORT_REQUEST;
        break;
    case FCGI_EV_GET_VALUES:
        type = FCGI_REC_GET_VALUES;
        if (ev->len != len || (len && memcmp(ev->data, c, len))) return fc_fail(r, "GET_VALUES content read wrong");
        break;
    case FCGI_EV_UNKNOWN_TYPE:
        type = ev->record_type;
        break;
    default:
        break;
    }
    if (r->at != x->content_end || x->type != type || x->id != ev->request_id)
        return fc_fail(r, "event %d at offset %zu does not match record type %d of request %u ending at %zu", ev->type,
                       r->at, x->type, x->id, x->content_end);
    if (ev->type == FCGI_EV_BEGIN) r->begin_at = r->at;
    if (ev->type == FCGI_EV_PARAMS_DONE) return fc_same_params(r, ev);
    return 0;
}

/* Feeds one piece and handles its events until the parser wants more. */
static int fc_feed(struct fc_run *r, const uint8_t *d, size_t n, size_t limit)
{
    size_t off = 0;
    while (!r->closed) {
        struct fcgi_event ev;
        size_t used = (size_t)-1;
        enum fcgi_event_type t = fcgi_parser_feed(&r->p, d + off, n - off, &used, &ev);
        if (used > n - off) return fc_fail(r, "consumed %zu of %zu bytes", used, n - off);
        if (t != ev.type) return fc_fail(r, "returned event %d but described %d", t, ev.type);
        /* A chunk is the last bytes consumed (a header may come before it). */
        if (t == FCGI_EV_STDIN && (ev.len > used || ev.data != d + off + used - ev.len))
            return fc_fail(r, "a STDIN chunk that is not the bytes consumed");
        if (t != FCGI_EV_NEED_MORE && used == 0 && off == n && n > 0)
            return fc_fail(r, "an event from no input after the input was used up");
        off += used;
        if (t == FCGI_EV_NEED_MORE) return off == n ? 0 : fc_fail(r, "NEED_MORE with input left");
        if (++r->events_seen > limit) return fc_fail(r, "more events than bytes");
        r->at = off;
        if (r->recs && fc_check_place(r, &ev) != 0) return -1;
        if (fc_on_event(r, &ev) != 0) return -1;
    }
    return 0;
}

/* Feeds data in pieces of 1 to maxp bytes drawn from rng, each copied to
 * the end of an allocation, so that a read past it is seen too. */
static int fc_feed_pieces(struct fc_run *r, const uint8_t *data, size_t size, size_t maxp, uint64_t *rng)
{
    uint8_t *space = malloc(maxp);
    if (!space) abort();
    int rc = 0;
    for (size_t off = 0; rc == 0 && off < size && !r->closed;) {
        size_t n = 1 + (size_t)(fc_next(rng) % maxp);
        if (n > size - off) n = size - off;
        uint8_t *piece = space + maxp - n;
        memcpy(piece, data + off, n);
        rc = fc_feed(r, piece, n, size + 1);
        off += n;
    }
    free(space);
    return rc;
}

/* Reads back what the server wrote, checking each record as a web server
 * would, into `all` (everything) and `got` (the stdout). */
static int fc_check_out(struct fc_run *r)
{
    const uint8_t *o = r->out.data;
    size_t n = r->out.len, pos = 0;
    while (pos < n) {
        if (n - pos < 8) return fc_fail(r, "output ends in a header");
        const uint8_t *h = o + pos;
        unsigned type = h[1], id = (unsigned)h[2] << 8 | h[3];
        size_t len = (size_t)h[4] << 8 | h[5], pad = h[6];
        if (h[0] != 1 || h[7] != 0) return fc_fail(r, "output record with a bad header");
        if (pad != ((8 - (len & 7)) & 7)) return fc_fail(r, "output record padded with %zu bytes for %zu", pad, len);
        if (n - pos - 8 < len + pad) return fc_fail(r, "output record runs past the output");
        const uint8_t *c = h + 8;
        for (size_t i = 0; i < pad; i++)
            if (c[len + i]) return fc_fail(r, "padding is not zero");
        pos += 8 + len + pad;
        switch (type) {
        case FCGI_REC_STDOUT:
            if (len) {
                fc_log_chunk(&r->got, FC_STDOUT_RUN, id, c, len);
                fc_log_chunk(&r->all, FC_STDOUT_RUN, id, c, len);
                continue;
            }
            fc_log_item(&r->got, FC_RECORD + type, id, NULL, 0);
            break;
        case FCGI_REC_END_REQUEST:
            if (len != 8 || c[4] > FCGI_STATUS_UNKNOWN_ROLE || c[5] || c[6] || c[7] || id == 0)
                return fc_fail(r, "bad END_REQUEST");
            break;
        case FCGI_REC_UNKNOWN_TYPE:
            if (len != 8 || id != 0 || c[1] || c[2] || c[3] || c[4] || c[5] || c[6] || c[7])
                return fc_fail(r, "bad UNKNOWN_TYPE");
            break;
        case FCGI_REC_GET_VALUES_RESULT: {
            static const char *const names[] = {"FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"};
            static const char *const values[] = {"7", "9", "0"};
            int seen[3] = {0, 0, 0};
            size_t q = 0, nl, vl;
            if (id != 0) return fc_fail(r, "GET_VALUES_RESULT for a request");
            while (q < len) {
                if (fc_pair_len(c, len, &q, &nl) || fc_pair_len(c, len, &q, &vl) || nl + vl > len - q)
                    return fc_fail(r, "GET_VALUES_RESULT is not name-value pairs");
                int k = 0;
                while (k < 3 && (strlen(names[k]) != nl || memcmp(c + q, names[k], nl))) k++;
                if (k == 3 || seen[k]++ || vl != strlen(values[k]) || memcmp(c + q + nl, values[k], vl))
                    return fc_fail(r, "GET_VALUES_RESULT answers something odd");
                q += nl + vl;
            }
            break;
        }
        default:
            return fc_fail(r, "the server wrote a record of type %u", type);
        }
        fc_log_item(&r->all, FC_RECORD + type, id, c, len);
    }
    fc_close_run(&r->got);
    fc_close_run(&r->wrote);
    fc_close_run(&r->all);
    if (r->got.b.len != r->wrote.b.len || (r->got.b.len && memcmp(r->got.b.data, r->wrote.b.data, r->got.b.len)))
        return fc_fail(r, "the stdout read back is not what was written");
    return 0;
}

static void fc_run_init(struct fc_run *r, const struct fcgi_limits *limits, uint64_t seed, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    fcgi_parser_init(&r->p, limits);
    r->seed = seed;
    r->err = err;
    r->errlen = errlen;
}

static void fc_run_free(struct fc_run *r)
{
    fcgi_parser_free(&r->p);
    fcgi_buf_free(&r->out);
    fcgi_buf_free(&r->events.b);
    fcgi_buf_free(&r->wrote.b);
    fcgi_buf_free(&r->got.b);
    fcgi_buf_free(&r->all.b);
    free(r->recs);
}

static int fc_same(const struct fc_log *a, const struct fc_log *b)
{
    return a->b.len == b->b.len && (a->b.len == 0 || memcmp(a->b.data, b->b.data, a->b.len) == 0);
}

int fuzz_fcgi_codec_one(const uint8_t *data, size_t size, char *err, size_t errlen)
{
    static const struct fcgi_limits limits[] = {
        {0, 0, 0},                /* the defaults */
        {64, 4, 100},             /* tiny, to reach every limit */
        {300, 16, 5000},          /* small */
        {1 << 20, 4096, 1 << 22}, /* large */
    };
    static const size_t max_piece[] = {1, 2, 7, 64, 4096};
    /* seed drives the server's choices (fc_finish, fc_params_done, ...),
     * knobs the harness's own. */
    uint64_t seed = fc_hash(data, size), rng = seed, knobs = fc_next(&rng);
    const struct fcgi_limits *lim = &limits[knobs % 4];
    struct fc_run whole, pieces;
    fc_run_init(&whole, lim, seed, err, errlen);
    fc_run_init(&pieces, lim, seed, err, errlen);
    whole.roundtrip = 1;
    int rc = 0;

    /* A copy of exactly the input's size, so that AddressSanitizer sees any
     * read past it. */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) abort();
    if (size) memcpy(copy, data, size);
    fc_walk(&whole, copy, size);
    rc = fc_feed(&whole, copy, size, size + 1);
    free(copy);
    whole.input = NULL;

    /* The same bytes cut at points drawn from the input's hash. */
    size_t maxp = max_piece[(knobs >> 8) % 5];
    if (maxp < size / 256) maxp = size / 256; /* large inputs in fewer pieces, for speed */
    if (rc == 0) rc = fc_feed_pieces(&pieces, data, size, maxp, &rng);
    if (rc == 0) {
        /* An empty feed changes nothing. */
        struct fcgi_event ev;
        size_t used = 1;
        static const uint8_t none[1];
        if (!whole.closed && (fcgi_parser_feed(&whole.p, none, 0, &used, &ev) != FCGI_EV_NEED_MORE || used != 0))
            rc = fc_fail(&whole, "an empty feed gave an event");
    }
    if (rc == 0) {
        fc_close_run(&whole.events);
        fc_close_run(&pieces.events);
        if (!fc_same(&whole.events, &pieces.events)) rc = fc_fail(&whole, "the input cut in pieces gives other events");
    }
    if (rc == 0) rc = fc_check_out(&whole);
    if (rc == 0) rc = fc_check_out(&pieces);
    if (rc == 0 && !fc_same(&whole.all, &pieces.all))
        rc = fc_fail(&whole, "the input cut in pieces gives other answers");
    /* A server that ends requests in the middle of a body record: where
     * depends on the cuts, so this run is only checked on its own (no chunk
     * of an ended request, answers that read back). */
    if (rc == 0 && ((knobs >> 16) & 1)) {
        struct fc_run impatient;
        fc_run_init(&impatient, lim, seed, err, errlen);
        impatient.impatient = 1;
        rc = fc_feed_pieces(&impatient, data, size, maxp, &rng);
        if (rc == 0) rc = fc_check_out(&impatient);
        fc_run_free(&impatient);
    }
    fc_run_free(&whole);
    fc_run_free(&pieces);
    return rc;
}
