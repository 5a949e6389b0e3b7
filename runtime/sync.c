/*
 * sync.c — Mutex, RWMutex, WaitGroup, Once and Cond, after Go's sync
 * package, on top of sema.c.
 *
 * Invariants:
 *   - Every field these algorithms share between goroutines is changed with
 *     atomics only; the semaphores' queues are guarded by their own locks.
 *   - Mutex.state: bit 0 locked, bit 1 a waiter was woken, bit 2 starvation
 *     mode, the rest the number of waiters. In normal mode a woken waiter
 *     competes with newcomers; a waiter that failed for more than 1 ms turns
 *     on starvation mode, in which unlock hands the mutex straight to the
 *     oldest waiter, until that waiter is the last or waited less than 1 ms.
 *   - A blocking operation never changes shared state before it knows its G
 *     can park: the Lua side checks that it may yield, the C side that there
 *     is a G and no non-yieldable resume under it.
 *   - Lock slow paths are steps (mode 1: start, mode 2: resumed after a
 *     park); their state across parks lives in the G (mu_*), which can be
 *     in at most one lock loop at a time.
 */
#include <lauxlib.h>

#include "rt.h"

#define MUTEX_LOCKED 1
#define MUTEX_WOKEN 2
#define MUTEX_STARVING 4
#define MUTEX_WAITER_SHIFT 3
#define STARVATION_NS 1000000
#define RWMUTEX_MAX_READERS (1 << 30)

enum { MODE_TRY = 0, MODE_START = 1, MODE_RESUMED = 2 };

typedef struct mutex {
  _Atomic int32_t state;
  sema sema;
} mutex;

typedef struct mutex_obj {
  rt_object obj;
  mutex m;
} mutex_obj;

typedef struct rwmutex_obj {
  rt_object obj;
  mutex w; /* held by a pending or active writer */
  sema writersem, readersem;
  _Atomic int32_t readercount; /* negative while a writer is pending */
  _Atomic int32_t readerwait;  /* readers the pending writer waits for */
} rwmutex_obj;

typedef struct waitgroup_obj {
  rt_object obj;
  _Atomic uint64_t state; /* counter << 32 | waiters */
  sema sema;
} waitgroup_obj;

typedef struct once_obj {
  rt_object obj;
  _Atomic uint32_t done;
  mutex m;
} once_obj;

typedef struct cond_obj {
  rt_object obj;
  notifylist nl;
  rt_object *locker; /* a mutex or an rwmutex (its write lock) */
} cond_obj;

rt_object *sync_object_new(enum rt_type type) {
  size_t size = type == RT_MUTEX ? sizeof(mutex_obj)
              : type == RT_RWMUTEX ? sizeof(rwmutex_obj)
              : type == RT_WAITGROUP ? sizeof(waitgroup_obj)
              : type == RT_ONCE ? sizeof(once_obj)
              : sizeof(cond_obj);
  rt_object *o = rt_calloc(1, size);
  rt_object_init(o, type);
  return o;
}

void sync_object_free(rt_object *o) {
  if (o->type == RT_COND && ((cond_obj *)o)->locker) rt_release(((cond_obj *)o)->locker);
  rt_free(o);
}

void cond_set_locker(rt_object *cond, rt_object *locker) {
  rt_retain(locker);
  ((cond_obj *)cond)->locker = locker;
}

rt_object *cond_locker(rt_object *cond) { return ((cond_obj *)cond)->locker; }

static mutex *mutex_of(rt_object *o) {
  switch (o->type) {
  case RT_MUTEX: return &((mutex_obj *)o)->m;
  case RT_RWMUTEX: return &((rwmutex_obj *)o)->w;
  case RT_ONCE: return &((once_obj *)o)->m;
  case RT_COND: return mutex_of(((cond_obj *)o)->locker);
  default: rt_throw("sync: %s has no mutex", rt_type_name(o->type));
  }
}

/* ---- Mutex ---- */

/* Lock's fast path: 1 if the mutex was free and is now ours. */
int32_t mutex_lock_fast(proxy *px) {
  if (preempt_pending(getp())) return RC_PREEMPT;
  int32_t unlocked = 0;
  return atomic_compare_exchange_strong(&mutex_of(px->obj)->state, &unlocked, MUTEX_LOCKED);
}

int32_t mutex_try_lock(proxy *px) {
  mutex *m = mutex_of(px->obj);
  int32_t old = atomic_load(&m->state);
  if (old & (MUTEX_LOCKED | MUTEX_STARVING)) return 0;
  return atomic_compare_exchange_strong(&m->state, &old, old | MUTEX_LOCKED);
}

/* After winning the semaphore: true if the mutex was handed to us. */
static bool mutex_woken(mutex *m, g_t *gp) {
  gp->live->mu_starving = gp->live->mu_starving || nanotime() - gp->live->sema.waitstart > STARVATION_NS;
  int32_t old = atomic_load(&m->state);
  if (old & MUTEX_STARVING) {
    /* Starvation mode: ownership was handed off, the state is ours to fix. */
    if ((old & (MUTEX_LOCKED | MUTEX_WOKEN)) || (old >> MUTEX_WAITER_SHIFT) == 0)
      rt_throw("sync: inconsistent mutex state");
    int32_t delta = MUTEX_LOCKED - (1 << MUTEX_WAITER_SHIFT);
    if (!gp->live->mu_starving || (old >> MUTEX_WAITER_SHIFT) == 1) delta -= MUTEX_STARVING;
    atomic_fetch_add(&m->state, delta);
    return true;
  }
  gp->live->mu_awoke = true;
  return false;
}

static int32_t mutex_lock_slow(mutex *m, int32_t mode) {
  g_t *gp = getg();
  if (mode == MODE_START) {
    gp->live->sema.waitstart = 0;
    gp->live->mu_starving = gp->live->mu_awoke = false;
  } else {
    if (semacquire_step(&m->sema, true, WR_SYNC_MUTEX_LOCK, true) == RC_PARK) return RC_PARK;
    if (mutex_woken(m, gp)) return RC_OK;
  }
  int32_t old = atomic_load(&m->state);
  for (;;) {
    int32_t new = old;
    if (!(old & MUTEX_STARVING)) new |= MUTEX_LOCKED; /* don't grab a starving mutex */
    if (old & (MUTEX_LOCKED | MUTEX_STARVING)) new += 1 << MUTEX_WAITER_SHIFT;
    if (gp->live->mu_starving && (old & MUTEX_LOCKED)) new |= MUTEX_STARVING;
    if (gp->live->mu_awoke) {
      if (!(new & MUTEX_WOKEN)) rt_throw("sync: inconsistent mutex state");
      new &= ~MUTEX_WOKEN;
    }
    if (!atomic_compare_exchange_weak(&m->state, &old, new)) continue;
    if (!(old & (MUTEX_LOCKED | MUTEX_STARVING))) return RC_OK; /* locked with the CAS */
    bool lifo = gp->live->sema.waitstart != 0; /* waited before: to the queue's front */
    if (!gp->live->sema.waitstart) gp->live->sema.waitstart = nanotime();
    if (semacquire_step(&m->sema, lifo, WR_SYNC_MUTEX_LOCK, false) == RC_PARK) return RC_PARK;
    if (mutex_woken(m, gp)) return RC_OK;
    old = atomic_load(&m->state);
  }
}

int32_t mutex_lock_step(proxy *px, int32_t mode) { return mutex_lock_slow(mutex_of(px->obj), mode); }

static int32_t mutex_unlock_m(mutex *m) {
  int32_t new = atomic_fetch_add(&m->state, -MUTEX_LOCKED) - MUTEX_LOCKED;
  if (new == 0) return RC_OK;
  if (!((new + MUTEX_LOCKED) & MUTEX_LOCKED)) {
    atomic_fetch_add(&m->state, MUTEX_LOCKED); /* undo: the error is recoverable here */
    return RC_UNLOCKED;
  }
  if (!(new & MUTEX_STARVING)) {
    int32_t old = new;
    for (;;) {
      /* Nobody to wake, or someone already woken or holding it. */
      if ((old >> MUTEX_WAITER_SHIFT) == 0 || (old & (MUTEX_LOCKED | MUTEX_WOKEN | MUTEX_STARVING)))
        return RC_OK;
      new = (old - (1 << MUTEX_WAITER_SHIFT)) | MUTEX_WOKEN;
      if (atomic_compare_exchange_weak(&m->state, &old, new)) return semrelease(&m->sema, false);
    }
  }
  /* Starvation mode: hand the mutex to the next waiter, and let it run. */
  return semrelease(&m->sema, true);
}

int32_t mutex_unlock(proxy *px) { return mutex_unlock_m(mutex_of(px->obj)); }

/* ---- RWMutex ---- */

int32_t rw_try_rlock(proxy *px) {
  rwmutex_obj *rw = (rwmutex_obj *)px->obj;
  int32_t c = atomic_load(&rw->readercount);
  while (c >= 0)
    if (atomic_compare_exchange_weak(&rw->readercount, &c, c + 1)) return 1;
  return 0;
}

/* FFI: RWMutex.RLock's fast path, a preemption point (try_rlock is not). */
int32_t rw_rlock_fast(proxy *px) { return preempt_pending(getp()) ? RC_PREEMPT : rw_try_rlock(px); }

int32_t rw_rlock_step(proxy *px, int32_t mode) {
  rwmutex_obj *rw = (rwmutex_obj *)px->obj;
  if (mode == MODE_RESUMED) return semacquire_step(&rw->readersem, false, WR_SYNC_RWMUTEX_RLOCK, true);
  if (atomic_fetch_add(&rw->readercount, 1) + 1 >= 0) return RC_OK;
  /* A writer is pending: wait for its Unlock. */
  return semacquire_step(&rw->readersem, false, WR_SYNC_RWMUTEX_RLOCK, false);
}

int32_t rw_runlock(proxy *px) {
  rwmutex_obj *rw = (rwmutex_obj *)px->obj;
  int32_t r = atomic_fetch_add(&rw->readercount, -1) - 1;
  if (r >= 0) return RC_OK;
  if (r + 1 == 0 || r + 1 == -RWMUTEX_MAX_READERS) {
    atomic_fetch_add(&rw->readercount, 1);
    return RC_UNLOCKED;
  }
  /* A writer is pending: the last reader it waits for wakes it. */
  if (atomic_fetch_add(&rw->readerwait, -1) - 1 == 0) return semrelease(&rw->writersem, false);
  return RC_OK;
}

/* After rw.w is held: announce the writer, wait for active readers. */
int32_t rw_lock_step(proxy *px, int32_t mode) {
  rwmutex_obj *rw = (rwmutex_obj *)px->obj;
  if (mode == MODE_RESUMED) return semacquire_step(&rw->writersem, false, WR_SYNC_RWMUTEX_LOCK, true);
  int32_t r = atomic_fetch_add(&rw->readercount, -RWMUTEX_MAX_READERS);
  if (r != 0 && atomic_fetch_add(&rw->readerwait, r) + r != 0)
    return semacquire_step(&rw->writersem, false, WR_SYNC_RWMUTEX_LOCK, false);
  return RC_OK;
}

int32_t rw_try_lock(proxy *px) {
  rwmutex_obj *rw = (rwmutex_obj *)px->obj;
  if (!mutex_try_lock(px)) return 0;
  int32_t zero = 0;
  if (!atomic_compare_exchange_strong(&rw->readercount, &zero, -RWMUTEX_MAX_READERS)) {
    mutex_unlock_m(&rw->w);
    return 0;
  }
  return 1;
}

/* FFI: RWMutex.Lock's fast path, a preemption point (try_lock is not). */
int32_t rw_lock_fast(proxy *px) { return preempt_pending(getp()) ? RC_PREEMPT : rw_try_lock(px); }

int32_t rw_unlock(proxy *px) {
  rwmutex_obj *rw = (rwmutex_obj *)px->obj;
  int32_t r = atomic_fetch_add(&rw->readercount, RWMUTEX_MAX_READERS) + RWMUTEX_MAX_READERS;
  if (r >= RWMUTEX_MAX_READERS) {
    atomic_fetch_add(&rw->readercount, -RWMUTEX_MAX_READERS);
    return RC_UNLOCKED;
  }
  for (int32_t i = 0; i < r; i++) semrelease(&rw->readersem, false); /* blocked readers */
  return mutex_unlock_m(&rw->w);
}

/* ---- WaitGroup ---- */

int32_t wg_add(proxy *px, int32_t delta) {
  waitgroup_obj *wg = (waitgroup_obj *)px->obj;
  uint64_t state = atomic_fetch_add(&wg->state, (uint64_t)(int64_t)delta << 32) + ((uint64_t)(int64_t)delta << 32);
  int32_t v = (int32_t)(state >> 32);
  uint32_t w = (uint32_t)state;
  if (v < 0) {
    atomic_fetch_sub(&wg->state, (uint64_t)(int64_t)delta << 32); /* recoverable: undo */
    return RC_NEGATIVE;
  }
  if (w != 0 && delta > 0 && v == delta) return RC_MISUSE;
  if (v > 0 || w == 0) return RC_OK;
  /* Counter hit zero with waiters: nobody may Add or Wait now. */
  if (atomic_load(&wg->state) != state) return RC_MISUSE;
  atomic_store(&wg->state, 0);
  for (; w != 0; w--) semrelease(&wg->sema, false);
  return RC_OK;
}

int32_t wg_count(proxy *px) { return (int32_t)(atomic_load(&((waitgroup_obj *)px->obj)->state) >> 32); }

/* MODE_TRY: RC_OK if the counter is zero, else RC_WOULDBLOCK. */
int32_t wg_wait_step(proxy *px, int32_t mode) {
  waitgroup_obj *wg = (waitgroup_obj *)px->obj;
  if (mode == MODE_RESUMED) {
    int32_t rc = semacquire_step(&wg->sema, false, WR_SYNC_WAITGROUP_WAIT, true);
    if (rc != RC_OK) return rc;
    return atomic_load(&wg->state) != 0 ? RC_REUSED : RC_OK;
  }
  if (mode == MODE_TRY && preempt_pending(getp())) return RC_PREEMPT;
  uint64_t state = atomic_load(&wg->state);
  for (;;) {
    if ((state >> 32) == 0) return RC_OK;
    if (mode == MODE_TRY) return RC_WOULDBLOCK;
    if (atomic_compare_exchange_weak(&wg->state, &state, state + 1)) break;
  }
  int32_t rc = semacquire_step(&wg->sema, false, WR_SYNC_WAITGROUP_WAIT, false);
  if (rc != RC_OK) return rc;
  return atomic_load(&wg->state) != 0 ? RC_REUSED : RC_OK;
}

/* ---- Once ---- */

int32_t once_done(proxy *px) { return (int32_t)atomic_load(&((once_obj *)px->obj)->done); }
void once_set_done(proxy *px) { atomic_store(&((once_obj *)px->obj)->done, 1); }

/* ---- Cond ---- */

static int32_t cond_wait_step(proxy *px, int32_t mode) {
  g_t *gp = getg();
  return notifylist_wait_step(&((cond_obj *)px->obj)->nl, gp->live->sema.ticket, mode == MODE_RESUMED);
}

void cond_signal(proxy *px) { notifylist_notify_one(&((cond_obj *)px->obj)->nl); }
void cond_broadcast(proxy *px) { notifylist_notify_all(&((cond_obj *)px->obj)->nl); }

/* ---- Blocking entry points (C API) ---- */

enum step_id { STEP_MUTEX_LOCK = 1, STEP_RW_RLOCK, STEP_RW_LOCK, STEP_WG_WAIT, STEP_COND_WAIT };

static const struct {
  int32_t (*step)(proxy *, int32_t);
  enum rt_type types[3];
} steps[] = {
    [STEP_MUTEX_LOCK] = {mutex_lock_step, {RT_MUTEX, RT_RWMUTEX, RT_ONCE}},
    [STEP_RW_RLOCK] = {rw_rlock_step, {RT_RWMUTEX}},
    [STEP_RW_LOCK] = {rw_lock_step, {RT_RWMUTEX}},
    [STEP_WG_WAIT] = {wg_wait_step, {RT_WAITGROUP}},
    [STEP_COND_WAIT] = {cond_wait_step, {RT_COND}},
};

/* C API block(step, obj, mode) -> the step's code, or nothing after a park
 * (call again with mode 2), or (ERR, code) when the G cannot park. */
int sync_block(lua_State *L) {
  lua_Integer id = luaL_checkinteger(L, 1);
  if (id < STEP_MUTEX_LOCK || id > STEP_COND_WAIT) return luaL_argerror(L, 1, "no such step");
  proxy *px = NULL;
  for (int i = 0; i < 3 && steps[id].types[i] && !px; i++)
    if (rt_to_object(L, 2, steps[id].types[i])) px = lua_touserdata(L, 2);
  if (!px) return luaL_argerror(L, 2, "wrong object for this step");
  int32_t mode = (int32_t)luaL_checkinteger(L, 3);
  p_t *pp = getp();
  g_t *gp = pp ? getg() : NULL;
  if (mode != MODE_RESUMED) {
    int32_t can = rt_can_block(L, gp);
    if (can != RC_OK) return rt_push_err(L, can);
    mode = MODE_START;
  }
  int32_t rc = steps[id].step(px, mode);
  if (rc == RC_PARK) return rt_park_yield(L, gp, SHAPE_NONE);
  lua_pushinteger(L, rc);
  return 1;
}

/* C API cond_begin(c) -> true once this G holds a ticket, or (ERR, code). */
int cond_wait_begin(lua_State *L) {
  rt_object *o = rt_to_object(L, 1, RT_COND);
  if (!o) return luaL_typerror(L, 1, "cond");
  g_t *gp = getg();
  int32_t can = rt_can_block(L, gp);
  if (can != RC_OK) return rt_push_err(L, can);
  gp->live->sema.ticket = notifylist_add(&((cond_obj *)o)->nl);
  lua_pushboolean(L, 1);
  return 1;
}
