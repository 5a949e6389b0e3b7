/*
 * map.h — Go's hashmap (map.c), for the runtime and its unit tests.
 *
 * An hmap is not synchronized: its owner serializes every call (sync.map
 * holds the shard's lock). Keys are numbers, strings or booleans, compared
 * by kind and value; a slot's value is 8 bytes the caller interprets (an
 * inline scalar, or a pointer it owns), tagged with a 4-bit value kind.
 */
#ifndef LUGO_MAP_H
#define LUGO_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MAP_BUCKET_SLOTS 8

enum map_key_kind { MK_NUM = 1, MK_STR, MK_FALSE, MK_TRUE };

/* A key as a lookup gives it: kind, the double's bits (MK_NUM, -0 already
 * made 0), or the bytes (MK_STR), and its seeded hash. */
typedef struct map_key {
  uint8_t kind;
  uint32_t len;
  uint64_t bits;
  const char *s;
  uint64_t hash;
} map_key;

/* A string key as a slot owns it. */
typedef struct map_str {
  uint32_t len;
  char s[];
} map_str;

/* Go's bmap: 8 slots, a tophash byte each (or a state below MAP_TH_MIN),
 * then the keys and the values, then the overflow bucket. kinds packs the
 * key kind (low 4 bits) and the value kind (high 4 bits); ref holds the
 * CLOCK bit of each slot for eviction (set by readers: atomic). */
typedef struct map_bucket {
  uint8_t tophash[MAP_BUCKET_SLOTS];
  uint8_t kinds[MAP_BUCKET_SLOTS];
  uint8_t ref;
  uint64_t keys[MAP_BUCKET_SLOTS]; /* double bits, map_str *, or 0 */
  uint64_t vals[MAP_BUCKET_SLOTS];
  struct map_bucket *overflow;
} map_bucket;

enum { MAP_TH_EMPTY = 0, MAP_TH_EVACUATED = 1, MAP_TH_MIN = 2 };

typedef struct hmap {
  uint64_t seed; /* what its keys were hashed with (map_key_hash): evacuation rehashes */
  size_t count;
  uint8_t B;          /* 2^B buckets */
  bool same_size;     /* the growth in progress keeps the size (overflow piled up) */
  uint32_t noverflow; /* overflow buckets, about */
  map_bucket *buckets;
  map_bucket *oldbuckets; /* while growing: the array being evacuated */
  size_t nevacuate;       /* old buckets below this are evacuated */
  size_t old_unmapped;    /* bytes at the start of oldbuckets given back (map.c) */
  size_t sweep;           /* the next bucket an incremental sweep looks at */
} hmap;

/* A slot: the bucket and the index in it. */
typedef struct map_slot {
  map_bucket *b;
  int i;
} map_slot;

void map_key_hash(map_key *k, uint64_t seed);
/* The slot holding k, if any (no growth work: a read). */
bool hmap_find(const hmap *h, const map_key *k, map_slot *out);
/* The slot for k, made (key copied, value kind 0) if absent; *existed says
 * which. Does a step of growth first, as Go's mapassign. */
map_slot hmap_assign(hmap *h, const map_key *k, bool *existed);
/* Empty a slot found by hmap_find or hmap_assign (frees a string key; the
 * value is the caller's). */
void hmap_clear_slot(hmap *h, map_slot s);
/* Finish any growth in progress, or n steps of it. */
void hmap_grow_all(hmap *h);
void hmap_grow_some(hmap *h, int n);
/* Empty (the arrays are the caller's, from a copy made before). */
void hmap_reset(hmap *h);
/* Free every bucket and key (the hmap is empty again, same seed); the
 * values are the caller's, visited first. */
void hmap_free(hmap *h, void (*value_free)(uint8_t kind, uint64_t v, void *arg), void *arg);
/* Visit every occupied slot once (old buckets not evacuated, then new). */
void hmap_each(const hmap *h, void (*f)(map_slot s, void *arg), void *arg);
size_t hmap_nbuckets(const hmap *h);
/* The hash of the key in slot s (as map_key_hash made it). */
uint64_t hmap_slot_hash(map_slot s, uint64_t seed);

/* Fields a reader without the lock looks at (sync.map's loads, under the
 * shard's sequence count) are written with these: relaxed, or release for
 * a pointer whose target was just filled. Memory unlinked from an hmap is
 * freed through qsbr.c once no such reader can hold it. */
#define MAP_RD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define MAP_GET(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define MAP_WR(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define MAP_PUB(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)

static inline uint8_t map_key_kind_of(map_slot s) { return s.b->kinds[s.i] & 15; }
static inline uint8_t map_val_kind_of(map_slot s) { return s.b->kinds[s.i] >> 4; }
static inline void map_set_val(map_slot s, uint8_t kind, uint64_t v) {
  MAP_PUB(s.b->vals[s.i], v);
  MAP_WR(s.b->kinds[s.i], (uint8_t)((s.b->kinds[s.i] & 15) | (kind << 4)));
}

#endif
