-- lugo.http.client (lua/lugo/http/client.lua): requests, responses,
-- redirects, the shared connection pool, retries and deadlines, against
-- lugo's own server and against raw lugo.net servers that script every
-- byte (a server the client does not control).
--
-- ctest runs this file with 1, 2 and 4 processors (LUGO_MAXPROCS). Every
-- `it` body runs in the main goroutine on processor 0. Only 127.0.0.1 and
-- ports chosen by the kernel are used; every server and connection is
-- closed when its test ends (defer); every wait is bounded (client
-- timeouts, recv_within), so that a bug fails a test instead of hanging the
-- suite. lugo's server copies its handler into every processor's VM: a
-- handler captures nothing but copyable values and reports through
-- channels. The raw servers run as goroutines of the test's VM and share
-- its tables.
local lugo = require "lugo"
local net = require "lugo.net"
local time = require "lugo.time"
local context = require "lugo.context"
local runtime = require "lugo.runtime"
local http = require "lugo.http"
local client = require "lugo.http.client"
local helper = require "helper"

local pack, recv_within, defer = helper.pack, helper.recv_within, helper.defer
local HANG = os.getenv("LUGO_SANITIZED") == "1" and 40 or 10
-- seconds within which a request given a short deadline must have failed
local PROMPT = os.getenv("LUGO_SANITIZED") == "1" and 5 or 1

-- Receive from ch within limit seconds (default HANG), failing the test
-- instead of hanging.
local function within(ch, what, limit)
  local v, ok = recv_within(ch, limit or HANG)
  assert(ok ~= "timeout", "timed out waiting for " .. (what or "a value"))
  return v, ok
end

-- Run f(...) in a goroutine of this VM; the channel returned receives
-- pack(f(...)), or { error = msg } if f raised.
local function go(f, ...)
  local res = lugo.chan(1)
  lugo.go(function(...)
    local r = pack(pcall(f, ...))
    if r[1] then res:send(pack(select(2, unpack(r, 1, r.n))))
    else res:send({ n = 1, error = tostring(r[2]) }) end
  end, ...)
  return res
end

local function result(res, what, limit)
  local r = within(res, what, limit)
  assert(r.error == nil, r.error)
  return r
end

-- A transport and a client of their own for one test, with a timeout
-- against hangs; opts go to the transport, copts to the client.
local function new_client(opts, copts)
  local t = client.transport(opts or {})
  copts = copts or {}
  copts.transport = t
  if copts.timeout == nil then copts.timeout = HANG end
  local c = client.client(copts)
  defer(function() t:close_idle_connections() end)
  return c, t
end

-- ---------------------------------------------------------------- lugo's server

-- The echo handler: the request as lines "name=value" (headers as
-- "h:Canonical-Name=value", several values joined by ","), then a blank
-- line and the body.
local function echo(w, r)
  local body, err = r:body()
  local lines = { "method=" .. r.method, "target=" .. r.target, "proto=" .. r.proto }
  for k, v in pairs(r:headers()) do
    if type(v) == "table" then v = table.concat(v, ",") end
    lines[#lines + 1] = "h:" .. k .. "=" .. v
  end
  table.sort(lines)
  w:header():set("X-Remote", r.remote_addr)
  w:write(table.concat(lines, "\n") .. "\n\n" .. (body or ("ERROR " .. tostring(err))))
end

-- What echo answered: a table of its lines, and the body it saw.
local function echoed(s)
  local head, body = s:match("^(.-)\n\n(.*)$")
  assert(head, "not an echo: " .. tostring(s))
  local t = {}
  for line in head:gmatch("[^\n]+") do
    local k, v = line:match("^([^=]+)=(.*)$")
    t[k] = v
  end
  return t, body
end

-- Serve handler with lugo's server on a loopback port; its base URL and
-- the server, stopped when the test ends.
local function serve(handler, opts)
  local ln = assert(net.listen("tcp", "127.0.0.1:0"))
  opts = opts or {}
  opts.handler = handler
  local srv = http.server(opts)
  local done = lugo.chan(1)
  lugo.go(function()
    srv:serve(ln)
    done:send(true)
  end)
  defer(function()
    srv:close()
    recv_within(done, HANG)
    ln:close()
  end)
  return "http://" .. ln:addr(), srv
end

-- A server that answers "ok <path>" and reports each request's remote
-- address on the channel returned (connections are told apart by it).
local function counting_server()
  local seen = lugo.chan(100000)
  local url = serve(function(w, r)
    seen:send(r.remote_addr)
    w:write("ok " .. r.target)
  end)
  return url, seen
end

-- The number of distinct addresses received on seen so far, and of requests.
local function distinct(seen)
  local set, n, reqs = {}, 0, 0
  while seen:len() > 0 do
    local a = seen:recv()
    reqs = reqs + 1
    if not set[a] then
      set[a] = true
      n = n + 1
    end
  end
  return n, reqs
end

-- ---------------------------------------------------------------- raw servers

-- Read one request from a raw connection: { method, target, headers (lower
-- case names), body }, or nil at the end.
local function read_request(c)
  local line = c:read_line()
  if not line then return nil end
  local method, target = line:match("^(%S+) (%S+) HTTP/1%.%d$")
  if not method then return nil end
  local h = {}
  while true do
    local l = c:read_line()
    if not l then return nil end
    if l == "" then break end
    local k, v = l:match("^([^:]+):%s*(.-)%s*$")
    k = k:lower()
    h[k] = h[k] and (h[k] .. "," .. v) or v
  end
  local body = ""
  if h["content-length"] then
    local n = tonumber(h["content-length"])
    if n > 0 then
      body = c:read_exactly(n)
      if not body then return nil end
    end
  elseif h["transfer-encoding"] == "chunked" then
    local parts = {}
    while true do
      local size = c:read_line()
      if not size then return nil end
      local n = tonumber(size:match("^%x+"), 16)
      if n == 0 then
        c:read_line()
        break
      end
      parts[#parts + 1] = c:read_exactly(n)
      c:read_line()
    end
    body = table.concat(parts)
  end
  return { method = method, target = target, headers = h, body = body }
end

-- A scripted server. respond(req, srv) gets each request (req.conn: the
-- connection's number from 1, req.n: the request's number on it) and
-- returns the bytes to send and, as a second value, "close" to close the
-- connection after them; nil: close without answering; false: never
-- answer (hold the connection open until the client goes). srv.conns
-- counts accepted connections, srv.requests lists the requests. A
-- response to HEAD goes without its body unless head_body is set.
local function raw_server(respond, head_body)
  local ln = assert(net.listen("tcp", "127.0.0.1:0"))
  local srv = { conns = 0, requests = {}, open = {}, addr = ln:addr() }
  srv.url = "http://" .. srv.addr
  lugo.go(function()
    while true do
      local c = ln:accept()
      if not c then break end
      srv.conns = srv.conns + 1
      local no = srv.conns
      srv.open[#srv.open + 1] = c
      lugo.go(function()
        local n = 0
        while true do
          local req = read_request(c)
          if not req then break end
          n = n + 1
          req.conn, req.n = no, n
          srv.requests[#srv.requests + 1] = req
          local out, action = respond(req, srv)
          if out == nil then break end
          if out == false then
            c:read()
            break
          end
          if req.method == "HEAD" and not head_body then out = out:match("^.-\r\n\r\n") or out end
          if #out > 0 and not c:write(out) then break end
          if action == "close" then break end
        end
        c:close()
      end)
    end
  end)
  defer(function()
    ln:close()
    for _, c in ipairs(srv.open) do c:close() end
  end)
  return srv
end

local function ok_response(body, extra)
  return "HTTP/1.1 200 OK\r\nContent-Length: " .. #body .. "\r\n" .. (extra or "") .. "\r\n" .. body
end

-- A port nothing listens on (a listener's, closed).
local function dead_addr()
  local ln = assert(net.listen("tcp", "127.0.0.1:0"))
  local a = ln:addr()
  ln:close()
  return a
end

describe("lugo.http.client", function()
  describe("requests", function()
    it("GET returns the status, protocol, headers, length and body, with Go's default headers", function()
      local url = serve(echo)
      local c = new_client()
      local res = assert(c:get(url .. "/a/b?x=1&y=2"))
      assert.are.equal(200, res.status)
      assert.are.equal("200 OK", res.status_text)
      assert.are.equal("HTTP/1.1", res.proto)
      assert.are.equal(1, res.proto_minor)
      local body = assert(res:body())
      assert.are.equal(#body, res.content_length)
      assert.are.equal(tostring(#body), res.headers["Content-Length"])
      assert.are.equal(tostring(#body), res.headers:get("content-length"))
      assert.are.equal(res:body(), body) -- kept
      local e, b = echoed(body)
      assert.are.equal("GET", e.method)
      assert.are.equal("/a/b?x=1&y=2", e.target)
      assert.are.equal("lugo-http-client/1.1", e["h:User-Agent"])
      assert.are.equal(url:match("//(.*)"), e["h:Host"])
      assert.is_nil(e["h:Accept-Encoding"])
      assert.is_nil(e["h:Content-Length"]) -- a GET without a body says none
      assert.are.equal("", b)
      assert.are.equal(url .. "/a/b?x=1&y=2", res.url)
      assert.are.equal("GET", res.request.method)
    end)

    it("sends the caller's headers with canonical names, several values, and User-Agent overridden or removed", function()
      local url = serve(echo)
      local c = new_client()
      local res = assert(c:get(url .. "/", { headers = { ["x-one"] = "1", ["X-Many"] = { "a", "b" },
        ["user-agent"] = "me/2" } }))
      local e = echoed(assert(res:body()))
      assert.are.equal("1", e["h:X-One"])
      assert.are.equal("a,b", e["h:X-Many"])
      assert.are.equal("me/2", e["h:User-Agent"])
      res = assert(c:get(url .. "/", { headers = { ["User-Agent"] = "" } }))
      e = echoed(assert(res:body()))
      assert.is_nil(e["h:User-Agent"])
    end)

    it("POST sends a string body with Content-Length and the content type", function()
      local url = serve(echo)
      local c = new_client()
      local res = assert(c:post(url .. "/p", "text/plain", "hello body"))
      local e, b = echoed(assert(res:body()))
      assert.are.equal("POST", e.method)
      assert.are.equal("text/plain", e["h:Content-Type"])
      assert.are.equal("10", e["h:Content-Length"])
      assert.is_nil(e["h:Transfer-Encoding"])
      assert.are.equal("hello body", b)
      -- a body larger than what goes with the head in one buffer
      local big = string.rep("0123456789abcdef", 20000)
      e, b = echoed(assert(assert(c:post(url .. "/p", "application/octet-stream", big)):body()))
      assert.are.equal(tostring(#big), e["h:Content-Length"])
      assert.are.equal(big, b)
      -- the module's post and request, with the default client
      res = assert(client.post(url .. "/m", "a/b", "xy"))
      e, b = echoed(assert(res:body()))
      assert.are.equal("a/b", e["h:Content-Type"])
      assert.are.equal("xy", b)
      res = assert(client.request { method = "PUT", url = url .. "/put", body = "z", timeout = HANG })
      e, b = echoed(assert(res:body()))
      assert.are.equal("PUT", e.method)
      assert.are.equal("z", b)
      -- POST and DELETE without a body say Content-Length: 0, as Go does
      e = echoed(assert(assert(c:request { method = "DELETE", url = url .. "/d" }):body()))
      assert.are.equal("0", e["h:Content-Length"])
      e = echoed(assert(assert(c:post(url .. "/e", nil, nil)):body()))
      assert.are.equal("0", e["h:Content-Length"])
    end)

    it("POST sends a reader's body chunked", function()
      local url = serve(echo)
      local c = new_client()
      local parts = { "one,", "", "two,", string.rep("x", 70000) }
      local i = 0
      local reader = { read = function()
        i = i + 1
        if parts[i] then return parts[i] end
        return nil, "EOF"
      end }
      local res = assert(c:post(url .. "/r", "text/plain", reader))
      local e, b = echoed(assert(res:body()))
      assert.are.equal("chunked", e["h:Transfer-Encoding"])
      assert.is_nil(e["h:Content-Length"])
      assert.are.equal(table.concat(parts), b)
      -- a reader's error ends the request with it
      local bad = { read = function() return nil, "disk on fire" end }
      local r2, err = c:post(url .. "/r", "text/plain", bad)
      assert.is_nil(r2)
      assert.are.equal('Post "' .. url .. '/r": disk on fire', err)
    end)

    it("reads a body in pieces with body_reader, and a closed body reads no more", function()
      local big = string.rep("abcdefgh", 40000)
      local url = serve(function(w) w:write(big) end)
      local c = new_client()
      local res = assert(c:get(url .. "/"))
      local rd = res:body_reader()
      local got, n = {}, 0
      while true do
        local s, err = rd:read(1000)
        if not s then
          assert.are.equal("EOF", err)
          break
        end
        assert.is_true(#s <= 1000)
        n = n + 1
        got[n] = s
      end
      assert.is_true(n >= 320)
      assert.are.equal(big, table.concat(got))
      assert.are.same({ nil, "EOF" }, { rd:read() })
      res = assert(c:get(url .. "/"))
      local s = assert(res:body_reader():read(10))
      assert.are.equal("abcdefghab", s)
      assert.is_true(res:close())
      local b, err = res:body()
      assert.is_nil(b)
      assert.are.equal("http: read on closed response body", err)
    end)

    it("body(limit) refuses a body larger than limit", function()
      local url = serve(function(w) w:write(string.rep("x", 5000)) end)
      local c = new_client()
      local res = assert(c:get(url .. "/"))
      local b, err = res:body(100)
      assert.is_nil(b)
      assert.are.equal("http: response body too large", err)
      assert.are.equal(5000, #assert(assert(c:get(url .. "/")):body(5000)))
    end)

    it("sends the URL's user info as basic authorization and hides its password in errors", function()
      local url = serve(echo)
      local c = new_client()
      local res = assert(c:get(url:gsub("//", "//Aladdin:open%%20sesame@") .. "/"))
      local e = echoed(assert(res:body()))
      assert.are.equal("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", e["h:Authorization"])
      -- set by the caller: kept
      res = assert(c:get(url:gsub("//", "//u:p@") .. "/", { headers = { Authorization = "Bearer t" } }))
      assert.are.equal("Bearer t", echoed(assert(res:body()))["h:Authorization"])
      local a = dead_addr()
      local _, err = c:get("http://u:secret@" .. a .. "/")
      assert.are.equal('Get "http://u:***@' .. a .. '/": dial tcp ' .. a .. ': connect: connection refused', err)
    end)

    it("escapes what a request target may not hold, and keeps the Host header the caller sets", function()
      local url = serve(echo)
      local c = new_client()
      local e = echoed(assert(assert(c:get(url .. "/a b/ü?q=x y#frag")):body()))
      assert.are.equal("/a%20b/%C3%BC?q=x%20y", e.target)
      e = echoed(assert(assert(c:get(url, { headers = { Host = "example.com" } })):body()))
      assert.are.equal("example.com", e["h:Host"])
      assert.are.equal("/", e.target)
    end)

    it("parses URLs as Go does: default port, IPv6 literals, user info; and says why one is refused", function()
      local u = assert(client.parse_url("HTTP://[::1]:8080/p/q?x=1#f"))
      assert.are.equal("http", u.scheme)
      assert.are.equal("::1", u.hostname)
      assert.are.equal("[::1]:8080", u.host)
      assert.are.equal("8080", u.port)
      assert.are.equal("/p/q", u.path)
      assert.are.equal("x=1", u.raw_query)
      assert.are.equal("f", u.fragment)
      u = assert(client.parse_url("http://user:pw@example.com"))
      assert.are.equal("user", u.user)
      assert.are.equal("pw", u.password)
      assert.are.equal("example.com", u.hostname)
      assert.is_nil(u.port)
      assert.are.equal("", u.path)
      local r, err = client.get("https://127.0.0.1/")
      assert.is_nil(r)
      assert.are.equal('Get "https://127.0.0.1/": unsupported protocol scheme "https"', err)
      _, err = client.get("ftp://127.0.0.1/")
      assert.are.equal('Get "ftp://127.0.0.1/": unsupported protocol scheme "ftp"', err)
      _, err = client.get("/relative")
      assert.are.equal('Get "/relative": unsupported protocol scheme ""', err)
      _, err = client.get("http:///nohost")
      assert.are.equal('Get "http:///nohost": http: no Host in request URL', err)
      _, err = client.get("http://[::1/")
      assert.are.equal([[parse "http://[::1/": missing ']' in host]], err)
      _, err = client.get("http://127.0.0.1:80x/")
      assert.are.equal([[parse "http://127.0.0.1:80x/": invalid port ":80x" after host]], err)
      _, err = client.get("http://127.0.0.1/\n")
      assert.are.equal([[parse "http://127.0.0.1/\n": net/url: invalid control character in URL]], err)
      _, err = client.request { method = "BAD METHOD", url = "http://127.0.0.1/" }
      assert.are.equal('net/http: invalid method "BAD METHOD"', err)
      -- Go's URL.ResolveReference
      local base = "http://h:1/a/b/c?q"
      assert.are.equal("http://h:1/a/b/d", client.resolve_url(base, "d"))
      assert.are.equal("http://h:1/a/x", client.resolve_url(base, "../x"))
      assert.are.equal("http://h:1/a/", client.resolve_url(base, ".."))
      assert.are.equal("http://h:1/y?z", client.resolve_url(base, "/./y?z"))
      assert.are.equal("http://h:1/a/b/c?n", client.resolve_url(base, "?n"))
      assert.are.equal("http://other:2/p", client.resolve_url(base, "//other:2/p"))
      assert.are.equal("http://x/", client.resolve_url(base, "http://x/../"))
      assert.are.equal("http://x/", client.resolve_url(base, "http://x/a/../"))
    end)

    it("fails with Go's dial error when nothing listens", function()
      local a = dead_addr()
      local r, err = client.get("http://" .. a .. "/x")
      assert.is_nil(r)
      assert.are.equal('Get "http://' .. a .. '/x": dial tcp ' .. a .. ": connect: connection refused", err)
      _, err = client.post("http://" .. a, "text/plain", "x")
      assert.are.equal('Post "http://' .. a .. '": dial tcp ' .. a .. ": connect: connection refused", err)
    end)

    it("refuses wrong arguments", function()
      assert.has_error(function() client.client { timeout = "1" } end,
        "http.client: option 'timeout' must be a number, got string")
      assert.has_error(function() client.transport { max_idle = 1 } end, "http.transport: unknown option 'max_idle'")
      assert.has_error(function() client.request { url = "http://127.0.0.1/", body = 42 } end)
    end)
  end)

  describe("responses", function()
    it("reads a chunked body, and the connection serves the next request", function()
      local srv = raw_server(function(req)
        return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"
      end)
      local c = new_client()
      for _ = 1, 3 do
        local res = assert(c:get(srv.url .. "/"))
        assert.are.equal(-1, res.content_length)
        assert.are.equal("hello, world", res:body())
      end
      assert.are.equal(1, srv.conns)
    end)

    it("reads a body delimited by the end of the connection, which is not reused", function()
      local srv = raw_server(function(req)
        return "HTTP/1.1 200 OK\r\n\r\nuntil the end " .. req.target, "close"
      end)
      local c, t = new_client()
      local res = assert(c:get(srv.url .. "/1"))
      assert.are.equal(-1, res.content_length)
      assert.are.equal("until the end /1", res:body())
      assert.are.equal("until the end /2", assert(c:get(srv.url .. "/2")):body())
      assert.are.equal(2, srv.conns)
      assert.are.equal(0, t:idle_count())
    end)

    it("HEAD reads no body whatever the headers say, and the connection is reused", function()
      local srv = raw_server(function(req)
        if req.method == "HEAD" then return "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" end
        return ok_response("after head")
      end)
      local c = new_client()
      local res = assert(c:head(srv.url .. "/"))
      assert.are.equal(200, res.status)
      assert.are.equal(1000, res.content_length)
      assert.are.equal("", res:body())
      assert.are.equal("after head", assert(c:get(srv.url .. "/")):body())
      res = assert(client.head(srv.url .. "/", { client = c }))
      assert.are.equal(1000, res.content_length)
      assert.are.equal(1, srv.conns)
      assert.are.equal("HEAD", srv.requests[1].method)
    end)

    it("204 and 304 have no body", function()
      local srv = raw_server(function(req)
        if req.target == "/204" then return "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n" end
        if req.target == "/304" then return "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n" end
        -- a length or a chunked encoding says nothing about a 204's or a 304's body: there is none
        if req.target == "/204cl" then return "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n" end
        if req.target == "/304cl" then return "HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\n\r\n" end
        if req.target == "/204te" then return "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n" end
        return ok_response("plain")
      end)
      local c = new_client()
      local res = assert(c:get(srv.url .. "/204"))
      assert.are.equal(204, res.status)
      assert.are.equal("204 No Content", res.status_text)
      assert.are.equal(0, res.content_length)
      assert.are.equal("", res:body())
      assert.are.equal("1", res.headers["X-A"])
      res = assert(c:get(srv.url .. "/304"))
      assert.are.equal(304, res.status)
      assert.are.equal("", res:body())
      assert.are.equal('"x"', res.headers.Etag)
      assert.are.equal("plain", assert(c:get(srv.url .. "/")):body())
      for _, path in ipairs({ "/204cl", "/304cl", "/204te" }) do
        res = assert(c:get(srv.url .. path))
        assert.are.equal(0, res.content_length)
        assert.are.equal("", res:body())
        assert.are.equal("plain", assert(c:get(srv.url .. "/")):body())
      end
      assert.are.equal(1, srv.conns)
    end)

    it("skips 100 Continue and other 1xx before the response", function()
      local srv = raw_server(function()
        return "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" .. ok_response("real")
      end)
      local c = new_client()
      local res = assert(c:post(srv.url .. "/", "text/plain", "body", { headers = { Expect = "100-continue" } }))
      assert.are.equal(200, res.status)
      assert.are.equal("real", res:body())
      assert.are.equal("body", srv.requests[1].body)
      assert.are.equal("real", assert(c:get(srv.url .. "/")):body())
      assert.are.equal(1, srv.conns)
      -- without end: Go's limit
      local endless = raw_server(function()
        return string.rep("HTTP/1.1 100 Continue\r\n\r\n", 10)
      end)
      local r, err = c:get(endless.url .. "/")
      assert.is_nil(r)
      assert.are.equal('Get "' .. endless.url .. '/": net/http: too many 1xx informational responses', err)
    end)

    it("does not reuse a connection the response closes (Connection: close, HTTP/1.0)", function()
      local srv = raw_server(function(req)
        if req.target == "/close" then return ok_response("c", "Connection: close\r\n"), "close" end
        return "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "close"
      end)
      local c, t = new_client()
      assert.are.equal("c", assert(c:get(srv.url .. "/close")):body())
      local res = assert(c:get(srv.url .. "/10"))
      assert.are.equal("HTTP/1.0", res.proto)
      assert.are.equal("ok", res:body())
      assert.are.equal("c", assert(c:get(srv.url .. "/close")):body())
      assert.are.equal(3, srv.conns)
      assert.are.equal(0, t:idle_count())
    end)

    it("gives the connection of a 101 Switching Protocols to the caller", function()
      local srv = raw_server(function()
        return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\ngreeting", "close"
      end)
      local c, t = new_client()
      local res = assert(c:get(srv.url .. "/", { headers = { Upgrade = "echo", Connection = "Upgrade" } }))
      assert.are.equal(101, res.status)
      assert.are.equal("echo", res.headers.Upgrade)
      local conn = res.conn
      defer(function() conn:close() end)
      local got = {}
      while true do
        local s = conn:read()
        if not s then break end
        got[#got + 1] = s
      end
      assert.are.equal("greeting", table.concat(got))
      assert.are.equal(0, t:idle_count())
    end)

    it("refuses response headers larger than max_response_header_bytes", function()
      local srv = raw_server(function()
        return "HTTP/1.1 200 OK\r\nX-Big: " .. string.rep("b", 20000) .. "\r\nContent-Length: 0\r\n\r\n"
      end)
      local r, err = new_client({ max_response_header_bytes = 100 }):get(srv.url .. "/")
      assert.is_nil(r)
      assert.are.equal('Get "' .. srv.url .. '/": net/http: server response headers exceeded 100 bytes; aborted', err)
      local res = assert(new_client():get(srv.url .. "/"))
      assert.are.equal(20000, #res.headers["X-Big"])
    end)

    it("reports a malformed response and a connection closed part way", function()
      local srv = raw_server(function(req)
        if req.target == "/garbage" then return "HTCPCP/1.0 418 teapot\r\n\r\n", "close" end
        if req.target == "/short" then return "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "close" end
        return nil
      end)
      local c = new_client()
      local r, err = c:get(srv.url .. "/garbage")
      assert.is_nil(r)
      assert.matches('^Get "' .. srv.url:gsub("%p", "%%%0") .. '/garbage": malformed HTTP response', err)
      local res = assert(c:get(srv.url .. "/short"))
      local b
      b, err = res:body()
      assert.is_nil(b)
      assert.are.equal("unexpected EOF", err)
      r, err = c:get(srv.url .. "/none")
      assert.is_nil(r)
      assert.are.equal('Get "' .. srv.url .. '/none": EOF', err)
    end)
  end)

  describe("redirects", function()
    -- /hop/N redirects to /hop/N-1 with a relative Location; /hop/0 answers.
    local function hop_server(code)
      return raw_server(function(req)
        local n = tonumber(req.target:match("^/hop/(%d+)"))
        if n and n > 0 then
          return "HTTP/1.1 " .. (code or 302) .. " Found\r\nLocation: " .. (n - 1) ..
            "\r\nContent-Length: 9\r\n\r\nredirect!"
        end
        return ok_response("arrived " .. req.method .. " " .. req.target .. " " .. req.body)
      end)
    end

    it("follows a chain of relative Locations on one connection", function()
      local srv = hop_server()
      local c = new_client()
      local res = assert(c:get(srv.url .. "/hop/5"))
      assert.are.equal(200, res.status)
      assert.are.equal("arrived GET /hop/0 ", res:body())
      assert.are.equal(srv.url .. "/hop/0", res.url)
      assert.are.equal(6, #srv.requests)
      assert.are.equal(1, srv.conns) -- each redirect's body was read: its connection went on
      assert.are.equal(srv.url .. "/hop/5", srv.requests[2].headers.referer)
    end)

    it("resolves every form of Location", function()
      local other = raw_server(function(req) return ok_response("other " .. req.target) end)
      local locs = { ["/a"] = "b/../c?x=1", ["/c?x=1"] = "//" .. other.addr .. "/d", }
      local srv = raw_server(function(req)
        local loc = locs[req.target]
        if loc then return "HTTP/1.1 302 Found\r\nLocation: " .. loc .. "\r\nContent-Length: 0\r\n\r\n" end
        return ok_response("?")
      end)
      local c = new_client()
      local res = assert(c:get(srv.url .. "/a"))
      assert.are.equal("other /d", res:body())
      assert.are.equal("http://" .. other.addr .. "/d", res.url)
      locs["/abs"] = other.url .. "/e?f"
      assert.are.equal("other /e?f", assert(c:get(srv.url .. "/abs")):body())
    end)

    it("turns 301, 302 and 303 into GET without a body, but keeps HEAD", function()
      for _, code in ipairs({ 301, 302, 303 }) do
        local srv = hop_server(code)
        local c = new_client()
        local res = assert(c:post(srv.url .. "/hop/1", "text/plain", "payload"))
        assert.are.equal("arrived GET /hop/0 ", res:body())
        assert.are.equal("POST", srv.requests[1].method)
        assert.are.equal("payload", srv.requests[1].body)
        assert.are.equal("GET", srv.requests[2].method)
        assert.is_nil(srv.requests[2].headers["content-length"])
        res = assert(c:head(srv.url .. "/hop/1"))
        assert.are.equal(200, res.status)
        assert.are.equal("HEAD", srv.requests[4].method)
      end
    end)

    it("keeps the method and a string body through 307 and 308, and stops at a reader body", function()
      for _, code in ipairs({ 307, 308 }) do
        local srv = hop_server(code)
        local c = new_client()
        local res = assert(c:post(srv.url .. "/hop/2", "text/plain", "payload"))
        assert.are.equal("arrived POST /hop/0 payload", res:body())
        assert.are.equal("text/plain", srv.requests[3].headers["content-type"])
        local sent = false
        local reader = { read = function()
          if sent then return nil, "EOF" end
          sent = true
          return "streamed"
        end }
        res = assert(c:post(srv.url .. "/hop/2", "text/plain", reader))
        assert.are.equal(code, res.status)
        assert.are.equal("redirect!", res:body())
        assert.are.equal("streamed", srv.requests[4].body)
        assert.are.equal(4, #srv.requests)
      end
    end)

    it("stops after 10 redirects with Go's error", function()
      local srv = raw_server(function()
        return "HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n"
      end)
      local c = new_client()
      local res, err, last = c:get(srv.url .. "/loop")
      assert.is_nil(res)
      assert.are.equal('Get "/loop": stopped after 10 redirects', err)
      assert.are.equal(302, last.status)
      assert.are.equal(10, #srv.requests)
      assert.are.equal(1, srv.conns)
    end)

    it("lets check_redirect stop, or return the redirect itself with use_last_response", function()
      local srv = hop_server()
      local seen = {}
      local c = new_client(nil, { check_redirect = function(req, via)
        seen[#seen + 1] = { req.method, req.url, #via, via[1].url }
        if #via >= 2 then return "enough" end
      end })
      local res, err, last = c:get(srv.url .. "/hop/5")
      assert.is_nil(res)
      assert.are.equal('Get "3": enough', err)
      assert.are.equal(302, last.status)
      assert.are.same({ { "GET", srv.url .. "/hop/4", 1, srv.url .. "/hop/5" },
        { "GET", srv.url .. "/hop/3", 2, srv.url .. "/hop/5" } }, seen)
      local c2 = new_client(nil, { check_redirect = function() return client.use_last_response end })
      res = assert(c2:get(srv.url .. "/hop/3"))
      assert.are.equal(302, res.status)
      assert.are.equal("2", res.headers.Location)
      assert.are.equal("redirect!", res:body())
    end)

    it("returns a redirect without a Location as it is", function()
      local srv = raw_server(function() return "HTTP/1.1 302 Found\r\nContent-Length: 2\r\n\r\nno" end)
      local res = assert(new_client():get(srv.url .. "/"))
      assert.are.equal(302, res.status)
      assert.are.equal("no", res:body())
    end)

    it("keeps the caller's headers, but not its credentials for another host", function()
      local other = raw_server(function() return ok_response("there") end)
      local srv = raw_server(function(req)
        if req.target == "/away" then
          return "HTTP/1.1 302 Found\r\nLocation: " .. other.url .. "/x\r\nContent-Length: 0\r\n\r\n"
        end
        if req.target == "/near" then return "HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n" end
        return ok_response("here")
      end)
      local c = new_client()
      local h = { Authorization = "Bearer s", Cookie = "a=b", ["X-Keep"] = "k" }
      assert.are.equal("here", assert(c:get(srv.url .. "/near", { headers = h })):body())
      assert.are.equal("Bearer s", srv.requests[2].headers.authorization)
      assert.are.equal("a=b", srv.requests[2].headers.cookie)
      assert.are.equal("k", srv.requests[2].headers["x-keep"])
      assert.are.equal("there", assert(c:get(srv.url .. "/away", { headers = h })):body())
      local r = other.requests[1]
      assert.is_nil(r.headers.authorization)
      assert.is_nil(r.headers.cookie)
      assert.are.equal("k", r.headers["x-keep"])
      assert.are.equal(srv.url .. "/away", r.headers.referer)
    end)
  end)

  describe("the connection pool", function()
    it("reuses one connection for 50 sequential requests", function()
      local url, seen = counting_server()
      local c, t = new_client()
      for i = 1, 50 do
        local res = assert(c:get(url .. "/" .. i))
        assert.are.equal("ok /" .. i, res:body())
      end
      local conns, reqs = distinct(seen)
      assert.are.equal(50, reqs)
      assert.are.equal(1, conns)
      assert.are.equal(1, t:idle_count())
    end)

    it("does not reuse a connection whose body was not read to the end", function()
      local url, seen = counting_server()
      local c, t = new_client()
      local res = assert(c:get(url .. "/1"))
      res:close()
      assert.are.equal(0, t:idle_count())
      local unread = assert(c:get(url .. "/2")) -- neither read nor closed: keeps its connection
      assert.are.equal("ok /3", assert(c:get(url .. "/3")):body())
      assert.are.equal(3, (distinct(seen)))
      assert.are.equal("ok /2", unread:body()) -- and can still read it
      assert.are.equal(2, t:idle_count())
    end)

    it("keeps no more than max_idle_conns_per_host idle connections", function()
      local arrived, gate = lugo.chan(100), lugo.chan()
      local url = serve(function(w, r)
        arrived:send(true)
        gate:recv()
        w:write("done")
      end)
      -- n requests at once, all in the server before any is answered
      local function burst(c, n)
        local results = {}
        for i = 1, n do results[i] = go(function() return assert(c:get(url .. "/" .. i)):body() end) end
        for _ = 1, n do within(arrived, "a request in the server") end
        for _ = 1, n do
          assert.are.equal(1, (lugo.select(lugo.case.send(gate, true), lugo.case.recv(time.after(HANG)))))
        end
        for i = 1, n do assert.are.equal("done", result(results[i], "a request")[1]) end
      end
      local c, t = new_client({ max_idle_conns_per_host = 3 })
      burst(c, 6)
      assert.are.equal(3, t:idle_count())
      assert.are.equal(3, t:idle_count("http://" .. url:match("//(.*)")))
      -- max_idle_conns bounds them all
      local c2, t2 = new_client({ max_idle_conns = 2, max_idle_conns_per_host = 10 })
      burst(c2, 4)
      assert.are.equal(2, t2:idle_count())
      t2:close_idle_connections()
      assert.are.equal(0, t2:idle_count())
    end)

    it("drops connections idle for longer than idle_conn_timeout", function()
      local url, seen = counting_server()
      local c = new_client({ idle_conn_timeout = 0.3 })
      assert.are.equal("ok /1", assert(c:get(url .. "/1")):body())
      assert.are.equal("ok /2", assert(c:get(url .. "/2")):body())
      time.sleep(0.4)
      assert.are.equal("ok /3", assert(c:get(url .. "/3")):body())
      assert.are.equal(2, (distinct(seen)))
    end)

    it("does not use an idle connection the server has closed", function()
      local srv = raw_server(function(req)
        return ok_response("x" .. req.n), "close" -- says nothing, closes anyway
      end)
      local c = new_client()
      for i = 1, 3 do
        assert.are.equal("x1", assert(c:get(srv.url .. "/" .. i)):body())
        time.sleep(0.02) -- let the close arrive
      end
      assert.are.equal(3, srv.conns)
      assert.are.equal(3, #srv.requests)
    end)

    it("does not reuse a connection with bytes after the response", function()
      local srv = raw_server(function(req) return ok_response("body of " .. req.method) end, true)
      local c = new_client()
      local res = assert(c:head(srv.url .. "/"))  -- the server sends a body a HEAD response may not have
      assert.are.equal(12, res.content_length)
      assert.are.equal("body of GET", assert(c:get(srv.url .. "/")):body())
      assert.are.equal(2, srv.conns)
    end)

    it("closes after a request that says Connection: close, and with disable_keep_alives", function()
      local srv = raw_server(function(req) return ok_response(req.headers.connection or "-") end)
      local c, t = new_client()
      assert.are.equal("close", assert(c:get(srv.url .. "/", { headers = { Connection = "close" } })):body())
      assert.are.equal(0, t:idle_count())
      assert.are.equal("close", assert(c:request { url = srv.url .. "/", close = true }):body())
      assert.are.equal(0, t:idle_count())
      local c2, t2 = new_client({ disable_keep_alives = true })
      assert.are.equal("close", assert(c2:get(srv.url .. "/")):body())
      assert.are.equal("close", assert(c2:get(srv.url .. "/")):body())
      assert.are.equal(0, t2:idle_count())
      assert.are.equal(4, srv.conns)
    end)

    it("is one pool for every processor: a connection one processor gave back serves another", function()
      local url, seen = counting_server()
      local c, t = new_client({ max_idle_conns_per_host = 10 })
      local res = helper.spawn_elsewhere(function(tr, u)
        local cl = require("lugo.http.client")
        local cc = cl.client { transport = tr, timeout = 10 }
        local r = assert(cc:get(u .. "/elsewhere"))
        return r:body(), cl.transport(tr):idle_count()
      end, t, url)
      local body, idle = helper.spawn_results(res, "a request from another processor")
      assert.are.equal("ok /elsewhere", body)
      assert.are.equal(1, idle)
      assert.are.equal("ok /here", assert(c:get(url .. "/here")):body())
      -- a client copied into another VM is the same client there
      res = helper.spawn_elsewhere(function(cl_copy, u)
        local cl = require("lugo.http.client").client(cl_copy)
        return assert(cl:get(u .. "/copy")):body()
      end, c, url)
      assert.are.equal("ok /copy", (helper.spawn_results(res, "a request with a copied client")))
      assert.are.equal(1, (distinct(seen)))
      assert.are.equal(1, t:idle_count())
    end)

    it("keeps one pool for the copies of a transport after the original is collected", function()
      local url, seen = counting_server()
      local ready, start, done = lugo.chan(1), lugo.chan(1), lugo.chan(1)
      -- in a function of its own: a dead local of this frame would keep it
      local function start_worker()
        local t = client.transport { max_idle_conns_per_host = 4 }
        local res = client.get(url .. "/orig", { client = { transport = t }, timeout = HANG })
        local body = res and res:body()
        lugo.spawn(function(tr, u, ready, start, done)
          local ok, r = pcall(function()
            local cl = require("lugo.http.client")
            tr = cl.transport(tr)
            local before = tr:_registry_alive()
            ready:send(true)
            start:recv()
            local after = tr:_registry_alive()
            local cc = cl.client { transport = tr, timeout = 10 }
            local a = assert(cc:get(u .. "/a")):body()
            local b = assert(cc:get(u .. "/b")):body()
            return { before, after, a, b, tr:idle_count() }
          end)
          done:send(ok and r or { tostring(r) })
        end, t, url, ready, start, done)
        return body -- luassert keeps what it is given: nothing that holds t goes to it
      end
      assert.are.equal("ok /orig", start_worker())
      within(ready, "the worker to start")
      collectgarbage()
      collectgarbage()
      start:send(true)
      local r = within(done, "the worker")
      -- the registry stopped with its transport; the copy uses the map it left
      assert.are.same({ true, false, "ok /a", "ok /b", 1 }, r)
      assert.are.equal(1, (distinct(seen))) -- and found there the connection the original had pooled
    end)

    it("serves 100 spawned goroutines x 20 requests with at most 100 connections", function()
      local url, seen = counting_server()
      local _, t = new_client({ max_idle_conns_per_host = 100 })
      local results = lugo.chan(100)
      for g = 1, 100 do
        lugo.spawn(function(tr, u, g, results)
          local ok, err = pcall(function()
            local cl = require("lugo.http.client")
            local cc = cl.client { transport = tr, timeout = 20 }
            for i = 1, 20 do
              local path = "/" .. g .. "/" .. i
              local r, e = cc:get(u .. path)
              if not r then error(e) end
              local b = r:body()
              if b ~= "ok " .. path then error("wrong body " .. tostring(b) .. " for " .. path) end
            end
          end)
          results:send(ok and "ok" or tostring(err))
        end, t, url, g, results)
      end
      for _ = 1, 100 do assert.are.equal("ok", within(results, "a goroutine's 20 requests", 4 * HANG)) end
      local conns, reqs = distinct(seen)
      assert.are.equal(2000, reqs)
      assert.is_true(conns <= 100, conns .. " connections")
      assert.is_true(t:idle_count() <= 100)
    end)
  end)

  describe("retries", function()
    -- Answers the first request of connection 1, then closes it when the
    -- second request arrives (a server that closed an idle connection as
    -- the request came); answers every request on later connections.
    local function closing_server()
      return raw_server(function(req)
        if req.conn == 1 and req.n == 2 then return nil end
        return ok_response("conn " .. req.conn .. " " .. req.method)
      end)
    end

    it("sends an idempotent request again on a new connection when a reused one was closed", function()
      local srv = closing_server()
      local c = new_client()
      assert.are.equal("conn 1 GET", assert(c:get(srv.url .. "/")):body())
      assert.are.equal("conn 2 GET", assert(c:get(srv.url .. "/")):body())
      assert.are.equal(2, srv.conns)
      assert.are.equal(3, #srv.requests)
      -- HEAD and a GET with a body too
      local srv2 = closing_server()
      assert.are.equal(200, assert(c:head(srv2.url .. "/")).status)
      assert.are.equal(200, assert(c:head(srv2.url .. "/")).status)
      assert.are.equal(2, srv2.conns)
      local srv3 = closing_server()
      assert.are.equal("conn 1 GET", assert(c:get(srv3.url .. "/")):body())
      assert.are.equal("conn 2 GET", assert(c:request { url = srv3.url .. "/", body = "b" }):body())
      assert.are.equal("b", srv3.requests[3].body)
    end)

    it("does not send a POST with a body again", function()
      local srv = closing_server()
      local c = new_client()
      assert.are.equal("conn 1 POST", assert(c:post(srv.url .. "/", "text/plain", "one")):body())
      local r, err = c:post(srv.url .. "/", "text/plain", "two")
      assert.is_nil(r)
      assert.are.equal('Post "' .. srv.url .. '/": EOF', err)
      assert.are.equal(1, srv.conns)
      assert.are.equal(2, #srv.requests)
      -- unless it says it may be repeated
      local srv2 = closing_server()
      assert.are.equal("conn 1 POST", assert(c:post(srv2.url .. "/", "text/plain", "one")):body())
      assert.are.equal("conn 2 POST", assert(c:post(srv2.url .. "/", "text/plain", "two",
        { headers = { ["Idempotency-Key"] = "k1" } })):body())
    end)

    it("does not retry on a new connection", function()
      local srv = raw_server(function() return nil end)
      local r, err = new_client():get(srv.url .. "/")
      assert.is_nil(r)
      assert.are.equal('Get "' .. srv.url .. '/": EOF', err)
      assert.are.equal(1, srv.conns)
    end)
  end)

  describe("deadlines", function()
    local function silent_server() return raw_server(function() return false end) end

    it("a client timeout ends a request that gets no answer, with Go's error", function()
      local srv = silent_server()
      local c = new_client(nil, { timeout = 0.2 })
      local t0 = time.now()
      local r, err = c:get(srv.url .. "/slow")
      local elapsed = time.now() - t0
      assert.is_nil(r)
      assert.are.equal('Get "' .. srv.url ..
        '/slow": context deadline exceeded (Client.Timeout exceeded while awaiting headers)', err)
      assert.is_true(elapsed >= 0.19 and elapsed < PROMPT, elapsed)
      -- a request's own timeout wins over the client's
      t0 = time.now()
      r, err = client.get(srv.url .. "/slow", { timeout = 0.1 })
      assert.is_nil(r)
      assert.matches("Client.Timeout exceeded while awaiting headers", err, 1, true)
      assert.is_true(time.now() - t0 < PROMPT)
    end)

    it("a context's deadline and cancellation end a request", function()
      local srv = silent_server()
      local c = new_client()
      local ctx, cancel = context.with_timeout(context.background(), 0.1)
      defer(cancel)
      local r, err = c:get(srv.url .. "/", { ctx = ctx })
      assert.is_nil(r)
      assert.are.equal('Get "' .. srv.url .. '/": context deadline exceeded', err)
      local ctx2, cancel2 = context.with_cancel(context.background())
      lugo.go(function()
        time.sleep(0.05)
        cancel2()
      end)
      local t0 = time.now()
      r, err = c:get(srv.url .. "/", { ctx = ctx2 })
      assert.is_nil(r)
      assert.are.equal('Get "' .. srv.url .. '/": context canceled', err)
      assert.is_true(time.now() - t0 < PROMPT)
      -- already over: nothing is sent
      local n = #srv.requests
      r, err = c:get(srv.url .. "/", { ctx = ctx2 })
      assert.are.equal('Get "' .. srv.url .. '/": context canceled', err)
      time.sleep(0.02)
      assert.are.equal(n, #srv.requests)
    end)

    it("the timeout covers reading the body", function()
      local srv = raw_server(function()
        return "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b", nil
      end)
      local c = new_client(nil, { timeout = 0.3 })
      local res = assert(c:get(srv.url .. "/"))
      local t0 = time.now()
      local b, err = res:body()
      assert.is_nil(b)
      assert.are.equal("context deadline exceeded (Client.Timeout or context cancellation while reading body)", err)
      assert.is_true(time.now() - t0 < PROMPT)
    end)

    it("a body read in time is not cut by the timeout afterwards", function()
      local url = serve(function(w) w:write("quick") end)
      local c, t = new_client(nil, { timeout = 0.5 * PROMPT })
      local res = assert(c:get(url .. "/"))
      assert.are.equal("quick", res:body())
      time.sleep(0.6 * PROMPT)
      assert.are.equal(1, t:idle_count())
      assert.are.equal("quick", assert(c:get(url .. "/")):body())
    end)

    it("response_header_timeout bounds the wait for the response's head", function()
      local srv = silent_server()
      local c = new_client({ response_header_timeout = 0.1 })
      local t0 = time.now()
      local r, err = c:get(srv.url .. "/")
      assert.is_nil(r)
      assert.are.equal('Get "' .. srv.url .. '/": net/http: timeout awaiting response headers', err)
      assert.is_true(time.now() - t0 < PROMPT)
    end)
  end)
end)
