/*
 * qsbr.c — quiescent-state-based reclamation: freeing memory that readers
 * without a lock (sync.map's loads, under a shard's sequence count) may
 * still be looking at.
 *
 * Such a reader never holds a pointer it read that way beyond the C call
 * that read it, so a processor between goroutines (the scheduler), asleep,
 * or between two map calls is quiescent. Memory unlinked from a map is
 * retired instead of freed, and freed once every other processor has
 * passed a quiescent state since:
 *
 *   - rt->qsbr_epoch counts up; a P that waits to free moves it on.
 *   - A P reports the epoch it saw (pp->qs) at its quiescent states: it
 *     loads the epoch, fences, then publishes it (release). A sleeping P
 *     publishes QS_IDLE; on waking it publishes the epoch and fences
 *     before it reads anything.
 *   - What a P retired since its last report is stamped, at the report,
 *     with the epoch read after a fence that follows the unlinking. A
 *     batch stamped s is freed when every other P reports more than s or
 *     is idle: a P that saw a later epoch fenced after seeing it, so it
 *     sees the unlinking (the fences are ordered by the epoch's counter),
 *     and its reads from before its report happened before the free.
 *
 * Only the P's own thread touches its list (pp->qsl), and only sysmon
 * rt->sysmon_qsl (it retires what it sweeps from maps, and is no reader);
 * pp->qs is written by the P and read by the others; the epoch is shared.
 */
#include "qsbr.h"

#define QS_IDLE UINT64_MAX

#ifdef __SANITIZE_THREAD__
_Atomic int rt_fence_word;
#endif
#define BATCH 128
/* A P that retired this many since its last report reports from inside
 * the map call that retires (a goroutine that writes without ever
 * yielding would otherwise hold everything it unlinked). */
#define REPORT_EVERY 256

typedef struct qsbr_entry {
  void (*fn)(void *p, size_t n);
  void *p;
  size_t n;
} qsbr_entry;

struct qsbr_batch {
  struct qsbr_batch *next;
  uint64_t stamp;
  uint32_t len;
  qsbr_entry e[BATCH];
};

static void run_batch(struct qsbr_batch *b) {
  for (uint32_t i = 0; i < b->len; i++) b->e[i].fn(b->e[i].p, b->e[i].n);
  rt_free(b);
}

static _Thread_local runtime *sysmon_rt; /* set on sysmon's thread */

static void list_add(qsbr_list *l, void (*fn)(void *p, size_t n), void *p, size_t n) {
  struct qsbr_batch *b = l->pending;
  if (!b || b->len == BATCH) {
    b = rt_malloc(sizeof *b);
    b->len = 0;
    b->next = l->pending;
    l->pending = b;
  }
  b->e[b->len++] = (qsbr_entry){fn, p, n};
  l->nretired++;
}

void qsbr_retire(void (*fn)(void *p, size_t n), void *p, size_t n) {
  p_t *pp = getp();
  if (pp) {
    list_add(&pp->qsl, fn, p, n);
    if (pp->qsl.nretired >= REPORT_EVERY && !pp->qsl.freeing) qsbr_report(pp);
  } else if (sysmon_rt) {
    list_add(&sysmon_rt->sysmon_qsl, fn, p, n);
  } else {
    fn(p, n);
  }
}

/* The smallest epoch a P other than self has reported, not counting idle
 * ones. */
static uint64_t others_min(runtime *rt, p_t *self) {
  uint64_t min = QS_IDLE;
  for (int32_t i = 0; i < rt->gomaxprocs; i++) {
    p_t *q = rt->allp[i];
    if (q == self) continue;
    uint64_t v = atomic_load(&q->qs);
    if (v < min) min = v;
  }
  return min;
}

/* After a fence that follows the unlinking: stamp what l retired, free
 * what the others have passed, and move the epoch on if l still waits. */
static void list_reclaim(runtime *rt, qsbr_list *l, p_t *self) {
  if (l->pending) {
    uint64_t stamp = atomic_load_explicit(&rt->qsbr_epoch, memory_order_relaxed);
    /* newest first in pending: reverse onto the tail of the FIFO */
    struct qsbr_batch *rev = NULL;
    for (struct qsbr_batch *b = l->pending, *next; b; b = next) {
      next = b->next;
      b->next = rev;
      rev = b;
    }
    for (struct qsbr_batch *b = rev; b; b = b->next) b->stamp = stamp;
    if (l->tail) l->tail->next = rev;
    else l->head = rev;
    while (rev->next) rev = rev->next;
    l->tail = rev;
    l->pending = NULL;
    l->nretired = 0;
  }
  if (!l->head || l->freeing) return;
  uint64_t min = others_min(rt, self);
  /* a free may retire more (a box holding a map): into pending, for the
   * next report */
  l->freeing = true;
  while (l->head && l->head->stamp < min) {
    struct qsbr_batch *b = l->head;
    l->head = b->next;
    run_batch(b);
  }
  l->freeing = false;
  if (!l->head) {
    l->tail = NULL;
    return;
  }
  /* the others must see a later epoch than the oldest stamp: move it on
   * if nobody has (once per epoch, whoever waits) */
  uint64_t oldest = l->head->stamp;
  atomic_compare_exchange_strong(&rt->qsbr_epoch, &oldest, oldest + 1);
}

void qsbr_report(p_t *pp) {
  runtime *rt = pp->rt;
  if (pp->qs_reading) return; /* a finalizer run by a decode's allocation */
  uint64_t seen = atomic_load_explicit(&rt->qsbr_epoch, memory_order_relaxed);
  rt_fence(memory_order_seq_cst);
  if (seen != pp->qs_seen) {
    atomic_store_explicit(&pp->qs, seen, memory_order_release);
    pp->qs_seen = seen;
  }
  list_reclaim(rt, &pp->qsl, pp);
}

void qsbr_idle(p_t *pp) {
  qsbr_report(pp);
  atomic_store_explicit(&pp->qs, QS_IDLE, memory_order_release);
}

void qsbr_wake(p_t *pp) {
  uint64_t e = atomic_load(&pp->rt->qsbr_epoch);
  atomic_store(&pp->qs, e);
  rt_fence(memory_order_seq_cst);
  pp->qs_seen = e;
  if (pp->qsl.head || pp->qsl.pending) qsbr_report(pp);
}

bool qsbr_waiting(const p_t *pp) { return pp->qsl.head != NULL; }

bool qsbr_is_idle(const p_t *pp) { return atomic_load_explicit(&pp->qs, memory_order_relaxed) == QS_IDLE; }

static void run_list(struct qsbr_batch *b) {
  while (b) {
    struct qsbr_batch *next = b->next;
    run_batch(b);
    b = next;
  }
}

static void list_close(qsbr_list *l) {
  l->freeing = true;
  while (l->pending || l->head) { /* a free may retire more */
    struct qsbr_batch *pending = l->pending, *head = l->head;
    l->pending = l->head = l->tail = NULL;
    l->nretired = 0;
    run_list(head);
    run_list(pending);
  }
  l->freeing = false;
}

void qsbr_p_close(p_t *pp) { list_close(&pp->qsl); }

void qsbr_sysmon_attach(runtime *rt) { sysmon_rt = rt; }

void qsbr_sysmon_tick(runtime *rt) {
  qsbr_list *l = &rt->sysmon_qsl;
  if (!l->pending && !l->head) return;
  rt_fence(memory_order_seq_cst);
  list_reclaim(rt, l, NULL);
}

/* sysmon has stopped: its leftovers are freed with the Ps' at exit. */
void qsbr_sysmon_close(runtime *rt) { list_close(&rt->sysmon_qsl); }
