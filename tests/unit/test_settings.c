/* Unit tests of settings: defaults, precedence, errors that name their origin, round trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/settings.h"

static char err[1024];

static int load(struct settings *s, char **argv, char **envp)
{
    int argc = 0;
    while (argv[argc]) argc++;
    enum settings_action action;
    return settings_load(s, argc, argv, envp, &action, err, sizeof err);
}

/* Writes text to a fresh temporary file and returns its path (static buffer). */
static const char *temp_file(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/perfcgi-unit-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void defaults_apply(void **state)
{
    (void)state;
    struct settings s;
    char *argv[] = {"perfcgi", NULL};
    char *envp[] = {NULL};
    assert_int_equal(load(&s, argv, envp), 0);
    assert_int_equal(s.bind.count, 1);
    assert_string_equal(s.bind.addr[0], "127.0.0.1:9000");
    assert_int_equal(s.workers, 0);
    assert_int_equal(s.worker_class, WORKER_SYNC);
    assert_int_equal(s.max_requests, 0);
    assert_true(s.timeout == 30.0);
    assert_int_equal(s.socket_mode, 0660);
    assert_int_equal(s.preload, 0);
    settings_free(&s);
}

static void flag_beats_env_beats_file(void **state)
{
    (void)state;
    const char *file = temp_file("[perfcgi]\nmax_requests = 10\nbacklog = 11\npool_size = 12\n");
    struct settings s;
    char *argv[] = {"perfcgi", "-c", (char *)file, "--max-requests", "30", NULL};
    char *envp[] = {"PERFCGI_MAX_REQUESTS=20", "PERFCGI_BACKLOG=21", "OTHER=1", NULL};
    assert_int_equal(load(&s, argv, envp), 0);
    assert_int_equal(s.max_requests, 30);
    assert_int_equal(s.backlog, 21);
    assert_int_equal(s.pool_size, 12);
    settings_free(&s);
    unlink(file);
}

static void flags_take_equals_and_bare_booleans(void **state)
{
    (void)state;
    struct settings s;
    char *argv[] = {"perfcgi", "--preload", "--worker-class=thread", "--workers", "auto", "--socket-mode", "600", NULL};
    char *envp[] = {NULL};
    assert_int_equal(load(&s, argv, envp), 0);
    assert_int_equal(s.preload, 1);
    assert_int_equal(s.worker_class, WORKER_THREAD);
    assert_int_equal(s.socket_mode, 0600);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(settings_worker_count(&s), cores * 4);
    settings_free(&s);
}

static void binds_from_a_stronger_place_replace_the_weaker(void **state)
{
    (void)state;
    const char *file = temp_file("[perfcgi]\nbind = unix:/tmp/a.sock\nbind = 127.0.0.1:7000\n");
    struct settings s;
    char *argv[] = {"perfcgi", "-c", (char *)file, NULL};
    char *envp[] = {NULL};
    assert_int_equal(load(&s, argv, envp), 0);
    assert_int_equal(s.bind.count, 2);
    assert_string_equal(s.bind.addr[0], "unix:/tmp/a.sock");
    assert_string_equal(s.bind.addr[1], "127.0.0.1:7000");
    settings_free(&s);

    char *argv2[] = {"perfcgi", "-c", (char *)file, NULL};
    char *envp2[] = {"PERFCGI_BIND=[::1]:7001, 127.0.0.1:7002", NULL};
    assert_int_equal(load(&s, argv2, envp2), 0);
    assert_int_equal(s.bind.count, 2);
    assert_string_equal(s.bind.addr[0], "[::1]:7001");
    assert_string_equal(s.bind.addr[1], "127.0.0.1:7002");
    settings_free(&s);
    unlink(file);
}

static void bad_flag_value_names_the_flag(void **state)
{
    (void)state;
    struct settings s;
    char *argv[] = {"perfcgi", "--workers", "x", NULL};
    char *envp[] = {NULL};
    assert_int_equal(load(&s, argv, envp), -1);
    assert_non_null(strstr(err, "--workers"));
    settings_free(&s);
    char *argv2[] = {"perfcgi", "--no-such-thing", "1", NULL};
    assert_int_equal(load(&s, argv2, envp), -1);
    assert_non_null(strstr(err, "--no-such-thing"));
    settings_free(&s);
    char *argv3[] = {"perfcgi", "--timeout", NULL};
    assert_int_equal(load(&s, argv3, envp), -1);
    assert_non_null(strstr(err, "needs a value"));
    settings_free(&s);
}

/* pm: the counts it starts with and runs at most, and the combinations PHP-FPM refuses. */
static void pm_counts_and_bad_combinations(void **state)
{
    (void)state;
    struct settings s;
    char *envp[] = {NULL};
    char *dyn[] = {"perfcgi", "--pm", "dynamic", "--workers", "8", "--pm-min-spare-servers", "2", NULL};
    assert_int_equal(load(&s, dyn, envp), 0);
    assert_int_equal(settings_pm_children(&s), 8);
    assert_int_equal(settings_pm_start(&s), 2); /* 2 + (3 - 2) / 2 */
    settings_free(&s);
    char *ond[] = {"perfcgi", "--pm", "ondemand", "--workers", "3", "--pm-max-children", "5", NULL};
    assert_int_equal(load(&s, ond, envp), 0);
    assert_int_equal(settings_pm_children(&s), 5);
    assert_int_equal(settings_pm_start(&s), 0);
    settings_free(&s);
    char *stat[] = {"perfcgi", "--workers", "3", "--pm-max-children", "5", "--pm-max-spare-servers", "9", NULL};
    assert_int_equal(load(&s, stat, envp), 0); /* static: the pm bounds are not used, nor checked */
    assert_int_equal(settings_pm_children(&s), 3);
    assert_int_equal(settings_pm_start(&s), 3);
    settings_free(&s);
    char *bad[] = {"perfcgi", "--pm", "dynamic", "--workers", "8", "--pm-start-servers", "4", NULL};
    assert_int_equal(load(&s, bad, envp), -1);
    assert_non_null(strstr(err, "pm_start_servers (4) must be between pm_min_spare_servers (1)"));
    settings_free(&s);
    char *env_bad[] = {"PERFCGI_PM=adaptive", "PERFCGI_PM_MAX_CHILDREN=2", "PERFCGI_PM_MIN_SPARE_SERVERS=3", NULL};
    char *plain[] = {"perfcgi", NULL};
    assert_int_equal(load(&s, plain, env_bad), -1);
    assert_non_null(strstr(err, "pm_min_spare_servers (3) must not exceed pm_max_children (2)"));
    settings_free(&s);
}

static void bad_env_names_the_variable(void **state)
{
    (void)state;
    struct settings s;
    char *argv[] = {"perfcgi", NULL};
    char *envp[] = {"PERFCGI_TIMEOUT=soon", NULL};
    assert_int_equal(load(&s, argv, envp), -1);
    assert_non_null(strstr(err, "PERFCGI_TIMEOUT"));
    settings_free(&s);
    char *envp2[] = {"PERFCGI_WORKER=4", NULL};
    assert_int_equal(load(&s, argv, envp2), -1);
    assert_non_null(strstr(err, "PERFCGI_WORKER"));
    settings_free(&s);
}

static void bad_file_lines_name_file_and_line(void **state)
{
    (void)state;
    struct {
        const char *text, *expect;
    } cases[] = {
        {"[perfcgi]\nworkers = 2\nbacklog = 0\n", ":3: backlog"},
        {"[perfcgi]\n\nno_such_key = 1\n", ":3: unknown key"},
        {"workers = 2\n", ":1:"},
        {"[perfcgi]\nthis is not ini\n", ":2:"},
        {"[perfcgi]\nbind = nowhere\n", ":2: bind"},
        {"[perfcgi]\nworker_class = fibers\n", ":2: worker_class"},
        {"[perfcgi]\npool_timeout = 0\n", ":2: pool_timeout"},
        {"[perfcgi]\n\naccess_log_format = $status $nope\n", ":3: access_log_format: unknown variable '$nope'"},
        {"[perfcgi]\naccess_log_format = %(h)s %(x)s\n", ":2: access_log_format: unknown atom '%(x)s'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *file = temp_file(cases[i].text);
        struct settings s;
        char *argv[] = {"perfcgi", "-c", (char *)file, NULL};
        char *envp[] = {NULL};
        assert_int_equal(load(&s, argv, envp), -1);
        assert_non_null(strstr(err, file));
        assert_non_null(strstr(err, cases[i].expect));
        settings_free(&s);
        unlink(file);
    }
    struct settings s;
    char *argv[] = {"perfcgi", "-c", "/nonexistent/perfcgi.ini", NULL};
    char *envp[] = {NULL};
    assert_int_equal(load(&s, argv, envp), -1);
    assert_non_null(strstr(err, "/nonexistent/perfcgi.ini"));
    settings_free(&s);
}

/* Checked at load, where the error can say where the value came from; a good one
 * reads back from --print-config as it was given. */
static void access_log_format_is_checked_where_given(void **state)
{
    (void)state;
    struct settings s;
    char *argv[] = {"perfcgi", NULL};
    char *envp[] = {"PERFCGI_ACCESS_LOG_FORMAT=$remote_addr ${nope}", NULL};
    assert_int_equal(load(&s, argv, envp), -1);
    assert_non_null(strstr(err, "PERFCGI_ACCESS_LOG_FORMAT: unknown variable '$nope'"));
    settings_free(&s);
    char *argv2[] = {"perfcgi", "--access-log-format", "%(z)s", NULL};
    char *envp2[] = {NULL};
    assert_int_equal(load(&s, argv2, envp2), -1);
    assert_non_null(strstr(err, "--access-log-format: unknown atom '%(z)s'"));
    settings_free(&s);

    assert_int_equal(load(&s, argv, envp2), 0);
    assert_string_equal(s.access_log_format, "default");
    settings_free(&s);
    const char *spec = "$remote_addr \"$request\" %(s)s ${request_id} 100%% {\"a\":1}";
    char *argv3[] = {"perfcgi", "--access-log-format", (char *)spec, NULL};
    assert_int_equal(load(&s, argv3, envp2), 0);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    settings_print_config(out, &s);
    fclose(out);
    settings_free(&s);
    const char *file = temp_file(text);
    char *argv4[] = {"perfcgi", "-c", (char *)file, NULL};
    assert_int_equal(load(&s, argv4, envp2), 0);
    assert_string_equal(s.access_log_format, spec);
    settings_free(&s);
    free(text);
    unlink(file);
}

static void print_config_reads_back_the_same(void **state)
{
    (void)state;
    struct settings s;
    char *argv[] = {"perfcgi", "--bind", "unix:/tmp/x.sock,127.0.0.1:9", "--timeout", "2.5", "--preload",
                    "--pidfile", "/tmp/p.pid", "--log-level", "debug", NULL};
    char *envp[] = {NULL};
    assert_int_equal(load(&s, argv, envp), 0);
    char *first = NULL, *second = NULL;
    size_t len1 = 0, len2 = 0;
    FILE *out = open_memstream(&first, &len1);
    settings_print_config(out, &s);
    fclose(out);
    settings_free(&s);

    const char *file = temp_file(first);
    char *argv2[] = {"perfcgi", "-c", (char *)file, NULL};
    assert_int_equal(load(&s, argv2, envp), 0);
    out = open_memstream(&second, &len2);
    settings_print_config(out, &s);
    fclose(out);
    assert_string_equal(first, second);
    assert_non_null(strstr(first, "bind = unix:/tmp/x.sock\nbind = 127.0.0.1:9\n"));
    assert_non_null(strstr(first, "timeout = 2.5\n"));
    settings_free(&s);
    free(first);
    free(second);
    unlink(file);
}

static void help_lists_every_setting(void **state)
{
    (void)state;
    char *help = NULL, *config = NULL;
    size_t len;
    FILE *out = open_memstream(&help, &len);
    settings_print_help(out, "perfcgi");
    fclose(out);
    struct settings s;
    char *argv[] = {"perfcgi", NULL};
    char *envp[] = {NULL};
    assert_int_equal(load(&s, argv, envp), 0);
    out = open_memstream(&config, &len);
    settings_print_config(out, &s);
    fclose(out);
    settings_free(&s);
    /* Every key of --print-config has its flag and variable in --help. */
    for (char *line = strtok(config, "\n"); line; line = strtok(NULL, "\n")) {
        char key[64], flag[80], var[80];
        if (sscanf(line, "%63s =", key) != 1 || key[0] == '[') continue;
        snprintf(flag, sizeof flag, "--%s ", key);
        snprintf(var, sizeof var, "PERFCGI_%s", key);
        for (char *p = flag; *p; p++)
            if (*p == '_') *p = '-';
        for (char *p = var; *p; p++)
            if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 'a' + 'A');
        assert_non_null(strstr(help, flag));
        assert_non_null(strstr(help, var));
    }
    free(help);
    free(config);
}

static void secrets_are_masked(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"redis://:hunter2@cache:6379/0", "redis://:****@cache:6379/0"},
        {"redis://default:hunter2@cache", "redis://default:****@cache"},
        {"redis://hunter2@cache/3", "redis://****@cache/3"}, /* Redis: no user, all password */
        {"redis://cache:6379/0", "redis://cache:6379/0"},
        {"unix:/run/redis.sock?db=2", "unix:/run/redis.sock?db=2"},
        {"postgresql://perfcgi:hunter2@db:5432/perfcgi", "postgresql://perfcgi:****@db:5432/perfcgi"},
        {"postgres://perfcgi@db/perfcgi", "postgres://perfcgi@db/perfcgi"}, /* libpq: a user, no password */
        {"postgresql://u:p%40ss@h1:5432,h2/db?sslmode=require&password=hunter2&x=1",
         "postgresql://u:****@h1:5432,h2/db?sslmode=require&password=****&x=1"},
        {"postgresql:///db?host=/run&password=hunter2", "postgresql:///db?host=/run&password=****"},
        {"host=db password=hunter2 user=perfcgi", "host=db password=**** user=perfcgi"},
        {"host=db password = 'hunt er\\' 2' dbname=x", "host=db password = **** dbname=x"},
        {"sslpassword=hunter2 host=db", "sslpassword=**** host=db"},
        {"host=db mypassword=kept", "host=db mypassword=kept"},
        {"", ""},
    };
    char out[256];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_string_equal(settings_mask_secrets(cases[i][0], out, sizeof out), cases[i][1]);
    /* Cut to the buffer, still NUL-terminated. */
    assert_string_equal(settings_mask_secrets("redis://:hunter2@cache", out, 12), "redis://:**");
}

static char *print_config_of(char **argv, char **envp)
{
    struct settings s;
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(load(&s, argv, envp), 0);
    FILE *out = open_memstream(&text, &len);
    settings_print_config(out, &s);
    fclose(out);
    settings_free(&s);
    return text;
}

static void print_config_masks_passwords(void **state)
{
    (void)state;
    char *argv[] = {"perfcgi", "--redis-url", "redis://:hunter2@cache:6379/0", NULL};
    char *envp[] = {"PERFCGI_DATABASE_URL=postgresql://perfcgi:hunter3@db/perfcgi", NULL};
    char *text = print_config_of(argv, envp);
    assert_null(strstr(text, "hunter"));
    assert_non_null(strstr(text, "redis_url = redis://:****@cache:6379/0\n"));
    assert_non_null(strstr(text, "database_url = postgresql://perfcgi:****@db/perfcgi\n"));
    free(text);
    char *argv2[] = {"perfcgi", "--database-url", "host=db password='a b' user=u", NULL};
    char *envp2[] = {NULL};
    text = print_config_of(argv2, envp2);
    assert_non_null(strstr(text, "database_url = host=db password=**** user=u\n"));
    free(text);
}

static void bad_redis_url_error_masks_the_password(void **state)
{
    (void)state;
    struct settings s;
    char *argv[] = {"perfcgi", "--redis-url", "redis://:hunter2@cache:99999/0", NULL};
    char *envp[] = {NULL};
    assert_int_equal(load(&s, argv, envp), -1);
    assert_null(strstr(err, "hunter2"));
    assert_non_null(strstr(err, "--redis-url"));
    assert_non_null(strstr(err, "'redis://:****@cache:99999/0'"));
    settings_free(&s);
    const char *file = temp_file("[perfcgi]\nredis_url = redis://hunter2@cache:0\n");
    char *argv2[] = {"perfcgi", "-c", (char *)file, NULL};
    assert_int_equal(load(&s, argv2, envp), -1);
    assert_null(strstr(err, "hunter2"));
    assert_non_null(strstr(err, "redis://****@cache:0"));
    settings_free(&s);
    unlink(file);
}

static void group_without_user_is_refused_as_root(void **state)
{
    (void)state;
    if (getuid() != 0) skip();
    struct settings s;
    char *argv[] = {"perfcgi", "--group", "nogroup", NULL};
    char *envp[] = {NULL};
    assert_int_equal(load(&s, argv, envp), 0);
    uid_t uid;
    gid_t gid;
    assert_int_equal(settings_owner(&s, &uid, &gid, err, sizeof err), -1);
    assert_non_null(strstr(err, "group"));
    assert_non_null(strstr(err, "user"));
    settings_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_apply),
        cmocka_unit_test(flag_beats_env_beats_file),
        cmocka_unit_test(flags_take_equals_and_bare_booleans),
        cmocka_unit_test(binds_from_a_stronger_place_replace_the_weaker),
        cmocka_unit_test(bad_flag_value_names_the_flag),
        cmocka_unit_test(pm_counts_and_bad_combinations),
        cmocka_unit_test(bad_env_names_the_variable),
        cmocka_unit_test(bad_file_lines_name_file_and_line),
        cmocka_unit_test(access_log_format_is_checked_where_given),
        cmocka_unit_test(print_config_reads_back_the_same),
        cmocka_unit_test(help_lists_every_setting),
        cmocka_unit_test(secrets_are_masked),
        cmocka_unit_test(print_config_masks_passwords),
        cmocka_unit_test(bad_redis_url_error_masks_the_password),
        cmocka_unit_test(group_without_user_is_refused_as_root),
    };
    return cmocka_run_group_tests_name("settings", tests, NULL, NULL);
}
