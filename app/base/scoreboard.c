/* scoreboard: one shared-memory slot per worker, written by the worker, read by the master. */
#define _GNU_SOURCE
#include "base/scoreboard.h"

#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"

/* From a cache hit (well under 1 ms) to the 10 s ceiling of /io-intensive. */
const double scoreboard_bucket_le[SCOREBOARD_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                         0.05,   0.1,   0.25,   0.5,   1.0,  10.0};
/* Nginx's $msec has millisecond steps, so nothing finer than 1 ms; a wait of
 * seconds is what an operator must see, so more steps above 1 s. */
const double scoreboard_wait_le[SCOREBOARD_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                       0.1,   0.25,   0.5,   1.0,  2.5,   10.0};

struct scoreboard_slot *scoreboard_self;

/* Threads of one worker share its slot; readers in other processes only need
 * each word to be whole, so relaxed atomic adds are enough. */
#define COUNT(field, n) __atomic_fetch_add(&(field), (n), __ATOMIC_RELAXED)

struct scoreboard_slot *scoreboard_slots;
/*
 * The request records (most of a slot's bytes) in a mapping apart from the slots. An
 * event worker reads its siblings' slots at every accept (scoreboard_should_yield), and
 * the kernel answers a read fault on shared memory by mapping the pages around it too,
 * up to 64 KiB, within one mapping: with the records in the slots, each worker mapped
 * the whole board (~100 KiB at 8 workers) into its RSS. A worker maps its own records
 * writable when it starts (scoreboard_take), so reading them faults nothing in.
 */
static struct scoreboard_req *records;
/* Shared too: a page before the slots holds the master's high-water mark, and
 * the MiB that /memory-test?hold=1 keeps in all workers together. */
static _Atomic int *slots_used;
static _Atomic long held_local; /* no scoreboard (unit tests): this process only */
static _Atomic long *held_total = &held_local;
#define HEADER_BYTES 4096
#define HELD_OFFSET 64 /* its own cache line */

struct scoreboard_slot *scoreboard_create(int nslots)
{
    char *p = mmap(NULL, HEADER_BYTES + (size_t)nslots * sizeof(struct scoreboard_slot), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    slots_used = (_Atomic int *)p;
    held_total = (_Atomic long *)(p + HELD_OFFSET);
    size_t records_len = (size_t)nslots * SCOREBOARD_REQS * sizeof *records;
    void *r = mmap(NULL, records_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED) {
        munmap(p, HEADER_BYTES + (size_t)nslots * sizeof(struct scoreboard_slot));
        return NULL;
    }
    records = r;
    scoreboard_slots = (struct scoreboard_slot *)(p + HEADER_BYTES);
    return scoreboard_slots;
}

struct scoreboard_req *scoreboard_reqs(const struct scoreboard_slot *s)
{
    return records + (s - scoreboard_slots) * SCOREBOARD_REQS;
}

void scoreboard_take(struct scoreboard_slot *s)
{
    scoreboard_self = s;
#ifdef MADV_POPULATE_WRITE /* Linux 5.14; without it, only the RSS is larger */
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t from = (uintptr_t)scoreboard_reqs(s), to = from + SCOREBOARD_REQS * sizeof *records;
    from -= from % (uintptr_t)page;
    madvise((void *)from, to - from, MADV_POPULATE_WRITE);
#endif
}

int scoreboard_hold(struct scoreboard_slot *s, long mb, long cap)
{
    long held = atomic_load(held_total);
    do {
        if (mb > 0 && held + mb > cap) return -1;
    } while (!atomic_compare_exchange_weak(held_total, &held, held + mb));
    /* A worker killed right here leaks mb until the master restarts: the safe side. */
    if (s) atomic_fetch_add(&s->held_mb, mb);
    return 0;
}

long scoreboard_held_mb(void)
{
    return atomic_load(held_total);
}

void scoreboard_release_held(struct scoreboard_slot *s)
{
    long mine = atomic_exchange(&s->held_mb, 0);
    long held = atomic_load(held_total);
    while (!atomic_compare_exchange_weak(held_total, &held, held > mine ? held - mine : 0)) {
    }
}

void scoreboard_destroy(struct scoreboard_slot *slots, int nslots)
{
    if (!slots) return;
    if ((char *)held_total == (char *)slots - HEADER_BYTES + HELD_OFFSET) held_total = &held_local;
    munmap((char *)slots - HEADER_BYTES, HEADER_BYTES + (size_t)nslots * sizeof *slots);
    if (slots == scoreboard_slots) {
        munmap(records, (size_t)nslots * SCOREBOARD_REQS * sizeof *records);
        records = NULL;
        scoreboard_slots = NULL;
    }
}

void scoreboard_set_used(int n)
{
    if (slots_used) atomic_store(slots_used, n);
}

int scoreboard_used(void)
{
    return slots_used ? atomic_load(slots_used) : 0;
}

/* A sibling busy on one request for this long is hung or CPU-bound: it takes
 * no connections now, so it does not count as a candidate. */
#define STALLED_US 1000000

int scoreboard_should_yield(int my_connections, int slack)
{
    int least = -1, idle_before_me = 0, idle_sibling = 0, past_me = 0, n = scoreboard_used();
    int me_idle = scoreboard_self && atomic_load(&scoreboard_self->state) == SLOT_IDLE;
    int64_t now = clock_us();
    for (int i = 0; i < n; i++) {
        const struct scoreboard_slot *s = &scoreboard_slots[i];
        if (s == scoreboard_self) {
            past_me = 1;
            continue;
        }
        if (atomic_load(&s->pid) == 0 || !atomic_load(&s->accepting)) continue;
        int state = atomic_load(&s->state);
        if (state != SLOT_IDLE && state != SLOT_BUSY) continue;
        int64_t oldest = atomic_load(&s->request_started_us);
        if (oldest && now - oldest > STALLED_US) continue;
        if (state == SLOT_IDLE) {
            idle_sibling = 1;
            idle_before_me |= !past_me;
        }
        int c = atomic_load(&s->connections);
        if (least < 0 || c < least) least = c;
    }
    if (me_idle) return idle_before_me;
    if (idle_sibling) return 1;
    return least >= 0 && my_connections > least + slack;
}

void scoreboard_cut_utf8(char *s)
{
    size_t n = strlen(s), i = n;
    while (i > 0 && n - i < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--;
    if (i == 0) return;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (n - (i - 1) < need) s[i - 1] = '\0';
}

/* A URI cut to fit its field ends on a whole character. */
static void copy_uri(char *dst, size_t size, const char *uri)
{
    size_t n = strnlen(uri, size);
    int cut = n == size;
    if (cut) n = size - 1;
    memcpy(dst, uri, n);
    dst[n] = '\0';
    if (cut) scoreboard_cut_utf8(dst);
}

void scoreboard_set_busy(struct scoreboard_slot *s, int active, int64_t oldest_us, const char *oldest_uri)
{
    if (!s) return;
    copy_uri(s->oldest_uri, sizeof s->oldest_uri, oldest_uri);
    atomic_store(&s->request_started_us, oldest_us);
    atomic_store(&s->active, active);
    atomic_store(&s->state, active ? SLOT_BUSY : SLOT_IDLE);
}

void scoreboard_set_uri(struct scoreboard_slot *s, const char *uri)
{
    if (s) copy_uri(s->last_uri, sizeof s->last_uri, uri);
}

/* The bucket of a value in seconds, or -1 above the last (only +Inf holds it). */
static int bucket_of(const double le[SCOREBOARD_BUCKETS], double v)
{
    for (int b = 0; b < SCOREBOARD_BUCKETS; b++)
        if (v <= le[b]) return b;
    return -1;
}

void scoreboard_count(struct scoreboard_slot *s, int route, int status, const char *x_cache, int64_t took_us,
                      double slow_ms)
{
    if (!s) return;
    double took_s = (double)took_us / 1e6;
    struct scoreboard_counters *c = &s->counters;
    if (route < 0 || route >= SCOREBOARD_ROUTES) route = SCOREBOARD_ROUTES - 1;
    int klass = status < 400 ? CLASS_2XX : status < 500 ? CLASS_4XX : CLASS_5XX;
    COUNT(c->requests[route][klass], 1);
    int b = bucket_of(scoreboard_bucket_le, took_s);
    if (b >= 0) COUNT(c->latency_bucket[route][b], 1);
    COUNT(c->latency_count[route], 1);
    COUNT(c->latency_sum_us[route], (uint64_t)took_us);
    if (x_cache) {
        if (strcmp(x_cache, "HIT") == 0) COUNT(c->cache[CACHE_HIT], 1);
        else if (strcmp(x_cache, "MISS") == 0) COUNT(c->cache[CACHE_MISS], 1);
        else COUNT(c->cache[CACHE_BYPASS], 1);
    }
    if (slow_ms > 0 && (double)took_us / 1e3 > slow_ms) COUNT(c->slow_requests, 1);
    atomic_store(&s->last_duration_ms, (double)took_us / 1e3);
    atomic_fetch_add(&s->requests, 1);
}

void scoreboard_count_wait(struct scoreboard_slot *s, int route, int64_t wait_us)
{
    if (!s) return;
    struct scoreboard_counters *c = &s->counters;
    if (route < 0 || route >= SCOREBOARD_ROUTES) route = SCOREBOARD_ROUTES - 1;
    int b = bucket_of(scoreboard_wait_le, (double)wait_us / 1e6);
    if (b >= 0) COUNT(c->wait_bucket[route][b], 1);
    COUNT(c->wait_count[route], 1);
    COUNT(c->wait_sum_us[route], (uint64_t)wait_us);
    int64_t worst = atomic_load(&s->worst_wait_us);
    while (wait_us > worst && !atomic_compare_exchange_weak(&s->worst_wait_us, &worst, wait_us)) {
    }
}

/* Only the worker writes its mark (under its in-flight lock), so a load and a
 * store are enough; the master reads the one word. */
void scoreboard_busy(struct scoreboard_slot *s, int busy, int64_t now_us)
{
    if (!s) return;
    int64_t mark = atomic_load(&s->busy_mark);
    if (busy && mark >= 0) {
        int64_t origin = now_us - mark; /* > 0: a worker is busy for less than the clock's age */
        atomic_store(&s->busy_mark, origin > 0 ? -origin : -1);
    } else if (!busy && mark < 0) {
        int64_t total = now_us + mark;
        atomic_store(&s->busy_mark, total > 0 ? total : 0);
    }
}

uint64_t scoreboard_busy_us(const struct scoreboard_slot *s, int64_t now_us)
{
    int64_t mark = atomic_load(&s->busy_mark);
    if (mark < 0) mark = now_us + mark;
    return mark > 0 ? (uint64_t)mark : 0;
}

void scoreboard_add(struct scoreboard_counters *into, const struct scoreboard_counters *from)
{
    /* The struct is all uint64_t: add it word by word. */
    const uint64_t *src = (const uint64_t *)from;
    uint64_t *dst = (uint64_t *)into;
    for (size_t i = 0; i < sizeof *from / sizeof(uint64_t); i++) dst[i] += src[i];
}
