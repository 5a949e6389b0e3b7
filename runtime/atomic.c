/*
 * atomic.c — state that every processor shares by reference: sync.atomic.int,
 * sync.atomic.value, and the shared half of sync.pool. Go keeps sync/atomic
 * outside its runtime; here they are runtime objects (object.c) because only
 * a C object can be the same thing in every VM.
 *
 * Invariants:
 *   - atomic.int holds an int64 that is always a safe integer, within
 *     ±(2^53 - 1), so that every value it ever holds reads back as the
 *     exact Lua number: store, swap and compare_and_swap refuse anything
 *     else, and add refuses a sum outside the range and leaves the value
 *     as it was (a CAS loop, never a fetch-and-add that could publish an
 *     out-of-range value, even briefly). Every operation is sequentially
 *     consistent, as Go's. The FFI entry points never touch Lua; their
 *     doubles outside the safe range (AINT_*) are status codes.
 *   - Every atomic operation (int and value) is a preemption point: it does
 *     nothing and answers RC_PREEMPT (or AINT_PREEMPT) when sysmon asked
 *     the running G to yield, so that a compiled loop spinning on an atomic
 *     cannot hold its P forever (at -p 1 it would wait for a goroutine that
 *     can never run).
 *   - atomic.value holds one value outside any VM: a scalar inline, or an
 *     immutable, reference-counted avbox (a string's bytes; a blob of
 *     value.c for a table, a function or a runtime object). `lock` guards
 *     only the exchange of (kind, num, box): values are encoded before it
 *     is taken and decoded after it is dropped, with a reference to the box,
 *     so that no Lua code (an allocation's GC step runs finalizers, which
 *     may use this very value) ever runs under it and a load never waits
 *     for another VM's decoding.
 *   - compare_and_swap compares by Lua's rawequal on what was stored: nil,
 *     booleans, numbers and strings by value, runtime objects by identity.
 *     Its old value must be one of those; a stored table or function
 *     equals nothing (each load is a fresh copy).
 *   - A pool object holds only its `new` function, encoded once when the
 *     pool is made; each VM decodes its own copy and keeps its own free
 *     lists (lua/lugo/sync.lua): pooled objects never cross VMs.
 */
#include <math.h>
#include <string.h>

#include <lauxlib.h>

#include "rt.h"

/* ---- atomic.int ---- */

#define AINT_MAX 9007199254740991.0 /* 2^53 - 1: the largest n with n + 1 exact */
/* Status codes returned where a value is expected: beyond AINT_MAX. */
#define AINT_PREEMPT 0x1p60  /* nothing done: yield, then call again */
#define AINT_BADARG 0x1p61   /* an argument is not a safe integer */
#define AINT_OVERFLOW 0x1p62 /* add: the sum is not a safe integer */

typedef struct aint_obj {
  rt_object obj;
  _Atomic int64_t v;
} aint_obj;

static bool safe_int(double v) { return v >= -AINT_MAX && v <= AINT_MAX && v == (double)(int64_t)v; }

static _Atomic int64_t *aint_of(proxy *px) { return &((aint_obj *)px->obj)->v; }

double aint_load(proxy *px) {
  if (preempt_pending(getp())) return AINT_PREEMPT;
  return (double)atomic_load(aint_of(px));
}

int32_t aint_store(proxy *px, double v) {
  if (preempt_pending(getp())) return RC_PREEMPT;
  if (!safe_int(v)) return RC_MISUSE;
  atomic_store(aint_of(px), (int64_t)v);
  return RC_OK;
}

double aint_add(proxy *px, double delta) {
  if (preempt_pending(getp())) return AINT_PREEMPT;
  if (!safe_int(delta)) return AINT_BADARG;
  _Atomic int64_t *a = aint_of(px);
  int64_t d = (int64_t)delta, old = atomic_load(a), sum;
  do {
    sum = old + d; /* both within ±2^53: no int64 overflow */
    if (sum > (int64_t)AINT_MAX || sum < -(int64_t)AINT_MAX) return AINT_OVERFLOW;
  } while (!atomic_compare_exchange_weak(a, &old, sum));
  return (double)sum;
}

double aint_swap(proxy *px, double v) {
  if (preempt_pending(getp())) return AINT_PREEMPT;
  if (!safe_int(v)) return AINT_BADARG;
  return (double)atomic_exchange(aint_of(px), (int64_t)v);
}

/* 1 swapped, 0 not, RC_MISUSE for an argument that is no safe integer. */
int32_t aint_cas(proxy *px, double old, double new) {
  if (preempt_pending(getp())) return RC_PREEMPT;
  if (!safe_int(old) || !safe_int(new)) return RC_MISUSE;
  int64_t expected = (int64_t)old;
  return atomic_compare_exchange_strong(aint_of(px), &expected, (int64_t)new);
}

static void push_new(lua_State *L, rt_object *o) {
  rt_push_object(L, o);
  rt_release(o); /* the creator's reference: the proxy holds its own */
}

/* C API atomic_int(v) -> atomic.int holding v (a safe integer: lugo.sync checks). */
static int l_atomic_int(lua_State *L) {
  double v = luaL_checknumber(L, 1);
  if (!safe_int(v)) return luaL_argerror(L, 1, "safe integer expected");
  aint_obj *a = rt_malloc(sizeof *a);
  rt_object_init(&a->obj, RT_ATOMIC_INT);
  atomic_init(&a->v, (int64_t)v);
  push_new(L, &a->obj);
  return 1;
}

/* ---- atomic.value ---- */

enum av_kind { AV_NIL, AV_FALSE, AV_TRUE, AV_NUM, AV_STR, AV_OBJ, AV_BLOB };

typedef struct avbox { /* immutable once made */
  _Atomic int32_t refs;
  rt_blob *blob;  /* AV_OBJ, AV_BLOB: the encoded value (it holds the object's reference) */
  rt_object *obj; /* AV_OBJ: the object itself, for identity */
  size_t len;     /* AV_STR */
  char str[];     /* AV_STR */
} avbox;

typedef struct av { /* a value outside any VM */
  uint8_t kind;     /* enum av_kind */
  double num;       /* AV_NUM */
  avbox *box;       /* AV_STR, AV_OBJ, AV_BLOB */
} av;

typedef struct aval_obj {
  rt_object obj;
  rtlock lock; /* guards cur: held for a copy of it, never around Lua code */
  av cur;
} aval_obj;

static avbox *avbox_new(size_t len) {
  avbox *b = rt_malloc(offsetof(avbox, str) + len + 1);
  atomic_init(&b->refs, 1);
  b->blob = NULL;
  b->obj = NULL;
  b->len = len;
  return b;
}

static void av_retain(av v) {
  if (v.box) atomic_fetch_add_explicit(&v.box->refs, 1, memory_order_relaxed);
}

static void av_release(av v) {
  if (!v.box || atomic_fetch_sub_explicit(&v.box->refs, 1, memory_order_acq_rel) != 1) return;
  blob_free(v.box->blob);
  rt_free(v.box);
}

/* [-0, +0 or +1] the value at idx, copied out of its VM: false with the
 * message pushed (channels' and spawn's text) if it cannot be. */
static bool av_make(lua_State *L, int idx, av *out) {
  *out = (av){AV_NIL, 0, NULL};
  switch (lua_type(L, idx)) {
  case LUA_TNIL: return true;
  case LUA_TBOOLEAN: out->kind = lua_toboolean(L, idx) ? AV_TRUE : AV_FALSE; return true;
  case LUA_TNUMBER:
    out->kind = AV_NUM;
    out->num = lua_tonumber(L, idx);
    return true;
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    out->kind = AV_STR;
    out->box = avbox_new(len);
    memcpy(out->box->str, s, len);
    out->box->str[len] = 0;
    return true;
  }
  default: {
    /* value.c's rules, exactly as a channel copies: a channel or a
     * context it meets becomes shared, since any VM may load it now. */
    rt_object *o = rt_to_any_object(L, idx);
    rt_blob *blob = value_encode(L, idx, 1, "value");
    if (!blob) return false;
    out->kind = o ? AV_OBJ : AV_BLOB;
    out->box = avbox_new(0);
    out->box->blob = blob;
    out->box->obj = o;
    return true;
  }
  }
}

/* [-0, +1] push v (which the caller holds a reference to); -1 with a
 * message pushed if it cannot be decoded here. */
static int av_push(lua_State *L, av v) {
  switch (v.kind) {
  case AV_FALSE: lua_pushboolean(L, 0); return 1;
  case AV_TRUE: lua_pushboolean(L, 1); return 1;
  case AV_NUM: lua_pushnumber(L, v.num); return 1;
  case AV_STR: lua_pushlstring(L, v.box->str, v.box->len); return 1;
  case AV_OBJ: rt_push_object(L, v.box->obj); return 1;
  case AV_BLOB: return value_decode_safe(L, v.box->blob) < 0 ? -1 : 1;
  default: lua_pushnil(L); return 1;
  }
}

/* What compare_and_swap compares with, read before the lock is taken. */
typedef struct av_key {
  uint8_t kind;
  double num;
  const char *str;
  size_t len;
  rt_object *obj;
} av_key;

/* [-0, +0] the key of the value at idx; false for a value that compares
 * equal to nothing stored (a table, a function, a foreign userdata). */
static bool av_key_of(lua_State *L, int idx, av_key *k) {
  *k = (av_key){AV_NIL, 0, NULL, 0, NULL};
  switch (lua_type(L, idx)) {
  case LUA_TNIL: return true;
  case LUA_TBOOLEAN: k->kind = lua_toboolean(L, idx) ? AV_TRUE : AV_FALSE; return true;
  case LUA_TNUMBER:
    k->kind = AV_NUM;
    k->num = lua_tonumber(L, idx);
    return true;
  case LUA_TSTRING:
    k->kind = AV_STR;
    k->str = lua_tolstring(L, idx, &k->len);
    return true;
  case LUA_TUSERDATA:
    k->kind = AV_OBJ;
    k->obj = rt_to_any_object(L, idx);
    return k->obj != NULL;
  default: return false;
  }
}

static bool av_equal(const av *v, const av_key *k) {
  if (v->kind != k->kind) return false;
  switch (v->kind) {
  case AV_NUM: return v->num == k->num; /* Lua's ==: NaN equals nothing */
  case AV_STR: return v->box->len == k->len && memcmp(v->box->str, k->str, k->len) == 0;
  case AV_OBJ: return v->box->obj == k->obj;
  default: return true; /* nil, false, true */
  }
}

static aval_obj *aval_of(proxy *px) { return (aval_obj *)px->obj; }

/* FFI load's fast path: RC_VAL_NIL/FALSE/TRUE/NUM (*num) for a scalar,
 * RC_DECODE for anything else (call the C API load), or RC_PREEMPT. */
int32_t aval_load_scalar(proxy *px, double *num) {
  if (preempt_pending(getp())) return RC_PREEMPT;
  aval_obj *a = aval_of(px);
  rt_lock(&a->lock);
  uint8_t kind = a->cur.kind;
  *num = a->cur.num;
  rt_unlock(&a->lock);
  switch (kind) {
  case AV_NIL: return RC_VAL_NIL;
  case AV_FALSE: return RC_VAL_FALSE;
  case AV_TRUE: return RC_VAL_TRUE;
  case AV_NUM: return RC_VAL_NUM;
  default: return RC_DECODE;
  }
}

/* The atomic.value at index 1, raising a type error for anything else
 * (lugo.sync checks first, with its own message: this is the backstop). */
static aval_obj *check_aval(lua_State *L) {
  aval_obj *a = (aval_obj *)rt_to_object(L, 1, RT_ATOMIC_VALUE);
  if (!a) luaL_typerror(L, 1, "atomic.value");
  return a;
}

/* Swap v into a; returns what it held (the caller's reference now). */
static av aval_exchange(aval_obj *a, av v) {
  rt_lock(&a->lock);
  av old = a->cur;
  a->cur = v;
  rt_unlock(&a->lock);
  return old;
}

/* [-0, +1] push old (and drop it): its value, or ERR and a message. */
static int push_taken(lua_State *L, av old) {
  int n = av_push(L, old);
  av_release(old);
  if (n < 0) return rt_push_msg_err(L);
  return 1;
}

/* C API aval_load(a) -> the value, a fresh copy; or (ERR, message). */
static int l_aval_load(lua_State *L) {
  aval_obj *a = check_aval(L);
  rt_lock(&a->lock);
  av v = a->cur;
  av_retain(v);
  rt_unlock(&a->lock);
  return push_taken(L, v);
}

/* C API aval_store(a, v) -> true, or (ERR, message) if v cannot be copied. */
static int l_aval_store(lua_State *L) {
  aval_obj *a = check_aval(L);
  lua_settop(L, 2);
  av v;
  if (!av_make(L, 2, &v)) return rt_push_msg_err(L);
  av_release(aval_exchange(a, v));
  lua_pushboolean(L, 1);
  return 1;
}

/* C API aval_swap(a, v) -> the old value; or (ERR, message). */
static int l_aval_swap(lua_State *L) {
  aval_obj *a = check_aval(L);
  lua_settop(L, 2);
  av v;
  if (!av_make(L, 2, &v)) return rt_push_msg_err(L);
  return push_taken(L, aval_exchange(a, v));
}

/* C API aval_cas(a, old, new) -> whether new replaced old; or (ERR,
 * message): old is not comparable, or new cannot be copied. */
static int l_aval_cas(lua_State *L) {
  aval_obj *a = check_aval(L);
  lua_settop(L, 3);
  av_key k;
  if (!av_key_of(L, 2, &k)) {
    lua_pushfstring(L,
                    "sync: compare_and_swap of %s (old must be nil, a boolean, a number, a string "
                    "or a runtime object)",
                    lua_type(L, 2) == LUA_TTABLE ? "a table" : lua_typename(L, lua_type(L, 2)));
    return rt_push_msg_err(L);
  }
  av v;
  if (!av_make(L, 3, &v)) return rt_push_msg_err(L);
  rt_lock(&a->lock);
  bool swapped = av_equal(&a->cur, &k);
  av drop = swapped ? a->cur : v;
  if (swapped) a->cur = v;
  rt_unlock(&a->lock);
  av_release(drop);
  lua_pushboolean(L, swapped);
  return 1;
}

/* C API atomic_value() -> an atomic.value holding nil. */
static int l_atomic_value(lua_State *L) {
  aval_obj *a = rt_calloc(1, sizeof *a);
  rt_object_init(&a->obj, RT_ATOMIC_VALUE);
  a->cur.kind = AV_NIL;
  push_new(L, &a->obj);
  return 1;
}

/* ---- pool ---- */

typedef struct pool_obj {
  rt_object obj;
  rt_blob *newfn; /* the encoded `new` function, or NULL */
} pool_obj;

/* C API pool(new) -> a pool; or (ERR, message) if new cannot be copied. */
static int l_pool(lua_State *L) {
  lua_settop(L, 1);
  rt_blob *b = NULL;
  if (!lua_isnil(L, 1)) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    b = value_encode(L, 1, 1, "argument #1.new");
    if (!b) return rt_push_msg_err(L);
  }
  pool_obj *p = rt_malloc(sizeof *p);
  rt_object_init(&p->obj, RT_POOL);
  p->newfn = b;
  push_new(L, &p->obj);
  return 1;
}

/* C API pool_new_fn(p) -> this VM's copy of the pool's new, or nothing;
 * or (ERR, message) if it cannot be decoded here. */
static int l_pool_new_fn(lua_State *L) {
  pool_obj *p = (pool_obj *)rt_to_object(L, 1, RT_POOL);
  if (!p) return luaL_typerror(L, 1, "pool");
  if (!p->newfn) return 0;
  if (value_decode_safe(L, p->newfn) < 0) return rt_push_msg_err(L);
  return 1;
}

void atomic_object_free(rt_object *o) {
  switch (o->type) {
  case RT_ATOMIC_VALUE: av_release(((aval_obj *)o)->cur); break;
  case RT_POOL: blob_free(((pool_obj *)o)->newfn); break;
  default: break;
  }
  rt_free(o);
}

void atomic_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"atomic_int", l_atomic_int}, {"atomic_value", l_atomic_value}, {"aval_load", l_aval_load},
      {"aval_store", l_aval_store}, {"aval_swap", l_aval_swap},       {"aval_cas", l_aval_cas},
      {"pool", l_pool},             {"pool_new_fn", l_pool_new_fn},   {NULL, NULL},
  };
  luaL_register(L, NULL, funcs);
}
