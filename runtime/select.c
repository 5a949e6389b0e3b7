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
 *   - Each sudog of a parked select holds a reference to its channel,
 *     dropped by selectgo_finish: the G's stack holds only the case
 *     tables, which a script may change while it is parked.
 *   - A send case's value is a box of the selecting VM on a local channel,
 *     and on a shared one only its copy, made before any channel is locked
 *     (chan.c: a shared channel carries copies for every receiver).
 *   - A timer's channel lets a value that is due in before pass 1 looks at
 *     it, and hears (chantimer_sync) of every receiver pass 2 queues on it
 *     and pass 3 takes off it (time.c).
 */
#include <stdlib.h>

#include <lauxlib.h>

#include "rt.h"

#define SELECT_STACK 64

static hchan *case_chan(select_case *sc) { return (hchan *)sc->c->obj; }

static void sellock(select_case *cases, const int32_t *lockorder, int32_t n) {
  hchan *last = NULL;
  for (int32_t i = 0; i < n; i++) {
    hchan *c = case_chan(&cases[lockorder[i]]);
    if (c != last) chan_lock(c);
    last = c;
  }
}

static void selunlock(select_case *cases, const int32_t *lockorder, int32_t n) {
  for (int32_t i = n - 1; i >= 0; i--) {
    hchan *c = case_chan(&cases[lockorder[i]]);
    if (i > 0 && c == case_chan(&cases[lockorder[i - 1]])) continue;
    chan_unlock(c);
  }
}

/* gopark's unlockf: the sudogs on g->waiting are in lock order. */
static void selparkunlock(g_t *gp) {
  hchan *last = NULL;
  for (sudog *sd = gp->live->waiting; sd; sd = sd->waitlink) {
    if (sd->c != last) chan_unlock(sd->c);
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

/* Go's selectgo. block: park gp when no case is ready (it must be able to).
 * Returns RC_OK (res filled; a send case's value goes to res->box),
 * RC_CLOSED (res->idx is a send case on a closed channel), RC_WOULDBLOCK,
 * or RC_PARK (each send case's value goes to cases[i].box, then yield). */
static int32_t selectgo_impl(p_t *pp, g_t *gp, select_case *cases, int32_t n, bool block, select_result *res) {
  int32_t stackbuf[2 * SELECT_STACK];
  int32_t *pollorder = stackbuf, *lockorder = stackbuf + SELECT_STACK;
  if (n > SELECT_STACK) {
    pollorder = rt_malloc(2 * (size_t)n * sizeof *pollorder);
    lockorder = pollorder + n;
  }
  int32_t rc = RC_OK;
  res->copy.kind = COPY_NONE;

  /* Random poll order over the cases that can fire (Fisher-Yates, inside
   * out). The lock order is sorted from the cases' own order, not the poll
   * order: a select in a loop sorts the same input every time, and the
   * sort's branches are predicted (from the random order, a select over
   * two channels spent a fifth of its time on mispredicted ones). */
  int32_t norder = 0;
  for (int32_t i = 0; i < n; i++) {
    if (cases[i].kind == CASE_NIL || !cases[i].c) continue;
    int32_t j = (int32_t)(((uint64_t)fastrand(pp) * (uint32_t)(norder + 1)) >> 32);
    pollorder[norder] = pollorder[j];
    pollorder[j] = i;
    lockorder[norder] = i;
    norder++;
  }
  sort_lockorder(cases, lockorder, norder);

  if (norder > 0) sellock(cases, lockorder, norder);

  /* Pass 1: the first ready case in poll order. */
  for (int32_t k = 0; k < norder; k++) {
    int32_t i = pollorder[k];
    hchan *c = case_chan(&cases[i]);
    res->idx = i + 1;
    if (cases[i].kind == CASE_RECV) {
      if (chan_has_timer(c)) chantimer_run(c);
      sudog *sd = waitq_dequeue(&c->sendq);
      val v = {0};
      if (sd) {
        recv_from_sender_locked(c, sd, &v);
        res->ok = 1;
      } else if (c->qcount > 0) {
        v = c->buf[c->recvx];
        c->buf[c->recvx] = (val){0};
        if (++c->recvx == c->dataqsiz) c->recvx = 0;
        c->qcount--;
        res->ok = 1;
      } else if (c->closed) {
        res->ok = 0;
      } else {
        continue;
      }
      selunlock(cases, lockorder, norder);
      res->box = res->ok ? val_take(pp, &v) : 0;
      res->copy = res->ok && !res->box ? v.copy : (rt_copy){COPY_NONE, {0}};
      if (res->box) box_free(pp, res->box); /* loaded at once by the caller */
      goto out;
    } else {
      if (c->closed || c->recv_only) {
        selunlock(cases, lockorder, norder);
        rc = c->recv_only ? RC_RECVONLY : RC_CLOSED;
        goto out;
      }
      sudog *sd = waitq_dequeue(&c->recvq);
      if (!sd && c->qcount >= c->dataqsiz) continue;
      /* A shared channel's value is its copy; a local one's, a box. */
      val v = {cases[i].copy, cases[i].copy.kind == COPY_NONE ? box_alloc(pp) : 0, pp->id};
      cases[i].copy.kind = COPY_NONE; /* consumed */
      res->box = v.box;
      if (sd) {
        chan_deliver(c, sd, &v, true);
      } else {
        c->buf[c->sendx] = v;
        if (++c->sendx == c->dataqsiz) c->sendx = 0;
        c->qcount++;
      }
      res->ok = 1;
      selunlock(cases, lockorder, norder);
      goto out;
    }
  }

  if (!block) {
    if (norder > 0) selunlock(cases, lockorder, norder);
    rc = RC_WOULDBLOCK;
    goto out;
  }

  /* Pass 2: queue a sudog on every channel, in lock order, and park. */
  atomic_store(&gp->live->selectdone, 0);
  sudog **link = &gp->live->waiting;
  for (int32_t k = 0; k < norder; k++) {
    int32_t i = lockorder[k];
    hchan *c = case_chan(&cases[i]);
    sudog *sd = acquire_sudog(pp, gp);
    sd->c = c;
    /* A select's sudog holds its channel: the parked G's stack holds only
     * the case tables, which a script may change meanwhile. */
    rt_retain(&c->obj);
    sd->on = ON_CHAN;
    sd->is_select = true;
    sd->case_idx = i + 1;
    sd->is_send = cases[i].kind == CASE_SEND;
    if (sd->is_send) {
      sd->box = cases[i].box = cases[i].copy.kind == COPY_NONE ? box_alloc(pp) : 0;
      sd->copykind = cases[i].copy.kind;
      if (sd->copykind == COPY_NUM) sd->copynum = cases[i].copy.num;
      else if (sd->copykind == COPY_BLOB) sd->copyblob = cases[i].copy.blob;
      cases[i].copy.kind = COPY_NONE;
      waitq_enqueue(&c->sendq, sd);
    } else {
      waitq_enqueue(&c->recvq, sd);
      if (chan_has_timer(c)) chantimer_sync(c);
    }
    *link = sd;
    link = &sd->waitlink;
  }
  *link = NULL;
  gp->live->op = norder ? OP_CHAN : OP_NONE;
  gopark(gp, norder ? selparkunlock : NULL, n ? WR_SELECT : WR_SELECT_NO_CASES);
  rc = RC_PARK;

out:
  if (pollorder != stackbuf) rt_free(pollorder);
  return rc;
}

/* FFI: a select that does not block, over local channels. */
int32_t selectgo(select_case *cases, int32_t n, select_result *res) {
  p_t *pp = getp();
  if (preempt_pending(pp)) return RC_PREEMPT;
  for (int32_t i = 0; i < n; i++)
    if (cases[i].c && atomic_load_explicit(&case_chan(&cases[i])->shared, memory_order_relaxed))
      return RC_SHARED;
  return selectgo_impl(pp, NULL, cases, n, false, res);
}

/* The type of the value at idx as lugo's errors spell it: a runtime
 * object's name ("mutex"), else Lua's. */
static const char *value_typename(lua_State *L, int idx) {
  const char *name = NULL;
  if (lua_type(L, idx) == LUA_TUSERDATA && lua_getmetatable(L, idx)) {
    lua_pushliteral(L, "__name");
    lua_rawget(L, -2);
    name = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL; /* anchored by the metatable */
    lua_pop(L, 2);
  }
  return name ? name : luaL_typename(L, idx);
}

/* Read the case at stack index arg (argument pos of select) into *sc.
 * NULL, or the message saying what is wrong with it, pushed. Go's select
 * trusts its compiler; ours is handed tables a script may have changed. */
static const char *check_case(lua_State *L, int arg, int pos, select_case *sc) {
  sc->box = 0;
  sc->copy.kind = COPY_NONE;
  sc->c = NULL;
  sc->kind = CASE_NIL;
  if (lua_type(L, arg) != LUA_TTABLE)
    return lua_pushfstring(L, "bad argument #%d to 'select' (case expected, got %s)", pos, value_typename(L, arg));
  int top = lua_gettop(L);
  lua_rawgeti(L, arg, 1);
  lua_rawgeti(L, arg, 2);
  bool nokind = lua_isnil(L, -2);
  lua_Number kind = lua_type(L, -2) == LUA_TNUMBER ? lua_tonumber(L, -2) : 0;
  bool is_chan = false;
  if (lua_type(L, -1) == LUA_TUSERDATA && lua_getmetatable(L, -1)) {
    is_chan = lua_rawequal(L, -1, lua_upvalueindex(2));
    lua_pop(L, 1);
  }
  const char *err = NULL;
  if (nokind && lua_isnil(L, -1)) {
    /* case.default, passed along in its place: never fires */
  } else if (kind != CASE_RECV && kind != CASE_SEND) {
    err = lua_pushfstring(L, "bad argument #%d to 'select' (case expected, got table)", pos);
  } else if (!lua_isnil(L, -1) && !is_chan) {
    err = lua_pushfstring(L, "bad argument #%d to 'select' (case on a channel expected, got case on %s)", pos,
                          value_typename(L, -1));
  } else if (is_chan) {
    sc->kind = (int32_t)kind;
    sc->c = lua_touserdata(L, -1);
  }
  if (err) {
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
  } else {
    lua_settop(L, top);
  }
  return err;
}

/* C API select(default, case, ...) -> index, box, ok (box: a received value's,
 * 0 for none; load it at once), or (ERR, message), or 0 when nothing is
 * ready and block is false. A case is {CASE_RECV, ch} or {CASE_SEND, ch, v},
 * ch nil for a nil channel; {} (case.default) never fires. Anything else
 * raises. Upvalues: vals, the channel metatable. May park. */
int select_block(lua_State *L) {
  /* The default's position, decided by the caller (lua/lugo/init.lua knows
   * case.default by identity): whatever that table holds, it never fires. */
  lua_Integer def = lua_type(L, 1) == LUA_TNUMBER ? lua_tointeger(L, 1) : 0;
  bool block = def == 0;
  int32_t n = lua_gettop(L) - 1;
  select_case stackcases[SELECT_STACK];
  select_case *cases = n > SELECT_STACK ? rt_malloc((size_t)n * sizeof *cases) : stackcases;
  for (int32_t i = 0; i < n; i++) {
    if (i + 1 == def) {
      cases[i] = (select_case){.c = NULL, .kind = CASE_NIL};
      continue;
    }
    if (check_case(L, i + 2, i + 1, &cases[i])) {
      if (cases != stackcases) rt_free(cases);
      return lua_error(L);
    }
  }
  /* A send on a shared channel is copied before any channel is locked.
   * Copying one case's value may share another case's channel (the value
   * holds it): go over them again until no copy is missing. */
  for (bool again = true; again;) {
    again = false;
    for (int32_t i = 0; i < n; i++) {
      if (cases[i].kind != CASE_SEND || cases[i].copy.kind != COPY_NONE ||
          !atomic_load(&case_chan(&cases[i])->shared))
        continue;
      lua_rawgeti(L, i + 2, 3);
      cases[i].copy = copy_make(L, -1, "value");
      if (cases[i].copy.kind == COPY_NONE) {
        for (int32_t j = 0; j < n; j++) copy_free(&cases[j].copy);
        if (cases != stackcases) rt_free(cases);
        return rt_push_msg_err(L);
      }
      lua_pop(L, 1);
      again = true;
    }
  }
  p_t *pp = getp();
  g_t *gp = pp ? getg() : NULL;
  int32_t can = block ? rt_can_block(L, gp) : RC_WOULDBLOCK;
  select_result res;
  int32_t rc = selectgo_impl(pp, gp, cases, n, can == RC_OK, &res);
  int nret = 3;
  if (rc == RC_PARK) {
    for (int32_t i = 0; i < n; i++) { /* the values of send cases wait in their boxes */
      if (cases[i].kind != CASE_SEND || !cases[i].box) continue;
      lua_rawgeti(L, i + 2, 3);
      lua_rawseti(L, lua_upvalueindex(1), cases[i].box);
    }
    nret = rt_park_yield(L, gp, SHAPE_SELECT);
  } else if (rc == RC_WOULDBLOCK) {
    if (block) {
      nret = rt_push_err(L, can);
    } else {
      lua_pushinteger(L, 0);
      nret = 1;
    }
  } else {
    lua_pushinteger(L, res.idx);
    if (rc == RC_RECVONLY) {
      lua_pop(L, 1);
      lua_pushstring(L, "send on receive-only channel");
      nret = rt_push_msg_err(L);
    } else if (rc == RC_CLOSED) {
      lua_pushinteger(L, 0);
      lua_pushboolean(L, 0);
    } else if (cases[res.idx - 1].kind == CASE_SEND) {
      if (res.box) { /* a local channel's; a shared one took the copy */
        lua_rawgeti(L, res.idx + 1, 3);
        lua_rawseti(L, lua_upvalueindex(1), res.box);
      }
      lua_pushinteger(L, 0);
      lua_pushboolean(L, 1);
    } else if (res.ok) {
      /* selectgo freed a box for an immediate load; a copy needs a new one */
      bool copied = !res.box;
      int32_t box = take_box(L, pp, res.box, res.copy, lua_upvalueindex(1));
      if (box < 0) {
        lua_remove(L, -2); /* the index */
        nret = rt_push_msg_err(L);
      } else {
        if (copied && box) box_free(pp, box);
        lua_pushinteger(L, box);
        lua_pushboolean(L, 1);
      }
    } else {
      lua_pushinteger(L, 0);
      lua_pushboolean(L, 0);
    }
  }
  for (int32_t i = 0; i < n; i++) copy_free(&cases[i].copy); /* copies no case took */
  if (cases != stackcases) rt_free(cases);
  return nret;
}

void selectgo_finish(p_t *pp, g_t *gp) {
  sudog *first = gp->live->waiting;
  bool locked = first->is_select || sudog_inqueue(first);
  if (locked) { /* Pass 3: leave every queue the select still sits in. */
    hchan *last = NULL;
    for (sudog *sd = first; sd; sd = sd->waitlink) {
      if (sd->c != last) chan_lock(sd->c);
      last = sd->c;
    }
  }
  for (sudog *sd = first; sd; sd = sd->waitlink)
    waitq_remove(sd->is_send ? &sd->c->sendq : &sd->c->recvq, sd);
  if (locked) {
    for (sudog *sd = first; sd; sd = sd->waitlink)
      if (chan_has_timer(sd->c)) chantimer_sync(sd->c); /* maybe no receiver waits now */
    hchan *last = NULL;
    for (sudog *sd = first; sd; sd = sd->waitlink) {
      if (sd->c != last) chan_unlock(sd->c);
      last = sd->c;
    }
  }
  gp->live->waiting = NULL;
  gp->live->op = OP_NONE;
  for (sudog *sd = first; sd;) {
    sudog *next = sd->waitlink;
    if (sd->box) box_free_dirty(pp, sd->box); /* a value nobody took */
    sudog_free_copy(sd);
    hchan *held = sd->is_select ? sd->c : NULL;
    release_sudog(pp, sd);
    if (held) rt_release(&held->obj); /* last: it may free the channel */
    sd = next;
  }
}
