/*
 * rt.h — the runtime's internal types, shared by every file in runtime/.
 *
 * Ownership, as in Go's runtime2.go:
 *   - A G (goroutine) belongs to one P for its whole life: its coroutine lives
 *     in that P's VM. Only the thread holding the P resumes it, reads its Lua
 *     stack or touches its value boxes.
 *   - A P owns its VM, run queue, timer heap, caches (G, sudog, box, coroutine
 *     pools) and epoll poller. The thread that holds the P is the only one that
 *     touches them, save for the run queue (stolen from with atomics), the
 *     inbox (its own lock) and the timer heap (its own lock).
 *   - Runtime objects (channels, mutexes, ...) are reference counted and
 *     guarded by their own lock; any thread may operate on them.
 *
 * Values never cross into C: a Lua value that waits anywhere in the runtime
 * (in a channel buffer, with a parked sender, delivered to a parked receiver)
 * sits in its VM's `vals` table at an integer index, its box. C moves box
 * numbers; Lua code in lua/lugo/ stores and loads the values.
 */
#ifndef LUGO_RT_H
#define LUGO_RT_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <lua.h>

#include "lugo.h"


typedef struct runtime runtime;
typedef struct p p_t;
typedef struct m m_t;
typedef struct g g_t;
typedef struct sudog sudog;
typedef struct hchan hchan;
typedef struct rt_timer rt_timer;
typedef struct rt_object rt_object;
typedef struct rt_blob rt_blob;
typedef struct rt_job rt_job;
typedef struct polldesc polldesc;
typedef struct netwait netwait;
typedef struct context context;
typedef struct gsite gsite;

/* qsbr.c: what one thread (a P, or sysmon) retired, waiting to be freed. */
typedef struct qsbr_list {
  struct qsbr_batch *pending;    /* retired since the last report, newest first */
  struct qsbr_batch *head, *tail; /* stamped, oldest first */
  uint32_t nretired;
  bool freeing;
} qsbr_list;

/* ---- lock_futex.c: a three-state futex lock, Go's lock_futex.go ---- */

typedef struct rtlock {
  _Atomic uint32_t key; /* 0 unlocked, 1 locked, 2 locked with sleepers */
} rtlock;

/* Add d to a counter that one thread alone writes (a P's holder) and
 * others only read: a load and a store, not a locked add. */
static inline void owned_add(_Atomic int32_t *v, int32_t d) {
  atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + d, memory_order_relaxed);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* A fence. ThreadSanitizer (GCC 12) refuses atomic_thread_fence; there
 * it is an RMW on a word of qsbr.c's, a full barrier it understands. */
#ifdef __SANITIZE_THREAD__
extern _Atomic int rt_fence_word;
#define rt_fence(order) ((void)(order), (void)atomic_fetch_add(&rt_fence_word, 0))
#else
#define rt_fence(order) atomic_thread_fence(order)
#endif

void rt_lock_slow(rtlock *l);
void rt_unlock_wake(rtlock *l);

static inline void rt_lock(rtlock *l) {
  uint32_t unlocked = 0;
  if (!atomic_compare_exchange_strong_explicit(&l->key, &unlocked, 1, memory_order_acquire,
                                               memory_order_relaxed))
    rt_lock_slow(l);
}

static inline void rt_unlock(rtlock *l) {
  if (atomic_exchange_explicit(&l->key, 0, memory_order_release) == 2) rt_unlock_wake(l);
}

/* Crash with Go's "fatal error: ..." for a broken runtime invariant. */
_Noreturn void rt_throw(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- malloc.c ---- */

void *rt_malloc(size_t n);         /* never NULL: throws when out of memory */
void *rt_calloc(size_t n, size_t size);
void *rt_realloc(void *ptr, size_t n);
void rt_free(void *ptr);
void *rt_vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize); /* lua_Alloc */
void *rt_vm_arena_new(void);       /* the allocator state of one VM (ud above) */
void rt_vm_arena_free(void *arena);
size_t rt_vm_arena_allocated(void *arena);

/* ---- object.c: reference-counted runtime objects and their proxies ---- */

enum rt_type {
  RT_CHAN = 1,
  RT_MUTEX,
  RT_RWMUTEX,
  RT_WAITGROUP,
  RT_ONCE,
  RT_COND,
  RT_TIMER,
  RT_CONTEXT,
  RT_LISTENER,
  RT_CONN,
  RT_MAP,
  RT_ATOMIC_INT,   /* atomic.c */
  RT_ATOMIC_VALUE, /* atomic.c */
  RT_POOL,         /* atomic.c */
  RT_NTYPES
};

struct rt_object {
  _Atomic int32_t refs;
  uint16_t type;
};

/* The payload of every proxy userdata; FFI functions receive a pointer to it. */
typedef struct proxy {
  rt_object *obj;
} proxy;

void rt_object_init(rt_object *o, enum rt_type type);
static inline void rt_retain(rt_object *o) { atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed); }
void rt_release(rt_object *o);
/* A reference taken through a pointer that holds none (a weak one, such as
 * a timer heap's): false, and nothing taken, once the count has reached 0,
 * when the object is being freed. The free path must unlink the weak
 * pointer under the lock that the caller holds while it tries. */
static inline bool rt_tryretain(rt_object *o) {
  int32_t n = atomic_load_explicit(&o->refs, memory_order_relaxed);
  while (n > 0)
    if (atomic_compare_exchange_weak_explicit(&o->refs, &n, n + 1, memory_order_relaxed, memory_order_relaxed))
      return true;
  return false;
}
/* Drop a reference without freeing: true if it was the last, and the
 * caller frees o itself (a chain of objects freed in a loop, not by
 * recursion). */
bool rt_release_last(rt_object *o);
const char *rt_type_name(enum rt_type type); /* "channel", "mutex", ... */
const char *rt_type_mt(enum rt_type type);   /* registry key of its metatable */
/* [-0, +1, m] push the proxy of o in L's VM (one proxy per object per VM). */
void rt_push_object(lua_State *L, rt_object *o);
/* [-0, +0, -] the object behind the proxy at idx, if it is one of type t. */
rt_object *rt_to_object(lua_State *L, int idx, enum rt_type t);
/* [-0, +0, -] the object behind the proxy at idx, of any type, or NULL. */
rt_object *rt_to_any_object(lua_State *L, int idx);
void rt_objects_open(lua_State *L); /* metatables and the proxy cache of a VM */

/* ---- proc.c: G, M, P, the scheduler ---- */

enum gstatus {
  G_IDLE,     /* in a free list */
  G_RUNNABLE, /* in a run queue, not running */
  G_RUNNING,  /* its coroutine is being resumed */
  G_WAITING,  /* parked: a sudog, a timer or a semaphore will ready it */
  G_DEAD,
};

enum waitreason {
  WR_NONE,
  WR_CHAN_RECEIVE,
  WR_CHAN_SEND,
  WR_SELECT,
  WR_SELECT_NO_CASES,
  WR_SLEEP,
  WR_SYNC_MUTEX_LOCK,
  WR_SYNC_RWMUTEX_RLOCK,
  WR_SYNC_RWMUTEX_LOCK,
  WR_SYNC_WAITGROUP_WAIT,
  WR_SYNC_COND_WAIT,
  WR_SYSCALL, /* a call in the blocking pool */
  WR_IO_WAIT, /* a descriptor: readiness, a deadline, a context, its turn */
  WR_FOREVER, /* an op that can never complete: exit(), a dead select */
};
const char *rt_waitreason_string(enum waitreason r);

/* What the scheduler hands a G when it resumes it: (box, ok, index). */
enum result_kind {
  RES_NONE,      /* resume with (0, true, 0) */
  RES_VALUE,     /* (res_box, res_ok, res_idx) */
  RES_TOPYIELD,  /* the user called coroutine.yield at the G's top level */
};

/* What a parked op returns when its G is resumed (pushed by the scheduler
 * as the results of the C function that yielded). */
enum res_shape {
  SHAPE_NONE,   /* () */
  SHAPE_OK,     /* (ok): a send, false if the channel was closed */
  SHAPE_RECV,   /* (box, ok): the box of the value, to load at once */
  SHAPE_RECV_VALUE, /* (value, ok) for a scalar, (nil, ok, box) for a box, (ERR, message) */
  SHAPE_SELECT, /* (case index, box, ok) */
  SHAPE_JOB,    /* whatever the blocking pool's job pushes */
};

/* What a parking G asked for, read by the scheduler after its yield. */
enum park_kind {
  PARK_NONE,
  PARK_WAIT,  /* G_RUNNING -> G_WAITING, then unlockf */
  PARK_YIELD, /* gosched: back to the global queue */
  PARK_LOCAL, /* goyield: back to the tail of the local queue */
};

/* Lua-visible codes returned by FFI functions and, after the ERR marker,
 * by the blocking C API functions; boxes are > 0. */
enum {
  RC_OK = 0,
  RC_WOULDBLOCK = -1,
  RC_PARK = -2,         /* the G is set to park: yield PARK now */
  RC_CLOSED = -3,       /* send on closed channel / close of closed channel */
  RC_NOGOROUTINE = -4,  /* blocking outside any goroutine */
  RC_NOTYIELDABLE = -5, /* blocking inside a coroutine resumed from C */
  RC_NEGATIVE = -6,     /* sync: negative WaitGroup counter */
  RC_MISUSE = -7,       /* sync: WaitGroup misuse */
  RC_UNLOCKED = -8,     /* unlock of unlocked mutex */
  RC_YIELD = -9,        /* done, and the caller should yield its P (handoff) */
  RC_REUSED = -10,      /* WaitGroup is reused before previous Wait has returned */
  RC_SHARED = -11,      /* a shared channel: values must be copied, use the C API */
  RC_DECODE = -12,      /* a copy is waiting in the P (pending): take it with the C API */
  RC_RECVONLY = -13,    /* send on, or close of, a receive-only channel (a context's done) */
  RC_PREEMPT = -14,     /* nothing done: the G's time slice is over, yield (preempt_yield) and call again */
  RC_VAL_NIL = -20,     /* a copied scalar came back inline: nil, false, true, *num */
  RC_VAL_FALSE = -21,
  RC_VAL_TRUE = -22,
  RC_VAL_NUM = -23,
};
/* A box number ORed with this means "store the value, then park". */
#define RC_PARKBOX 0x40000000

struct rt_timer {
  int64_t when;   /* monotonic ns; the heap key */
  int64_t period; /* ns; > 0 for a timer the heap itself re-arms */
  uint64_t seq;   /* insertion order: equal `when`s fire first-in first-out */
  int32_t idx;    /* index in its P's heap, -1 when not armed */
  bool weak;      /* ref is not held by the heap: see time.c */
  p_t *p;         /* the P whose heap it was last pushed to */
  void (*f)(p_t *pp, rt_timer *t, int64_t now); /* runs on that P, heap unlocked */
  void *arg;      /* f's: an object, a sleeping G, a pollDesc */
  rt_object *ref; /* the object whose lifetime the heap slot must respect, or NULL */
};

/* A G waiting in a queue: a channel's, a semaphore's or a notify list's. */
struct sudog {
  g_t *g;
  sudog *next, *prev; /* in the queue it waits in */
  union {             /* what it waits on, as `on` says */
    hchan *c;         /* no reference: the parked G's stack holds the proxy */
    struct sema *sema;
    struct notifylist *nl;
  };
  sudog *waitlink; /* g->live->waiting, in lock order */
  union {          /* a sender's value, copied: a scalar, or on a shared channel (copykind) */
    double copynum;
    rt_blob *copyblob;
  };
  int32_t box;     /* a sender's value in its own VM, on a local channel; else 0 */
  union {
    int32_t case_idx; /* select case (1-based), 0 for a plain op */
    uint32_t ticket;  /* semaphore handoff / notify list ticket */
  };
  uint8_t on;       /* enum sudog_on */
  uint8_t copykind; /* enum copy_kind */
  bool is_select, is_send;
  /* Written under the channel's lock; a woken select reads it for its
   * other sudogs while a sender may still be dequeuing them. */
  _Atomic bool inqueue;
  bool success; /* the op completed with a value, not with the close */
};

enum sudog_on { ON_NONE, ON_CHAN, ON_SEMA, ON_NOTIFYLIST };
static inline bool sudog_inqueue(sudog *sd) { return atomic_load_explicit(&sd->inqueue, memory_order_relaxed); }
static inline void sudog_set_inqueue(sudog *sd, bool q) { atomic_store_explicit(&sd->inqueue, q, memory_order_relaxed); }

/* What the G is blocked in (or between the steps of, for a lock loop). */
enum live_op { OP_NONE, OP_CHAN, OP_SEMA, OP_SLEEP, OP_SYSCALL, OP_NET };

/* What only a started G needs, pooled per P: bound when the G first runs,
 * released when it returns, so that a million goroutines waiting to start
 * cost a million small g_t, not a million of these. 64 bytes. */
typedef struct g_live {
  union {
    g_t *g;
    struct g_live *next; /* in the P's free list */
  };
  lua_State *co;
  union {
    void (*unlockf)(g_t *gp); /* from gopark until the scheduler has parked the G */
    double res_copynum;       /* then: a value copied from another VM, for the */
    rt_blob *res_copyblob;    /* next resume (g->res_copykind says which) */
  };
  uint8_t op;               /* enum live_op */
  bool mu_starving, mu_awoke; /* sync.Mutex lockSlow state kept across parks */
  _Atomic uint32_t selectdone;
  int32_t nonyield; /* user coroutine resumes from a non-yieldable context */
  union {
    sudog *waiting; /* OP_CHAN: the sudogs of a channel op or select, in lock order */
    struct {        /* OP_SEMA, and a lock loop between its steps */
      sudog *sd;
      int64_t waitstart;
      uint32_t ticket; /* sync.Cond.Wait's place in the notify list */
    } sema;
    rt_timer *sleep; /* OP_SLEEP */
    rt_job *job;     /* OP_SYSCALL */
    netwait *nw;     /* OP_NET: from the first call of a descriptor op to its end */
  };
} g_live;

struct g {
  _Atomic int64_t goid; /* sysmon may read it while the G struct is reused */
  _Atomic uint8_t status; /* enum gstatus; changes only through casgstatus */
  uint8_t waitreason;
  uint8_t parking;   /* enum park_kind, set by the op, consumed by the scheduler */
  uint8_t res_kind;  /* enum result_kind, for the next resume */
  uint8_t res_shape; /* enum res_shape, set by the op that parked */
  bool res_ok;
  bool preempted; /* yielded from the preemption hook: resume it as it was */
  uint8_t res_copykind; /* a value copied from another VM: live->res_copy* */
  p_t *_Atomic p; /* owner P: the VM holding its coroutine; NULL for a spawned G
                    * not started yet, which any P may take (and then owns) */
  g_live *live;   /* once started */
  union {
    struct { int32_t start_box, nargs; }; /* until started: f (or {f, args...}) */
    rt_blob *start_blob;                  /* spawned, until started: f and its args */
    struct { int32_t res_box, res_idx; }; /* once started: the next resume's results */
  };
  g_t *schedlink;         /* run queue, inbox, free list */
  g_t *allnext, *allprev; /* the P's list of live Gs */
  const gsite *site;      /* the go or spawn call that made it (NULL for main) */
  int64_t parent;         /* the goid of the G that made it */
};

/* A value copied for another VM: scalars inline, anything else encoded. */
enum copy_kind { COPY_NONE, COPY_NIL, COPY_FALSE, COPY_TRUE, COPY_NUM, COPY_BLOB };

typedef struct rt_copy {
  uint8_t kind; /* enum copy_kind */
  union {
    double num;
    rt_blob *blob;
  };
} rt_copy;

/* A 256-slot ring plus runnext, as Go's p.runq: the owner puts and gets,
 * thieves (other Ps) take with CAS on head. The global queue holds only
 * spawned Gs that have not started: any P may run those. */
#define RUNQ_SIZE 256

/* A P's cache of creation sites (traceback.c), looked up without a lock. */
#define SITE_CACHE 64
typedef struct site_cache_entry {
  const char *source; /* the chunk name's address, a hint checked by content */
  int line;
  const gsite *site;
} site_cache_entry;

/* A VM's value boxes (value.c): numbers 1..next, each live or free. The
 * P's thread alone touches this; other threads free through remote_dirty. */
typedef struct box_pool {
  uint8_t *flags;  /* flags[box]: BOX_LIVE, BOX_DIRTY, BOX_LISTED (slot 0 unused) */
  uint64_t *free0; /* bit box: free; the lowest goes first */
  uint64_t *free1, *free2; /* bit w: word w of the level below has a bit set */
  int32_t *dirty;  /* free boxes whose vals slot may still hold a value, once each */
  int32_t nfree, ndirty;
  int32_t lo0, lo2; /* no word of free0 (free2) below this one has a bit set */
  int32_t next;    /* the highest box number in use or free */
  int32_t cap;     /* every array has room for boxes 1..cap */
  int32_t hw;      /* how many boxes vals may have room for: the most live since its last rehash */
  uint32_t seq;    /* makes the keys that force a rehash of vals fresh each time */
} box_pool;

/* Fewer free boxes than this are never worth a trim: below it (a quarter
 * of a megabyte of vals), shrinking costs more than it saves when the next
 * burst of goroutines or values grows it back. */
#define BOX_TRIM_MIN 32768

enum pstatus {
  P_RUNNING, /* its M runs the scheduler (or spins looking for work) */
  P_IDLE,    /* its M sleeps in the P's loop */
  P_WAKING,  /* woken by wakep to spin: counted in nmspinning */
};

struct m {
  p_t *p;
  int32_t id;
};

struct p {
  int32_t id;
  _Atomic uint32_t status; /* enum pstatus */
  runtime *rt;
  m_t m;            /* the thread that runs this P */
  pthread_t thread; /* the M's: P0's is lugo_run's caller; P1.. are started by lugo_run, joined at its end */
  bool thread_running;
  /* The M's thread may be signalled (SIGURG): cleared by the M under
   * rt->signal_lock before it returns, so that sysmon never signals a
   * thread that is gone. */
  bool signalable;
  bool spinning;    /* counted in rt->nmspinning */
  lua_State *L;    /* the VM's main thread: the scheduler's own stack */
  bool own_vm;     /* L was made by us, to be closed at exit */
  void *_Atomic arena; /* the VM's allocator: set when the VM is made, read by memstats from any P */
  int vals_ref;    /* registry refs of the VM's tables */
  int cos_ref;     /* {[1] = cos}, cos[thread] = true: anchors every pooled coroutine */
  int32_t ncos, cos_peak; /* coroutines in cos; the most since cos was made */
  int trampoline_ref;
  int protect_ref, errfn_ref; /* sched_protected's function and handler */
  lua_State *copool_new;      /* the coroutine copool_get just made */
  g_t *_Atomic curg; /* the G being resumed; sysmon reads the pointer, never the G */
  _Atomic int64_t curgoid; /* its goid, for sysmon's reports: 0 when none */
  bool preempt;      /* sysmon asked the running G to yield */
  bool yielded;      /* the last G yielded its slice: look at the global queue first */
  bool scheduling;   /* its M is in schedule(): Lua code without a G is a finalizer */
  volatile sig_atomic_t sethook_busy; /* the P's thread is in lua_sethook: SIGURG leaves it alone */
  lua_Hook user_hook; /* the script's hook, saved while preemption borrows the slot */
  int user_hookmask, user_hookcount;
  _Atomic int64_t hog;  /* goid sysmon reported as unpreemptible: print its stack */
  _Atomic int32_t dump; /* SIGQUIT: enum dump_state, who writes this P's goroutines */
  char *dump_text;      /* what the P wrote at a safe point (DUMP_DONE) */
  _Atomic bool freeze, frozen; /* SIGQUIT: the P's thread stops in the signal handler, for good */
  _Atomic uint32_t schedtick; /* one more per time slice; sysmon preempts on it */
  _Atomic uint32_t nexec;     /* one more per G resumed; sysmon reports hogs on it */
  _Atomic int64_t lastpoll_ns; /* nanotime of the last netpoll */
  _Atomic bool pollreq;        /* sysmon: the last poll is too old, poll at the next schedule */
  uint64_t rand;   /* fastrand state */

  _Atomic uint32_t runqhead, runqtail;
  g_t *_Atomic runq[RUNQ_SIZE];
  g_t *_Atomic runnext;
  /* A spawned G not started yet, to run as soon as its spawner blocks (as
   * Go's newproc uses runnext); thieves may take it (exchange or CAS) once
   * spawn_hold has passed */
  g_t *_Atomic spawnnext;
  /* Where a full ring spills, and gosched goes: the owner's alone. Go
   * spills into the global queue, but these Gs are bound to this VM. */
  g_t *overflow_head, *overflow_tail;
  _Atomic int32_t noverflow; /* sysmon reads it for schedtrace */

  rtlock inbox_lock; /* guards inbox */
  g_t *inbox_head, *inbox_tail;
  _Atomic bool inbox_pending; /* set after a put, cleared by the owner's drain */
  int64_t inbox_wait_ns; /* proc.c: how long an idle M now waits for its inbox (adaptive); its own */
  int64_t spin_ns;       /* proc.c: how long it now spins for anyone's work (adaptive); its own */
  /* proc.c: until when thieves leave the Gs this P spawned to it, so that
   * a spawner that blocks at once runs them itself; written by the owner */
  _Atomic int64_t spawn_hold;
  /* proc.c: who may run the P. HOLD_OWN: its own M (the rule). HOLD_IDLE:
   * its M is between two looks of its idle wait, or asleep lendable (busy
   * mode), and another idle M may take the P (HOLD_LENT, lent_to = that
   * M's P) to run one of its Gs, when idle_beat says its M has not been on
   * a CPU for LEND_STALE_NS (0: at once). The M takes it back (HOLD_IDLE ->
   * HOLD_OWN) before touching anything. */
  _Alignas(64) _Atomic uint32_t hold; /* a line of their own: idle Ms read them every look */
  p_t *_Atomic lent_to;
  _Atomic int64_t idle_beat;
  /* The CPU its M was on at its last look (idle wait, wake-up): an idle M
   * on the same CPU as the runner of a busy P yields to it (cpu_shared). */
  _Atomic int32_t cpu;
  /* Another M has run one of its Gs (lend_run) since its M fell asleep,
   * lendable (busy mode): a G readied here defers the wake-up
   * (wake_deferred, since sysmon's deferred_tick) to an M that runs it
   * instead; the sleeper is woken only if no one did within a sysmon tick
   * (proc.c). */
  _Atomic bool carried;
  _Atomic bool wake_deferred;
  _Atomic uint32_t deferred_tick;
  bool lending; /* proc.c: its M's last look ran another P's G; its own */
  _Alignas(64) int64_t io_ns; /* netpoll.c: when a poll last found one of its descriptors ready; its own */

  int epfd;        /* netpoll: the descriptors this P polls, edge-triggered */
  int wakefd;      /* netpoll: an eventfd in epfd that breaks the P's sleep */
  _Atomic bool polling;     /* the P is in, or about to enter, a blocking epoll_wait */
  _Atomic bool wake_pending; /* netpoll_break since the P last woke */
  _Atomic int32_t nfds; /* descriptors registered with epfd */
  char *netbuf;    /* scratch for reads: a connection keeps no buffer while idle */
  char http_date[32]; /* http.c: the Date header of this second */
  int64_t http_date_sec;
  size_t net_progress; /* the last descriptor op's progress (a write's bytes) */

  rtlock timers_lock; /* guards the heap below */
  rt_timer **timers;
  int32_t ntimers, timerscap;
  uint64_t timerseq;
  _Atomic int64_t timer0when; /* heap top's when, 0 if empty */

  g_t *gfree; /* caches */
  int32_t ngfree;
  int64_t goidcache, goidcacheend; /* goids this P hands out before taking more from goidgen */
  /* Gs made here minus Gs ended here (either may be negative: a spawned G
   * may end on another P): only the owner writes it; the count of
   * goroutines is rt->ngoroutines plus every P's */
  _Atomic int32_t ngo;
  g_live *livefree;
  rt_timer *timerfree; /* time.sleep's timers */
  sudog *sudogcache;
  netwait *netwaitfree;
  box_pool boxes;
  rt_copy pending; /* a copy an FFI receive took, for the C API to decode */
  rtlock remote_lock; /* guards remote_dirty: boxes freed by other threads */
  int32_t *remote_dirty;
  _Atomic int32_t nremote_dirty; /* peeked without the lock */
  int32_t remote_dirtycap;
  lua_State **copool; /* idle coroutines, parked in the trampoline */
  int32_t ncopool, copoolcap;

  g_t *allg; /* live Gs of this P, for tracebacks */
  int32_t nallg;
  site_cache_entry sites[SITE_CACHE];

  /* qsbr.c: the epoch this P last reported quiescent at (QS_IDLE while it
   * sleeps), read by the others; the rest is the P's own */
  _Atomic uint64_t qs;
  uint64_t qs_seen;
  qsbr_list qsl;
  uint32_t qs_ticks;
  uint32_t qs_reading; /* in a decode of what a lock-free read found: not quiescent */
};

/* A blocking call: run() on a pool thread, then push() its results on the
 * waiting G's P, then free(). */
struct rt_job {
  void (*run)(rt_job *job);
  int (*push)(lua_State *L, rt_job *job);
  void (*free)(rt_job *job);
  g_t *g;
  rt_job *next;
};

typedef struct syscall_pool {
  pthread_mutex_t lock; /* guards everything below */
  pthread_cond_t cond;
  rt_job *head, *tail;
  int nthreads, nidle, nqueued;
  bool stopping;
} syscall_pool;

struct runtime {
  p_t **allp;
  int32_t gomaxprocs;

  rtlock sched_lock; /* guards the global run queue and Ps going idle */
  g_t *runq_head, *runq_tail;
  _Atomic int32_t runqsize; /* written under sched_lock, peeked without */
  _Atomic int32_t npidle;      /* Ps whose M sleeps */
  _Atomic int32_t ndeferred;   /* Ps with wake_deferred set (proc.c) */
  _Atomic uint32_t sysmon_tick; /* sysmon's looks so far: a clock for deferred wake-ups */
  _Atomic bool busy;           /* proc.c: busy mode (Ms off their CPUs) ... */
  _Atomic int64_t busy_until;  /* ... until then (sysmon ends it) */
  _Atomic int64_t busy_gap0;   /* proc.c, busy_gap: the window of gaps counted */
  _Atomic int32_t busy_gaps;
  _Atomic int32_t nmspinning;  /* Ms looking for work without sleeping */
  _Atomic int32_t nblocking;   /* calls in flight in the blocking pool */
  _Atomic int32_t nunstarted;  /* spawned Gs no P has started: all a P can take from others */
  _Atomic int64_t spawn_hold;  /* the latest P spawn_hold: spinning Ms wait for it to pass */

  _Atomic int64_t goidgen;
  _Atomic uint64_t map_seed; /* map.c: the process's hash seed, 0 until the first map */
  rtlock unmap_lock;          /* map.c: guards unmap_head */
  struct map_unmap *unmap_head; /* map.c: bucket memory sysmon gives back */
  rtlock ttl_lock;              /* map.c: guards ttl_maps and its links */
  struct smap *ttl_maps;        /* map.c: maps with ttls, a ring sysmon sweeps from here */
  _Atomic uint64_t qsbr_epoch;  /* qsbr.c: moved on by a P that waits to free */
  qsbr_list sysmon_qsl;         /* qsbr.c: what sysmon retired (its own) */
  _Atomic int32_t ngoroutines; /* live Gs less every P's ngo: what no P counted (teardown) */
  g_t *maing; /* the main goroutine, while it runs */
  bool main_done;
  _Atomic int32_t exiting; /* an exit was requested: stop scheduling */
  int exit_code;
  _Atomic int64_t exit_deadline; /* nanotime by which the process ends, whatever still runs */
  _Atomic bool sysmon_quit;      /* every M has stopped: sysmon may end */
  rtlock signal_lock; /* guards the Ps' signalable: sysmon signals under it */
  pthread_mutex_t dump_lock; /* one live goroutine dump at a time (goroutine_dump) */
  bool adopted_vm; /* P0's VM belongs to an embedder (lugo.main in luajit) */
  pthread_t sysmon;
  bool sysmon_running;
  int64_t schedtrace_ns; /* LUGO_DEBUG=schedtrace=MS */
  int64_t lend_stale_ns; /* proc.c, lend_run: LUGO_DEBUG=lendstale=US */
  int64_t busy_gap_ns;   /* proc.c, busy_mode: LUGO_DEBUG=busygap=US */
  syscall_pool pool;
  _Atomic int32_t npollwait; /* Gs parked in netpoll: the program is not deadlocked */
  rtlock pd_lock;            /* guards pd_free */
  polldesc *pd_free;         /* pollDescs are never freed while the runtime lives */
  polldesc *pd_all;          /* every pollDesc, to free at the end */
  context *background, *todo; /* made once, on first use */
  rtlock sig_lock;             /* guards sig: sigqueue.c */
  struct sigtab *sig;          /* os.signal's registrations, made on first use */
  _Atomic int32_t nsigchans;   /* channels registered for signals: the program is not deadlocked */
};

/* The M running on this thread, as Go's getg().m. The one piece of per-thread
 * state: FFI functions find their P and G through it. */
extern _Thread_local m_t *rt_tls_m;
/* While this thread runs another M's P (lend_run): its own P; else NULL. */
extern _Thread_local p_t *rt_tls_lender;

enum p_hold { HOLD_OWN, HOLD_IDLE, HOLD_LENT };

/* The thread to signal about pp's running G: its M's, or the one it is lent to. */
static inline pthread_t p_runner_thread(p_t *pp) {
  p_t *lender = atomic_load(&pp->lent_to);
  return lender ? lender->thread : pp->thread;
}

static inline p_t *getp(void) { return rt_tls_m ? rt_tls_m->p : NULL; }
static inline g_t *getg(void) {
  p_t *pp = getp();
  return pp ? atomic_load_explicit(&pp->curg, memory_order_relaxed) : NULL;
}

void casgstatus(g_t *gp, enum gstatus from, enum gstatus to);
int32_t gcount(runtime *rt); /* live goroutines, as runtime.NumGoroutine */
int32_t rt_numcpu(void);     /* CPUs in the affinity mask, as runtime.NumCPU */
uint32_t fastrand(p_t *pp);
int64_t nanotime(void);
double walltime(void);

/* Ask to park the current G: the scheduler moves it to G_WAITING after its
 * coroutine has yielded, then calls unlockf(gp, arg) (may be NULL). */
void gopark(g_t *gp, void (*unlockf)(g_t *), enum waitreason reason);
/* Make a parked G runnable, from any thread. */
void goready(g_t *gp);
/* Start a G whose body is in box `start_box` of pp's VM. */
g_t *newproc(p_t *pp, int32_t start_box, int32_t nargs);

sudog *acquire_sudog(p_t *pp, g_t *gp);
void release_sudog(p_t *pp, sudog *sd);

/* value.c's box pool. box_alloc: the caller stores into vals[box] before
 * anything else runs on this P (the slot may hold a freed box's value). */
int32_t box_alloc(p_t *pp);
void box_free(p_t *pp, int32_t box);       /* the value was already cleared */
void box_free_dirty(p_t *pp, int32_t box); /* vals[box] is cleared later; any thread */
/* On pp's thread, outside any Lua call: clear the dirty boxes, fold in the
 * ones other threads freed, and shrink the pool and vals after a burst. */
void boxes_clean(p_t *pp);
void boxes_destroy(p_t *pp); /* the pool's memory, with the P */
/* Over three quarters of the box numbers are free: a burst is over. */
static inline bool boxes_sparse(const box_pool *b) {
  return b->nfree > BOX_TRIM_MIN && b->nfree > 3 * (b->next - b->nfree);
}
/* Whether boxes_clean has work: cheap enough for every schedule. */
static inline bool boxes_untidy(p_t *pp) {
  return pp->boxes.ndirty || atomic_load_explicit(&pp->nremote_dirty, memory_order_relaxed) ||
         boxes_sparse(&pp->boxes);
}
/* [-0, +0, m] resize the table at idx to the keys it holds (value.c). */
void rt_table_rehash(lua_State *L, int idx, uint32_t *seq);

/* The P's VM, created the first time it is needed (on the P's thread). */
void p_vm(p_t *pp);
/* Start a spawned G: its body and arguments are in blob (n values). */
g_t *newproc_spawn(runtime *rt, rt_blob *blob, const gsite *site, bool spread);
/* New work any P could run appeared: make sure an M is looking for it. */
void wakep(runtime *rt);

/* runq (exported for the C unit tests) */
void runqput(p_t *pp, g_t *gp, bool next);
g_t *runqget(p_t *pp, bool *inherit_time);
bool runqempty(p_t *pp);
uint32_t runqlen(p_t *pp);
void globrunqput(runtime *rt, g_t *gp);
g_t *globrunqget(p_t *pp, int32_t max);
void overflowput(p_t *pp, g_t *gp);
g_t *overflowget(p_t *pp);
/* Take up to half of victim's ring into pp's, from its head, while they are
 * spawned Gs not started yet; returns one of them. */
g_t *runqsteal(p_t *pp, p_t *victim);

/* ---- chan.c ---- */

typedef struct waitq {
  sudog *first, *last;
} waitq;

/* A value in flight on a channel. A local channel carries boxes of its
 * owner's VM, and scalars inline (copy, box 0). A shared channel carries
 * copies only (box 0), for every receiver. A value may come with both (a
 * timer's, box in VM vm): the taker uses the copy and frees the box. */
typedef struct val {
  rt_copy copy;
  int32_t box;
  int32_t vm;
} val;

struct hchan {
  rt_object obj;
  /* False while only the owner VM holds the channel: then only the owner's
   * thread touches it and the lock is skipped. Set, once, by the owner's
   * thread before the channel is handed to another VM (value.c), so every
   * later op by anyone locks. */
  _Atomic bool shared;
  rtlock lock; /* guards every field below, once shared */
  uint32_t qcount, dataqsiz, sendx, recvx;
  val *buf;     /* ring of values, dataqsiz long */
  p_t *owner;   /* the VM holding the buffered boxes */
  bool closed;
  bool recv_only; /* set before the channel is published: Lua may not send or close */
  bool sharing;   /* chan_share is copying its values (owner's thread) */
  waitq recvq, sendq;
  struct chantimer *timer; /* a Timer's, Ticker's, after's or tick's: owned (time.c) */
  context *ctx;  /* a context's done channel: holds a reference to it (context.c) */
};

/* A timer's channel? Read through recv_only, which every timer channel is
 * and which sits with the fields every op reads anyway: the timer pointer
 * lives on the channel's cold end (a line more per op slowed contended
 * channels by a third). */
static inline bool chan_has_timer(const hchan *c) { return c->recv_only && c->timer; }

static inline void chan_lock(hchan *c) {
  if (atomic_load_explicit(&c->shared, memory_order_relaxed)) rt_lock(&c->lock);
}
static inline void chan_unlock(hchan *c) {
  if (atomic_load_explicit(&c->shared, memory_order_relaxed)) rt_unlock(&c->lock);
}

hchan *chan_make(p_t *owner, uint32_t size);
int32_t chan_close(proxy *px); /* RC_OK, RC_CLOSED, or RC_RECVONLY */
bool closechan(hchan *c);      /* the runtime's own close: false if closed already */
void chan_free(hchan *c);
void waitq_enqueue(waitq *q, sudog *sd);
sudog *waitq_dequeue(waitq *q);
void waitq_remove(waitq *q, sudog *sd);
/* Non-blocking send of v by the runtime (a timer's tick), c locked.
 * Returns false (v untouched) when nobody can take it now. */
bool chan_offer(hchan *c, val v);
/* Receive and drop everything buffered (Timer.Stop/Reset), c locked;
 * true if there was anything. */
bool chan_drain(hchan *c);
/* Give v to receiver sd (c locked) and ready it: a box of sd's VM, or a
 * copy (the other part of v is freed). ok false: woken by close. */
void chan_deliver(hchan *c, sudog *sd, val *v, bool ok); /* v: NULL when nothing is delivered */
/* A receiver in pp takes sender sd's value (c locked). */
void recv_from_sender_locked(hchan *c, sudog *sd, val *v);
/* The part of *v a receiver in pp uses: its box (returned), or its copy
 * (left in v->copy, returning 0); the other part is freed. */
int32_t val_take(p_t *pp, val *v);
void val_free(runtime *rt, val v); /* a value nobody will take */
void sudog_free_copy(sudog *sd);
/* The box holding a value taken in pp: box itself, or, for a copy (which is
 * freed), a new box it is decoded into; -1 with an error message pushed if
 * it cannot be decoded. vals: the stack index of pp's vals. */
int32_t take_box(lua_State *L, p_t *pp, int32_t box, rt_copy copy, int vals);
/* Make a channel shared before it crosses into another VM (on the thread
 * holding its owner's VM, L): its buffered and waiting values get copies.
 * Returns -1 with an error message on L's stack if one cannot be copied. */
int chan_share(hchan *c, lua_State *L);

/* ---- select.c ---- */
enum { CASE_NIL = 0, CASE_RECV = 1, CASE_SEND = 2 };

typedef struct select_case { /* filled by Lua through the FFI */
  proxy *c;                    /* NULL: a nil channel or the default */
  int32_t kind;                /* CASE_* */
  int32_t box;                 /* out: where a send case's value goes */
  rt_copy copy;                /* a send case's copy, for a shared channel */
} select_case;

typedef struct select_result {
  int32_t idx; /* chosen case, 1-based */
  int32_t box; /* recv: box to load now (0: nil); send: box to store into */
  int32_t ok;
  rt_copy copy; /* recv: or a copy to decode */
} select_result;

int32_t selectgo(select_case *cases, int32_t n, select_result *res);
/* After a woken G's op: leave the queues it still waits in, drop its sudogs. */
void selectgo_finish(p_t *pp, g_t *gp);

/* ---- time.c ---- */
/* A wall-clock time (seconds since the epoch) as a monotonic deadline in
 * ns; never 0, so 0 can mean "none". */
int64_t wall_to_mono(double wall);
void timer_add(p_t *pp, rt_timer *t, int64_t when);
bool timer_del(rt_timer *t);
/* Armed at `when`: moved within the heap it is in, else pushed on pp's.
 * Whoever owns t serializes its arms and dels (the fire path only pops). */
void timer_arm(p_t *pp, rt_timer *t, int64_t when);
/* Run every timer due by `now`; returns the next when (0 if none). */
int64_t timers_run(p_t *pp, int64_t now);
void timers_close(p_t *pp);
void sleep_cancel(p_t *pp, g_t *gp); /* a sleeping G that is destroyed */
/* timer heap, exported for the C unit tests */
void timerheap_push(p_t *pp, rt_timer *t);
void timerheap_remove(p_t *pp, int32_t i);
/* A channel's timer (hchan.timer). With the channel locked: deliver a
 * value that is due (before any look at the channel that does not block),
 * and give the timer a heap slot exactly while a receiver waits (after a
 * receiver parks or leaves). */
void chantimer_run(hchan *c);
void chantimer_sync(hchan *c);
void chantimer_free(struct chantimer *tm); /* from chan_free */

/* ---- sema.c ---- */
typedef struct sema {
  _Atomic uint32_t count;
  _Atomic uint32_t nwait;
  rtlock lock; /* guards the queue */
  sudog *head, *tail;
} sema;

typedef struct notifylist {
  _Atomic uint32_t wait; /* next ticket to hand out */
  _Atomic uint32_t notify; /* next ticket to notify; written under lock */
  rtlock lock;
  sudog *head, *tail;
} notifylist;

/* Step of semacquire: RC_OK acquired, RC_PARK the G is set to park.
 * `resumed` is true on the call that follows the wake-up. */
int semacquire_step(sema *s, bool lifo, enum waitreason reason, bool resumed);
/* Returns RC_YIELD when handoff asks the caller to yield to the waiter. */
int semrelease(sema *s, bool handoff);
uint32_t notifylist_add(notifylist *l);
int notifylist_wait_step(notifylist *l, uint32_t ticket, bool resumed);
void notifylist_notify_one(notifylist *l);
void notifylist_notify_all(notifylist *l);
/* A G that is destroyed while parked on a semaphore leaves its queue. */
void sema_cancel(sudog *sd);

/* Is the running G's time slice over? Every runtime call that may block
 * is a preemption point: it yields first when sysmon has asked, even if it
 * could go on, so that a loop of runtime calls (compiled code that never
 * runs the preemption hook) cannot hold its P. pp: getp(), may be NULL. */
static inline bool preempt_pending(p_t *pp) {
  return pp && __atomic_load_n(&pp->preempt, __ATOMIC_RELAXED);
}

/* proc.c entry points used by module.c and the blocking C API functions */
extern const char rt_mark_park, rt_mark_exit, rt_mark_topyield, rt_mark_err;
/* RC_OK if the running G (on L) may park: it exists, and L can yield all
 * the way up to the scheduler. */
int32_t rt_can_block(lua_State *L, g_t *gp);
/* [-0, +0] after gopark: yield PARK; the scheduler's results come back as
 * this C function's results, shaped as `shape` says. */
int rt_park_yield(lua_State *L, g_t *gp, enum res_shape shape);
/* [-0, +2] return (ERR, message) from a blocking C API function that
 * cannot park (code RC_NOGOROUTINE or RC_NOTYIELDABLE). */
int rt_push_err(lua_State *L, int32_t code);
/* [-1, +2] return (ERR, message) with the message on top of the stack. */
int rt_push_msg_err(lua_State *L);
runtime *rt_adopt(lua_State *L); /* a runtime whose P0 runs in an embedder's VM */
void rt_exit_request(runtime *rt, int code);
/* The realtime clock's time by which an exit stops waiting for threads. */
void rt_exit_deadline(runtime *rt, struct timespec *ts);
/* Flush stdout and stderr (unless a stuck thread holds them) and _exit. */
_Noreturn void rt_exit_now(int code);
void rt_handle_signal(int sig, void (*fn)(int)); /* with SA_RESTART */
void rt_gosched(g_t *gp);
void rt_goyield(g_t *gp);
void rt_push_stack(lua_State *L, p_t *pp, g_t *self, bool all);

/* ---- traceback.c ---- */
typedef struct tbuf { /* a growing C string */
  char *p;
  size_t len, cap;
} tbuf;
void tb_init(tbuf *b);
void tb_free(tbuf *b);
void tb_printf(tbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tb_puts(tbuf *b, const char *s, size_t n);
void tb_grow(tbuf *b, size_t n); /* room for n more bytes */
const char *tb_str(tbuf *b);
/* Frames of co from level on, one "\t...\n" line each, as luaL_traceback
 * words them, without the runtime's own frames. Reads co only. */
void tb_frames(tbuf *b, lua_State *co, int level);
/* "goroutine N [state]:\n", its frames (co NULL: not started), "created by". */
void tb_goroutine(tbuf *b, g_t *gp, lua_State *co, int level, const char *state);
void tb_created_by(tbuf *b, g_t *gp);
/* The call at `level` of L, which is making a goroutine (interned). */
const gsite *tb_site(p_t *pp, lua_State *L, int level);
int tb_debug_traceback(lua_State *L); /* C API: debug.traceback */
/* [-0, +1] the panic report of an error that killed co. */
void tb_push_dead_panic(lua_State *L, g_t *gp, lua_State *co);

/* ---- preempt.c ---- */
void preempt_install(void);        /* the SIGURG handler, before sysmon starts */
void preempt_request(p_t *pp);     /* from sysmon: make the running G yield */
/* SIGQUIT's dump: sysmon asks each P to write its goroutines at a safe
 * point (ASKED -> BUSY -> DONE, on the P's thread); from a P that does not
 * get there in time (compiled code, a C call) it takes them itself
 * (ASKED -> TAKEN) after freezing the P's thread. */
enum dump_state { DUMP_NONE, DUMP_ASKED, DUMP_BUSY, DUMP_DONE, DUMP_TAKEN };
void preempt_dump_request(p_t *pp); /* from sysmon: write this P's Gs at a safe point */
void preempt_freeze(p_t *pp);      /* from sysmon: stop pp's thread where it is, for good */
bool preempt_poll(p_t *pp);        /* on pp's thread between Gs: a dump is due */
/* Write pp's goroutines to b: the running one (on L, NULL if none) first.
 * compiled: the running G did not reach a safe point (a frozen P). */
void dump_p_goroutines(tbuf *b, p_t *pp, lua_State *L, g_t *running, bool compiled);
const char *rt_gstate(g_t *gp);     /* "chan receive", "runnable", ... */
void rt_tb_parked(tbuf *b, g_t *gp); /* the block of a G that is not running */
extern rtlock rt_print_lock;

/* ---- proc.c: sysmon ---- */
void sysmon_start(runtime *rt);
void sysmon_stop(runtime *rt);

/* ---- syscall.c ---- */
/* [-0, +0] park the G until the pool has run job (owned from here on). */
int syscall_block(lua_State *L, rt_job *job);
/* C API goroutine_dump() -> every goroutine of every P, as SIGQUIT prints them, without stopping */
int rt_goroutine_dump(lua_State *L);
int rt_sched_stats(lua_State *L); /* C API sched_stats() -> schedtrace's figures */
int syscall_results(lua_State *co, g_t *gp); /* [-0, +n on co] on resume */
void syscall_pool_init(runtime *rt);
void syscall_pool_stop(runtime *rt); /* wait for running calls, drop queued ones */
void syscall_pool_free(runtime *rt);

/* ---- netpoll.c ---- */
enum { MODE_READ = 0, MODE_WRITE = 1 };

/* A G's registration with a context: fire() runs, with the context's lock
 * held, when the context is cancelled. (A child context's node is the
 * same, but context.c cancels children after that lock, from a worklist.) */
typedef struct ctx_node {
  void (*fire)(struct ctx_node *n, context **release); /* release: NULL, unused */
  struct ctx_node *next, *prev;
  context *ctx; /* the context it watches (held by the watcher) */
  bool linked;  /* in ctx's list: guarded by ctx's lock */
} ctx_node;

/* A G in a descriptor op (pollDesc side `mode`) from its first call to its
 * end: queued on the side while parked, and watching the op's context. */
struct netwait {
  g_t *g;
  netwait *next, *prev; /* on pd->side[mode], under pd->lock */
  polldesc *pd;
  int mode;
  bool queued;
  _Atomic bool fired; /* the context was cancelled: the op returns its error */
  size_t progress;    /* the op's own: bytes written so far, ... */
  ctx_node cn;
};

typedef struct pdside {
  _Atomic uint32_t gen;     /* bumped by every readiness event */
  _Atomic uint32_t drained; /* gen when accept last said EAGAIN, or a read came back short */
  _Atomic bool hup;         /* read side: an event said end of stream or error (net_op_recv) */
  netwait *head, *tail;     /* parked Gs: each retries when woken */
  g_t *holder;              /* the G whose op owns this side, as Go's fdMutex */
  int64_t deadline;         /* monotonic ns, 0 for none */
  rt_timer timer;           /* fires at deadline */
} pdside;

/* Go's pollDesc: one per descriptor. Type-stable: never freed while the
 * runtime lives, so a stale epoll event or timer can always lock it; its
 * seq, in every epoll event's tag, tells a stale event from a live one. */
struct polldesc {
  rtlock lock; /* guards every field but the sides' gen and drained */
  runtime *rt;
  int fd;      /* -1 once closed */
  uint16_t seq;
  bool closing;
  bool is_hub;  /* a listener's: no descriptor, its sockets' events wake it */
  p_t *owner;   /* whose epfd holds fd, NULL if none */
  int32_t nops; /* syscalls on fd in progress: the last one closes a closing fd */
  polldesc *hub; /* a listener socket: the hub its events wake */
  polldesc **socks; /* a hub: its listener's sockets, closed with it */
  int32_t nsocks;
  pdside side[2];
  rt_timer retry; /* a listener hub's accept back-off */
  polldesc *next, *allnext;
};

polldesc *pd_alloc(runtime *rt, int fd, polldesc *hub);
void pd_register(polldesc *pd, p_t *pp); /* add fd to pp's epfd */
void pd_free(runtime *rt, polldesc *pd);  /* close fd if open; back to the cache */
/* Close: wake every waiter; fd is closed now or by the last op in a syscall.
 * False if it was closed already. */
bool pd_close(polldesc *pd);
void pd_set_deadline(polldesc *pd, int mode, int64_t when);
int netpoll(p_t *pp); /* non-blocking: ready the Gs whose descriptors are ready */
/* Sleep until a descriptor is ready, the heap's earliest timer is due, or
 * netpoll_break; then ready the Gs as netpoll does. lendable: another M
 * may run the P's Gs meanwhile (proc.c's busy mode). */
void netpoll_block(p_t *pp, bool lendable);
/* proc.c: pp is anyone's to run, stale at once, until p_take_back (its M
 * sleeps, lendable). */
void p_lend_open(p_t *pp);
bool p_take_back(p_t *pp);
void netpoll_break(p_t *pp); /* from any thread: end pp's netpoll_block, or the next one */
void netpoll_p_init(p_t *pp);
void netpoll_p_close(p_t *pp);
void netpoll_free(runtime *rt);
void netwait_cancel(p_t *pp, g_t *gp); /* a parked G that is destroyed */

enum net_step { NET_GO, NET_PARK, NET_ERR };
/* The steps of a descriptor op by the running G, Go's prepareRead/waitRead
 * with the fdMutex: begin takes the side (holder) and counts a syscall;
 * again, after EAGAIN, either says go (an event came meanwhile) or parks;
 * end releases. NET_ERR: *err says why (closed, timeout, the context's),
 * and the op is over. exclusive: one op at a time on the side. */
int net_begin(p_t *pp, g_t *gp, polldesc *pd, int mode, context *ctx, bool exclusive, uint32_t *gen,
              const char **err);
int net_again(p_t *pp, g_t *gp, polldesc *pd, int mode, uint32_t *gen, bool park_always, const char **err);
void net_end(p_t *pp, g_t *gp, polldesc *pd, int mode, bool exclusive);
/* [-0, +0] yield after NET_PARK */
int net_park_yield(lua_State *L, g_t *gp);
extern const char net_err_closed[], net_err_timeout[];

/* ---- context.c ---- */
/* Watch ctx: false (and n unlinked) if it is done already. */
bool ctx_watch(context *ctx, ctx_node *n);
void ctx_unwatch(ctx_node *n);
const char *ctx_err_string(context *ctx); /* NULL while not done */
void context_free(rt_object *o);
void ctx_done_free(hchan *done); /* from chan_free: a done channel goes */
/* [-0, +0 or +2] ctx is crossing to another VM (value.c, on the thread of
 * the VM that holds it): from now on its values are read as copies
 * everywhere. -1 if a key or value in its chain cannot be copied, with the
 * message pushed in two parts: the crossing point's path goes between. */
int ctx_share(context *ctx, lua_State *L);
void context_runtime_free(runtime *rt);
void context_open(lua_State *L); /* its C API into the lugo.core table on top */
/* ---- net.c ---- */
void net_open(lua_State *L);
void http_open(lua_State *L); /* http.c */

/* ---- map.c ---- */
void map_open(lua_State *L);
void map_object_free(rt_object *o);
/* sysmon, each tick, and the runtime's end: munmap what maps retired. */
void map_unmap_retired(runtime *rt);
/* sysmon, each tick: remove some expired entries of maps that have ttls. */
void map_sweep_expired(runtime *rt, int64_t now);

/* ---- sigqueue.c: os.signal ---- */
void sigqueue_deliver(runtime *rt); /* sysmon, every tick: relay the signals that came */
void sigqueue_free(runtime *rt);    /* lugo_close: registrations dropped, dispositions restored */
void signal_open(lua_State *L);     /* its C API into the lugo.core table on top */

/* ---- value.c ---- */
/* [-0, +0 or +1] encode n values from idx; NULL with a message pushed on
 * failure (`what` names them in it: "argument", "value"). */
rt_blob *value_encode(lua_State *L, int idx, int n, const char *what);
/* [-0, +0 or +1] value_encode of spawn's arguments: "argument #i" even
 * when there is one. */
rt_blob *value_encode_args(lua_State *L, int idx, int n);
/* [-0, +n, e] push the values of b (b stays valid). */
int value_decode(lua_State *L, const rt_blob *b);
/* A blob of one string, made without a VM (sigqueue.c's deliveries). */
rt_blob *blob_string(const char *s, size_t n);
/* [-0, +n or +1] value_decode in protected mode: the count, or -1 with a
 * message pushed. */
int value_decode_safe(lua_State *L, const rt_blob *b);
/* [-0, +0 or +1] the copy of the value at idx; COPY_NONE with a message
 * pushed if it cannot be copied. */
rt_copy copy_make(lua_State *L, int idx, const char *what);
/* [-0, +1 or +1] push the copy (freed); -1 with a message if it cannot be. */
int copy_push(lua_State *L, rt_copy c);
void copy_free(rt_copy *c);
int32_t blob_nvalues(const rt_blob *b);
size_t blob_bytes(const rt_blob *b); /* the memory it holds */
/* Same bytes and the same objects: equal strings, scalars, one runtime
 * object (identity); tables only if encoded alike. */
bool blob_equal(const rt_blob *a, const rt_blob *b);
void blob_free(rt_blob *b);
void value_vm_init(lua_State *L);
void value_names_changed(lua_State *L);

/* ---- atomic.c ---- */
void atomic_object_free(rt_object *o); /* an atomic.int, atomic.value or pool */
void atomic_open(lua_State *L);        /* its C API into the lugo.core table on top */

/* ---- print.c ---- */
/* [-0, +0] print with one write per call; adopted: keep a print the
 * script replaced. */
void print_open(lua_State *L, bool adopted);
/* SIGPIPE ends the process only for a broken stdout or stderr. */
void sigpipe_install(void);

/* ---- module.c: the lugo.core Lua module ---- */
int rt_vm_bind(p_t *pp, lua_State *L); /* install the runtime in a VM */
void rt_sched_protect_init(p_t *pp, lua_State *L); /* proc.c: before the scheduler runs Lua work */
void rt_vm_unbind(p_t *pp);

#endif
