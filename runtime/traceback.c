/*
 * traceback.c — goroutine tracebacks, after Go's traceback.go: panics,
 * runtime.stack, the deadlock and SIGQUIT dumps, debug.traceback, and where
 * each goroutine was created ("created by ... in goroutine N").
 *
 * Invariants:
 *   - Frames are read with lua_getstack and lua_getinfo("Sln") only, into a
 *     C buffer: nothing is allocated in the VM and nothing is pushed on its
 *     stacks, so a dump may read the Gs of a VM whose thread is stopped
 *     anywhere (SIGQUIT stops a P that runs compiled code).
 *   - A goroutine's stack ends where the runtime's own frames begin: the
 *     first frame of chunk "=[lugo]" (the trampoline, the host's launcher)
 *     and a C frame just above it (their xpcall) are left out.
 *   - Creation sites are interned once, by content, and kept until the
 *     process ends: their number is that of the go and spawn statements of
 *     the program, capped (SITES_MAX) for chunks loaded at run time.
 *     site_lock guards the table; each P caches lookups in a small
 *     direct-mapped array that only its own thread touches.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "rt.h"

/* ---- buffers ---- */

void tb_init(tbuf *b) {
  b->p = NULL;
  b->len = b->cap = 0;
}

void tb_free(tbuf *b) {
  free(b->p);
  tb_init(b);
}

/* malloc, not rt_malloc: a dump may run where the allocator's per-VM state
 * is another thread's. */
static void tb_reserve(tbuf *b, size_t n) {
  if (b->len + n + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap * 2 : 256;
  while (cap < b->len + n + 1) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) abort();
  b->p = p;
  b->cap = cap;
}

void tb_grow(tbuf *b, size_t n) { tb_reserve(b, n); }

void tb_printf(tbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char small[256];
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  tb_reserve(b, (size_t)n);
  if ((size_t)n < sizeof small) {
    memcpy(b->p + b->len, small, (size_t)n + 1);
  } else {
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
  }
  b->len += (size_t)n;
}

void tb_puts(tbuf *b, const char *s, size_t n) {
  tb_reserve(b, n);
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

const char *tb_str(tbuf *b) {
  if (!b->p) tb_reserve(b, 0), b->p[0] = '\0';
  return b->p;
}

/* ---- frames ---- */

static bool runtime_frame(const lua_Debug *ar) { return strcmp(ar->source, "=[lugo]") == 0; }

/* One frame, as luaL_traceback prints it (without the position of a C
 * function, which would take pushing it). */
static void frame_line(tbuf *b, const lua_Debug *ar) {
  if (ar->currentline > 0) tb_printf(b, "\t%s:%d:", ar->short_src, ar->currentline);
  else tb_printf(b, "\t%s:", ar->short_src);
  if (ar->namewhat && *ar->namewhat) tb_printf(b, " in function '%s'\n", ar->name);
  else if (*ar->what == 'm') tb_printf(b, " in main chunk\n");
  else if (*ar->what == 'C') tb_printf(b, " in ?\n");
  else tb_printf(b, " in function <%s:%d>\n", ar->short_src, ar->linedefined);
}

/* How many frames of co from level on are the program's, not the
 * runtime's. *entry: the last of them is the C frame (the runtime's xpcall)
 * that called a main chunk, which luajit shows as its C entry: keep it, as
 * "[C]: in ?", so that a main chunk's traceback ends as under luajit. */
static int user_depth(lua_State *co, int level, bool *entry, bool *body) {
  lua_Debug ar;
  int n = 0;
  bool prev_c = false, prev2_main = false, prev_main = false;
  *entry = *body = false;
  for (int l = level; lua_getstack(co, l, &ar); l++) {
    if (!lua_getinfo(co, "S", &ar)) break;
    if (runtime_frame(&ar)) {
      *body = !prev_c;
      if (!prev_c) return n;
      if (prev2_main) *entry = true;
      return prev2_main ? n : n - 1;
    }
    prev2_main = prev_main;
    prev_main = *ar.what == 'm';
    prev_c = *ar.what == 'C';
    n++;
  }
  return n;
}

#define TB_HEAD 50 /* frames printed from the top of a deep stack */
#define TB_TAIL 10 /* and from its bottom */

/* The line of the top frame of a coroutine that an error killed is lost
 * (it was in the frame that unwound); a runtime error's message starts with
 * that very frame's "source:line:" (LuaJIT adds it), so take it from there. */
static int line_from_message(const lua_Debug *ar, const char *msg) {
  size_t n = strlen(ar->short_src);
  if (!msg || *ar->what == 'C' || strncmp(msg, ar->short_src, n) != 0 || msg[n] != ':') return -1;
  char *end;
  long line = strtol(msg + n + 1, &end, 10);
  return end > msg + n + 1 && *end == ':' && line > 0 && line < 1 << 30 ? (int)line : -1;
}

static void frames(tbuf *b, lua_State *co, int level, const char *errmsg) {
  bool entry, body; /* body: the last frame is a goroutine's function, called by the trampoline */
  int depth = user_depth(co, level, &entry, &body);
  lua_Debug ar;
  for (int i = 0; i < depth; i++) {
    if (depth > TB_HEAD + TB_TAIL && i == TB_HEAD) {
      tb_printf(b, "\t...(%d frames elided)...\n", depth - TB_HEAD - TB_TAIL);
      i = depth - TB_TAIL;
    }
    if (entry && i == depth - 1) {
      tb_printf(b, "\t[C]: in ?\n");
      break;
    }
    if (!lua_getstack(co, level + i, &ar) || !lua_getinfo(co, "Sln", &ar)) break;
    if (i == 0 && ar.currentline <= 0) ar.currentline = line_from_message(&ar, errmsg);
    if (body && i == depth - 1) ar.namewhat = ""; /* not the trampoline's name for it */
    frame_line(b, &ar);
  }
}

void tb_frames(tbuf *b, lua_State *co, int level) { frames(b, co, level, NULL); }

/* ---- where goroutines are created ---- */

struct gsite {
  char *where; /* "file:line" of the go or spawn call */
  char *func;  /* the function that made it: "main chunk", "function 'f'", ... */
  struct gsite *next;
};

#define SITE_BUCKETS 256
static rtlock site_lock;
static gsite *site_table[SITE_BUCKETS];

static uint32_t hash_str(const char *s, uint32_t h) {
  while (*s) h = (h ^ (uint8_t)*s++) * 16777619u;
  return h;
}

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (!d) abort();
  memcpy(d, s, n);
  return d;
}

/* Past this many sites (chunks loaded at run time, each with go calls of
 * its own), new ones are not recorded: such goroutines say no "created by". */
#define SITES_MAX 100000
static int32_t nsites;

static const gsite *site_intern(const char *where, const char *func) {
  uint32_t h = hash_str(func, hash_str(where, 2166136261u)) % SITE_BUCKETS;
  rt_lock(&site_lock);
  gsite *s;
  for (s = site_table[h]; s; s = s->next)
    if (strcmp(s->where, where) == 0 && strcmp(s->func, func) == 0) break;
  if (!s && nsites >= SITES_MAX) {
    rt_unlock(&site_lock);
    return NULL;
  }
  if (!s) {
    nsites++;
    s = malloc(sizeof *s);
    if (!s) abort();
    s->where = dup_str(where);
    s->func = dup_str(func);
    s->next = site_table[h];
    site_table[h] = s;
  }
  rt_unlock(&site_lock);
  return s;
}

const gsite *tb_site(p_t *pp, lua_State *L, int level) {
  lua_Debug ar;
  if (!lua_getstack(L, level, &ar) || !lua_getinfo(L, "Sl", &ar)) return NULL;
  /* The cache: the same statement creates the same site, found without the
   * lock; its strings are compared, so a chunk name reused at the same
   * address after a collection cannot be mistaken for another. */
  uint32_t slot = (uint32_t)(((uintptr_t)ar.source >> 4) ^ (uint32_t)ar.currentline * 2654435761u) % SITE_CACHE;
  site_cache_entry *e = &pp->sites[slot];
  if (e->site && e->line == ar.currentline && e->source == ar.source) {
    size_t n = strlen(ar.short_src);
    if (strncmp(e->site->where, ar.short_src, n) == 0 && e->site->where[n] == ':') return e->site;
  }
  char where[LUA_IDSIZE + 16], func[2 * LUA_IDSIZE + 32];
  snprintf(where, sizeof where, "%s:%d", ar.short_src, ar.currentline);
  if (!lua_getinfo(L, "n", &ar)) ar.namewhat = "";
  if (ar.namewhat && *ar.namewhat) snprintf(func, sizeof func, "function '%s'", ar.name);
  else if (*ar.what == 'm') snprintf(func, sizeof func, "main chunk");
  else snprintf(func, sizeof func, "function <%s:%d>", ar.short_src, ar.linedefined);
  const gsite *site = site_intern(where, func);
  if (site) {
    e->site = site;
    e->line = ar.currentline;
    e->source = ar.source;
  }
  return site;
}

void tb_created_by(tbuf *b, g_t *gp) {
  if (!gp->site) return;
  tb_printf(b, "created by %s in goroutine %lld\n\t%s\n", gp->site->func, (long long)gp->parent, gp->site->where);
}

void tb_goroutine(tbuf *b, g_t *gp, lua_State *co, int level, const char *state) {
  tb_printf(b, "goroutine %lld [%s]:\n", (long long)atomic_load(&gp->goid), state);
  if (co) tb_frames(b, co, level);
  else tb_printf(b, "\t(not started)\n");
  tb_created_by(b, gp);
}

/* ---- panics ---- */

/* [-0, +1] the error value at idx as a panic prints it: its string, its
 * __tostring, or what it is. */
static void push_panic_value(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TSTRING || lua_type(L, idx) == LUA_TNUMBER) {
    lua_pushvalue(L, idx);
    lua_tostring(L, -1);
    return;
  }
  if (luaL_getmetafield(L, idx, "__tostring")) { /* protected: it may raise too */
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 1, 0) == 0 && lua_isstring(L, -1)) return;
    lua_pop(L, 1); /* not a string: say what the error is instead */
  }
  if (lua_isnil(L, idx)) lua_pushliteral(L, "nil");
  else lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
}

/* [-0, +1] the report of an error that killed co (it escaped every
 * handler): the top frame's line is lost, the rest is there. Nothing runs
 * on co, which is dead: the error value's __tostring runs on L (the
 * caller's protected call catches what it raises). */
void tb_push_dead_panic(lua_State *L, g_t *gp, lua_State *co) {
  lua_pushvalue(co, -1);
  lua_xmove(co, L, 1);
  int err = lua_gettop(L);
  push_panic_value(L, err);
  tbuf b;
  tb_init(&b);
  const char *msg = lua_tostring(L, -1);
  tb_printf(&b, "panic: %s\n\ngoroutine %lld [running]:\n", msg, (long long)atomic_load(&gp->goid));
  frames(&b, co, 0, lua_type(L, err) == LUA_TSTRING ? msg : NULL);
  tb_created_by(&b, gp);
  lua_settop(L, err - 1);
  lua_pushlstring(L, b.p, b.len);
  tb_free(&b);
}

/* ---- luajit's tracebacks, without the runtime's frames ---- */

/* C API traceback([thread,] [msg [, level]]) -> string: debug.traceback,
 * with the frames of the goroutine's own runtime left out, so that a main
 * chunk's traceback ends "in main chunk" as under luajit. A message that is
 * not a string (and not nil) is returned as it is, as luajit does. */
int tb_debug_traceback(lua_State *L) {
  lua_State *co = L;
  int arg = 0;
  if (lua_type(L, 1) == LUA_TTHREAD) {
    co = lua_tothread(L, 1);
    arg = 1;
  }
  if (!lua_isnoneornil(L, arg + 1) && !lua_isstring(L, arg + 1)) {
    lua_pushvalue(L, arg + 1);
    return 1;
  }
  const char *msg = lua_tostring(L, arg + 1);
  int level = (int)luaL_optinteger(L, arg + 2, co == L ? 1 : 0);
  tbuf b;
  tb_init(&b);
  if (msg) tb_printf(&b, "%s\n", msg);
  tb_printf(&b, "stack traceback:");
  tbuf frames;
  tb_init(&frames);
  tb_frames(&frames, co, level);
  /* tb_frames ends each frame with a newline; luajit puts one before each */
  for (size_t i = 0; i < frames.len;) {
    const char *nl = memchr(frames.p + i, '\n', frames.len - i);
    size_t n = nl ? (size_t)(nl - (frames.p + i)) : frames.len - i;
    tb_puts(&b, "\n", 1);
    tb_puts(&b, frames.p + i, n);
    i += n + 1;
  }
  tb_free(&frames);
  lua_pushlstring(L, b.p, b.len);
  tb_free(&b);
  return 1;
}
