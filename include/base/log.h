/* log: levelled error-log lines that name the process role and pid. */
#ifndef PERFCGI_LOG_H
#define PERFCGI_LOG_H

#include "base/access_format.h"
#include "base/settings.h"

/* Opens path ("-" or "" = stderr) as the error log; 0 or -1 with errno (ELOOP:
 * path is a symbolic link, which is never followed). */
int log_open(const char *path, enum log_level level);
/* Reopens the same files (after rotation); keeps the old ones on failure. */
int log_reopen(void);
/* "master", "worker", ...: shown in every line. */
void log_set_role(const char *role);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Gives the log files to the user (and group) workers run as, so that they can
 * reopen them after a rotation; no-op unless root and one of them is set. */
void log_chown(const struct settings *cfg);

/* The access log: path "" = off, "-" = stderr. */
int log_access_open(const char *path);
/* Compiles access_log_format (see access_format.h) for log_access, replacing the
 * one before; 0, or -1 with err and the one before kept. Until it is called, no
 * access line is written. */
int log_access_format(const char *spec, char *err, size_t errlen);
/* One line per request, in that format; by default:
 *   REMOTE - - [27/Nov/2026:04:10:00 +0000] "GET /path?query" STATUS BYTES DURATION_MS PID */
void log_access(const struct access_record *r);
/* Whether log_access writes anything: a caller may skip gathering its record. */
int log_access_on(void);

/* in with control bytes as \xHH and backslash and double quote as \\ and \",
 * into out (cut between sequences, NUL-terminated): request data fit for one log
 * line and for a quoted field. Returns out. */
const char *log_escape(const char *in, char *out, size_t outlen);

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
