/*
 * malloc.c — memory for the runtime and its VMs.
 *
 * Each P's VM allocates through rt_vm_alloc from its own jemalloc arena with
 * an explicit tcache (FACTS.md: MALLOCX_ARENA alone still serves from the
 * calling thread's tcache). The tcache is safe without a lock because only
 * the thread holding the P runs the VM. `allocated` is written by that thread
 * only and read by anyone (memstats), hence relaxed atomics.
 *
 * Runtime structs (G, sudog, channels, ...) use the process allocator: they
 * are freed by whichever thread drops the last reference. Per-P caches of Gs
 * and sudogs (proc.c) keep that off the hot paths.
 *
 * In front of the arena, each VM keeps free lists of small blocks in 16-byte
 * size classes (LuaJIT allocates and frees small objects at a high rate, and
 * mallocx with explicit flags misses jemalloc's malloc fast path). A cached
 * block always has its class's full size. The lists are bounded by
 * SMALL_CACHE_BYTES per VM; beyond that, blocks go back to the arena.
 *
 * Built with LUGO_NO_JEMALLOC (the sanitizer builds), VMs use the C library
 * allocator, uncached, so that AddressSanitizer sees every Lua object.
 */
#include <stdlib.h>
#include <string.h>

#include "rt.h"

#ifndef LUGO_NO_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#define SMALL_MAX 512
#define SMALL_CLASSES (SMALL_MAX / 16 + 1)
#define SMALL_CACHE_BYTES (4u << 20)

typedef struct vm_arena {
  int flags; /* MALLOCX_ARENA | MALLOCX_TCACHE */
  unsigned arena, tcache;
  _Atomic size_t allocated;
  void *small[SMALL_CLASSES]; /* free blocks, linked through their first word */
  size_t cached;              /* bytes in small[] */
} vm_arena;

void *rt_malloc(size_t n) {
  void *ptr = malloc(n ? n : 1);
  if (!ptr) rt_throw("runtime: out of memory allocating %zu bytes", n);
  return ptr;
}

void *rt_calloc(size_t n, size_t size) {
  void *ptr = calloc(n ? n : 1, size ? size : 1);
  if (!ptr) rt_throw("runtime: out of memory allocating %zu bytes", n * size);
  return ptr;
}

void *rt_realloc(void *ptr, size_t n) {
  void *q = realloc(ptr, n ? n : 1);
  if (!q) rt_throw("runtime: out of memory allocating %zu bytes", n);
  return q;
}

void rt_free(void *ptr) { free(ptr); }

#ifndef LUGO_NO_JEMALLOC
static size_t small_class(size_t n) { return (n + 15) >> 4; }

static void *arena_alloc(vm_arena *a, size_t n) {
  if (n <= SMALL_MAX) {
    size_t c = small_class(n);
    void *q = a->small[c];
    if (q) {
      a->small[c] = *(void **)q;
      a->cached -= c << 4;
      return q;
    }
    return mallocx(c << 4, a->flags);
  }
  return mallocx(n, a->flags);
}

static void arena_free(vm_arena *a, void *ptr, size_t n) {
  if (n <= SMALL_MAX) {
    size_t c = small_class(n);
    if (a->cached + (c << 4) <= SMALL_CACHE_BYTES) {
      *(void **)ptr = a->small[c];
      a->small[c] = ptr;
      a->cached += c << 4;
      return;
    }
    sdallocx(ptr, c << 4, a->flags);
    return;
  }
  sdallocx(ptr, n, a->flags);
}

static void *arena_realloc(vm_arena *a, void *ptr, size_t osize, size_t nsize) {
  if (!ptr) return arena_alloc(a, nsize);
  if (osize > SMALL_MAX && nsize > SMALL_MAX) return rallocx(ptr, nsize, a->flags);
  if (osize <= SMALL_MAX && nsize <= SMALL_MAX && small_class(osize) == small_class(nsize)) return ptr;
  void *q = arena_alloc(a, nsize);
  if (!q) return NULL;
  memcpy(q, ptr, osize < nsize ? osize : nsize);
  arena_free(a, ptr, osize);
  return q;
}

static void arena_flush(vm_arena *a) {
  for (size_t c = 1; c < SMALL_CLASSES; c++) {
    while (a->small[c]) {
      void *q = a->small[c];
      a->small[c] = *(void **)q;
      sdallocx(q, c << 4, a->flags);
    }
  }
  a->cached = 0;
}
#endif

void *rt_vm_arena_new(void) {
  vm_arena *a = rt_calloc(1, sizeof *a);
#ifndef LUGO_NO_JEMALLOC
  size_t sz = sizeof(unsigned);
  if (mallctl("arenas.create", &a->arena, &sz, NULL, 0) != 0)
    rt_throw("runtime: jemalloc arenas.create failed");
  sz = sizeof(unsigned);
  if (mallctl("tcache.create", &a->tcache, &sz, NULL, 0) != 0)
    rt_throw("runtime: jemalloc tcache.create failed");
  a->flags = MALLOCX_ARENA(a->arena) | MALLOCX_TCACHE(a->tcache);
#endif
  return a;
}

void rt_vm_arena_free(void *arena) {
  vm_arena *a = arena;
  if (!a) return;
#ifndef LUGO_NO_JEMALLOC
  arena_flush(a);
  mallctl("tcache.destroy", NULL, NULL, &a->tcache, sizeof a->tcache);
  /* The arena itself stays: jemalloc cannot destroy an arena that other
   * tcaches may still hold chunks of, and it is reused by nothing else. */
#endif
  rt_free(a);
}

size_t rt_vm_arena_allocated(void *arena) {
  vm_arena *a = arena;
  return a ? atomic_load_explicit(&a->allocated, memory_order_relaxed) : 0;
}

void *rt_vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  vm_arena *a = ud;
  size_t was = ptr ? osize : 0;
  void *q;
  if (nsize == 0) {
#ifndef LUGO_NO_JEMALLOC
    if (ptr) arena_free(a, ptr, osize);
#else
    free(ptr);
#endif
    q = NULL;
  } else {
#ifndef LUGO_NO_JEMALLOC
    q = arena_realloc(a, ptr, osize, nsize);
#else
    q = realloc(ptr, nsize);
#endif
    if (!q) return NULL; /* LuaJIT raises "not enough memory"; ptr is intact */
  }
  size_t now = atomic_load_explicit(&a->allocated, memory_order_relaxed) - was + (q ? nsize : 0);
  atomic_store_explicit(&a->allocated, now, memory_order_relaxed);
  return q;
}
