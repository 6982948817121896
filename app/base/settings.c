/* settings: the one table of perfcgi's settings and the loaders that fill it. */
#include "base/settings.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <pwd.h>
#include <strings.h>
#include <unistd.h>

#include <ini.h>

#include "base/access_format.h"
#include "base/listener.h"
#include "base/query.h"
#include "base/redis_url.h"

#ifndef PERFCGI_VERSION
#define PERFCGI_VERSION "0.1.0"
#endif

enum kind {
    KIND_INT, KIND_SECONDS, KIND_BOOL, KIND_STR, KIND_BINDS, KIND_WORKERS, KIND_CLASS, KIND_LEVEL, KIND_MODE, KIND_REDIS_URL,
    KIND_DB_URL, KIND_LOG_FORMAT, KIND_PM
};

struct setting_def {
    const char *name;
    enum kind kind;
    const char *def;
    double lo, hi;
    const char *help;
    size_t offset;
};

static const struct setting_def defs[] = {
#define SETTINGS_ROW(name, kind, def, lo, hi, help) {#name, KIND_##kind, def, lo, hi, help, offsetof(struct settings, name)},
    SETTINGS_TABLE(SETTINGS_ROW)
#undef SETTINGS_ROW
};
#define NDEFS (sizeof defs / sizeof defs[0])

static const char *const class_names[] = {"sync", "thread", "event"};
static const char *const level_names[] = {"debug", "info", "warning", "error"};
static const char *const pm_names[] = {"static", "dynamic", "ondemand", "adaptive"};

/* Where a value came from; binds given in a stronger place replace weaker ones. */
enum origin { FROM_DEFAULT, FROM_FILE, FROM_ENV, FROM_ARGV };

struct loader {
    struct settings *s;
    enum origin binds_origin[NDEFS];
    char *err;
    size_t errlen;
    const char *file;
    int file_failed;
};

static void *field(struct settings *s, const struct setting_def *d)
{
    return (char *)s + d->offset;
}

static const struct setting_def *find_def(const char *name)
{
    for (size_t i = 0; i < NDEFS; i++)
        if (strcmp(defs[i].name, name) == 0) return &defs[i];
    return NULL;
}

const char *settings_class_name(enum worker_class c)
{
    return class_names[c];
}

const char *settings_pm_name(enum pm_mode m)
{
    return pm_names[m];
}

static int pick(const char *value, const char *const *names, int count)
{
    for (int i = 0; i < count; i++)
        if (strcasecmp(value, names[i]) == 0) return i;
    return -1;
}

static void binds_clear(struct settings_binds *b)
{
    for (int i = 0; i < b->count; i++) free(b->addr[i]);
    b->count = 0;
}

static int set_binds(struct settings_binds *b, const char *value, int replace, char *err, size_t errlen)
{
    char *copy = strdup(value), *save = NULL;
    if (!copy) return -1;
    if (replace) binds_clear(b);
    int rc = 0;
    struct listener_address parsed;
    for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
        if (listener_parse(tok, &parsed, err, errlen) != 0) { /* as listener_open will read it */
            rc = -1;
            break;
        }
        if (b->count == SETTINGS_MAX_BINDS) {
            snprintf(err, errlen, "at most %d addresses", SETTINGS_MAX_BINDS);
            rc = -1;
            break;
        }
        b->addr[b->count++] = strdup(tok);
    }
    if (rc == 0 && b->count == 0) {
        snprintf(err, errlen, "needs at least one address");
        rc = -1;
    }
    free(copy);
    return rc;
}

static int parse_int(const struct setting_def *d, const char *value, int *out, char *err, size_t errlen)
{
    long v;
    if (query_parse_long(value, &v) != 0 || v < d->lo || v > d->hi) {
        snprintf(err, errlen, "'%s' must be an integer in [%.0f, %.0f]", value, d->lo, d->hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* Parses value into the field of d; err gets the reason without the origin. */
static int set_value(struct loader *l, const struct setting_def *d, const char *value, enum origin from)
{
    void *f = field(l->s, d);
    char *end;
    switch (d->kind) {
    case KIND_INT:
        return parse_int(d, value, f, l->err, l->errlen);
    case KIND_WORKERS:
        if (strcasecmp(value, "auto") == 0) {
            *(int *)f = 0;
            return 0;
        }
        if (parse_int(d, value, f, l->err, l->errlen) == 0) return 0;
        snprintf(l->err, l->errlen, "'%s' must be auto or an integer in [%.0f, %.0f]", value, d->lo, d->hi);
        return -1;
    case KIND_SECONDS: {
        errno = 0;
        double v = strtod(value, &end);
        if (errno || end == value || *end || !isfinite(v) || v < d->lo || v > d->hi) {
            snprintf(l->err, l->errlen, "'%s' must be a number of seconds in [%g, %g]", value, d->lo, d->hi);
            return -1;
        }
        *(double *)f = v;
        return 0;
    }
    case KIND_BOOL: {
        static const char *const truth[] = {"false", "true", "no", "yes", "off", "on", "0", "1"};
        int i = pick(value, truth, 8);
        if (i < 0) {
            snprintf(l->err, l->errlen, "'%s' must be true or false", value);
            return -1;
        }
        *(int *)f = i % 2;
        return 0;
    }
    case KIND_REDIS_URL:
    case KIND_DB_URL:
    case KIND_LOG_FORMAT:
    case KIND_STR: {
        struct redis_address addr;
        struct access_format format;
        char why[256], masked[512];
        if (d->kind == KIND_REDIS_URL && redis_url_parse(value, &addr, why, sizeof why) != 0) {
            snprintf(l->err, l->errlen, "'%s' is %s", settings_mask_secrets(value, masked, sizeof masked), why);
            return -1;
        }
        /* Checked here, where the error can name the file and line; compiled again for use. */
        if (d->kind == KIND_LOG_FORMAT) {
            if (access_format_compile(&format, value, l->err, l->errlen) != 0) return -1;
            access_format_free(&format);
        }
        char *copy = strdup(value);
        if (!copy) return -1;
        free(*(char **)f);
        *(char **)f = copy;
        return 0;
    }
    case KIND_BINDS: {
        size_t i = (size_t)(d - defs);
        int replace = l->binds_origin[i] != from; /* the first value from a stronger place */
        l->binds_origin[i] = from;
        return set_binds(f, value, replace, l->err, l->errlen);
    }
    case KIND_CLASS:
    case KIND_LEVEL:
    case KIND_PM: {
        const char *const *names = d->kind == KIND_CLASS ? class_names : d->kind == KIND_PM ? pm_names : level_names;
        int count = d->kind == KIND_CLASS ? 3 : 4;
        int i = pick(value, names, count);
        if (i < 0) {
            snprintf(l->err, l->errlen, "'%s' must be one of %s", value,
                     d->kind == KIND_CLASS ? "sync, thread, event"
                     : d->kind == KIND_PM  ? "static, dynamic, ondemand, adaptive"
                                           : "debug, info, warning, error");
            return -1;
        }
        *(int *)f = i;
        return 0;
    }
    case KIND_MODE: {
        errno = 0;
        long v = strtol(value, &end, 8);
        if (errno || end == value || *end || v < 0 || v > d->hi) {
            snprintf(l->err, l->errlen, "'%s' must be an octal mode such as 0660", value);
            return -1;
        }
        *(int *)f = (int)v;
        return 0;
    }
    }
    return -1;
}

/* Prefixes the reason already in l->err with where the value came from. */
static int fail(struct loader *l, const char *where)
{
    char reason[512];
    snprintf(reason, sizeof reason, "%s", l->err);
    snprintf(l->err, l->errlen, "%s: %s", where, reason);
    return -1;
}

static int on_ini_line(void *user, const char *section, const char *name, const char *value)
{
    struct loader *l = user;
    if (l->file_failed) return 1; /* keep the first error */
    const struct setting_def *d = find_def(name);
    if (strcmp(section, "perfcgi") != 0)
        snprintf(l->err, l->errlen, "'%s' is outside the [perfcgi] section", name);
    else if (!d)
        snprintf(l->err, l->errlen, "unknown key '%s'", name);
    else if (set_value(l, d, value, FROM_FILE) == 0)
        return 1;
    else
        fail(l, name);
    l->file_failed = 1;
    return 0;
}

static int load_file(struct loader *l, const char *path)
{
    /* Debian's inih reads these at run time: grow the line buffer on the heap
     * instead of cutting long lines (a cut line's tail would parse as a line). */
    ini_use_stack = false;
    ini_allow_realloc = true;
    ini_max_line = 1 << 20;
    ini_stop_on_first_error = true;
    int line = ini_parse(path, on_ini_line, l);
    if (line == 0) return 0;
    char reason[512];
    snprintf(reason, sizeof reason, "%s", l->err);
    if (line < 0)
        snprintf(l->err, l->errlen, "%s: cannot read the file: %s", path, strerror(errno ? errno : ENOENT));
    else if (l->file_failed)
        snprintf(l->err, l->errlen, "%s:%d: %s", path, line, reason);
    else
        snprintf(l->err, l->errlen, "%s:%d: not a 'key = value' line or [section]", path, line);
    return -1;
}

static int load_env(struct loader *l, char **envp)
{
    static const char prefix[] = "PERFCGI_";
    for (char **e = envp; e && *e; e++) {
        if (strncmp(*e, prefix, sizeof prefix - 1) != 0) continue;
        const char *eq = strchr(*e, '=');
        if (!eq) continue;
        char name[64];
        size_t len = (size_t)(eq - *e) - (sizeof prefix - 1);
        if (len >= sizeof name) len = sizeof name - 1;
        for (size_t i = 0; i < len; i++) name[i] = (char)tolower((unsigned char)(*e)[sizeof prefix - 1 + i]);
        name[len] = '\0';
        char var[80];
        snprintf(var, sizeof var, "%.*s", (int)(eq - *e), *e);
        const struct setting_def *d = find_def(name);
        if (!d) {
            snprintf(l->err, l->errlen, "%s: unknown setting (see perfcgi --help)", var);
            return -1;
        }
        if (set_value(l, d, eq + 1, FROM_ENV) != 0) return fail(l, var);
    }
    return 0;
}

/* Turns "--max-requests" into "max_requests"; NULL if it is not a long flag. */
static const struct setting_def *flag_def(const char *arg, char *name, size_t namelen, const char **inline_value)
{
    if (strncmp(arg, "--", 2) != 0) return NULL;
    arg += 2;
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    if (len >= namelen) return NULL;
    for (size_t i = 0; i < len; i++) name[i] = arg[i] == '-' ? '_' : arg[i];
    name[len] = '\0';
    *inline_value = eq ? eq + 1 : NULL;
    return find_def(name);
}

static int load_argv(struct loader *l, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *value;
        char name[64];
        if (strcmp(arg, "-c") == 0 || strcmp(arg, "--config") == 0) {
            i++; /* read before everything else */
            continue;
        }
        if (strncmp(arg, "--config=", 9) == 0 || strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0 ||
            strcmp(arg, "--print-config") == 0 || strcmp(arg, "--version") == 0)
            continue;
        const struct setting_def *d = flag_def(arg, name, sizeof name, &value);
        if (!d) {
            snprintf(l->err, l->errlen, "%s: unknown option (see perfcgi --help)", arg);
            return -1;
        }
        if (!value && d->kind == KIND_BOOL) {
            value = "true";
        } else if (!value) {
            if (i + 1 >= argc) {
                snprintf(l->err, l->errlen, "%s: needs a value", arg);
                return -1;
            }
            value = argv[++i];
        }
        if (set_value(l, d, value, FROM_ARGV) != 0) {
            char flag[80];
            snprintf(flag, sizeof flag, "%.*s", (int)strcspn(arg, "="), arg);
            return fail(l, flag);
        }
    }
    return 0;
}

int settings_pm_children(const struct settings *s)
{
    return s->pm == PM_STATIC || !s->pm_max_children ? settings_worker_count(s) : s->pm_max_children;
}

int settings_pm_start(const struct settings *s)
{
    if (s->pm == PM_STATIC) return settings_worker_count(s);
    if (s->pm == PM_ONDEMAND) return 0;
    if (s->pm_start_servers) return s->pm_start_servers;
    return s->pm_min_spare_servers + (s->pm_max_spare_servers - s->pm_min_spare_servers) / 2;
}

/* A pm bound above another: the message says which, in err. */
static int pm_exceeds(const char *mode, const char *name, int v, const char *bound, int most, char *err, size_t errlen)
{
    if (v <= most) return 0;
    snprintf(err, errlen, "pm = %s: %s (%d) must not exceed %s (%d)", mode, name, v, bound, most);
    return 1;
}

/* pm_start_servers outside [pm_min_spare_servers, `hi`]. */
static int pm_start_outside(const struct settings *s, const char *hi_name, int hi, char *err, size_t errlen)
{
    int start = settings_pm_start(s), lo = s->pm_min_spare_servers;
    if (start >= lo && start <= hi) return 0;
    snprintf(err, errlen, "pm = %s: pm_start_servers (%d%s) must be between pm_min_spare_servers (%d) and %s (%d)",
             pm_names[s->pm], start, s->pm_start_servers ? "" : ", from the spare servers", lo, hi_name, hi);
    return 1;
}

/* The pm settings that only make sense together, refused as PHP-FPM refuses them. */
static int check_pm(const struct settings *s, char *err, size_t errlen)
{
    int most = settings_pm_children(s), lo = s->pm_min_spare_servers, hi = s->pm_max_spare_servers;
    const char *mode = pm_names[s->pm];
    int bad = 0;
    if (s->pm == PM_DYNAMIC)
        bad = pm_exceeds(mode, "pm_min_spare_servers", lo, "pm_max_spare_servers", hi, err, errlen) ||
              pm_exceeds(mode, "pm_max_spare_servers", hi, "pm_max_children", most, err, errlen) ||
              pm_start_outside(s, "pm_max_spare_servers", hi, err, errlen);
    else if (s->pm == PM_ADAPTIVE)
        bad = pm_exceeds(mode, "pm_min_spare_servers", lo, "pm_max_children", most, err, errlen) ||
              pm_start_outside(s, "pm_max_children", most, err, errlen);
    return bad ? -1 : 0;
}

static int apply_defaults(struct loader *l)
{
    for (size_t i = 0; i < NDEFS; i++) {
        if (set_value(l, &defs[i], defs[i].def, FROM_DEFAULT) != 0) return fail(l, defs[i].name);
        l->binds_origin[i] = FROM_DEFAULT;
    }
    return 0;
}

int settings_load(struct settings *s, int argc, char **argv, char **envp,
                  enum settings_action *action, char *err, size_t errlen)
{
    struct loader l = {.s = s, .err = err, .errlen = errlen};
    memset(s, 0, sizeof *s);
    *action = SETTINGS_RUN;
    err[0] = '\0';

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) *action = SETTINGS_HELP;
        else if (strcmp(arg, "--version") == 0) *action = SETTINGS_VERSION;
        else if (strcmp(arg, "--print-config") == 0 && *action == SETTINGS_RUN) *action = SETTINGS_PRINT_CONFIG;
        else if (strcmp(arg, "-c") == 0 || strcmp(arg, "--config") == 0) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "%s: needs a file name", arg);
                return -1;
            }
            free(s->config_file);
            s->config_file = strdup(argv[++i]);
        } else if (strncmp(arg, "--config=", 9) == 0) {
            free(s->config_file);
            s->config_file = strdup(arg + 9);
        }
    }
    if (*action == SETTINGS_HELP || *action == SETTINGS_VERSION) return 0;

    if (apply_defaults(&l) != 0) return -1;
    if (s->config_file && load_file(&l, s->config_file) != 0) return -1;
    if (load_env(&l, envp) != 0) return -1;
    if (load_argv(&l, argc, argv) != 0) return -1;
    return check_pm(s, err, errlen);
}

void settings_free(struct settings *s)
{
    for (size_t i = 0; i < NDEFS; i++) {
        if (defs[i].kind == KIND_STR || defs[i].kind == KIND_REDIS_URL || defs[i].kind == KIND_DB_URL ||
            defs[i].kind == KIND_LOG_FORMAT)
            free(*(char **)field(s, &defs[i]));
        if (defs[i].kind == KIND_BINDS) binds_clear(field(s, &defs[i]));
    }
    free(s->config_file);
    memset(s, 0, sizeof *s);
}

static const char *kind_metavar(enum kind k)
{
    static const char *const names[] = {
        [KIND_INT] = "N", [KIND_SECONDS] = "SECONDS", [KIND_BOOL] = "", [KIND_STR] = "TEXT",
        [KIND_BINDS] = "ADDRESS", [KIND_WORKERS] = "N|auto", [KIND_CLASS] = "CLASS",
        [KIND_LEVEL] = "LEVEL", [KIND_MODE] = "MODE", [KIND_REDIS_URL] = "URL", [KIND_DB_URL] = "URL",
        [KIND_LOG_FORMAT] = "FORMAT", [KIND_PM] = "MODE",
    };
    return names[k];
}

void settings_print_help(FILE *out, const char *prog)
{
    fprintf(out,
            "Usage: %s [-c FILE] [--SETTING VALUE ...]\n"
            "perfcgi %s: a prefork FastCGI application server built to be measured.\n\n"
            "Each setting is, strongest first, a flag, a PERFCGI_<NAME> environment\n"
            "variable, or a key under [perfcgi] in the -c FILE: the flag's name with\n"
            "underscores (--max-requests, PERFCGI_MAX_REQUESTS, max_requests = 100).\n\n"
            "  -c, --config FILE     INI file to read settings from\n"
            "  --print-config        print the effective settings as a config file and exit\n"
            "  --help, --version\n\n"
            "Settings:\n",
            prog, PERFCGI_VERSION);
    for (size_t i = 0; i < NDEFS; i++) {
        const struct setting_def *d = &defs[i];
        char flag[64], env[64];
        snprintf(flag, sizeof flag, "--%s %s", d->name, kind_metavar(d->kind));
        for (char *p = flag; *p && *p != ' '; p++)
            if (*p == '_') *p = '-';
        snprintf(env, sizeof env, "PERFCGI_%s", d->name);
        for (char *p = env; *p; p++) *p = (char)toupper((unsigned char)*p);
        fprintf(out, "  %-32s %-30s %s (default: %s)\n", flag, env, d->help, d->def[0] ? d->def : "\"\"");
    }
}

void settings_print_config(FILE *out, const struct settings *cs)
{
    struct settings *s = (struct settings *)cs; /* field() does not write */
    fprintf(out, "[perfcgi]\n");
    for (size_t i = 0; i < NDEFS; i++) {
        const struct setting_def *d = &defs[i];
        void *f = field(s, d);
        switch (d->kind) {
        case KIND_INT: fprintf(out, "%s = %d\n", d->name, *(int *)f); break;
        case KIND_WORKERS:
            if (*(int *)f == 0) fprintf(out, "%s = auto\n", d->name);
            else fprintf(out, "%s = %d\n", d->name, *(int *)f);
            break;
        case KIND_SECONDS: {
            /* The shortest decimal that reads back as the same double. */
            char num[32];
            for (int prec = 6; prec <= 17; prec++) {
                snprintf(num, sizeof num, "%.*g", prec, *(double *)f);
                if (strtod(num, NULL) == *(double *)f) break;
            }
            fprintf(out, "%s = %s\n", d->name, num);
            break;
        }
        case KIND_BOOL: fprintf(out, "%s = %s\n", d->name, *(int *)f ? "true" : "false"); break;
        case KIND_LOG_FORMAT:
        case KIND_STR: fprintf(out, "%s = %s\n", d->name, *(char **)f ? *(char **)f : ""); break;
        case KIND_REDIS_URL:
        case KIND_DB_URL: {
            char masked[4096];
            fprintf(out, "%s = %s\n", d->name, settings_mask_secrets(*(char **)f ? *(char **)f : "", masked,
                                                                       sizeof masked));
            break;
        }
        case KIND_BINDS: {
            const struct settings_binds *b = f;
            for (int j = 0; j < b->count; j++) fprintf(out, "%s = %s\n", d->name, b->addr[j]);
            break;
        }
        case KIND_CLASS: fprintf(out, "%s = %s\n", d->name, class_names[*(int *)f]); break;
        case KIND_LEVEL: fprintf(out, "%s = %s\n", d->name, level_names[*(int *)f]); break;
        case KIND_PM: fprintf(out, "%s = %s\n", d->name, pm_names[*(int *)f]); break;
        case KIND_MODE: fprintf(out, "%s = %04o\n", d->name, *(int *)f); break;
        }
    }
}

int settings_worker_count(const struct settings *s)
{
    if (s->workers > 0) return s->workers;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1) cores = 1;
    return s->worker_class == WORKER_SYNC ? (int)(2 * cores + 1) : (int)(cores * 4);
}

const char *settings_version(void)
{
    return PERFCGI_VERSION;
}

int settings_owner(const struct settings *s, uid_t *uid, gid_t *gid, char *err, size_t errlen)
{
    *uid = (uid_t)-1;
    *gid = (gid_t)-1;
    if (getuid() != 0 || (!s->user[0] && !s->group[0])) return 0;
    if (!s->user[0]) { /* setgid alone would leave the workers running as root */
        snprintf(err, errlen,
                 "group is set (%s) but user is not: workers would keep uid 0; set user as well "
                 "(--user, PERFCGI_USER or user =), or leave group empty",
                 s->group);
        return -1;
    }
    if (s->user[0]) {
        struct passwd *pw = getpwnam(s->user);
        if (!pw) {
            snprintf(err, errlen, "user %s does not exist", s->user);
            return -1;
        }
        *uid = pw->pw_uid;
        *gid = pw->pw_gid;
    }
    if (s->group[0]) {
        struct group *gr = getgrnam(s->group);
        if (!gr) {
            snprintf(err, errlen, "group %s does not exist", s->group);
            return -1;
        }
        *gid = gr->gr_gid;
    }
    return 1;
}

/* Appends len bytes of text to out (NUL-terminated, cut at outlen). */
static void put(char *out, size_t outlen, size_t *at, const char *text, size_t len)
{
    while (len-- && *at + 1 < outlen) out[(*at)++] = *text++;
    out[*at < outlen ? *at : outlen - 1] = '\0';
}

/* Where the value of a `password` or `sslpassword` key starts at p (a libpq
 * keyword or a URI query parameter), or NULL when p starts no such key. */
static const char *password_value(const char *start, const char *p)
{
    static const char *const keys[] = {"password", "sslpassword"};
    if (p > start && !strchr(" \t\n?&", p[-1])) return NULL;
    for (size_t i = 0; i < 2; i++) {
        size_t n = strlen(keys[i]);
        if (strncmp(p, keys[i], n) != 0) continue;
        const char *v = p + n;
        while (*v == ' ' || *v == '\t') v++;
        if (*v != '=') continue;
        for (v++; *v == ' ' || *v == '\t'; v++) {
        }
        return v;
    }
    return NULL;
}

/* The end of a keyword value: a quoted one ('...' with \' inside), or up to a
 * space (keyword strings) or & or # (URI queries). */
static const char *value_end(const char *v)
{
    if (*v != '\'') return v + strcspn(v, " \t\n&#");
    for (v++; *v && *v != '\''; v++)
        if (*v == '\\' && v[1]) v++;
    return *v ? v + 1 : v;
}

const char *settings_mask_secrets(const char *value, char *out, size_t outlen)
{
    size_t at = 0;
    const char *p = value;
    out[0] = '\0';
    const char *scheme_end = strstr(value, "://");
    if (scheme_end) { /* scheme://[user[:password]@]host...: mask the password */
        const char *auth = scheme_end + 3;
        size_t authlen = strcspn(auth, "/?#");
        const char *at_sign = NULL;
        for (const char *q = auth; q < auth + authlen; q++)
            if (*q == '@') at_sign = q;
        if (at_sign) {
            const char *colon = memchr(auth, ':', (size_t)(at_sign - auth));
            /* redis://SECRET@host: without a colon Redis URLs still carry a password. */
            int redis = strncmp(value, "redis", 5) == 0;
            const char *cut = colon ? colon + 1 : redis ? auth : NULL;
            if (cut) {
                put(out, outlen, &at, value, (size_t)(cut - value));
                put(out, outlen, &at, "****", 4);
                p = at_sign;
            }
        }
    }
    const char *start = value;
    while (*p) {
        const char *v = password_value(start, p);
        if (v && *v) {
            put(out, outlen, &at, p, (size_t)(v - p));
            put(out, outlen, &at, "****", 4);
            p = value_end(v);
        } else {
            put(out, outlen, &at, p++, 1);
        }
    }
    return out;
}
