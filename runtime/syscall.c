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
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/openat2.h>

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

/* ---- os.stat, os.read_dir, os.read_range ----
 *
 * Each call is one job: the open, fstat, reads and close all happen on the
 * pool thread. With a root (os.open_root), the name is resolved beneath the
 * root directory as Go's os.Root does: openat2 with RESOLVE_BENEATH, so no
 * ".." and no symbolic link (absolute, or relative and climbing out) can
 * leave it, checked by the kernel at open time (no window between a check
 * and the open). Files are opened O_NONBLOCK: a FIFO or a device in a
 * served directory fails fast instead of holding a pool thread. */

enum { FS_STAT, FS_READ_DIR, FS_READ_RANGE };

/* errno values are positive: this one stands for Go's errPathEscapes. */
#define ERR_ESCAPES (-1)

typedef struct dir_ent {
  char *name;
  bool is_dir;
  int64_t size;
} dir_ent;

typedef struct fs_job {
  rt_job job;
  int kind;
  char *path, *root; /* root NULL: path as given */
  size_t pathlen;
  int err;
  const char *op;
  struct stat st;
  int64_t offset, length; /* FS_READ_RANGE */
  char *data;
  size_t len;
  dir_ent *ents; /* FS_READ_DIR */
  size_t nents, entcap;
} fs_job;

/* The fallback for kernels without openat2 (before 5.6, or a seccomp
 * filter that refuses it): resolve the root and the name, and open the
 * resolved name only if it is the root or inside it. The resolved name has
 * no links left to follow; a link swapped in between is the window openat2
 * does not have. Absolute links that stay inside are allowed here. */
static int open_beneath_realpath(const char *root, const char *name, int flags) {
  char *rroot = realpath(root, NULL);
  if (!rroot) return -1;
  size_t rl = strlen(rroot), nl = strlen(name);
  char *joined = rt_malloc(rl + nl + 2);
  memcpy(joined, rroot, rl);
  joined[rl] = '/';
  memcpy(joined + rl + 1, name, nl + 1);
  char *full = realpath(joined, NULL);
  rt_free(joined);
  int fd = -1, err = 0;
  if (!full) {
    err = errno;
  } else {
    bool inside = strcmp(rroot, "/") == 0 ||
                  (strncmp(full, rroot, rl) == 0 && (full[rl] == '\0' || full[rl] == '/'));
    if (!inside) err = EXDEV;
    else if ((fd = open(full, flags | O_CLOEXEC)) < 0) err = errno;
  }
  free(rroot); /* realpath's, from the C library's malloc */
  free(full);
  errno = err;
  return fd;
}

/* Open name beneath root; -1 with errno set (EXDEV: it would escape). */
static int open_beneath(const char *root, const char *name, int flags) {
  /* openat2 refuses an empty name, and an absolute one is an escape */
  if (name[0] == '\0') {
    errno = ENOENT;
    return -1;
  }
  int rfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (rfd < 0) return -1;
  struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC),
                         .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
  long fd;
  do fd = syscall(SYS_openat2, rfd, name, &how, sizeof how);
  while (fd < 0 && errno == EINTR);
  int err = errno;
  close(rfd);
  if (fd < 0 && err == ENOSYS) return open_beneath_realpath(root, name, flags);
  errno = err;
  return (int)fd;
}

/* Open the job's path, beneath its root if it has one; sets err and op. */
static int fs_open(fs_job *fj, int flags, const char *op) {
  int fd = fj->root ? open_beneath(fj->root, fj->path, flags) : open(fj->path, flags | O_CLOEXEC);
  if (fd < 0) {
    fj->err = fj->root && errno == EXDEV ? ERR_ESCAPES : errno;
    fj->op = op;
  }
  return fd;
}

static void fs_stat(fs_job *fj) {
  if (!fj->root) {
    if (stat(fj->path, &fj->st) != 0) {
      fj->err = errno;
      fj->op = "stat";
    }
    return;
  }
  /* O_PATH: a stat needs no read permission on the file itself */
  int fd = fs_open(fj, O_PATH, "statat");
  if (fd < 0) return;
  if (fstat(fd, &fj->st) != 0) {
    fj->err = errno;
    fj->op = "statat";
  }
  close(fd);
}

static int dir_ent_cmp(const void *a, const void *b) {
  return strcmp(((const dir_ent *)a)->name, ((const dir_ent *)b)->name);
}

static void fs_read_dir(fs_job *fj) {
  int fd = fs_open(fj, O_RDONLY | O_NONBLOCK, fj->root ? "openat" : "open");
  if (fd < 0) return;
  DIR *d = fdopendir(fd); /* owns fd from here on */
  if (!d) {
    fj->err = errno; /* ENOTDIR for a file, as Go's getdents finds */
    fj->op = "readdirent";
    close(fd);
    return;
  }
  for (;;) {
    errno = 0;
    struct dirent *de = readdir(d);
    if (!de) {
      if (errno) {
        fj->err = errno;
        fj->op = "readdirent";
      }
      break;
    }
    const char *n = de->d_name;
    if (n[0] == '.' && (n[1] == '\0' || (n[1] == '.' && n[2] == '\0'))) continue;
    /* Go's DirEntry: the entry itself, a link is not followed */
    struct stat st;
    int64_t size = 0;
    bool is_dir = de->d_type == DT_DIR;
    if (fstatat(dirfd(d), n, &st, AT_SYMLINK_NOFOLLOW) == 0) {
      size = (int64_t)st.st_size;
      if (de->d_type == DT_UNKNOWN) is_dir = S_ISDIR(st.st_mode);
    } else if (errno == ENOENT) {
      continue; /* removed since readdir saw it, as Go skips it */
    }
    if (fj->nents == fj->entcap) {
      fj->entcap = fj->entcap ? fj->entcap * 2 : 16;
      fj->ents = rt_realloc(fj->ents, fj->entcap * sizeof *fj->ents);
    }
    size_t nl = strlen(n);
    dir_ent *e = &fj->ents[fj->nents++];
    e->name = rt_malloc(nl + 1);
    memcpy(e->name, n, nl + 1);
    e->is_dir = is_dir;
    e->size = size;
  }
  closedir(d);
  if (!fj->err && fj->nents > 1) qsort(fj->ents, fj->nents, sizeof *fj->ents, dir_ent_cmp);
}

static void fs_read_range(fs_job *fj) {
  int fd = fs_open(fj, O_RDONLY | O_NONBLOCK, fj->root ? "openat" : "open");
  if (fd < 0) return;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    fj->err = errno;
    fj->op = "stat";
    close(fd);
    return;
  }
  /* A regular file's size bounds the buffer, so that a large length costs
   * nothing; a file whose size says nothing (0 in /proc, a device) is read
   * in growing steps up to length. */
  size_t want = (size_t)fj->length;
  bool sized = S_ISREG(st.st_mode) && st.st_size > 0;
  size_t cap = want;
  if (sized) {
    int64_t avail = (int64_t)st.st_size > fj->offset ? (int64_t)st.st_size - fj->offset : 0;
    if ((uint64_t)avail < cap) cap = (size_t)avail;
  } else if (cap > 65536) {
    cap = 65536;
  }
  fj->data = rt_malloc(cap ? cap : 1);
  for (;;) {
    if (fj->len == cap) {
      if (cap == want || sized) break;
      size_t ncap = cap * 2 > want ? want : cap * 2;
      fj->data = rt_realloc(fj->data, ncap);
      cap = ncap;
    }
    ssize_t r = pread(fd, fj->data + fj->len, cap - fj->len, (off_t)(fj->offset + (int64_t)fj->len));
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

static void fs_run(rt_job *j) {
  fs_job *fj = (fs_job *)j;
  if (fj->err) return; /* refused before it ran (a NUL in the path) */
  switch (fj->kind) {
  case FS_STAT: fs_stat(fj); break;
  case FS_READ_DIR: fs_read_dir(fj); break;
  default: fs_read_range(fj); break;
  }
}

static void set_number(lua_State *L, const char *k, lua_Number v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

static void set_bool(lua_State *L, const char *k, bool v) {
  lua_pushboolean(L, v);
  lua_setfield(L, -2, k);
}

static int fs_push(lua_State *L, rt_job *j) {
  fs_job *fj = (fs_job *)j;
  if (fj->err == ERR_ESCAPES) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s ", fj->op);
    lua_pushlstring(L, fj->path, fj->pathlen);
    lua_pushliteral(L, ": path escapes from parent");
    lua_concat(L, 3);
    return 2;
  }
  if (fj->err) return push_os_error(L, fj->op, fj->path, fj->pathlen, fj->err);
  switch (fj->kind) {
  case FS_STAT:
    lua_createtable(L, 0, 5);
    set_number(L, "size", (lua_Number)fj->st.st_size);
    set_number(L, "mtime", (lua_Number)fj->st.st_mtim.tv_sec + (lua_Number)fj->st.st_mtim.tv_nsec / 1e9);
    set_bool(L, "is_dir", S_ISDIR(fj->st.st_mode));
    set_bool(L, "is_regular", S_ISREG(fj->st.st_mode));
    set_number(L, "mode", (lua_Number)(fj->st.st_mode & 07777));
    return 1;
  case FS_READ_DIR:
    lua_createtable(L, (int)fj->nents, 0);
    for (size_t i = 0; i < fj->nents; i++) {
      lua_createtable(L, 0, 3);
      lua_pushstring(L, fj->ents[i].name);
      lua_setfield(L, -2, "name");
      set_bool(L, "is_dir", fj->ents[i].is_dir);
      set_number(L, "size", (lua_Number)fj->ents[i].size);
      lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
  default:
    lua_pushlstring(L, fj->data, fj->len);
    return 1;
  }
}

static void fs_free(rt_job *j) {
  fs_job *fj = (fs_job *)j;
  for (size_t i = 0; i < fj->nents; i++) rt_free(fj->ents[i].name);
  rt_free(fj->ents);
  rt_free(fj->path);
  rt_free(fj->root);
  rt_free(fj->data);
  rt_free(fj);
}

static char *dup_lstring(const char *s, size_t n) {
  char *d = rt_malloc(n + 1);
  memcpy(d, s, n + 1);
  return d;
}

/* The job for path (argument 1) and an optional root (argument root_arg).
 * Arguments are checked before anything is allocated: a check raises. */
static int fs_call(lua_State *L, int kind, int root_arg) {
  size_t plen, rlen = 0;
  const char *path = luaL_checklstring(L, 1, &plen);
  const char *root = luaL_optlstring(L, root_arg, NULL, &rlen);
  int64_t offset = 0, length = 0;
  if (kind == FS_READ_RANGE) {
    lua_Number o = luaL_checknumber(L, 2), n = luaL_checknumber(L, 3);
    /* os.lua checks these; here only what keeps the C side defined */
    luaL_argcheck(L, o >= 0 && o <= 9007199254740992.0, 2, "offset out of range");
    luaL_argcheck(L, n >= 0 && n <= 9007199254740992.0, 3, "length out of range");
    offset = (int64_t)o;
    length = (int64_t)n;
  }
  fs_job *fj = rt_calloc(1, sizeof *fj);
  fj->job.run = fs_run;
  fj->job.push = fs_push;
  fj->job.free = fs_free;
  fj->kind = kind;
  fj->path = dup_lstring(path, plen);
  fj->pathlen = plen;
  fj->root = root ? dup_lstring(root, rlen) : NULL;
  fj->offset = offset;
  fj->length = length;
  if (strlen(path) != plen || (root && strlen(root) != rlen)) { /* Go refuses a NUL */
    fj->err = EINVAL;
    fj->op = kind == FS_STAT ? (root ? "statat" : "stat") : (root ? "openat" : "open");
  }
  return syscall_block(L, &fj->job);
}

/* C API stat(path[, root]) -> { size, mtime, is_dir, is_regular, mode }, or nil, err. */
int os_stat(lua_State *L) { return fs_call(L, FS_STAT, 2); }

/* C API read_dir(path[, root]) -> { {name, is_dir, size}... } sorted by name, or nil, err. */
int os_read_dir(lua_State *L) { return fs_call(L, FS_READ_DIR, 2); }

/* C API read_range(path, offset, length[, root]) -> the bytes (fewer at the end), or nil, err. */
int os_read_range(lua_State *L) { return fs_call(L, FS_READ_RANGE, 4); }
