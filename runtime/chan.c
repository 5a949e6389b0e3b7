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
 *   - A sudog holds a reference on its channel until its G releases it.
 *
 * The FFI entry points (chan_send, chan_recv, ...) never touch Lua: they
 * return a box for the caller to store into or load from, or a code.
 */
#include <string.h>

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
      if (!atomic_compare_exchange_strong(&sd->g->selectdone, &zero, 1)) continue;
    }
    return sd;
  }
}

void chan_deliver(hchan *c, sudog *sd, int32_t box, bool ok) {
  (void)c;
  g_t *gp = sd->g;
  sd->success = ok;
  gp->param = sd;
  gp->res_kind = RES_VALUE;
  gp->res_box = box;
  gp->res_ok = ok;
  gp->res_idx = sd->case_idx;
  goready(gp);
}

static void chan_unlock_f(g_t *gp, void *arg) {
  (void)gp;
  rt_unlock(&((hchan *)arg)->lock);
}

static int32_t park_check(g_t *gp) {
  if (!gp) return RC_NOGOROUTINE;
  if (gp->nonyield) return RC_NOTYIELDABLE;
  return RC_OK;
}

/* Queue the current G on q and ask it to park; c stays locked until it has. */
static void chan_park(p_t *pp, g_t *gp, hchan *c, waitq *q, int32_t box, enum waitreason reason) {
  sudog *sd = acquire_sudog(pp, gp);
  sd->c = c;
  rt_retain(&c->obj);
  sd->box = box;
  sd->is_send = q == &c->sendq;
  gp->waiting = sd;
  gp->param = NULL;
  waitq_enqueue(q, sd);
  gopark(gp, chan_unlock_f, c, reason);
}

/* Send: returns the box the caller must store its value into (the value has
 * then been sent), that box | RC_PARKBOX (store, then yield PARK), or
 * RC_CLOSED, RC_WOULDBLOCK (mode 0), RC_NOGOROUTINE, RC_NOTYIELDABLE. */
int32_t chan_send(proxy *px, int32_t mode) {
  hchan *c = (hchan *)px->obj;
  p_t *pp = getp();
  rt_lock(&c->lock);
  if (c->closed) {
    rt_unlock(&c->lock);
    return RC_CLOSED;
  }
  sudog *sd = waitq_dequeue(&c->recvq);
  if (sd) { /* hand the value straight to a waiting receiver */
    int32_t box = box_alloc(pp);
    chan_deliver(c, sd, box, true);
    rt_unlock(&c->lock);
    return box;
  }
  if (c->qcount < c->dataqsiz) {
    int32_t box = box_alloc(pp);
    c->buf[c->sendx] = box;
    if (++c->sendx == c->dataqsiz) c->sendx = 0;
    c->qcount++;
    rt_unlock(&c->lock);
    return box;
  }
  g_t *gp = pp ? pp->curg : NULL;
  int32_t rc = mode == 0 ? RC_WOULDBLOCK : park_check(gp);
  if (rc != RC_OK) {
    rt_unlock(&c->lock);
    return rc;
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

/* Receive: returns the box to load the value from (already freed: load it
 * now), RC_CLOSED (closed and drained: nil, false), RC_PARK (yield PARK; the
 * results come back as (box, ok)), RC_WOULDBLOCK, RC_NOGOROUTINE or
 * RC_NOTYIELDABLE. */
int32_t chan_recv(proxy *px, int32_t mode) {
  hchan *c = (hchan *)px->obj;
  p_t *pp = getp();
  rt_lock(&c->lock);
  sudog *sd = waitq_dequeue(&c->sendq);
  if (sd) {
    int32_t box = recv_from_sender_locked(c, sd);
    rt_unlock(&c->lock);
    box_free(pp, box);
    return box;
  }
  if (c->qcount > 0) {
    int32_t box = c->buf[c->recvx];
    if (++c->recvx == c->dataqsiz) c->recvx = 0;
    c->qcount--;
    rt_unlock(&c->lock);
    box_free(pp, box);
    return box;
  }
  if (c->closed) {
    rt_unlock(&c->lock);
    return RC_CLOSED;
  }
  g_t *gp = pp ? pp->curg : NULL;
  int32_t rc = mode == 0 ? RC_WOULDBLOCK : park_check(gp);
  if (rc != RC_OK) {
    rt_unlock(&c->lock);
    return rc;
  }
  chan_park(pp, gp, c, &c->recvq, 0, WR_CHAN_RECEIVE);
  return RC_PARK;
}

/* Close: RC_OK, or RC_CLOSED for a second close. Every receiver wakes with
 * (nil, false); every sender wakes to raise "send on closed channel". */
int32_t chan_close(proxy *px) {
  hchan *c = (hchan *)px->obj;
  rt_lock(&c->lock);
  if (c->closed) {
    rt_unlock(&c->lock);
    return RC_CLOSED;
  }
  c->closed = true;
  sudog *sd;
  while ((sd = waitq_dequeue(&c->recvq))) chan_deliver(c, sd, 0, false);
  while ((sd = waitq_dequeue(&c->sendq))) chan_deliver(c, sd, 0, false);
  rt_unlock(&c->lock);
  return RC_OK;
}

int32_t chan_len(proxy *px) {
  hchan *c = (hchan *)px->obj;
  rt_lock(&c->lock);
  int32_t n = (int32_t)c->qcount;
  rt_unlock(&c->lock);
  return n;
}

int32_t chan_cap(proxy *px) { return (int32_t)((hchan *)px->obj)->dataqsiz; }

bool chan_offer(hchan *c, int32_t box) {
  rt_lock(&c->lock);
  if (c->closed) {
    rt_unlock(&c->lock);
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
    rt_unlock(&c->lock);
    return false;
  }
  rt_unlock(&c->lock);
  return true;
}

void chan_drain(hchan *c) {
  rt_lock(&c->lock);
  while (c->qcount > 0) {
    box_free_dirty(c->owner, c->buf[c->recvx]);
    if (++c->recvx == c->dataqsiz) c->recvx = 0;
    c->qcount--;
  }
  rt_unlock(&c->lock);
}
