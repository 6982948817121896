/* status_metrics: the /metrics answer, written from a table with one row per metric. */
#include "master/status_figures.h"

#include <inttypes.h>
#include <stddef.h>

#include "core/endpoint.h"
#include "core/routes.h"
#include "master/pm.h"

/* How a row's samples are printed. */
enum metric_kind {
    METRIC_INT,      /* an int */
    METRIC_COUNT,    /* a uint64_t */
    METRIC_WALL_S,   /* a double of seconds, to the millisecond */
    METRIC_US_AS_S,  /* a uint64_t of microseconds, as seconds */
};

struct metrics_out {
    FILE *out;
    const struct status_totals *t;
    const struct status_view *v;
    const char *endpoint[SCOREBOARD_ROUTES]; /* the label of each per-route counter */
    const char *worker_class;
};

struct metric_row {
    const char *name, *type, *help;
    /* Either a figure of struct status_totals, one sample or one per label value
     * (an array of `count` figures)... */
    size_t at;
    enum metric_kind kind;
    const char *label;
    const char *const *values;
    int count;
    /* ...or a writer for what is more than that (the per-route figures). */
    void (*write)(const struct metrics_out *m, const char *name);
};

/* The C type of a figure picks its kind. */
#define METRIC_FIGURE(f) (((const struct status_totals *)0)->f)
#define METRIC_KIND(f) _Generic(METRIC_FIGURE(f), int: METRIC_INT, uint64_t: METRIC_COUNT, double: METRIC_WALL_S)
/* One sample. */
#define METRIC_ONE(f) .at = offsetof(struct status_totals, f), .kind = METRIC_KIND(f)
#define METRIC_US(f) .at = offsetof(struct status_totals, f), .kind = METRIC_US_AS_S
/* A sample per element of the array f, labelled with the names. */
#define METRIC_BY(lbl, names, f)                                                                                      \
    .at = offsetof(struct status_totals, f), .kind = METRIC_KIND(f[0]), .label = lbl, .values = names,               \
    .count = (int)(sizeof METRIC_FIGURE(f) / sizeof METRIC_FIGURE(f)[0])

static const char *const metrics_worker_states[STATUS_WORKER_STATES] = {"idle", "active"};
static const char *const metrics_pool_states[STATUS_POOL_STATES] = {"open", "busy"};
static const char *const metrics_cache_results[CACHE_COUNT] = {"hit", "miss", "bypass"};
static const char *const metrics_status_classes[CLASS_COUNT] = {"2xx", "4xx", "5xx"};

static void metrics_requests(const struct metrics_out *m, const char *name);
static void metrics_durations(const struct metrics_out *m, const char *name);
static void metrics_waits(const struct metrics_out *m, const char *name);
static void metrics_busy(const struct metrics_out *m, const char *name);
static void metrics_workers(const struct metrics_out *m, const char *name);
static void metrics_overflows(const struct metrics_out *m, const char *name);
static void metrics_drops(const struct metrics_out *m, const char *name);
static void metrics_pm_decisions(const struct metrics_out *m, const char *name);
static void metrics_pm_target(const struct metrics_out *m, const char *name);
static void metrics_pm_wait(const struct metrics_out *m, const char *name);

static const struct metric_row metric_rows[] = {
    {"start_time_seconds", "gauge", "When the master started, in seconds since the epoch.", METRIC_ONE(start_wall_s)},
    {"accepted_connections_total", "counter", "Requests accepted by the workers.", METRIC_ONE(accepted)},
    {"listen_queue", "gauge", "Connections waiting in the kernel's accept queues.", METRIC_ONE(listen_queue)},
    {"listen_queue_max", "gauge", "Most connections seen waiting in the accept queues.", METRIC_ONE(max_listen_queue)},
    {"listen_queue_length", "gauge", "Size of the accept queues.", METRIC_ONE(listen_queue_len)},
    {"listen_overflows_total", "counter",
     "Connections the accept queue could not hold, by bind: TCP, the kernel's ListenOverflows of the network "
     "namespace; unix, samples that found the queue full.",
     .write = metrics_overflows},
    {"listen_drops_total", "counter", "The kernel's ListenDrops of the network namespace (TCP binds only).",
     .write = metrics_drops},
    {"processes", "gauge", "Worker processes by state.", METRIC_BY("state", metrics_worker_states, workers)},
    {"processes_max_active", "gauge", "Most workers seen busy at once.", METRIC_ONE(max_active)},
    {"max_children_reached_total", "counter", "Times every worker was seen busy.", METRIC_ONE(max_children_reached)},
    {"slow_requests_total", "counter", "Requests that took more than half of timeout.", METRIC_ONE(c.slow_requests)},
    {"slowlog_records_total", "counter", "Slowlog records written (request_slowlog_timeout, and before timeout kills).",
     METRIC_ONE(slowlog_records)},
    {"worker_restarts_total", "counter", "Workers replaced, by reason.",
     METRIC_BY("reason", restart_reason_names, restarts)},
    {"pm_decisions_total", "counter",
     "Worker count decisions of pm (dynamic, ondemand, adaptive), by action (spawn, retire, hold: more wanted, none "
     "added) and reason.",
     .write = metrics_pm_decisions},
    {"pm_target_workers", "gauge", "Workers pm wants now, by mode.", .write = metrics_pm_target},
    {"pm_queue_wait_p99_seconds", "gauge",
     "Queue wait p99 of the requests taken up in the last second, as pm adaptive steers by (0: none waited).",
     .write = metrics_pm_wait},
    {"requests_total", "counter", "Requests answered, by endpoint and status class.", .write = metrics_requests},
    {"request_duration_seconds", "histogram", "Service time: time spent in the worker per request, by endpoint.",
     .write = metrics_durations},
    {"request_queue_wait_seconds", "histogram",
     "Queue wait: from the front end's REQUEST_START to a worker taking the request up, by endpoint.",
     .write = metrics_waits},
    {"busy_seconds_total", "counter", "Seconds workers had at least one request in flight, by worker class.",
     .write = metrics_busy},
    {"workers", "gauge", "Live worker processes, by worker class: rate(busy_seconds_total) / workers is utilisation.",
     .write = metrics_workers},
    {"cache_requests_total", "counter", "Redis cache lookups of /cached-data, by result.",
     METRIC_BY("result", metrics_cache_results, c.cache)},
    {"pool_connections", "gauge", "PostgreSQL connections of every worker's pool, by state.",
     METRIC_BY("state", metrics_pool_states, pool)},
    {"pool_checkouts_total", "counter", "PostgreSQL connections checked out of the pools.",
     METRIC_ONE(c.pool_checkouts)},
    {"pool_timeouts_total", "counter", "Checkouts that gave up after pool_timeout.", METRIC_ONE(c.pool_timeouts)},
    {"pool_wait_seconds_total", "counter", "Time requests waited for a PostgreSQL connection of their pool.",
     METRIC_US(c.pool_wait_us)},
    {"pool_connects_total", "counter", "PostgreSQL connections opened.", METRIC_ONE(c.pool_connects)},
    {"pool_connect_failures_total", "counter", "PostgreSQL connections that failed to open.",
     METRIC_ONE(c.pool_connect_failures)},
};

static void metrics_sample(FILE *out, enum metric_kind kind, const void *figure)
{
    switch (kind) {
    case METRIC_INT: fprintf(out, " %d\n", *(const int *)figure); break;
    case METRIC_COUNT: fprintf(out, " %" PRIu64 "\n", *(const uint64_t *)figure); break;
    case METRIC_WALL_S: fprintf(out, " %.3f\n", *(const double *)figure); break;
    case METRIC_US_AS_S: fprintf(out, " %.6f\n", (double)*(const uint64_t *)figure / 1e6); break;
    }
}

/* The samples of a row that reads figures. */
static void metrics_figures(const struct metrics_out *m, const struct metric_row *row)
{
    static const size_t size[] = {[METRIC_INT] = sizeof(int), [METRIC_COUNT] = sizeof(uint64_t),
                                  [METRIC_WALL_S] = sizeof(double), [METRIC_US_AS_S] = sizeof(uint64_t)};
    const char *figure = (const char *)m->t + row->at;
    for (int i = 0; i < (row->label ? row->count : 1); i++, figure += size[row->kind]) {
        fprintf(m->out, "perfcgi_%s", row->name);
        if (row->label) fprintf(m->out, "{%s=\"%s\"}", row->label, row->values[i]);
        metrics_sample(m->out, row->kind, figure);
    }
}

static void metrics_requests(const struct metrics_out *m, const char *name)
{
    const struct scoreboard_counters *c = &m->t->c;
    for (int r = 0; r < SCOREBOARD_ROUTES; r++)
        for (int k = 0; k < CLASS_COUNT; k++)
            fprintf(m->out, "perfcgi_%s{endpoint=\"%s\",status=\"%s\"} %" PRIu64 "\n", name, m->endpoint[r],
                    metrics_status_classes[k], c->requests[r][k]);
}

/* A histogram per endpoint from the scoreboard's per-route arrays. */
static void metrics_histogram(const struct metrics_out *m, const char *name, const double le[SCOREBOARD_BUCKETS],
                              const uint64_t bucket[][SCOREBOARD_BUCKETS], const uint64_t *count,
                              const uint64_t *sum_us)
{
    for (int r = 0; r < SCOREBOARD_ROUTES; r++) {
        const char *e = m->endpoint[r];
        uint64_t cumulative = 0;
        for (int b = 0; b < SCOREBOARD_BUCKETS; b++) {
            cumulative += bucket[r][b];
            fprintf(m->out, "perfcgi_%s_bucket{endpoint=\"%s\",le=\"%g\"} %" PRIu64 "\n", name, e, le[b],
                    cumulative);
        }
        fprintf(m->out, "perfcgi_%s_bucket{endpoint=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", name, e, count[r]);
        fprintf(m->out, "perfcgi_%s_sum{endpoint=\"%s\"} %.6f\n", name, e, (double)sum_us[r] / 1e6);
        fprintf(m->out, "perfcgi_%s_count{endpoint=\"%s\"} %" PRIu64 "\n", name, e, count[r]);
    }
}

static void metrics_durations(const struct metrics_out *m, const char *name)
{
    const struct scoreboard_counters *c = &m->t->c;
    metrics_histogram(m, name, scoreboard_bucket_le, c->latency_bucket, c->latency_count, c->latency_sum_us);
}

static void metrics_waits(const struct metrics_out *m, const char *name)
{
    const struct scoreboard_counters *c = &m->t->c;
    metrics_histogram(m, name, scoreboard_wait_le, c->wait_bucket, c->wait_count, c->wait_sum_us);
}

/* One worker class per server: its name is the label. */
static void metrics_busy(const struct metrics_out *m, const char *name)
{
    fprintf(m->out, "perfcgi_%s{class=\"%s\"} %.6f\n", name, m->worker_class, (double)m->t->c.busy_us / 1e6);
}

static void metrics_workers(const struct metrics_out *m, const char *name)
{
    fprintf(m->out, "perfcgi_%s{class=\"%s\"} %d\n", name, m->worker_class, m->t->total);
}

static void metrics_overflows(const struct metrics_out *m, const char *name)
{
    for (int i = 0; i < m->v->nlisteners; i++)
        fprintf(m->out, "perfcgi_%s{bind=\"%s\"} %" PRIu64 "\n", name, m->v->listeners[i].addr,
                m->v->stats->overflow.count[i]);
}

static void metrics_drops(const struct metrics_out *m, const char *name)
{
    fprintf(m->out, "perfcgi_%s %" PRIu64 "\n", name, m->v->stats->overflow.drops);
}

static void metrics_pm_decisions(const struct metrics_out *m, const char *name)
{
    for (int r = 0; r < PM_REASONS; r++) {
        enum pm_action a = pm_reason_action[r];
        fprintf(m->out, "perfcgi_%s{action=\"%s\",reason=\"%s\"} %" PRIu64 "\n", name, pm_action_names[a],
                pm_reason_names[r], m->v->pm->decisions[a][r]);
    }
}

static void metrics_pm_target(const struct metrics_out *m, const char *name)
{
    fprintf(m->out, "perfcgi_%s{mode=\"%s\"} %d\n", name, settings_pm_name(m->v->cfg->pm), m->v->pm->target);
}

static void metrics_pm_wait(const struct metrics_out *m, const char *name)
{
    double ms = m->v->pm->wait_p99_ms;
    fprintf(m->out, "perfcgi_%s %.6f\n", name, ms < 0 ? 0 : ms / 1e3);
}

void status_metrics_text(const struct status_view *v, const struct status_peaks *p, FILE *out)
{
    struct status_totals t;
    status_add_up(v, p, &t);
    struct metrics_out m = {.out = out, .t = &t, .v = v, .worker_class = settings_class_name(v->cfg->worker_class)};
    for (int r = 0; r < ROUTE_COUNT; r++) m.endpoint[r] = route_table[r]->name;
    m.endpoint[ROUTE_NONE] = "other"; /* answers no route gave */
    for (size_t i = 0; i < sizeof metric_rows / sizeof metric_rows[0]; i++) {
        const struct metric_row *row = &metric_rows[i];
        fprintf(out, "# HELP perfcgi_%s %s\n# TYPE perfcgi_%s %s\n", row->name, row->help, row->name, row->type);
        if (row->write) row->write(&m, row->name);
        else metrics_figures(&m, row);
    }
}
