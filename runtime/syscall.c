/*
 * syscall.c — the blocking pool: calls that may block the thread (file I/O,
 * name resolution) run on pool threads, so that no P ever sleeps in a
 * system call. Go hands its P off around such calls (entersyscall); lugo,
 * whose Gs are bound to a VM, parks the G instead and readies it through
 * its P's inbox when the call is done.
 *
 * Invariants:
 *   - pool.lock guards the queue, the thread count and `stopping`; a job is
 *     owned by the queue, then by one pool thread, then by its G's P.
 *   - A job's run() touches no VM; its push() runs on the G's P, which pushes
 *     the results as the return values of the C function that parked.
 *   - rt->nblocking counts jobs queued or running: while it is not zero the
 *     program is not deadlocked. It drops only after the G is readied.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <time.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "rt.h"

/* Threads are started as calls queue up: one blocked call (a FIFO nobody
 * writes to) must not hold up the others. */
#define POOL_MAX_THREADS 64

void syscall_pool_init(runtime *rt) {
  pthread_mutex_init(&rt->pool.lock, NULL);
  pthread_cond_init(&rt->pool.cond, NULL);
}

static void *pool_thread(void *arg) {
  runtime *rt = arg;
  syscall_pool *pool = &rt->pool;
  pthread_mutex_lock(&pool->lock);
  for (;;) {
    while (!pool->head && !pool->stopping) {
      pool->nidle++;
      pthread_cond_wait(&pool->cond, &pool->lock);
      pool->nidle--;
    }
    if (!pool->head) break;
    rt_job *job = pool->head;
    pool->head = job->next;
    if (!pool->head) pool->tail = NULL;
    pool->nqueued--;
    pthread_mutex_unlock(&pool->lock);
    job->run(job);
    goready(job->g); /* through its P's inbox */
    atomic_fetch_sub(&rt->nblocking, 1);
    pthread_mutex_lock(&pool->lock);
  }
  pool->nthreads--;
  pthread_cond_broadcast(&pool->cond);
  pthread_mutex_unlock(&pool->lock);
  return NULL;
}

static void job_unlock_f(g_t *gp) { pthread_mutex_unlock(&gp->p->rt->pool.lock); }

int syscall_block(lua_State *L, rt_job *job) {
  p_t *pp = getp();
  g_t *gp = getg();
  int32_t can = rt_can_block(L, gp);
  if (can != RC_OK) {
    job->free(job);
    return rt_push_err(L, can);
  }
  syscall_pool *pool = &pp->rt->pool;
  job->g = gp;
  job->next = NULL;
  atomic_fetch_add(&pp->rt->nblocking, 1);
  pthread_mutex_lock(&pool->lock);
  pool->stopping = false;
  if (pool->tail) pool->tail->next = job;
  else pool->head = job;
  pool->tail = job;
  pool->nqueued++;
  if (pool->nidle >= pool->nqueued) { /* an idle thread for every queued call */
    pthread_cond_signal(&pool->cond);
  } else if (pool->nthreads < POOL_MAX_THREADS) {
    pthread_t t;
    if (pthread_create(&t, NULL, pool_thread, pp->rt) == 0) {
      pthread_detach(t);
      pool->nthreads++;
    }
  }
  /* The pool may take the job before this G has yielded: the lock is held
   * until the scheduler has parked it (gopark's unlockf), so that goready
   * finds it waiting. */
  gp->live->op = OP_SYSCALL;
  gp->live->job = job;
  gopark(gp, job_unlock_f, WR_SYSCALL);
  return rt_park_yield(L, gp, SHAPE_JOB);
}

int syscall_results(lua_State *co, g_t *gp) {
  rt_job *job = gp->live->job;
  gp->live->job = NULL;
  gp->live->op = OP_NONE;
  int n = job->push(co, job);
  job->free(job);
  return n;
}

/* Let the pool threads finish; a call still blocked after 2 s (a read from
 * a terminal, say) is left behind and the process exits without freeing. */
void syscall_pool_stop(runtime *rt) {
  syscall_pool *pool = &rt->pool;
  pthread_mutex_lock(&pool->lock);
  pool->stopping = true;
  pthread_cond_broadcast(&pool->cond);
  struct timespec deadline; /* a call that does not end by then is not waited for */
  rt_exit_deadline(rt, &deadline);
  bool stuck = false;
  while (pool->nthreads > 0 && !stuck)
    stuck = pthread_cond_timedwait(&pool->cond, &pool->lock, &deadline) == ETIMEDOUT;
  /* Jobs nobody started: their Gs are about to be destroyed. */
  while (pool->head) {
    rt_job *job = pool->head;
    pool->head = job->next;
    pool->nqueued--;
    job->g->live->job = NULL;
    job->free(job);
    atomic_fetch_sub(&rt->nblocking, 1);
  }
  pool->tail = NULL;
  pthread_mutex_unlock(&pool->lock);
  if (stuck) rt_exit_now(rt->exit_code);
}

void syscall_pool_free(runtime *rt) {
  pthread_mutex_destroy(&rt->pool.lock);
  pthread_cond_destroy(&rt->pool.cond);
}

/* [-0, +2] nil and Go's text for an error of operation op on path. */
static int push_os_error(lua_State *L, const char *op, const char *path, size_t pathlen, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s", strerror(err));
  if (msg[0] >= 'A' && msg[0] <= 'Z') msg[0] = (char)(msg[0] - 'A' + 'a');
  lua_pushnil(L);
  lua_pushfstring(L, "%s ", op);
  lua_pushlstring(L, path, pathlen);
  lua_pushfstring(L, ": %s", msg);
  lua_concat(L, 3);
  return 2;
}

/* ---- os.read_file, os.write_file ---- */

typedef struct file_job {
  rt_job job;
  char *path;
  size_t pathlen;
  char *data;
  size_t len;
  int err;
  const char *op;
  bool write;
} file_job;

static void file_run(rt_job *j) {
  file_job *fj = (file_job *)j;
  if (fj->err) return; /* refused before it ran (a NUL in the path, as Go does) */
  if (fj->write) {
    int fd = open(fj->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
      fj->err = errno;
      fj->op = "open";
      return;
    }
    size_t done = 0;
    while (done < fj->len) {
      ssize_t w = write(fd, fj->data + done, fj->len - done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        fj->err = errno;
        fj->op = "write";
        break;
      }
      done += (size_t)w;
    }
    if (close(fd) != 0 && !fj->err) {
      fj->err = errno;
      fj->op = "close";
    }
    return;
  }
  int fd = open(fj->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    fj->err = errno;
    fj->op = "open";
    return;
  }
  size_t cap = 4096;
  fj->data = rt_malloc(cap);
  for (;;) {
    if (fj->len == cap) fj->data = rt_realloc(fj->data, cap *= 2);
    ssize_t r = read(fd, fj->data + fj->len, cap - fj->len);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      fj->err = errno;
      fj->op = "read";
      break;
    }
    if (r == 0) break;
    fj->len += (size_t)r;
  }
  close(fd);
}

static int file_push(lua_State *L, rt_job *j) {
  file_job *fj = (file_job *)j;
  if (fj->err) return push_os_error(L, fj->op, fj->path, fj->pathlen, fj->err);
  if (fj->write) lua_pushboolean(L, 1);
  else lua_pushlstring(L, fj->data, fj->len);
  return 1;
}

static void file_free(rt_job *j) {
  file_job *fj = (file_job *)j;
  rt_free(fj->path);
  rt_free(fj->data);
  rt_free(fj);
}

static file_job *file_job_new(lua_State *L, bool write) {
  size_t plen;
  const char *path = luaL_checklstring(L, 1, &plen);
  file_job *fj = rt_calloc(1, sizeof *fj);
  fj->job.run = file_run;
  fj->job.push = file_push;
  fj->job.free = file_free;
  fj->path = rt_malloc(plen + 1);
  memcpy(fj->path, path, plen + 1);
  fj->pathlen = plen;
  fj->write = write;
  if (strlen(path) != plen) {
    fj->err = EINVAL;
    fj->op = "open";
  }
  if (write) {
    const char *data = luaL_checklstring(L, 2, &fj->len);
    fj->data = rt_malloc(fj->len ? fj->len : 1);
    memcpy(fj->data, data, fj->len);
  }
  return fj;
}

/* C API read_file(path) -> data, or nil, err; (ERR, message) if it cannot park. */
int os_read_file(lua_State *L) { return syscall_block(L, &file_job_new(L, false)->job); }

/* C API write_file(path, data) -> true, or nil, err. */
int os_write_file(lua_State *L) { return syscall_block(L, &file_job_new(L, true)->job); }
