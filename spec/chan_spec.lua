-- Channels: lugo.chan and the channel methods send, recv, close, len, cap and
-- range, as docs/api.md describes them. Each test body runs in the main
-- goroutine; with one processor, a goroutine started with lugo.go runs when
-- the test body blocks or yields.
local lugo = require "lugo"
local time = require "lugo.time"
local runtime = require "lugo.runtime"
local sync = require "lugo.sync"
local helper = require "helper"

local case = lugo.case
local settle, error_of, here = helper.settle, helper.error_of, helper.here
local go_pcall, can_recv, can_send = helper.go_pcall, helper.can_recv, helper.can_send

-- Receive from ch and assert that it gives exactly v (nil and false
-- included) and ok.
local function assert_recv(ch, v, ok)
  local got, got_ok = ch:recv()
  assert.are.equal(v, got)
  assert.are.equal(ok, got_ok)
end

-- Assert that the goroutine behind res (from go_pcall) ended with the error
-- 'send on closed channel'.
local function assert_send_on_closed(res)
  local r = res:recv()
  assert.is_false(r[1])
  assert.matches("send on closed channel$", r[2])
end

describe("lugo.chan makes an unbuffered channel by default", function()
  it("has capacity 0 without an argument, with nil and with 0", function()
    assert.are.equal(0, lugo.chan():cap())
    assert.are.equal(0, lugo.chan(nil):cap())
    assert.are.equal(0, lugo.chan(0):cap())
    assert.are.equal(0, lugo.chan():len())
  end)

  it("makes a new channel on every call", function()
    local a, b = lugo.chan(), lugo.chan()
    assert.are.equal("userdata", type(a))
    assert.is_false(rawequal(a, b))
  end)
end)

describe("lugo.chan(cap) makes a buffered channel of that capacity", function()
  it("has the capacity asked for and starts empty", function()
    for _, n in ipairs({ 1, 2, 3, 1000 }) do
      local ch = lugo.chan(n)
      assert.are.equal(n, ch:cap())
      assert.are.equal(0, ch:len())
    end
  end)

  it("accepts an integral float", function()
    assert.are.equal(2, lugo.chan(2.0):cap())
  end)
end)

describe("a capacity that is not a non-negative integer below 2^31 is out of range", function()
  for _, n in ipairs({ -1, 1.5, -0.5, 2 ^ 31, 2 ^ 32, 2 ^ 53, math.huge, -math.huge, 0 / 0 }) do
    it("raises 'makechan: size out of range' for " .. tostring(n), function()
      local where
      local err = error_of(function() where = here(); lugo.chan(n) end)
      assert.are.equal(where .. "makechan: size out of range", err)
    end)
  end
end)

describe("a capacity that is not a number is a bad argument", function()
  local bad = { { "x", "string" }, { {}, "table" }, { true, "boolean" }, { print, "function" } }
  for _, b in ipairs(bad) do
    it("raises a bad-argument error for a " .. b[2], function()
      local where
      local err = error_of(function() where = here(); lugo.chan(b[1]) end)
      assert.are.equal(where .. "bad argument #1 to 'chan' (number expected, got " .. b[2] .. ")", err)
    end)
  end
end)

describe("an unbuffered send hands the value over to a receiver", function()
  it("blocks the sender until a receiver takes the value", function()
    local ch = lugo.chan()
    local sent = false
    lugo.go(function()
      ch:send("hello")
      sent = true
    end)
    settle()
    assert.is_false(sent)
    assert.are.equal(0, ch:len())
    assert_recv(ch, "hello", true)
    settle()
    assert.is_true(sent)
  end)

  it("blocks the receiver until a sender comes", function()
    local ch = lugo.chan()
    local got
    lugo.go(function()
      got = { ch:recv() }
    end)
    settle()
    assert.is_nil(got)
    ch:send(42) -- a receiver is waiting: this does not block
    settle()
    assert.are.same({ 42, true }, got)
  end)

  it("passes values back and forth between two goroutines", function()
    local ping, pong = lugo.chan(), lugo.chan()
    lugo.go(function()
      for v in ping:range() do pong:send(v * 2) end
      pong:close()
    end)
    for i = 1, 100 do
      ping:send(i)
      assert.are.same({ i * 2, true }, { pong:recv() })
    end
    ping:close()
    assert.are.same({ nil, false }, { pong:recv() })
  end)

  it("never buffers a value: a goroutine cannot receive its own send", function()
    local ch = lugo.chan()
    assert.is_false(can_send(ch, 1))
    assert.is_false(can_recv(ch))
    assert.are.equal(0, ch:len())
  end)
end)

describe("a buffered channel delivers values in FIFO order", function()
  it("takes sends without blocking while there is room", function()
    local ch = lugo.chan(5)
    for i = 1, 5 do
      ch:send(i)
      assert.are.equal(i, ch:len())
    end
    for i = 1, 5 do
      assert.are.same({ i, true }, { ch:recv() })
      assert.are.equal(5 - i, ch:len())
    end
  end)

  it("keeps the order when the buffer wraps around", function()
    local ch = lugo.chan(3)
    local nextin, nextout = 1, 1
    for _ = 1, 50 do
      while ch:len() < ch:cap() do
        ch:send(nextin)
        nextin = nextin + 1
      end
      for _ = 1, 2 do
        local v = ch:recv()
        assert.are.equal(nextout, v)
        nextout = nextout + 1
      end
    end
    while ch:len() > 0 do
      assert.are.equal(nextout, (ch:recv()))
      nextout = nextout + 1
    end
    assert.are.equal(nextin, nextout)
  end)
end)

describe("a sender blocks while the buffer is full", function()
  it("resumes when a receive makes room, and its value keeps its place", function()
    local ch = lugo.chan(2)
    local done = false
    lugo.go(function()
      ch:send(1)
      ch:send(2)
      ch:send(3) -- blocks: the buffer is full
      done = true
    end)
    settle()
    assert.is_false(done)
    assert.are.equal(2, ch:len())
    assert.are.same({ 1, true }, { ch:recv() })
    -- As in Go, the receive moves the waiting sender's value into the buffer.
    assert.are.equal(2, ch:len())
    settle()
    assert.is_true(done)
    assert.are.same({ 2, true }, { ch:recv() })
    assert.are.same({ 3, true }, { ch:recv() })
    assert.are.equal(0, ch:len())
  end)

  it("serves blocked senders in the order they blocked", function()
    local ch = lugo.chan(1)
    ch:send("first")
    for _, name in ipairs({ "a", "b", "c", "d" }) do
      lugo.go(function() ch:send(name) end)
      settle() -- each blocks before the next starts
    end
    local got = {}
    for _ = 1, 5 do got[#got + 1] = ch:recv() end
    assert.are.same({ "first", "a", "b", "c", "d" }, got)
  end)
end)

describe("a receiver blocks until a value arrives", function()
  it("waits on an empty buffered channel", function()
    local ch = lugo.chan(4)
    local got
    lugo.go(function() got = { ch:recv() } end)
    settle()
    assert.is_nil(got)
    ch:send("x")
    settle()
    assert.are.same({ "x", true }, got)
    assert.are.equal(0, ch:len())
  end)

  it("serves blocked receivers in the order they blocked", function()
    local ch = lugo.chan()
    local order = lugo.chan(4)
    for _, name in ipairs({ "a", "b", "c", "d" }) do
      lugo.go(function()
        local v = ch:recv()
        order:send(name .. v)
      end)
      settle()
    end
    for i = 1, 4 do ch:send(i) end
    local got = {}
    for _ = 1, 4 do got[#got + 1] = order:recv() end
    -- the order they report in is the scheduler's; what each got is FIFO
    table.sort(got)
    assert.are.same({ "a1", "b2", "c3", "d4" }, got)
  end)
end)

describe("nil and false are ordinary values", function()
  it("are buffered and received with ok = true", function()
    local ch = lugo.chan(4)
    ch:send(nil)
    ch:send(false)
    ch:send() -- no argument sends nil
    assert.are.equal(3, ch:len())
    assert_recv(ch, nil, true)
    assert_recv(ch, false, true)
    assert.are.equal(2, select("#", ch:recv()))
    assert.are.equal(0, ch:len())
  end)

  it("pass through an unbuffered channel to a waiting receiver", function()
    local ch = lugo.chan()
    local res = go_pcall(function()
      local a, aok = ch:recv()
      local b, bok = ch:recv()
      return a, aok, b, bok
    end)
    settle()
    ch:send(nil)
    ch:send(false)
    local r = res:recv()
    assert.is_true(r[1])
    assert.is_nil(r[2])
    assert.is_true(r[3])
    assert.is_false(r[4])
    assert.is_true(r[5])
  end)

  it("pass from a waiting sender to a receiver", function()
    local ch = lugo.chan()
    lugo.go(function() ch:send(nil); ch:send(false) end)
    assert_recv(ch, nil, true)
    assert_recv(ch, false, true)
  end)
end)

describe("values keep their identity through a channel", function()
  it("sends tables, functions, coroutines, channels and cdata by reference", function()
    local t, f = {}, function() end
    local co, other = coroutine.create(f), lugo.chan(1)
    local cd = require("ffi").new("int[1]")
    for _, cap in ipairs({ 0, 8 }) do
      local ch = lugo.chan(cap)
      lugo.go(function()
        for _, v in ipairs({ t, f, co, other, cd, print, io.stdout }) do ch:send(v) end
      end)
      for _, v in ipairs({ t, f, co, other, cd, print, io.stdout }) do
        assert.is_true(rawequal(v, (ch:recv())))
      end
    end
  end)

  it("a channel received through a channel is the same channel", function()
    local outer, inner = lugo.chan(1), lugo.chan(1)
    outer:send(inner)
    local got = outer:recv()
    got:send("via the received one")
    assert.are.equal("via the received one", inner:recv())
  end)

  it("delivers numbers, strings and booleans unchanged", function()
    local values = { 0, -0.5, 1 / 3, 2 ^ 53, -2 ^ 63, math.huge, -math.huge, "", "a\0b", ("x"):rep(10000), true }
    local ch = lugo.chan(#values + 1)
    for _, v in ipairs(values) do ch:send(v) end
    ch:send(0 / 0)
    for _, v in ipairs(values) do assert.are.equal(v, (ch:recv())) end
    local nan = ch:recv()
    assert.is_true(nan ~= nan)
  end)
end)

describe("recv after close returns the buffered values, then nil, false", function()
  it("drains a closed buffered channel", function()
    local ch = lugo.chan(3)
    ch:send(1)
    ch:send(2)
    ch:send(3)
    ch:close()
    assert.are.equal(3, ch:len())
    assert.are.equal(3, ch:cap())
    for i = 1, 3 do assert.are.same({ i, true }, { ch:recv() }) end
    for _ = 1, 3 do assert_recv(ch, nil, false) end
    assert.are.equal(2, select("#", ch:recv()))
    assert.are.equal(0, ch:len())
  end)

  it("returns nil, false at once from a closed unbuffered channel", function()
    local ch = lugo.chan()
    ch:close()
    assert_recv(ch, nil, false)
  end)
end)

describe("close wakes every blocked receiver", function()
  it("wakes each with nil, false", function()
    for _, cap in ipairs({ 0, 2 }) do
      local ch = lugo.chan(cap)
      local results = lugo.chan(5)
      for _ = 1, 5 do
        lugo.go(function() results:send(helper.pack(ch:recv())) end)
      end
      settle()
      assert.are.equal(0, results:len())
      ch:close()
      for _ = 1, 5 do
        local r = results:recv()
        assert.are.same({ n = 2, nil, false }, r)
      end
    end
  end)

  it("ends range loops", function()
    local ch = lugo.chan()
    local wg = sync.waitgroup()
    local ended = {} -- one slot per goroutine: a preempted `n = n + 1` could lose a count
    for i = 1, 3 do
      wg:add(1)
      lugo.go(function()
        for _ in ch:range() do end
        ended[i] = true
        wg:done()
      end)
    end
    settle()
    assert.are.same({}, ended)
    ch:close()
    wg:wait()
    assert.are.same({ true, true, true }, ended)
  end)
end)

describe("close makes every blocked sender raise 'send on closed channel'", function()
  it("raises in each sender blocked on an unbuffered channel", function()
    local ch = lugo.chan()
    local results = {}
    for i = 1, 5 do results[i] = go_pcall(function() ch:send(i) end) end
    settle()
    for i = 1, 5 do assert.are.equal(0, results[i]:len()) end
    ch:close()
    for i = 1, 5 do assert_send_on_closed(results[i]) end
    assert.are.same({ nil, false }, { ch:recv() })
  end)

  it("raises in senders blocked on a full buffer, whose values are not delivered", function()
    local ch = lugo.chan(2)
    ch:send("a")
    ch:send("b")
    local results = {}
    for i = 1, 3 do results[i] = go_pcall(function() ch:send(i) end) end
    settle()
    ch:close()
    for i = 1, 3 do assert_send_on_closed(results[i]) end
    assert.are.equal(2, ch:len())
    assert.are.same({ "a", true }, { ch:recv() })
    assert.are.same({ "b", true }, { ch:recv() })
    assert.are.same({ nil, false }, { ch:recv() })
  end)

  it("reports the error at the line of the send", function()
    local ch = lugo.chan()
    local where
    local res = go_pcall(function() where = here(); ch:send(1) end)
    settle()
    ch:close()
    local r = res:recv()
    assert.is_false(r[1])
    assert.are.equal(where .. "send on closed channel", r[2])
  end)
end)

describe("send on a closed channel raises 'send on closed channel'", function()
  it("raises on a closed unbuffered channel", function()
    local ch = lugo.chan()
    ch:close()
    local where
    local err = error_of(function() where = here(); ch:send(1) end)
    assert.are.equal(where .. "send on closed channel", err)
  end)

  it("raises on a closed buffered channel with room, and adds nothing", function()
    local ch = lugo.chan(3)
    ch:send(1)
    ch:close()
    local where
    local err = error_of(function() where = here(); ch:send(2) end)
    assert.are.equal(where .. "send on closed channel", err)
    assert.are.equal(1, ch:len())
    assert.are.same({ 1, true }, { ch:recv() })
    assert.are.same({ nil, false }, { ch:recv() })
  end)

  it("raises for nil and false values too", function()
    local ch = lugo.chan(1)
    ch:close()
    assert.matches("send on closed channel$", error_of(function() ch:send(nil) end))
    assert.matches("send on closed channel$", error_of(function() ch:send(false) end))
  end)

  it("ends the program with a panic when it escapes a goroutine", function()
    local r = helper.run([[
      local lugo = require "lugo"
      local ch = lugo.chan()
      ch:close()
      lugo.go(function() ch:send(1) end)
      require("lugo.time").sleep(0.5)
      print("not reached")
    ]])
    assert.are.equal(2, r.status)
    assert.are.equal("", r.stdout)
    assert.matches("^panic: [^\n]*send on closed channel\n\ngoroutine %d+ %[running%]:\n", r.stderr)
  end)
end)

describe("close of a closed channel raises 'close of closed channel'", function()
  it("raises on the second close, at the caller's line", function()
    for _, cap in ipairs({ 0, 2 }) do
      local ch = lugo.chan(cap)
      ch:close()
      local where
      local err = error_of(function() where = here(); ch:close() end)
      assert.are.equal(where .. "close of closed channel", err)
    end
  end)

  it("leaves the channel closed and its buffer intact", function()
    local ch = lugo.chan(2)
    ch:send("kept")
    ch:close()
    error_of(ch.close, ch)
    assert.are.equal(1, ch:len())
    assert.are.same({ "kept", true }, { ch:recv() })
    assert.are.same({ nil, false }, { ch:recv() })
    assert.matches("close of closed channel$", error_of(ch.close, ch))
  end)
end)

describe("len and cap report the buffered values and the buffer's size", function()
  it("follow sends and receives", function()
    local ch = lugo.chan(3)
    assert.are.same({ 0, 3 }, { ch:len(), ch:cap() })
    ch:send("a")
    assert.are.same({ 1, 3 }, { ch:len(), ch:cap() })
    ch:send("b")
    ch:send("c")
    assert.are.same({ 3, 3 }, { ch:len(), ch:cap() })
    ch:recv()
    assert.are.same({ 2, 3 }, { ch:len(), ch:cap() })
    ch:close()
    assert.are.same({ 2, 3 }, { ch:len(), ch:cap() })
    ch:recv()
    ch:recv()
    assert.are.same({ 0, 3 }, { ch:len(), ch:cap() })
  end)

  it("are 0 on an unbuffered channel, even with a sender waiting", function()
    local ch = lugo.chan()
    lugo.go(function() ch:send(1) end)
    settle()
    assert.are.same({ 0, 0 }, { ch:len(), ch:cap() })
    assert.are.equal(1, ch:recv())
  end)

  it("return plain numbers", function()
    local ch = lugo.chan(7)
    ch:send(true)
    assert.are.equal("number", type(ch:len()))
    assert.are.equal("number", type(ch:cap()))
    assert.are.equal(1, ch:len() + 0)
  end)
end)

describe("range receives until the channel is closed and drained", function()
  it("receives from a producer until it closes the channel", function()
    local ch = lugo.chan()
    lugo.go(function()
      for i = 1, 10 do ch:send(i) end
      ch:close()
    end)
    local got = {}
    for v in ch:range() do got[#got + 1] = v end
    assert.are.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, got)
  end)

  it("yields the buffered values of a closed channel, then ends", function()
    local ch = lugo.chan(3)
    ch:send("x")
    ch:send(false)
    ch:send("z")
    ch:close()
    local got = {}
    for v in ch:range() do got[#got + 1] = v end
    assert.are.same({ "x", false, "z" }, got)
    assert.are.same({ nil, false }, { ch:recv() })
  end)

  it("ends at a nil value and leaves the rest in the channel", function()
    local ch = lugo.chan(4)
    ch:send(1)
    ch:send(nil)
    ch:send(2)
    local got = {}
    for v in ch:range() do got[#got + 1] = v end
    assert.are.same({ 1 }, got)
    assert.are.equal(1, ch:len())
    assert.are.same({ 2, true }, { ch:recv() })
  end)

  it("leaves the rest in the channel when the loop breaks", function()
    local ch = lugo.chan(5)
    for i = 1, 5 do ch:send(i) end
    for v in ch:range() do
      if v == 2 then break end
    end
    assert.are.equal(3, ch:len())
    assert.are.equal(3, ch:recv())
  end)

  it("blocks between values", function()
    local ch = lugo.chan()
    local got = {}
    local finished = false
    lugo.go(function()
      for v in ch:range() do got[#got + 1] = v end
      finished = true
    end)
    settle()
    assert.are.same({}, got)
    ch:send("a")
    settle()
    assert.are.same({ "a" }, got)
    assert.is_false(finished)
    ch:send("b")
    ch:close()
    settle()
    assert.are.same({ "a", "b" }, got)
    assert.is_true(finished)
  end)
end)

describe("100,000 values pass between two goroutines in order", function()
  local N = 100000
  for _, cap in ipairs({ 0, 1, 128 }) do
    it("none lost or doubled through a channel of capacity " .. cap, function()
      local ch = lugo.chan(cap)
      local res = lugo.chan(1)
      lugo.go(function()
        local expect, bad = 1, 0
        for v in ch:range() do
          if v ~= expect then bad = bad + 1 end
          expect = v + 1
        end
        res:send({ count = expect - 1, bad = bad })
      end)
      lugo.go(function()
        for i = 1, N do ch:send(i) end
        ch:close()
      end)
      local r = res:recv()
      assert.are.equal(0, r.bad)
      assert.are.equal(N, r.count)
    end)
  end
end)

describe("many senders and receivers on one channel", function()
  for _, cap in ipairs({ 0, 16 }) do
    it("receive every value exactly once (capacity " .. cap .. ")", function()
      local senders, receivers, per = 8, 8, 2000
      local ch = lugo.chan(cap)
      local swg, rwg = sync.waitgroup(), sync.waitgroup()
      local tallies = {}
      for s = 1, senders do
        swg:add(1)
        lugo.go(function()
          for i = 1, per do
            ch:send(s * 1000000 + i)
            if i % 97 == 0 then runtime.gosched() end
          end
          swg:done()
        end)
      end
      for r = 1, receivers do
        rwg:add(1)
        -- Goroutines can be preempted between any two instructions of their own
        -- code: each keeps its own tally, merged once all have finished.
        lugo.go(function()
          local mine = {}
          for v in ch:range() do mine[#mine + 1] = v end
          tallies[r] = mine
          rwg:done()
        end)
      end
      lugo.go(function()
        swg:wait()
        ch:close()
      end)
      rwg:wait()
      local seen, received = {}, 0
      for r = 1, receivers do
        for _, v in ipairs(tallies[r]) do
          seen[v] = (seen[v] or 0) + 1
          received = received + 1
        end
      end
      assert.are.equal(senders * per, received)
      local distinct, twice = 0, 0
      for s = 1, senders do
        for i = 1, per do
          local c = seen[s * 1000000 + i]
          if c == 1 then distinct = distinct + 1 elseif c then twice = twice + 1 end
        end
      end
      assert.are.equal(senders * per, distinct)
      assert.are.equal(0, twice)
    end)
  end
end)

describe("channel methods called on a non-channel raise a bad-argument error", function()
  local ch = lugo.chan(1)
  local methods = { "send", "recv", "close", "len", "cap", "range" }
  local bad = {
    { {}, "table" }, { nil, "nil" }, { 1, "number" }, { "s", "string" },
    { true, "boolean" }, { print, "function" }, { case.default, "table" },
  }
  for _, name in ipairs(methods) do
    it("checks argument #1 of " .. name, function()
      for _, b in ipairs(bad) do
        local where
        local err = error_of(function() where = here(); ch[name](b[1], 1) end)
        assert.are.equal(where .. "bad argument #1 to '" .. name .. "' (channel expected, got " .. b[2] .. ")", err)
      end
    end)
  end

  it("checks a method borrowed by a table and called with ':'", function()
    local t = { send = ch.send }
    local where
    local err = error_of(function() where = here(); t:send(1) end)
    assert.are.equal(where .. "bad argument #1 to 'send' (channel expected, got table)", err)
  end)

  it("leaves the channel untouched", function()
    local c = lugo.chan(1)
    error_of(c.send, {}, "v")
    error_of(c.close, {})
    assert.are.equal(0, c:len())
    c:send("ok")
    assert.are.equal("ok", c:recv())
  end)
end)

describe("a receive inside a user coroutine parks the goroutine", function()
  it("resumes the coroutine where it blocked", function()
    local ch = lugo.chan()
    local co = coroutine.wrap(function()
      local v = ch:recv() -- blocks the main goroutine, not the coroutine
      coroutine.yield("got " .. v)
      ch:send("back")
      return "end"
    end)
    lugo.go(function()
      time.sleep(0.001)
      ch:send("value")
      assert(ch:recv() == "back")
    end)
    assert.are.equal("got value", co())
    assert.are.equal("end", co())
  end)
end)

describe("a program blocked on a channel with nothing to wake it deadlocks", function()
  it("reports a receive with Go's deadlock message and status 2", function()
    local r = helper.run([[
      local ch = require("lugo").chan()
      ch:recv()
      print("not reached")
    ]])
    helper.assert_deadlock(r)
    assert.matches("goroutine 1 [chan receive]:", r.stderr, 1, true)
  end)

  it("reports a send on an unbuffered channel and a send on a full buffer", function()
    for _, cap in ipairs({ 0, 1 }) do
      local r = helper.run(string.format([[
        local ch = require("lugo").chan(%d)
        for i = 1, 2 do ch:send(i) end
        print("not reached")
      ]], cap))
      helper.assert_deadlock(r)
      assert.matches("goroutine 1 [chan send]:", r.stderr, 1, true)
    end
  end)
end)

describe("blocking where Lua cannot yield raises 'cannot block here'", function()
  it("raises for a receive inside a table.sort comparator", function()
    local ch = lugo.chan()
    local err = error_of(function()
      table.sort({ 3, 1, 2 }, function(a, b) ch:recv(); return a < b end)
    end)
    assert.matches("cannot block here", err, 1, true)
    -- no receiver was left waiting on the channel
    assert.is_false(can_send(ch, "lost?"))
  end)

  it("raises for a send inside a string.gsub callback", function()
    local ch = lugo.chan()
    local err = error_of(function()
      string.gsub("abc", "%w", function(c) ch:send(c) end)
    end)
    assert.matches("cannot block here", err, 1, true)
    -- no sender was left waiting on the channel
    assert.is_false(can_recv(ch))
  end)

  it("raises for a send on a full buffer inside a gsub callback", function()
    local ch = lugo.chan(1)
    local err = error_of(function()
      string.gsub("abc", "%w", function(c) ch:send(c) end)
    end)
    assert.matches("cannot block here", err, 1, true)
    assert.are.equal(1, ch:len())
    assert.are.same({ "a", true }, { ch:recv() })
    assert.is_false(can_recv(ch))
  end)

  it("raises for a receive on a timer's channel, which still fires after", function()
    local c = time.after(0.02)
    local err = error_of(function()
      table.sort({ 2, 1 }, function(a, b) c:recv(); return a < b end)
    end)
    assert.matches("cannot block here", err, 1, true)
    local v, ok = c:recv()
    assert.are.equal("number", type(v))
    assert.is_true(ok)
  end)

  it("raises for a send of a table, and the table is not delivered later", function()
    local ch = lugo.chan()
    local err = error_of(function()
      table.sort({ 2, 1 }, function(a, b) ch:send({ "lost?" }); return a < b end)
    end)
    assert.matches("cannot block here", err, 1, true)
    assert.is_false(can_recv(ch))
    lugo.go(function() ch:send({ "later" }) end)
    assert.are.same({ "later" }, ch:recv())
  end)

  it("raises for an __lt metamethod called by table.sort", function()
    local ch = lugo.chan()
    local mt = { __lt = function() ch:recv(); return true end }
    local err = error_of(function()
      table.sort({ setmetatable({}, mt), setmetatable({}, mt) })
    end)
    assert.matches("cannot block here", err, 1, true)
  end)

  it("raises for a chunk being required", function()
    local ch = lugo.chan()
    package.preload["chan_spec_blocker"] = function() ch:recv() end
    local err = error_of(require, "chan_spec_blocker")
    package.preload["chan_spec_blocker"] = nil
    assert.matches("cannot block here", err, 1, true)
  end)

  it("raises for a coroutine resumed from a comparator", function()
    local ch = lugo.chan()
    local err = error_of(function()
      table.sort({ 2, 1 }, function(a, b)
        local ok, e = coroutine.resume(coroutine.create(function() ch:recv() end))
        if not ok then error(e, 0) end
        return a < b
      end)
    end)
    assert.matches("cannot block here", err, 1, true)
    assert.is_false(can_send(ch, 1))
  end)

  it("raises inside a goroutine, which can catch it and go on", function()
    local ch, res = lugo.chan(), lugo.chan()
    lugo.go(function()
      local ok, err = pcall(table.sort, { 2, 1 }, function(a, b) ch:recv(); return a < b end)
      res:send(err)
      res:send(ch:recv()) -- can still block normally afterwards
    end)
    assert.matches("cannot block here", res:recv(), 1, true)
    ch:send("later")
    assert.are.equal("later", res:recv())
  end)

  it("lets operations that do not block proceed", function()
    local ch = lugo.chan(10)
    for i = 1, 3 do ch:send(i) end
    local seen = {}
    table.sort({ 5, 3, 1, 4, 2, 6, 8, 7 }, function(a, b)
      if ch:len() > 0 then seen[#seen + 1] = ch:recv() end
      return a < b
    end)
    assert.are.same({ 1, 2, 3 }, seen)
    string.gsub("xyz", "%w", function(c) ch:send(c) end)
    assert.are.equal(3, ch:len())
    ch:close()
    local drained = {}
    string.gsub("abcde", "%w", function()
      local v, ok = ch:recv() -- a closed channel never blocks
      drained[#drained + 1] = ok and v or "closed"
    end)
    assert.are.same({ "x", "y", "z", "closed", "closed" }, drained)
  end)

  it("does not end the process", function()
    local r = helper.run([[
      local lugo = require "lugo"
      local ch = lugo.chan()
      for i = 1, 100 do
        local ok, err = pcall(table.sort, { 2, 1 }, function(a, b) ch:recv(); return a < b end)
        assert(not ok and err:find("cannot block here", 1, true))
        ok, err = pcall(string.gsub, "ab", ".", function(c) ch:send(c) end)
        assert(not ok and err:find("cannot block here", 1, true))
      end
      lugo.go(function() ch:send("still works") end)
      print((ch:recv()))
    ]])
    helper.assert_clean_run(r, "still works\n")
  end)
end)
