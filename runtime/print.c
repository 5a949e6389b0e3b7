/*
 * print.c — the standard output a program writes to, as Go's os.Stdout:
 * `print` writes each call's line with one write, so that lines printed
 * from several processors at once never tear, and a write to a standard
 * output or error whose reader has gone (EPIPE) ends the process with
 * SIGPIPE, as Go's does for descriptors 1 and 2 (the runtime ignores
 * SIGPIPE so that sockets report EPIPE instead: print, io.write and the
 * file methods write and flush check for it).
 *
 * Invariants: every function here runs on the thread that holds the VM;
 * stdio's own lock makes one fwrite atomic with respect to the others.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "rt.h"

/* The reader of stdout or stderr is gone: end as Go's runtime does. */
static _Noreturn void die_of_sigpipe(void) {
  signal(SIGPIPE, SIG_DFL);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_UNBLOCK, &set, NULL);
  raise(SIGPIPE);
  _exit(128 + SIGPIPE); /* not reached */
}

static void check_std_write(FILE *f, int err) {
  if (err == EPIPE && (f == stdout || f == stderr)) die_of_sigpipe();
}

/* print(...): as luajit's, tostring on each argument, tabs between, a
 * newline at the end, but written with a single fwrite. */
static int l_print(lua_State *L) {
  int n = lua_gettop(L);
  luaL_Buffer b;
  lua_getglobal(L, "tostring");
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    lua_pushvalue(L, n + 1); /* tostring: below the buffer's own slots */
    lua_pushvalue(L, i);
    lua_call(L, 1, 1);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (!s) return luaL_error(L, "'tostring' must return a string to 'print'");
    if (i > 1) luaL_addchar(&b, '\t');
    luaL_addvalue(&b);
  }
  luaL_addchar(&b, '\n');
  luaL_pushresult(&b);
  size_t len;
  const char *line = lua_tolstring(L, -1, &len);
  errno = 0;
  if (fwrite(line, 1, len, stdout) < len) check_std_write(stdout, errno);
  return 0;
}

/* A wrapper of io.write, io.flush, file:write or file:flush (upvalue 1, the
 * original; upvalue 2, true for io.write/io.flush, which use the default
 * output): the same results, and SIGPIPE for a broken stdout or stderr. */
static int l_checked_io(lua_State *L) {
  int n = lua_gettop(L);
  FILE **target = NULL;
  if (lua_toboolean(L, lua_upvalueindex(2))) { /* io.write: the default output, io.output() */
    lua_getglobal(L, "io");
    if (lua_istable(L, -1)) {
      lua_getfield(L, -1, "output");
      if (lua_isfunction(L, -1) && lua_pcall(L, 0, 1, 0) == 0) target = luaL_testudata(L, -1, LUA_FILEHANDLE);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  } else {
    target = luaL_testudata(L, 1, LUA_FILEHANDLE);
  }
  FILE *f = target ? *target : NULL;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  errno = 0;
  lua_call(L, n, LUA_MULTRET);
  if (f && lua_isnil(L, 1) && lua_type(L, 3) == LUA_TNUMBER) check_std_write(f, (int)lua_tointeger(L, 3));
  return lua_gettop(L);
}

/* [-0, +0] wrap t[name] (t on top of the stack) with l_checked_io */
static void wrap_io(lua_State *L, const char *name, bool default_output) {
  lua_getfield(L, -1, name);
  if (!lua_iscfunction(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  lua_pushboolean(L, default_output);
  lua_pushcclosure(L, l_checked_io, 2);
  lua_setfield(L, -2, name);
}

void print_open(lua_State *L, bool adopted) {
  /* An adopted VM (plain luajit) keeps a print its script replaced. */
  lua_getglobal(L, "print");
  bool replace = !adopted || lua_iscfunction(L, -1);
  lua_pop(L, 1);
  if (replace) {
    lua_pushcfunction(L, l_print);
    lua_setglobal(L, "print");
  }
  lua_getglobal(L, "io");
  if (lua_istable(L, -1)) {
    wrap_io(L, "write", true);
    wrap_io(L, "flush", true);
  }
  lua_pop(L, 1);
  luaL_getmetatable(L, LUA_FILEHANDLE);
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "__index");
    if (lua_istable(L, -1)) {
      wrap_io(L, "write", false);
      wrap_io(L, "flush", false);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}
