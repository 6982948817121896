/* main: read the settings, open the sockets, hand over to the master. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "listener.h"
#include "log.h"
#include "master.h"
#include "settings.h"

extern char **environ;

static int write_pidfile(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "%ld\n", (long)getpid());
    return fclose(f);
}

static int open_all(const struct settings_binds *binds, struct listener *out, const struct settings *cfg)
{
    char err[512];
    for (int i = 0; i < binds->count; i++) {
        if (listener_open(&out[i], binds->addr[i], cfg->backlog, cfg->socket_mode, err, sizeof err) != 0) {
            fprintf(stderr, "perfcgi: cannot listen on %s\n", err);
            while (i-- > 0) listener_close(&out[i]);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct settings cfg;
    enum settings_action action;
    char err[1024];
    if (settings_load(&cfg, argc, argv, environ, &action, err, sizeof err) != 0) {
        fprintf(stderr, "perfcgi: %s\n", err);
        return 2;
    }
    switch (action) {
    case SETTINGS_HELP:
        settings_print_help(stdout, argv[0]);
        return 0;
    case SETTINGS_VERSION:
        printf("perfcgi %s\n", settings_version());
        return 0;
    case SETTINGS_PRINT_CONFIG:
        settings_print_config(stdout, &cfg);
        settings_free(&cfg);
        return 0;
    case SETTINGS_RUN:
        break;
    }
    if (log_open(cfg.error_log, cfg.log_level) != 0) {
        fprintf(stderr, "perfcgi: cannot open error_log %s: %s\n", cfg.error_log, strerror(errno));
        return 2;
    }

    struct listener listeners[SETTINGS_MAX_BINDS], status[SETTINGS_MAX_BINDS];
    if (open_all(&cfg.bind, listeners, &cfg) != 0) return 1;
    if (open_all(&cfg.status_bind, status, &cfg) != 0) {
        for (int i = 0; i < cfg.bind.count; i++) listener_close(&listeners[i]);
        return 1;
    }
    if (cfg.pidfile[0] && write_pidfile(cfg.pidfile) != 0) {
        fprintf(stderr, "perfcgi: cannot write pidfile %s: %s\n", cfg.pidfile, strerror(errno));
        for (int i = 0; i < cfg.bind.count; i++) listener_close(&listeners[i]);
        for (int i = 0; i < cfg.status_bind.count; i++) listener_close(&status[i]);
        return 1;
    }

    int rc = master_run(&cfg, listeners, cfg.bind.count, status, cfg.status_bind.count);

    for (int i = 0; i < cfg.bind.count; i++) listener_close(&listeners[i]);
    for (int i = 0; i < cfg.status_bind.count; i++) listener_close(&status[i]);
    if (cfg.pidfile[0]) unlink(cfg.pidfile);
    settings_free(&cfg);
    return rc;
}
