/*
 * sigqueue.c — signals relayed to channels: Go's os/signal (signal.go,
 * signal_unix.go) and the runtime's side of it (sigqueue.go).
 *
 * Invariants:
 *   - The handler (on_signal) only sets the signal's bit in sig_pending, a
 *     lock-free 64-bit atomic, and returns: it is async-signal-safe, may run
 *     on any thread (a P's, a pool thread, sysmon) at any instruction, takes
 *     no lock, allocates nothing, makes no system call (errno is left as it
 *     was) and touches no channel, VM or runtime struct. sig_pending is this
 *     file's one global: the handler cannot find a runtime. A signal that
 *     comes again before its bit is taken counts once, as in Go.
 *   - sysmon, a plain thread that holds no P, takes the bits every tick
 *     (sigqueue_deliver, 2 ms) and relays each signal, lowest number first,
 *     to every channel that wants it before the next signal (Go's order):
 *     a send that never blocks (chan_offer, under the channel's lock) of
 *     the signal's name, a copy made here with no VM (a string blob), as
 *     any value on a shared channel is. A full channel, or an
 *     unbuffered one without a receiver waiting, drops the signal (Go's
 *     rule: use a buffered channel). A receiver is readied through its P's
 *     inbox, so no VM is touched off its thread.
 *   - rt->sig (struct sigtab) holds the registrations (channel -> set of
 *     signals), how many channels want each signal, and the disposition
 *     each signal had before the runtime first changed it. rt->sig_lock
 *     guards it and every sigaction made here; the Lua API takes it on the
 *     caller's P thread, sysmon while it delivers. So when stop(ch) (or
 *     ignore, reset) returns, no delivery to ch is under way and none will
 *     come, as Go's Stop promises. Lock order: sig_lock, then a channel's.
 *   - A registration holds a reference to its channel until stop, ignore or
 *     reset removes its last signal, or the runtime ends (sigqueue_free):
 *     a channel whose proxies are all collected stays registered and alive,
 *     as a channel registered in Go is never collected; signals to it fill
 *     its buffer, then drop. A registered channel is shared (made so by
 *     notify, on its owner's thread), so sysmon may lock it and its values
 *     are copies for every VM.
 *   - The handler is installed for a signal exactly while some channel
 *     wants it. When the last one stops (or reset), the signal gets back
 *     the disposition it had before the runtime first changed it: the
 *     default action (SIGINT and SIGTERM end the process), an ignore
 *     inherited from the parent (Go keeps those too), or the runtime's own
 *     handler (SIGQUIT's goroutine dump, SIGPIPE's rule in print.c).
 *     lugo_close restores every disposition changed here.
 *   - Never relayed: SIGKILL and SIGSTOP (cannot be caught), SIGURG (the
 *     runtime's preemption, preempt.c: Go relays it, but here it would be
 *     mostly the runtime's own), and the fault signals SIGSEGV, SIGBUS,
 *     SIGFPE, SIGILL (a real fault must not return into the faulting
 *     instruction). glibc's own real-time signals (32, 33) are refused.
 *   - While a channel is registered the program is never deadlocked
 *     (rt->nsigchans, proc.c): a signal may wake a goroutine.
 */
#define _GNU_SOURCE /* sigaction, SA_RESTART, SIGRTMIN under -std=c11 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "rt.h"

#define SIG_MAX 64 /* signals 1..64: bit sig-1 of a 64-bit mask */

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "the signal handler needs a lock-free 64-bit atomic");

static _Atomic uint64_t sig_pending; /* set by the handler, taken by sysmon */

static inline uint64_t sigbit(int sig) { return (uint64_t)1 << (sig - 1); }

static void on_signal(int sig) {
  if (sig >= 1 && sig <= SIG_MAX) atomic_fetch_or_explicit(&sig_pending, sigbit(sig), memory_order_relaxed);
}

typedef struct sigreg {
  hchan *c;      /* holds a reference */
  uint64_t mask; /* the signals it wants */
  struct sigreg *next;
} sigreg;

struct sigtab {
  sigreg *regs;
  int32_t want[SIG_MAX + 1];         /* how many channels want each signal */
  uint64_t saved_mask;               /* signals whose old disposition is saved */
  struct sigaction saved[SIG_MAX + 1]; /* as they were before the runtime changed them */
};

/* ---- names ---- */

static const struct {
  int sig;
  const char *name;
} signames[] = {
    {SIGHUP, "SIGHUP"},       {SIGINT, "SIGINT"},       {SIGQUIT, "SIGQUIT"},     {SIGILL, "SIGILL"},
    {SIGTRAP, "SIGTRAP"},     {SIGABRT, "SIGABRT"},     {SIGBUS, "SIGBUS"},       {SIGFPE, "SIGFPE"},
    {SIGKILL, "SIGKILL"},     {SIGUSR1, "SIGUSR1"},     {SIGSEGV, "SIGSEGV"},     {SIGUSR2, "SIGUSR2"},
    {SIGPIPE, "SIGPIPE"},     {SIGALRM, "SIGALRM"},     {SIGTERM, "SIGTERM"},     {SIGCHLD, "SIGCHLD"},
    {SIGCONT, "SIGCONT"},     {SIGSTOP, "SIGSTOP"},     {SIGTSTP, "SIGTSTP"},     {SIGTTIN, "SIGTTIN"},
    {SIGTTOU, "SIGTTOU"},     {SIGURG, "SIGURG"},       {SIGXCPU, "SIGXCPU"},     {SIGXFSZ, "SIGXFSZ"},
    {SIGVTALRM, "SIGVTALRM"}, {SIGPROF, "SIGPROF"},     {SIGWINCH, "SIGWINCH"},   {SIGIO, "SIGIO"},
    {SIGSYS, "SIGSYS"},
#ifdef SIGSTKFLT
    {SIGSTKFLT, "SIGSTKFLT"},
#endif
#ifdef SIGPWR
    {SIGPWR, "SIGPWR"},
#endif
};
#define NSIGNAMES (sizeof signames / sizeof *signames)

static const char *sig_name(int sig) {
  for (size_t i = 0; i < NSIGNAMES; i++)
    if (signames[i].sig == sig) return signames[i].name;
  return NULL;
}

/* A signal number the Lua API may name: a named one, or a real-time one. */
static bool sig_valid(int sig) {
  if (sig < 1 || sig > SIG_MAX) return false;
  return sig_name(sig) != NULL || (sig >= SIGRTMIN && sig <= SIGRTMAX);
}

/* Why the runtime will not relay, ignore or reset sig; NULL if it may. */
static const char *sig_refused(int sig) {
  switch (sig) {
  case SIGKILL:
  case SIGSTOP: return "cannot be caught or ignored";
  case SIGURG: return "is used by the runtime for preemption";
  case SIGSEGV:
  case SIGBUS:
  case SIGFPE:
  case SIGILL: return "is a synchronous fault signal and cannot be handled";
  default: return NULL;
  }
}

/* Every signal that notify, ignore or reset with no names act on: the
 * named ones that may be relayed (Go's "all incoming signals"). */
static uint64_t sig_all(void) {
  uint64_t m = 0;
  for (size_t i = 0; i < NSIGNAMES; i++)
    if (!sig_refused(signames[i].sig)) m |= sigbit(signames[i].sig);
  return m;
}

/* ---- dispositions (sig_lock held) ---- */

static struct sigtab *sigtab_get(runtime *rt) {
  if (!rt->sig) rt->sig = rt_calloc(1, sizeof *rt->sig);
  return rt->sig;
}

static void save_disposition(struct sigtab *t, int sig) {
  if (t->saved_mask & sigbit(sig)) return;
  sigaction(sig, NULL, &t->saved[sig]);
  t->saved_mask |= sigbit(sig);
}

static void set_disposition(struct sigtab *t, int sig, void (*handler)(int)) {
  save_disposition(t, sig);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sigfillset(&sa.sa_mask); /* nothing to nest: the handler is one atomic or */
  sa.sa_flags = SA_RESTART; /* blocking calls that can go on do (epoll and sleeps see EINTR, as for SIGURG) */
  sigaction(sig, &sa, NULL);
}

/* The disposition sig had before the runtime changed it. */
static void restore_disposition(struct sigtab *t, int sig) {
  atomic_fetch_and_explicit(&sig_pending, ~sigbit(sig), memory_order_relaxed);
  if (t->saved_mask & sigbit(sig)) sigaction(sig, &t->saved[sig], NULL);
}

/* Remove the signals of mask from every registration; the channels whose
 * registrations are left empty go to *drop (linked through next), to be
 * released once sig_lock is let go. */
static void unregister(runtime *rt, struct sigtab *t, uint64_t mask, sigreg **drop) {
  for (sigreg **rp = &t->regs; *rp;) {
    sigreg *r = *rp;
    uint64_t gone = r->mask & mask;
    for (int sig = 1; sig <= SIG_MAX; sig++)
      if (gone & sigbit(sig)) t->want[sig]--;
    r->mask &= ~mask;
    if (r->mask == 0) {
      *rp = r->next;
      r->next = *drop;
      *drop = r;
      atomic_fetch_sub(&rt->nsigchans, 1);
    } else {
      rp = &r->next;
    }
  }
}

static void release_regs(sigreg *r) {
  while (r) {
    sigreg *next = r->next;
    rt_release(&r->c->obj);
    rt_free(r);
    r = next;
  }
}

/* ---- delivery (sysmon) ---- */

void sigqueue_deliver(runtime *rt) {
  if (!atomic_load_explicit(&sig_pending, memory_order_relaxed)) return;
  uint64_t pending = atomic_exchange_explicit(&sig_pending, 0, memory_order_relaxed);
  rt_lock(&rt->sig_lock);
  struct sigtab *t = rt->sig;
  /* One signal to every channel before the next, lowest number first, as
   * Go's signal_recv hands them out: a program that sees the later signal
   * on one channel has seen (or lost, if full) the earlier one on another. */
  for (int sig = 1; t && pending && sig <= SIG_MAX; sig++) {
    if (!(pending & sigbit(sig))) continue;
    pending &= ~sigbit(sig);
    char buf[32];
    const char *name = sig_name(sig);
    if (!name) { /* a real-time signal: Go's syscall.Signal.String */
      snprintf(buf, sizeof buf, "signal %d", sig);
      name = buf;
    }
    for (sigreg *r = t->regs; r; r = r->next) {
      if (!(r->mask & sigbit(sig))) continue;
      val v = {{COPY_BLOB, {.blob = blob_string(name, strlen(name))}}, 0, 0};
      chan_lock(r->c);
      bool sent = chan_offer(r->c, v);
      chan_unlock(r->c);
      if (!sent) copy_free(&v.copy); /* full, or closed: dropped */
    }
  }
  rt_unlock(&rt->sig_lock);
}

void sigqueue_free(runtime *rt) {
  struct sigtab *t = rt->sig;
  if (!t) return;
  for (int sig = 1; sig <= SIG_MAX; sig++) restore_disposition(t, sig);
  release_regs(t->regs);
  atomic_store(&rt->nsigchans, 0);
  rt_free(t);
  rt->sig = NULL;
}

/* ---- the C API (lua/lugo/os.lua checks the arguments' types) ---- */

static runtime *signal_rt(lua_State *L) {
  p_t *pp = getp();
  if (!pp) luaL_error(L, "lugo: no runtime on this thread");
  return pp->rt;
}

/* signal_check(v, fname) -> the signal's number, or nil and the reason
 * (for fname "ignored", any signal with a name or number is fine). */
static int l_signal_check(lua_State *L) {
  const char *fname = luaL_checkstring(L, 2);
  int sig = 0;
  if (lua_type(L, 1) == LUA_TNUMBER) {
    lua_Number n = lua_tonumber(L, 1);
    if (n >= 1 && n <= SIG_MAX && n == (int)n) sig = (int)n;
  } else {
    const char *s = lua_tostring(L, 1);
    for (size_t i = 0; s && i < NSIGNAMES; i++)
      if (strcmp(s, signames[i].name) == 0) sig = signames[i].sig;
  }
  if (!sig_valid(sig)) {
    lua_pushnil(L);
    if (lua_type(L, 1) == LUA_TNUMBER) lua_pushfstring(L, "os.signal.%s: unknown signal %s", fname, lua_tostring(L, 1));
    else lua_pushfstring(L, "os.signal.%s: unknown signal \"%s\"", fname, lua_tostring(L, 1));
    return 2;
  }
  const char *why = strcmp(fname, "ignored") ? sig_refused(sig) : NULL;
  if (why) {
    lua_pushnil(L);
    const char *name = sig_name(sig);
    lua_pushfstring(L, "os.signal.%s: %s %s", fname, name, why); /* every refused one has a name */
    return 2;
  }
  lua_pushinteger(L, sig);
  return 1;
}

/* The mask of the signal numbers at from.. (checked by signal_check);
 * none: every signal that may be relayed. */
static uint64_t arg_mask(lua_State *L, int from) {
  int top = lua_gettop(L);
  if (top < from) return sig_all();
  uint64_t m = 0;
  for (int i = from; i <= top; i++) {
    int sig = (int)luaL_checkinteger(L, i);
    if (!sig_valid(sig) || sig_refused(sig)) luaL_argerror(L, i, "signal number");
    m |= sigbit(sig);
  }
  return m;
}

static hchan *arg_chan(lua_State *L) {
  hchan *c = (hchan *)rt_to_object(L, 1, RT_CHAN);
  if (!c) luaL_argerror(L, 1, "channel expected");
  return c;
}

/* signal_notify(ch, sig...): relay those signals (none: all) to ch too.
 * Returns nothing, or false and a message for the caller to raise. */
static int l_signal_notify(lua_State *L) {
  hchan *c = arg_chan(L);
  uint64_t mask = arg_mask(L, 2);
  runtime *rt = signal_rt(L);
  if (c->recv_only) { /* a timer's or a context's: Go's chan<- would not compile */
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "os.signal.notify: a receive-only channel cannot be sent signals");
    return 2;
  }
  /* Made shared here, on its owner's thread (a channel local to another
   * VM cannot be held by this one): from now on sysmon may lock it. */
  if (chan_share(c, L) < 0) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  rt_lock(&rt->sig_lock);
  struct sigtab *t = sigtab_get(rt);
  sigreg *r = t->regs;
  while (r && r->c != c) r = r->next;
  if (!r) {
    r = rt_calloc(1, sizeof *r);
    r->c = c;
    rt_retain(&c->obj);
    r->next = t->regs;
    t->regs = r;
    atomic_fetch_add(&rt->nsigchans, 1);
  }
  uint64_t add = mask & ~r->mask;
  r->mask |= add;
  for (int sig = 1; sig <= SIG_MAX; sig++)
    if ((add & sigbit(sig)) && t->want[sig]++ == 0) set_disposition(t, sig, on_signal);
  rt_unlock(&rt->sig_lock);
  return 0;
}

/* signal_stop(ch): no more signals to ch; a signal nobody wants any more
 * gets back its old disposition. */
static int l_signal_stop(lua_State *L) {
  hchan *c = arg_chan(L);
  runtime *rt = signal_rt(L);
  rt_lock(&rt->sig_lock);
  struct sigtab *t = rt->sig;
  sigreg **rp = t ? &t->regs : NULL;
  while (rp && *rp && (*rp)->c != c) rp = &(*rp)->next;
  sigreg *r = rp ? *rp : NULL;
  if (r) {
    *rp = r->next;
    r->next = NULL;
    atomic_fetch_sub(&rt->nsigchans, 1);
    for (int sig = 1; sig <= SIG_MAX; sig++)
      if ((r->mask & sigbit(sig)) && --t->want[sig] == 0) restore_disposition(t, sig);
  }
  rt_unlock(&rt->sig_lock);
  release_regs(r);
  return 0;
}

/* signal_ignore(sig...) / signal_reset(sig...): those signals (none: all)
 * leave every channel and are ignored / get back their old disposition. */
static int signal_cancel(lua_State *L, bool ignore) {
  uint64_t mask = arg_mask(L, 1);
  runtime *rt = signal_rt(L);
  rt_lock(&rt->sig_lock);
  struct sigtab *t = sigtab_get(rt);
  sigreg *drop = NULL;
  unregister(rt, t, mask, &drop);
  for (int sig = 1; sig <= SIG_MAX; sig++) {
    if (!(mask & sigbit(sig))) continue;
    t->want[sig] = 0;
    if (ignore) {
      set_disposition(t, sig, SIG_IGN);
      atomic_fetch_and_explicit(&sig_pending, ~sigbit(sig), memory_order_relaxed);
    } else {
      restore_disposition(t, sig);
    }
  }
  rt_unlock(&rt->sig_lock);
  release_regs(drop);
  return 0;
}

static int l_signal_ignore(lua_State *L) { return signal_cancel(L, true); }
static int l_signal_reset(lua_State *L) { return signal_cancel(L, false); }

/* signal_ignored(sig) -> whether sig is ignored now (by ignore, or since
 * the process started). */
static int l_signal_ignored(lua_State *L) {
  int sig = (int)luaL_checkinteger(L, 1);
  struct sigaction sa;
  lua_pushboolean(L, sig_valid(sig) && sigaction(sig, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN);
  return 1;
}

void signal_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"signal_check", l_signal_check},   {"signal_notify", l_signal_notify},
      {"signal_stop", l_signal_stop},     {"signal_ignore", l_signal_ignore},
      {"signal_reset", l_signal_reset},   {"signal_ignored", l_signal_ignored},
      {NULL, NULL},
  };
  luaL_register(L, NULL, funcs);
}
