/*
 * select.c — selectgo, after Go's select.go.
 *
 * Invariants:
 *   - The channels of a select are locked in address order (lockorder), each
 *     once however many cases name it, and unlocked in reverse: two selects
 *     over the same channels cannot deadlock each other.
 *   - Cases are polled in a fresh random order (pollorder), so a select with
 *     several ready cases picks each with equal probability.
 *   - A parked select has one sudog per case, linked on g->waiting in lock
 *     order. The first op to win g->selectdone (0 -> 1) completes the select;
 *     any other op that dequeues one of its sudogs skips it. The G removes
 *     its remaining sudogs (selectgo_finish) before its Lua code runs again,
 *     so no case can fire twice.
 */
#include <stdlib.h>
#include <string.h>

#include "rt.h"

#define SELECT_STACK 64

static hchan *case_chan(select_case *sc) { return (hchan *)sc->c->obj; }

static void sellock(select_case *cases, const int32_t *lockorder, int32_t n) {
  hchan *last = NULL;
  for (int32_t i = 0; i < n; i++) {
    hchan *c = case_chan(&cases[lockorder[i]]);
    if (c != last) rt_lock(&c->lock);
    last = c;
  }
}

static void selunlock(select_case *cases, const int32_t *lockorder, int32_t n) {
  for (int32_t i = n - 1; i >= 0; i--) {
    hchan *c = case_chan(&cases[lockorder[i]]);
    if (i > 0 && c == case_chan(&cases[lockorder[i - 1]])) continue;
    rt_unlock(&c->lock);
  }
}

/* gopark's unlockf: the sudogs on g->waiting are in lock order. */
static void selparkunlock(g_t *gp, void *arg) {
  (void)arg;
  hchan *last = NULL;
  for (sudog *sd = gp->waiting; sd; sd = sd->waitlink) {
    if (sd->c != last) rt_unlock(&sd->c->lock);
    last = sd->c;
  }
}

/* Sort case indices by channel address (insertion sort: selects are small,
 * and big ones are rare enough that n^2 on a few hundred cases is fine). */
static void sort_lockorder(select_case *cases, int32_t *order, int32_t n) {
  for (int32_t i = 1; i < n; i++) {
    int32_t x = order[i];
    uintptr_t key = (uintptr_t)case_chan(&cases[x]);
    int32_t j = i - 1;
    while (j >= 0 && (uintptr_t)case_chan(&cases[order[j]]) > key) {
      order[j + 1] = order[j];
      j--;
    }
    order[j + 1] = x;
  }
}

int32_t selectgo(select_case *cases, int32_t n, int32_t block, select_result *res) {
  p_t *pp = getp();
  g_t *gp = pp ? pp->curg : NULL;
  int32_t stackbuf[2 * SELECT_STACK];
  int32_t *pollorder = stackbuf, *lockorder = stackbuf + SELECT_STACK;
  if (n > SELECT_STACK) {
    pollorder = rt_malloc(2 * (size_t)n * sizeof *pollorder);
    lockorder = pollorder + n;
  }
  int32_t rc = RC_OK;

  /* Random poll order over the cases that can fire (Fisher-Yates, inside out). */
  int32_t norder = 0;
  for (int32_t i = 0; i < n; i++) {
    if (cases[i].kind == CASE_NIL || !cases[i].c) continue;
    int32_t j = (int32_t)(fastrand(pp) % (uint32_t)(norder + 1));
    pollorder[norder] = pollorder[j];
    pollorder[j] = i;
    norder++;
  }
  memcpy(lockorder, pollorder, (size_t)norder * sizeof *lockorder);
  sort_lockorder(cases, lockorder, norder);

  if (norder > 0) sellock(cases, lockorder, norder);

  /* Pass 1: the first ready case in poll order. */
  for (int32_t k = 0; k < norder; k++) {
    int32_t i = pollorder[k];
    hchan *c = case_chan(&cases[i]);
    res->idx = i + 1;
    if (cases[i].kind == CASE_RECV) {
      sudog *sd = waitq_dequeue(&c->sendq);
      if (sd) {
        res->box = recv_from_sender_locked(c, sd);
        res->ok = 1;
      } else if (c->qcount > 0) {
        res->box = c->buf[c->recvx];
        if (++c->recvx == c->dataqsiz) c->recvx = 0;
        c->qcount--;
        res->ok = 1;
      } else if (c->closed) {
        res->box = 0;
        res->ok = 0;
      } else {
        continue;
      }
      selunlock(cases, lockorder, norder);
      if (res->box) box_free(pp, res->box);
      goto out;
    } else {
      if (c->closed) {
        selunlock(cases, lockorder, norder);
        rc = RC_CLOSED;
        goto out;
      }
      sudog *sd = waitq_dequeue(&c->recvq);
      if (sd) {
        res->box = box_alloc(pp);
        chan_deliver(c, sd, res->box, true);
      } else if (c->qcount < c->dataqsiz) {
        res->box = box_alloc(pp);
        c->buf[c->sendx] = res->box;
        if (++c->sendx == c->dataqsiz) c->sendx = 0;
        c->qcount++;
      } else {
        continue;
      }
      res->ok = 1;
      selunlock(cases, lockorder, norder);
      goto out;
    }
  }

  rc = block ? (gp ? (gp->nonyield ? RC_NOTYIELDABLE : RC_OK) : RC_NOGOROUTINE) : RC_WOULDBLOCK;
  if (rc != RC_OK) {
    if (norder > 0) selunlock(cases, lockorder, norder);
    goto out;
  }

  /* Pass 2: queue a sudog on every channel, in lock order, and park. */
  atomic_store(&gp->selectdone, 0);
  gp->param = NULL;
  sudog **link = &gp->waiting;
  for (int32_t k = 0; k < norder; k++) {
    int32_t i = lockorder[k];
    hchan *c = case_chan(&cases[i]);
    sudog *sd = acquire_sudog(pp, gp);
    sd->c = c;
    rt_retain(&c->obj);
    sd->is_select = true;
    sd->case_idx = i + 1;
    sd->is_send = cases[i].kind == CASE_SEND;
    if (sd->is_send) {
      sd->box = cases[i].box = box_alloc(pp);
      waitq_enqueue(&c->sendq, sd);
    } else {
      waitq_enqueue(&c->recvq, sd);
    }
    *link = sd;
    link = &sd->waitlink;
  }
  *link = NULL;
  gopark(gp, norder ? selparkunlock : NULL, NULL, norder ? WR_SELECT : WR_SELECT_NO_CASES);
  rc = RC_PARK;

out:
  if (pollorder != stackbuf) rt_free(pollorder);
  return rc;
}

void selectgo_finish(p_t *pp, g_t *gp) {
  sudog *first = gp->waiting;
  bool locked = first->is_select || first->inqueue;
  if (locked) { /* Pass 3: leave every queue the select still sits in. */
    hchan *last = NULL;
    for (sudog *sd = first; sd; sd = sd->waitlink) {
      if (sd->c != last) rt_lock(&sd->c->lock);
      last = sd->c;
    }
  }
  for (sudog *sd = first; sd; sd = sd->waitlink)
    waitq_remove(sd->is_send ? &sd->c->sendq : &sd->c->recvq, sd);
  if (locked) {
    hchan *last = NULL;
    for (sudog *sd = first; sd; sd = sd->waitlink) {
      if (sd->c != last) rt_unlock(&sd->c->lock);
      last = sd->c;
    }
  }
  gp->waiting = NULL;
  gp->param = NULL;
  for (sudog *sd = first; sd;) {
    sudog *next = sd->waitlink;
    if (sd->box) box_free_dirty(pp, sd->box); /* a value nobody took */
    rt_release(&sd->c->obj);
    release_sudog(pp, sd);
    sd = next;
  }
}
