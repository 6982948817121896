/* redis_url: what a redis_url setting names (parsed here, below both the settings check and the Redis clients). */
#include "base/redis_url.h"

#include <stdio.h>
#include <string.h>

#include "base/query.h"

int redis_url_parse(const char *url, struct redis_address *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (strncmp(url, "unix:", 5) == 0) {
        const char *path = url + 5;
        while (path[0] == '/' && path[1] == '/') path++; /* unix:///path */
        size_t len = strcspn(path, "?");
        if (len == 0 || len >= sizeof out->unix_path) goto bad;
        memcpy(out->unix_path, path, len);
        const char *db = strstr(path + len, "db=");
        long v = 0;
        if (db && (query_parse_long(db + 3, &v) != 0 || v < 0 || v > 65535)) goto bad;
        out->db = (int)v;
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0) goto bad;
    const char *p = url + 8;
    const char *at = strchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        size_t len = (size_t)(at - pw);
        if (len >= sizeof out->password) goto bad;
        memcpy(out->password, pw, len);
        p = at + 1;
    }
    size_t hostlen = strcspn(p, ":/");
    if (hostlen == 0 || hostlen >= sizeof out->host) goto bad;
    memcpy(out->host, p, hostlen);
    p += hostlen;
    char num[16];
    long v;
    if (*p == ':') {
        size_t len = strcspn(++p, "/");
        if (len == 0 || len >= sizeof num) goto bad;
        memcpy(num, p, len);
        num[len] = '\0';
        if (query_parse_long(num, &v) != 0 || v < 1 || v > 65535) goto bad;
        out->port = (int)v;
        p += len;
    }
    if (*p == '/' && p[1]) {
        if (query_parse_long(p + 1, &v) != 0 || v < 0 || v > 65535) goto bad;
        out->db = (int)v;
    }
    return 0;
bad:
    /* The URL itself is not echoed: it may hold a password (the caller names it, masked). */
    snprintf(err, errlen, "not redis://[:PASSWORD@]HOST[:PORT][/DB] or unix:PATH[?db=N]");
    return -1;
}
