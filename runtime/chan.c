/*
 * chan.c — channels, after Go's chan.go.
 *
 * Invariants (c->lock guards every field):
 *   - At least one of recvq and sendq is empty, except when a single G
 *     waits on both sides of the same channel through a select.
 *   - A buffered channel with waiting receivers has an empty buffer; with
 *     waiting senders, a full one.
 *   - A value in flight is a box of the owner VM: buf[] holds the boxes of
 *     buffered values, a parked sender's sudog the box of its value. Taking
 *     a value moves its box number; the Lua side loads vals[box] at once.
 *   - A waiter is readied with its results in g->res_*, by the one op that
 *     dequeued its sudog (for a select, the one that won selectdone).
 *   - A parked G's Lua stack holds the proxy of every channel it waits on,
 *     which keeps the channels alive: sudogs take no reference.
 *
 * The FFI entry points (chan_trysend, chan_tryrecv, ...) never block and
 * never touch Lua: they return a box for the caller to store into or load
 * from, or a code. The blocking entry points are C API functions, which can
 * yield the goroutine's coroutine (chan_send_block, chan_recv_block).
 */
#include <string.h>

#include <lauxlib.h>

#include "rt.h"

hchan *chan_make(p_t *owner, uint32_t size) {
  hchan *c = rt_calloc(1, sizeof *c);
  rt_object_init(&c->obj, RT_CHAN);
  c->dataqsiz = size;
  if (size) c->buf = rt_malloc((size_t)size * sizeof *c->buf);
  c->owner = owner;
  return c;
}

void chan_free(hchan *c) {
  /* Buffered values still sit in the owner's vals: clear them on reuse. */
  for (uint32_t i = 0; i < c->qcount; i++)
    box_free_dirty(c->owner, c->buf[(c->recvx + i) % c->dataqsiz]);
  rt_free(c->buf);
  rt_free(c);
}

void waitq_enqueue(waitq *q, sudog *sd) {
  sd->next = NULL;
  sd->prev = q->last;
  if (q->last) q->last->next = sd;
  else q->first = sd;
  q->last = sd;
  sd->inqueue = true;
}

void waitq_remove(waitq *q, sudog *sd) {
  if (!sd->inqueue) return;
  if (sd->prev) sd->prev->next = sd->next;
  else q->first = sd->next;
  if (sd->next) sd->next->prev = sd->prev;
  else q->last = sd->prev;
  sd->next = sd->prev = NULL;
  sd->inqueue = false;
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

void chan_deliver(hchan *c, sudog *sd, int32_t box, bool ok) {
  (void)c;
  g_t *gp = sd->g;
  sd->success = ok;
  gp->res_kind = RES_VALUE;
  gp->res_box = box;
  gp->res_ok = ok;
  gp->res_idx = sd->case_idx;
  goready(gp);
}

static void chan_unlock_f(g_t *gp) { chan_unlock(gp->live->waiting->c); }

/* Queue the current G on q and ask it to park; c stays locked until it has.
 * No reference is taken: the parked G's stack holds the channel's proxy. */
static void chan_park(p_t *pp, g_t *gp, hchan *c, waitq *q, int32_t box, enum waitreason reason) {
  sudog *sd = acquire_sudog(pp, gp);
  sd->c = c;
  sd->on = ON_CHAN;
  sd->box = box;
  sd->is_send = q == &c->sendq;
  gp->live->waiting = sd;
  gp->live->op = OP_CHAN;
  waitq_enqueue(q, sd);
  gopark(gp, chan_unlock_f, reason);
}

/* Go's chansend. Returns the box the caller must store its value into (the
 * value has then been sent), that box | RC_PARKBOX when gp is set to park
 * (store, then yield), RC_CLOSED, or RC_WOULDBLOCK when !block. */
static int32_t chansend(hchan *c, p_t *pp, g_t *gp, bool block) {
  chan_lock(c);
  if (c->closed) {
    chan_unlock(c);
    return RC_CLOSED;
  }
  sudog *sd = waitq_dequeue(&c->recvq);
  if (sd) { /* hand the value straight to a waiting receiver */
    int32_t box = box_alloc(pp);
    chan_deliver(c, sd, box, true);
    chan_unlock(c);
    return box;
  }
  if (c->qcount < c->dataqsiz) {
    int32_t box = box_alloc(pp);
    c->buf[c->sendx] = box;
    if (++c->sendx == c->dataqsiz) c->sendx = 0;
    c->qcount++;
    chan_unlock(c);
    return box;
  }
  if (!block) {
    chan_unlock(c);
    return RC_WOULDBLOCK;
  }
  int32_t box = box_alloc(pp);
  chan_park(pp, gp, c, &c->sendq, box, WR_CHAN_SEND);
  return box | RC_PARKBOX;
}

/* Take the value for a receiver from sender sd (c locked): the box to load. */
int32_t recv_from_sender_locked(hchan *c, sudog *sd) {
  int32_t box;
  if (c->dataqsiz == 0) {
    box = sd->box;
  } else {
    /* Full buffer: take its head, put the sender's value at its tail. */
    box = c->buf[c->recvx];
    c->buf[c->recvx] = sd->box;
    if (++c->recvx == c->dataqsiz) c->recvx = 0;
    c->sendx = c->recvx;
  }
  sd->box = 0; /* consumed */
  chan_deliver(c, sd, 0, true);
  return box;
}

/* Go's chanrecv. Returns the box to load the value from (already freed:
 * load it now), RC_CLOSED (closed and drained: nil, false), RC_PARK (gp is
 * set to park), or RC_WOULDBLOCK when !block. */
static int32_t chanrecv(hchan *c, p_t *pp, g_t *gp, bool block) {
  chan_lock(c);
  int32_t box;
  sudog *sd = waitq_dequeue(&c->sendq);
  if (sd) {
    box = recv_from_sender_locked(c, sd);
  } else if (c->qcount > 0) {
    box = c->buf[c->recvx];
    if (++c->recvx == c->dataqsiz) c->recvx = 0;
    c->qcount--;
  } else if (c->closed) {
    chan_unlock(c);
    return RC_CLOSED;
  } else if (!block) {
    chan_unlock(c);
    return RC_WOULDBLOCK;
  } else {
    chan_park(pp, gp, c, &c->recvq, 0, WR_CHAN_RECEIVE);
    return RC_PARK;
  }
  chan_unlock(c);
  box_free(pp, box);
  return box;
}

/* FFI: a send that does not block (see chansend). */
int32_t chan_trysend(proxy *px) { return chansend((hchan *)px->obj, getp(), NULL, false); }

/* FFI: a receive that does not block (see chanrecv). */
int32_t chan_tryrecv(proxy *px) { return chanrecv((hchan *)px->obj, getp(), NULL, false); }

static proxy *check_chan(lua_State *L, int idx) {
  proxy *px = lua_touserdata(L, idx);
  if (!px || !lua_getmetatable(L, idx) || !lua_rawequal(L, -1, lua_upvalueindex(2)) || !px->obj)
    luaL_typerror(L, idx, "channel");
  lua_pop(L, 1);
  return px;
}

/* C API send(ch, v) -> true, false (closed), or (ERR, code). Upvalues:
 * vals, the channel metatable. May park. */
int chan_send_block(lua_State *L) {
  proxy *px = check_chan(L, 1);
  lua_settop(L, 2);
  p_t *pp = getp();
  g_t *gp = pp ? pp->curg : NULL;
  int32_t can = rt_can_block(L, gp);
  int32_t r = chansend((hchan *)px->obj, pp, gp, can == RC_OK);
  if (r == RC_CLOSED) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (r == RC_WOULDBLOCK) return rt_push_err(L, can);
  lua_pushvalue(L, 2);
  lua_rawseti(L, lua_upvalueindex(1), r & ~RC_PARKBOX);
  if (r & RC_PARKBOX) return rt_park_yield(L, gp, SHAPE_OK);
  lua_pushboolean(L, 1);
  return 1;
}

/* C API recv(ch) -> box, ok (the value's box, 0 for none; load it at once),
 * or (ERR, code). Upvalues as for send. */
int chan_recv_block(lua_State *L) {
  proxy *px = check_chan(L, 1);
  p_t *pp = getp();
  g_t *gp = pp ? pp->curg : NULL;
  int32_t can = rt_can_block(L, gp);
  int32_t r = chanrecv((hchan *)px->obj, pp, gp, can == RC_OK);
  if (r == RC_PARK) return rt_park_yield(L, gp, SHAPE_RECV);
  if (r == RC_WOULDBLOCK) return rt_push_err(L, can);
  lua_pushinteger(L, r == RC_CLOSED ? 0 : r);
  lua_pushboolean(L, r != RC_CLOSED);
  return 2;
}

/* Close: RC_OK, or RC_CLOSED for a second close. Every receiver wakes with
 * (nil, false); every sender wakes to raise "send on closed channel". */
int32_t chan_close(proxy *px) {
  hchan *c = (hchan *)px->obj;
  chan_lock(c);
  if (c->closed) {
    chan_unlock(c);
    return RC_CLOSED;
  }
  c->closed = true;
  sudog *sd;
  while ((sd = waitq_dequeue(&c->recvq))) chan_deliver(c, sd, 0, false);
  while ((sd = waitq_dequeue(&c->sendq))) chan_deliver(c, sd, 0, false);
  chan_unlock(c);
  return RC_OK;
}

int32_t chan_len(proxy *px) {
  hchan *c = (hchan *)px->obj;
  chan_lock(c);
  int32_t n = (int32_t)c->qcount;
  chan_unlock(c);
  return n;
}

int32_t chan_cap(proxy *px) { return (int32_t)((hchan *)px->obj)->dataqsiz; }

bool chan_offer(hchan *c, int32_t box) {
  chan_lock(c);
  if (c->closed) {
    chan_unlock(c);
    return false;
  }
  sudog *sd = waitq_dequeue(&c->recvq);
  if (sd) {
    chan_deliver(c, sd, box, true);
  } else if (c->qcount < c->dataqsiz) {
    c->buf[c->sendx] = box;
    if (++c->sendx == c->dataqsiz) c->sendx = 0;
    c->qcount++;
  } else {
    chan_unlock(c);
    return false;
  }
  chan_unlock(c);
  return true;
}

void chan_drain(hchan *c) {
  chan_lock(c);
  while (c->qcount > 0) {
    box_free_dirty(c->owner, c->buf[c->recvx]);
    if (++c->recvx == c->dataqsiz) c->recvx = 0;
    c->qcount--;
  }
  chan_unlock(c);
}
