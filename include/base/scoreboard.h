/* scoreboard: one shared-memory slot per worker, written by the worker, read by the master. */
#ifndef PERFCGI_SCOREBOARD_H
#define PERFCGI_SCOREBOARD_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/route_count.h" /* ROUTE_COUNT: the files of app/core/endpoints/ (generated) */

/* One per route of core's route table, plus one for answers no route gave (404). */
#define SCOREBOARD_ROUTES (ROUTE_COUNT + 1)
/* Upper bounds of the histograms, in seconds (Prometheus `le`): service time
 * (latency) and queue wait have as many buckets, on scales of their own. */
#define SCOREBOARD_BUCKETS 12
extern const double scoreboard_bucket_le[SCOREBOARD_BUCKETS];
extern const double scoreboard_wait_le[SCOREBOARD_BUCKETS];

enum slot_state { SLOT_FREE, SLOT_STARTING, SLOT_IDLE, SLOT_BUSY };
enum status_class { CLASS_2XX, CLASS_4XX, CLASS_5XX, CLASS_COUNT };
enum cache_result { CACHE_HIT, CACHE_MISS, CACHE_BYPASS, CACHE_COUNT };

/* Counters that add up across workers, and across the workers that came before. */
struct scoreboard_counters {
    uint64_t requests[SCOREBOARD_ROUTES][CLASS_COUNT];
    uint64_t latency_bucket[SCOREBOARD_ROUTES][SCOREBOARD_BUCKETS]; /* not cumulative */
    uint64_t latency_count[SCOREBOARD_ROUTES];
    uint64_t latency_sum_us[SCOREBOARD_ROUTES];
    /* Queue wait of the requests that carried REQUEST_START (the front end's clock). */
    uint64_t wait_bucket[SCOREBOARD_ROUTES][SCOREBOARD_BUCKETS]; /* not cumulative */
    uint64_t wait_count[SCOREBOARD_ROUTES];
    uint64_t wait_sum_us[SCOREBOARD_ROUTES];
    uint64_t busy_us; /* of workers that are gone (live ones: their slot's busy_mark) */
    uint64_t cache[CACHE_COUNT];
    uint64_t pool_checkouts, pool_timeouts, pool_connects, pool_connect_failures;
    uint64_t pool_wait_us; /* time requests waited for a pool connection */
    uint64_t slow_requests;
};

/* What a worker is doing for one request in flight, for the master's slowlog
 * and /status?full. The worker writes it with plain stores at each change of
 * state (no syscall, no allocation); the master reads it best effort and checks
 * `gen` again after its copy. An event worker holds more requests than records:
 * the rest are only counted (untracked). */
#define SCOREBOARD_REQS 16
#define SCOREBOARD_URI 128
#define SCOREBOARD_OP 160
#define SCOREBOARD_STACK 32
/* op_started_us of a request that reads or writes its FastCGI records: its
 * stack says nothing, and a signal could cut a socket call with a timeout short. */
#define SCOREBOARD_NO_STACK (-1)
struct scoreboard_req {
    _Atomic int64_t started_us;    /* in flight since (monotonic); 0: a free record */
    _Atomic uint32_t gen;          /* bumped each time the record is taken: which request it is */
    _Atomic pid_t tid;             /* the thread serving it, for the stack */
    _Atomic int64_t op_started_us; /* waiting on op since; 0: in CPU; SCOREBOARD_NO_STACK: reading or answering */
    char uri[SCOREBOARD_URI];      /* "GET /path?query" */
    /* What it does, packed in one word stored whole (worker_inflight's layout):
     * the master puts it in words ("io_intensive step 1: waiting on postgresql"),
     * off the request's path. */
    _Atomic uint64_t doing;
    char op[SCOREBOARD_OP];        /* the SQL text, Redis command, URL the request waits on */
    /* The stack, on the master's request: it bumps stack_ask and signals tid;
     * the thread unwinds into stack and sets stack_done to what it saw in stack_ask. */
    _Atomic uint32_t stack_ask, stack_done;
    _Atomic int stack_frames;
    uintptr_t stack[SCOREBOARD_STACK];
    /* The master's own marks: the gen it has reported slow, or at its kill, and
     * what its last stack request was for. */
    uint32_t slow_reported, kill_reported, stack_for;
    int64_t stack_asked_us;
};

struct scoreboard_slot {
    _Atomic pid_t pid;
    _Atomic int state;                  /* enum slot_state */
    _Atomic int64_t request_started_us; /* start of the oldest request in flight; 0 when idle */
    _Atomic int active;                 /* requests in flight (thread and event workers: many) */
    _Atomic int connections;            /* FastCGI connections held (event workers) */
    _Atomic int accepting;              /* event workers: takes new connections (not full, draining, stopping) */
    _Atomic uint64_t requests;          /* served by this process */
    _Atomic int wants_retire;           /* max_requests reached: replace me */
    _Atomic int pool_open, pool_busy;
    _Atomic long rss_kb;                /* written by the master */
    _Atomic double last_duration_ms;
    _Atomic long held_mb;               /* kept by /memory-test?hold=1 in this process */
    /* Time with at least one request in flight, in one word so that a reader never
     * sees half a change: idle, >= 0 µs so far; busy, -(the monotonic µs at which
     * the total would have been 0): see scoreboard_busy_us. */
    _Atomic int64_t busy_mark;
    _Atomic int64_t worst_wait_us; /* longest queue wait since the master last took it */
    char last_uri[128];                 /* best effort: a torn read shows a mixed URI */
    char oldest_uri[128];               /* of the oldest request in flight */
    _Atomic int reqs_untracked;         /* requests in flight without a record (all were taken) */
    struct scoreboard_counters counters;
};

/* Maps `nslots` zeroed slots shared with every process forked afterwards, and their
 * request records in a mapping of their own (scoreboard_reqs). */
struct scoreboard_slot *scoreboard_create(int nslots);
/* Slot s's SCOREBOARD_REQS request records (s in the scoreboard last created). */
struct scoreboard_req *scoreboard_reqs(const struct scoreboard_slot *s);
/* In a worker after fork: slot s is this process's (scoreboard_self). */
void scoreboard_take(struct scoreboard_slot *s);
void scoreboard_destroy(struct scoreboard_slot *slots, int nslots);
/* The master tells how many slots from the first may be in use. */
void scoreboard_set_used(int n);

/* Every slot, and how many may be in use; the slot of this worker process
 * (set once after fork). */
extern struct scoreboard_slot *scoreboard_slots;
extern struct scoreboard_slot *scoreboard_self;
int scoreboard_used(void);

/* Whether this event worker should leave a new connection to a sibling.
 * As EPOLLEXCLUSIVE wakes the first process asleep in epoll_wait, the first
 * idle worker in slot order takes it, and a worker with requests in flight
 * leaves it to an idle one: light load stays on few workers (fewer context
 * switches, more requests per wake-up) and slow requests spread. When every
 * worker has requests in flight, one holding more than `slack` connections
 * over the least loaded sibling yields. Siblings that are hung, not serving
 * yet or not accepting (full, draining, stopping) do not count. */
int scoreboard_should_yield(int my_connections, int slack);

/* What is in flight: how many requests, since when the oldest (0 = none) and
 * which it is. */
void scoreboard_set_busy(struct scoreboard_slot *s, int active, int64_t oldest_us, const char *oldest_uri);
/* Drops the end of a string cut in the middle of a UTF-8 character (call it
 * only on a string that was cut: an invalid end of a whole one is kept). */
void scoreboard_cut_utf8(char *s);
/* The request last begun, as "METHOD /path?query" (cut on a whole character). */
void scoreboard_set_uri(struct scoreboard_slot *s, const char *uri);
/* Counts one answered request. route: index in core's route table, or
 * ROUTE_COUNT for none; x_cache may be NULL. */
void scoreboard_count(struct scoreboard_slot *s, int route, int status, const char *x_cache, int64_t took_us,
                      double slow_ms);
/* Counts the queue wait of one request of route (as scoreboard_count). */
void scoreboard_count_wait(struct scoreboard_slot *s, int route, int64_t wait_us);
/* The worker went busy (its first request in flight) or idle (its last one done) at now_us. */
void scoreboard_busy(struct scoreboard_slot *s, int busy, int64_t now_us);
/* Microseconds slot s has been busy, up to now_us. */
uint64_t scoreboard_busy_us(const struct scoreboard_slot *s, int64_t now_us);

/* /memory-test?hold=1 across the server: reserves mb MiB (a negative mb gives
 * back) in the total of every worker, unless that would pass cap (-1), and
 * counts them in slot s (may be NULL). Without a scoreboard: this process only. */
int scoreboard_hold(struct scoreboard_slot *s, long mb, long cap);
long scoreboard_held_mb(void);
/* The master, once the worker of slot s is gone: its held MiB are free again. */
void scoreboard_release_held(struct scoreboard_slot *s);

/* Adds every counter of `from` into `into` (the master folds a dead worker's slot in). */
void scoreboard_add(struct scoreboard_counters *into, const struct scoreboard_counters *from);

#endif
