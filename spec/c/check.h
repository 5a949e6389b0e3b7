/* check.h — the C unit tests' assertions: count failures, report them, and
 * exit non-zero from main through check_done(). */
#ifndef LUGO_CHECK_H
#define LUGO_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "qsbr.h"
#include "rt.h"

static int check_failures, check_count;

#define CHECK(cond)                                                                  \
  do {                                                                               \
    check_count++;                                                                   \
    if (!(cond)) {                                                                   \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);       \
      check_failures++;                                                              \
    }                                                                                \
  } while (0)

#define CHECK_EQ(a, b)                                                               \
  do {                                                                               \
    long long a_ = (long long)(a), b_ = (long long)(b);                              \
    check_count++;                                                                   \
    if (a_ != b_) {                                                                  \
      fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %lld, %s == %lld\n", __FILE__,  \
              __LINE__, #a, a_, #b, b_);                                             \
      check_failures++;                                                              \
    }                                                                                \
  } while (0)

static int check_done(const char *name) {
  printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
  return check_failures ? 1 : 0;
}

/* A runtime with one P and no VM, enough for the run queues, channels,
 * boxes and timers; this thread holds the P. */
static runtime *test_runtime(void) {
  runtime *rt = rt_calloc(1, sizeof *rt);
  rt->gomaxprocs = 1;
  rt->allp = rt_calloc(1, sizeof *rt->allp);
  p_t *pp = rt_calloc(1, sizeof *pp);
  pp->rt = rt;
  pp->m.p = pp;
  rt->allp[0] = pp;
  rt_tls_m = &pp->m;
  return rt;
}

static void test_runtime_free(runtime *rt) {
  p_t *pp = rt->allp[0];
  qsbr_p_close(pp);
  boxes_destroy(pp);
  rt_free(pp->remote_dirty);
  rt_free(pp->timers);
  while (pp->sudogcache) {
    sudog *sd = pp->sudogcache;
    pp->sudogcache = sd->next;
    rt_free(sd);
  }
  rt_free(pp);
  rt_free(rt->allp);
  rt_free(rt);
  rt_tls_m = NULL;
}

#endif
