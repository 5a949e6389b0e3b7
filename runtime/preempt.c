/*
 * preempt.c — making a running goroutine yield, after Go's preempt.go and
 * its asynchronous preemption (signal_unix.go).
 *
 * sysmon (another thread) asks a P whose G has run for 10 ms without
 * yielding to give it up: it sets a flag and sends SIGURG to the P's
 * thread, as Go's sysmon does. The handler, on the P's own thread, sets a
 * count hook on the P's VM (lua_sethook is meant to be called from a signal
 * handler, as LuaJIT's own profiler does; from another thread it is not
 * safe: it rewrites the VM's hook mask and dispatch table, which the VM's
 * thread updates too, and a lost HOOK_ACTIVE bit there made a later yield
 * from a C function unwind as if from a hook). The hook
 * runs at the next instruction the interpreter executes and yields the G
 * back to the scheduler, behind the Gs already queued. JIT-compiled code
 * does not run hooks: a compiled loop keeps its P until it leaves the trace
 * (sysmon reports it after 1 s).
 *
 * Invariants:
 *   - Only the thread that runs the P touches its VM: the handler and the
 *     hook run there. That is the P's own thread, or the one it is lent to
 *     (proc.c, lend_run): requests go to p_runner_thread, and a handler
 *     acts on its own P only while it holds it (a request that reaches the
 *     other thread as the P changes hands is lost; sysmon asks again).
 *     The handler leaves the hook alone while the hook changes it itself
 *     (p->sethook_busy), so that no lua_sethook is interrupted halfway by
 *     another.
 *   - The handler may still land inside one of LuaJIT's own dispatch
 *     updates (when it starts or stops recording a trace): every entry it
 *     writes is a valid handler in any mode, so at worst that request is
 *     lost; the handler rewrites the whole table (hook off, then on), so
 *     the next one is not. A hook kept installed for good would need
 *     no signal, but it slows every interpreted instruction (ping-pong took
 *     30% longer).
 *   - sysmon signals a P's thread only while the runtime runs (between
 *     sysmon_start and sysmon_stop, inside the threads' lifetimes).
 *   - The hook yields only from the G's own coroutine, when it can yield,
 *     and never inside the runtime's Lua code (chunks named "=lugo...",
 *     "=[lugo]" or lua/lugo's module files), whose steps between an
 *     FFI call and the load or store of a box must not be interleaved with
 *     other goroutines. There it re-arms itself to try again shortly.
 *   - A preempted G is resumed with no values and its stack untouched
 *     (g->preempted): it continues exactly where it stopped.
 *   - A hook the script set (debug.sethook) is saved by the handler and
 *     put back by the hook, first thing: preemption borrows the VM's one
 *     hook slot, it does not take it (a count hook's count restarts).
 *   - The same hook prints goroutine stacks for SIGQUIT and for sysmon's
 *     report of a G that could not be preempted: it runs on the VM's thread,
 *     the only one that may read the VM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "rt.h"

rtlock rt_print_lock; /* one goroutine dump at a time on stderr */

static void preempt_hook(lua_State *L, lua_Debug *ar);

/* SIGURG, on the thread of the P it was sent to: arm the hook if that P
 * runs a G with something asked of it. */
static void on_sigurg(int sig) {
  (void)sig;
  int saved = errno;
  m_t *m = rt_tls_m;
  p_t *pp = m ? m->p : NULL;
  /* This thread's own P, and pp when it runs another's (lent: ours until
   * we give it back). Our own P is ours to touch only while we hold it:
   * between two looks of the idle wait another M may run it. */
  p_t *home = rt_tls_lender ? rt_tls_lender : pp;
  bool mine = pp && (pp != home || atomic_load(&pp->hold) == HOLD_OWN);
  bool freeze = false;
  if (pp && pp != home && atomic_load(&pp->freeze)) { /* SIGQUIT reads these VMs from sysmon */
    atomic_store(&pp->frozen, true);
    freeze = true;
  }
  if (home && atomic_load(&home->freeze)) {
    uint32_t idle = HOLD_IDLE;
    if (home != pp || atomic_load(&home->hold) == HOLD_OWN ||
        atomic_compare_exchange_strong(&home->hold, &idle, HOLD_OWN)) { /* no one takes it from here */
      atomic_store(&home->frozen, true);
      freeze = true;
    }
  }
  if (freeze) { /* stop here for good */
    for (;;) {
      struct timespec ts = {1, 0};
      nanosleep(&ts, NULL);
    }
  }
  if (mine && pp->L && !pp->sethook_busy && atomic_load_explicit(&pp->curg, memory_order_relaxed) &&
      (__atomic_load_n(&pp->preempt, __ATOMIC_ACQUIRE) || atomic_load(&pp->dump) == DUMP_ASKED ||
       atomic_load(&pp->hog))) {
    /* Off, then on: each call rewrites the whole dispatch table when the
     * mode changes, so the hook is in place even if an interrupted update
     * of LuaJIT's own left the table out of step with its mode. */
    lua_Hook user = lua_gethook(pp->L);
    if (user != preempt_hook) { /* the script's own (debug.sethook): put back by the hook */
      pp->user_hook = user;
      pp->user_hookmask = lua_gethookmask(pp->L);
      pp->user_hookcount = lua_gethookcount(pp->L);
    }
    lua_sethook(pp->L, NULL, 0, 0);
    lua_sethook(pp->L, preempt_hook, LUA_MASKCOUNT, 1);
  }
  errno = saved;
}

void preempt_install(void) { rt_handle_signal(SIGURG, on_sigurg); }

void preempt_request(p_t *pp) {
  __atomic_store_n(&pp->preempt, true, __ATOMIC_RELEASE);
  pthread_kill(p_runner_thread(pp), SIGURG);
}

void preempt_dump_request(p_t *pp) {
  atomic_store(&pp->dump, DUMP_ASKED);
  pthread_kill(p_runner_thread(pp), SIGURG);
}

void preempt_freeze(p_t *pp) {
  atomic_store(&pp->freeze, true);
  pthread_kill(p_runner_thread(pp), SIGURG);
}

/* lua_sethook on the VM's own thread, with the handler kept out of it: the
 * handler interrupts this thread, so a flag (no syscall) is enough. */
static void sethook_masked(p_t *pp, lua_State *L, lua_Hook f, int mask, int count) {
  pp->sethook_busy = 1;
  atomic_signal_fence(memory_order_seq_cst);
  lua_sethook(L, f, mask, count);
  atomic_signal_fence(memory_order_seq_cst);
  pp->sethook_busy = 0;
}

/* The runtime's own chunks: the host's embedded modules ("=lugo...") and
 * trampoline ("=[lugo]"), or lua/lugo/<module>.lua loaded from a file when
 * plain luajit runs lugo. Only those: a script that merely lives under a
 * directory named lugo/ is user code and must stay preemptible. */
static bool in_runtime_code(const char *source) {
  static const char *const modules[] = {"init", "internal", "sync", "time", "runtime", "context", "net", "os"};
  if (strncmp(source, "=lugo", 5) == 0 || strncmp(source, "=[lugo]", 7) == 0) return true;
  if (source[0] != '@') return false;
  const char *slash = strrchr(source, '/');
  if (!slash) return false;
  bool in_lugo_dir = (slash - source >= 5 && strncmp(slash - 5, "/lugo", 5) == 0) ||
                     (slash - source == 5 && strncmp(source, "@lugo", 5) == 0); /* "@lugo/x.lua" */
  if (!in_lugo_dir) return false;
  for (size_t i = 0; i < sizeof modules / sizeof *modules; i++) {
    size_t n = strlen(modules[i]);
    if (strncmp(slash + 1, modules[i], n) == 0 && strcmp(slash + 1 + n, ".lua") == 0) return true;
  }
  return false;
}

void dump_p_goroutines(tbuf *b, p_t *pp, lua_State *L, g_t *running, bool compiled) {
  if (running) {
    char state[80];
    snprintf(state, sizeof state, compiled ? "running, in compiled code, on processor %d" : "running, on processor %d",
             (int)pp->id);
    tb_goroutine(b, running, L, 0, state);
    tb_puts(b, "\n", 1);
  }
  for (g_t *gp = pp->allg; gp; gp = gp->allnext) {
    if (gp == running) continue;
    rt_tb_parked(b, gp);
    tb_puts(b, "\n", 1);
  }
}

/* On pp's own thread, at a safe point: write its goroutines for sysmon,
 * unless sysmon took them over meanwhile. */
static void dump_here(p_t *pp, lua_State *L, g_t *running) {
  int32_t asked = DUMP_ASKED;
  if (!atomic_compare_exchange_strong(&pp->dump, &asked, DUMP_BUSY)) return;
  tbuf b;
  tb_init(&b);
  dump_p_goroutines(&b, pp, L, running, false);
  pp->dump_text = b.p; /* handed over to sysmon */
  atomic_store(&pp->dump, DUMP_DONE);
}

bool preempt_poll(p_t *pp) {
  if (atomic_load_explicit(&pp->dump, memory_order_relaxed) != DUMP_ASKED) return false;
  dump_here(pp, NULL, NULL); /* a P without a VM yet has no goroutines: it answers with nothing */
  return true;
}

static void preempt_hook(lua_State *L, lua_Debug *ar) {
  p_t *pp = getp();
  if (!pp) {
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  sethook_masked(pp, L, pp->user_hook, pp->user_hookmask, pp->user_hookcount);
  g_t *gp = getg();
  if (atomic_load(&pp->dump) == DUMP_ASKED) dump_here(pp, L, gp);
  if (gp && atomic_load(&pp->hog) == gp->goid) {
    atomic_store(&pp->hog, 0);
    tbuf b;
    tb_init(&b);
    tb_frames(&b, L, 0);
    rt_lock(&rt_print_lock);
    fprintf(stderr,
            "goroutine %lld on processor %d left compiled code after running without yielding:\nstack traceback:\n%s\n",
            (long long)gp->goid, (int)pp->id, tb_str(&b));
    fflush(stderr);
    rt_unlock(&rt_print_lock);
    tb_free(&b);
  }
  if (!__atomic_exchange_n(&pp->preempt, false, __ATOMIC_ACQ_REL)) return;
  if (!gp || L != gp->live->co || gp->live->nonyield || !lua_isyieldable(L)) return; /* sysmon asks again */
  if (lua_getinfo(L, "S", ar) && in_runtime_code(ar->source)) { /* not here: a little later */
    __atomic_store_n(&pp->preempt, true, __ATOMIC_RELEASE);
    /* A count that varies: a loop whose body is mostly runtime code would
     * otherwise bring the hook back to the same instruction every time. */
    sethook_masked(pp, L, preempt_hook, LUA_MASKCOUNT, 37 + (int)(fastrand(pp) % 128));
    return;
  }
  gp->preempted = true;
  gp->parking = PARK_YIELD;
  lua_yield(L, 0);
}
