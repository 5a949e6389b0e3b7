-- lugo.http: HTTP/1.1 servers and clients with Go's net/http semantics.
-- Bytes are runtime/http.c's: parsing (http_parser) on the connection's
-- read buffer, header lookups without tables, responses assembled in a
-- write buffer and sent with one writev per batch. This module keeps the
-- protocol: keep-alive, pipelining, 100-continue, draining, timeouts,
-- graceful shutdown; lugo.http.mux routes; lugo.http.client fetches.
local I = require "lugo.internal"
local lugo = require "lugo"
local net = require "lugo.net"
local context = require "lugo.context"
local sync = require "lugo.sync"
local time = require "lugo.time"
local runtime = require "lugo.runtime"

local core, ERR, argerror = I.core, I.ERR, I.argerror
local type, tostring, tonumber, setmetatable, getmetatable = type, tostring, tonumber, setmetatable, getmetatable
local error, pairs, ipairs, xpcall, select, next = error, pairs, ipairs, xpcall, select, next
local concat, insert = table.concat, table.insert
local byte, sub, find, format, lower, gsub, char = string.byte, string.sub, string.find, string.format, string.lower,
  string.gsub, string.char
local stderr = io.stderr

local http_state, read_head, read_body = core.http_state, core.http_read_head, core.http_read_body
local header_of, header_values_of, headers_of = core.http_header, core.http_header_values, core.http_headers
local response_head, chunk, raw, flush = core.http_response_head, core.http_chunk, core.http_raw, core.http_flush
local body_done, take_buffered = core.http_body_done, core.http_take_buffered
local canonical_key, status_text = core.http_canonical_key, core.http_status_text
local set_deadline, conn_close = core.set_deadline, core.conn_close
local walltime = I.C.walltime

local BODY_NONE, BODY_LENGTH, BODY_CHUNKED = 0, 1, 2
local R_CLOSE, R_KEEPALIVE, R_NOBODY, R_HTTP10 = 1, 2, 4, 8
local BUFFER = 8192                 -- a handler's writes up to this size get a Content-Length
local MAX_DRAIN = 256 * 1024        -- Go's maxPostHandlerReadBytes
local DEFAULT_MAX_HEADER = 1048576 -- Go's DefaultMaxHeaderBytes (1 MiB)
local DEFAULT_MAX_BODY = 10485760 -- r:body()'s limit when none is given (10 MiB)

local http = {}
local routing -- lugo.http.mux's entry points, loaded on first use (below)

http.status_text = function(code) return status_text(code) end
http.error_server_closed = "http: Server closed"
http.error_body_too_large = "http: request body too large"
http.error_abort_handler = setmetatable({}, { __tostring = function() return "net/http: abort Handler" end })

-- ---------------------------------------------------------------- headers

-- A Header is a plain table: canonical name -> value, or a list of values
-- when there are several (Go's map[string][]string, without the list for
-- the usual single value). Names are canonicalised as Go does.
local Header = {}
Header.__index = Header
local canon_cache, canon_count = {}, 0
local function canon(name)
  local c = canon_cache[name]
  if c then return c end
  if type(name) ~= "string" then error("http: header name must be a string", 3) end
  c = canonical_key(name)
  if canon_count > 2000 then canon_cache, canon_count = {}, 0 end -- bounded: names come from peers too
  canon_cache[name], canon_count = c, canon_count + 1
  return c
end
http.canonical_header_key = canonical_key

function Header.get(h, name)
  local v = h[canon(name)]
  if type(v) == "table" then return v[1] end
  return v
end

function Header.values(h, name)
  local v = h[canon(name)]
  if type(v) == "table" then return v end
  return { v }
end

function Header.set(h, name, value)
  h[canon(name)] = tostring(value)
end

function Header.add(h, name, value)
  local k = canon(name)
  local v = h[k]
  value = tostring(value)
  if v == nil then h[k] = value
  elseif type(v) == "table" then v[#v + 1] = value
  else h[k] = { v, value } end
end

function Header.del(h, name)
  h[canon(name)] = nil
end

function Header.clone(h)
  local c = setmetatable({}, Header)
  for k, v in pairs(h) do
    if type(v) == "table" then
      local l = {}
      for i = 1, #v do l[i] = v[i] end
      c[k] = l
    else
      c[k] = v
    end
  end
  return c
end

-- header([t]) -> a Header holding t's entries with canonical names.
function http.header(t)
  local h = setmetatable({}, Header)
  if t ~= nil then
    if type(t) ~= "table" then argerror(1, "header", "table", t) end
    for k, v in pairs(t) do
      if type(v) == "table" then
        for _, x in ipairs(v) do Header.add(h, k, x) end
      else
        Header.add(h, k, v)
      end
    end
  end
  return h
end
http.Header = Header

-- ---------------------------------------------------------------- urls

local function unhex(h) return char(tonumber(h, 16)) end

-- Percent-decoding; nil if an escape is malformed (Go's PathUnescape).
local function unescape(s, plus)
  if plus then s = gsub(s, "+", " ") end
  if not find(s, "%", 1, true) then return s end
  if find(s, "%%[^%x]") or find(s, "%%%x[^%x]") or find(s, "%%%x?$") then return nil end
  return (gsub(s, "%%(%x%x)", unhex))
end
http.unescape = function(s) return unescape(s, false) end
http.query_unescape = function(s) return unescape(s, true) end

local function escape_byte(c) return format("%%%02X", byte(c)) end
function http.query_escape(s)
  return (gsub(gsub(s, "[^%w%-%._~ ]", escape_byte), " ", "+"))
end
function http.path_escape(s)
  return (gsub(s, "[^%w%-%._~!$&'()*+,;=:@/]", escape_byte))
end

-- parse_query(s) -> { name = { values... } } (Go's url.ParseQuery)
local function parse_query(s)
  local q = {}
  for pair in string.gmatch(s, "[^&;]+") do
    local eq = find(pair, "=", 1, true)
    local k, v
    if eq then k, v = sub(pair, 1, eq - 1), sub(pair, eq + 1) else k, v = pair, "" end
    k, v = unescape(k, true), unescape(v, true)
    if k and v then
      local l = q[k]
      if l then l[#l + 1] = v else q[k] = { v } end
    end
  end
  return q
end
http.parse_query = parse_query

-- ---------------------------------------------------------------- requests

local Request = {}
local request_methods = {}
local lazy = {}

-- The target's parts: origin-form "/p?q", absolute-form "http://h/p?q",
-- asterisk-form "*", authority-form "h:p" (CONNECT).
local function split_target(r)
  local t = r.target
  local path, query = t, ""
  local q = find(t, "?", 1, true)
  if q then path, query = sub(t, 1, q - 1), sub(t, q + 1) end
  local host
  if byte(path, 1) ~= 47 and path ~= "*" then -- not "/..."
    local scheme_end = find(path, "://", 1, true)
    if scheme_end then
      local rest = sub(path, scheme_end + 3)
      local slash = find(rest, "/", 1, true)
      host = slash and sub(rest, 1, slash - 1) or rest
      path = slash and sub(rest, slash) or "/"
    elseif r.method == "CONNECT" then
      host, path = path, ""
    end
  end
  local decoded = unescape(path, false) or path
  rawset(r, "path", decoded)
  rawset(r, "raw_path", decoded ~= path and path or nil)
  rawset(r, "raw_query", query)
  rawset(r, "_target_host", host or false)
  rawset(r, "_split", true)
end

function lazy.path(r) split_target(r); return rawget(r, "path") end
function lazy.raw_query(r) split_target(r); return rawget(r, "raw_query") end
function lazy.raw_path(r) -- nil when it equals path: not cached, so split once only
  if not rawget(r, "_split") then split_target(r) end
  return rawget(r, "raw_path")
end
function lazy.host(r)
  if rawget(r, "_target_host") == nil then split_target(r) end
  local h = rawget(r, "_target_host")
  if h then return h end
  return r:header("Host") or ""
end
function lazy.remote_addr(r)
  local cs = r._cs
  local a = cs.remote
  if not a then
    a = cs.conn:remote_addr() or ""
    cs.remote = a
  end
  return a
end
function lazy.ctx(r)
  local cs = r._cs
  local ctx, cancel = context.with_cancel(cs.pctx)
  cs.cancel = cancel
  cs.watch = true
  if cs.body_err then cancel()
  elseif cs.body_read then cs:watch_close() end -- else once the body is read
  return ctx
end
function lazy.url(r)
  return r.target
end

Request.__index = function(r, k)
  local m = request_methods[k]
  if m then return m end
  local f = lazy[k]
  if f then
    local v = f(r)
    rawset(r, k, v)
    return v
  end
end

local STALE = "http: request used after its handler returned"

-- header(name) -> the first value of the header, any case; nil if none.
function request_methods.header(r, name)
  local h = rawget(r, "_headers")
  if h then return Header.get(h, name) end
  local cs = r._cs
  if cs.req ~= r then error(STALE, 2) end
  if type(name) ~= "string" then argerror(1, "header", "string", name) end
  return header_of(cs.hs, name)
end

-- headers() -> the request's Header (canonical names; a list of values
-- for a header that came more than once).
function request_methods.headers(r)
  local h = rawget(r, "_headers")
  if h then return h end
  local cs = r._cs
  if cs.req ~= r then error(STALE, 2) end
  h = setmetatable(headers_of(cs.hs), Header)
  r._headers = h
  return h
end

-- query(name) -> the first value of the query parameter, or nil.
function request_methods.query(r, name)
  local q = r:query_all()
  local l = q[name]
  return l and l[1]
end

-- query_all() -> { name = { values... } }
function request_methods.query_all(r)
  local q = rawget(r, "_query")
  if not q then
    q = parse_query(r.raw_query)
    r._query = q
  end
  return q
end

function request_methods.path_value(r, name)
  local pv = rawget(r, "path_values")
  return pv and pv[name] or ""
end

function request_methods.set_path_value(r, name, value)
  local pv = rawget(r, "path_values")
  if not pv then pv = {}; r.path_values = pv end
  pv[name] = value
end

-- body_reader() -> a reader whose read([n]) returns up to n bytes, or nil,
-- "EOF" at the end (nil, err on an error).
local BodyReader = {}
BodyReader.__index = BodyReader

function BodyReader.read(b, n)
  local cs, r = b._cs, b._req
  if cs.req ~= r then return nil, "http: invalid Read on closed Body" end
  return cs:read_body(n)
end

function BodyReader.close(b)
  b._closed = true
end

function request_methods.body_reader(r)
  return setmetatable({ _cs = r._cs, _req = r }, BodyReader)
end

-- body([limit]) -> the whole body as a string, or nil, err:
-- "http: request body too large" past limit bytes (default 10 MiB, or the
-- server's max_body_bytes); the connection then closes after the response.
function request_methods.body(r, limit)
  local cached = rawget(r, "_body")
  if cached then return cached end
  local cs = r._cs
  if cs.req ~= r then return nil, "http: invalid Read on closed Body" end
  limit = limit or cs.srv.max_body_bytes or DEFAULT_MAX_BODY
  if r.content_length > limit then
    cs.close_after = true
    return nil, http.error_body_too_large
  end
  local parts, n, size = {}, 0, 0
  while true do
    local s, err = cs:read_body(65536)
    if not s then
      if err ~= "EOF" then return nil, err end
      break
    end
    size = size + #s
    if size > limit then
      cs.close_after = true
      return nil, http.error_body_too_large
    end
    n = n + 1
    parts[n] = s
  end
  local body = n == 1 and parts[1] or concat(parts)
  r._body = body
  return body
end

-- ---------------------------------------------------------------- responses

local Writer = {}
Writer.__index = Writer

function Writer.header(w)
  local h = w._h
  if not h then
    h = setmetatable({}, Header)
    w._h = h
  end
  return h
end

local function check_status(code)
  if type(code) ~= "number" or code < 100 or code > 999 or code % 1 ~= 0 then
    error(format("invalid WriteHeader code %s", tostring(code)), 3)
  end
end

-- write_header(status): the status line; headers are sent with the first
-- write (or when the handler returns).
function Writer.write_header(w, code)
  check_status(code)
  if w._hijacked then return end
  if w._status then
    if not w._superfluous then
      w._superfluous = true
      stderr:write("http: superfluous response.WriteHeader call\n")
    end
    return
  end
  if code < 200 and code ~= 101 then -- an informational response goes out now; the real one follows
    local cs = w._cs
    raw(cs.hs, format("HTTP/1.1 %d %s\r\n\r\n", code, status_text(code)))
    cs:flush(true)
    return
  end
  w._status = code
end

local function no_body_status(code)
  return code == 204 or code == 304 or (code >= 100 and code < 200)
end

-- Send the head now, for a response whose size is not known yet: chunked
-- (or, to an HTTP/1.0 client, delimited by closing the connection).
local function start_streaming(w)
  local cs = w._cs
  local code = w._status or 200
  local flags = cs.flags
  local h = w._h
  local length = -1
  local cl = h and h["Content-Length"]
  if cl and tonumber(cl) then length = tonumber(cl) end
  if cs.minor == 0 and length < 0 then
    cs.close_after = true
    flags = flags + R_HTTP10
  end
  if cs.close_after and flags % 2 == 0 then flags = flags + R_CLOSE end
  if cs.head or no_body_status(code) then
    if flags % 8 < 4 then flags = flags + R_NOBODY end
  end
  response_head(cs.hs, code, h, length, flags, w[1])
  w._streaming = length < 0 and cs.minor ~= 0 and "chunked" or "identity"
  w._sent = 0
  w._status = code
  w._wrote = true
end

-- write(s) -> #s, or nil, err. The first write sends the headers (status
-- 200 unless write_header said otherwise).
function Writer.write(w, s)
  if type(s) ~= "string" then
    if type(s) == "number" then s = tostring(s) else argerror(1, "write", "string", s) end
  end
  if w._hijacked then return nil, "http: connection has been hijacked" end
  local cs = w._cs
  if w._err then return nil, w._err end
  if not w._wrote then
    local n = w._n + 1
    w[n] = s
    w._n = n
    local size = w._size + #s
    w._size = size
    if size <= BUFFER then return #s end
    -- too big to hold: stream it
    local body = n == 1 and s or concat(w, "", 1, n)
    for i = 1, n do w[i] = nil end
    w._n = 0
    w[1] = nil
    start_streaming(w)
    local ok, err = w:_send(body)
    if not ok then return nil, err end
    return #s
  end
  local ok, err = w:_send(s)
  if not ok then return nil, err end
  return #s
end

function Writer._send(w, s)
  local cs = w._cs
  if cs.head or no_body_status(w._status) or #s == 0 then return true end
  if w._streaming == "chunked" then
    chunk(cs.hs, s)
  else
    raw(cs.hs, s)
  end
  w._sent = w._sent + #s
  local ok, err = cs:flush(true)
  if not ok then w._err = err; return nil, err end
  return true
end

-- flush(): send what the handler wrote so far.
function Writer.flush(w)
  if w._hijacked then return end
  if not w._wrote then
    local n = w._n
    local body = n > 0 and concat(w, "", 1, n) or ""
    for i = 1, n do w[i] = nil end
    w._n = 0
    start_streaming(w)
    if #body > 0 then return w:_send(body) end
  end
  return w._cs:flush(true)
end

-- The handler returned: complete the response.
local function finish(w)
  local cs = w._cs
  if w._hijacked then return true end
  local flags = cs.flags
  if cs.close_after and flags % 2 == 0 then flags = flags + R_CLOSE end
  if not w._wrote then
    local code = w._status or 200
    local n = w._n
    local body = n == 1 and w[1] or n > 1 and concat(w, "", 1, n) or nil
    local length = body and #body or 0
    if cs.head or no_body_status(code) then
      if flags % 8 < 4 then flags = flags + R_NOBODY end
      if cs.head then -- HEAD: say the length the body would have had, if it was written
        length = n > 0 and length or -2
      else
        length = -2
      end
    end
    response_head(cs.hs, code, w._h, length, flags, body)
    return true
  end
  if w._streaming == "chunked" and not cs.head and not no_body_status(w._status) then
    chunk(cs.hs, "")
  elseif w._streaming == "identity" and cs.minor ~= 0 then
    local cl = w._h and tonumber(w._h["Content-Length"])
    if cl and cl ~= w._sent then cs.close_after = true end -- the handler wrote less than it said
  end
  return true
end

-- hijack() -> the connection and the bytes read past the request: the
-- caller owns the connection from now on (WebSocket and other protocols).
function Writer.hijack(w)
  if w._hijacked then error("http: connection has been hijacked", 2) end
  if w._wrote then error("http: Hijack called after the response was sent", 2) end
  local cs = w._cs
  local ok, err = cs:flush(true)
  if not ok then return nil, err end
  w._hijacked = true
  cs.hijacked = true
  return cs.conn, take_buffered(cs.hs, cs.conn)
end

-- ---------------------------------------------------------------- a connection

local Conn = {}
Conn.__index = Conn

function Conn.flush(cs, force)
  local hs, conn = cs.hs, cs.conn
  local ok, err = flush(hs, conn, nil, force)
  while ok == nil and err == nil do ok, err = flush(hs, conn, nil, force) end
  if ok == ERR then error(err, 3) end
  return ok, err
end

function Conn.read_body(cs, n)
  if cs.body_read then return nil, "EOF" end
  if cs.expect then -- the client waits for our go-ahead before it sends the body
    cs.expect = false
    raw(cs.hs, "HTTP/1.1 100 Continue\r\n\r\n")
    local ok, err = cs:flush(true)
    if not ok then return nil, err end
  elseif not cs.flushed_for_body then -- earlier pipelined responses may be what the client waits for
    cs.flushed_for_body = true
    local ok, err = cs:flush(true)
    if not ok then return nil, err end
  end
  local hs, conn = cs.hs, cs.conn
  local s, err = read_body(hs, conn, n)
  while s == nil and err == nil do s, err = read_body(hs, conn, n) end
  if s == ERR then error(err, 3) end
  if not s then
    if err == "EOF" then
      cs.body_read = true
      if cs.watch then cs:watch_close() end
    else -- the client went away, or broke the framing: the request is over (Go cancels its context)
      cs.close_after = true
      cs.body_err = err
      if cs.cancel then cs.cancel() end
    end
  end
  return s, err
end

local wait_closed = core.http_wait_closed
-- Watch for the client going away while the handler runs (Go's
-- background read): cancel the request's context if it does.
function Conn.watch_close(cs)
  if cs.watching then return end
  cs.watching = true
  local wctx, stop = context.with_cancel(cs.pctx)
  cs.stop_watch = stop
  local cancel, conn, hs = cs.cancel, cs.conn, cs.hs
  lugo.go(function()
    local closed, err = wait_closed(hs, conn, wctx)
    while closed == nil and err == nil do closed, err = wait_closed(hs, conn, wctx) end
    if closed == true then cancel() end
  end)
end

local function traceback(e)
  if e == http.error_abort_handler then return e end
  return debug.traceback(tostring(e), 2)
end

-- An error answer to a request that could not be read, then close.
local function reply_error(cs, status)
  local text = status_text(status)
  raw(cs.hs, format("HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n%d %s",
    status, text, status, text))
  cs:flush(true)
end

local PROTO = { [0] = "HTTP/1.0", [1] = "HTTP/1.1" }

-- Serve the requests of one connection, in order, until it closes.
local function serve_conn(srv, conn, pctx, state)
  local hs = http_state(0)
  local cs = setmetatable({ hs = hs, conn = conn, srv = srv, pctx = pctx }, Conn)
  local handler = srv._handler
  local max_header = srv.max_header_bytes or DEFAULT_MAX_HEADER
  local idle_timeout = srv.idle_timeout or srv.read_timeout
  local header_timeout = srv.read_header_timeout or srv.read_timeout
  local read_timeout, write_timeout = srv.read_timeout, srv.write_timeout
  local timed = idle_timeout or header_timeout or read_timeout or write_timeout
  local first = true
  while true do
    if state.down then break end
    if timed then
      local t = first and header_timeout or idle_timeout
      set_deadline(conn, 2, t and walltime() + t or nil)
    end
    first = false
    local method, target, minor, keep, bkind, clen = read_head(hs, conn, max_header, pctx, false, header_timeout)
    while method == nil and target == nil do
      method, target, minor, keep, bkind, clen = read_head(hs, conn, max_header, pctx, false, header_timeout)
    end
    if method == ERR then error(target) end
    if not method then
      if minor then reply_error(cs, minor) end -- minor: the status to answer with
      break
    end
    if timed then
      set_deadline(conn, 0, read_timeout and walltime() + read_timeout or nil)
      set_deadline(conn, 1, write_timeout and walltime() + write_timeout or nil)
    end
    local r = setmetatable({ method = method, target = target, proto = PROTO[minor], proto_minor = minor,
      content_length = clen, _cs = cs }, Request)
    local w = setmetatable({ _cs = cs, _n = 0, _size = 0 }, Writer)
    cs.req = r
    cs.minor = minor
    cs.body_err = nil
    cs.head = method == "HEAD"
    cs.body_read = bkind == BODY_NONE
    cs.close_after = not keep
    cs.flushed_for_body = false
    cs.expect = false
    cs.flags = (keep and minor == 0) and R_KEEPALIVE or 0
    if bkind ~= BODY_NONE then
      local expect = header_of(hs, "Expect")
      if expect then
        if lower(expect) == "100-continue" and minor == 1 then
          cs.expect = true
        else
          raw(hs, "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
          cs:flush(true)
          break
        end
      end
    end
    local ok, err = xpcall(handler, traceback, w, r)
    if cs.cancel then
      cs.cancel()
      cs.cancel = nil
    end
    if cs.stop_watch then
      cs.stop_watch()
      cs.stop_watch, cs.watching, cs.watch = nil, nil, nil
    end
    if cs.hijacked then return end
    if not ok then
      if err ~= http.error_abort_handler then
        stderr:write(format("http: panic serving %s: %s\n", r.remote_addr, tostring(err)))
      end
      break
    end
    cs.req = nil
    if not cs.body_read then
      if cs.expect then -- the client never sent the body: the connection cannot go on
        cs.close_after = true
      elseif bkind == BODY_LENGTH and clen > MAX_DRAIN then
        cs.close_after = true
      end
    end
    if state.down then cs.close_after = true end
    finish(w)
    if not cs.body_read and not cs.close_after then -- drain what the handler left, within bounds
      local drained = 0
      while true do
        local s, e = cs:read_body(65536)
        if not s then
          if e ~= "EOF" then cs.close_after = true end
          break
        end
        drained = drained + #s
        -- too late to say it in the response: just close after it
        if drained > MAX_DRAIN then cs.close_after = true; break end
      end
    end
    if cs.close_after then
      cs:flush(true)
      break
    end
    local fok = cs:flush(false)
    if not fok then break end
  end
  if not cs.hijacked then conn_close(conn) end
end

-- ---------------------------------------------------------------- servers

local Server = {}
Server.__index = Server

local server_options = {
  addr = "string", handler = true, read_timeout = "number", read_header_timeout = "number",
  write_timeout = "number", idle_timeout = "number", max_header_bytes = "number", max_body_bytes = "number",
  error_log = true, base_ctx = true,
}

-- server{ addr=, handler=, read_timeout=, read_header_timeout=,
-- write_timeout=, idle_timeout=, max_header_bytes=, max_body_bytes= }
function http.server(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then argerror(1, "server", "table", opts) end
  local srv = setmetatable({}, Server)
  for k, v in pairs(opts) do
    local want = server_options[k]
    if not want then error(format("http.server: unknown option '%s'", tostring(k)), 2) end
    if want ~= true and type(v) ~= want then
      error(format("http.server: option '%s' must be a %s, got %s", k, want, type(v)), 2)
    end
    if want == "number" and v <= 0 then v = nil end -- 0: none, as in Go
    srv[k] = v
  end
  local base, cancel = context.with_cancel(opts.base_ctx or context.background())
  srv._ctx, srv._cancel = base, cancel
  srv._conns = sync.waitgroup()   -- every connection being served, on any processor
  srv._acceptors = sync.waitgroup()
  srv._force = lugo.chan(1)        -- holds a value once close() was called
  return srv
end

local function resolve_handler(h)
  if h == nil then h = routing.default_serve_mux end
  if type(h) == "function" then return h end
  if type(h) == "table" and type(h.serve_http) == "function" then
    return function(w, r) return h:serve_http(w, r) end
  end
  local mt = getmetatable(h)
  if mt and mt.__call then return function(w, r) return h(w, r) end end
  error("http: handler must be a function or have a serve_http method", 3)
end

-- The server on one processor, at its first connection there: the
-- options copied in (they lost their metatable), the handler resolved, a
-- context for its connections (no cross-processor lock per request).
local function processor_setup(srv, state)
  setmetatable(srv, Server)
  local h = srv.handler
  if type(h) == "table" and rawget(h, "_lugo_mux") then require("lugo.http.mux").rebind(h) end
  srv._handler = resolve_handler(h)
  state.pctx, state.stop = context.with_cancel(srv._ctx)
  state.ready = true
end

-- net.serve's handler: serve connection c on the processor that accepted
-- it. srv and state are this processor's copies.
function http._serve_conn(srv, state, c)
  if not state.ready then processor_setup(srv, state) end
  state.conns[c] = true
  local ok, e = xpcall(serve_conn, traceback, srv, c, state.pctx, state)
  state.conns[c] = nil
  if not ok then stderr:write("http: ", tostring(e), "\n") end
end

-- net.serve's on_stop: this processor accepts no more. Keep-alive
-- connections end after their request in flight; close() ends them now.
function http._acceptor_stopped(srv, state)
  state.down = true
  if srv._force:len() > 0 then
    for c in pairs(state.conns) do conn_close(c) end
  end
  if state.stop then state.stop() end
end

-- serve(ln) serves ln on every processor (net.serve) and returns once the
-- server stops: nil, "http: Server closed" after shutdown() or close().
function Server.serve(srv, ln)
  if getmetatable(srv) ~= Server then argerror(1, "serve", "server", srv) end
  if srv._ctx:err() then return nil, http.error_server_closed end
  local opts = {}
  for k, v in pairs(srv) do
    if k ~= "_cancel" and k ~= "_ln" then opts[k] = v end -- what the processors need, and can be copied
  end
  -- The handler is copied into every processor, and copies have no
  -- metatable: a mux is given its methods back there, other objects cannot be.
  local h = opts.handler
  if h == nil then opts.handler = routing.default_serve_mux
  elseif type(h) == "table" and not rawget(h, "_lugo_mux") and type(rawget(h, "serve_http")) ~= "function" then
    error("http: a handler object whose serve_http comes from its metatable cannot be copied to every processor"
      .. " (copies have no metatable): pass a function, or a table holding serve_http itself", 2)
  end
  -- One copy of opts and state per processor: the two functions share them
  -- there, and resolve this module by name.
  local state = { conns = {} }
  local function serve_one(c) require("lugo.http")._serve_conn(opts, state, c) end
  local function stopped() require("lugo.http")._acceptor_stopped(opts, state) end
  srv._acceptors:add(1)
  net.serve(ln, serve_one, { ctx = srv._ctx, conns = srv._conns, on_stop = stopped })
  ln:close()
  srv._acceptors:done()
  return nil, http.error_server_closed
end

-- listen_and_serve(): listen on srv.addr (default ":80") with a socket
-- per processor, then serve.
function Server.listen_and_serve(srv)
  if getmetatable(srv) ~= Server then argerror(1, "listen_and_serve", "server", srv) end
  if srv._ctx:err() then return nil, http.error_server_closed end
  local addr = srv.addr or ":80"
  local ln, err = net.listen("tcp", addr, { reuseport = true })
  if not ln then return nil, err end
  srv._ln = ln
  return srv:serve(ln)
end

-- shutdown([ctx]): stop accepting, close idle connections, let requests
-- in flight finish; returns true when every connection is closed, or nil
-- and ctx's error if ctx ends first (Go's Shutdown: polls).
function Server.shutdown(srv, ctx)
  srv._cancel()
  local wait = 0.001
  while srv._conns:count() > 0 or srv._acceptors:count() > 0 do
    if ctx then
      local i = lugo.select(lugo.case.recv(ctx:done()), lugo.case.recv(time.after(wait)))
      if i == 1 then return nil, ctx:err() end
    else
      time.sleep(wait)
    end
    if wait < 0.5 then wait = wait * 2 end
  end
  return true
end

-- close(): stop at once: listeners and every connection closed.
function Server.close(srv)
  lugo.select(lugo.case.send(srv._force, true), lugo.case.default)
  srv._cancel()
  return true
end

-- listen_and_serve(addr, handler): a server with Go's defaults.
function http.listen_and_serve(addr, handler)
  return http.server({ addr = addr, handler = handler }):listen_and_serve()
end

function http.serve(ln, handler)
  return http.server({ handler = handler }):serve(ln)
end

-- ---------------------------------------------------------------- debugging

local function json_value(v, out)
  local t = type(v)
  if t == "table" then
    if #v > 0 or next(v) == nil then
      out[#out + 1] = "["
      for i = 1, #v do
        if i > 1 then out[#out + 1] = "," end
        json_value(v[i], out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = format("%q:", k)
        json_value(v[k], out)
      end
      out[#out + 1] = "}"
    end
  elseif t == "number" then
    out[#out + 1] = v == v and v ~= 1 / 0 and v ~= -1 / 0 and format("%.17g", v) or "null"
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  elseif v == nil then
    out[#out + 1] = "null"
  else
    out[#out + 1] = (format("%q", tostring(v)):gsub("\\\n", "\\n"))
  end
end

local function text_value(prefix, v, out)
  if type(v) == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do text_value(prefix == "" and tostring(k) or prefix .. "." .. tostring(k), v[k], out) end
  else
    out[#out + 1] = prefix .. " " .. tostring(v) .. "\n"
  end
end

-- debug_handler() -> a handler serving what Go's net/http/pprof gives:
-- .../goroutine (every goroutine's traceback, as kill -QUIT prints them,
-- without stopping), .../memstats and .../sched (runtime.memstats() and
-- the scheduler's counters; ?format=json for JSON), and an index.
function http.debug_handler()
  return function(w, r)
    local path = r.path
    local leaf = path:match("([^/]*)$")
    local as_json = r:query("format") == "json"
    local h = w:header()
    local function send(v)
      local out = {}
      if as_json then
        h:set("Content-Type", "application/json")
        json_value(v, out)
        out[#out + 1] = "\n"
      else
        h:set("Content-Type", "text/plain; charset=utf-8")
        text_value("", v, out)
      end
      w:write(concat(out))
    end
    if leaf == "goroutine" or leaf == "goroutines" then
      h:set("Content-Type", "text/plain; charset=utf-8")
      w:write(runtime.goroutine_dump())
    elseif leaf == "memstats" then
      send(runtime.memstats())
    elseif leaf == "sched" then
      send(runtime.sched_stats())
    elseif leaf == "" or leaf == "debug" or leaf == "pprof" then
      h:set("Content-Type", "text/html; charset=utf-8")
      w:write("<html><body><ul><li><a href=\"goroutine\">goroutine</a>: every goroutine's traceback"
        .. "</li><li><a href=\"memstats\">memstats</a> (<a href=\"memstats?format=json\">json</a>)"
        .. "</li><li><a href=\"sched\">sched</a> (<a href=\"sched?format=json\">json</a>)</li></ul></body></html>\n")
    else
      w:header():set("Content-Type", "text/plain; charset=utf-8")
      w:write_header(404)
      w:write("404 page not found\n")
    end
  end
end

-- ---------------------------------------------------------------- routing

-- lugo.http.mux loads on first use: a server with a function handler
-- never needs it.
routing = setmetatable({}, { __index = function(t, k)
  local mux = require "lugo.http.mux"
  t.serve_mux, t.error, t.not_found, t.redirect = mux.new, mux.error, mux.not_found, mux.redirect
  t.default_serve_mux = mux.new()
  return rawget(t, k)
end })
function http.serve_mux() return routing.serve_mux() end
function http.handle(pattern, handler) return routing.default_serve_mux:handle(pattern, handler) end
http.handle_func = http.handle
function http.error(w, msg, code) return routing.error(w, msg, code) end
function http.not_found(w, r) return routing.not_found(w, r) end
function http.redirect(w, r, url, code) return routing.redirect(w, r, url, code) end
-- The client side (lugo.http.client) and the file server
-- (lugo.http.fs) load on first use as well.
local function client_module() return require "lugo.http.client" end
function http.client(opts) return client_module().client(opts) end
function http.transport(opts) return client_module().transport(opts) end
function http.request(req) return client_module().request(req) end
function http.get(url, opts) return client_module().get(url, opts) end
function http.head(url, opts) return client_module().head(url, opts) end
function http.post(url, content_type, body, opts) return client_module().post(url, content_type, body, opts) end
http.use_last_response = "net/http: use last response" -- as lugo.http.client's: a string, equal in every VM
function http.file_server(dir, opts) return require("lugo.http.fs").file_server(dir, opts) end
function http.serve_file(w, r, path) return require("lugo.http.fs").serve_file(w, r, path) end
function http.detect_content_type(s) return core.http_detect_content_type(s) end

setmetatable(http, { __index = function(_, k)
  if k == "default_serve_mux" then return routing.default_serve_mux end
end })

return http
