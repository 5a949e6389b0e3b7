/* The box pool (value.c): the lowest free number goes first, a box freed
 * dirty is reused at once and cleared later only if still free, boxes freed
 * by other threads come back through boxes_clean, and after a burst the
 * pool and the VM's vals table shrink back to what is live. */
#include <pthread.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "check.h"

/* A VM with a vals table, as rt_vm_bind makes one. */
static void give_vm(p_t *pp) {
  pp->L = luaL_newstate();
  lua_newtable(pp->L);
  pp->vals_ref = luaL_ref(pp->L, LUA_REGISTRYINDEX);
}

static void take_vm(p_t *pp) {
  lua_close(pp->L);
  pp->L = NULL;
}

/* An empty pool, whatever the tests before left. */
static void fresh_pool(p_t *pp) {
  boxes_destroy(pp);
  memset(&pp->boxes, 0, sizeof pp->boxes);
}

static void set_val(p_t *pp, int32_t box, const char *v) {
  lua_State *L = pp->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, pp->vals_ref);
  if (v) lua_pushstring(L, v);
  else lua_pushnil(L);
  lua_rawseti(L, -2, box);
  lua_pop(L, 1);
}

static bool val_is_nil(p_t *pp, int32_t box) {
  lua_State *L = pp->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, pp->vals_ref);
  lua_rawgeti(L, -1, box);
  bool isnil = lua_isnil(L, -1);
  lua_pop(L, 2);
  return isnil;
}

static size_t vm_bytes(lua_State *L) {
  return (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
}

static void test_lowest_first(runtime *rt) {
  p_t *pp = rt->allp[0];
  int32_t b[6];
  for (int i = 1; i <= 5; i++) {
    b[i] = box_alloc(pp);
    CHECK_EQ(b[i], i);
  }
  box_free(pp, 4);
  box_free(pp, 2);
  box_free(pp, 5);
  CHECK_EQ(box_alloc(pp), 2);
  CHECK_EQ(box_alloc(pp), 4);
  CHECK_EQ(box_alloc(pp), 5);
  CHECK_EQ(box_alloc(pp), 6);
  for (int32_t i = 6; i >= 1; i--) box_free(pp, i);
  CHECK_EQ(pp->boxes.nfree, 6);
  for (int32_t i = 1; i <= 6; i++) CHECK_EQ(box_alloc(pp), i);
  for (int32_t i = 1; i <= 6; i++) box_free(pp, i);
}

static void test_dirty_reused_at_once(runtime *rt) {
  p_t *pp = rt->allp[0];
  give_vm(pp);
  int32_t a = box_alloc(pp), b = box_alloc(pp);
  set_val(pp, a, "a");
  set_val(pp, b, "b");
  box_free_dirty(pp, a); /* a finalizer: the value stays for now */
  box_free_dirty(pp, b);
  CHECK_EQ(pp->boxes.ndirty, 2);
  CHECK(boxes_untidy(pp));
  /* No boxes_clean in between: the numbers come back anyway. */
  int32_t c = box_alloc(pp);
  CHECK_EQ(c, a);
  set_val(pp, c, "c");
  /* Freed dirty again while still listed: listed once. */
  box_free_dirty(pp, c);
  CHECK_EQ(pp->boxes.ndirty, 2);
  c = box_alloc(pp);
  set_val(pp, c, "c2");
  boxes_clean(pp);
  CHECK_EQ(pp->boxes.ndirty, 0);
  CHECK(!val_is_nil(pp, c)); /* live again: kept */
  CHECK(val_is_nil(pp, b));  /* still free: cleared */
  set_val(pp, c, NULL);
  box_free(pp, c);
  CHECK_EQ(box_alloc(pp), a);
  CHECK_EQ(box_alloc(pp), b);
  set_val(pp, a, NULL);
  box_free(pp, a);
  box_free(pp, b);
  take_vm(pp);
}

static void *free_from_other_thread(void *arg) {
  p_t *pp = arg;
  /* This thread holds no P: the box goes through remote_dirty. */
  box_free_dirty(pp, 1);
  return NULL;
}

static void test_remote_free(runtime *rt) {
  p_t *pp = rt->allp[0];
  give_vm(pp);
  int32_t a = box_alloc(pp);
  CHECK_EQ(a, 1);
  int32_t nfree = pp->boxes.nfree;
  set_val(pp, a, "remote");
  pthread_t th;
  pthread_create(&th, NULL, free_from_other_thread, pp);
  pthread_join(th, NULL);
  CHECK_EQ(atomic_load(&pp->nremote_dirty), 1);
  CHECK_EQ(pp->boxes.nfree, nfree); /* not ours to reuse until boxes_clean */
  CHECK(boxes_untidy(pp));
  boxes_clean(pp);
  CHECK_EQ(atomic_load(&pp->nremote_dirty), 0);
  CHECK(val_is_nil(pp, a));
  CHECK_EQ(box_alloc(pp), a);
  box_free(pp, a);
  take_vm(pp);
}

/* 200,000 values in flight, then all but two taken: the pool drops the
 * numbers above the highest live box, and vals shrinks back. */
static void test_burst_shrinks(runtime *rt) {
  p_t *pp = rt->allp[0];
  give_vm(pp);
  lua_State *L = pp->L;
  lua_gc(L, LUA_GCCOLLECT, 0);
  size_t before = vm_bytes(L);
  enum { N = 200000 };
  for (int32_t i = 1; i <= N; i++) {
    CHECK_EQ(box_alloc(pp), i);
    set_val(pp, i, "v");
  }
  lua_gc(L, LUA_GCCOLLECT, 0);
  size_t peak = vm_bytes(L);
  CHECK(peak > before + N * 8); /* a slot per box, at least */
  for (int32_t i = 1; i <= N; i++) {
    if (i == 7 || i == 1000) continue;
    set_val(pp, i, NULL);
    if (i % 2) box_free(pp, i);
    else box_free_dirty(pp, i);
  }
  CHECK(boxes_untidy(pp));
  boxes_clean(pp);
  CHECK_EQ(pp->boxes.next, 1000);
  CHECK_EQ(pp->boxes.nfree, 998);
  CHECK(pp->boxes.cap <= 4096);
  lua_gc(L, LUA_GCCOLLECT, 0);
  size_t after = vm_bytes(L);
  CHECK(after < before + 64 * 1024);
  CHECK(!val_is_nil(pp, 7) && !val_is_nil(pp, 1000));
  /* The numbers left are reused lowest first, and the pool grows again. */
  CHECK_EQ(box_alloc(pp), 1);
  for (int32_t i = 2; i <= 1000; i++)
    if (i != 7 && i != 1000) CHECK_EQ(box_alloc(pp), i);
  CHECK_EQ(box_alloc(pp), 1001);
  for (int32_t i = 1; i <= 1001; i++) box_free_dirty(pp, i);
  boxes_clean(pp);
  take_vm(pp);
}

/* A trim while lower numbers are free drops only those above the highest
 * live box; the lower ones are handed out first, then new ones. */
static void test_trim_keeps_lower_free(runtime *rt) {
  p_t *pp = rt->allp[0];
  fresh_pool(pp);
  give_vm(pp);
  enum { N = 100000, LO = 70000, HI = 80000 };
  for (int32_t i = 1; i <= N; i++) set_val(pp, box_alloc(pp), "v");
  CHECK_EQ(pp->boxes.next, N);
  for (int32_t i = 1; i <= N; i++) {
    if (i > LO && i <= HI) continue;
    set_val(pp, i, NULL);
    box_free(pp, i);
  }
  CHECK(boxes_untidy(pp));
  boxes_clean(pp);
  CHECK_EQ(pp->boxes.next, HI);
  CHECK_EQ(pp->boxes.nfree, LO);
  boxes_clean(pp); /* the live boxes at the top keep them there */
  CHECK_EQ(pp->boxes.next, HI);
  for (int32_t i = 1; i <= LO; i++) CHECK_EQ(box_alloc(pp), i);
  CHECK_EQ(box_alloc(pp), HI + 1);
  CHECK_EQ(pp->boxes.nfree, 0);
  for (int32_t i = 1; i <= HI + 1; i++) box_free_dirty(pp, i);
  boxes_clean(pp);
  take_vm(pp);
}

/* Across words of every level: the lowest free number always comes first. */
static void test_lowest_across_words(runtime *rt) {
  p_t *pp = rt->allp[0];
  fresh_pool(pp);
  enum { N = 300000 };
  for (int32_t i = 1; i <= N; i++) box_alloc(pp);
  static const int32_t picks[] = {299999, 4097, 262145, 64, 65, 1, 4096, 262144, 300000, 130000};
  for (size_t i = 0; i < sizeof picks / sizeof *picks; i++) box_free(pp, picks[i]);
  static const int32_t sorted[] = {1, 64, 65, 4096, 4097, 130000, 262144, 262145, 299999, 300000};
  for (size_t i = 0; i < sizeof sorted / sizeof *sorted; i++) CHECK_EQ(box_alloc(pp), sorted[i]);
  CHECK_EQ(box_alloc(pp), N + 1);
  CHECK_EQ(pp->boxes.nfree, 0);
}

/* Values taken in the order they came, as from a channel: the live boxes
 * are the highest numbers until the very end; vals shrinks as they go. */
static void test_fifo_drain_shrinks(runtime *rt) {
  p_t *pp = rt->allp[0];
  fresh_pool(pp);
  give_vm(pp);
  lua_State *L = pp->L;
  lua_gc(L, LUA_GCCOLLECT, 0);
  size_t before = vm_bytes(L);
  enum { N = 200000 };
  int32_t first = 0;
  for (int32_t i = 0; i < N; i++) {
    int32_t box = box_alloc(pp);
    if (i == 0) first = box;
    set_val(pp, box, "v");
  }
  for (int32_t i = 0; i < N; i++) {
    set_val(pp, first + i, NULL);
    box_free(pp, first + i);
    if (i % 1000 == 0 && boxes_untidy(pp)) boxes_clean(pp); /* the scheduler, now and then */
  }
  if (boxes_untidy(pp)) boxes_clean(pp);
  CHECK_EQ(pp->boxes.next - pp->boxes.nfree, 0); /* none live */
  lua_gc(L, LUA_GCCOLLECT, 0);
  CHECK(vm_bytes(L) < before + 64 * 1024);
  take_vm(pp);
}

/* A few boxes left live at high numbers: vals shrinks around them at
 * once, the numbers above the highest go when it does. */
static void test_few_live_high(runtime *rt) {
  p_t *pp = rt->allp[0];
  fresh_pool(pp);
  give_vm(pp);
  lua_State *L = pp->L;
  lua_gc(L, LUA_GCCOLLECT, 0);
  size_t before = vm_bytes(L);
  enum { N = 200000, HIGH = 150000 };
  for (int32_t i = 1; i <= N; i++) set_val(pp, box_alloc(pp), "v");
  for (int32_t i = 1; i <= N; i++) {
    if (i == 3 || i == HIGH) continue;
    set_val(pp, i, NULL);
    box_free(pp, i);
  }
  boxes_clean(pp);
  CHECK_EQ(pp->boxes.next, HIGH);
  lua_gc(L, LUA_GCCOLLECT, 0);
  CHECK(vm_bytes(L) < before + 64 * 1024);
  CHECK(!val_is_nil(pp, 3) && !val_is_nil(pp, HIGH));
  set_val(pp, HIGH, NULL);
  box_free(pp, HIGH);
  CHECK(boxes_untidy(pp));
  boxes_clean(pp);
  CHECK_EQ(pp->boxes.next, 3);
  CHECK(pp->boxes.cap <= 64);
  CHECK_EQ(box_alloc(pp), 1);
  take_vm(pp);
}

/* A bad transition is a loud internal error, not a corrupted pool. */
static void test_double_free_throws(runtime *rt) {
  p_t *pp = rt->allp[0];
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    freopen("/dev/null", "w", stderr);
    int32_t a = box_alloc(pp);
    box_free(pp, a);
    box_free(pp, a);
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(!(WIFEXITED(status) && WEXITSTATUS(status) == 0));
}

int main(void) {
  runtime *rt = test_runtime();
  test_lowest_first(rt);
  test_dirty_reused_at_once(rt);
  test_remote_free(rt);
  test_burst_shrinks(rt);
  test_trim_keeps_lower_free(rt);
  test_lowest_across_words(rt);
  test_fifo_drain_shrinks(rt);
  test_few_live_high(rt);
  test_double_free_throws(rt);
  test_runtime_free(rt);
  return check_done("test_box");
}
