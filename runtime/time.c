/*
 * time.c — timers on each P, after Go's time.go (as of Go 1.23).
 *
 * Invariants:
 *   - Each P has a 4-ary min-heap of armed timers ordered by (when, seq):
 *     the earliest first, equal deadlines in the order they were armed.
 *     timers_lock guards the heap, timer0when and every armed timer's
 *     when/idx; t->idx >= 0 exactly when t is in a heap. t->p, the heap a
 *     timer was last pushed to, changes only on a push, and a timer's owner
 *     serializes its pushes and deletes (timers_run only pops).
 *   - A timer's callback runs on the P whose heap held it, from the
 *     scheduler (never inside a goroutine), with the heap unlocked.
 *   - A sleeping P's epoll_pwait2 times out at timer0when, the heap's top
 *     (netpoll_block); a timer that becomes another P's earliest breaks
 *     that P's sleep (netpoll_break), which then sleeps for the new top.
 *   - What a heap slot does to its timer's object (t->ref):
 *       none (NULL): a sleeping G's timer lives in the G, netpoll's in a
 *         pollDesc, which is never freed;
 *       a reference (after_func: it holds f, as Go's AfterFunc): taken when
 *         armed, handed to the callback when it fires, dropped by whoever
 *         removes the timer;
 *       weak (t->weak: a channel's timer, a context's deadline): the heap
 *         holds nothing, so an object nobody references is collected before
 *         its deadline. timers_run takes a reference under the heap lock
 *         only if the count is still above 0 (rt_tryretain), and the
 *         object's free path deletes the timer under the same lock: a
 *         callback's object is alive until it returns, or it is not run.
 *   - A channel's timer (time.timer, ticker, after, tick: struct chantimer)
 *     belongs to its channel, which is receive-only: the Timer or Ticker
 *     object holds the channel, never the reverse, and a channel held alone
 *     keeps the timer working. Its state (when, period) is guarded by the
 *     channel's lock. It has a heap slot exactly while it is armed and a
 *     receiver waits on the channel; otherwise it delivers lazily, Go 1.23's
 *     maybeRunChan: every look at the channel that does not block (recv,
 *     select's first pass, len) first lets a value that is due in. So a
 *     timer nobody waits on costs no heap slot and dies with its channel.
 *     The value is the wall time at which it was due: a number, which
 *     travels inline, so delivering it touches no VM and any P may do it.
 *   - Stop and reset drain the channel under its lock, and a delivery
 *     re-checks the state under that lock: no value from before them is
 *     received after (Go 1.23).
 *   - Sleepers whose deadlines pass together go to the tail of their P's
 *     run queue in deadline order (timers fire in heap order).
 *   - Timers use CLOCK_MONOTONIC in nanoseconds; durations in the Lua API are
 *     seconds, a positive one at least 1 ns, and a timer never fires before
 *     its duration has elapsed.
 */
#define _GNU_SOURCE /* CLOCK_MONOTONIC_COARSE */
#include <math.h>
#include <time.h>

#include <lauxlib.h>

#include "rt.h"

#define HEAP_ARITY 4
#define HEAP_MINCAP 64

static int64_t secs_to_ns(double secs) {
  if (!(secs > 0)) return 0;              /* also NaN */
  if (secs > 9.2e9) return INT64_MAX / 2; /* ~290 years: never */
  int64_t ns = (int64_t)(secs * 1e9);
  return ns > 0 ? ns : 1; /* a positive duration is never 0 ns */
}

static int64_t when_after(double secs) {
  int64_t d = secs_to_ns(secs);
  int64_t now = nanotime();
  return d >= INT64_MAX / 2 ? INT64_MAX / 2 : now + d;
}

int64_t wall_to_mono(double wall) {
  double d = (wall - walltime()) * 1e9;
  if (d != d) d = 0; /* NaN: now, i.e. already past */
  if (d > 9.2e18) d = 9.2e18;
  int64_t now = nanotime();
  int64_t when = d < (double)-now ? 1 : now + (int64_t)d;
  return when != 0 ? when : 1;
}

/* ---- the heap ---- */

static bool timer_less(const rt_timer *a, const rt_timer *b) {
  return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void heap_set(p_t *pp, int32_t i, rt_timer *t) {
  pp->timers[i] = t;
  t->idx = i;
}

static void siftup(p_t *pp, int32_t i) {
  rt_timer *t = pp->timers[i];
  while (i > 0) {
    int32_t parent = (i - 1) / HEAP_ARITY;
    if (!timer_less(t, pp->timers[parent])) break;
    heap_set(pp, i, pp->timers[parent]);
    i = parent;
  }
  heap_set(pp, i, t);
}

static void siftdown(p_t *pp, int32_t i) {
  rt_timer *t = pp->timers[i];
  int32_t n = pp->ntimers;
  for (;;) {
    int32_t first = i * HEAP_ARITY + 1;
    if (first >= n) break;
    int32_t best = first;
    for (int32_t c = first + 1; c < first + HEAP_ARITY && c < n; c++)
      if (timer_less(pp->timers[c], pp->timers[best])) best = c;
    if (!timer_less(pp->timers[best], t)) break;
    heap_set(pp, i, pp->timers[best]);
    i = best;
  }
  heap_set(pp, i, t);
}

/* The timer at i moved (or changed its key): restore the heap order. */
static void heap_fix(p_t *pp, int32_t i) {
  if (i > 0 && timer_less(pp->timers[i], pp->timers[(i - 1) / HEAP_ARITY])) siftup(pp, i);
  else siftdown(pp, i);
}

static void update_timer0(p_t *pp) {
  atomic_store_explicit(&pp->timer0when, pp->ntimers ? pp->timers[0]->when : 0, memory_order_release);
}

void timerheap_push(p_t *pp, rt_timer *t) {
  if (pp->ntimers == pp->timerscap) {
    pp->timerscap = pp->timerscap ? pp->timerscap * 2 : HEAP_MINCAP;
    pp->timers = rt_realloc(pp->timers, (size_t)pp->timerscap * sizeof *pp->timers);
  }
  t->seq = ++pp->timerseq;
  t->p = pp;
  heap_set(pp, pp->ntimers++, t);
  siftup(pp, t->idx);
  update_timer0(pp);
}

void timerheap_remove(p_t *pp, int32_t i) {
  rt_timer *t = pp->timers[i];
  rt_timer *last = pp->timers[--pp->ntimers];
  t->idx = -1;
  if (i < pp->ntimers) {
    heap_set(pp, i, last);
    heap_fix(pp, i);
  }
  /* A burst of timers (a million contexts with deadlines, collected
   * later) must not leave its array behind. */
  if (pp->timerscap > HEAP_MINCAP && pp->ntimers < pp->timerscap / 4) {
    pp->timerscap /= 2;
    pp->timers = rt_realloc(pp->timers, (size_t)pp->timerscap * sizeof *pp->timers);
  }
  update_timer0(pp);
}

/* A P asleep must sleep again for an earlier deadline. */
static void wake_for(p_t *pp) {
  if (getp() != pp) netpoll_break(pp);
}

void timer_add(p_t *pp, rt_timer *t, int64_t when) {
  rt_lock(&pp->timers_lock);
  t->when = when;
  timerheap_push(pp, t);
  bool earliest = t->idx == 0;
  rt_unlock(&pp->timers_lock);
  if (earliest) wake_for(pp);
}

bool timer_del(rt_timer *t) {
  p_t *pp = t->p;
  if (!pp) return false;
  rt_lock(&pp->timers_lock);
  bool armed = t->idx >= 0;
  if (armed) timerheap_remove(pp, t->idx);
  rt_unlock(&pp->timers_lock);
  return armed;
}

void timer_arm(p_t *pp, rt_timer *t, int64_t when) {
  p_t *hp = t->p;
  if (hp) {
    rt_lock(&hp->timers_lock);
    if (t->idx >= 0) {
      bool earliest = false;
      if (t->when != when) {
        t->when = when;
        heap_fix(hp, t->idx);
        update_timer0(hp);
        earliest = t->idx == 0;
      }
      rt_unlock(&hp->timers_lock);
      if (earliest) wake_for(hp);
      return;
    }
    rt_unlock(&hp->timers_lock);
  }
  timer_add(pp, t, when);
}

int64_t timers_run(p_t *pp, int64_t now) {
  rt_lock(&pp->timers_lock);
  while (pp->ntimers > 0 && pp->timers[0]->when <= now) {
    rt_timer *t = pp->timers[0];
    if (t->period > 0) { /* next tick on its grid, skipping missed ones */
      t->when += t->period * (1 + (now - t->when) / t->period);
      t->seq = ++pp->timerseq;
      siftdown(pp, 0);
      update_timer0(pp);
    } else {
      timerheap_remove(pp, 0);
    }
    /* A weak slot's object with no reference left is being freed on some
     * thread, which waits for this lock to delete the timer: leave it. */
    rt_object *held = NULL;
    if (t->weak) {
      if (!rt_tryretain(t->ref)) continue;
      held = t->ref;
    }
    rt_unlock(&pp->timers_lock);
    t->f(pp, t, now); /* t may be gone once it returns */
    if (held) rt_release(held);
    rt_lock(&pp->timers_lock);
  }
  int64_t next = pp->ntimers ? pp->timers[0]->when : 0;
  rt_unlock(&pp->timers_lock);
  return next;
}

void timers_close(p_t *pp) {
  while (pp->ntimers > 0) {
    rt_timer *t = pp->timers[0];
    timerheap_remove(pp, 0);
    if (t->ref && !t->weak) rt_release(t->ref); /* the heap's reference: it will never fire */
  }
}

/* ---- time.sleep ---- */

static void sleep_fire(p_t *pp, rt_timer *t, int64_t now) {
  (void)now;
  g_t *gp = t->arg;
  gp->live->sleep = NULL;
  gp->live->op = OP_NONE;
  t->arg = pp->timerfree;
  pp->timerfree = t;
  if (gp->p != pp) rt_throw("runtime: a sleeper's timer fired on another P");
  /* Not goready, which makes it runnext: of sleepers whose deadlines
   * passed together the last would run first. The tail keeps their
   * deadline order. */
  casgstatus(gp, G_WAITING, G_RUNNABLE);
  gp->waitreason = WR_NONE;
  runqput(pp, gp, false);
}

void sleep_cancel(p_t *pp, g_t *gp) {
  rt_timer *t = gp->live->sleep;
  timer_del(t);
  t->arg = pp->timerfree;
  pp->timerfree = t;
  gp->live->sleep = NULL;
  gp->live->op = OP_NONE;
}

/* C API sleep(secs) -> nothing, or (ERR, code). May park. */
int time_sleep_block(lua_State *L) {
  double secs = luaL_checknumber(L, 1);
  if (!(secs > 0)) return 0;
  p_t *pp = getp();
  g_t *gp = pp ? getg() : NULL;
  int32_t can = rt_can_block(L, gp);
  if (can != RC_OK) return rt_push_err(L, can);
  rt_timer *t = pp->timerfree;
  if (t) pp->timerfree = t->arg;
  else t = rt_malloc(sizeof *t);
  t->f = sleep_fire;
  t->arg = gp;
  t->ref = NULL;
  t->weak = false;
  t->period = 0;
  t->idx = -1;
  gp->live->sleep = t;
  gp->live->op = OP_SLEEP;
  timer_add(pp, t, when_after(secs));
  gopark(gp, NULL, WR_SLEEP);
  return rt_park_yield(L, gp, SHAPE_NONE);
}

/* ---- a channel's timer: Timer, Ticker, after, tick ---- */

typedef struct chantimer {
  rt_timer t;     /* weak; in a heap only while armed with a receiver waiting */
  hchan *c;       /* the channel that owns it */
  int64_t when;   /* next delivery, monotonic ns; 0: stopped, or a one-shot that delivered */
  int64_t period; /* a ticker's, ns; 0 for a one-shot */
  bool inheap;    /* it may be in a heap (the fire path pops without c's lock) */
} chantimer;

/* c locked, tm->when due by now: send the time it was due, then set the
 * next deadline. A ticker's tick that finds the buffer full is dropped. */
static void chantimer_deliver(hchan *c, chantimer *tm, int64_t now) {
  double due = walltime() - (double)(now - tm->when) * 1e-9;
  if (tm->period > 0) tm->when += tm->period * (1 + (now - tm->when) / tm->period);
  else tm->when = 0;
  val v = {{COPY_NUM, {.num = due}}, 0, 0};
  chan_offer(c, v);
}

void chantimer_sync(hchan *c) {
  chantimer *tm = c->timer;
  if (tm->when != 0 && c->recvq.first) {
    p_t *pp = getp();
    timer_arm(pp ? pp : c->owner, &tm->t, tm->when);
    tm->inheap = true;
  } else if (tm->inheap) {
    timer_del(&tm->t);
    tm->inheap = false;
  }
}

static void chantimer_run_at(hchan *c, int64_t now) {
  chantimer *tm = c->timer;
  if (tm->when == 0 || tm->when > now) return;
  chantimer_deliver(c, tm, now);
  chantimer_sync(c); /* a receiver took it, or a ticker's next deadline */
}

/* The precise clock costs ~50 ns on this kind of machine, the coarse one
 * ~10: it lags the precise one by at most a tick (10 ms at HZ=100), which
 * settles a deadline further off than that. It can only say "not yet". */
#define COARSE_SLACK 10000000

void chantimer_run(hchan *c) {
  int64_t when = c->timer->when;
  if (when == 0) return;
#ifdef CLOCK_MONOTONIC_COARSE
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  if ((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + COARSE_SLACK < when) return;
#endif
  chantimer_run_at(c, nanotime());
}

/* The heap's call: a receiver waits (or waited, when it was popped). */
static void chantimer_fire(p_t *pp, rt_timer *t, int64_t now) {
  (void)pp;
  chantimer *tm = t->arg;
  hchan *c = tm->c; /* kept alive by timers_run for this call */
  chan_lock(c);
  chantimer_run_at(c, now);
  chantimer_sync(c); /* popped: a slot again if a receiver still waits */
  chan_unlock(c);
}

void chantimer_free(chantimer *tm) {
  timer_del(&tm->t); /* the heap's slot is weak: it goes with the channel */
  rt_free(tm);
}

/* A receive-only channel of capacity 1 with its timer. */
static hchan *chantimer_new(p_t *pp, int64_t when, int64_t period) {
  hchan *c = chan_make(pp, 1);
  c->recv_only = true;
  chantimer *tm = rt_calloc(1, sizeof *tm);
  tm->t.idx = -1;
  tm->t.f = chantimer_fire;
  tm->t.arg = tm;
  tm->t.ref = &c->obj;
  tm->t.weak = true;
  tm->c = c;
  tm->when = when;
  tm->period = period;
  c->timer = tm;
  return c;
}

/* Stop (when 0) or reset: true if the timer was armed, or a value it sent
 * was still unreceived (Go 1.23's Stop and Reset). period: a ticker's new
 * one, or 0 to keep it. */
static bool chantimer_modify(hchan *c, int64_t when, int64_t period) {
  chan_lock(c);
  chantimer *tm = c->timer;
  bool pending = tm->when != 0;
  tm->when = when;
  if (period > 0) tm->period = period;
  if (chan_drain(c)) pending = true;
  chantimer_sync(c);
  chan_unlock(c);
  return pending;
}

/* ---- Timer, Ticker, after_func ---- */

/* What core.timer makes: a Timer, a Ticker, an after_func Timer, or, for
 * time.after and time.tick, only the channel. Lua sees 0, 1, 2 for the
 * first three (timer_kind). */
enum timer_kind { TK_TIMER, TK_TICKER, TK_FUNC, TK_AFTER, TK_TICK };

typedef struct timer_obj {
  rt_object obj;
  uint8_t kind; /* TK_TIMER, TK_TICKER or TK_FUNC */
  hchan *c;     /* TK_TIMER, TK_TICKER: the channel, which owns the timer */
  rt_timer t;   /* TK_FUNC: the heap holds a reference while it is armed */
  int32_t fbox; /* TK_FUNC: the function, in its owner's vals */
  p_t *owner;   /* TK_FUNC: whose heap and VM */
} timer_obj;

static void func_fire(p_t *pp, rt_timer *t, int64_t now) {
  (void)now;
  timer_obj *to = t->arg;
  lua_State *L = pp->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, pp->vals_ref);
  int32_t box = box_alloc(pp);
  lua_rawgeti(L, -1, to->fbox); /* a new goroutine runs f */
  lua_rawseti(L, -2, box);
  newproc(pp, box, 0);
  lua_pop(L, 1);
  rt_release(&to->obj); /* the heap's reference */
}

/* Re-arm an after_func at when, or stop it (when 0), under the owner's
 * heap lock so that concurrent stops and resets cannot both push it. True
 * if it was armed. It always runs on its owner's heap: f is in that VM. */
static bool func_modify(timer_obj *to, int64_t when) {
  p_t *pp = to->owner;
  rt_retain(&to->obj); /* the heap's, should it arm: before the fire path can see it */
  rt_lock(&pp->timers_lock);
  bool armed = to->t.idx >= 0;
  if (armed) timerheap_remove(pp, to->t.idx);
  bool earliest = false;
  if (when) {
    to->t.when = when;
    timerheap_push(pp, &to->t);
    earliest = to->t.idx == 0;
  }
  rt_unlock(&pp->timers_lock);
  if (armed) rt_release(&to->obj); /* the old slot's */
  if (!when) rt_release(&to->obj); /* not armed: the one taken above */
  if (earliest) wake_for(pp);
  return armed;
}

/* core.timer's: for TK_AFTER and TK_TICK the result is the channel itself,
 * which starts with its rt_object header as every object does; the caller
 * only ever uses the result as an rt_object. */
timer_obj *timer_obj_new(p_t *pp, int kind, double secs, int32_t fbox) {
  if (kind == TK_AFTER) return (timer_obj *)(void *)chantimer_new(pp, when_after(secs), 0);
  int64_t period = secs_to_ns(secs);
  if (kind == TK_TICK) return (timer_obj *)(void *)chantimer_new(pp, nanotime() + period, period);
  timer_obj *to = rt_calloc(1, sizeof *to);
  rt_object_init(&to->obj, RT_TIMER);
  to->kind = (uint8_t)kind;
  if (kind == TK_TIMER) {
    to->c = chantimer_new(pp, when_after(secs), 0);
  } else if (kind == TK_TICKER) {
    to->c = chantimer_new(pp, nanotime() + period, period);
  } else {
    to->owner = pp;
    to->fbox = fbox;
    to->t.idx = -1;
    to->t.f = func_fire;
    to->t.arg = to;
    to->t.ref = &to->obj;
    func_modify(to, when_after(secs));
  }
  return to;
}

hchan *timer_obj_chan(timer_obj *to) { return to->c; }

int32_t timer_kind(proxy *px) { return ((timer_obj *)px->obj)->kind; }

void timer_object_free(rt_object *o) {
  timer_obj *to = (timer_obj *)o;
  if (to->c) rt_release(&to->c->obj);
  if (to->fbox) box_free_dirty(to->owner, to->fbox);
  rt_free(to);
}

/* FFI: stop. True if that stopped the timer (after_func: before f ran; a
 * Timer: before its time was received). After it returns, no time from
 * before is received (Go 1.23). */
int32_t timer_stop(proxy *px) {
  timer_obj *to = (timer_obj *)px->obj;
  return to->kind == TK_FUNC ? func_modify(to, 0) : chantimer_modify(to->c, 0, 0);
}

/* FFI: reset to fire after secs (a ticker: every secs). True as for stop. */
int32_t timer_reset(proxy *px, double secs) {
  timer_obj *to = (timer_obj *)px->obj;
  if (to->kind == TK_FUNC) return func_modify(to, when_after(secs));
  if (to->kind == TK_TIMER) return chantimer_modify(to->c, when_after(secs), 0);
  int64_t period = secs_to_ns(secs);
  return chantimer_modify(to->c, nanotime() + period, period);
}
