/* The run queues: runnext, spawnnext, the 256-slot local ring, overflow to
 * the global queue, and taking batches back from it. */
#include <string.h>

#include "check.h"

#define NG 1000

static g_t gs[NG];

static void init_gs(void) {
  memset(gs, 0, sizeof gs);
  for (int i = 0; i < NG; i++) gs[i].goid = i;
}

static void test_fifo(runtime *rt) {
  p_t *pp = rt->allp[0];
  for (int i = 0; i < 10; i++) runqput(pp, &gs[i], false);
  CHECK_EQ(runqlen(pp), 10);
  bool inherit = true;
  for (int i = 0; i < 10; i++) {
    g_t *gp = runqget(pp, &inherit);
    CHECK(gp == &gs[i]);
    CHECK(!inherit);
  }
  CHECK(runqget(pp, NULL) == NULL);
  CHECK(runqempty(pp));
}

static void test_runnext(runtime *rt) {
  p_t *pp = rt->allp[0];
  runqput(pp, &gs[1], false);
  runqput(pp, &gs[2], true);
  runqput(pp, &gs[3], true); /* kicks 2 to the tail */
  bool inherit = false;
  CHECK(runqget(pp, &inherit) == &gs[3]);
  CHECK(inherit); /* runnext inherits the time slice */
  CHECK(runqget(pp, &inherit) == &gs[1]);
  CHECK(!inherit);
  CHECK(runqget(pp, &inherit) == &gs[2]);
  CHECK(runqempty(pp));
}

static void test_overflow(runtime *rt) {
  p_t *pp = rt->allp[0];
  int n = 600;
  for (int i = 0; i < n; i++) runqput(pp, &gs[i], false);
  CHECK(runqlen(pp) <= RUNQ_SIZE);
  CHECK_EQ(runqlen(pp) + (uint32_t)pp->noverflow, n);
  CHECK(pp->noverflow > 0);
  CHECK_EQ(rt->runqsize, 0); /* bound Gs never spill into the global queue */
  /* Every G comes back exactly once; the ring in FIFO order. (A G that
   * spills moves behind Gs queued after it, as in Go's global queue.) */
  int seen[NG] = {0};
  int got = 0, lastlocal = -1;
  g_t *gp;
  while ((gp = runqget(pp, NULL))) {
    CHECK(gp->goid > lastlocal);
    lastlocal = (int)gp->goid;
    seen[gp->goid]++;
    got++;
  }
  while ((gp = overflowget(pp))) {
    seen[gp->goid]++;
    got++;
  }
  CHECK_EQ(got, n);
  for (int i = 0; i < n; i++) CHECK_EQ(seen[i], 1);
  CHECK_EQ(pp->noverflow, 0);
}

static void test_global_batch(runtime *rt) {
  p_t *pp = rt->allp[0];
  for (int i = 0; i < 10; i++) globrunqput(rt, &gs[i]);
  CHECK_EQ(rt->runqsize, 10);
  g_t *gp = globrunqget(pp, 1);
  CHECK(gp == &gs[0]);
  CHECK_EQ(rt->runqsize, 9);
  gp = globrunqget(pp, 0); /* all nine: one returned, eight queued locally */
  CHECK(gp == &gs[1]);
  CHECK_EQ(rt->runqsize, 0);
  CHECK_EQ(runqlen(pp), 8);
  for (int i = 2; i < 10; i++) CHECK(runqget(pp, NULL) == &gs[i]);
  CHECK(globrunqget(pp, 0) == NULL);
}

/* A thief takes only spawned Gs that no P has started, and tells them from
 * the ring slot alone: it must not read a G, which the victim's P may have
 * run, ended and freed since the slot was read (a use-after-free under
 * ASan: uaf/wg_reuse.lua, uaf/ctx_race.lua). */
static void test_steal(runtime *rt) {
  p_t *victim = rt->allp[0];
  p_t *thief = rt_calloc(1, sizeof *thief);
  thief->rt = rt;
  g_t *spawned[4], *bound = rt_calloc(1, sizeof *bound);
  for (int i = 0; i < 4; i++) {
    spawned[i] = rt_calloc(1, sizeof *spawned[i]); /* p == NULL: not started */
    runqput(victim, spawned[i], false);
  }
  atomic_store(&bound->p, victim);
  runqput(victim, bound, false);
  /* half of five: three, all spawned ones */
  g_t *gp = runqsteal(thief, victim);
  CHECK(gp == spawned[0]);
  CHECK_EQ(runqlen(thief), 2);
  CHECK_EQ(runqlen(victim), 2);
  CHECK(runqget(thief, NULL) == spawned[1]);
  CHECK(runqget(thief, NULL) == spawned[2]);
  /* what is left: a spawned G, then a bound one, which stops the thief */
  CHECK(runqsteal(thief, victim) == spawned[3]);
  CHECK(runqsteal(thief, victim) == NULL);
  /* the bound G ended and was freed while its slot is still in the ring
   * (as the thief may see it): it is left alone, unread */
  rt_free(bound);
  CHECK(runqsteal(thief, victim) == NULL);
  atomic_store(&victim->runqhead, atomic_load(&victim->runqtail));
  for (int i = 0; i < 4; i++) rt_free(spawned[i]);
  rt_free(thief);
}

/* A spawned G waits in its spawner's spawnnext (newproc_spawn): the owner
 * runs it before runnext; a thief takes it only once the hold has passed,
 * and only when the ring has nothing for it. */
static void test_spawnnext(runtime *rt) {
  p_t *victim = rt->allp[0];
  p_t *thief = rt_calloc(1, sizeof *thief);
  thief->rt = rt;
  g_t *spawned = rt_calloc(1, sizeof *spawned); /* p == NULL: not started */
  atomic_store(&victim->spawnnext, spawned);
  runqput(victim, &gs[5], true);
  CHECK_EQ(runqlen(victim), 2);
  bool inherit = true;
  CHECK(runqget(victim, &inherit) == spawned);
  CHECK(!inherit); /* a new G gets a time slice of its own */
  CHECK(runqget(victim, &inherit) == &gs[5]);
  CHECK(runqempty(victim));

  atomic_store(&victim->spawnnext, spawned);
  atomic_store(&victim->spawn_hold, nanotime() + 1000000000LL);
  CHECK(runqsteal(thief, victim) == NULL); /* held for its spawner */
  atomic_store(&victim->spawn_hold, nanotime() - 1);
  CHECK(runqsteal(thief, victim) == spawned);
  CHECK(atomic_load(&victim->spawnnext) == NULL);
  CHECK(runqsteal(thief, victim) == NULL);
  rt_free(spawned);
  rt_free(thief);
}

int main(void) {
  runtime *rt = test_runtime();
  init_gs();
  test_fifo(rt);
  test_runnext(rt);
  test_overflow(rt);
  test_global_batch(rt);
  test_steal(rt);
  test_spawnnext(rt);
  test_runtime_free(rt);
  return check_done("test_runq");
}
