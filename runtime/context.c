/*
 * context.c — Go's context package, owned by C so that a context works on
 * every processor: cancelling a parent cancels its whole subtree at once,
 * whichever threads wait on it.
 *
 * Invariants:
 *   - A context holds a reference to its parent; a parent does not hold
 *     its children: a child that is cancelled, or freed, leaves its
 *     parent's list. Background and TODO are never cancelled and keep no
 *     list: children of theirs link nowhere, as in Go.
 *   - A context's lock guards its err and its list of watchers (ctx_node:
 *     child contexts and Gs in descriptor ops). Cancelling fires every
 *     watcher with the lock held, parent before child, so locks are taken
 *     down the tree only. Nothing is released while a lock is held: the
 *     references a cancel drops are collected and released afterwards.
 *   - A value context watches through its nearest cancellable ancestor.
 *   - The done channel is made with the context, shared from the start (it
 *     carries no value, only its close), and closed exactly once, by cancel.
 *   - An armed deadline timer holds a reference to its context.
 *   - A value context keeps its key and value in the VM that made it (by
 *     reference, for that VM) and as copies, for the others.
 */
#include <lauxlib.h>
#include <string.h>

#include "rt.h"

enum ctx_kind { CTX_BACKGROUND, CTX_TODO, CTX_CANCEL, CTX_VALUE };
enum ctx_err { ERR_NONE, ERR_CANCELED, ERR_DEADLINE };

struct context {
  rt_object obj;
  uint8_t kind;
  uint8_t err;     /* enum ctx_err, under lock */
  context *parent; /* a reference */
  rtlock lock;
  hchan *done;        /* CTX_CANCEL */
  ctx_node *watchers; /* CTX_CANCEL */
  ctx_node self;      /* CTX_CANCEL: in the nearest cancellable ancestor */
  int64_t deadline;   /* monotonic ns, own or inherited; 0 for none */
  double deadline_wall;
  rt_timer timer;
  context *release_next; /* a cancel's list of references to drop */
  /* CTX_VALUE */
  p_t *vm;
  int32_t keybox, valbox;
  rt_copy key, val; /* COPY_NONE if it could not be copied */
};

static const char *const err_strings[] = {NULL, "context canceled", "context deadline exceeded"};

static context *ctx_new(enum ctx_kind kind, context *parent) {
  context *c = rt_calloc(1, sizeof *c);
  rt_object_init(&c->obj, RT_CONTEXT);
  c->kind = (uint8_t)kind;
  c->parent = parent;
  if (parent) {
    rt_retain(&parent->obj);
    c->deadline = parent->deadline;
    c->deadline_wall = parent->deadline_wall;
  }
  c->timer.idx = -1;
  return c;
}

/* The context whose cancellation c's cancellation is: itself, or the
 * nearest cancellable ancestor; NULL if it can never be cancelled. */
static context *cancellable(context *c) {
  while (c && c->kind == CTX_VALUE) c = c->parent;
  return c && c->kind == CTX_CANCEL ? c : NULL;
}

const char *ctx_err_string(context *ctx) {
  context *c = cancellable(ctx);
  if (!c) return NULL;
  rt_lock(&c->lock);
  uint8_t e = c->err;
  rt_unlock(&c->lock);
  return err_strings[e];
}

static void link_node(context *c, ctx_node *n) {
  n->prev = NULL;
  n->next = c->watchers;
  if (c->watchers) c->watchers->prev = n;
  c->watchers = n;
  n->linked = true;
}

static void unlink_node(context *c, ctx_node *n) {
  if (n->prev) n->prev->next = n->next;
  else c->watchers = n->next;
  if (n->next) n->next->prev = n->prev;
  n->next = n->prev = NULL;
  n->linked = false;
}

bool ctx_watch(context *ctx, ctx_node *n) {
  context *c = cancellable(ctx);
  n->ctx = c;
  n->linked = false;
  if (!c) return true; /* never cancelled */
  rt_lock(&c->lock);
  bool live = c->err == ERR_NONE;
  if (live) link_node(c, n);
  rt_unlock(&c->lock);
  return live;
}

void ctx_unwatch(ctx_node *n) {
  context *c = n->ctx;
  if (!c) return;
  rt_lock(&c->lock);
  if (n->linked) unlink_node(c, n);
  rt_unlock(&c->lock);
}

/* Cancel c and its subtree with err. References to drop (deadline timers
 * that will not fire now) are pushed on *release. */
static void cancel(context *c, uint8_t err, context **release) {
  rt_lock(&c->lock);
  if (c->err != ERR_NONE) {
    rt_unlock(&c->lock);
    return;
  }
  c->err = err;
  closechan(c->done);
  ctx_node *n;
  while ((n = c->watchers)) {
    unlink_node(c, n);
    n->fire(n, release);
  }
  rt_unlock(&c->lock);
  if (timer_del(&c->timer)) {
    c->release_next = *release;
    *release = c;
  }
}

static void child_fire(ctx_node *n, context **release) {
  context *c = (context *)((char *)n - offsetof(context, self));
  cancel(c, n->ctx->err, release);
}

static void release_all(context *rel) {
  while (rel) {
    context *next = rel->release_next;
    rt_release(&rel->obj);
    rel = next;
  }
}

/* Cancel c (from any thread) and leave its parent's list. */
static void cancel_and_leave(context *c, uint8_t err) {
  context *rel = NULL;
  cancel(c, err, &rel);
  ctx_unwatch(&c->self);
  release_all(rel);
}

static void deadline_fire(p_t *pp, rt_timer *t, int64_t now) {
  (void)pp, (void)now;
  context *c = t->arg;
  cancel_and_leave(c, ERR_DEADLINE);
  rt_release(&c->obj); /* the heap's */
}

/* A cancellable child of parent, with a deadline (monotonic ns, wall
 * seconds) if when != 0. */
static context *with_cancel(p_t *pp, context *parent, int64_t when, double wall) {
  context *c = ctx_new(CTX_CANCEL, parent);
  c->done = chan_make(pp, 0);
  atomic_store(&c->done->shared, true);
  c->done->recv_only = true;
  c->self.fire = child_fire;
  bool live = ctx_watch(parent, &c->self);
  if (!live) { /* the parent is done: so is the child, with its error */
    rt_lock(&c->self.ctx->lock);
    uint8_t err = c->self.ctx->err;
    rt_unlock(&c->self.ctx->lock);
    cancel_and_leave(c, err);
    return c;
  }
  if (when != 0 && (c->deadline == 0 || when < c->deadline)) {
    c->deadline = when;
    c->deadline_wall = wall;
    if (when <= nanotime()) {
      cancel_and_leave(c, ERR_DEADLINE);
      return c;
    }
    c->timer.f = deadline_fire;
    c->timer.arg = c;
    c->timer.ref = &c->obj;
    rt_retain(&c->obj);
    timer_add(pp, &c->timer, when);
  }
  return c;
}

void context_free(rt_object *o) {
  context *c = (context *)o;
  if (c->kind == CTX_CANCEL) {
    ctx_unwatch(&c->self);
    rt_release(&c->done->obj);
  }
  if (c->kind == CTX_VALUE) {
    if (c->keybox) box_free_dirty(c->vm, c->keybox);
    if (c->valbox) box_free_dirty(c->vm, c->valbox);
    copy_free(&c->key);
    copy_free(&c->val);
  }
  if (c->parent) rt_release(&c->parent->obj);
  rt_free(c);
}

void context_runtime_free(runtime *rt) {
  if (rt->background) rt_release(&rt->background->obj);
  if (rt->todo) rt_release(&rt->todo->obj);
}

/* ---- the C API for lua/lugo/context.lua ---- */

static p_t *this_p(lua_State *L) {
  p_t *pp = getp();
  if (!pp) luaL_error(L, "lugo: no runtime on this thread");
  return pp;
}

static context *check_ctx(lua_State *L, int idx) {
  context *c = (context *)rt_to_object(L, idx, RT_CONTEXT);
  if (!c) luaL_typerror(L, idx, "context");
  return c;
}

static void push_new(lua_State *L, context *c) {
  rt_push_object(L, &c->obj);
  rt_release(&c->obj);
}

/* background(todo) -> the process's Background (or TODO) context */
static int l_background(lua_State *L) {
  runtime *rt = this_p(L)->rt;
  bool todo = lua_toboolean(L, 1);
  context **slot = todo ? &rt->todo : &rt->background;
  rt_lock(&rt->sched_lock);
  if (!*slot) *slot = ctx_new(todo ? CTX_TODO : CTX_BACKGROUND, NULL);
  context *c = *slot;
  rt_unlock(&rt->sched_lock);
  rt_push_object(L, &c->obj);
  return 1;
}

static double optwall(lua_State *L, int idx) {
  return lua_isnoneornil(L, idx) ? 0 : luaL_checknumber(L, idx);
}


/* with_cancel(parent[, deadline]) -> ctx */
static int l_with_cancel(lua_State *L) {
  context *parent = check_ctx(L, 1);
  double wall = optwall(L, 2);
  int64_t when = lua_isnoneornil(L, 2) ? 0 : wall_to_mono(wall);
  push_new(L, with_cancel(this_p(L), parent, when, wall));
  return 1;
}

/* cancel(ctx) */
static int l_cancel(lua_State *L) {
  context *c = check_ctx(L, 1);
  if (c->kind == CTX_CANCEL) cancel_and_leave(c, ERR_CANCELED);
  return 0;
}

/* with_value(parent, key, value) -> ctx */
static int l_with_value(lua_State *L) {
  context *parent = check_ctx(L, 1);
  p_t *pp = this_p(L);
  lua_settop(L, 3);
  context *c = ctx_new(CTX_VALUE, parent);
  c->vm = pp;
  lua_rawgeti(L, LUA_REGISTRYINDEX, pp->vals_ref);
  c->keybox = box_alloc(pp);
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, c->keybox);
  c->valbox = box_alloc(pp);
  lua_pushvalue(L, 3);
  lua_rawseti(L, -2, c->valbox);
  lua_pop(L, 1);
  /* Copies for the other VMs; a key or value that cannot be copied is
   * visible in this VM only. */
  c->key = copy_make(L, 2, "key");
  if (c->key.kind == COPY_NONE) lua_pop(L, 1);
  c->val = copy_make(L, 3, "value");
  if (c->val.kind == COPY_NONE) lua_pop(L, 1);
  push_new(L, c);
  return 1;
}

/* [-0, +1] push a copy, keeping it */
static int push_copy(lua_State *L, const rt_copy *cp) {
  if (cp->kind == COPY_BLOB) return value_decode_safe(L, cp->blob);
  rt_copy scalar = *cp;
  return copy_push(L, scalar);
}

/* value(ctx, key) -> the value of the nearest with_value for key, or nil */
static int l_value(lua_State *L) {
  context *c = check_ctx(L, 1);
  p_t *pp = this_p(L);
  lua_settop(L, 2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, pp->vals_ref);
  for (; c; c = c->parent) {
    if (c->kind != CTX_VALUE) continue;
    if (c->vm == pp) {
      lua_rawgeti(L, 3, c->keybox);
      bool eq = lua_rawequal(L, -1, 2);
      lua_pop(L, 1);
      if (eq) {
        lua_rawgeti(L, 3, c->valbox);
        return 1;
      }
      continue;
    }
    if (c->key.kind == COPY_NONE) continue;
    if (push_copy(L, &c->key) < 0) return lua_error(L);
    bool eq = lua_rawequal(L, -1, 2);
    lua_pop(L, 1);
    if (!eq) continue;
    if (c->val.kind == COPY_NONE)
      return luaL_error(L, "context value cannot be copied to another processor");
    if (push_copy(L, &c->val) < 0) return lua_error(L);
    return 1;
  }
  lua_pushnil(L);
  return 1;
}

/* done(ctx) -> channel, or nil for one that is never cancelled */
static int l_done(lua_State *L) {
  context *c = cancellable(check_ctx(L, 1));
  if (!c) {
    lua_pushnil(L);
    return 1;
  }
  rt_push_object(L, &c->done->obj);
  return 1;
}

/* err(ctx) -> nil, "context canceled" or "context deadline exceeded" */
static int l_err(lua_State *L) {
  const char *e = ctx_err_string(check_ctx(L, 1));
  if (e) lua_pushstring(L, e);
  else lua_pushnil(L);
  return 1;
}

/* deadline(ctx) -> wall seconds, or nil */
static int l_deadline(lua_State *L) {
  context *c = check_ctx(L, 1);
  if (c->deadline == 0) lua_pushnil(L);
  else lua_pushnumber(L, c->deadline_wall);
  return 1;
}

/* kind(ctx) -> "background", "todo", "cancel" or "value", for tostring */
static int l_kind(lua_State *L) {
  static const char *const kinds[] = {"background", "todo", "cancel", "value"};
  lua_pushstring(L, kinds[check_ctx(L, 1)->kind]);
  return 1;
}

void context_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"ctx_background", l_background}, {"ctx_with_cancel", l_with_cancel}, {"ctx_cancel", l_cancel},
      {"ctx_with_value", l_with_value}, {"ctx_value", l_value},             {"ctx_done", l_done},
      {"ctx_err", l_err},               {"ctx_deadline", l_deadline},       {"ctx_kind", l_kind},
      {NULL, NULL},
  };
  luaL_register(L, NULL, funcs);
}
