/* Unit tests of upgrade: the binary's path, and the sockets a new master inherits. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/listener.h"
#include "master/upgrade.h"

/* A path is made absolute against the working directory of the start; a bare
 * name is looked up on PATH, as execvp would. */
static void the_binary_path_is_absolute(void **state)
{
    (void)state;
    char cwd[PATH_MAX], want[PATH_MAX + 16];
    assert_non_null(getcwd(cwd, sizeof cwd));
    upgrade_init("/opt/perfcgi/bin/perfcgi");
    assert_string_equal(upgrade_binary(), "/opt/perfcgi/bin/perfcgi");
    upgrade_init("bin/perfcgi");
    snprintf(want, sizeof want, "%s/bin/perfcgi", cwd);
    assert_string_equal(upgrade_binary(), want);
    upgrade_init("sh");
    assert_int_equal(upgrade_binary()[0], '/');
    assert_int_equal(access(upgrade_binary(), X_OK), 0);
    upgrade_init("no-such-perfcgi-binary");
    assert_string_equal(upgrade_binary(), "");
    assert_non_null(upgrade_refusal());
}

/* The new master takes the socket of its bind's address, leaves its file to the old
 * master until it serves, and the variables are gone before the settings read them. */
static void a_new_master_adopts_the_inherited_socket_of_its_address(void **state)
{
    (void)state;
    char dir[] = "/tmp/perfcgi-upgrade-XXXXXX", addr[128], err[256], env[256];
    assert_non_null(mkdtemp(dir));
    snprintf(addr, sizeof addr, "unix:%s/app.sock", dir);
    struct listener old, adopted, other;
    assert_int_equal(listener_open(&old, addr, 16, 0600, err, sizeof err), 0);
    /* Standard descriptors and malformed entries are never taken; a descriptor that
     * is no listening socket fails the bind that names it, with a reason. */
    int notsock = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(notsock > 2);
    snprintf(env, sizeof env, "%d=%s;1=127.0.0.1:1;junk;%d=127.0.0.1:2", old.fd, addr, notsock);
    setenv(UPGRADE_LISTEN_FDS_VAR, env, 1);
    setenv(UPGRADE_FROM_VAR, "4242", 1);
    upgrade_init("perfcgi");
    assert_null(getenv(UPGRADE_LISTEN_FDS_VAR));
    assert_null(getenv(UPGRADE_FROM_VAR));
    assert_int_equal(upgrade_old_master(), 4242);
    assert_int_equal(upgrade_adopt(&adopted, addr, 32, err, sizeof err), 1);
    assert_int_equal(adopted.fd, old.fd);
    assert_true(adopted.shared);
    assert_string_equal(adopted.unix_path, old.unix_path);
    assert_int_equal(upgrade_adopt(&other, "127.0.0.1:9", 32, err, sizeof err), 0);
    assert_int_equal(upgrade_adopt(&other, "127.0.0.1:1", 32, err, sizeof err), 0);
    assert_int_equal(upgrade_adopt(&other, "127.0.0.1:2", 32, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a listening socket"));
    upgrade_close_unused(); /* closes notsock */
    assert_int_equal(fcntl(notsock, F_GETFD), -1);
    listener_close(&adopted);
    struct stat st;
    assert_int_equal(stat(old.unix_path, &st), 0); /* shared: the file stays */
    unlink(old.unix_path);
    rmdir(dir);
    upgrade_init("perfcgi");
    assert_int_equal(upgrade_old_master(), 0);
}

/* A socket of systemd's (socket activation), named with the mark by an old master or
 * added by activation, is adopted as systemd's: its file stays even once the socket is
 * this master's alone (not shared). */
static void a_socket_of_systemd_keeps_its_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/perfcgi-upgrade-XXXXXX", addr[128], addr2[128], err[256], env[256];
    assert_non_null(mkdtemp(dir));
    snprintf(addr, sizeof addr, "unix:%s/app.sock", dir);
    snprintf(addr2, sizeof addr2, "unix:%s/other.sock", dir);
    struct listener made, made2, adopted, adopted2;
    assert_int_equal(listener_open(&made, addr, 16, 0600, err, sizeof err), 0);
    assert_int_equal(listener_open(&made2, addr2, 16, 0600, err, sizeof err), 0);
    snprintf(env, sizeof env, "%d" UPGRADE_ACTIVATED_MARK "=%s", made.fd, addr);
    setenv(UPGRADE_LISTEN_FDS_VAR, env, 1);
    upgrade_init("perfcgi");
    assert_int_equal(upgrade_inherit(made2.fd, addr2, strlen(addr2), 1), 0);
    assert_int_equal(upgrade_adopt(&adopted, addr, 32, err, sizeof err), 1);
    assert_int_equal(upgrade_adopt(&adopted2, addr2, 32, err, sizeof err), 1);
    assert_true(adopted.activated && adopted2.activated);
    adopted.shared = adopted2.shared = 0;
    listener_close(&adopted);
    listener_close(&adopted2);
    struct stat st;
    assert_int_equal(stat(made.unix_path, &st), 0);
    assert_int_equal(stat(made2.unix_path, &st), 0);
    unlink(made.unix_path);
    unlink(made2.unix_path);
    rmdir(dir);
    upgrade_init("perfcgi");
}

/* The pidfile moves to .oldbin and back, as Nginx's. */
static void the_pidfile_moves_to_oldbin_and_back(void **state)
{
    (void)state;
    char dir[] = "/tmp/perfcgi-upgrade-XXXXXX", pidfile[128], oldbin[160], want[160];
    assert_non_null(mkdtemp(dir));
    snprintf(pidfile, sizeof pidfile, "%s/perfcgi.pid", dir);
    snprintf(want, sizeof want, "%s.oldbin", pidfile);
    assert_string_equal(upgrade_oldbin_path(pidfile, oldbin, sizeof oldbin), want);
    assert_null(upgrade_oldbin_path("", oldbin, sizeof oldbin));
    FILE *f = fopen(pidfile, "w");
    assert_non_null(f);
    fprintf(f, "123\n");
    fclose(f);
    assert_int_equal(upgrade_move_pidfile(pidfile), 0);
    assert_int_equal(access(pidfile, F_OK), -1);
    assert_int_equal(access(oldbin, F_OK), 0);
    upgrade_restore_pidfile(pidfile);
    assert_int_equal(access(oldbin, F_OK), -1);
    assert_int_equal(access(pidfile, F_OK), 0);
    unlink(pidfile);
    assert_int_equal(upgrade_move_pidfile(pidfile), 0); /* none: nothing to move */
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_binary_path_is_absolute),
        cmocka_unit_test(a_new_master_adopts_the_inherited_socket_of_its_address),
        cmocka_unit_test(a_socket_of_systemd_keeps_its_file),
        cmocka_unit_test(the_pidfile_moves_to_oldbin_and_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
