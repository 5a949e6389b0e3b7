/*
 * netpoll.c — descriptors on the Ps' pollers, after Go's netpoll.go and
 * netpoll_epoll.go.
 *
 * Invariants:
 *   - Each P has an epoll instance (epfd) of its own, and sleeps in it
 *     (netpoll_block, Go's netpoll(delay)): a sleeping P wakes when one of
 *     its descriptors is ready, when its earliest timer is due (the
 *     timeout), or when another thread writes its eventfd (netpoll_break).
 *     Descriptors are registered once, edge-triggered; only the P's holder
 *     harvests its epfd, any thread may add to or delete from it. While
 *     the P sleeps lendable (proc.c's busy mode) another M may hold it
 *     (lend_run), and never harvests it then: the eventfd's wake-up must
 *     reach the sleeper, or wake_pending stays set and no later break is
 *     written.
 *   - netpoll_break writes the eventfd only while the P polls (polling),
 *     and only the first since the P last woke (wake_pending): a P that
 *     is awake looks for work anyway. polling and wake_pending pair as a
 *     Dekker handshake (seq_cst): either the P sees wake_pending before it
 *     blocks, or the breaker sees polling and writes.
 *   - A pollDesc's lock guards its waiters, holders, deadlines, owner and
 *     fd. An epoll event carries the pollDesc and its seq: the harvest
 *     locks the pollDesc and drops the event if seq has moved on (the
 *     descriptor was closed, or moved to another P's epfd).
 *   - Every wake-up means "try again": a woken G retries its syscall and
 *     rechecks close, deadline and context. Spurious wake-ups are harmless;
 *     a lost one is a bug. A G parks only if the side's gen, read before
 *     its syscall said EAGAIN, has not moved since.
 *   - A parked G holds its pollDesc's lock until the scheduler has parked
 *     it (gopark's unlockf), so a waker finds it G_WAITING.
 *   - pollDescs are type-stable: freed ones go back to rt->pd_free and are
 *     released only when the runtime is. Timers and stale events may lock
 *     a pollDesc at any time.
 *   - A descriptor is closed exactly once: by pd_close when no op is in a
 *     syscall on it, else by the op that leaves last (nops), or by pd_free.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "qsbr.h"
#include "rt.h"

const char net_err_closed[] = "use of closed network connection";
const char net_err_timeout[] = "i/o timeout";

/* The tag of an epoll event: the pollDesc's address with its seq in the
 * top 16 bits, which user-space addresses leave free. WAKE_TAG, which no
 * pollDesc has, is the P's eventfd. */
#define WAKE_TAG 0
static uint64_t pd_tag(polldesc *pd) { return (uint64_t)(uintptr_t)pd | ((uint64_t)pd->seq << 48); }
static polldesc *tag_pd(uint64_t tag) { return (polldesc *)(uintptr_t)(tag & ((1ULL << 48) - 1)); }
static uint16_t tag_seq(uint64_t tag) { return (uint16_t)(tag >> 48); }

static void deadline_fire(p_t *pp, rt_timer *t, int64_t now);
static void retry_fire(p_t *pp, rt_timer *t, int64_t now);

polldesc *pd_alloc(runtime *rt, int fd, polldesc *hub) {
  rt_lock(&rt->pd_lock);
  polldesc *pd = rt->pd_free;
  if (pd) {
    rt->pd_free = pd->next;
  } else {
    pd = rt_calloc(1, sizeof *pd);
    if (((uintptr_t)pd >> 48) != 0) rt_throw("runtime: pollDesc address above 2^48");
    pd->allnext = rt->pd_all;
    rt->pd_all = pd;
    for (int m = 0; m < 2; m++) {
      pd->side[m].timer.idx = -1;
      pd->side[m].timer.f = deadline_fire;
      pd->side[m].timer.arg = pd;
    }
    pd->retry.idx = -1;
    pd->retry.f = retry_fire;
    pd->retry.arg = pd;
  }
  rt_unlock(&rt->pd_lock);
  rt_lock(&pd->lock);
  pd->rt = rt;
  pd->fd = fd;
  pd->closing = false;
  pd->is_hub = fd < 0;
  pd->owner = NULL;
  pd->nops = 0;
  pd->hub = hub;
  pd->socks = NULL;
  pd->nsocks = 0;
  for (int m = 0; m < 2; m++) {
    pd->side[m].holder = NULL;
    pd->side[m].deadline = 0;
    atomic_store(&pd->side[m].drained, atomic_load(&pd->side[m].gen) - 1); /* maybe ready */
    atomic_store(&pd->side[m].hup, false);
  }
  rt_unlock(&pd->lock);
  return pd;
}

void pd_register(polldesc *pd, p_t *pp) {
  rt_lock(&pd->lock);
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u64 = pd_tag(pd)};
  if (pd->hub) ev.events = EPOLLIN | EPOLLET;
  if (epoll_ctl(pp->epfd, EPOLL_CTL_ADD, pd->fd, &ev) == 0) {
    pd->owner = pp;
    atomic_fetch_add(&pp->nfds, 1);
  }
  rt_unlock(&pd->lock);
}

/* pd->lock held: take fd out of its P's epfd; events already harvested for
 * it are stale from here on. */
static void pd_unregister(polldesc *pd) {
  pd->seq++;
  if (!pd->owner) return;
  if (pd->fd >= 0) epoll_ctl(pd->owner->epfd, EPOLL_CTL_DEL, pd->fd, NULL);
  atomic_fetch_sub(&pd->owner->nfds, 1);
  pd->owner = NULL;
}

/* pd->lock held. A hub has no descriptor: its sockets close with it. */
static void pd_close_fd(polldesc *pd) {
  if (pd->is_hub) {
    for (int32_t i = 0; i < pd->nsocks; i++) {
      polldesc *sock = pd->socks[i];
      rt_lock(&sock->lock);
      sock->closing = true;
      pd_close_fd(sock);
      rt_unlock(&sock->lock);
    }
    pd->nsocks = 0;
    return;
  }
  if (pd->fd < 0) return;
  pd_unregister(pd);
  close(pd->fd);
  pd->fd = -1;
}

/* pd->lock held: ready every G parked on the side. */
static void side_wake(runtime *rt, pdside *s) {
  netwait *nw;
  while ((nw = s->head)) {
    s->head = nw->next;
    nw->queued = false;
    nw->next = nw->prev = NULL;
    atomic_fetch_sub(&rt->npollwait, 1);
    goready(nw->g);
  }
  s->tail = NULL;
}

static void side_unlink(runtime *rt, pdside *s, netwait *nw) {
  if (!nw->queued) return;
  if (nw->prev) nw->prev->next = nw->next;
  else s->head = nw->next;
  if (nw->next) nw->next->prev = nw->prev;
  else s->tail = nw->prev;
  nw->next = nw->prev = NULL;
  nw->queued = false;
  atomic_fetch_sub(&rt->npollwait, 1);
}

void pd_free(runtime *rt, polldesc *pd) {
  for (int m = 0; m < 2; m++) timer_del(&pd->side[m].timer);
  timer_del(&pd->retry);
  rt_lock(&pd->lock);
  pd_close_fd(pd);
  pd->seq++;
  pd->closing = true;
  pd->hub = NULL;
  for (int m = 0; m < 2; m++) side_wake(rt, &pd->side[m]); /* none: nobody holds the object */
  rt_unlock(&pd->lock);
  rt_lock(&rt->pd_lock);
  pd->next = rt->pd_free;
  rt->pd_free = pd;
  rt_unlock(&rt->pd_lock);
}

bool pd_close(polldesc *pd) {
  rt_lock(&pd->lock);
  if (pd->closing) {
    rt_unlock(&pd->lock);
    return false;
  }
  pd->closing = true;
  for (int m = 0; m < 2; m++) side_wake(pd->rt, &pd->side[m]);
  if (pd->nops == 0) pd_close_fd(pd);
  rt_unlock(&pd->lock);
  return true;
}

/* ---- deadlines ---- */

static void deadline_fire(p_t *pp, rt_timer *t, int64_t now) {
  polldesc *pd = t->arg;
  rt_lock(&pd->lock);
  for (int m = 0; m < 2; m++) {
    pdside *s = &pd->side[m];
    if (s->deadline != 0 && s->deadline <= now) side_wake(pp->rt, s);
  }
  rt_unlock(&pd->lock);
}

static void retry_fire(p_t *pp, rt_timer *t, int64_t now) {
  (void)now;
  polldesc *pd = t->arg;
  rt_lock(&pd->lock);
  side_wake(pp->rt, &pd->side[MODE_READ]);
  rt_unlock(&pd->lock);
}

/* when: monotonic ns, 0 to clear. A deadline already past fails pending
 * and future ops at once; a later one arms a timer on this P. */
void pd_set_deadline(polldesc *pd, int mode, int64_t when) {
  p_t *pp = getp();
  rt_lock(&pd->lock);
  pdside *s = &pd->side[mode];
  s->deadline = when;
  timer_del(&s->timer);
  if (when != 0 && when <= nanotime()) side_wake(pd->rt, s);
  else if (when != 0) timer_add(pp, &s->timer, when);
  rt_unlock(&pd->lock);
}

static bool expired(pdside *s) { return s->deadline != 0 && s->deadline <= nanotime(); }

/* ---- harvesting ---- */

/* A listener socket is ready: wake the acceptors of this P if it has any,
 * else every acceptor. */
static void hub_wake(p_t *pp, polldesc *hub) {
  rt_lock(&hub->lock);
  pdside *s = &hub->side[MODE_READ];
  bool local = false;
  for (netwait *nw = s->head; nw && !local; nw = nw->next) local = atomic_load(&nw->g->p) == pp;
  for (netwait *nw = s->head; nw;) {
    netwait *next = nw->next;
    if (!local || atomic_load(&nw->g->p) == pp) {
      side_unlink(pp->rt, s, nw);
      goready(nw->g);
    }
    nw = next;
  }
  rt_unlock(&hub->lock);
}

/* Ready the Gs of the n events harvested from pp's epfd. */
static void netpoll_ready(p_t *pp, struct epoll_event *evs, int n) {
  /* a descriptor of ours is talking: findrunnable keeps polling a while */
  if (n > 1 || evs[0].data.u64 != WAKE_TAG) pp->io_ns = nanotime();
  for (int i = 0; i < n; i++) {
    if (evs[i].data.u64 == WAKE_TAG) {
      uint64_t count;
      ssize_t r = read(pp->wakefd, &count, sizeof count); /* level-triggered: reset it */
      (void)r;
      continue;
    }
    polldesc *pd = tag_pd(evs[i].data.u64);
    uint32_t ev = evs[i].events;
    rt_lock(&pd->lock);
    if (pd->seq != tag_seq(evs[i].data.u64) || pd->owner != pp) {
      rt_unlock(&pd->lock);
      continue;
    }
    polldesc *hub = pd->hub;
    if (hub) {
      atomic_fetch_add(&pd->side[MODE_READ].gen, 1);
      atomic_fetch_add(&hub->side[MODE_READ].gen, 1);
      rt_unlock(&pd->lock);
      hub_wake(pp, hub); /* type-stable: waking a stale hub is a spurious wake-up */
      continue;
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
      /* A recv returns data before the end of stream or an error that
       * came with it: once one was reported, a short read proves nothing. */
      if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) atomic_store(&pd->side[MODE_READ].hup, true);
      atomic_fetch_add(&pd->side[MODE_READ].gen, 1);
      side_wake(pp->rt, &pd->side[MODE_READ]);
    }
    if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
      atomic_fetch_add(&pd->side[MODE_WRITE].gen, 1);
      side_wake(pp->rt, &pd->side[MODE_WRITE]);
    }
    rt_unlock(&pd->lock);
  }
}

/* pp is polling now: sysmon need not ask it to (pollreq, lastpoll_ns). */
static void polled(p_t *pp) {
  atomic_store_explicit(&pp->pollreq, false, memory_order_relaxed);
  atomic_store_explicit(&pp->lastpoll_ns, nanotime(), memory_order_relaxed);
}

int netpoll(p_t *pp) {
  struct epoll_event evs[128];
  polled(pp);
  int n = epoll_wait(pp->epfd, evs, 128, 0);
  if (n <= 0) return 0;
  netpoll_ready(pp, evs, n);
  return n;
}

void netpoll_block(p_t *pp, bool lendable) {
  struct epoll_event evs[128];
  int n = 0;
  atomic_store(&pp->polling, true);
  if (!atomic_exchange(&pp->wake_pending, false)) {
    /* epoll_pwait2 takes nanoseconds: epoll_wait's milliseconds made
     * every short sleep up to a millisecond late */
    int64_t when = atomic_load_explicit(&pp->timer0when, memory_order_acquire);
    if (qsbr_waiting(pp)) { /* come back within a millisecond to free what the others have passed */
      int64_t soon = nanotime() + 1000000;
      if (!when || when > soon) when = soon;
    }
    struct timespec ts, *tsp = NULL;
    if (when) {
      int64_t d = when - nanotime();
      if (d < 0) d = 0;
      ts.tv_sec = (time_t)(d / 1000000000);
      ts.tv_nsec = (long)(d % 1000000000);
      tsp = &ts;
    }
    /* Lendable, the sleeping P is anyone's (proc.c's lend_run): a G
     * readied here runs on the thread of an idle M at once, instead of
     * waiting for this one to get a CPU back (on a busy machine,
     * milliseconds). Nothing below touches the P until it is ours again. */
    if (lendable) p_lend_open(pp);
#ifdef __SANITIZE_THREAD__
    /* ThreadSanitizer (GCC 12) intercepts epoll_wait but not epoll_pwait2,
     * so it would miss the ordering epoll_ctl -> wait gives a new
     * pollDesc, and report a race on its lock */
    n = -1;
    errno = ENOSYS;
#else
    n = epoll_pwait2(pp->epfd, evs, 128, tsp, NULL);
#endif
    if (n < 0 && errno == ENOSYS) { /* a kernel before 5.11: milliseconds, rounded up */
      int64_t ms = tsp ? ((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + 999999) / 1000000 : -1;
      n = epoll_wait(pp->epfd, evs, 128, ms > INT32_MAX ? INT32_MAX : (int)ms);
    }
    if (lendable) p_take_back(pp);
  }
  atomic_store(&pp->polling, false);
  atomic_store(&pp->wake_pending, false); /* the caller looks for work from here on */
  polled(pp);
  if (n > 0) netpoll_ready(pp, evs, n);
}

void netpoll_break(p_t *pp) {
  if (atomic_exchange(&pp->wake_pending, true)) return; /* a break is on its way */
  if (atomic_load(&pp->polling)) {
    uint64_t one = 1;
    ssize_t r = write(pp->wakefd, &one, sizeof one);
    (void)r; /* EAGAIN only when the count is huge: the P wakes anyway */
  }
}

void netpoll_p_init(p_t *pp) {
  pp->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (pp->epfd < 0) rt_throw("runtime: epoll_create1: %d", errno);
  pp->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (pp->wakefd < 0) rt_throw("runtime: eventfd: %d", errno);
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = WAKE_TAG};
  if (epoll_ctl(pp->epfd, EPOLL_CTL_ADD, pp->wakefd, &ev) < 0) rt_throw("runtime: epoll_ctl: %d", errno);
}

void netpoll_p_close(p_t *pp) {
  close(pp->wakefd);
  close(pp->epfd);
  rt_free(pp->netbuf);
  for (netwait *nw = pp->netwaitfree; nw;) {
    netwait *next = nw->next;
    rt_free(nw);
    nw = next;
  }
}

void netpoll_free(runtime *rt) {
  for (polldesc *pd = rt->pd_all; pd;) {
    polldesc *next = pd->allnext;
    if (pd->fd >= 0) close(pd->fd);
    rt_free(pd);
    pd = next;
  }
}

/* ---- the steps of an op ---- */

static void nw_fire(ctx_node *n, context **release) {
  (void)release;
  netwait *nw = (netwait *)((char *)n - offsetof(netwait, cn));
  atomic_store(&nw->fired, true);
  polldesc *pd = nw->pd;
  rt_lock(&pd->lock);
  if (nw->queued) {
    side_unlink(pd->rt, &pd->side[nw->mode], nw);
    goready(nw->g);
  }
  rt_unlock(&pd->lock);
}

static netwait *nw_get(p_t *pp, g_t *gp, polldesc *pd, int mode) {
  netwait *nw = pp->netwaitfree;
  if (nw) pp->netwaitfree = nw->next;
  else nw = rt_malloc(sizeof *nw);
  *nw = (netwait){.g = gp, .pd = pd, .mode = mode, .cn = {.fire = nw_fire}};
  gp->live->op = OP_NET;
  gp->live->nw = nw;
  return nw;
}

/* The op is over: leave the context, back to the cache. */
static void nw_put(p_t *pp, g_t *gp) {
  netwait *nw = gp->live->nw;
  if (!nw) return;
  ctx_unwatch(&nw->cn);
  pp->net_progress = nw->progress;
  gp->live->nw = NULL;
  gp->live->op = OP_NONE;
  nw->next = pp->netwaitfree;
  pp->netwaitfree = nw;
}

void netwait_cancel(p_t *pp, g_t *gp) {
  netwait *nw = gp->live->nw;
  if (!nw) return;
  polldesc *pd = nw->pd;
  rt_lock(&pd->lock);
  side_unlink(pp->rt, &pd->side[nw->mode], nw);
  for (int m = 0; m < 2; m++)
    if (pd->side[m].holder == gp) pd->side[m].holder = NULL;
  rt_unlock(&pd->lock);
  nw_put(pp, gp);
}

/* op_error's answer when the op's context was cancelled: its text is read
 * once pd->lock is released, since the context's lock is taken before
 * pd->lock when a cancellation wakes the op (nw_fire), never after. */
static const char ctx_fired[] = "";

/* pd->lock held: why the op cannot go on, or NULL. */
static const char *op_error(polldesc *pd, int mode, netwait *nw) {
  if (pd->closing) return net_err_closed;
  if (expired(&pd->side[mode])) return net_err_timeout;
  if (atomic_load(&nw->fired)) return ctx_fired;
  return NULL;
}

/* pd->lock released: the text of op_error's answer. */
static const char *op_error_text(const char *why, netwait *nw) {
  return why == ctx_fired ? ctx_err_string(nw->cn.ctx) : why;
}

static void pd_unlock_f(g_t *gp) { rt_unlock(&gp->live->nw->pd->lock); }

/* pd->lock held: park the G on the side; the lock is released once it is
 * parked. A connection whose waiters are all on this P moves to its epfd,
 * so that its events come here first. */
static int park(p_t *pp, g_t *gp, polldesc *pd, int mode, netwait *nw) {
  pdside *s = &pd->side[mode];
  if (!pd->is_hub && !pd->hub && pd->owner && pd->owner != pp && !pd->side[0].head && !pd->side[1].head &&
      pd->fd >= 0) {
    pd_unregister(pd);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u64 = pd_tag(pd)};
    if (epoll_ctl(pp->epfd, EPOLL_CTL_ADD, pd->fd, &ev) == 0) {
      pd->owner = pp;
      atomic_fetch_add(&pp->nfds, 1);
    }
  }
  nw->next = NULL;
  nw->prev = s->tail;
  if (s->tail) s->tail->next = nw;
  else s->head = nw;
  s->tail = nw;
  nw->queued = true;
  atomic_fetch_add(&pp->rt->npollwait, 1);
  gopark(gp, pd_unlock_f, WR_IO_WAIT);
  return NET_PARK;
}

int net_begin(p_t *pp, g_t *gp, polldesc *pd, int mode, context *ctx, bool exclusive, uint32_t *gen,
              const char **err) {
  netwait *nw = gp->live->op == OP_NET ? gp->live->nw : NULL;
  if (!nw) {
    nw = nw_get(pp, gp, pd, mode);
    if (ctx && !ctx_watch(ctx, &nw->cn)) atomic_store(&nw->fired, true);
  }
  rt_lock(&pd->lock);
  pdside *s = &pd->side[mode];
  const char *why = op_error(pd, mode, nw);
  if (why) {
    if (exclusive && s->holder == gp) {
      s->holder = NULL;
      side_wake(pp->rt, s);
    }
    rt_unlock(&pd->lock);
    *err = op_error_text(why, nw);
    nw_put(pp, gp);
    return NET_ERR;
  }
  if (exclusive && s->holder && s->holder != gp) return park(pp, gp, pd, mode, nw);
  if (exclusive) s->holder = gp;
  pd->nops++;
  *gen = atomic_load(&s->gen);
  rt_unlock(&pd->lock);
  return NET_GO;
}

/* pd->lock held: leave a syscall; close the descriptor if we were the
 * last op of a closed one. */
static void op_leave(polldesc *pd) {
  if (--pd->nops == 0 && pd->closing) pd_close_fd(pd);
}

int net_again(p_t *pp, g_t *gp, polldesc *pd, int mode, uint32_t *gen, bool park_always, const char **err) {
  netwait *nw = gp->live->nw;
  rt_lock(&pd->lock);
  op_leave(pd);
  pdside *s = &pd->side[mode];
  const char *why = op_error(pd, mode, nw);
  if (why) {
    if (s->holder == gp) {
      s->holder = NULL;
      side_wake(pp->rt, s);
    }
    rt_unlock(&pd->lock);
    *err = op_error_text(why, nw);
    nw_put(pp, gp);
    return NET_ERR;
  }
  if (!park_always && atomic_load(&s->gen) != *gen) { /* an event came while we tried */
    *gen = atomic_load(&s->gen);
    pd->nops++;
    rt_unlock(&pd->lock);
    return NET_GO;
  }
  return park(pp, gp, pd, mode, nw);
}

void net_end(p_t *pp, g_t *gp, polldesc *pd, int mode, bool exclusive) {
  rt_lock(&pd->lock);
  op_leave(pd);
  pdside *s = &pd->side[mode];
  if (exclusive && s->holder == gp) {
    s->holder = NULL;
    if (s->head) side_wake(pp->rt, s); /* the next op's turn */
  }
  rt_unlock(&pd->lock);
  nw_put(pp, gp);
}

int net_park_yield(lua_State *L, g_t *gp) { return rt_park_yield(L, gp, SHAPE_NONE); }
