/*
 * value.c — copying Lua values from one VM to another.
 *
 * A value is encoded, on the thread that holds the source VM, into a blob: a
 * self-contained byte string plus the runtime objects it refers to (each
 * holding a reference). Any thread may hold or free a blob; only the thread
 * holding the destination VM decodes it.
 *
 * What crosses, as DESIGN.md says:
 *   - nil, booleans, numbers and strings, by value;
 *   - tables, deeply, cycles and shared subtables kept, metatables not;
 *   - Lua functions as their bytecode plus their upvalues (copied the same
 *     way); in the destination VM they see its globals;
 *   - modules (package.loaded values), their functions and the standard
 *     library's, by name: the destination resolves them with require;
 *   - runtime objects (channels, mutexes, ...) by reference;
 *   - nothing else: a coroutine, a foreign userdata or cdata, or a C
 *     function that is no module's is refused with an error naming it.
 * Nesting is limited to VALUE_MAX_DEPTH levels.
 *
 * Invariants: a blob is immutable once encoded; its objects stay referenced
 * until blob_free. Encoding never changes the source values.
 */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

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
  T_REF,   /* u32 id of a table or function seen before */
  T_FUNC,  /* a new function (next id): u32 length, bytecode, u8 nups, upvalues */
  T_NAMED, /* u8 parts, each u32 length + bytes: package.loaded[p1][p2]... */
  T_OBJ,   /* u32 index into objs */
};

#define BLOB_INLINE 40

struct rt_blob {
  uint8_t *data; /* inline_data until it outgrows it */
  size_t len, cap;
  rt_object **objs;
  uint32_t nobjs, objcap;
  int32_t nvalues;
  bool has_refs; /* holds tables or functions: decoding needs an id map */
  uint8_t inline_data[BLOB_INLINE];
};

/* Where a value being encoded sits, for error messages only: built into a
 * string when (and only when) something cannot be copied. */
typedef struct path {
  const struct path *up;
  enum { AT_ARG, AT_FIELD, AT_ITEM, AT_UPVALUE } kind;
  const char *name; /* AT_ARG: what ("argument"); AT_FIELD, AT_UPVALUE: the name */
  int index;        /* AT_ARG: its number, 0 when there is a single one */
} path;

typedef struct enc {
  lua_State *L;
  rt_blob *b;
  int seen;  /* stack index: value -> id, for tables and functions */
  int names; /* stack index: the VM's value -> name map */
  uint32_t nextid;
  int depth;
} enc;

static const char names_key[] = "lugo.names";       /* value -> "module\1field..." */
static const char names_dirty_key[] = "lugo.names.dirty";
static const char dumps_key[] = "lugo.dumps";       /* function -> bytecode (weak) */
static const char loads_key[] = "lugo.loads";       /* bytecode -> function (weak) */

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
    size_t cap = b->cap * 2;
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

void blob_free(rt_blob *b) {
  if (!b) return;
  for (uint32_t i = 0; i < b->nobjs; i++) rt_release(b->objs[i]);
  rt_free(b->objs);
  if (b->data != b->inline_data) rt_free(b->data);
  rt_free(b);
}

/* ---- the names of modules and their members ---- */

/* [-0, +0] names[v] = name for every function and table field of t. */
static void name_fields(lua_State *L, int names, int t, const char *prefix, int depth) {
  lua_pushnil(L);
  while (lua_next(L, t)) {
    int type = lua_type(L, -1);
    if (lua_type(L, -2) == LUA_TSTRING && (type == LUA_TFUNCTION || type == LUA_TTABLE)) {
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

/* [-0, +1] the VM's value -> name map, rebuilt after a require. */
static void push_names(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, names_dirty_key);
  bool dirty = lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, names_key);
  if (lua_istable(L, -1) && !dirty) return;
  lua_pop(L, 1);
  lua_newtable(L);
  int names = lua_gettop(L);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaded");
  int loaded = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, loaded)) {
    /* _G is named from the standard library only: user globals are copied. */
    if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1) && strcmp(lua_tostring(L, -2), "_G") != 0) {
      lua_pushvalue(L, -1);
      lua_pushvalue(L, -3);
      lua_rawset(L, names);
      name_fields(L, names, lua_gettop(L), lua_tostring(L, -2), 1);
    }
    lua_pop(L, 1);
  }
  lua_settop(L, names);
  lua_getfield(L, LUA_REGISTRYINDEX, "lugo.stdglobals");
  if (lua_istable(L, -1)) { /* name -> value of the globals the VM started with */
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
  }
  lua_pop(L, 1);
  lua_pushvalue(L, names);
  lua_setfield(L, LUA_REGISTRYINDEX, names_key);
  lua_pushboolean(L, 0);
  lua_setfield(L, LUA_REGISTRYINDEX, names_dirty_key);
}

/* Remember the standard globals of a fresh VM (before any user code), and
 * mark the name map stale whenever require loads something. */
void value_vm_init(lua_State *L) {
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
  lua_setfield(L, LUA_REGISTRYINDEX, "lugo.stdglobals");
  for (int i = 0; i < 2; i++) {
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushstring(L, i == 0 ? "k" : "v");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, i == 0 ? dumps_key : loads_key);
  }
}

void value_names_changed(lua_State *L) {
  lua_pushboolean(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, names_dirty_key);
}

/* ---- encoding ---- */

static int encode_value(enc *e, int idx, const path *at);

/* [-0, +1] "argument #2.field[...]" or "upvalue 'x' of argument #1". */
static void push_path(lua_State *L, const path *at) {
  if (!at) {
    lua_pushliteral(L, "");
    return;
  }
  push_path(L, at->up);
  switch (at->kind) {
  case AT_ARG:
    if (at->index) lua_pushfstring(L, "%s #%d", at->name, at->index);
    else lua_pushstring(L, at->name);
    break;
  case AT_FIELD: lua_pushfstring(L, ".%s", at->name); break;
  case AT_ITEM: lua_pushliteral(L, "[...]"); break;
  case AT_UPVALUE:
    lua_pushfstring(L, " (upvalue '%s')", at->name && *at->name ? at->name : "?");
    break;
  }
  lua_concat(L, 2);
}

static int fail(enc *e, const char *what, const path *at) {
  push_path(e->L, at);
  lua_pushfstring(e->L, "cannot copy %s to another processor at %s", what, lua_tostring(e->L, -1));
  lua_remove(e->L, -2);
  return -1;
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

/* [-0, +1] the bytecode of the Lua function at idx, cached per function. */
static void push_bytecode(lua_State *L, int idx) {
  lua_getfield(L, LUA_REGISTRYINDEX, dumps_key);
  lua_pushvalue(L, idx);
  lua_rawget(L, -2);
  if (lua_isstring(L, -1)) {
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
  lua_pushvalue(L, idx);
  lua_pushvalue(L, -2);
  lua_rawset(L, -4);
  lua_remove(L, -2); /* dumps */
}

/* Seen before? Then T_REF. Else remember it under the next id. */
static bool encode_seen(enc *e, int idx) {
  lua_State *L = e->L;
  lua_pushvalue(L, idx);
  lua_rawget(L, e->seen);
  if (!lua_isnil(L, -1)) {
    put_u8(e->b, T_REF);
    put_u32(e->b, (uint32_t)lua_tointeger(L, -1));
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
  return true;
}

struct timer_obj;
hchan *timer_obj_chan(struct timer_obj *to);

static rt_object *userdata_object(lua_State *L, int idx) {
  for (int t = 1; t < RT_NTYPES; t++) {
    rt_object *o = rt_to_object(L, idx, (enum rt_type)t);
    if (o) return o;
  }
  return NULL;
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

static int encode_function(enc *e, int idx, const path *at) {
  lua_State *L = e->L;
  put_u8(e->b, T_FUNC);
  push_bytecode(L, idx);
  size_t len;
  const char *bc = lua_tolstring(L, -1, &len);
  put_str(e->b, bc, len);
  lua_pop(L, 1);
  lua_Debug ar;
  lua_pushvalue(L, idx);
  lua_getinfo(L, ">u", &ar);
  put_u8(e->b, (uint8_t)ar.nups);
  for (int i = 1; i <= ar.nups; i++) {
    const char *name = lua_getupvalue(L, idx, i);
    path sub = {at, AT_UPVALUE, name, 0};
    if (encode_value(e, lua_gettop(L), &sub) < 0) return -1;
    lua_pop(L, 1);
  }
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
    e->b->has_refs = true;
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
    rt_object *o = userdata_object(L, idx);
    if (!o) return fail(e, "a userdata", where);
    /* A channel leaving its VM, or a timer's, becomes shared. */
    hchan *c = o->type == RT_CHAN ? (hchan *)o : o->type == RT_TIMER ? timer_obj_chan((struct timer_obj *)o) : NULL;
    if (c && chan_share(c, L) < 0) return -1;
    /* A context leaving its VM: its values are read as copies from now on. */
    if (o->type == RT_CONTEXT && ctx_share((context *)o, L) < 0) { /* two parts: the path goes between */
      push_path(L, where);
      lua_insert(L, -2);
      lua_concat(L, 3);
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

rt_blob *value_encode(lua_State *L, int idx, int n, const char *what) {
  if (idx < 0) idx = lua_gettop(L) + idx + 1;
  rt_blob *b = blob_new(n);
  enc e = {L, b, 0, 0, 0, 0};
  /* Tables and functions need the maps of what was seen and of names. */
  for (int i = 0; i < n; i++) {
    int t = lua_type(L, idx + i);
    if (t == LUA_TTABLE || t == LUA_TFUNCTION) {
      luaL_checkstack(L, 8, "copying a value");
      lua_newtable(L);
      e.seen = lua_gettop(L);
      push_names(L);
      e.names = lua_gettop(L);
      break;
    }
  }
  int top = lua_gettop(L);
  for (int i = 0; i < n; i++) {
    path at = {NULL, AT_ARG, what, n > 1 ? i + 1 : 0};
    if (encode_value(&e, idx + i, &at) < 0) {
      if (e.seen) { /* keep only the message, where the maps were */
        lua_replace(L, e.seen);
        lua_settop(L, e.seen);
      }
      blob_free(b);
      return NULL; /* the message is on top */
    }
  }
  lua_settop(L, e.seen ? e.seen - 1 : top);
  return b;
}

/* ---- decoding ---- */

typedef struct dec {
  lua_State *L;
  const rt_blob *b;
  size_t pos;
  int refs; /* stack index: id -> table or function */
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
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushlstring(L, name, len);
    lua_rawget(L, -2);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_getglobal(L, "require");
      lua_pushlstring(L, name, len);
      lua_call(L, 1, 1);
    }
    lua_replace(L, -3);
    lua_pop(L, 1);
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
  lua_pushvalue(d->L, -1);
  lua_rawseti(d->L, d->refs, (int)d->nextid++);
}

/* [-0, +1] the function for this bytecode; functions without upvalues are
 * shared by every copy, so that the JIT compiles them once per VM. */
static void decode_function(dec *d) {
  lua_State *L = d->L;
  size_t len;
  const char *bc = get_str(d, &len);
  uint8_t nups = get_u8(d);
  if (nups == 0) {
    lua_getfield(L, LUA_REGISTRYINDEX, loads_key);
    lua_pushlstring(L, bc, len);
    lua_rawget(L, -2);
    if (lua_isfunction(L, -1)) {
      lua_remove(L, -2);
      remember(d);
      return;
    }
    lua_pop(L, 2);
  }
  if (luaL_loadbuffer(L, bc, len, "=copied function") != 0) lua_error(L);
  remember(d);
  for (int i = 1; i <= nups; i++) {
    decode_value(d);
    lua_setupvalue(L, -2, i);
  }
  if (nups == 0) {
    lua_getfield(L, LUA_REGISTRYINDEX, loads_key);
    lua_pushlstring(L, bc, len);
    lua_pushvalue(L, -3);
    lua_rawset(L, -3);
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
  case T_REF: lua_rawgeti(L, d->refs, (int)get_u32(d)); break;
  case T_FUNC: decode_function(d); break;
  case T_NAMED: decode_named(d); break;
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
  dec d = {L, b, 0, 0, 0};
  if (b->has_refs) {
    lua_newtable(L);
    d.refs = lua_gettop(L);
  }
  for (int32_t i = 0; i < b->nvalues; i++) decode_value(&d);
  if (d.refs) lua_remove(L, d.refs);
  return b->nvalues;
}

int32_t blob_nvalues(const rt_blob *b) { return b->nvalues; }

static int decode_protected(lua_State *L) {
  return value_decode(L, lua_touserdata(L, 1));
}

int value_decode_safe(lua_State *L, const rt_blob *b) {
  int top = lua_gettop(L);
  lua_pushcfunction(L, decode_protected);
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

void copy_free(rt_copy *c) {
  if (c->kind == COPY_BLOB) blob_free(c->blob);
  c->kind = COPY_NONE;
}
