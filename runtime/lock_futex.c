/*
 * lock_futex.c — the runtime's internal lock, Go's lock_futex.go.
 *
 * key: 0 unlocked, 1 locked, 2 locked and someone may sleep on the futex.
 * Locks guard short critical sections (a channel's queues, a heap) and are
 * never held across a coroutine switch except by gopark's unlockf protocol,
 * which releases them as soon as the parking G has yielded.
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "rt.h"


static void futex_wait(_Atomic uint32_t *addr, uint32_t val) {
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr, int n) {
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

/* A waiter looks at the key LOCK_SPINS times, LOCK_PAUSES pauses apart
 * (Go's procyield(30); some 750 ns on this machine's EPYC), before it
 * sleeps. Looking often (every pause, as before) kept the line bouncing
 * between the cores: two processors sharing a channel took turns op by op,
 * and a fan-out split over them ran at 110-190 ns a job; backed off, the
 * holder does a run of ops while the line stays in its cache: 70-100. */
#define LOCK_SPINS 16
#define LOCK_PAUSES 30

void rt_lock_slow(rtlock *l) {
  /* Spin: the holder is on another CPU for a few instructions. */
  for (int i = 0; i < LOCK_SPINS; i++) {
    uint32_t unlocked = 0;
    if (atomic_load_explicit(&l->key, memory_order_relaxed) == 0 &&
        atomic_compare_exchange_weak_explicit(&l->key, &unlocked, 1, memory_order_acquire,
                                              memory_order_relaxed))
      return;
    for (int k = 0; k < LOCK_PAUSES; k++) cpu_relax();
  }
  /* Mark contended; whoever unlocks must wake us. */
  while (atomic_exchange_explicit(&l->key, 2, memory_order_acquire) != 0)
    futex_wait(&l->key, 2);
}

void rt_unlock_wake(rtlock *l) { futex_wake(&l->key, 1); }

_Noreturn void rt_throw(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("fatal error: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  fflush(stderr);
  abort();
}
