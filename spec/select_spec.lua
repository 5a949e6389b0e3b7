-- lugo.select and lugo.case, as docs/api.md describes them. Each test body
-- runs in the main goroutine; with one processor, a goroutine started with
-- lugo.go runs when the test body blocks or yields.
local lugo = require "lugo"
local time = require "lugo.time"
local helper = require "helper"

local case, select_ = lugo.case, lugo.select
local settle, error_of, here, pack = helper.settle, helper.error_of, helper.here, helper.pack
local go_pcall, can_recv, can_send = helper.go_pcall, helper.can_recv, helper.can_send

-- n channels, closed: their receive cases are always ready.
local function closed_chans(n)
  local t = {}
  for i = 1, n do
    t[i] = lugo.chan()
    t[i]:close()
  end
  return t
end

-- n new channels of capacity cap, and a receive case on each.
local function recv_cases(n, cap)
  local chans, cases = {}, {}
  for i = 1, n do
    chans[i] = lugo.chan(cap)
    cases[i] = case.recv(chans[i])
  end
  return chans, cases
end

describe("a ready receive case is chosen with its value and ok", function()
  it("returns the position, the value and true", function()
    local ch = lugo.chan(1)
    ch:send("v")
    local r = pack(select_(case.recv(ch)))
    assert.are.same({ n = 3, 1, "v", true }, r)
    ch:send("w")
    r = pack(select_(case.recv(nil), case.recv(lugo.chan()), case.recv(ch)))
    assert.are.same({ n = 3, 3, "w", true }, r)
    assert.are.equal(0, ch:len())
  end)

  it("returns nil, true and false, true for nil and false values", function()
    local ch = lugo.chan(2)
    ch:send(nil)
    ch:send(false)
    assert.are.same({ n = 3, 1, nil, true }, pack(select_(case.recv(ch), case.default)))
    assert.are.same({ n = 3, 1, false, true }, pack(select_(case.recv(ch), case.default)))
  end)

  it("takes the value of a waiting sender on an unbuffered channel", function()
    local ch = lugo.chan()
    local res = go_pcall(function() ch:send("from sender"); return "sender done" end)
    settle()
    assert.are.same({ n = 3, 2, "from sender", true }, pack(select_(case.default, case.recv(ch))))
    assert.are.same({ n = 2, true, "sender done" }, res:recv())
  end)

  it("returns the buffered values of a closed channel, then nil, false", function()
    local ch = lugo.chan(2)
    ch:send(1)
    ch:send(2)
    ch:close()
    assert.are.same({ n = 3, 1, 1, true }, pack(select_(case.recv(ch), case.default)))
    assert.are.same({ n = 3, 1, 2, true }, pack(select_(case.recv(ch), case.default)))
    assert.are.same({ n = 3, 1, nil, false }, pack(select_(case.recv(ch), case.default)))
    assert.are.same({ n = 3, 1, nil, false }, pack(select_(case.recv(ch))))
  end)

  it("moves a waiting sender's value into the buffer it frees", function()
    local ch = lugo.chan(1)
    ch:send("a")
    local res = go_pcall(function() ch:send("b") end)
    settle()
    assert.are.same({ n = 3, 1, "a", true }, pack(select_(case.recv(ch))))
    assert.are.equal(1, ch:len())
    assert.are.same({ n = 3, 1, "b", true }, pack(select_(case.recv(ch))))
    assert.is_true(res:recv()[1])
  end)
end)

describe("a ready send case is chosen", function()
  it("sends into a buffer with room and returns only the position", function()
    local ch = lugo.chan(2)
    assert.are.same({ n = 1, 1 }, pack(select_(case.send(ch, 42))))
    assert.are.same({ n = 1, 2 }, pack(select_(case.send(nil, 0), case.send(ch, 43), case.default)))
    assert.are.equal(2, ch:len())
    assert.are.equal(42, ch:recv())
    assert.are.equal(43, ch:recv())
  end)

  it("hands the value to a waiting receiver", function()
    local ch = lugo.chan()
    local res = go_pcall(function() return ch:recv() end)
    settle()
    assert.are.equal(1, (select_(case.send(ch, "hi"), case.default)))
    assert.are.same({ n = 3, true, "hi", true }, res:recv())
  end)

  it("sends nil and false", function()
    local ch = lugo.chan(2)
    assert.are.equal(1, (select_(case.send(ch, nil))))
    assert.are.equal(1, (select_(case.send(ch, false))))
    assert.are.same({ nil, true }, { ch:recv() })
    assert.are.same({ false, true }, { ch:recv() })
  end)

  it("sends tables by reference", function()
    local ch, t = lugo.chan(1), {}
    select_(case.send(ch, t))
    assert.is_true(rawequal(t, (ch:recv())))
  end)

  it("can be used again, sending the same value", function()
    local ch = lugo.chan(2)
    local c = case.send(ch, 7)
    select_(c)
    select_(c)
    assert.are.same({ 7, 7 }, { (ch:recv()), (ch:recv()) })
  end)
end)

describe("default is chosen when no other case is ready", function()
  it("returns the default's position and nothing else", function()
    local empty, full, unbuf = lugo.chan(1), lugo.chan(1), lugo.chan()
    full:send("x")
    assert.are.same({ n = 1, 2 }, pack(select_(case.recv(empty), case.default)))
    assert.are.same({ n = 1, 1 }, pack(select_(case.default, case.recv(empty))))
    assert.are.same({ n = 1, 3 }, pack(select_(case.send(full, 1), case.recv(unbuf), case.default)))
    assert.are.same({ n = 1, 2 }, pack(select_(case.send(unbuf, 1), case.default, case.recv(empty))))
    assert.are.equal(1, full:len())
    assert.are.equal("x", full:recv())
  end)

  it("is chosen when it is the only case", function()
    assert.are.same({ n = 1, 1 }, pack(select_(case.default)))
  end)

  it("leaves no waiter behind on the other cases' channels", function()
    local a, b = lugo.chan(), lugo.chan()
    assert.are.equal(3, (select_(case.recv(a), case.send(b, "stale"), case.default)))
    assert.is_false(can_send(a, "lost?"))
    assert.is_false(can_recv(b))
  end)
end)

describe("default is not chosen when a case is ready", function()
  it("never picks the default over a ready case", function()
    local ch = lugo.chan(1)
    local defaults = 0
    for i = 1, 1000 do
      ch:send(i)
      local j, v = select_(case.default, case.recv(ch))
      if j == 1 then defaults = defaults + 1 else assert(v == i) end
      if ch:len() > 0 then ch:recv() end
    end
    assert.are.equal(0, defaults)
    for _ = 1, 1000 do
      if select_(case.send(ch, 1), case.default) ~= 1 then defaults = defaults + 1 end
      ch:recv()
    end
    assert.are.equal(0, defaults)
  end)
end)

describe("the choice among ready cases is random and uniform", function()
  it("chooses each of 2 ready cases 40-60% of the time over 10,000 selects", function()
    local c = closed_chans(2)
    local a, b = case.recv(c[1]), case.recv(c[2])
    local count, repeats, last = { 0, 0 }, 0, nil
    for _ = 1, 10000 do
      local i = select_(a, b)
      count[i] = count[i] + 1
      if i == last then repeats = repeats + 1 end
      last = i
    end
    assert.is_true(count[1] >= 4000 and count[1] <= 6000, "case 1 chosen " .. count[1] .. " times")
    assert.is_true(count[2] >= 4000 and count[2] <= 6000, "case 2 chosen " .. count[2] .. " times")
    -- not a fixed alternation either: the same case comes twice in a row about half the time
    assert.is_true(repeats >= 4000 and repeats <= 6000, repeats .. " repeats")
  end)

  it("is uniform among 3 ready cases and a default, and among 4 ready cases", function()
    local c = closed_chans(3)
    local count = { 0, 0, 0, 0 }
    for _ = 1, 12000 do
      local i = select_(case.recv(c[1]), case.recv(c[2]), case.recv(c[3]), case.default)
      count[i] = count[i] + 1
    end
    assert.are.equal(0, count[4])
    for i = 1, 3 do
      assert.is_true(count[i] >= 3400 and count[i] <= 4600, "case " .. i .. " chosen " .. count[i] .. " times")
    end
    c = closed_chans(4)
    count = { 0, 0, 0, 0 }
    for _ = 1, 12000 do
      local i = select_(case.recv(c[1]), case.recv(c[2]), case.recv(c[3]), case.recv(c[4]))
      count[i] = count[i] + 1
    end
    for i = 1, 4 do
      assert.is_true(count[i] >= 2500 and count[i] <= 3500, "case " .. i .. " chosen " .. count[i] .. " times")
    end
  end)

  it("is uniform between a ready send and a ready receive", function()
    local inbox, outbox = lugo.chan(1), lugo.chan(1)
    local count = { 0, 0 }
    for _ = 1, 10000 do
      if inbox:len() == 0 then inbox:send("in") end
      if outbox:len() > 0 then outbox:recv() end
      local i, v = select_(case.send(outbox, "out"), case.recv(inbox))
      count[i] = count[i] + 1
      if i == 2 then assert(v == "in") end
    end
    assert.is_true(count[1] >= 4000 and count[1] <= 6000, "send chosen " .. count[1] .. " times")
  end)

  it("is uniform among 8 ready cases of 11 (more than 4 cases), never a nil case or the default", function()
    local c = closed_chans(8)
    local cases = {
      case.recv(c[1]), case.recv(nil), case.recv(c[2]), case.recv(c[3]), case.recv(c[4]),
      case.send(nil, 1), case.recv(c[5]), case.recv(c[6]), case.default, case.recv(c[7]), case.recv(c[8]),
    }
    local count = {}
    for i = 1, #cases do count[i] = 0 end
    for _ = 1, 16000 do
      local i = select_(unpack(cases))
      count[i] = count[i] + 1
    end
    assert.are.same({ 0, 0, 0 }, { count[2], count[6], count[9] })
    for _, i in ipairs({ 1, 3, 4, 5, 7, 8, 10, 11 }) do
      assert.is_true(count[i] >= 1600 and count[i] <= 2400, "case " .. i .. " chosen " .. count[i] .. " times")
    end
  end)
end)

describe("a case on a nil channel never fires", function()
  it("leaves the default to be chosen", function()
    assert.are.same({ n = 1, 2 }, pack(select_(case.recv(nil), case.default)))
    assert.are.same({ n = 1, 3 }, pack(select_(case.send(nil, 1), case.recv(nil), case.default)))
  end)

  it("is never chosen over a ready case", function()
    local c = closed_chans(1)[1]
    for _ = 1, 1000 do
      assert.are.equal(2, (select_(case.recv(nil), case.recv(c), case.send(nil, "x"))))
    end
  end)

  it("blocks a select whose only cases are on nil channels", function()
    local res = go_pcall(function() return select_(case.recv(nil), case.send(nil, 1)) end)
    settle()
    assert.are.equal(0, res:len())
    local r = helper.run([[
      local lugo = require "lugo"
      lugo.select(lugo.case.recv(nil), lugo.case.send(nil, 1))
      print("not reached")
    ]])
    helper.assert_deadlock(r)
  end)
end)

describe("select blocks until a case becomes ready", function()
  it("waits for a goroutine that sends later", function()
    local a, b = lugo.chan(), lugo.chan()
    lugo.go(function()
      time.sleep(0.005)
      b:send("late")
    end)
    assert.are.same({ n = 3, 2, "late", true }, pack(select_(case.recv(a), case.recv(b))))
  end)

  it("waits for a receiver to take a send case's value", function()
    local a, b = lugo.chan(), lugo.chan()
    local res = go_pcall(function() return select_(case.send(a, "to a"), case.send(b, "to b")) end)
    settle()
    assert.are.equal(0, res:len())
    assert.are.equal("to b", b:recv())
    assert.are.same({ n = 2, true, 2 }, res:recv())
  end)

  it("receives nil, true from a late sender of nil", function()
    local ch = lugo.chan()
    lugo.go(function() time.sleep(0.002); ch:send(nil) end)
    assert.are.same({ n = 3, 1, nil, true }, pack(select_(case.recv(ch), case.recv(nil))))
  end)

  it("takes its value from the first sender into a buffered channel", function()
    local ch = lugo.chan(4)
    local res = go_pcall(function() return select_(case.recv(ch)) end)
    settle()
    ch:send("x")
    ch:send("y")
    assert.are.same({ n = 4, true, 1, "x", true }, res:recv())
    assert.are.equal(1, ch:len())
    assert.are.equal("y", ch:recv())
  end)

  it("leaves no waiter on the other channels once woken", function()
    local a, b, c = lugo.chan(), lugo.chan(), lugo.chan()
    local res = go_pcall(function() return select_(case.recv(a), case.recv(b), case.send(c, "stale")) end)
    settle()
    a:send("woke")
    assert.are.same({ n = 4, true, 1, "woke", true }, res:recv())
    assert.is_false(can_send(b, "lost?"))
    assert.is_false(can_recv(c))
  end)

  it("is woken once even when all its channels become ready together", function()
    local a, b = lugo.chan(), lugo.chan()
    local res = go_pcall(function() return select_(case.recv(a), case.recv(b)) end)
    settle()
    local sa = go_pcall(function() a:send("A") end)
    local sb = go_pcall(function() b:send("B") end)
    settle()
    local r = res:recv()
    assert.is_true(r[1])
    -- exactly one sender completed; the other is still waiting
    local done = sa:len() + sb:len()
    assert.are.equal(1, done)
    if r[2] == 1 then
      assert.are.equal("A", r[3])
      assert.are.equal("B", b:recv())
    else
      assert.are.equal("B", r[3])
      assert.are.equal("A", a:recv())
    end
  end)
end)

describe("closing a channel wakes a select blocked on it", function()
  it("fires a blocked receive case with nil, false", function()
    local a, b = lugo.chan(), lugo.chan()
    local res = go_pcall(function() return select_(case.recv(a), case.recv(b)) end)
    settle()
    b:close()
    assert.are.same({ n = 4, true, 2, nil, false }, res:recv())
    assert.is_false(can_send(a, "lost?"))
  end)

  it("wakes every select blocked on it", function()
    local ch, other = lugo.chan(), lugo.chan()
    local res = {}
    for i = 1, 5 do res[i] = go_pcall(function() return select_(case.recv(other), case.recv(ch)) end) end
    settle()
    ch:close()
    for i = 1, 5 do assert.are.same({ n = 4, true, 2, nil, false }, res[i]:recv()) end
  end)

  it("makes a blocked send case raise 'send on closed channel'", function()
    local a, b = lugo.chan(), lugo.chan()
    local where
    local res = go_pcall(function()
      where = here(); local i = select_(case.recv(a), case.send(b, 1))
      return i -- not a tail call: the caller's frame stays for the error position
    end)
    settle()
    b:close()
    local r = res:recv()
    assert.is_false(r[1])
    assert.are.equal(where .. "send on closed channel", r[2])
    assert.is_false(can_send(a, "lost?"))
  end)
end)

describe("a send case on a closed channel raises 'send on closed channel'", function()
  it("raises when chosen, at the caller's line", function()
    local ch = lugo.chan(1)
    ch:close()
    local where
    local err = error_of(function() where = here(); select_(case.send(ch, 1)) end)
    assert.are.equal(where .. "send on closed channel", err)
    assert.are.equal(0, ch:len())
  end)

  it("is ready, so a default does not prevent it", function()
    local ch = lugo.chan()
    ch:close()
    local err = error_of(function() select_(case.send(ch, 1), case.default) end)
    assert.matches("send on closed channel$", err)
    err = error_of(function() select_(case.recv(nil), case.default, case.recv(lugo.chan()), case.send(ch, 1)) end)
    assert.matches("send on closed channel$", err)
  end)

  it("raises with more than 4 cases", function()
    local ch = lugo.chan(1)
    ch:close()
    local e1, e2, e3, e4 = lugo.chan(), lugo.chan(), lugo.chan(), lugo.chan()
    local where
    local err = error_of(function()
      where = here(); select_(case.recv(e1), case.recv(e2), case.recv(e3), case.recv(e4), case.send(ch, 1), case.default)
    end)
    assert.are.equal(where .. "send on closed channel", err)
  end)

  it("raises in a select blocked with more than 4 cases when the channel is closed", function()
    local chans = {}
    for i = 1, 6 do chans[i] = lugo.chan() end
    local cases = {}
    for i = 1, 5 do cases[i] = case.recv(chans[i]) end
    cases[6] = case.send(chans[6], "x")
    local res = go_pcall(function() return select_(unpack(cases)) end)
    settle()
    chans[6]:close()
    local r = res:recv()
    assert.is_false(r[1])
    assert.matches("send on closed channel$", r[2])
  end)
end)

describe("the same channel in several cases fires only one case per select", function()
  it("takes one buffered value per select, in order", function()
    local ch = lugo.chan(100)
    for i = 1, 100 do ch:send(i) end
    local got = {}
    for _ = 1, 100 do
      local _, v, ok = select_(case.recv(ch), case.recv(ch), case.recv(ch))
      assert(ok)
      got[#got + 1] = v
      assert.are.equal(100 - #got, ch:len())
    end
    for i = 1, 100 do assert.are.equal(i, got[i]) end
    assert.is_false(can_recv(ch))
  end)

  it("sends one value per select", function()
    local ch = lugo.chan(10)
    for _ = 1, 5 do select_(case.send(ch, "a"), case.send(ch, "b")) end
    assert.are.equal(5, ch:len())
  end)

  it("receives one value when blocked, leaving the next sender waiting", function()
    local ch = lugo.chan()
    local res = go_pcall(function() return select_(case.recv(ch), case.recv(ch), case.recv(ch)) end)
    settle()
    local s1 = go_pcall(function() ch:send(1) end)
    settle()
    local s2 = go_pcall(function() ch:send(2) end)
    settle()
    local r = res:recv()
    assert.is_true(r[1])
    assert.are.same({ 1, true }, { r[3], r[4] })
    assert.are.equal(1, s1:len())
    assert.are.equal(0, s2:len())
    assert.are.same({ 2, true }, { ch:recv() })
    assert.is_false(can_recv(ch))
  end)

  it("sends one value when blocked with several send cases on one channel", function()
    local ch = lugo.chan()
    local res = go_pcall(function() return select_(case.send(ch, "x"), case.send(ch, "y"), case.send(ch, "z")) end)
    settle()
    local v = ch:recv()
    local r = res:recv()
    assert.is_true(r[1])
    assert.are.equal(({ "x", "y", "z" })[r[2]], v)
    assert.is_false(can_recv(ch))
  end)

  it("does the same with more than 4 cases", function()
    local ch = lugo.chan()
    local cases = {}
    for i = 1, 7 do cases[i] = case.recv(ch) end
    local res = go_pcall(function() return select_(unpack(cases)) end)
    settle()
    local s1 = go_pcall(function() ch:send("one") end)
    settle()
    local s2 = go_pcall(function() ch:send("two") end)
    settle()
    local r = res:recv()
    assert.are.same({ "one", true }, { r[3], r[4] })
    assert.are.equal(1, s1:len())
    assert.are.equal(0, s2:len())
    assert.are.equal("two", ch:recv())
  end)

  it("never pairs a select's send case with its own receive case", function()
    local ch = lugo.chan()
    assert.are.equal(3, (select_(case.send(ch, 1), case.recv(ch), case.default)))
    -- blocked on both ends: the other side's goroutine completes one of them
    local res = go_pcall(function() return select_(case.send(ch, "mine"), case.recv(ch)) end)
    settle()
    assert.are.equal("mine", ch:recv())
    assert.are.same({ n = 2, true, 1 }, res:recv())
    res = go_pcall(function() return select_(case.send(ch, "mine"), case.recv(ch)) end)
    settle()
    ch:send("yours")
    assert.are.same({ n = 4, true, 2, "yours", true }, res:recv())
    assert.is_false(can_recv(ch))
    assert.is_false(can_send(ch, 0))
  end)

  it("moves every value exactly once between selecting senders and receivers", function()
    local ch = lugo.chan(3)
    local N, senders, receivers = 3000, 4, 4
    local tallies = {}
    local done = lugo.chan(receivers)
    local sent = lugo.chan(senders)
    for s = 1, senders do
      lugo.go(function()
        for i = 1, N do
          local v = s * 100000 + i
          select_(case.send(ch, v), case.send(ch, v), case.send(nil, v))
        end
        sent:send(true)
      end)
    end
    -- Goroutines can be preempted between any two instructions of their own
    -- code: each keeps its own tally, merged once all have finished.
    for r = 1, receivers do
      lugo.go(function()
        local mine = {}
        while true do
          local _, v, ok = select_(case.recv(ch), case.recv(nil), case.recv(ch))
          if not ok then break end
          mine[#mine + 1] = v
        end
        tallies[r] = mine
        done:send(true)
      end)
    end
    for _ = 1, senders do sent:recv() end
    ch:close()
    for _ = 1, receivers do done:recv() end
    local seen, count = {}, 0
    for r = 1, receivers do
      for _, v in ipairs(tallies[r]) do
        seen[v] = (seen[v] or 0) + 1
        count = count + 1
      end
    end
    assert.are.equal(senders * N, count)
    local once = 0
    for s = 1, senders do
      for i = 1, N do
        if seen[s * 100000 + i] == 1 then once = once + 1 end
      end
    end
    assert.are.equal(senders * N, once)
  end)
end)

describe("select with more than 4 cases", function()
  it("chooses the one ready case at any position", function()
    for n = 5, 9 do
      for pos = 1, n do
        local chans, cases = recv_cases(n, 1)
        chans[pos]:send(pos * 10)
        assert.are.same({ n = 3, pos, pos * 10, true }, pack(select_(unpack(cases))))
      end
    end
  end)

  it("performs a ready send case at position 7", function()
    local chans, cases = {}, {}
    for i = 1, 8 do
      chans[i] = lugo.chan(i == 7 and 1 or 0)
      cases[i] = case.send(chans[i], "v" .. i)
    end
    assert.are.same({ n = 1, 7 }, pack(select_(unpack(cases))))
    assert.are.equal("v7", chans[7]:recv())
  end)

  it("chooses a default at position 6 when nothing is ready", function()
    local cases = {}
    for i = 1, 8 do cases[i] = case.recv(lugo.chan()) end
    cases[6] = case.default
    assert.are.same({ n = 1, 6 }, pack(select_(unpack(cases))))
  end)

  it("blocks until one of 64 channels receives a value", function()
    local chans, cases = recv_cases(64)
    for _, pos in ipairs({ 1, 5, 33, 64 }) do
      lugo.go(function()
        time.sleep(0.001)
        chans[pos]:send(pos)
      end)
      assert.are.same({ n = 3, pos, pos, true }, pack(select_(unpack(cases))))
    end
    for i = 1, 64 do assert.is_false(can_send(chans[i], "lost?")) end
  end)

  it("fires a blocked receive case with nil, false on close", function()
    local chans, cases = recv_cases(6)
    local res = go_pcall(function() return select_(unpack(cases)) end)
    settle()
    chans[5]:close()
    assert.are.same({ n = 4, true, 5, nil, false }, res:recv())
  end)
end)

describe("select: multiple defaults", function()
  it("raises with up to 4 cases", function()
    assert.matches("select: multiple defaults$", error_of(select_, case.default, case.default))
    assert.matches("select: multiple defaults$",
      error_of(select_, case.recv(nil), case.default, case.recv(nil), case.default))
  end)

  it("raises with more than 4 cases", function()
    assert.matches("select: multiple defaults$",
      error_of(select_, case.default, case.recv(nil), case.recv(nil), case.recv(nil), case.default))
    assert.matches("select: multiple defaults$",
      error_of(select_, case.recv(nil), case.recv(nil), case.recv(nil), case.recv(nil), case.recv(nil),
        case.default, case.default, case.default))
  end)

  it("reports the error at the caller's line, with up to 4 cases", function()
    local where
    local err = error_of(function() where = here(); select_(case.default, case.default) end)
    assert.are.equal(where .. "select: multiple defaults", err)
  end)

  it("reports the error at the caller's line, with more than 4 cases", function()
    local where
    local err = error_of(function()
      where = here(); select_(case.default, case.recv(nil), case.recv(nil), case.recv(nil), case.default)
    end)
    assert.are.equal(where .. "select: multiple defaults", err)
  end)

  it("raises even when another case is ready, and performs none", function()
    local ch = lugo.chan(1)
    assert.matches("select: multiple defaults$", error_of(select_, case.send(ch, 1), case.default, case.default))
    local many = { case.send(ch, 1), case.default, case.default, case.default, case.recv(nil), case.recv(nil) }
    assert.matches("select: multiple defaults$", error_of(select_, unpack(many)))
    assert.are.equal(0, ch:len())
  end)
end)

describe("a non-case argument is a bad argument", function()
  local bad = { { 1, "number" }, { "recv", "string" }, { {}, "table" }, { true, "boolean" }, { print, "function" } }
  local nils = { case.recv(nil), case.recv(nil), case.recv(nil), case.recv(nil), case.recv(nil) }

  it("names the argument and its type, with up to 4 cases", function()
    for _, b in ipairs(bad) do
      local err = error_of(select_, case.default, b[1])
      assert.matches("bad argument #2 to 'select' %(case expected, got " .. b[2] .. "%)$", err)
      err = error_of(select_, case.recv(nil), case.recv(nil), case.recv(nil), b[1])
      assert.matches("bad argument #4 to 'select' %(case expected, got " .. b[2] .. "%)$", err)
    end
  end)

  it("names the argument and its type, with more than 4 cases", function()
    for _, b in ipairs(bad) do
      nils[6] = b[1]
      local err = error_of(select_, unpack(nils, 1, 6))
      assert.matches("bad argument #6 to 'select' %(case expected, got " .. b[2] .. "%)$", err)
    end
  end)

  it("reports the error at the caller's line, with up to 4 cases", function()
    local where
    local err = error_of(function() where = here(); select_(case.default, 1) end)
    assert.are.equal(where .. "bad argument #2 to 'select' (case expected, got number)", err)
  end)

  it("reports the error at the caller's line, with more than 4 cases", function()
    local where
    local err = error_of(function()
      where = here(); select_(case.recv(nil), case.recv(nil), case.recv(nil), case.recv(nil), case.recv(nil), {})
    end)
    assert.are.equal(where .. "bad argument #6 to 'select' (case expected, got table)", err)
  end)

  it("raises for a nil argument and for a channel passed instead of a case", function()
    local ch = lugo.chan(1)
    assert.matches("bad argument #1 to 'select' %(case expected, got nil%)$", error_of(select_, nil))
    assert.matches("bad argument #2 to 'select' %(case expected, got nil%)$", error_of(select_, case.default, nil))
    assert.matches("bad argument #1 to 'select' %(case expected, got %a+%)$", error_of(select_, ch))
  end)

  it("performs no case when an argument is bad", function()
    local ch = lugo.chan(1)
    error_of(select_, case.send(ch, 1), 42)
    error_of(select_, case.send(ch, 1), case.recv(nil), case.recv(nil), case.recv(nil), case.recv(nil), 42)
    assert.are.equal(0, ch:len())
  end)

  it("makes case.recv and case.send check their channel", function()
    local where
    local err = error_of(function() where = here(); case.recv("x") end)
    assert.are.equal(where .. "bad argument #1 to 'recv' (channel or nil expected, got string)", err)
    err = error_of(function() where = here(); case.send({}, 1) end)
    assert.are.equal(where .. "bad argument #1 to 'send' (channel or nil expected, got table)", err)
    assert.matches("bad argument #1 to 'recv'", error_of(case.recv, 5))
    assert.matches("bad argument #1 to 'send'", error_of(case.send, false, 1))
  end)
end)

describe("a case that is not a real case on a real channel is a bad argument", function()
  -- selectgo trusts the cases it is given: a hand-built or altered case
  -- table must be refused before it gets there (select_crafted_case.lua,
  -- select_crafted_mutex.lua: a segfault and a heap overflow before).
  local sync = require "lugo.sync"
  local RECV, SEND = case.recv(lugo.chan())[1], case.send(lugo.chan(), 0)[1]
  local foreign = {
    { io.stdout, "userdata" }, { newproxy(), "userdata" }, { "not a channel", "string" }, { {}, "table" },
    { 1, "number" }, { sync.mutex(), "mutex" }, { sync.waitgroup(), "waitgroup" }, { time.timer(3600), "timer" },
  }

  it("names the case, what it needed and what it got, with up to 4 cases", function()
    for _, f in ipairs(foreign) do
      for _, kind in ipairs({ RECV, SEND }) do
        local err = error_of(select_, { kind, f[1], "v" }, case.default)
        assert.matches("bad argument #1 to 'select' %(case on a channel expected, got case on " .. f[2] .. "%)$", err)
        err = error_of(select_, case.recv(nil), case.default, case.recv(nil), { kind, f[1] })
        assert.matches("bad argument #4 to 'select' %(case on a channel expected, got case on " .. f[2] .. "%)$", err)
      end
    end
  end)

  it("names the case with more than 4 cases, blocking or not", function()
    for _, f in ipairs(foreign) do
      local err = error_of(select_, case.recv(nil), case.recv(nil), case.recv(nil), case.recv(nil),
        case.recv(nil), { RECV, f[1] }, case.default)
      assert.matches("bad argument #6 to 'select' %(case on a channel expected, got case on " .. f[2] .. "%)$", err)
      err = error_of(select_, case.recv(nil), case.recv(nil), case.recv(nil), case.recv(nil), { SEND, f[1], 1 })
      assert.matches("bad argument #5 to 'select' %(case on a channel expected, got case on " .. f[2] .. "%)$", err)
    end
  end)

  it("reports the error at the caller's line", function()
    local where
    local err = error_of(function() where = here(); select_({ RECV, io.stdout }, case.default) end)
    assert.are.equal(where .. "bad argument #1 to 'select' (case on a channel expected, got case on userdata)", err)
  end)

  it("refuses a case whose kind is not a receive or a send", function()
    local ch = lugo.chan(1)
    for _, kind in ipairs({ 0, 3, -1, 1.5, "1", true }) do
      assert.matches("bad argument #1 to 'select' %(case expected, got table%)$", error_of(select_, { kind, ch }))
      assert.matches("bad argument #6 to 'select' %(case expected, got table%)$",
        error_of(select_, case.recv(nil), case.recv(nil), case.recv(nil), case.recv(nil), case.recv(nil), { kind, ch }))
    end
  end)

  it("checks a case made by case.recv or case.send again after a script changed it", function()
    local ch, mu = lugo.chan(1), sync.mutex()
    local send = case.send(ch, "x")
    local function loop() return select_(send, case.default) end
    assert.are.equal(1, loop())
    send[2] = mu -- the closed-over case, altered after it was made
    assert.matches("bad argument #1 to 'select' %(case on a channel expected, got case on mutex%)$", error_of(loop))
    send[2], send[1] = ch, 99
    assert.matches("bad argument #1 to 'select' %(case expected, got table%)$", error_of(loop))
    assert.are.equal(1, ch:len()) -- only the first select sent
    local other = lugo.chan(1)
    local recv = { RECV, other }
    other:send("y")
    assert.are.same({ 1, "y", true }, { select_(recv) })
    recv[2] = io.stdout
    assert.matches("got case on userdata%)$", error_of(select_, recv, case.default))
  end)

  it("gives a fresh receive case when the one case.recv handed out was changed", function()
    local a, b = lugo.chan(1), lugo.chan(1)
    local c = case.recv(a)
    c[2] = b -- would make every later case.recv(a) receive from b
    a:send("from a")
    b:send("from b")
    assert.are.same({ 1, "from a", true }, { select_(case.recv(a)) })
    assert.is_false(rawequal(c, case.recv(a)))
    local n = case.recv(nil)
    n[2] = b
    assert.are.same({ 2 }, { select_(case.recv(nil), case.default) })
    assert.are.equal(1, b:len())
  end)

  it("reads a case's fields raw: a metatable cannot supply them", function()
    local ch = lugo.chan(1)
    ch:send("kept")
    local fake = setmetatable({}, { __index = function(_, k) if k == 1 then return RECV end if k == 2 then return ch end end })
    assert.matches("bad argument #1 to 'select' %(case expected, got table%)$", error_of(select_, fake, case.default))
    -- a real case with a metatable is still the case its fields say
    local real = setmetatable({ RECV, ch }, { __index = function() error("not consulted") end })
    assert.are.same({ 1, "kept", true }, { select_(real, case.default) })
  end)

  it("performs no case of a select with a bad one", function()
    local ch = lugo.chan(2)
    error_of(select_, case.send(ch, 1), { RECV, io.stdout })
    error_of(select_, case.send(ch, 1), case.recv(nil), case.recv(nil), case.recv(nil), { SEND, sync.mutex(), 2 })
    assert.are.equal(0, ch:len())
  end)

  it("is refused by the runtime's own select entry point too", function()
    -- lugo.core is reachable with require: its C functions check what they
    -- are handed, not only the Lua module in front of them.
    local core = require "lugo.core"
    local ch = lugo.chan(1)
    assert.matches("bad argument #1 to 'select' %(case expected, got number%)", error_of(core.select, false, 5))
    assert.matches("bad argument #2 to 'select' %(case expected, got nil%)", error_of(core.select, false, {}, nil))
    assert.matches("bad argument #1 to 'select' %(case on a channel expected, got case on userdata%)",
      error_of(core.select, false, { RECV, io.stdout }))
    assert.matches("bad argument #1 to 'select' %(case on a channel expected, got case on mutex%)",
      error_of(core.select, false, { SEND, sync.mutex(), 1 }))
    assert.matches("bad argument #1 to 'select' %(case expected, got table%)", error_of(core.select, false, { 7, ch }))
    -- its first argument is the default's position: that case never fires,
    -- whatever its table holds (case.default is a table a script can change)
    assert.are.equal(0, core.select(1, {}, { RECV, ch }))
    local tampered = { SEND, ch, "x" }
    assert.are.equal(0, core.select(1, tampered))
    assert.are.equal(0, ch:len())
  end)

  it("never fires case.default, whatever a script put in its table", function()
    local ch = lugo.chan(1)
    lugo.spawn(function() end, ch) -- it crossed: the select goes to the C entry point
    rawset(case.default, 1, SEND)
    rawset(case.default, 2, ch)
    rawset(case.default, 3, "x")
    local ok, i = pcall(lugo.select, case.recv(ch), case.default)
    rawset(case.default, 1, nil)
    rawset(case.default, 2, nil)
    rawset(case.default, 3, nil)
    assert.is_true(ok, i)
    assert.are.equal(2, i)
    assert.are.equal(0, ch:len())
  end)
end)

describe("runtime objects' methods refuse what is not their object", function()
  -- The Lua modules check metatables before any FFI call, which trusts its
  -- argument; these reach the methods without the usual method call.
  local sync = require "lugo.sync"

  it("rejects another userdata or another object's proxy called through the metatable", function()
    local ch, mu = lugo.chan(1), sync.mutex()
    local m = getmetatable(ch).__index
    assert.matches("bad argument #1 to 'recv' %(channel expected, got userdata%)", error_of(m.recv, io.stdout))
    assert.matches("bad argument #1 to 'send' %(channel expected, got mutex%)", error_of(m.send, mu, 1))
    assert.matches("bad argument #1 to 'len' %(channel expected, got userdata%)", error_of(m.len, newproxy()))
    assert.matches("bad argument #1 to 'lock' %(mutex expected, got channel%)", error_of(getmetatable(mu).__index.lock, ch))
  end)

  it("checks the channel given to range's iterator", function()
    local ch = lugo.chan(1)
    local next_value = ch:range()
    assert.matches("bad argument #1 to 'range' %(channel expected, got userdata%)", error_of(next_value, io.stdout))
    assert.matches("bad argument #1 to 'range' %(channel expected, got mutex%)", error_of(next_value, sync.mutex()))
    ch:send("v")
    assert.are.equal("v", next_value(ch))
  end)

  it("checks the timer given to a timer's __index", function()
    local t = time.timer(3600)
    local index = getmetatable(t).__index
    assert.matches("bad argument #1 to '__index' %(timer expected, got userdata%)", error_of(index, io.stdout, "stop"))
    assert.matches("bad argument #1 to '__index' %(timer expected, got userdata%)", error_of(index, newproxy(), "c"))
    assert.is_true(t:stop())
  end)

  it("makes __gc and __tostring do nothing to, or refuse, what is not theirs", function()
    local ch, mu = lugo.chan(1), sync.mutex()
    local mt = getmetatable(ch)
    mt.__gc(io.stdout)
    mt.__gc(newproxy())
    mt.__gc(mu) -- a mutex is not a channel: left alone
    assert.is_true(mu:try_lock())
    assert.matches("channel expected, got userdata", error_of(mt.__tostring, newproxy()))
    assert.matches("channel expected, got userdata", error_of(mt.__tostring, mu))
    io.stdout:write("") -- still a working file
  end)

  it("refuses a proxy whose finalizer ran, whether a script called it or another finalizer brought it back", function()
    local r = helper.run([[
      local lugo, sync = require "lugo", require "lugo.sync"
      local chan, mutex, waitgroup =
        getmetatable(lugo.chan()).__index, getmetatable(sync.mutex()).__index, getmetatable(sync.waitgroup()).__index
      local ch = lugo.chan(1)
      getmetatable(ch).__gc(ch)
      print(pcall(chan.send, ch, 1))
      print(pcall(lugo.select, lugo.case.default, { 1, ch }))
      local keep = {}
      for _ = 1, 10 do
        local c, mu, wg = lugo.chan(1), sync.mutex(), sync.waitgroup()
        local p = newproxy(true)
        getmetatable(p).__gc = function() keep[#keep + 1] = { c, mu, wg } end
      end
      collectgarbage()
      collectgarbage()
      local refused = 0
      for _, k in ipairs(keep) do
        local c, mu, wg = k[1], k[2], k[3]
        if not pcall(chan.send, c, 1) then refused = refused + 1 end
        if not pcall(chan.recv, c) then refused = refused + 1 end
        if not pcall(lugo.select, lugo.case.default, { 1, c }) then refused = refused + 1 end
        if not pcall(mutex.lock, mu) then refused = refused + 1 end
        if not pcall(waitgroup.add, wg, 1) then refused = refused + 1 end
      end
      print(#keep, refused)
    ]])
    assert.are.equal("", r.stderr)
    assert.are.equal(0, r.status)
    assert.matches("^false\t[^\n]*bad argument #1 to 'send' %(channel expected, got userdata%)\n", r.stdout)
    assert.matches("\nfalse\t[^\n]*bad argument #2 to 'select' %(case on a channel expected, got case on userdata%)\n", r.stdout)
    assert.matches("\n10\t50\n$", r.stdout)
  end)
end)

describe("case.recv returns the same object for the same channel", function()
  it("is identical for one channel and distinct for two", function()
    local a, b = lugo.chan(), lugo.chan()
    assert.is_true(rawequal(case.recv(a), case.recv(a)))
    assert.is_false(rawequal(case.recv(a), case.recv(b)))
  end)

  it("still works after a garbage collection", function()
    local a = lugo.chan(1)
    local c = case.recv(a)
    collectgarbage()
    collectgarbage()
    assert.is_true(rawequal(c, case.recv(a)))
    a:send("after gc")
    assert.are.same({ 1, "after gc", true }, { select_(c) })
  end)
end)

describe("lugo.select() with no cases blocks forever", function()
  it("is a deadlock when nothing else can run", function()
    local r = helper.run([[
      require("lugo").select()
      print("not reached")
    ]])
    helper.assert_deadlock(r)
    assert.matches("select (no cases)", r.stderr, 1, true)
  end)

  it("lets the other goroutines run meanwhile", function()
    local r = helper.run([[
      local lugo = require "lugo"
      lugo.go(function()
        for i = 1, 3 do
          require("lugo.time").sleep(0.001)
          print("tick", i)
        end
        os.exit(3)
      end)
      lugo.select()
      print("not reached")
    ]])
    assert.are.equal(3, r.status)
    assert.are.equal("tick\t1\ntick\t2\ntick\t3\n", r.stdout)
  end)

  it("does not keep the program alive when not in the main goroutine", function()
    local r = helper.run([[
      local lugo = require "lugo"
      lugo.go(function() lugo.select() end)
      require("lugo.runtime").gosched()
      print("main returns")
    ]])
    assert.are.equal(0, r.status)
    assert.are.equal("main returns\n", r.stdout)
  end)
end)

describe("select where Lua cannot yield", function()
  it("raises 'cannot block here' when it would block in a table.sort comparator", function()
    local ch = lugo.chan()
    local err = error_of(function()
      table.sort({ 2, 1 }, function(a, b) select_(case.recv(ch), case.recv(nil)); return a < b end)
    end)
    assert.matches("cannot block here", err, 1, true)
    assert.is_false(can_send(ch, "lost?"))
  end)

  it("raises 'cannot block here' with more than 4 cases in a gsub callback", function()
    local chans, cases = {}, {}
    for i = 1, 6 do
      chans[i] = lugo.chan()
      cases[i] = i % 2 == 0 and case.recv(chans[i]) or case.send(chans[i], i)
    end
    local err = error_of(function()
      string.gsub("a", ".", function() select_(unpack(cases)) end)
    end)
    assert.matches("cannot block here", err, 1, true)
    for i = 1, 6 do
      if i % 2 == 0 then
        assert.is_false(can_send(chans[i], "lost?"))
      else
        assert.is_false(can_recv(chans[i]))
      end
    end
  end)

  it("works there when a case is ready or there is a default", function()
    local ch = lugo.chan(1)
    local got = {}
    string.gsub("abc", ".", function(c)
      got[#got + 1] = select_(case.send(ch, c), case.default)
      got[#got + 1] = select_(case.recv(ch), case.default)
      got[#got + 1] = select_(case.recv(ch), case.default)
    end)
    assert.are.same({ 1, 1, 2, 1, 1, 2, 1, 1, 2 }, got)
  end)
end)

-- A channel that has crossed to another VM (through spawn) carries copies
-- for every receiver, in the sender's VM too, select or not: what a
-- program means does not depend on where its goroutines run.
describe("select on a channel that crossed through spawn copies its values", function()
  local function shared_chan(cap)
    local ch = lugo.chan(cap)
    local done = lugo.chan(1)
    lugo.spawn(function(ch, done) done:send(ch ~= nil) end, ch, done)
    assert.is_true(helper.recv(done))
    return ch
  end

  it("gives a receive case a copy of a table sent in this VM", function()
    local ch, t = shared_chan(1), { n = 1 }
    ch:send(t)
    local i, v, ok = select_(case.recv(ch), case.default)
    assert.are.same({ 1, { n = 1 }, true }, { i, v, ok })
    assert.is_false(rawequal(t, v))
  end)

  it("sends a copy from a ready send case, taken when the case fires", function()
    local ch, t = shared_chan(1), { n = 1 }
    assert.are.equal(1, (select_(case.send(ch, t), case.default)))
    t.n = 2
    local v = ch:recv()
    assert.are.equal(1, v.n)
    assert.is_false(rawequal(t, v))
  end)

  it("sends a copy from a send case that waited for a receiver of this VM", function()
    local ch, t = shared_chan(0), { n = 1 }
    local res = go_pcall(function() return select_(case.send(ch, t), case.recv(nil)) end)
    settle() -- parked on the send case, its copy made
    t.n = 2
    local v = ch:recv()
    assert.are.same({ n = 2, true, 1 }, helper.recv(res))
    assert.are.equal(1, v.n)
    assert.is_false(rawequal(t, v))
  end)

  it("delivers a copy to a receive case that waited, in the sender's VM", function()
    local ch, t = shared_chan(0), { n = 1 }
    local res = go_pcall(function() return select_(case.recv(ch), case.recv(nil)) end)
    settle()
    ch:send(t)
    local r = helper.recv(res)
    assert.are.equal(1, r[2])
    assert.are.equal(1, r[3].n)
    assert.is_false(rawequal(t, r[3]))
  end)

  it("still passes values by reference on a channel that never crossed", function()
    local ch, t = lugo.chan(1), {}
    select_(case.send(ch, t))
    local _, v = select_(case.recv(ch))
    assert.is_true(rawequal(t, v))
  end)
end)

-- Found in review: a parked select's sudogs hold no reference to their
-- channels, and its case tables are the script's, which it may change.
describe("a parked select keeps its channels alive", function()
  it("even when a script empties its case table and the channel is collected", function()
    local r = helper.run([[
      local lugo, time = require "lugo", require "lugo.time"
      local other, ch = lugo.chan(), lugo.chan()
      local c = { lugo.case.recv(ch)[1], ch }
      local woke = lugo.chan(1)
      lugo.go(function() woke:send((lugo.select(c, lugo.case.recv(other)))) end)
      time.sleep(0.01) -- it parks in select, queued on ch
      ch = nil
      rawset(c, 2, nil)
      collectgarbage() collectgarbage() collectgarbage()
      other:send(1)
      print((woke:recv()))
    ]])
    helper.assert_clean_run(r, "2\n")
  end)
end)

describe("a select whose value shares another case's channel", function()
  it("copies every send case's value (the sharing one made the other channel shared)", function()
    local r = helper.run([[
      local lugo = require "lugo"
      local shared = lugo.chan() -- nobody receives: its case never fires
      lugo.spawn(function(c) end, shared)
      local loc = lugo.chan(1)
      -- sending {loc} on the shared channel shares loc too, while the
      -- first case's value was looked at before
      local i = lugo.select(lugo.case.send(loc, { x = "the value" }), lugo.case.send(shared, { loc }))
      local done = lugo.chan()
      lugo.spawn(function(c, d)
        local v, ok = c:recv()
        d:send({ type(v), type(v) == "table" and v.x or nil, ok })
      end, loc, done)
      local got = done:recv()
      print(i, got[1], got[2], got[3])
    ]], { flags = "-p 2" })
    helper.assert_clean_run(r, "1\ttable\tthe value\ttrue\n")
  end)
end)
