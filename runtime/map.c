/*
 * map.c — Go's hashmap (runtime/map.go as of Go 1.23, before Swiss
 * tables), and sync.map: that map, sharded, shared by every processor.
 *
 * The hashmap (hmap, map.h):
 *   - 2^B buckets of 8 slots, a tophash byte per slot (the hash's top
 *     byte, raised to MAP_TH_MIN at least: lower values are slot states),
 *     overflow buckets chained behind a full one.
 *   - It grows when an insert would take the count past 6.5 per bucket
 *     (to twice the buckets), or when overflow buckets pile up (to as many,
 *     repacked). Growth is incremental, as Go's: the old array stays, and
 *     each write evacuates the old bucket its key hashes to plus the next
 *     one not yet evacuated, so no single insert pays for a whole rehash.
 *     A key lives either in its old bucket (not yet evacuated) or in the
 *     new array, never both; a read looks in the old bucket while it is
 *     not evacuated. An evacuated old bucket has tophash[0] ==
 *     MAP_TH_EVACUATED and no overflow chain.
 *   - Not synchronized: the caller holds the lock of the shard.
 *
 * sync.map (smap, a runtime object):
 *   - Shards (a power of two: by default 4 per processor and at least 8;
 *     fewer, down to 8, when a capacity would leave a shard less than 64
 *     KiB), each an hmap
 *     with its own lock, its byte count and its CLOCK hand; a key's shard
 *     comes from its hash's bits 48-55, its bucket from the low bits, its
 *     tophash from the top byte. The seed is random per process, mixed with
 *     a per-map count: colliding keys cannot be precomputed.
 *   - A slot's value is inline (a number or a boolean without a ttl) or a
 *     box: a copy (value.c's rt_copy) with its expiry and size, reference
 *     counted, so a load takes a reference under the shard lock and
 *     decodes after releasing it. A box's copy never changes once stored (a
 *     write stores a new box); its expiry is read and changed only under
 *     the shard lock.
 *   - The lock of a shard guards its hmap, bytes, hand and the slots'
 *     values; a box's count is atomic. Copies are made (value_encode) and
 *     decoded outside any lock, on the thread of the VM they come from or
 *     go to; freeing a box may run on any thread (blobs allow it).
 *   - A ttl expires lazily: an access that finds an expired entry treats
 *     it as absent and removes it, and every write sweeps one bucket of
 *     its shard for expired entries.
 *   - With a capacity, each shard keeps under capacity / shards bytes
 *     (keys, values and the slot's share of its bucket): a store over the
 *     budget evicts entries whose CLOCK bit is clear (a load sets the bit,
 *     only if clear, and only in a map with a capacity: a hot key costs one
 *     write per sweep, not one per load).
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>

#include <lauxlib.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "map.h"
#include "qsbr.h"
#include "rt.h"

/* ------------------------------------------------------------------ */
/* The hashmap                                                         */

#define LOAD_NUM 13 /* load factor 6.5 = 13 / 2 */
#define LOAD_DEN 2

static uint8_t tophash(uint64_t hash) {
  uint8_t top = (uint8_t)(hash >> 56);
  return top < MAP_TH_MIN ? (uint8_t)(top + MAP_TH_MIN) : top;
}

void map_key_hash(map_key *k, uint64_t seed) {
  switch (k->kind) {
  case MK_STR: k->hash = XXH3_64bits_withSeed(k->s, k->len, seed); break;
  case MK_NUM: k->hash = XXH3_64bits_withSeed(&k->bits, sizeof k->bits, seed ^ 0x9e3779b97f4a7c15ULL); break;
  default: k->hash = XXH3_64bits_withSeed(&k->kind, 1, seed ^ 0xc2b2ae3d27d4eb4fULL); break;
  }
}

uint64_t hmap_slot_hash(map_slot s, uint64_t seed) {
  map_key k = {.kind = map_key_kind_of(s)};
  if (k.kind == MK_STR) {
    map_str *ms = (map_str *)(uintptr_t)s.b->keys[s.i];
    k.s = ms->s;
    k.len = ms->len;
  } else {
    k.bits = s.b->keys[s.i];
  }
  map_key_hash(&k, seed);
  return k.hash;
}

static bool slot_is(const map_bucket *b, int i, const map_key *k) {
  if ((b->kinds[i] & 15) != k->kind) return false;
  if (k->kind != MK_STR) return b->keys[i] == k->bits;
  const map_str *ms = (const map_str *)(uintptr_t)b->keys[i];
  return ms->len == k->len && memcmp(ms->s, k->s, k->len) == 0;
}

static size_t nbuckets_of(uint8_t B) { return (size_t)1 << B; }
static size_t old_nbuckets(const hmap *h) { return h->same_size ? nbuckets_of(h->B) : nbuckets_of(h->B) >> 1; }
static bool evacuated(const map_bucket *b) { return b->tophash[0] == MAP_TH_EVACUATED; }
/* Old bucket i is evacuated: below nevacuate without reading it (its
 * memory may be gone). */
static bool evacuated_at(const hmap *h, size_t i) { return i < h->nevacuate || evacuated(&h->oldbuckets[i]); }
size_t hmap_nbuckets(const hmap *h) { return h->buckets ? nbuckets_of(h->B) : 0; }

/* Bucket arrays of a MiB and more come from mmap, where a reused heap
 * block would be cleared by memset (a 40 MiB one made one insert of ten
 * million take 16 ms). */
#define ARRAY_MMAP_BYTES (1u << 20)

static map_bucket *array_new(size_t n) {
  size_t bytes = n * sizeof(map_bucket);
  if (bytes < ARRAY_MMAP_BYTES) return rt_calloc(n, sizeof(map_bucket));
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) rt_throw("runtime: out of memory (map buckets, %zu bytes)", bytes);
  /* 4 KiB pages: a transparent huge page is cleared (2 MiB) in the one
   * insert that first touches it, and many did during a growth (1-5 ms
   * each, measured) */
  madvise(p, bytes, MADV_NOHUGEPAGE);
  return p;
}

/* Memory to munmap, handed to sysmon: munmap waits for every CPU running
 * one of our threads to flush its TLB, which took an insert a millisecond
 * on this kind of machine, each time a growth gave back a chunk. */
struct map_unmap {
  void *p;
  size_t bytes;
  struct map_unmap *next;
};

static void unmap_later(void *p, size_t bytes) {
  p_t *pp = getp();
  if (!pp) { /* not on a processor: nobody to keep waiting */
    munmap(p, bytes);
    return;
  }
  runtime *rt = pp->rt;
  struct map_unmap *u = rt_malloc(sizeof *u);
  u->p = p;
  u->bytes = bytes;
  rt_lock(&rt->unmap_lock);
  u->next = rt->unmap_head;
  rt->unmap_head = u;
  rt_unlock(&rt->unmap_lock);
}

/* Memory readers without the lock may be looking at: freed once they
 * cannot (qsbr.c). */
static void free_now(void *p, size_t n) {
  (void)n;
  rt_free(p);
}
static void retire_free(void *p) { qsbr_retire(free_now, p, 0); }
static void retire(void *p, size_t bytes) { qsbr_retire(unmap_later, p, bytes); }

void map_unmap_retired(runtime *rt) {
  if (!rt->unmap_head) return; /* a racy peek: the next tick sees a late one */
  rt_lock(&rt->unmap_lock);
  struct map_unmap *u = rt->unmap_head;
  rt->unmap_head = NULL;
  rt_unlock(&rt->unmap_lock);
  while (u) {
    struct map_unmap *next = u->next;
    munmap(u->p, u->bytes);
    rt_free(u);
    u = next;
  }
}

static void array_free(map_bucket *arr, size_t n, size_t unmapped) {
  size_t bytes = n * sizeof(map_bucket);
  if (bytes < ARRAY_MMAP_BYTES) retire_free(arr);
  else if (bytes > unmapped) retire((char *)arr + unmapped, bytes - unmapped);
}

/* An old array from mmap is given back in chunks as evacuation passes
 * them, so that no single insert pays for unmapping tens of MiB. The
 * buckets below nevacuate are never read again (evacuated_at). */
#define UNMAP_CHUNK ((size_t)256 << 10)

static void unmap_evacuated(hmap *h, size_t oldn) {
  if (oldn * sizeof(map_bucket) < ARRAY_MMAP_BYTES) return;
  size_t done = (h->nevacuate * sizeof(map_bucket)) & ~(UNMAP_CHUNK - 1);
  if (done <= h->old_unmapped) return;
  retire((char *)h->oldbuckets + h->old_unmapped, done - h->old_unmapped);
  h->old_unmapped = done;
}

static bool over_load_factor(size_t count, uint8_t B) {
  return count > MAP_BUCKET_SLOTS && count > LOAD_NUM * (nbuckets_of(B) / LOAD_DEN);
}
static bool too_many_overflow(uint32_t noverflow, uint8_t B) {
  return noverflow >= (uint32_t)1 << (B < 15 ? B : 15);
}

static map_bucket *new_overflow(hmap *h, map_bucket *last) {
  map_bucket *ob = rt_calloc(1, sizeof *ob);
  MAP_PUB(last->overflow, ob);
  h->noverflow++;
  return ob;
}

bool hmap_find(const hmap *h, const map_key *k, map_slot *out) {
  if (h->count == 0) return false;
  size_t mask = nbuckets_of(h->B) - 1;
  map_bucket *b = &h->buckets[k->hash & mask];
  if (h->oldbuckets) {
    size_t oi = k->hash & (old_nbuckets(h) - 1);
    if (!evacuated_at(h, oi)) b = &h->oldbuckets[oi];
  }
  uint8_t top = tophash(k->hash);
  for (; b; b = b->overflow)
    for (int i = 0; i < MAP_BUCKET_SLOTS; i++)
      if (b->tophash[i] == top && slot_is(b, i, k)) {
        *out = (map_slot){b, i};
        return true;
      }
  return false;
}

/* Empty a bucket readers may be looking at (memset is not atomic). */
static void bucket_clear(map_bucket *b) {
  for (int i = 0; i < MAP_BUCKET_SLOTS; i++) {
    MAP_WR(b->tophash[i], 0);
    MAP_WR(b->kinds[i], 0);
    MAP_WR(b->keys[i], 0);
    MAP_WR(b->vals[i], 0);
  }
  MAP_WR(b->ref, 0);
  MAP_WR(b->overflow, NULL);
}

/* Move old bucket `oldbucket` (and its chain) into the new array: to the
 * same index, or that plus the old size when the array doubled and the
 * key's hash has that bit. */
static void evacuate(hmap *h, size_t oldbucket, uint64_t seed) {
  map_bucket *b = &h->oldbuckets[oldbucket];
  size_t oldn = old_nbuckets(h);
  if (!evacuated_at(h, oldbucket)) {
    /* where the next entry goes in x (same index) and y (index + oldn) */
    map_bucket *dst[2] = {&h->buckets[oldbucket], h->same_size ? NULL : &h->buckets[oldbucket + oldn]};
    int di[2] = {0, 0};
    for (map_bucket *c = b; c; c = c->overflow) {
      for (int i = 0; i < MAP_BUCKET_SLOTS; i++) {
        if (c->tophash[i] < MAP_TH_MIN) continue;
        int y = 0;
        if (!h->same_size) y = (hmap_slot_hash((map_slot){c, i}, seed) & oldn) != 0;
        if (di[y] == MAP_BUCKET_SLOTS) {
          dst[y] = new_overflow(h, dst[y]);
          di[y] = 0;
        }
        map_bucket *d = dst[y];
        int j = di[y]++;
        MAP_PUB(d->keys[j], c->keys[i]);
        MAP_PUB(d->vals[j], c->vals[i]);
        MAP_WR(d->kinds[j], c->kinds[i]);
        MAP_WR(d->tophash[j], c->tophash[i]);
        if (MAP_RD(c->ref) & (1u << i)) __atomic_fetch_or(&d->ref, (uint8_t)(1u << j), __ATOMIC_RELAXED);
      }
    }
    for (map_bucket *c = b->overflow; c;) {
      map_bucket *next = c->overflow;
      retire_free(c);
      c = next;
    }
    bucket_clear(b);
    MAP_WR(b->tophash[0], MAP_TH_EVACUATED);
  }
  if (oldbucket == h->nevacuate) {
    size_t nev = h->nevacuate;
    while (nev < oldn && evacuated(&h->oldbuckets[nev])) nev++;
    MAP_WR(h->nevacuate, nev);
    unmap_evacuated(h, oldn);
    if (nev == oldn) { /* growth is over */
      array_free(h->oldbuckets, oldn, h->old_unmapped);
      MAP_WR(h->oldbuckets, NULL);
      MAP_WR(h->same_size, false);
    }
  }
}

static void grow_work(hmap *h, uint64_t hash, uint64_t seed) {
  evacuate(h, hash & (old_nbuckets(h) - 1), seed);
  if (h->oldbuckets) evacuate(h, h->nevacuate, seed);
}

static void hash_grow(hmap *h) {
  bool same = !over_load_factor(h->count + 1, h->B);
  uint8_t B = same ? h->B : (uint8_t)(h->B + 1);
  map_bucket *fresh = array_new(nbuckets_of(B));
  MAP_WR(h->nevacuate, 0);
  MAP_PUB(h->oldbuckets, h->buckets);
  MAP_WR(h->same_size, same);
  MAP_WR(h->B, B);
  MAP_PUB(h->buckets, fresh);
  h->old_unmapped = 0;
  h->noverflow = 0;
  h->sweep = 0;
}

map_slot hmap_assign(hmap *h, const map_key *k, bool *existed) {
  if (!h->buckets) MAP_PUB(h->buckets, array_new(1));
again:
  if (h->oldbuckets) grow_work(h, k->hash, h->seed);
  size_t mask = nbuckets_of(h->B) - 1;
  map_bucket *b = &h->buckets[k->hash & mask], *last = b;
  uint8_t top = tophash(k->hash);
  map_slot free_slot = {NULL, 0};
  for (; b; b = b->overflow) {
    last = b;
    for (int i = 0; i < MAP_BUCKET_SLOTS; i++) {
      if (b->tophash[i] == top && slot_is(b, i, k)) {
        *existed = true;
        return (map_slot){b, i};
      }
      if (b->tophash[i] < MAP_TH_MIN && !free_slot.b) free_slot = (map_slot){b, i};
    }
  }
  if (!h->oldbuckets && (over_load_factor(h->count + 1, h->B) || too_many_overflow(h->noverflow, h->B))) {
    hash_grow(h);
    goto again; /* growing moves everything: look again */
  }
  if (!free_slot.b) free_slot = (map_slot){new_overflow(h, last), 0};
  map_bucket *fb = free_slot.b;
  int i = free_slot.i;
  __atomic_fetch_and(&fb->ref, (uint8_t)~(1u << i), __ATOMIC_RELAXED);
  MAP_WR(fb->vals[i], 0);
  if (k->kind == MK_STR) {
    map_str *ms = rt_malloc(sizeof *ms + k->len);
    ms->len = k->len;
    memcpy(ms->s, k->s, k->len);
    MAP_PUB(fb->keys[i], (uint64_t)(uintptr_t)ms);
  } else {
    MAP_WR(fb->keys[i], k->bits);
  }
  MAP_WR(fb->kinds[i], k->kind);
  MAP_WR(fb->tophash[i], top);
  MAP_WR(h->count, h->count + 1);
  *existed = false;
  return free_slot;
}

void hmap_clear_slot(hmap *h, map_slot s) {
  if (map_key_kind_of(s) == MK_STR) retire_free((void *)(uintptr_t)s.b->keys[s.i]);
  MAP_WR(s.b->tophash[s.i], MAP_TH_EMPTY);
  MAP_WR(s.b->kinds[s.i], 0);
  MAP_WR(s.b->keys[s.i], 0);
  MAP_WR(s.b->vals[s.i], 0);
  __atomic_fetch_and(&s.b->ref, (uint8_t)~(1u << s.i), __ATOMIC_RELAXED);
  MAP_WR(h->count, h->count - 1);
}

void hmap_grow_all(hmap *h) {
  while (h->oldbuckets) evacuate(h, h->nevacuate, h->seed);
}

static void each_chain(map_bucket *b, void (*f)(map_slot s, void *arg), void *arg) {
  for (; b; b = b->overflow)
    for (int i = 0; i < MAP_BUCKET_SLOTS; i++)
      if (b->tophash[i] >= MAP_TH_MIN) f((map_slot){b, i}, arg);
}

void hmap_each(const hmap *h, void (*f)(map_slot s, void *arg), void *arg) {
  if (h->oldbuckets)
    for (size_t i = h->nevacuate; i < old_nbuckets(h); i++)
      if (!evacuated(&h->oldbuckets[i])) each_chain(&h->oldbuckets[i], f, arg);
  if (h->buckets)
    for (size_t i = 0; i < nbuckets_of(h->B); i++) each_chain(&h->buckets[i], f, arg);
}

static void free_array(map_bucket *arr, size_t from, size_t n, size_t unmapped,
                       void (*value_free)(uint8_t, uint64_t, void *), void *arg) {
  for (size_t i = from; i < n; i++) {
    map_bucket *b = &arr[i];
    if (evacuated(b)) continue;
    for (map_bucket *c = b; c;) {
      for (int j = 0; j < MAP_BUCKET_SLOTS; j++) {
        if (c->tophash[j] < MAP_TH_MIN) continue;
        if ((c->kinds[j] & 15) == MK_STR) retire_free((void *)(uintptr_t)c->keys[j]);
        if (value_free) value_free(c->kinds[j] >> 4, c->vals[j], arg);
      }
      map_bucket *next = c->overflow;
      if (c != b) retire_free(c);
      c = next;
    }
  }
  array_free(arr, n, unmapped);
}

void hmap_free(hmap *h, void (*value_free)(uint8_t kind, uint64_t v, void *arg), void *arg) {
  if (h->oldbuckets) free_array(h->oldbuckets, h->nevacuate, old_nbuckets(h), h->old_unmapped, value_free, arg);
  if (h->buckets) free_array(h->buckets, 0, nbuckets_of(h->B), 0, value_free, arg);
  hmap_reset(h);
}

void hmap_reset(hmap *h) {
  /* readers may still look: the fields they read, atomically */
  MAP_WR(h->count, 0);
  MAP_WR(h->buckets, NULL);
  MAP_WR(h->oldbuckets, NULL);
  MAP_WR(h->B, 0);
  MAP_WR(h->same_size, false);
  MAP_WR(h->nevacuate, 0);
  h->noverflow = 0;
  h->old_unmapped = h->sweep = 0;
}

void hmap_grow_some(hmap *h, int n) {
  while (h->oldbuckets && n-- > 0) evacuate(h, h->nevacuate, h->seed);
}

/* ------------------------------------------------------------------ */
/* sync.map                                                            */

enum val_kind { V_NONE, V_NUM, V_FALSE, V_TRUE, V_BOX, V_CTR };

/* A counter: an integer that incr adds to without the shard's lock (lock
 * xadd), in a cell of its own so that moving the slot (evacuation) moves
 * the cell, not its count. Made by incr of an integer in a map without a
 * capacity. Before any other call reads or replaces it under the lock, the
 * cell is closed (its count swapped for CTR_CLOSED, whatever adds land on
 * it after) and retired; an incr that finds it closed takes the lock. */
typedef struct mctr {
  _Atomic int64_t n;
  char pad[56]; /* a line of its own: a hot count next to a key string made every load of that key miss */
} mctr;

#define CTR_CLOSED INT64_MIN / 2
#define CTR_OPEN(n) ((n) > INT64_MIN / 4) /* a closed count plus any adds stays below */
#define EXACT_INT 9007199254740992.0      /* 2^53 */

static bool whole(double d) { return d == floor(d) && fabs(d) <= EXACT_INT; }

/* A cell's count, and an add to it (the count before); v is the slot's
 * value. Relaxed: the count is the only data. */
static int64_t ctr_count(uint64_t v) { return atomic_load_explicit(&((mctr *)(uintptr_t)v)->n, memory_order_relaxed); }
static int64_t ctr_add(uint64_t v, int64_t d) {
  return atomic_fetch_add_explicit(&((mctr *)(uintptr_t)v)->n, d, memory_order_relaxed);
}

/* A value that is not an inline scalar, or that has a ttl. Immutable once
 * stored; refs: the slot's, plus one per load decoding it. */
typedef struct mbox {
  _Atomic int32_t refs;
  uint32_t size;  /* what it counts against the capacity */
  int64_t expire; /* nanotime, 0 for never */
  rt_copy c;
} mbox;

typedef struct shard {
  rtlock lock;
  _Atomic uint32_t seq; /* odd while a holder of the lock may write */
  hmap h;
  int64_t bytes; /* keys, values and slots */
  size_t hand;   /* CLOCK: the next bucket eviction looks at */
  size_t nexpiring; /* entries with a ttl: only then do writes sweep (sysmon peeks) */
  uint64_t evictions, expirations;
} __attribute__((aligned(64))) shard;

typedef struct smap {
  rt_object obj;
  runtime *rt;
  /* in rt->ttl_maps, which sysmon sweeps (guarded by rt->ttl_lock; peeked) */
  struct smap *ttl_next, *ttl_prev;
  _Atomic bool ttl_listed;
  uint32_t nshards; /* a power of two */
  uint64_t seed;
  int64_t capacity; /* bytes, 0 for none */
  int64_t budget;   /* per shard */
  shard *shards;
} smap;

/* A shard's lock, and its sequence count around what the holder writes:
 * a lock-free load that sees the count odd, or moved, looks again. */
static void shard_lock(shard *sh) {
  rt_lock(&sh->lock);
  uint32_t s = atomic_load_explicit(&sh->seq, memory_order_relaxed);
  atomic_store_explicit(&sh->seq, s + 1, memory_order_relaxed);
  rt_fence(memory_order_release); /* odd before any write below */
}

static void shard_unlock(shard *sh) {
  uint32_t s = atomic_load_explicit(&sh->seq, memory_order_relaxed);
  atomic_store_explicit(&sh->seq, s + 1, memory_order_release);
  rt_unlock(&sh->lock);
}

#define LOCKED(sh) shard_lock(sh)
#define UNLOCKED(sh) shard_unlock(sh)

#define SLOT_BYTES ((int64_t)(sizeof(map_bucket) / MAP_BUCKET_SLOTS))

static uint64_t process_seed(runtime *rt) {
  uint64_t s = atomic_load_explicit(&rt->map_seed, memory_order_relaxed);
  if (s) return s;
  uint64_t fresh = 0;
  if (getrandom(&fresh, sizeof fresh, GRND_NONBLOCK) != sizeof fresh) fresh = (uint64_t)nanotime() ^ (uint64_t)getpid() << 32;
  fresh |= 1;
  uint64_t expected = 0;
  if (!atomic_compare_exchange_strong(&rt->map_seed, &expected, fresh)) return expected;
  return fresh;
}

static void mbox_free(void *p, size_t n) {
  (void)n;
  mbox *b = p;
  copy_free(&b->c);
  rt_free(b);
}

/* The last reference: a lock-free load may still be decoding it. */
static void box_release(mbox *b) {
  if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1) return;
  qsbr_retire(mbox_free, b, 0);
}

/* A counter's cell leaves its slot: closed, then freed once no lock-free
 * incr can hold it. Its count at the close. */
static int64_t ctr_close(uint64_t v) {
  mctr *c = (mctr *)(uintptr_t)v;
  int64_t n = atomic_exchange_explicit(&c->n, CTR_CLOSED, memory_order_relaxed);
  qsbr_retire(free_now, c, 0);
  return n;
}

static void value_free(uint8_t kind, uint64_t v, void *arg) {
  (void)arg;
  if (kind == V_BOX) box_release((mbox *)(uintptr_t)v);
  else if (kind == V_CTR) ctr_close(v);
}

/* Under the lock: a counter back to an inline number, before a call reads
 * or replaces the value. */
static void settle(map_slot s) {
  if (map_val_kind_of(s) != V_CTR) return;
  double d = (double)ctr_close(s.b->vals[s.i]);
  uint64_t bits;
  memcpy(&bits, &d, sizeof bits);
  map_set_val(s, V_NUM, bits);
}

static int64_t key_bytes(const map_key *k) { return k->kind == MK_STR ? (int64_t)(sizeof(map_str) + k->len) : 0; }
static int64_t slot_bytes(map_slot s) {
  int64_t n = SLOT_BYTES;
  if (map_key_kind_of(s) == MK_STR) n += (int64_t)(sizeof(map_str) + ((map_str *)(uintptr_t)s.b->keys[s.i])->len);
  if (map_val_kind_of(s) == V_BOX) n += ((mbox *)(uintptr_t)s.b->vals[s.i])->size;
  return n;
}

static int64_t slot_expire(map_slot s) {
  return map_val_kind_of(s) == V_BOX ? MAP_RD(((mbox *)(uintptr_t)s.b->vals[s.i])->expire) : 0;
}

/* Values to release once the shard lock is let go. */
typedef struct dropped {
  mbox *boxes[8];
  int n;
} dropped;

static void drop(dropped *d, uint8_t kind, uint64_t v) {
  if (kind == V_CTR) ctr_close(v);
  if (kind != V_BOX) return;
  if (d->n == 8) { /* rare: release under the lock */
    box_release((mbox *)(uintptr_t)v);
    return;
  }
  d->boxes[d->n++] = (mbox *)(uintptr_t)v;
}

static void drop_all(dropped *d) {
  for (int i = 0; i < d->n; i++) box_release(d->boxes[i]);
  d->n = 0;
}

/* Empty slot s of shard sh, its value to d. */
static void remove_slot(shard *sh, map_slot s, dropped *d) {
  sh->bytes -= slot_bytes(s);
  if (slot_expire(s)) MAP_WR(sh->nexpiring, sh->nexpiring - 1);
  drop(d, map_val_kind_of(s), s.b->vals[s.i]);
  hmap_clear_slot(&sh->h, s);
}

static shard *shard_of(smap *m, const map_key *k) { return &m->shards[(k->hash >> 48) & (m->nshards - 1)]; }

/* The live slot of k in sh (an expired one is removed). now: 0 to read
 * the clock only if the entry has a ttl. */
static bool find_live(shard *sh, const map_key *k, map_slot *s, int64_t now, dropped *d) {
  if (!hmap_find(&sh->h, k, s)) return false;
  int64_t exp = slot_expire(*s);
  if (exp && exp <= (now ? now : nanotime())) {
    remove_slot(sh, *s, d);
    sh->expirations++;
    return false;
  }
  settle(*s); /* every caller may read or replace the value */
  return true;
}

/* Remove the expired entries of the next nb buckets of the new array. */
static void sweep(shard *sh, int64_t now, size_t nb, dropped *d) {
  hmap *h = &sh->h;
  size_t n = hmap_nbuckets(h);
  if (!sh->nexpiring || !n || h->oldbuckets) return;
  if (!now) now = nanotime();
  for (; nb > 0 && sh->nexpiring; nb--) {
    for (map_bucket *b = &h->buckets[h->sweep++ & (n - 1)]; b; b = b->overflow)
      for (int i = 0; i < MAP_BUCKET_SLOTS; i++) {
        if (b->tophash[i] < MAP_TH_MIN) continue;
        map_slot s = {b, i};
        int64_t exp = slot_expire(s);
        if (exp && exp <= now) {
          remove_slot(sh, s, d);
          sh->expirations++;
        }
      }
  }
}

/* A write's share of the sweep: one bucket. */
static void sweep_step(shard *sh, int64_t now, dropped *d) { sweep(sh, now, 1, d); }

/* Evict with CLOCK until the shard is within budget, sparing the entry of
 * key k. The growth in progress is finished first: the hand walks one
 * array. That moves the entries of the old buckets, so k's slot is looked
 * up after it (a slot found before may have been in an old bucket). */
static bool evict(shard *sh, int64_t budget, const map_key *k, dropped *d) {
  hmap *h = &sh->h;
  bool evicted = false;
  hmap_grow_all(h);
  map_slot keep = {NULL, 0};
  hmap_find(h, k, &keep);
  size_t n = hmap_nbuckets(h);
  for (size_t looked = 0; sh->bytes > budget && looked < 2 * n + 1; looked++) {
    map_bucket *b = &h->buckets[sh->hand++ & (n - 1)];
    for (; b && sh->bytes > budget; b = b->overflow)
      for (int i = 0; i < MAP_BUCKET_SLOTS && sh->bytes > budget; i++) {
        if (b->tophash[i] < MAP_TH_MIN || (b == keep.b && i == keep.i)) continue;
        if (MAP_RD(b->ref) & (1u << i)) {
          __atomic_fetch_and(&b->ref, (uint8_t)~(1u << i), __ATOMIC_RELAXED);
          continue;
        }
        if (d->n == 8) drop_all(d); /* box_release under the lock: rare */
        remove_slot(sh, (map_slot){b, i}, d);
        sh->evictions++;
        evicted = true;
      }
  }
  return evicted;
}

/* ---- ttls: sysmon sweeps the maps that have them ---- */

/* Under ttl_lock: into or out of the ring (at its end: swept last). */
static void ttl_link(smap *m) {
  runtime *rt = m->rt;
  smap *head = rt->ttl_maps;
  if (!head) {
    m->ttl_next = m->ttl_prev = m;
    MAP_WR(rt->ttl_maps, m);
  } else {
    m->ttl_next = head;
    m->ttl_prev = head->ttl_prev;
    head->ttl_prev->ttl_next = m;
    head->ttl_prev = m;
  }
  atomic_store(&m->ttl_listed, true);
}

static void ttl_unlink(smap *m) {
  runtime *rt = m->rt;
  if (!atomic_load(&m->ttl_listed)) return;
  if (m->ttl_next == m) {
    MAP_WR(rt->ttl_maps, NULL);
  } else {
    m->ttl_prev->ttl_next = m->ttl_next;
    m->ttl_next->ttl_prev = m->ttl_prev;
    if (rt->ttl_maps == m) MAP_WR(rt->ttl_maps, m->ttl_next);
  }
  m->ttl_next = m->ttl_prev = NULL;
  atomic_store(&m->ttl_listed, false);
}

static void ttl_register(smap *m) {
  rt_lock(&m->rt->ttl_lock);
  if (!atomic_load(&m->ttl_listed)) ttl_link(m);
  rt_unlock(&m->rt->ttl_lock);
}

static void ttl_deregister(smap *m) {
  rt_lock(&m->rt->ttl_lock);
  ttl_unlink(m);
  rt_unlock(&m->rt->ttl_lock);
}

/* Under sh's lock: one more entry with a ttl. */
static void expiring_one_more(smap *m, shard *sh) {
  MAP_WR(sh->nexpiring, sh->nexpiring + 1);
  if (!atomic_load_explicit(&m->ttl_listed, memory_order_acquire)) ttl_register(m);
}

#define SWEEP_EVERY_NS 10000000 /* sysmon sweeps every 10 ms */
#define SWEEP_BUCKETS 64        /* buckets per shard and sweep */

void map_sweep_expired(runtime *rt, int64_t now) {
  static _Thread_local int64_t last; /* sysmon's */
  if (now - last < SWEEP_EVERY_NS || !MAP_RD(rt->ttl_maps)) return;
  last = now;
  /* the next map of the ring that is not being freed */
  smap *m = NULL;
  rt_lock(&rt->ttl_lock);
  for (smap *c = rt->ttl_maps, *first = c; c;) {
    if (rt_tryretain(&c->obj)) {
      m = c;
      break;
    }
    c = c->ttl_next;
    if (c == first) break;
  }
  if (m) MAP_WR(rt->ttl_maps, m->ttl_next);
  rt_unlock(&rt->ttl_lock);
  if (!m) return;
  bool left = false;
  for (uint32_t i = 0; i < m->nshards; i++) {
    shard *sh = &m->shards[i];
    if (!MAP_RD(sh->nexpiring)) continue;
    dropped d = {.n = 0};
    LOCKED(sh);
    hmap_grow_some(&sh->h, SWEEP_BUCKETS); /* a growth no write finishes would stop the sweep */
    sweep(sh, now, SWEEP_BUCKETS, &d);
    left |= sh->nexpiring != 0;
    UNLOCKED(sh);
    drop_all(&d);
  }
  if (!left) {
    ttl_deregister(m);
    /* a ttl stored meanwhile found the map listed: look again */
    for (uint32_t i = 0; i < m->nshards && !left; i++) {
      rt_lock(&m->shards[i].lock);
      left = m->shards[i].nexpiring != 0;
      rt_unlock(&m->shards[i].lock);
    }
    if (left) ttl_register(m);
  }
  rt_release(&m->obj);
}

static void smap_free(smap *m) {
  ttl_deregister(m);
  for (uint32_t i = 0; i < m->nshards; i++) hmap_free(&m->shards[i].h, value_free, NULL);
  free(m->shards);
  rt_free(m);
}

void map_object_free(rt_object *o) { smap_free((smap *)o); }

/* Misuse: "bad argument #n to 'fname' (msg)" at the caller's line, self
 * counting as #1 as everywhere in lugo (the methods are called through
 * Lua wrappers and tail calls: Lua's own naming would say '?'). */
static int map_argerror(lua_State *L, int narg, const char *fname, const char *msg) {
  luaL_where(L, 1);
  lua_pushfstring(L, "bad argument #%d to '%s' (%s)", narg, fname, msg);
  lua_concat(L, 2);
  return lua_error(L);
}

static int map_typeerror(lua_State *L, int narg, const char *fname, const char *expected) {
  return map_argerror(L, narg, fname, lua_pushfstring(L, "%s expected, got %s", expected, luaL_typename(L, narg)));
}

static smap *check_map(lua_State *L, const char *fname) {
  smap *m = (smap *)rt_to_object(L, 1, RT_MAP);
  if (!m) map_typeerror(L, 1, fname, "map");
  return m;
}

static double check_number(lua_State *L, int idx, const char *fname) {
  if (lua_type(L, idx) != LUA_TNUMBER) map_typeerror(L, idx, fname, "number");
  return lua_tonumber(L, idx);
}

static void check_key(lua_State *L, smap *m, int idx, map_key *k, const char *fname) {
  *k = (map_key){0};
  switch (lua_type(L, idx)) {
  case LUA_TNUMBER: {
    double d = lua_tonumber(L, idx);
    if (d != d) map_argerror(L, idx, fname, "key is NaN");
    if (d == 0) d = 0; /* -0 and 0 are one key, as in a Lua table */
    k->kind = MK_NUM;
    memcpy(&k->bits, &d, sizeof d);
    break;
  }
  case LUA_TSTRING: {
    size_t len;
    k->s = lua_tolstring(L, idx, &len);
    if (len > UINT32_MAX) map_argerror(L, idx, fname, "key too long");
    k->len = (uint32_t)len;
    k->kind = MK_STR;
    break;
  }
  case LUA_TBOOLEAN: k->kind = lua_toboolean(L, idx) ? MK_TRUE : MK_FALSE; break;
  default:
    map_argerror(L, idx, fname, lua_pushfstring(L, "key must be a string, number or boolean, got %s", luaL_typename(L, idx)));
  }
  map_key_hash(k, m->seed);
}

static int64_t opt_ttl(lua_State *L, int idx, const char *fname) {
  if (lua_isnoneornil(L, idx)) return 0;
  lua_Number t = check_number(L, idx, fname);
  if (!(t >= 0)) map_argerror(L, idx, fname, "ttl must not be negative");
  if (t == 0) return 0;
  return nanotime() + (t > 1e9 ? (int64_t)1e18 : (int64_t)(t * 1e9));
}

/* A value ready to store: inline, or a new box (refs 1), copied from idx
 * with spawn's rules. Raises for nil and what cannot be copied. */
typedef struct newval {
  uint8_t kind;
  uint64_t v;
} newval;

/* Raise the message on top of the stack (value_encode's refusal) at the
 * caller's line, as spawn and a channel's send do. */
static int raise_at_caller(lua_State *L) {
  luaL_where(L, 1);
  lua_insert(L, -2);
  lua_concat(L, 2);
  return lua_error(L);
}

static newval make_value(lua_State *L, int idx, int64_t expire, const char *fname) {
  int t = lua_type(L, idx);
  if (t == LUA_TNIL || t == LUA_TNONE) map_argerror(L, idx, fname, "value is nil (use delete)");
  if (!expire && t == LUA_TNUMBER) {
    double d = lua_tonumber(L, idx);
    uint64_t bits;
    memcpy(&bits, &d, sizeof d);
    return (newval){V_NUM, bits};
  }
  if (!expire && t == LUA_TBOOLEAN) return (newval){lua_toboolean(L, idx) ? V_TRUE : V_FALSE, 0};
  rt_copy c = copy_make(L, idx, "value");
  if (c.kind == COPY_NONE) raise_at_caller(L);
  mbox *b = rt_malloc(sizeof *b);
  atomic_init(&b->refs, 1);
  b->expire = expire;
  b->c = c;
  b->size = (uint32_t)sizeof *b + (c.kind == COPY_BLOB ? (uint32_t)blob_bytes(c.blob) : 0);
  return (newval){V_BOX, (uint64_t)(uintptr_t)b};
}

static newval number_value(double d, int64_t expire) {
  if (!expire) {
    uint64_t bits;
    memcpy(&bits, &d, sizeof d);
    return (newval){V_NUM, bits};
  }
  mbox *b = rt_malloc(sizeof *b);
  atomic_init(&b->refs, 1);
  b->expire = expire;
  b->c = (rt_copy){.kind = COPY_NUM, .num = d};
  b->size = sizeof *b;
  return (newval){V_BOX, (uint64_t)(uintptr_t)b};
}

static void newval_free(newval *nv) {
  if (nv->kind == V_BOX) box_release((mbox *)(uintptr_t)nv->v);
  nv->kind = V_NONE;
}

/* A slot's value taken out under the lock: inline, or a box referenced. */
typedef struct outval {
  uint8_t kind;
  uint64_t v;
} outval;

/* A counter's count as an inline number (the cell is open under the lock). */
static outval ctr_out(uint64_t v) {
  double d = (double)ctr_count(v);
  outval o = {V_NUM, 0};
  memcpy(&o.v, &d, sizeof d);
  return o;
}

static outval take_ref(map_slot s) {
  outval o = {map_val_kind_of(s), s.b->vals[s.i]};
  if (o.kind == V_BOX) atomic_fetch_add_explicit(&((mbox *)(uintptr_t)o.v)->refs, 1, memory_order_relaxed);
  if (o.kind == V_CTR) o = ctr_out(o.v);
  return o;
}

/* Push box b's value: 1, or -1 with an error on the stack. */
static int decode_box(lua_State *L, const mbox *b) {
  switch (b->c.kind) {
  case COPY_NUM: lua_pushnumber(L, b->c.num); return 1;
  case COPY_TRUE: lua_pushboolean(L, 1); return 1;
  case COPY_FALSE: lua_pushboolean(L, 0); return 1;
  default: return value_decode_safe(L, b->c.blob);
  }
}

/* Push o (without the lock), dropping its reference. */
static int push_out(lua_State *L, outval o) {
  switch (o.kind) {
  case V_NUM: {
    double d;
    memcpy(&d, &o.v, sizeof d);
    lua_pushnumber(L, d);
    return 1;
  }
  case V_TRUE: lua_pushboolean(L, 1); return 1;
  case V_FALSE: lua_pushboolean(L, 0); return 1;
  case V_BOX: {
    mbox *b = (mbox *)(uintptr_t)o.v;
    int n = decode_box(L, b);
    box_release(b);
    if (n < 0) lua_error(L);
    return 1;
  }
  default: lua_pushnil(L); return 1;
  }
}

/* Store nv into slot s (new or existing) of sh; the old value to d. With
 * a capacity, evict to make room: true if anything was. */
static bool put_value(smap *m, shard *sh, map_slot s, bool existed, const map_key *k, newval nv, dropped *d) {
  if (existed) {
    sh->bytes -= map_val_kind_of(s) == V_BOX ? ((mbox *)(uintptr_t)s.b->vals[s.i])->size : 0;
    if (slot_expire(s)) MAP_WR(sh->nexpiring, sh->nexpiring - 1);
    drop(d, map_val_kind_of(s), s.b->vals[s.i]);
  } else {
    sh->bytes += SLOT_BYTES + key_bytes(k);
  }
  map_set_val(s, nv.kind, nv.v);
  if (nv.kind == V_BOX) {
    mbox *b = (mbox *)(uintptr_t)nv.v;
    sh->bytes += b->size;
    if (b->expire) expiring_one_more(m, sh);
  }
  if (m->capacity && sh->bytes > m->budget) return evict(sh, m->budget, k, d);
  return false;
}

/* An entry that alone is more than a shard may hold. */
static bool too_big(smap *m, const map_key *k, newval nv) {
  if (!m->capacity) return false;
  int64_t n = SLOT_BYTES + key_bytes(k) + (nv.kind == V_BOX ? ((mbox *)(uintptr_t)nv.v)->size : 0);
  return n > m->budget;
}

static int no_memory(lua_State *L, newval *nv) {
  newval_free(nv);
  lua_pushnil(L);
  lua_pushliteral(L, "no memory");
  return 2;
}

/* What a store would take beyond the budget with nothing evicted. */
static bool would_overflow(smap *m, shard *sh, const map_key *k, newval nv, bool existed, map_slot s) {
  if (!m->capacity) return false;
  int64_t add = nv.kind == V_BOX ? ((mbox *)(uintptr_t)nv.v)->size : 0;
  if (existed) add -= map_val_kind_of(s) == V_BOX ? ((mbox *)(uintptr_t)s.b->vals[s.i])->size : 0;
  else add += SLOT_BYTES + key_bytes(k);
  return sh->bytes + add > m->budget;
}

/* Values equal for compare_and_swap: scalars by value, strings by bytes,
 * runtime objects by identity (value.c's blob_equal). */
static bool value_equal(map_slot s, const rt_copy *old) {
  uint8_t vk = map_val_kind_of(s);
  rt_copy cur;
  if (vk == V_BOX) cur = ((mbox *)(uintptr_t)s.b->vals[s.i])->c;
  else if (vk == V_NUM) {
    cur.kind = COPY_NUM;
    memcpy(&cur.num, &s.b->vals[s.i], sizeof cur.num);
  } else cur.kind = vk == V_TRUE ? COPY_TRUE : COPY_FALSE;
  if (cur.kind != old->kind) return false;
  if (cur.kind == COPY_NUM) return cur.num == old->num;
  if (cur.kind == COPY_BLOB) return blob_equal(cur.blob, old->blob);
  return true;
}

/* The old value of compare_and_swap/compare_and_delete: comparable ones
 * only, as Go's CompareAndSwap panics on an uncomparable one. */
static void check_comparable(lua_State *L, int idx, const char *fname) {
  int t = lua_type(L, idx);
  if (t == LUA_TTABLE || t == LUA_TFUNCTION || t == LUA_TNIL || t == LUA_TNONE)
    map_argerror(L, idx, fname, lua_pushfstring(L, "old value must be a string, number, boolean or runtime object, got %s",
                                          luaL_typename(L, idx)));
}

static rt_copy comparable(lua_State *L, int idx, const char *fname) {
  check_comparable(L, idx, fname);
  rt_copy c = copy_make(L, idx, "value");
  if (c.kind == COPY_NONE) raise_at_caller(L);
  return c;
}

/* The map at #1 and the key at #2 of method fname. */
static smap *map_and_key(lua_State *L, map_key *k, const char *fname) {
  smap *m = check_map(L, fname);
  check_key(L, m, 2, k, fname);
  return m;
}

/* v, true for a value taken (o), else nil, false. */
static int push_loaded(lua_State *L, outval o) {
  if (o.kind == V_NONE) {
    lua_pushnil(L);
    lua_pushboolean(L, 0);
    return 2;
  }
  push_out(L, o);
  lua_pushboolean(L, 1);
  return 2;
}

/* true[, "forcible"] after a write. */
static int push_stored(lua_State *L, bool forcible) {
  lua_pushboolean(L, 1);
  if (!forcible) return 1;
  lua_pushliteral(L, "forcible");
  return 2;
}

static int push_not_found(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "not found");
  return 2;
}

/* The count unchanged since s: what was read in between is one state. */
static bool seq_still(shard *sh, uint32_t s) {
  rt_fence(memory_order_acquire);
  return atomic_load_explicit(&sh->seq, memory_order_relaxed) == s;
}

enum { OPT_RETRY = -1, OPT_ABSENT, OPT_FOUND, OPT_LOCK };

/* A slot's value as a lock-free load found it (a box stays valid until
 * this P is next quiescent: qsbr.c). */
typedef struct opt_hit {
  uint8_t vk;
  uint64_t v;
  map_bucket *b;
  int i;
} opt_hit;

/* One look at shard sh for k without its lock, at count s (even). */
static int opt_look(shard *sh, const map_key *k, opt_hit *hit, uint32_t s) {
  hmap *h = &sh->h;
  map_bucket *buckets = MAP_GET(h->buckets);
  uint8_t B = MAP_RD(h->B);
  map_bucket *old = MAP_GET(h->oldbuckets);
  bool same = MAP_RD(h->same_size);
  size_t nevac = MAP_RD(h->nevacuate);
  if (!seq_still(sh, s)) return OPT_RETRY;
  if (!buckets) return OPT_ABSENT;
  map_bucket *b = &buckets[k->hash & (nbuckets_of(B) - 1)];
  if (old) {
    size_t oi = k->hash & ((same ? nbuckets_of(B) : nbuckets_of(B) >> 1) - 1);
    if (oi >= nevac && MAP_RD(old[oi].tophash[0]) != MAP_TH_EVACUATED) b = &old[oi];
  }
  uint8_t top = tophash(k->hash);
  for (int walked = 0; b; b = MAP_GET(b->overflow)) {
    if (++walked > 4096) return OPT_RETRY; /* a chain changing under us: look again */
    for (int i = 0; i < MAP_BUCKET_SLOTS; i++) {
      if (MAP_RD(b->tophash[i]) != top) continue;
      uint8_t kinds = MAP_RD(b->kinds[i]);
      uint64_t key = MAP_GET(b->keys[i]), v = MAP_GET(b->vals[i]);
      if (!seq_still(sh, s)) return OPT_RETRY; /* kinds, key and value agree: key may be followed */
      if ((kinds & 15) != k->kind) continue;
      if (k->kind == MK_STR) {
        const map_str *ms = (const map_str *)(uintptr_t)key;
        if (ms->len != k->len || memcmp(ms->s, k->s, k->len) != 0) continue;
      } else if (key != k->bits) {
        continue;
      }
      *hit = (opt_hit){(uint8_t)(kinds >> 4), v, b, i};
      return OPT_FOUND;
    }
  }
  return seq_still(sh, s) ? OPT_ABSENT : OPT_RETRY;
}

/* Look k up without the shard's lock, as Go's sync.Map reads its read-only
 * map: a hit writes no shared line. OPT_LOCK when writers kept moving. */
static int opt_find(shard *sh, const map_key *k, opt_hit *hit) {
  for (int tries = 0; tries < 8; tries++) {
    uint32_t s = atomic_load_explicit(&sh->seq, memory_order_acquire);
    if (s & 1) {
      cpu_relax();
      continue;
    }
    int r = opt_look(sh, k, hit, s);
    if (r != OPT_RETRY) return r;
  }
  return OPT_LOCK;
}

/* A load's CLOCK mark: one write per eviction sweep, not per load. */
static void mark_used(smap *m, map_bucket *b, int i) {
  if (m->capacity && !(MAP_RD(b->ref) & (1u << i))) __atomic_fetch_or(&b->ref, (uint8_t)(1u << i), __ATOMIC_RELAXED);
}

/* map_new(capacity bytes or 0, shards or 0) */
static int l_map_new(lua_State *L) {
  runtime *rt = getp()->rt;
  lua_Number cap = luaL_optnumber(L, 1, 0);
  if (!(cap >= 0) || cap > 9e18) map_argerror(L, 1, "map", "capacity out of range");
  uint32_t want = (uint32_t)luaL_optinteger(L, 2, 0);
  bool chosen = want != 0;
  if (!chosen) want = 4 * (uint32_t)rt->gomaxprocs;
  uint32_t n = 8;
  while (n < want && n < 4096) n *= 2;
  /* A shard evicts within its share of the capacity: keep the shares at
   * 64 KiB at least, or few entries would compete in each. */
  while (!chosen && cap > 0 && n > 8 && cap / n < 65536) n /= 2;
  smap *m = rt_calloc(1, sizeof *m);
  rt_object_init(&m->obj, RT_MAP);
  m->rt = rt;
  m->nshards = n;
  m->seed = process_seed(rt) ^ XXH3_64bits(&m, sizeof m);
  m->capacity = (int64_t)cap;
  m->budget = m->capacity / n;
  if (m->capacity && m->budget < 1) m->budget = 1;
  if (posix_memalign((void **)&m->shards, 64, n * sizeof *m->shards)) rt_throw("runtime: out of memory");
  memset(m->shards, 0, n * sizeof *m->shards);
  for (uint32_t i = 0; i < n; i++) m->shards[i].h.seed = m->seed;
  rt_push_object(L, &m->obj);
  rt_release(&m->obj); /* the proxy holds it */
  return 1;
}

/* load(k) -> v, true | nil, false */
static int l_map_load(lua_State *L) {
  map_key k;
  smap *m = map_and_key(L, &k, "load");
  shard *sh = shard_of(m, &k);
  opt_hit hit;
  switch (opt_find(sh, &k, &hit)) {
  case OPT_ABSENT: return push_loaded(L, (outval){V_NONE, 0});
  case OPT_FOUND:
    if (hit.vk == V_CTR) {
      int64_t n = ctr_count(hit.v);
      if (!CTR_OPEN(n)) break; /* closed meanwhile: the locked path sees what replaced it */
      lua_pushnumber(L, (lua_Number)n);
      lua_pushboolean(L, 1);
      return 2;
    }
    if (hit.vk == V_NUM || hit.vk == V_TRUE || hit.vk == V_FALSE) {
      mark_used(m, hit.b, hit.i);
      return push_loaded(L, (outval){hit.vk, hit.v});
    }
    if (hit.vk == V_BOX) {
      const mbox *b = (const mbox *)(uintptr_t)hit.v;
      int64_t exp = MAP_RD(b->expire);
      if (exp && exp <= nanotime()) break; /* expired: the locked path removes it */
      mark_used(m, hit.b, hit.i);
      /* no reference taken (it would be a shared write): the box is
       * retired, not freed, while this P decodes it */
      p_t *pp = getp();
      pp->qs_reading++;
      int n = decode_box(L, b);
      pp->qs_reading--;
      if (n < 0) return lua_error(L);
      lua_pushboolean(L, 1);
      return 2;
    }
    break;
  default: break;
  }
  dropped d = {.n = 0};
  map_slot s;
  outval o = {V_NONE, 0};
  LOCKED(sh);
  if (find_live(sh, &k, &s, 0, &d)) {
    o = take_ref(s);
    mark_used(m, s.b, s.i);
  }
  UNLOCKED(sh);
  drop_all(&d);
  return push_loaded(L, o);
}

/* store(k, v[, ttl]) -> true[, "forcible"] */
static int store(lua_State *L, bool safe) {
  const char *fn = safe ? "safe_store" : "store";
  map_key k;
  smap *m = map_and_key(L, &k, fn);
  int64_t expire = opt_ttl(L, 4, fn);
  newval nv = make_value(L, 3, expire, fn);
  if (too_big(m, &k, nv)) return no_memory(L, &nv);
  shard *sh = shard_of(m, &k);
  dropped d = {.n = 0};
  int64_t now = 0; /* read when a ttl needs it */
  LOCKED(sh);
  sweep_step(sh, now, &d);
  bool existed;
  map_slot s = hmap_assign(&sh->h, &k, &existed); /* an expired entry is simply replaced */
  if (safe && would_overflow(m, sh, &k, nv, existed, s)) {
    if (!existed) hmap_clear_slot(&sh->h, s);
    UNLOCKED(sh);
    drop_all(&d);
    newval_free(&nv);
    lua_pushnil(L);
    lua_pushliteral(L, "no memory");
    return 2;
  }
  bool forcible = put_value(m, sh, s, existed, &k, nv, &d);
  UNLOCKED(sh);
  drop_all(&d);
  return push_stored(L, forcible);
}
static int l_map_store(lua_State *L) { return store(L, false); }
static int l_map_safe_store(lua_State *L) { return store(L, true); }

/* add(k, v[, ttl]) -> true[, "forcible"] | false, "exists" */
static int l_map_add(lua_State *L) {
  map_key k;
  smap *m = map_and_key(L, &k, "add");
  int64_t expire = opt_ttl(L, 4, "add");
  newval nv = make_value(L, 3, expire, "add");
  if (too_big(m, &k, nv)) return no_memory(L, &nv);
  shard *sh = shard_of(m, &k);
  dropped d = {.n = 0};
  int64_t now = 0; /* read when a ttl needs it */
  LOCKED(sh);
  sweep_step(sh, now, &d);
  map_slot s;
  if (find_live(sh, &k, &s, now, &d)) {
    UNLOCKED(sh);
    drop_all(&d);
    newval_free(&nv);
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "exists");
    return 2;
  }
  bool existed;
  s = hmap_assign(&sh->h, &k, &existed);
  bool forcible = put_value(m, sh, s, existed, &k, nv, &d);
  UNLOCKED(sh);
  drop_all(&d);
  return push_stored(L, forcible);
}

/* load_or_store(k, v) -> actual, loaded */
static int l_map_load_or_store(lua_State *L) {
  map_key k;
  smap *m = map_and_key(L, &k, "load_or_store");
  shard *sh = shard_of(m, &k);
  dropped d = {.n = 0};
  map_slot s;
  outval o = {V_NONE, 0};
  int64_t now = 0; /* read when a ttl needs it */
  /* Look first: a hit needs no copy of v. */
  LOCKED(sh);
  if (find_live(sh, &k, &s, now, &d)) o = take_ref(s);
  UNLOCKED(sh);
  drop_all(&d);
  if (o.kind != V_NONE) {
    push_out(L, o);
    lua_pushboolean(L, 1);
    return 2;
  }
  newval nv = make_value(L, 3, 0, "load_or_store");
  LOCKED(sh);
  sweep_step(sh, now, &d);
  if (find_live(sh, &k, &s, now, &d)) { /* another goroutine stored it meanwhile */
    o = take_ref(s);
    UNLOCKED(sh);
    drop_all(&d);
    newval_free(&nv);
    push_out(L, o);
    lua_pushboolean(L, 1);
    return 2;
  }
  bool existed;
  s = hmap_assign(&sh->h, &k, &existed);
  put_value(m, sh, s, existed, &k, nv, &d);
  UNLOCKED(sh);
  drop_all(&d);
  lua_pushvalue(L, 3);
  lua_pushboolean(L, 0);
  return 2;
}

/* load_and_delete(k) -> v, true | nil, false */
static int l_map_load_and_delete(lua_State *L) {
  map_key k;
  smap *m = map_and_key(L, &k, "load_and_delete");
  shard *sh = shard_of(m, &k);
  dropped d = {.n = 0};
  map_slot s;
  outval o = {V_NONE, 0};
  LOCKED(sh);
  if (find_live(sh, &k, &s, nanotime(), &d)) {
    o = take_ref(s);
    remove_slot(sh, s, &d);
  }
  UNLOCKED(sh);
  drop_all(&d);
  return push_loaded(L, o);
}

/* delete(k) */
static int l_map_delete(lua_State *L) {
  map_key k;
  smap *m = map_and_key(L, &k, "delete");
  shard *sh = shard_of(m, &k);
  dropped d = {.n = 0};
  map_slot s;
  LOCKED(sh);
  if (hmap_find(&sh->h, &k, &s)) remove_slot(sh, s, &d);
  UNLOCKED(sh);
  drop_all(&d);
  return 0;
}

/* swap(k, v) -> previous, loaded */
static int l_map_swap(lua_State *L) {
  map_key k;
  smap *m = map_and_key(L, &k, "swap");
  newval nv = make_value(L, 3, 0, "swap");
  shard *sh = shard_of(m, &k);
  dropped d = {.n = 0};
  map_slot s;
  outval o = {V_NONE, 0};
  int64_t now = 0; /* read when a ttl needs it */
  LOCKED(sh);
  sweep_step(sh, now, &d);
  bool existed = find_live(sh, &k, &s, now, &d);
  if (existed) o = take_ref(s);
  s = hmap_assign(&sh->h, &k, &existed);
  put_value(m, sh, s, existed, &k, nv, &d);
  UNLOCKED(sh);
  drop_all(&d);
  return push_loaded(L, o);
}

/* compare_and_swap(k, old, new) -> swapped */
static int l_map_compare_and_swap(lua_State *L) {
  map_key k;
  smap *m = map_and_key(L, &k, "compare_and_swap");
  /* Nothing is allocated before the last check that may raise: the new
   * value is made once old's type is checked, old's copy last (freeing the
   * new value if old cannot be copied). */
  check_comparable(L, 3, "compare_and_swap");
  newval nv = make_value(L, 4, 0, "compare_and_swap");
  rt_copy old = copy_make(L, 3, "value");
  if (old.kind == COPY_NONE) {
    newval_free(&nv);
    raise_at_caller(L);
  }
  shard *sh = shard_of(m, &k);
  dropped d = {.n = 0};
  map_slot s;
  bool swapped = false;
  int64_t now = 0; /* read when a ttl needs it */
  LOCKED(sh);
  if (find_live(sh, &k, &s, now, &d) && value_equal(s, &old)) {
    put_value(m, sh, s, true, &k, nv, &d);
    swapped = true;
  }
  UNLOCKED(sh);
  drop_all(&d);
  copy_free(&old);
  if (!swapped) newval_free(&nv);
  lua_pushboolean(L, swapped);
  return 1;
}

/* compare_and_delete(k, old) -> deleted */
static int l_map_compare_and_delete(lua_State *L) {
  map_key k;
  smap *m = map_and_key(L, &k, "compare_and_delete");
  rt_copy old = comparable(L, 3, "compare_and_delete");
  shard *sh = shard_of(m, &k);
  dropped d = {.n = 0};
  map_slot s;
  bool deleted = false;
  LOCKED(sh);
  if (find_live(sh, &k, &s, nanotime(), &d) && value_equal(s, &old)) {
    remove_slot(sh, s, &d);
    deleted = true;
  }
  UNLOCKED(sh);
  drop_all(&d);
  copy_free(&old);
  lua_pushboolean(L, deleted);
  return 1;
}

/* incr(k, delta[, init[, init_ttl]]) -> new | nil, "not found" | nil, "not a number" */
static int l_map_incr(lua_State *L) {
  map_key k;
  smap *m = map_and_key(L, &k, "incr");
  double delta = check_number(L, 3, "incr");
  bool has_init = !lua_isnoneornil(L, 4);
  double init = has_init ? check_number(L, 4, "incr") : 0;
  int64_t expire = opt_ttl(L, 5, "incr");
  shard *sh = shard_of(m, &k);
  dropped d = {.n = 0};
  map_slot s;
  const char *err = NULL;
  double result = 0;
  int64_t now = 0; /* read when a ttl needs it */
  LOCKED(sh);
  sweep_step(sh, now, &d);
  if (find_live(sh, &k, &s, now, &d)) {
    uint8_t vk = map_val_kind_of(s);
    if (vk == V_NUM) {
      double cur;
      memcpy(&cur, &s.b->vals[s.i], sizeof cur);
      result = cur + delta;
      memcpy(&s.b->vals[s.i], &result, sizeof result);
    } else if (vk == V_BOX && ((mbox *)(uintptr_t)s.b->vals[s.i])->c.kind == COPY_NUM) {
      mbox *b = (mbox *)(uintptr_t)s.b->vals[s.i];
      result = b->c.num + delta; /* a new box: loads in flight keep the old one */
      put_value(m, sh, s, true, &k, number_value(result, b->expire), &d);
    } else {
      err = "not a number";
    }
  } else if (has_init) {
    result = init + delta;
    bool existed;
    s = hmap_assign(&sh->h, &k, &existed);
    put_value(m, sh, s, existed, &k, number_value(result, expire), &d);
  } else {
    err = "not found";
  }
  UNLOCKED(sh);
  drop_all(&d);
  if (err) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushnumber(L, result);
  return 1;
}

/* ttl(k) -> seconds left (0: none) | nil, "not found" */
static int l_map_ttl(lua_State *L) {
  map_key k;
  smap *m = map_and_key(L, &k, "ttl");
  shard *sh = shard_of(m, &k);
  dropped d = {.n = 0};
  map_slot s;
  int64_t now = nanotime(), exp = -1;
  LOCKED(sh);
  if (find_live(sh, &k, &s, now, &d)) exp = slot_expire(s);
  UNLOCKED(sh);
  drop_all(&d);
  if (exp < 0) {
    return push_not_found(L);
  }
  lua_pushnumber(L, exp ? (double)(exp - now) / 1e9 : 0);
  return 1;
}

/* expire(k, ttl) -> true | nil, "not found" (ttl 0: never) */
static int l_map_expire(lua_State *L) {
  map_key k;
  smap *m = map_and_key(L, &k, "expire");
  check_number(L, 3, "expire");
  int64_t expire = opt_ttl(L, 3, "expire");
  shard *sh = shard_of(m, &k);
  dropped d = {.n = 0};
  map_slot s;
  bool found;
  LOCKED(sh);
  found = find_live(sh, &k, &s, nanotime(), &d);
  if (found) {
    uint8_t vk = map_val_kind_of(s);
    if (vk == V_BOX) {
      mbox *b = (mbox *)(uintptr_t)s.b->vals[s.i];
      if (expire && !b->expire) expiring_one_more(m, sh);
      else if (!expire && b->expire) MAP_WR(sh->nexpiring, sh->nexpiring - 1);
      MAP_WR(b->expire, expire); /* lock-free loads read it */
    } else if (expire) { /* an inline scalar gets a box to hold its expiry */
      mbox *nb = rt_malloc(sizeof *nb);
      atomic_init(&nb->refs, 1);
      nb->expire = expire;
      nb->size = sizeof *nb;
      if (vk == V_NUM) {
        nb->c.kind = COPY_NUM;
        memcpy(&nb->c.num, &s.b->vals[s.i], sizeof nb->c.num);
      } else {
        nb->c.kind = vk == V_TRUE ? COPY_TRUE : COPY_FALSE;
      }
      put_value(m, sh, s, true, &k, (newval){V_BOX, (uint64_t)(uintptr_t)nb}, &d);
    }
  }
  UNLOCKED(sh);
  drop_all(&d);
  if (!found) {
    return push_not_found(L);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* len() -> entries, those whose ttl passed but not yet removed included */
static int l_map_len(lua_State *L) {
  smap *m = check_map(L, "len");
  size_t n = 0;
  /* no lock: each shard's count as it was at some moment */
  for (uint32_t i = 0; i < m->nshards; i++) n += MAP_RD(m->shards[i].h.count);
  lua_pushnumber(L, (lua_Number)n);
  return 1;
}

/* The live entries of a shard, copied out under its lock. */
typedef struct snap {
  map_key *keys; /* strings copied: the slot may go once the lock is let go */
  outval *vals;
  size_t n, cap;
  int64_t now;
} snap;

static void snap_add(map_slot s, void *arg) {
  snap *sn = arg;
  int64_t exp = slot_expire(s);
  if (exp && exp <= sn->now) return;
  if (sn->n == sn->cap) {
    sn->cap = sn->cap ? 2 * sn->cap : 64;
    sn->keys = rt_realloc(sn->keys, sn->cap * sizeof *sn->keys);
    sn->vals = rt_realloc(sn->vals, sn->cap * sizeof *sn->vals);
  }
  map_key *k = &sn->keys[sn->n];
  *k = (map_key){.kind = map_key_kind_of(s)};
  if (k->kind == MK_STR) {
    map_str *ms = (map_str *)(uintptr_t)s.b->keys[s.i];
    char *copy = rt_malloc(ms->len ? ms->len : 1);
    memcpy(copy, ms->s, ms->len);
    k->s = copy;
    k->len = ms->len;
  } else {
    k->bits = s.b->keys[s.i];
  }
  sn->vals[sn->n++] = take_ref(s);
}

static void push_key(lua_State *L, const map_key *k) {
  switch (k->kind) {
  case MK_STR: lua_pushlstring(L, k->s, k->len); break;
  case MK_NUM: {
    double d;
    memcpy(&d, &k->bits, sizeof d);
    lua_pushnumber(L, d);
    break;
  }
  default: lua_pushboolean(L, k->kind == MK_TRUE);
  }
}

/* map_shard_entries(m, i) -> {k1, v1, k2, v2, ...} of shard i (0-based),
 * or nil past the last: range() calls its function from Lua, where it may
 * block. */
static int l_map_shard_entries(lua_State *L) {
  smap *m = check_map(L, "range");
  lua_Integer i = luaL_checkinteger(L, 2);
  if (i < 0 || i >= (lua_Integer)m->nshards) {
    lua_pushnil(L);
    return 1;
  }
  shard *sh = &m->shards[i];
  snap sn = {.now = nanotime()};
  LOCKED(sh);
  hmap_each(&sh->h, snap_add, &sn);
  UNLOCKED(sh);
  lua_createtable(L, (int)(2 * sn.n), 0);
  int t = lua_gettop(L);
  for (size_t e = 0; e < sn.n; e++) {
    push_key(L, &sn.keys[e]);
    if (sn.keys[e].kind == MK_STR) rt_free((void *)sn.keys[e].s);
    sn.keys[e].kind = 0;
    outval o = sn.vals[e];
    sn.vals[e].kind = V_NONE;
    if (o.kind == V_BOX && ((mbox *)(uintptr_t)o.v)->c.kind == COPY_BLOB) {
      mbox *b = (mbox *)(uintptr_t)o.v;
      int n = value_decode_safe(L, b->c.blob);
      box_release(b);
      if (n < 0) { /* free what is left, then raise */
        for (size_t r = e + 1; r < sn.n; r++) {
          if (sn.keys[r].kind == MK_STR) rt_free((void *)sn.keys[r].s);
          if (sn.vals[r].kind == V_BOX) box_release((mbox *)(uintptr_t)sn.vals[r].v);
        }
        rt_free(sn.keys);
        rt_free(sn.vals);
        lua_error(L);
      }
    } else {
      push_out(L, o);
    }
    lua_rawseti(L, t, (int)(2 * e + 2)); /* the value, then the key below it */
    lua_rawseti(L, t, (int)(2 * e + 1));
  }
  rt_free(sn.keys);
  rt_free(sn.vals);
  return 1;
}

/* clear() */
static int l_map_clear(lua_State *L) {
  smap *m = check_map(L, "clear");
  for (uint32_t i = 0; i < m->nshards; i++) {
    shard *sh = &m->shards[i];
    hmap old;
    LOCKED(sh);
    old = sh->h;
    hmap_reset(&sh->h);
    sh->bytes = 0;
    sh->hand = 0;
    MAP_WR(sh->nexpiring, 0);
    UNLOCKED(sh);
    hmap_free(&old, value_free, NULL);
  }
  return 0;
}

/* stats() -> { len, bytes, capacity, shards, buckets, overflow, growing, evictions, expirations } */
static int l_map_stats(lua_State *L) {
  smap *m = check_map(L, "stats");
  double len = 0, bytes = 0, buckets = 0, overflow = 0, growing = 0, evictions = 0, expirations = 0;
  for (uint32_t i = 0; i < m->nshards; i++) {
    shard *sh = &m->shards[i];
    LOCKED(sh);
    len += (double)sh->h.count;
    bytes += (double)sh->bytes;
    buckets += (double)hmap_nbuckets(&sh->h);
    overflow += sh->h.noverflow;
    growing += sh->h.oldbuckets != NULL;
    evictions += (double)sh->evictions;
    expirations += (double)sh->expirations;
    UNLOCKED(sh);
  }
  lua_createtable(L, 0, 9);
  lua_pushnumber(L, len), lua_setfield(L, -2, "len");
  lua_pushnumber(L, bytes), lua_setfield(L, -2, "bytes");
  lua_pushnumber(L, (double)m->capacity), lua_setfield(L, -2, "capacity");
  lua_pushnumber(L, m->nshards), lua_setfield(L, -2, "shards");
  lua_pushnumber(L, buckets), lua_setfield(L, -2, "buckets");
  lua_pushnumber(L, overflow), lua_setfield(L, -2, "overflow_buckets");
  lua_pushnumber(L, growing), lua_setfield(L, -2, "growing_shards");
  lua_pushnumber(L, evictions), lua_setfield(L, -2, "evictions");
  lua_pushnumber(L, expirations), lua_setfield(L, -2, "expirations");
  return 1;
}

void map_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"map_new", l_map_new},
      {"map_shard_entries", l_map_shard_entries},
      {NULL, NULL},
  };
  luaL_register(L, NULL, funcs);
  /* the methods, in a table Lua hangs on the metatable's __index */
  static const luaL_Reg methods[] = {
      {"load", l_map_load},
      {"store", l_map_store},
      {"safe_store", l_map_safe_store},
      {"add", l_map_add},
      {"load_or_store", l_map_load_or_store},
      {"load_and_delete", l_map_load_and_delete},
      {"delete", l_map_delete},
      {"swap", l_map_swap},
      {"compare_and_swap", l_map_compare_and_swap},
      {"compare_and_delete", l_map_compare_and_delete},
      {"incr", l_map_incr},
      {"ttl", l_map_ttl},
      {"expire", l_map_expire},
      {"len", l_map_len},
      {"clear", l_map_clear},
      {"stats", l_map_stats},
      {NULL, NULL},
  };
  lua_newtable(L);
  luaL_register(L, NULL, methods);
  lua_setfield(L, -2, "map_methods");
}

/* ---- FFI fast paths: scalar keys and values, no Lua C API ---- */
/* The key kinds Lua passes: MK_* (MK_NUM with num; MK_STR with s, len;
 * MK_FALSE, MK_TRUE). A NaN key takes the slow path, which raises. */
static bool ffi_key(smap *m, int32_t kind, const char *s, size_t len, double num, map_key *k) {
  *k = (map_key){.kind = (uint8_t)kind};
  if (kind == MK_NUM) {
    if (num != num) return false;
    if (num == 0) num = 0;
    memcpy(&k->bits, &num, sizeof num);
  } else if (kind == MK_STR) {
    if (len > UINT32_MAX) return false;
    k->s = s;
    k->len = (uint32_t)len;
  } else if (kind != MK_TRUE && kind != MK_FALSE) {
    return false;
  }
  map_key_hash(k, m->seed);
  return true;
}

/* load: 0 absent, 1 a number in *out, 2 false, 3 true, -1 take the slow
 * path (a boxed value, a bad key). */
int32_t map_load_fast(proxy *px, int32_t kind, const char *s, size_t len, double num, double *out) {
  smap *m = (smap *)px->obj;
  map_key k;
  if (!ffi_key(m, kind, s, len, num, &k)) return -1;
  shard *sh = shard_of(m, &k);
  opt_hit hit;
  switch (opt_find(sh, &k, &hit)) {
  case OPT_ABSENT: return 0;
  case OPT_FOUND:
    if (hit.vk == V_CTR) {
      int64_t n = ctr_count(hit.v);
      if (!CTR_OPEN(n)) break; /* closed meanwhile: take the lock */
      *out = (double)n;
      return 1;
    }
    if (hit.vk == V_NUM) memcpy(out, &hit.v, sizeof *out);
    else if (hit.vk != V_TRUE && hit.vk != V_FALSE) return -1; /* a box: the C API's load */
    mark_used(m, hit.b, hit.i);
    return hit.vk == V_NUM ? 1 : hit.vk == V_TRUE ? 3 : 2;
  default: break; /* writers kept the count moving: take the lock */
  }
  map_slot sl;
  int32_t r = 0;
  LOCKED(sh);
  if (hmap_find(&sh->h, &k, &sl)) {
    uint8_t vk = map_val_kind_of(sl);
    if (vk == V_CTR) {
      outval o = ctr_out(sl.b->vals[sl.i]);
      memcpy(out, &o.v, sizeof *out);
      r = 1;
    } else if (vk == V_NUM) {
      memcpy(out, &sl.b->vals[sl.i], sizeof *out);
      r = 1;
    } else if (vk == V_FALSE || vk == V_TRUE) {
      r = vk == V_TRUE ? 3 : 2;
    } else {
      r = -1; /* a box: copies, ttls, CLOCK bits are the slow path's */
    }
    if (r > 0) mark_used(m, sl.b, sl.i);
  }
  UNLOCKED(sh);
  return r;
}

/* store of a number (vkind 1) or a boolean (2 false, 3 true) without a
 * ttl in a map without a capacity: 1 done, -1 take the slow path. */
int32_t map_store_fast(proxy *px, int32_t kind, const char *s, size_t len, double num, int32_t vkind, double v) {
  smap *m = (smap *)px->obj;
  map_key k;
  if (m->capacity || !ffi_key(m, kind, s, len, num, &k)) return -1;
  newval nv;
  if (vkind == 1) {
    nv.kind = V_NUM;
    memcpy(&nv.v, &v, sizeof v);
  } else {
    nv.kind = vkind == 3 ? V_TRUE : V_FALSE;
    nv.v = 0;
  }
  shard *sh = shard_of(m, &k);
  dropped d = {.n = 0};
  LOCKED(sh);
  sweep_step(sh, 0, &d);
  bool existed;
  map_slot sl = hmap_assign(&sh->h, &k, &existed);
  put_value(m, sh, sl, existed, &k, nv, &d);
  UNLOCKED(sh);
  drop_all(&d);
  return 1;
}

/* incr of an inline number (no ttl on the entry, none asked for the new
 * one): 1 and the new value in *out, 0 absent without init, -1 slow path
 * (a boxed value or a bad key: the slow path gives the error). */
int32_t map_incr_fast(proxy *px, int32_t kind, const char *s, size_t len, double num, double delta,
                      int32_t has_init, double init, double *out) {
  smap *m = (smap *)px->obj;
  map_key k;
  if (!ffi_key(m, kind, s, len, num, &k)) return -1;
  shard *sh = shard_of(m, &k);
  bool whole_delta = whole(delta);
  opt_hit hit;
  if (whole_delta && opt_find(sh, &k, &hit) == OPT_FOUND && hit.vk == V_CTR) {
    /* a counter: one lock xadd, as Go's atomic.AddInt64 */
    int64_t prev = ctr_add(hit.v, (int64_t)delta);
    if (CTR_OPEN(prev)) {
      *out = (double)(prev + (int64_t)delta);
      return 1;
    }
    /* closed before the add (which lands on a dead cell): take the lock */
  }
  dropped d = {.n = 0};
  int32_t r;
  LOCKED(sh);
  map_slot sl;
  if (hmap_find(&sh->h, &k, &sl)) {
    uint8_t vk = map_val_kind_of(sl);
    if (vk == V_CTR && !whole_delta) { /* a fraction: a plain number again */
      settle(sl);
      vk = V_NUM;
    }
    if (vk == V_CTR) {
      int64_t prev = ctr_add(sl.b->vals[sl.i], (int64_t)delta);
      *out = (double)(prev + (int64_t)delta);
      r = 1;
    } else if (vk == V_NUM) {
      double cur;
      memcpy(&cur, &sl.b->vals[sl.i], sizeof cur);
      *out = cur + delta;
      if (whole_delta && whole(cur) && whole(*out) && !m->capacity) { /* from now on, without the lock */
        mctr *c = aligned_alloc(64, sizeof *c); /* rt_free frees it */
        if (!c) rt_throw("runtime: out of memory (map counter)");
        atomic_init(&c->n, (int64_t)*out);
        map_set_val(sl, V_CTR, (uint64_t)(uintptr_t)c);
      } else {
        uint64_t bits;
        memcpy(&bits, out, sizeof bits);
        map_set_val(sl, V_NUM, bits);
      }
      r = 1;
    } else {
      r = -1;
    }
  } else if (has_init && !m->capacity) {
    sweep_step(sh, 0, &d);
    *out = init + delta;
    bool existed;
    sl = hmap_assign(&sh->h, &k, &existed);
    put_value(m, sh, sl, existed, &k, number_value(*out, 0), &d);
    r = 1;
  } else {
    r = has_init ? -1 : 0;
  }
  UNLOCKED(sh);
  drop_all(&d);
  return r;
}
