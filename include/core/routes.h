/* routes: which endpoint serves a path, over the table generated from app/core/endpoints/. */
#ifndef PERFCGI_ROUTES_H
#define PERFCGI_ROUTES_H

#include "base/route_count.h" /* ROUTE_COUNT: the files of app/core/endpoints/ (generated) */

struct endpoint;

/* The index of answers no route gave (404): per-route arrays have ROUTE_COUNT + 1 entries. */
#define ROUTE_NONE ROUTE_COUNT

/* Every endpoint, in the order of their file names. */
extern const struct endpoint *const route_table[ROUTE_COUNT];

/* The endpoint at exactly this path, or NULL. */
const struct endpoint *route_find(const char *path);
/* Its index in route_table; ROUTE_NONE for NULL. */
int route_index(const struct endpoint *e);

#endif
