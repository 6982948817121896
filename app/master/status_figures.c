/* status_figures: the master's view added up, and the /status answer built from it. */
#define _GNU_SOURCE
#include "master/status_figures.h"

#include <math.h>
#include <string.h>

#include "base/clock.h"
#include "base/log.h"
#include "core/endpoint.h"
#include "core/routes.h"
#include "master/pm.h"
#include "master/slowlog.h"
#include "master/status_utf8.h"

const char *const restart_reason_names[RESTART_REASONS] = {
    [RESTART_CRASH] = "crash",   [RESTART_TIMEOUT] = "timeout", [RESTART_MAX_REQUESTS] = "max_requests",
    [RESTART_MAX_RSS] = "max_rss", [RESTART_RELOAD] = "reload", [RESTART_SCALE_DOWN] = "scale_down",
    [RESTART_PM] = "pm",
};

void status_add_up(const struct status_view *v, const struct status_peaks *p, struct status_totals *t)
{
    memset(t, 0, sizeof *t);
    t->c = v->stats->totals;
    t->accepted = v->stats->requests_before;
    int64_t now_us = clock_us();
    for (int i = 0; i < v->nslots; i++) {
        const struct scoreboard_slot *s = &v->slots[i];
        int state = atomic_load(&s->state);
        if (state == SLOT_FREE || atomic_load(&s->pid) == 0) continue;
        t->total++;
        if (state == SLOT_BUSY) t->workers[STATUS_ACTIVE]++;
        else if (state == SLOT_IDLE) t->workers[STATUS_IDLE]++;
        t->accepted += atomic_load(&s->requests) + (uint64_t)atomic_load(&s->active);
        t->pool[STATUS_POOL_OPEN] += atomic_load(&s->pool_open);
        t->pool[STATUS_POOL_BUSY] += atomic_load(&s->pool_busy);
        scoreboard_add(&t->c, &s->counters);
        t->c.busy_us += scoreboard_busy_us(s, now_us);
    }
    for (int i = 0; i < v->nlisteners; i++) {
        int queued, backlog;
        if (listener_queue(&v->listeners[i], &queued, &backlog) == 0) {
            t->listen_queue += queued;
            t->listen_queue_len += backlog;
        }
    }
    int active = t->workers[STATUS_ACTIVE];
    t->max_listen_queue = p->max_listen_queue > t->listen_queue ? p->max_listen_queue : t->listen_queue;
    t->max_active = p->max_active > active ? p->max_active : active;
    t->max_children_reached = p->max_children_reached;
    t->start_wall_s = v->stats->start_wall_s;
    memcpy(t->restarts, v->stats->restarts, sizeof t->restarts);
    t->slowlog_records = v->stats->slowlog_records;
}

void status_peaks_sample(struct status_peaks *p, const struct status_view *v)
{
    struct status_totals t;
    status_add_up(v, p, &t);
    p->max_listen_queue = t.max_listen_queue;
    p->max_active = t.max_active;
    int all_busy = t.total > 0 && t.workers[STATUS_ACTIVE] == t.total;
    if (all_busy && !p->all_busy) p->max_children_reached++;
    p->all_busy = all_busy;
}

static const char *const status_state_names[] = {"free", "starting", "idle", "busy"};

/* A worker writes its slot: a state it never should have reads as "unknown". */
static const char *status_state_name(int state)
{
    return state >= 0 && state < (int)(sizeof status_state_names / sizeof status_state_names[0])
               ? status_state_names[state]
               : "unknown";
}

/* json_object_set_new that remembers a failure (a NULL value, no memory). */
static void status_put(json_t *o, const char *key, json_t *value, int *ok)
{
    if (json_object_set_new(o, key, value) != 0) *ok = 0;
}

/* A worker's requests in flight: what each does, and the backend operation it waits on. */
static json_t *status_in_flight(const struct scoreboard_slot *s, int64_t now_us, int *ok)
{
    json_t *reqs = json_array();
    for (int i = 0; reqs && i < SCOREBOARD_REQS; i++) {
        struct slowlog_view v;
        if (slowlog_read(&scoreboard_reqs(s)[i], &v) != 0) continue;
        json_t *o = json_pack("{s:s,s:s,s:f}", "uri", v.uri, "state", v.state, "busy_ms",
                              round((double)(now_us - v.started_us) / 1e3 * 1e3) / 1e3);
        if (o && v.op_started_us > 0) {
            status_put(o, "op", json_string(v.op), ok);
            status_put(o, "op_ms", json_real(round((double)(now_us - v.op_started_us) / 1e3 * 1e3) / 1e3), ok);
        }
        if (json_array_append_new(reqs, o) != 0) *ok = 0;
    }
    if (!reqs) *ok = 0;
    return reqs;
}

/* A row per live worker. */
static json_t *status_rows(const struct status_view *v, int *ok)
{
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
        status_utf8_clean(s->last_uri, sizeof s->last_uri, uri, sizeof uri);
        json_t *row = json_pack("{s:i,s:s,s:i,s:I,s:f,s:I,s:s}", "pid", (int)pid, "state", status_state_name(state),
                                "active_requests", atomic_load(&s->active), "requests",
                                (json_int_t)atomic_load(&s->requests), "request_duration_ms",
                                round(duration * 1e3) / 1e3, "rss_kb", (json_int_t)atomic_load(&s->rss_kb), "last_uri",
                                uri);
        if (row) status_put(row, "in_flight", status_in_flight(s, now_us, ok), ok);
        if (row) status_put(row, "in_flight_untracked", json_integer(atomic_load(&s->reqs_untracked)), ok);
        if (json_array_append_new(rows, row) != 0) *ok = 0;
    }
    return rows;
}

/* Per endpoint that saw stamped requests: how many, and their queue wait in seconds. */
static json_t *status_queue_wait(const struct status_totals *t, int *ok)
{
    json_t *o = json_object();
    for (int r = 0; o && r < SCOREBOARD_ROUTES; r++) {
        if (!t->c.wait_count[r]) continue;
        json_t *e = json_pack("{s:I,s:f}", "count", (json_int_t)t->c.wait_count[r], "sum_seconds",
                              (double)t->c.wait_sum_us[r] / 1e6);
        status_put(o, r < ROUTE_COUNT ? route_table[r]->name : "other", e, ok);
    }
    if (!o) *ok = 0;
    return o;
}

/* A wait in ms, or null when no request waited in the window. */
static json_t *status_wait_ms(double ms)
{
    return ms < 0 ? json_null() : json_real(round(ms * 10) / 10);
}

/* The worker count's controller: its mode, bounds, decisions by action and reason, the last one. */
static json_t *status_pm(const struct status_view *v, int *ok)
{
    const struct pm_stats *pm = v->pm;
    json_t *o = json_object(), *decisions = json_object(), *by[PM_ACTIONS];
    for (int a = 0; a < PM_ACTIONS; a++) status_put(decisions, pm_action_names[a], by[a] = json_object(), ok);
    for (int r = 0; *ok && r < PM_REASONS; r++)
        status_put(by[pm_reason_action[r]], pm_reason_names[r],
                   json_integer((json_int_t)pm->decisions[pm_reason_action[r]][r]), ok);
    status_put(o, "mode", json_string(settings_pm_name(v->cfg->pm)), ok);
    status_put(o, "target", json_integer(pm->target), ok);
    status_put(o, "max_children", json_integer(settings_pm_children(v->cfg)), ok);
    status_put(o, "queue_wait_p99_ms", status_wait_ms(pm->wait_p99_ms), ok);
    status_put(o, "decisions", decisions, ok);
    json_t *last = pm->has_last ? json_pack("{s:s,s:s,s:f,s:i}", "action", pm_action_names[pm->last_action], "reason",
                                            pm_reason_names[pm->last_reason], "time", pm->last_wall_s, "workers",
                                            pm->last_workers)
                                : json_null();
    if (pm->has_last) status_put(last, "queue_wait_p99_ms", status_wait_ms(pm->last_wait_p99_ms), ok);
    status_put(o, "last", last, ok);
    if (!o) *ok = 0;
    return o;
}

json_t *status_json(const struct status_view *v, const struct status_peaks *p, int full)
{
    struct status_totals t;
    status_add_up(v, p, &t);
    double now = clock_wall_s();
    int ok = 1;
    json_t *restarts = json_object();
    for (int r = 0; r < RESTART_REASONS; r++)
        status_put(restarts, restart_reason_names[r], json_integer((json_int_t)t.restarts[r]), &ok);
    json_t *o = json_object();
    if (!o || !restarts) {
        json_decref(o);
        json_decref(restarts);
        return NULL;
    }
    status_put(o, "pool", json_string("perfcgi"), &ok);
    status_put(o, "worker_class", json_string(settings_class_name(v->cfg->worker_class)), &ok);
    status_put(o, "version", json_string(settings_version()), &ok);
    status_put(o, "upgrade", json_string(v->upgrade ? v->upgrade : "none"), &ok);
    status_put(o, "upgrade_pid", json_integer((json_int_t)v->upgrade_pid), &ok);
    status_put(o, "draining", json_boolean(v->draining), &ok);
    status_put(o, "reload_pending", json_integer(v->reload_pending), &ok);
    status_put(o, "start_time", json_integer((json_int_t)t.start_wall_s), &ok);
    status_put(o, "start_since", json_integer((json_int_t)(now - t.start_wall_s)), &ok);
    status_put(o, "accepted_conn", json_integer((json_int_t)t.accepted), &ok);
    status_put(o, "listen_queue", json_integer(t.listen_queue), &ok);
    status_put(o, "max_listen_queue", json_integer(t.max_listen_queue), &ok);
    status_put(o, "listen_queue_len", json_integer(t.listen_queue_len), &ok);
    status_put(o, "idle_processes", json_integer(t.workers[STATUS_IDLE]), &ok);
    status_put(o, "active_processes", json_integer(t.workers[STATUS_ACTIVE]), &ok);
    status_put(o, "total_processes", json_integer(t.total), &ok);
    status_put(o, "max_active_processes", json_integer(t.max_active), &ok);
    status_put(o, "max_children_reached", json_integer((json_int_t)t.max_children_reached), &ok);
    status_put(o, "slow_requests", json_integer((json_int_t)t.c.slow_requests), &ok);
    status_put(o, "slowlog_records", json_integer((json_int_t)t.slowlog_records), &ok);
    status_put(o, "worker_restarts", restarts, &ok);
    uint64_t overflows = 0;
    for (int i = 0; i < v->nlisteners; i++) overflows += v->stats->overflow.count[i];
    status_put(o, "listen_overflows", json_integer((json_int_t)overflows), &ok);
    status_put(o, "listen_drops", json_integer((json_int_t)v->stats->overflow.drops), &ok);
    status_put(o, "busy_seconds", json_real(round((double)t.c.busy_us / 1e3) / 1e3), &ok);
    status_put(o, "queue_wait", status_queue_wait(&t, &ok), &ok);
    status_put(o, "pm", status_pm(v, &ok), &ok);
    if (full) status_put(o, "processes", status_rows(v, &ok), &ok);
    if (!ok) {
        log_error("status: cannot build the /status answer (out of memory?)");
        json_decref(o);
        return NULL;
    }
    return o;
}
