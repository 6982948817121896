/* access_format: the access log's line, compiled once from access_log_format into segments. */
#include "base/access_format.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/decimal.h"
#include "base/escape.h"

/* The variables, in the order of the JSON fields; then the Gunicorn atoms whose
 * text differs from the variable they alias (not fields of their own). */
enum access_var {
    V_REMOTE_ADDR, V_REQUEST, V_REQUEST_METHOD, V_REQUEST_URI, V_URI, V_ARGS, V_STATUS, V_BODY_BYTES_SENT,
    V_REQUEST_TIME, V_REQUEST_TIME_MS, V_MSEC, V_TIME_LOCAL, V_TIME_ISO8601, V_PID, V_REQUEST_ID, V_QUEUE_WAIT,
    V_WORKER_CLASS, V_ENDPOINT,
    A_TIME, A_MICROS, A_MILLIS, A_SECONDS, A_PID,
    V_LITERAL
};
#define V_NAMED A_TIME /* the named variables end here */

static const char *const var_names[V_NAMED] = {
    [V_REMOTE_ADDR] = "remote_addr", [V_REQUEST] = "request", [V_REQUEST_METHOD] = "request_method",
    [V_REQUEST_URI] = "request_uri", [V_URI] = "uri", [V_ARGS] = "args", [V_STATUS] = "status",
    [V_BODY_BYTES_SENT] = "body_bytes_sent", [V_REQUEST_TIME] = "request_time",
    [V_REQUEST_TIME_MS] = "request_time_ms", [V_MSEC] = "msec", [V_TIME_LOCAL] = "time_local",
    [V_TIME_ISO8601] = "time_iso8601", [V_PID] = "pid", [V_REQUEST_ID] = "request_id",
    [V_QUEUE_WAIT] = "queue_wait", [V_WORKER_CLASS] = "worker_class", [V_ENDPOINT] = "endpoint",
};

/* Gunicorn's atoms: %(h)s and so on. */
static const struct {
    char atom;
    enum access_var var;
} atoms[] = {
    {'h', V_REMOTE_ADDR}, {'t', A_TIME},  {'r', V_REQUEST},   {'s', V_STATUS},  {'b', V_BODY_BYTES_SENT},
    {'m', V_REQUEST_METHOD}, {'U', V_URI}, {'q', V_ARGS}, {'D', A_MICROS}, {'M', A_MILLIS}, {'L', A_SECONDS},
    {'p', A_PID},
};

/* Request data is cut to these many bytes once escaped: the default line's bounds. */
enum { CAP_SHORT = 63, CAP_PATH = 1023, CAP_QUERY = 1099, CAP_URI = 2047 };
/* Room for a number: a sign, 20 digits, a point and 6 decimals, or "<" ">" around a pid. */
enum { NUMBER_MAX = 28 };

struct access_segment {
    enum access_var var;
    size_t len;       /* of a literal */
    const char *text; /* of a literal, in the format's text */
};

/* perfcgi's line since its first version (tests and tools parse it). */
static const char default_template[] =
    "$remote_addr - - [$time_local] \"$request\" $status $body_bytes_sent $request_time_ms $pid";

static size_t string_cap(enum access_var v)
{
    switch (v) {
    case V_URI: return CAP_PATH;
    case V_ARGS: return CAP_QUERY;
    case V_REQUEST_URI: return CAP_URI;
    case V_REQUEST: return CAP_SHORT + 1 + CAP_PATH + 1 + CAP_QUERY;
    default: return CAP_SHORT;
    }
}

/* The most bytes variable v writes, so that a format whose lines could outgrow
 * ACCESS_LINE_MAX is refused once instead of cut on every line. */
static size_t var_max(enum access_var v, int json)
{
    switch (v) {
    case V_REMOTE_ADDR: case V_REQUEST: case V_REQUEST_METHOD: case V_REQUEST_URI: case V_URI: case V_ARGS:
    case V_REQUEST_ID: case V_WORKER_CLASS: case V_ENDPOINT:
        return string_cap(v) + (json ? 2 : 0);
    case V_TIME_LOCAL: case V_TIME_ISO8601: case A_TIME:
        return 32;
    default:
        return NUMBER_MAX;
    }
}

static int find_var(const char *name, size_t len)
{
    for (int i = 0; i < V_NAMED; i++)
        if (strlen(var_names[i]) == len && memcmp(var_names[i], name, len) == 0) return i;
    return -1;
}

static int find_atom(const char *name, size_t len)
{
    for (size_t i = 0; len == 1 && i < sizeof atoms / sizeof atoms[0]; i++)
        if (atoms[i].atom == name[0]) return (int)atoms[i].var;
    return -1;
}

static int is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Appends a segment; literal text goes after the format's text so far. */
static int add(struct access_format *f, size_t *cap, enum access_var var, const char *lit, size_t len,
               size_t *text_len)
{
    if (var == V_LITERAL && f->nsegs && f->segs[f->nsegs - 1].var == V_LITERAL) { /* one run of text */
        memcpy(f->text + *text_len, lit, len);
        *text_len += len;
        f->segs[f->nsegs - 1].len += len;
        return 0;
    }
    if ((size_t)f->nsegs == *cap) {
        size_t more = *cap ? *cap * 2 : 16;
        struct access_segment *segs = realloc(f->segs, more * sizeof *segs);
        if (!segs) return -1;
        f->segs = segs;
        *cap = more;
    }
    struct access_segment *s = &f->segs[f->nsegs++];
    s->var = var;
    s->len = len;
    s->text = f->text + *text_len;
    memcpy(f->text + *text_len, lit, len);
    *text_len += len;
    return 0;
}

/* The JSON template: {"remote_addr":$remote_addr,"request":$request,...}. */
static char *json_template(void)
{
    size_t len = 3;
    for (int i = 0; i < V_NAMED; i++) len += 2 * strlen(var_names[i]) + 6;
    char *t = malloc(len), *p = t;
    if (!t) return NULL;
    for (int i = 0; i < V_NAMED; i++)
        p += sprintf(p, "%c\"%s\":$%s", i ? ',' : '{', var_names[i], var_names[i]);
    strcpy(p, "}");
    return t;
}

static int parse(struct access_format *f, const char *spec, char *err, size_t errlen)
{
    size_t cap = 0, text_len = 0, longest = 1; /* the newline */
    if (!(f->text = malloc(strlen(spec) + 1))) goto oom;
    for (const char *p = spec; *p;) {
        enum access_var var = V_LITERAL;
        const char *lit = p;
        size_t len = 1, used = 1;
        if (p[0] == '$') {
            int braced = p[1] == '{';
            const char *name = p + 1 + braced;
            size_t n = 0;
            while (is_name_char(name[n])) n++;
            if (n == 0 || (braced && name[n] != '}')) {
                snprintf(err, errlen, "'$' at offset %zu is not followed by a variable name%s", (size_t)(p - spec),
                         braced ? " and '}'" : "");
                return -1;
            }
            int v = find_var(name, n);
            if (v < 0) {
                snprintf(err, errlen, "unknown variable '$%.*s' (README: the access log's variables)", (int)n, name);
                return -1;
            }
            var = (enum access_var)v;
            used = 1 + braced + n + braced;
        } else if (p[0] == '%' && p[1] == '%') {
            used = 2;
        } else if (p[0] == '%' && p[1] == '(') {
            const char *name = p + 2, *close = strchr(name, ')');
            size_t n = close ? (size_t)(close - name) : strlen(name);
            int v = close && close[1] == 's' ? find_atom(name, n) : -1;
            if (v < 0) {
                snprintf(err, errlen, "unknown atom '%%(%.*s)%s' (README: the access log's variables)", (int)n,
                         name, close && close[1] == 's' ? "s" : "");
                return -1;
            }
            var = (enum access_var)v;
            used = 2 + n + 2;
        }
        if (var != V_LITERAL) lit = "", len = 0;
        if (add(f, &cap, var, lit, len, &text_len) != 0) goto oom;
        longest += var == V_LITERAL ? len : var_max(var, f->json);
        p += used;
    }
    if (longest > ACCESS_LINE_MAX) {
        snprintf(err, errlen, "its lines could outgrow %d bytes (request data is cut to a bound per variable): "
                 "use fewer variables", ACCESS_LINE_MAX);
        return -1;
    }
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

int access_format_compile(struct access_format *f, const char *spec, char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    char *generated = NULL;
    if (strcmp(spec, "default") == 0) {
        spec = default_template;
    } else if (strcmp(spec, "json") == 0) {
        if (!(spec = generated = json_template())) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        f->json = 1;
    }
    int rc = *spec ? parse(f, spec, err, errlen) : -1;
    if (!*spec) snprintf(err, errlen, "is empty: default, json, or a template of variables");
    free(generated);
    if (rc != 0) access_format_free(f);
    return rc;
}

void access_format_free(struct access_format *f)
{
    free(f->segs);
    free(f->text);
    memset(f, 0, sizeof *f);
}

/* ---- rendering: no allocation, no parsing ---- */

static size_t put_int(char *out, long long v)
{
    if (v >= 0) return decimal_write(out, (unsigned long long)v);
    out[0] = '-';
    return 1 + decimal_write(out + 1, 0ULL - (unsigned long long)v);
}

/* v / 10^decimals with all its decimals: 1234 with 3 is "1.234". */
static size_t put_fixed(char *out, long long v, int decimals)
{
    static const long long scale[] = {1, 10, 100, 1000, 10000, 100000, 1000000};
    size_t n = 0;
    if (v < 0) {
        out[n++] = '-';
        v = -v;
    }
    n += decimal_write(out + n, (unsigned long long)(v / scale[decimals]));
    out[n++] = '.';
    for (long long rest = v % scale[decimals], d = scale[decimals] / 10; d; d /= 10)
        out[n++] = (char)('0' + rest / d % 10);
    return n;
}

/* Microseconds as seconds with milliseconds, rounded: Nginx's $request_time. */
static size_t put_seconds_ms(char *out, int64_t us)
{
    return put_fixed(out, (us + 500) / 1000, 3);
}

/* This thread's time strings of the current second (they change once a second). */
struct clock_text {
    time_t at;
    char local[32], iso[32];
};

static const struct clock_text *clock_text(int64_t now_us)
{
    static _Thread_local struct clock_text c = {.at = -1};
    time_t sec = (time_t)(now_us / 1000000);
    if (sec == c.at) return &c;
    struct tm tm;
    localtime_r(&sec, &tm);
    strftime(c.local, sizeof c.local, "%d/%b/%Y:%H:%M:%S %z", &tm);
    size_t n = strftime(c.iso, sizeof c.iso, "%Y-%m-%dT%H:%M:%S%z", &tm);
    if (n >= 5) { /* +0000 -> +00:00, as Nginx writes it */
        memmove(c.iso + n - 1, c.iso + n - 2, 3);
        c.iso[n - 2] = ':';
    }
    c.at = sec;
    return &c;
}

/* A string variable: escaped and cut, quoted in JSON; "-" (null in JSON) when unknown. */
static size_t put_string(char *out, const char *s, size_t cap, int json)
{
    if (!s || !*s) {
        memcpy(out, json ? "null" : "-", json ? 4 : 1);
        return json ? 4 : 1;
    }
    if (!json) return escape_text(out, cap, s);
    out[0] = '"';
    size_t n = 1 + escape_json(out + 1, cap, s);
    out[n++] = '"';
    return n;
}

static size_t put_quoted(char *out, const char *s, int json)
{
    size_t n = 0, len = strlen(s);
    if (json) out[n++] = '"';
    memcpy(out + n, s, len);
    n += len;
    if (json) out[n++] = '"';
    return n;
}

/* "METHOD /path?query", as the default line has always shown it. */
static size_t put_request(char *out, const struct access_record *r, int json)
{
    size_t (*esc)(char *, size_t, const char *) = json ? escape_json : escape_text;
    size_t n = 0;
    if (json) out[n++] = '"';
    n += esc(out + n, CAP_SHORT, r->method);
    out[n++] = ' ';
    n += esc(out + n, CAP_PATH, r->path);
    if (r->query && *r->query) {
        out[n++] = '?';
        n += esc(out + n, CAP_QUERY, r->query);
    }
    if (json) out[n++] = '"';
    return n;
}

static size_t put_var(char *out, enum access_var v, const struct access_record *r, int json)
{
    switch (v) {
    case V_REMOTE_ADDR: return put_string(out, r->remote_addr, CAP_SHORT, json);
    case V_REQUEST: return put_request(out, r, json);
    case V_REQUEST_METHOD: return put_string(out, r->method, CAP_SHORT, json);
    case V_REQUEST_URI: return put_string(out, r->request_uri, CAP_URI, json);
    case V_URI: return put_string(out, r->path, CAP_PATH, json);
    case V_ARGS: /* empty, not unknown */
        return json && r->query && !*r->query ? put_quoted(out, "", 1) : put_string(out, r->query, CAP_QUERY, json);
    case V_STATUS: return put_int(out, r->status);
    case V_BODY_BYTES_SENT: return decimal_write(out, r->body_bytes);
    case V_REQUEST_TIME: return put_seconds_ms(out, r->took_us);
    case V_REQUEST_TIME_MS: return put_fixed(out, r->took_us, 3);
    case V_MSEC: return put_fixed(out, r->now_us / 1000, 3);
    case V_TIME_LOCAL: return put_quoted(out, clock_text(r->now_us)->local, json);
    case V_TIME_ISO8601: return put_quoted(out, clock_text(r->now_us)->iso, json);
    case V_PID: return put_int(out, r->pid);
    case V_REQUEST_ID: return put_string(out, r->request_id, CAP_SHORT, json);
    case V_QUEUE_WAIT:
        if (r->queue_wait_us >= 0) return put_seconds_ms(out, r->queue_wait_us);
        return put_string(out, NULL, 0, json);
    case V_WORKER_CLASS: return put_string(out, r->worker_class, CAP_SHORT, json);
    case V_ENDPOINT: return put_string(out, r->endpoint, CAP_SHORT, json);
    case A_TIME: {
        size_t n = 0;
        out[n++] = '[';
        n += put_quoted(out + n, clock_text(r->now_us)->local, 0);
        out[n++] = ']';
        return n;
    }
    case A_MICROS: return put_int(out, r->took_us);
    case A_MILLIS: return put_int(out, r->took_us / 1000);
    case A_SECONDS: return put_fixed(out, r->took_us, 6);
    case A_PID: {
        size_t n = 0;
        out[n++] = '<';
        n += put_int(out + n, r->pid);
        out[n++] = '>';
        return n;
    }
    case V_LITERAL: /* written by the caller */
        break;
    }
    return 0;
}

size_t access_format_render(const struct access_format *f, const struct access_record *r, char *out)
{
    size_t n = 0;
    for (int i = 0; i < f->nsegs; i++) {
        const struct access_segment *s = &f->segs[i];
        if (s->var == V_LITERAL) {
            memcpy(out + n, s->text, s->len);
            n += s->len;
        } else {
            n += put_var(out + n, s->var, r, f->json);
        }
    }
    out[n++] = '\n';
    return n;
}
