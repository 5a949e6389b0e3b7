/*
 * sema.c — semaphores and notify lists, after Go's sema.go.
 *
 * A sema is embedded in the object that uses it (Go hashes addresses into a
 * treap; our objects are C structs, so the queue lives beside the count).
 *
 * Invariants:
 *   - count is changed only with atomics; lock guards the queue and the
 *     sudogs' ticket fields while they are queued.
 *   - nwait counts Gs that are queued or about to queue; semrelease reads it
 *     without the lock to skip the lock when nobody waits (Go's fast path),
 *     and rechecks under the lock.
 *   - A woken G owns a unit of the count when its sudog's ticket is 1
 *     (handoff); otherwise it competes for one like any newcomer.
 *   - Notify lists hand out tickets in order (wait); notify is the next
 *     ticket to wake. A waiter whose ticket is already notified never parks.
 *
 * Blocking is split into steps because a G parks by returning to Lua and
 * yielding: *_step(..., resumed=false) may ask to park (RC_PARK); after the
 * wake-up the caller calls it again with resumed=true.
 */
#include "rt.h"

static bool cansemacquire(sema *s) {
  uint32_t v = atomic_load(&s->count);
  while (v > 0)
    if (atomic_compare_exchange_weak(&s->count, &v, v - 1)) return true;
  return false;
}

static void sema_unlock_f(g_t *gp) { rt_unlock(&gp->live->sema.sd->sema->lock); }

int semacquire_step(sema *s, bool lifo, enum waitreason reason, bool resumed) {
  p_t *pp = getp();
  g_t *gp = getg();
  if (resumed) {
    sudog *sd = gp->live->sema.sd;
    gp->live->sema.sd = NULL;
    gp->live->op = OP_NONE;
    bool got = sd->ticket != 0 || cansemacquire(s);
    release_sudog(pp, sd);
    if (got) return RC_OK;
  } else if (cansemacquire(s)) {
    return RC_OK;
  }
  rt_lock(&s->lock);
  atomic_fetch_add(&s->nwait, 1);
  if (cansemacquire(s)) {
    atomic_fetch_sub(&s->nwait, 1);
    rt_unlock(&s->lock);
    return RC_OK;
  }
  sudog *sd = acquire_sudog(pp, gp);
  sd->sema = s;
  sd->on = ON_SEMA;
  if (lifo || !s->head) {
    sd->next = s->head;
    s->head = sd;
    if (!s->tail) s->tail = sd;
  } else {
    s->tail->next = sd;
    s->tail = sd;
  }
  gp->live->sema.sd = sd;
  gp->live->op = OP_SEMA;
  gopark(gp, sema_unlock_f, reason);
  return RC_PARK;
}

int semrelease(sema *s, bool handoff) {
  atomic_fetch_add(&s->count, 1);
  if (atomic_load(&s->nwait) == 0) return RC_OK;
  rt_lock(&s->lock);
  if (atomic_load(&s->nwait) == 0) {
    rt_unlock(&s->lock);
    return RC_OK;
  }
  sudog *sd = s->head;
  if (sd) {
    s->head = sd->next;
    if (!s->head) s->tail = NULL;
    sd->next = NULL;
    sd->on = ON_NONE;
    atomic_fetch_sub(&s->nwait, 1);
  }
  rt_unlock(&s->lock);
  if (!sd) return RC_OK;
  if (sd->ticket != 0) rt_throw("corrupted semaphore ticket");
  bool handed = handoff && cansemacquire(s);
  if (handed) sd->ticket = 1;
  goready(sd->g); /* from here on the sudog is the waiter's to reuse */
  /* Direct handoff: let the waiter run now instead of racing it. */
  return handed ? RC_YIELD : RC_OK;
}

/* Unlink sd from a singly linked queue; false if it was not there. */
static bool queue_remove(sudog **head, sudog **tail, sudog *sd) {
  for (sudog *prev = NULL, *x = *head; x; prev = x, x = x->next) {
    if (x != sd) continue;
    if (prev) prev->next = x->next;
    else *head = x->next;
    if (*tail == x) *tail = prev;
    return true;
  }
  return false;
}

void sema_cancel(sudog *sd) {
  if (sd->on == ON_SEMA) {
    sema *s = sd->sema;
    rt_lock(&s->lock);
    if (queue_remove(&s->head, &s->tail, sd)) atomic_fetch_sub(&s->nwait, 1);
    rt_unlock(&s->lock);
  } else if (sd->on == ON_NOTIFYLIST) {
    notifylist *l = sd->nl;
    rt_lock(&l->lock);
    queue_remove(&l->head, &l->tail, sd);
    rt_unlock(&l->lock);
  }
  sd->on = ON_NONE;
}

uint32_t notifylist_add(notifylist *l) { return atomic_fetch_add(&l->wait, 1); }

static bool ticket_less(uint32_t a, uint32_t b) { return (int32_t)(a - b) < 0; }

static void nl_unlock_f(g_t *gp) { rt_unlock(&gp->live->sema.sd->nl->lock); }

int notifylist_wait_step(notifylist *l, uint32_t ticket, bool resumed) {
  p_t *pp = getp();
  g_t *gp = getg();
  if (resumed) {
    release_sudog(pp, gp->live->sema.sd);
    gp->live->sema.sd = NULL;
    gp->live->op = OP_NONE;
    return RC_OK;
  }
  rt_lock(&l->lock);
  if (ticket_less(ticket, atomic_load(&l->notify))) { /* already notified */
    rt_unlock(&l->lock);
    return RC_OK;
  }
  sudog *sd = acquire_sudog(pp, gp);
  sd->ticket = ticket;
  sd->nl = l;
  sd->on = ON_NOTIFYLIST;
  if (l->tail) l->tail->next = sd;
  else l->head = sd;
  l->tail = sd;
  gp->live->sema.sd = sd;
  gp->live->op = OP_SEMA;
  gopark(gp, nl_unlock_f, WR_SYNC_COND_WAIT);
  return RC_PARK;
}

void notifylist_notify_all(notifylist *l) {
  if (atomic_load(&l->wait) == atomic_load(&l->notify)) return;
  rt_lock(&l->lock);
  sudog *sd = l->head;
  l->head = l->tail = NULL;
  atomic_store(&l->notify, atomic_load(&l->wait));
  rt_unlock(&l->lock);
  while (sd) {
    sudog *next = sd->next;
    sd->next = NULL;
    sd->on = ON_NONE;
    goready(sd->g);
    sd = next;
  }
}

void notifylist_notify_one(notifylist *l) {
  if (atomic_load(&l->wait) == atomic_load(&l->notify)) return;
  rt_lock(&l->lock);
  uint32_t t = atomic_load(&l->notify);
  if (t == atomic_load(&l->wait)) {
    rt_unlock(&l->lock);
    return;
  }
  atomic_store(&l->notify, t + 1);
  for (sudog *sd = l->head; sd; sd = sd->next) {
    if (sd->ticket != t) continue;
    queue_remove(&l->head, &l->tail, sd);
    rt_unlock(&l->lock);
    sd->next = NULL;
    sd->on = ON_NONE;
    goready(sd->g);
    return;
  }
  /* Ticket t's waiter has not queued yet: it will see notify and not park. */
  rt_unlock(&l->lock);
}
