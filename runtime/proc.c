/*
 * proc.c — goroutines (G), processors (P), threads (M) and the scheduler,
 * after Go's proc.go.
 *
 * Invariants:
 *   - A G's status changes only through casgstatus, which throws on a
 *     transition it does not expect. RUNNABLE Gs are in exactly one queue
 *     (spawnnext, runnext, the local ring, the overflow list, the inbox or
 *     the global queue); a WAITING G is in none and something (a sudog, a
 *     timer, a semaphore) will ready it.
 *   - Only the thread holding a P resumes that P's Gs, touches its VM, its
 *     boxes, its caches and its G list. runq: the owner writes the tail and
 *     runnext (plain stores: runnext is never stolen, others only peek);
 *     anyone may advance the head with CAS (stealing). spawnnext (a spawned
 *     G not started) is set by the owner with an exchange, and taken by the
 *     owner with an exchange or by a thief with a CAS once spawn_hold passed.
 *   - A P's thread holds it, except between two looks of its idle wait and,
 *     in busy mode, while it sleeps in its epoll set (hold == HOLD_IDLE),
 *     when another idle M may take it (HOLD_LENT) to run one of its Gs on
 *     its own thread (lend_run), with getp() switched to it, never polling
 *     it (the wake-up is the sleeper's); the owner takes it back before it
 *     touches anything. A sleeping P whose Gs another M has run (carried)
 *     has its wake-ups deferred to the Ms that run (defer_wake). Signals
 *     for the P's running G go to whichever thread runs it. An idle M that
 *     shares its CPU with the runner of a busy P yields that CPU rather
 *     than spin (cpu_shared), its P left stale so that the other may lend
 *     it at once.
 *   - The inbox is guarded by inbox_lock; the global queue by sched_lock.
 *   - A G parks by setting g->parking (gopark) and yielding PARK from its
 *     coroutine. The scheduler makes it WAITING only after the yield, then
 *     runs unlockf: whoever readies it (goready) finds it fully parked, its
 *     Lua stack at rest, as in Go's park_m.
 *   - A G is bound to a pooled coroutine when it first runs; until then its
 *     body sits in a box. When it returns, the coroutine goes back to the pool.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "qsbr.h"
#include "rt.h"

_Thread_local m_t *rt_tls_m;
_Thread_local p_t *rt_tls_lender;

/* Unique addresses: what a G's coroutine yields to tell the scheduler why. */
const char rt_mark_park = 'P', rt_mark_exit = 'E', rt_mark_topyield = 'T', rt_mark_err = 'X';

#define GFREE_MAX 1024
#define COPOOL_MAX 4096

static const char *gstatus_names[] = {"idle", "runnable", "running", "waiting", "dead"};

const char *rt_waitreason_string(enum waitreason r) {
  switch (r) {
  case WR_NONE: return "";
  case WR_CHAN_RECEIVE: return "chan receive";
  case WR_CHAN_SEND: return "chan send";
  case WR_SELECT: return "select";
  case WR_SELECT_NO_CASES: return "select (no cases)";
  case WR_SLEEP: return "sleep";
  case WR_SYNC_MUTEX_LOCK: return "sync.Mutex.Lock";
  case WR_SYNC_RWMUTEX_RLOCK: return "sync.RWMutex.RLock";
  case WR_SYNC_RWMUTEX_LOCK: return "sync.RWMutex.Lock";
  case WR_SYNC_WAITGROUP_WAIT: return "sync.WaitGroup.Wait";
  case WR_SYNC_COND_WAIT: return "sync.Cond.Wait";
  case WR_SYSCALL: return "syscall";
  case WR_IO_WAIT: return "IO wait";
  case WR_FOREVER: return "wait forever";
  }
  return "?";
}

/* Every transition has a single owner at a time (the G's P, or the one
 * waker that dequeued its sudog or won its selectdone), so a checked store
 * does what Go's CAS does, without a locked instruction. */
void casgstatus(g_t *gp, enum gstatus from, enum gstatus to) {
  uint32_t was = atomic_load_explicit(&gp->status, memory_order_acquire);
  if (was != from)
    rt_throw("casgstatus: goroutine %lld is %s, not %s, on the way to %s", (long long)gp->goid,
             gstatus_names[was], gstatus_names[from], gstatus_names[to]);
  atomic_store_explicit(&gp->status, to, memory_order_release);
}

int64_t nanotime(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

double walltime(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* wyrand: fast, good enough for select's poll order. */
uint32_t fastrand(p_t *pp) {
  pp->rand += 0xa0761d6478bd642fULL;
  __uint128_t r = (__uint128_t)pp->rand * (pp->rand ^ 0xe7037ed1a0b428dbULL);
  return (uint32_t)((uint64_t)(r >> 64) ^ (uint64_t)r);
}

/* ------------------------------------------------------------------ */
/* Run queues                                                          */

/* Append the n Gs linked from head to tail to the global queue. */
static void globrunqputbatch(runtime *rt, g_t *head, g_t *tail, int32_t n) {
  rt_lock(&rt->sched_lock);
  tail->schedlink = NULL;
  if (rt->runq_tail) rt->runq_tail->schedlink = head;
  else rt->runq_head = head;
  rt->runq_tail = tail;
  rt->runqsize += n;
  rt_unlock(&rt->sched_lock);
}

void globrunqput(runtime *rt, g_t *gp) { globrunqputbatch(rt, gp, gp, 1); }

void overflowput(p_t *pp, g_t *gp) {
  gp->schedlink = NULL;
  if (pp->overflow_tail) pp->overflow_tail->schedlink = gp;
  else pp->overflow_head = gp;
  pp->overflow_tail = gp;
  owned_add(&pp->noverflow, 1); /* a locked add here was most of a spawn's time in the list */
}

g_t *overflowget(p_t *pp) {
  g_t *gp = pp->overflow_head;
  if (!gp) return NULL;
  pp->overflow_head = gp->schedlink;
  if (!pp->overflow_head) pp->overflow_tail = NULL;
  owned_add(&pp->noverflow, -1);
  return gp;
}

/* A ring slot holds a G's address with bit 0 set when the G is a spawned
 * one that no P has started: the only kind a thief may take. Thieves read
 * the bit without touching the G, which another P may have run, ended and
 * freed meanwhile (their CAS on the head then fails). */
#define RUNQ_STEALABLE ((uintptr_t)1)

static inline g_t *runq_slot(g_t *gp) {
  return atomic_load_explicit(&gp->p, memory_order_relaxed) ? gp : (g_t *)((uintptr_t)gp | RUNQ_STEALABLE);
}
static inline g_t *slot_g(g_t *slot) { return (g_t *)((uintptr_t)slot & ~RUNQ_STEALABLE); }
static inline bool slot_stealable(g_t *slot) { return ((uintptr_t)slot & RUNQ_STEALABLE) != 0; }

/* Move half of the full local ring, plus gp, to the overflow list. */
static bool runqputslow(p_t *pp, g_t *gp, uint32_t h, uint32_t t) {
  g_t *batch[RUNQ_SIZE / 2];
  uint32_t n = (t - h) / 2;
  for (uint32_t i = 0; i < n; i++)
    batch[i] = slot_g(atomic_load_explicit(&pp->runq[(h + i) % RUNQ_SIZE], memory_order_relaxed));
  if (!atomic_compare_exchange_strong_explicit(&pp->runqhead, &h, h + n, memory_order_release,
                                               memory_order_relaxed))
    return false;
  for (uint32_t i = 0; i < n; i++) overflowput(pp, batch[i]);
  overflowput(pp, gp);
  return true;
}

void runqput(p_t *pp, g_t *gp, bool next) {
  if (next) {
    /* runnext is the owner's alone (a started G never moves, so nobody
     * steals it; others only peek): plain stores, no locked instruction */
    g_t *old = atomic_load_explicit(&pp->runnext, memory_order_relaxed);
    atomic_store_explicit(&pp->runnext, gp, memory_order_release);
    if (!old) return;
    gp = old; /* kick the old runnext to the tail */
  }
  for (;;) {
    uint32_t h = atomic_load_explicit(&pp->runqhead, memory_order_acquire);
    uint32_t t = atomic_load_explicit(&pp->runqtail, memory_order_relaxed);
    if (t - h < RUNQ_SIZE) {
      atomic_store_explicit(&pp->runq[t % RUNQ_SIZE], runq_slot(gp), memory_order_relaxed);
      atomic_store_explicit(&pp->runqtail, t + 1, memory_order_release);
      return;
    }
    if (runqputslow(pp, gp, h, t)) return;
  }
}

g_t *runqget(p_t *pp, bool *inherit_time) {
  /* A spawned G first, as Go's newproc puts it in runnext: its spawner
   * has just blocked. Thieves may race us for it, hence the exchange. */
  if (atomic_load_explicit(&pp->spawnnext, memory_order_relaxed)) {
    g_t *gp = atomic_exchange_explicit(&pp->spawnnext, NULL, memory_order_acquire);
    if (gp) {
      if (inherit_time) *inherit_time = false;
      return gp;
    }
  }
  g_t *next = atomic_load_explicit(&pp->runnext, memory_order_relaxed);
  if (next) {
    atomic_store_explicit(&pp->runnext, NULL, memory_order_relaxed);
    if (inherit_time) *inherit_time = true;
    return next;
  }
  for (;;) {
    uint32_t h = atomic_load_explicit(&pp->runqhead, memory_order_acquire);
    uint32_t t = atomic_load_explicit(&pp->runqtail, memory_order_relaxed);
    if (t == h) return NULL;
    g_t *slot = atomic_load_explicit(&pp->runq[h % RUNQ_SIZE], memory_order_relaxed);
    if (atomic_compare_exchange_strong_explicit(&pp->runqhead, &h, h + 1, memory_order_release,
                                                memory_order_relaxed)) {
      if (inherit_time) *inherit_time = false;
      return slot_g(slot);
    }
  }
}

uint32_t runqlen(p_t *pp) {
  uint32_t h = atomic_load_explicit(&pp->runqhead, memory_order_acquire);
  uint32_t t = atomic_load_explicit(&pp->runqtail, memory_order_acquire);
  return t - h + (atomic_load_explicit(&pp->runnext, memory_order_acquire) ? 1 : 0) +
         (atomic_load_explicit(&pp->spawnnext, memory_order_acquire) ? 1 : 0);
}

bool runqempty(p_t *pp) { return runqlen(pp) == 0; }

/* Take a batch from the global queue: return one, put the rest locally. */
g_t *globrunqget(p_t *pp, int32_t max) {
  runtime *rt = pp->rt;
  rt_lock(&rt->sched_lock);
  if (rt->runqsize == 0) {
    rt_unlock(&rt->sched_lock);
    return NULL;
  }
  int32_t n = rt->runqsize / rt->gomaxprocs + 1;
  if (n > rt->runqsize) n = rt->runqsize;
  if (max > 0 && n > max) n = max;
  if (n > RUNQ_SIZE / 2) n = RUNQ_SIZE / 2;
  rt->runqsize -= n;
  g_t *gp = rt->runq_head;
  rt->runq_head = gp->schedlink;
  for (int32_t i = 1; i < n; i++) {
    g_t *g1 = rt->runq_head;
    rt->runq_head = g1->schedlink;
    runqput(pp, g1, false);
  }
  if (!rt->runq_head) rt->runq_tail = NULL;
  rt_unlock(&rt->sched_lock);
  return gp;
}

/* Wake the M of an idle P (from any thread; netpoll_break coalesces). */
static void p_wake(p_t *pp) { netpoll_break(pp); }

/* Gs waiting to run on pp, as seen from another thread: its queues, its
 * inbox, its overflow list (where a preempted G goes). */
static bool p_has_work(p_t *pp) {
  return atomic_load_explicit(&pp->inbox_pending, memory_order_relaxed) || !runqempty(pp) ||
         atomic_load_explicit(&pp->noverflow, memory_order_relaxed) > 0;
}

/* A P whose M sleeps while another M carries it (busy mode: lend_run ran
 * one of its Gs since it fell asleep): a G readied there is left to that
 * M, which runs it as soon as it is idle, instead of waking the sleeper
 * for every hand-off.
 * With a CPU hog per core, one M then carries both sides of a hand-off
 * while the other sleeps, as Go's one M carries both goroutines of its
 * same-P ping-pong, instead of two runnable Ms each getting half a CPU.
 * The wake-up is only deferred: the readier's M, before it sleeps, and
 * any M at its next schedule or sysmon, once it has waited a whole sysmon
 * tick (2-4 ms; ticks, not a clock, cost nothing to read), wake a sleeper
 * whose Gs still wait (deferred_wakes). */
static bool busy_mode(runtime *rt);

static bool wake_deferrable(p_t *pp) {
  p_t *self = getp();
  /* (Not a P being woken as a spinning M, P_WAKING: it is counted. Not
   * out of busy mode, even for a P that fell asleep lendable just as it
   * ended: there its M runs its Gs.) */
  return self && self != pp && busy_mode(pp->rt) && atomic_load_explicit(&pp->carried, memory_order_relaxed) &&
         atomic_load_explicit(&pp->hold, memory_order_relaxed) == HOLD_IDLE &&
         atomic_load_explicit(&pp->status, memory_order_relaxed) == P_IDLE;
}

static void defer_wake(p_t *pp) {
  if (atomic_load_explicit(&pp->wake_deferred, memory_order_relaxed)) return;
  atomic_store_explicit(&pp->deferred_tick, atomic_load_explicit(&pp->rt->sysmon_tick, memory_order_relaxed),
                        memory_order_relaxed);
  if (!atomic_exchange(&pp->wake_deferred, true)) atomic_fetch_add(&pp->rt->ndeferred, 1);
}

/* Take back pp's deferred wake-up: true if there was one. */
static bool undefer_wake(p_t *pp) {
  if (!atomic_load_explicit(&pp->wake_deferred, memory_order_relaxed) || !atomic_exchange(&pp->wake_deferred, false))
    return false;
  atomic_fetch_sub(&pp->rt->ndeferred, 1);
  return true;
}

/* Wake the sleepers whose deferred Gs still wait: all of them (an M about
 * to sleep itself), or those deferred a whole sysmon tick ago. */
static void deferred_wakes(runtime *rt, bool all) {
  if (!atomic_load_explicit(&rt->ndeferred, memory_order_relaxed)) return;
  for (int32_t i = 0; i < rt->gomaxprocs; i++) {
    p_t *q = rt->allp[i];
    if (!atomic_load_explicit(&q->wake_deferred, memory_order_relaxed)) continue;
    bool work = p_has_work(q);
    if (work && !all &&
        atomic_load_explicit(&rt->sysmon_tick, memory_order_relaxed) -
                atomic_load_explicit(&q->deferred_tick, memory_order_relaxed) < 2)
      continue;
    if (undefer_wake(q) && work) p_wake(q);
  }
}

/* Inbox: Gs readied by other threads, resumed only by the owner. The
 * putter publishes inbox_pending, then reads the owner's status; the owner
 * publishes P_IDLE, then reads inbox_pending (both sequentially
 * consistent): one of them sees the other, so no put is slept through. */
static void inbox_put(p_t *pp, g_t *gp) {
  rt_lock(&pp->inbox_lock);
  gp->schedlink = NULL;
  if (pp->inbox_tail) pp->inbox_tail->schedlink = gp;
  else pp->inbox_head = gp;
  pp->inbox_tail = gp;
  rt_unlock(&pp->inbox_lock);
  atomic_store(&pp->inbox_pending, true);
  if (atomic_load(&pp->status) != P_RUNNING) {
    if (wake_deferrable(pp)) defer_wake(pp);
    else p_wake(pp);
  }
}

static g_t *inbox_get(p_t *pp) {
  if (!atomic_load_explicit(&pp->inbox_pending, memory_order_acquire)) return NULL;
  rt_lock(&pp->inbox_lock);
  atomic_store(&pp->inbox_pending, false);
  g_t *list = pp->inbox_head;
  pp->inbox_head = pp->inbox_tail = NULL;
  rt_unlock(&pp->inbox_lock);
  if (!list) return NULL;
  g_t *first = list;
  for (g_t *gp = list->schedlink; gp;) {
    g_t *next = gp->schedlink;
    runqput(pp, gp, false);
    gp = next;
  }
  return first;
}

/* victim's spawned G in spawnnext, once its spawner had SPAWN_HOLD_NS to
 * block and run it itself. */
static g_t *runqsteal_spawnnext(p_t *victim) {
  g_t *sg = atomic_load_explicit(&victim->spawnnext, memory_order_relaxed);
  if (!sg || atomic_load_explicit(&victim->spawn_hold, memory_order_relaxed) > nanotime()) return NULL;
  if (!atomic_compare_exchange_strong_explicit(&victim->spawnnext, &sg, NULL, memory_order_acquire,
                                               memory_order_relaxed))
    return NULL;
  return sg;
}

/* Take up to half of victim's queue, from its head, as long as the Gs
 * there are spawned ones not started yet: those are the only ones another
 * VM can run. Returns one and queues the rest on pp. With none there, its
 * spawnnext once the hold has passed. */
g_t *runqsteal(p_t *pp, p_t *victim) {
  for (;;) {
    uint32_t h = atomic_load_explicit(&victim->runqhead, memory_order_acquire);
    uint32_t t = atomic_load_explicit(&victim->runqtail, memory_order_acquire);
    uint32_t n = t - h;
    n -= n / 2;
    if (n == 0 || n > RUNQ_SIZE / 2) return runqsteal_spawnnext(victim); /* empty, or a torn read */
    g_t *batch[RUNQ_SIZE / 2];
    uint32_t m = 0;
    for (; m < n; m++) {
      g_t *slot = atomic_load_explicit(&victim->runq[(h + m) % RUNQ_SIZE], memory_order_relaxed);
      if (!slot_stealable(slot)) break;
      batch[m] = slot_g(slot);
    }
    if (m == 0) return runqsteal_spawnnext(victim);
    if (atomic_compare_exchange_strong_explicit(&victim->runqhead, &h, h + m, memory_order_acq_rel,
                                                memory_order_relaxed)) {
      for (uint32_t i = 1; i < m; i++) runqput(pp, batch[i], false);
      return batch[0];
    }
  }
}

void wakep(runtime *rt) {
  if (atomic_load(&rt->npidle) == 0) return;
  int32_t zero = 0;
  if (!atomic_compare_exchange_strong(&rt->nmspinning, &zero, 1)) return; /* someone looks already */
  for (int32_t i = 0; i < rt->gomaxprocs; i++) {
    p_t *pp = rt->allp[i];
    uint32_t idle = P_IDLE;
    if (atomic_compare_exchange_strong(&pp->status, &idle, P_WAKING)) {
      p_wake(pp); /* it wakes as the spinning M we counted */
      return;
    }
  }
  atomic_fetch_sub(&rt->nmspinning, 1);
}

/* ------------------------------------------------------------------ */
/* Caches: Gs, sudogs, coroutines (boxes: value.c)                     */

sudog *acquire_sudog(p_t *pp, g_t *gp) {
  sudog *sd = pp->sudogcache;
  if (sd) pp->sudogcache = sd->next;
  else sd = rt_malloc(sizeof *sd);
  memset(sd, 0, sizeof *sd);
  sd->g = gp;
  return sd;
}

void release_sudog(p_t *pp, sudog *sd) {
  sd->next = pp->sudogcache;
  pp->sudogcache = sd;
}

static g_t *gfget(p_t *pp) {
  g_t *gp = pp->gfree;
  if (gp) {
    pp->gfree = gp->schedlink;
    pp->ngfree--;
  } else {
    gp = rt_calloc(1, sizeof *gp);
    atomic_init(&gp->status, G_IDLE);
  }
  return gp;
}

static void gfput(p_t *pp, g_t *gp) {
  if (pp->ngfree >= GFREE_MAX) {
    rt_free(gp);
    return;
  }
  gp->schedlink = pp->gfree;
  pp->gfree = gp;
  pp->ngfree++;
}

static g_live *live_get(p_t *pp, g_t *gp, lua_State *co) {
  g_live *l = pp->livefree;
  if (l) pp->livefree = l->next;
  else l = rt_malloc(sizeof *l);
  memset(l, 0, sizeof *l);
  l->g = gp;
  l->co = co;
  return l;
}

static void live_put(p_t *pp, g_live *l) {
  l->next = pp->livefree;
  pp->livefree = l;
}

static void allg_add(p_t *pp, g_t *gp) {
  gp->allprev = NULL;
  gp->allnext = pp->allg;
  if (pp->allg) pp->allg->allprev = gp;
  pp->allg = gp;
  pp->nallg++;
}

static void allg_remove(p_t *pp, g_t *gp) {
  if (gp->allprev) gp->allprev->allnext = gp->allnext;
  else pp->allg = gp->allnext;
  if (gp->allnext) gp->allnext->allprev = gp->allprev;
  gp->allnext = gp->allprev = NULL;
  pp->nallg--;
}

/* A coroutine parked in the trampoline, ready for a new body; a fresh one
 * holds just the trampoline. */
/* The scheduler's own Lua work that allocates, run protected: an
 * allocation may run finalizers, and one that raises outside any goroutine
 * must be reported (as newer LuaJITs do), not end the process as an
 * unprotected error. fn runs on pp->L with ud, leaving nres results.
 * Not 0 (lua_pcall's status) if it raised: the error was reported, nothing
 * is left. Out of memory is fatal, as Go's is. */
static int protected_body(lua_State *L) {
  void (*fn)(lua_State *, void *) = (void (*)(lua_State *, void *))(uintptr_t)lua_touserdata(L, 1);
  void *ud = lua_touserdata(L, 2);
  lua_settop(L, 0);
  fn(L, ud);
  return lua_gettop(L);
}

/* The handler of sched_protected: the error and where it was raised. */
static int finalizer_traceback(lua_State *L) {
  tbuf b;
  tb_init(&b);
  const char *msg = lua_tostring(L, 1);
  tb_printf(&b, "lugo: error in a finalizer (__gc) run by the scheduler: %s\nstack traceback:\n",
            msg ? msg : "(error object is not a string)");
  tb_frames(&b, L, 1);
  lua_pushlstring(L, b.p, b.len);
  tb_free(&b);
  return 1;
}

static int sched_protected(p_t *pp, void (*fn)(lua_State *, void *), void *ud, int nres) {
  lua_State *L = pp->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, pp->errfn_ref);
  int handler = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, pp->protect_ref);
  lua_pushlightuserdata(L, (void *)(uintptr_t)fn);
  lua_pushlightuserdata(L, ud);
  int status = lua_pcall(L, 2, nres, handler);
  if (status == LUA_ERRMEM) rt_throw("runtime: out of memory in processor %d's VM", (int)pp->id);
  if (status != 0) {
    fflush(stdout);
    rt_lock(&rt_print_lock);
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    fflush(stderr);
    rt_unlock(&rt_print_lock);
    lua_settop(L, handler - 1);
    return status;
  }
  lua_remove(L, handler);
  return 0;
}

/* As sched_protected, but the error, if any, is left on top of the stack
 * for the caller, unreported: it belongs to a goroutine. */
static bool sched_protected_quiet(p_t *pp, void (*fn)(lua_State *, void *), void *ud, int nres) {
  lua_State *L = pp->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, pp->protect_ref);
  lua_pushlightuserdata(L, (void *)(uintptr_t)fn);
  lua_pushlightuserdata(L, ud);
  return lua_pcall(L, 2, nres, 0) == 0;
}

void rt_sched_protect_init(p_t *pp, lua_State *L) {
  lua_pushcfunction(L, protected_body);
  pp->protect_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushcfunction(L, finalizer_traceback);
  pp->errfn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* [-0, +1] the set of the P's goroutine coroutines: cos[thread] = true
 * anchors each one while it is pooled or used. It sits in a holder,
 * {[1] = set}, which lugo.internal keeps: the set is replaced by a smaller
 * one after a burst (a Lua table never shrinks by itself). */
static void push_cos(lua_State *L, p_t *pp) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, pp->cos_ref);
  lua_rawgeti(L, -1, 1);
  lua_remove(L, -2);
}

static void newthread_body(lua_State *L, void *ud) {
  p_t *pp = ud;
  push_cos(L, pp);
  lua_State *co = lua_newthread(L);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3); /* anchored for as long as it is pooled or used */
  lua_rawgeti(co, LUA_REGISTRYINDEX, pp->trampoline_ref);
  pp->copool_new = co;
  if (++pp->ncos > pp->cos_peak) pp->cos_peak = pp->ncos;
  lua_settop(L, 0);
}

/* A new set holding the live coroutines only, in place of the old one. */
static void cos_shrink_body(lua_State *L, void *ud) {
  p_t *pp = ud;
  lua_rawgeti(L, LUA_REGISTRYINDEX, pp->cos_ref);
  lua_rawgeti(L, -1, 1);
  lua_createtable(L, 0, pp->ncos);
  lua_pushnil(L);
  while (lua_next(L, -3)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
  lua_rawseti(L, -3, 1);
  pp->cos_peak = pp->ncos;
  lua_settop(L, 0);
}

static lua_State *copool_get(p_t *pp) {
  if (pp->ncopool) return pp->copool[--pp->ncopool];
  /* A finalizer that raises stops one try; the next one finds it run. */
  while (sched_protected(pp, newthread_body, pp, 0) != 0) {}
  return pp->copool_new;
}

#define COS_SHRINK_MIN 65536 /* a set this big, three quarters dead, is rebuilt */

static void co_drop(p_t *pp, lua_State *co) {
  lua_State *L = pp->L;
  push_cos(L, pp);
  lua_pushthread(co);
  lua_xmove(co, L, 1);
  lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  pp->ncos--;
  if (pp->cos_peak >= COS_SHRINK_MIN && pp->ncos < pp->cos_peak / 4) (void)sched_protected(pp, cos_shrink_body, pp, 0);
}

static void copool_put(p_t *pp, lua_State *co) {
  lua_settop(co, 0); /* drop the finished body's results */
  if (pp->ncopool >= COPOOL_MAX) {
    co_drop(pp, co);
    return;
  }
  if (pp->ncopool == pp->copoolcap) {
    pp->copoolcap = pp->copoolcap ? pp->copoolcap * 2 : 64;
    pp->copool = rt_realloc(pp->copool, (size_t)pp->copoolcap * sizeof *pp->copool);
  }
  pp->copool[pp->ncopool++] = co;
}

/* ------------------------------------------------------------------ */
/* Creating, parking, readying                                         */

/* Goids come from the P's batch, as from Go's goidcache: making a G takes
 * no locked add, and a creator's Gs still get larger ids in order. */
#define GOID_BATCH 16

static int64_t newgoid(p_t *pp) {
  if (pp->goidcache == pp->goidcacheend) {
    pp->goidcache = atomic_fetch_add_explicit(&pp->rt->goidgen, GOID_BATCH, memory_order_relaxed) + 1;
    pp->goidcacheend = pp->goidcache + GOID_BATCH;
  }
  return pp->goidcache++;
}

int32_t gcount(runtime *rt) {
  int32_t n = atomic_load_explicit(&rt->ngoroutines, memory_order_relaxed);
  for (int32_t i = 0; i < rt->gomaxprocs; i++) n += atomic_load_explicit(&rt->allp[i]->ngo, memory_order_relaxed);
  return n;
}

g_t *newproc(p_t *pp, int32_t start_box, int32_t nargs) {
  g_t *gp = gfget(pp);
  /* Relaxed: gp is nobody else's until runqput publishes it. */
  atomic_store_explicit(&gp->goid, newgoid(pp), memory_order_relaxed);
  atomic_store_explicit(&gp->p, pp, memory_order_relaxed);
  gp->live = NULL;
  gp->start_box = start_box;
  gp->nargs = nargs;
  gp->waitreason = WR_NONE;
  gp->parking = PARK_NONE;
  gp->res_kind = RES_NONE;
  gp->site = NULL;
  g_t *creator = getg();
  gp->parent = creator ? creator->goid : 0;
  casgstatus(gp, G_IDLE, G_RUNNABLE);
  allg_add(pp, gp);
  owned_add(&pp->ngo, 1);
  runqput(pp, gp, true);
  return gp;
}

void gopark(g_t *gp, void (*unlockf)(g_t *), enum waitreason reason) {
  gp->parking = PARK_WAIT;
  gp->live->unlockf = unlockf;
  gp->waitreason = (uint8_t)reason;
}

void goready(g_t *gp) {
  casgstatus(gp, G_WAITING, G_RUNNABLE);
  gp->waitreason = WR_NONE;
  p_t *pp = getp();
  if (pp == gp->p) runqput(pp, gp, true);
  else inbox_put(gp->p, gp); /* its VM is another M's: let that M resume it */
}

/* How long thieves leave a spawner's new G to it (see newproc_spawn):
 * longer than Go's 3 us, as a G placed wrong stays there for good (the
 * first spawn of a sieve's chain took 13 us to be run by its blocked
 * spawner). */
#define SPAWN_HOLD_NS 20000

g_t *newproc_spawn(runtime *rt, rt_blob *blob, const gsite *site, bool spread) {
  p_t *pp = getp();
  g_t *gp = gfget(pp);
  atomic_store_explicit(&gp->goid, newgoid(pp), memory_order_relaxed);
  atomic_store_explicit(&gp->p, NULL, memory_order_relaxed);
  gp->live = NULL;
  gp->start_blob = blob;
  gp->waitreason = WR_NONE;
  gp->parking = PARK_NONE;
  gp->res_kind = RES_NONE;
  gp->site = site;
  g_t *creator = getg();
  gp->parent = creator ? creator->goid : 0;
  casgstatus(gp, G_IDLE, G_RUNNABLE);
  owned_add(&pp->ngo, 1);
  atomic_fetch_add(&rt->nunstarted, 1);
  /* As Go's newproc puts a G in its creator's runnext: a spawner that
   * blocks at once (a prime sieve's filters, a request handed to a worker)
   * runs it next, in the VM of the Gs it talks to, instead of every
   * hand-off between them crossing processors for good (a started G never
   * moves). Thieves leave it alone for SPAWN_HOLD_NS, as Go's leave
   * runnext for 3 us; if the spawner goes on running (a fan-out), a
   * spinning M takes it then, or a busy P at its next look at the queues.
   * The G it displaces goes to the ring, where thieves may take it. */
  p_t *self = getp();
  if (!spread && self && atomic_load_explicit(&self->curg, memory_order_relaxed) && rt->gomaxprocs > 1) {
    int64_t hold = nanotime() + SPAWN_HOLD_NS;
    atomic_store_explicit(&self->spawn_hold, hold, memory_order_relaxed);
    atomic_store_explicit(&rt->spawn_hold, hold, memory_order_relaxed);
    g_t *old = atomic_exchange_explicit(&self->spawnnext, gp, memory_order_acq_rel);
    if (old) runqput(self, old, false);
    wakep(rt);
    return gp;
  }
  /* An idle P takes it at once (spread: a G per processor, as net.serve's
   * acceptors): spawned goroutines started one after the other land on
   * different processors while some are free, instead of the first P to
   * wake taking them all (a started G never moves). */
  for (int32_t i = 0; i < rt->gomaxprocs; i++) {
    p_t *pp = rt->allp[i];
    uint32_t idle = P_IDLE;
    if (atomic_load(&pp->status) != P_IDLE) continue;
    atomic_fetch_add(&rt->nmspinning, 1); /* it wakes as a spinning M, as from wakep */
    if (atomic_compare_exchange_strong(&pp->status, &idle, P_WAKING)) {
      inbox_put(pp, gp);
      return gp;
    }
    atomic_fetch_sub(&rt->nmspinning, 1);
  }
  globrunqput(rt, gp);
  wakep(rt);
  return gp;
}

/* ------------------------------------------------------------------ */
/* Panics, deadlock, tracebacks                                        */

/* What a traceback says a G is doing: its wait reason while it waits. */
const char *rt_gstate(g_t *gp) {
  uint32_t st = atomic_load(&gp->status);
  return st == G_WAITING ? rt_waitreason_string(gp->waitreason) : gstatus_names[st];
}

/* Append the block of a G that is not running (parked, queued, or not
 * started) to b. Reads its coroutine only. */
void rt_tb_parked(tbuf *b, g_t *gp) {
  tb_goroutine(b, gp, gp->live ? gp->live->co : NULL, 0, rt_gstate(gp));
}

/* Every goroutine's traceback, as Go prints on a fatal error: every M is
 * asleep, so this thread may read every VM. */
static void print_all_goroutines(runtime *rt) {
  tbuf b;
  tb_init(&b);
  for (int32_t i = 0; i < rt->gomaxprocs; i++) {
    for (g_t *gp = rt->allp[i]->allg; gp; gp = gp->allnext) {
      rt_tb_parked(&b, gp);
      tb_puts(&b, "\n", 1);
    }
  }
  fputs(tb_str(&b), stderr);
  tb_free(&b);
}

static void p_wake(p_t *pp);

/* Stop the program: the first reason wins; every M leaves its scheduler. */
/* How long an exit waits for what cannot be stopped at a safe point (a
 * JIT-compiled loop, a call in the blocking pool): then the process ends
 * anyway, as Go's does without waiting at all. Goroutines in interpreted
 * code are preempted at once (sysmon) and stop within a few ms. */
#define EXIT_GRACE_NS 900000000

static void request_exit(runtime *rt, int code) {
  if (atomic_exchange(&rt->exiting, 1)) return;
  rt->exit_code = code;
  atomic_store_explicit(&rt->exit_deadline, nanotime() + EXIT_GRACE_NS, memory_order_release);
  for (int32_t i = 0; i < rt->gomaxprocs; i++) p_wake(rt->allp[i]);
}

/* Flush stdio without waiting on a lock a stuck thread might hold, then
 * end the process now. */
_Noreturn void rt_exit_now(int code) {
  FILE *files[] = {stdout, stderr};
  for (size_t i = 0; i < 2; i++) {
    if (ftrylockfile(files[i]) == 0) {
      fflush_unlocked(files[i]);
      funlockfile(files[i]);
    }
  }
  _exit(code);
}

/* Print a goroutine's panic report and stop the program, as Go does. */
static void report_panic(runtime *rt, const char *report) {
  fflush(stdout);
  rt_lock(&rt_print_lock);
  fputs(report, stderr);
  fflush(stderr);
  rt_unlock(&rt_print_lock);
  request_exit(rt, 2);
}

/* The G's body raised past every handler (its coroutine is dead, the error
 * on top): report it as a panic. */
typedef struct dead_panic {
  g_t *gp;
  lua_State *co;
} dead_panic;

static void dead_panic_body(lua_State *L, void *ud) {
  dead_panic *d = ud;
  tb_push_dead_panic(L, d->gp, d->co);
}

static void gopanic(p_t *pp, g_t *gp, lua_State *co) {
  dead_panic d = {gp, co};
  if (sched_protected(pp, dead_panic_body, &d, 1) == 0) {
    report_panic(pp->rt, lua_tostring(pp->L, -1));
    lua_pop(pp->L, 1);
  } else {
    char report[96];
    snprintf(report, sizeof report, "panic: (its report could not be made)\n\ngoroutine %lld [running]:\n",
             (long long)gp->goid);
    report_panic(pp->rt, report);
  }
}

/* ------------------------------------------------------------------ */
/* The scheduler                                                       */

/* The G is done. reuse: its coroutine returned to the trampoline and can
 * run another body; else (it died raising) it is dropped. */
static void goexit(p_t *pp, g_t *gp, bool reuse) {
  runtime *rt = pp->rt;
  casgstatus(gp, G_RUNNING, G_DEAD);
  if (gp == rt->maing) {
    rt->main_done = true;
    request_exit(rt, 0); /* when main returns, the program exits */
  }
  allg_remove(pp, gp);
  owned_add(&pp->ngo, -1);
  if (reuse) copool_put(pp, gp->live->co);
  else co_drop(pp, gp->live->co);
  live_put(pp, gp->live);
  gp->live = NULL;
  casgstatus(gp, G_DEAD, G_IDLE);
  gfput(pp, gp);
}

/* After the coroutine yielded PARK: finish what gopark asked. */
static void park_m(p_t *pp, g_t *gp) {
  uint8_t kind = gp->parking;
  gp->parking = PARK_NONE;
  switch (kind) {
  case PARK_WAIT: {
    casgstatus(gp, G_RUNNING, G_WAITING);
    void (*unlockf)(g_t *) = gp->live->unlockf;
    gp->live->unlockf = NULL;
    if (unlockf) unlockf(gp);
    break;
  }
  case PARK_YIELD: /* behind everything this P has queued, and the global queue */
    casgstatus(gp, G_RUNNING, G_RUNNABLE);
    overflowput(pp, gp);
    pp->yielded = true;
    break;
  case PARK_LOCAL:
    casgstatus(gp, G_RUNNING, G_RUNNABLE);
    runqput(pp, gp, false);
    break;
  default:
    rt_throw("goroutine %lld yielded PARK without gopark", (long long)gp->goid);
  }
}

/* The sudogs of a woken op: a plain channel op's single sudog was already
 * dequeued by its waker; a select leaves the queues it still sits in. */
static void release_waiting(p_t *pp, g_t *gp) {
  sudog *sd = gp->live->waiting;
  /* A select's other sudogs may be dequeued by other threads right now:
   * only selectgo_finish, under the channels' locks, may look at them. */
  if (sd->is_select) {
    selectgo_finish(pp, gp);
    return;
  }
  if (sudog_inqueue(sd) || sd->box || sd->copykind != COPY_NONE) {
    selectgo_finish(pp, gp);
    return;
  }
  gp->live->waiting = NULL;
  gp->live->op = OP_NONE;
  release_sudog(pp, sd);
}

/* [-0, +1 on co] a received scalar as itself (SHAPE_RECV_VALUE): no box
 * to fill here and load in Lua. False for anything else. */
static bool push_scalar(lua_State *co, g_t *gp) {
  switch (gp->res_copykind) {
  case COPY_NUM: lua_pushnumber(co, gp->live->res_copynum); break;
  case COPY_TRUE: lua_pushboolean(co, 1); break;
  case COPY_FALSE: lua_pushboolean(co, 0); break;
  case COPY_NIL: lua_pushnil(co); break;
  default: return false;
  }
  gp->res_copykind = COPY_NONE;
  return true;
}

/* [-0, +n on co] what the parked op returns, shaped as it asked. A value
 * comes back as its box, which is freed now: the G loads it first thing. */
static int push_results(p_t *pp, g_t *gp, lua_State *co) {
  if (gp->preempted) { /* it yielded from a hook, mid-function: touch nothing */
    gp->preempted = false;
    return 0;
  }
  if (gp->live->op == OP_CHAN) release_waiting(pp, gp);
  lua_settop(co, 0);
  uint8_t kind = gp->res_kind, shape = gp->res_shape;
  gp->res_kind = RES_NONE;
  gp->res_shape = SHAPE_NONE;
  if (kind == RES_TOPYIELD) {
    lua_pushlightuserdata(co, (void *)&rt_mark_topyield);
    return 1;
  }
  if (shape == SHAPE_NONE) return 0;
  if (shape == SHAPE_JOB) return syscall_results(co, gp);
  if (shape == SHAPE_OK) {
    lua_pushboolean(co, gp->res_ok);
    return 1;
  }
  if (shape == SHAPE_RECV_VALUE && push_scalar(co, gp)) {
    lua_pushboolean(co, gp->res_ok);
    return 2;
  }
  if (gp->res_copykind != COPY_NONE) { /* a value copied from another VM: into a box of ours */
    rt_copy copy = {gp->res_copykind, {0}};
    if (copy.kind == COPY_NUM) copy.num = gp->live->res_copynum;
    else if (copy.kind == COPY_BLOB) copy.blob = gp->live->res_copyblob;
    gp->res_copykind = COPY_NONE;
    lua_State *L = pp->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, pp->vals_ref);
    gp->res_box = take_box(L, pp, 0, copy, lua_gettop(L));
    if (gp->res_box < 0) { /* (ERR, message), for the op to raise */
      lua_pushlightuserdata(co, (void *)&rt_mark_err);
      lua_xmove(L, co, 1);
      lua_pop(L, 1);
      return 2;
    }
    lua_pop(L, 1);
  }
  if (gp->res_box > 0) box_free(pp, gp->res_box);
  if (shape == SHAPE_RECV_VALUE) { /* (nil, ok, box), or (nil, false) once closed */
    lua_pushnil(co);
    lua_pushboolean(co, gp->res_ok);
    if (gp->res_box <= 0) return 2;
    lua_pushinteger(co, gp->res_box);
    return 3;
  }
  if (shape == SHAPE_SELECT) lua_pushinteger(co, gp->res_idx);
  lua_pushinteger(co, gp->res_box);
  lua_pushboolean(co, gp->res_ok);
  return shape == SHAPE_SELECT ? 3 : 2;
}

int32_t rt_can_block(lua_State *L, g_t *gp) {
  if (!gp) return RC_NOGOROUTINE;
  if (gp->live->nonyield || !lua_isyieldable(L)) return RC_NOTYIELDABLE;
  return RC_OK;
}

int rt_park_yield(lua_State *L, g_t *gp, enum res_shape shape) {
  gp->res_shape = (uint8_t)shape;
  lua_pushlightuserdata(L, (void *)&rt_mark_park);
  return lua_yield(L, 1);
}

/* Is the function on top of L's stack `lib.name` (or the global `name`)? */
static bool is_library_function(lua_State *L, const char *lib, const char *name) {
  lua_getglobal(L, lib ? lib : name);
  if (lib) {
    if (lua_istable(L, -1)) lua_getfield(L, -1, name);
    else lua_pushnil(L);
    lua_remove(L, -2);
  }
  bool same = lua_rawequal(L, -1, -2);
  lua_pop(L, 1);
  return same;
}

/* [-0, +1] why L cannot yield here: the C function it was called from. */
static void push_unyieldable_reason(lua_State *L, g_t *gp) {
  static const struct { const char *lib, *name, *what; } known[] = {
      {"table", "sort", "a table.sort comparator"},
      {"string", "gsub", "a string.gsub callback"},
      {NULL, "require", "a chunk being required"},
      {NULL, "load", "a load reader"},
  };
  if (gp && gp->live->nonyield) {
    lua_pushliteral(L, "inside a coroutine resumed where Lua cannot yield");
    return;
  }
  lua_Debug ar;
  for (int level = 1; lua_getstack(L, level, &ar); level++) {
    if (!lua_getinfo(L, "Snf", &ar)) continue;
    if (ar.what[0] != 'C' || is_library_function(L, NULL, "pcall") || is_library_function(L, NULL, "xpcall")) {
      lua_pop(L, 1); /* pcall and xpcall let LuaJIT yield across them */
      continue;
    }
    for (size_t i = 0; i < sizeof known / sizeof *known; i++) {
      if (is_library_function(L, known[i].lib, known[i].name)) {
        lua_pop(L, 1);
        lua_pushfstring(L, "inside %s", known[i].what);
        return;
      }
    }
    lua_pop(L, 1);
    if (ar.name) lua_pushfstring(L, "inside a call from the C function '%s' (a metamethod, a finalizer or a callback)", ar.name);
    else lua_pushliteral(L, "inside a call from a C function (a metamethod, a finalizer or a callback)");
    return;
  }
  lua_pushliteral(L, "inside a C call (a __gc metamethod, a hook or a callback)");
}

int rt_push_msg_err(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&rt_mark_err);
  lua_insert(L, -2);
  return 2;
}

int rt_push_err(lua_State *L, int32_t code) {
  lua_pushlightuserdata(L, (void *)&rt_mark_err);
  if (code == RC_NOTYIELDABLE) {
    push_unyieldable_reason(L, getg());
    lua_pushfstring(L, "cannot block here: %s; Lua cannot yield across a C call", lua_tostring(L, -1));
    lua_remove(L, -2);
  } else if (code == RC_NOGOROUTINE && getp() && getp()->scheduling) { /* between goroutines: a finalizer */
    lua_pushliteral(L, "cannot block here: inside a finalizer (__gc) run by the scheduler; Lua cannot yield across a C call");
  } else if (code == RC_NOGOROUTINE) {
    lua_pushliteral(L, "cannot block outside a goroutine (run the program with lugo, or inside lugo.main)");
  } else {
    lua_pushfstring(L, "lugo: unexpected runtime code %d", (int)code);
  }
  return 2;
}

/* [-0, +n on co] the body of a G that has not run yet: f, or for a body
 * with arguments f, {f, args...}, nargs + 1 (see the trampoline). A
 * spawned G's body is decoded from its blob first; -1 (message on L) if it
 * cannot be. */
typedef struct start_decode {
  rt_blob *blob;
  int n;
} start_decode;

/* [-0, +1 or +3] a spawned G's f, or f, {f, args...}, n (protected: the
 * decode and the table allocate, and may run finalizers). */
static void start_decode_body(lua_State *L, void *ud) {
  start_decode *d = ud;
  int n = d->n = value_decode(L, d->blob);
  if (n > 1) { /* {f, args...} */
    lua_createtable(L, n, 0);
    for (int i = 1; i <= n; i++) {
      lua_pushvalue(L, i);
      lua_rawseti(L, -2, i);
    }
    lua_replace(L, 2);
    lua_settop(L, 2);
    lua_pushinteger(L, n);
  }
}

static int push_start(p_t *pp, g_t *gp, lua_State *co, bool spawned) {
  lua_State *L = pp->L;
  if (spawned) {
    start_decode d = {gp->start_blob, 0};
    gp->start_blob = NULL;
    bool ok = sched_protected_quiet(pp, start_decode_body, &d, LUA_MULTRET);
    blob_free(d.blob);
    if (!ok) return -1; /* the message is on top */
    gp->nargs = d.n - 1;
  } else {
    lua_rawgeti(L, LUA_REGISTRYINDEX, pp->vals_ref);
    lua_rawgeti(L, -1, gp->start_box);
    lua_pushnil(L);
    lua_rawseti(L, -3, gp->start_box);
    lua_remove(L, -2);
    box_free(pp, gp->start_box);
    gp->start_box = 0;
    if (gp->nargs > 0) {
      lua_rawgeti(L, -1, 1);
      lua_insert(L, -2);
      lua_pushinteger(L, gp->nargs + 1);
    }
  }
  int n = gp->nargs > 0 ? 3 : 1;
  lua_checkstack(co, n + 1);
  lua_xmove(L, co, n);
  return n;
}

static void set_curg(p_t *pp, g_t *gp) {
  atomic_store_explicit(&pp->curgoid, gp ? atomic_load_explicit(&gp->goid, memory_order_relaxed) : 0,
                        memory_order_relaxed);
  atomic_store_explicit(&pp->curg, gp, memory_order_release);
}

static void execute(p_t *pp, g_t *gp, bool inherit_time) {
  /* schedtick and nexec are the owner's to write (sysmon only reads them):
   * a load and a store, not a locked add, which was a tenth of a
   * same-processor hand-off. */
  if (!inherit_time) { /* a new time slice: a request about the last one is void */
    atomic_store_explicit(&pp->schedtick, atomic_load_explicit(&pp->schedtick, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    __atomic_store_n(&pp->preempt, false, __ATOMIC_RELAXED);
  }
  atomic_store_explicit(&pp->nexec, atomic_load_explicit(&pp->nexec, memory_order_relaxed) + 1, memory_order_relaxed);
  casgstatus(gp, G_RUNNABLE, G_RUNNING);
  int nargs;
  lua_State *co;
  if (!gp->live) {
    bool spawned = !gp->p;
    if (spawned) { /* this P, and its VM, are the G's for good */
      atomic_fetch_sub(&pp->rt->nunstarted, 1);
      p_vm(pp);
      atomic_store_explicit(&gp->p, pp, memory_order_relaxed);
      allg_add(pp, gp);
    }
    /* Finalizers may run in copool_get: outside any goroutine. Once bound
     * to its coroutine, the G is the current one: its body's decode (which
     * may require modules) is its own doing. */
    co = copool_get(pp);
    gp->live = live_get(pp, gp, co);
    set_curg(pp, gp);
    nargs = push_start(pp, gp, co, spawned);
    if (nargs < 0) { /* its body could not be copied here: that is its panic */
      lua_xmove(pp->L, co, 1);
      set_curg(pp, NULL);
      gopanic(pp, gp, co);
      goexit(pp, gp, false);
      return;
    }
  } else {
    set_curg(pp, gp);
    co = gp->live->co;
    nargs = push_results(pp, gp, co);
  }
  int st = lua_resume(co, nargs);
  set_curg(pp, NULL);
  /* Whatever sysmon asked of this G's slice, the G has given up the P. */
  __atomic_store_n(&pp->preempt, false, __ATOMIC_RELAXED);
  if (st == LUA_YIELD) {
    void *mark = gp->parking ? NULL : lua_touserdata(co, 1);
    if (gp->parking) {
      park_m(pp, gp);
    } else if (mark == &rt_mark_exit) {
      goexit(pp, gp, true);
    } else {
      /* coroutine.yield at the G's top level: there is no resumer to
       * return to. Give the P away and let the yield raise. */
      gp->res_kind = RES_TOPYIELD;
      casgstatus(gp, G_RUNNING, G_RUNNABLE);
      runqput(pp, gp, false);
    }
  } else if (st != 0) {
    gopanic(pp, gp, co);
    goexit(pp, gp, false);
  } else {
    rt_throw("goroutine %lld: trampoline returned", (long long)gp->goid);
  }
}

/* How long an M with nothing to do keeps looking before it sleeps: waking
 * a sleeping thread on another CPU costs 45-140 us here (FACTS.md). An M
 * waits longer for its own inbox than that, so that two Ps passing values
 * back and forth keep each other awake instead of waking each other. */
#define SPIN_NS 50000
#define INBOX_WAIT_NS 250000
/* The inbox wait adapts, per P: it doubles (up to INBOX_WAIT_NS) when the
 * inbox fed it, and halves (down to INBOX_WAIT_MIN_NS) when it waited in
 * vain. Ps that pass values back and forth keep the long wait; a server
 * whose Ps only wait for the network stops burning the CPU its clients
 * need (a quarter of an HTTP server's CPU went to the wait). */
#define INBOX_WAIT_MIN_NS 4000
/* The spin adapts the same way: it doubles (up to SPIN_NS) when it found
 * another P's work, and halves (down to SPIN_MIN_NS) when it found none.
 * A program that spawns keeps its Ms spinning for the Gs to come; one
 * whose Gs never move (a server: each connection's G stays on the P that
 * accepted it) stops taking the CPU from the peers it serves (a tenth of
 * an HTTP server's CPU went to the spin). */
#define SPIN_MIN_NS 2000
/* After I/O on a P with at most IO_HOT_FDS descriptors (IO_HOT_NS ago at
 * most), its idle M polls them for IO_SPIN_NS before it sleeps. */
#define IO_HOT_NS 200000
#define IO_SPIN_NS 100000
#define IO_HOT_FDS 4

/* An error raised where no pcall or resume catches it (a bug of the
 * runtime's, or an error in a finalizer while a VM closes): say so, as
 * Go's fatal errors do, instead of LuaJIT's silent exit(1). */
static int vm_panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  fflush(stdout);
  fprintf(stderr, "fatal error: unprotected Lua error: %s\n", msg ? msg : "(not a string)");
  fflush(stderr);
  _exit(2);
}

/* A new VM of pp's own (closed at exit), on its arena, with the standard
 * libraries and lugo's embedded modules, bound to pp. */
static lua_State *vm_new(p_t *pp) {
  void *arena = rt_vm_arena_new();
  atomic_store_explicit(&pp->arena, arena, memory_order_release); /* memstats on other Ps reads it */
  lua_State *L = lua_newstate(rt_vm_alloc, arena);
  if (!L) rt_throw("runtime: cannot create a Lua state");
  lua_atpanic(L, vm_panic);
  pp->own_vm = true;
  luaL_openlibs(L);
  print_open(L, false);
  lugo_preload(L);
  rt_vm_bind(pp, L);
  return L;
}

/* The P's VM, created the first time the P runs a G. */
void p_vm(p_t *pp) {
  if (pp->L) return;
  lua_State *L = vm_new(pp);
  /* The modules that give runtime objects their methods, for objects that
   * arrive from other VMs. */
  static const char *const modules[] = {"lugo.internal", "lugo", "lugo.sync", "lugo.time", "lugo.context", "lugo.net"};
  for (size_t i = 0; i < sizeof modules / sizeof *modules; i++) {
    lua_getglobal(L, "require");
    lua_pushstring(L, modules[i]);
    if (lua_pcall(L, 1, 0, 0) != 0) rt_throw("runtime: processor %d: %s", (int)pp->id, lua_tostring(L, -1));
  }
}

/* Nobody can ever run again: every P idle, nothing queued, no timer, no
 * call in the blocking pool. Called with sched_lock held, which a P must
 * take to stop being idle: the world stands still while this looks. */
static bool deadlocked(runtime *rt) {
  if (atomic_load(&rt->npidle) != rt->gomaxprocs || atomic_load(&rt->runqsize) != 0 ||
      atomic_load(&rt->nblocking) != 0 || atomic_load(&rt->npollwait) != 0 || atomic_load(&rt->exiting) ||
      atomic_load(&rt->nsigchans) != 0) /* a signal may come: Go's signal loop never sleeps for good either */
    return false;
  for (int32_t i = 0; i < rt->gomaxprocs; i++) {
    p_t *pp = rt->allp[i];
    if (!runqempty(pp) || pp->noverflow || atomic_load(&pp->inbox_pending) || atomic_load(&pp->timer0when) != 0)
      return false;
  }
  return true;
}

static void report_deadlock(runtime *rt) {
  fflush(stdout);
  fprintf(stderr, "fatal error: all goroutines are asleep - deadlock!\n\n");
  print_all_goroutines(rt);
  fflush(stderr);
}

static g_t *findshared(p_t *pp);

/* Work for pp that needs no other P: timers due, its queues, its inbox,
 * and, with poll, its descriptors that became ready (and, now and then,
 * spawned Gs waiting on other Ps). */
static g_t *findlocal(p_t *pp, bool *inherit_time, bool poll) {
  runtime *rt = pp->rt;
  if (pp->L && boxes_untidy(pp)) boxes_clean(pp);
  int64_t when = atomic_load_explicit(&pp->timer0when, memory_order_relaxed);
  if (when && nanotime() >= when) timers_run(pp, nanotime());
  /* A P that always has Gs to run polls its descriptors when sysmon finds
   * its last poll older than a time slice, so that they are not starved.
   * (Only with poll: lend_run runs another M's P, whose epoll set and its
   * eventfd's wake-ups are that M's to harvest.) */
  if (poll && atomic_load_explicit(&pp->pollreq, memory_order_relaxed)) netpoll(pp);
  *inherit_time = false;
  g_t *gp;
  /* A G that yielded (preempted, or gosched) goes behind the global queue,
   * as Go puts it on the global queue: spawned Gs waiting there start
   * within a time slice even while every P is busy. */
  if (pp->yielded) {
    pp->yielded = false;
    if (atomic_load_explicit(&rt->runqsize, memory_order_relaxed) > 0 && (gp = globrunqget(pp, 1))) return gp;
  }
  /* Every 61st tick the queues behind the ring first, so they cannot starve. */
  if (atomic_load_explicit(&pp->schedtick, memory_order_relaxed) % 61 == 0) {
    if (atomic_load_explicit(&rt->runqsize, memory_order_relaxed) > 0 && (gp = globrunqget(pp, 1))) return gp;
    /* Spawned Gs not started wait on their spawner's P (newproc_spawn):
     * a busy P looks there too, as it looks at the global queue, so that
     * one whose spawner never blocks starts while every P is busy. */
    if ((gp = findshared(pp))) return gp;
    if ((gp = overflowget(pp))) return gp;
  }
  if ((gp = runqget(pp, inherit_time))) return gp;
  /* Gs readied by other threads before the ones that yielded (gosched
   * puts them in the overflow list): a gosched loop must not starve them. */
  if ((gp = inbox_get(pp))) return gp;
  if ((gp = overflowget(pp))) return gp;
  /* Nothing else to run: descriptors that became ready. */
  if (poll && atomic_load_explicit(&pp->nfds, memory_order_relaxed) > 0 && netpoll(pp) > 0) {
    if ((gp = runqget(pp, inherit_time))) return gp;
    if ((gp = inbox_get(pp))) return gp;
  }
  return NULL;
}

/* Work pp may take from everyone: the global queue, other Ps' queues. */
static g_t *findshared(p_t *pp) {
  runtime *rt = pp->rt;
  g_t *gp;
  /* Other Ps' queues are their hottest lines: leave them alone when no
   * spawned G waits to start anywhere. */
  if (!atomic_load_explicit(&rt->nunstarted, memory_order_relaxed)) return NULL;
  if (atomic_load_explicit(&rt->runqsize, memory_order_relaxed) > 0 && (gp = globrunqget(pp, 0))) return gp;
  int32_t n = rt->gomaxprocs;
  if (n > 1) {
    uint32_t start = fastrand(pp);
    for (int32_t i = 0; i < n; i++) {
      p_t *victim = rt->allp[(start + (uint32_t)i) % (uint32_t)n];
      if (victim != pp && (gp = runqsteal(pp, victim))) return gp;
    }
  }
  return NULL;
}

/* Count pp out of the spinning Ms, having found nothing. */
static void give_up_spinning(p_t *pp) {
  if (!pp->spinning) return;
  pp->spinning = false;
  atomic_fetch_sub(&pp->rt->nmspinning, 1);
}

static void stop_spinning(p_t *pp) {
  if (!pp->spinning) return;
  pp->spinning = false;
  /* The last spinner to find work wakes another if there may be more work
   * for anyone: only spawned Gs not started yet can go to any P. */
  if (atomic_fetch_sub(&pp->rt->nmspinning, 1) == 1 && atomic_load(&pp->rt->runqsize) > 0) wakep(pp->rt);
}

/* A P whose M has not looked for LEND_STALE_NS while waiting idle (its
 * thread is off the CPU: a busy machine, a descheduled vCPU) may be run by
 * another idle M, one G at a time. Two Ps passing values back and forth
 * then keep going on whichever thread is on a CPU, instead of waiting
 * until both are (xpingpong with a CPU hog per core: each hand-off waited
 * for the other thread's next time slice). Only the holder touches a P:
 * the hold word passes it, and the VM changes thread only between two
 * top-level resumes, as FACTS.md allows. A P whose M sleeps lendable (busy
 * mode) is stale at once: a G readied there runs on the readier's thread
 * as soon as it is idle, instead of after the sleeper wakes. */
#define LEND_STALE_NS 20000

/* Busy mode: the machine has no idle CPU for lugo's Ms (a look of an idle
 * M's wait took BUSY_GAP_NS: its thread was off the CPU), within the last
 * BUSY_NS. Two runnable Ms then each get a share of a CPU, and a hand-off
 * between their Ps waits until both are on a CPU at once, or for the one
 * descheduled in the middle of a G (milliseconds). So in busy mode an M
 * does not spin, as Go's do not while no P is idle: with nothing of its
 * own to run it runs a G of a P whose M is off the CPU (lend_run) or
 * sleeps, its P lendable while it sleeps, and the wake-ups for it are
 * deferred to the M that carries it. One M then carries the Ps that talk
 * to each other, as Go's one M carries both goroutines of a same-P
 * hand-off. Not on a quiet machine: there a lender's own P waits while it
 * runs a lent G (a 1 ms timer was 3 ms late behind a G computing 5 ms). */
#define BUSY_GAP_NS 1000000
#define BUSY_GAPS 3 /* gaps within BUSY_NS: one is a hiccup (a vCPU stolen) */
#define BUSY_NS 100000000

static bool busy_mode(runtime *rt) { return atomic_load_explicit(&rt->busy, memory_order_relaxed); }

/* A look took a gap: count it (racy counts between Ms only blur it). */
static void busy_gap(runtime *rt, int64_t now) {
  if (now - atomic_load_explicit(&rt->busy_gap0, memory_order_relaxed) > BUSY_NS) {
    atomic_store_explicit(&rt->busy_gap0, now, memory_order_relaxed);
    atomic_store_explicit(&rt->busy_gaps, 0, memory_order_relaxed);
  }
  if (atomic_fetch_add_explicit(&rt->busy_gaps, 1, memory_order_relaxed) + 1 < BUSY_GAPS && !busy_mode(rt)) return;
  atomic_store_explicit(&rt->busy_until, now + BUSY_NS, memory_order_relaxed);
  if (!busy_mode(rt)) atomic_store_explicit(&rt->busy, true, memory_order_relaxed);
}

/* sysmon: busy mode over. The Ps asleep lendable wake, to sleep as their
 * own again. */
static void busy_leave(runtime *rt) {
  atomic_store_explicit(&rt->busy, false, memory_order_relaxed);
  for (int32_t i = 0; i < rt->gomaxprocs; i++) {
    p_t *q = rt->allp[i];
    if (atomic_load_explicit(&q->carried, memory_order_relaxed)) atomic_store(&q->carried, false);
    if (atomic_load(&q->status) == P_IDLE && atomic_load(&q->hold) == HOLD_IDLE) p_wake(q);
  }
}

/* A P back from HOLD_IDLE (its idle wait, its sleep): at once, or when the
 * M it is lent to has run its G. True if it had to wait for that. */
bool p_take_back(p_t *pp) {
  for (uint32_t spins = 1;; spins++) {
    uint32_t idle = HOLD_IDLE;
    if (atomic_compare_exchange_weak_explicit(&pp->hold, &idle, HOLD_OWN, memory_order_acquire,
                                              memory_order_relaxed))
      return spins > 1;
    /* A lender preempted on this very CPU finishes only if we let it. */
    p_t *lender = spins % 64 == 0 ? atomic_load(&pp->lent_to) : NULL;
    if (lender && atomic_load_explicit(&lender->cpu, memory_order_relaxed) == sched_getcpu()) sched_yield();
    else cpu_relax();
  }
}

void p_lend_open(p_t *pp) {
  atomic_store_explicit(&pp->idle_beat, 0, memory_order_relaxed);
  atomic_store_explicit(&pp->hold, HOLD_IDLE, memory_order_release);
}

/* Another P in use (running a G, or scheduling) by a thread that was last
 * seen on cpu (its M, or the M it is lent to): that thread is waiting for
 * this CPU while we look for work.
 * Two Ms end up on one CPU when the machine has no idle one (a CPU hog per
 * core: the kernel wakes a sleeping M on the CPU of the M that woke it),
 * or with more processors than CPUs; spinning there only delays the M that
 * has the work we wait for until the next tick (4 ms). */
static bool cpu_shared(p_t *self, int32_t cpu) {
  runtime *rt = self->rt;
  if (cpu < 0) return false;
  for (int32_t i = 0; i < rt->gomaxprocs; i++) {
    p_t *q = rt->allp[i];
    uint32_t hold = atomic_load_explicit(&q->hold, memory_order_relaxed);
    if (q == self || hold == HOLD_IDLE || atomic_load_explicit(&q->status, memory_order_relaxed) != P_RUNNING)
      continue;
    p_t *runner = hold == HOLD_LENT ? atomic_load(&q->lent_to) : q;
    if (runner && atomic_load_explicit(&runner->cpu, memory_order_relaxed) == cpu) return true;
  }
  return false;
}

static void execute(p_t *pp, g_t *gp, bool inherit_time);
static g_t *findlocal(p_t *pp, bool *inherit_time, bool poll);

/* From self's idle wait (self held): run one G of a P whose M is off the
 * CPU. True if it ran one. */
static bool lend_run(p_t *self, int64_t now) {
  runtime *rt = self->rt;
  for (int32_t i = 0; i < rt->gomaxprocs; i++) {
    p_t *q = rt->allp[i];
    if (q == self || atomic_load_explicit(&q->hold, memory_order_relaxed) != HOLD_IDLE ||
        now - atomic_load_explicit(&q->idle_beat, memory_order_relaxed) < rt->lend_stale_ns)
      continue;
    if (!p_has_work(q)) continue;
    uint32_t idle = HOLD_IDLE;
    if (!atomic_compare_exchange_strong_explicit(&q->hold, &idle, HOLD_LENT, memory_order_acquire,
                                                 memory_order_relaxed))
      continue;
    bool ran = false;
    if (q->L && !atomic_load_explicit(&rt->exiting, memory_order_relaxed)) {
      atomic_store(&q->lent_to, self);
      rt_tls_lender = self;
      atomic_signal_fence(memory_order_seq_cst);
      rt_tls_m = &q->m;
      atomic_signal_fence(memory_order_seq_cst);
      /* A P asleep is quiescent (qsbr.c) and sleeps until its earliest
       * timer: while we run it, it reads under seqlocks like any P, and a
       * timer its G arms earlier than that must end its sleep. */
      bool asleep = qsbr_is_idle(q);
      if (asleep) qsbr_wake(q);
      int64_t timer0 = atomic_load_explicit(&q->timer0when, memory_order_relaxed);
      bool inherit_time;
      g_t *gp = findlocal(q, &inherit_time, false);
      if (gp) {
        if (asleep) atomic_store_explicit(&q->carried, true, memory_order_relaxed);
        undefer_wake(q); /* served: we run the G it was for */
        execute(q, gp, false);
        ran = true;
      }
      if (asleep) {
        /* More work there (a G preempted after its lent slice, one it
         * readied): its own M takes over, and we go back to ours. */
        bool more = p_has_work(q);
        if (more && atomic_load_explicit(&q->carried, memory_order_relaxed)) atomic_store(&q->carried, false);
        if (more || atomic_load_explicit(&q->timer0when, memory_order_relaxed) != timer0) netpoll_break(q);
        qsbr_idle(q);
      }
      rt_tls_m = &self->m;
      atomic_signal_fence(memory_order_seq_cst);
      rt_tls_lender = NULL;
      atomic_store(&q->lent_to, NULL);
    }
    atomic_store_explicit(&q->hold, HOLD_IDLE, memory_order_release);
    if (ran) return true;
  }
  return false;
}

/* Go's findrunnable: NULL when the program is exiting. */
static g_t *findrunnable(p_t *pp, bool *inherit_time) {
  runtime *rt = pp->rt;
  bool spun = false; /* spin once between sleeps */
  for (;;) {
    preempt_poll(pp);
    qsbr_quiescent(pp);
    if (atomic_load_explicit(&rt->exiting, memory_order_relaxed)) {
      give_up_spinning(pp);
      return NULL;
    }
    g_t *gp = findlocal(pp, inherit_time, true);
    if (!gp) gp = findshared(pp);
    if (gp) {
      stop_spinning(pp);
      return gp;
    }
    /* Busy mode: one look at the Ps whose Ms are off the CPU, no spinning
     * (unless spawned Gs wait to start: the spin below waits out their
     * spawner's hold, and takes them). */
    if (rt->gomaxprocs > 1 && busy_mode(rt)) {
      /* (Any HOLD_IDLE P counts as stale: in busy mode the Ms that wait
       * awake are few, and lending one of theirs is safe, if early.) */
      if (lend_run(pp, INT64_MAX)) continue;
      if (!atomic_load_explicit(&rt->nunstarted, memory_order_relaxed)) {
        give_up_spinning(pp); /* woken by wakep, which counted us */
        spun = true;
      }
    }
    /* Before sleeping, look for work for a while. For SPIN_NS, as Go's
     * spinning Ms do (at most half of the busy Ps), anyone's: the global
     * queue, stealing. Then, up to INBOX_WAIT_NS, only this P's own Gs,
     * which another P may ready any moment (a reply on a channel): that
     * takes no one's work, so it is not counted as spinning. */
    if (rt->gomaxprocs > 1 && !spun) {
      if (!pp->spinning && 2 * atomic_load(&rt->nmspinning) < rt->gomaxprocs - atomic_load(&rt->npidle)) {
        pp->spinning = true;
        atomic_fetch_add(&rt->nmspinning, 1);
      }
      int64_t start = nanotime(), now = start;
      uint32_t round = 0;
      bool fed = false;   /* the inbox gave us work while we waited */
      bool stole = false; /* the spin found anyone's work */
      if (pp->inbox_wait_ns == 0) pp->inbox_wait_ns = INBOX_WAIT_NS;
      if (pp->spin_ns == 0) pp->spin_ns = SPIN_NS;
      bool spinner = pp->spinning;
      int64_t wait = spinner && pp->inbox_wait_ns < pp->spin_ns ? pp->spin_ns : pp->inbox_wait_ns;
      /* A P with a few connections that just talked waits for their next
       * bytes awake, polling every other round: on this VM a sleeping
       * thread's CPU goes idle, and waking it costs more than the round
       * trip itself (echo over one connection: 35 us a round trip, from
       * 62). A P with more connections keeps the slow poll: it is busy,
       * and its polls gather more events each. */
      bool hot = pp->io_ns && start - pp->io_ns < IO_HOT_NS &&
                 atomic_load_explicit(&pp->nfds, memory_order_relaxed) <= IO_HOT_FDS;
      if (hot && wait < IO_SPIN_NS) wait = IO_SPIN_NS;
      while (!gp && now < start + wait && !atomic_load_explicit(&rt->exiting, memory_order_relaxed)) {
        int32_t cpu = sched_getcpu();
        atomic_store_explicit(&pp->cpu, cpu, memory_order_relaxed);
        /* Between two looks the P is anyone's (see lend_run). An M that
         * waits for this CPU gets it, and our P with it: stale at once, so
         * that it may run our Gs when it is idle. */
        bool yield = !pp->lending && cpu_shared(pp, cpu);
        atomic_store_explicit(&pp->idle_beat, yield ? 0 : now, memory_order_relaxed);
        atomic_store_explicit(&pp->hold, HOLD_IDLE, memory_order_release);
        if (yield) {
          sched_yield();
        } else { /* (not while lending: the P lent to us is waiting on our own G) */
          for (int i = 0; i < 50 && !pp->lending && !atomic_load_explicit(&pp->inbox_pending, memory_order_relaxed); i++)
            cpu_relax();
        }
        bool waited = p_take_back(pp);
        if (atomic_load_explicit(&pp->inbox_pending, memory_order_relaxed)) fed = true;
        /* The descriptors every 16th round only (some 20 us): a poll is a
         * system call, and a spinning P that polled every round made two
         * of them per HTTP request, taking the CPU from the peers it waits
         * for. */
        gp = findlocal(pp, inherit_time, (++round & (hot ? 1 : 15)) == 0);
        if (!gp && pp->spinning && (gp = findshared(pp))) stole = true;
        int64_t looked = now;
        now = nanotime();
        /* A look that took a millisecond: this thread was off its CPU (not
         * given away by a yield, nor waiting for a lent G to park). */
        if (now - looked >= rt->busy_gap_ns && !yield && !waited) busy_gap(rt, now);
        if (!gp) {
          pp->lending = lend_run(pp, now);
          if (pp->lending) now = nanotime();
          else if (busy_mode(rt) && !atomic_load_explicit(&rt->nunstarted, memory_order_relaxed))
            break; /* see the busy look above */
        }
        /* A spawner's hold keeps its Gs from thieves for a while: spin
         * past it, or they would wait for the spawner to block. */
        if (now >= start + pp->spin_ns && now >= atomic_load_explicit(&rt->spawn_hold, memory_order_relaxed))
          give_up_spinning(pp);
      }
      if (fed) pp->inbox_wait_ns = pp->inbox_wait_ns * 2 > INBOX_WAIT_NS ? INBOX_WAIT_NS : pp->inbox_wait_ns * 2;
      else pp->inbox_wait_ns = pp->inbox_wait_ns / 2 < INBOX_WAIT_MIN_NS ? INBOX_WAIT_MIN_NS : pp->inbox_wait_ns / 2;
      if (stole) pp->spin_ns = pp->spin_ns * 2 > SPIN_NS ? SPIN_NS : pp->spin_ns * 2;
      else if (spinner) pp->spin_ns = pp->spin_ns / 2 < SPIN_MIN_NS ? SPIN_MIN_NS : pp->spin_ns / 2;
      if (gp) {
        stop_spinning(pp);
        return gp;
      }
      give_up_spinning(pp);
      spun = true;
      continue; /* look once more now that we no longer count as spinning */
    }
    /* A spawner's Gs still held from thieves: look again once the hold is
     * over rather than sleep through it (the spawner may never block). */
    if (rt->gomaxprocs > 1 && atomic_load_explicit(&rt->spawn_hold, memory_order_relaxed) > nanotime()) {
      spun = false;
      continue;
    }
    /* Sleep in the P's epoll until a timer, I/O or another thread wakes it;
     * first wake those whose Gs we were to run (defer_wake). */
    deferred_wakes(rt, true);
    bool lendable = rt->gomaxprocs > 1 && busy_mode(rt);
    rt_lock(&rt->sched_lock);
    if (atomic_load(&rt->runqsize) > 0) {
      rt_unlock(&rt->sched_lock);
      continue;
    }
    atomic_store(&pp->status, P_IDLE);
    atomic_fetch_add(&rt->npidle, 1);
    if (deadlocked(rt)) {
      report_deadlock(rt);
      request_exit(rt, 2);
      atomic_store(&pp->status, P_RUNNING);
      atomic_fetch_sub(&rt->npidle, 1);
      rt_unlock(&rt->sched_lock);
      return NULL;
    }
    rt_unlock(&rt->sched_lock);
    if (!atomic_load(&pp->inbox_pending) && !atomic_load(&rt->exiting)) {
      qsbr_idle(pp);
      netpoll_block(pp, lendable);
      qsbr_wake(pp);
    }
    atomic_store_explicit(&pp->cpu, sched_getcpu(), memory_order_relaxed);
    /* Leave the idle Ps under sched_lock: a deadlock check holding it sees
     * every idle P stay idle, and so no work appear, while it looks. */
    rt_lock(&rt->sched_lock);
    uint32_t was = atomic_exchange(&pp->status, P_RUNNING);
    atomic_fetch_sub(&rt->npidle, 1);
    rt_unlock(&rt->sched_lock);
    spun = false;
    if (was == P_WAKING) pp->spinning = true; /* wakep counted us */
  }
}

static void schedule(p_t *pp) {
  runtime *rt = pp->rt;
  pp->scheduling = true;
  while (!atomic_load_explicit(&rt->exiting, memory_order_relaxed)) {
    if (atomic_load_explicit(&rt->ndeferred, memory_order_relaxed)) deferred_wakes(rt, false);
    bool inherit_time;
    g_t *gp = findrunnable(pp, &inherit_time);
    if (!gp) break;
    /* Its M runs it again: wake it for its Gs (wake_deferrable). */
    if (atomic_load_explicit(&pp->carried, memory_order_relaxed))
      atomic_store_explicit(&pp->carried, false, memory_order_relaxed);
    execute(pp, gp, inherit_time);
  }
  pp->scheduling = false;
}

/* The body of the thread of P1.. */
static void m_unsignalable(p_t *pp) {
  rt_lock(&pp->rt->signal_lock);
  pp->signalable = false;
  rt_unlock(&pp->rt->signal_lock);
}

static void *mstart(void *arg) {
  p_t *pp = arg;
  rt_tls_m = &pp->m;
  schedule(pp);
  m_unsignalable(pp);
  return NULL;
}

/* ------------------------------------------------------------------ */
/* sysmon                                                              */

#define SYSMON_TICK_NS 2000000   /* how often it looks */
#define PREEMPT_NS 10000000      /* a time slice */
#define LENT_PREEMPT_NS 1000000  /* a lent G's (lend_run): a sysmon tick, in effect */
#define HOG_NS 1000000000        /* running this long without yielding is reported */
#define NETPOLL_MAX_AGE_NS 10000000 /* a busy P polls its descriptors at least this often (Go's sysmon) */

static _Atomic int sigquit_pending; /* the one global: set by the handler (lock-free, so signal-safe) */

static void on_sigquit(int sig) {
  (void)sig;
  int saved = errno;
  atomic_store(&sigquit_pending, 1);
  errno = saved;
}

/* LUGO_DEBUG=schedtrace=MS: the scheduler's state every MS, as GODEBUG. */
static void schedtrace(runtime *rt, int64_t now, int64_t start) {
  rt_lock(&rt_print_lock);
  fprintf(stderr, "SCHED %lldms: gomaxprocs=%d idleprocs=%d spinningthreads=%d runqueue=%d [",
          (long long)((now - start) / 1000000), (int)rt->gomaxprocs, (int)atomic_load(&rt->npidle),
          (int)atomic_load(&rt->nmspinning), (int)atomic_load(&rt->runqsize));
  for (int32_t i = 0; i < rt->gomaxprocs; i++) {
    p_t *pp = rt->allp[i];
    fprintf(stderr, "%s%d", i ? " " : "", (int)(runqlen(pp) + (uint32_t)atomic_load(&pp->noverflow)));
  }
  fprintf(stderr, "]\n");
  fflush(stderr);
  rt_unlock(&rt_print_lock);
}

/* C API sched_stats() -> the figures schedtrace prints, as a table:
 * { gomaxprocs, idleprocs, spinningthreads, runqueue, goroutines,
 *   runqueues = { per P } } (each read atomically, not as one snapshot) */
int rt_sched_stats(lua_State *L) {
  p_t *self = getp();
  if (!self) return luaL_error(L, "sched_stats: no runtime");
  runtime *rt = self->rt;
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, rt->gomaxprocs);
  lua_setfield(L, -2, "gomaxprocs");
  lua_pushinteger(L, atomic_load(&rt->npidle));
  lua_setfield(L, -2, "idleprocs");
  lua_pushinteger(L, atomic_load(&rt->nmspinning));
  lua_setfield(L, -2, "spinningthreads");
  lua_pushinteger(L, atomic_load(&rt->runqsize));
  lua_setfield(L, -2, "runqueue");
  lua_pushinteger(L, (lua_Integer)gcount(rt));
  lua_setfield(L, -2, "goroutines");
  lua_createtable(L, rt->gomaxprocs, 0);
  for (int32_t i = 0; i < rt->gomaxprocs; i++) {
    p_t *pp = rt->allp[i];
    lua_pushinteger(L, (lua_Integer)(runqlen(pp) + (uint32_t)atomic_load(&pp->noverflow)));
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "runqueues");
  return 1;
}

/* Reading a frozen VM: it was stopped at an arbitrary instruction, maybe
 * halfway through changing a stack. A fault while reading it ends that
 * P's part of the dump instead of the dump (sysmon's thread only). */
static sigjmp_buf dump_fault_jmp;
static _Thread_local volatile sig_atomic_t dump_guarded; /* sysmon's own: a fault elsewhere is a fault */

static void on_dump_fault(int sig) {
  if (dump_guarded) siglongjmp(dump_fault_jmp, 1);
  signal(sig, SIG_DFL);
  raise(sig);
}

static void dump_frozen_p(tbuf *b, p_t *pp) {
  struct sigaction sa, old_segv, old_bus;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_dump_fault;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &old_segv);
  sigaction(SIGBUS, &sa, &old_bus);
  size_t mark = b->len;
  if (sigsetjmp(dump_fault_jmp, 1) == 0) {
    dump_guarded = 1;
    g_t *gp = atomic_load(&pp->curg);
    dump_p_goroutines(b, pp, gp && gp->live ? gp->live->co : NULL, gp, true);
  } else {
    b->len = mark;
    tb_printf(b, "processor %d: its goroutines could not be read (stopped in the middle of a change)\n\n",
              (int)pp->id);
  }
  dump_guarded = 0;
  sigaction(SIGSEGV, &old_segv, NULL);
  sigaction(SIGBUS, &old_bus, NULL);
}

static void sleep_ms(int ms) {
  struct timespec ts = {0, (long)ms * 1000000};
  nanosleep(&ts, NULL);
}

/* A live dump (http.debug_handler, Go's pprof goroutine?debug=2): the
 * SIGQUIT protocol without its last resort. A pool thread asks each P for
 * its goroutines at its next safe point and waits for them; a P that does
 * not answer within 200 ms runs compiled code or a C call and is named,
 * not stopped. The asking goroutine waits in the pool, so its own P is
 * free to answer. */
typedef struct dump_job {
  rt_job job;
  runtime *rt;
  tbuf b;
} dump_job;

static void sleep_ms(int ms);

static void dump_run(rt_job *j) {
  dump_job *dj = (dump_job *)j;
  runtime *rt = dj->rt;
  pthread_mutex_lock(&rt->dump_lock);
  for (int32_t i = 0; i < rt->gomaxprocs; i++) {
    p_t *pp = rt->allp[i];
    /* pp->L is not read here: the P makes its VM when it first runs a G,
     * on its own thread. A P without one answers with nothing. */
    int32_t none = DUMP_NONE;
    if (atomic_load(&pp->dump) != DUMP_NONE) { /* SIGQUIT is at work: it ends the process */
      tb_printf(&dj->b, "processor %d: busy with another dump\n\n", (int)pp->id);
      continue;
    }
    rt_lock(&rt->signal_lock);
    if (pp->signalable) preempt_dump_request(pp);
    else atomic_compare_exchange_strong(&pp->dump, &none, DUMP_ASKED);
    rt_unlock(&rt->signal_lock);
    p_wake(pp);
    int64_t deadline = nanotime() + 200000000;
    while (atomic_load(&pp->dump) == DUMP_ASKED && nanotime() < deadline) sleep_ms(1);
    int32_t asked = DUMP_ASKED;
    if (atomic_compare_exchange_strong(&pp->dump, &asked, DUMP_NONE)) {
      tb_printf(&dj->b, "processor %d: running compiled code or a C call; its goroutines cannot be shown without stopping it\n\n",
                (int)pp->id);
      continue;
    }
    for (int k = 0; k < 1000 && atomic_load(&pp->dump) == DUMP_BUSY; k++) sleep_ms(1);
    if (atomic_load(&pp->dump) == DUMP_DONE) {
      if (pp->dump_text) tb_printf(&dj->b, "%s", pp->dump_text);
      free(pp->dump_text);
      pp->dump_text = NULL;
      atomic_store(&pp->dump, DUMP_NONE);
    }
  }
  pthread_mutex_unlock(&rt->dump_lock);
}

static int dump_push(lua_State *L, rt_job *j) {
  dump_job *dj = (dump_job *)j;
  lua_pushlstring(L, dj->b.len ? tb_str(&dj->b) : "", dj->b.len);
  return 1;
}

static void dump_free(rt_job *j) {
  dump_job *dj = (dump_job *)j;
  tb_free(&dj->b);
  rt_free(dj);
}

int rt_goroutine_dump(lua_State *L) {
  p_t *pp = getp();
  if (!pp) return luaL_error(L, "goroutine_dump: no runtime");
  dump_job *dj = rt_calloc(1, sizeof *dj);
  dj->job.run = dump_run;
  dj->job.push = dump_push;
  dj->job.free = dump_free;
  dj->rt = pp->rt;
  tb_init(&dj->b);
  return syscall_block(L, &dj->job);
}

/* SIGQUIT: every goroutine of every P, then exit 2, as Go does. Each P
 * writes its own at its next safe point (the preemption hook, or between
 * goroutines); one that does not within 200 ms runs compiled code or a C
 * call: its thread is stopped where it is, and its goroutines are read from
 * here, the running one as last seen. */
static void sigquit_dump(runtime *rt) {
  for (int32_t i = 0; i < rt->gomaxprocs; i++) {
    p_t *pp = rt->allp[i];
    if (!pp->L) continue;
    rt_lock(&rt->signal_lock);
    if (pp->signalable) preempt_dump_request(pp);
    rt_unlock(&rt->signal_lock);
    p_wake(pp);
  }
  int64_t deadline = nanotime() + 200000000;
  tbuf b;
  tb_init(&b);
  /* Room made now: a P stopped later may hold an allocator's lock. */
  tb_grow(&b, (size_t)1 << 20);
  tb_printf(&b, "SIGQUIT: quit\n\n");
  for (int32_t i = 0; i < rt->gomaxprocs; i++) {
    p_t *pp = rt->allp[i];
    if (!pp->L) continue;
    while (atomic_load(&pp->dump) == DUMP_ASKED && nanotime() < deadline) sleep_ms(1);
    int32_t asked = DUMP_ASKED;
    if (atomic_compare_exchange_strong(&pp->dump, &asked, DUMP_TAKEN)) {
      rt_lock(&rt->signal_lock);
      if (pp->signalable) preempt_freeze(pp);
      rt_unlock(&rt->signal_lock);
      for (int k = 0; k < 100 && !atomic_load(&pp->frozen); k++) sleep_ms(1);
      if (atomic_load(&pp->frozen)) dump_frozen_p(&b, pp);
      else tb_printf(&b, "processor %d: did not stop; its goroutines cannot be shown\n\n", (int)pp->id);
      continue;
    }
    for (int k = 0; k < 1000 && atomic_load(&pp->dump) == DUMP_BUSY; k++) sleep_ms(1);
    if (atomic_load(&pp->dump) == DUMP_DONE && pp->dump_text) tb_printf(&b, "%s", pp->dump_text);
  }
  /* Spawned goroutines no processor has started yet, unless a stopped P
   * holds the lock of their queue. */
  uint32_t unlocked = 0;
  for (int k = 0; k < 100; k++, sleep_ms(1)) {
    if (atomic_compare_exchange_strong(&rt->sched_lock.key, &unlocked, 1)) {
      for (g_t *gp = rt->runq_head; gp; gp = gp->schedlink) {
        tb_goroutine(&b, gp, NULL, 0, "runnable");
        tb_puts(&b, "\n", 1);
      }
      rt_unlock(&rt->sched_lock);
      break;
    }
    unlocked = 0;
  }
  /* No rt_print_lock: a frozen thread may hold it. */
  if (ftrylockfile(stdout) == 0) {
    fflush_unlocked(stdout);
    funlockfile(stdout);
  }
  fputs(tb_str(&b), stderr);
  fflush(stderr);
  _exit(2);
}

/* Signal pp's M, unless its thread is gone or going. */
static void signal_m(runtime *rt, p_t *pp, void (*request)(p_t *)) {
  rt_lock(&rt->signal_lock);
  if (pp->signalable) request(pp);
  rt_unlock(&rt->signal_lock);
}

/* While the program exits: every running G is asked to yield at once, so
 * that each M leaves its scheduler within a few ms; past the deadline,
 * whatever still runs (compiled code, a pool call) is not waited for. */
static void sysmon_exiting(runtime *rt, int64_t now) {
  int64_t deadline = atomic_load_explicit(&rt->exit_deadline, memory_order_acquire);
  if (deadline && now >= deadline) rt_exit_now(rt->exit_code);
  for (int32_t i = 0; i < rt->gomaxprocs; i++) {
    p_t *pp = rt->allp[i];
    if (atomic_load_explicit(&pp->curg, memory_order_relaxed)) signal_m(rt, pp, preempt_request);
  }
}

static void *sysmon(void *arg) {
  runtime *rt = arg;
  int32_t n = rt->gomaxprocs;
  uint32_t *lasttick = rt_calloc((size_t)n, sizeof *lasttick), *lastexec = rt_calloc((size_t)n, sizeof *lastexec);
  int64_t *tickwhen = rt_calloc((size_t)n, sizeof *tickwhen), *execwhen = rt_calloc((size_t)n, sizeof *execwhen);
  int64_t *asked = rt_calloc((size_t)n, sizeof *asked);
  bool *reported = rt_calloc((size_t)n, sizeof *reported);
  int64_t start = nanotime(), nexttrace = start + rt->schedtrace_ns;
  qsbr_sysmon_attach(rt);
  while (!atomic_load(&rt->sysmon_quit)) {
    struct timespec ts = {0, SYSMON_TICK_NS};
    nanosleep(&ts, NULL);
    int64_t now = nanotime();
    if (atomic_load(&rt->exiting)) {
      sysmon_exiting(rt, now);
      continue;
    }
    if (sigquit_pending) sigquit_dump(rt);
    sigqueue_deliver(rt);
    atomic_fetch_add_explicit(&rt->sysmon_tick, 1, memory_order_relaxed);
    deferred_wakes(rt, false);
    if (busy_mode(rt) && rt->busy_gap_ns && now >= atomic_load_explicit(&rt->busy_until, memory_order_relaxed))
      busy_leave(rt);
    map_sweep_expired(rt, now);
    qsbr_sysmon_tick(rt);
    map_unmap_retired(rt);
    for (int32_t i = 0; i < n; i++) {
      p_t *pp = rt->allp[i];
      g_t *gp = atomic_load_explicit(&pp->curg, memory_order_acquire);
      uint32_t tick = atomic_load(&pp->schedtick), exec = atomic_load(&pp->nexec);
      /* A P that is busy and has descriptors polls them at its next
       * schedule once its last poll is older than a time slice. */
      if (atomic_load_explicit(&pp->nfds, memory_order_relaxed) > 0 &&
          now - atomic_load_explicit(&pp->lastpoll_ns, memory_order_relaxed) >= NETPOLL_MAX_AGE_NS)
        atomic_store_explicit(&pp->pollreq, true, memory_order_relaxed);
      if (!gp || tick != lasttick[i]) {
        lasttick[i] = tick;
        tickwhen[i] = asked[i] = now;
      } else if (now - asked[i] >= (atomic_load_explicit(&pp->hold, memory_order_relaxed) == HOLD_LENT
                                         ? LENT_PREEMPT_NS /* its lender's own P waits */
                                         : PREEMPT_NS)) { /* its time slice is over */
        asked[i] = now;
        signal_m(rt, pp, preempt_request);
      }
      if (!gp || exec != lastexec[i]) {
        lastexec[i] = exec;
        execwhen[i] = now;
        reported[i] = false;
      } else if (now - execwhen[i] >= HOG_NS && !reported[i]) {
        reported[i] = true;
        int64_t goid = atomic_load_explicit(&pp->curgoid, memory_order_relaxed);
        atomic_store(&pp->hog, goid);
        rt_lock(&rt_print_lock);
        fprintf(stderr,
                "lugo: goroutine %lld on processor %d has run for %.1fs without yielding (JIT-compiled code and "
                "C calls cannot be preempted): if it loops, call runtime.gosched() in the loop, or keep that "
                "function out of the JIT (jit.off(f)); its stack is printed when it next runs interpreted code\n",
                (long long)goid, (int)pp->id, (double)(now - execwhen[i]) / 1e9);
        fflush(stderr);
        rt_unlock(&rt_print_lock);
        signal_m(rt, pp, preempt_request);
      }
    }
    if (rt->schedtrace_ns && now >= nexttrace) {
      schedtrace(rt, now, start);
      nexttrace = now + rt->schedtrace_ns;
    }
  }
  rt_free(lasttick);
  rt_free(lastexec);
  rt_free(tickwhen);
  rt_free(execwhen);
  rt_free(asked);
  rt_free(reported);
  return NULL;
}

/* Run fn on sig, restarting the system calls it interrupts. */
void rt_handle_signal(int sig, void (*fn)(int)) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = fn;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(sig, &sa, NULL);
}

void sysmon_start(runtime *rt) {
  rt_handle_signal(SIGQUIT, on_sigquit);
  preempt_install();
  if (pthread_create(&rt->sysmon, NULL, sysmon, rt) != 0) rt_throw("runtime: cannot start sysmon");
  rt->sysmon_running = true;
}

void sysmon_stop(runtime *rt) {
  if (!rt->sysmon_running) return;
  atomic_store(&rt->sysmon_quit, true);
  pthread_join(rt->sysmon, NULL);
  rt->sysmon_running = false;
}

/* ------------------------------------------------------------------ */
/* Processors and the runtime                                          */

static p_t *p_new(runtime *rt, int32_t id) {
  p_t *pp; /* aligned as its fields ask: some have cache lines of their own */
  if (posix_memalign((void **)&pp, _Alignof(p_t), sizeof *pp)) rt_throw("runtime: out of memory");
  memset(pp, 0, sizeof *pp);
  pp->id = id;
  pp->rt = rt;
  pp->m.p = pp;
  pp->m.id = id;
  atomic_init(&pp->cpu, -1);
  atomic_init(&pp->schedtick, 1); /* the first findrunnable need not start with the global queue */
  pp->rand = (uint64_t)nanotime() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)pp;
  netpoll_p_init(pp);
  atomic_init(&pp->status, P_RUNNING);
  return pp;
}

/* Dequeue a parked G from whatever it waits on and forget it. */
static void g_destroy(p_t *pp, g_t *gp) {
  g_live *l = gp->live;
  if (l) {
    switch (l->op) {
    case OP_CHAN: selectgo_finish(pp, gp); break;
    case OP_SEMA:
      if (l->sema.sd) {
        sema_cancel(l->sema.sd);
        release_sudog(pp, l->sema.sd);
      }
      break;
    case OP_SLEEP: sleep_cancel(pp, gp); break;
    case OP_SYSCALL: /* done, its G readied but never resumed: nobody else frees it */
      if (l->job) l->job->free(l->job);
      break;
    case OP_NET: netwait_cancel(pp, gp); break;
    }
    if (gp->res_copykind == COPY_BLOB) blob_free(l->res_copyblob);
    rt_free(l);
  } else if (gp->start_box) {
    box_free_dirty(pp, gp->start_box);
  }
  allg_remove(pp, gp);
  atomic_fetch_sub_explicit(&pp->rt->ngoroutines, 1, memory_order_relaxed);
  rt_free(gp);
}

/* A spawned G that never started: in a run queue, bound to no P. */
static void g_destroy_unstarted(runtime *rt, g_t *gp) {
  atomic_fetch_sub(&rt->nunstarted, 1);
  blob_free(gp->start_blob);
  atomic_fetch_sub_explicit(&rt->ngoroutines, 1, memory_order_relaxed);
  rt_free(gp);
}

/* Free every node of a cache list whose link sits at offset `link`. */
static void free_list(void *head, size_t link) {
  while (head) {
    void *next = *(void **)((char *)head + link);
    rt_free(head);
    head = next;
  }
}

static void p_free(p_t *pp) {
  timers_close(pp);
  netpoll_p_close(pp);
  free_list(pp->gfree, offsetof(g_t, schedlink));
  free_list(pp->livefree, offsetof(g_live, next));
  free_list(pp->timerfree, offsetof(rt_timer, arg));
  free_list(pp->sudogcache, offsetof(sudog, next));
  boxes_destroy(pp);
  rt_free(pp->remote_dirty);
  rt_free(pp->copool);
  rt_free(pp->timers);
  rt_vm_arena_free(pp->arena);
  rt_free(pp);
}

/* The CPUs this process may run on, as Go's NumCPU counts them: its
 * affinity mask (taskset, a container's cpuset), not every online CPU. */
int32_t rt_numcpu(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int32_t)n : 1;
}

static int32_t default_procs(void) {
  const char *env = getenv("LUGO_MAXPROCS");
  if (env && atoi(env) > 0) return atoi(env);
  return rt_numcpu();
}

/* As Go's runtime does at start: a broken connection must not kill the
 * process (writes say EPIPE instead), but a broken stdout or stderr does
 * (print.c), and a server may use every descriptor the hard limit allows. */
static void process_init(void) {
  sigpipe_install();
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static runtime *runtime_new(int32_t nprocs) {
  process_init();
  if (nprocs <= 0) nprocs = default_procs();
  if (nprocs > 256) nprocs = 256;
  runtime *rt = rt_calloc(1, sizeof *rt);
  const char *debug = getenv("LUGO_DEBUG");
  const char *st = debug ? strstr(debug, "schedtrace=") : NULL;
  if (st) rt->schedtrace_ns = (int64_t)atoll(st + strlen("schedtrace=")) * 1000000;
  /* lendstale=US: how long an idle M must have been off the CPU before
   * another runs its P (0: whenever it waits; the specs' stress of it). */
  const char *ls = debug ? strstr(debug, "lendstale=") : NULL;
  rt->lend_stale_ns = ls ? (int64_t)atoll(ls + strlen("lendstale=")) * 1000 : LEND_STALE_NS;
  /* busygap=US: how long a look of the idle wait must take to count as
   * the thread off its CPU (0: busy mode always; the specs' stress of it). */
  const char *bg = debug ? strstr(debug, "busygap=") : NULL;
  rt->busy_gap_ns = bg ? (int64_t)atoll(bg + strlen("busygap=")) * 1000 : BUSY_GAP_NS;
  if (!rt->busy_gap_ns) atomic_store(&rt->busy, true);
  rt->gomaxprocs = nprocs;
  rt->allp = rt_calloc((size_t)nprocs, sizeof *rt->allp);
  for (int32_t i = 0; i < nprocs; i++) rt->allp[i] = p_new(rt, i);
  syscall_pool_init(rt);
  pthread_mutex_init(&rt->dump_lock, NULL);
  return rt;
}

lugo_runtime *lugo_new(const lugo_options *opts) {
  runtime *rt = runtime_new(opts ? opts->maxprocs : 0);
  p_t *pp = rt->allp[0];
  vm_new(pp);
  rt_tls_m = &pp->m;
  return rt;
}

lua_State *lugo_vm(lugo_runtime *rt) { return rt->allp[0]->L; }

/* Destroy every G that is left: parked ones leave their queues. Every M
 * but this one has stopped. */
static void destroy_all_gs(runtime *rt) {
  for (g_t *gp = rt->runq_head; gp;) { /* unstarted spawned Gs first */
    g_t *next = gp->schedlink;
    if (!gp->p) g_destroy_unstarted(rt, gp);
    gp = next;
  }
  rt->runq_head = rt->runq_tail = NULL;
  atomic_store(&rt->runqsize, 0);
  for (int32_t i = 0; i < rt->gomaxprocs; i++) {
    p_t *pp = rt->allp[i];
    rt_tls_m = &pp->m;
    g_t *gp;
    while ((gp = runqget(pp, NULL)))
      if (!gp->p) g_destroy_unstarted(rt, gp);
    for (gp = pp->inbox_head; gp;) { /* spawned Gs handed to this P */
      g_t *next = gp->schedlink;
      if (!gp->p) g_destroy_unstarted(rt, gp);
      gp = next;
    }
    pp->inbox_head = pp->inbox_tail = NULL;
    atomic_store(&pp->inbox_pending, false);
    for (gp = pp->overflow_head; gp;) { /* spawned Gs a full ring spilled */
      g_t *next = gp->schedlink;
      if (!gp->p) g_destroy_unstarted(rt, gp);
      gp = next;
    }
    pp->overflow_head = pp->overflow_tail = NULL;
    atomic_store(&pp->noverflow, 0);
    while (pp->allg) g_destroy(pp, pp->allg);
  }
}

runtime *rt_adopt(lua_State *L) {
  runtime *rt = runtime_new(0);
  rt->adopted_vm = true;
  print_open(L, true);
  rt_vm_bind(rt->allp[0], L);
  /* This thread holds P0 from now on, so that the VM may use channels that
   * do not block even before lugo.main runs. */
  rt_tls_m = &rt->allp[0]->m;
  return rt;
}

/* Stop the other Ms: wake them all and wait for them to leave their
 * schedulers. One that runs a G that never yields (a JIT-compiled loop)
 * cannot be stopped: then the process ends at once, as Go's does. */
void rt_exit_deadline(runtime *rt, struct timespec *ts) {
  int64_t when = atomic_load(&rt->exit_deadline);
  int64_t left = when ? when - nanotime() : EXIT_GRACE_NS;
  clock_gettime(CLOCK_REALTIME, ts);
  if (left <= 0) return;
  ts->tv_sec += left / 1000000000;
  ts->tv_nsec += left % 1000000000;
  if (ts->tv_nsec >= 1000000000) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000;
  }
}

static void stop_the_ms(runtime *rt) {
  for (int32_t i = 1; i < rt->gomaxprocs; i++) p_wake(rt->allp[i]);
  struct timespec deadline;
  rt_exit_deadline(rt, &deadline);
  for (int32_t i = 1; i < rt->gomaxprocs; i++) {
    p_t *pp = rt->allp[i];
    if (!pp->thread_running) continue;
    if (pthread_timedjoin_np(pp->thread, NULL, &deadline) != 0) rt_exit_now(rt->exit_code);
    pp->thread_running = false;
  }
}

int lugo_run(lugo_runtime *rt, int nargs) {
  p_t *pp = rt->allp[0];
  lua_State *L = pp->L;
  m_t *saved = rt_tls_m;
  rt_tls_m = &pp->m;
  rt->main_done = false;
  atomic_store(&rt->exiting, 0);
  rt->exit_code = 0;

  /* The main goroutine's body goes into a box like any other. */
  int32_t box = box_alloc(pp);
  if (nargs > 0) {
    int base = lua_gettop(L) - nargs;
    lua_createtable(L, nargs + 1, 0);
    for (int i = 0; i <= nargs; i++) {
      lua_pushvalue(L, base + i);
      lua_rawseti(L, -2, i + 1);
    }
    lua_replace(L, base);
    lua_settop(L, base);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, pp->vals_ref);
  lua_insert(L, -2);
  lua_rawseti(L, -2, box);
  lua_pop(L, 1);
  rt->maing = newproc(pp, box, nargs);
  pp->thread = pthread_self();
  atomic_store(&rt->sysmon_quit, false);
  atomic_store(&rt->exit_deadline, 0);

  rt_lock(&rt->signal_lock);
  pp->signalable = true;
  for (int32_t i = 1; i < rt->gomaxprocs; i++) {
    p_t *p = rt->allp[i];
    if (pthread_create(&p->thread, NULL, mstart, p) != 0) rt_throw("runtime: cannot start a thread");
    p->thread_running = p->signalable = true;
  }
  rt_unlock(&rt->signal_lock);
  sysmon_start(rt);
  schedule(pp);
  m_unsignalable(pp);
  request_exit(rt, 0);
  /* sysmon goes on preempting the other Ms' goroutines, and ends the
   * process at the exit deadline if something cannot be stopped. */
  stop_the_ms(rt);
  syscall_pool_stop(rt);
  sysmon_stop(rt);

  rt->maing = NULL;
  /* Nothing may run after main: drop the Gs that are left. */
  destroy_all_gs(rt);
  rt_tls_m = &pp->m;
  if (boxes_untidy(pp)) boxes_clean(pp);
  rt_tls_m = saved;
  return rt->exit_code;
}

void lugo_close(lugo_runtime *rt) {
  m_t *saved = rt_tls_m;
  if (saved && saved->p && saved->p->rt == rt) saved = NULL; /* freed below */
  syscall_pool_stop(rt);
  syscall_pool_free(rt);
  destroy_all_gs(rt);
  for (int32_t i = 0; i < rt->gomaxprocs; i++) {
    p_t *pp = rt->allp[i];
    rt_tls_m = &pp->m;
    timers_close(pp);
    if (pp->L) {
      rt_vm_unbind(pp);
      if (pp->own_vm) lua_close(pp->L); /* finalizers release every object */
      pp->L = NULL;
    }
  }
  sigqueue_free(rt);
  qsbr_sysmon_close(rt);
  for (int32_t i = 0; i < rt->gomaxprocs; i++) {
    rt_tls_m = &rt->allp[i]->m;
    qsbr_p_close(rt->allp[i]);
  }
  map_unmap_retired(rt);
  context_runtime_free(rt);
  for (int32_t i = 0; i < rt->gomaxprocs; i++) p_free(rt->allp[i]);
  netpoll_free(rt);
  rt_free(rt->allp);
  rt_free(rt);
  rt_tls_m = saved;
}

/* ------------------------------------------------------------------ */
/* Entry points for Lua (module.c registers them)                      */

void rt_exit_request(runtime *rt, int code) { request_exit(rt, code); }

void rt_gosched(g_t *gp) { gp->parking = PARK_YIELD; }
void rt_goyield(g_t *gp) { gp->parking = PARK_LOCAL; }

/* [-0, +1] runtime.stack(all): this goroutine's traceback (from L, the
 * caller's frame), then with all every other goroutine of this P's. */
void rt_push_stack(lua_State *L, p_t *pp, g_t *self, bool all) {
  tbuf b;
  tb_init(&b);
  if (self) tb_goroutine(&b, self, L, 1, "running");
  if (all) {
    for (g_t *gp = pp->allg; gp; gp = gp->allnext) {
      if (gp == self) continue;
      if (b.len) tb_puts(&b, "\n", 1);
      rt_tb_parked(&b, gp);
    }
  }
  lua_pushlstring(L, tb_str(&b), b.len);
  tb_free(&b);
}
