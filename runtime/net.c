/*
 * net.c — TCP and Unix sockets: listen, accept, dial, read, write, close,
 * addresses, after Go's net package (fd_unix.go, sock_posix.go).
 *
 * Invariants:
 *   - Every socket is non-blocking and close-on-exec, registered once with
 *     the epfd of the P that made it (netpoll.c); a connection moves to the
 *     epfd of the P whose goroutines wait on it.
 *   - An op on a connection's side holds that side (pdside.holder) from its
 *     first call to its end, across parks, as Go's fdMutex: one read and
 *     one write may run at once, on any Ps; two reads take turns.
 *   - The read buffer (rbuf) is touched only by the read side's holder; a
 *     connection keeps none while idle (reads go through the P's netbuf).
 *   - A syscall on a descriptor runs only inside net_begin/net_end (nops
 *     counted), so the descriptor cannot be closed, and its number reused,
 *     under it.
 *   - A listener made with reuseport has one socket per P (SO_REUSEPORT),
 *     each on its P's epfd: the kernel spreads connections over them. Its
 *     acceptors, on any P, wait on one hub and try their own P's socket
 *     first.
 *   - Errors a program can expect return nil and Go's text; a closed
 *     connection's ops return "use of closed network connection".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <lauxlib.h>

#include "rt.h"
#include "net.h"

#define NETBUF_SIZE 65536
#define DEFAULT_READ 65536
#define DEFAULT_MAX_LINE 65536
#define BACKOFF_MIN_MS 5
#define BACKOFF_MAX_MS 1000

typedef struct listener {
  rt_object obj;
  polldesc *hub;
  polldesc **socks;
  int32_t nsocks;
  char *unix_path; /* a socket file this listener made: removed at close */
  int32_t backoff_ms; /* under hub->lock */
} listener;

/* ---- errors ---- */

int net_push_error(lua_State *L, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  return 2;
}

/* Go's text for an errno: the C library's, lower-cased as Go spells it. */
int net_push_errno(lua_State *L, int e) {
  char msg[128];
  snprintf(msg, sizeof msg, "%s", strerror(e));
  if (msg[0] >= 'A' && msg[0] <= 'Z') msg[0] = (char)(msg[0] - 'A' + 'a');
  return net_push_error(L, msg);
}

context *net_opt_ctx(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return NULL;
  context *c = (context *)rt_to_object(L, idx, RT_CONTEXT);
  if (!c) luaL_typerror(L, idx, "context");
  return c;
}

/* Begin, or resume after a wake-up, the op on pd's side `mode`. 0: go on;
 * else return this many results: (ERR, why) if the G cannot park, nil and
 * o->err if the op is over, or the park's yield. */
int net_op_begin(lua_State *L, net_op *o, polldesc *pd, int mode, bool exclusive, context *ctx) {
  *o = (net_op){.pp = getp(), .pd = pd, .mode = mode, .exclusive = exclusive};
  o->gp = o->pp ? getg() : NULL;
  int32_t can = rt_can_block(L, o->gp);
  if (can != RC_OK) return rt_push_err(L, can);
  if (o->gp->live->op != OP_NET && preempt_pending(o->pp)) { /* a preemption point: yield, then begin */
    rt_gosched(o->gp);
    return rt_park_yield(L, o->gp, SHAPE_NONE);
  }
  int st = net_begin(o->pp, o->gp, pd, mode, ctx, exclusive, &o->gen, &o->err);
  if (st == NET_PARK) return net_park_yield(L, o->gp);
  if (st == NET_ERR) return net_push_error(L, o->err);
  return 0;
}

/* After EAGAIN: 0 to try again (an event came meanwhile), else as op_begin. */
int net_op_again(lua_State *L, net_op *o, bool park_always) {
  int st = net_again(o->pp, o->gp, o->pd, o->mode, &o->gen, park_always, &o->err);
  if (st == NET_PARK) return net_park_yield(L, o->gp);
  if (st == NET_ERR) return net_push_error(L, o->err);
  return 0;
}

void net_op_end(net_op *o) { net_end(o->pp, o->gp, o->pd, o->mode, o->exclusive); }

/* A recv on a stream socket that returns less than it asked for has
 * emptied the socket, and the descriptor is edge-triggered: every byte that
 * comes later brings an event, which moves the side's gen. So while gen is
 * what it was before that short recv, another would only say EAGAIN (as
 * nginx reasons with EPOLLRDHUP): one system call fewer per request on a
 * keep-alive connection. Not so for the end of stream or an error: recv
 * returns the data before them, and their event may have come already, so
 * once one did (s->hup) every read makes its syscall. o->gen is the gen
 * read before this syscall (by net_begin, or refreshed by net_again), so a
 * G that parks on the EAGAIN made up here obeys netpoll's rule: it parks
 * only if gen has not moved. */
ssize_t net_op_recv(net_op *o, void *buf, size_t len) {
  pdside *s = &o->pd->side[MODE_READ];
  if (atomic_load_explicit(&s->drained, memory_order_relaxed) == o->gen && !atomic_load(&s->hup)) {
    errno = EAGAIN;
    return -1;
  }
  ssize_t r = recv(o->pd->fd, buf, len, 0);
  if (r > 0 && (size_t)r < len) atomic_store_explicit(&s->drained, o->gen, memory_order_relaxed);
  return r;
}

char *net_pbuf(p_t *pp) {
  if (!pp->netbuf) pp->netbuf = rt_malloc(NETBUF_SIZE);
  return pp->netbuf;
}

/* ---- addresses ---- */

static int push_sockaddr(lua_State *L, const struct sockaddr *sa, socklen_t len) {
  char host[INET6_ADDRSTRLEN];
  switch (sa->sa_family) {
  case AF_INET: {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    lua_pushfstring(L, "%s:%d", host, (int)ntohs(in->sin_port));
    return 1;
  }
  case AF_INET6: {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    lua_pushfstring(L, "[%s]:%d", host, (int)ntohs(in6->sin6_port));
    return 1;
  }
  case AF_UNIX: {
    const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
    size_t off = offsetof(struct sockaddr_un, sun_path);
    size_t n = len > off ? len - off : 0;
    if (n > 0 && un->sun_path[0] == '\0') { /* abstract: Go writes '@' */
      lua_pushliteral(L, "@");
      lua_pushlstring(L, un->sun_path + 1, n - 1);
      lua_concat(L, 2);
    } else {
      lua_pushlstring(L, un->sun_path, strnlen(un->sun_path, n));
    }
    return 1;
  }
  default: lua_pushnil(L); return 1;
  }
}

/* ---- resolving: numeric addresses here, names in the blocking pool ---- */

enum { NET_TCP, NET_TCP4, NET_TCP6, NET_UNIX };

/* Push nil and the message a .. s[0, n) .. b. Go's texts quote names and
 * addresses byte for byte, NULs included (%s would stop at the first). */
static int push_error_quoting(lua_State *L, const char *a, const char *s, size_t n, const char *b) {
  lua_pushnil(L);
  lua_pushstring(L, a);
  lua_pushlstring(L, s, n);
  lua_pushstring(L, b);
  lua_concat(L, 3);
  return 2;
}

/* The network named at idx, all of its bytes ("tcp\0x" is not "tcp"), or -1. */
static int check_network(lua_State *L, int idx) {
  static const char *const names[] = {"tcp", "tcp4", "tcp6", "unix", NULL};
  size_t len;
  const char *s = luaL_checklstring(L, idx, &len);
  for (int i = 0; names[i]; i++)
    if (strlen(names[i]) == len && memcmp(s, names[i], len) == 0) return i;
  return -1;
}

/* Go's SplitHostPort: NULL and the host and port of addr, or Go's error. */
static const char *split_host_port(const char *addr, size_t alen, const char **host, size_t *hlen,
                                   const char **port, size_t *plen) {
  const char *colon = memrchr(addr, ':', alen);
  if (!colon) return "missing port in address";
  size_t j = 0, k = 0; /* no '[' from addr + j on, no ']' from addr + k on */
  if (addr[0] == '[') {
    const char *end = memchr(addr, ']', alen);
    if (!end) return "missing ']' in address";
    if (end + 1 == addr + alen) return "missing port in address";
    if (end + 1 != colon) return end[1] == ':' ? "too many colons in address" : "missing port in address";
    *host = addr + 1;
    *hlen = (size_t)(end - *host);
    j = 1;
    k = (size_t)(end - addr) + 1;
  } else {
    *host = addr;
    *hlen = (size_t)(colon - addr);
    if (memchr(addr, ':', *hlen)) return "too many colons in address";
  }
  if (memchr(addr + j, '[', alen - j)) return "unexpected '[' in address";
  if (memchr(addr + k, ']', alen - k)) return "unexpected ']' in address";
  *port = colon + 1;
  *plen = alen - (size_t)(*port - addr);
  return NULL;
}

/* Go's parsePort: true and the number for a decimal port (an optional sign,
 * digits; clamped as Go clamps, so that a huge one is an invalid port),
 * false for a service name to look up. "" is port 0. */
static bool parse_port(const char *s, size_t n, long *port) {
  const uint32_t cutoff = 1u << 30;
  bool neg = false;
  if (n > 0 && (s[0] == '+' || s[0] == '-')) {
    neg = s[0] == '-';
    s++;
    n--;
  }
  uint32_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    if (v >= cutoff) { /* Go stops reading here: what follows is not checked */
      v = UINT32_MAX;
      break;
    }
    uint32_t next = v * 10 + (uint32_t)(s[i] - '0');
    if (next < v) {
      v = UINT32_MAX;
      break;
    }
    v = next;
  }
  long p = !neg && v >= cutoff ? (long)cutoff - 1 : neg && v > cutoff ? (long)cutoff : (long)v;
  *port = neg ? -p : p;
  return true;
}

/* A service name getaddrinfo may look up: printable ASCII without spaces.
 * Anything else (a NUL, " 80", which glibc would read as 80) is no name. */
static bool service_name_ok(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f) return false;
  return n > 0;
}

static bool family_ok(int network, int family) {
  return network == NET_TCP || (network == NET_TCP4 && family == AF_INET) || (network == NET_TCP6 && family == AF_INET6);
}

typedef struct resolve_job {
  rt_job job;
  char *host, *port;
  int network;
  bool passive;
  struct addrinfo *res;
  int gai;
} resolve_job;

static void resolve_run(rt_job *j) {
  resolve_job *rj = (resolve_job *)j;
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP};
  /* Every family, filtered by push_addrs: a name with only IPv4 addresses
   * dialed with tcp6 has no suitable address, as Go says, not no host. */
  hints.ai_family = AF_UNSPEC;
  if (rj->passive) hints.ai_flags |= AI_PASSIVE;
  /* No host: the wildcard to listen on, this machine to dial, as Go's ":http" */
  rj->gai = getaddrinfo(rj->host[0] ? rj->host : NULL, rj->port, &hints, &rj->res);
}

/* [-0, +1] a table of packed sockaddrs from ai, of the families network
 * takes, IPv4 first as Go prefers */
static int push_addrs(lua_State *L, struct addrinfo *ai, int network) {
  lua_newtable(L);
  int n = 0;
  for (int pass = 0; pass < 2; pass++)
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
      int fam = a->ai_family;
      if ((pass == 0) != (fam == AF_INET) || !family_ok(network, fam)) continue;
      lua_pushlstring(L, (const char *)a->ai_addr, a->ai_addrlen);
      lua_rawseti(L, -2, ++n);
    }
  return n;
}

/* host and port never hold a NUL: l_resolve refuses those first. */
static int resolve_push(lua_State *L, rt_job *j) {
  resolve_job *rj = (resolve_job *)j;
  if (rj->gai != 0) {
    lua_pushnil(L);
    if (rj->gai == EAI_SERVICE) /* Go names the protocol as LookupPort does */
      lua_pushfstring(L, "address tcp/%s: unknown port", rj->port);
    else if (rj->gai == EAI_NONAME || rj->gai == EAI_NODATA || rj->gai == EAI_FAIL)
      lua_pushfstring(L, "lookup %s: no such host", rj->host);
    else
      lua_pushfstring(L, "lookup %s: %s", rj->host, gai_strerror(rj->gai));
    return 2;
  }
  if (push_addrs(L, rj->res, rj->network) == 0) {
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_pushfstring(L, "address %s: no suitable address found", rj->host);
    return 2;
  }
  return 1;
}

static void resolve_free(rt_job *j) {
  resolve_job *rj = (resolve_job *)j;
  if (rj->res) freeaddrinfo(rj->res);
  rt_free(rj->host);
  rt_free(rj->port);
  rt_free(rj);
}

static char *dupn(const char *s, size_t n) {
  char *d = rt_malloc(n + 1);
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

/* net_resolve(network, address, passive) -> { sockaddr, ... } or nil, err.
 * Numeric hosts at once; names through the blocking pool (may park). Every
 * byte of the network, host and port counts: a NUL is never a terminator
 * here, it makes the name one that cannot exist, with Go's error. */
static int l_resolve(lua_State *L) {
  int network = check_network(L, 1);
  size_t alen, nlen;
  const char *addr = luaL_checklstring(L, 2, &alen);
  bool passive = lua_toboolean(L, 3);
  if (network < 0) {
    const char *name = lua_tolstring(L, 1, &nlen);
    return push_error_quoting(L, "unknown network ", name, nlen, "");
  }
  if (network == NET_UNIX) {
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    if (alen == 0 && passive) { /* autobind: an unnamed abstract address */
      lua_newtable(L);
      lua_pushlstring(L, (const char *)&un, offsetof(struct sockaddr_un, sun_path));
      lua_rawseti(L, -2, 1);
      return 1;
    }
    if (alen == 0) return net_push_error(L, "missing address");
    /* A path ends at its first NUL for the kernel: one inside would name
     * another file (Go passes it on and binds the cut path). An abstract
     * name ('@') is all of its bytes, NULs included, as in Go. */
    bool abstract = addr[0] == '@';
    if (alen >= sizeof un.sun_path || (!abstract && memchr(addr, '\0', alen))) return net_push_error(L, "invalid argument");
    memcpy(un.sun_path, addr, alen);
    if (abstract) un.sun_path[0] = '\0';
    lua_newtable(L);
    lua_pushlstring(L, (const char *)&un, offsetof(struct sockaddr_un, sun_path) + alen + !abstract);
    lua_rawseti(L, -2, 1);
    return 1;
  }
  const char *host, *port;
  size_t hlen, plen;
  const char *bad = split_host_port(addr, alen, &host, &hlen, &port, &plen);
  if (bad) return push_error_quoting(L, "address ", addr, alen, lua_pushfstring(L, ": %s", bad));
  if (memchr(host, '\0', hlen)) /* no name has one: Go's resolver says so without asking */
    return push_error_quoting(L, "lookup ", host, hlen, ": no such host");
  long portnum = 0;
  bool numeric_port = parse_port(port, plen, &portnum);
  if (numeric_port && (portnum < 0 || portnum > 65535))
    return push_error_quoting(L, "address ", port, plen, ": invalid port");
  if (!numeric_port && !service_name_ok(port, plen))
    return push_error_quoting(L, "address tcp/", port, plen, ": unknown port");
  char *h = dupn(host, hlen);
  struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)portnum)};
  struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)portnum)};
  bool v4 = false, v6 = false;
  if (numeric_port) {
    if (hlen == 0) { /* listen: every interface; dial: this machine */
      v4 = network != NET_TCP6;
      v6 = network != NET_TCP4;
      if (passive) {
        in.sin_addr.s_addr = htonl(INADDR_ANY);
        in6.sin6_addr = in6addr_any;
        if (network == NET_TCP) v4 = false; /* [::] takes IPv4 too */
      } else {
        in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        in6.sin6_addr = in6addr_loopback;
      }
    } else {
      v4 = inet_pton(AF_INET, h, &in.sin_addr) == 1;
      v6 = !v4 && inet_pton(AF_INET6, h, &in6.sin6_addr) == 1;
    }
  }
  if (v4 || v6) {
    rt_free(h);
    lua_newtable(L);
    int n = 0;
    if (v4 && family_ok(network, AF_INET)) {
      lua_pushlstring(L, (const char *)&in, sizeof in);
      lua_rawseti(L, -2, ++n);
    }
    if (v6 && family_ok(network, AF_INET6)) {
      lua_pushlstring(L, (const char *)&in6, sizeof in6);
      lua_rawseti(L, -2, ++n);
    }
    if (n == 0) return push_error_quoting(L, "address ", host, hlen, ": no suitable address found");
    return 1;
  }
  resolve_job *rj = rt_calloc(1, sizeof *rj);
  rj->job.run = resolve_run;
  rj->job.push = resolve_push;
  rj->job.free = resolve_free;
  rj->host = h;
  if (numeric_port) { /* as Go read it: "+80" and "0080" are 80 */
    char num[16];
    snprintf(num, sizeof num, "%ld", portnum);
    rj->port = dupn(num, strlen(num));
  } else {
    rj->port = dupn(port, plen);
  }
  rj->network = network;
  rj->passive = passive;
  return syscall_block(L, &rj->job);
}

/* ---- connections ---- */

static netconn *conn_new(p_t *pp, int fd, const struct sockaddr *remote, socklen_t remotelen) {
  netconn *c = rt_calloc(1, sizeof *c);
  rt_object_init(&c->obj, RT_CONN);
  c->pd = pd_alloc(pp->rt, fd, NULL);
  if (remote && remotelen <= sizeof c->remote) {
    memcpy(&c->remote, remote, remotelen);
    c->remotelen = remotelen;
  }
  pd_register(c->pd, pp);
  return c;
}

void netconn_free(rt_object *o) {
  netconn *c = (netconn *)o;
  pd_free(c->pd->rt, c->pd);
  rt_free(c->rbuf);
  rt_free(c);
}

static void set_nodelay(int fd, int on) { setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on); }

netconn *net_check_conn(lua_State *L, int idx) {
  netconn *c = (netconn *)rt_to_object(L, idx, RT_CONN);
  if (!c) luaL_typerror(L, idx, "connection");
  return c;
}

void netconn_consume(netconn *c, uint32_t n) {
  c->rstart += n;
  if (c->rstart == c->rend) { /* drained: an idle connection keeps no buffer */
    rt_free(c->rbuf);
    c->rbuf = NULL;
    c->rstart = c->rend = c->rcap = 0;
  }
}

/* Room for at least `need` more bytes after rend. */
void netconn_reserve(netconn *c, uint32_t need) {
  if (c->rstart > 0 && c->rcap - c->rend < need) {
    memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
    c->rend -= c->rstart;
    c->rstart = 0;
  }
  if (c->rcap - c->rend < need) {
    uint32_t cap = c->rcap ? c->rcap : 4096;
    while (cap - c->rend < need) cap *= 2;
    c->rbuf = rt_realloc(c->rbuf, cap);
    c->rcap = cap;
  }
}

enum read_kind { READ_SOME, READ_EXACTLY, READ_LINE };

/* conn_read(c, kind, n, ctx): READ_SOME up to n bytes; READ_EXACTLY n
 * bytes; READ_LINE a line of at most n bytes, without its end of line.
 * -> string, or nil, err; nothing when woken (call again). */
static int l_conn_read(lua_State *L) {
  netconn *c = net_check_conn(L, 1);
  int kind = (int)luaL_checkinteger(L, 2);
  lua_Number nn = luaL_optnumber(L, 3, kind == READ_LINE ? DEFAULT_MAX_LINE : DEFAULT_READ);
  if (!(nn >= (kind == READ_EXACTLY ? 0 : 1)) || nn > 0x7fffffff) return luaL_argerror(L, 3, "size out of range");
  uint32_t n = (uint32_t)nn;
  context *ctx = net_opt_ctx(L, 4);
  if (kind == READ_EXACTLY && n == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  polldesc *pd = c->pd;
  net_op o;
  int nres = net_op_begin(L, &o, pd, MODE_READ, true, ctx);
  if (nres) return nres;
  p_t *pp = o.pp;
  for (;;) {
    uint32_t avail = c->rend - c->rstart;
    if (kind == READ_SOME && avail > 0) {
      uint32_t k = avail < n ? avail : n;
      lua_pushlstring(L, c->rbuf + c->rstart, k);
      netconn_consume(c, k);
      net_op_end(&o);
      return 1;
    }
    if (kind == READ_EXACTLY && avail >= n) {
      lua_pushlstring(L, c->rbuf + c->rstart, n);
      netconn_consume(c, n);
      net_op_end(&o);
      return 1;
    }
    if (kind == READ_LINE && avail > 0) {
      char *nl = memchr(c->rbuf + c->rstart, '\n', avail);
      if (nl) {
        uint32_t len = (uint32_t)(nl - (c->rbuf + c->rstart));
        uint32_t linelen = len > 0 && nl[-1] == '\r' ? len - 1 : len;
        if (linelen > n) {
          net_op_end(&o);
          return net_push_error(L, "bufio.Scanner: token too long");
        }
        lua_pushlstring(L, c->rbuf + c->rstart, linelen);
        netconn_consume(c, len + 1);
        net_op_end(&o);
        return 1;
      }
      if (avail > n + 1) { /* n bytes, a '\r' and still no end of line */
        net_op_end(&o);
        return net_push_error(L, "bufio.Scanner: token too long");
      }
    }
    ssize_t r;
    if (kind == READ_SOME) {
      r = net_op_recv(&o, net_pbuf(pp), n < NETBUF_SIZE ? n : NETBUF_SIZE);
      if (r > 0) {
        net_op_end(&o);
        lua_pushlstring(L, pp->netbuf, (size_t)r);
        return 1;
      }
    } else {
      uint32_t want = kind == READ_EXACTLY ? n - avail : 4096;
      if (want > NETBUF_SIZE) want = NETBUF_SIZE;
      if (want < 512) want = 512;
      netconn_reserve(c, want);
      r = net_op_recv(&o, c->rbuf + c->rend, c->rcap - c->rend);
      if (r > 0) {
        c->rend += (uint32_t)r;
        continue;
      }
      if (c->rbuf && c->rstart == c->rend) netconn_consume(c, 0);
    }
    if (r == 0) { /* end of stream */
      if (kind == READ_LINE && avail > 0) { /* the last line has no end of line */
        lua_pushlstring(L, c->rbuf + c->rstart, avail);
        netconn_consume(c, avail);
        net_op_end(&o);
        return 1;
      }
      net_op_end(&o);
      return net_push_error(L, kind == READ_EXACTLY && avail > 0 ? "unexpected EOF" : "EOF");
    }
    int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      if ((nres = net_op_again(L, &o, false))) return nres;
      continue;
    }
    net_op_end(&o);
    return net_push_errno(L, e);
  }
}

/* A write's op ended with nres results: after an error, how much of it
 * was written. */
static int written(lua_State *L, net_op *o, int nres) {
  if (!o->err) return nres; /* a park, or it could not park */
  lua_pushinteger(L, (lua_Integer)o->pp->net_progress);
  return nres + 1;
}

/* conn_write(c, s, ctx) -> #s, or nil, err, bytes written; nothing when
 * woken (call again with the same arguments). */
static int l_conn_write(lua_State *L) {
  netconn *c = net_check_conn(L, 1);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  context *ctx = net_opt_ctx(L, 3);
  polldesc *pd = c->pd;
  net_op o;
  int nres = net_op_begin(L, &o, pd, MODE_WRITE, true, ctx);
  if (nres) return written(L, &o, nres);
  netwait *nw = o.gp->live->nw;
  size_t off = nw->progress;
  while (off < len) {
    ssize_t w = send(pd->fd, s + off, len - off, MSG_NOSIGNAL);
    if (w >= 0) {
      off += (size_t)w;
      continue;
    }
    int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      nw->progress = off;
      if ((nres = net_op_again(L, &o, false))) return written(L, &o, nres);
      continue;
    }
    net_op_end(&o);
    net_push_errno(L, e);
    lua_pushinteger(L, (lua_Integer)off);
    return 3;
  }
  net_op_end(&o);
  lua_pushinteger(L, (lua_Integer)len);
  return 1;
}

/* conn_connect(c, sockaddr, ctx) -> true, or nil, err; nothing when woken */
static int l_conn_connect(lua_State *L) {
  netconn *c = net_check_conn(L, 1);
  size_t salen;
  const char *sa = luaL_checklstring(L, 2, &salen);
  context *ctx = net_opt_ctx(L, 3);
  polldesc *pd = c->pd;
  net_op o;
  int nres = net_op_begin(L, &o, pd, MODE_WRITE, true, ctx);
  if (nres) return nres;
  for (;;) {
    int e;
    if (!c->connect_started) {
      c->connect_started = true;
      if (salen <= sizeof c->remote) {
        memcpy(&c->remote, sa, salen);
        c->remotelen = (socklen_t)salen;
      }
      e = connect(pd->fd, (const struct sockaddr *)sa, (socklen_t)salen) == 0 ? 0 : errno;
    } else {
      socklen_t elen = sizeof e;
      if (getsockopt(pd->fd, SOL_SOCKET, SO_ERROR, &e, &elen) != 0) e = errno;
      if (e == 0) { /* writable with no error: connected, unless still in progress */
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        if (getpeername(pd->fd, (struct sockaddr *)&peer, &plen) != 0) e = errno == ENOTCONN ? EINPROGRESS : errno;
      }
    }
    if (e == 0 || e == EISCONN) {
      net_op_end(&o);
      lua_pushboolean(L, 1);
      return 1;
    }
    if (e == EINPROGRESS || e == EALREADY || e == EINTR || e == EAGAIN) {
      if ((nres = net_op_again(L, &o, false))) return nres;
      continue;
    }
    net_op_end(&o);
    return net_push_errno(L, e);
  }
}

/* conn_socket(sockaddr) -> a connection, not connected yet; or nil, err */
static int l_conn_socket(lua_State *L) {
  size_t salen;
  const char *sa = luaL_checklstring(L, 1, &salen);
  p_t *pp = getp();
  if (!pp || salen < sizeof(sa_family_t)) return luaL_error(L, "lugo: bad socket address");
  int family = ((const struct sockaddr *)sa)->sa_family;
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return net_push_errno(L, errno);
  if (family != AF_UNIX) set_nodelay(fd, 1); /* Go's default */
  netconn *c = conn_new(pp, fd, NULL, 0);
  rt_push_object(L, &c->obj);
  rt_release(&c->obj);
  return 1;
}

/* conn_close(c) -> true, or nil, err if it was closed already */
static int l_conn_close(lua_State *L) {
  netconn *c = net_check_conn(L, 1);
  if (!pd_close(c->pd)) return net_push_error(L, net_err_closed);
  lua_pushboolean(L, 1);
  return 1;
}

/* Run f on the descriptor under its lock, unless closed. */
static int fd_call(lua_State *L, polldesc *pd, int (*f)(int fd, int arg), int arg) {
  rt_lock(&pd->lock);
  if (pd->closing || pd->fd < 0) {
    rt_unlock(&pd->lock);
    return net_push_error(L, net_err_closed);
  }
  int r = f(pd->fd, arg);
  int e = errno;
  rt_unlock(&pd->lock);
  if (r != 0) return net_push_errno(L, e);
  lua_pushboolean(L, 1);
  return 1;
}

static int do_shutdown(int fd, int how) { return shutdown(fd, how); }
static int do_nodelay(int fd, int on) { return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on); }

/* conn_close_write(c) -> true, or nil, err */
static int l_conn_close_write(lua_State *L) { return fd_call(L, net_check_conn(L, 1)->pd, do_shutdown, SHUT_WR); }

/* conn_set_nodelay(c, on) -> true, or nil, err */
static int l_conn_set_nodelay(lua_State *L) {
  netconn *c = net_check_conn(L, 1);
  return fd_call(L, c->pd, do_nodelay, lua_isnone(L, 2) || lua_toboolean(L, 2));
}


/* set_deadline(obj, mode, t): mode 0 read, 1 write, 2 both; t wall
 * seconds or nil to clear */
static int l_set_deadline(lua_State *L) {
  polldesc *pd;
  netconn *c = (netconn *)rt_to_object(L, 1, RT_CONN);
  if (c) {
    pd = c->pd;
  } else {
    listener *ln = (listener *)rt_to_object(L, 1, RT_LISTENER);
    if (!ln) return luaL_typerror(L, 1, "connection");
    pd = ln->hub;
  }
  int mode = (int)luaL_checkinteger(L, 2);
  int64_t when = lua_isnoneornil(L, 3) ? 0 : wall_to_mono(luaL_checknumber(L, 3));
  if (mode == 0 || mode == 2) pd_set_deadline(pd, MODE_READ, when);
  if (mode == 1 || mode == 2) pd_set_deadline(pd, MODE_WRITE, when);
  return 0;
}

/* conn_addr(c, remote) -> "host:port", or nil, err */
static int l_conn_addr(lua_State *L) {
  netconn *c = net_check_conn(L, 1);
  if (lua_toboolean(L, 2)) {
    if (c->remotelen == 0) return net_push_error(L, "not connected");
    return push_sockaddr(L, (struct sockaddr *)&c->remote, c->remotelen);
  }
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  polldesc *pd = c->pd;
  rt_lock(&pd->lock);
  int r = pd->fd >= 0 ? getsockname(pd->fd, (struct sockaddr *)&ss, &len) : (errno = EBADF, -1);
  int e = errno;
  rt_unlock(&pd->lock);
  if (r != 0) return e == EBADF ? net_push_error(L, net_err_closed) : net_push_errno(L, e);
  return push_sockaddr(L, (struct sockaddr *)&ss, len);
}

/* ---- listeners ---- */

void listener_free(rt_object *o) {
  listener *ln = (listener *)o;
  runtime *rt = ln->hub->rt;
  pd_free(rt, ln->hub); /* closes the sockets */
  for (int32_t i = 0; i < ln->nsocks; i++) pd_free(rt, ln->socks[i]);
  if (ln->unix_path) {
    unlink(ln->unix_path);
    rt_free(ln->unix_path);
  }
  rt_free(ln->socks);
  rt_free(ln);
}

static listener *check_listener(lua_State *L, int idx) {
  listener *ln = (listener *)rt_to_object(L, idx, RT_LISTENER);
  if (!ln) luaL_typerror(L, idx, "listener");
  return ln;
}

/* A socket bound to sa and listening; -1 with errno. */
static int listen_socket(const struct sockaddr *sa, socklen_t salen, int network, bool reuseport, int backlog) {
  int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int on = 1;
  if (sa->sa_family != AF_UNIX) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on);
  if (sa->sa_family == AF_INET6) {
    int v6only = network == NET_TCP6;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
  }
  if (bind(fd, sa, salen) != 0 || listen(fd, backlog) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

/* net_listen(network, sockaddr, reuseport, backlog) -> listener, or nil, err */
static int l_listen(lua_State *L) {
  int network = check_network(L, 1);
  size_t salen;
  const char *sa0 = luaL_checklstring(L, 2, &salen);
  bool reuseport = lua_toboolean(L, 3);
  int backlog = (int)luaL_optinteger(L, 4, SOMAXCONN);
  p_t *pp = getp();
  if (!pp || salen > sizeof(struct sockaddr_storage) || salen < sizeof(sa_family_t))
    return luaL_error(L, "lugo: bad socket address");
  struct sockaddr_storage ss;
  memcpy(&ss, sa0, salen);
  struct sockaddr *sa = (struct sockaddr *)&ss;
  runtime *rt = pp->rt;
  /* With reuseport, a socket per P, so that each P accepts its share. */
  int32_t n = reuseport && sa->sa_family != AF_UNIX ? rt->gomaxprocs : 1;
  int *fds = rt_malloc((size_t)n * sizeof *fds);
  for (int32_t i = 0; i < n; i++) {
    fds[i] = listen_socket(sa, (socklen_t)salen, network, reuseport, backlog);
    if (fds[i] < 0) {
      int e = errno;
      for (int32_t j = 0; j < i; j++) close(fds[j]);
      rt_free(fds);
      return net_push_errno(L, e);
    }
    if (i == 0 && sa->sa_family != AF_UNIX) { /* port 0: the others take the port the first got */
      socklen_t len = sizeof ss;
      getsockname(fds[0], sa, &len);
    }
  }
  listener *ln = rt_calloc(1, sizeof *ln);
  rt_object_init(&ln->obj, RT_LISTENER);
  ln->hub = pd_alloc(rt, -1, NULL);
  ln->socks = rt_malloc((size_t)n * sizeof *ln->socks);
  ln->nsocks = n;
  for (int32_t i = 0; i < n; i++) {
    ln->socks[i] = pd_alloc(rt, fds[i], ln->hub);
    pd_register(ln->socks[i], n == 1 ? pp : rt->allp[i]);
  }
  rt_free(fds);
  rt_lock(&ln->hub->lock);
  ln->hub->socks = ln->socks;
  ln->hub->nsocks = n;
  rt_unlock(&ln->hub->lock);
  const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
  if (sa->sa_family == AF_UNIX && salen > offsetof(struct sockaddr_un, sun_path) + 1 && un->sun_path[0] != '\0')
    ln->unix_path = dupn(un->sun_path, strnlen(un->sun_path, salen - offsetof(struct sockaddr_un, sun_path)));
  rt_push_object(L, &ln->obj);
  rt_release(&ln->obj);
  return 1;
}

/* ln_accept(ln, ctx) -> connection, or nil, err; nothing when woken */
static int l_accept(lua_State *L) {
  listener *ln = check_listener(L, 1);
  context *ctx = net_opt_ctx(L, 2);
  polldesc *hub = ln->hub;
  net_op o;
  int nres = net_op_begin(L, &o, hub, MODE_READ, false, ctx);
  if (nres) return nres;
  p_t *pp = o.pp;
  int32_t n = ln->nsocks, start = n > 1 ? pp->id % n : 0;
  for (;;) {
    int fd = -1, e = EAGAIN;
    for (int32_t k = 0; k < n && fd < 0; k++) {
      polldesc *s = ln->socks[(start + k) % n];
      for (;;) {
        uint32_t sgen = atomic_load(&s->side[MODE_READ].gen);
        if (sgen == atomic_load(&s->side[MODE_READ].drained)) break; /* nothing new since EAGAIN */
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        fd = accept4(s->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
          net_op_end(&o);
          rt_lock(&hub->lock);
          ln->backoff_ms = 0;
          rt_unlock(&hub->lock);
          if (peer.ss_family != AF_UNIX) set_nodelay(fd, 1);
          netconn *c = conn_new(pp, fd, (struct sockaddr *)&peer, plen);
          rt_push_object(L, &c->obj);
          rt_release(&c->obj);
          return 1;
        }
        e = errno;
        if (e == EINTR || e == ECONNABORTED) continue; /* the next one */
        if (e == EAGAIN || e == EWOULDBLOCK) atomic_store(&s->side[MODE_READ].drained, sgen);
        break;
      }
      if (e != EAGAIN && e != EWOULDBLOCK) break;
    }
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
      /* Out of descriptors: the connection waits in the backlog. Back off
       * as Go's net/http does, instead of spinning, and try again. */
      rt_lock(&hub->lock);
      ln->backoff_ms = ln->backoff_ms ? ln->backoff_ms * 2 : BACKOFF_MIN_MS;
      if (ln->backoff_ms > BACKOFF_MAX_MS) ln->backoff_ms = BACKOFF_MAX_MS;
      timer_del(&hub->retry);
      timer_add(pp, &hub->retry, nanotime() + (int64_t)ln->backoff_ms * 1000000);
      rt_unlock(&hub->lock);
      if ((nres = net_op_again(L, &o, true))) return nres;
      continue;
    }
    if (e != EAGAIN && e != EWOULDBLOCK) {
      net_op_end(&o);
      return net_push_errno(L, e);
    }
    if ((nres = net_op_again(L, &o, false))) return nres;
  }
}

/* ln_close(ln) -> true, or nil, err */
static int l_listener_close(lua_State *L) {
  listener *ln = check_listener(L, 1);
  if (!pd_close(ln->hub)) return net_push_error(L, net_err_closed);
  if (ln->unix_path) { /* as Go does, the socket file goes with the listener */
    unlink(ln->unix_path);
    rt_free(ln->unix_path);
    ln->unix_path = NULL;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* ln_addr(ln) -> "host:port" */
static int l_listener_addr(lua_State *L) {
  listener *ln = check_listener(L, 1);
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  polldesc *s = ln->socks[0];
  rt_lock(&s->lock);
  int r = s->fd >= 0 ? getsockname(s->fd, (struct sockaddr *)&ss, &len) : -1;
  rt_unlock(&s->lock);
  if (r != 0) return net_push_error(L, net_err_closed);
  return push_sockaddr(L, (struct sockaddr *)&ss, len);
}

void net_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"net_resolve", l_resolve},       {"net_listen", l_listen},
      {"ln_accept", l_accept},          {"ln_close", l_listener_close},
      {"ln_addr", l_listener_addr},     {"conn_socket", l_conn_socket},
      {"conn_connect", l_conn_connect}, {"conn_read", l_conn_read},
      {"conn_write", l_conn_write},     {"conn_close", l_conn_close},
      {"conn_close_write", l_conn_close_write}, {"conn_set_nodelay", l_conn_set_nodelay},
      {"conn_addr", l_conn_addr},       {"set_deadline", l_set_deadline},
      {NULL, NULL},
  };
  luaL_register(L, NULL, funcs);
}
