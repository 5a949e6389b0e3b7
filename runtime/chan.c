/*
 * chan.c — channels, after Go's chan.go.
 *
 * Invariants (c->lock guards every field, once the channel is shared):
 *   - At least one of recvq and sendq is empty, except when a single G
 *     waits on both sides of the same channel through a select.
 *   - A buffered channel with waiting receivers has an empty buffer; with
 *     waiting senders, a full one.
 *   - A local channel (shared false) is held by its owner's VM only, so only
 *     the owner's thread touches it and no lock is taken. Its values are
 *     boxes of the owner's VM (see rt.h, struct val): they pass by
 *     reference, except nil, booleans and numbers, which travel inline on
 *     every channel (no box).
 *   - A shared channel carries copies only, for every receiver, in the
 *     sender's VM too: a program means the same whichever processors its
 *     goroutines run on. The sender copies before locking (a copy may fail:
 *     the error is the sender's). chan_share, on the owner's thread, turns
 *     the values waiting in a local channel into copies before anyone else
 *     can see it, and frees their boxes. A value that comes with both (a
 *     timer's) is taken as its copy; its box is freed by its VM's thread.
 *   - A waiter is readied with its results in g->res_* (and g->live->
 *     res_blob), by the one op that dequeued its sudog (for a select, the one
 *     that won selectdone).
 *   - A G parked in a send or receive holds its channel's proxy in the Lua
 *     frame that called it (lua/lugo/init.lua), which keeps the channel
 *     alive: its sudog takes no reference (a yield from C drops the C
 *     function's own stack). A select's sudogs do hold one (select.c).
 *   - A timer's channel (c->timer, time.c) is receive-only and fed by the
 *     runtime: every look that does not block first lets a value that is
 *     due in (chantimer_run), and every receiver that parks or leaves tells
 *     the timer (chantimer_sync), which keeps a heap slot only while one
 *     waits. A context's done channel (c->ctx) holds its context.
 *
 * The FFI entry points (chan_trysend, chan_tryrecv, ...) never touch Lua:
 * on a local channel they return a box for the caller to store into or
 * load from, or a code (RC_SHARED: use the C API). Asked to (block), an op
 * that cannot proceed queues its sudog and sets its G to park, the
 * channel still locked, as chansend and chanrecv do for the C API; the
 * Lua caller then yields at once through chan_park_yield, whose only work
 * is the yield (or, where Lua cannot yield, undoing the park). The C API
 * functions (chan_send_block, chan_recv_block) do everything else: copies
 * for shared channels, and the errors of ops that cannot park.
 */
#include <string.h>

#include <lauxlib.h>

#include "rt.h"

/* Two cache lines a channel, and only its own: the allocator aligns a
 * 128-byte object on 128 bytes, so channels used from different processors
 * never share a line (bench fanout, two channels: 172 -> 140 ns a job). */
_Static_assert(sizeof(hchan) <= 128, "hchan outgrew its two cache lines");
#define HCHAN_ALLOC 128

hchan *chan_make(p_t *owner, uint32_t size) {
  hchan *c = rt_calloc(1, HCHAN_ALLOC);
  rt_object_init(&c->obj, RT_CHAN);
  c->dataqsiz = size;
  if (size) c->buf = rt_calloc(size, sizeof *c->buf);
  c->owner = owner;
  return c;
}

void val_free(runtime *rt, val v) {
  copy_free(&v.copy);
  if (v.box) box_free_dirty(rt->allp[v.vm], v.box);
}

int32_t val_take(p_t *pp, val *v) {
  /* A copy alone (0), or a local channel's box (pp is its owner). */
  if (!v->box || v->copy.kind == COPY_NONE) return v->box;
  box_free_dirty(pp->rt->allp[v->vm], v->box); /* both (a timer's): the copy is used */
  v->box = 0;
  return 0;
}

static rt_copy sudog_copy(sudog *sd) {
  rt_copy c = {sd->copykind, {0}};
  if (c.kind == COPY_NUM) c.num = sd->copynum;
  else if (c.kind == COPY_BLOB) c.blob = sd->copyblob;
  return c;
}

static void sudog_set_copy(sudog *sd, rt_copy c) {
  sd->copykind = c.kind;
  if (c.kind == COPY_NUM) sd->copynum = c.num;
  else if (c.kind == COPY_BLOB) sd->copyblob = c.blob;
}

void sudog_free_copy(sudog *sd) {
  rt_copy c = sudog_copy(sd);
  copy_free(&c);
  sd->copykind = COPY_NONE;
}

void chan_free(hchan *c) {
  if (c->timer) chantimer_free(c->timer);
  if (c->ctx) ctx_done_free(c);
  for (uint32_t i = 0; i < c->qcount; i++) val_free(c->owner->rt, c->buf[(c->recvx + i) % c->dataqsiz]);
  rt_free(c->buf);
  rt_free(c);
}

void waitq_enqueue(waitq *q, sudog *sd) {
  sd->next = NULL;
  sd->prev = q->last;
  if (q->last) q->last->next = sd;
  else q->first = sd;
  q->last = sd;
  sudog_set_inqueue(sd, true);
}

void waitq_remove(waitq *q, sudog *sd) {
  if (!sudog_inqueue(sd)) return;
  if (sd->prev) sd->prev->next = sd->next;
  else q->first = sd->next;
  if (sd->next) sd->next->prev = sd->prev;
  else q->last = sd->prev;
  sd->next = sd->prev = NULL;
  sudog_set_inqueue(sd, false);
}

/* The first waiter that can still be woken: a select's sudog whose G was
 * already woken through another case is dropped on the way. */
sudog *waitq_dequeue(waitq *q) {
  for (;;) {
    sudog *sd = q->first;
    if (!sd) return NULL;
    waitq_remove(q, sd);
    if (sd->is_select) {
      uint32_t zero = 0;
      if (!atomic_compare_exchange_strong(&sd->g->live->selectdone, &zero, 1)) continue;
    }
    return sd;
  }
}

void chan_deliver(hchan *c, sudog *sd, val *v, bool ok) {
  (void)c;
  g_t *gp = sd->g;
  sd->success = ok;
  gp->res_kind = RES_VALUE;
  gp->res_box = ok && v ? val_take(gp->p, v) : 0;
  gp->res_copykind = ok && v && !gp->res_box ? v->copy.kind : COPY_NONE;
  if (gp->res_copykind == COPY_NUM) gp->live->res_copynum = v->copy.num;
  else if (gp->res_copykind == COPY_BLOB) gp->live->res_copyblob = v->copy.blob;
  gp->res_ok = ok;
  gp->res_idx = sd->case_idx;
  goready(gp);
}

/* Set *v to the value a sender in pp puts on c: the copy made before
 * locking (for a shared channel, or a scalar, which needs no box: by value
 * is by reference for it), or else a new box of pp, to be stored into by
 * the caller. Returns the box (0 for a copy). Field by field, on purpose: a
 * val built whole on the stack and then copied is reloaded with wider loads
 * than the stores that wrote it, a store-forwarding stall on every send
 * (buffered sends took 8 ns longer). */
static int32_t val_init(val *v, p_t *pp, const rt_copy *copy) {
  v->copy.kind = copy->kind;
  if (copy->kind == COPY_NUM) v->copy.num = copy->num;
  else if (copy->kind == COPY_BLOB) v->copy.blob = copy->blob;
  v->box = copy->kind == COPY_NONE ? box_alloc(pp) : 0;
  v->vm = pp->id;
  return v->box;
}

static void chan_unlock_f(g_t *gp) { chan_unlock(gp->live->waiting->c); }

/* Queue the current G on q and ask it to park; c stays locked until it has. */
/* v: a sender's value, NULL for a receiver. */
static void chan_park(p_t *pp, g_t *gp, hchan *c, waitq *q, const val *v, enum waitreason reason) {
  sudog *sd = acquire_sudog(pp, gp);
  sd->c = c;
  sd->on = ON_CHAN;
  sd->box = v ? v->box : 0;
  sd->copykind = COPY_NONE;
  if (v) sudog_set_copy(sd, v->copy);
  sd->is_send = q == &c->sendq;
  gp->live->waiting = sd;
  gp->live->op = OP_CHAN;
  waitq_enqueue(q, sd);
  gopark(gp, chan_unlock_f, reason);
}

static bool is_shared(hchan *c) { return atomic_load_explicit(&c->shared, memory_order_relaxed); }

/* The G an FFI call with block set may park: none outside a goroutine, or
 * inside a user coroutine resumed where Lua cannot yield. Found only once
 * the op must park: the ops that proceed pay nothing for it. The caller
 * then yields with the C API's park (chan_park_yield), which checks that
 * Lua can yield there. */
static g_t *ffi_parker(void) {
  g_t *gp = getg();
  return gp && !gp->live->nonyield ? gp : NULL;
}

/* Go's chansend, for a sender in pp (gp parks when block). copy: the
 * sender's copy of its value, for a shared channel (consumed). Returns the
 * box the caller must store its value into (the value has then been sent;
 * RC_OK when a copied scalar needs none), that box | RC_PARKBOX when gp is
 * set to park (store, then yield), RC_CLOSED, or RC_WOULDBLOCK when !block. */
static int32_t chansend(hchan *c, p_t *pp, g_t *gp, bool block, rt_copy *copy) {
  if (c->recv_only) {
    copy_free(copy);
    return RC_RECVONLY;
  }
  chan_lock(c);
  if (c->closed) {
    chan_unlock(c);
    copy_free(copy);
    return RC_CLOSED;
  }
  sudog *sd = waitq_dequeue(&c->recvq);
  if (sd) { /* hand the value straight to a waiting receiver */
    val v;
    int32_t box = val_init(&v, pp, copy);
    chan_deliver(c, sd, &v, true);
    chan_unlock(c);
    return box;
  }
  if (c->qcount < c->dataqsiz) {
    int32_t box = val_init(&c->buf[c->sendx], pp, copy);
    if (++c->sendx == c->dataqsiz) c->sendx = 0;
    c->qcount++;
    chan_unlock(c);
    return box;
  }
  if (!block || (!gp && !(gp = ffi_parker()))) {
    chan_unlock(c);
    copy_free(copy);
    return RC_WOULDBLOCK;
  }
  val v;
  int32_t box = val_init(&v, pp, copy);
  chan_park(pp, gp, c, &c->sendq, &v, WR_CHAN_SEND);
  gp->res_shape = SHAPE_OK; /* what an FFI caller's park returns */
  return box | RC_PARKBOX;
}

void recv_from_sender_locked(hchan *c, sudog *sd, val *v) {
  val *sent = v; /* where the sender's value goes */
  if (c->dataqsiz != 0) {
    /* Full buffer: take its head, put the sender's value at its tail. */
    *v = c->buf[c->recvx];
    sent = &c->buf[c->recvx];
    if (++c->recvx == c->dataqsiz) c->recvx = 0;
    c->sendx = c->recvx;
  }
  /* Field by field, as val_init does, for the same reason. */
  sent->copy.kind = sd->copykind;
  if (sd->copykind == COPY_NUM) sent->copy.num = sd->copynum;
  else if (sd->copykind == COPY_BLOB) sent->copy.blob = sd->copyblob;
  sent->box = sd->box;
  sent->vm = sd->g->p->id;
  sd->box = 0; /* taken: the sender has nothing left to free */
  sd->copykind = COPY_NONE;
  chan_deliver(c, sd, NULL, true);
}

/* Go's chanrecv, for a receiver in pp (gp parks when block). On success
 * *v is the value (the caller takes it with val_take) and RC_OK is
 * returned; else RC_CLOSED (closed and drained: nil, false), RC_PARK (gp is
 * set to park), or RC_WOULDBLOCK when !block. Inlined: the FFI receive,
 * the hottest path of all, lost a nanosecond an item as a call. */
__attribute__((always_inline)) static inline int32_t chanrecv(hchan *c, p_t *pp, g_t *gp, bool block, val *v) {
  chan_lock(c);
  if (chan_has_timer(c)) chantimer_run(c);
  sudog *sd = waitq_dequeue(&c->sendq);
  if (sd) {
    recv_from_sender_locked(c, sd, v);
  } else if (c->qcount > 0) {
    *v = c->buf[c->recvx];
    c->buf[c->recvx] = (val){0};
    if (++c->recvx == c->dataqsiz) c->recvx = 0;
    c->qcount--;
  } else if (c->closed) {
    chan_unlock(c);
    return RC_CLOSED;
  } else if (!block || (!gp && !(gp = ffi_parker()))) {
    chan_unlock(c);
    return RC_WOULDBLOCK;
  } else {
    chan_park(pp, gp, c, &c->recvq, NULL, WR_CHAN_RECEIVE);
    gp->res_shape = SHAPE_RECV_VALUE; /* what an FFI caller's park returns */
    if (chan_has_timer(c)) chantimer_sync(c);
    return RC_PARK;
  }
  chan_unlock(c);
  return RC_OK;
}

/* FFI: a send of a value that is not a scalar, on a local channel (see
 * chansend); a shared one needs the C API to copy it. With block, the
 * current G is set to park (the box | RC_PARKBOX: store into the box, then
 * yield PARK) instead of RC_WOULDBLOCK. */
int32_t chan_trysend(proxy *px, int32_t block) {
  p_t *pp = getp();
  if (preempt_pending(pp)) return RC_PREEMPT;
  hchan *c = (hchan *)px->obj;
  if (is_shared(c)) return RC_SHARED;
  rt_copy none = {COPY_NONE, {0}};
  return chansend(c, pp, NULL, block, &none);
}

/* FFI: a send of a nil, a boolean or a number (kind: COPY_NIL, COPY_FALSE,
 * COPY_TRUE, COPY_NUM), on any channel. The value travels inline on a local
 * channel too: no box to take, no store into and load from the VM's value
 * table on either side. block: as for chan_trysend (RC_PARKBOX alone: the
 * value waits in the sudog). */
int32_t chan_trysend_scalar(proxy *px, int32_t kind, double num, int32_t block) {
  p_t *pp = getp();
  if (preempt_pending(pp)) return RC_PREEMPT;
  hchan *c = (hchan *)px->obj;
  rt_copy copy;
  copy.kind = (uint8_t)kind;
  copy.num = num;
  return chansend(c, pp, NULL, block, &copy);
}

/* The Lua-visible code for a copy an FFI receive took: a scalar comes back
 * inline (*num for a number), anything else waits in pp->pending. */
static int32_t copy_code(p_t *pp, rt_copy c, double *num) {
  switch (c.kind) {
  case COPY_FALSE: return RC_VAL_FALSE;
  case COPY_TRUE: return RC_VAL_TRUE;
  case COPY_NUM: *num = c.num; return RC_VAL_NUM;
  case COPY_BLOB: pp->pending = c; return RC_DECODE;
  default: return RC_VAL_NIL;
  }
}

/* FFI: a receive: the box to load (already freed: load it now), a copied
 * scalar (RC_VAL_*), RC_DECODE (take it with the C API's take_pending, at
 * once), or a code. With block, the current G is set to park (RC_PARK:
 * yield PARK; it resumes with SHAPE_RECV_VALUE's results) instead of
 * RC_WOULDBLOCK. */
int32_t chan_tryrecv(proxy *px, double *num, int32_t block) {
  hchan *c = (hchan *)px->obj;
  val v;
  p_t *pp = getp();
  if (preempt_pending(pp)) return RC_PREEMPT;
  int32_t r = chanrecv(c, pp, NULL, block, &v);
  if (r != RC_OK) return r;
  int32_t box = val_take(pp, &v);
  if (!box) return copy_code(pp, v.copy, num);
  box_free(pp, box);
  return box;
}

/* Undo what a send or receive with block set up, when its caller cannot
 * yield: out of the queue, the channel unlocked, the G running on. */
static void chan_unpark(p_t *pp, g_t *gp) {
  sudog *sd = gp->live->waiting;
  hchan *c = sd->c;
  waitq_remove(sd->is_send ? &c->sendq : &c->recvq, sd);
  if (!sd->is_send && chan_has_timer(c)) chantimer_sync(c);
  if (sd->box) box_free_dirty(pp, sd->box); /* the caller stored into it */
  sudog_free_copy(sd);
  sd->box = 0;
  gp->live->waiting = NULL;
  gp->live->op = OP_NONE;
  gp->live->unlockf = NULL;
  gp->parking = PARK_NONE;
  gp->waitreason = WR_NONE;
  gp->res_shape = SHAPE_NONE;
  release_sudog(pp, sd);
  chan_unlock(c);
}

/* C API park() -> the op's results, after an FFI send or receive set the G
 * to park (RC_PARK, or a box | RC_PARKBOX, stored into first). It takes no
 * arguments and checks none: the FFI call did the work, this only yields.
 * Where Lua cannot yield, it undoes the park and returns nothing; the
 * caller then takes the C API's path, which says why. */
int chan_park_yield(lua_State *L) {
  p_t *pp = getp();
  g_t *gp = getg();
  if (!lua_isyieldable(L)) {
    chan_unpark(pp, gp);
    return 0;
  }
  return rt_park_yield(L, gp, (enum res_shape)gp->res_shape);
}

/* C API take_pending() -> the value an FFI receive left to decode. */
int chan_take_pending(lua_State *L) {
  p_t *pp = getp();
  rt_copy c = pp->pending;
  pp->pending.kind = COPY_NONE;
  if (copy_push(L, c) < 0) return lua_error(L);
  return 1;
}

static proxy *check_chan(lua_State *L, int idx) {
  proxy *px = lua_touserdata(L, idx);
  if (!px || !lua_getmetatable(L, idx) || !lua_rawequal(L, -1, lua_upvalueindex(2)) || !px->obj)
    luaL_typerror(L, idx, "channel");
  lua_pop(L, 1);
  return px;
}

/* C API send(ch, v) -> true, false (closed), or (ERR, message). Upvalues:
 * vals, the channel metatable. May park. */
int chan_send_block(lua_State *L) {
  proxy *px = check_chan(L, 1);
  lua_settop(L, 2);
  hchan *c = (hchan *)px->obj;
  /* A scalar travels inline on any channel (no box); anything else is
   * copied only for a shared channel. */
  rt_copy copy = {COPY_NONE, {0}};
  int t = lua_type(L, 2);
  bool scalar = t == LUA_TNIL || t == LUA_TBOOLEAN || t == LUA_TNUMBER;
  if ((scalar || is_shared(c)) && (copy = copy_make(L, 2, "value")).kind == COPY_NONE) return rt_push_msg_err(L);
  p_t *pp = getp();
  g_t *gp = pp ? getg() : NULL;
  int32_t can = rt_can_block(L, gp);
  int32_t r = chansend(c, pp, gp, can == RC_OK, &copy);
  if (r == RC_CLOSED) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (r == RC_RECVONLY) {
    lua_pushstring(L, "send on receive-only channel");
    return rt_push_msg_err(L);
  }
  if (r == RC_WOULDBLOCK) return rt_push_err(L, can);
  int32_t box = r & ~RC_PARKBOX;
  if (box) {
    lua_pushvalue(L, 2);
    lua_rawseti(L, lua_upvalueindex(1), box);
  }
  if (r & RC_PARKBOX) return rt_park_yield(L, gp, SHAPE_OK);
  lua_pushboolean(L, 1);
  return 1;
}

int32_t take_box(lua_State *L, p_t *pp, int32_t box, rt_copy copy, int vals) {
  if (box || copy.kind == COPY_NONE) return box;
  if (copy_push(L, copy) < 0) return -1;
  box = box_alloc(pp);
  lua_rawseti(L, vals, box);
  return box;
}

/* C API recv(ch) -> box, ok (the value's box, 0 for none; load it at once),
 * or (ERR, message). Upvalues as for send. */
int chan_recv_block(lua_State *L) {
  proxy *px = check_chan(L, 1);
  p_t *pp = getp();
  g_t *gp = pp ? getg() : NULL;
  int32_t can = rt_can_block(L, gp);
  val v;
  int32_t r = chanrecv((hchan *)px->obj, pp, gp, can == RC_OK, &v);
  if (r == RC_PARK) return rt_park_yield(L, gp, SHAPE_RECV);
  if (r == RC_WOULDBLOCK) return rt_push_err(L, can);
  if (r == RC_CLOSED) {
    lua_pushinteger(L, 0);
    lua_pushboolean(L, 0);
    return 2;
  }
  int32_t box = take_box(L, pp, val_take(pp, &v), v.copy, lua_upvalueindex(1));
  if (box < 0) return rt_push_msg_err(L);
  box_free(pp, box); /* loaded at once by the caller */
  lua_pushinteger(L, box);
  lua_pushboolean(L, 1);
  return 2;
}

/* Close: RC_OK, or RC_CLOSED for a second close. Every receiver wakes with
 * (nil, false); every sender wakes to raise "send on closed channel". */
int32_t chan_close(proxy *px) {
  hchan *c = (hchan *)px->obj;
  if (c->recv_only) return RC_RECVONLY;
  return closechan(c) ? RC_OK : RC_CLOSED;
}

bool closechan(hchan *c) {
  chan_lock(c);
  if (c->closed) {
    chan_unlock(c);
    return false;
  }
  c->closed = true;
  sudog *sd;
  while ((sd = waitq_dequeue(&c->recvq))) chan_deliver(c, sd, NULL, false);
  while ((sd = waitq_dequeue(&c->sendq))) chan_deliver(c, sd, NULL, false);
  chan_unlock(c);
  return true;
}

int32_t chan_len(proxy *px) {
  hchan *c = (hchan *)px->obj;
  chan_lock(c);
  if (chan_has_timer(c)) chantimer_run(c);
  int32_t n = (int32_t)c->qcount;
  chan_unlock(c);
  return n;
}

int32_t chan_cap(proxy *px) { return (int32_t)((hchan *)px->obj)->dataqsiz; }

bool chan_offer(hchan *c, val v) {
  if (c->closed) return false;
  sudog *sd = waitq_dequeue(&c->recvq);
  if (sd) {
    chan_deliver(c, sd, &v, true);
  } else if (c->qcount < c->dataqsiz) {
    c->buf[c->sendx] = v;
    if (++c->sendx == c->dataqsiz) c->sendx = 0;
    c->qcount++;
  } else {
    return false;
  }
  return true;
}

bool chan_drain(hchan *c) {
  bool any = c->qcount > 0;
  while (c->qcount > 0) {
    val_free(c->owner->rt, c->buf[c->recvx]);
    c->buf[c->recvx] = (val){0};
    if (++c->recvx == c->dataqsiz) c->recvx = 0;
    c->qcount--;
  }
  return any;
}

/* [-0, +0] a copy of the value in box `box` of L's VM; COPY_NONE with a
 * message pushed if it cannot be copied. */
static rt_copy copy_box(lua_State *L, p_t *pp, int32_t box) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, pp->vals_ref);
  lua_rawgeti(L, -1, box);
  rt_copy c = copy_make(L, -1, "a value in the channel");
  if (c.kind == COPY_NONE) {
    lua_replace(L, -3);
    lua_pop(L, 1);
    return c;
  }
  lua_pop(L, 2);
  return c;
}

/* Undo chan_share's copies: of the first n buffered values, and of the
 * parked senders before `upto`. */
static void unshare(hchan *c, uint32_t n, sudog *upto) {
  for (uint32_t i = 0; i < n; i++) {
    val *v = &c->buf[(c->recvx + i) % c->dataqsiz];
    if (v->box) copy_free(&v->copy);
  }
  for (sudog *sd = c->sendq.first; sd != upto; sd = sd->next)
    if (sd->box) sudog_free_copy(sd);
}

static int chan_share_values(hchan *c, lua_State *L);

int chan_share(hchan *c, lua_State *L) {
  /* sharing: a value waiting in c holds c itself, and copying it comes
   * back here: it refers to c, which is being shared. */
  if (is_shared(c) || c->sharing) return 0;
  c->sharing = true;
  int r = chan_share_values(c, L);
  c->sharing = false;
  return r;
}

static int chan_share_values(hchan *c, lua_State *L) {
  p_t *pp = c->owner;
  /* Copy every boxed value waiting (buffered, or with a parked sender)
   * before anyone else can see the channel: all of them, or, if one cannot
   * be copied, none (the channel stays local). Scalars are inline already. */
  for (uint32_t i = 0; i < c->qcount; i++) {
    val *v = &c->buf[(c->recvx + i) % c->dataqsiz];
    if (v->box && (v->copy = copy_box(L, pp, v->box)).kind == COPY_NONE) {
      unshare(c, i, c->sendq.first);
      return -1;
    }
  }
  for (sudog *sd = c->sendq.first; sd; sd = sd->next) {
    if (!sd->box) continue;
    rt_copy copy = copy_box(L, pp, sd->box);
    if (copy.kind == COPY_NONE) {
      unshare(c, c->qcount, sd);
      return -1;
    }
    sudog_set_copy(sd, copy);
  }
  /* The copies are the values now. */
  for (uint32_t i = 0; i < c->qcount; i++) {
    val *v = &c->buf[(c->recvx + i) % c->dataqsiz];
    if (v->box) box_free_dirty(pp, v->box);
    v->box = 0;
  }
  for (sudog *sd = c->sendq.first; sd; sd = sd->next) {
    if (sd->box) box_free_dirty(pp, sd->box);
    sd->box = 0;
  }
  atomic_store_explicit(&c->shared, true, memory_order_release);
  return 0;
}
