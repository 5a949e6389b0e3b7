/*
 * http.c — HTTP/1.1 on lugo's connections: parsing with http_parser
 * (Debian's libhttp-parser, Node's former parser) on the connection's read
 * buffer, header lookups without building tables, and response/request
 * assembly into a per-connection write buffer sent with one writev per
 * batch. The protocol's rules (keep-alive, pipelining order, 100-continue,
 * draining) are lua/lugo/http.lua's; this file owns bytes.
 *
 * Invariants:
 *   - An httpstate belongs to the goroutine serving (or using, for a
 *     client) one connection: it is a full userdata in that goroutine's VM,
 *     touched only by the thread holding that VM's P, as every VM object.
 *   - The current message's head is copied out of the read buffer into
 *     hs->head; header offsets index hs->head, so they stay valid while the
 *     body is read (the read buffer moves and is freed when drained).
 *   - One http_parser runs from a message's head to its end: the head is
 *     fed from hs->head, the body from the read buffer. It is paused at the
 *     end of each message, so pipelined bytes stay in the read buffer.
 *   - Reads happen inside a read op and writes inside a write op on the
 *     connection (net.h), as for every descriptor: a closed connection is
 *     never read or written under us.
 *   - An idle state keeps no buffers but the head (freed when it grew
 *     large) and the header index: memory follows what is in flight.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include <http_parser.h>
#include <lauxlib.h>

#include "net.h"
#include "rt.h"

#define HS_MT "lugo.http_state"
#define WBUF_KEEP 16384    /* a write buffer larger than this is freed once flushed */
#define WBUF_COPY 16384    /* bodies up to this size are copied into the write buffer */
#define FLUSH_AT 65536     /* pipelined responses are held back until this many bytes */
#define BODY_FEED 65536    /* at most this many read bytes go to the parser at once */

enum body_kind { BODY_NONE = 0, BODY_LENGTH = 1, BODY_CHUNKED = 2, BODY_EOF = 3 };
enum { PH_IDLE, PH_BODY, PH_DONE };

typedef struct hdr {
  uint32_t name, name_len, value, value_len;
} hdr;

typedef struct httpstate {
  http_parser parser;
  int kind; /* HTTP_REQUEST or HTTP_RESPONSE */
  int phase;
  bool skip_body; /* a response to HEAD: no body whatever the headers say */
  bool last_was_value;
  bool error; /* a callback refused the message */
  uint64_t chunk_left; /* bytes of the current chunk not yet seen */
  int crlf_due;        /* bytes of a chunk's closing CRLF still to check ("\r\n" + 2 - crlf_due) */
  const char *feed_end; /* the end of the bytes given to the parser */
  char *head;
  uint32_t head_len, head_cap;
  hdr *hdrs;
  uint32_t nhdrs, hdrs_cap;
  uint32_t url, url_len; /* requests: the target; responses: the reason */
  /* decoded body bytes not yet returned */
  char *out;
  size_t out_start, out_len, out_cap;
  /* the write buffer: bytes [wpos, wlen) not yet sent, then `extra` (a
   * string argument of the flush in progress) from epos */
  char *wbuf;
  size_t wlen, wcap, wpos, epos;
} httpstate;

static bool valid_name(const char *s, size_t n);

/* ---- buffers ---- */

static void out_append(httpstate *hs, const char *p, size_t n) {
  if (hs->out_start > 0 && hs->out_start == hs->out_len) hs->out_start = hs->out_len = 0;
  if (hs->out_cap - hs->out_len < n) {
    if (hs->out_start > 0) {
      memmove(hs->out, hs->out + hs->out_start, hs->out_len - hs->out_start);
      hs->out_len -= hs->out_start;
      hs->out_start = 0;
    }
    size_t cap = hs->out_cap ? hs->out_cap : 4096;
    while (cap - hs->out_len < n) cap *= 2;
    hs->out = rt_realloc(hs->out, cap);
    hs->out_cap = cap;
  }
  memcpy(hs->out + hs->out_len, p, n);
  hs->out_len += n;
}

static char *w_reserve(httpstate *hs, size_t n) {
  if (hs->wcap - hs->wlen < n) {
    size_t cap = hs->wcap ? hs->wcap : 4096;
    while (cap - hs->wlen < n) cap *= 2;
    hs->wbuf = rt_realloc(hs->wbuf, cap);
    hs->wcap = cap;
  }
  return hs->wbuf + hs->wlen;
}

static void w_put(httpstate *hs, const char *p, size_t n) {
  memcpy(w_reserve(hs, n), p, n);
  hs->wlen += n;
}

#define W_LIT(hs, s) w_put(hs, s, sizeof s - 1)

static void w_uint(httpstate *hs, uint64_t v, int base) {
  char tmp[24];
  int i = sizeof tmp;
  do {
    tmp[--i] = "0123456789abcdef"[v % (unsigned)base];
    v /= (unsigned)base;
  } while (v);
  w_put(hs, tmp + i, sizeof tmp - (size_t)i);
}

/* A body's bytes, as one chunk when chunked. */
static void w_body(httpstate *hs, const char *p, size_t n, bool chunked) {
  if (!chunked) {
    w_put(hs, p, n);
    return;
  }
  w_uint(hs, n, 16);
  W_LIT(hs, "\r\n");
  w_put(hs, p, n);
  W_LIT(hs, "\r\n");
}

/* ---- parser callbacks: offsets into hs->head ---- */

static int on_message_begin(http_parser *p) {
  httpstate *hs = p->data;
  hs->nhdrs = 0;
  hs->url = hs->url_len = 0;
  hs->last_was_value = true;
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  httpstate *hs = p->data;
  if (!hs->url_len) hs->url = (uint32_t)(at - hs->head);
  hs->url_len += (uint32_t)n;
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
  httpstate *hs = p->data;
  if (hs->last_was_value) {
    if (hs->nhdrs == hs->hdrs_cap) {
      hs->hdrs_cap = hs->hdrs_cap ? hs->hdrs_cap * 2 : 16;
      hs->hdrs = rt_realloc(hs->hdrs, hs->hdrs_cap * sizeof *hs->hdrs);
    }
    hdr *h = &hs->hdrs[hs->nhdrs++];
    h->name = (uint32_t)(at - hs->head);
    h->name_len = 0;
    h->value = h->value_len = 0;
    hs->last_was_value = false;
  }
  hs->hdrs[hs->nhdrs - 1].name_len += (uint32_t)n;
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
  httpstate *hs = p->data;
  hdr *h = &hs->hdrs[hs->nhdrs - 1];
  if (!hs->last_was_value) {
    h->value = (uint32_t)(at - hs->head);
    hs->last_was_value = true;
  }
  h->value_len += (uint32_t)n;
  return 0;
}

static int on_headers_complete(http_parser *p) {
  httpstate *hs = p->data;
  if (hs->kind != HTTP_RESPONSE) return 0;
  /* a response to HEAD, or a 1xx/204/304, has no body whatever its headers
   * say: 1 tells the parser */
  unsigned st = p->status_code;
  return hs->skip_body || (st >= 100 && st < 200 && st != 101) || st == 204 || st == 304 ? 1 : 0;
}

/* The CRLF closing a chunk's data, which Debian's http_parser (built
 * without HTTP_PARSER_STRICT) does not check: a request could hide another
 * in "5\r\nhelloXY0\r\n\r\n". Check what of it is at p..end; -1 if it is
 * wrong, else how many of its bytes are still to come. */
static int check_crlf(int due, const char *p, const char *end) {
  while (due > 0 && p < end) {
    if (*p != (due == 2 ? '\r' : '\n')) return -1;
    due--, p++;
  }
  return due;
}

static int on_chunk_header(http_parser *p) {
  httpstate *hs = p->data;
  hs->chunk_left = p->content_length;
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  httpstate *hs = p->data;
  out_append(hs, at, n);
  if (p->flags & F_CHUNKED) {
    hs->chunk_left -= n < hs->chunk_left ? n : hs->chunk_left;
    if (hs->chunk_left == 0) {
      int due = check_crlf(2, at + n, hs->feed_end);
      if (due < 0) return 1; /* HPE_CB_body: malformed */
      hs->crlf_due = due;
    }
  }
  return 0;
}

static int on_message_complete(http_parser *p) {
  httpstate *hs = p->data;
  hs->phase = PH_DONE;
  http_parser_pause(p, 1); /* pipelined bytes after it wait for the next message */
  return 0;
}

static http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_status = on_url, /* a response's reason phrase, where a request's target goes */
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_message_complete = on_message_complete,
};

/* ---- the state object ---- */

static httpstate *check_hs(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, HS_MT);
}

static void hs_free_buffers(httpstate *hs) {
  rt_free(hs->head);
  rt_free(hs->hdrs);
  rt_free(hs->out);
  rt_free(hs->wbuf);
  hs->head = NULL;
  hs->hdrs = NULL;
  hs->out = NULL;
  hs->wbuf = NULL;
  hs->head_cap = hs->hdrs_cap = 0;
  hs->out_cap = hs->wcap = 0;
}

/* Waiting for the next message with nothing read of it: the last one is
 * over (its handler returned, its response was flushed), so its head, its
 * header index and the buffers go, and ten thousand idle keep-alive
 * connections hold none (a malloc each per request is the price). */
static void hs_idle(httpstate *hs) {
  if (hs->wlen != hs->wpos || hs->out_len != hs->out_start) return; /* bytes still owed: keep them */
  hs_free_buffers(hs);
  hs->head_len = 0;
  hs->nhdrs = 0;
  hs->url = hs->url_len = 0;
  hs->out_start = hs->out_len = 0;
  hs->wlen = hs->wpos = 0;
}

static int l_hs_gc(lua_State *L) {
  hs_free_buffers(check_hs(L, 1));
  return 0;
}

/* http_state(kind) -> state; kind 0 parses requests, 1 responses */
static int l_http_state(lua_State *L) {
  int kind = luaL_optint(L, 1, 0) ? HTTP_RESPONSE : HTTP_REQUEST;
  httpstate *hs = lua_newuserdata(L, sizeof *hs);
  memset(hs, 0, sizeof *hs);
  hs->kind = kind;
  hs->phase = PH_IDLE;
  luaL_getmetatable(L, HS_MT);
  lua_setmetatable(L, -2);
  return 1;
}

/* ---- reading a head ---- */

/* The length of the head at the start of [p, p + n), through its empty
 * line, or 0 if it is not all there. Empty lines before a request line
 * are part of it (http_parser skips them, as Go does). */
static size_t head_end(const char *p, size_t n) {
  const char *s = p, *end = p + n;
  while (s < end && (*s == '\r' || *s == '\n')) s++;
  while (s < end) {
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    if (!nl) return 0;
    if (nl + 1 < end && nl[1] == '\n') return (size_t)(nl + 2 - p);
    if (nl + 2 < end && nl[1] == '\r' && nl[2] == '\n') return (size_t)(nl + 3 - p);
    if (nl + 2 >= end) return 0;
    s = nl + 1;
  }
  return 0;
}

/* Obsolete line folding (a header line starting with a space or a tab):
 * RFC 9112 lets a server reject it, and two parsers reading it two ways is
 * how requests are smuggled. */
static bool has_folding(const char *p, size_t n) {
  const char *end = p + n;
  const char *nl = memchr(p, '\n', n); /* the start line may not be folded into */
  while (nl && nl + 1 < end) {
    if (nl[1] == ' ' || nl[1] == '\t') return true;
    nl = memchr(nl + 1, '\n', (size_t)(end - nl - 1));
  }
  return false;
}

static bool ieq(const char *a, size_t an, const char *b, size_t bn) {
  return an == bn && strncasecmp(a, b, an) == 0;
}

static const hdr *find_header(httpstate *hs, const char *name, size_t n, const hdr *from) {
  const hdr *h = from ? from + 1 : hs->hdrs, *end = hs->hdrs + hs->nhdrs;
  for (; h < end; h++)
    if (ieq(hs->head + h->name, h->name_len, name, n)) return h;
  return NULL;
}

/* A header value without the spaces around it (http_parser keeps trailing ones). */
static void trimmed(httpstate *hs, const hdr *h, const char **v, size_t *n) {
  const char *s = hs->head + h->value;
  size_t len = h->value_len;
  while (len && (s[0] == ' ' || s[0] == '\t')) s++, len--;
  while (len && (s[len - 1] == ' ' || s[len - 1] == '\t')) len--;
  *v = s;
  *n = len;
}

static int push_bad(lua_State *L, const char *msg, int status) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushinteger(L, status);
  return 3;
}

/* The head is at the start of the read buffer: copy it and parse it.
 * 0 on success, else the results to return. */
static int parse_head(lua_State *L, httpstate *hs, netconn *c, size_t len) {
  if (hs->head_cap < len) {
    rt_free(hs->head);
    hs->head_cap = len > 512 ? (uint32_t)len : 512;
    hs->head = rt_malloc(hs->head_cap);
  }
  memcpy(hs->head, c->rbuf + c->rstart, len);
  hs->head_len = (uint32_t)len;
  netconn_consume(c, (uint32_t)len);
  if (has_folding(hs->head, len)) return push_bad(L, "malformed MIME header: obsolete line folding", 400);
  http_parser_init(&hs->parser, hs->kind);
  hs->parser.data = hs;
  hs->phase = PH_BODY;
  hs->chunk_left = 0;
  hs->crlf_due = 0;
  hs->feed_end = hs->head + len;
  size_t used = http_parser_execute(&hs->parser, &settings, hs->head, len);
  enum http_errno e = HTTP_PARSER_ERRNO(&hs->parser);
  if (e == HPE_PAUSED) { /* the message ended with its head */
    http_parser_pause(&hs->parser, 0);
    e = HPE_OK;
  }
  if (e != HPE_OK || used != len) {
    hs->phase = PH_IDLE;
    if (e == HPE_INVALID_METHOD) return push_bad(L, "malformed HTTP request: invalid method", 400);
    if (e == HPE_INVALID_TRANSFER_ENCODING)
      return push_bad(L, "unsupported transfer encoding", hs->kind == HTTP_REQUEST ? 501 : 400);
    if (e == HPE_UNEXPECTED_CONTENT_LENGTH)
      return push_bad(L,
                      hs->kind == HTTP_REQUEST
                          ? "malformed HTTP request: conflicting Content-Length or Transfer-Encoding"
                          : "malformed HTTP response: conflicting Content-Length or Transfer-Encoding",
                      400);
    lua_pushnil(L);
    lua_pushfstring(L, "malformed HTTP %s: %s", hs->kind == HTTP_REQUEST ? "request" : "response",
                    http_errno_description(e));
    lua_pushinteger(L, 400);
    return 3;
  }
  /* What the parser, built lenient, lets through and Go refuses: a header
   * name that is not a token ("Transfer-Encoding : chunked"), a control
   * byte in a value (it checks from the second byte on). */
  for (uint32_t i = 0; i < hs->nhdrs; i++) {
    const hdr *h = &hs->hdrs[i];
    if (!valid_name(hs->head + h->name, h->name_len)) {
      hs->phase = PH_IDLE;
      return push_bad(L, "malformed MIME header: invalid header name", 400);
    }
    const unsigned char *v = (const unsigned char *)hs->head + h->value;
    for (uint32_t k = 0; k < h->value_len; k++)
      if ((v[k] < 32 && v[k] != '\t') || v[k] == 127) {
        hs->phase = PH_IDLE;
        return push_bad(L, "malformed MIME header: invalid header value", 400);
      }
  }
  if (hs->parser.http_major != 1) {
    hs->phase = PH_IDLE;
    return push_bad(L, "unsupported protocol version", hs->kind == HTTP_REQUEST ? 505 : 400);
  }
  const hdr *te = find_header(hs, "Transfer-Encoding", 17, NULL);
  if (te) { /* Go accepts exactly one, exactly "chunked" */
    const char *v;
    size_t vn;
    trimmed(hs, te, &v, &vn);
    if (find_header(hs, "Transfer-Encoding", 17, te) || !ieq(v, vn, "chunked", 7)) {
      hs->phase = PH_IDLE;
      return push_bad(L, "unsupported transfer encoding", hs->kind == HTTP_REQUEST ? 501 : 400);
    }
  }
  if (hs->kind == HTTP_REQUEST) {
    const hdr *host = find_header(hs, "Host", 4, NULL);
    if (host && find_header(hs, "Host", 4, host)) {
      hs->phase = PH_IDLE;
      return push_bad(L, "too many Host headers", 400);
    }
    if (!host && hs->parser.http_major == 1 && hs->parser.http_minor >= 1) {
      hs->phase = PH_IDLE;
      return push_bad(L, "missing required Host header", 400);
    }
  }
  if (hs->parser.upgrade && hs->kind == HTTP_REQUEST && hs->parser.method == HTTP_CONNECT) {
    /* CONNECT: the rest of the stream is the tunnel's, the handler's to hijack */
    hs->phase = PH_DONE;
  }
  return 0;
}

/* What is left of the message after its head. */
static int body_kind(httpstate *hs) {
  if (hs->phase == PH_DONE) return BODY_NONE;
  if (hs->parser.flags & F_CHUNKED) return BODY_CHUNKED;
  if (hs->parser.flags & F_CONTENTLENGTH) return BODY_LENGTH;
  return hs->kind == HTTP_RESPONSE ? BODY_EOF : BODY_NONE;
}

/* http_read_head(hs, conn, max_header_bytes, ctx[, skip_body]) ->
 *   requests:  method, target, minor, keep_alive, body_kind, content_length
 *   responses: status, minor, keep_alive, body_kind, content_length
 * or nil, err[, status to answer with]; "EOF" when the stream ends before
 * a message begins. Nothing when woken: call again. */
static int l_http_read_head(lua_State *L) {
  httpstate *hs = check_hs(L, 1);
  netconn *c = net_check_conn(L, 2);
  lua_Number maxn = luaL_optnumber(L, 3, 1 << 20);
  size_t max = maxn < 1 ? 1 : maxn > 0x7fffffff ? 0x7fffffff : (size_t)maxn;
  context *ctx = net_opt_ctx(L, 4);
  hs->skip_body = lua_toboolean(L, 5);
  lua_Number header_timeout = luaL_optnumber(L, 6, 0);
  net_op o;
  int nres = net_op_begin(L, &o, c->pd, MODE_READ, true, ctx);
  if (nres) return nres;
  size_t scanned = 0;
  for (;;) {
    size_t avail = c->rend - c->rstart;
    if (avail > scanned) {
      size_t len = head_end(c->rbuf + c->rstart, avail);
      if (len) {
        if (len > max + 4096) { /* Go allows 4 KiB over the limit for the request line */
          net_op_end(&o);
          return push_bad(L, hs->kind == HTTP_REQUEST ? "http: request header too large" : "http: response header too large", 431);
        }
        nres = parse_head(L, hs, c, len);
        net_op_end(&o);
        if (nres) return nres;
        break;
      }
      if (avail > max + 4096) {
        net_op_end(&o);
        return push_bad(L, hs->kind == HTTP_REQUEST ? "http: request header too large" : "http: response header too large", 431);
      }
      scanned = avail;
    }
    netconn_reserve(c, 4096);
    ssize_t r = net_op_recv(&o, c->rbuf + c->rend, c->rcap - c->rend);
    if (r > 0) {
      if (avail == 0 && header_timeout > 0) /* the head has begun: it has this long to end */
        pd_set_deadline(c->pd, MODE_READ, nanotime() + (int64_t)(header_timeout * 1e9));
      c->rend += (uint32_t)r;
      continue;
    }
    if (c->rstart == c->rend) netconn_consume(c, 0);
    if (r == 0) {
      net_op_end(&o);
      if (avail == 0) return net_push_error(L, "EOF");
      return push_bad(L, "unexpected EOF", 400);
    }
    int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      if (avail == 0) hs_idle(hs); /* between messages: an idle connection keeps no buffer */
      if ((nres = net_op_again(L, &o, false))) return nres;
      continue;
    }
    net_op_end(&o);
    return net_push_errno(L, e);
  }
  http_parser *p = &hs->parser;
  int kind = body_kind(hs);
  int n = 0;
  if (hs->kind == HTTP_REQUEST) {
    lua_pushstring(L, http_method_str((enum http_method)p->method));
    lua_pushlstring(L, hs->head + hs->url, hs->url_len);
    n = 2;
  } else {
    lua_pushinteger(L, p->status_code);
    n = 1;
  }
  lua_pushinteger(L, p->http_major == 1 ? p->http_minor : p->http_major > 1 ? 1 : 0);
  lua_pushboolean(L, http_should_keep_alive(p));
  lua_pushinteger(L, kind);
  if (kind == BODY_LENGTH) lua_pushnumber(L, (lua_Number)p->content_length);
  else lua_pushinteger(L, kind == BODY_NONE ? 0 : -1);
  if (hs->kind == HTTP_RESPONSE) { /* and its reason phrase */
    lua_pushlstring(L, hs->head + hs->url, hs->url_len);
    return n + 5;
  }
  return n + 4;
}

/* ---- headers of the current message ---- */

/* http_header(hs, name) -> the first value of the header (any case), or nil */
static int l_http_header(lua_State *L) {
  httpstate *hs = check_hs(L, 1);
  size_t n;
  const char *name = luaL_checklstring(L, 2, &n);
  const hdr *h = find_header(hs, name, n, NULL);
  if (!h) return 0;
  const char *v;
  size_t vn;
  trimmed(hs, h, &v, &vn);
  lua_pushlstring(L, v, vn);
  return 1;
}

/* http_header_values(hs, name) -> {values...} (any case), in order */
static int l_http_header_values(lua_State *L) {
  httpstate *hs = check_hs(L, 1);
  size_t n;
  const char *name = luaL_checklstring(L, 2, &n);
  lua_newtable(L);
  int i = 0;
  for (const hdr *h = find_header(hs, name, n, NULL); h; h = find_header(hs, name, n, h)) {
    const char *v;
    size_t vn;
    trimmed(hs, h, &v, &vn);
    lua_pushlstring(L, v, vn);
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

static bool token_char(unsigned char ch) {
  return ch > 32 && ch < 127 && !strchr("\"(),/:;<=>?@[\\]{}", ch);
}

/* Go's CanonicalMIMEHeaderKey: "content-type" -> "Content-Type"; a name
 * with a byte that is not a token's is kept as it is. */
static void push_canonical(lua_State *L, const char *s, size_t n) {
  char tmp[256];
  if (n > sizeof tmp) {
    lua_pushlstring(L, s, n);
    return;
  }
  bool upper = true;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (!token_char(ch)) {
      lua_pushlstring(L, s, n);
      return;
    }
    if (upper && ch >= 'a' && ch <= 'z') ch = (unsigned char)(ch - 32);
    else if (!upper && ch >= 'A' && ch <= 'Z') ch = (unsigned char)(ch + 32);
    tmp[i] = (char)ch;
    upper = ch == '-';
  }
  lua_pushlstring(L, tmp, n);
}

/* canonical_header_key(name) -> Go's canonical form */
static int l_canonical_key(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  push_canonical(L, s, n);
  return 1;
}

/* http_headers(hs[, into]) -> a table: canonical name -> value, or a list
 * of values when the header came more than once */
static int l_http_headers(lua_State *L) {
  httpstate *hs = check_hs(L, 1);
  if (lua_istable(L, 2)) lua_settop(L, 2);
  else {
    lua_settop(L, 1);
    lua_createtable(L, 0, (int)hs->nhdrs);
  }
  for (uint32_t i = 0; i < hs->nhdrs; i++) {
    const hdr *h = &hs->hdrs[i];
    const char *v;
    size_t vn;
    trimmed(hs, h, &v, &vn);
    push_canonical(L, hs->head + h->name, h->name_len);
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushlstring(L, v, vn);
      lua_rawset(L, -3);
    } else if (lua_type(L, -1) == LUA_TSTRING) { /* a second value: make a list */
      lua_createtable(L, 2, 0);
      lua_insert(L, -2);
      lua_rawseti(L, -2, 1);
      lua_pushlstring(L, v, vn);
      lua_rawseti(L, -2, 2);
      lua_rawset(L, -3);
    } else {
      lua_pushlstring(L, v, vn);
      lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
      lua_pop(L, 2);
    }
  }
  return 1;
}

/* ---- bodies ---- */

/* http_read_body(hs, conn, n, ctx) -> up to n bytes of the body, or nil,
 * "EOF" once it has all been read, or nil, err. Nothing when woken. */
static int l_http_read_body(lua_State *L) {
  httpstate *hs = check_hs(L, 1);
  netconn *c = net_check_conn(L, 2);
  lua_Number nn = luaL_optnumber(L, 3, 65536);
  size_t n = nn < 1 ? 1 : nn > 0x7fffffff ? 0x7fffffff : (size_t)nn;
  context *ctx = net_opt_ctx(L, 4);
  if (hs->out_len > hs->out_start) {
    size_t k = hs->out_len - hs->out_start;
    if (k > n) k = n;
    lua_pushlstring(L, hs->out + hs->out_start, k);
    hs->out_start += k;
    return 1;
  }
  if (hs->phase != PH_BODY) return net_push_error(L, "EOF");
  net_op o;
  int nres = net_op_begin(L, &o, c->pd, MODE_READ, true, ctx);
  if (nres) return nres;
  for (;;) {
    size_t avail = c->rend - c->rstart;
    if (avail > 0) {
      size_t feed = avail < BODY_FEED ? avail : BODY_FEED;
      const char *in = c->rbuf + c->rstart;
      enum http_errno e = HPE_OK;
      size_t used = 0;
      if (hs->crlf_due) { /* a chunk's CRLF began in the last bytes fed */
        hs->crlf_due = check_crlf(hs->crlf_due, in, in + feed);
        if (hs->crlf_due < 0) e = HPE_CB_body;
      }
      if (e == HPE_OK) {
        hs->feed_end = in + feed;
        used = http_parser_execute(&hs->parser, &settings, in, feed);
        e = HTTP_PARSER_ERRNO(&hs->parser);
      }
      if (e == HPE_PAUSED) {
        http_parser_pause(&hs->parser, 0);
        e = HPE_OK;
      }
      netconn_consume(c, (uint32_t)used);
      if (e != HPE_OK) {
        hs->phase = PH_IDLE;
        net_op_end(&o);
        lua_pushnil(L);
        if (e == HPE_CB_body) lua_pushliteral(L, "malformed chunked encoding: no CRLF after chunk data");
        else lua_pushfstring(L, "malformed chunked encoding: %s", http_errno_description(e));
        return 2;
      }
    }
    if (hs->out_len > hs->out_start) {
      size_t k = hs->out_len - hs->out_start;
      if (k > n) k = n;
      lua_pushlstring(L, hs->out + hs->out_start, k);
      hs->out_start += k;
      net_op_end(&o);
      return 1;
    }
    if (hs->phase != PH_BODY) {
      net_op_end(&o);
      return net_push_error(L, "EOF");
    }
    if (c->rend > c->rstart) continue; /* chunk framing only, so far */
    netconn_reserve(c, 4096);
    ssize_t r = net_op_recv(&o, c->rbuf + c->rend, c->rcap - c->rend);
    if (r > 0) {
      c->rend += (uint32_t)r;
      continue;
    }
    if (c->rstart == c->rend) netconn_consume(c, 0);
    if (r == 0) {
      net_op_end(&o);
      if (body_kind(hs) == BODY_EOF) { /* a response delimited by the end of the stream */
        http_parser_execute(&hs->parser, &settings, NULL, 0);
        hs->phase = PH_DONE;
        return net_push_error(L, "EOF");
      }
      hs->phase = PH_IDLE;
      return net_push_error(L, "unexpected EOF");
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

/* http_body_done(hs) -> true when the current message's body was all read */
static int l_http_body_done(lua_State *L) {
  httpstate *hs = check_hs(L, 1);
  lua_pushboolean(L, hs->phase != PH_BODY && hs->out_len == hs->out_start);
  return 1;
}

/* ---- writing ---- */

static const char *status_text(int code) {
  switch (code) {
  case 100: return "Continue";
  case 101: return "Switching Protocols";
  case 102: return "Processing";
  case 103: return "Early Hints";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 203: return "Non-Authoritative Information";
  case 204: return "No Content";
  case 205: return "Reset Content";
  case 206: return "Partial Content";
  case 207: return "Multi-Status";
  case 208: return "Already Reported";
  case 226: return "IM Used";
  case 300: return "Multiple Choices";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 303: return "See Other";
  case 304: return "Not Modified";
  case 305: return "Use Proxy";
  case 307: return "Temporary Redirect";
  case 308: return "Permanent Redirect";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 402: return "Payment Required";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 406: return "Not Acceptable";
  case 407: return "Proxy Authentication Required";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 410: return "Gone";
  case 411: return "Length Required";
  case 412: return "Precondition Failed";
  case 413: return "Request Entity Too Large";
  case 414: return "Request URI Too Long";
  case 415: return "Unsupported Media Type";
  case 416: return "Requested Range Not Satisfiable";
  case 417: return "Expectation Failed";
  case 418: return "I'm a teapot";
  case 421: return "Misdirected Request";
  case 422: return "Unprocessable Entity";
  case 423: return "Locked";
  case 424: return "Failed Dependency";
  case 425: return "Too Early";
  case 426: return "Upgrade Required";
  case 428: return "Precondition Required";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 451: return "Unavailable For Legal Reasons";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  case 505: return "HTTP Version Not Supported";
  case 506: return "Variant Also Negotiates";
  case 507: return "Insufficient Storage";
  case 508: return "Loop Detected";
  case 510: return "Not Extended";
  case 511: return "Network Authentication Required";
  default: return NULL;
  }
}

/* status_text(code) -> Go's StatusText, "" if unknown */
static int l_status_text(lua_State *L) {
  const char *t = status_text((int)luaL_checkinteger(L, 1));
  lua_pushstring(L, t ? t : "");
  return 1;
}

/* The Date header's value, formatted once a second per P. */
static const char *http_date(void) {
  p_t *pp = getp();
  time_t now = time(NULL);
  if (pp->http_date_sec != (int64_t)now || !pp->http_date[0]) {
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(pp->http_date, sizeof pp->http_date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    pp->http_date_sec = (int64_t)now;
  }
  return pp->http_date;
}

/* A header value as it may go on the wire: CR and LF become spaces (Go's
 * headerNewlineToSpace), so a value cannot add a header or end the head. */
static void w_value(httpstate *hs, const char *v, size_t n) {
  char *d = w_reserve(hs, n);
  for (size_t i = 0; i < n; i++) d[i] = v[i] == '\r' || v[i] == '\n' ? ' ' : v[i];
  hs->wlen += n;
}

static bool valid_name(const char *s, size_t n) {
  if (n == 0) return false;
  for (size_t i = 0; i < n; i++)
    if (!token_char((unsigned char)s[i])) return false;
  return true;
}

enum { HAS_DATE = 1, HAS_TYPE = 2, HAS_LENGTH = 4, HAS_TE = 8, HAS_CONNECTION = 16, HAS_HOST = 32 };

/* Write the headers of the table at idx (name -> string or list of
 * strings); returns which of the headers the runtime adds were there. */
static int w_headers(lua_State *L, httpstate *hs, int idx, int skip) {
  int has = 0;
  if (!lua_istable(L, idx)) return 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t kn;
    if (lua_type(L, -2) != LUA_TSTRING) {
      lua_pop(L, 1);
      continue;
    }
    const char *k = lua_tolstring(L, -2, &kn);
    int flag = 0;
    if (ieq(k, kn, "Date", 4)) flag = HAS_DATE;
    else if (ieq(k, kn, "Content-Type", 12)) flag = HAS_TYPE;
    else if (ieq(k, kn, "Content-Length", 14)) flag = HAS_LENGTH;
    else if (ieq(k, kn, "Transfer-Encoding", 17)) flag = HAS_TE;
    else if (ieq(k, kn, "Connection", 10)) flag = HAS_CONNECTION;
    else if (ieq(k, kn, "Host", 4)) flag = HAS_HOST;
    if (!valid_name(k, kn) || (flag & skip)) {
      lua_pop(L, 1);
      continue;
    }
    int t = lua_type(L, -1);
    if (t == LUA_TSTRING) {
      size_t vn;
      const char *v = lua_tolstring(L, -1, &vn);
      w_put(hs, k, kn);
      W_LIT(hs, ": ");
      w_value(hs, v, vn);
      W_LIT(hs, "\r\n");
      has |= flag;
    } else if (t == LUA_TTABLE) {
      int n = (int)lua_objlen(L, -1);
      for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_type(L, -1) == LUA_TSTRING) {
          size_t vn;
          const char *v = lua_tolstring(L, -1, &vn);
          w_put(hs, k, kn);
          W_LIT(hs, ": ");
          w_value(hs, v, vn);
          W_LIT(hs, "\r\n");
          has |= flag;
        }
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  return has;
}

/* Go's DetectContentType, for the few kinds a handler's first bytes are
 * likely to be; everything else is text if it has no control bytes. */
static const char *sniff(const char *p, size_t n) {
  size_t i = 0;
  while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n')) i++;
  static const char *const html[] = {"<!DOCTYPE HTML", "<HTML", "<HEAD", "<SCRIPT", "<IFRAME", "<H1", "<DIV",
                                     "<FONT", "<TABLE", "<A", "<STYLE", "<TITLE", "<B", "<BODY", "<BR", "<P",
                                     "<!--"};
  for (size_t k = 0; k < sizeof html / sizeof *html; k++) {
    size_t m = strlen(html[k]);
    if (n - i > m && strncasecmp(p + i, html[k], m) == 0 && (p[i + m] == ' ' || p[i + m] == '>'))
      return "text/html; charset=utf-8";
  }
  if (n - i >= 5 && memcmp(p + i, "<?xml", 5) == 0) return "text/xml; charset=utf-8";
  if (n >= 4 && memcmp(p, "%PDF", 4) == 0) return "application/pdf";
  if (n >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0) return "image/png";
  if (n >= 3 && memcmp(p, "\xff\xd8\xff", 3) == 0) return "image/jpeg";
  if (n >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0)) return "image/gif";
  if (n >= 2 && memcmp(p, "\x1f\x8b", 2) == 0) return "application/x-gzip";
  size_t lim = n < 512 ? n : 512;
  for (size_t k = 0; k < lim; k++) {
    unsigned char ch = (unsigned char)p[k];
    if (ch <= 0x08 || ch == 0x0b || (ch >= 0x0e && ch <= 0x1a) || (ch >= 0x1c && ch <= 0x1f))
      return "application/octet-stream";
  }
  return "text/plain; charset=utf-8";
}

/* detect_content_type(s) -> Go's DetectContentType, for common kinds */
static int l_detect_content_type(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_pushstring(L, sniff(s, n));
  return 1;
}

enum {
  R_CLOSE = 1,      /* "Connection: close" */
  R_KEEPALIVE = 2,  /* "Connection: keep-alive" (an HTTP/1.0 client that asked) */
  R_NOBODY = 4,     /* HEAD, 1xx, 204, 304: headers only */
  R_HTTP10 = 8,     /* answer an HTTP/1.0 client (no chunking) */
  R_NOSNIFF = 16,   /* no Content-Type unless the handler set one */
  R_NODATE = 32,    /* no Date */
};

/* http_response_head(hs, status, headers, length, flags[, body]) assembles a
 * response head in the write buffer (and the body when given and small).
 * length: the Content-Length, or -1 for a chunked body (an HTTP/1.0
 * client's is delimited by the close instead), or -2 for none declared
 * (HEAD, 304: what the handler said, if anything). The first bytes of
 * the body are sniffed for a Content-Type. -> true */
static int l_http_response_head(lua_State *L) {
  httpstate *hs = check_hs(L, 1);
  int status = (int)luaL_checkinteger(L, 2);
  lua_Number length = luaL_checknumber(L, 4);
  int flags = (int)luaL_optinteger(L, 5, 0);
  size_t bn = 0;
  const char *body = lua_tolstring(L, 6, &bn);
  const char *text = status_text(status);
  W_LIT(hs, "HTTP/1.1 ");
  w_uint(hs, (uint64_t)(status < 0 ? 0 : status), 10);
  if (text) {
    W_LIT(hs, " ");
    w_put(hs, text, strlen(text));
  } else {
    W_LIT(hs, " status code ");
    w_uint(hs, (uint64_t)(status < 0 ? 0 : status), 10);
  }
  W_LIT(hs, "\r\n");
  bool nobody = flags & R_NOBODY;
  /* the runtime's framing wins over the handler's, as in Go: a handler's
   * Content-Length is kept only when the runtime declares none */
  int skip = HAS_TE | (length >= -1 ? HAS_LENGTH : 0) | HAS_CONNECTION;
  int has = w_headers(L, hs, 3, skip);
  if (!(has & HAS_DATE) && !(flags & R_NODATE)) {
    W_LIT(hs, "Date: ");
    w_put(hs, http_date(), 29);
    W_LIT(hs, "\r\n");
  }
  if (!(has & HAS_TYPE) && !(flags & R_NOSNIFF) && (bn > 0 || length == -1) && status != 204 &&
      status != 304 && status >= 200) {
    const char *type = sniff(body ? body : "", bn);
    W_LIT(hs, "Content-Type: ");
    w_put(hs, type, strlen(type));
    W_LIT(hs, "\r\n");
  }
  if (length >= 0 && status != 204 && status != 304 && status >= 200) {
    W_LIT(hs, "Content-Length: ");
    w_uint(hs, (uint64_t)length, 10);
    W_LIT(hs, "\r\n");
  } else if (length == -1 && !(flags & R_HTTP10)) {
    W_LIT(hs, "Transfer-Encoding: chunked\r\n");
  }
  if (flags & R_CLOSE) W_LIT(hs, "Connection: close\r\n");
  else if (flags & R_KEEPALIVE) W_LIT(hs, "Connection: keep-alive\r\n");
  W_LIT(hs, "\r\n");
  if (body && bn && !nobody) w_body(hs, body, bn, length == -1 && !(flags & R_HTTP10));
  lua_pushboolean(L, 1);
  return 1;
}

/* http_request_head(hs, method, target, host, headers, length[, body, no_ua])
 * assembles a request head (and a small body) in the write buffer.
 * length: Content-Length, -1 chunked, -2 none. */
static int l_http_request_head(lua_State *L) {
  httpstate *hs = check_hs(L, 1);
  size_t mn, tn, hn;
  const char *method = luaL_checklstring(L, 2, &mn);
  const char *target = luaL_checklstring(L, 3, &tn);
  const char *host = luaL_checklstring(L, 4, &hn);
  lua_Number length = luaL_checknumber(L, 6);
  size_t bn = 0;
  const char *body = lua_tolstring(L, 7, &bn);
  w_put(hs, method, mn);
  W_LIT(hs, " ");
  w_value(hs, target, tn);
  W_LIT(hs, " HTTP/1.1\r\nHost: ");
  w_value(hs, host, hn);
  W_LIT(hs, "\r\n");
  int has = w_headers(L, hs, 5, HAS_HOST | HAS_TE | HAS_LENGTH);
  (void)has;
  if (length >= 0 && (length > 0 || !(mn == 3 && memcmp(method, "GET", 3) == 0))) {
    W_LIT(hs, "Content-Length: ");
    w_uint(hs, (uint64_t)length, 10);
    W_LIT(hs, "\r\n");
  } else if (length == -1) {
    W_LIT(hs, "Transfer-Encoding: chunked\r\n");
  }
  W_LIT(hs, "\r\n");
  if (body && bn) w_body(hs, body, bn, length == -1);
  lua_pushboolean(L, 1);
  return 1;
}

/* http_chunk(hs, s) adds s to the write buffer as one chunk ("" ends the
 * body with the last chunk); -> bytes buffered */
static int l_http_chunk(lua_State *L) {
  httpstate *hs = check_hs(L, 1);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  if (n == 0) W_LIT(hs, "0\r\n\r\n");
  else w_body(hs, s, n, true);
  lua_pushinteger(L, (lua_Integer)(hs->wlen - hs->wpos));
  return 1;
}

/* http_raw(hs, s) adds s to the write buffer as it is; -> bytes buffered */
static int l_http_raw(lua_State *L) {
  httpstate *hs = check_hs(L, 1);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  w_put(hs, s, n);
  lua_pushinteger(L, (lua_Integer)(hs->wlen - hs->wpos));
  return 1;
}

/* Is the head of another request already in the read buffer? (Read
 * without an op: only the read side's holder, this G, reads rbuf.) */
static bool next_head_buffered(netconn *c) {
  return c->rend > c->rstart && head_end(c->rbuf + c->rstart, c->rend - c->rstart) > 0;
}

/* http_flush(hs, conn, extra, force, ctx) writes the write buffer, then
 * the string extra, with writev. Unless force, a response is held back
 * while the next pipelined request is already buffered (so that several
 * go out in one write), up to FLUSH_AT bytes. -> true, or nil, err.
 * Nothing when woken: call again with the same arguments. */
static int l_http_flush(lua_State *L) {
  httpstate *hs = check_hs(L, 1);
  netconn *c = net_check_conn(L, 2);
  size_t en = 0;
  const char *extra = lua_tolstring(L, 3, &en);
  bool force = lua_toboolean(L, 4);
  context *ctx = net_opt_ctx(L, 5);
  if (hs->wlen == hs->wpos && hs->epos >= en) {
    hs->epos = 0;
    lua_pushboolean(L, 1);
    return 1;
  }
  if (!force && !extra && hs->wlen < FLUSH_AT && next_head_buffered(c)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  net_op o;
  int nres = net_op_begin(L, &o, c->pd, MODE_WRITE, true, ctx);
  if (nres) return nres;
  for (;;) {
    struct iovec iov[2];
    int n = 0;
    if (hs->wpos < hs->wlen) iov[n++] = (struct iovec){hs->wbuf + hs->wpos, hs->wlen - hs->wpos};
    if (hs->epos < en) iov[n++] = (struct iovec){(char *)extra + hs->epos, en - hs->epos};
    if (n == 0) break;
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    ssize_t w = sendmsg(c->pd->fd, &mh, MSG_NOSIGNAL);
    if (w >= 0) {
      size_t k = (size_t)w, inbuf = hs->wlen - hs->wpos;
      if (k >= inbuf) {
        hs->wpos = hs->wlen;
        hs->epos += k - inbuf;
      } else {
        hs->wpos += k;
      }
      continue;
    }
    int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      if ((nres = net_op_again(L, &o, false))) return nres;
      continue;
    }
    net_op_end(&o);
    hs->wpos = hs->wlen = 0;
    hs->epos = 0;
    return net_push_errno(L, e);
  }
  net_op_end(&o);
  hs->wpos = hs->wlen = 0;
  hs->epos = 0;
  if (hs->wcap > WBUF_KEEP) {
    rt_free(hs->wbuf);
    hs->wbuf = NULL;
    hs->wcap = 0;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* http_buffered(hs) -> bytes waiting in the write buffer */
static int l_http_buffered(lua_State *L) {
  httpstate *hs = check_hs(L, 1);
  lua_pushinteger(L, (lua_Integer)(hs->wlen - hs->wpos));
  return 1;
}

/* http_take_buffered(hs, conn) -> the bytes read past the current message
 * (for a hijacked connection, whose new owner reads them first), "" if none */
static int l_http_take_buffered(lua_State *L) {
  (void)check_hs(L, 1);
  netconn *c = net_check_conn(L, 2);
  size_t n = c->rend - c->rstart;
  lua_pushlstring(L, n ? c->rbuf + c->rstart : "", n);
  if (n) netconn_consume(c, (uint32_t)n);
  return 1;
}

/* http_wait_closed(hs, conn, ctx) -> true once the peer has closed the
 * connection, false if it sent more bytes (a pipelined request: they stay
 * for the next read), or nil, err (ctx's when the watch is stopped).
 * Nothing when woken. Go's background read, without taking a byte. */
static int l_http_wait_closed(lua_State *L) {
  (void)check_hs(L, 1);
  netconn *c = net_check_conn(L, 2);
  context *ctx = net_opt_ctx(L, 3);
  net_op o;
  int nres = net_op_begin(L, &o, c->pd, MODE_READ, true, ctx);
  if (nres) return nres;
  for (;;) {
    if (c->rend > c->rstart) {
      net_op_end(&o);
      lua_pushboolean(L, 0);
      return 1;
    }
    char b;
    ssize_t r = recv(c->pd->fd, &b, 1, MSG_PEEK);
    if (r >= 0) {
      net_op_end(&o);
      lua_pushboolean(L, r == 0);
      return 1;
    }
    int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      if ((nres = net_op_again(L, &o, false))) return nres;
      continue;
    }
    net_op_end(&o);
    lua_pushboolean(L, 1); /* reset: gone as well */
    return 1;
  }
}

/* http_peek_closed(conn) -> true if the peer has closed (or reset) the
 * connection, as far as can be told without waiting: for an idle pooled
 * connection, before it is used again. */
static int l_http_peek_closed(lua_State *L) {
  netconn *c = net_check_conn(L, 1);
  if (c->rend > c->rstart) { /* bytes nobody asked for: not reusable */
    lua_pushboolean(L, 1);
    return 1;
  }
  char b;
  int fd = c->pd->fd;
  ssize_t r = fd < 0 ? 0 : recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  lua_pushboolean(L, r == 0 || r > 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK));
  return 1;
}

void http_open(lua_State *L) {
  if (luaL_newmetatable(L, HS_MT)) {
    lua_pushcfunction(L, l_hs_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  static const luaL_Reg funcs[] = {
      {"http_state", l_http_state},
      {"http_read_head", l_http_read_head},
      {"http_header", l_http_header},
      {"http_header_values", l_http_header_values},
      {"http_headers", l_http_headers},
      {"http_canonical_key", l_canonical_key},
      {"http_read_body", l_http_read_body},
      {"http_body_done", l_http_body_done},
      {"http_status_text", l_status_text},
      {"http_response_head", l_http_response_head},
      {"http_request_head", l_http_request_head},
      {"http_chunk", l_http_chunk},
      {"http_raw", l_http_raw},
      {"http_flush", l_http_flush},
      {"http_buffered", l_http_buffered},
      {"http_take_buffered", l_http_take_buffered},
      {"http_peek_closed", l_http_peek_closed},
      {"http_wait_closed", l_http_wait_closed},
      {"http_detect_content_type", l_detect_content_type},
      {NULL, NULL},
  };
  luaL_register(L, NULL, funcs);
}
