/*
 * lugo.h — embedding lugo: Go's runtime model for LuaJIT.
 *
 * A runtime owns GOMAXPROCS processors (P), each with its own LuaJIT VM, run
 * queue, epoll poller and caches. Embedders create one runtime, load a chunk
 * into the first processor's VM, and run it as the main goroutine:
 *
 *     lugo_runtime *rt = lugo_new(NULL);
 *     lua_State *L = lugo_vm(rt);
 *     luaL_loadfile(L, "main.lua");            // the main goroutine's body
 *     int status = lugo_run(rt, 0);            // 0, 2 on panic or deadlock,
 *     lugo_close(rt);                          // or what os.exit asked for
 *     return status;
 *
 * Lua scripts reach the runtime through `require "lugo"`; the module
 * `lugo.core` (luaopen_lugo_core) also lets plain luajit adopt its own state
 * as the first processor (see lugo.main).
 */
#ifndef LUGO_H
#define LUGO_H

#include <lua.h>

#define LUGO_VERSION "0.1.0"

typedef struct runtime lugo_runtime;

typedef struct lugo_options {
  int maxprocs; /* processors; <= 0: the number of CPUs */
} lugo_options;

/* Create a runtime and the first processor's VM, standard libraries open. */
lugo_runtime *lugo_new(const lugo_options *opts);

/* The first processor's VM, where the main goroutine runs. */
lua_State *lugo_vm(lugo_runtime *rt);

/* [-(nargs+1), +0] Run the function below the nargs arguments on top of
 * lugo_vm(rt)'s stack as the main goroutine, until it returns, the program
 * panics or deadlocks, or os.exit is called. Returns the exit status. */
int lugo_run(lugo_runtime *rt, int nargs);

/* Stop every processor, close every VM (running finalizers), free all. */
void lugo_close(lugo_runtime *rt);

/* The `lugo.core` module, for plain luajit and for preloading. */
int luaopen_lugo_core(lua_State *L);

/* Register `lugo.core` and the embedded lugo.* Lua modules in
 * package.preload, so that `require "lugo"` needs no search path. */
void lugo_preload(lua_State *L);

#endif
