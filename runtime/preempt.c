/*
 * preempt.c — making a running goroutine yield, after Go's preempt.go.
 *
 * sysmon (another thread) sets a count hook on the VM of a P whose G has run
 * for 10 ms without yielding; LuaJIT allows setting a hook from any thread.
 * The hook runs on the P's own thread, at the next instruction the
 * interpreter executes, and yields the G back to the scheduler, behind the
 * Gs already queued. JIT-compiled code does not run hooks: a compiled loop
 * keeps its P until it leaves the trace (sysmon reports it after 1 s).
 *
 * Invariants:
 *   - The hook yields only from the G's own coroutine, when it can yield,
 *     and never inside the runtime's Lua code (chunks named "=lugo...",
 *     "=[lugo]" or files under a lugo/ directory), whose steps between an
 *     FFI call and the load or store of a box must not be interleaved with
 *     other goroutines. There it re-arms itself to try again shortly.
 *   - A preempted G is resumed with no values and its stack untouched
 *     (g->preempted): it continues exactly where it stopped.
 *   - The same hook prints goroutine stacks for SIGQUIT and for sysmon's
 *     report of a G that could not be preempted: it runs on the VM's thread,
 *     the only one that may read the VM.
 */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "rt.h"

rtlock rt_print_lock; /* one goroutine dump at a time on stderr */

static void preempt_hook(lua_State *L, lua_Debug *ar);

void preempt_request(p_t *pp) {
  __atomic_store_n(&pp->preempt, true, __ATOMIC_RELEASE);
  lua_sethook(pp->L, preempt_hook, LUA_MASKCOUNT, 1);
}

void preempt_dump_request(p_t *pp) {
  atomic_store(&pp->dump, true);
  if (atomic_load_explicit(&pp->curg, memory_order_acquire)) lua_sethook(pp->L, preempt_hook, LUA_MASKCOUNT, 1);
}

static bool in_runtime_code(const char *source) {
  return strncmp(source, "=lugo", 5) == 0 || strncmp(source, "=[lugo]", 7) == 0 || strstr(source, "/lugo/");
}

/* [-0, +0] print every G of pp: the running one (on L) from its own stack. */
void print_p_goroutines(p_t *pp, lua_State *L, g_t *running) {
  lua_State *S = L ? L : pp->L; /* the stack that builds the strings */
  rt_lock(&rt_print_lock);
  for (g_t *gp = pp->allg; gp; gp = gp->allnext) {
    if (gp == running) {
      luaL_traceback(S, L, NULL, 0);
      fprintf(stderr, "goroutine %lld [running, on processor %d]:\n%s\n\n", (long long)gp->goid,
              (int)pp->id, lua_tostring(S, -1));
      lua_pop(S, 1);
    } else {
      rt_print_goroutine(pp, S, gp);
    }
  }
  fflush(stderr);
  rt_unlock(&rt_print_lock);
}

bool preempt_poll(p_t *pp) {
  if (!atomic_load_explicit(&pp->dump, memory_order_relaxed)) return false;
  atomic_store(&pp->dump, false);
  if (pp->L) print_p_goroutines(pp, NULL, NULL);
  atomic_store(&pp->dumped, true);
  return true;
}

static void preempt_hook(lua_State *L, lua_Debug *ar) {
  p_t *pp = getp();
  lua_sethook(L, NULL, 0, 0);
  if (!pp) return;
  g_t *gp = getg();
  if (atomic_load(&pp->dump)) {
    atomic_store(&pp->dump, false);
    print_p_goroutines(pp, L, gp);
    atomic_store(&pp->dumped, true);
  }
  if (gp && atomic_load(&pp->hog) == gp->goid) {
    atomic_store(&pp->hog, 0);
    luaL_traceback(L, L, NULL, 0);
    rt_lock(&rt_print_lock);
    fprintf(stderr, "goroutine %lld on processor %d left compiled code after running without yielding:\n%s\n\n",
            (long long)gp->goid, (int)pp->id, lua_tostring(L, -1));
    fflush(stderr);
    rt_unlock(&rt_print_lock);
    lua_pop(L, 1);
  }
  if (!__atomic_exchange_n(&pp->preempt, false, __ATOMIC_ACQ_REL)) return;
  if (!gp || L != gp->live->co || gp->live->nonyield || !lua_isyieldable(L)) return; /* sysmon asks again */
  if (lua_getinfo(L, "S", ar) && in_runtime_code(ar->source)) { /* not here: a little later */
    __atomic_store_n(&pp->preempt, true, __ATOMIC_RELEASE);
    lua_sethook(L, preempt_hook, LUA_MASKCOUNT, 100);
    return;
  }
  gp->preempted = true;
  gp->parking = PARK_YIELD;
  lua_yield(L, 0);
}
