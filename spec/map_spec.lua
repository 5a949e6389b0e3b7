-- lugo.sync.map: Go's hashmap in C (runtime/map.c), sharded and shared by
-- every processor, with ttls, a capacity evicted with CLOCK, and atomic
-- read-modify-write calls (docs/api.md, "lugo.sync", and the opening
-- comment of runtime/map.c).
--
-- ctest runs this file with 1, 2 and 4 processors (LUGO_MAXPROCS). Every
-- `it` body runs in the main goroutine on processor 0. A spawned function is
-- copied with its upvalues and the globals it names: it captures only
-- copyable values (maps, channels, numbers, strings, plain functions), never
-- busted's assert nor the helper module; it sends what it finds back on a
-- channel and the body asserts. Goroutines that loop over the map without
-- another runtime call yield now and then (runtime.gosched), so that at
-- -p 1 they interleave as they run in parallel at -p 2 and 4.
--
-- Nothing here measures time for pass or fail except ttls, whose bounds are
-- generous. Under the sanitizer builds (LUGO_SANITIZED=1) the big loops are
-- scaled down.
local lugo = require "lugo"
local sync = require "lugo.sync"
local time = require "lugo.time"
local runtime = require "lugo.runtime"
local helper = require "helper"

local recv, recv_within, settle = helper.recv, helper.recv_within, helper.settle
local error_of, here, assert_contains = helper.error_of, helper.here, helper.assert_contains
local spawn_pcall, spawn_elsewhere, results = helper.spawn_pcall, helper.spawn_elsewhere, helper.spawn_results

local SANITIZED = os.getenv("LUGO_SANITIZED") == "1"
local HANG = SANITIZED and 240 or 60 -- seconds; only against hangs of the big tests

-- helper.pack, restated: spawned code must not capture the helper module.
local function pack(...) return { n = select("#", ...), ... } end

-- The results of every goroutine started with spawn_pcall/spawn_elsewhere
-- whose channels are in `chans`, waiting up to `limit` seconds in all.
local function all_results(chans, limit, what)
  local out = {}
  local deadline = time.now() + limit
  for i, ch in ipairs(chans) do
    local r, ok = recv_within(ch, math.max(deadline - time.now(), 0.001))
    assert(ok ~= "timeout", "timed out waiting for " .. what .. " " .. i)
    assert(r[1], what .. " " .. i .. " raised: " .. tostring(r[2]))
    out[i] = r[2]
  end
  return out
end

-- Assert that f raises exactly `message`, prefixed with the position of
-- the line that raised: f is called as f(at) and calls at() on that line.
local function assert_error_here(message, f)
  local where
  local function at()
    local info = debug.getinfo(2, "Sl")
    where = info.short_src .. ":" .. info.currentline .. ": "
  end
  local err = error_of(f, at)
  assert.are.equal(where .. message, err)
end

-- The entries of m as a table, by range.
local function entries(m)
  local t = {}
  m:range(function(k, v) t[k] = v end)
  return t
end

describe("sync.map", function()
  describe("made by sync.map{}", function()
    it("takes no options, a capacity in bytes or with a unit, and a number of shards", function()
      assert.are.equal(0, sync.map():stats().capacity)
      assert.are.equal(0, sync.map({}):stats().capacity)
      assert.are.equal(4096, sync.map({ capacity = 4096 }):stats().capacity)
      assert.are.equal(65536, sync.map({ capacity = "64k" }):stats().capacity)
      assert.are.equal(64 * 1024 * 1024, sync.map({ capacity = "64m" }):stats().capacity)
      assert.are.equal(64 * 1024 * 1024, sync.map({ capacity = "64MB" }):stats().capacity)
      assert.are.equal(1536, sync.map({ capacity = "1.5k" }):stats().capacity)
      assert.are.equal(32, sync.map({ shards = 20 }):stats().shards)
      assert.are.equal(8, sync.map({ shards = 1 }):stats().shards) -- 8 at least
      assert.are.equal(4096, sync.map({ shards = 100000 }):stats().shards) -- 4096 at most
      local procs = runtime.gomaxprocs()
      local want = 8 -- 4 per processor, at least 8
      while want < 4 * procs do want = want * 2 end
      assert.are.equal(want, sync.map():stats().shards)
    end)

    it("refuses bad options", function()
      assert_contains(error_of(sync.map, 5), "table expected, got number")
      assert_contains(error_of(sync.map, { capcity = 1 }), "unknown option 'capcity'")
      assert_contains(error_of(sync.map, { capacity = -1 }), "capacity must not be negative")
      assert_contains(error_of(sync.map, { capacity = "lots" }), 'bad capacity "lots"')
      assert_contains(error_of(sync.map, { capacity = true }), "capacity must be a number of bytes")
      assert_contains(error_of(sync.map, { shards = 0 }), "shards must be a positive number")
      assert_contains(error_of(sync.map, { shards = "8" }), "shards must be a positive number")
    end)

    it("starts empty", function()
      local m = sync.map()
      assert.are.equal(0, m:len())
      assert.are.same({ nil, false }, { m:load("x") })
      local s = m:stats()
      for _, f in ipairs({ "len", "bytes", "buckets", "overflow_buckets", "growing_shards", "evictions", "expirations" }) do
        assert.are.equal(0, s[f], f)
      end
    end)
  end)

  describe("keys", function()
    it("makes 1 and 1.0 one key, and 1 and \"1\" two", function()
      local m = sync.map()
      m:store(1, "number")
      assert.are.same({ "number", true }, { m:load(1.0) })
      assert.are.same({ nil, false }, { m:load("1") })
      m:store("1", "string")
      assert.are.equal("number", m:load(1))
      assert.are.equal("string", m:load("1"))
      m:store(2 / 2, "again")
      assert.are.equal("again", m:load(1))
      assert.are.equal(2, m:len())
    end)

    it("makes -0 and 0 one key", function()
      local m = sync.map()
      m:store(-0, "zero")
      assert.are.same({ "zero", true }, { m:load(0) })
      m:store(0, "zero again")
      assert.are.equal("zero again", m:load(-0))
      assert.are.equal(1, m:len())
      local k = next(entries(m))
      assert.are.equal(0, k)
      assert.are.equal(math.huge, 1 / k) -- range gives back +0
    end)

    it("takes true and false as two keys", function()
      local m = sync.map()
      m:store(true, "yes")
      m:store(false, "no")
      assert.are.equal("yes", m:load(true))
      assert.are.equal("no", m:load(false))
      assert.are.same({ nil, false }, { m:load("true") })
      assert.are.same({ [true] = "yes", [false] = "no" }, entries(m))
    end)

    it("takes strings with any bytes, the empty one and long ones", function()
      local m = sync.map()
      local long = string.rep("k", 100000)
      m:store("", "empty")
      m:store("a\0b", "nul")
      m:store("a\0c", "other nul")
      m:store(long, "long")
      assert.are.equal("empty", m:load(""))
      assert.are.equal("nul", m:load("a\0b"))
      assert.are.equal("other nul", m:load("a\0c"))
      assert.are.same({ nil, false }, { m:load("a") })
      assert.are.equal("long", m:load(long))
      assert.are.same({ nil, false }, { m:load(long .. "x") })
      assert.are.equal("long", entries(m)[long])
    end)

    it("takes fractions, huge numbers and infinities", function()
      local m = sync.map()
      local keys = { 0.5, -0.5, 1e300, -1e300, math.huge, -math.huge, 2 ^ 53, 2 ^ 53 + 2, 1e-300 }
      for i, k in ipairs(keys) do m:store(k, i) end
      for i, k in ipairs(keys) do assert.are.equal(i, m:load(k), tostring(k)) end
      assert.are.equal(#keys, m:len())
    end)

    it("raises for NaN, tables, functions, nil and other key types", function()
      local m = sync.map()
      assert_error_here("bad argument #2 to 'store' (key is NaN)", function(at) at() m:store(0 / 0, 1) end)
      assert_error_here("bad argument #2 to 'load' (key is NaN)", function(at) at() m:load(0 / 0) end)
      assert_error_here("bad argument #2 to 'store' (key must be a string, number or boolean, got table)",
        function(at) at() m:store({}, 1) end)
      assert_error_here("bad argument #2 to 'load' (key must be a string, number or boolean, got function)",
        function(at) at() m:load(print) end)
      assert_error_here("bad argument #2 to 'load' (key must be a string, number or boolean, got nil)",
        function(at) at() m:load(nil) end)
      assert_error_here("bad argument #2 to 'delete' (key must be a string, number or boolean, got userdata)",
        function(at) at() m:delete(lugo.chan()) end)
      local co = coroutine.create(print)
      for _, call in ipairs({
        function() m:incr(co, 1) end, function() m:add({}, 1) end, function() m:swap({}, 1) end,
        function() m:load_or_store({}, 1) end, function() m:load_and_delete({}) end,
        function() m:compare_and_swap({}, 1, 2) end, function() m:compare_and_delete({}, 1) end,
        function() m:ttl({}) end, function() m:expire({}, 1) end, function() m:safe_store({}, 1) end,
      }) do
        assert_contains(error_of(call), "key must be a string, number or boolean")
      end
      assert.are.equal(0, m:len())
    end)

    it("is the same key whichever processor uses it", function()
      local m = sync.map()
      results(spawn_elsewhere(function(m)
        m:store(1.0, "from elsewhere")
        m:store(-0, "zero")
        m:store(true, "t")
        m:store("1", "s")
      end, m))
      assert.are.equal("from elsewhere", m:load(1))
      assert.are.equal("zero", m:load(0))
      assert.are.equal("t", m:load(true))
      assert.are.equal("s", m:load("1"))
      assert.are.equal(4, m:len())
    end)
  end)

  describe("values", function()
    it("keeps every kind of copyable value", function()
      local m = sync.map()
      local cyc = { name = "cycle" }
      cyc.self = cyc
      local values = {
        n = 42, f = 0.25, neg = -7, inf = math.huge, t = true, F = false, s = "text", e = "",
        bin = "a\0b\255", long = string.rep("x", 200000),
        tab = { 1, 2, { 3, { 4 } }, k = "v", [true] = false },
        cyc = cyc,
        fn = function(a) return a * 2 end,
      }
      for k, v in pairs(values) do assert.is_true(m:store(k, v)) end
      for k, v in pairs(values) do
        local got, ok = m:load(k)
        assert.is_true(ok, k)
        if k == "cyc" then
          assert.are.equal("cycle", got.name)
          assert.are.equal(got, got.self)
        elseif k == "fn" then
          assert.are.equal(10, got(5))
        else
          assert.are.same(v, got, k)
        end
      end
      local nan = m:swap("nan", 0 / 0)
      assert.is_nil(nan)
      local v = m:load("nan")
      assert.are_not.equal(v, v)
    end)

    it("tells a stored false from an absent key", function()
      local m = sync.map()
      m:store("f", false)
      assert.are.same({ false, true }, { m:load("f") })
      assert.are.same({ nil, false }, { m:load("g") })
    end)

    it("copies values in and out: neither the stored nor the loaded table is shared", function()
      local m = sync.map()
      local t = { n = 1, inner = { 1, 2 } }
      m:store("t", t)
      t.n = 2
      t.inner[1] = "changed"
      local a = m:load("t")
      assert.are.same({ n = 1, inner = { 1, 2 } }, a)
      a.n = 3
      a.inner[2] = "changed"
      local b = m:load("t")
      assert.are.same({ n = 1, inner = { 1, 2 } }, b)
      assert.are_not.equal(a, b)
      local c = m:load_or_store("t", {})
      assert.are.same({ n = 1, inner = { 1, 2 } }, c)
      local d = entries(m).t
      d.n = 4
      assert.are.equal(1, m:load("t").n)
    end)

    it("drops metatables, as spawn does", function()
      local m = sync.map()
      m:store("t", setmetatable({ x = 1 }, { __index = function() return "meta" end }))
      local t = m:load("t")
      assert.is_nil(getmetatable(t))
      assert.is_nil(t.y)
      assert.are.equal(1, t.x)
    end)

    it("raises for a nil value: delete is for that", function()
      local m = sync.map()
      m:store("k", 1)
      assert_error_here("bad argument #3 to 'store' (value is nil (use delete))", function(at) at() m:store("k", nil) end)
      assert_error_here("bad argument #3 to 'store' (value is nil (use delete))", function(at) at() m:store("k") end)
      assert_error_here("bad argument #3 to 'safe_store' (value is nil (use delete))", function(at) at() m:safe_store("k") end)
      assert_error_here("bad argument #3 to 'add' (value is nil (use delete))", function(at) at() m:add("new") end)
      assert_error_here("bad argument #3 to 'swap' (value is nil (use delete))", function(at) at() m:swap("k", nil) end)
      assert_error_here("bad argument #3 to 'load_or_store' (value is nil (use delete))",
        function(at) at() m:load_or_store("new", nil) end)
      assert_error_here("bad argument #4 to 'compare_and_swap' (value is nil (use delete))",
        function(at) at() m:compare_and_swap("k", 1, nil) end)
      assert.are.equal(1, m:load("k"))
      assert.are.same({ nil, false }, { m:load("new") })
      assert.are.equal(1, m:len())
    end)

    it("refuses what spawn cannot copy, with spawn's message, and stores nothing", function()
      local m = sync.map()
      local co = coroutine.create(function() end)
      m:store("k", "before")
      assert_error_here("cannot copy a coroutine to another processor at value", function(at) at() m:store("k", co) end)
      assert_error_here("cannot copy a coroutine to another processor at value.a.b",
        function(at) at() m:store("k", { a = { b = co } }) end)
      assert_error_here("cannot copy a coroutine to another processor at value", function(at) at() m:add("new", co) end)
      assert_error_here("cannot copy a coroutine to another processor at value", function(at) at() m:swap("k", co) end)
      assert_error_here("cannot copy a coroutine to another processor at value",
        function(at) at() m:safe_store("k", co) end)
      assert_error_here("cannot copy a coroutine to another processor at value",
        function(at) at() m:load_or_store("new", co) end)
      assert_error_here("cannot copy a coroutine to another processor at value",
        function(at) at() m:compare_and_swap("k", "before", co) end)
      local up = co
      assert_contains(error_of(function() m:store("k", function() return up end) end),
        "cannot copy a coroutine to another processor at upvalue 'up' of value")
      assert_error_here("cannot copy a userdata to another processor at value",
        function(at) at() m:store("k", newproxy(true)) end)
      assert_contains(error_of(function() m:store("k", require("ffi").new("int[4]")) end), "cannot copy cdata")
      assert.are.equal("before", m:load("k"))
      assert.are.same({ nil, false }, { m:load("new") })
      assert.are.equal(1, m:len())
      -- spawn's own words for the same value
      local err = error_of(function() lugo.spawn(function() end, co) end)
      assert_contains(err, "cannot copy a coroutine to another processor at argument #2")
    end)

    it("raises when called on something that is not a map", function()
      local m = sync.map()
      local methods = getmetatable(m).__index
      local fake = setmetatable({}, { __index = methods })
      assert_contains(error_of(function() fake:load("k") end), "map expected, got table")
      assert_contains(error_of(function() fake:store("k", 1) end), "map expected, got table")
      assert_contains(error_of(function() fake:range(function() end) end), "map expected, got table")
      assert_error_here("bad argument #1 to 'load' (map expected, got string)", function(at) at() m.load("k") end)
      assert_contains(error_of(m.len, lugo.chan()), "map expected, got userdata")
      assert_contains(error_of(m.stats, nil), "map expected, got nil")
      for _, name in ipairs({ "load", "store", "safe_store", "add", "load_or_store", "load_and_delete", "delete",
                              "swap", "compare_and_swap", "compare_and_delete", "incr", "ttl", "expire", "len",
                              "range", "clear", "stats" }) do
        assert.is_function(m[name], name)
        assert_contains(error_of(m[name], sync.mutex(), "k", 1, 1), "map expected")
      end
      assert_error_here("bad argument #2 to 'range' (function expected, got nil)", function(at) at() m:range() end)
    end)
  end)

  describe("store, load and delete", function()
    it("store replaces, load reads, delete removes and is quiet about absent keys", function()
      local m = sync.map()
      assert.are.same({ true, n = 1 }, pack(m:store("k", 1)))
      assert.are.same({ 1, true }, { m:load("k") })
      assert.are.same({ true, n = 1 }, pack(m:store("k", "two")))
      assert.are.same({ "two", true }, { m:load("k") })
      assert.are.equal(1, m:len())
      assert.are.same({ n = 0 }, pack(m:delete("k")))
      assert.are.same({ nil, false }, { m:load("k") })
      m:delete("k")
      m:delete("never")
      assert.are.equal(0, m:len())
    end)

    it("holds many keys through growth and gives each back", function()
      local m = sync.map()
      local n = 20000
      for i = 1, n do m:store(i, i % 3 == 0 and ("s" .. i) or i * 2) end
      assert.are.equal(n, m:len())
      for i = 1, n do assert.are.equal(i % 3 == 0 and ("s" .. i) or i * 2, (m:load(i))) end
      for i = 1, n, 2 do m:delete(i) end
      assert.are.equal(n / 2, m:len())
      for i = 1, n do
        local v, ok = m:load(i)
        if i % 2 == 1 then assert.is_false(ok) else assert.are.equal(i % 3 == 0 and ("s" .. i) or i * 2, v) end
      end
      local s = m:stats()
      assert.are.equal(n / 2, s.len)
      assert.is_true(s.buckets >= n / 2 / 8)
      assert.is_true(s.bytes > 0)
    end)

    it("safe_store stores as store does when there is no capacity", function()
      local m = sync.map()
      assert.are.same({ true, n = 1 }, pack(m:safe_store("k", "v")))
      assert.are.same({ true, n = 1 }, pack(m:safe_store("k", "w")))
      assert.are.equal("w", m:load("k"))
    end)
  end)

  describe("add, load_or_store, load_and_delete and swap", function()
    it("add stores only an absent key", function()
      local m = sync.map()
      assert.are.same({ true, n = 1 }, pack(m:add("k", 1)))
      assert.are.same({ false, "exists", n = 2 }, pack(m:add("k", 2)))
      assert.are.equal(1, m:load("k"))
      m:delete("k")
      assert.is_true(m:add("k", 3))
      assert.are.equal(3, m:load("k"))
    end)

    it("load_or_store gives the stored value, or stores and gives the new one", function()
      local m = sync.map()
      local t = { 1 }
      local v, loaded = m:load_or_store("k", t)
      assert.are.equal(t, v) -- the caller's own value back, as Go's LoadOrStore
      assert.is_false(loaded)
      v, loaded = m:load_or_store("k", { 2 })
      assert.are.same({ 1 }, v)
      assert.is_true(loaded)
      assert.are.same({ false, false }, { m:load_or_store("f", false) })
      assert.are.same({ false, true }, { m:load_or_store("f", true) })
    end)

    it("load_and_delete gives the value and removes it once", function()
      local m = sync.map()
      m:store("k", { x = 1 })
      assert.are.same({ { x = 1 }, true }, { m:load_and_delete("k") })
      assert.are.same({ nil, false }, { m:load_and_delete("k") })
      assert.are.same({ nil, false }, { m:load("k") })
      assert.are.equal(0, m:len())
    end)

    it("swap stores and gives back the previous value", function()
      local m = sync.map()
      assert.are.same({ nil, false }, { m:swap("k", "a") })
      assert.are.same({ "a", true }, { m:swap("k", 2) })
      assert.are.same({ 2, true }, { m:swap("k", { 3 }) })
      assert.are.same({ { 3 }, true }, { m:swap("k", false) })
      assert.are.same({ false, true }, { m:load("k") })
    end)
  end)

  describe("compare_and_swap and compare_and_delete", function()
    it("swap or delete only when the value equals old", function()
      local m = sync.map()
      assert.is_false(m:compare_and_swap("k", 1, 2)) -- absent
      m:store("k", 1)
      assert.is_false(m:compare_and_swap("k", 2, 3))
      assert.is_false(m:compare_and_swap("k", "1", 3)) -- a string is not a number
      assert.is_false(m:compare_and_swap("k", true, 3))
      assert.is_true(m:compare_and_swap("k", 1, "one"))
      assert.are.equal("one", m:load("k"))
      assert.is_false(m:compare_and_swap("k", "on", "x"))
      assert.is_false(m:compare_and_swap("k", "one\0", "x"))
      assert.is_true(m:compare_and_swap("k", "one", true))
      assert.is_false(m:compare_and_swap("k", false, 0))
      assert.is_true(m:compare_and_swap("k", true, { t = 1 }))
      assert.are.same({ t = 1 }, m:load("k"))
      assert.is_false(m:compare_and_delete("k", "x"))
      m:store("k", 2.5)
      assert.is_false(m:compare_and_delete("k", 2))
      assert.is_true(m:compare_and_delete("k", 2.5))
      assert.are.same({ nil, false }, { m:load("k") })
      assert.is_false(m:compare_and_delete("k", 2.5))
    end)

    it("compares a value that has a ttl as one that has none", function()
      local m = sync.map()
      m:store("n", 5, 100)
      assert.is_true(m:compare_and_swap("n", 5, 6))
      m:store("s", "v", 100)
      assert.is_true(m:compare_and_delete("s", "v"))
      m:store("b", true, 100)
      assert.is_true(m:compare_and_swap("b", true, false))
    end)

    it("compares runtime objects by identity", function()
      local m = sync.map()
      local a, b = lugo.chan(), lugo.chan()
      m:store("ch", a)
      assert.is_false(m:compare_and_swap("ch", b, "x"))
      assert.is_true(m:compare_and_swap("ch", a, b))
      assert.are.equal(b, m:load("ch"))
      assert.is_false(m:compare_and_delete("ch", a))
      assert.is_true(m:compare_and_delete("ch", b))
      local inner = sync.map()
      m:store("m", inner)
      assert.is_true(m:compare_and_swap("m", inner, 1))
    end)

    it("raises for an old value that cannot be compared", function()
      local m = sync.map()
      m:store("k", { 1 })
      local msg = "(old value must be a string, number, boolean or runtime object, got %s)"
      assert_error_here("bad argument #3 to 'compare_and_swap' " .. msg:format("table"),
        function(at) at() m:compare_and_swap("k", { 1 }, 2) end)
      assert_error_here("bad argument #3 to 'compare_and_delete' " .. msg:format("table"),
        function(at) at() m:compare_and_delete("k", { 1 }) end)
      assert_error_here("bad argument #3 to 'compare_and_swap' " .. msg:format("nil"),
        function(at) at() m:compare_and_swap("k", nil, 2) end)
      assert_error_here("bad argument #3 to 'compare_and_delete' " .. msg:format("function"),
        function(at) at() m:compare_and_delete("k", print) end)
      -- nothing made for one argument is left behind when the other is refused
      assert_contains(error_of(function() m:compare_and_swap("k", coroutine.create(print), { 2 }) end), "cannot copy a coroutine")
      assert_contains(error_of(function() m:compare_and_swap("k", "old", coroutine.create(print)) end), "cannot copy a coroutine")
      assert_contains(error_of(function() m:compare_and_swap("k", { 1 }, { 2 }) end), "old value must be")
      assert_contains(error_of(function() m:compare_and_swap("k", "old", nil) end), "value is nil")
      assert.are.same({ 1 }, m:load("k"))
    end)
  end)

  describe("incr", function()
    it("adds to a number, starts from init, and says why it cannot", function()
      local m = sync.map()
      assert.are.same({ nil, "not found", n = 2 }, pack(m:incr("n", 1)))
      assert.are.same({ 11, n = 1 }, pack(m:incr("n", 1, 10)))
      assert.are.same({ 8.5, n = 1 }, pack(m:incr("n", -2.5, 10)))
      assert.are.equal(8.5, m:load("n"))
      assert.are.equal(8.5, m:incr("n", 0))
      m:store("s", "12")
      assert.are.same({ nil, "not a number", n = 2 }, pack(m:incr("s", 1)))
      assert.are.same({ nil, "not a number", n = 2 }, pack(m:incr("s", 1, 0)))
      m:store("t", { 1 })
      assert.are.same({ nil, "not a number", n = 2 }, pack(m:incr("t", 1)))
      m:store("b", true)
      assert.are.same({ nil, "not a number", n = 2 }, pack(m:incr("b", 1)))
      assert.are.equal("12", m:load("s"))
      assert_error_here("bad argument #3 to 'incr' (number expected, got string)", function(at) at() m:incr("n", "x") end)
      assert_error_here("bad argument #3 to 'incr' (number expected, got nil)", function(at) at() m:incr("n") end)
      assert_error_here("bad argument #4 to 'incr' (number expected, got table)", function(at) at() m:incr("n", 1, {}) end)
    end)

    it("loses no increment from goroutines on every processor", function()
      local m = sync.map()
      local n, k = 8, SANITIZED and 2000 or 20000
      local chans = {}
      for w = 1, n do
        chans[w] = spawn_pcall(function(m, w, k)
          local gosched = require("lugo.runtime").gosched
          local last = 0
          for i = 1, k do
            local v = m:incr("shared", 1, 0)
            if v <= last then return "went back: " .. v .. " after " .. last end
            last = v
            m:incr("own" .. w, 2, 0)
            if i % 256 == 0 then gosched() end
          end
          return true
        end, m, w, k)
      end
      for w, r in ipairs(all_results(chans, HANG, "incrementer")) do assert.is_true(r, w) end
      assert.are.equal(n * k, m:load("shared"))
      for w = 1, n do assert.are.equal(2 * k, m:load("own" .. w)) end
    end)

    it("loses no increment while other calls take, swap and delete the counter", function()
      -- an integer that incr counts is a cell incr adds to without a lock
      -- (runtime/map.c, V_CTR); every other call closes the cell first:
      -- what they take plus what is left is every increment, exactly
      local m = sync.map()
      local n, k = 3, SANITIZED and 3000 or 30000
      local chans = {}
      for w = 1, n do
        chans[w] = spawn_pcall(function(m, k)
          local gosched = require("lugo.runtime").gosched
          for i = 1, k do
            m:incr("c", 1, 0)
            if i % 256 == 0 then gosched() end
          end
          return true
        end, m, k)
      end
      local taker = spawn_pcall(function(m, n, k)
        local gosched = require("lugo.runtime").gosched
        local taken, round = 0, 0
        local function left() return m:load("c") or 0 end
        while taken + left() < n * k do
          round = round + 1
          local which = round % 5
          if which == 0 then
            local v = m:swap("c", 0)
            taken = taken + (v or 0)
          elseif which == 1 then
            local v, ok = m:load_and_delete("c")
            if ok then taken = taken + v end
          elseif which == 2 then
            local v = m:load("c")
            if v and m:compare_and_swap("c", v, 0) then taken = taken + v end
          elseif which == 3 then
            local v = m:load("c")
            if v and m:compare_and_delete("c", v) then taken = taken + v end
          else
            -- a fraction: the counter becomes a plain number again (only
            -- this goroutine deletes, so the second finds what the first did)
            if m:incr("c", 0.5) then m:incr("c", -0.5) end
          end
          gosched()
        end
        return taken
      end, m, n, k)
      for w, r in ipairs(all_results(chans, HANG, "incrementer")) do assert.is_true(r, w) end
      local taken = all_results({ taker }, HANG, "taker")[1]
      assert.are.equal(n * k, taken + (m:load("c") or 0))
    end)
  end)

  describe("len, clear and stats", function()
    it("len counts entries; clear removes them all and leaves the map usable", function()
      local m = sync.map()
      for i = 1, 1000 do m:store("k" .. i, { i }) end
      assert.are.equal(1000, m:len())
      m:clear()
      assert.are.equal(0, m:len())
      assert.are.same({ nil, false }, { m:load("k1") })
      assert.are.same({}, entries(m))
      local s = m:stats()
      assert.are.equal(0, s.len)
      assert.are.equal(0, s.bytes)
      m:store("k1", "again")
      assert.are.equal("again", m:load("k1"))
      assert.are.equal(1, m:len())
    end)

    it("stats reports size, buckets and growth", function()
      local m = sync.map({ shards = 8 })
      for i = 1, 5000 do m:store(i, "v" .. i) end
      local s = m:stats()
      assert.are.equal(5000, s.len)
      assert.are.equal(0, s.capacity)
      assert.are.equal(8, s.shards)
      assert.is_true(s.bytes >= 5000 * 20)
      assert.is_true(s.buckets >= 5000 / 6.5 / 2, s.buckets) -- 8 slots a bucket, 6.5 on average at most
      assert.is_true(s.growing_shards >= 0 and s.growing_shards <= 8)
      assert.is_true(s.overflow_buckets >= 0)
      assert.are.equal(0, s.evictions)
      assert.are.equal(0, s.expirations)
      for i = 1, 5000 do m:delete(i) end
      s = m:stats()
      assert.are.equal(0, s.len)
      assert.are.equal(0, s.bytes)
    end)

    it("stats counts the bytes of every entry, back to 0 whichever call removed them", function()
      local m = sync.map()
      m:store("plain", 1)
      m:store("str", "a string")
      m:store("ttl", { 1, 2 }, 100)
      m:store("short", "gone soon", 0.02)
      m:store("n", 5)
      m:expire("n", 100) -- an inline number boxed
      m:incr("n", 1) -- a new box
      m:incr("c", 1, 0, 100)
      m:incr("c", 1)
      m:swap("str", { "swapped" })
      m:store("cas", "x")
      m:compare_and_swap("cas", "x", string.rep("y", 1000))
      m:store("cad", true)
      m:store("lad", "lad")
      m:store("exp", "e")
      m:expire("exp", 100)
      m:expire("exp", 0)
      local s = m:stats()
      assert.are.equal(10, s.len)
      assert.is_true(s.bytes > 1000)
      time.sleep(0.1)
      assert.are.same({ nil, false }, { m:load("short") }) -- removed when found expired
      m:compare_and_delete("cad", true)
      m:load_and_delete("lad")
      for _, k in ipairs({ "plain", "str", "ttl", "n", "c", "cas", "exp" }) do m:delete(k) end
      s = m:stats()
      assert.are.equal(0, s.len)
      assert.are.equal(0, s.bytes)
    end)

    it("clear while other processors store and load does no harm", function()
      local m = sync.map()
      local done = lugo.chan()
      local chans = {}
      for w = 1, 3 do
        chans[w] = spawn_pcall(function(m, done, w)
          local gosched = require("lugo.runtime").gosched
          local i, bad = 0, 0
          while true do
            for _ = 1, 100 do
              i = i + 1
              m:store(w .. ":" .. (i % 500), { w = w, i = i })
              local v = m:load(w .. ":" .. ((i * 7) % 500))
              if v ~= nil and (type(v) ~= "table" or v.w ~= w) then bad = bad + 1 end
            end
            local lugo = require "lugo"
            if lugo.select(lugo.case.recv(done), lugo.case.default) == 1 then return bad end
            gosched()
          end
        end, m, done, w)
      end
      for _ = 1, 50 do
        m:clear()
        time.sleep(0.001)
      end
      done:close()
      for w, bad in ipairs(all_results(chans, HANG, "writer")) do assert.are.equal(0, bad, w) end
      m:clear()
      assert.are.equal(0, m:len())
      assert.are.equal(0, m:stats().bytes)
    end)
  end)
end)

describe("sync.map ttls", function()
  it("keeps an entry until its ttl passes, then it is gone", function()
    local m = sync.map()
    assert.is_true(m:store("k", "v", 0.05))
    assert.are.same({ "v", true }, { m:load("k") })
    local left = m:ttl("k")
    assert.is_true(left > 0 and left <= 0.05, left)
    time.sleep(0.2)
    assert.are.same({ nil, false }, { m:load("k") })
    assert.are.same({ nil, "not found", n = 2 }, pack(m:ttl("k")))
    assert.is_true(m:stats().expirations >= 1)
  end)

  it("expires numbers and booleans as well as boxed values", function()
    local m = sync.map()
    m:store("n", 1, 0.05)
    m:store("b", false, 0.05)
    m:store("t", { 1 }, 0.05)
    m:store("forever", 2)
    assert.are.equal(1, m:load("n"))
    assert.are.same({ false, true }, { m:load("b") })
    time.sleep(0.2)
    for _, k in ipairs({ "n", "b", "t" }) do assert.are.same({ nil, false }, { m:load(k) }, k) end
    assert.are.equal(2, m:load("forever"))
  end)

  it("ttl counts down, and is 0 for an entry without one", function()
    local m = sync.map()
    m:store("k", "v", 10)
    local t1 = m:ttl("k")
    time.sleep(0.02)
    local t2 = m:ttl("k")
    assert.is_true(t1 <= 10 and t1 > 9, t1)
    assert.is_true(t2 < t1, t2 .. " after " .. t1)
    m:store("n", 1)
    m:store("s", "s")
    m:store("z", "z", 0) -- 0: none
    assert.are.equal(0, m:ttl("n"))
    assert.are.equal(0, m:ttl("s"))
    assert.are.equal(0, m:ttl("z"))
    assert.are.same({ nil, "not found", n = 2 }, pack(m:ttl("absent")))
  end)

  it("a store without a ttl replaces the entry's ttl by none", function()
    local m = sync.map()
    m:store("k", "v", 0.05)
    m:store("k", "w")
    assert.are.equal(0, m:ttl("k"))
    time.sleep(0.2)
    assert.are.equal("w", m:load("k"))
  end)

  it("expire adds a ttl, changes it and removes it", function()
    local m = sync.map()
    m:store("n", 7)
    m:store("b", true)
    m:store("s", "str")
    m:store("keep", "kept", 0.05)
    for _, k in ipairs({ "n", "b", "s" }) do assert.are.same({ true, n = 1 }, pack(m:expire(k, 0.05)), k) end
    assert.is_true(m:ttl("n") > 0)
    assert.are.equal(7, m:load("n")) -- the value is kept
    assert.are.equal(true, m:load("b"))
    assert.are.equal(8, m:incr("n", 1)) -- and still a number
    assert.is_true(m:ttl("n") > 0) -- incr keeps the ttl
    assert.is_true(m:expire("keep", 0))
    assert.are.equal(0, m:ttl("keep"))
    assert.are.same({ nil, "not found", n = 2 }, pack(m:expire("absent", 1)))
    time.sleep(0.2)
    for _, k in ipairs({ "n", "b", "s" }) do assert.are.same({ nil, false }, { m:load(k) }, k) end
    assert.are.equal("kept", m:load("keep"))
    assert.are.same({ nil, "not found", n = 2 }, pack(m:expire("n", 1))) -- expired: not found
    assert_error_here("bad argument #3 to 'expire' (number expected, got no value)", function(at) at() m:expire("keep") end)
    assert_error_here("bad argument #3 to 'expire' (ttl must not be negative)", function(at) at() m:expire("keep", -1) end)
    assert_error_here("bad argument #4 to 'store' (ttl must not be negative)", function(at) at() m:store("k", 1, -1) end)
    assert_error_here("bad argument #4 to 'store' (number expected, got string)", function(at) at() m:store("k", 1, "soon") end)
  end)

  it("treats an expired entry as absent for every call", function()
    local m = sync.map()
    local keys = { "add", "los", "swap", "cas", "cad", "lad", "incr", "range" }
    for _, k in ipairs(keys) do m:store(k, 1, 0.05) end
    assert.are.same({ false, "exists", n = 2 }, pack(m:add("add", 2)))
    time.sleep(0.2)
    assert.are.same({ true, n = 1 }, pack(m:add("add", 2)))
    assert.are.equal(2, m:load("add"))
    assert.are.equal(0, m:ttl("add"))
    assert.are.same({ "new", false }, { m:load_or_store("los", "new") })
    assert.are.same({ nil, false }, { m:swap("swap", "new") })
    assert.is_false(m:compare_and_swap("cas", 1, 2))
    assert.is_false(m:compare_and_delete("cad", 1))
    assert.are.same({ nil, false }, { m:load_and_delete("lad") })
    assert.are.same({ nil, "not found", n = 2 }, pack(m:incr("incr", 1)))
    local seen = entries(m)
    assert.are.same({ add = 2, los = "new", swap = "new" }, seen)
  end)

  it("incr starts an entry with init_ttl, keeps it while counting, then starts again", function()
    local m = sync.map()
    assert.are.equal(11, m:incr("k", 1, 10, 0.05))
    local left = m:ttl("k")
    assert.is_true(left > 0 and left <= 0.05, left)
    assert.are.equal(12, m:incr("k", 1, 10, 100)) -- init_ttl only for a new entry
    left = m:ttl("k")
    assert.is_true(left > 0 and left <= 0.05, left)
    time.sleep(0.2)
    assert.are.same({ nil, false }, { m:load("k") })
    assert.are.same({ nil, "not found", n = 2 }, pack(m:incr("k", 1)))
    assert.are.equal(1, m:incr("k", 1, 0))
    assert.are.equal(0, m:ttl("k"))
    assert_error_here("bad argument #5 to 'incr' (ttl must not be negative)", function(at) at() m:incr("j", 1, 0, -1) end)
  end)

  it("removes expired entries as writes go by, not only when they are read", function()
    local m = sync.map({ shards = 8 })
    for i = 1, 200 do m:store("old" .. i, i, 0.02) end
    time.sleep(0.1)
    for i = 1, 5000 do m:store("new" .. (i % 100), i) end
    local s = m:stats()
    assert.is_true(s.expirations > 0, s.expirations)
    assert.is_true(s.len < 300, s.len)
  end)

  it("removes the expired entries of a map nobody touches", function()
    local m = sync.map()
    for i = 1, 3000 do m:store("k" .. i, (i % 2 == 0) and i or ("v" .. i), 0.05) end
    m:store("kept", "forever")
    -- no call on the map from here (stats reads counts, removes nothing):
    -- only the runtime's sweep can remove what is left
    local deadline = time.now() + 10
    while m:stats().len > 1 and time.now() < deadline do time.sleep(0.02) end
    local s = m:stats()
    assert.are.equal(1, s.len)
    assert.are.equal(3000, s.expirations)
    assert.are.equal("forever", m:load("kept"))
    -- the map is still swept after being emptied and given new ttls
    for i = 1, 100 do m:store(i, true, 0.02) end
    deadline = time.now() + 10
    while m:stats().len > 1 and time.now() < deadline do time.sleep(0.02) end
    assert.are.equal(1, m:len())
  end)

  it("expires for every processor what one stored", function()
    local m = sync.map()
    results(spawn_elsewhere(function(m)
      m:store("k", "v", 0.05)
      m:incr("n", 1, 0, 0.05)
    end, m))
    assert.are.equal("v", m:load("k"))
    time.sleep(0.2)
    local gone = results(spawn_elsewhere(function(m)
      return not select(2, m:load("k")) and not select(2, m:load("n"))
    end, m))
    assert.is_true(gone)
  end)
end)

describe("sync.map with a capacity", function()
  -- A store of key k and a value of about `size` bytes, checking the budget.
  local function check_bytes(m)
    local s = m:stats()
    assert(s.bytes <= s.capacity, ("%d bytes in a map of %d"):format(s.bytes, s.capacity))
    return s
  end

  it("never holds more than its capacity, and says when a store evicted", function()
    local m = sync.map({ capacity = "64k" })
    local n, forcible, last_evictions = 4000, 0, 0
    for i = 1, n do
      local ok, why = m:store("key" .. i, i % 2 == 0 and i or ("value " .. i))
      assert.is_true(ok)
      local s = check_bytes(m)
      if why then
        assert.are.equal("forcible", why)
        forcible = forcible + 1
        assert.is_true(s.evictions > last_evictions, "forcible without an eviction at " .. i)
      else
        assert.are.equal(last_evictions, s.evictions, "an eviction without forcible at " .. i)
      end
      last_evictions = s.evictions
    end
    assert.is_true(forcible > 0)
    local s = m:stats()
    assert.is_true(s.len < n and s.len > 0, s.len)
    assert.are.equal(s.len, m:len())
    assert.is_true(s.evictions >= n - s.len)
    -- the latest store survives its own eviction
    assert.are.equal("value 3999", m:load("key3999"))
    assert.are.equal(4000, m:load("key4000"))
  end)

  it("keeps the entries that are loaded over those that are not (CLOCK)", function()
    local m = sync.map({ capacity = "64k" })
    local hot, cold = {}, {}
    for i = 1, 40 do
      hot[i], cold[i] = "hot" .. i, "untouched" .. i
      m:store(hot[i], "value " .. i)
      m:store(cold[i], "value " .. i)
    end
    for i = 1, 5000 do
      local _, why = m:store("filler" .. i, "value " .. i)
      check_bytes(m)
      if i % 5 == 0 then for _, k in ipairs(hot) do m:load(k) end end
      assert.is_true(why == nil or why == "forcible")
    end
    local hot_left, cold_left = 0, 0
    for i = 1, 40 do
      if select(2, m:load(hot[i])) then hot_left = hot_left + 1 end
      if select(2, m:load(cold[i])) then cold_left = cold_left + 1 end
    end
    assert.is_true(m:stats().evictions > 1000)
    assert.is_true(hot_left > 20, hot_left .. " of 40 hot keys left")
    assert.is_true(hot_left > cold_left, hot_left .. " hot, " .. cold_left .. " untouched")
  end)

  it("safe_store refuses what would evict: nil, \"no memory\"", function()
    local m = sync.map({ capacity = "16k" })
    local stored, refused = 0, nil
    for i = 1, 5000 do
      local ok, why = m:safe_store("k" .. i, "value " .. i)
      if ok then
        assert.is_nil(why)
        stored = stored + 1
      else
        assert.are.same({ nil, "no memory" }, { ok, why })
        refused = i
        break
      end
      check_bytes(m)
    end
    assert.is_not_nil(refused, "safe_store never refused")
    assert.are.same({ nil, false }, { m:load("k" .. refused) })
    local s = check_bytes(m)
    assert.are.equal(0, s.evictions)
    assert.are.equal(stored, s.len)
    for i = 1, stored do assert.are.equal("value " .. i, m:load("k" .. i)) end
    -- refusals leave everything as it was; a store makes room instead
    local refusals = 0
    for i = refused, refused + 2000 do
      if not m:safe_store("k" .. i, "value " .. i) then refusals = refusals + 1 end
    end
    assert.is_true(refusals > 0)
    assert.are.equal(0, m:stats().evictions)
    -- a replacement of the same size needs no room
    assert.is_true(m:safe_store("k1", "value 0"))
    assert.are.equal("value 0", m:load("k1"))
    local _, why = m:store("another", string.rep("x", 300))
    assert.are.equal("forcible", why)
    check_bytes(m)
  end)

  it("spares the entry a compare_and_swap makes room for, even while its shard grows", function()
    local tried, lost = 0, {}
    for round = 1, 10 do
      local m = sync.map({ capacity = 8 * 64 * 1024, shards = 8 })
      -- numbers only (inline, a few bytes each) until a shard is growing:
      -- some keys are still in its old buckets
      local n = 0
      repeat
        n = n + 1
        m:store(n, n)
      until n > 1000 and m:stats().growing_shards > 0
      local big = string.rep("x", 20000) -- a third of a shard's budget
      for k = 1, n do
        if m:stats().growing_shards == 0 then break end
        -- false when an earlier swap's eviction took k (no load: that
        -- would set its CLOCK bit)
        if m:compare_and_swap(k, k, big) then
          tried = tried + 1
          if not select(2, m:load(k)) then lost[#lost + 1] = k .. " in round " .. round end
        end
        check_bytes(m)
      end
    end
    assert.is_true(tried > 0)
    assert.are.same({}, lost)
  end)

  it("refuses with nil, 'no memory' an entry larger than a shard's share of the capacity (store, safe_store, add)",
    function()
    local m = sync.map({ capacity = "4k" }) -- 8 shards or more: 512 bytes each at most
    local big = string.rep("x", 2000)
    for i = 1, 10 do
      assert.are.same({ nil, "no memory" }, { m:store("big" .. i, big) })
      assert.are.same({ nil, "no memory" }, { m:safe_store("big" .. i, big) })
      assert.are.same({ nil, "no memory" }, { m:add("big" .. i, big) })
    end
    assert.are.equal(0, m:len())
    assert.is_true(m:stats().bytes <= 4096)
    assert.are.same({ true }, { m:store("small", "x") })
  end)

  it("does not set CLOCK bits without a capacity, nor evict", function()
    local m = sync.map()
    for i = 1, 3000 do
      local ok, why = m:store(i, "v" .. i)
      assert.is_true(ok)
      assert.is_nil(why)
    end
    assert.are.equal(3000, m:len())
    assert.are.equal(0, m:stats().evictions)
  end)

  it("stays within its capacity while every processor stores into it", function()
    local m = sync.map({ capacity = "32k" })
    local done = lugo.chan()
    local chans = {}
    for w = 1, 3 do
      chans[w] = spawn_pcall(function(m, done, w)
        local lugo, gosched = require "lugo", require("lugo.runtime").gosched
        local i, forcible = 0, 0
        while true do
          for _ = 1, 200 do
            i = i + 1
            local _, why = m:store(w .. ":" .. i, "value " .. i)
            if why == "forcible" then forcible = forcible + 1 end
            m:load(w .. ":" .. (i - 50))
          end
          if lugo.select(lugo.case.recv(done), lugo.case.default) == 1 then return forcible end
          gosched()
        end
      end, m, done, w)
    end
    for _ = 1, 200 do
      check_bytes(m)
      runtime.gosched()
      if _ % 20 == 0 then time.sleep(0.001) end
    end
    done:close()
    local total = 0
    for _, f in ipairs(all_results(chans, HANG, "writer")) do total = total + f end
    check_bytes(m)
    assert.is_true(total > 0)
  end)
end)

describe("sync.map and runtime objects", function()
  it("is one map wherever it goes: spawn arguments, upvalues and channels carry it by reference", function()
    local m = sync.map()
    results(spawn_elsewhere(function(m) m:store("by argument", true) end, m))
    results(spawn_elsewhere(function() m:store("by upvalue", true) end))
    local ch = lugo.chan(1)
    ch:send(m)
    results(spawn_elsewhere(function(ch) ch:recv():store("by channel", true) end, ch))
    local got = lugo.chan(1)
    results(spawn_elsewhere(function(got) got:send(sync.map()) end, got))
    local theirs = got:recv()
    theirs:store("x", 1)
    assert.are.same({ ["by argument"] = true, ["by upvalue"] = true, ["by channel"] = true }, entries(m))
    assert.are.equal(1, results(spawn_elsewhere(function(t) return t:load("x") end, theirs)))
  end)

  it("holds a channel that, loaded on another processor, delivers to this goroutine", function()
    local m = sync.map()
    local ch = lugo.chan()
    m:store("reply", ch)
    assert.are.equal(ch, m:load("reply")) -- the same object, the same proxy in this VM
    local res = spawn_elsewhere(function(m)
      local c = m:load("reply")
      for i = 1, 3 do c:send("hello " .. i) end
      return true
    end, m)
    for i = 1, 3 do assert.are.equal("hello " .. i, recv(ch, "a value through the stored channel")) end
    assert.is_true(results(res))
  end)

  it("holds a map inside a map, by reference", function()
    local outer, inner = sync.map(), sync.map()
    outer:store("inner", inner)
    outer:store("nested", { list = { inner, inner } })
    outer:load("inner"):store("a", 1)
    assert.are.equal(1, inner:load("a"))
    local t = outer:load("nested")
    assert.are.equal(inner, t.list[1])
    assert.are.equal(t.list[1], t.list[2])
    local chans = {}
    for w = 1, 4 do
      chans[w] = spawn_pcall(function(outer, w)
        local gosched = require("lugo.runtime").gosched
        local inn = outer:load("inner")
        for i = 1, 1000 do
          inn:incr("count", 1, 0)
          outer:load("nested").list[2]:incr("count", 1, 0)
          if i % 100 == 0 then gosched() end
        end
        inn:store("from " .. w, true)
        return true
      end, outer, w)
    end
    all_results(chans, HANG, "user of the inner map")
    assert.are.equal(8000, inner:load("count"))
    for w = 1, 4 do assert.is_true(inner:load("from " .. w)) end
  end)

  it("keeps an object alive while an entry holds it, and lets it go with the entry", function()
    local m = sync.map()
    do
      local ch = lugo.chan(1)
      ch:send("kept")
      m:store("ch", ch)
      m:store("inner", sync.map())
      m:load("inner"):store("v", "inner kept")
    end
    collectgarbage()
    collectgarbage()
    results(spawn_elsewhere(function() collectgarbage() collectgarbage() end))
    assert.are.equal("kept", m:load("ch"):recv())
    assert.are.equal("inner kept", m:load("inner"):load("v"))
    m:delete("ch")
    m:store("inner", 0)
    collectgarbage()
    assert.are.equal(1, m:len())
  end)

  it("holds mutexes, wait groups and other runtime objects", function()
    local m = sync.map()
    local wg = sync.waitgroup()
    local mu = sync.mutex()
    m:store("wg", wg)
    m:store("mu", mu)
    wg:add(3)
    local chans = {}
    for w = 1, 3 do
      chans[w] = spawn_pcall(function(m)
        local mu = m:load("mu")
        mu:lock()
        m:incr("inside", 1, 0)
        mu:unlock()
        m:load("wg"):done()
        return true
      end, m)
    end
    local done = lugo.chan(1)
    lugo.go(function() wg:wait() done:send(true) end)
    assert.is_true(recv_within(done, HANG))
    all_results(chans, HANG, "waitgroup user")
    assert.are.equal(3, m:load("inside"))
  end)
end)

describe("sync.map range", function()
  it("calls f for every entry once, with keys of every kind", function()
    local m = sync.map()
    local want = { [1] = "one", ["1"] = "string one", [true] = "yes", [false] = "no", [2.5] = { t = 1 } }
    for k, v in pairs(want) do m:store(k, v) end
    for i = 1, 1000 do m:store("k" .. i, i) want["k" .. i] = i end
    local seen, calls = {}, 0
    assert.are.same({ n = 0 }, pack(m:range(function(k, v)
      calls = calls + 1
      assert.is_nil(seen[k], "twice: " .. tostring(k))
      seen[k] = v
    end)))
    assert.are.equal(1005, calls)
    assert.are.same(want, seen)
  end)

  it("calls nothing on an empty map", function()
    local calls = 0
    sync.map():range(function() calls = calls + 1 end)
    assert.are.equal(0, calls)
  end)

  it("stops when f returns false, and only for false", function()
    local m = sync.map()
    for i = 1, 100 do m:store(i, i) end
    local calls = 0
    m:range(function()
      calls = calls + 1
      if calls == 10 then return false end
    end)
    assert.are.equal(10, calls)
    calls = 0
    m:range(function() calls = calls + 1 return nil end)
    assert.are.equal(100, calls)
    calls = 0
    m:range(function() calls = calls + 1 return 0 end)
    assert.are.equal(100, calls)
  end)

  it("lets an error of f through", function()
    local m = sync.map()
    for i = 1, 100 do m:store(i, { i }) end
    local calls = 0
    local err = error_of(function() m:range(function() calls = calls + 1 if calls == 5 then error("stop here", 0) end end) end)
    assert.are.equal("stop here", err)
    assert.are.equal(5, calls)
    assert.are.equal(100, m:len())
  end)

  it("gives copies of the values", function()
    local m = sync.map()
    m:store("t", { n = 1 })
    m:range(function(_, v) v.n = 2 end)
    assert.are.equal(1, m:load("t").n)
  end)

  it("lets f block: a send to a goroutine on another processor for each entry", function()
    local m = sync.map()
    for i = 1, 300 do m:store(i, i * 2) end
    local keys, replies = lugo.chan(), lugo.chan()
    local res = spawn_elsewhere(function(m, keys, replies)
      for k in keys:range() do
        replies:send(k + (m:load(k) or 0))
      end
      return true
    end, m, keys, replies)
    local seen, sum = {}, 0
    m:range(function(k, v)
      keys:send(k)
      assert.are.equal(k * 3, helper.recv(replies, "the other goroutine's reply"))
      assert.is_nil(seen[k])
      seen[k] = true
      sum = sum + v
    end)
    keys:close()
    assert.is_true(results(res))
    assert.are.equal(300 * 301, sum)
  end)

  it("lets f use the map: delete, store, incr", function()
    local m = sync.map()
    local n = 2000
    for i = 1, n do m:store(i, i) end
    local seen, calls = {}, 0
    m:range(function(k, v)
      calls = calls + 1
      assert.is_nil(seen[k], "twice: " .. tostring(k))
      seen[k] = true
      if type(k) == "number" then
        assert.are.equal(k, v)
        m:delete(k)
        m:store("new" .. k, k) -- may or may not be visited
        m:incr("calls", 1, 0)
        if k < n then m:store(k + 1, k + 1) end -- a store over a present key: still visited once
      end
    end)
    for i = 1, n do assert.is_true(seen[i], "never saw " .. i) end
    -- only the numbers were there all along; what was stored meanwhile may show
    assert.are.equal(n, m:load("calls"))
    local left = 0
    m:range(function(k) if type(k) == "number" then left = left + 1 end end)
    assert.is_true(left <= n)
    assert.is_true(calls >= n)
  end)
end)

-- One of the goroutines of the random-operation test: `ops` operations on
-- the map's four families of keys (see the test), checking what it can on
-- the way and returning what the body checks at the end. Runs on any
-- processor: it captures nothing and requires what it uses.
local function random_worker(m, w, ops, seed, start, NG, NI, NC, NS, NL)
  local gosched = require("lugo.runtime").gosched
  start:recv() -- closed when every worker is spawned: they start together
  local state = seed
  local function rand(n) -- a small LCG: math.random is per VM, and shared at -p 1
    state = (state * 1103515245 + 12345) % 2147483648
    return math.floor(state / 65536) % n + 1
  end
  local bad, errors = 0, {}
  local function fail(msg)
    bad = bad + 1
    if #errors < 5 then errors[#errors + 1] = msg end
  end
  -- general keys: values name their key, writer and sequence number; per
  -- key and writer the sequence numbers this goroutine sees never go back
  local seen = {} -- seen[i][writer] = highest seq seen
  for i = 1, NG do seen[i] = {} end
  local function check_general(i, v, how)
    local key, writer, seq
    if type(v) == "string" then
      key, writer, seq = v:match("^g(%d+):(%d+):(%d+)$")
      key, writer, seq = tonumber(key), tonumber(writer), tonumber(seq)
    elseif type(v) == "table" then
      key, writer, seq = v.key, v.w, v.seq
    end
    if key ~= i or not writer or writer < 1 or writer > 4 or not seq then
      return fail(how .. " of g" .. i .. " gave " .. tostring(v))
    end
    local last = seen[i][writer] or 0
    if seq < last then
      return fail(("%s of g%d gave writer %d's seq %d after %d"):format(how, i, writer, seq, last))
    end
    seen[i][writer] = seq
  end
  local function general_value(i, seq)
    if seq % 2 == 0 then return "g" .. i .. ":" .. w .. ":" .. seq end
    return { key = i, w = w, seq = seq }
  end
  local incr_sums = {}
  local incr_last = {}
  local los = {} -- los[key] = the winner this goroutine was told of
  local los_gen = {}
  local cas_won = {} -- cas_won[i] = { old values this goroutine swapped from }
  local swap_stored, swap_prev = {}, {} -- [i] = { values }
  for op = 1, ops do
    local kind = rand(8)
    if kind == 1 then -- store
      local i = rand(NG)
      local r, extra = m:store("g" .. i, general_value(i, op))
      if r ~= true or extra ~= nil then fail("store gave " .. tostring(r) .. ", " .. tostring(extra)) end
      seen[i][w] = op
    elseif kind == 2 then -- load
      local i = rand(NG)
      local v, ok = m:load("g" .. i)
      if ok then check_general(i, v, "load") elseif v ~= nil then fail("load gave " .. tostring(v) .. " not ok") end
    elseif kind == 3 then -- delete, three ways
      local i = rand(NG)
      local how = rand(3)
      if how == 1 then
        m:delete("g" .. i)
      elseif how == 2 then
        local v, ok = m:load_and_delete("g" .. i)
        if ok then check_general(i, v, "load_and_delete") end
      else
        local v = m:load("g" .. i)
        if type(v) == "string" then
          check_general(i, v, "load")
          m:compare_and_delete("g" .. i, v)
        end
      end
    elseif kind == 4 then -- incr
      if rand(10) == 1 then -- a general key holds no number
        local i = rand(NG)
        local v, why = m:incr("g" .. i, 1)
        if v ~= nil or (why ~= "not found" and why ~= "not a number") then
          fail("incr of g" .. i .. " gave " .. tostring(v) .. ", " .. tostring(why))
        end
      else
        local i = rand(NI)
        local d = rand(9)
        local v = m:incr("i" .. i, d, 0)
        if type(v) ~= "number" or v <= (incr_last[i] or 0) then
          fail("incr of i" .. i .. " gave " .. tostring(v) .. " after " .. tostring(incr_last[i]))
        end
        incr_last[i] = v
        incr_sums[i] = (incr_sums[i] or 0) + d
      end
    elseif kind == 5 then -- load_or_store on a key fresh for this goroutine
      local i = rand(NL)
      local gen = (los_gen[i] or 0) + 1
      los_gen[i] = gen
      local key = "l" .. i .. "." .. gen
      local actual, loaded = m:load_or_store(key, w)
      if loaded then
        if actual == w or type(actual) ~= "number" then fail("load_or_store of " .. key .. " loaded " .. tostring(actual)) end
      elseif actual ~= w then
        fail("load_or_store of " .. key .. " stored but gave " .. tostring(actual))
      end
      los[key] = actual
    elseif kind == 6 then -- compare_and_swap: racers from the same old value
      local i = rand(NC)
      local cur, ok = m:load("c" .. i)
      if not ok then
        fail("c" .. i .. " is gone")
      else
        local n = type(cur) == "number" and cur or tonumber(cur:match("^n(%d+)$"))
        local new = type(cur) == "number" and n + 1 or ("n" .. (n + 1))
        if m:compare_and_swap("c" .. i, cur, new) then
          local won = cas_won[i] or {}
          cas_won[i] = won
          won[#won + 1] = n
        end
      end
    elseif kind == 7 then -- swap in a value no one else stores
      local i = rand(NS)
      local v = i % 2 == 0 and (w * 1e7 + op) or (w .. ":" .. op)
      local prev, loaded = m:swap("s" .. i, v)
      if not loaded then fail("swap of s" .. i .. " found nothing") end
      swap_stored[i] = swap_stored[i] or {}
      swap_prev[i] = swap_prev[i] or {}
      table.insert(swap_stored[i], v)
      table.insert(swap_prev[i], prev)
    else -- add
      local i = rand(NG)
      local r, why = m:add("g" .. i, general_value(i, op))
      if r == true then
        if why ~= nil then fail("add gave true, " .. tostring(why)) end
        seen[i][w] = op
      elseif r ~= false or why ~= "exists" then
        fail("add gave " .. tostring(r) .. ", " .. tostring(why))
      end
    end
    if op % 128 == 0 then gosched() end
  end
  return { bad = bad, errors = errors, incr = incr_sums, los = los, cas = cas_won,
           swap_stored = swap_stored, swap_prev = swap_prev }
end

describe("sync.map under goroutines on every processor", function()
  it("keeps every operation atomic: 4 goroutines, 100,000 random operations each", function()
    -- Families of keys: g1..g400 general (store, load, delete, add, and incr
    -- that must fail), i1..i200 incr only, c1..c200 compare_and_swap only
    -- (a counter, as a number or as "n<count>"), s1..s200 swap only; and
    -- l<i>.<gen> for load_or_store, a key each goroutine meets once.
    local NG, NI, NC, NS, NL = 400, 200, 200, 200, 50
    local W, OPS = 4, SANITIZED and 20000 or 100000
    local m = sync.map()
    for i = 1, NC do m:store("c" .. i, i % 2 == 0 and 0 or "n0") end
    for i = 1, NS do m:store("s" .. i, "init" .. i) end
    local start = lugo.chan()
    local chans = {}
    for w = 1, W do chans[w] = spawn_pcall(random_worker, m, w, OPS, w * 7919, start, NG, NI, NC, NS, NL) end
    start:close()
    local res = all_results(chans, HANG, "random worker")
    for w = 1, W do
      assert.are.same({}, res[w].errors, "worker " .. w)
      assert.are.equal(0, res[w].bad, "worker " .. w)
    end
    -- incr: the totals are exact
    for i = 1, NI do
      local sum = 0
      for w = 1, W do sum = sum + (res[w].incr[i] or 0) end
      local v, ok = m:load("i" .. i)
      if sum == 0 then assert.is_false(ok) else assert.are.equal(sum, v, "i" .. i) end
    end
    -- load_or_store: one winner per key, the one every loser was told of
    local keys, winners = {}, {}
    for w = 1, W do
      for key, actual in pairs(res[w].los) do
        keys[key] = true
        if actual == w then
          assert.is_nil(winners[key], "two winners for " .. key)
          winners[key] = w
        end
      end
    end
    local nkeys = 0
    for key in pairs(keys) do
      nkeys = nkeys + 1
      assert.is_not_nil(winners[key], "no winner for " .. key)
      for w = 1, W do
        local actual = res[w].los[key]
        if actual ~= nil then assert.are.equal(winners[key], actual, key) end
      end
      assert.are.equal(winners[key], m:load(key))
    end
    assert.is_true(nkeys > 0)
    -- compare_and_swap: from each count exactly one winner, and the count
    -- is the number of wins
    local total_wins = 0
    for i = 1, NC do
      local olds = {}
      for w = 1, W do
        for _, n in ipairs(res[w].cas[i] or {}) do
          assert.is_nil(olds[n], "two winners from " .. n .. " for c" .. i)
          olds[n] = true
          total_wins = total_wins + 1
        end
      end
      local v = m:load("c" .. i)
      local final = type(v) == "number" and v or tonumber(v:match("^n(%d+)$"))
      for n = 0, final - 1 do assert.is_true(olds[n], "no winner from " .. n .. " for c" .. i) end
      assert.is_nil(olds[final])
    end
    assert.is_true(total_wins > 0)
    -- swap: what came back plus what is left is what went in plus the first
    for i = 1, NS do
      local count = {}
      local function add(v, d) count[v] = (count[v] or 0) + d end
      add("init" .. i, 1)
      for w = 1, W do
        for _, v in ipairs(res[w].swap_stored[i] or {}) do add(v, 1) end
        for _, v in ipairs(res[w].swap_prev[i] or {}) do add(v, -1) end
      end
      add(m:load("s" .. i), -1)
      for v, c in pairs(count) do assert.are.equal(0, c, "s" .. i .. ": " .. tostring(v)) end
    end
  end)

  it("gives loads whole values while other processors replace, delete and clear them", function()
    -- a load reads without the shard's lock (runtime/map.c, opt_find): it
    -- must never see a value half written, a key it did not ask for, or a
    -- box freed under it
    local ROUNDS = SANITIZED and 20000 or 200000
    local m = sync.map()
    local function value(w, i) -- a string whose every byte says who wrote it
      local c = string.char(96 + w)
      return string.rep(c, 20 + i % 200) .. "|" .. (20 + i % 200)
    end
    local workers = {}
    for w = 1, 4 do
      workers[w] = spawn_pcall(function(m, w, ROUNDS, value)
        local gosched = require("lugo.runtime").gosched
        local bad, loads, first = 0, 0, nil
        for i = 1, ROUNDS do
          local k = "k" .. (i * 7 + w) % 97
          if w <= 2 then
            if i % 50 == 0 then m:delete(k)
            elseif i % 3 == 0 then m:store(k, (i % 2 == 0) and i or value(w, i))
            else m:store(k, value(w, i)) end
            if w == 1 and i % 5000 == 0 then m:clear() end
          end
          local v, ok = m:load(k)
          loads = loads + 1
          if ok then
            if type(v) == "string" then
              local body, n = v:match("^(%l+)|(%d+)$")
              if not body or #body ~= tonumber(n) or body ~= string.rep(body:sub(1, 1), #body) then
                bad = bad + 1
                first = first or v
              end
            elseif type(v) ~= "number" then
              bad = bad + 1
              first = first or tostring(v)
            end
          elseif v ~= nil then
            bad = bad + 1
          end
          if i % 1000 == 0 then gosched() end
        end
        return { bad = bad, loads = loads, first = first }
      end, m, w, ROUNDS, value)
    end
    for w, res in ipairs(all_results(workers, HANG, "worker")) do
      assert.is_nil(res.first, "worker " .. w)
      assert.are.equal(0, res.bad)
      assert.are.equal(ROUNDS, res.loads)
    end
    m:clear()
    assert.are.equal(0, m:stats().bytes)
  end)

  it("grows from empty to many keys while other processors read every key announced", function()
    local N = SANITIZED and 100000 or 1000000
    local m = sync.map()
    local function value(i) return i % 2 == 0 and i * 3 or ("v" .. i) end
    local readers = {}
    for r = 1, 2 do
      readers[r] = spawn_elsewhere(function(m, N, r)
        local gosched = require("lugo.runtime").gosched
        local function value(i) return i % 2 == 0 and i * 3 or ("v" .. i) end
        local checks, bad, first = 0, 0, nil
        local function check(i)
          checks = checks + 1
          local v, ok = m:load(i)
          if not ok or v ~= value(i) then
            bad = bad + 1
            first = first or ("key " .. i .. ": " .. tostring(v) .. ", " .. tostring(ok))
          end
        end
        local cursor, state = 0, r
        while true do
          local p = m:load("progress") or 0
          -- every key up to p was stored before p was announced
          for _ = 1, 50 do
            state = (state * 1103515245 + 12345) % 2147483648
            if p > 0 then check(state % p + 1) end
          end
          if p > 0 then check(p) end
          for _ = 1, 50 do if cursor < p then cursor = cursor + 1 check(cursor) end end
          if p == N then break end
          gosched()
        end
        while cursor < N do cursor = cursor + 1 check(cursor) end -- then every key once more
        return { checks = checks, bad = bad, first = first }
      end, m, N, r)
    end
    local growing_seen = 0
    for i = 1, N do
      m:store(i, value(i))
      if i % 1000 == 0 then
        m:store("progress", i)
        if i % 50000 == 0 and m:stats().growing_shards > 0 then growing_seen = growing_seen + 1 end
        runtime.gosched()
      end
    end
    m:store("progress", N)
    for r, res in ipairs(all_results(readers, HANG, "reader")) do
      assert.is_nil(res.first, "reader " .. r)
      assert.are.equal(0, res.bad)
      assert.is_true(res.checks >= N, "reader " .. r .. " checked " .. res.checks)
    end
    local s = m:stats()
    assert.are.equal(N + 1, s.len)
    assert.is_true(s.buckets >= N / 8)

    -- now delete half the keys while a range runs on another processor:
    -- no key twice, every key present throughout seen, and every deleted
    -- key present (with its value) until it is deleted
    local started = lugo.chan(1)
    local ranger = spawn_elsewhere(function(m, N, started)
      local gosched = require("lugo.runtime").gosched
      local function value(i) return i % 2 == 0 and i * 3 or ("v" .. i) end
      local seen, dups, wrong, upper, calls = {}, 0, 0, 0, 0
      started:send(true)
      m:range(function(k, v)
        calls = calls + 1
        if seen[k] then dups = dups + 1 end
        seen[k] = true
        if k ~= "progress" and v ~= value(k) then wrong = wrong + 1 end
        if type(k) == "number" and k > N / 2 then upper = upper + 1 end
        if calls % 1000 == 0 then gosched() end
      end)
      return { dups = dups, wrong = wrong, upper = upper, progress = seen.progress or false }
    end, m, N, started)
    assert.is_true(recv_within(started, HANG))
    local missing = 0
    for i = 1, N / 2 do
      local v, ok = m:load_and_delete(i)
      if not ok or v ~= value(i) then missing = missing + 1 end
      if i % 1000 == 0 then runtime.gosched() end
    end
    assert.are.equal(0, missing)
    local r = all_results({ ranger }, HANG, "ranger")[1]
    assert.are.equal(0, r.dups)
    assert.are.equal(0, r.wrong)
    assert.are.equal(N / 2, r.upper)
    assert.is_true(r.progress)
    assert.are.equal(N / 2 + 1, m:len())
    m:clear()
    assert.are.equal(0, m:stats().bytes)
  end)
end)

describe("sync.map memory", function()
  it("is freed when dropped: many create/drop cycles leave the process's memory flat", function()
    local N = SANITIZED and 50000 or 1000000
    local function cycles(n, base)
      for i = base + 1, base + n do
        local m = sync.map(i % 3 == 0 and { capacity = "1m" } or nil)
        m:store("k", i)
        m:store(i, "value " .. i)
        m:store("t", { i, { i } })
        if i % 10 == 0 then m:store("self", m) m:delete("self") end
        if i % 10000 == 0 then collectgarbage() end
      end
      collectgarbage()
      collectgarbage()
    end
    cycles(N / 10, 0) -- warm up: allocator caches, the VM's own tables
    local rss0, alloc0 = helper.rss(), runtime.memstats().alloc
    cycles(N, N / 10)
    local rss1, alloc1 = helper.rss(), runtime.memstats().alloc
    assert.is_true(alloc1 - alloc0 < 50 * 2 ^ 20, ("Lua heap grew by %.1f MiB"):format((alloc1 - alloc0) / 2 ^ 20))
    if helper.rss_measurable() then
      assert.is_true(rss1 - rss0 < 50 * 2 ^ 20, ("resident size grew by %.1f MiB"):format((rss1 - rss0) / 2 ^ 20))
    end
  end)

  it("frees a map dropped on another processor, and the values it held", function()
    local N = SANITIZED and 2000 or 20000
    local function round()
      -- maps made and dropped on another processor
      assert.is_true(results(spawn_elsewhere(function(N)
        local sync, lugo = require "lugo.sync", require "lugo"
        for i = 1, N do
          local m = sync.map()
          m:store("big", string.rep("x", 1000) .. i)
          m:store("ch", lugo.chan(1))
          if i % 1000 == 0 then collectgarbage() end
        end
        collectgarbage()
        return true
      end, N)))
      -- maps made here and dropped last by a goroutine that may run elsewhere
      local ch = lugo.chan(100)
      local holder = spawn_pcall(function(ch)
        for m in ch:range() do m:store("held", true) end
        collectgarbage()
        return true
      end, ch)
      for i = 1, N do
        local m = sync.map()
        m:store("big", string.rep("y", 1000) .. i)
        ch:send(m)
        if i % 1000 == 0 then collectgarbage() end
      end
      ch:close()
      assert.is_true(results(holder))
      collectgarbage()
    end
    round() -- warm up: every processor's allocator caches
    local before = helper.rss()
    for _ = 1, 3 do round() end
    -- Were they kept, the three rounds would hold about 200 MiB (the values
    -- and the maps' shards). The per-processor allocators keep a few tens
    -- of MiB as the rounds move between them; LeakSanitizer (the ASan
    -- build) is what finds a map or a value left behind.
    if helper.rss_measurable() then
      local grown = helper.rss() - before
      assert.is_true(grown < 100 * 2 ^ 20, ("resident size grew by %.1f MiB"):format(grown / 2 ^ 20))
    end
  end)
end)
