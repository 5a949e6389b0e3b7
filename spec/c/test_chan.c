/* Channels without Lua: the ring buffer and its boxes, close, and the wait
 * queues' handling of select sudogs. */
#include <string.h>

#include "check.h"

int32_t chan_trysend(proxy *px);
static double num;
int32_t chan_tryrecv(proxy *px, double *num);
int32_t chan_close(proxy *px);
int32_t chan_len(proxy *px);

static void test_ring(runtime *rt) {
  p_t *pp = rt->allp[0];
  hchan *c = chan_make(pp, 3);
  proxy px = {&c->obj};
  int32_t boxes[3];
  for (int i = 0; i < 3; i++) {
    boxes[i] = chan_trysend(&px);
    CHECK(boxes[i] > 0);
  }
  CHECK(boxes[0] != boxes[1] && boxes[1] != boxes[2] && boxes[0] != boxes[2]);
  CHECK_EQ(chan_len(&px), 3);
  CHECK_EQ(chan_trysend(&px), RC_WOULDBLOCK); /* full */
  for (int i = 0; i < 3; i++) CHECK_EQ(chan_tryrecv(&px, &num), boxes[i]); /* FIFO */
  CHECK_EQ(chan_tryrecv(&px, &num), RC_WOULDBLOCK); /* empty */
  /* Wrap around the ring many times: order holds, boxes are reused. */
  int32_t maxbox = 0;
  for (int round = 0; round < 1000; round++) {
    int32_t a = chan_trysend(&px), b = chan_trysend(&px);
    CHECK_EQ(chan_tryrecv(&px, &num), a);
    CHECK_EQ(chan_tryrecv(&px, &num), b);
    if (a > maxbox) maxbox = a;
    if (b > maxbox) maxbox = b;
  }
  CHECK(maxbox <= 4); /* freed boxes come back */
  CHECK_EQ(chan_len(&px), 0);
  rt_release(&c->obj);
}

static void test_close(runtime *rt) {
  p_t *pp = rt->allp[0];
  hchan *c = chan_make(pp, 2);
  proxy px = {&c->obj};
  int32_t a = chan_trysend(&px);
  CHECK_EQ(chan_close(&px), RC_OK);
  CHECK_EQ(chan_close(&px), RC_CLOSED);
  CHECK_EQ(chan_trysend(&px), RC_CLOSED);
  CHECK_EQ(chan_tryrecv(&px, &num), a); /* buffered values survive the close */
  CHECK_EQ(chan_tryrecv(&px, &num), RC_CLOSED);
  rt_release(&c->obj);
}

static void test_unbuffered(runtime *rt) {
  p_t *pp = rt->allp[0];
  hchan *c = chan_make(pp, 0);
  proxy px = {&c->obj};
  CHECK_EQ(chan_trysend(&px), RC_WOULDBLOCK); /* nobody receiving */
  CHECK_EQ(chan_tryrecv(&px, &num), RC_WOULDBLOCK);
  rt_release(&c->obj);
}

static void test_offer_drain(runtime *rt) {
  p_t *pp = rt->allp[0];
  hchan *c = chan_make(pp, 1);
  int32_t b1 = box_alloc(pp), b2 = box_alloc(pp);
  CHECK(chan_offer(c, (val){.box = b1, .vm = pp->id}));
  CHECK(!chan_offer(c, (val){.box = b2, .vm = pp->id})); /* full: the caller keeps its box */
  chan_drain(c);
  CHECK_EQ(c->qcount, 0);
  CHECK_EQ(pp->boxes.ndirty, 1); /* b1's value must be cleared before reuse */
  box_free(pp, b2);
  rt_release(&c->obj);
}

static void test_waitq_select(runtime *rt) {
  (void)rt;
  waitq q = {0};
  g_live l1 = {0}, l2 = {0};
  g_t g1 = {.live = &l1}, g2 = {.live = &l2};
  sudog s1 = {.g = &g1, .is_select = true}, s2 = {.g = &g1, .is_select = true};
  sudog s3 = {.g = &g2};
  waitq_enqueue(&q, &s1);
  waitq_enqueue(&q, &s2);
  waitq_enqueue(&q, &s3);
  /* The first select sudog wins g1's selectdone; its twin is skipped. */
  CHECK(waitq_dequeue(&q) == &s1);
  CHECK_EQ(atomic_load(&l1.selectdone), 1);
  CHECK(waitq_dequeue(&q) == &s3);
  CHECK(!s2.inqueue);
  CHECK(waitq_dequeue(&q) == NULL);
  /* Removal from the middle and of something not queued. */
  waitq_enqueue(&q, &s1);
  waitq_enqueue(&q, &s2);
  waitq_enqueue(&q, &s3);
  waitq_remove(&q, &s2);
  waitq_remove(&q, &s2);
  CHECK(q.first == &s1 && s1.next == &s3 && q.last == &s3 && s3.prev == &s1);
}

int main(void) {
  runtime *rt = test_runtime();
  test_ring(rt);
  test_close(rt);
  test_unbuffered(rt);
  test_offer_drain(rt);
  test_waitq_select(rt);
  test_runtime_free(rt);
  return check_done("test_chan");
}
