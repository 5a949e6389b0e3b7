-- lugo.http.client: HTTP/1.1 requests with Go's net/http client
-- semantics: a Client follows redirects and bounds a whole request in
-- time; a Transport keeps idle keep-alive connections for reuse.
--
-- Bytes are runtime/http.c's (request heads assembled in a write buffer,
-- responses parsed on the connection's read buffer); this module keeps
-- the protocol: connection reuse, retries, redirects, deadlines.
--
-- The pool is shared by every processor. A transport's state lives in
-- runtime objects only, so that a copy of the transport (spawn copies
-- tables) is the same transport:
--   - per key (scheme://host:port) a buffered channel of idle connections,
--     each as { conn, time it went idle }: taking one is a receive that
--     does not block, giving one back a send that does not block (the
--     connection is closed when the channel is full);
--   - the map key -> channel belongs to a registry goroutine, started in
--     the VM that makes the transport, which answers lookups sent on a
--     channel (each with a reply channel). Each VM asks once per key and
--     keeps the answer in a weak table, so a request costs no lookup;
--   - when the transport is collected in the VM that made it, the registry
--     stops and leaves the map as the only value of a channel of capacity
--     1 (a token: receive it, look up or add, send it back), where copies
--     of the transport in other VMs still find it;
--   - max_idle_conns is a channel of that capacity used as a counting
--     semaphore (one value per idle connection, any key).
-- A connection's parsing state (http_state) is per VM, found by the
-- connection in a weak table: between messages it holds nothing that
-- another VM's state would need (the read buffer is the connection's).
local I = require "lugo.internal"
local lugo = require "lugo"
local net = require "lugo.net"
local context = require "lugo.context"
local http = require "lugo.http"
local bit = require "bit"

local core, ERR, argerror = I.core, I.ERR, I.argerror
local type, tostring, tonumber, setmetatable, getmetatable, rawget = type, tostring, tonumber, setmetatable,
  getmetatable, rawget
local error, pairs, pcall, newproxy = error, pairs, pcall, newproxy
local concat = table.concat
local byte, sub, find, format, lower, gsub, match, char = string.byte, string.sub, string.find,
  string.format, string.lower, string.gsub, string.match, string.char
local band, rshift, lshift, bor = bit.band, bit.rshift, bit.lshift, bit.bor

local http_state, read_head, read_body = core.http_state, core.http_read_head, core.http_read_body
local headers_of = core.http_headers
local request_head, chunk, flush = core.http_request_head, core.http_chunk, core.http_flush
local body_done, peek_closed = core.http_body_done, core.http_peek_closed
local status_text_of, canonical_key = core.http_status_text, core.http_canonical_key
local set_deadline, conn_close = core.set_deadline, core.conn_close
local walltime = I.C.walltime
local Header = http.Header
local case_recv, case_send, DEFAULT, chan_select = lugo.case.recv, lugo.case.send, lugo.case.default, lugo.select
local Chan, Context = I.mt.channel, I.mt.context

local BODY_NONE = 0
local USER_AGENT = "lugo-http-client/1.1"
local MAX_HEADER = 10485760  -- Go's Transport: MaxResponseHeaderBytes 0 -> 10 MiB
local SMALL_BODY = 16384     -- string bodies up to this size are copied with the head
local READ_CHUNK = 65536
local MAX_1XX = 5            -- Go: "net/http: too many 1xx informational responses"
local SLURP = 2048           -- Go's maxBodySlurpSize: a redirect's body read to reuse its connection

local M = {}

-- check_redirect returns it to stop following and get the redirect
-- response itself (Go's http.ErrUseLastResponse). A string, so that it is
-- the same value in every VM.
M.use_last_response = "net/http: use last response"
M.error_body_too_large = "http: response body too large"
M.user_agent = USER_AGENT

-- Call a blocking C function until it answers (it returns nothing when
-- its goroutine was parked and woken); ERR: it could not park.
local function block(f, a, b, c, d, e)
  local r1, r2, r3, r4, r5, r6 = f(a, b, c, d, e)
  while r1 == nil and r2 == nil do r1, r2, r3, r4, r5, r6 = f(a, b, c, d, e) end
  if r1 == ERR then error(r2, 0) end
  return r1, r2, r3, r4, r5, r6
end

-- ---------------------------------------------------------------- urls

-- Go's %q, for the URLs in error messages.
local quote_escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
local function quote(s)
  return '"' .. gsub(s, '[%c"\\]', function(c) return quote_escapes[c] or format("\\x%02x", byte(c)) end) .. '"'
end

local function unhex(h) return char(tonumber(h, 16)) end
local function unescape(s)
  if not s or not find(s, "%", 1, true) then return s end
  return (gsub(s, "%%(%x%x)", unhex))
end

-- parse_url(s) -> { scheme, user, password, userinfo, host (as written:
-- "h:p", "[::1]:p"), hostname (without brackets), port (string or nil),
-- path (as written), raw_query (nil: none), fragment }, or nil, err with
-- Go's texts (url.Parse's).
local function parse_url(s)
  if type(s) ~= "string" then return nil, "missing URL" end
  if find(s, "[%z\1-\31\127]") then return nil, format("parse %s: net/url: invalid control character in URL", quote(s)) end
  local u = {}
  local rest = s
  local hash = find(rest, "#", 1, true)
  if hash then
    u.fragment = sub(rest, hash + 1)
    rest = sub(rest, 1, hash - 1)
  end
  local scheme, after = match(rest, "^(%a[%w+.%-]*):(.*)$")
  if scheme then
    u.scheme, rest = lower(scheme), after
  else
    if find(rest, "^[^/?]*:") then return nil, format("parse %s: first path segment in URL cannot contain colon", quote(s)) end
    u.scheme = ""
  end
  local q = find(rest, "?", 1, true)
  if q then
    u.raw_query = sub(rest, q + 1)
    rest = sub(rest, 1, q - 1)
  end
  if sub(rest, 1, 2) == "//" then
    local slash = find(rest, "/", 3, true)
    local auth = slash and sub(rest, 3, slash - 1) or sub(rest, 3)
    rest = slash and sub(rest, slash) or ""
    local at = match(auth, "^.*()@")
    if at then
      local ui = sub(auth, 1, at - 1)
      auth = sub(auth, at + 1)
      local colon = find(ui, ":", 1, true)
      if colon then
        u.user, u.password = unescape(sub(ui, 1, colon - 1)), unescape(sub(ui, colon + 1))
      else
        u.user = unescape(ui)
      end
      u.userinfo = ui
    end
    local hostname, port
    if byte(auth, 1) == 91 then -- "["
      local close = find(auth, "]", 1, true)
      if not close then return nil, format("parse %s: missing ']' in host", quote(s)) end
      hostname = sub(auth, 2, close - 1)
      local tail = sub(auth, close + 1)
      if tail ~= "" then
        port = match(tail, "^:(%d*)$")
        if not port then return nil, format("parse %s: invalid port %s after host", quote(s), quote(tail)) end
      end
    else
      local colon = find(auth, ":[^:]*$")
      if colon then
        hostname, port = sub(auth, 1, colon - 1), sub(auth, colon + 1)
        if not match(port, "^%d*$") then
          return nil, format("parse %s: invalid port %s after host", quote(s), quote(":" .. port))
        end
      else
        hostname = auth
      end
    end
    u.host, u.hostname = auth, unescape(hostname)
    u.port = port ~= "" and port or nil
  end
  u.path = rest
  return u
end
M.parse_url = parse_url

-- The URL as a string again (what a redirect resolves to).
local function url_string(u)
  local t = { u.scheme, ":" }
  if u.host then
    t[#t + 1] = "//"
    if u.userinfo then t[#t + 1] = u.userinfo .. "@" end
    t[#t + 1] = u.host
  end
  t[#t + 1] = u.path
  if u.raw_query then t[#t + 1] = "?" .. u.raw_query end
  return concat(t)
end

-- RFC 3986 5.2.4: remove "." and ".." segments.
local function remove_dots(path)
  if not find(path, ".", 1, true) then return path end
  local abs = byte(path, 1) == 47
  local segs, pos = {}, abs and 2 or 1
  while true do
    local slash = find(path, "/", pos, true)
    if not slash then
      segs[#segs + 1] = sub(path, pos)
      break
    end
    segs[#segs + 1] = sub(path, pos, slash - 1)
    pos = slash + 1
  end
  local out, n = {}, #segs
  for i = 1, n do
    local seg = segs[i]
    if seg == "." or seg == ".." then
      if seg == ".." and #out > 0 then out[#out] = nil end
      if i == n then out[#out + 1] = "" end -- "a/b/..": "a/"
    else
      out[#out + 1] = seg
    end
  end
  local r = concat(out, "/")
  if abs then r = "/" .. r end
  return r
end

-- resolve(base, ref) -> the absolute URL ref names from base (Go's
-- URL.Parse on the request's URL), as a parsed URL; or nil, err.
local function resolve(base, ref)
  local r, err = parse_url(ref)
  if not r then return nil, err end
  if r.scheme ~= "" then
    r.path = remove_dots(r.path)
    return r
  end
  r.scheme = base.scheme
  if r.host then
    r.path = remove_dots(r.path)
    return r
  end
  r.host, r.hostname, r.port = base.host, base.hostname, base.port
  r.userinfo, r.user, r.password = base.userinfo, base.user, base.password
  if r.path == "" then
    r.path = base.path
    if not r.raw_query then r.raw_query = base.raw_query end
  elseif byte(r.path, 1) == 47 then
    r.path = remove_dots(r.path)
  else
    local dir = match(base.path, "^(.*/)") or "/"
    r.path = remove_dots(dir .. r.path)
  end
  return r
end
M.resolve_url = function(base, ref)
  local b, err = parse_url(base)
  if not b then return nil, err end
  local r
  r, err = resolve(b, ref)
  if not r then return nil, err end
  return url_string(r)
end

-- The URL for error messages: a password shows as "***" (Go's stripPassword).
local function shown_url(s, u)
  if u and u.password and u.userinfo then
    local i, j = find(s, u.userinfo .. "@", 1, true)
    if i then return sub(s, 1, i - 1) .. (match(u.userinfo, "^[^:]*") or "") .. ":***@" .. sub(s, j + 1) end
  end
  return s
end

local function escape_byte(c) return format("%%%02X", byte(c)) end
-- The request target: the path (escaped where it must be) and the query.
local function request_target(u)
  local path = u.path
  if path == "" then path = "/" end
  if find(path, "[^%w%-%._~!$&'()*+,;=:@/%%]") then path = gsub(path, "[^%w%-%._~!$&'()*+,;=:@/%%]", escape_byte) end
  local q = u.raw_query
  if q then
    if find(q, "[^%w%-%._~!$&'()*+,;=:@/%%?]") then q = gsub(q, "[^%w%-%._~!$&'()*+,;=:@/%%?]", escape_byte) end
    return path .. "?" .. q
  end
  return path
end

-- ---------------------------------------------------------------- base64

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64(s)
  local out, n = {}, 0
  for i = 1, #s, 3 do
    local a, b, c = byte(s, i, i + 2)
    local v = bor(lshift(a, 16), lshift(b or 0, 8), c or 0)
    local c1, c2 = band(rshift(v, 18), 63) + 1, band(rshift(v, 12), 63) + 1
    local c3, c4 = band(rshift(v, 6), 63) + 1, band(v, 63) + 1
    n = n + 1
    out[n] = sub(B64, c1, c1) .. sub(B64, c2, c2) .. (b and sub(B64, c3, c3) or "=") .. (c and sub(B64, c4, c4) or "=")
  end
  return concat(out)
end
M._base64 = base64

-- ---------------------------------------------------------------- transports

local Transport = {}
Transport.__index = Transport
M.Transport = Transport

local transport_options = {
  max_idle_conns = "number", max_idle_conns_per_host = "number", idle_conn_timeout = "number",
  dial_timeout = "number", response_header_timeout = "number", disable_keep_alives = "boolean",
  max_response_header_bytes = "number",
}

-- The registry of a transport: a goroutine of the VM that made it, owning
-- the map key -> channel of idle connections. A lookup is { key, reply }
-- on `reqs`, answered on reply (capacity 1); { true, reply } asks for the
-- list of channels. When the transport is collected in the VM that made it,
-- reqs is closed: the registry hands the map over to the token channel,
-- where copies of the transport in other VMs still find it.
local function registry(reqs, token, per)
  local map = {}
  while true do
    local msg, ok = reqs:recv()
    if not ok then break end
    local key, reply = msg[1], msg[2]
    if key == false then -- are you there?
      reply:send(true)
    elseif key == true then
      local list, n = {}, 0
      for _, pool in pairs(map) do
        n = n + 1
        list[n] = pool
      end
      reply:send(list)
    else
      local pool = map[key]
      if not pool then
        pool = lugo.chan(per)
        map[key] = pool
      end
      reply:send(pool)
    end
  end
  token:send(map)
end

-- Close a transport's registry once the transport that started it is
-- garbage (a finalizer per transport, keyed weakly by the transport).
local sentinels = setmetatable({}, { __mode = "k" })
local function close_quietly(ch) pcall(ch.close, ch) end

-- transport{ max_idle_conns = 100, max_idle_conns_per_host = 2,
-- idle_conn_timeout = 90, dial_timeout = 30, response_header_timeout = nil,
-- disable_keep_alives = false, max_response_header_bytes = 10 MiB }.
-- Given a transport (or its copy from another VM: spawn copies tables),
-- returns it usable here: the same pool.
function M.transport(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then argerror(1, "transport", "table", opts) end
  if getmetatable(opts) == Transport then return opts end
  if rawget(opts, "_pools") ~= nil then return setmetatable(opts, Transport) end
  for k, v in pairs(opts) do
    local want = transport_options[k]
    if not want then error(format("http.transport: unknown option '%s'", tostring(k)), 2) end
    if type(v) ~= want then error(format("http.transport: option '%s' must be a %s, got %s", k, want, type(v)), 2) end
  end
  local t = setmetatable({}, Transport)
  t.max_idle_conns = opts.max_idle_conns or 100
  local per = opts.max_idle_conns_per_host or 0
  t.max_idle_conns_per_host = per == 0 and 2 or per -- Go's DefaultMaxIdleConnsPerHost
  t.idle_conn_timeout = opts.idle_conn_timeout or 90
  t.dial_timeout = opts.dial_timeout or 30
  local rht = opts.response_header_timeout
  t.response_header_timeout = rht and rht > 0 and rht or nil
  t.disable_keep_alives = opts.disable_keep_alives or false
  t.max_response_header_bytes = opts.max_response_header_bytes or MAX_HEADER
  t._idle = t.max_idle_conns > 0 and lugo.chan(t.max_idle_conns) or false
  local reqs, token = lugo.chan(), lugo.chan(1)
  t._reg, t._pools = reqs, token
  if t.max_idle_conns_per_host > 0 and not t.disable_keep_alives then
    if pcall(lugo.go, registry, reqs, token, t.max_idle_conns_per_host) then
      local sentinel = newproxy(true)
      getmetatable(sentinel).__gc = function() close_quietly(reqs) end
      sentinels[t] = sentinel
      return t
    end
  end
  reqs:close() -- no registry: the map is in the token
  token:send({})
  return t
end

-- What each VM found in a transport's map (by the token channel, which is
-- the same Lua value for as long as the VM holds the transport).
local vm_pools = setmetatable({}, { __mode = "k" })

local chan_send = Chan.__index.send

-- Ask the registry; nil if it is gone.
local function ask(t, key)
  local reply = lugo.chan(1)
  if not pcall(chan_send, t._reg, { key, reply }) then return nil end
  return (reply:recv())
end

-- Whether t's registry still runs (specs).
function Transport._registry_alive(t)
  return ask(t, false) == true
end

-- The channel of idle connections for key, made on first use; false when
-- the transport keeps none.
local function pool_of(t, key)
  local token = t._pools
  local cache = vm_pools[token]
  if cache then
    local pool = cache[key]
    if pool ~= nil then return pool end
  else
    cache = {}
    vm_pools[token] = cache
  end
  local per = t.max_idle_conns_per_host
  if per <= 0 or t.disable_keep_alives then
    cache[key] = false
    return false
  end
  local pool = ask(t, key)
  if not pool then -- the map is in the token: take it, look up, give it back
    local map = token:recv()
    pool = map[key]
    if not pool then
      pool = lugo.chan(per)
      map[key] = pool
    end
    token:send(map)
  end
  cache[key] = pool
  return pool
end

-- Every channel of idle connections of t.
local function all_pools(t)
  local list = ask(t, true)
  if list then return list end
  local map = t._pools:recv()
  list = {}
  for _, pool in pairs(map) do list[#list + 1] = pool end
  t._pools:send(map)
  return list
end

-- An idle connection to key that is still good, or nil.
local function get_idle(t, key)
  local pool = pool_of(t, key)
  if not pool then return nil end
  local idle, timeout = t._idle, t.idle_conn_timeout
  while true do
    local i, item = chan_select(case_recv(pool), DEFAULT)
    if i ~= 1 then return nil end
    if idle then chan_select(case_recv(idle), DEFAULT) end
    local c = item[1]
    if (timeout > 0 and walltime() - item[2] > timeout) or peek_closed(c) then
      conn_close(c)
    else
      return c
    end
  end
end

-- Give c back to key's pool, or close it if the pool is full.
local function put_idle(t, key, c)
  local pool = pool_of(t, key)
  if pool then
    local idle = t._idle
    if not idle or chan_select(case_send(idle, true), DEFAULT) == 1 then
      if chan_select(case_send(pool, { c, walltime() }), DEFAULT) == 1 then return end
      if idle then chan_select(case_recv(idle), DEFAULT) end
    end
  end
  conn_close(c)
end
M._put_idle, M._get_idle, M._pool_of = put_idle, get_idle, pool_of

-- close_idle_connections(): close the connections idle in the pool now.
function Transport.close_idle_connections(t)
  local idle = t._idle
  for _, pool in pairs(all_pools(t)) do
    while true do
      local i, item = chan_select(case_recv(pool), DEFAULT)
      if i ~= 1 then break end
      if idle then chan_select(case_recv(idle), DEFAULT) end
      conn_close(item[1])
    end
  end
end

-- idle_count([key]) -> connections idle in the pool (for key, or in all).
function Transport.idle_count(t, key)
  if key then
    local pool = pool_of(t, key)
    return pool and pool:len() or 0
  end
  local n = 0
  for _, pool in pairs(all_pools(t)) do n = n + pool:len() end
  return n
end

-- The parsing state of a connection, one per connection in each VM.
local states = setmetatable({}, { __mode = "k" })
local function state_of(c)
  local hs = states[c]
  if not hs then
    hs = http_state(1)
    states[c] = hs
  end
  return hs
end

local function dial(t, addr, ctx)
  local timeout = t.dial_timeout
  local c, err = net.dial("tcp", addr, { timeout = timeout > 0 and timeout or nil, ctx = ctx })
  if c then return c end
  if ctx and ctx:err() then return nil, ctx:err() end
  if find(err, "^lookup ") then return nil, "dial tcp: " .. err end
  if err ~= "i/o timeout" then err = "connect: " .. err end
  return nil, "dial tcp " .. addr .. ": " .. err
end

local IDEMPOTENT = { GET = true, HEAD = true, OPTIONS = true, TRACE = true }

-- Go's Request.isReplayable: a body that can be sent again, and a method
-- that may be repeated.
local function replayable(r)
  local b = r.body
  if b ~= nil and type(b) ~= "string" then return false end
  if IDEMPOTENT[r.method] then return true end
  local h = r.wire_headers
  return h ~= nil and (h["Idempotency-Key"] ~= nil or h["X-Idempotency-Key"] ~= nil)
end

-- The errors that mean the server had closed a reused connection before
-- it saw the request: nothing of a response arrived.
local NOTHING_READ = { EOF = true, ["connection reset by peer"] = true, ["broken pipe"] = true }

-- Write the request; true, or nil, err.
local function write_request(r, hs, c, ctx)
  local body = r.body
  local method, target, host, headers = r.method, r.target, r.host, r.wire_headers
  if body == nil then
    request_head(hs, method, target, host, headers, method == "HEAD" and -2 or 0, nil)
    return block(flush, hs, c, nil, true, ctx)
  end
  if type(body) == "string" then
    local n = #body
    if n <= SMALL_BODY then
      request_head(hs, method, target, host, headers, n, body)
      return block(flush, hs, c, nil, true, ctx)
    end
    request_head(hs, method, target, host, headers, n, nil)
    return block(flush, hs, c, body, true, ctx)
  end
  -- a reader: chunked, a chunk per read
  request_head(hs, method, target, host, headers, -1, nil)
  while true do
    local s, err = body:read(32768)
    if s == nil then
      if err ~= nil and err ~= "EOF" then return nil, tostring(err) end
      break
    end
    if #s > 0 then
      chunk(hs, s)
      local ok, ferr = block(flush, hs, c, nil, true, ctx)
      if not ok then return nil, ferr end
    end
  end
  chunk(hs, "")
  return block(flush, hs, c, nil, true, ctx)
end

local Response = {}
Response.__index = Response
M.Response = Response

-- One request on one connection, as Go's Transport.RoundTrip: an idle
-- connection if there is one, else a new one; a request that failed on a
-- reused connection before anything of the response came is sent again
-- on a new connection if it can be (Go's shouldRetryRequest).
-- r: { method, target, host, key, addr, wire_headers, body, head, close }
function Transport.round_trip(t, r, ctx)
  local fresh = false
  local rewindable = r.body == nil or type(r.body) == "string"
  local rht = t.response_header_timeout
  while true do
    local c, reused
    if not fresh then
      c = get_idle(t, r.key)
      reused = c ~= nil
    end
    if not c then
      local err
      c, err = dial(t, r.addr, ctx)
      if not c then return nil, err end
    end
    local hs = state_of(c)
    local ok, err = write_request(r, hs, c, ctx)
    if not ok then
      conn_close(c)
      if ctx and ctx:err() then return nil, ctx:err() end
      if not (reused and rewindable) then return nil, err end
      fresh = true -- Go's nothingWrittenError: send it again on a new connection
    else
      if rht then set_deadline(c, 0, walltime() + rht) end
      local status, minor, keep, kind, clen, reason
      local n1xx = 0
      while true do
        status, minor, keep, kind, clen, reason = block(read_head, hs, c, t.max_response_header_bytes, ctx, r.head)
        if not status or status < 100 or status >= 200 or status == 101 then break end
        n1xx = n1xx + 1 -- 100 Continue, 103 Early Hints: the response follows
        if n1xx > MAX_1XX then
          status, minor = nil, "net/http: too many 1xx informational responses"
          break
        end
      end
      if rht then set_deadline(c, 0, nil) end
      if status then
        local res = setmetatable({
          status = status,
          proto = minor == 0 and "HTTP/1.0" or "HTTP/1.1", proto_major = 1, proto_minor = minor,
          headers = setmetatable(headers_of(hs), Header),
          content_length = clen,
        }, Response)
        local text = reason ~= "" and reason or status_text_of(status)
        res.status_text = text ~= "" and (status .. " " .. text) or tostring(status)
        if r.head then
          res.content_length = tonumber(res.headers["Content-Length"]) or -1
        end
        keep = keep and not r.close and not t.disable_keep_alives
        if status == 101 then -- Switching Protocols: the connection is the caller's now
          res._done, res.conn = true, c
        elseif kind == BODY_NONE then
          res._done = true
          if keep then put_idle(t, r.key, c) else conn_close(c) end
        else
          res._c, res._hs, res._t, res._key, res._keep, res._ctx = c, hs, t, r.key, keep, ctx
        end
        return res
      end
      err = minor
      conn_close(c)
      if ctx and ctx:err() then return nil, ctx:err() end
      if keep == 431 then
        return nil, format("net/http: server response headers exceeded %d bytes; aborted", t.max_response_header_bytes)
      end
      if err == "i/o timeout" and rht then return nil, "net/http: timeout awaiting response headers" end
      if not (reused and NOTHING_READ[err] and replayable(r)) then return nil, err end
      fresh = true -- Go's errServerClosedIdle: the server closed it as we sent
    end
  end
end

-- ---------------------------------------------------------------- responses

local CLOSED_BODY = "http: read on closed response body"

-- The response is done with its connection: back to the pool if its body
-- was read to the end and it may be kept, else closed. Ends the request's
-- deadline.
local function release(res, reuse)
  local c = res._c
  if c then
    res._c = nil
    if reuse and res._keep and body_done(res._hs) then put_idle(res._t, res._key, c) else conn_close(c) end
  end
  local cancel = res._cancel
  if cancel then
    res._cancel = nil
    cancel()
  end
end

local function read(res, n)
  if res._done then return nil, "EOF" end
  local c = res._c
  if not c then return nil, res._err or CLOSED_BODY end
  local ctx = res._ctx
  local s, err = block(read_body, res._hs, c, n or READ_CHUNK, ctx)
  if s then return s end
  if err == "EOF" then
    res._done = true
    release(res, true)
    return nil, "EOF"
  end
  if ctx and ctx:err() then
    err = ctx:err()
    local tctx = res._tctx
    if tctx and tctx:err() and not (res._pctx and res._pctx:err()) then
      err = err .. " (Client.Timeout or context cancellation while reading body)"
    end
  end
  res._err = err
  release(res, false)
  return nil, err
end
Response._read = read

-- body([limit]) -> the whole body, or nil, err; past limit bytes (no limit
-- by default) nil, "http: response body too large" and the connection is
-- closed.
function Response.body(res, limit)
  local cached = rawget(res, "_body")
  if cached then return cached end
  if limit ~= nil and type(limit) ~= "number" then argerror(1, "body", "number", limit) end
  if limit and res.content_length > limit then
    res._err = M.error_body_too_large
    release(res, false)
    return nil, M.error_body_too_large
  end
  local parts, n, size = {}, 0, 0
  while true do
    local s, err = read(res, READ_CHUNK)
    if not s then
      if err ~= "EOF" then return nil, err end
      break
    end
    size = size + #s
    if limit and size > limit then
      res._err = M.error_body_too_large
      release(res, false)
      return nil, M.error_body_too_large
    end
    n = n + 1
    parts[n] = s
  end
  local body = n == 1 and parts[1] or concat(parts)
  res._body = body
  return body
end

local BodyReader = {}
BodyReader.__index = BodyReader

function BodyReader.read(b, n)
  if n ~= nil and (type(n) ~= "number" or n < 1) then argerror(1, "read", "positive number", n) end
  return read(b._res, n)
end

function BodyReader.close(b)
  return b._res:close()
end

-- body_reader() -> a reader: read([n]) -> up to n bytes, or nil, "EOF" at
-- the end (nil, err on an error); close().
function Response.body_reader(res)
  return setmetatable({ _res = res }, BodyReader)
end

-- close(): done with the response. A body not read to the end closes the
-- connection (Go's Body.Close); after the end, the connection was already
-- back in the pool.
function Response.close(res)
  if not res._done and res._c then
    res._err = CLOSED_BODY
    release(res, false)
  elseif res._cancel then
    release(res, false)
  end
  return true
end

function Response.header(res, name)
  return res.headers:get(name)
end

-- ---------------------------------------------------------------- clients

local Client = {}
Client.__index = Client
M.Client = Client

local default_transport
function M.default_transport()
  if not default_transport then default_transport = M.transport() end
  return default_transport
end

local client_options = { timeout = "number", transport = "table", check_redirect = "function" }

-- client{ timeout=, transport=, check_redirect= }. Given a client (or its
-- copy from another VM), returns it usable here.
function M.client(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then argerror(1, "client", "table", opts) end
  if getmetatable(opts) == Client then return opts end
  if rawget(opts, "_client") then
    setmetatable(opts, Client)
    if opts.transport then M.transport(opts.transport) end
    return opts
  end
  for k, v in pairs(opts) do
    local want = client_options[k]
    if not want then error(format("http.client: unknown option '%s'", tostring(k)), 2) end
    if type(v) ~= want then error(format("http.client: option '%s' must be a %s, got %s", k, want, type(v)), 2) end
  end
  local c = setmetatable({ _client = true }, Client)
  c.timeout = opts.timeout and opts.timeout > 0 and opts.timeout or nil
  c.transport = opts.transport and M.transport(opts.transport) or M.default_transport()
  c.check_redirect = opts.check_redirect
  return c
end

local default_client
local function get_default_client()
  if not default_client then default_client = M.client() end
  return default_client
end
M.default_client = get_default_client

local function default_check_redirect(_, via)
  if #via >= 10 then return "stopped after 10 redirects" end
end

-- Go's urlErrorOp: "GET" -> "Get".
local op_names = {}
local function op_name(method)
  local op = op_names[method]
  if not op then
    op = sub(method, 1, 1) .. lower(sub(method, 2))
    op_names[method] = op
  end
  return op
end

local DEFAULT_HEADERS = { ["User-Agent"] = USER_AGENT }

-- The headers a hop sends: the request's, plus User-Agent unless set
-- (set to "": none), Authorization from the URL's userinfo unless set,
-- Connection: close when asked.
local function wire_headers(h, u, close)
  if h == nil and not u.user and not close then return DEFAULT_HEADERS end
  local w = {}
  if h then for k, v in pairs(h) do w[k] = v end end
  local ua = w["User-Agent"]
  if ua == nil then w["User-Agent"] = USER_AGENT
  elseif ua == "" then w["User-Agent"] = nil end
  if u.user and w.Authorization == nil then
    w.Authorization = "Basic " .. base64(u.user .. ":" .. (u.password or ""))
  end
  if close then w.Connection = "close" end
  return w
end

local function is_reader(b)
  local tb = type(b)
  if tb ~= "table" and tb ~= "userdata" then return false end
  local ok, f = pcall(function() return b.read end)
  return ok and type(f) == "function"
end

-- A request's hop on the transport: validate the URL, assemble what goes
-- on the wire.
local function send(t, cur, ctx)
  local u = cur.u
  if u.scheme ~= "http" then return nil, format("unsupported protocol scheme %s", quote(u.scheme)) end
  if not u.hostname or u.hostname == "" then return nil, "http: no Host in request URL" end
  local h = cur.headers
  local close = cur.close or t.disable_keep_alives
  if h and not close then
    local conn = h.Connection
    if type(conn) == "string" and lower(conn) == "close" then close = true end
  end
  local port = u.port or "80"
  local hostname = lower(u.hostname)
  local v6 = find(hostname, ":", 1, true)
  local r = {
    method = cur.method, body = cur.body, head = cur.method == "HEAD", close = close,
    target = request_target(u),
    host = cur.host or (h and type(h.Host) == "string" and h.Host) or u.host,
    key = "http://" .. hostname .. ":" .. port,
    addr = (v6 and "[" .. hostname .. "]" or hostname) .. ":" .. port,
    wire_headers = wire_headers(h, u, close and not (h and h.Connection)),
  }
  return t:round_trip(r, ctx)
end

-- A Header from the table the caller gave: canonical names.
local function to_header(t)
  if t == nil then return nil end
  if type(t) ~= "table" then return nil, "headers must be a table" end
  local h = setmetatable({}, Header)
  for k, v in pairs(t) do
    if type(k) == "string" then
      local key = canonical_key(k)
      if type(v) == "table" then
        local l = {}
        for i = 1, #v do l[i] = tostring(v[i]) end
        if #l == 1 then h[key] = l[1] elseif #l > 1 then h[key] = l end
      else
        h[key] = tostring(v)
      end
    end
  end
  return h
end

-- Go's redirectBehavior.
local function redirect_behavior(method, res, ireq)
  local s = res.status
  if s == 301 or s == 302 or s == 303 then
    if method ~= "GET" and method ~= "HEAD" then method = "GET" end
    return method, true, false
  elseif s == 307 or s == 308 then
    local b = ireq.body
    if b ~= nil and type(b) ~= "string" then return method, false, true end -- cannot send it again
    return method, true, true
  end
  return method, false, false
end

local function canonical_addr(u)
  return lower(u.hostname or "") .. ":" .. (u.port or "80")
end

-- Go's isDomainOrSubdomain on canonical addresses ("host:port").
local function domain_or_subdomain(sub_, parent)
  if sub_ == parent then return true end
  return #sub_ > #parent and sub(sub_, -#parent) == parent and byte(sub_, -#parent - 1) == 46
end

local SENSITIVE = { Authorization = true, ["Www-Authenticate"] = true, Cookie = true, Cookie2 = true }

local VALID_METHOD = "^[!#$%%&'*+%-.^_`|~%w]+$"

-- do_request{ method=, url=, headers=, body=, ctx=, timeout=, host=,
-- close= } -> response, or nil, err (Go's texts: `Get "url": ...`). A
-- redirect stopped by check_redirect returns nil, err and the redirect
-- response (its body closed) as a third value.
function Client.do_request(c, req)
  if getmetatable(c) ~= Client then c = M.client(c) end
  if type(req) ~= "table" then argerror(1, "do_request", "table", req) end
  local method = req.method or "GET"
  if type(method) ~= "string" or not find(method, VALID_METHOD) then
    return nil, format("net/http: invalid method %s", quote(tostring(method)))
  end
  local url = req.url
  if type(url) ~= "string" then return nil, "http: nil Request.URL" end
  local u, perr = parse_url(url)
  if not u then return nil, perr end
  local headers, herr = to_header(req.headers)
  if herr then argerror(1, "do_request", "table req.headers", req.headers) end
  local body = req.body
  if body ~= nil and type(body) ~= "string" and not is_reader(body) then
    argerror(1, "do_request", "string or reader req.body", body)
  end
  local ctx = req.ctx
  if ctx ~= nil and getmetatable(ctx) ~= Context then argerror(1, "do_request", "context req.ctx", ctx) end
  local timeout = req.timeout or c.timeout
  if timeout ~= nil and type(timeout) ~= "number" then argerror(1, "do_request", "number req.timeout", timeout) end
  local tctx, cancel
  if timeout and timeout > 0 then tctx, cancel = context.with_timeout(ctx or context.background(), timeout) end
  local rctx = tctx or ctx
  local t = c.transport
  if getmetatable(t) ~= Transport then t = M.transport(t) end
  local check = c.check_redirect or default_check_redirect
  local op = op_name(method)

  local cur = { method = method, url = url, u = u, headers = headers, body = body, host = req.host, close = req.close }
  local ireq = cur
  local reqs = {}
  local res, redirect_method, include_body, strip
  while true do
    if #reqs > 0 then
      local loc = res.headers:get("Location")
      if not loc or loc == "" then break end
      local nu, lerr = resolve(cur.u, loc)
      if not nu then
        res:close()
        if cancel then cancel() end
        return nil, format("%s %s: failed to parse Location header %s: %s", op,
          quote(shown_url(cur.url, cur.u)), quote(loc), lerr)
      end
      local prev = cur
      cur = { method = redirect_method, url = url_string(nu), u = nu, response = res }
      if ireq.host and ireq.host ~= ireq.u.host and not match(loc, "^%a[%w+.%-]*:") then cur.host = ireq.host end
      if include_body then cur.body = ireq.body end
      -- Go 1.24: once a redirect leaves the first request's domain, the
      -- sensitive headers stay behind for the rest of the chain
      if not strip and not domain_or_subdomain(canonical_addr(nu), canonical_addr(ireq.u)) then strip = true end
      if ireq.headers then
        local h = setmetatable({}, Header)
        for k, v in pairs(ireq.headers) do
          if not (strip and SENSITIVE[k]) then h[k] = v end
        end
        cur.headers = h
      end
      if not (prev.u.scheme == "https" and nu.scheme == "http") and not (cur.headers and cur.headers.Referer) then
        cur.headers = cur.headers or setmetatable({}, Header)
        local ref = prev.u
        cur.headers.Referer = url_string({ scheme = ref.scheme, host = ref.host, path = ref.path,
          raw_query = ref.raw_query })
      end
      local err = check(cur, reqs)
      if err == M.use_last_response then break end
      -- read a little of the body so that its connection can be reused
      if res.content_length == -1 or res.content_length <= SLURP then
        local got = 0
        while got < SLURP do
          local s = read(res, SLURP - got)
          if not s then break end
          got = got + #s
        end
      end
      res:close()
      if err ~= nil then
        if cancel then cancel() end
        return nil, format("%s %s: %s", op, quote(loc), tostring(err)), res
      end
    end
    reqs[#reqs + 1] = cur
    if rctx and rctx:err() then
      local err = rctx:err()
      if tctx and not (ctx and ctx:err()) then err = err .. " (Client.Timeout exceeded while awaiting headers)" end
      if cancel then cancel() end
      return nil, format("%s %s: %s", op, quote(shown_url(cur.url, cur.u)), err)
    end
    local err
    res, err = send(t, cur, rctx)
    if not res then
      if tctx and tctx:err() and not (ctx and ctx:err()) then
        err = err .. " (Client.Timeout exceeded while awaiting headers)"
      end
      if cancel then cancel() end
      return nil, format("%s %s: %s", op, quote(shown_url(cur.url, cur.u)), err)
    end
    res.request = cur
    res.url = cur.url
    local should
    redirect_method, should, include_body = redirect_behavior(cur.method, res, ireq)
    if not should then break end
  end
  -- the response's body reading is under the request's deadline, which
  -- ends with it
  if cancel then
    if res._done then
      cancel()
    else
      res._cancel, res._tctx, res._pctx = cancel, tctx, ctx
    end
  end
  return res
end
Client.request = Client.do_request

local function with(opts, method, url, fname)
  if opts ~= nil and type(opts) ~= "table" then argerror(2, fname, "table", opts, 4) end
  local req = { method = method, url = url }
  if opts then
    req.headers, req.ctx, req.timeout, req.host, req.close = opts.headers, opts.ctx, opts.timeout, opts.host, opts.close
  end
  return req
end

function Client.get(c, url, opts)
  return Client.do_request(c, with(opts, "GET", url, "get"))
end

function Client.head(c, url, opts)
  return Client.do_request(c, with(opts, "HEAD", url, "head"))
end

-- post(url, content_type, body[, opts]): body a string or a reader.
function Client.post(c, url, content_type, body, opts)
  local req = with(opts, "POST", url, "post")
  local h = to_header(req.headers) or setmetatable({}, Header)
  if content_type ~= nil then h["Content-Type"] = tostring(content_type) end
  req.headers, req.body = h, body
  return Client.do_request(c, req)
end

function Client.close_idle_connections(c)
  local t = c.transport
  if getmetatable(t) ~= Transport then t = M.transport(t) end
  return t:close_idle_connections()
end

-- ---------------------------------------------------------------- module functions

-- request{ method=, url=, headers=, body=, ctx=, timeout=, client= }
function M.request(req)
  if type(req) ~= "table" then argerror(1, "request", "table", req) end
  local c = req.client
  if c ~= nil then c = M.client(c) else c = get_default_client() end
  return Client.do_request(c, req)
end

local function client_of(opts)
  local c = type(opts) == "table" and opts.client
  if c then return M.client(c) end
  return get_default_client()
end

function M.get(url, opts) return Client.get(client_of(opts), url, opts) end
function M.head(url, opts) return Client.head(client_of(opts), url, opts) end
function M.post(url, content_type, body, opts) return Client.post(client_of(opts), url, content_type, body, opts) end

return M
