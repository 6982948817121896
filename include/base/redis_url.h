/* redis_url: what a redis_url setting names (parsed here, below both the settings check and the Redis clients). */
#ifndef PERFCGI_REDIS_URL_H
#define PERFCGI_REDIS_URL_H

#include <stddef.h>

/* Where a redis_url points. */
struct redis_address {
    char host[256];
    int port;
    char unix_path[108]; /* non-empty for unix:PATH */
    char password[128];
    int db;
};

/* redis://[:PASSWORD@]HOST[:PORT][/DB] or unix:PATH[?db=N]; 0 or -1 with err. */
int redis_url_parse(const char *url, struct redis_address *out, char *err, size_t errlen);

#endif
