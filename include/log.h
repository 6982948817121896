/* log: levelled error-log lines that name the process role and pid. */
#ifndef PERFCGI_LOG_H
#define PERFCGI_LOG_H

#include "settings.h"

/* Opens path ("-" or "" = stderr) as the error log; 0 or -1 with errno. */
int log_open(const char *path, enum log_level level);
/* Reopens the same file (after rotation); keeps the old one on failure. */
int log_reopen(void);
/* "master", "worker", ...: shown in every line. */
void log_set_role(const char *role);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
