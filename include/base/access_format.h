/* access_format: the access log's line, compiled once from access_log_format into segments. */
#ifndef PERFCGI_ACCESS_FORMAT_H
#define PERFCGI_ACCESS_FORMAT_H

#include <stddef.h>
#include <stdint.h>

/* What one line may show of a request (README: the access log's variables). */
struct access_record {
    const char *remote_addr; /* NULL or "": not passed */
    const char *method, *path, *query;
    const char *request_uri;  /* as the client sent it (REQUEST_URI); NULL: not passed */
    const char *request_id;   /* the front end's id (REQUEST_ID); NULL: not passed */
    const char *endpoint;     /* the name of the route that answered; NULL: none did */
    const char *worker_class;
    int status;
    size_t body_bytes;
    int64_t took_us;       /* making the answer, as the default line's duration */
    int64_t now_us;        /* wall clock when the line is written, since the epoch */
    int64_t queue_wait_us; /* from the front end's REQUEST_START to perfcgi's start; < 0: unknown */
    long pid;
};

struct access_segment;

struct access_format {
    struct access_segment *segs;
    int nsegs;
    int json;   /* strings quoted and JSON-escaped, unknown values null */
    char *text; /* the literal parts, which segments point into */
};

/* The longest line any compiled format writes, newline included. */
#define ACCESS_LINE_MAX 16384

/*
 * spec: "default" (perfcgi's line), "json" (one object per line, every variable a
 * field) or a template of Nginx-style $name / ${name} variables and Gunicorn's %(x)s
 * atoms (%% is a %). 0, or -1 with err naming the bad variable or atom; *f is then
 * empty. A compiled format is read-only: threads may share it.
 */
int access_format_compile(struct access_format *f, const char *spec, char *err, size_t errlen);
void access_format_free(struct access_format *f);
/* Writes r's line, newline included, at out (ACCESS_LINE_MAX bytes); returns its
 * length. Request data is escaped and cut to a bound per field; no allocation. */
size_t access_format_render(const struct access_format *f, const struct access_record *r, char *out);

#endif
