/*
 * time.c — timers on each P, after Go's time.go.
 *
 * Invariants:
 *   - Each P has a 4-ary min-heap of armed timers ordered by (when, seq):
 *     the earliest first, equal deadlines in the order they were armed.
 *     timers_lock guards the heap, timer0when and every armed timer's
 *     when/idx/p; t->idx >= 0 exactly when t is in a heap.
 *   - A timer's callback runs on the P that armed it, from the scheduler
 *     (never inside a goroutine), with the heap unlocked.
 *   - The P's libev loop holds a single ev_timer, armed for the heap's top
 *     before the P sleeps; libev never sees the heap.
 *   - An armed Timer/Ticker object is referenced by its heap slot; a sleeping
 *     G's timer is embedded in the G and needs no reference.
 *   - Timers use CLOCK_MONOTONIC in nanoseconds; durations in the Lua API are
 *     seconds, and a timer never fires before its duration has elapsed.
 */
#include <math.h>

#include <ev.h>
#include <lauxlib.h>

#include "rt.h"

#define HEAP_ARITY 4

static int64_t secs_to_ns(double secs) {
  if (!(secs > 0)) return 0;                /* also NaN */
  if (secs > 9.2e9) return INT64_MAX / 2;   /* ~290 years: never */
  return (int64_t)(secs * 1e9);
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

static void update_timer0(p_t *pp) {
  atomic_store_explicit(&pp->timer0when, pp->ntimers ? pp->timers[0]->when : 0, memory_order_release);
}

void timerheap_push(p_t *pp, rt_timer *t) {
  if (pp->ntimers == pp->timerscap) {
    pp->timerscap = pp->timerscap ? pp->timerscap * 2 : 64;
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
    if (i > 0 && timer_less(last, pp->timers[(i - 1) / HEAP_ARITY])) siftup(pp, i);
    else siftdown(pp, i);
  }
  update_timer0(pp);
}

void timer_add(p_t *pp, rt_timer *t, int64_t when) {
  rt_lock(&pp->timers_lock);
  t->when = when;
  timerheap_push(pp, t);
  bool earliest = t->idx == 0;
  rt_unlock(&pp->timers_lock);
  /* A P sleeping in its loop must re-arm for an earlier deadline. */
  if (earliest && getp() != pp) ev_async_send(pp->loop, (ev_async *)pp->wake_ev);
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

int64_t timers_run(p_t *pp, int64_t now) {
  rt_lock(&pp->timers_lock);
  while (pp->ntimers > 0 && pp->timers[0]->when <= now) {
    rt_timer *t = pp->timers[0];
    if (t->period > 0) { /* a ticker: next tick on its grid, skipping missed ones */
      t->when += t->period * (1 + (now - t->when) / t->period);
      t->seq = ++pp->timerseq;
      siftdown(pp, 0);
      update_timer0(pp);
    } else {
      timerheap_remove(pp, 0);
    }
    rt_unlock(&pp->timers_lock);
    t->f(pp, t, now);
    rt_lock(&pp->timers_lock);
  }
  int64_t next = pp->ntimers ? pp->timers[0]->when : 0;
  rt_unlock(&pp->timers_lock);
  return next;
}

static void timer_ev_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop, (void)w, (void)revents; /* waking the loop is all it does */
}

void time_p_init(p_t *pp) {
  ev_timer *w = rt_malloc(sizeof *w);
  ev_timer_init(w, timer_ev_cb, 0, 0);
  pp->timer_ev = w;
}

void time_p_arm(p_t *pp, int64_t now) {
  ev_timer *w = pp->timer_ev;
  int64_t when = atomic_load_explicit(&pp->timer0when, memory_order_acquire);
  ev_timer_stop(pp->loop, w);
  if (!when) return;
  ev_now_update(pp->loop);
  double after = when > now ? (double)(when - now) * 1e-9 : 0;
  ev_timer_set(w, after, 0);
  ev_timer_start(pp->loop, w);
}

void timers_close(p_t *pp) {
  if (pp->timer_ev) {
    ev_timer_stop(pp->loop, pp->timer_ev);
    rt_free(pp->timer_ev);
    pp->timer_ev = NULL;
  }
  while (pp->ntimers > 0) {
    rt_timer *t = pp->timers[0];
    timerheap_remove(pp, 0);
    if (t->ref) rt_release(t->ref); /* the heap's reference: it will never fire */
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
  goready(gp);
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
  t->period = 0;
  t->idx = -1;
  gp->live->sleep = t;
  gp->live->op = OP_SLEEP;
  timer_add(pp, t, when_after(secs));
  gopark(gp, NULL, WR_SLEEP);
  return rt_park_yield(L, gp, SHAPE_NONE);
}

/* ---- Timer, Ticker, after_func ---- */

enum timer_kind { TK_SEND, TK_TICK, TK_FUNC };

typedef struct timer_obj {
  rt_object obj;
  rt_timer t;
  uint8_t kind;
  hchan *c;     /* TK_SEND, TK_TICK: the channel that receives the time */
  int32_t fbox; /* TK_FUNC: the function, in its owner's vals */
  p_t *owner;
} timer_obj;

static void timer_obj_fire(p_t *pp, rt_timer *t, int64_t now) {
  (void)now;
  timer_obj *to = t->arg;
  lua_State *L = pp->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, pp->vals_ref);
  int32_t box = box_alloc(pp);
  if (to->kind == TK_FUNC) { /* a new goroutine runs f */
    lua_rawgeti(L, -1, to->fbox);
    lua_rawseti(L, -2, box);
    newproc(pp, box, 0);
  } else {
    double t = walltime();
    lua_pushnumber(L, t);
    lua_rawseti(L, -2, box);
    val v = {{atomic_load(&to->c->shared) ? COPY_NUM : COPY_NONE, {.num = t}}, box, pp->id};
    if (!chan_offer(to->c, v)) { /* a ticker whose reader is behind: drop */
      lua_pushnil(L);
      lua_rawseti(L, -2, box);
      box_free(pp, box);
    }
  }
  lua_pop(L, 1);
  if (t->period == 0) rt_release(&to->obj); /* the heap's reference */
}

/* A Timer always runs on its owner's heap: its channel's and its
 * function's boxes are in that VM. */
static void timer_obj_arm(timer_obj *to, int64_t when) {
  rt_retain(&to->obj);
  timer_add(to->owner, &to->t, when);
}

/* Stop, and drop any value already sent: after stop() returns, no stale
 * time is received (Go 1.23 semantics). True if it was armed. */
static bool timer_obj_stop(timer_obj *to) {
  bool armed = timer_del(&to->t);
  if (armed) rt_release(&to->obj);
  if (to->c) chan_drain(to->c);
  return armed;
}

timer_obj *timer_obj_new(p_t *pp, int kind, double secs, int32_t fbox) {
  timer_obj *to = rt_calloc(1, sizeof *to);
  rt_object_init(&to->obj, RT_TIMER);
  to->kind = (uint8_t)kind;
  to->owner = pp;
  to->fbox = fbox;
  to->t.idx = -1;
  to->t.f = timer_obj_fire;
  to->t.arg = to;
  to->t.ref = &to->obj;
  if (kind != TK_FUNC) to->c = chan_make(pp, 1);
  if (kind == TK_TICK) to->t.period = secs_to_ns(secs);
  timer_obj_arm(to, when_after(secs));
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

int32_t timer_stop(proxy *px) { return timer_obj_stop((timer_obj *)px->obj); }

/* Reset to fire after secs (a ticker: every secs). True if it was armed. */
int32_t timer_reset(proxy *px, double secs) {
  timer_obj *to = (timer_obj *)px->obj;
  bool armed = timer_obj_stop(to);
  if (to->kind == TK_TICK) to->t.period = secs_to_ns(secs);
  timer_obj_arm(to, when_after(secs));
  return armed;
}
