/* Go's hashmap (runtime/map.c): growth at the load factor, incremental
 * evacuation (no key lost or doubled while a growth is half done), deletion
 * during growth, same-size growth after overflow piles up, and the seed
 * changing where keys land. */
#include <string.h>

#include "check.h"
#include "map.h"

static map_key num_key(double d, uint64_t seed) {
  map_key k = {.kind = MK_NUM};
  memcpy(&k.bits, &d, sizeof d);
  map_key_hash(&k, seed);
  return k;
}

static map_key str_key(const char *s, uint64_t seed) {
  map_key k = {.kind = MK_STR, .s = s, .len = (uint32_t)strlen(s)};
  map_key_hash(&k, seed);
  return k;
}

static void put_num(hmap *h, double key, uint64_t val) {
  bool existed;
  map_key k = num_key(key, h->seed);
  map_slot s = hmap_assign(h, &k, &existed);
  map_set_val(s, 1, val);
}

static bool get_num(const hmap *h, double key, uint64_t *val) {
  map_key k = num_key(key, h->seed);
  map_slot s;
  if (!hmap_find(h, &k, &s)) return false;
  *val = s.b->vals[s.i];
  return true;
}

static void del_num(hmap *h, double key) {
  map_key k = num_key(key, h->seed);
  bool existed;
  map_slot s = hmap_assign(h, &k, &existed); /* does growth work first, as a delete does */
  hmap_clear_slot(h, s);
}

static void count_slot(map_slot s, void *arg) {
  (void)s;
  (*(size_t *)arg)++;
}

static size_t visited(const hmap *h) {
  size_t n = 0;
  hmap_each(h, count_slot, &n);
  return n;
}

/* Insert n keys, checking at every step that every key so far is found
 * with its value: growth is incremental, so most checks run mid-growth. */
static void test_growth(void) {
  hmap h = {.seed = 12345};
  const int n = 20000;
  int grew_midway = 0;
  for (int i = 0; i < n; i++) {
    put_num(&h, i, (uint64_t)i * 3);
    CHECK_EQ(h.count, i + 1);
    if (h.oldbuckets) grew_midway++;
    if (i % 97 == 0 || h.oldbuckets) {
      for (int j = 0; j <= i; j += (i > 2000 ? 37 : 1)) {
        uint64_t v = 0;
        bool found = get_num(&h, j, &v);
        CHECK(found);
        CHECK_EQ(v, (uint64_t)j * 3);
      }
    }
  }
  CHECK(grew_midway > 0);
  /* load factor 6.5: no more than that many per bucket once growth ends */
  hmap_grow_all(&h);
  CHECK(h.count <= 13 * hmap_nbuckets(&h) / 2);
  CHECK(h.count > 13 * hmap_nbuckets(&h) / 8); /* and not absurdly sparse */
  CHECK_EQ(visited(&h), n);
  for (int i = 0; i < n; i++) {
    uint64_t v;
    CHECK(get_num(&h, i, &v));
  }
  uint64_t v;
  CHECK(!get_num(&h, n, &v));
  CHECK(!get_num(&h, -1, &v));
  hmap_free(&h, NULL, NULL);
  CHECK_EQ(h.count, 0);
  CHECK_EQ(h.seed, 12345);
}

/* A write moves at most a couple of old buckets: after the insert that
 * starts a growth, most old buckets are still to be evacuated. */
static void test_incremental(void) {
  hmap h = {.seed = 7};
  int i = 0;
  while (!h.oldbuckets) put_num(&h, i++, 1);
  while (hmap_nbuckets(&h) < 1024) { /* a large growth */
    put_num(&h, i++, 1);
    hmap_grow_all(&h);
  }
  int before = i;
  while (!h.oldbuckets) put_num(&h, i++, 1);
  CHECK(i > before);
  size_t oldn = hmap_nbuckets(&h) / 2;
  CHECK(h.nevacuate <= 2);
  put_num(&h, i++, 1);
  CHECK(h.nevacuate <= 4);
  CHECK(h.oldbuckets != NULL);
  CHECK(oldn >= 512);
  /* every key visited exactly once mid-growth */
  CHECK_EQ(visited(&h), i);
  CHECK_EQ(h.count, i);
  hmap_free(&h, NULL, NULL);
}

/* Deleting while a growth is half done: the deleted keys are gone, the
 * others stay, and the count agrees with what a walk finds. */
static void test_delete_during_growth(void) {
  enum { MAXN = 200000 };
  static bool gone[MAXN];
  hmap h = {.seed = 99};
  int n = 0, rounds = 0;
  for (int round = 0; round < 6 && n < MAXN / 2; round++) {
    while (!h.oldbuckets) {
      put_num(&h, n, (uint64_t)n);
      n++;
    }
    CHECK(h.oldbuckets != NULL); /* the deletes below run mid-growth */
    for (int j = round; j < n; j += 3) {
      uint64_t v;
      if (get_num(&h, j, &v)) {
        del_num(&h, j);
        gone[j] = true;
      }
    }
    CHECK_EQ(visited(&h), h.count);
    for (int j = 0; j < n; j++) {
      uint64_t v = 0;
      bool found = get_num(&h, j, &v);
      CHECK(found == !gone[j]);
      if (found) CHECK_EQ(v, j);
    }
    rounds++;
  }
  CHECK_EQ(rounds, 6);
  hmap_free(&h, NULL, NULL);
}

/* Keys that are deleted and inserted again, never raising the count,
 * leave overflow buckets behind: a same-size growth packs them. */
static void test_same_size_growth(void) {
  hmap h = {.seed = 5};
  for (int i = 0; i < 50; i++) put_num(&h, i, 1);
  hmap_grow_all(&h);
  uint8_t B = h.B;
  int next = 50;
  int same = 0;
  for (int round = 0; round < 20000 && !same; round++) {
    del_num(&h, next - 50);
    put_num(&h, next++, 1);
    if (h.oldbuckets && h.same_size) same = 1;
    CHECK_EQ(h.count, 50);
  }
  CHECK(same);
  hmap_grow_all(&h);
  CHECK_EQ(h.B, B);
  CHECK_EQ(visited(&h), 50);
  hmap_free(&h, NULL, NULL);
}

/* String keys: equal bytes are one key; the seed changes the hash. */
static void test_strings_and_seed(void) {
  hmap h = {.seed = 1};
  char buf[32];
  for (int i = 0; i < 5000; i++) {
    snprintf(buf, sizeof buf, "key-%d", i);
    map_key k = str_key(buf, h.seed);
    bool existed;
    map_slot s = hmap_assign(&h, &k, &existed);
    CHECK(!existed);
    map_set_val(s, 1, (uint64_t)i);
  }
  for (int i = 0; i < 5000; i++) {
    snprintf(buf, sizeof buf, "key-%d", i);
    map_key k = str_key(buf, h.seed);
    map_slot s;
    CHECK(hmap_find(&h, &k, &s));
    CHECK_EQ(s.b->vals[s.i], i);
    CHECK_EQ(hmap_slot_hash(s, h.seed), k.hash);
  }
  map_key a = str_key("same", 1), b = str_key("same", 2), n1 = num_key(1, 1), n2 = num_key(1, 2);
  CHECK(a.hash != b.hash);
  CHECK(n1.hash != n2.hash);
  /* a number and a string with the same 8 bytes are different keys */
  double d;
  memcpy(&d, "abcdefgh", 8);
  put_num(&h, d, 77);
  map_key s8 = str_key("abcdefgh", h.seed);
  map_slot s;
  CHECK(!hmap_find(&h, &s8, &s));
  hmap_free(&h, NULL, NULL);
}

int main(void) {
  runtime *rt = test_runtime();
  test_growth();
  test_incremental();
  test_delete_during_growth();
  test_same_size_growth();
  test_strings_and_seed();
  map_unmap_retired(rt); /* sysmon's job, in a runtime */
  test_runtime_free(rt);
  return check_done("test_map");
}
