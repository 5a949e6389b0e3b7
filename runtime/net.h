/*
 * net.h — what net.c shares with the protocols built on its connections
 * (http.c): the connection struct, its read buffer and the steps of a
 * descriptor op. The rules are net.c's: the read buffer belongs to the
 * read side's holder; a syscall on the descriptor runs only inside an op.
 */
#ifndef LUGO_NET_H
#define LUGO_NET_H

#include <sys/socket.h>

#include "rt.h"

typedef struct netconn {
  rt_object obj;
  polldesc *pd;
  bool connect_started;
  char *rbuf; /* the read holder's */
  uint32_t rstart, rend, rcap;
  struct sockaddr_storage remote;
  socklen_t remotelen;
} netconn;

/* A descriptor op of the running G, from its first call to its end. */
typedef struct net_op {
  p_t *pp;
  g_t *gp;
  polldesc *pd;
  int mode;
  bool exclusive; /* one op at a time on the side */
  uint32_t gen;
  const char *err; /* why it ended, when a step returns results */
} net_op;

/* Begin, or resume after a wake-up, the op on pd's side `mode`. 0: go on;
 * else return this many results (an error, or the park's yield). */
int net_op_begin(lua_State *L, net_op *o, polldesc *pd, int mode, bool exclusive, context *ctx);
/* After EAGAIN: 0 to try again, else as net_op_begin. */
int net_op_again(lua_State *L, net_op *o, bool park_always);
void net_op_end(net_op *o);
/* recv on a read op's descriptor, or EAGAIN without a system call when the
 * last read came back short and no readiness event has come since. */
ssize_t net_op_recv(net_op *o, void *buf, size_t len);

netconn *net_check_conn(lua_State *L, int idx); /* raises unless a connection */
context *net_opt_ctx(lua_State *L, int idx);   /* nil or a context, else raises */
int net_push_error(lua_State *L, const char *msg); /* nil, msg */
int net_push_errno(lua_State *L, int e);           /* nil, Go's text for e */
char *net_pbuf(p_t *pp);                           /* the P's scratch buffer (64 KiB) */
#define NET_PBUF_SIZE 65536
void netconn_consume(netconn *c, uint32_t n);  /* drop n read bytes; frees a drained buffer */
void netconn_reserve(netconn *c, uint32_t need); /* room for need more bytes after rend */

#endif
