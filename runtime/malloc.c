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
 * Built with LUGO_NO_JEMALLOC (the sanitizer builds), VMs use the C library
 * allocator so that AddressSanitizer sees every Lua object.
 */
#include <stdlib.h>
#include <string.h>

#include "rt.h"

#ifndef LUGO_NO_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

typedef struct vm_arena {
  int flags; /* MALLOCX_ARENA | MALLOCX_TCACHE */
  unsigned arena, tcache;
  _Atomic size_t allocated;
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
    if (ptr) dallocx(ptr, a->flags);
#else
    free(ptr);
#endif
    q = NULL;
  } else {
#ifndef LUGO_NO_JEMALLOC
    q = ptr ? rallocx(ptr, nsize, a->flags) : mallocx(nsize, a->flags);
#else
    q = realloc(ptr, nsize);
#endif
    if (!q) return NULL; /* LuaJIT raises "not enough memory"; ptr is intact */
  }
  size_t now = atomic_load_explicit(&a->allocated, memory_order_relaxed) - was + (q ? nsize : 0);
  atomic_store_explicit(&a->allocated, now, memory_order_relaxed);
  return q;
}
