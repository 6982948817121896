/* worker_inflight: the scoreboard's record of each request in flight (what it does, what
 * it waits on), and its thread's stack on the master's request (the slowlog). */
#define _GNU_SOURCE
#include "worker/worker_inflight.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define UNW_LOCAL_ONLY
#include <libunwind.h>

#include "base/clock.h"
#include "base/decimal.h"
#include "base/scoreboard.h"
#include "base/signals.h"
#include "core/endpoint.h"
#include "core/routes.h"

/* Read from the kernel once per thread: the master signals this id for the stack. */
static _Thread_local pid_t my_tid;

static pid_t thread_id(void)
{
    if (!my_tid) my_tid = (pid_t)syscall(SYS_gettid);
    return my_tid;
}

int worker_inflight_take(int64_t started_us)
{
    struct scoreboard_slot *s = scoreboard_self;
    if (!s) return -1;
    /* Threads of a thread worker take records at once: a compare-and-swap on
     * started_us claims one. */
    for (int i = 0; i < SCOREBOARD_REQS; i++) {
        struct scoreboard_req *r = &scoreboard_reqs(s)[i];
        int64_t free_mark = 0;
        if (atomic_load_explicit(&r->started_us, memory_order_relaxed) != 0) continue;
        if (!atomic_compare_exchange_strong(&r->started_us, &free_mark, started_us)) continue;
        atomic_fetch_add(&r->gen, 1);
        atomic_store_explicit(&r->tid, thread_id(), memory_order_relaxed);
        atomic_store_explicit(&r->op_started_us, SCOREBOARD_NO_STACK, memory_order_relaxed);
        atomic_store_explicit(&r->doing, INFLIGHT_READING, memory_order_relaxed);
        r->uri[0] = r->op[0] = '\0';
        return i;
    }
    atomic_fetch_add_explicit(&s->reqs_untracked, 1, memory_order_relaxed);
    return -1;
}

void worker_inflight_release(int rec)
{
    struct scoreboard_slot *s = scoreboard_self;
    if (!s) return;
    if (rec < 0) atomic_fetch_sub_explicit(&s->reqs_untracked, 1, memory_order_relaxed);
    else atomic_store(&scoreboard_reqs(s)[rec].started_us, 0);
}

void worker_inflight_uri(int rec, const char *uri)
{
    if (rec < 0 || !scoreboard_self) return;
    char *dst = scoreboard_reqs(scoreboard_self)[rec].uri;
    size_t n = strnlen(uri, SCOREBOARD_URI - 1);
    memcpy(dst, uri, n);
    dst[n] = '\0';
    if (n == SCOREBOARD_URI - 1) scoreboard_cut_utf8(dst);
}

/* Appends into a fixed field, cut at its end: plain copies, no printf on the hot path. */
struct text {
    char *at, *end; /* end: the byte kept for the NUL */
};

static void put(struct text *t, const char *s, size_t n)
{
    size_t room = (size_t)(t->end - t->at);
    if (n > room) n = room;
    memcpy(t->at, s, n);
    t->at += n;
}

static void puts_(struct text *t, const char *s)
{
    put(t, s, strnlen(s, (size_t)(t->end - t->at) + 1));
}

static void put_number(struct text *t, unsigned long long v)
{
    char digits[DECIMAL_MAX];
    put(t, digits, decimal_write(digits, v));
}

/* Long arguments (a Lua script) are cut so that those after them show. */
#define ARG_MAX 48

static void put_arg(struct text *t, const char *s, size_t len)
{
    if (len <= ARG_MAX) {
        put(t, s, len);
        return;
    }
    put(t, s, ARG_MAX);
    puts_(t, "...");
}

static const char *backend_name(enum backend_kind k)
{
    switch (k) {
    case BACKEND_REDIS: return "redis";
    case BACKEND_PG: return "postgresql";
    case BACKEND_HTTP: return "http";
    case BACKEND_SLEEP: return "a timer";
    case BACKEND_NONE: break;
    }
    return "nothing";
}

/* What the exchange waits on, as an operator would type it. */
static void put_op(struct text *t, const struct backend_op *op)
{
    switch (op->kind) {
    case BACKEND_PG:
        puts_(t, op->sql ? op->sql : "");
        for (int i = 0; i < op->nparams; i++) {
            puts_(t, i ? ", $" : " -- $");
            put_number(t, (unsigned long long)i + 1);
            puts_(t, "='");
            put_arg(t, op->params[i] ? op->params[i] : "NULL", op->params[i] ? strlen(op->params[i]) : 4);
            puts_(t, "'");
        }
        break;
    case BACKEND_REDIS:
        for (int i = 0; i < op->argc; i++) {
            if (i) puts_(t, " ");
            put_arg(t, op->argv[i], op->argvlen[i]);
        }
        break;
    case BACKEND_HTTP:
        puts_(t, "GET ");
        puts_(t, op->url ? op->url : "");
        break;
    case BACKEND_SLEEP:
        puts_(t, "sleep ");
        put_number(t, (unsigned long long)(op->sleep_ms > 0 ? op->sleep_ms : 0));
        puts_(t, " ms");
        break;
    case BACKEND_NONE: break;
    }
}

/* Out of the CPU, before any socket call: a stack the master asked for meanwhile
 * comes in first, as its signal would cut such a call short (EINTR, which libfcgi
 * takes for an error). The master asks (stack_ask), then looks whether the request
 * is still in CPU, and sends or calls it off (stack_done); this side leaves the
 * CPU (op_started_us), then looks for an ask: with sequentially consistent
 * atomics one of the two sees the other. Bounded: a master gone half-way
 * through must not hold the worker. */
#define STACK_SETTLE_US 100000

static void stack_settle(struct scoreboard_req *r)
{
    if (atomic_load(&r->stack_done) == atomic_load(&r->stack_ask)) return;
    int64_t until = clock_us() + STACK_SETTLE_US;
    while (atomic_load(&r->stack_done) != atomic_load(&r->stack_ask) && clock_us() < until) sched_yield();
}

/* The `doing` word: the route's index + 1 (0: not routed yet, or no route), the
 * step, what it does and the backend it waits on, 16 bits each. */
static uint64_t doing_word(int route, int step, enum inflight_doing doing, enum backend_kind waits_on)
{
    return (uint64_t)(uint16_t)(route + 1) | (uint64_t)(uint16_t)step << 16 | (uint64_t)doing << 32 |
           (uint64_t)waits_on << 48;
}

void worker_inflight_state(int rec, const struct exchange *ex, int step, enum inflight_doing doing)
{
    if (rec < 0 || !scoreboard_self) return;
    struct scoreboard_req *r = &scoreboard_reqs(scoreboard_self)[rec];
    int waiting = doing == INFLIGHT_WAITING;
    uint64_t word = doing_word(ex->route ? route_index(ex->route) : -1, step, doing,
                               waiting ? ex->op.kind : BACKEND_NONE);
    if (doing == INFLIGHT_CPU) {
        atomic_store_explicit(&r->op_started_us, 0, memory_order_relaxed);
        atomic_store_explicit(&r->doing, word, memory_order_relaxed);
        return;
    }
    atomic_store_explicit(&r->doing, word, memory_order_relaxed);
    if (waiting) {
        struct text o = {r->op, r->op + SCOREBOARD_OP - 1};
        put_op(&o, &ex->op);
        *o.at = '\0';
        scoreboard_cut_utf8(r->op);
    }
    /* After the op's text: a reader that sees the wait sees what it waits on (the
     * clock is vDSO, no syscall). Then the stack handshake. */
    atomic_store(&r->op_started_us, waiting ? clock_us() : SCOREBOARD_NO_STACK);
    stack_settle(r);
}

/* The endpoint of a record not routed yet (or of no route): its uri's path. The
 * uri is the master's copy, where bytes not UTF-8 are %XX: longer than the record's
 * field, and a path that long is no route's. */
static const struct endpoint *endpoint_of_uri(const char *uri)
{
    const char *path = strchr(uri, ' ');
    char buf[SCOREBOARD_URI];
    if (!path) return NULL;
    path++;
    size_t n = strcspn(path, "?");
    if (n >= sizeof buf) return NULL;
    memcpy(buf, path, n);
    buf[n] = '\0';
    return route_find(buf);
}

void worker_inflight_describe(uint64_t word, const char *uri, char *out, size_t outlen)
{
    unsigned route = (unsigned)(word & 0xffff), step = (unsigned)(word >> 16 & 0xffff);
    enum inflight_doing doing = (enum inflight_doing)(word >> 32 & 0xffff);
    struct text t = {out, out + outlen - 1};
    if (doing == INFLIGHT_READING) {
        puts_(&t, "reading the request");
    } else {
        const struct endpoint *e = route && route <= ROUTE_COUNT ? route_table[route - 1] : endpoint_of_uri(uri);
        puts_(&t, e ? e->name : "not_found");
        puts_(&t, " step ");
        put_number(&t, step);
        puts_(&t, doing == INFLIGHT_WAITING ? ": waiting on " : doing == INFLIGHT_CPU ? ": in CPU" : ": answering");
        if (doing == INFLIGHT_WAITING) puts_(&t, backend_name((enum backend_kind)(word >> 48 & 0xffff)));
    }
    *t.at = '\0';
}

/* The master asked for the stack of the thread serving record si_value:
 * unwinds from the interrupted instruction (the signal's context), with
 * libunwind's local unwinder, which may run in a signal handler (man
 * libunwind: unw_init_local and unw_step are signal-safe). A record that
 * another thread serves now gets no frames. */
static void on_stack_signal(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    int saved = errno;
    int i = si->si_value.sival_int;
    struct scoreboard_slot *s = scoreboard_self;
    if (s && i >= 0 && i < SCOREBOARD_REQS) {
        struct scoreboard_req *r = &scoreboard_reqs(s)[i];
        uint32_t ask = atomic_load(&r->stack_ask);
        int n = 0;
        unw_cursor_t cursor;
        if (atomic_load(&r->tid) == thread_id() &&
            unw_init_local2(&cursor, (unw_context_t *)uc, UNW_INIT_SIGNAL_FRAME) == 0) {
            do {
                unw_word_t ip = 0;
                if (unw_get_reg(&cursor, UNW_REG_IP, &ip) != 0 || !ip) break;
                r->stack[n++] = (uintptr_t)ip;
            } while (n < SCOREBOARD_STACK && unw_step(&cursor) > 0);
        }
        atomic_store(&r->stack_frames, n);
        atomic_store(&r->stack_done, ask);
    }
    errno = saved;
}

void worker_inflight_prefork(void)
{
    /* The first unwind finds the binary's and libraries' unwind tables and
     * caches them: done once here, the workers inherit it. */
    unw_context_t ctx;
    unw_cursor_t cursor;
    if (unw_getcontext(&ctx) == 0 && unw_init_local(&cursor, &ctx) == 0)
        while (unw_step(&cursor) > 0) {
        }
}

void worker_inflight_signals(void)
{
    signals_worker_stack(on_stack_signal);
}
