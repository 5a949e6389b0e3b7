/*
 * value.c — copying Lua values from one VM to another.
 *
 * A value is encoded, on the thread that holds the source VM, into a blob: a
 * self-contained byte string plus the runtime objects it refers to (each
 * holding a reference). Any thread may hold or free a blob; only the thread
 * holding the destination VM decodes it.
 *
 * What crosses, as DESIGN.md and docs/api.md say:
 *   - nil, booleans, numbers and strings, by value;
 *   - tables, deeply, cycles and shared subtables kept, metatables not;
 *   - Lua functions as their bytecode plus their upvalues and the globals
 *     their code names (below), copied the same way;
 *   - modules (package.loaded values), their functions, tables and
 *     userdata (io.stdout, ffi.C) and the standard library's, by name: the
 *     destination resolves them with require;
 *   - runtime objects (channels, mutexes, ...) by reference, even where a
 *     module holds them;
 *   - nothing else: a coroutine, a foreign userdata or cdata, or a C
 *     function that is no module's is refused with an error naming where
 *     it was ("at upvalue 'co' of argument #1").
 * Nesting is limited to VALUE_MAX_DEPTH levels.
 *
 * The globals of a copied function: its code's GGET and GSET names, of its
 * prototype and the ones nested in it (read from its bytecode, parsed once
 * per bytecode), are read from the function's own environment at encoding
 * and copied with it. A function that names only standard globals holding
 * the values the VM started with, assigns none and names none of _G,
 * getfenv and setfenv (the fast path) runs in the destination's own global
 * table. Any other gets an environment of its own in the destination, one
 * per source environment in a blob: a table holding the copies, its _G
 * field itself, its misses falling back to the destination's standard
 * globals (never to the destination's other globals, which differ from
 * processor to processor).
 *
 * Per VM (value_vm_init), a state table in the registry (see S_*): the
 * standard globals as the VM started, the value -> name map (rebuilt at the
 * first encoding after package.loaded gained a key: its __newindex drops
 * the map; never kept while require's sentinel is in package.loaded, so a
 * module being loaded is named once it is), and weak caches: function ->
 * {bytecode, flags, global names...}, bytecode -> that table, bytecode ->
 * the shared closure of a function without upvalues and environment.
 *
 * Invariants: a blob is immutable once encoded; its objects stay referenced
 * until blob_free. Encoding never changes the source values (it may run an
 * environment's __index, as reading the global would). Tables, functions
 * and environments get ids in the same order on both sides; a blob says
 * whether it refers back (BLOB_REFS) or needs the state (BLOB_STATE), so
 * that decoding one without makes neither.
 */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "rt.h"

#define VALUE_MAX_DEPTH 200

enum tag {
  T_NIL,
  T_FALSE,
  T_TRUE,
  T_NUM,   /* double */
  T_STR,   /* u32 length, bytes */
  T_TABLE, /* a new table (next id): key, value pairs, then T_END */
  T_END,
  T_REF,   /* u32 id of a table, function or environment seen before */
  T_FUNC,  /* a new function (next id): u32 length, bytecode, u8 nups, u8 hasenv,
            * upvalues; with hasenv, its environment (T_ENV or T_REF), then
            * name, value pairs to store there, then T_END */
  T_NAMED, /* u8 parts, each u32 length + bytes: package.loaded[p1][p2]... */
  T_OBJ,   /* u32 index into objs */
  T_ENV,   /* a new environment (next id) for copied functions */
};

#define BLOB_INLINE 40
enum {
  BLOB_REFS = 1,  /* holds a T_REF: decoding needs the map of ids */
  BLOB_STATE = 2, /* holds functions, environments or names: decoding needs the VM's state */
};

struct rt_blob {
  uint8_t *data; /* inline_data until it outgrows it */
  size_t len, cap;
  rt_object **objs;
  uint32_t nobjs, objcap;
  int32_t nvalues;
  uint8_t flags; /* BLOB_* */
  uint8_t inline_data[BLOB_INLINE];
};

/* Where a value being encoded sits, for error messages only: built into a
 * string when (and only when) something cannot be copied. */
typedef struct path {
  const struct path *up;
  enum { AT_ARG, AT_FIELD, AT_ITEM, AT_UPVALUE, AT_GLOBAL } kind;
  const char *name; /* AT_ARG: what ("argument"); AT_FIELD, AT_UPVALUE, AT_GLOBAL: the name */
  int index;        /* AT_ARG: its number, 0 when there is a single one */
} path;

typedef struct enc {
  lua_State *L;
  rt_blob *b;
  int state; /* stack index: the VM's copying state; 0 for scalars and strings only */
  int names; /* stack index: the VM's value -> name map */
  int std;   /* stack index: the VM's standard globals, name -> value */
  int seen;  /* stack index: value -> id for tables and functions; for an
              * environment, light userdata -> {[0] = id, name = true...};
              * nil until a second one is met */
  int first; /* the stack index of id 0, while seen is nil: one of the values */
  int lastarg; /* the stack index of the last value encoded */
  uint32_t nextid;
  int depth;
} enc;

/* The VM's copying state: a table in the registry under the address of
 * state_key (a light userdata: no string to intern on every copy). */
static const char state_key[] = "lugo.value";
enum {
  S_NAMES = 1, /* value -> "module\1field...", nil while stale */
  S_STD,       /* name -> value: the globals the VM started with */
  S_ENVMT,     /* the metatable of copied functions' environments */
  S_INFOS,     /* function -> info (weak keys) */
  S_BCINFOS,   /* bytecode -> info (weak values) */
  S_LOADS,     /* bytecode -> its maker (weak values): see decode_function */
  S_SENTINEL,  /* what require stores in package.loaded while it loads */
  S_ALWAYS,    /* true: package.loaded cannot be watched, rebuild names every time */
  S_OBJMTS,    /* metatable -> true, for the runtime objects' proxies */
  S_LOADED,    /* package.loaded */
  S_DECODE,    /* decode_protected, made once: value_decode_safe allocates no closure */
  S_GETTABLE,  /* gettable_protected, likewise */
  S_MAKER,     /* the prototype of `function() return function() end end`, dumped */
  S_COUNT = S_MAKER
};

/* [-0, +1] the VM's copying state. */
static void push_state(lua_State *L) {
  lua_pushlightuserdata(L, (void *)state_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
}

static rt_blob *blob_new(int32_t nvalues) {
  rt_blob *b = rt_malloc(sizeof *b);
  memset(b, 0, offsetof(rt_blob, inline_data));
  b->data = b->inline_data;
  b->cap = BLOB_INLINE;
  b->nvalues = nvalues;
  return b;
}

static void put(rt_blob *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap < 128 ? 256 : b->cap * 2; /* a function's bytecode alone outgrows 128 */
    while (cap < b->len + n) cap *= 2;
    if (b->data == b->inline_data) {
      b->data = rt_malloc(cap);
      memcpy(b->data, b->inline_data, b->len);
    } else {
      b->data = rt_realloc(b->data, cap);
    }
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

static void put_u8(rt_blob *b, uint8_t v) { put(b, &v, 1); }
static void put_u32(rt_blob *b, uint32_t v) { put(b, &v, 4); }

static void put_str(rt_blob *b, const char *s, size_t n) {
  put_u32(b, (uint32_t)n);
  put(b, s, n);
}

rt_blob *blob_string(const char *s, size_t n) {
  rt_blob *b = blob_new(1);
  put_u8(b, T_STR);
  put_str(b, s, n);
  return b;
}

void blob_free(rt_blob *b) {
  if (!b) return;
  for (uint32_t i = 0; i < b->nobjs; i++) rt_release(b->objs[i]);
  rt_free(b->objs);
  if (b->data != b->inline_data) rt_free(b->data);
  rt_free(b);
}

/* ---- the names of modules and their members ---- */

/* [-0, +0] names[v] = name for every function, table and userdata field of
 * t (a runtime object among them still crosses by reference: encoding
 * checks for those first). */
static void name_fields(lua_State *L, int names, int t, const char *prefix, int depth) {
  lua_pushnil(L);
  while (lua_next(L, t)) {
    int type = lua_type(L, -1);
    if (lua_type(L, -2) == LUA_TSTRING && (type == LUA_TFUNCTION || type == LUA_TTABLE || type == LUA_TUSERDATA)) {
      lua_pushvalue(L, -1);
      lua_rawget(L, names);
      bool known = !lua_isnil(L, -1);
      lua_pop(L, 1);
      if (!known) {
        lua_pushfstring(L, "%s\1%s", prefix, lua_tostring(L, -2));
        if (type == LUA_TTABLE && depth < 2) name_fields(L, names, lua_gettop(L) - 1, lua_tostring(L, -1), depth + 1);
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, names);
      }
    }
    lua_pop(L, 1);
  }
}

/* [-0, +1] the VM's value -> name map (state at stack index state),
 * rebuilt when a module was loaded since it was built. While a module is
 * being loaded (require's sentinel sits in package.loaded) the map is not
 * kept, so that the module's value, stored after its chunk returns, is
 * named next time. */
static void push_names(lua_State *L, int state) {
  lua_rawgeti(L, state, S_NAMES);
  if (lua_istable(L, -1)) return;
  lua_pop(L, 1);
  lua_newtable(L);
  int names = lua_gettop(L);
  lua_rawgeti(L, state, S_LOADED);
  int loaded = lua_gettop(L);
  lua_rawgeti(L, state, S_SENTINEL);
  bool keep = true;
  lua_pushnil(L);
  while (lua_next(L, loaded)) {
    /* _G is named from the standard library only: user globals are copied. */
    if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1) && strcmp(lua_tostring(L, -2), "_G") != 0) {
      lua_pushvalue(L, -1);
      lua_pushvalue(L, -3);
      lua_rawset(L, names);
      name_fields(L, names, lua_gettop(L), lua_tostring(L, -2), 1);
    }
    if (lua_rawequal(L, -1, loaded + 1)) keep = false; /* a module is loading */
    lua_pop(L, 1);
  }
  lua_settop(L, names);
  lua_rawgeti(L, state, S_STD);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pushvalue(L, -1);
    lua_rawget(L, names);
    bool known = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!known && (lua_isfunction(L, -1) || lua_istable(L, -1))) {
      lua_pushfstring(L, "_G\1%s", lua_tostring(L, -2));
      lua_rawset(L, names);
    } else {
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  lua_rawgeti(L, state, S_ALWAYS);
  keep = keep && !lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (keep) {
    lua_pushvalue(L, names);
    lua_rawseti(L, state, S_NAMES);
  }
}

void value_names_changed(lua_State *L) {
  push_state(L);
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    lua_rawseti(L, -2, S_NAMES);
  }
  lua_pop(L, 1);
}

/* package.loaded's __newindex (t, k, v): a key that was absent is set (by
 * require, first to its sentinel, or by a script): store it, and mark the
 * name map stale. */
static int loaded_newindex(lua_State *L) {
  lua_settop(L, 3);
  lua_rawset(L, 1);
  value_names_changed(L);
  return 0;
}

static void bytecode_selftest(lua_State *L);
static void maker_init(lua_State *L);

/* A module's loader, for a module nobody sees: keeps what require stored
 * in package.loaded while it loads (a value of this LuaJIT's own, which
 * need not even look like a light userdata) in the state (upvalue 1). */
static int sentinel_loader(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
  lua_pushvalue(L, 1);
  lua_rawget(L, -2);
  lua_rawseti(L, lua_upvalueindex(1), S_SENTINEL);
  return 0;
}

/* [-0, +0] find require's sentinel: require a module made for that. */
static void find_sentinel(lua_State *L, int state) {
  static const char probe[] = "lugo.value.sentinel";
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  if (!lua_istable(L, -1)) rt_throw("runtime: package.preload is missing");
  lua_pushvalue(L, state);
  lua_pushcclosure(L, sentinel_loader, 1);
  lua_setfield(L, -2, probe);
  lua_getglobal(L, "require");
  lua_pushstring(L, probe);
  lua_call(L, 1, 0);
  lua_pushnil(L);
  lua_setfield(L, -2, probe); /* preload */
  lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
  lua_pushnil(L);
  lua_setfield(L, -2, probe);
  lua_pop(L, 3);
}

int value_decode(lua_State *L, const rt_blob *b);

static int decode_protected(lua_State *L) {
  return value_decode(L, lua_touserdata(L, 1));
}

static int gettable_protected(lua_State *L) {
  lua_gettable(L, 1);
  return 1;
}

/* [-1, +1] keep, of the globals table on top, only the names that a fresh
 * VM has too: a VM adopted by lugo.main may hold its script's globals
 * already, and those are no standard library. */
static void keep_fresh_names(lua_State *L) {
  lua_State *fresh = luaL_newstate();
  if (!fresh) rt_throw("runtime: cannot create a Lua state");
  luaL_openlibs(fresh);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    lua_getglobal(fresh, lua_tostring(L, -1));
    bool standard = !lua_isnil(fresh, -1);
    lua_pop(fresh, 1);
    if (!standard) {
      lua_pushvalue(L, -1);
      lua_pushnil(L);
      lua_rawset(L, -4); /* clearing a field during lua_next is allowed */
    }
  }
  lua_close(fresh);
}

/* Make the VM's copying state: remember its standard globals (before any
 * user code runs: for an adopted VM, those a fresh VM has), make the
 * caches and the environments' metatable, find require's sentinel, and
 * watch package.loaded. */
void value_vm_init(lua_State *L) {
  lua_pushlightuserdata(L, (void *)state_key);
  lua_createtable(L, S_COUNT, 0);
  int state = lua_gettop(L);
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, LUA_GLOBALSINDEX)) {
    if (lua_type(L, -2) == LUA_TSTRING) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -4);
    } else {
      lua_pop(L, 1);
    }
  }
  lua_getfield(L, LUA_REGISTRYINDEX, "lugo.p"); /* rt_vm_bind's */
  p_t *pp = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (pp && pp->rt->adopted_vm) keep_fresh_names(L);
  lua_pushvalue(L, -1);
  lua_rawseti(L, state, S_STD);
  /* A copied function's environment: what it was not given is standard. */
  lua_createtable(L, 0, 1);
  lua_insert(L, -2);
  lua_setfield(L, -2, "__index");
  lua_rawseti(L, state, S_ENVMT);
  static const struct { int slot; const char *mode; } caches[] = {
      {S_INFOS, "k"}, {S_BCINFOS, "v"}, {S_LOADS, "v"},
  };
  for (size_t i = 0; i < sizeof caches / sizeof *caches; i++) {
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushstring(L, caches[i].mode);
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_rawseti(L, state, caches[i].slot);
  }
  lua_newtable(L); /* the proxies' metatables, made by rt_objects_open */
  for (int t = 1; t < RT_NTYPES; t++) {
    luaL_getmetatable(L, rt_type_mt((enum rt_type)t));
    if (lua_istable(L, -1)) {
      lua_pushboolean(L, 1);
      lua_rawset(L, -3);
    } else {
      lua_pop(L, 1);
    }
  }
  lua_rawseti(L, state, S_OBJMTS);
  lua_pushcfunction(L, decode_protected);
  lua_rawseti(L, state, S_DECODE);
  lua_pushcfunction(L, gettable_protected);
  lua_rawseti(L, state, S_GETTABLE);
  find_sentinel(L, state);
  lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
  if (!lua_istable(L, -1)) rt_throw("runtime: package.loaded is missing");
  lua_pushvalue(L, -1);
  lua_rawseti(L, state, S_LOADED);
  if (!lua_getmetatable(L, -1)) {
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, loaded_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_setmetatable(L, -2);
  } else { /* somebody's metatable: the map is rebuilt at every copy */
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
    lua_rawseti(L, state, S_ALWAYS);
  }
  lua_pop(L, 1);
  lua_rawset(L, LUA_REGISTRYINDEX);
  bytecode_selftest(L);
  maker_init(L);
}

/* ---- the globals a function names, from its bytecode ---- */

/* LuaJIT 2.1's bytecode dump (lj_bcdump.h describes the format):
 *   header: ESC 'L' 'J' version flags:uleb [namelen:uleb name]  (name unless stripped)
 *   protos: length:uleb pdata, ..., then a 0 length
 *   pdata:  flags numparams framesize numuv:u8 numkgc numkn numbc:uleb
 *           [debuglen:uleb [firstline numline:uleb]] bc:u32*numbc uv:u16*numuv kgc* ...
 *   kgc:    type:uleb, then: 0 child | 1 table | 2,3 two ulebs | 4 four | >= 5 a string of type-5 bytes
 * An instruction's opcode is its low byte, D its high 16 bits; GGET and
 * GSET name the string constant numkgc-1-D in the order dumped. Every
 * prototype nested in the function is in its dump: all of them are read. */
enum { BC_GGET = 54, BC_GSET = 55 };
enum { DUMP_F_BE = 1, DUMP_F_STRIP = 2 };
enum { FI_ASSIGNS = 1, /* it sets a global */
       FI_ENV = 2 };   /* it names _G, getfenv or setfenv */

typedef struct bcreader {
  const uint8_t *p, *end;
  bool bad;
} bcreader;

static uint32_t rd_uleb(bcreader *r) {
  uint32_t v = 0;
  for (int shift = 0; shift < 35; shift += 7) {
    if (r->p >= r->end) break;
    uint8_t b = *r->p++;
    v |= (uint32_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
  r->bad = true;
  return 0;
}

static const uint8_t *rd_skip(bcreader *r, size_t n) {
  const uint8_t *at = r->p;
  if (r->bad || (size_t)(r->end - r->p) < n) {
    r->bad = true;
    r->p = r->end;
    return NULL;
  }
  r->p += n;
  return at;
}

static void rd_ktab(bcreader *r) {
  uint32_t narray = rd_uleb(r), nhash = rd_uleb(r);
  for (uint64_t i = 0; i < (uint64_t)narray + 2 * (uint64_t)nhash && !r->bad; i++) {
    uint32_t type = rd_uleb(r);
    if (type >= 5) rd_skip(r, type - 5);
    else if (type == 3) rd_uleb(r);
    else if (type == 4) { rd_uleb(r); rd_uleb(r); }
  }
}

typedef struct kstr {
  const uint8_t *s; /* NULL: not a string constant */
  uint32_t len;
} kstr;

/* [-0, +0] names[name] = flags for every global the prototype at r names;
 * false if the dump is not what this reader expects. */
static bool rd_proto(lua_State *L, bcreader *r, bool stripped, int names, int *flags) {
  rd_skip(r, 3); /* flags, numparams, framesize */
  const uint8_t *numuv = rd_skip(r, 1);
  uint32_t numkgc = rd_uleb(r);
  rd_uleb(r); /* numkn */
  uint32_t numbc = rd_uleb(r);
  if (!stripped && rd_uleb(r)) {
    rd_uleb(r);
    rd_uleb(r);
  }
  if (r->bad || numbc > (size_t)(r->end - r->p) / 4) return false;
  const uint8_t *bc = rd_skip(r, (size_t)numbc * 4);
  rd_skip(r, (size_t)*numuv * 2);
  if (r->bad || numkgc > (size_t)(r->end - r->p)) return false;
  kstr *k = rt_calloc(numkgc ? numkgc : 1, sizeof *k);
  for (uint32_t i = 0; i < numkgc && !r->bad; i++) {
    uint32_t type = rd_uleb(r);
    if (type >= 5) {
      k[i].len = type - 5;
      k[i].s = rd_skip(r, k[i].len);
    } else if (type == 1) {
      rd_ktab(r);
    } else if (type == 2 || type == 3) {
      rd_uleb(r);
      rd_uleb(r);
    } else if (type == 4) {
      for (int j = 0; j < 4; j++) rd_uleb(r);
    }
  }
  bool ok = !r->bad;
  for (uint32_t i = 0; ok && i < numbc; i++) {
    uint32_t ins;
    memcpy(&ins, bc + 4 * (size_t)i, 4);
    uint8_t op = (uint8_t)ins;
    if (op != BC_GGET && op != BC_GSET) continue;
    uint32_t d = ins >> 16;
    if (d >= numkgc || !k[numkgc - 1 - d].s) {
      ok = false;
      break;
    }
    const kstr *name = &k[numkgc - 1 - d];
    if (name->len == 2 && memcmp(name->s, "_G", 2) == 0) {
      *flags |= FI_ENV;
      if (op == BC_GSET) *flags |= FI_ASSIGNS;
      continue;
    }
    if ((name->len == 7 && (memcmp(name->s, "getfenv", 7) == 0 || memcmp(name->s, "setfenv", 7) == 0)))
      *flags |= FI_ENV;
    if (op == BC_GSET) *flags |= FI_ASSIGNS;
    lua_pushlstring(L, (const char *)name->s, name->len);
    lua_pushboolean(L, 1);
    lua_rawset(L, names);
  }
  rt_free(k);
  return ok;
}

/* [-0, +1] the info of a function whose dump is bc: {bc, flags, name...},
 * the names of the globals it names but _G, each once; nil if the dump
 * cannot be read. */
static void push_bcinfo(lua_State *L, int bcidx) {
  size_t len;
  const uint8_t *bc = (const uint8_t *)lua_tolstring(L, bcidx, &len);
  bcreader r = {bc, bc + len, false};
  const uint8_t *magic = rd_skip(&r, 4);
  uint32_t hflags = rd_uleb(&r);
  if (!magic || memcmp(magic, "\033LJ\002", 4) != 0 || (hflags & DUMP_F_BE)) {
    lua_pushnil(L);
    return;
  }
  bool stripped = hflags & DUMP_F_STRIP;
  if (!stripped) rd_skip(&r, rd_uleb(&r));
  lua_newtable(L);
  int names = lua_gettop(L);
  int flags = 0;
  bool ok = !r.bad;
  while (ok) {
    uint32_t plen = rd_uleb(&r);
    if (r.bad) break;
    if (plen == 0) break;
    const uint8_t *pstart = rd_skip(&r, plen);
    if (!pstart) break;
    bcreader pr = {pstart, pstart + plen, false};
    ok = rd_proto(L, &pr, stripped, names, &flags);
  }
  if (!ok || r.bad) {
    lua_pop(L, 1);
    lua_pushnil(L);
    return;
  }
  lua_createtable(L, 4, 0);
  lua_pushvalue(L, bcidx);
  lua_rawseti(L, -2, 1);
  lua_pushinteger(L, flags);
  lua_rawseti(L, -2, 2);
  int n = 2;
  lua_pushnil(L);
  while (lua_next(L, names)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, ++n);
  }
  lua_remove(L, names);
}

typedef struct dumpbuf {
  char *p;
  size_t len, cap;
} dumpbuf;

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  (void)L;
  dumpbuf *d = ud;
  if (d->len + sz > d->cap) {
    d->cap = (d->len + sz) * 2;
    d->p = rt_realloc(d->p, d->cap);
  }
  memcpy(d->p + d->len, p, sz);
  d->len += sz;
  return 0;
}

/* [-0, +1] the info of the Lua function at idx (see push_bcinfo), cached
 * per function; functions of the same bytecode share one, so that a
 * closure made afresh for each spawn is dumped but not parsed again.
 * state: the stack index of the VM's copying state. */
static void push_funcinfo(lua_State *L, int idx, int state) {
  lua_rawgeti(L, state, S_INFOS);
  lua_pushvalue(L, idx);
  lua_rawget(L, -2);
  if (lua_istable(L, -1)) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1);
  dumpbuf d = {0};
  lua_pushvalue(L, idx); /* lua_dump wants the function on top */
  lua_dump(L, dump_writer, &d);
  lua_pop(L, 1);
  lua_pushlstring(L, d.p, d.len);
  rt_free(d.p);
  lua_rawgeti(L, state, S_BCINFOS);
  lua_pushvalue(L, -2);
  lua_rawget(L, -2);
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    push_bcinfo(L, lua_gettop(L) - 1);
    if (lua_isnil(L, -1)) luaL_error(L, "lugo: cannot read the bytecode of a function being copied");
    lua_pushvalue(L, -3);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4); /* bcinfos[bc] = info */
  }
  lua_replace(L, -3); /* info where bc was */
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushvalue(L, -2);
  lua_rawset(L, -4); /* infos[f] = info */
  lua_remove(L, -2);
}

/* The reader knows this LuaJIT's dumps: a function that reads one global
 * and sets another shows both, and nothing else. */
static void bytecode_selftest(lua_State *L) {
  static const char probe[] = "return function() local a = lugo_probe_get; lugo_probe_set = a end";
  if (luaL_loadbuffer(L, probe, sizeof probe - 1, "=probe") != 0) rt_throw("runtime: %s", lua_tostring(L, -1));
  lua_call(L, 0, 1);
  push_state(L);
  push_funcinfo(L, lua_gettop(L) - 1, lua_gettop(L));
  lua_rawgeti(L, -1, 2);
  bool ok = lua_objlen(L, -2) == 4 && lua_tointeger(L, -1) == FI_ASSIGNS;
  lua_pop(L, 1);
  for (int i = 3; ok && i <= 4; i++) {
    lua_rawgeti(L, -1, i);
    const char *s = lua_tostring(L, -1);
    ok = s && (strcmp(s, "lugo_probe_get") == 0 || strcmp(s, "lugo_probe_set") == 0);
    lua_pop(L, 1);
  }
  if (!ok) rt_throw("runtime: this LuaJIT's bytecode is not the format lugo reads (LuaJIT 2.1)");
  lua_pop(L, 3);
}

/* ---- one prototype, a closure per copy ---- */

/* A copied function without upvalues used to be one closure shared by
 * every copy in a VM, so that LuaJIT compiled it once: but then setfenv on
 * one goroutine's copy changed every other's. Instead each bytecode gets a
 * maker, loaded once: a function whose only instruction makes a closure of
 * the copied function's prototype (FNEW) and returns it. Every copy is a
 * closure of its own, of one prototype (compiled once). The maker's
 * prototype is the dumped `function() return function() end end`, its
 * child replaced: in a dump, a prototype's child is the prototype read
 * just before it, so the copied function's own dump, its last prototype
 * followed by the maker's, is the maker of that function. */

/* The end of a dump's last prototype (where its 0 length is); 0 if the
 * dump is not what this reader expects. */
static size_t dump_protos_end(const uint8_t *bc, size_t len, bool *stripped) {
  bcreader r = {bc, bc + len, false};
  const uint8_t *magic = rd_skip(&r, 4);
  uint32_t hflags = rd_uleb(&r);
  if (!magic || memcmp(magic, "\033LJ\002", 4) != 0 || (hflags & DUMP_F_BE)) return 0;
  *stripped = hflags & DUMP_F_STRIP;
  if (!*stripped) rd_skip(&r, rd_uleb(&r));
  for (;;) {
    const uint8_t *at = r.p;
    uint32_t plen = rd_uleb(&r);
    if (r.bad) return 0;
    if (plen == 0) return (size_t)(at - bc);
    if (!rd_skip(&r, plen)) return 0;
  }
}

static void put_uleb(dumpbuf *d, uint32_t v) {
  do {
    uint8_t b = v & 0x7f;
    v >>= 7;
    if (v) b |= 0x80;
    dump_writer(NULL, &b, 1, d);
  } while (v);
}

/* Keep the maker's prototype (with its length) in the VM's state. */
static void maker_init(lua_State *L) {
  static const char src[] = "return function() return function() end end";
  if (luaL_loadbuffer(L, src, sizeof src - 1, "=maker") != 0) rt_throw("runtime: %s", lua_tostring(L, -1));
  lua_call(L, 0, 1);
  dumpbuf d = {0};
  lua_dump(L, dump_writer, &d);
  lua_pop(L, 1);
  bool stripped;
  size_t end = dump_protos_end((const uint8_t *)d.p, d.len, &stripped);
  /* the last prototype, the maker's: walk to it */
  bcreader r = {(const uint8_t *)d.p, (const uint8_t *)d.p + end, false};
  rd_skip(&r, 4);
  rd_uleb(&r);
  if (!stripped) rd_skip(&r, rd_uleb(&r));
  const uint8_t *last = NULL;
  while (end && r.p < r.end && !r.bad) {
    last = r.p;
    rd_skip(&r, rd_uleb(&r));
  }
  if (!end || !last || r.bad) rt_throw("runtime: this LuaJIT's bytecode is not the format lugo reads (LuaJIT 2.1)");
  push_state(L);
  lua_pushlstring(L, (const char *)last, (size_t)(r.end - last));
  lua_rawseti(L, -2, S_MAKER);
  lua_pop(L, 1);
  rt_free(d.p);
}

/* [-0, +1] the maker of the function whose dump is bc (state: the stack
 * index of the VM's copying state). */
static void push_maker(lua_State *L, int state, const char *bc, size_t len) {
  bool stripped;
  size_t end = dump_protos_end((const uint8_t *)bc, len, &stripped);
  if (!end) luaL_error(L, "lugo: cannot read the bytecode of a function being copied");
  lua_rawgeti(L, state, S_MAKER);
  size_t mlen;
  const char *maker = lua_tolstring(L, -1, &mlen);
  dumpbuf d = {0};
  dump_writer(NULL, bc, end, &d);
  dump_writer(NULL, maker, mlen, &d); /* its length comes with it */
  put_uleb(&d, 0);
  lua_pop(L, 1);
  int st = luaL_loadbuffer(L, d.p, d.len, "=copied function");
  rt_free(d.p);
  if (st != 0) lua_error(L);
}

/* ---- encoding ---- */

static int encode_value(enc *e, int idx, const path *at);

static bool path_base(const path *p) { return p->kind == AT_ARG || p->kind == AT_UPVALUE || p->kind == AT_GLOBAL; }

/* [-0, +1] where a value sits, from the value out: "argument #2.a.b",
 * "upvalue 'co' of argument #1", "upvalue 'stdout' of upvalue 'f' of
 * argument #1", "global 'helper' of argument #1". A segment is a base (an
 * argument, an upvalue, a global) and the fields below it. */
static void push_path(lua_State *L, const path *at) {
  int n = 0;
  for (const path *p = at; p; p = p->up) n++;
  const path **chain = rt_malloc((size_t)(n ? n : 1) * sizeof *chain);
  int i = n;
  for (const path *p = at; p; p = p->up) chain[--i] = p; /* root first */
  int base = lua_gettop(L), nseg = 0;
  for (i = 0; i < n; i++) {
    const path *p = chain[i];
    if (path_base(p) || nseg == 0) {
      luaL_checkstack(L, 4, "naming a value");
      lua_pushliteral(L, "");
      nseg++;
    }
    switch (p->kind) {
    case AT_ARG:
      if (p->index) lua_pushfstring(L, "%s #%d", p->name, p->index);
      else lua_pushstring(L, p->name);
      break;
    case AT_UPVALUE: lua_pushfstring(L, "upvalue '%s'", p->name && *p->name ? p->name : "?"); break;
    case AT_GLOBAL: lua_pushfstring(L, "global '%s'", p->name); break;
    case AT_FIELD: lua_pushfstring(L, ".%s", p->name); break;
    case AT_ITEM: lua_pushliteral(L, "[...]"); break;
    }
    lua_concat(L, 2);
  }
  rt_free(chain);
  /* The segments lie root first: join them from the value out. */
  lua_pushvalue(L, base + nseg);
  for (i = nseg - 1; i >= 1; i--) {
    lua_pushliteral(L, " of ");
    lua_pushvalue(L, base + i);
    lua_concat(L, 3);
  }
  if (nseg == 0) lua_pushliteral(L, "");
  lua_replace(L, base + 1);
  lua_settop(L, base + 1);
}

static int fail(enc *e, const char *what, const path *at) {
  push_path(e->L, at);
  lua_pushfstring(e->L, "cannot copy %s to another processor at %s", what, lua_tostring(e->L, -1));
  lua_remove(e->L, -2);
  return -1;
}

/* [-0, +0] make sure the map of what was seen exists, holding the first. */
static void seen_map(enc *e) {
  lua_State *L = e->L;
  if (!lua_isnil(L, e->seen)) return;
  lua_createtable(L, 0, 4);
  if (e->first) {
    lua_pushvalue(L, e->first);
    lua_pushinteger(L, 0);
    lua_rawset(L, -3);
  }
  lua_replace(L, e->seen);
}

static void put_ref(enc *e, uint32_t id) {
  put_u8(e->b, T_REF);
  put_u32(e->b, id);
  e->b->flags |= BLOB_REFS;
}

/* Seen before? Then T_REF. Else remember it under the next id. The first
 * one, when it is one of the values encoded, is remembered by its stack
 * index alone: a spawn of a function that meets no other table or
 * function makes no map. */
static bool encode_seen(enc *e, int idx) {
  lua_State *L = e->L;
  if (e->nextid == 0 && idx <= e->lastarg) {
    e->first = idx;
    e->nextid = 1;
    return false;
  }
  if (lua_isnil(L, e->seen) && e->first && lua_rawequal(L, idx, e->first)) {
    put_ref(e, 0);
    return true;
  }
  seen_map(e);
  lua_pushvalue(L, idx);
  lua_rawget(L, e->seen);
  if (!lua_isnil(L, -1)) {
    put_ref(e, (uint32_t)lua_tointeger(L, -1));
    lua_pop(L, 1);
    return true;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushinteger(L, e->nextid++);
  lua_rawset(L, e->seen);
  return false;
}

/* A module, a module's member or a standard global: by name. */
static bool encode_named(enc *e, int idx) {
  lua_State *L = e->L;
  lua_pushvalue(L, idx);
  lua_rawget(L, e->names);
  if (!lua_isstring(L, -1)) {
    lua_pop(L, 1);
    return false;
  }
  size_t len;
  const char *name = lua_tolstring(L, -1, &len);
  uint8_t parts = 1;
  for (size_t i = 0; i < len; i++) parts += name[i] == '\1';
  put_u8(e->b, T_NAMED);
  put_u8(e->b, parts);
  const char *p = name, *end = name + len;
  while (p <= end) {
    const char *sep = memchr(p, '\1', (size_t)(end - p));
    if (!sep) sep = end;
    put_str(e->b, p, (size_t)(sep - p));
    p = sep + 1;
  }
  lua_pop(L, 1);
  e->b->flags |= BLOB_STATE;
  return true;
}

struct timer_obj;
hchan *timer_obj_chan(struct timer_obj *to);

/* The runtime object behind the userdata at idx, if it is a proxy: one
 * lookup of its metatable. */
static rt_object *userdata_object(enc *e, int idx) {
  lua_State *L = e->L;
  if (!lua_getmetatable(L, idx)) return NULL;
  lua_rawgeti(L, e->state, S_OBJMTS);
  lua_insert(L, -2);
  lua_rawget(L, -2);
  bool proxied = lua_toboolean(L, -1);
  lua_pop(L, 2);
  return proxied ? ((proxy *)lua_touserdata(L, idx))->obj : NULL;
}

static int encode_table(enc *e, int idx, const path *at) {
  lua_State *L = e->L;
  put_u8(e->b, T_TABLE);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int top = lua_gettop(L);
    path key = {at, AT_ITEM, NULL, 0};
    if (encode_value(e, top - 1, &key) < 0) return -1;
    path sub = {at, AT_ITEM, NULL, 0};
    if (lua_type(L, top - 1) == LUA_TSTRING) sub = (path){at, AT_FIELD, lua_tostring(L, top - 1), 0};
    if (encode_value(e, top, &sub) < 0) return -1;
    lua_settop(L, top - 1);
  }
  put_u8(e->b, T_END);
  return 0;
}

/* [-0, +1] env[name] (stack indices) as the function would read it, but a
 * miss's __index runs protected: an error there (a strict mode's "variable
 * is not declared") reads as nil instead of failing the copy. */
static void get_global(enc *e, int env, int name) {
  lua_State *L = e->L;
  lua_pushvalue(L, name);
  lua_rawget(L, env);
  if (!lua_isnil(L, -1) || !lua_getmetatable(L, env)) return;
  lua_pop(L, 2);
  lua_rawgeti(L, e->state, S_GETTABLE);
  lua_pushvalue(L, env);
  lua_pushvalue(L, name);
  if (lua_pcall(L, 2, 1, 0) != 0) {
    lua_pop(L, 1);
    lua_pushnil(L);
  }
}

/* Is the value on top the standard global `name` (as the VM started)? */
static bool is_standard(enc *e, int name) {
  lua_State *L = e->L;
  lua_pushvalue(L, name);
  lua_rawget(L, e->std);
  bool std = !lua_isnil(L, -1) && lua_rawequal(L, -1, -2);
  lua_pop(L, 1);
  return std;
}

/* Does the function whose info is at info, environment at env, need an
 * environment of its own in the destination? Not if it names only
 * standard globals that hold their standard values (the fast path). */
static bool needs_env(enc *e, int info, int env) {
  lua_State *L = e->L;
  lua_rawgeti(L, info, 2);
  int flags = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (flags) return true;
  int n = (int)lua_objlen(L, info);
  for (int i = 3; i <= n; i++) {
    lua_rawgeti(L, info, i);
    get_global(e, env, lua_gettop(L));
    bool std = is_standard(e, lua_gettop(L) - 1);
    lua_pop(L, 2);
    if (!std) return true;
  }
  return false;
}

/* The environment of a copied function and the globals it names: env
 * (T_ENV the first time it is met in this blob, T_REF after), then the
 * names not copied into it yet, each with its value, then T_END. A
 * standard global with its standard value, or a nil, is left out: the
 * destination's environment falls back to its own standard globals. */
static int encode_globals(enc *e, int info, int env, const path *at) {
  lua_State *L = e->L;
  luaL_checkstack(L, 8, "copying a value");
  seen_map(e);
  lua_pushlightuserdata(L, (void *)lua_topointer(L, env));
  lua_rawget(L, e->seen);
  if (lua_istable(L, -1)) {
    lua_rawgeti(L, -1, 0);
    put_ref(e, (uint32_t)lua_tointeger(L, -1));
    lua_pop(L, 1);
  } else {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushinteger(L, e->nextid++);
    lua_rawseti(L, -2, 0);
    lua_pushlightuserdata(L, (void *)lua_topointer(L, env));
    lua_pushvalue(L, -2);
    lua_rawset(L, e->seen);
    put_u8(e->b, T_ENV);
  }
  int done = lua_gettop(L); /* name -> true: already in this environment */
  int n = (int)lua_objlen(L, info);
  for (int i = 3; i <= n; i++) {
    lua_rawgeti(L, info, i);
    int name = lua_gettop(L);
    lua_pushvalue(L, name);
    lua_rawget(L, done);
    bool copied = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (copied) {
      lua_pop(L, 1);
      continue;
    }
    lua_pushvalue(L, name);
    lua_pushboolean(L, 1);
    lua_rawset(L, done); /* before its value: a recursive global refers to itself */
    get_global(e, env, name);
    if (!lua_isnil(L, -1) && !is_standard(e, name)) {
      size_t len;
      const char *s = lua_tolstring(L, name, &len);
      put_u8(e->b, T_STR);
      put_str(e->b, s, len);
      path sub = {at, AT_GLOBAL, s, 0};
      if (encode_value(e, name + 1, &sub) < 0) return -1;
    }
    lua_settop(L, name - 1);
  }
  put_u8(e->b, T_END);
  lua_pop(L, 1); /* done */
  return 0;
}

static int encode_function(enc *e, int idx, const path *at) {
  lua_State *L = e->L;
  luaL_checkstack(L, 8, "copying a value");
  put_u8(e->b, T_FUNC);
  e->b->flags |= BLOB_STATE;
  push_funcinfo(L, idx, e->state);
  int info = lua_gettop(L);
  lua_rawgeti(L, info, 1);
  size_t len;
  const char *bc = lua_tolstring(L, -1, &len);
  put_str(e->b, bc, len);
  lua_pop(L, 1);
  bool hasenv = false;
  if (lua_objlen(L, info) > 2) { /* it names globals */
    lua_getfenv(L, idx);
    hasenv = lua_istable(L, -1) && needs_env(e, info, lua_gettop(L));
    if (!hasenv) lua_pop(L, 1);
  } else {
    lua_rawgeti(L, info, 2);
    hasenv = lua_tointeger(L, -1) != 0; /* _G alone */
    lua_pop(L, 1);
    if (hasenv) lua_getfenv(L, idx);
    hasenv = hasenv && lua_istable(L, -1);
  }
  lua_Debug ar;
  lua_pushvalue(L, idx);
  lua_getinfo(L, ">u", &ar);
  put_u8(e->b, (uint8_t)ar.nups);
  put_u8(e->b, hasenv);
  for (int i = 1; i <= ar.nups; i++) {
    const char *name = lua_getupvalue(L, idx, i);
    path sub = {at, AT_UPVALUE, name, 0};
    if (encode_value(e, lua_gettop(L), &sub) < 0) return -1;
    lua_pop(L, 1);
  }
  if (hasenv && encode_globals(e, info, lua_gettop(L), at) < 0) return -1;
  lua_settop(L, info - 1);
  return 0;
}

static int encode_value(enc *e, int idx, const path *where) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
  case LUA_TNIL: put_u8(e->b, T_NIL); return 0;
  case LUA_TBOOLEAN: put_u8(e->b, lua_toboolean(L, idx) ? T_TRUE : T_FALSE); return 0;
  case LUA_TNUMBER: {
    double d = lua_tonumber(L, idx);
    put_u8(e->b, T_NUM);
    put(e->b, &d, sizeof d);
    return 0;
  }
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    put_u8(e->b, T_STR);
    put_str(e->b, s, len);
    return 0;
  }
  case LUA_TTABLE:
  case LUA_TFUNCTION: {
    if (encode_named(e, idx) || encode_seen(e, idx)) return 0;
    if (lua_iscfunction(L, idx)) return fail(e, "a C function that is no module's", where);
    if (++e->depth > VALUE_MAX_DEPTH) {
      lua_pushfstring(L, "cannot copy a value nested more than %d levels deep to another processor",
                      VALUE_MAX_DEPTH);
      return -1;
    }
    luaL_checkstack(L, 8, "copying a value");
    int r = lua_istable(L, idx) ? encode_table(e, idx, where) : encode_function(e, idx, where);
    e->depth--;
    return r;
  }
  case LUA_TUSERDATA: {
    rt_object *o = userdata_object(e, idx);
    if (!o) {
      /* A module's userdata (io.stdout, ffi.C): by name. */
      if (encode_named(e, idx)) return 0;
      return fail(e, "a userdata", where);
    }
    /* A channel leaving its VM, or a timer's, becomes shared. */
    hchan *c = o->type == RT_CHAN ? (hchan *)o : o->type == RT_TIMER ? timer_obj_chan((struct timer_obj *)o) : NULL;
    if (c && chan_share(c, L) < 0) return -1;
    /* A context leaving its VM: its values are read as copies from now on. */
    if (o->type == RT_CONTEXT && ctx_share((context *)o, L) < 0) { /* two parts: the path follows */
      lua_pushliteral(L, " of ");
      push_path(L, where);
      lua_concat(L, 4);
      return -1;
    }
    rt_retain(o);
    if (e->b->nobjs == e->b->objcap) {
      e->b->objcap = e->b->objcap ? e->b->objcap * 2 : 4;
      e->b->objs = rt_realloc(e->b->objs, e->b->objcap * sizeof *e->b->objs);
    }
    put_u8(e->b, T_OBJ);
    put_u32(e->b, e->b->nobjs);
    e->b->objs[e->b->nobjs++] = o;
    return 0;
  }
  case LUA_TTHREAD: return fail(e, "a coroutine", where);
  case LUA_TLIGHTUSERDATA: return fail(e, "a light userdata", where);
  default: return fail(e, lua_typename(L, lua_type(L, idx)), where); /* cdata */
  }
}

static rt_blob *encode_values(lua_State *L, int idx, int n, const char *what, bool numbered) {
  if (idx < 0) idx = lua_gettop(L) + idx + 1;
  rt_blob *b = blob_new(n);
  enc e = {L, b, 0, 0, 0, 0, 0, idx + n - 1, 0, 0};
  /* Tables, functions and userdata need the VM's state, the names, the
   * standard globals and a slot for the map of what was seen. */
  for (int i = 0; i < n; i++) {
    int t = lua_type(L, idx + i);
    if (t != LUA_TTABLE && t != LUA_TFUNCTION && t != LUA_TUSERDATA) continue;
    luaL_checkstack(L, 8, "copying a value");
    push_state(L);
    e.state = lua_gettop(L);
    push_names(L, e.state);
    e.names = lua_gettop(L);
    lua_rawgeti(L, e.state, S_STD);
    e.std = lua_gettop(L);
    lua_pushnil(L);
    e.seen = lua_gettop(L);
    break;
  }
  int top = lua_gettop(L);
  for (int i = 0; i < n; i++) {
    path at = {NULL, AT_ARG, what, numbered || n > 1 ? i + 1 : 0};
    if (encode_value(&e, idx + i, &at) < 0) {
      if (e.state) { /* keep only the message, where the maps were */
        lua_replace(L, e.state);
        lua_settop(L, e.state);
      }
      blob_free(b);
      return NULL; /* the message is on top */
    }
  }
  lua_settop(L, e.state ? e.state - 1 : top);
  return b;
}

rt_blob *value_encode(lua_State *L, int idx, int n, const char *what) {
  return encode_values(L, idx, n, what, false);
}

rt_blob *value_encode_args(lua_State *L, int idx, int n) {
  return encode_values(L, idx, n, "argument", true);
}

/* ---- decoding ---- */

typedef struct dec {
  lua_State *L;
  const rt_blob *b;
  size_t pos;
  int state; /* stack index: the VM's copying state, if the blob needs it */
  int refs;  /* stack index: id -> table, function or environment, if the blob refers back */
  uint32_t nextid;
} dec;

static void get(dec *d, void *p, size_t n) {
  if (d->pos + n > d->b->len) luaL_error(d->L, "lugo: corrupt value blob");
  memcpy(p, d->b->data + d->pos, n);
  d->pos += n;
}

static uint8_t get_u8(dec *d) {
  uint8_t v;
  get(d, &v, 1);
  return v;
}

static uint32_t get_u32(dec *d) {
  uint32_t v;
  get(d, &v, 4);
  return v;
}

static const char *get_str(dec *d, size_t *len) {
  *len = get_u32(d);
  if (d->pos + *len > d->b->len) luaL_error(d->L, "lugo: corrupt value blob");
  const char *s = (const char *)d->b->data + d->pos;
  d->pos += *len;
  return s;
}

/* [-0, +1] package.loaded[p1] (required if needed), then its fields. */
static void decode_named(dec *d) {
  lua_State *L = d->L;
  uint8_t parts = get_u8(d);
  size_t len;
  const char *name = get_str(d, &len);
  if (len == 2 && memcmp(name, "_G", 2) == 0) {
    lua_pushvalue(L, LUA_GLOBALSINDEX);
  } else {
    lua_rawgeti(L, d->state, S_LOADED);
    lua_pushlstring(L, name, len);
    lua_rawget(L, -2);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_getglobal(L, "require");
      lua_pushlstring(L, name, len);
      lua_call(L, 1, 1);
    }
    lua_remove(L, -2);
  }
  for (uint8_t i = 1; i < parts; i++) {
    const char *field = get_str(d, &len);
    if (!lua_istable(L, -1)) luaL_error(L, "lugo: cannot resolve a module member here");
    lua_pushlstring(L, field, len);
    lua_gettable(L, -2);
    lua_remove(L, -2);
  }
}

static void decode_value(dec *d);

static void remember(dec *d) {
  if (d->refs) {
    lua_pushvalue(d->L, -1);
    lua_rawseti(d->L, d->refs, (int)d->nextid);
  }
  d->nextid++;
}

/* [-0, +1] a new environment for copied functions: misses fall back to
 * this VM's standard globals; its _G is itself. */
static void decode_env(dec *d) {
  lua_State *L = d->L;
  lua_newtable(L);
  lua_rawgeti(L, d->state, S_ENVMT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_setfield(L, -2, "_G");
  remember(d);
}

/* [-0, +1] the function for this bytecode; functions without upvalues and
 * environment are shared by every copy, so that the JIT compiles them once
 * per VM. */
static void decode_function(dec *d) {
  lua_State *L = d->L;
  size_t len;
  const char *bc = get_str(d, &len);
  uint8_t nups = get_u8(d);
  bool hasenv = get_u8(d);
  if (nups == 0) { /* a closure of its own, of the one prototype its maker makes */
    lua_rawgeti(L, d->state, S_LOADS);
    lua_pushlstring(L, bc, len);
    lua_rawget(L, -2);
    if (!lua_isfunction(L, -1)) {
      lua_pop(L, 1);
      push_maker(L, d->state, bc, len);
      lua_pushlstring(L, bc, len);
      lua_pushvalue(L, -2);
      lua_rawset(L, -4); /* loads[bc] = maker */
    }
    lua_remove(L, -2);
    lua_call(L, 0, 1);
  } else if (luaL_loadbuffer(L, bc, len, "=copied function") != 0) {
    lua_error(L);
  }
  remember(d);
  for (int i = 1; i <= nups; i++) {
    decode_value(d);
    lua_setupvalue(L, -2, i);
  }
  if (hasenv) {
    decode_value(d);
    if (!lua_istable(L, -1)) luaL_error(L, "lugo: corrupt value blob");
    lua_pushvalue(L, -1);
    lua_setfenv(L, -3);
    while (d->pos < d->b->len && d->b->data[d->pos] != T_END) { /* its globals */
      decode_value(d);
      decode_value(d);
      lua_rawset(L, -3);
    }
    if (d->pos++ >= d->b->len) luaL_error(L, "lugo: corrupt value blob");
    lua_pop(L, 1);
  }
}

static void decode_value(dec *d) {
  lua_State *L = d->L;
  luaL_checkstack(L, 8, "copying a value");
  uint8_t tag = get_u8(d);
  switch (tag) {
  case T_NIL: lua_pushnil(L); break;
  case T_FALSE: lua_pushboolean(L, 0); break;
  case T_TRUE: lua_pushboolean(L, 1); break;
  case T_NUM: {
    double v;
    get(d, &v, sizeof v);
    lua_pushnumber(L, v);
    break;
  }
  case T_STR: {
    size_t len;
    const char *s = get_str(d, &len);
    lua_pushlstring(L, s, len);
    break;
  }
  case T_TABLE:
    lua_newtable(L);
    remember(d);
    for (;;) {
      if (d->pos < d->b->len && d->b->data[d->pos] == T_END) {
        d->pos++;
        break;
      }
      decode_value(d);
      decode_value(d);
      lua_rawset(L, -3);
    }
    break;
  case T_REF:
    if (!d->refs) luaL_error(L, "lugo: corrupt value blob");
    lua_rawgeti(L, d->refs, (int)get_u32(d));
    break;
  case T_FUNC: decode_function(d); break;
  case T_NAMED: decode_named(d); break;
  case T_ENV: decode_env(d); break;
  case T_OBJ: {
    uint32_t i = get_u32(d);
    if (i >= d->b->nobjs) luaL_error(L, "lugo: corrupt value blob");
    rt_push_object(L, d->b->objs[i]);
    break;
  }
  default: luaL_error(L, "lugo: corrupt value blob");
  }
}

int value_decode(lua_State *L, const rt_blob *b) {
  luaL_checkstack(L, b->nvalues + 8, "copying values");
  dec d = {L, b, 0, 0, 0, 0};
  int base = lua_gettop(L);
  if (b->flags & BLOB_STATE) {
    push_state(L);
    d.state = lua_gettop(L);
  }
  if (b->flags & BLOB_REFS) {
    lua_newtable(L);
    d.refs = lua_gettop(L);
  }
  for (int32_t i = 0; i < b->nvalues; i++) decode_value(&d);
  for (int n = lua_gettop(L) - b->nvalues; n > base; n--) lua_remove(L, n); /* refs, state */
  return b->nvalues;
}

int32_t blob_nvalues(const rt_blob *b) { return b->nvalues; }

int value_decode_safe(lua_State *L, const rt_blob *b) {
  int top = lua_gettop(L);
  push_state(L);
  lua_rawgeti(L, -1, S_DECODE);
  lua_replace(L, -2);
  lua_pushlightuserdata(L, (void *)b);
  if (lua_pcall(L, 1, LUA_MULTRET, 0) != 0) return -1;
  return lua_gettop(L) - top;
}

rt_copy copy_make(lua_State *L, int idx, const char *what) {
  rt_copy c = {COPY_NONE, {0}};
  switch (lua_type(L, idx)) {
  case LUA_TNIL: c.kind = COPY_NIL; break;
  case LUA_TBOOLEAN: c.kind = lua_toboolean(L, idx) ? COPY_TRUE : COPY_FALSE; break;
  case LUA_TNUMBER:
    c.kind = COPY_NUM;
    c.num = lua_tonumber(L, idx);
    break;
  default:
    c.blob = value_encode(L, idx, 1, what);
    if (c.blob) c.kind = COPY_BLOB;
  }
  return c;
}

int copy_push(lua_State *L, rt_copy c) {
  switch (c.kind) {
  case COPY_FALSE: lua_pushboolean(L, 0); return 1;
  case COPY_TRUE: lua_pushboolean(L, 1); return 1;
  case COPY_NUM: lua_pushnumber(L, c.num); return 1;
  case COPY_BLOB: {
    int n = value_decode_safe(L, c.blob);
    blob_free(c.blob);
    return n;
  }
  default: lua_pushnil(L); return 1;
  }
}

size_t blob_bytes(const rt_blob *b) {
  return sizeof *b + (b->data != b->inline_data ? b->cap : 0) + b->objcap * sizeof *b->objs;
}

bool blob_equal(const rt_blob *a, const rt_blob *b) {
  if (a->len != b->len || a->nobjs != b->nobjs || a->nvalues != b->nvalues) return false;
  if (memcmp(a->data, b->data, a->len) != 0) return false;
  for (uint32_t i = 0; i < a->nobjs; i++)
    if (a->objs[i] != b->objs[i]) return false;
  return true;
}

void copy_free(rt_copy *c) {
  if (c->kind == COPY_BLOB) blob_free(c->blob);
  c->kind = COPY_NONE;
}

/* ------------------------------------------------------------------ */
/* Boxes: where a VM keeps its values in flight                        */
/*
 * A box is an integer key of the VM's `vals` table; C moves box numbers,
 * Lua stores and loads the values (rt.h). The pool is pp->boxes.
 *
 * Invariants:
 *   - Only the thread holding pp touches pp->boxes. Another thread gives a
 *     box back through pp->remote_dirty (under remote_lock); boxes_clean
 *     folds those in.
 *   - Boxes are numbered 1..next; flags[box] has BOX_LIVE from box_alloc to
 *     its box_free or box_free_dirty, and bit box of free0 is set exactly
 *     for the others (free1 and free2 summarize: bit w is set when word w
 *     of the level below has one; no bit is set in a word of free0 below
 *     lo0, nor of free2 below lo2).
 *     box_alloc takes the lowest free number, so the numbers in use stay
 *     dense: vals keeps its keys in its array part, and after a burst the
 *     free numbers above the highest live one can be dropped.
 *   - A free box's vals slot is nil unless it has BOX_DIRTY: box_free_dirty
 *     (finalizers, channels freed with values, selects that sent nothing)
 *     cannot touch Lua, so the value stays until boxes_clean clears it.
 *     Every dirty box is on the dirty list (BOX_LISTED), once, so the list
 *     never outgrows the pool.
 *   - A dirty box is handed out again at once, without waiting for
 *     boxes_clean: every box_alloc is followed by a store into vals[box]
 *     before any other code runs on this P (chan.c val_init, whose box the
 *     FFI caller or chan_send_block stores into; take_box; select.c, whose
 *     send boxes chosen() or select_block store into before any park;
 *     context.c with_value; time.c timer_obj_fire; module.c newproc and
 *     box_new, stored into by lugo.go and time.after_func; lugo_run). A
 *     loop that never reaches the scheduler therefore reuses its numbers.
 *   - After a burst (over three quarters of the numbers free), boxes_clean
 *     drops the free numbers above the highest live box, and rehashes vals
 *     (LuaJIT resizes a table only when a new key finds its hash part full)
 *     once the live boxes are fewer than a quarter of the most there were
 *     since its last rehash: the pool and vals follow what is live. Both
 *     are paid for by the growth before them: each number dropped was made
 *     once, and each rehash quarters hw at least.
 */

enum { BOX_LIVE = 1, BOX_DIRTY = 2, BOX_LISTED = 4 };

/* How many fresh keys a forced rehash of vals may take before giving up. */
#define VALS_REHASH_TRIES 4096
/* Live boxes few enough to rehash vals around even when they are sparse. */
#define VALS_FEW 64

#define WORDS(bits) ((size_t)(bits) / 64 + 1)

/* Set a box's bit; the levels above change only when its word was empty. */
static void free_put(box_pool *b, int32_t box) {
  int32_t w0 = box >> 6;
  uint64_t was = b->free0[w0];
  b->free0[w0] = was | 1ull << (box & 63);
  if (!was) {
    int32_t w1 = w0 >> 6, w2 = w1 >> 6;
    b->free1[w1] |= 1ull << (w0 & 63);
    b->free2[w2] |= 1ull << (w1 & 63);
    if (w2 < b->lo2) b->lo2 = w2;
  }
  if (w0 < b->lo0) b->lo0 = w0;
  b->nfree++;
}

/* Clear the bit of a box in word w0 of free0, which now holds `left`. */
static void free_cleared(box_pool *b, int32_t w0, uint64_t left) {
  b->free0[w0] = left;
  if (!left) {
    int32_t w1 = w0 >> 6, w2 = w1 >> 6;
    if (!(b->free1[w1] &= ~(1ull << (w0 & 63)))) b->free2[w2] &= ~(1ull << (w1 & 63));
  }
  b->nfree--;
}

static void free_clear(box_pool *b, int32_t box) {
  int32_t w0 = box >> 6;
  free_cleared(b, w0, b->free0[w0] & ~(1ull << (box & 63)));
}

/* The lowest free number, taken. nfree > 0. Usually in word lo0; else the
 * summaries lead to it. */
static int32_t free_take(box_pool *b) {
  int32_t w0 = b->lo0;
  uint64_t word = b->free0[w0];
  if (!word) {
    int32_t w2 = b->lo2;
    while (!b->free2[w2]) w2++;
    b->lo2 = w2;
    int32_t w1 = w2 * 64 + __builtin_ctzll(b->free2[w2]);
    w0 = w1 * 64 + __builtin_ctzll(b->free1[w1]);
    word = b->free0[w0];
    b->lo0 = w0;
  }
  int32_t box = w0 * 64 + __builtin_ctzll(word);
  free_cleared(b, w0, word & (word - 1));
  return box;
}

static void *resize_zeroed(void *p, size_t old, size_t now) {
  p = rt_realloc(p, now);
  if (now > old) memset((char *)p + old, 0, now - old);
  return p;
}

/* Room for boxes 1..cap in every array (cap 0 frees them); no bit is set
 * above cap. The dirty list holds each box at most once: it never needs a
 * check. */
static void boxes_resize(box_pool *b, int32_t cap) {
  if (cap == 0) {
    rt_free(b->flags);
    rt_free(b->free0);
    rt_free(b->free1);
    rt_free(b->free2);
    rt_free(b->dirty);
    b->flags = NULL;
    b->free0 = b->free1 = b->free2 = NULL;
    b->dirty = NULL;
    b->cap = 0;
    return;
  }
  size_t n0 = WORDS(cap), n1 = WORDS(n0), n2 = WORDS(n1);
  size_t o0 = b->cap ? WORDS(b->cap) : 0, o1 = b->cap ? WORDS(o0) : 0, o2 = b->cap ? WORDS(o1) : 0;
  b->flags = resize_zeroed(b->flags, b->cap ? (size_t)b->cap + 1 : 0, (size_t)cap + 1);
  b->free0 = resize_zeroed(b->free0, o0 * 8, n0 * 8);
  b->free1 = resize_zeroed(b->free1, o1 * 8, n1 * 8);
  b->free2 = resize_zeroed(b->free2, o2 * 8, n2 * 8);
  b->dirty = rt_realloc(b->dirty, (size_t)cap * sizeof *b->dirty);
  b->cap = cap;
}

/* A never-used number: every box is live. */
static int32_t box_new(box_pool *b) {
  if (b->next == b->cap) {
    if (b->cap >= RC_PARKBOX / 2) rt_throw("runtime: too many values waiting in one VM");
    boxes_resize(b, b->cap ? b->cap * 2 : 64);
  }
  int32_t box = ++b->next;
  if (box > b->hw) b->hw = box;
  return box;
}

int32_t box_alloc(p_t *pp) {
  box_pool *b = &pp->boxes;
  int32_t box = b->nfree ? free_take(b) : box_new(b);
  b->flags[box] = (uint8_t)((b->flags[box] & BOX_LISTED) | BOX_LIVE);
  return box;
}

static void box_check_live(const box_pool *b, int32_t box) {
  if (box < 1 || box > b->next || !(b->flags[box] & BOX_LIVE))
    rt_throw("runtime: box %d freed but not in use", (int)box);
}

void box_free(p_t *pp, int32_t box) {
  box_pool *b = &pp->boxes;
  box_check_live(b, box);
  b->flags[box] &= BOX_LISTED;
  free_put(b, box);
}

static void box_free_dirty_local(box_pool *b, int32_t box) {
  box_check_live(b, box);
  if (!(b->flags[box] & BOX_LISTED)) b->dirty[b->ndirty++] = box;
  b->flags[box] = BOX_DIRTY | BOX_LISTED;
  free_put(b, box);
}

void box_free_dirty(p_t *pp, int32_t box) {
  if (getp() != pp) { /* pp's VM is another thread's: its own thread takes the box back */
    rt_lock(&pp->remote_lock);
    int32_t n = atomic_load_explicit(&pp->nremote_dirty, memory_order_relaxed);
    if (n == pp->remote_dirtycap) {
      pp->remote_dirtycap = n ? n * 2 : 64;
      pp->remote_dirty = rt_realloc(pp->remote_dirty, (size_t)pp->remote_dirtycap * sizeof(int32_t));
    }
    pp->remote_dirty[n] = box;
    atomic_store_explicit(&pp->nremote_dirty, n + 1, memory_order_relaxed);
    rt_unlock(&pp->remote_lock);
    return;
  }
  box_free_dirty_local(&pp->boxes, box);
}

static size_t vm_bytes(lua_State *L) {
  return (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
}

/* [-0, +0, m] Make LuaJIT resize the table at idx to the keys it holds now:
 * it does so only when a new key finds the hash part full, so insert fresh
 * keys (light userdata, which no caller uses) until the VM's allocated
 * bytes change, the sign of a resize, then remove them. *seq makes the keys
 * new each time: an old key left dead in the hash part would be reused
 * without a resize. Cheap when the hash part is small (vals keeps its keys
 * in the array part); a hash part full of dead keys may take more tries
 * than VALS_REHASH_TRIES allows. */
void rt_table_rehash(lua_State *L, int idx, uint32_t *seq) {
  if (idx < 0 && idx > LUA_REGISTRYINDEX) idx = lua_gettop(L) + idx + 1;
  size_t before = vm_bytes(L);
  uint32_t first = *seq, n = 0;
  while (n < VALS_REHASH_TRIES) {
    lua_pushlightuserdata(L, (void *)(uintptr_t)(((uint64_t)(first + n) << 4) | 8));
    n++;
    lua_pushboolean(L, 1);
    lua_rawset(L, idx);
    if (vm_bytes(L) != before) break;
  }
  for (uint32_t i = 0; i < n; i++) {
    lua_pushlightuserdata(L, (void *)(uintptr_t)(((uint64_t)(first + i) << 4) | 8));
    lua_pushnil(L);
    lua_rawset(L, idx);
  }
  *seq = first + n;
}

/* After a burst: drop the free numbers above the highest live box, and
 * rehash vals once most of what it had room for is gone. No box is dirty. */
static void boxes_trim(p_t *pp) {
  box_pool *b = &pp->boxes;
  int32_t top = b->next;
  while (top > 0 && !(b->flags[top] & BOX_LIVE)) top--;
  if (top < b->next) {
    for (int32_t box = top + 1; box <= b->next; box++) free_clear(b, box);
    b->next = top;
    int32_t cap = b->cap;
    while (cap > 64 && cap / 8 >= top) cap /= 2; /* by half at least: no churn */
    if (cap < b->cap) boxes_resize(b, cap);
  }
  /* LuaJIT gives a rehashed table the largest array part that is over a
   * quarter full: with half the numbers up to the highest live box in use,
   * every live box gets a slot there. Rehashing sooner (values taken in the
   * order they came leave the highest numbers live) would move them to the
   * hash part, whose dead nodes a later rehash could not be forced past. A
   * few such keys (VALS_FEW) are harmless. */
  int32_t live = b->next - b->nfree;
  if (live > b->hw) b->hw = live;
  if (b->hw > BOX_TRIM_MIN && live < b->hw / 4 && (2 * live >= b->next || live <= VALS_FEW)) {
    lua_State *L = pp->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, pp->vals_ref);
    rt_table_rehash(L, -1, &b->seq);
    lua_pop(L, 1);
    b->hw = live;
  }
}

void boxes_clean(p_t *pp) {
  box_pool *b = &pp->boxes;
  if (atomic_load_explicit(&pp->nremote_dirty, memory_order_relaxed)) {
    rt_lock(&pp->remote_lock);
    int32_t n = atomic_load_explicit(&pp->nremote_dirty, memory_order_relaxed);
    for (int32_t i = 0; i < n; i++) box_free_dirty_local(b, pp->remote_dirty[i]);
    atomic_store_explicit(&pp->nremote_dirty, 0, memory_order_relaxed);
    rt_unlock(&pp->remote_lock);
  }
  if (b->ndirty) {
    lua_State *L = pp->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, pp->vals_ref);
    while (b->ndirty) {
      int32_t box = b->dirty[--b->ndirty];
      uint8_t f = b->flags[box];
      b->flags[box] = f & BOX_LIVE; /* off the list; a live box was stored into since */
      if (f & BOX_DIRTY) {
        lua_pushnil(L);
        lua_rawseti(L, -2, box);
      }
    }
    lua_pop(L, 1);
  }
  if (boxes_sparse(b)) boxes_trim(pp);
}

void boxes_destroy(p_t *pp) { boxes_resize(&pp->boxes, 0); }
