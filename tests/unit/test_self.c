/* Unit tests of self: the process id read once per process, and again after a fork. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/wait.h>
#include <unistd.h>

#include "base/self.h"

static void self_pid_is_getpid(void **state)
{
    (void)state;
    assert_int_equal(self_pid(), getpid());
    assert_int_equal(self_pid(), getpid()); /* the second read is the kept one */
}

/* A worker is forked from a master that may have read its own id already. */
static void a_forked_child_reads_its_own_pid(void **state)
{
    (void)state;
    pid_t parent = self_pid();
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) _exit(self_pid() == getpid() && self_pid() != parent ? 0 : 1);
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(self_pid(), parent);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(self_pid_is_getpid),
        cmocka_unit_test(a_forked_child_reads_its_own_pid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
