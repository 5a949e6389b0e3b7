/*
 * object.c — reference-counted runtime objects and their Lua proxies.
 *
 * Every runtime object starts with an rt_object header. `refs` counts its
 * owners: each proxy userdata (one per VM that holds the object), each
 * after_func's timer heap slot, each object that embeds a pointer to it.
 * The last rt_release frees it, on whichever thread drops it. A pointer
 * that holds no reference (a channel timer's or a context deadline's heap
 * slot, a context's done channel) takes one with rt_tryretain, under a
 * lock that the object's free path takes to unlink that pointer.
 *
 * A VM has at most one live proxy per object, found through the weak-valued
 * registry table "lugo.proxies" keyed by the object's address, so an object
 * that comes back into a VM is the same Lua value it was. A proxy's __gc
 * clears its pointer and its cache entry before releasing its reference:
 * LuaJIT keeps finalized userdata in weak tables until the next cycle.
 *
 * A proxy has its type's metatable exactly while its pointer is set: __gc
 * removes it, so a proxy another finalizer brings back (or one whose __gc a
 * script called) is no runtime object any more, and the Lua modules' and
 * C API's metatable checks refuse it before any FFI call sees its NULL.
 * The metamethods check that they were handed a proxy of their own type:
 * getmetatable(ch).__gc is a function a script can call with anything.
 */
#include <lauxlib.h>

#include "rt.h"

void chan_free(hchan *c);
void sync_object_free(rt_object *o);
void timer_object_free(rt_object *o);
void netconn_free(rt_object *o);
void listener_free(rt_object *o);

static const char *const type_names[RT_NTYPES] = {
    [RT_CHAN] = "channel", [RT_MUTEX] = "mutex", [RT_RWMUTEX] = "rwmutex",
    [RT_WAITGROUP] = "waitgroup", [RT_ONCE] = "once", [RT_COND] = "cond", [RT_TIMER] = "timer",
    [RT_CONTEXT] = "context", [RT_LISTENER] = "listener", [RT_CONN] = "connection", [RT_MAP] = "map",
    [RT_ATOMIC_INT] = "atomic.int", [RT_ATOMIC_VALUE] = "atomic.value", [RT_POOL] = "pool",
};

/* Registry keys of the metatables. */
static const char *const mt_names[RT_NTYPES] = {
    [RT_CHAN] = "lugo.channel", [RT_MUTEX] = "lugo.mutex", [RT_RWMUTEX] = "lugo.rwmutex",
    [RT_WAITGROUP] = "lugo.waitgroup", [RT_ONCE] = "lugo.once", [RT_COND] = "lugo.cond",
    [RT_TIMER] = "lugo.timer", [RT_CONTEXT] = "lugo.context", [RT_LISTENER] = "lugo.listener",
    [RT_CONN] = "lugo.connection", [RT_MAP] = "lugo.map",
    [RT_ATOMIC_INT] = "lugo.atomic_int",
    [RT_ATOMIC_VALUE] = "lugo.atomic_value", [RT_POOL] = "lugo.pool",
};

static const char proxies_key[] = "lugo.proxies";

const char *rt_type_name(enum rt_type type) {
  return type > 0 && type < RT_NTYPES ? type_names[type] : "object";
}

const char *rt_type_mt(enum rt_type type) { return mt_names[type]; }

void rt_object_init(rt_object *o, enum rt_type type) {
  atomic_init(&o->refs, 1);
  o->type = (uint16_t)type;
}

bool rt_release_last(rt_object *o) {
  int32_t left = atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) - 1;
  if (left < 0) rt_throw("runtime: %s released more often than retained", rt_type_name(o->type));
  return left == 0;
}

void rt_release(rt_object *o) {
  if (!rt_release_last(o)) return;
  switch (o->type) {
  case RT_CHAN: chan_free((hchan *)o); break;
  case RT_TIMER: timer_object_free(o); break;
  case RT_CONTEXT: context_free(o); break;
  case RT_LISTENER: listener_free(o); break;
  case RT_CONN: netconn_free(o); break;
  case RT_MAP: map_object_free(o); break;
  case RT_ATOMIC_INT:
  case RT_ATOMIC_VALUE:
  case RT_POOL: atomic_object_free(o); break;
  default: sync_object_free(o); break;
  }
}

void rt_push_object(lua_State *L, rt_object *o) {
  lua_getfield(L, LUA_REGISTRYINDEX, proxies_key);
  lua_pushlightuserdata(L, o);
  lua_rawget(L, -2);
  proxy *px = lua_touserdata(L, -1);
  if (px && px->obj == o) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1);
  px = lua_newuserdata(L, sizeof *px);
  px->obj = o;
  rt_retain(o);
  luaL_getmetatable(L, mt_names[o->type]);
  lua_setmetatable(L, -2);
  lua_pushlightuserdata(L, o);
  lua_pushvalue(L, -2);
  lua_rawset(L, -4);
  lua_remove(L, -2);
}

rt_object *rt_to_object(lua_State *L, int idx, enum rt_type t) {
  proxy *px = luaL_testudata(L, idx, mt_names[t]);
  return px ? px->obj : NULL;
}

rt_object *rt_to_any_object(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return NULL;
  rt_object *o = NULL;
  for (int t = 1; t < RT_NTYPES && !o; t++) {
    luaL_getmetatable(L, mt_names[t]);
    if (lua_rawequal(L, -1, -2)) o = ((proxy *)lua_touserdata(L, idx))->obj;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return o;
}

/* The proxy at index 1, if it has the metatable in upvalue 1. */
static proxy *own_proxy(lua_State *L) {
  if (lua_type(L, 1) != LUA_TUSERDATA || !lua_getmetatable(L, 1)) return NULL;
  bool ours = lua_rawequal(L, -1, lua_upvalueindex(1));
  lua_pop(L, 1);
  return ours ? lua_touserdata(L, 1) : NULL;
}

static int proxy_gc(lua_State *L) {
  proxy *px = own_proxy(L);
  rt_object *o = px ? px->obj : NULL;
  if (!o) return 0;
  px->obj = NULL;
  lua_pushnil(L);
  lua_setmetatable(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, proxies_key);
  lua_pushlightuserdata(L, o);
  lua_rawget(L, -2);
  if (lua_touserdata(L, -1) == px) {
    lua_pushlightuserdata(L, o);
    lua_pushnil(L);
    lua_rawset(L, -4);
  }
  lua_pop(L, 2);
  rt_release(o);
  return 0;
}

static int proxy_tostring(lua_State *L) {
  proxy *px = own_proxy(L);
  lua_getfield(L, lua_upvalueindex(1), "__name");
  if (!px) return luaL_typerror(L, 1, lua_tostring(L, -1));
  lua_pushfstring(L, "%s: %p", lua_tostring(L, -1), (void *)px->obj);
  return 1;
}

void rt_objects_open(lua_State *L) {
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, proxies_key);
  for (int t = 1; t < RT_NTYPES; t++) {
    luaL_newmetatable(L, mt_names[t]);
    lua_pushstring(L, type_names[t]);
    lua_setfield(L, -2, "__name");
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, proxy_gc, 1);
    lua_setfield(L, -2, "__gc");
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, proxy_tostring, 1);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
  }
}
