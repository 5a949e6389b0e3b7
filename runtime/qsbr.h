/*
 * qsbr.h — memory that lock-free readers may still be looking at is freed
 * only once every processor has passed a quiescent state (qsbr.c).
 */
#ifndef LUGO_QSBR_H
#define LUGO_QSBR_H

#include <stddef.h>
#include <stdint.h>

#include "rt.h"

/* Free p with fn(p, n) once no reader can hold it. Off a processor and
 * sysmon (a unit test, the end of the process) there are no readers: now. */
void qsbr_retire(void (*fn)(void *p, size_t n), void *p, size_t n);
/* The calling processor holds no pointer read under a seqlock: report it
 * and free what every processor has passed. */
void qsbr_report(p_t *pp);
/* Before and after the P sleeps: an idle P holds nothing. */
void qsbr_idle(p_t *pp);
void qsbr_wake(p_t *pp);
/* Whether the P sleeps (between qsbr_idle and qsbr_wake): a thread that
 * runs it meanwhile (proc.c's lend_run) wakes it for that time. */
bool qsbr_is_idle(const p_t *pp);
/* Whether the P waits for others to pass before freeing (it then sleeps
 * at most a millisecond, to come back and free). */
bool qsbr_waiting(const p_t *pp);
/* At exit, every VM closed: free all. */
void qsbr_p_close(p_t *pp);
/* sysmon retires too (it sweeps maps' ttls): once attached, its
 * retirements wait, and each tick frees what every P has passed. */
void qsbr_sysmon_attach(runtime *rt);
void qsbr_sysmon_tick(runtime *rt);
void qsbr_sysmon_close(runtime *rt);

/* Called by the scheduler between goroutines: cheap unless the epoch
 * moved, this P retired something, or it waits to free. */
static inline void qsbr_quiescent(p_t *pp) {
  pp->qs_reading = 0; /* a decode that raised (out of memory) left it set: none runs here */
  uint64_t e = atomic_load_explicit(&pp->rt->qsbr_epoch, memory_order_relaxed);
  if (e == pp->qs_seen && !pp->qsl.pending && (!pp->qsl.head || (++pp->qs_ticks & 63))) return;
  qsbr_report(pp);
}

#endif
