/*
 * module.c — the `lugo.core` Lua module: binds the runtime into a VM.
 *
 * Per VM (rt_vm_bind), in its registry:
 *   "lugo.p"     the P that owns the VM (light userdata)
 *   vals         the value boxes: vals[box] holds a value in flight
 *   cos          every coroutine the scheduler pooled: cos[thread] = true
 *   trampoline   the body of every pooled coroutine
 *   "lugo.core"  this module's table, built once
 *
 * The module exposes C API functions for what must create Lua values
 * (objects, goroutine bodies, tracebacks) and, as light userdata, the FFI
 * entry points of chan.c, select.c, time.c, sync.c, atomic.c and proc.c,
 * which lugo's Lua modules cast to function pointers: those paths never
 * leave the JIT.
 * Only the thread holding the VM's P calls any of it.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "rt.h"

/* The coroutine body: run one goroutine body after another, forever. An
 * error escaping a body kills the coroutine with its stack intact: the
 * scheduler reads the traceback from it and panics. No xpcall and no vararg
 * frame: every parked goroutine would pay for them in stack space (an
 * xpcall frame took a parked goroutine from 800 to 1,050 bytes). A body
 * with arguments comes as (f, {f, arg1, ..., argn}, n + 1). */
static const char trampoline_src[] =
    "local EXIT = ...\n"
    "local yield, unpack = coroutine.yield, unpack\n"
    "local function run(f, args, n)\n"
    "  if args then f(unpack(args, 2, n)) else f() end\n"
    "  f, args = nil, nil -- a pooled coroutine keeps nothing alive\n"
    "  return run(yield(EXIT))\n"
    "end\n"
    "return run\n";

static const char p_key[] = "lugo.p";
static const char core_key[] = "lugo.core";
static const char raw_key[] = "lugo.rawcoroutine";

int rt_vm_bind(p_t *pp, lua_State *L) {
  pp->L = L;
  lua_pushlightuserdata(L, pp);
  lua_setfield(L, LUA_REGISTRYINDEX, p_key);
  lua_newtable(L);
  pp->vals_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_createtable(L, 1, 0); /* the holder of the coroutine set (proc.c) */
  lua_newtable(L);
  lua_rawseti(L, -2, 1);
  pp->cos_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  /* The coroutine functions as they were, before lugo.internal wraps them. */
  lua_getglobal(L, "coroutine");
  lua_newtable(L);
  const char *names[] = {"resume", "yield", "status", "wrap", "create", "running", "isyieldable"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    lua_getfield(L, -2, names[i]);
    lua_setfield(L, -2, names[i]);
  }
  lua_setfield(L, LUA_REGISTRYINDEX, raw_key);
  lua_pop(L, 1);
  if (luaL_loadbuffer(L, trampoline_src, sizeof trampoline_src - 1, "=[lugo]") != 0)
    rt_throw("runtime: trampoline: %s", lua_tostring(L, -1));
  lua_pushlightuserdata(L, (void *)&rt_mark_exit);
  lua_call(L, 1, 1);
  pp->trampoline_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  rt_sched_protect_init(pp, L);
  rt_objects_open(L);
  value_vm_init(L);
  return 0;
}

void rt_vm_unbind(p_t *pp) {
  lua_State *L = pp->L;
  lua_pushnil(L);
  lua_setfield(L, LUA_REGISTRYINDEX, p_key);
}

static p_t *vm_p(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, p_key);
  p_t *pp = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!pp) luaL_error(L, "lugo: this Lua state has no runtime");
  return pp;
}

/* ---- objects ---- */

rt_object *sync_object_new(enum rt_type type);
void cond_set_locker(rt_object *cond, rt_object *locker);
rt_object *cond_locker(rt_object *cond);
typedef struct timer_obj timer_obj;
timer_obj *timer_obj_new(p_t *pp, int kind, double secs, int32_t fbox);
hchan *timer_obj_chan(timer_obj *to);

static void push_new(lua_State *L, rt_object *o) {
  rt_push_object(L, o);
  rt_release(o); /* the creator's reference: the proxy holds its own */
}

/* chan([cap]) -> channel */
static int l_chan(lua_State *L) {
  lua_Integer cap = 0;
  if (!lua_isnoneornil(L, 1)) {
    if (lua_type(L, 1) != LUA_TNUMBER) return luaL_typerror(L, 1, "number");
    lua_Number n = lua_tonumber(L, 1);
    if (n != n || n < 0 || n > 0x7fffffff || n != (lua_Number)(lua_Integer)n)
      return luaL_error(L, "makechan: size out of range");
    cap = (lua_Integer)n;
  }
  push_new(L, &chan_make(vm_p(L), (uint32_t)cap)->obj);
  return 1;
}

static int l_sync_new(lua_State *L) {
  enum rt_type type = (enum rt_type)lua_tointeger(L, lua_upvalueindex(1));
  rt_object *o = sync_object_new(type);
  if (type == RT_COND) {
    rt_object *locker = rt_to_object(L, 1, RT_MUTEX);
    if (!locker) locker = rt_to_object(L, 1, RT_RWMUTEX);
    if (!locker) {
      rt_release(o);
      return luaL_typerror(L, 1, "mutex or rwmutex");
    }
    cond_set_locker(o, locker);
  }
  push_new(L, o);
  return 1;
}

static int l_cond_locker(lua_State *L) {
  rt_object *o = rt_to_object(L, 1, RT_COND);
  if (!o) return luaL_typerror(L, 1, "cond");
  rt_push_object(L, cond_locker(o));
  return 1;
}

/* timer(kind, secs[, fbox]) -> timer; kind 0 timer, 1 ticker, 2 after_func
 * (fbox holds the function) */
static int l_timer(lua_State *L) {
  int kind = (int)luaL_checkinteger(L, 1);
  double secs = luaL_checknumber(L, 2);
  int32_t fbox = (int32_t)luaL_optinteger(L, 3, 0);
  push_new(L, (rt_object *)timer_obj_new(vm_p(L), kind, secs, fbox));
  return 1;
}

/* timer_chan(t) -> the Timer's or Ticker's channel, nil for after_func's */
static int l_timer_chan(lua_State *L) {
  rt_object *o = rt_to_object(L, 1, RT_TIMER);
  if (!o) return luaL_typerror(L, 1, "timer");
  hchan *c = timer_obj_chan((timer_obj *)o);
  if (!c) return 0;
  rt_push_object(L, &c->obj);
  return 1;
}

/* ---- goroutines and the program ---- */

static int l_stack(lua_State *L) {
  p_t *pp = vm_p(L);
  rt_push_stack(L, pp, getg(), lua_toboolean(L, 1));
  return 1;
}

/* The name of a value's type as lugo's errors spell it (a runtime
 * object's by its metatable's __name). */
static const char *type_name(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TUSERDATA && luaL_getmetafield(L, idx, "__name")) {
    const char *name = lua_tostring(L, -1);
    lua_pop(L, 1); /* the metatable holds the string */
    if (name) return name;
  }
  return luaL_typename(L, idx);
}

/* Raise the message on top at the caller of the C function, as error(msg, 2). */
static int raise_at_caller(lua_State *L) {
  luaL_where(L, 1);
  lua_insert(L, -2);
  lua_concat(L, 2);
  return lua_error(L);
}

static int bad_function(lua_State *L, const char *fname) {
  lua_pushfstring(L, "bad argument #1 to '%s' (function expected, got %s)", fname, type_name(L, 1));
  return raise_at_caller(L);
}

/* go(f, ...): f(...) in a new goroutine of this VM. Upvalue: vals. */
static int l_go(lua_State *L) {
  int n = lua_gettop(L);
  if (lua_type(L, 1) != LUA_TFUNCTION) {
    if (n == 0 || !luaL_getmetafield(L, 1, "__call")) return bad_function(L, "go");
    lua_pop(L, 1);
  }
  p_t *pp = getp();
  if (!pp) return luaL_error(L, "lugo: no runtime on this thread");
  int32_t box = box_alloc(pp);
  if (n == 1) {
    lua_pushvalue(L, 1);
  } else { /* {f, args...} */
    lua_createtable(L, n, 0);
    lua_insert(L, 1);
    for (int i = n; i >= 1; i--) lua_rawseti(L, 1, i);
  }
  lua_rawseti(L, lua_upvalueindex(1), box);
  g_t *gp = newproc(pp, box, n - 1);
  gp->site = tb_site(pp, L, 1);
  return 0;
}

/* spawn(f, ...): f and its arguments, copied, start on any P (upvalue 1:
 * spread them over the idle Ps rather than start them on this one). */
static int l_spawn(lua_State *L) {
  if (lua_type(L, 1) != LUA_TFUNCTION) return bad_function(L, "spawn");
  p_t *pp = vm_p(L);
  rt_blob *blob = value_encode_args(L, 1, lua_gettop(L));
  if (!blob) return raise_at_caller(L);
  newproc_spawn(pp->rt, blob, tb_site(pp, L, 1), lua_toboolean(L, lua_upvalueindex(1)));
  return 0;
}

static int l_main(lua_State *L) {
  p_t *pp = vm_p(L);
  runtime *rt = pp->rt;
  if (getg()) return luaL_error(L, "lugo.main: already inside a goroutine");
  if (rt->maing) return luaL_error(L, "lugo.main: already running");
  luaL_checktype(L, 1, LUA_TFUNCTION);
  int code = lugo_run(rt, lua_gettop(L) - 1);
  if (!rt->main_done || rt->exit_code != 0) { /* a panic, a deadlock or os.exit: the process ends, as in Go */
    fflush(NULL);
    exit(code);
  }
  return 0;
}

static int l_memstats(lua_State *L) {
  p_t *pp = vm_p(L);
  runtime *rt = pp->rt;
  lua_createtable(L, 0, 4);
  lua_createtable(L, rt->gomaxprocs, 0);
  double total = 0;
  for (int32_t i = 0; i < rt->gomaxprocs; i++) {
    p_t *p = rt->allp[i];
    void *arena = atomic_load_explicit(&p->arena, memory_order_acquire); /* its P may be making it now */
    double bytes = arena ? (double)rt_vm_arena_allocated(arena)
                 : p == pp ? (double)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + lua_gc(L, LUA_GCCOUNTB, 0)
                 : 0;
    total += bytes;
    lua_pushnumber(L, bytes);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "by_processor");
  lua_pushnumber(L, total);
  lua_setfield(L, -2, "alloc");
  lua_pushinteger(L, gcount(rt));
  lua_setfield(L, -2, "goroutines");
  return 1;
}

static int l_numcpu(lua_State *L) {
  lua_pushinteger(L, rt_numcpu());
  return 1;
}

/* ---- FFI entry points (never touch Lua) ---- */

static int32_t rt_box_new(void) {
  p_t *pp = getp();
  return pp ? box_alloc(pp) : RC_NOGOROUTINE;
}

/* C API gosched([local]) -> nothing: give the P to other goroutines. */
static int l_gosched(lua_State *L) {
  g_t *gp = getg();
  if (rt_can_block(L, gp) != RC_OK) return 0; /* cannot yield: just go on */
  if (lua_toboolean(L, 1)) rt_goyield(gp);
  else rt_gosched(gp);
  return rt_park_yield(L, gp, SHAPE_NONE);
}

/* C API preempt_yield(): after an FFI call answered RC_PREEMPT, give the P
 * to the others; where this G cannot yield, drop the request instead (sysmon
 * asks again), so that the call goes on when it is made again. */
static int l_preempt_yield(lua_State *L) {
  g_t *gp = getg();
  if (rt_can_block(L, gp) != RC_OK) {
    p_t *pp = getp();
    if (pp) __atomic_store_n(&pp->preempt, false, __ATOMIC_RELAXED);
    return 0;
  }
  rt_gosched(gp);
  return rt_park_yield(L, gp, SHAPE_NONE);
}

/* C API can_block() -> OK, or (ERR, code) if this G could not park here. */
static int l_can_block(lua_State *L) {
  int32_t can = rt_can_block(L, getg());
  if (can != RC_OK) return rt_push_err(L, can);
  lua_pushinteger(L, RC_OK);
  return 1;
}

/* C API park_forever() -> false if this G cannot park (os.exit's fallback). */
static int l_park_forever(lua_State *L) {
  g_t *gp = getg();
  if (rt_can_block(L, gp) != RC_OK) {
    lua_pushboolean(L, 0);
    return 1;
  }
  gopark(gp, NULL, WR_FOREVER);
  return rt_park_yield(L, gp, SHAPE_NONE);
}

static void rt_nonyield(int32_t delta) {
  g_t *gp = getg();
  if (gp) gp->live->nonyield += delta;
}

static double rt_goid(void) {
  g_t *gp = getg();
  return gp ? (double)gp->goid : 0;
}

static int32_t rt_num_goroutine(void) {
  p_t *pp = getp();
  return pp ? gcount(pp->rt) : 0;
}

static int32_t rt_gomaxprocs(void) {
  p_t *pp = getp();
  return pp ? pp->rt->gomaxprocs : 1;
}

static void rt_exit(int32_t code) {
  p_t *pp = getp();
  if (pp) rt_exit_request(pp->rt, code);
}

int32_t chan_trysend(proxy *, int32_t);
int32_t chan_trysend_scalar(proxy *, int32_t, double, int32_t);
int32_t chan_tryrecv(proxy *, double *, int32_t);
int chan_park_yield(lua_State *L);
int chan_take_pending(lua_State *L);
int chan_send_block(lua_State *L);
int chan_recv_block(lua_State *L);
int select_block(lua_State *L);
int time_sleep_block(lua_State *L);
int sync_block(lua_State *L);
int cond_wait_begin(lua_State *L);
int os_read_file(lua_State *L);
int os_write_file(lua_State *L);
int os_stat(lua_State *L);
int os_read_dir(lua_State *L);
int os_read_range(lua_State *L);
int32_t chan_close(proxy *);
int32_t chan_len(proxy *);
int32_t chan_cap(proxy *);
int32_t timer_stop(proxy *);
int32_t timer_reset(proxy *, double);
int32_t timer_kind(proxy *);
int32_t mutex_lock_fast(proxy *);
int32_t mutex_try_lock(proxy *);
int32_t mutex_unlock(proxy *);
int32_t rw_try_rlock(proxy *);
int32_t rw_runlock(proxy *);
int32_t rw_try_lock(proxy *);
int32_t rw_rlock_fast(proxy *);
int32_t rw_lock_fast(proxy *);
int32_t rw_unlock(proxy *);
int32_t wg_add(proxy *, int32_t);
int32_t wg_count(proxy *);
int32_t wg_wait_step(proxy *, int32_t);
int32_t once_done(proxy *);
void once_set_done(proxy *);
void cond_signal(proxy *);
void cond_broadcast(proxy *);
int32_t map_load_fast(proxy *, int32_t, const char *, size_t, double, double *);
int32_t map_store_fast(proxy *, int32_t, const char *, size_t, double, int32_t, double);
int32_t map_incr_fast(proxy *, int32_t, const char *, size_t, double, double, int32_t, double, double *);
double aint_load(proxy *);
int32_t aint_store(proxy *, double);
double aint_add(proxy *, double);
double aint_swap(proxy *, double);
int32_t aint_cas(proxy *, double, double);
int32_t aval_load_scalar(proxy *, double *);

typedef struct ffi_entry {
  const char *name, *type;
  void *fn;
} ffi_entry;

#define P "void *"
static const ffi_entry ffi_entries[] = {
    {"chan_trysend", "int32_t (*)(" P ", int32_t)", (void *)chan_trysend},
    {"chan_trysend_scalar", "int32_t (*)(" P ", int32_t, double, int32_t)", (void *)chan_trysend_scalar},
    {"chan_tryrecv", "int32_t (*)(" P ", double *, int32_t)", (void *)chan_tryrecv},
    {"chan_close", "int32_t (*)(" P ")", (void *)chan_close},
    {"chan_len", "int32_t (*)(" P ")", (void *)chan_len},
    {"chan_cap", "int32_t (*)(" P ")", (void *)chan_cap},
    {"selectgo", "int32_t (*)(lugo_select_case *, int32_t, lugo_select_result *)", (void *)selectgo},
    {"timer_stop", "int32_t (*)(" P ")", (void *)timer_stop},
    {"timer_reset", "int32_t (*)(" P ", double)", (void *)timer_reset},
    {"timer_kind", "int32_t (*)(" P ")", (void *)timer_kind},
    {"mutex_lock_fast", "int32_t (*)(" P ")", (void *)mutex_lock_fast},
    {"mutex_try_lock", "int32_t (*)(" P ")", (void *)mutex_try_lock},
    {"mutex_unlock", "int32_t (*)(" P ")", (void *)mutex_unlock},
    {"rw_try_rlock", "int32_t (*)(" P ")", (void *)rw_try_rlock},
    {"rw_runlock", "int32_t (*)(" P ")", (void *)rw_runlock},
    {"rw_try_lock", "int32_t (*)(" P ")", (void *)rw_try_lock},
    {"rw_rlock_fast", "int32_t (*)(" P ")", (void *)rw_rlock_fast},
    {"rw_lock_fast", "int32_t (*)(" P ")", (void *)rw_lock_fast},
    {"rw_unlock", "int32_t (*)(" P ")", (void *)rw_unlock},
    {"wg_add", "int32_t (*)(" P ", int32_t)", (void *)wg_add},
    {"wg_count", "int32_t (*)(" P ")", (void *)wg_count},
    {"wg_wait_step", "int32_t (*)(" P ", int32_t)", (void *)wg_wait_step},
    {"once_done", "int32_t (*)(" P ")", (void *)once_done},
    {"once_set_done", "void (*)(" P ")", (void *)once_set_done},
    {"cond_signal", "void (*)(" P ")", (void *)cond_signal},
    {"cond_broadcast", "void (*)(" P ")", (void *)cond_broadcast},
    {"map_load_fast", "int32_t (*)(" P ", int32_t, const char *, size_t, double, double *)", (void *)map_load_fast},
    {"map_store_fast", "int32_t (*)(" P ", int32_t, const char *, size_t, double, int32_t, double)",
     (void *)map_store_fast},
    {"map_incr_fast", "int32_t (*)(" P ", int32_t, const char *, size_t, double, double, int32_t, double, double *)",
     (void *)map_incr_fast},
    {"aint_load", "double (*)(" P ")", (void *)aint_load},
    {"aint_store", "int32_t (*)(" P ", double)", (void *)aint_store},
    {"aint_add", "double (*)(" P ", double)", (void *)aint_add},
    {"aint_swap", "double (*)(" P ", double)", (void *)aint_swap},
    {"aint_cas", "int32_t (*)(" P ", double, double)", (void *)aint_cas},
    {"aval_load_scalar", "int32_t (*)(" P ", double *)", (void *)aval_load_scalar},
    {"box_new", "int32_t (*)(void)", (void *)rt_box_new},
    {"walltime", "double (*)(void)", (void *)walltime},
    {"nonyield", "void (*)(int32_t)", (void *)rt_nonyield},
    {"goid", "double (*)(void)", (void *)rt_goid},
    {"num_goroutine", "int32_t (*)(void)", (void *)rt_num_goroutine},
    {"gomaxprocs", "int32_t (*)(void)", (void *)rt_gomaxprocs},
    {"exit", "void (*)(int32_t)", (void *)rt_exit},
};
#undef P

static const char ffi_cdef[] =
    /* select_case and select_result in rt.h */
    "typedef struct { uint8_t kind; union { double num; void *blob; }; } lugo_copy;\n"
    "typedef struct { void *c; int32_t kind; int32_t box; lugo_copy copy; } lugo_select_case;\n"
    "typedef struct { int32_t idx; int32_t box; int32_t ok; lugo_copy copy; } lugo_select_result;\n";

static void set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

int luaopen_lugo_core(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, core_key);
  if (lua_istable(L, -1)) return 1;
  lua_pop(L, 1);

  lua_getfield(L, LUA_REGISTRYINDEX, p_key);
  p_t *pp = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!pp) pp = rt_adopt(L)->allp[0]; /* plain luajit: this state becomes P0's VM */

  lua_newtable(L);
  static const luaL_Reg funcs[] = {
      {"chan", l_chan},         {"timer", l_timer},   {"cond_locker", l_cond_locker},
      {"stack", l_stack},       {"goroutine_dump", rt_goroutine_dump}, {"sched_stats", rt_sched_stats},       {"main", l_main},     {"memstats", l_memstats},
      {"numcpu", l_numcpu},     {"gosched", l_gosched}, {"park_forever", l_park_forever},
      {"preempt_yield", l_preempt_yield},
      {"spawn", l_spawn},       {"timer_chan", l_timer_chan},
      {"traceback", tb_debug_traceback},
      {"read_file", os_read_file}, {"write_file", os_write_file},
      {"stat", os_stat}, {"read_dir", os_read_dir}, {"read_range", os_read_range},
      {"take_pending", chan_take_pending},
      {"can_block", l_can_block},
      {"sync_block", sync_block}, {"cond_wait_begin", cond_wait_begin},
      {"sleep", time_sleep_block}, {"park", chan_park_yield}, {NULL, NULL},
  };
  luaL_register(L, NULL, funcs);
  lua_pushboolean(L, 1);
  lua_pushcclosure(L, l_spawn, 1);
  lua_setfield(L, -2, "spawn_spread"); /* net.serve's acceptors: one per processor */
  context_open(L);
  atomic_open(L);
  net_open(L);
  http_open(L);
  map_open(L);
  signal_open(L);
  /* The blocking channel functions: upvalues vals and the channel metatable. */
  static const luaL_Reg chan_funcs[] = {
      {"send", chan_send_block}, {"recv", chan_recv_block}, {"select", select_block}, {NULL, NULL},
  };
  lua_rawgeti(L, LUA_REGISTRYINDEX, pp->vals_ref);
  luaL_getmetatable(L, rt_type_mt(RT_CHAN));
  luaL_setfuncs(L, chan_funcs, 2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, pp->vals_ref);
  lua_pushcclosure(L, l_go, 1);
  lua_setfield(L, -2, "go");
  static const struct { const char *name; enum rt_type type; } makers[] = {
      {"mutex", RT_MUTEX}, {"rwmutex", RT_RWMUTEX}, {"waitgroup", RT_WAITGROUP},
      {"once", RT_ONCE},   {"cond", RT_COND},
  };
  for (size_t i = 0; i < sizeof makers / sizeof *makers; i++) {
    lua_pushinteger(L, makers[i].type);
    lua_pushcclosure(L, l_sync_new, 1);
    lua_setfield(L, -2, makers[i].name);
  }

  lua_newtable(L); /* fn: name -> entry point; types: name -> C type */
  lua_newtable(L);
  for (size_t i = 0; i < sizeof ffi_entries / sizeof *ffi_entries; i++) {
    lua_pushlightuserdata(L, ffi_entries[i].fn);
    lua_setfield(L, -3, ffi_entries[i].name);
    lua_pushstring(L, ffi_entries[i].type);
    lua_setfield(L, -2, ffi_entries[i].name);
  }
  lua_setfield(L, -3, "types");
  lua_setfield(L, -2, "fn");
  lua_pushstring(L, ffi_cdef);
  lua_setfield(L, -2, "cdef");

  lua_newtable(L); /* metatables by type name */
  for (int t = 1; t < RT_NTYPES; t++) {
    luaL_getmetatable(L, rt_type_mt((enum rt_type)t));
    lua_setfield(L, -2, rt_type_name((enum rt_type)t));
  }
  lua_setfield(L, -2, "mt");

  lua_rawgeti(L, LUA_REGISTRYINDEX, pp->vals_ref);
  lua_setfield(L, -2, "vals");
  lua_rawgeti(L, LUA_REGISTRYINDEX, pp->cos_ref);
  lua_setfield(L, -2, "goroutine_coroutines");
  lua_getfield(L, LUA_REGISTRYINDEX, raw_key);
  lua_setfield(L, -2, "raw_coroutine");
  lua_pushlightuserdata(L, (void *)&rt_mark_park);
  lua_setfield(L, -2, "PARK");
  lua_pushlightuserdata(L, (void *)&rt_mark_topyield);
  lua_setfield(L, -2, "TOPYIELD");
  lua_pushlightuserdata(L, (void *)&rt_mark_err);
  lua_setfield(L, -2, "ERR");

  lua_newtable(L); /* the codes the FFI entry points return */
  set_int(L, "OK", RC_OK);
  set_int(L, "WOULDBLOCK", RC_WOULDBLOCK);
  set_int(L, "PARK", RC_PARK);
  set_int(L, "CLOSED", RC_CLOSED);
  set_int(L, "NOGOROUTINE", RC_NOGOROUTINE);
  set_int(L, "NOTYIELDABLE", RC_NOTYIELDABLE);
  set_int(L, "NEGATIVE", RC_NEGATIVE);
  set_int(L, "MISUSE", RC_MISUSE);
  set_int(L, "UNLOCKED", RC_UNLOCKED);
  set_int(L, "YIELD", RC_YIELD);
  set_int(L, "REUSED", RC_REUSED);
  set_int(L, "PARKBOX", RC_PARKBOX);
  set_int(L, "SHARED", RC_SHARED);
  set_int(L, "DECODE", RC_DECODE);
  set_int(L, "RECVONLY", RC_RECVONLY);
  set_int(L, "PREEMPT", RC_PREEMPT);
  set_int(L, "VAL_NIL", RC_VAL_NIL);
  set_int(L, "VAL_FALSE", RC_VAL_FALSE);
  set_int(L, "VAL_TRUE", RC_VAL_TRUE);
  set_int(L, "VAL_NUM", RC_VAL_NUM);
  set_int(L, "COPY_NIL", COPY_NIL);
  set_int(L, "COPY_FALSE", COPY_FALSE);
  set_int(L, "COPY_TRUE", COPY_TRUE);
  set_int(L, "COPY_NUM", COPY_NUM);
  set_int(L, "CASE_NIL", CASE_NIL);
  set_int(L, "CASE_RECV", CASE_RECV);
  set_int(L, "CASE_SEND", CASE_SEND);
  lua_setfield(L, -2, "rc");

  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, core_key);
  return 1;
}

/* ---- embedded Lua modules ---- */

typedef struct embedded_module {
  const char *name;
  const unsigned char *src;
  size_t len;
} embedded_module;

extern const embedded_module lugo_embedded_modules[]; /* generated: lugo_embed.c */

static int load_embedded(lua_State *L) {
  const embedded_module *m = lua_touserdata(L, lua_upvalueindex(1));
  char chunkname[128];
  snprintf(chunkname, sizeof chunkname, "=%s", m->name);
  if (luaL_loadbuffer(L, (const char *)m->src, m->len, chunkname) != 0) return lua_error(L);
  lua_pushstring(L, m->name);
  lua_call(L, 1, 1);
  return 1;
}

void lugo_preload(lua_State *L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_lugo_core);
  lua_setfield(L, -2, "lugo.core");
  for (const embedded_module *m = lugo_embedded_modules; m->name; m++) {
    lua_pushlightuserdata(L, (void *)m);
    lua_pushcclosure(L, load_embedded, 1);
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 2);
}
