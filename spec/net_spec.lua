-- lugo.net: TCP and Unix listeners and connections whose calls read as
-- blocking (lua/lugo/net.lua, runtime/net.c, runtime/netpoll.c).
--
-- ctest runs this file with 1, 2 and 4 processors (LUGO_MAXPROCS). Every
-- `it` body runs in the main goroutine on processor 0 and may block. Only
-- loopback addresses (127.0.0.1, ::1) and unix sockets in a fresh
-- directory are used, ports are always chosen by the kernel (port 0), every
-- test closes what it opens (defer), and every wait is bounded (deadlines,
-- contexts, recv_within) so that a bug fails a test instead of hanging it.
-- Times are only checked against generous bounds: timing belongs to bench/.
--
-- Spawned functions are copied into another VM: they capture nothing but
-- copyable values (never busted's assert), require what they use, and send
-- what they find back on a channel for the body to assert.
local lugo = require "lugo"
local net = require "lugo.net"
local time = require "lugo.time"
local context = require "lugo.context"
local runtime = require "lugo.runtime"
local helper = require "helper"

local pack, recv_within = helper.pack, helper.recv_within
local error_of, here = helper.error_of, helper.here
-- seconds; only against hangs (a sanitized build on a loaded machine makes
-- 100,000 round trips in more than 20 s)
local HANG = os.getenv("LUGO_SANITIZED") == "1" and 40 or 10

local CLOSED = "use of closed network connection"
local TIMEOUT = "i/o timeout"
local CANCELED = "context canceled"
local DEADLINE = "context deadline exceeded"

local defer = helper.defer

-- Close x (a listener or connection) when the test ends; returns x.
local function closing(x)
  if x ~= nil then defer(function() x:close() end) end
  return x
end

local tempdir = helper.tempdir

-- Receive from ch within `limit` seconds (default HANG), failing the test
-- instead of hanging; `what` names the awaited value.
local function within(ch, what, limit)
  local v, ok = recv_within(ch, limit or HANG)
  assert(ok ~= "timeout", "timed out waiting for " .. (what or "a value"))
  return v, ok
end

-- Run f(...) in a goroutine of this VM; the channel returned receives
-- pack(f(...)) (an error in f is a failure of the test, not a panic).
local function go(f, ...)
  local res = lugo.chan(1)
  lugo.go(function(...)
    local r = pack(pcall(f, ...))
    if r[1] then res:send(pack(select(2, unpack(r, 1, r.n))))
    else res:send({ n = 1, error = r[2] }) end
  end, ...)
  return res
end

-- The results of a goroutine started by go(), within HANG seconds.
local function result(res, what)
  local r = within(res, what)
  assert(r.error == nil, r.error)
  return r
end

-- A loopback TCP listener (closed when the test ends) and its address.
local function tcp_listener(opts)
  local ln = closing(assert(net.listen("tcp", "127.0.0.1:0", opts)))
  return ln, ln:addr()
end

-- A connected pair over ln (default: a new loopback listener): the dialled
-- end and the accepted end, both closed when the test ends.
local function pair(ln, network)
  ln = ln or tcp_listener()
  local res = go(function() return ln:accept() end)
  local c = closing(assert(net.dial(network or "tcp", ln:addr(), { timeout = HANG })))
  local r = result(res, "accept")
  local s = closing(assert(r[1], r[2]))
  return c, s
end

-- n pseudo-random bytes (a fixed function of seed).
local function pattern(n, seed)
  local parts, t, x = {}, {}, seed
  for i = 1, n, 4096 do
    local len = math.min(4096, n - i + 1)
    for j = 1, len do
      x = (x * 69069 + 1) % 4294967296
      t[j] = math.floor(x / 16777216)
    end
    parts[#parts + 1] = string.char(unpack(t, 1, len))
  end
  return table.concat(parts)
end

-- Assert that got is exactly want, naming the first differing byte if not.
local function assert_same_bytes(want, got)
  if got == want then return end
  local n = math.min(#want, #got)
  local i = 1
  while i <= n and want:byte(i) == got:byte(i) do i = i + 1 end
  error(string.format("%d bytes expected, %d received; first difference at byte %d", #want, #got, i), 2)
end

-- Read c until EOF: the bytes, and the error that ended it.
local function read_all(c)
  local parts = {}
  while true do
    local s, err = c:read()
    if not s then return table.concat(parts), err end
    parts[#parts + 1] = s
  end
end

-- Write s to c in chunks of varying size; true, or nil and the error.
local function write_chunks(c, s)
  local i, k = 1, 0
  while i <= #s do
    k = k + 1
    local len = ({ 1, 1000, 65536, 7, 200000, 4096 })[k % 6 + 1]
    local n, err = c:write(s:sub(i, i + len - 1))
    if not n then return nil, err end
    i = i + len
  end
  return true
end

-- Assert that `elapsed` seconds is at least `min` (less a millisecond of
-- clock rounding) and below HANG.
local function assert_waited(elapsed, min)
  assert(elapsed >= min - 0.001, ("returned after %.4f s, before %.3f s"):format(elapsed, min))
  assert(elapsed < HANG, ("took %.1f s"):format(elapsed))
end

-- A string larger than loopback's socket buffers hold, made once (making
-- it takes time that must not count against a deadline).
local BIG = 64 * 1024 * 1024
local big_string
local function big()
  big_string = big_string or string.rep("w", BIG)
  return big_string
end

-- The soft limit on descriptors, as a child shell sees it.
local function fd_limit()
  local p = assert(io.popen("ulimit -Sn"))
  local s = p:read("*a")
  p:close()
  return s:match("unlimited") and math.huge or tonumber(s:match("%d+"))
end

-- The number of sockets this process has open, read from /proc by a
-- shell whose parent is this process, and a table of every descriptor's
-- target by number. Only sockets count: popen's own pipe shows up with one
-- or both of its ends, depending on when the shell looks.
local function open_fds()
  local p = assert(io.popen("ls -l /proc/$PPID/fd"))
  local n, what = 0, {}
  for line in p:lines() do
    local fd, target = line:match("(%d+) %-> (.*)$")
    if fd then
      if target:match("^socket:") then n = n + 1 end
      what[tonumber(fd)] = target
    end
  end
  p:close()
  return n, what
end

-- What changed from one open_fds() table to another, for a failure message.
local function fd_diff(a, b)
  local out = {}
  for fd, t in pairs(a) do
    if b[fd] ~= t and not t:match("^pipe:") then out[#out + 1] = ("-%d %s"):format(fd, t) end
  end
  for fd, t in pairs(b) do
    if a[fd] ~= t and not t:match("^pipe:") then out[#out + 1] = ("+%d %s"):format(fd, t) end
  end
  table.sort(out)
  return table.concat(out, "\n")
end

-- Whether a shell command exits 0 (os.execute answers 0 or true).
local function sh_ok(cmd)
  local r = os.execute(cmd)
  return r == 0 or r == true
end

-- This process's id (the parent of the shell that popen starts).
local function getpid()
  local p = assert(io.popen("echo $PPID"))
  local pid = tonumber(p:read("*a"):match("%d+"))
  p:close()
  return pid
end

-- Start `code` with the lugo host in the background (so that this
-- processor keeps running the test). opts.args: script arguments;
-- opts.ulimit_n: a descriptor limit for the child; opts.default_sigpipe:
-- SIGPIPE back to its default action (this process ignores it, and an
-- ignored signal stays ignored across exec). The child is killed
-- after 30 s whatever happens. Returns an object whose wait(limit) returns
-- { status, stdout, stderr } once the child has exited, or nil if it has
-- not within limit seconds.
local function start_child(code, opts)
  opts = opts or {}
  local q = helper.shell_quote
  local script, out, err, st = helper.write_temp(code), os.tmpname(), os.tmpname(), os.tmpname()
  os.remove(st)
  local args = {}
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = q(a) end
  local limit = opts.ulimit_n and ("ulimit -n " .. opts.ulimit_n .. "; ") or ""
  local env = opts.default_sigpipe and "env --default-signal=PIPE " or ""
  local cmd = string.format("( (%sexec %stimeout -k 1 30 %s %s %s) <%s >%s 2>%s; echo $? >%s.tmp; mv %s.tmp %s ) &",
    limit, env, q(helper.lugo_bin()), q(script), table.concat(args, " "), "/dev/null", q(out), q(err), q(st), q(st), q(st))
  os.execute(cmd)
  local slurp = helper.slurp
  local done
  local child = {}
  function child.wait(limit)
    if done then return done end
    local t0 = time.now()
    while time.now() - t0 < limit do
      local s = slurp(st)
      if s:match("%d+") then
        done = { status = tonumber(s:match("%d+")), stdout = slurp(out), stderr = slurp(err) }
        for _, p in ipairs({ script, out, err, st }) do os.remove(p) end
        return done
      end
      time.sleep(0.02)
    end
    return nil
  end
  defer(function() child.wait(5) end)
  return child
end

-- A loopback listener whose accept queue is full (backlog 1, never
-- accepted), so that a new dial to it stays pending; nil if the kernel
-- completed all of 20 dials at once.
local function full_listener()
  local ln = tcp_listener({ backlog = 1 })
  for _ = 1, 20 do
    local c, err = net.dial("tcp", ln:addr(), { timeout = 0.2 })
    if not c then
      assert.are.equal(TIMEOUT, err)
      return ln
    end
    closing(c)
  end
  return nil
end

describe("a connection carries a byte stream both ways at once", function()
  it("echoes 1 MiB through one connection, written and read concurrently on each side", function()
    local data = pattern(1024 * 1024, 1)
    local c, s = pair()
    -- Server: a reader goroutine hands what it reads to a writer goroutine.
    local q = lugo.chan(16)
    local sreader = go(function()
      while true do
        local chunk, err = s:read(30000)
        if not chunk then
          q:close()
          return err
        end
        q:send(chunk)
      end
    end)
    local swriter = go(function()
      local n = 0
      for chunk in q:range() do
        assert(s:write(chunk) == #chunk)
        n = n + #chunk
      end
      assert(s:close_write())
      return n
    end)
    -- Client: a writer goroutine and a reader goroutine.
    local cwriter = go(function()
      local ok, err = write_chunks(c, data)
      assert(ok, err)
      return c:close_write()
    end)
    local creader = go(function() return read_all(c) end)
    assert.are.same({ n = 1, true }, result(cwriter, "the client's writer"))
    assert.are.same({ n = 1, "EOF" }, result(sreader, "the server's reader"))
    assert.are.same({ n = 1, #data }, result(swriter, "the server's writer"))
    local r = result(creader, "the client's reader")
    assert.are.equal("EOF", r[2])
    assert_same_bytes(data, r[1])
  end)

  it("sends 1 MiB each way at the same time, each side writing and reading in its own goroutines", function()
    local up, down = pattern(1024 * 1024, 2), pattern(1024 * 1024, 3)
    local c, s = pair()
    local function sender(conn, data)
      return go(function()
        assert(write_chunks(conn, data))
        return conn:close_write()
      end)
    end
    local cw, sw = sender(c, up), sender(s, down)
    local cr, sr = go(read_all, c), go(read_all, s)
    assert.are.same({ n = 1, true }, result(cw, "the client's writer"))
    assert.are.same({ n = 1, true }, result(sw, "the server's writer"))
    local got_down, got_up = result(cr, "the client's reader"), result(sr, "the server's reader")
    assert.are.equal("EOF", got_down[2])
    assert.are.equal("EOF", got_up[2])
    assert_same_bytes(down, got_down[1])
    assert_same_bytes(up, got_up[1])
  end)
end)

describe("many concurrent clients", function()
  local CLIENTS, ROUNDS = 1000, 100

  -- Serve one connection: echo 8-byte messages until EOF.
  local function echo8(c)
    while true do
      local m = c:read_exactly(8)
      if not m then break end
      if c:write(m) ~= 8 then break end
    end
    c:close()
  end

  -- CLIENTS goroutines each dial addr and make ROUNDS round trips of
  -- distinct messages; returns the number of clients whose every echo came
  -- back exactly, and the first failure seen.
  local function run_clients(addr)
    local done = lugo.chan(CLIENTS)
    for id = 1, CLIENTS do
      lugo.go(function()
        local c, err = net.dial("tcp", addr, { timeout = HANG })
        if not c then return done:send("dial: " .. tostring(err)) end
        c:set_deadline(time.now() + 2 * HANG)
        for round = 1, ROUNDS do
          local m = string.format("%04d%04d", id, round)
          local n, werr = c:write(m)
          local got, rerr = c:read_exactly(8)
          if n ~= 8 or got ~= m then
            c:close()
            return done:send(string.format("client %d round %d: sent %q (%s), got %q (%s)",
              id, round, m, tostring(werr), tostring(got), tostring(rerr)))
          end
        end
        c:close()
        done:send(true)
      end)
    end
    local ok, first = 0, nil
    local t0 = time.now()
    for _ = 1, CLIENTS do
      local v, got = recv_within(done, math.max(0.01, 3 * HANG - (time.now() - t0)))
      if got == "timeout" then
        first = first or "timed out"
        break
      end
      if v == true then ok = ok + 1 else first = first or v end
    end
    return ok, first
  end

  local function enough_fds()
    local need = 2 * CLIENTS + 200
    if fd_limit() < need then
      pending("needs " .. need .. " descriptors; the limit is " .. fd_limit())
      return false
    end
    return true
  end

  it("serves 1,000 clients of 100 round trips each, no byte lost or reordered (accept loop, goroutine per connection)", function()
    if not enough_fds() then return end
    local ln, addr = tcp_listener()
    local loop = go(function()
      while true do
        local c, err = ln:accept()
        if not c then return err end
        lugo.go(echo8, c)
      end
    end)
    local ok, first = run_clients(addr)
    assert.are.equal(nil, first)
    assert.are.equal(CLIENTS, ok)
    ln:close()
    assert.are.same({ n = 1, CLOSED }, result(loop, "the accept loop"))
  end)

  it("serves them with a reuseport listener and an accept loop spawned for every processor", function()
    if not enough_fds() then return end
    local ln, addr = tcp_listener({ reuseport = true })
    local procs = runtime.gomaxprocs()
    local ended = lugo.chan(procs)
    for _ = 1, procs do
      lugo.spawn(function(ln, ended)
        local lugo = require "lugo"
        local function serve(c)
          while true do
            local m = c:read_exactly(8)
            if not m then break end
            if c:write(m) ~= 8 then break end
          end
          c:close()
        end
        local n = 0
        while true do
          local c, err = ln:accept()
          if not c then return ended:send({ n, err }) end
          n = n + 1
          lugo.go(serve, c)
        end
      end, ln, ended)
    end
    local ok, first = run_clients(addr)
    assert.are.equal(nil, first)
    assert.are.equal(CLIENTS, ok)
    ln:close()
    local total = 0
    for i = 1, procs do
      local r = within(ended, "accept loop " .. i)
      assert.are.equal(CLOSED, r[2])
      total = total + r[1]
    end
    assert.are.equal(CLIENTS, total)
  end)

  it("serves them with net.serve: a goroutine per connection on the processor that accepted it", function()
    if not enough_fds() then return end
    local ln, addr = tcp_listener({ reuseport = true })
    local served = lugo.chan(CLIENTS)
    local done = lugo.chan(1)
    lugo.go(function()
      done:send({ net.serve(ln, function(c)
        local runtime = require "lugo.runtime"
        served:send(runtime.goid() > 0)
        while true do
          local m = c:read_exactly(8)
          if not m then break end
          if c:write(m) ~= 8 then break end
        end
        c:close()
      end) })
    end)
    local ok, first = run_clients(addr)
    assert.are.equal(nil, first)
    assert.are.equal(CLIENTS, ok)
    for i = 1, CLIENTS do assert.is_true(within(served, "handler " .. i)) end
    ln:close()
    assert.are.same({ nil, CLOSED }, within(done, "net.serve's return"))
  end)

  it("net.serve returns the context's error once opts.ctx is done, and refuses bad arguments", function()
    local context = require "lugo.context"
    local ln = tcp_listener()
    local ctx, cancel = context.with_cancel(context.background())
    local done = lugo.chan(1)
    lugo.go(function() done:send({ net.serve(ln, function(c) c:close() end, { ctx = ctx }) }) end)
    time.sleep(0.05)
    cancel()
    assert.are.same({ nil, "context canceled" }, within(done, "net.serve's return"))
    ln:close()
    assert.has_error(function() net.serve({}, function() end) end,
      "bad argument #1 to 'serve' (listener expected, got table)")
    assert.has_error(function() net.serve(ln, 42) end, "bad argument #2 to 'serve' (function expected, got number)")
    assert.has_error(function() net.serve(ln, function() end, { timeout = 1 }) end, "serve: unknown option 'timeout'")
    assert.has_error(function() net.serve(ln, function() end, { conns = {} }) end,
      "bad argument #3 to 'serve' (waitgroup opts.conns expected, got table)")
    assert.has_error(function() net.serve(ln, function() end, { on_stop = 1 }) end,
      "bad argument #3 to 'serve' (function opts.on_stop expected, got number)")
  end)

  it("net.serve counts the connections being served in opts.conns, and runs opts.on_stop on every processor", function()
    local sync = require "lugo.sync"
    local runtime = require "lugo.runtime"
    local ln, addr = tcp_listener({ reuseport = true })
    local conns, stops, release = sync.waitgroup(), lugo.chan(16), lugo.chan()
    local done = lugo.chan(1)
    -- the handler and on_stop share `seen`: one copy of it per processor
    local seen = { n = 0 }
    lugo.go(function()
      done:send({ net.serve(ln, function(c)
        seen.n = seen.n + 1
        release:recv() -- held open until the test lets it go
        c:close()
      end, { conns = conns, on_stop = function() stops:send(seen.n) end }) })
    end)
    local clients = {}
    for i = 1, 3 do clients[i] = closing(assert(net.dial("tcp", addr, { timeout = HANG }))) end
    local deadline = time.now() + HANG
    while conns:count() < 3 and time.now() < deadline do time.sleep(0.005) end
    assert.are.equal(3, conns:count())
    for _ = 1, 3 do release:send(true) end
    while conns:count() > 0 and time.now() < deadline do time.sleep(0.005) end
    assert.are.equal(0, conns:count())
    ln:close()
    assert.are.same({ nil, CLOSED }, within(done, "net.serve's return"))
    -- every processor's on_stop ran before serve returned, each seeing the
    -- connections its own processor served
    local total = 0
    for _ = 1, runtime.gomaxprocs() do total = total + within(stops, "on_stop") end
    assert.are.equal(3, total)
    assert.are.equal(0, stops:len())
  end)
end)

describe("close_write half-closes a connection", function()
  it("lets the peer read EOF and still write back, and this side read it", function()
    local c, s = pair()
    assert.are.equal(4, c:write("ping"))
    assert.is_true(c:close_write())
    s:set_read_deadline(time.now() + HANG)
    local got, err = read_all(s)
    assert.are.equal("ping", got)
    assert.are.equal("EOF", err)
    assert.are.same({ nil, "EOF" }, { s:read() })
    assert.are.equal(4, s:write("pong"))
    assert.is_true(s:close())
    c:set_read_deadline(time.now() + HANG)
    assert.are.same({ "pong" }, { c:read_exactly(4) })
    assert.are.same({ nil, "EOF" }, { c:read() })
  end)

  it("makes this side's writes fail with 'broken pipe'", function()
    local c = pair()
    assert.is_true(c:close_write())
    local n, err = c:write("x")
    assert.is_nil(n)
    assert.are.equal("broken pipe", err)
  end)
end)

-- A read that came back short skips its next recv until the poller reports
-- the descriptor again (net_op_recv): what comes later, and an end of
-- stream or reset reported with the data, must still be seen.
describe("a read after a short read", function()
  it("gets the bytes that come later, and the end of stream that came with the last ones", function()
    local c, s = pair()
    c:set_read_deadline(time.now() + HANG)
    for i = 1, 20 do
      local msg = ("message %d\n"):format(i)
      assert.are.equal(#msg, s:write(msg))
      if i % 2 == 0 then time.sleep(0.002) end -- the poller reports it before the read
      assert.are.same({ msg }, { c:read(4096) })
    end
    assert.are.equal(5, s:write("last\n"))
    assert.is_true(s:close()) -- the data and the end of stream arrive together
    time.sleep(0.02)
    assert.are.same({ "last" }, { c:read_line() })
    assert.are.same({ nil, "EOF" }, { c:read() })
  end)

  it("sees an end of stream that comes after the short read", function()
    local c, s = pair()
    c:set_read_deadline(time.now() + HANG)
    assert.are.equal(5, s:write("hello"))
    assert.are.same({ "hello" }, { c:read(100) })
    local res = go(function() return c:read(100) end)
    time.sleep(0.02)
    assert.is_true(s:close())
    assert.are.same({ nil, "EOF" }, { unpack(result(res, "the read"), 1, 2) })
  end)

  it("sees a reset that came with the data", function()
    local c, s = pair()
    c:set_deadline(time.now() + HANG)
    assert.are.equal(6, c:write("unread"))
    assert.are.equal(5, s:write("hello"))
    time.sleep(0.02)
    assert.is_true(s:close()) -- with unread data: the kernel sends RST
    time.sleep(0.02)
    local first = pack(c:read(100))
    local second = pack(c:read(100))
    -- the reset may discard the data before it is read; the reads end at
    -- once either way, never with the deadline
    assert.is_true(first[1] == "hello" or first[2] == "connection reset by peer", tostring(first[2]))
    assert.is_nil(second[1])
    assert.is_true(second[2] == "connection reset by peer" or second[2] == "EOF", tostring(second[2]))
  end)
end)

describe("a peer that closes with unread data resets the connection", function()
  local RESET = "connection reset by peer"

  it("fails a read with 'connection reset by peer' or a write with it or 'broken pipe'", function()
    local c, s = pair()
    assert.are.equal(6, c:write("unread"))
    time.sleep(0.02) -- the bytes reach the peer's receive buffer
    assert.is_true(s:close()) -- with unread data: the kernel sends RST
    time.sleep(0.02)
    c:set_deadline(time.now() + HANG)
    local r = pack(c:read())
    local w = pack(c:write("more"))
    local w2 = pack(c:write("more"))
    assert.is_nil(r[1])
    assert.is_nil(w[1])
    assert.is_nil(w2[1])
    assert.is_true(r[2] == RESET or w[2] == RESET,
      ("neither the read (%s) nor the write (%s) saw the reset"):format(tostring(r[2]), tostring(w[2])))
    assert.is_true(r[2] == RESET or r[2] == "EOF", tostring(r[2]))
    assert.is_true(w[2] == RESET or w[2] == "broken pipe", tostring(w[2]))
    assert.is_true(w2[2] == RESET or w2[2] == "broken pipe", tostring(w2[2]))
  end)

  it("lets a write see the reset first, then the read", function()
    local c, s = pair()
    assert.are.equal(6, c:write("unread"))
    time.sleep(0.02)
    assert.is_true(s:close())
    time.sleep(0.02)
    c:set_deadline(time.now() + HANG)
    local w = pack(c:write("more"))
    local r = pack(c:read())
    assert.is_nil(w[1])
    assert.is_true(w[2] == RESET or w[2] == "broken pipe", tostring(w[2]))
    assert.is_nil(r[1])
    assert.is_true(r[2] == RESET or r[2] == "EOF", tostring(r[2]))
    assert.is_true(w[2] == RESET or r[2] == RESET)
  end)
end)

describe("read deadlines", function()
  it("fail a read with 'i/o timeout' once a deadline in the future passes", function()
    local c = pair()
    local t0 = time.now()
    c:set_read_deadline(t0 + 0.1)
    assert.are.same({ n = 2, nil, TIMEOUT }, pack(c:read()))
    assert_waited(time.now() - t0, 0.1)
    -- and every read after it, of every kind
    assert.are.same({ n = 2, nil, TIMEOUT }, pack(c:read_exactly(3)))
    assert.are.same({ n = 2, nil, TIMEOUT }, pack(c:read_line()))
  end)

  it("time out a read_exactly part way, keeping the bytes read", function()
    local c, s = pair()
    s:write("ab")
    c:set_read_deadline(time.now() + 0.1)
    assert.are.same({ n = 2, nil, TIMEOUT }, pack(c:read_exactly(4)))
    c:set_read_deadline(nil)
    s:write("cd")
    c:set_read_deadline(time.now() + HANG)
    assert.are.equal("abcd", c:read_exactly(4))
  end)

  it("fail a pending read at once and every later read when set in the past", function()
    local c, s = pair()
    local started = lugo.chan(1)
    local reader = go(function()
      started:send(true)
      local t0 = time.now()
      local r = pack(c:read())
      r.elapsed = time.now() - t0
      return r
    end)
    within(started, "the reader")
    helper.settle() -- the reader is parked in read
    c:set_read_deadline(time.now() - 1)
    local r = result(reader, "the pending read")[1]
    assert.are.same({ n = 2, nil, TIMEOUT }, { n = r.n, r[1], r[2] })
    assert.is_true(r.elapsed < HANG)
    s:write("data") -- data available does not beat an expired deadline
    time.sleep(0.02)
    assert.are.same({ n = 2, nil, TIMEOUT }, pack(c:read()))
    assert.are.same({ n = 2, nil, TIMEOUT }, pack(c:read_line()))
  end)

  it("are cleared with nil, after which reads work again", function()
    local c, s = pair()
    c:set_read_deadline(time.now() - 1)
    assert.are.same({ nil, TIMEOUT }, { c:read() })
    c:set_read_deadline(nil)
    local reader = go(function() return c:read_exactly(5) end)
    time.sleep(0.15) -- longer than any stale timer would take
    s:write("hello")
    assert.are.same({ n = 1, "hello" }, result(reader, "the read"))
  end)

  it("can be moved later while a read waits", function()
    local c, s = pair()
    c:set_read_deadline(time.now() + 0.1)
    local reader = go(function() return c:read_exactly(2) end)
    helper.settle()
    c:set_read_deadline(time.now() + HANG)
    time.sleep(0.2) -- past the first deadline
    s:write("ok")
    assert.are.same({ n = 1, "ok" }, result(reader, "the read"))
  end)

  it("do not affect writes", function()
    local c, s = pair()
    c:set_read_deadline(time.now() - 1)
    assert.are.equal(3, c:write("abc"))
    s:set_read_deadline(time.now() + HANG)
    assert.are.equal("abc", s:read_exactly(3))
  end)

  it("are set for both sides by set_deadline", function()
    local c = pair()
    local t0 = time.now()
    c:set_deadline(t0 + 0.1)
    assert.are.same({ nil, TIMEOUT }, { c:read() })
    assert_waited(time.now() - t0, 0.1)
    local n, err, written = c:write("x")
    assert.is_nil(n)
    assert.are.equal(TIMEOUT, err)
    assert.are.equal(0, written)
    c:set_deadline(nil)
    assert.are.equal(1, c:write("x"))
  end)
end)

describe("write deadlines", function()
  it("fail a write to a peer that never reads with nil, 'i/o timeout' and the count written so far", function()
    local c = pair()
    local data = big()
    local t0 = time.now()
    c:set_write_deadline(t0 + 0.2)
    local r = pack(c:write(data))
    assert_waited(time.now() - t0, 0.2)
    assert.are.equal(3, r.n)
    assert.is_nil(r[1])
    assert.are.equal(TIMEOUT, r[2])
    assert.are.equal("number", type(r[3]))
    assert.is_true(r[3] > 0 and r[3] < BIG, "written: " .. tostring(r[3]))
  end)

  it("fail a write at once with a count of 0 when set in the past, and clear with nil", function()
    local c, s = pair()
    c:set_write_deadline(time.now() - 1)
    assert.are.same({ n = 3, nil, TIMEOUT, 0 }, pack(c:write("abc")))
    c:set_write_deadline(nil)
    assert.are.same({ n = 1, 3 }, pack(c:write("abc")))
    s:set_read_deadline(time.now() + HANG)
    assert.are.equal("abc", s:read_exactly(3))
  end)

  it("let a blocked write finish when the peer reads before the deadline", function()
    local c, s = pair()
    local base, parts = pattern(1024 * 1024, 4), {}
    for i = 1, 8 do parts[i] = string.format("[%06d]", i) .. base end
    local data = table.concat(parts) -- more than the socket buffers hold
    c:set_write_deadline(time.now() + HANG)
    local writer = go(function() return c:write(data) end)
    s:set_read_deadline(time.now() + HANG)
    local got = s:read_exactly(#data)
    assert.are.same({ n = 1, #data }, result(writer, "the write"))
    assert_same_bytes(data, got)
  end)
end)

describe("accept deadlines (ln:set_deadline)", function()
  it("fail accept with 'i/o timeout' once a deadline in the future passes", function()
    local ln = tcp_listener()
    local t0 = time.now()
    ln:set_deadline(t0 + 0.1)
    assert.are.same({ n = 2, nil, TIMEOUT }, pack(ln:accept()))
    assert_waited(time.now() - t0, 0.1)
  end)

  it("fail a pending accept when set in the past, and clear with nil", function()
    local ln = tcp_listener()
    local acceptor = go(function() return ln:accept() end)
    helper.settle()
    ln:set_deadline(time.now() - 1)
    assert.are.same({ n = 2, nil, TIMEOUT }, result(acceptor, "the pending accept"))
    assert.are.same({ n = 2, nil, TIMEOUT }, pack(ln:accept()))
    ln:set_deadline(nil)
    local c, s = pair(ln)
    assert.are.equal(c:local_addr(), s:remote_addr())
  end)

  it("reject a deadline that is not a number", function()
    local ln = tcp_listener()
    local where
    local err = error_of(function() where = here(); ln:set_deadline("soon") end)
    assert.are.equal(where .. "bad argument #2 to 'set_deadline' (number expected, got string)", err)
  end)
end)

describe("dial with opts.timeout", function()
  it("gives up with nil, 'i/o timeout' on a dial that does not complete in time", function()
    local ln = full_listener()
    if not ln then
      pending("the kernel completed 20 dials to a listener with backlog 1; no dial stays pending here")
      return
    end
    local t0 = time.now()
    assert.are.same({ n = 2, nil, TIMEOUT }, pack(net.dial("tcp", ln:addr(), { timeout = 0.3 })))
    assert_waited(time.now() - t0, 0.3)
  end)

  it("fails at once with a negative timeout, and takes 0 to mean no timeout, as Go's Dialer does", function()
    local ln = tcp_listener()
    assert.are.same({ n = 2, nil, TIMEOUT }, pack(net.dial("tcp", ln:addr(), { timeout = -1 })))
    local c, err = net.dial("tcp", ln:addr(), { timeout = 0 })
    closing(c)
    assert.are.equal(nil, err)
    assert.are.equal(ln:addr(), c:remote_addr())
  end)

  it("connects when the dial completes in time", function()
    local ln = tcp_listener()
    local c = closing(assert(net.dial("tcp", ln:addr(), { timeout = 0.3 })))
    -- the dial's deadline does not stay on the connection
    local s = closing(assert(ln:accept()))
    time.sleep(0.35)
    assert.are.equal(2, c:write("hi"))
    assert.are.equal("hi", s:read_exactly(2))
  end)
end)

describe("closing from another goroutine", function()
  it("wakes a blocked read with 'use of closed network connection'", function()
    local c = pair()
    local reader = go(function() return c:read() end)
    helper.settle()
    assert.is_true(c:close())
    assert.are.same({ n = 2, nil, CLOSED }, result(reader, "the blocked read"))
  end)

  it("wakes a blocked read_line and read_exactly too", function()
    local c, s = pair()
    s:write("part")
    local line = go(function() return c:read_line() end)
    helper.settle()
    assert.is_true(c:close())
    assert.are.same({ n = 2, nil, CLOSED }, result(line, "the blocked read_line"))
    local c2, s2 = pair()
    s2:write("ab")
    local exact = go(function() return c2:read_exactly(10) end)
    helper.settle()
    assert.is_true(c2:close())
    assert.are.same({ n = 2, nil, CLOSED }, result(exact, "the blocked read_exactly"))
  end)

  it("wakes a blocked write with 'use of closed network connection'", function()
    local c = pair()
    local writer = go(function() return c:write(big()) end)
    helper.settle()
    time.sleep(0.05)
    assert.is_true(c:close())
    local r = result(writer, "the blocked write")
    assert.is_nil(r[1])
    assert.are.equal(CLOSED, r[2])
  end)

  it("wakes a blocked accept when the listener is closed", function()
    local ln = tcp_listener()
    local acceptor = go(function() return ln:accept() end)
    helper.settle()
    assert.is_true(ln:close())
    assert.are.same({ n = 2, nil, CLOSED }, result(acceptor, "the blocked accept"))
  end)

  it("wakes every one of several blocked accepts", function()
    local ln = tcp_listener()
    local acceptors = {}
    for i = 1, 5 do acceptors[i] = go(function() return ln:accept() end) end
    helper.settle()
    assert.is_true(ln:close())
    for i = 1, 5 do assert.are.same({ n = 2, nil, CLOSED }, result(acceptors[i], "accept " .. i)) end
  end)

  it("answers a second close with nil, 'use of closed network connection'", function()
    local c, s = pair()
    assert.are.same({ n = 1, true }, pack(c:close()))
    assert.are.same({ n = 2, nil, CLOSED }, pack(c:close()))
    assert.are.same({ n = 1, true }, pack(s:close()))
    assert.are.same({ n = 2, nil, CLOSED }, pack(s:close()))
    local ln = closing(assert(net.listen("tcp", "127.0.0.1:0")))
    assert.are.same({ n = 1, true }, pack(ln:close()))
    assert.are.same({ n = 2, nil, CLOSED }, pack(ln:close()))
  end)

  it("makes every later operation fail with 'use of closed network connection'", function()
    local c = pair()
    c:close()
    assert.are.same({ nil, CLOSED }, { c:read() })
    assert.are.same({ nil, CLOSED }, { c:read_line() })
    assert.are.same({ nil, CLOSED }, { c:read_exactly(1) })
    assert.are.same({ nil, CLOSED, 0 }, { c:write("x") })
    assert.are.same({ nil, CLOSED }, { c:close_write() })
    assert.are.same({ nil, CLOSED }, { c:local_addr() })
    local ln = closing(assert(net.listen("tcp", "127.0.0.1:0")))
    ln:close()
    assert.are.same({ nil, CLOSED }, { ln:accept() })
  end)

  it("lets the peer read EOF after a close", function()
    local c, s = pair()
    c:write("bye")
    c:close()
    s:set_read_deadline(time.now() + HANG)
    assert.are.same({ "bye", "EOF" }, { read_all(s) })
  end)
end)

describe("contexts cancel network calls", function()
  -- ctx and cancel, with cancel called by another goroutine after d seconds.
  local function cancelled_after(d)
    local ctx, cancel = context.with_cancel(context.background())
    defer(cancel)
    lugo.go(function()
      time.sleep(d)
      cancel()
    end)
    return ctx
  end

  it("returns from accept(ctx) with 'context canceled' when cancelled from another goroutine", function()
    local ln = tcp_listener()
    local t0 = time.now()
    assert.are.same({ n = 2, nil, CANCELED }, pack(ln:accept(cancelled_after(0.05))))
    assert_waited(time.now() - t0, 0.05)
    -- the listener still works
    pair(ln)
  end)

  it("returns from read(n, ctx) with 'context canceled', and the connection still works", function()
    local c, s = pair()
    local t0 = time.now()
    assert.are.same({ n = 2, nil, CANCELED }, pack(c:read(10, cancelled_after(0.05))))
    assert_waited(time.now() - t0, 0.05)
    assert.are.same({ nil, CANCELED }, { c:read_line(nil, cancelled_after(0.05)) })
    assert.are.same({ nil, CANCELED }, { c:read_exactly(3, cancelled_after(0.05)) })
    s:write("abc")
    c:set_read_deadline(time.now() + HANG)
    assert.are.equal("abc", c:read_exactly(3))
  end)

  it("returns from dial with opts.ctx with 'context canceled'", function()
    local ln = full_listener()
    if not ln then
      pending("the kernel completed 20 dials to a listener with backlog 1; no dial stays pending here")
      return
    end
    local t0 = time.now()
    assert.are.same({ n = 2, nil, CANCELED },
      pack(net.dial("tcp", ln:addr(), { ctx = cancelled_after(0.05), timeout = HANG })))
    assert_waited(time.now() - t0, 0.05)
  end)

  it("gives 'context deadline exceeded' for a with_timeout context", function()
    local ln = tcp_listener()
    -- each start time is taken before its context: the deadline runs from
    -- with_timeout, and a preemption between the two would shorten the wait seen
    local t0 = time.now()
    local ctx = context.with_timeout(context.background(), 0.1)
    assert.are.same({ n = 2, nil, DEADLINE }, pack(ln:accept(ctx)))
    assert_waited(time.now() - t0, 0.1)
    local c = pair(ln)
    t0 = time.now()
    ctx = context.with_timeout(context.background(), 0.1)
    assert.are.same({ n = 2, nil, DEADLINE }, pack(c:read(nil, ctx)))
    assert_waited(time.now() - t0, 0.1)
    local full = full_listener()
    if full then
      t0 = time.now()
      ctx = context.with_timeout(context.background(), 0.1)
      assert.are.same({ n = 2, nil, DEADLINE }, pack(net.dial("tcp", full:addr(), { ctx = ctx })))
      assert_waited(time.now() - t0, 0.1)
    end
  end)

  it("fails at once with a context that is already done", function()
    local ctx, cancel = context.with_cancel(context.background())
    cancel()
    local ln, addr = tcp_listener()
    assert.are.same({ nil, CANCELED }, { ln:accept(ctx) })
    assert.are.same({ nil, CANCELED }, { net.dial("tcp", addr, { ctx = ctx }) })
    local c, s = pair(ln)
    s:write("ready")
    time.sleep(0.02)
    assert.are.same({ nil, CANCELED }, { c:read(5, ctx) })
    assert.are.equal("ready", c:read_exactly(5)) -- nothing was taken
  end)

  it("cancels a blocked write(s, ctx), reporting the bytes written", function()
    local c = pair()
    local data = big()
    local t0 = time.now()
    local r = pack(c:write(data, cancelled_after(0.1)))
    assert_waited(time.now() - t0, 0.1)
    assert.is_nil(r[1])
    assert.are.equal(CANCELED, r[2])
    assert.is_true(type(r[3]) == "number" and r[3] > 0 and r[3] < BIG, "written: " .. tostring(r[3]))
  end)

  it("leaves a connection alone once its call has returned", function()
    local c, s = pair()
    local ctx, cancel = context.with_cancel(context.background())
    s:write("x")
    assert.are.equal("x", c:read(1, ctx))
    cancel()
    s:write("y")
    c:set_read_deadline(time.now() + HANG)
    assert.are.equal("y", c:read(1))
  end)
end)

describe("concurrent calls on one connection", function()
  it("take turns: two writes of 1 MiB from two goroutines do not interleave", function()
    local c, s = pair()
    local MiB = 1024 * 1024
    local a, b = string.rep("A", MiB), string.rep("B", MiB)
    local wa, wb = go(function() return c:write(a) end), go(function() return c:write(b) end)
    s:set_read_deadline(time.now() + HANG)
    local got = assert(s:read_exactly(2 * MiB))
    assert.are.same({ n = 1, MiB }, result(wa, "the first write"))
    assert.are.same({ n = 1, MiB }, result(wb, "the second write"))
    assert.is_true(got == a .. b or got == b .. a, "the writes interleaved")
  end)

  it("take turns: two read_exactly calls each get a whole message", function()
    local c, s = pair()
    local r1, r2 = go(function() return c:read_exactly(4) end), go(function() return c:read_exactly(4) end)
    helper.settle()
    s:write("aa")
    time.sleep(0.01)
    s:write("aabb")
    time.sleep(0.01)
    s:write("bb")
    local got = { result(r1, "the first read")[1], result(r2, "the second read")[1] }
    table.sort(got)
    assert.are.same({ "aaaa", "bbbb" }, got)
  end)

  it("let a read waiting for its turn be cancelled or time out without disturbing the one in progress", function()
    local c, s = pair()
    local first = go(function() return c:read_exactly(3) end)
    helper.settle() -- first holds the read side
    local ctx, cancel = context.with_cancel(context.background())
    local second = go(function() return c:read(10, ctx) end)
    helper.settle()
    cancel()
    assert.are.same({ n = 2, nil, CANCELED }, result(second, "the cancelled read"))
    s:write("xyz")
    assert.are.same({ n = 1, "xyz" }, result(first, "the first read"))
  end)

  it("are all woken by a close, the ones waiting for their turn too", function()
    local c = pair()
    local readers = {}
    for i = 1, 3 do readers[i] = go(function() return c:read() end) end
    helper.settle()
    assert.is_true(c:close())
    for i = 1, 3 do assert.are.same({ n = 2, nil, CLOSED }, result(readers[i], "reader " .. i)) end
  end)
end)

describe("a connection used from several processors", function()
  it("is read by a spawned goroutine while the main goroutine writes it", function()
    local data = pattern(1024 * 1024, 5)
    local c, s = pair()
    local res = lugo.chan(1)
    lugo.spawn(function(conn, res, want)
      local parts, total = {}, 0
      conn:set_read_deadline(os.time() + 30)
      while total < want do
        local chunk, err = conn:read()
        if not chunk then return res:send({ table.concat(parts), err }) end
        parts[#parts + 1] = chunk
        total = total + #chunk
      end
      res:send({ table.concat(parts) })
    end, s, res, #data)
    assert.is_true(write_chunks(c, data))
    local r = within(res, "the spawned reader")
    assert.is_nil(r[2])
    assert_same_bytes(data, r[1])
  end)

  it("is written by a spawned goroutine while the main goroutine reads it, then closed there", function()
    local data = pattern(512 * 1024, 6)
    local c, s = pair()
    local res = lugo.chan(1)
    lugo.spawn(function(conn, data, res)
      local n, err = conn:write(data)
      res:send({ n, err, conn:close() })
    end, s, data, res)
    c:set_read_deadline(time.now() + HANG)
    local got, err = read_all(c)
    assert.are.equal("EOF", err)
    assert_same_bytes(data, got)
    assert.are.same({ #data, nil, true }, within(res, "the spawned writer"))
  end)

  it("works when passed over a channel to a spawned goroutine", function()
    local c, s = pair()
    local conns, res = lugo.chan(), lugo.chan(1)
    lugo.spawn(function(conns, res)
      local conn = conns:recv()
      conn:set_deadline(os.time() + 30)
      local out = {}
      while true do
        local line, err = conn:read_line()
        if not line then break end
        out[#out + 1] = line
        conn:write(line:upper() .. "\n")
      end
      res:send(out)
      conn:close()
    end, conns, res)
    conns:send(s)
    c:set_read_deadline(time.now() + HANG)
    for i = 1, 50 do
      assert.are.equal(#("line " .. i) + 1, c:write("line " .. i .. "\n"))
      assert.are.equal("LINE " .. i, c:read_line())
    end
    c:close_write()
    local out = within(res, "the spawned echo")
    assert.are.equal(50, #out)
    assert.are.equal("line 50", out[50])
    assert.are.same({ nil, "EOF" }, { c:read() })
  end)

  it("is accepted in a spawned goroutine and passed back to the main goroutine", function()
    local ln, addr = tcp_listener()
    local back = lugo.chan(1)
    lugo.spawn(function(ln, back)
      local conn, err = ln:accept()
      if conn then conn:write("from elsewhere\n") end
      back:send({ conn, err })
    end, ln, back)
    local c = closing(assert(net.dial("tcp", addr, { timeout = HANG })))
    local r = within(back, "the spawned acceptor")
    local s = closing(assert(r[1], r[2]))
    c:set_read_deadline(time.now() + HANG)
    assert.are.equal("from elsewhere", c:read_line())
    assert.are.equal(5, s:write("back\n"))
    assert.are.equal("back", c:read_line())
    assert.are.equal(c:local_addr(), s:remote_addr())
  end)

  it("times out a read waiting on another processor when its deadline, set here, passes", function()
    local c = pair()
    local res, started = lugo.chan(1), lugo.chan(1)
    lugo.spawn(function(conn, started, res)
      started:send(true)
      res:send({ conn:read() })
    end, c, started, res)
    within(started, "the spawned reader")
    time.sleep(0.05)
    c:set_read_deadline(time.now() + 0.1)
    assert.are.same({ nil, TIMEOUT }, within(res, "the timed-out reader"))
  end)

  it("cancels a read waiting here from a goroutine on another processor", function()
    local c = pair()
    local ctx, cancel = context.with_cancel(context.background())
    defer(cancel)
    local t0 = time.now() -- before the spawn: another processor may start its sleep at once
    lugo.spawn(function(cancel)
      require("lugo.time").sleep(0.05)
      cancel()
    end, cancel)
    assert.are.same({ n = 2, nil, CANCELED }, pack(c:read(10, ctx)))
    assert_waited(time.now() - t0, 0.05)
  end)

  it("wakes a read blocked on another processor when closed here", function()
    local c = pair()
    local res = lugo.chan(1)
    local started = lugo.chan(1)
    lugo.spawn(function(conn, started, res)
      started:send(true)
      res:send({ conn:read() })
    end, c, started, res)
    within(started, "the spawned reader")
    time.sleep(0.05)
    assert.is_true(c:close())
    assert.are.same({ nil, CLOSED }, within(res, "the woken reader"))
  end)
end)

describe("out of descriptors (EMFILE) in accept", function()
  -- The child: holds every connection it accepts (answering each with
  -- "a"), and obeys commands on a control connection to the test:
  -- "count" (how many it holds), "free" (close the oldest half of them),
  -- anything else or EOF: print how many it accepted and exit.
  local CHILD = [[
    local lugo = require "lugo"
    local net = require "lugo.net"
    local time = require "lugo.time"
    local ctl = assert(net.dial("tcp", arg[1], { timeout = 10 }))
    local ln = assert(net.listen("tcp", "127.0.0.1:0"))
    local held, accepted = {}, 0
    lugo.go(function()
      while true do
        local c, err = ln:accept()
        if not c then return end
        accepted = accepted + 1
        held[#held + 1] = c
        c:write("a")
      end
    end)
    ctl:write(ln:addr() .. "\n")
    while true do
      ctl:set_read_deadline(time.now() + 20)
      local cmd, err = ctl:read_line()
      if cmd == "count" then
        ctl:write(#held .. "\n")
      elseif cmd == "free" then
        local n = math.floor(#held / 2)
        for i = 1, n do held[i]:close() end
        local rest = {}
        for i = n + 1, #held do rest[#rest + 1] = held[i] end
        held = rest
        ctl:write(n .. "\n")
      else
        print("accepted " .. accepted)
        print("end " .. tostring(cmd or err))
        break
      end
    end
  ]]

  it("waits, without dying, until descriptors free up, then accepts the connections left in the backlog", function()
    local LIMIT, K = 64, 100
    local ctl_ln, ctl_addr = tcp_listener()
    local child = start_child(CHILD, { args = { ctl_addr }, ulimit_n = LIMIT })
    ctl_ln:set_deadline(time.now() + HANG)
    local ctl, err = ctl_ln:accept()
    if not ctl then
      local r = child.wait(HANG) or {}
      error("the child did not call back (" .. tostring(err) .. "): " .. tostring(r.stderr))
    end
    closing(ctl)
    ctl:set_deadline(time.now() + 3 * HANG)
    local addr = assert(ctl:read_line())
    local function command(cmd)
      assert(ctl:write(cmd .. "\n"))
      return tonumber((assert(ctl:read_line())))
    end

    -- K connections: the kernel completes them all, the child can accept
    -- only as many as its descriptors allow.
    local served = lugo.chan(K)
    for i = 1, K do
      local c = closing(assert(net.dial("tcp", addr, { timeout = HANG })))
      lugo.go(function()
        c:set_read_deadline(time.now() + 3 * HANG)
        served:send({ i, c:read(1) })
      end)
    end
    local count = 0
    local function collect(target, quiet)
      local t0 = time.now()
      while count < K do
        if target and count >= target then return end
        local v, ok = recv_within(served, quiet or math.max(0.01, HANG - (time.now() - t0)))
        if ok == "timeout" then return end
        assert.are.equal("a", v[2], "connection " .. v[1] .. ": " .. tostring(v[3]))
        count = count + 1
      end
    end
    collect(nil, 0.5) -- until nothing more is served for 0.5 s
    assert.is_true(count > 0, "the child accepted nothing")
    assert.is_true(count < K, "the child accepted all " .. K .. " connections under a limit of " .. LIMIT)
    -- still responsive while it cannot accept, and holding what it served
    assert.are.equal(count, command("count"))
    local stuck = count

    local rounds = 0
    while count < K do
      rounds = rounds + 1
      assert.is_true(rounds <= 20, "too many rounds")
      local freed = command("free")
      assert.is_true(freed > 0)
      collect(math.min(K, count + freed))
      assert.are.equal(math.min(K, stuck + freed), count,
        "after freeing " .. freed .. " descriptors the child served " .. (count - stuck) .. " more")
      stuck = count
    end
    assert.are.equal(K, count)
    assert(ctl:write("quit\n"))
    local r = child.wait(HANG)
    assert(r, "the child did not exit")
    assert.are.equal("", r.stderr)
    assert.are.equal(0, r.status)
    assert.are.equal("accepted " .. K .. "\nend quit\n", r.stdout)
  end)
end)

describe("unix sockets", function()
  it("listen on a path, dial, echo, name both ends and remove the file on close", function()
    local path = tempdir() .. "/echo.sock"
    local ln = closing(assert(net.listen("unix", path)))
    assert.are.equal(path, ln:addr())
    assert.is_true(sh_ok("test -S " .. helper.shell_quote(path)))
    local c, s = pair(ln, "unix")
    assert.are.equal(path, c:remote_addr())
    assert.are.equal(path, s:local_addr())
    assert.are.equal("string", type(c:local_addr())) -- unnamed: Go and lugo differ on its spelling
    local data = pattern(256 * 1024, 7)
    local echo = go(function()
      local got = assert(s:read_exactly(#data))
      return s:write(got)
    end)
    local writer = go(function() return write_chunks(c, data) end)
    c:set_read_deadline(time.now() + HANG)
    local back = c:read_exactly(#data)
    assert.are.same({ n = 1, true }, result(writer, "the writer"))
    assert.are.same({ n = 1, #data }, result(echo, "the echo"))
    assert_same_bytes(data, back)
    assert.is_true(ln:close())
    assert.is_false(sh_ok("test -e " .. helper.shell_quote(path)))
  end)

  it("refuse a second listener on a path in use, and dials to a missing path", function()
    local dir = tempdir()
    local ln = closing(assert(net.listen("unix", dir .. "/a.sock")))
    assert.are.same({ nil, "address already in use" }, { net.listen("unix", ln:addr()) })
    local c, err = net.dial("unix", dir .. "/missing.sock")
    assert.is_nil(c)
    assert.are.equal("no such file or directory", err)
  end)

  it("work in the abstract namespace ('@name'), leaving no file", function()
    local name = string.format("@lugo-net-spec-%d-%d", getpid(), math.random(1, 1e9))
    local ln = closing(assert(net.listen("unix", name)))
    assert.are.equal(name, ln:addr())
    local c, s = pair(ln, "unix")
    assert.are.equal(name, c:remote_addr())
    assert.are.equal(name, s:local_addr())
    assert.are.equal(5, c:write("hello"))
    s:set_read_deadline(time.now() + HANG)
    assert.are.equal("hello", s:read_exactly(5))
    assert.are.same({ nil, "address already in use" }, { net.listen("unix", name) })
    assert.is_true(ln:close())
    -- the name is free again once closed
    closing(assert(net.listen("unix", name)))
  end)
end)

describe("IPv6 loopback", function()
  it("listens on [::1]:0 and dials it with tcp6 and tcp", function()
    local ln = net.listen("tcp6", "[::1]:0")
    if not ln then
      pending("no IPv6 loopback on this machine")
      return
    end
    closing(ln)
    local addr = ln:addr()
    assert.matches("^%[::1%]:%d+$", addr)
    for _, network in ipairs({ "tcp6", "tcp" }) do
      local c, s = pair(ln, network)
      assert.are.equal(addr, c:remote_addr())
      assert.are.equal(addr, s:local_addr())
      assert.matches("^%[::1%]:%d+$", c:local_addr())
      assert.are.equal(c:local_addr(), s:remote_addr())
      assert.are.equal(4, c:write("six\n"))
      s:set_read_deadline(time.now() + HANG)
      assert.are.equal("six", s:read_line())
    end
    assert.are.same({ nil, "address ::1: no suitable address found" }, { net.dial("tcp4", addr) })
  end)
end)

describe("addresses", function()
  it("are spelled host:port by ln:addr(), c:local_addr() and c:remote_addr()", function()
    local ln, addr = tcp_listener()
    local port = tonumber(addr:match("^127%.0%.0%.1:(%d+)$"))
    assert.is_true(port ~= nil and port > 0 and port < 65536, addr)
    local c, s = pair(ln)
    assert.are.equal(addr, c:remote_addr())
    assert.are.equal(addr, s:local_addr())
    assert.matches("^127%.0%.0%.1:%d+$", c:local_addr())
    assert.are.equal(c:local_addr(), s:remote_addr())
    assert.are_not.equal(c:local_addr(), addr)
  end)

  it("keep the remote address after the connection is closed", function()
    local ln, addr = tcp_listener()
    local c = pair(ln)
    c:close()
    assert.are.equal(addr, c:remote_addr())
  end)

  it("give nil, 'address already in use' for a port that is taken", function()
    local _, addr = tcp_listener()
    assert.are.same({ n = 2, nil, "address already in use" }, pack(net.listen("tcp", addr)))
  end)

  it("give nil, 'connection refused' for a dial to a closed port", function()
    local ln = assert(net.listen("tcp", "127.0.0.1:0"))
    local addr = ln:addr()
    ln:close()
    assert.are.same({ n = 2, nil, "connection refused" }, pack(net.dial("tcp", addr)))
  end)

  it("give nil and Go's text for a bad address", function()
    local cases = {
      { "x", "address x: missing port in address" },
      { "127.0.0.1", "address 127.0.0.1: missing port in address" },
      { "a:b:c", "address a:b:c: too many colons in address" },
      { "[::1:80", "address [::1:80: missing ']' in address" },
      { "127.0.0.1:99999", "address 99999: invalid port" },
      { "127.0.0.1:-1", "address -1: invalid port" },
      { "127.0.0.1:99999999999999x", "address 99999999999999x: invalid port" },
      { "[::1]:80:90", "address [::1]:80:90: too many colons in address" },
      { "[::1]x:80", "address [::1]x:80: missing port in address" },
      { "[::1]", "address [::1]: missing port in address" },
      { "a[b:80", "address a[b:80: unexpected '[' in address" },
      { "[a]:8]0", "address [a]:8]0: unexpected ']' in address" },
      { "127.0.0.1:nosuchservice", "address tcp/nosuchservice: unknown port" },
    }
    for _, t in ipairs(cases) do
      assert.are.same({ n = 2, nil, t[2] }, pack(net.dial("tcp", t[1])))
      assert.are.same({ n = 2, nil, t[2] }, pack(net.listen("tcp", t[1])))
    end
    assert.are.same({ n = 2, nil, "unknown network udp" }, pack(net.dial("udp", "127.0.0.1:1")))
    assert.are.same({ n = 2, nil, "unknown network udp" }, pack(net.listen("udp", "127.0.0.1:0")))
  end)

  it("resolve 'localhost:port' (through the blocking pool)", function()
    local ln, addr = tcp_listener()
    local port = addr:match(":(%d+)$")
    -- other goroutines keep running while the name resolves
    local ticks = lugo.chan(1)
    lugo.go(function() ticks:send(true) end)
    local c = closing(assert(net.dial("tcp", "localhost:" .. port, { timeout = HANG })))
    assert.is_true(helper.can_recv(ticks))
    assert.are.equal(addr, c:remote_addr())
    local s = closing(assert(ln:accept()))
    assert.are.equal(c:local_addr(), s:remote_addr())
    local ln2 = closing(assert(net.listen("tcp4", "localhost:0")))
    assert.matches("^127%.0%.0%.1:%d+$", ln2:addr())
  end)
end)

describe("NUL bytes and stray spaces in networks, hosts and ports", function()
  -- Go compares and resolves every byte of a name: a NUL ends nothing, it
  -- makes a name that cannot exist (nul_address.lua: "localhost\0evil"
  -- dialled localhost, "127.0.0.1: 0" listened). The errors are Go 1.19's,
  -- without the "dial tcp: " prefix lugo leaves out everywhere.
  local function both(address, want)
    assert.are.same({ n = 2, nil, want }, pack(net.listen("tcp", address)))
    assert.are.same({ n = 2, nil, want }, pack(net.dial("tcp", address)))
  end

  it("refuse a network name with a NUL in it", function()
    assert.are.same({ n = 2, nil, "unknown network tcp\0junk" }, pack(net.listen("tcp\0junk", "127.0.0.1:0")))
    assert.are.same({ n = 2, nil, "unknown network tcp\0" }, pack(net.dial("tcp\0", "127.0.0.1:1")))
    assert.are.same({ n = 2, nil, "unknown network unix\0x" }, pack(net.dial("unix\0x", "/tmp/x")))
  end)

  it("treat a host with a NUL as a name no resolver knows", function()
    both("127.0.0.1\0junk:0", "lookup 127.0.0.1\0junk: no such host")
    both("127.0.0.1\0:0", "lookup 127.0.0.1\0: no such host")
    both("\0:0", "lookup \0: no such host")
    both("[::1\0]:0", "lookup ::1\0: no such host")
  end)

  it("never dial the part of a host before its NUL", function()
    local ln, addr = tcp_listener()
    local port = addr:match(":(%d+)$")
    for _, host in ipairs({ "127.0.0.1\0evil.example", "localhost\0evil.example" }) do
      assert.are.same({ n = 2, nil, "lookup " .. host .. ": no such host" },
        pack(net.dial("tcp", host .. ":" .. port, { timeout = HANG })))
    end
    ln:set_deadline(time.now() + 0.05)
    assert.are.same({ n = 2, nil, TIMEOUT }, pack(ln:accept())) -- nobody connected
  end)

  it("refuse a port with a NUL, a space or any byte no service name has", function()
    both("127.0.0.1:0\0junk", "address tcp/0\0junk: unknown port")
    both("127.0.0.1:\0", "address tcp/\0: unknown port")
    both("127.0.0.1: 0", "address tcp/ 0: unknown port")
    both("127.0.0.1:0 ", "address tcp/0 : unknown port")
    both("127.0.0.1:\t0", "address tcp/\t0: unknown port")
    both("127.0.0.1:\195\169", "address tcp/\195\169: unknown port")
    both(":0\0", "address tcp/0\0: unknown port")
    both("[::1]:0\0", "address tcp/0\0: unknown port")
  end)

  it("read a port as Go does: a sign and leading zeros are fine", function()
    local ln, addr = tcp_listener()
    local port = addr:match(":(%d+)$")
    for _, p in ipairs({ "+" .. port, "000" .. port }) do
      local c = closing(assert(net.dial("tcp", "127.0.0.1:" .. p, { timeout = HANG })))
      assert.are.equal(addr, c:remote_addr())
      closing(assert(ln:accept()))
    end
    for _, p in ipairs({ "+0", "-0", "+", "" }) do
      local l = closing(assert(net.listen("tcp", "127.0.0.1:" .. p)))
      assert.matches("^127%.0%.0%.1:%d+$", l:addr())
    end
  end)

  it("check the port of a name resolved in the blocking pool the same way", function()
    local ln, addr = tcp_listener()
    local port = addr:match(":(%d+)$")
    assert.are.same({ n = 2, nil, "address tcp/" .. port .. "\0: unknown port" },
      pack(net.dial("tcp", "localhost:" .. port .. "\0", { timeout = HANG })))
    assert.are.same({ n = 2, nil, "address tcp/ " .. port .. ": unknown port" },
      pack(net.dial("tcp", "localhost: " .. port, { timeout = HANG })))
    assert.are.same({ n = 2, nil, "address tcp/nosuchservice: unknown port" },
      pack(net.dial("tcp", "localhost:nosuchservice", { timeout = HANG })))
    assert.are.same({ n = 2, nil, "address localhost: no suitable address found" },
      pack(net.dial("tcp6", "localhost:" .. port, { timeout = HANG })))
    -- and a good one still resolves, its port read as Go reads it
    local c = closing(assert(net.dial("tcp4", "localhost:+" .. port, { timeout = HANG })))
    assert.are.equal(addr, c:remote_addr())
  end)

  it("refuse a unix socket path with a NUL instead of using the path before it", function()
    local dir = tempdir()
    local path = dir .. "/x\0y"
    assert.are.same({ n = 2, nil, "invalid argument" }, pack(net.listen("unix", path)))
    assert.is_false(sh_ok("test -e " .. helper.shell_quote(dir .. "/x")))
    local ln = closing(assert(net.listen("unix", dir .. "/x")))
    assert.are.same({ n = 2, nil, "invalid argument" }, pack(net.dial("unix", path)))
    assert.are.same({ n = 2, nil, "invalid argument" }, pack(net.dial("unix", dir .. "/x\0")))
    ln:set_deadline(time.now() + 0.05)
    assert.are.same({ n = 2, nil, TIMEOUT }, pack(ln:accept())) -- nobody connected
    assert.are.same({ n = 2, nil, "missing address" }, pack(net.dial("unix", "")))
  end)

  it("keep every byte of an abstract unix name, NULs included, as Go does", function()
    local name = string.format("@lugo-net-spec-%d-%d", getpid(), math.random(1, 1e9))
    local ln = closing(assert(net.listen("unix", name .. "\0tail")))
    assert.are.equal(name .. "\0tail", ln:addr())
    assert.are.same({ n = 2, nil, "connection refused" }, pack(net.dial("unix", name))) -- another name
    local c, s = pair(ln, "unix")
    assert.are.equal(name .. "\0tail", c:remote_addr())
    assert.are.equal(name .. "\0tail", s:local_addr())
  end)
end)

describe("reading", function()
  it("read(n) returns at most n bytes, as soon as some are there", function()
    local c, s = pair()
    s:write("abcdefgh")
    c:set_read_deadline(time.now() + HANG)
    assert.are.equal("abc", c:read(3))
    local rest = c:read(100)
    assert.is_true(#rest >= 1 and #rest <= 5)
    assert.are.equal(("defgh"):sub(1, #rest), rest)
    -- a read returns what has come without waiting for n
    local reader = go(function() return c:read(1000) end)
    helper.settle()
    s:write("xy")
    assert.are.same({ n = 1, "xy" }, result(reader, "the read"))
  end)

  it("read() reads up to 65536 bytes by default", function()
    local c, s = pair()
    local data = pattern(200000, 8)
    local writer = go(function() return s:write(data) end)
    c:set_read_deadline(time.now() + HANG)
    local parts, total = {}, 0
    while total < #data do
      local chunk = assert(c:read())
      assert.is_true(#chunk <= 65536)
      parts[#parts + 1] = chunk
      total = total + #chunk
    end
    assert_same_bytes(data, table.concat(parts))
    assert.are.same({ n = 1, #data }, result(writer, "the write"))
  end)

  it("read_exactly(n) waits for all n bytes", function()
    local c, s = pair()
    local reader = go(function() return c:read_exactly(10) end)
    for _, part in ipairs({ "ab", "cde", "f", "ghij" }) do
      s:write(part)
      time.sleep(0.01)
    end
    assert.are.same({ n = 1, "abcdefghij" }, result(reader, "read_exactly"))
    assert.are.equal("", c:read_exactly(0))
  end)

  it("read_exactly gives nil, 'unexpected EOF' when the stream ends early, keeping the bytes", function()
    local c, s = pair()
    s:write("ab")
    s:close()
    c:set_read_deadline(time.now() + HANG)
    assert.are.same({ n = 2, nil, "unexpected EOF" }, pack(c:read_exactly(4)))
    assert.are.equal("ab", c:read(10))
    assert.are.same({ n = 2, nil, "EOF" }, pack(c:read_exactly(4)))
  end)

  it("read_line strips '\\n' and '\\r\\n', returns a last unterminated line, then nil, 'EOF'", function()
    local c, s = pair()
    s:write("one\ntwo\r\n\n\r\nfour\r")
    time.sleep(0.01)
    s:write("x\nlast")
    s:close()
    c:set_read_deadline(time.now() + HANG)
    assert.are.equal("one", c:read_line())
    assert.are.equal("two", c:read_line())
    assert.are.equal("", c:read_line())
    assert.are.equal("", c:read_line())
    assert.are.equal("four\rx", c:read_line())
    assert.are.same({ n = 1, "last" }, pack(c:read_line()))
    assert.are.same({ n = 2, nil, "EOF" }, pack(c:read_line()))
    assert.are.same({ n = 2, nil, "EOF" }, pack(c:read()))
  end)

  it("read_line waits for the end of the line across writes", function()
    local c, s = pair()
    local reader = go(function() return c:read_line() end)
    s:write("hel")
    time.sleep(0.01)
    s:write("lo\r")
    time.sleep(0.01)
    s:write("\nnext\n")
    assert.are.same({ n = 1, "hello" }, result(reader, "read_line"))
    assert.are.equal("next", c:read_line())
  end)

  it("read_line(max) takes lines of max bytes and refuses longer ones with 'bufio.Scanner: token too long'", function()
    local c, s = pair()
    s:write("abcd\nabcd\r\n")
    c:set_read_deadline(time.now() + HANG)
    assert.are.equal("abcd", c:read_line(4))
    assert.are.equal("abcd", c:read_line(4))
    s:write("abcdefgh\n")
    assert.are.same({ n = 2, nil, "bufio.Scanner: token too long" }, pack(c:read_line(4)))
    local c2, s2 = pair()
    s2:write(string.rep("z", 70000)) -- no end of line at all; more than the default max
    c2:set_read_deadline(time.now() + HANG)
    assert.are.same({ n = 2, nil, "bufio.Scanner: token too long" }, pack(c2:read_line()))
  end)

  it("read gives nil, 'EOF' at the end of the stream, every time", function()
    local c, s = pair()
    s:write("z")
    s:close()
    c:set_read_deadline(time.now() + HANG)
    assert.are.equal("z", c:read())
    assert.are.same({ n = 2, nil, "EOF" }, pack(c:read()))
    assert.are.same({ n = 2, nil, "EOF" }, pack(c:read()))
    assert.are.same({ n = 2, nil, "EOF" }, pack(c:read_line()))
  end)

  it("mixes read_line, read_exactly and read on one stream without losing bytes", function()
    local c, s = pair()
    s:write("header\r\n" .. "0123456789" .. "tail")
    s:close()
    c:set_read_deadline(time.now() + HANG)
    assert.are.equal("header", c:read_line())
    assert.are.equal("01234", c:read_exactly(5))
    assert.are.equal("56789tail", (read_all(c)))
  end)
end)

describe("misuse raises errors naming the function and the argument", function()
  local function raises(msg, f, ...)
    local where
    local args = pack(...)
    local err = error_of(function() where = here(); f(unpack(args, 1, args.n)) end)
    assert.are.equal(where .. msg, err)
  end

  it("for a receiver that is not a connection or listener", function()
    local c = pair()
    local ln = tcp_listener()
    raises("bad argument #1 to 'read' (connection expected, got table)", c.read, {})
    raises("bad argument #1 to 'read' (connection expected, got listener)", c.read, ln)
    raises("bad argument #1 to 'write' (connection expected, got nil)", c.write, nil, "x")
    raises("bad argument #1 to 'read_line' (connection expected, got number)", c.read_line, 1)
    raises("bad argument #1 to 'read_exactly' (connection expected, got string)", c.read_exactly, "c", 1)
    raises("bad argument #1 to 'close' (connection expected, got table)", c.close, {})
    raises("bad argument #1 to 'set_read_deadline' (connection expected, got table)", c.set_read_deadline, {}, 1)
    raises("bad argument #1 to 'accept' (listener expected, got connection)", ln.accept, c)
    raises("bad argument #1 to 'addr' (listener expected, got table)", ln.addr, {})
  end)

  it("for arguments of the wrong type", function()
    local c = pair()
    local ln = tcp_listener()
    raises("bad argument #2 to 'write' (string expected, got nil)", c.write, c, nil)
    raises("bad argument #2 to 'write' (string expected, got table)", c.write, c, {})
    raises("bad argument #2 to 'read' (number expected, got string)", c.read, c, "10")
    raises("bad argument #2 to 'read_exactly' (number expected, got nil)", c.read_exactly, c)
    raises("bad argument #3 to 'read' (context expected, got table)", c.read, c, 10, {})
    raises("bad argument #3 to 'write' (context expected, got boolean)", c.write, c, "x", true)
    raises("bad argument #2 to 'accept' (context expected, got table)", ln.accept, ln, {})
    raises("bad argument #2 to 'set_read_deadline' (number expected, got string)", c.set_read_deadline, c, "now")
    raises("bad argument #1 to 'listen' (string expected, got number)", net.listen, 1, "127.0.0.1:0")
    raises("bad argument #2 to 'dial' (string expected, got nil)", net.dial, "tcp")
    raises("bad argument #3 to 'dial' (table expected, got number)", net.dial, "tcp", "127.0.0.1:1", 5)
    raises("bad argument #3 to 'dial' (number opts.timeout expected, got string)",
      net.dial, "tcp", "127.0.0.1:1", { timeout = "1" })
    raises("bad argument #3 to 'dial' (context expected, got table)", net.dial, "tcp", "127.0.0.1:1", { ctx = {} })
    raises("bad argument #3 to 'listen' (number opts.backlog expected, got string)",
      net.listen, "tcp", "127.0.0.1:0", { backlog = "1" })
  end)

  it("for a size out of range", function()
    local c = pair()
    raises("bad argument #2 to 'read' (size out of range)", c.read, c, 0)
    raises("bad argument #2 to 'read_exactly' (size out of range)", c.read_exactly, c, -1)
    raises("bad argument #2 to 'read_line' (size out of range)", c.read_line, c, 0)
  end)
end)

describe("garbage connections", function()
  it("get their descriptors closed when collected", function()
    local ln, addr = tcp_listener()
    local function dial_many(n)
      local list = {}
      local acceptor = go(function()
        local got = {}
        for i = 1, n do got[i] = assert(ln:accept()) end
        return got
      end)
      for i = 1, n do list[i] = assert(net.dial("tcp", addr, { timeout = HANG })) end
      local accepted = result(acceptor, "the accepts")[1]
      for i = 1, n do list[n + i] = accepted[i] end
      return list
    end
    -- warm up (every processor's poller exists, buffers are allocated)
    local warm = dial_many(5)
    for _, c in ipairs(warm) do c:close() end
    warm = nil
    collectgarbage()
    collectgarbage()
    local before, fds0 = open_fds()
    local conns = dial_many(50)
    assert.are.equal(100, #conns)
    local during, fds1 = open_fds()
    assert.is_true(during >= before + 100, ("%d sockets before, %d with 100 connections:\n%s")
      :format(before, during, fd_diff(fds0, fds1)))
    conns = nil
    collectgarbage()
    collectgarbage()
    local after, fds2 = open_fds()
    assert.is_true(after <= before, ("%d sockets before, %d after collecting 100 connections:\n%s")
      :format(before, after, fd_diff(fds0, fds2)))
  end)

  it("and garbage listeners too", function()
    collectgarbage()
    collectgarbage()
    local before, fds0 = open_fds()
    local list = {}
    for i = 1, 20 do list[i] = assert(net.listen("tcp", "127.0.0.1:0")) end
    local during, fds1 = open_fds()
    assert.is_true(during >= before + 20, ("%d sockets before, %d with 20 listeners:\n%s")
      :format(before, during, fd_diff(fds0, fds1)))
    list = nil
    collectgarbage()
    collectgarbage()
    local after, fds2 = open_fds()
    assert.is_true(after <= before, ("%d sockets before, %d after collecting 20 listeners:\n%s")
      :format(before, after, fd_diff(fds0, fds2)))
  end)
end)

describe("a program blocked in accept", function()
  it("is not reported as deadlocked: accepts with a 0.3 s deadline, three times, then exits 0", function()
    local child = start_child([[
      local net = require "lugo.net"
      local time = require "lugo.time"
      local ln = assert(net.listen("tcp", "127.0.0.1:0"))
      local timeouts = 0
      while timeouts < 3 do
        ln:set_deadline(time.now() + 0.3)
        local c, err = ln:accept()
        if c then c:close() else
          assert(err == "i/o timeout", err)
          timeouts = timeouts + 1
        end
      end
      ln:close()
      print("timeouts " .. timeouts)
    ]])
    local r = child.wait(HANG)
    assert(r, "the child did not exit")
    assert.are.equal("", r.stderr)
    assert.are.equal(0, r.status)
    assert.are.equal("timeouts 3\n", r.stdout)
  end)
end)

describe("SIGPIPE", function()
  it("does not kill the process: writes to a closed peer give 'broken pipe' or 'connection reset by peer'", function()
    local c, s = pair()
    s:close()
    time.sleep(0.02)
    local errs = {}
    c:set_write_deadline(time.now() + HANG)
    for _ = 1, 50 do
      local n, err = c:write(string.rep("p", 65536))
      if not n then errs[#errs + 1] = err end
    end
    assert.is_true(#errs > 0)
    for _, e in ipairs(errs) do
      assert.is_true(e == "broken pipe" or e == "connection reset by peer", e)
    end
  end)

  it("does not kill a child lugo process either, whose SIGPIPE disposition is the default", function()
    if not sh_ok("env --default-signal=PIPE true 2>/dev/null") then
      pending("env --default-signal (coreutils 8.31) is needed to reset SIGPIPE for the child")
      return
    end
    local child = start_child([[
      local lugo = require "lugo"
      local net = require "lugo.net"
      local time = require "lugo.time"
      local ln = assert(net.listen("tcp", "127.0.0.1:0"))
      local ch = lugo.chan(1)
      lugo.go(function() ch:send(ln:accept()) end)
      local c = assert(net.dial("tcp", ln:addr()))
      ch:recv():close()
      time.sleep(0.02)
      local errs = {}
      for _ = 1, 50 do
        local n, err = c:write(string.rep("p", 65536))
        if not n then errs[err] = true end
      end
      local list = {}
      for e in pairs(errs) do list[#list + 1] = e end
      table.sort(list)
      print("alive: " .. table.concat(list, ", "))
    ]], { default_sigpipe = true })
    local r = child.wait(HANG)
    assert(r, "the child did not exit")
    assert.are.equal("", r.stderr)
    assert.are.equal(0, r.status)
    assert.matches("^alive: [%a ,]+\n$", r.stdout)
    for e in r.stdout:match("^alive: (.-)\n"):gmatch("[^,]+") do
      e = e:gsub("^ ", "")
      assert.is_true(e == "broken pipe" or e == "connection reset by peer", e)
    end
  end)
end)
