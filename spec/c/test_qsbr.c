/* Quiescent-state-based reclamation (runtime/qsbr.c): what a P retires is
 * freed only once every other P has reported a later epoch or sleeps, and
 * everything is freed at the end. Two Ps driven from this one thread. */
#include "check.h"

static int freed[64];

static void count_free(void *p, size_t n) {
  (void)p;
  freed[n]++;
}

/* Switch this thread to P i (what its M would be running). */
static void on(runtime *rt, int i) { rt_tls_m = &rt->allp[i]->m; }

/* P1's M does step, then this thread is P0's again. */
static void as_p1(runtime *rt, void (*step)(p_t *)) {
  on(rt, 1);
  step(rt->allp[1]);
  on(rt, 0);
}

/* P0 retires an entry counted in freed[n], then reports. */
static void retire_and_report(runtime *rt, size_t n) {
  qsbr_retire(count_free, NULL, n);
  qsbr_report(rt->allp[0]);
}

int main(void) {
  runtime *rt = test_runtime();
  /* a second P beside test_runtime's one */
  p_t *p1 = rt_calloc(1, sizeof *p1);
  p1->rt = rt;
  p1->m.p = p1;
  p1->id = 1;
  rt->allp = rt_realloc(rt->allp, 2 * sizeof *rt->allp);
  rt->allp[1] = p1;
  rt->gomaxprocs = 2;
  p_t *p0 = rt->allp[0];

  /* P0 retires; P1 has reported nothing since: nothing is freed */
  on(rt, 0);
  retire_and_report(rt, 1);
  CHECK_EQ(freed[1], 0);
  CHECK(qsbr_waiting(p0));
  /* P0's report moved the epoch on; P1 passes a quiescent state */
  as_p1(rt, qsbr_quiescent);
  CHECK_EQ(atomic_load(&p1->qs), atomic_load(&rt->qsbr_epoch));
  qsbr_report(p0);
  CHECK_EQ(freed[1], 1);
  CHECK(!qsbr_waiting(p0));

  /* a sleeping P holds nothing: P0 frees without waiting for it */
  as_p1(rt, qsbr_idle);
  retire_and_report(rt, 2);
  CHECK_EQ(freed[2], 1);
  /* once awake it counts again */
  as_p1(rt, qsbr_wake);
  retire_and_report(rt, 3);
  CHECK_EQ(freed[3], 0);
  as_p1(rt, qsbr_quiescent);
  qsbr_report(p0);
  CHECK_EQ(freed[3], 1);

  /* a P decoding what a lock-free read found is not quiescent, even if a
   * finalizer's retirements make it report */
  p0->qs_reading = 1;
  for (int i = 0; i < 300; i++) qsbr_retire(count_free, NULL, 4);
  CHECK_EQ(freed[4], 0);
  p0->qs_reading = 0;

  /* many retirements report from inside the retiring call: with P1
   * asleep, they are freed without a scheduler pass */
  as_p1(rt, qsbr_idle);
  for (int i = 0; i < 1000; i++) qsbr_retire(count_free, NULL, 5);
  CHECK(freed[5] >= 1000 - 256);
  CHECK_EQ(freed[4], 300);

  /* off any P and sysmon: at once */
  rt_tls_m = NULL;
  qsbr_retire(count_free, NULL, 6);
  CHECK_EQ(freed[6], 1);

  /* the end frees what is left */
  on(rt, 0);
  qsbr_retire(count_free, NULL, 7);
  qsbr_p_close(p0);
  qsbr_p_close(p1);
  CHECK_EQ(freed[7], 1);
  CHECK_EQ(freed[5], 1000);
  rt_free(p1);
  rt->gomaxprocs = 1;
  test_runtime_free(rt);
  return check_done("test_qsbr");
}
