/* probe: readiness: a child of the master checks Redis and PostgreSQL; /readyz reads what it found. */
#define _GNU_SOURCE
#include "master/probe.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "backends/pg_pool.h"
#include "backends/redis_client.h"
#include "base/scoreboard.h"
#include "base/signals.h"
#include "master/capacity.h"
#include "master/status_utf8.h"
#include "worker/worker.h"

/* One probe per backend this often, each with this deadline (a hung DNS lookup
 * or PQcancel can still outlive it: then the master kills the prober). */
#define PROBE_INTERVAL_US 1000000
#define PROBE_TIMEOUT_MS 1000
/* A result older than this no longer says the backend is up. */
#define PROBE_FRESH_US 3000000
/* A probe under way for this long means the prober is stuck. */
#define PROBE_STUCK_US 5000000

const char *const probe_backend_names[PROBE_BACKENDS] = {[PROBE_REDIS] = "redis", [PROBE_PG] = "postgresql"};

struct probe_result {
    _Atomic unsigned seq;          /* odd while the writer updates the rest */
    _Atomic int64_t heartbeat_us;  /* when the probe thread last started or ended a probe */
    _Atomic int64_t last_ok_us, last_fail_us;
    char error[160];               /* of the last failure */
};

struct probe_board {
    struct probe_result r[PROBE_BACKENDS];
    _Atomic long capacity_pg_left; /* capacity_postgresql's answer, */
    _Atomic unsigned capacity_seq; /* counted once it is written */
};

struct probe_board *probe_board_create(void)
{
    void *p = mmap(NULL, sizeof(struct probe_board), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void probe_board_destroy(struct probe_board *b)
{
    if (b) munmap(b, sizeof *b);
}

void probe_board_restart(struct probe_board *b)
{
    for (int i = 0; i < PROBE_BACKENDS; i++) atomic_store(&b->r[i].heartbeat_us, clock_us());
}

void probe_board_capacity_set(struct probe_board *b, long pg_left)
{
    atomic_store(&b->capacity_pg_left, pg_left);
    atomic_fetch_add(&b->capacity_seq, 1);
}

int probe_board_capacity_take(const struct probe_board *b, unsigned *seen, long *pg_left)
{
    unsigned seq = atomic_load(&b->capacity_seq);
    if (seq == *seen) return 0;
    *seen = seq;
    *pg_left = atomic_load(&b->capacity_pg_left);
    return 1;
}

int probe_board_stuck(const struct probe_board *b)
{
    int64_t now = clock_us();
    for (int i = 0; i < PROBE_BACKENDS; i++)
        if (now - atomic_load(&b->r[i].heartbeat_us) > PROBE_STUCK_US) return 1;
    return 0;
}

int probe_board_ready(const struct probe_board *b, enum probe_backend which, char *err, size_t errlen)
{
    const struct probe_result *r = &b->r[which];
    int64_t ok = 0, fail = 0;
    char text[sizeof r->error] = "";
    for (int tries = 0; tries < 100; tries++) { /* a seqlock read: retry while a write is under way */
        unsigned seq = atomic_load(&r->seq);
        if (seq & 1) continue;
        ok = atomic_load(&r->last_ok_us);
        fail = atomic_load(&r->last_fail_us);
        memcpy(text, r->error, sizeof text);
        if (atomic_load(&r->seq) == seq) break;
    }
    text[sizeof text - 1] = '\0';
    int64_t last = ok > fail ? ok : fail, now = clock_us();
    if (last == 0) {
        snprintf(err, errlen, "not probed yet");
        return 0;
    }
    if (now - last > PROBE_FRESH_US) {
        snprintf(err, errlen, "no answer for %.1f s (the probe is stuck or restarting)", (double)(now - last) / 1e6);
        return 0;
    }
    if (fail > ok) {
        snprintf(err, errlen, "%s", text);
        return 0;
    }
    return 1;
}

json_t *probe_readyz_json(const struct probe_board *b, int *all_up)
{
    char err[PROBE_BACKENDS][3 * sizeof b->r[0].error];
    int up[PROBE_BACKENDS], all = 1, down = -1;
    for (int i = 0; i < PROBE_BACKENDS; i++) {
        char why[sizeof b->r[0].error];
        up[i] = probe_board_ready(b, (enum probe_backend)i, why, sizeof why);
        status_utf8_clean(why, sizeof why, err[i], sizeof err[i]); /* a server's message, in any encoding */
        all &= up[i];
    }
    /* PostgreSQL first: nothing works without it, while Redis is only a cache. */
    if (!up[PROBE_PG]) down = PROBE_PG;
    else if (!up[PROBE_REDIS]) down = PROBE_REDIS;
    json_t *body = json_pack("{s:s,s:s,s:s}", "status", all ? "ok" : "unavailable", "redis",
                             up[PROBE_REDIS] ? "ok" : err[PROBE_REDIS], "postgresql",
                             up[PROBE_PG] ? "ok" : err[PROBE_PG]);
    if (!all && body &&
        (json_object_set_new(body, "error", json_string("backend_unavailable")) != 0 ||
         json_object_set_new(body, "backend", json_string(probe_backend_names[down])) != 0)) {
        json_decref(body);
        body = NULL;
    }
    *all_up = all;
    return body;
}

static void record(struct probe_result *r, int ok, const char *error)
{
    int64_t now = clock_us();
    atomic_fetch_add(&r->seq, 1);
    if (ok) {
        atomic_store(&r->last_ok_us, now);
    } else {
        snprintf(r->error, sizeof r->error, "%s", error);
        atomic_store(&r->last_fail_us, now);
    }
    atomic_fetch_add(&r->seq, 1);
    atomic_store(&r->heartbeat_us, now);
}

struct probe_thread {
    struct probe_board *board;
    const struct settings *cfg;
    enum probe_backend which;
};

static void *probe_loop(void *arg)
{
    const struct probe_thread *t = arg;
    struct probe_result *r = &t->board->r[t->which];
    for (;;) {
        int64_t start = clock_us();
        atomic_store(&r->heartbeat_us, start);
        char err[sizeof r->error] = "";
        int ok = t->which == PROBE_REDIS ? redis_client_ping(t->cfg->redis_url, PROBE_TIMEOUT_MS, err, sizeof err) == 0
                                         : pg_ping(t->cfg->database_url, PROBE_TIMEOUT_MS, err, sizeof err) == 0;
        record(r, ok, err);
        int64_t left = start + PROBE_INTERVAL_US - clock_us();
        if (left > 0) {
            struct timespec ts = {left / 1000000, (long)(left % 1000000) * 1000};
            while (nanosleep(&ts, &ts) != 0) {
            }
        }
    }
    return NULL;
}

/* The capacity check, beside the probes: its 2 s budget delays neither of them. */
struct probe_capacity_job {
    struct probe_board *b;
    const struct settings *cfg;
    const char *when;
};

static void *probe_capacity(void *arg)
{
    const struct probe_capacity_job *job = arg;
    probe_board_capacity_set(job->b, capacity_postgresql(job->cfg, job->when));
    return NULL;
}

void probe_main(struct probe_board *b, const struct settings *cfg, pid_t master_pid, const char *capacity_when)
{
    log_set_role("probe");
    prctl(PR_SET_NAME, "perfcgi-probe"); /* tells it from the workers in ps and /proc */
    signals_probe();
    if (worker_drop_privileges(cfg) != 0) _exit(WORKER_EXIT_BOOT_FAILED);
    /* Dies with the master, even while stuck in a backend call (set after the
     * privilege drop, which clears it). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != master_pid) _exit(0);
    static struct probe_thread threads[PROBE_BACKENDS];
    for (int i = 0; i < PROBE_BACKENDS; i++) threads[i] = (struct probe_thread){b, cfg, (enum probe_backend)i};
    static struct probe_capacity_job job;
    job = (struct probe_capacity_job){b, cfg, capacity_when};
    pthread_t checker;
    if (capacity_when && pthread_create(&checker, NULL, probe_capacity, &job) != 0)
        log_warning("%s: PostgreSQL connections check skipped: cannot start its thread", capacity_when);
    pthread_t redis;
    if (pthread_create(&redis, NULL, probe_loop, &threads[PROBE_REDIS]) != 0) {
        log_error("cannot start the Redis probe thread");
        _exit(1);
    }
    probe_loop(&threads[PROBE_PG]);
    _exit(0);
}
