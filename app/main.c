/* main: read the settings, open the sockets, hand over to the master. */
#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/compute.h"
#include "base/listener.h"
#include "base/log.h"
#include "base/pidfile.h"
#include "master/activation.h"
#include "master/capacity.h"
#include "master/master.h"
#include "master/upgrade.h"
#include "backends/redis_client.h"
#include "base/settings.h"
#include "worker/worker_main.h"

extern char **environ;

/* Why a file named in the settings could not be opened, in words for the operator. */
static const char *open_error(int err)
{
    if (err == ELOOP) return "it is a symbolic link, which perfcgi does not follow";
    if (err == EPERM) return "it is not a regular file of its own (a device, a FIFO or a hard link)";
    return strerror(err);
}

static void close_all(struct listener *ls, int n)
{
    for (int i = 0; i < n; i++) listener_close(&ls[i]);
}

/* A socket inherited from the old master of a binary upgrade, or from systemd (socket
 * activation), is taken over, never bound again (a unix socket file it serves must
 * stay); any other is opened. */
static int open_all(const struct settings_binds *binds, struct listener *out, const struct settings *cfg)
{
    char err[512];
    for (int i = 0; i < binds->count; i++) {
        int adopted = upgrade_adopt(&out[i], binds->addr[i], cfg->backlog, err, sizeof err);
        if (adopted < 0 ||
            (!adopted && listener_open(&out[i], binds->addr[i], cfg->backlog, cfg->socket_mode, err, sizeof err) != 0)) {
            fprintf(stderr, "perfcgi: cannot listen on %s\n", err);
            close_all(out, i);
            return -1;
        }
    }
    return 0;
}

/* Workers that run as `user`/`group` own the unix sockets they serve, like
 * PHP-FPM's listen.owner/listen.group, so the web server's group can connect. */
static int chown_sockets(const struct settings *cfg, const struct listener *ls, int n)
{
    uid_t uid;
    gid_t gid;
    char err[256];
    int owner = settings_owner(cfg, &uid, &gid, err, sizeof err);
    for (int i = 0; owner > 0 && i < n; i++)
        if (listener_chown(&ls[i], uid, gid, err, sizeof err) != 0) owner = -1;
    if (owner < 0) fprintf(stderr, "perfcgi: %s\n", err);
    return owner < 0 ? -1 : 0;
}

/* preload: the work every worker would do at boot, done once in the master so
 * that workers share its result copy-on-write and bad settings fail at start. */
static int preload(const struct settings *cfg)
{
    char err[256];
    struct redis_address addr;
    if (redis_url_parse(cfg->redis_url, &addr, err, sizeof err) != 0) {
        fprintf(stderr, "perfcgi: redis_url: %s\n", err);
        return -1;
    }
    /* libpq only parses the URL here: whether the server answers is the
     * workers' business (they retry), but a URL it cannot parse never works. */
    char *pq_err = NULL;
    PQconninfoOption *opts = PQconninfoParse(cfg->database_url, &pq_err);
    if (!opts) {
        size_t n = pq_err ? strcspn(pq_err, "\n") : 0;
        fprintf(stderr, "perfcgi: database_url: %.*s\n", (int)n, pq_err ? pq_err : "out of memory");
        PQfreemem(pq_err);
        return -1;
    }
    PQconninfoFree(opts);
    compute_fib_memo(93); /* the memo table of /expensive-computation */
    return 0;
}

/* Leaves before the master took over: frees what main allocated (for LeakSanitizer). */
static int quit(struct settings *cfg, int code)
{
    settings_free(cfg);
    free(cfg);
    return code;
}

int main(int argc, char **argv)
{
    struct settings *cfg = calloc(1, sizeof *cfg);
    enum settings_action action;
    char err[1024];
    if (!cfg) return 1;
    upgrade_init(argv[0]);
    activation_init();
    if (settings_load(cfg, argc, argv, environ, &action, err, sizeof err) != 0) {
        fprintf(stderr, "perfcgi: %s\n", err);
        return quit(cfg, 2);
    }
    switch (action) {
    case SETTINGS_HELP:
        settings_print_help(stdout, argv[0]);
        return quit(cfg, 0);
    case SETTINGS_VERSION:
        printf("perfcgi %s\n", settings_version());
        return quit(cfg, 0);
    case SETTINGS_PRINT_CONFIG:
        settings_print_config(stdout, cfg);
        return quit(cfg, 0);
    case SETTINGS_RUN:
        break;
    }
    if (activation_match(cfg, err, sizeof err) != 0) {
        fprintf(stderr, "perfcgi: %s\n", err);
        return quit(cfg, 1);
    }
    uid_t uid;
    gid_t gid;
    if (settings_owner(cfg, &uid, &gid, err, sizeof err) < 0) { /* before any file is opened for them */
        fprintf(stderr, "perfcgi: %s\n", err);
        return quit(cfg, 1);
    }
    if (log_open(cfg->error_log, cfg->log_level) != 0) {
        fprintf(stderr, "perfcgi: cannot open error_log %s: %s\n", cfg->error_log, open_error(errno));
        return quit(cfg, 2);
    }
    if (log_access_open(cfg->access_log) != 0) {
        fprintf(stderr, "perfcgi: cannot open access_log %s: %s\n", cfg->access_log, open_error(errno));
        return quit(cfg, 2);
    }
    if (log_access_format(cfg->access_log_format, err, sizeof err) != 0) { /* checked already: out of memory */
        fprintf(stderr, "perfcgi: access_log_format: %s\n", err);
        return quit(cfg, 2);
    }
    log_chown(cfg);
    char note[512];
    if (capacity_files(cfg, note, sizeof note, err, sizeof err) != 0) {
        fprintf(stderr, "perfcgi: %s\n", err);
        return quit(cfg, 1);
    }
    if (note[0]) log_info("%s", note);
    if (cfg->preload && preload(cfg) != 0) return quit(cfg, 2);

    struct listener listeners[SETTINGS_MAX_BINDS], status[SETTINGS_MAX_BINDS];
    int nl = cfg->bind.count, ns = cfg->status_bind.count;
    if (open_all(&cfg->bind, listeners, cfg) != 0) return quit(cfg, 1);
    if (open_all(&cfg->status_bind, status, cfg) != 0 || chown_sockets(cfg, listeners, nl) != 0) {
        close_all(listeners, nl);
        return quit(cfg, 1);
    }
    upgrade_close_unused();
    char *pidfile = cfg->pidfile[0] ? strdup(cfg->pidfile) : NULL;
    if (pidfile && pidfile_write(pidfile) != 0) {
        fprintf(stderr, "perfcgi: cannot write pidfile %s: %s\n", pidfile, open_error(errno));
        close_all(listeners, nl);
        close_all(status, ns);
        free(pidfile);
        return quit(cfg, 1);
    }

    worker_main_prefork(cfg);
    /* The master owns cfg and the sockets from here on, and closes them. */
    int rc = master_run(cfg, argc, argv, environ, listeners, nl, status, ns, pidfile);
    if (pidfile) pidfile_remove(pidfile);
    free(pidfile);
    return rc;
}
