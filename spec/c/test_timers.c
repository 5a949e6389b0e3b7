/* The timer heap: earliest first, equal deadlines first-in first-out,
 * removal from anywhere, and timers_run firing due timers in order. */
#include <string.h>

#include "check.h"

#define NT 500

static rt_timer ts[NT];
static int fired[NT], nfired;

static void record(p_t *pp, rt_timer *t, int64_t now) {
  (void)pp, (void)now;
  fired[nfired++] = (int)(t - ts);
}

static uint64_t rng = 88172645463325252ULL;
static uint64_t next_rand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static void check_heap(p_t *pp) {
  for (int32_t i = 0; i < pp->ntimers; i++) {
    CHECK_EQ(pp->timers[i]->idx, i);
    if (i > 0) {
      rt_timer *parent = pp->timers[(i - 1) / 4], *t = pp->timers[i];
      CHECK(parent->when < t->when || (parent->when == t->when && parent->seq < t->seq));
    }
  }
}

static void test_order(runtime *rt) {
  p_t *pp = rt->allp[0];
  memset(ts, 0, sizeof ts);
  for (int i = 0; i < NT; i++) {
    ts[i].idx = -1;
    ts[i].f = record;
    ts[i].when = (int64_t)(next_rand() % 50) + 1; /* many equal deadlines */
    timerheap_push(pp, &ts[i]);
  }
  check_heap(pp);
  CHECK_EQ(atomic_load(&pp->timer0when), pp->timers[0]->when);
  int64_t lastwhen = 0;
  uint64_t lastseq = 0;
  for (int i = 0; i < NT; i++) {
    rt_timer *t = pp->timers[0];
    CHECK(t->when > lastwhen || (t->when == lastwhen && t->seq > lastseq));
    lastwhen = t->when;
    lastseq = t->seq;
    timerheap_remove(pp, 0);
    CHECK_EQ(t->idx, -1);
  }
  CHECK_EQ(pp->ntimers, 0);
  CHECK_EQ(atomic_load(&pp->timer0when), 0);
}

static void test_remove_middle(runtime *rt) {
  p_t *pp = rt->allp[0];
  for (int i = 0; i < 100; i++) {
    ts[i].idx = -1;
    ts[i].when = (int64_t)(next_rand() % 1000) + 1;
    timerheap_push(pp, &ts[i]);
  }
  for (int i = 0; i < 100; i += 3) {
    timerheap_remove(pp, ts[i].idx);
    check_heap(pp);
  }
  while (pp->ntimers) timerheap_remove(pp, pp->ntimers - 1);
}

static void test_run(runtime *rt) {
  p_t *pp = rt->allp[0];
  nfired = 0;
  /* Deadlines 10, 20, 30, 30, 40 armed out of order; run up to 30. */
  int64_t whens[] = {30, 10, 40, 30, 20};
  for (int i = 0; i < 5; i++) {
    ts[i].idx = -1;
    ts[i].f = record;
    ts[i].period = 0;
    timer_add(pp, &ts[i], whens[i]);
  }
  CHECK_EQ(timers_run(pp, 30), 40);
  CHECK_EQ(nfired, 4);
  int want[] = {1, 4, 0, 3};
  for (int i = 0; i < 4; i++) CHECK_EQ(fired[i], want[i]);
  CHECK(timer_del(&ts[2])); /* still armed */
  CHECK(!timer_del(&ts[2])); /* not any more */
  CHECK(!timer_del(&ts[0])); /* fired */
  CHECK_EQ(timers_run(pp, 1000), 0);
  CHECK_EQ(nfired, 4);
}

static void test_ticker(runtime *rt) {
  p_t *pp = rt->allp[0];
  nfired = 0;
  ts[0].idx = -1;
  ts[0].f = record;
  ts[0].period = 10;
  timer_add(pp, &ts[0], 10);
  CHECK_EQ(timers_run(pp, 10), 20); /* fires, re-armed one period later */
  CHECK_EQ(timers_run(pp, 55), 60); /* late: missed ticks are skipped */
  CHECK_EQ(nfired, 2);
  CHECK(timer_del(&ts[0]));
}

/* A weak slot fires with a reference taken for the call, and is skipped
 * once its object's count is 0 (its free path is waiting to delete it). */
static rt_object objs[2];
static int32_t refs_seen;

static void record_refs(p_t *pp, rt_timer *t, int64_t now) {
  record(pp, t, now);
  refs_seen = atomic_load(&t->ref->refs);
}

static void test_weak(runtime *rt) {
  p_t *pp = rt->allp[0];
  nfired = 0;
  for (int i = 0; i < 2; i++) {
    atomic_init(&objs[i].refs, 1 - i); /* objs[1] is being freed */
    objs[i].type = RT_CHAN;
    ts[i].idx = -1;
    ts[i].period = 0;
    ts[i].f = record_refs;
    ts[i].weak = true;
    ts[i].ref = &objs[i];
    timer_add(pp, &ts[i], 10 + i);
  }
  CHECK_EQ(timers_run(pp, 100), 0);
  CHECK_EQ(nfired, 1);
  CHECK_EQ(fired[0], 0);
  CHECK_EQ(refs_seen, 2);                    /* held during the call */
  CHECK_EQ(atomic_load(&objs[0].refs), 1);   /* and given back */
  CHECK_EQ(atomic_load(&objs[1].refs), 0);   /* never resurrected */
  CHECK_EQ(ts[1].idx, -1);
  CHECK(!timer_del(&ts[1]));
  for (int i = 0; i < 2; i++) ts[i].weak = false, ts[i].ref = NULL;
}

/* timer_arm moves an armed timer within its heap, or pushes it. */
static void test_arm(runtime *rt) {
  p_t *pp = rt->allp[0];
  for (int i = 0; i < 10; i++) {
    ts[i].idx = -1;
    ts[i].p = NULL;
    ts[i].f = record;
    timer_add(pp, &ts[i], 100 + i * 10);
  }
  timer_arm(pp, &ts[9], 5); /* earlier than all */
  check_heap(pp);
  CHECK_EQ(pp->timers[0], &ts[9]);
  CHECK_EQ(atomic_load(&pp->timer0when), 5);
  timer_arm(pp, &ts[9], 1000); /* later than all */
  check_heap(pp);
  CHECK_EQ(pp->timers[0], &ts[0]);
  CHECK_EQ(pp->ntimers, 10);
  CHECK(timer_del(&ts[9]));
  timer_arm(pp, &ts[9], 1); /* not armed: pushed */
  CHECK_EQ(pp->ntimers, 10);
  CHECK_EQ(pp->timers[0], &ts[9]);
  while (pp->ntimers) timerheap_remove(pp, 0);
}

/* A burst of timers does not leave its array behind. */
static void test_shrink(runtime *rt) {
  p_t *pp = rt->allp[0];
  for (int i = 0; i < NT; i++) {
    ts[i].idx = -1;
    timerheap_push(pp, &ts[i]);
  }
  CHECK(pp->timerscap >= NT);
  while (pp->ntimers) timerheap_remove(pp, pp->ntimers - 1);
  CHECK(pp->timerscap <= 64);
}

int main(void) {
  runtime *rt = test_runtime();
  test_order(rt);
  test_remove_middle(rt);
  test_run(rt);
  test_ticker(rt);
  test_weak(rt);
  test_arm(rt);
  test_shrink(rt);
  test_runtime_free(rt);
  return check_done("test_timers");
}
