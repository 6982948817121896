/* settings: the one table of perfcgi's settings and the loaders that fill it. */
#ifndef PERFCGI_SETTINGS_H
#define PERFCGI_SETTINGS_H

#include <stdio.h>
#include <sys/types.h>

/*
 * One line per setting drives everything: the struct field, the command-line
 * flag (--max-requests), the environment variable (PERFCGI_MAX_REQUESTS), the
 * INI key under [perfcgi], --help and --print-config.
 *
 *   X(name, kind, default, min, max, help)
 *
 * Kinds: INT (whole number in [min, max]), SECONDS (decimal seconds in [min, max]),
 * BOOL, STR, BINDS (repeatable unix:PATH or HOST:PORT), WORKERS (INT or "auto"),
 * CLASS (sync|thread|event), PM (static|dynamic|ondemand|adaptive),
 * LEVEL (debug|info|warning|error), MODE (octal),
 * REDIS_URL (a STR that must parse as a Redis URL), DB_URL (a STR), LOG_FORMAT (a STR
 * that must compile as an access log format, base/access_format.h). The passwords
 * in REDIS_URL and DB_URL values are masked wherever perfcgi prints them.
 */
#define SETTINGS_TABLE(X)                                                                          \
    X(bind, BINDS, "127.0.0.1:9000", 0, 0,                                                         \
      "FastCGI socket to serve: unix:PATH or HOST:PORT; repeat for several")                       \
    X(backlog, INT, "2048", 1, 65535, "Length of the listen queue of each bind")                   \
    X(workers, WORKERS, "auto", 1, 1024,                                                           \
      "Worker processes, or auto: 2*cores+1 for sync, cores*4 for thread and event")               \
    X(worker_class, CLASS, "sync", 0, 0, "Worker model: sync, thread or event")                    \
    X(threads, INT, "4", 1, 1024, "Requests served at once per thread worker")                     \
    X(worker_connections, INT, "1000", 1, 65535,                                                   \
      "FastCGI connections multiplexed per event worker; the open files limit is raised to fit, start-up refused if it cannot be")                                          \
    X(max_requests, INT, "0", 0, 100000000,                                                        \
      "Recycle a worker after this many requests (0 = never)")                                     \
    X(max_requests_jitter, INT, "0", 0, 100000000,                                                 \
      "Random extra requests in [0, jitter] added to max_requests per worker")                     \
    X(max_worker_rss_mb, INT, "0", 0, 1048576,                                                     \
      "Recycle a worker whose resident size exceeds this many MiB (0 = never)")                    \
    X(timeout, SECONDS, "30", 1, 86400,                                                            \
      "Kill and replace a worker busy on one request longer than this; backend waits end 1 s before")\
    X(request_slowlog_timeout, SECONDS, "0", 0, 86400,                                             \
      "Log once a request busy longer than this: endpoint, state, backend operation, stack (0 = off)")\
    X(graceful_timeout, SECONDS, "30", 0, 86400,                                                   \
      "Time in-flight requests get to finish on a graceful stop or reload")                        \
    X(drain_delay, SECONDS, "0", 0, 3600,                                                          \
      "On TERM, keep accepting this long with /readyz at 503 before the graceful stop")            \
    X(reload_batch, INT, "0", 0, 1024,                                                             \
      "On HUP, start at most this many new workers at once (0 = all at once)")                     \
    X(pm, PM, "static", 0, 0,                                                                      \
      "Worker count: static (workers), dynamic (spare servers), ondemand (started on demand) or adaptive (steered by queue wait)")\
    X(pm_max_children, INT, "0", 0, 1024,                                                          \
      "Most workers of pm dynamic, ondemand and adaptive (0 = workers)")                           \
    X(pm_start_servers, INT, "0", 0, 1024,                                                         \
      "Workers at start and after HUP, pm dynamic and adaptive (0 = min spare + (max spare - min spare) / 2)")\
    X(pm_min_spare_servers, INT, "1", 1, 1024,                                                     \
      "pm dynamic: fewest idle workers; pm adaptive: fewest workers")                              \
    X(pm_max_spare_servers, INT, "3", 1, 1024, "pm dynamic: most idle workers")                    \
    X(pm_process_idle_timeout, SECONDS, "10", 0.1, 86400,                                          \
      "pm dynamic (above max spare), ondemand and adaptive: retire a worker idle this long")        \
    X(pm_max_spawn_rate, INT, "32", 1, 1024,                                                       \
      "Most workers pm starts in one tick: 1, doubling each tick while more are needed, up to this")\
    X(pm_target_queue_wait_ms, INT, "100", 1, 600000,                                              \
      "pm adaptive: queue wait p99 to stay under; workers are added from half of it")              \
    X(pm_rss_budget_mb, INT, "0", 0, 1048576,                                                      \
      "pm adaptive: add no worker that would take the workers' total RSS past this (0 = none)")    \
    X(keepalive_timeout, SECONDS, "5", 0, 3600,                                                    \
      "Close kept-alive FastCGI connections idle for longer than this")                            \
    X(request_read_timeout, SECONDS, "5", 0.1, 3600,                                               \
      "Close a connection whose request has not sent all its params and body this long after it began (every class)")\
    X(preload, BOOL, "false", 0, 0,                                                                \
      "Check the backends' URLs and warm the memo table in the master, before forking")            \
    X(status_bind, BINDS, "127.0.0.1:9001", 0, 0,                                                  \
      "HTTP socket of the master's /healthz, /readyz, /status and /metrics")                       \
    X(pidfile, STR, "", 0, 0, "File the master writes its pid to (empty = none)")                  \
    X(user, STR, "", 0, 0, "Run workers as this user when started as root (it owns the sockets)")  \
    X(group, STR, "", 0, 0, "Run workers as this group when started as root")                      \
    X(socket_mode, MODE, "0660", 0, 0777, "Permissions of unix sockets, in octal")                 \
    X(access_log, STR, "-", 0, 0, "Access log file, - for stderr (empty = off)")                    \
    X(access_log_format, LOG_FORMAT, "default", 0, 0,                                             \
      "Access log line: default, json (one object a line), or $variables (Nginx) and %(x)s atoms (Gunicorn) in text")\
    X(error_log, STR, "-", 0, 0, "Error log file, - for stderr")                                   \
    X(log_level, LEVEL, "info", 0, 0, "Error log threshold: debug, info, warning or error")        \
    X(redis_url, REDIS_URL, "redis://127.0.0.1:6379/0", 0, 0,                                            \
      "Redis server: redis://[:PASSWORD@]HOST[:PORT][/DB] or unix:PATH")                           \
    X(database_url, DB_URL, "postgresql://perfcgi@127.0.0.1:5432/perfcgi", 0, 0,                   \
      "PostgreSQL connection string or URI, as libpq accepts it")                                  \
    X(upstream_url, STR, "http://127.0.0.1:18080/", 0, 0,                                          \
      "The external API /async-request calls: http://HOST[:PORT]/PATH, ?ms=N appended")           \
    X(pool_size, INT, "5", 1, 1000, "PostgreSQL connections kept per worker process")              \
    X(pool_max_overflow, INT, "10", 0, 1000,                                                       \
      "Extra PostgreSQL connections per worker process under load, each closed after 2 s idle; workers x (pool_size + this) is checked against max_connections")    \
    X(pool_timeout, SECONDS, "5", 0.001, 3600,                                                     \
      "Longest wait for a PostgreSQL connection before 503 pool_timeout")                          \
    X(pool_recycle, SECONDS, "1800", 0, 864000,                                                    \
      "Reopen PostgreSQL connections older than this (0 = never)")                                 \
    X(cache_ttl, INT, "60", 1, 86400, "Seconds a /cached-data result stays in Redis")              \
    X(max_request_mb, INT, "256", 1, 65536, "Largest block /memory-test may map")                  \
    X(max_held_mb, INT, "512", 0, 1048576,                                                         \
      "Most memory /memory-test?hold=1 may keep, in all workers together")

enum worker_class { WORKER_SYNC, WORKER_THREAD, WORKER_EVENT };
enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERROR };
enum pm_mode { PM_STATIC, PM_DYNAMIC, PM_ONDEMAND, PM_ADAPTIVE };

#define SETTINGS_MAX_BINDS 8

struct settings_binds {
    int count;
    char *addr[SETTINGS_MAX_BINDS];
};

#define SETTINGS_CTYPE_INT int
#define SETTINGS_CTYPE_SECONDS double
#define SETTINGS_CTYPE_BOOL int
#define SETTINGS_CTYPE_STR char *
#define SETTINGS_CTYPE_BINDS struct settings_binds
#define SETTINGS_CTYPE_WORKERS int /* 0 = auto */
#define SETTINGS_CTYPE_CLASS enum worker_class
#define SETTINGS_CTYPE_LEVEL enum log_level
#define SETTINGS_CTYPE_PM enum pm_mode
#define SETTINGS_CTYPE_MODE int
#define SETTINGS_CTYPE_REDIS_URL char *
#define SETTINGS_CTYPE_DB_URL char *
#define SETTINGS_CTYPE_LOG_FORMAT char *

struct settings {
#define SETTINGS_FIELD(name, kind, def, lo, hi, help) SETTINGS_CTYPE_##kind name;
    SETTINGS_TABLE(SETTINGS_FIELD)
#undef SETTINGS_FIELD
    char *config_file; /* -c FILE, or NULL */
};

enum settings_action { SETTINGS_RUN, SETTINGS_HELP, SETTINGS_PRINT_CONFIG, SETTINGS_VERSION };

/*
 * Fill *s from defaults, then the -c file, then PERFCGI_* variables of envp,
 * then argv (strongest). Returns 0 and the action asked for, or -1 with a
 * message naming the flag, the variable, or the file and line in err.
 */
int settings_load(struct settings *s, int argc, char **argv, char **envp,
                  enum settings_action *action, char *err, size_t errlen);
void settings_free(struct settings *s);
void settings_print_help(FILE *out, const char *prog);
/* Writes `key = value` lines that -c accepts back, passwords masked (****). */
void settings_print_config(FILE *out, const struct settings *s);
/* `workers`, with auto resolved for the worker class and the number of cores. */
int settings_worker_count(const struct settings *s);
const char *settings_class_name(enum worker_class c);
const char *settings_pm_name(enum pm_mode m);
/* The most workers pm may run (pm static: `workers`), and how many it starts with
 * (and after a HUP): pm static `workers`, ondemand 0, dynamic and adaptive
 * pm_start_servers or its default. */
int settings_pm_children(const struct settings *s);
int settings_pm_start(const struct settings *s);

/* Who workers run as, from `user` and `group`: 1 with *uid and *gid (the group
 * defaults to the user's), 0 when neither applies (not root, or both empty), -1
 * with err when one does not exist, or when root has `group` without `user`. */
int settings_owner(const struct settings *s, uid_t *uid, gid_t *gid, char *err, size_t errlen);
const char *settings_version(void);

/*
 * value (a Redis URL, a libpq URI or keyword string) with its passwords replaced
 * by 4 stars, into out (cut to outlen): "redis://:PASSWORD@host:6379/0" and
 * "redis://PASSWORD@host" (a Redis URL without user), "postgresql://user:PASSWORD@host/db",
 * "...?password=PASSWORD" and "password=PASSWORD" or "password='PASS WORD'" in
 * keyword strings (sslpassword too) all get the stars in place of PASSWORD.
 */
const char *settings_mask_secrets(const char *value, char *out, size_t outlen);

#endif
