-- lugo.sync's atomics (docs/api.md, "lugo.sync"): sync.atomic.int and
-- sync.atomic.value, runtime objects that every processor shares by
-- reference.
--
-- ctest runs this file with 1, 2 and 4 processors. Spawned goroutines get
-- copies of what they capture (an atomic crosses by reference), must not
-- name busted's assert, and report back on channels; helper.spawn_pcall
-- runs them under pcall. Nothing here depends on timing: waits are bounded
-- only against hangs.
local lugo = require "lugo"
local sync = require "lugo.sync"
local runtime = require "lugo.runtime"
local helper = require "helper"

local atomic = sync.atomic
local recv_within, error_of, here = helper.recv_within, helper.error_of, helper.here
local spawn_pcall, spawn_elsewhere, results = helper.spawn_pcall, helper.spawn_elsewhere, helper.spawn_results
local HANG = 60 -- seconds; only against hangs (sanitized builds are slow)
local SAFE = 2 ^ 53 - 1

-- Assert that f(...) raises exactly `message` at the line that called
-- expect_error (f must raise at its caller, as the API functions do).
local function expect_error(message, f, ...)
  local args = { n = select("#", ...), ... }
  local where
  local err = error_of(function() where = here(); f(unpack(args, 1, args.n)) end)
  assert.are.equal(where .. message, err)
end

-- Start n spawned goroutines running body(i, ...) under pcall; returns the
-- pcall results of each, in the order they finished, failing on an error.
local function spawn_all(n, body, ...)
  local done = lugo.chan(n)
  for i = 1, n do
    lugo.spawn(function(done, body, i, ...) done:send({ pcall(body, i, ...) }) end, done, body, i, ...)
  end
  local all = {}
  for _ = 1, n do
    local r, ok = recv_within(done, HANG)
    assert(ok ~= "timeout", "timed out waiting for the spawned goroutines")
    assert(r[1], "a spawned goroutine raised: " .. tostring(r[2]))
    all[#all + 1] = r
  end
  return all
end

describe("sync.atomic.int", function()
  it("holds an integer: load, store, add, swap, compare_and_swap", function()
    local a = atomic.int()
    assert.are.equal(0, a:load())
    a:store(-7)
    assert.are.equal(-7, a:load())
    assert.are.equal(-4, a:add(3))
    assert.are.equal(-10, a:add(-6))
    assert.are.equal(-10, a:swap(12))
    assert.is_true(a:compare_and_swap(12, 13))
    assert.is_false(a:compare_and_swap(12, 14))
    assert.are.equal(13, a:load())
    assert.are.equal(5, atomic.int(5):load())
  end)

  it("holds every safe integer, from -(2^53-1) to 2^53-1, exactly", function()
    local a = atomic.int(SAFE)
    assert.are.equal(SAFE, a:load())
    assert.are.equal(SAFE - 1, a:add(-1))
    a:store(-SAFE)
    assert.are.equal(-SAFE, a:load())
    assert.are.equal(-SAFE, a:swap(0))
  end)

  it("refuses a sum outside the safe range and keeps its value (Go's Add would wrap)", function()
    local a = atomic.int(SAFE - 1)
    assert.are.equal(SAFE, a:add(1))
    expect_error("sync: atomic.int add overflows the safe integer range ±(2^53-1) (9007199254740991 + 1)", a.add, a, 1)
    assert.are.equal(SAFE, a:load())
    a:store(-SAFE)
    expect_error("sync: atomic.int add overflows the safe integer range ±(2^53-1) (-9007199254740991 + -2)", a.add, a, -2)
    assert.are.equal(-SAFE, a:load())
  end)

  describe("misuse raises an error", function()
    it("for a value that is not a number", function()
      local a = atomic.int()
      expect_error("bad argument #2 to 'store' (integer expected, got string)", a.store, a, "1")
      expect_error("bad argument #2 to 'add' (integer expected, got nil)", a.add, a)
      expect_error("bad argument #2 to 'swap' (integer expected, got table)", a.swap, a, {})
      expect_error("bad argument #2 to 'compare_and_swap' (integer expected, got boolean)", a.compare_and_swap, a, true, 1)
      expect_error("bad argument #3 to 'compare_and_swap' (integer expected, got nil)", a.compare_and_swap, a, 0)
      expect_error("bad argument #1 to 'int' (integer expected, got string)", atomic.int, "0")
      assert.are.equal(0, a:load())
    end)

    it("for a number that is not an integer", function()
      local a = atomic.int(1)
      expect_error("bad argument #2 to 'store' (integer expected, got 0.5)", a.store, a, 0.5)
      expect_error("bad argument #2 to 'add' (integer expected, got -1.25)", a.add, a, -1.25)
      expect_error("bad argument #2 to 'swap' (integer expected, got nan)", a.swap, a, 0 / 0)
      expect_error("bad argument #3 to 'compare_and_swap' (integer expected, got 2.5)", a.compare_and_swap, a, 1, 2.5)
      expect_error("bad argument #1 to 'int' (integer expected, got 0.1)", atomic.int, 0.1)
      assert.are.equal(1, a:load())
    end)

    it("for an integer beyond ±(2^53-1), where numbers stop being exact", function()
      local a = atomic.int(1)
      expect_error("bad argument #2 to 'store' (integer within ±(2^53-1) expected, got 9007199254740992)", a.store, a, 2 ^ 53)
      expect_error("bad argument #2 to 'add' (integer within ±(2^53-1) expected, got -1e+300)", a.add, a, -1e300)
      expect_error("bad argument #2 to 'swap' (integer expected, got inf)", a.swap, a, math.huge)
      expect_error("bad argument #2 to 'compare_and_swap' (integer within ±(2^53-1) expected, got 9007199254740992)",
        a.compare_and_swap, a, 2 ^ 53, 1)
      expect_error("bad argument #1 to 'int' (integer within ±(2^53-1) expected, got 1.8446744073709552e+19)", atomic.int, 2 ^ 64)
      assert.are.equal(1, a:load())
    end)

    it("for a self that is not an atomic.int", function()
      local a = atomic.int()
      expect_error("bad argument #1 to 'load' (atomic.int expected, got table)", a.load, {})
      expect_error("bad argument #1 to 'store' (atomic.int expected, got atomic.value)", a.store, atomic.value(), 1)
      expect_error("bad argument #1 to 'add' (atomic.int expected, got mutex)", a.add, sync.mutex(), 1)
      expect_error("bad argument #1 to 'swap' (atomic.int expected, got nil)", a.swap, nil, 1)
      expect_error("bad argument #1 to 'compare_and_swap' (atomic.int expected, got number)", a.compare_and_swap, 1, 1, 2)
    end)
  end)

  it("loses no add when 4 goroutines on every processor each add 1 100,000 times", function()
    local a = atomic.int()
    local N, K = 4, 100000
    spawn_all(N, function(_, a, K)
      for _ = 1, K do a:add(1) end
    end, a, K)
    assert.are.equal(N * K, a:load())
  end)

  it("gives each compare_and_swap from an old value to one winner only", function()
    local a = atomic.int()
    local N, K = 4, 5000
    -- Each goroutine tries to move the value from what it read to one more,
    -- until K; it keeps the values it set. Every value from 1 to K must be
    -- set by exactly one goroutine.
    local all = spawn_all(N, function(_, a, K)
      local won = {}
      while true do
        local cur = a:load()
        if cur >= K then break end
        if a:compare_and_swap(cur, cur + 1) then won[#won + 1] = cur + 1 end
      end
      return won
    end, a, K)
    local owner = {}
    for _, r in ipairs(all) do
      for _, v in ipairs(r[2]) do
        assert.is_nil(owner[v], "two winners for " .. v)
        owner[v] = true
      end
    end
    for v = 1, K do assert.is_true(owner[v], "no winner for " .. v) end
    assert.are.equal(K, a:load())
  end)

  it("hands every value stored by swap to exactly one racer (or leaves it last)", function()
    local a = atomic.int()
    local N, K = 4, 5000
    local all = spawn_all(N, function(i, a, K)
      local olds = {}
      for j = 1, K do olds[j] = a:swap(i * K + j) end
      return olds
    end, a, K)
    local seen = { [a:load()] = 1 }
    for _, r in ipairs(all) do
      for _, v in ipairs(r[2]) do seen[v] = (seen[v] or 0) + 1 end
    end
    assert.are.equal(1, seen[0])
    for i = 1, N do
      for j = 1, K do assert.are.equal(1, seen[i * K + j], "value " .. (i * K + j)) end
    end
  end)

  it("is the same object on every processor: spawn, channels, a module's field", function()
    local a = atomic.int(1)
    -- through spawn's arguments
    assert.are.equal(1, (results(spawn_elsewhere(function(a) return a:swap(2) end, a))))
    assert.are.equal(2, a:load())
    -- through a channel that crossed processors
    local ch = lugo.chan(1)
    local r = spawn_elsewhere(function(ch) ch:recv():store(3) end, ch)
    ch:send(a)
    results(r)
    assert.are.equal(3, a:load())
    -- captured as an upvalue
    assert.are.equal(4, (results(spawn_elsewhere(function() return a:add(1) end))))
    assert.are.equal(4, a:load())
    -- and the same proxy when it comes back to this processor
    assert.are.equal(a, (results(spawn_pcall(function(a) return a end, a))))
  end)

  it("is a preemption point: a goroutine spinning on load lets the others of its processor run", function()
    local a = atomic.int()
    lugo.go(function() a:store(1) end)
    -- A compiled loop never runs the preemption hook; load yields when
    -- the time slice is over. The bound is only against a hang.
    local seen = 0
    for _ = 1, 2e9 do
      seen = a:load()
      if seen ~= 0 then break end
    end
    assert.are.equal(1, seen)
  end)
end)

describe("sync.atomic.value", function()
  it("holds nil until something is stored, then scalars and strings by value", function()
    local v = atomic.value()
    assert.is_nil(v:load())
    for _, x in ipairs({ true, false, 0, -1.5, 2 ^ 60, "", "text\0with zero", 0 / 0 }) do
      v:store(x)
      local got = v:load()
      if x ~= x then assert.is_true(got ~= got) else assert.are.equal(x, got) end
    end
    v:store(nil)
    assert.is_nil(v:load())
    assert.are.equal("init", atomic.value("init"):load())
  end)

  it("copies tables in and out, deeply: changing either copy leaves the stored one as it was", function()
    local t = { n = 1, sub = { "a", "b" } }
    t.self = t
    local v = atomic.value(t)
    t.n, t.sub[1] = 2, "changed"
    local got = v:load()
    assert.are_not.equal(t, got)
    assert.are.equal(1, got.n)
    assert.are.same({ "a", "b" }, got.sub)
    assert.are.equal(got, got.self) -- cycles kept
    got.n, got.sub[2] = 3, "changed too"
    local again = v:load()
    assert.are_not.equal(got, again)
    assert.are.equal(1, again.n)
    assert.are.same({ "a", "b" }, again.sub)
  end)

  it("copies functions with their upvalues, as spawn does", function()
    local k = 10
    local v = atomic.value(function(x) return x + k end)
    k = 20
    assert.are.equal(11, v:load()(1))
  end)

  it("holds runtime objects by reference: the same channel, on every processor", function()
    local ch = lugo.chan(1)
    local v = atomic.value(ch)
    assert.are.equal(ch, v:load())
    results(spawn_elsewhere(function(v) v:load():send("from afar") end, v))
    assert.are.equal("from afar", (recv_within(ch, HANG)))
  end)

  it("is shared by every processor: a table stored there is loaded here", function()
    local v = atomic.value()
    results(spawn_elsewhere(function(v) v:store({ from = "elsewhere", list = { 1, 2, 3 } }) end, v))
    assert.are.same({ from = "elsewhere", list = { 1, 2, 3 } }, v:load())
    assert.are.same({ 1, 2, 3 }, (results(spawn_elsewhere(function(v) return v:load().list end, v))))
  end)

  it("refuses what cannot be copied, with spawn's and channels' error text, and keeps its value", function()
    local v = atomic.value("kept")
    local co = coroutine.create(print)
    expect_error("cannot copy a coroutine to another processor at value", v.store, v, co)
    expect_error("cannot copy a coroutine to another processor at value.inner.co", v.swap, v, { inner = { co = co } })
    expect_error("cannot copy a coroutine to another processor at upvalue 'co' of value",
      v.compare_and_swap, v, "kept", function() return co end)
    expect_error("cannot copy a coroutine to another processor at value", atomic.value, co)
    assert.are.equal("kept", v:load())
  end)

  it("swap returns the old value", function()
    local v = atomic.value({ 1 })
    assert.are.same({ 1 }, v:swap("two"))
    assert.are.equal("two", v:swap(nil))
    assert.is_nil(v:swap(3))
    assert.are.equal(3, v:load())
  end)

  it("hands every value stored by swap to exactly one racer (or leaves it last)", function()
    local v = atomic.value("start")
    local N, K = 4, 2000
    local all = spawn_all(N, function(i, v, K)
      local olds = {}
      for j = 1, K do olds[j] = v:swap(i .. ":" .. j) end
      return olds
    end, v, K)
    local seen = { [v:load()] = 1 }
    for _, r in ipairs(all) do
      for _, x in ipairs(r[2]) do seen[x] = (seen[x] or 0) + 1 end
    end
    assert.are.equal(1, seen.start)
    for i = 1, N do
      for j = 1, K do assert.are.equal(1, seen[i .. ":" .. j], "value " .. i .. ":" .. j) end
    end
  end)

  describe("compare_and_swap", function()
    it("compares nil, booleans, numbers and strings by value", function()
      local v = atomic.value()
      assert.is_false(v:compare_and_swap(false, 1))
      assert.is_true(v:compare_and_swap(nil, false))
      assert.is_false(v:compare_and_swap(nil, 1))
      assert.is_true(v:compare_and_swap(false, 1))
      assert.is_false(v:compare_and_swap("1", 2))
      assert.is_true(v:compare_and_swap(1, "s" .. "tr"))
      assert.is_false(v:compare_and_swap("st", 3))
      assert.is_true(v:compare_and_swap("str", 0 / 0))
      assert.is_false(v:compare_and_swap(0 / 0, 4)) -- NaN equals nothing, as in Lua
      v:store(true)
      assert.is_true(v:compare_and_swap(true, { t = 1 }))
      assert.are.same({ t = 1 }, v:load())
    end)

    it("compares runtime objects by identity", function()
      local a, b = lugo.chan(), lugo.chan()
      local v = atomic.value(a)
      assert.is_false(v:compare_and_swap(b, 1))
      assert.is_true(v:compare_and_swap(a, b))
      assert.are.equal(b, v:load())
      -- from another processor, where the proxies are others
      assert.is_true((results(spawn_elsewhere(function(v, b) return v:compare_and_swap(b, "done") end, v, b))))
      assert.are.equal("done", v:load())
    end)

    it("refuses an old value that is a table or a function (a stored one equals nothing)", function()
      local t = {}
      local v = atomic.value(t)
      local msg = "sync: compare_and_swap of %s (old must be nil, a boolean, a number, a string or a runtime object)"
      expect_error(msg:format("a table"), v.compare_and_swap, v, t, 1)
      expect_error(msg:format("function"), v.compare_and_swap, v, print, 1)
      expect_error(msg:format("thread"), v.compare_and_swap, v, coroutine.create(print), 1)
      expect_error(msg:format("userdata"), v.compare_and_swap, v, io.stdout, 1)
      assert.is_false(v:compare_and_swap(nil, 1))
      assert.are.same({}, v:load())
    end)

    it("gives each old value to one winner only when goroutines on every processor race", function()
      local v = atomic.value(0)
      local N, K = 4, 2000
      local all = spawn_all(N, function(_, v, K)
        local won = {}
        while true do
          local cur = v:load()
          if cur >= K then break end
          if v:compare_and_swap(cur, cur + 1) then won[#won + 1] = cur + 1 end
        end
        return won
      end, v, K)
      local owner = {}
      for _, r in ipairs(all) do
        for _, x in ipairs(r[2]) do
          assert.is_nil(owner[x], "two winners for " .. x)
          owner[x] = true
        end
      end
      for x = 1, K do assert.is_true(owner[x], "no winner for " .. x) end
    end)
  end)

  it("raises an error for a self that is not an atomic.value", function()
    local v = atomic.value()
    expect_error("bad argument #1 to 'load' (atomic.value expected, got atomic.int)", v.load, atomic.int())
    expect_error("bad argument #1 to 'store' (atomic.value expected, got table)", v.store, {}, 1)
    expect_error("bad argument #1 to 'swap' (atomic.value expected, got nil)", v.swap, nil, 1)
    expect_error("bad argument #1 to 'compare_and_swap' (atomic.value expected, got channel)",
      v.compare_and_swap, lugo.chan(), nil, 1)
  end)

  it("frees what it holds with itself (the objects it held are released)", function()
    -- A channel held only by a dropped atomic.value: its proxy here is
    -- the only other reference; both go with a collection, and the
    -- sanitizer builds' leak check sees the rest.
    local weak = setmetatable({}, { __mode = "v" })
    do
      local v = atomic.value({ ch = lugo.chan(1), s = "x" })
      weak[1] = v
    end
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak[1])
  end)
end)
