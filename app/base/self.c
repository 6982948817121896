/* self: this process's own id, read from the kernel once per process. */
#include "base/self.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

/* 0 until read; a forked child starts again from 0 (the atfork handler). */
static _Atomic pid_t self_cached;
static pthread_once_t self_once = PTHREAD_ONCE_INIT;

static void self_forget(void)
{
    atomic_store_explicit(&self_cached, 0, memory_order_relaxed);
}

static void self_watch_forks(void)
{
    pthread_atfork(NULL, NULL, self_forget);
}

pid_t self_pid(void)
{
    pid_t pid = atomic_load_explicit(&self_cached, memory_order_relaxed);
    if (pid) return pid;
    pthread_once(&self_once, self_watch_forks);
    pid = getpid();
    atomic_store_explicit(&self_cached, pid, memory_order_relaxed);
    return pid;
}
