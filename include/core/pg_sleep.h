/* pg_sleep: the PostgreSQL round trip /io-intensive and /mixed wait on, and its timings. */
#ifndef PERFCGI_PG_SLEEP_H
#define PERFCGI_PG_SLEEP_H

#include <jansson.h>

#include "core/exchange.h"

/* Kept in the state of the endpoint that waits. */
struct pg_sleep {
    char seconds[24]; /* $1 of the query */
    json_t *reply;    /* the answer's fields so far, finished when the result comes */
};

/* Asks for `SELECT pg_sleep(ms / 1000)`; reply (its reference taken) holds the fields
 * the answer will have besides the timings. */
enum step pg_sleep_start(struct exchange *ex, struct pg_sleep *ps, long ms, json_t *reply);
/* Takes the result: answers the reply with waited_ms, db_ms and pool_wait_ms added,
 * or the backend's error. */
enum step pg_sleep_done(struct exchange *ex, struct pg_sleep *ps, const struct backend_result *res);
/* Frees what ps holds (an exchange that ends before the result). */
void pg_sleep_clear(struct pg_sleep *ps);

#endif
