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
 *   - A context's lock guards its err, its done pointer and its list of
 *     watchers (ctx_node: child contexts and Gs in descriptor ops). Locks
 *     are taken down the tree only, one at a time: a cancel sets err, closes
 *     done and fires the Gs' watchers under the context's lock, takes its
 *     children off the list (each with a reference, unless it is being
 *     freed), unlocks, and then cancels them from a worklist. Nothing is
 *     released while a lock is held.
 *   - Everything walks the tree with loops, never recursion: cancel, free
 *     (a context whose last reference goes drops its parent's in a loop),
 *     value and err lookups, so a chain may be as deep as memory allows.
 *   - A value context watches through its nearest cancellable ancestor.
 *   - Whoever can still observe a cancellation keeps the context alive:
 *     proxies, child contexts, the done channel (it holds a reference to
 *     its context, so a goroutine parked on done alone still wakes), and Gs
 *     in descriptor ops (their Lua stack holds the context they watch). The
 *     deadline timer does not: its heap slot is weak (time.c), and a
 *     context collected before its deadline deletes it.
 *   - The done channel is made on the first done() (or again after the last
 *     one was collected), receive-only and shared from the start (it
 *     carries no value, only its close), closed if the context is done.
 *     The context's pointer to it is weak: the channel's free path clears
 *     it under the context's lock, and done() takes a reference under that
 *     lock only if the count is above 0.
 *   - A value context keeps its key and value in the VM that made it (by
 *     reference) and as copies made with it. Until it, or a context derived
 *     from it, crosses to another VM (ctx_share), that VM reads the values
 *     themselves; from then on everyone reads copies, that VM too, as for
 *     values on a shared channel. Keys compare by identity in that VM and
 *     as copies elsewhere. `shared` on a context implies it on all its
 *     ancestors; a context with a key or value that cannot be copied never
 *     crosses (the crossing fails), so it is only ever read in its VM.
 */
#include <lauxlib.h>
#include <string.h>

#include "rt.h"

enum ctx_kind { CTX_BACKGROUND, CTX_TODO, CTX_CANCEL, CTX_VALUE };
enum ctx_err { ERR_NONE, ERR_CANCELED, ERR_DEADLINE };

struct context {
  rt_object obj;
  uint8_t kind;
  uint8_t err;         /* enum ctx_err, under lock */
  _Atomic bool shared; /* it, or a context derived from it, crossed to another VM */
  context *parent;     /* a reference */
  int64_t deadline;    /* monotonic ns, own or inherited; 0 for none */
  double deadline_wall;
  rtlock lock;
  union {
    struct { /* CTX_CANCEL */
      hchan *done;          /* under lock; no reference (it holds one to us) */
      ctx_node *watchers;   /* under lock */
      ctx_node self;        /* in the nearest cancellable ancestor's list */
      rt_timer timer;       /* its own deadline's, weak */
      context *cancel_next; /* in a cancel's worklist, holding a reference */
    };
    struct { /* CTX_VALUE */
      p_t *vm;              /* the VM that made it, whose vals hold key and value */
      int32_t keybox, valbox;
      rt_copy key, val;     /* COPY_NONE if it could not be copied */
    };
  };
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
  } else {
    atomic_init(&c->shared, true); /* a root: the same on every VM */
  }
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

/* A child context's node. Never called: cancel() recognises child nodes by
 * it and cancels them from its worklist, after the parent's lock. */
static void child_fire(ctx_node *n, context **release) {
  (void)n, (void)release;
  rt_throw("runtime: a child context fired from under its parent's lock");
}

static context *child_of(ctx_node *n) { return (context *)((char *)n - offsetof(context, self)); }

/* Cancel c alone with err: children it had go on *work, each with a
 * reference (one being freed is only taken off the list). */
static void cancel_one(context *c, uint8_t err, context **work) {
  rt_lock(&c->lock);
  if (c->err != ERR_NONE) {
    rt_unlock(&c->lock);
    return;
  }
  c->err = err;
  if (c->done) closechan(c->done);
  ctx_node *n;
  while ((n = c->watchers)) {
    unlink_node(c, n);
    if (n->fire != child_fire) {
      n->fire(n, NULL); /* a G in a descriptor op: valid while linked, so now */
      continue;
    }
    context *child = child_of(n);
    if (rt_tryretain(&child->obj)) {
      child->cancel_next = *work;
      *work = child;
    }
  }
  rt_unlock(&c->lock);
  timer_del(&c->timer); /* it will not fire now */
}

/* Cancel c (held by the caller) and its subtree with err, parent before
 * child, with a worklist instead of recursion. */
static void cancel_tree(context *c, uint8_t err) {
  context *work = NULL;
  cancel_one(c, err, &work);
  while (work) {
    context *child = work;
    work = child->cancel_next;
    cancel_one(child, err, &work);
    rt_release(&child->obj);
  }
}

/* Cancel c (from any thread) and leave its parent's list. */
static void cancel_and_leave(context *c, uint8_t err) {
  cancel_tree(c, err);
  ctx_unwatch(&c->self);
}

static void deadline_fire(p_t *pp, rt_timer *t, int64_t now) {
  (void)pp, (void)now;
  cancel_and_leave(t->arg, ERR_DEADLINE); /* timers_run holds a reference for us */
}

/* A cancellable child of parent, with a deadline (monotonic ns, wall
 * seconds) if when != 0. */
static context *with_cancel(p_t *pp, context *parent, int64_t when, double wall) {
  context *c = ctx_new(CTX_CANCEL, parent);
  c->self.fire = child_fire;
  c->timer.idx = -1;
  c->timer.f = deadline_fire;
  c->timer.arg = c;
  c->timer.ref = &c->obj;
  c->timer.weak = true;
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
    timer_add(pp, &c->timer, when);
  }
  return c;
}

void ctx_done_free(hchan *done) {
  context *c = done->ctx;
  rt_lock(&c->lock);
  if (c->done == done) c->done = NULL;
  rt_unlock(&c->lock);
  rt_release(&c->obj);
}

/* c's done channel (cancellable), with a new reference for the caller. */
static hchan *done_chan(p_t *pp, context *c) {
  rt_lock(&c->lock);
  hchan *ch = c->done;
  if (!ch || !rt_tryretain(&ch->obj)) {
    ch = chan_make(pp, 0); /* the caller's reference */
    atomic_store(&ch->shared, true);
    ch->recv_only = true;
    ch->closed = c->err != ERR_NONE;
    ch->ctx = c;
    rt_retain(&c->obj);
    c->done = ch;
  }
  rt_unlock(&c->lock);
  return ch;
}

void context_free(rt_object *o) {
  context *c = (context *)o;
  while (c) {
    if (c->kind == CTX_CANCEL) {
      ctx_unwatch(&c->self);
      timer_del(&c->timer); /* weak: it goes with us */
    }
    if (c->kind == CTX_VALUE) {
      if (c->keybox) box_free_dirty(c->vm, c->keybox);
      if (c->valbox) box_free_dirty(c->vm, c->valbox);
      copy_free(&c->key);
      copy_free(&c->val);
    }
    context *parent = c->parent;
    rt_free(c);
    /* Our reference to the parent: if it was the last, free it here. */
    c = parent && rt_release_last(&parent->obj) ? parent : NULL;
  }
}

void context_runtime_free(runtime *rt) {
  if (rt->background) rt_release(&rt->background->obj);
  if (rt->todo) rt_release(&rt->todo->obj);
}

/* ---- crossing to another VM ---- */

/* [-0, +2] the message for c's key or value that cannot be copied, in two
 * parts that the crossing point's path follows (value.c joins them with
 * " of "), e.g. "cannot copy a coroutine to another processor at " and
 * "(context value for key 'k').inner". We run on the thread of the VM that
 * made c: such a context never left it. */
static int uncopyable(context *c, lua_State *L) {
  bool key = c->key.kind == COPY_NONE;
  p_t *pp = getp();
  if (pp != c->vm) { /* cannot happen: the values are not here to describe */
    lua_pushliteral(L, "cannot copy a context value to another processor at ");
    lua_pushliteral(L, "");
    return -1;
  }
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, pp->vals_ref);
  lua_rawgeti(L, -1, key ? c->keybox : c->valbox);
  /* Copy it again, for value.c's own words: the label \1 marks where the
   * crossing point's path goes. */
  rt_copy cp = copy_make(L, -1, "\1");
  if (cp.kind != COPY_NONE) { /* cannot happen either */
    copy_free(&cp);
    lua_pushliteral(L, "cannot copy a context value to another processor at \1");
  }
  size_t len;
  const char *msg = lua_tolstring(L, -1, &len);
  const char *mark = memchr(msg, '\1', len);
  if (mark) lua_pushlstring(L, msg, (size_t)(mark - msg));
  else lua_pushfstring(L, "%s at ", msg);
  const char *rest = mark ? mark + 1 : "";
  if (key) {
    lua_pushfstring(L, "(context key)%s", rest);
  } else {
    lua_rawgeti(L, -4, c->keybox);
    int kt = lua_type(L, -1);
    if (kt == LUA_TSTRING) lua_pushfstring(L, "(context value for key '%s')%s", lua_tostring(L, -1), rest);
    else if (kt == LUA_TNUMBER || kt == LUA_TBOOLEAN)
      lua_pushfstring(L, "(context value for key %s)%s", kt == LUA_TNUMBER ? lua_tostring(L, -1)
                                                         : lua_toboolean(L, -1) ? "true" : "false", rest);
    else lua_pushfstring(L, "(context value for a %s key)%s", lua_typename(L, kt), rest);
    lua_remove(L, -2);
  }
  /* keep the two parts only */
  lua_replace(L, top + 2);
  lua_replace(L, top + 1);
  lua_settop(L, top + 2);
  return -1;
}

int ctx_share(context *ctx, lua_State *L) {
  /* Everything above the first shared context is unshared, and was made in
   * this VM: check it all before marking any of it. */
  for (context *c = ctx; c && !atomic_load_explicit(&c->shared, memory_order_relaxed); c = c->parent)
    if (c->kind == CTX_VALUE && (c->key.kind == COPY_NONE || c->val.kind == COPY_NONE)) return uncopyable(c, L);
  for (context *c = ctx; c && !atomic_load_explicit(&c->shared, memory_order_relaxed); c = c->parent)
    atomic_store_explicit(&c->shared, true, memory_order_release);
  return 0;
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
  /* The copies every VM but this one reads, and this one too once the
   * context has crossed. One that cannot be made keeps the context from
   * crossing (ctx_share says why). */
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
    if (c->vm == pp) { /* the key itself, here */
      lua_rawgeti(L, 3, c->keybox);
      bool eq = lua_rawequal(L, -1, 2);
      lua_pop(L, 1);
      if (!eq) continue;
      if (!atomic_load_explicit(&c->shared, memory_order_acquire)) {
        lua_rawgeti(L, 3, c->valbox);
        return 1;
      }
    } else {
      if (c->key.kind == COPY_NONE) continue; /* never here: it cannot cross */
      if (push_copy(L, &c->key) < 0) return lua_error(L);
      bool eq = lua_rawequal(L, -1, 2);
      lua_pop(L, 1);
      if (!eq) continue;
    }
    if (c->val.kind == COPY_NONE) return luaL_error(L, "context value cannot be copied to another processor");
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
  hchan *ch = done_chan(this_p(L), c);
  rt_push_object(L, &ch->obj);
  rt_release(&ch->obj);
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
