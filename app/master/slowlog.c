/* slowlog: the master's record of a request busy too long (request_slowlog_timeout, or
 * before a `timeout` kill): endpoint, state, the backend operation it waits on, its stack. */
#define _GNU_SOURCE
#include "master/slowlog.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define UNW_LOCAL_ONLY
#include <libunwind.h>

#include "base/log.h"
#include "base/signals.h"
#include "master/status_utf8.h"
#include "worker/worker_inflight.h"

/* How long a record waits for the stack of a thread that does not answer
 * (it blocks the signal, or the kernel holds it): then it goes without. */
#define STACK_WAIT_US 300000
/* Room for the symbolised frames in the one log line. */
#define STACK_TEXT 900

int slowlog_read(const struct scoreboard_req *r, struct slowlog_view *v)
{
    v->gen = atomic_load(&r->gen);
    v->started_us = atomic_load(&r->started_us);
    if (!v->started_us) return -1;
    v->op_started_us = atomic_load_explicit(&r->op_started_us, memory_order_acquire);
    /* The worker writes these with plain stores: a torn copy shows mixed text,
     * made valid UTF-8 here, and a request that ended meanwhile is dropped. */
    status_utf8_clean(r->uri, sizeof r->uri, v->uri, sizeof v->uri);
    uint64_t doing = atomic_load_explicit(&r->doing, memory_order_relaxed);
    status_utf8_clean(r->op, sizeof r->op, v->op, sizeof v->op);
    if (atomic_load(&r->gen) != v->gen || atomic_load(&r->started_us) != v->started_us) return -1;
    worker_inflight_describe(doing, v->uri, v->state, sizeof v->state);
    return 0;
}

/* Names each frame with the symbol tables of the binary and its libraries:
 * workers are forks of this process, with the same code at the same addresses,
 * so the master's own unwinder names their frames (static functions too, from
 * .symtab, as long as the binary is not stripped). */
static void stack_text(const struct scoreboard_req *r, char *out, size_t outlen)
{
    unw_accessors_t *acc = unw_get_accessors(unw_local_addr_space);
    int n = atomic_load(&r->stack_frames);
    size_t at = 0;
    out[0] = '\0';
    for (int i = 0; i < n && i < SCOREBOARD_STACK && at + 1 < outlen; i++) {
        /* A return address is just past its call: look the call up. */
        unw_word_t ip = (unw_word_t)r->stack[i] - (i > 0), off = 0;
        char name[128];
        int w;
        if (acc && acc->get_proc_name && acc->get_proc_name(unw_local_addr_space, ip, name, sizeof name, &off, NULL) == 0)
            w = snprintf(out + at, outlen - at, "%s%s+0x%lx", i ? " < " : "", name, (unsigned long)(off + (i > 0)));
        else
            w = snprintf(out + at, outlen - at, "%s0x%lx", i ? " < " : "", (unsigned long)r->stack[i]);
        if (w < 0 || (size_t)w >= outlen - at) break;
        at += (size_t)w;
    }
}

/* Asks the thread serving record i of worker pid for its stack. */
static void ask_stack(struct scoreboard_req *r, int i, pid_t pid, uint32_t purpose, int64_t now_us)
{
    r->stack_for = purpose;
    r->stack_asked_us = now_us;
    atomic_store(&r->stack_frames, 0);
    atomic_fetch_add(&r->stack_ask, 1);
    /* Then whether it is still in CPU (the other half of worker_inflight's
     * handshake): if not, the signal could cut a socket call short, so it is
     * called off, to be asked again if the request goes back to its CPU work. */
    if (atomic_load(&r->op_started_us) != 0) {
        r->stack_for = 0;
        atomic_store(&r->stack_done, atomic_load(&r->stack_ask));
        return;
    }
    /* Gone, or not that thread any more: the record goes without its stack. */
    if (signals_send_stack(pid, atomic_load(&r->tid), i) != 0) atomic_store(&r->stack_done, atomic_load(&r->stack_ask));
}

static void write_record(const struct settings *cfg, const struct scoreboard_req *r, const struct slowlog_view *v,
                         pid_t pid, int64_t now_us, int killing, int with_stack)
{
    char uri[2 * sizeof v->uri], op[2 * sizeof v->op], stack[STACK_TEXT] = "";
    log_escape(v->uri, uri, sizeof uri);
    log_escape(v->op, op, sizeof op);
    if (with_stack) stack_text(r, stack, sizeof stack);
    char waits[sizeof op + 64] = "";
    if (v->op_started_us > 0)
        snprintf(waits, sizeof waits, " for %.3f s: %s", (double)(now_us - v->op_started_us) / 1e6, op);
    int in_cpu = v->op_started_us == 0;
    log_warning("slowlog%s: worker %ld (%s) busy %.3f s on \"%s\": %s%s%s%s", killing ? " before the timeout kill" : "",
                (long)pid, settings_class_name(cfg->worker_class), (double)(now_us - v->started_us) / 1e6, uri,
                v->state, waits, in_cpu ? "; stack: " : "", in_cpu ? (stack[0] ? stack : "unavailable") : "");
}

int slowlog_check(const struct settings *cfg, struct scoreboard_slot *s, pid_t pid, int64_t now_us, int killing,
                  uint64_t *written)
{
    int64_t slow_us = (int64_t)(cfg->request_slowlog_timeout * 1e6), kill_us = (int64_t)(cfg->timeout * 1e6);
    int ready = 1;
    for (int i = 0; i < SCOREBOARD_REQS; i++) {
        struct scoreboard_req *r = &scoreboard_reqs(s)[i];
        /* The clock first: the strings are copied only for a request that is due. */
        int64_t started = atomic_load(&r->started_us);
        int64_t since = slow_us > 0 && (!killing || slow_us < kill_us) ? slow_us : kill_us;
        if (!started || now_us - started <= since || (!killing && slow_us <= 0)) continue;
        struct slowlog_view v;
        if (slowlog_read(r, &v) != 0) continue;
        int64_t busy = now_us - v.started_us;
        int kill_due = killing && busy > kill_us && r->kill_reported != v.gen;
        int slow_due = slow_us > 0 && busy > slow_us && r->slow_reported != v.gen;
        if (!kill_due && !slow_due) continue;
        /* The stack is asked for anew for the kill: the request may have moved on. */
        uint32_t purpose = v.gen * 2 + (uint32_t)kill_due;
        int in_cpu = v.op_started_us == 0;
        if (in_cpu && r->stack_for != purpose) {
            ask_stack(r, i, pid, purpose, now_us);
            ready = 0;
            continue;
        }
        int answered = atomic_load(&r->stack_done) == atomic_load(&r->stack_ask);
        if (in_cpu && !answered && now_us - r->stack_asked_us < STACK_WAIT_US) {
            ready = 0;
            continue;
        }
        write_record(cfg, r, &v, pid, now_us, kill_due, in_cpu && answered);
        if (kill_due) r->kill_reported = v.gen;
        r->slow_reported = v.gen;
        (*written)++;
    }
    return ready;
}
