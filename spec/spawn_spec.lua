-- lugo.spawn and everything that crosses processors: how values are copied
-- into another VM, channels and sync objects shared between processors,
-- timers used from another processor, preemption, and the diagnostics of
-- docs/api.md "Processors, preemption and diagnostics".
--
-- ctest runs this file with 1, 2 and 4 processors (LUGO_MAXPROCS). Every
-- `it` body runs in the main goroutine on processor 0. A spawned function is
-- copied, with its upvalues and the globals it names, even when it runs on
-- processor 0: it may only capture values that can be copied, and should
-- not name busted's assert (luassert would be loaded in every VM it
-- reaches), so spawned goroutines send what they find back on a channel and
-- the body asserts. An error escaping a spawned goroutine would end the
-- process, so they run their work under pcall (helper.spawn_pcall).
local lugo = require "lugo"
local time = require "lugo.time"
local sync = require "lugo.sync"
local runtime = require "lugo.runtime"
local helper = require "helper"

local case = lugo.case
local recv, recv_within, settle = helper.recv, helper.recv_within, helper.settle
local can_recv, error_of, here = helper.can_recv, helper.error_of, helper.here
local assert_contains = helper.assert_contains
local HANG = 10 -- seconds; only against hangs

-- helper.pack, restated here because spawned code must not require
-- "helper" (it would load busted's luassert into every VM it reaches).
local function pack(...) return { n = select("#", ...), ... } end


local spawn_pcall, spawn_elsewhere = helper.spawn_pcall, helper.spawn_elsewhere
local results = helper.spawn_results

-- What f(...) returns when run on another processor (when there is one):
-- f and its arguments copied there, its results copied back.
local function elsewhere(f, ...)
  local r = pack(results(spawn_elsewhere(f, ...)))
  return unpack(r, 1, r.n - 1)
end

local function identity(...) return ... end

-- Assert that spawning f with the arguments raises exactly `message` at the
-- caller's line, and starts no goroutine.
local function assert_refused(message, f, ...)
  local args = pack(...)
  local before = runtime.num_goroutine()
  local where
  local err = error_of(function() where = here(); lugo.spawn(f, unpack(args, 1, args.n)) end)
  assert.are.equal(where .. message, err)
  -- none started: the count may only have dropped (an earlier test's
  -- goroutine ending meanwhile on another processor)
  local after = runtime.num_goroutine()
  assert.is_true(after <= before, ("%d goroutines before, %d after"):format(before, after))
end

describe("lugo.spawn starts a goroutine that may run on any processor", function()
  it("runs the function with its arguments, as a goroutine of its own", function()
    local id, n, a, b, c, d = elsewhere(function(...)
      return require("lugo.runtime").goid(), select("#", ...), ...
    end, 1, nil, "three", nil)
    assert.are_not.equal(runtime.goid(), id)
    assert.is_true(id > runtime.goid())
    assert.are.equal(4, n)
    assert.are.same({ 1, nil, "three", nil }, { a, b, c, d })
  end)

  it("gives each spawned goroutine its own id", function()
    local chans, ids = {}, {}
    for i = 1, 20 do chans[i] = spawn_pcall(function() return require("lugo.runtime").goid() end) end
    for i = 1, 20 do
      local id = results(chans[i])
      assert.is_nil(ids[id])
      ids[id] = true
    end
  end)

  it("resolves require and the standard library where it runs", function()
    local kind, formatted, sleep_ok = elsewhere(function()
      local t = require "lugo.time"
      t.sleep(0.001)
      return type(require("lugo.sync").mutex), string.format("%03d", 7), true
    end)
    assert.are.same({ "function", "007", true }, { kind, formatted, sleep_ok })
  end)

  it("returns without waiting for the goroutine", function()
    local go, ch = lugo.chan(), lugo.chan()
    lugo.spawn(function(go, ch) ch:send(go:recv() .. " ran") end, go, ch)
    go:send("it")
    assert.are.equal("it ran", recv(ch))
  end)

  it("raises a bad-argument error for something other than a function", function()
    for _, bad in ipairs({ { 1, "number" }, { "f", "string" }, { nil, "nil" },
                           { setmetatable({}, { __call = print }), "table" } }) do
      local where
      local err = error_of(function() where = here(); lugo.spawn(bad[1]) end)
      assert.are.equal(where .. "bad argument #1 to 'spawn' (function expected, got " .. bad[2] .. ")", err)
    end
  end)
end)

describe("spawn copies nil, booleans, numbers and strings exactly", function()
  it("round-trips them unchanged", function()
    local values = pack(nil, true, false, 0, 1, -1, 0.1, math.pi, -2.5e-308, 5e-324, 1e308,
      math.huge, -math.huge, 2 ^ 53, -2 ^ 53, 2 ^ 53 - 1, 2 ^ 63, "", "hello", "\0", "a\0b\0")
    local back = pack(elsewhere(identity, unpack(values, 1, values.n)))
    assert.are.equal(values.n, back.n)
    for i = 1, values.n do
      assert.are.equal(values[i], back[i])
      assert.are.equal(type(values[i]), type(back[i]))
    end
  end)

  it("keeps NaN a NaN and the sign of -0.0", function()
    local nan, negzero = elsewhere(identity, 0 / 0, -0.0)
    assert.is_true(nan ~= nan)
    assert.are.equal(0, negzero)
    assert.are.equal(-math.huge, 1 / negzero)
  end)

  it("copies long strings with NUL bytes and every byte value intact", function()
    local bytes = {}
    for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
    local all = table.concat(bytes)
    local long = string.rep("ab\0cd" .. all, 4000) -- about 1 MB
    local got_long, got_all, len = elsewhere(function(s, a) return s, a, #s end, long, all)
    assert.are.equal(#long, len)
    assert.is_true(got_long == long)
    assert.is_true(got_all == all)
  end)

  it("keeps integers up to 2^53 exact", function()
    local n = 2 ^ 53
    local got, plus1, minus1 = elsewhere(function(x) return x, x + 1, x - 1 end, n)
    assert.are.equal(9007199254740992, got)
    assert.are.equal(string.format("%.0f", n), string.format("%.0f", got))
    assert.are.equal(n, plus1) -- 2^53 + 1 is not a double: the same on both sides
    assert.are.equal(9007199254740991, minus1)
  end)
end)

describe("spawn copies tables deeply", function()
  it("copies nested tables, keys of every type and array parts", function()
    local t = { 1, 2, { 3, { 4 } }, name = "x", nested = { deeper = { deepest = true } },
                [1.5] = "float key", [true] = "bool key", [{}] = "table key" }
    local copy = elsewhere(identity, t)
    assert.are.same({ 1, 2, { 3, { 4 } } }, { copy[1], copy[2], copy[3] })
    assert.are.equal("x", copy.name)
    assert.is_true(copy.nested.deeper.deepest)
    assert.are.equal("float key", copy[1.5])
    assert.are.equal("bool key", copy[true])
    local tkeys = 0
    for k, v in pairs(copy) do
      if type(k) == "table" then
        tkeys = tkeys + 1
        assert.are.equal("table key", v)
        assert.are.same({}, k)
      end
    end
    assert.are.equal(1, tkeys)
  end)

  it("gives the goroutine a copy: changing it leaves the original alone", function()
    local t = { a = { b = 1 }, list = { 1, 2, 3 } }
    local changed, same = elsewhere(function(t)
      t.a.b = 99
      t.list[1] = "x"
      t.added = true
      return t, t.a.b
    end, t)
    assert.are.same({ a = { b = 1 }, list = { 1, 2, 3 } }, t)
    assert.are.same({ a = { b = 99 }, list = { "x", 2, 3 }, added = true }, changed)
    assert.are.equal(99, same)
    assert.are_not.equal(t, changed)
  end)

  it("keeps cycles: t.self is t on the other side", function()
    local t = { name = "t" }
    t.self = t
    t.child = { parent = t }
    local ok_self, ok_parent, copy = elsewhere(function(c)
      return rawequal(c.self, c), rawequal(c.child.parent, c), c
    end, t)
    assert.is_true(ok_self)
    assert.is_true(ok_parent)
    assert.are.equal(copy, copy.self)
    assert.are.equal(copy, copy.child.parent)
    assert.are_not.equal(t, copy)
  end)

  it("keeps shared subtables shared, within a value and across arguments", function()
    local shared = { n = 1 }
    local t = { x = shared, y = shared, list = { shared } }
    local within, in_list, across = elsewhere(function(t, again)
      return rawequal(t.x, t.y), rawequal(t.list[1], t.x), rawequal(again, t.x)
    end, t, shared)
    assert.is_true(within)
    assert.is_true(in_list)
    assert.is_true(across)
  end)

  it("does not copy metatables, only the table's own fields", function()
    local mt = { __index = { inherited = true }, __len = function() return 42 end }
    local t = setmetatable({ own = 1 }, mt)
    local has_mt, own, inherited, len = elsewhere(function(t)
      return getmetatable(t) ~= nil, t.own, t.inherited, #t
    end, t)
    assert.are.same({ false, 1, nil, 0 }, { has_mt, own, inherited, len })
    assert.are.equal(mt, getmetatable(t))
  end)

  it("copies 200 levels of nesting", function()
    local t = {}
    local c = t
    for _ = 2, 200 do c.x = {}; c = c.x end
    c.leaf = "bottom"
    local leaf = elsewhere(function(t)
      for _ = 2, 200 do t = t.x end
      return t.leaf
    end, t)
    assert.are.equal("bottom", leaf)
  end)
end)

describe("spawn copies functions with their upvalues", function()
  it("runs a closure that captured a number and a table on the other side", function()
    local n, t = 10, { 1, 2, 3 }
    local function f(k)
      local sum = 0
      for _, v in ipairs(t) do sum = sum + v end
      t[#t + 1] = k
      return n * sum + k, #t
    end
    local r, len = elsewhere(function() return f(4) end)
    assert.are.same({ 64, 4 }, { r, len })
    assert.are.same({ 1, 2, 3 }, t) -- the goroutine changed its copy
  end)

  it("copies a function passed as an argument or inside a table", function()
    local base = 100
    local add = function(x) return base + x end
    local a, b = elsewhere(function(f, t) return f(1), t.g(2) end, add, { g = add })
    assert.are.same({ 101, 102 }, { a, b })
  end)

  it("copies a recursive local function", function()
    local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end
    assert.are.equal(3628800, elsewhere(function() return fact(10) end))
  end)

  it("sends a function back, still working", function()
    local f = elsewhere(function(k) return function(x) return x * k end end, 7)
    assert.are.equal(42, f(6))
  end)
end)

describe("modules and their members cross by name", function()
  it("resolves a captured module and a captured standard function there", function()
    local time = require "lugo.time"
    local insert, format, floor = table.insert, string.format, math.floor
    local kind, list, text, n = elsewhere(function()
      time.sleep(0.001)
      local l = {}
      insert(l, "a")
      insert(l, "b")
      return type(time.now()), l, format("%d-%s", 1, "x"), floor(2.7)
    end)
    assert.are.same({ "number", { "a", "b" }, "1-x", 2 }, { kind, list, text, n })
  end)

  it("gives the destination's own module, not a copy of it", function()
    local time, tinsert = require "lugo.time", table.insert
    local same_module, same_fn = elsewhere(function(m, f)
      return rawequal(m, require("lugo.time")), rawequal(f, table.insert)
    end, time, tinsert)
    assert.is_true(same_module)
    assert.is_true(same_fn)
  end)

  it("passes a module back by name", function()
    local m, s = elsewhere(function() return require("lugo.sync"), string end)
    assert.are.equal(sync, m)
    assert.are.equal(string, s)
  end)

  it("resolves io.stdout, io.stderr and io.stdin by name: the destination's own", function()
    -- /work/shared/repro/io_stdout_upvalue_refused.lua
    local out, err, inp = io.stdout, io.stderr, io.stdin
    local same = pack(elsewhere(function(o)
      return rawequal(out, io.stdout), rawequal(err, io.stderr), rawequal(inp, io.stdin), rawequal(o, io.stdout),
        io.type(out)
    end, io.stdout))
    assert.are.same({ true, true, true, true, "file" }, { unpack(same, 1, 5) })
    local back = elsewhere(function() return io.stderr end)
    assert.is_true(rawequal(io.stderr, back))
  end)

  it("resolves a module's userdata such as ffi.C by name", function()
    local C = require("ffi").C
    assert.is_true(elsewhere(function() return rawequal(C, require("ffi").C) end))
  end)
end)

-- Modules in files of their own, for a child lugo run at this spec's -p
-- (the child inherits LUGO_MAXPROCS): its LUA_PATH finds them in dir.
local function run_with_modules(modules, code)
  local dir = helper.tempdir()
  for name, src in pairs(modules) do
    local f = assert(io.open(dir .. "/" .. name .. ".lua", "w"))
    f:write(src)
    f:close()
  end
  return helper.run(code, { env = "LUA_PATH=" .. helper.shell_quote(dir .. "/?.lua;;") })
end

describe("modules resolve by name whenever they were required", function()
  it("resolves a module required after the VM's first spawn by name, even one holding cdata", function()
    -- /work/shared/repro/module_after_first_spawn.lua and its _silent twin
    local r = run_with_modules({
      late_cdata = [[return { counter = require("ffi").new("int[1]"), hello = function() return "hi" end }]],
      late_plain = [[return { hello = function() return "hi" end }]],
    }, [[
      local lugo = require "lugo"
      local ch = lugo.chan()
      lugo.spawn(function(c) c:send(true) end, ch); ch:recv() -- the VM's first spawn
      local cdata, plain = require "late_cdata", require "late_plain"
      lugo.spawn(function(c)
        c:send(tostring(cdata == require("late_cdata")) .. " " .. tostring(plain == require("late_plain")))
      end, ch)
      print((ch:recv()))
    ]])
    helper.assert_clean_run(r, "true true\n")
  end)

  it("names a module that spawns while it is being loaded once it has loaded", function()
    local r = run_with_modules({
      spawning = [[
        local lugo = require "lugo"
        local M = { name = "spawning" }
        lugo.spawn(function() end) -- while require's sentinel is in package.loaded
        return M
      ]],
    }, [[
      local lugo = require "lugo"
      local m = require "spawning"
      local ch = lugo.chan()
      lugo.spawn(function(c) c:send(m == require("spawning")) end, ch)
      print((ch:recv()))
    ]])
    helper.assert_clean_run(r, "true\n")
  end)

  it("follows busted's reloading of modules between spec files", function()
    -- /work/shared/repro/busted_two_files
    local dir = helper.tempdir()
    local spec = [[
      local lugo = require "lugo"
      describe("%s", function()
        it("spawns a closure capturing the lugo module", function()
          local ch = lugo.chan()
          lugo.spawn(function(c) c:send(lugo ~= nil and lugo == require("lugo")) end, ch)
          assert.is_true(ch:recv())
        end)
      end)
    ]]
    for _, name in ipairs({ "a", "b", "c" }) do
      local f = assert(io.open(dir .. "/" .. name .. "_spec.lua", "w"))
      f:write(spec:format(name))
      f:close()
    end
    local q = helper.shell_quote
    local p = assert(io.popen(("cd %s && busted --lua=%s -o TAP . 2>&1; echo status $?"):format(q(dir),
      q(helper.lugo_bin()))))
    local out = p:read("*a")
    p:close()
    assert_contains(out, "ok 3 ")
    assert_contains(out, "status 0")
  end)
end)

describe("spawn copies the globals its function names, at every -p", function()
  local function f() end

  it("copies a global function and a global table of the creator's script", function()
    -- /work/shared/repro/global_visible_only_at_p1.lua
    local r = helper.run([[
      local lugo = require "lugo"
      function helper(x) return x * 2 end
      CONFIG = { workers = 4 }
      local ch = lugo.chan()
      lugo.spawn(function() ch:send(CONFIG.workers .. " " .. helper(21)) end)
      print((ch:recv()))
    ]])
    helper.assert_clean_run(r, "4 42\n")
  end)

  local plain = helper.has_plain_luajit() and it or pending
  plain("copies the globals a plain luajit script set before it required lugo", function()
    local status, out = helper.run_luajit([[
      function helper(x) return x * 2 end
      CONFIG = { workers = 4 }
      local lugo = require "lugo"
      lugo.main(function()
        local ch = lugo.chan()
        lugo.spawn(function() ch:send(CONFIG.workers .. " " .. helper(21)) end)
        print((ch:recv()))
      end)
    ]])
    assert.are.equal(0, status)
    assert.are.equal("4 42\n", out)
  end)

  it("reads them from the function's own environment (here busted's)", function()
    function spec_double(x) return x * 2 end
    SPEC_CONFIG = { workers = 4 }
    local workers, doubled = elsewhere(function() return SPEC_CONFIG.workers, spec_double(21) end)
    assert.are.same({ 4, 42 }, { workers, doubled })
  end)

  it("copies the globals a copied global function names in turn, recursion included", function()
    SPEC_BASE = 10
    function spec_fact(n) if n <= 1 then return SPEC_BASE end return n * spec_fact(n - 1) end
    function spec_outer(n) return spec_fact(n) + 1 end
    assert.are.equal(3 * 2 * 10 + 1, elsewhere(function() return spec_outer(3) end))
  end)

  it("keeps one copy of a table both named as a global and captured as an upvalue", function()
    SPEC_SHARED = { n = 1 }
    local up = SPEC_SHARED
    local function reader() return SPEC_SHARED end
    local same_up, same_fn = elsewhere(function() return rawequal(up, SPEC_SHARED), rawequal(reader(), up) end)
    assert.is_true(same_up)
    assert.is_true(same_fn)
  end)

  it("gives the goroutine its own copy: what it assigns stays in the goroutine", function()
    SPEC_COUNTER = 1
    local function bump() SPEC_COUNTER = SPEC_COUNTER + 1 return SPEC_COUNTER end
    local second, seen, new = elsewhere(function()
      bump()
      SPEC_NEW = "set"
      return bump(), SPEC_COUNTER, SPEC_NEW
    end)
    assert.are.same({ 3, 3, "set" }, { second, seen, new })
    assert.are.equal(1, SPEC_COUNTER)
    assert.is_nil(SPEC_NEW)
  end)

  it("does not see globals set after the spawn", function()
    SPEC_LATE = "before"
    local go = lugo.chan()
    local res = spawn_pcall(function(go)
      go:recv()
      return SPEC_LATE, SPEC_UNSET
    end, go)
    SPEC_LATE = "after"
    SPEC_UNSET = "after"
    go:send(true)
    local late, unset = results(res)
    assert.are.equal("before", late)
    assert.is_nil(unset)
  end)

  it("makes _G and getfenv(1) the goroutine's own environment, holding only what its code names", function()
    SPEC_NAMED = "copied"
    _G.spec_raw_global = "in the creator's global table"
    finally(function() _G.spec_raw_global = nil end)
    local named, via_G, unnamed, raw, env_is_G = elsewhere(function()
      return SPEC_NAMED, _G.SPEC_NAMED, _G.spec_raw_global, rawget(_G, "spec_raw_global"), getfenv(1) == _G
    end)
    assert.are.same({ "copied", "copied", nil, nil, true }, { named, via_G, unnamed, raw, env_is_G })
  end)

  it("resolves the standard library where it runs, and copies a standard name the creator replaced", function()
    tostring = function(v) return "mine:" .. type(v) end -- in this test's environment only
    local mine, std_print = elsewhere(function()
      return tostring(1), rawequal(print, package.loaded._G.print)
    end)
    assert.are.equal("mine:number", mine)
    assert.is_true(std_print)
  end)

  it("runs a function that names only standard globals in the destination's global table", function()
    local function env_of_self() return debug.getfenv(debug.getinfo(1, "f").func) == package.loaded._G end
    assert.is_true(elsewhere(env_of_self))
    SPEC_ANY = 1
    local function names_a_user_global()
      local _ = SPEC_ANY
      return debug.getfenv(debug.getinfo(1, "f").func) == package.loaded._G
    end
    assert.is_false(elsewhere(names_a_user_global))
  end)

  it("copies the globals a goroutine has, assignments included, into the goroutines it spawns", function()
    SPEC_NESTED = "creator's"
    local out = lugo.chan(1)
    local res = spawn_pcall(function(out)
      SPEC_NESTED = "the goroutine's"
      require("lugo").spawn(function() out:send(SPEC_NESTED) end)
    end, out)
    results(res)
    assert.are.equal("the goroutine's", recv_within(out, HANG))
    assert.are.equal("creator's", SPEC_NESTED)
  end)

  it("reads a global that a strict mode says is undeclared as nil", function()
    local r = helper.run([[
      local lugo = require "lugo"
      setmetatable(_G, {
        __newindex = function(t, k, v) rawset(t, k, v) end,
        __index = function(_, k) error("variable '" .. k .. "' is not declared", 2) end,
      })
      local ch = lugo.chan()
      lugo.spawn(function() declared_later = undeclared; ch:send(declared_later == nil) end)
      print((ch:recv()))
    ]])
    helper.assert_clean_run(r, "true\n")
  end)

  it("copies the globals of a function sent on a shared channel", function()
    SPEC_GREETING = "hello"
    local ch = lugo.chan(1)
    local res = spawn_pcall(function(ch) return ch:recv()() end, ch)
    ch:send(function() return SPEC_GREETING end)
    assert.are.equal("hello", (results(res)))
  end)

  it("refuses a global that cannot be copied, naming it and where it was", function()
    SPEC_CO = coroutine.create(f)
    local function g() return SPEC_CO end
    assert_refused("cannot copy a coroutine to another processor at global 'SPEC_CO' of argument #1", g)
    function spec_uses_co() return SPEC_CO end
    assert_refused(
      "cannot copy a coroutine to another processor at global 'SPEC_CO' of global 'spec_uses_co' of argument #1",
      function() return spec_uses_co() end)
  end)

  it("copies a table used from goroutines on every processor: changes are not shared", function()
    -- /work/shared/repro/shared_table_silently_copied.lua: at -p 1 too
    local store, mu, wg = {}, sync.mutex(), sync.waitgroup()
    for i = 1, 4 do
      wg:add(1)
      lugo.spawn(function()
        mu:lock(); store["k" .. i] = i; mu:unlock()
        wg:done()
      end)
    end
    wg:wait()
    assert.is_nil(next(store))
  end)
end)

describe("runtime objects cross by reference", function()
  it("shares a channel: values sent on it come back", function()
    local ch = lugo.chan()
    local done = spawn_elsewhere(function(ch)
      for i = 1, 3 do ch:send(i) end
      ch:close()
    end, ch)
    local got = {}
    for v in ch:range() do got[#got + 1] = v end
    assert.are.same({ 1, 2, 3 }, got)
    results(done)
  end)

  it("shares a channel sent back from the goroutine", function()
    local made = elsewhere(function()
      local c = require("lugo").chan(2)
      c:send("inside")
      return c
    end)
    assert.are.equal(2, made:cap())
    assert.are.same({ "inside", true }, { made:recv() })
  end)

  it("shares a mutex: the goroutine's lock holds the body out", function()
    local mu = sync.mutex()
    local locked, release = lugo.chan(), lugo.chan()
    local done = spawn_pcall(function(mu, locked, release)
      mu:lock()
      locked:send(true)
      release:recv()
      mu:unlock()
    end, mu, locked, release)
    recv(locked, "the goroutine's lock")
    assert.is_false(mu:try_lock())
    release:send(true)
    results(done)
    assert.is_true(mu:try_lock())
    mu:unlock()
  end)

  it("shares a wait group: the goroutine's done releases the body's wait", function()
    local wg = sync.waitgroup()
    wg:add(2)
    local done = spawn_pcall(function(wg) wg:done(); wg:done(); return wg:count() end, wg)
    assert.are.equal(0, results(done))
    wg:wait()
    assert.are.equal(0, wg:count())
  end)

  it("keeps the object the same on a round trip", function()
    local ch, mu, wg = lugo.chan(), sync.mutex(), sync.waitgroup()
    local c2, m2, w2 = elsewhere(identity, ch, mu, wg)
    assert.is_true(rawequal(ch, c2))
    assert.is_true(rawequal(mu, m2))
    assert.is_true(rawequal(wg, w2))
  end)
end)

describe("values that cannot be copied are refused at the caller", function()
  local function f() end

  it("refuses a coroutine as an argument", function()
    assert_refused("cannot copy a coroutine to another processor at argument #2",
      f, coroutine.create(f))
    assert_refused("cannot copy a coroutine to another processor at argument #4",
      f, 1, "two", coroutine.create(f))
  end)

  it("refuses a coroutine nested in a table field", function()
    assert_refused("cannot copy a coroutine to another processor at argument #2.a.b",
      f, { a = { b = coroutine.create(f) } })
  end)

  it("refuses a coroutine captured as an upvalue, naming the upvalue and its function", function()
    local co = coroutine.create(f)
    local function g() return co end
    assert_refused("cannot copy a coroutine to another processor at upvalue 'co' of argument #1", g, 1)
    assert_refused("cannot copy a coroutine to another processor at upvalue 'co' of argument #1", g)
    local function outer() return g() end
    assert_refused("cannot copy a coroutine to another processor at upvalue 'co' of upvalue 'g' of argument #1",
      outer)
    assert_refused("cannot copy a coroutine to another processor at upvalue 'co' of argument #2.handlers.on",
      f, { handlers = { on = g } })
    local t = { list = { co } }
    local function h() return t end
    assert_refused("cannot copy a coroutine to another processor at upvalue 't'.list[...] of argument #1", h)
  end)

  it("refuses a foreign userdata that no module holds", function()
    local tmp = io.tmpfile()
    finally(function() tmp:close() end)
    assert_refused("cannot copy a userdata to another processor at argument #2", f, tmp)
    assert_refused("cannot copy a userdata to another processor at argument #2.out", f, { out = tmp })
    local function h() return tmp end
    assert_refused("cannot copy a userdata to another processor at upvalue 'tmp' of argument #1", h)
    assert_refused("cannot copy a userdata to another processor at argument #2", f, newproxy(true))
  end)

  it("refuses a cdata, naming it", function()
    local ffi = require "ffi"
    local err = error_of(lugo.spawn, f, ffi.new("int[4]"))
    assert.matches("cannot copy a? ?cdata to another processor at argument #2", err)
    err = error_of(lugo.spawn, f, { buf = ffi.new("int[4]") })
    assert.matches("cannot copy a? ?cdata to another processor at argument #2%.buf", err)
  end)

  it("refuses a C function that no module exports", function()
    local iter = ("abc"):gmatch(".")
    assert_refused("cannot copy a C function that is no module's to another processor at argument #2", f, iter)
    assert_refused("cannot copy a C function that is no module's to another processor at argument #2.next",
      f, { next = iter })
    local function g() return iter() end
    assert_refused("cannot copy a C function that is no module's to another processor at upvalue 'iter' of argument #1",
      g, 1)
  end)

  it("refuses nesting deeper than 200 levels, naming the limit", function()
    local t = {}
    local c = t
    for _ = 2, 201 do c.x = {}; c = c.x end
    local before = runtime.num_goroutine()
    local err = error_of(lugo.spawn, f, t)
    assert_contains(err, "200")
    assert_contains(err, "cannot copy a value nested more than 200 levels deep to another processor")
    assert.is_true(runtime.num_goroutine() <= before) -- none started (others may end meanwhile)
    -- a cycle is not nesting: a table that contains itself copies fine
    local cyc = {}
    cyc.again = cyc
    assert.is_true(elsewhere(function(t) return rawequal(t.again.again, t) end, cyc))
  end)

  it("leaves the refused values and the caller usable", function()
    local co = coroutine.create(function(x) return x + 1 end)
    error_of(lugo.spawn, f, co)
    assert.are.same({ true, 2 }, { coroutine.resume(co, 1) })
    assert.are.equal(5, elsewhere(function(x) return x end, 5))
  end)
end)

describe("a channel carries values between processors", function()
  it("delivers 100,000 values from a spawned goroutine in order, none lost or doubled", function()
    local ch = lugo.chan(64)
    local N = 100000
    local done = spawn_elsewhere(function(ch, n)
      for i = 1, n do ch:send(i) end
      ch:close()
    end, ch, N)
    local count, out_of_order = 0, 0
    for v in ch:range() do
      count = count + 1
      if v ~= count then out_of_order = out_of_order + 1 end
    end
    assert.are.equal(N, count)
    assert.are.equal(0, out_of_order)
    results(done)
  end)

  it("delivers strings, booleans, nil and tables intact and in order", function()
    local ch = lugo.chan(8)
    local N = 5000
    local done = spawn_elsewhere(function(ch, n)
      for i = 1, n do
        local k = i % 5
        if k == 0 then ch:send({ i = i, s = "t" .. i, inner = { i } })
        elseif k == 1 then ch:send("s" .. i .. "\0")
        elseif k == 2 then ch:send(i % 2 == 0)
        elseif k == 3 then ch:send(nil)
        else ch:send(i + 0.5) end
      end
      ch:close()
    end, ch, N)
    local bad = 0
    for i = 1, N do
      local v, ok = ch:recv()
      local k = i % 5
      local good = ok
      if k == 0 then good = good and type(v) == "table" and v.i == i and v.s == "t" .. i and v.inner[1] == i
      elseif k == 1 then good = good and v == "s" .. i .. "\0"
      elseif k == 2 then good = good and v == (i % 2 == 0)
      elseif k == 3 then good = good and v == nil
      else good = good and v == i + 0.5 end
      if not good then bad = bad + 1 end
    end
    assert.are.equal(0, bad)
    assert.are.same({ nil, false }, { ch:recv() })
    results(done)
  end)

  it("runs a thousand spawned goroutines, each exactly once", function()
    local N = 1000
    local out = lugo.chan(N)
    for i = 1, N do lugo.spawn(function(out, i) out:send(i) end, out, i) end
    local seen, count = {}, 0
    for _ = 1, N do
      local i = recv_within(out, HANG)
      assert.is_number(i)
      assert.is_nil(seen[i])
      seen[i] = true
      count = count + 1
    end
    assert.are.equal(N, count)
  end)

  it("lets a spawned goroutine spawn more", function()
    local out = lugo.chan(16)
    lugo.spawn(function(out)
      local lugo = require "lugo"
      for i = 1, 4 do
        lugo.spawn(function(out, i) out:send(i * 10) end, out, i)
      end
    end, out)
    local got = {}
    for _ = 1, 4 do got[#got + 1] = recv_within(out, HANG) end
    table.sort(got)
    assert.are.same({ 10, 20, 30, 40 }, got)
  end)

  for _, cap in ipairs({ 0, 16 }) do
    it("moves every value exactly once among several producers and consumers (capacity " .. cap .. ")", function()
      local ch = lugo.chan(cap)
      local P, C, K = 4, 3, 500
      local producers = {}
      for p = 1, P do
        producers[p] = spawn_pcall(function(ch, p, k)
          for i = 1, k do ch:send(p * 100000 + i) end
        end, ch, p, K)
      end
      local consumers = {}
      local function consume(ch)
        local got = {}
        for v in ch:range() do got[#got + 1] = v end
        return got
      end
      for c = 1, C do consumers[c] = spawn_pcall(consume, ch) end
      -- and one consumer in the body's VM
      local local_got = lugo.chan(1)
      lugo.go(function() local_got:send(consume(ch)) end)
      for p = 1, P do results(producers[p], "a producer") end
      ch:close()
      local seen, total = {}, 0
      local function tally(list)
        for _, v in ipairs(list) do
          assert.is_nil(seen[v], "received twice: " .. v)
          seen[v] = true
          total = total + 1
        end
      end
      for c = 1, C do tally((results(consumers[c], "a consumer"))) end
      tally(recv(local_got, "the body's consumer"))
      assert.are.equal(P * K, total)
      for p = 1, P do
        for i = 1, K do assert.is_true(seen[p * 100000 + i]) end
      end
    end)
  end

  it("lets select wait on channels fed from other processors", function()
    local a, b = lugo.chan(), lugo.chan(4)
    local N = 200
    local function produce(ch, tag, n)
      for i = 1, n do ch:send(tag .. i) end
      ch:close()
    end
    local pa = spawn_pcall(produce, a, "a", N)
    local pb = spawn_pcall(produce, b, "b", N)
    local got = {}
    local ca, cb = a, b
    while ca or cb do
      local i, v, ok = lugo.select(case.recv(ca), case.recv(cb), case.recv(time.after(HANG)))
      assert.are_not.equal(3, i, "timed out")
      if not ok then
        if i == 1 then ca = nil else cb = nil end
      else
        assert.is_nil(got[v])
        got[v] = true
      end
    end
    for i = 1, N do
      assert.is_true(got["a" .. i])
      assert.is_true(got["b" .. i])
    end
    results(pa)
    results(pb)
  end)

  it("lets a goroutine on another processor select among sends", function()
    local out1, out2 = lugo.chan(), lugo.chan(2)
    local N = 300
    local sender = spawn_elsewhere(function(out1, out2, n)
      local lugo = require "lugo"
      local counts = { 0, 0 }
      for i = 1, n do
        local which = lugo.select(lugo.case.send(out1, i), lugo.case.send(out2, i))
        counts[which] = counts[which] + 1
      end
      out1:close()
      out2:close()
      return counts
    end, out1, out2, N)
    -- out2 is drained by a goroutine of the body's VM, out1 by the body.
    local from2 = lugo.chan(1)
    lugo.go(function()
      local got = {}
      for v in out2:range() do got[#got + 1] = v end
      from2:send(got)
    end)
    local seen, n1 = {}, 0
    for v in out1:range() do
      seen[v] = true
      n1 = n1 + 1
    end
    local list2 = recv(from2)
    for _, v in ipairs(list2) do
      assert.is_nil(seen[v])
      seen[v] = true
    end
    local counts = results(sender)
    assert.are.same({ n1, #list2 }, counts)
    for i = 1, N do assert.is_true(seen[i]) end
  end)

  it("wakes a receiver on another processor when the channel is closed", function()
    local ch, ready = lugo.chan(), lugo.chan()
    local res = spawn_elsewhere(function(ch, ready)
      ready:send(true)
      return ch:recv()
    end, ch, ready)
    recv(ready)
    settle()
    ch:close()
    local v, ok = results(res)
    assert.is_nil(v)
    assert.is_false(ok)
  end)

  it("raises 'send on closed channel' in a sender on another processor", function()
    local ch, ready = lugo.chan(), lugo.chan()
    local res = spawn_elsewhere(function(ch, ready)
      ready:send(true)
      local ok, err = pcall(ch.send, ch, 1)
      return ok, err
    end, ch, ready)
    recv(ready)
    settle()
    ch:close()
    local ok, err = results(res)
    assert.is_false(ok)
    assert.matches("send on closed channel$", err)
  end)
end)

describe("a channel handed to another processor becomes shared", function()
  it("delivers values buffered before the handoff as copies, wherever they are received", function()
    local ch = lugo.chan(10)
    local items = {}
    for i = 1, 10 do
      items[i] = { i = i }
      ch:send(items[i]) -- by reference for now: the channel is still this VM's own
    end
    local res = spawn_pcall(function(ch)
      local got = {}
      for _ = 1, 5 do
        local v = ch:recv()
        v.touched = true
        got[#got + 1] = v.i
      end
      return got
    end, ch)
    assert.are.same({ 1, 2, 3, 4, 5 }, (results(res)))
    for i = 1, 5 do assert.is_nil(items[i].touched) end
    for i = 6, 10 do
      local v = ch:recv()
      assert.are.equal(i, v.i)
      assert.is_false(rawequal(items[i], v)) -- copied when the channel became shared
    end
    assert.are.equal(0, ch:len())
  end)

  it("copies a value sent after the handoff for a receiver in the sender's own VM too", function()
    local ch = lugo.chan(2)
    results(spawn_pcall(function() end, ch)) -- now shared
    local t = { "mine" }
    ch:send(t)
    local got = ch:recv()
    assert.are.same({ "mine" }, got)
    assert.is_false(rawequal(t, got))
    lugo.go(function() ch:send(t) end)
    assert.is_false(rawequal(t, ch:recv()))
    local unbuffered = lugo.chan()
    results(spawn_pcall(function() end, unbuffered))
    lugo.go(function() unbuffered:send(t) end)
    got = unbuffered:recv()
    assert.are.same({ "mine" }, got)
    assert.is_false(rawequal(t, got))
  end)

  it("copies a value a parked sender was waiting to hand over when the channel became shared", function()
    local ch = lugo.chan()
    local t = { n = 1 }
    lugo.go(function() ch:send(t) end)
    settle() -- the sender is parked with t
    results(spawn_pcall(function() end, ch)) -- now shared
    t.n = 2
    local got = ch:recv()
    assert.are.equal(1, got.n)
    assert.is_false(rawequal(t, got))
  end)

  it("stays local, its values by reference, when one of them cannot be copied", function()
    local ch = lugo.chan(2)
    local t, co = {}, coroutine.create(function() end)
    ch:send(t)
    ch:send(co)
    local err = error_of(lugo.spawn, function() end, ch)
    assert_contains(err, "cannot copy a coroutine to another processor at a value in the channel")
    assert.is_true(rawequal(t, ch:recv()))
    assert.is_true(rawequal(co, ch:recv()))
  end)

  it("keeps a table sent and then changed by the sender as it was sent, at every -p", function()
    -- /work/shared/repro/table_after_send_depends_on_placement.lua
    local ch, back = lugo.chan(1), lugo.chan(1)
    lugo.spawn(function(ch, back)
      local t = ch:recv()
      require("lugo.time").sleep(0.05) -- the sender changes its table meanwhile
      t.seen_by_receiver = true
      back:send(t.status)
    end, ch, back)
    local t = { status = "queued" }
    ch:send(t)
    t.status = "cancelled"
    assert.are.equal("queued", recv_within(back, HANG))
    assert.is_nil(t.seen_by_receiver)
  end)

  it("gives a receiver on another processor a copy of each value", function()
    local ch = lugo.chan()
    local res = spawn_elsewhere(function(ch)
      local v = ch:recv()
      v.changed = true
      return v.n
    end, ch)
    local t = { n = 1 }
    ch:send(t)
    local n = results(res)
    assert.are.equal(1, n)
    assert.is_nil(t.changed)
  end)

  it("refuses a value that cannot be copied, at the sender", function()
    local ch = lugo.chan(1)
    results(spawn_pcall(function() end, ch))
    local co = coroutine.create(function() end)
    local where
    local err = error_of(function() where = here(); ch:send(co) end)
    assert.are.equal(where .. "cannot copy a coroutine to another processor at value", err)
    assert_contains(error_of(function() ch:send({ co }) end), "cannot copy a coroutine")
    assert_contains(error_of(function() lugo.select(case.send(ch, co)) end), "cannot copy a coroutine")
    assert.are.equal(0, ch:len())
    ch:send("fine")
    assert.are.equal("fine", ch:recv())
  end)

  it("keeps a channel that was never handed over free to carry anything", function()
    local ch = lugo.chan(1)
    local co = coroutine.create(function() end)
    ch:send(co)
    assert.is_true(rawequal(co, ch:recv()))
  end)
end)

describe("sync objects work across processors", function()
  it("a wait group waited on in the body is done by spawned goroutines", function()
    local wg = sync.waitgroup()
    local N = 8
    local hits = lugo.chan(N)
    wg:add(N)
    for i = 1, N do
      lugo.spawn(function(wg, hits, i)
        require("lugo.time").sleep(0.001 * i)
        hits:send(i)
        wg:done()
      end, wg, hits, i)
    end
    local waited = lugo.chan(1)
    lugo.go(function() wg:wait(); waited:send(hits:len()) end)
    assert.are.equal(N, recv_within(waited, HANG))
    assert.are.equal(0, wg:count())
  end)

  it("a mutex excludes goroutines of every processor from the critical section", function()
    local mu = sync.mutex()
    local counter = lugo.chan(1) -- the shared counter
    local inside = lugo.chan(1)  -- holds a token while someone is inside
    counter:send(0)
    local N, K = 4, 200
    local function worker(mu, counter, inside, k)
      local lugo, runtime = require "lugo", require "lugo.runtime"
      local overlaps = 0
      for _ = 1, k do
        mu:lock()
        local alone = lugo.select(lugo.case.send(inside, true), lugo.case.default) == 1
        if not alone then overlaps = overlaps + 1 end
        local v = counter:recv()
        runtime.gosched()
        counter:send(v + 1)
        if alone then inside:recv() end
        mu:unlock()
      end
      return overlaps
    end
    local workers = {}
    for w = 1, N do workers[w] = spawn_pcall(worker, mu, counter, inside, K) end
    local local_res = helper.go_pcall(worker, mu, counter, inside, K)
    for w = 1, N do assert.are.equal(0, results(workers[w], "a worker")) end
    local r = recv_within(local_res, HANG)
    assert.are.same({ n = 2, true, 0 }, r)
    assert.are.equal((N + 1) * K, counter:recv())
    assert.is_true(mu:try_lock())
    mu:unlock()
  end)

  it("a once runs its function a single time for goroutines of every processor", function()
    local once = sync.once()
    local calls = lugo.chan(16)
    local N = 6
    local res = {}
    for i = 1, N do
      res[i] = spawn_pcall(function(once, calls, i)
        once:call(function()
          require("lugo.time").sleep(0.01)
          calls:send(i)
        end)
        return calls:len() -- once:call returns after the call has completed
      end, once, calls, i)
    end
    for i = 1, N do assert.are.equal(1, results(res[i])) end
    assert.are.equal(1, calls:len())
  end)

  it("a cond's signal and broadcast wake waiters on other processors", function()
    local mu = sync.mutex()
    local cond = sync.cond(mu)
    local state = lugo.chan(1) -- guarded by mu: how many waiters may go
    state:send(0)
    local waiting, woke = lugo.chan(8), lugo.chan(8)
    local N = 4
    local res = {}
    for i = 1, N do
      res[i] = spawn_pcall(function(mu, cond, state, waiting, woke, i)
        mu:lock()
        waiting:send(i)
        local go = state:recv()
        while go == 0 do
          state:send(go)
          cond:wait()
          go = state:recv()
        end
        state:send(go - 1)
        mu:unlock()
        woke:send(i)
      end, mu, cond, state, waiting, woke, i)
    end
    for _ = 1, N do recv_within(waiting, HANG) end
    -- Every waiter held mu from its `waiting` send to cond:wait: once the
    -- body holds mu, all of them are waiting.
    mu:lock()
    state:send(state:recv() + 1)
    cond:signal()
    mu:unlock()
    local first = recv_within(woke, HANG)
    assert.is_number(first)
    time.sleep(0.05)
    assert.are.equal(0, woke:len())
    mu:lock()
    state:send(state:recv() + N - 1)
    cond:broadcast()
    mu:unlock()
    local seen = { [first] = true }
    for _ = 2, N do
      local i = recv_within(woke, HANG)
      assert.is_number(i)
      assert.is_nil(seen[i])
      seen[i] = true
    end
    for i = 1, N do results(res[i]) end
  end)

  it("an rwmutex keeps a writer on another processor out while the body reads", function()
    local rw = sync.rwmutex()
    rw:rlock()
    local res = spawn_elsewhere(function(rw)
      local got_write = rw:try_lock()
      local got_read = rw:try_rlock()
      if got_read then rw:runlock() end
      return got_write, got_read
    end, rw)
    local w, r = results(res)
    assert.is_false(w)
    assert.is_true(r)
    rw:runlock()
    assert.is_true(rw:try_lock())
    rw:unlock()
  end)
end)

describe("timers work from other processors", function()
  it("time.after's channel receives in a spawned goroutine", function()
    local c = time.after(0.02)
    local kind, ok = elsewhere(function(c)
      local v, ok = c:recv()
      return type(v), ok
    end, c)
    assert.are.same({ "number", true }, { kind, ok })
  end)

  it("a Timer passed to a spawned goroutine fires there", function()
    local t = time.timer(0.02)
    local v = elsewhere(function(t) return (t.c:recv()) end, t)
    assert.is_number(v)
    assert.is_false(t:stop())
  end)

  it("a Timer is stopped from another processor", function()
    local t = time.timer(HANG)
    local stopped, again = elsewhere(function(t) return t:stop(), t:stop() end, t)
    assert.is_true(stopped)
    assert.is_false(again)
    assert.is_false(t:stop())
    assert.is_false(can_recv(t.c))
    assert.is_false(t:reset(0.01))
    assert.is_number(recv(t.c, "the reset timer"))
  end)

  it("a Ticker passed to a spawned goroutine ticks there and is stopped there", function()
    local tk = time.ticker(0.01)
    local a, b = elsewhere(function(tk)
      local a, b = tk.c:recv(), tk.c:recv()
      tk:stop()
      return a, b
    end, tk)
    assert.is_number(a)
    assert.is_number(b)
    assert.is_true(b > a)
    time.sleep(0.03)
    assert.is_false(can_recv(tk.c))
  end)

  it("a Timer made on another processor is stopped and reset by the body", function()
    local t = elsewhere(function() return require("lugo.time").timer(HANG) end)
    assert.is_true(t:stop())
    assert.is_false(t:reset(0.01))
    assert.is_number(recv(t.c, "the timer made elsewhere"))
  end)
end)

-- Every runtime call that may block yields when the goroutine's time slice
-- is over, even if it could go on: a loop of such calls that LuaJIT has
-- compiled (where the preemption hook never runs) cannot hold its processor.
describe("every runtime call that may block is a preemption point", function()
  local loops = {
    send_recv = "ch:send(1); ch:recv()",
    select_default = "lugo.select(lugo.case.recv(ch), lugo.case.default)",
    select_ready = "ch:send(1); lugo.select(lugo.case.recv(ch))",
    mutex = "mu:lock(); mu:unlock()",
    rwmutex = "rw:rlock(); rw:runlock(); rw:lock(); rw:unlock()",
    waitgroup = "wg:wait()",
    shared_channel = "shared:send(1); shared:recv()",
  }
  for name, body in pairs(loops) do
    it("lets the others run while a compiled loop calls " .. name, function()
      local r = helper.run([[
        local lugo, sync, time = require "lugo", require "lugo.sync", require "lugo.time"
        local ch, mu, rw, wg = lugo.chan(1), sync.mutex(), sync.rwmutex(), sync.waitgroup()
        local shared = lugo.chan(1)
        lugo.spawn(function(c) end, shared) -- it crossed: values are copied
        local flag = false
        lugo.go(function() flag = true end)
        local deadline = time.now() + 10
        local n = 0
        while not flag do
          ]] .. body .. [[

          n = n + 1
          if n % 1000 == 0 and time.now() > deadline then break end
        end
        print(flag and "preempted" or "never preempted")
      ]], { flags = "-p 1", env = "timeout 30" })
      helper.assert_clean_run(r, "preempted\n")
    end)
  end

  -- ../shared/repro/flood_starves_processor.lua: a connection that always
  -- has data never parks; another connection of the same processor must
  -- still be served. And netpoll_starved_by_busy_goroutine.lua: a busy
  -- goroutine must not keep the processor from polling its descriptors.
  it("serves a connection while another floods the same processor, or a goroutine computes", function()
    local server = helper.start([[
      local lugo, net, time = require "lugo", require "lugo.net", require "lugo.time"
      local ln = assert(net.listen("tcp", "127.0.0.1:0"))
      local addr = ln:addr()
      lugo.go(function()
        jit.off(true, true)
        local x = 0
        while true do x = x + #tostring(x) end -- interpreted: preempted every 10 ms
      end)
      lugo.go(function()
        while true do
          local conn = assert(ln:accept())
          lugo.go(function()
            while true do
              local line = conn:read_line()
              if not line or not conn:write(line .. "\n") then break end
            end
            conn:close()
          end)
        end
      end)
      io.stdout:write(addr, "\n")
      io.stdout:flush()
      time.sleep(30)
    ]], { flags = "-p 1", env = "timeout 60" })
    local client = helper.run([[
      local lugo, net, time = require "lugo", require "lugo.net", require "lugo.time"
      local addr = ...
      local flood = assert(net.dial("tcp", addr))
      local big = (string.rep("x", 100) .. "\n"):rep(1000)
      lugo.go(function() while flood:write(big) do end end)
      lugo.go(function() while flood:read(65536) do end end)
      time.sleep(0.2)
      local probe = assert(net.dial("tcp", addr))
      local answered = 0
      for i = 1, 20 do
        probe:set_read_deadline(time.now() + 2)
        probe:write("ping\n")
        if probe:read_line() == "ping" then answered = answered + 1 end
        time.sleep(0.01)
      end
      print(answered)
      os.exit(0)
    ]], { flags = "-p 1", args = { server.wait_line() }, env = "timeout 60" })
    server.kill()
    helper.assert_clean_run(client, "20\n")
  end)
end)

describe("a goroutine that runs without blocking is preempted", function()
  it("lets another goroutine of its processor run while an interpreted loop spins", function()
    local stop = false
    local spun = lugo.chan(1)
    local function spin()
      local deadline = time.now() + HANG
      while not stop and time.now() < deadline do end
      spun:send(stop)
    end
    jit.off(spin)
    lugo.go(spin)
    -- This one sleeps first: it can only run again if spin lets go of the
    -- processor.
    lugo.go(function()
      time.sleep(0.02)
      stop = true
    end)
    assert.is_true(recv_within(spun, 2 * HANG))
  end)

  it("lets other goroutines run while the test body itself spins", function()
    local flag = false
    lugo.go(function() flag = true end)
    local function spin_until_flag()
      local deadline = time.now() + HANG
      while not flag and time.now() < deadline do end
      return flag
    end
    jit.off(spin_until_flag)
    assert.is_true(spin_until_flag())
  end)

  -- A loop whose body is mostly calls into the runtime's Lua code, where
  -- the hook may not yield: it must still land in the loop's own code soon.
  it("preempts a loop that spends most of its instructions in runtime calls", function()
    local r = helper.run([[
      local lugo, time = require "lugo", require "lugo.time"
      local ch, flag = lugo.chan(1), false
      lugo.go(function() flag = true end)
      local function spin()
        local deadline = time.now() + 5
        while not flag and time.now() < deadline do ch:len(); ch:cap() end
        print(flag and "preempted" or "never preempted")
      end
      jit.off(spin)
      spin()
    ]], { flags = "-p 1" })
    helper.assert_clean_run(r, "preempted\n")
  end)

  it("keeps a hook the script set with debug.sethook working after preempting it", function()
    local r = helper.run([[
      local lugo, time = require "lugo", require "lugo.time"
      local lines = 0
      debug.sethook(function() lines = lines + 1 end, "l")
      local flag = false
      lugo.go(function() flag = true end)
      local function spin()
        local deadline = time.now() + 5
        while not flag and time.now() < deadline do end
      end
      jit.off(spin)
      spin()
      local before = lines
      local x = 0
      for i = 1, 3 do x = x + i end
      print(flag, lines > before, debug.gethook() ~= nil)
    ]], { flags = "-p 1" })
    helper.assert_clean_run(r, "true\ttrue\ttrue\n")
  end)

  it("preempts a script that lives in a directory named lugo", function()
    local dir = helper.tempdir() .. "/lugo"
    assert(os.execute("mkdir " .. helper.shell_quote(dir)) == 0)
    local path = dir .. "/app.lua"
    local f = assert(io.open(path, "w"))
    f:write([[
      local lugo, time = require "lugo", require "lugo.time"
      local flag = false
      lugo.go(function() flag = true end)
      local function spin()
        local deadline = time.now() + 5
        while not flag and time.now() < deadline do end
        print(flag and "preempted" or "never preempted")
      end
      jit.off(spin)
      spin()
    ]])
    f:close()
    local r = helper.run("", { flags = "-p 1", no_script = true, args = { path } })
    helper.assert_clean_run(r, "preempted\n")
  end)
end)

describe("the processors", function()
  it("are as many as LUGO_MAXPROCS says", function()
    local want = tonumber(os.getenv("LUGO_MAXPROCS") or "") or runtime.numcpu()
    assert.are.equal(want, runtime.gomaxprocs())
    assert.are.equal(want, elsewhere(function() return require("lugo.runtime").gomaxprocs() end))
  end)

  it("share a CPU-bound job split among spawned goroutines, giving the right total", function()
    local function partial(lo, hi)
      local s = 0
      for i = lo, hi do s = s + (i * i) % 1000003 end
      return s
    end
    local N, parts = 2000000, 8
    local res = {}
    for p = 1, parts do
      local lo, hi = (p - 1) * N / parts + 1, p * N / parts
      res[p] = spawn_pcall(partial, lo, hi)
    end
    local total = 0
    for p = 1, parts do total = total + results(res[p], "a part") end
    assert.are.equal(partial(1, N), total)
  end)

  it("each count the memory of their own VM", function()
    local stats = runtime.memstats()
    assert.are.equal(runtime.gomaxprocs(), #stats.by_processor)
  end)
end)

describe("a program with spawned goroutines", function()
  it("panics with status 2 when an error escapes a spawned goroutine", function()
    local r = helper.run([[
      local lugo, time = require "lugo", require "lugo.time"
      lugo.spawn(function() error("boom from a spawned goroutine") end)
      time.sleep(5)
      print("not reached")
    ]])
    assert.are.equal(2, r.status)
    assert.are.equal("", r.stdout)
    assert.matches("^panic: [^\n]*boom from a spawned goroutine\n", r.stderr)
    assert.matches("\ngoroutine %d+ %[running%]:", r.stderr)
  end)

  it("reports a deadlock that involves a spawned goroutine, listing it", function()
    local r = helper.run([[
      local lugo, runtime = require "lugo", require "lugo.runtime"
      local ids, never = lugo.chan(1), lugo.chan()
      lugo.spawn(function() ids:send(runtime.goid()); never:recv() end)
      io.stderr:write("spawned ", ids:recv(), "\n")
      lugo.chan():recv()
    ]])
    helper.assert_deadlock(r)
    local id = r.stderr:match("spawned (%d+)")
    assert.is_not_nil(id)
    assert.matches("goroutine 1 %[chan receive%]:", r.stderr)
    assert.matches("goroutine " .. id .. " %[chan receive%]:", r.stderr)
  end)

  it("runs as many processors as -p asks for", function()
    local r = helper.run([[
      local lugo, runtime = require "lugo", require "lugo.runtime"
      local ch = lugo.chan()
      lugo.spawn(function() ch:send(runtime.gomaxprocs()) end)
      print(runtime.gomaxprocs(), (ch:recv()))
    ]], { flags = "-p 3" })
    helper.assert_clean_run(r, "3\t3\n")
  end)

  it("prints the scheduler's state with LUGO_DEBUG=schedtrace", function()
    local r = helper.run([[require("lugo.time").sleep(0.2)]],
      { flags = "-p 2", env = "LUGO_DEBUG=schedtrace=50" })
    assert.are.equal(0, r.status)
    assert.are.equal("", r.stdout)
    local lines = 0
    for line in r.stderr:gmatch("[^\n]+") do
      assert.matches("^SCHED %d+ms: gomaxprocs=2 idleprocs=%d+ ", line)
      lines = lines + 1
    end
    assert.is_true(lines >= 2, "expected SCHED lines, got: " .. r.stderr)
  end)

  it("prints every goroutine of every processor and exits 2 on SIGQUIT", function()
    -- The spawned goroutine parks in its receive soon after its send; on a
    -- loaded machine its processor's thread may not have got there when the
    -- signal comes (it is then shown running): try again a few times.
    local r, id
    for _ = 1, 4 do
      r = helper.run([[
        local lugo, time, runtime = require "lugo", require "lugo.time", require "lugo.runtime"
        local ffi = require "ffi"
        ffi.cdef "int getpid(void); int kill(int pid, int sig);"
        local ids = lugo.chan(1)
        lugo.spawn(function() ids:send(runtime.goid()); lugo.chan():recv() end)
        io.stdout:write("spawned ", ids:recv(), "\n")
        io.stdout:flush()
        time.sleep(0.2)
        -- Sent by a goroutine that runs once the main goroutine sleeps.
        lugo.go(function() ffi.C.kill(ffi.C.getpid(), 3) end)
        time.sleep(5)
        print("not reached")
      ]])
      assert.are.equal(2, r.status)
      id = r.stdout:match("^spawned (%d+)\n$")
      assert.is_not_nil(id, r.stdout)
      if r.stderr:find("goroutine " .. id .. " [chan receive]", 1, true) then break end
    end
    assert_contains(r.stderr, "SIGQUIT: quit")
    assert_contains(r.stderr, "goroutine 1 [sleep]")
    assert_contains(r.stderr, "goroutine " .. id .. " [chan receive]")
  end)

  local it_signals = helper.signals_reach_lua() and it or pending -- see helper.lua
  it_signals("on SIGQUIT, shows a goroutine stuck in compiled code and every other one", function()
    -- ../shared/repro/quit_spin.lua: a JIT-compiled loop never reaches a
    -- safe point; its processor is stopped and read from outside.
    local r = helper.run([[
      local lugo, time = require "lugo", require "lugo.time"
      local ffi = require "ffi"
      ffi.cdef "int getpid(void); int kill(int pid, int sig);"
      local sync = require "lugo.sync"
      local parked = sync.waitgroup()
      parked:add(100)
      -- Each parks in its receive right after done: nothing runs in between.
      for i = 1, 100 do lugo.go(function() parked:done() lugo.chan():recv() end) end
      -- Runs once main sleeps and the others have parked: it sends SIGQUIT
      -- to the process, then never yields again.
      lugo.go(function()
        parked:wait()
        ffi.C.kill(ffi.C.getpid(), 3)
        local x = 0
        while true do x = x + 1 end
      end)
      time.sleep(5)
    ]], { flags = "-p 1" })
    assert.are.equal(2, r.status)
    local n = 0
    for _ in r.stderr:gmatch("\ngoroutine %d+ %[") do n = n + 1 end
    assert.are.equal(102, n, r.stderr:sub(1, 2000))
    assert.matches("\ngoroutine 102 %[running, in compiled code, on processor 0%]:\n\t[^\n]+:%d+: in function <", r.stderr)
    assert.matches("\ngoroutine 2 %[chan receive%]:\n", r.stderr)
    assert.matches("\ngoroutine 1 %[sleep%]:\n", r.stderr)
  end)

  it("exits 2 on a SIGQUIT sent by another process", function()
    local script = os.tmpname()
    local f = assert(io.open(script, "wb"))
    f:write([[
      io.stdout:write("ready\n")
      io.stdout:flush()
      require("lugo.time").sleep(5)
    ]])
    f:close()
    local out, err = os.tmpname(), os.tmpname()
    local q = helper.shell_quote
    local cmd = string.format(
      "%s %s >%s 2>%s & pid=$!; i=0; while ! grep -q ready %s && [ $i -lt 200 ]; do sleep 0.02; i=$((i+1)); done; " ..
      "kill -QUIT $pid; wait $pid; echo $?", q(helper.lugo_bin()), q(script), q(out), q(err), q(out))
    local p = assert(io.popen(cmd))
    local status = tonumber(p:read("*a"):match("(%d+)%s*$"))
    p:close()
    local ef = assert(io.open(err, "rb"))
    local stderr = ef:read("*a")
    ef:close()
    os.remove(script); os.remove(out); os.remove(err)
    assert.are.equal(2, status)
    assert_contains(stderr, "SIGQUIT: quit")
    assert_contains(stderr, "goroutine 1 [sleep]")
  end)

  it("reports a goroutine stuck in a JIT-compiled loop for more than a second", function()
    local r = helper.run([[
      local time = require "lugo.time"
      local t0, n = time.now(), 0
      while time.now() - t0 < 1.5 do n = n + 1 end
      print("done")
    ]])
    assert.are.equal(0, r.status)
    assert.are.equal("done\n", r.stdout)
    assert_contains(r.stderr, "has run for")
    assert_contains(r.stderr, "without yielding")
    -- ../shared/repro/jit_loop_freezes_processor.lua: the report names the fix
    assert_contains(r.stderr, "runtime.gosched()")
    assert_contains(r.stderr, "jit.off")
    assert_contains(r.stderr, "stack traceback:") -- printed once it left compiled code
  end)
end)

-- Found in review.
describe("sharing and copying corner cases", function()
  it("shares a channel holding a value that holds the channel itself", function()
    local ch = lugo.chan(1)
    ch:send({ ch = ch })
    local out = lugo.chan(1)
    lugo.spawn(function(c, o)
      local v = c:recv()
      o:send(v.ch == c)
    end, ch, out)
    assert.is_true(recv(out, "the spawned goroutine"))
  end)

  it("gives each copy of a function without upvalues a closure of its own", function()
    local function handler() return print ~= nil end -- no upvalues, standard globals only
    local done = lugo.chan(1)
    lugo.spawn(function(f, d)
      setfenv(f, {}) -- sandbox this goroutine's own copy
      d:send(f())
    end, handler, done)
    assert.is_false(recv(done, "the first copy"))
    lugo.spawn(function(f, d) d:send(f()) end, handler, done)
    assert.is_true(recv(done, "an independent copy"))
  end)

  it("drops spawned goroutines never started, spilled from a full run queue, at exit", function()
    -- (LeakSanitizer, in the sanitized build, sees what was not freed)
    local r = helper.run([[
      local lugo = require "lugo"
      local block = lugo.chan()
      for i = 1, 200 do
        lugo.spawn(function(b)
          for j = 1, 300 do lugo.go(function() end) end
          os.exit(0)
        end, block)
      end
      block:recv()
    ]], { flags = "-p 1" })
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("", r.stderr)
  end)
end)

-- An idle processor whose thread is off the CPU (a busy machine) may be run
-- by another idle thread, one goroutine at a time (docs/api.md,
-- "Processors"). LUGO_DEBUG=lendstale=0 makes that happen whenever a
-- processor waits idle: the programs below hand values between two
-- processors, so many of their goroutines run on the other's thread, and
-- must mean exactly what they mean without it. LUGO_DEBUG=busygap=0 forces
-- busy mode (proc.c), which a machine with no idle CPU sets: there an idle
-- thread sleeps at once, its processor lendable while it sleeps, and the
-- wake-ups for it are left to the thread that carries it.
describe("a processor run by another processor's thread", function()
  local LEND = { flags = "-p 2", env = "LUGO_DEBUG=lendstale=0" }
  local BUSY = { flags = "-p 2", env = "LUGO_DEBUG=busygap=0" }
  local modes = { { "", LEND }, { " (busy mode)", BUSY } }
  -- The peer goroutine runs on processor 1: processor 0 stays busy until
  -- it has started, so another processor took it.
  local PEER = [[
    local lugo = require "lugo"
    local ping, pong, ready = lugo.chan(), lugo.chan(), lugo.chan(1)
    local function start_peer(f, ...)
      lugo.spawn(function(f, ping, pong, ready, ...)
        ready:send(true)
        f(ping, pong, ...)
      end, f, ping, pong, ready, ...)
      while ready:len() == 0 do end
      ready:recv()
    end
  ]]

  for _, mode in ipairs(modes) do
    it("delivers every value, in order, between the two" .. mode[1], function()
      local r = helper.run(PEER .. [[
        start_peer(function(ping, pong)
          for v in ping:range() do pong:send({ v[1] * 2, tag = v.tag }) end
          pong:close()
        end)
        local sum = 0
        for i = 1, 20000 do
          ping:send({ i, tag = "t" .. i })
          local back = pong:recv()
          assert(back[1] == 2 * i and back.tag == "t" .. i, "wrong reply to " .. i)
          sum = sum + back[1]
        end
        ping:close()
        assert(pong:recv() == nil)
        print(sum)
      ]], mode[2])
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal(tostring(20000 * 20001) .. "\n", r.stdout)
    end)

    it("reports a panic of the peer goroutine with its own traceback" .. mode[1], function()
      local r = helper.run(PEER .. [[
        local function fail_after(ping, pong, n)
          for i = 1, n do pong:send(ping:recv()) end
          error("peer gave up after " .. n)
        end
        start_peer(fail_after, 5000)
        for i = 1, 5000 do ping:send(i); pong:recv() end
        ping:send(0) -- never received: the peer panics
      ]], mode[2])
      assert.are.equal(2, r.status)
      assert_contains(r.stderr, "panic: ")
      assert_contains(r.stderr, "peer gave up after 5000")
      assert_contains(r.stderr, ":13: in function 'f'") -- error's line, in the peer's body
      assert_contains(r.stderr, "created by function 'start_peer' in goroutine 1")
    end)
  end

  -- The peer spins in interpreted code after 5,000 hand-offs: preempted,
  -- it lets the main processor's goroutines (a ticker) go on meanwhile.
  local SPINNING_PEER = PEER .. [[
    local time = require "lugo.time"
    local function spin_after(ping, pong, n)
      for i = 1, n do pong:send(ping:recv()) end
      local function spin(deadline) while time.now() < deadline do end end
      jit.off(spin)
      spin(time.now() + 0.3)
      pong:send("spun")
    end
    start_peer(spin_after, 5000)
    for i = 1, 5000 do ping:send(i); pong:recv() end
    local ticks = 0
    lugo.go(function() while true do time.sleep(0.01); ticks = ticks + 1 end end)
    assert(pong:recv() == "spun")
    print(ticks > 0)
  ]]
  local function expect_spinning_peer_preempted(opts)
    local r = helper.run(SPINNING_PEER, opts)
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("true\n", r.stdout)
  end

  for _, mode in ipairs(modes) do
    it("preempts a peer goroutine that spins, so that both processors' goroutines go on" .. mode[1], function()
      expect_spinning_peer_preempted(mode[2])
    end)

    it("exits with the main goroutine while the peer still waits" .. mode[1], function()
      local r = helper.run(PEER .. [[
        start_peer(function(ping, pong) for v in ping:range() do pong:send(v) end end)
        for i = 1, 5000 do ping:send(i); pong:recv() end
        print("done")
      ]], mode[2])
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("done\n", r.stdout)
    end)
  end

  -- The peer's processor sleeps with a descriptor for over 10 ms each
  -- round (so sysmon asks it to poll), is woken by a value, and its
  -- goroutine arms a timer there, which its own thread must wait for and
  -- fire; the main processor's idle thread looks at it meanwhile. A
  -- wake-up taken from it would leave it asleep for good: the guard ends
  -- the program instead.
  for _, mode in ipairs { { "", { flags = "-p 2" } }, { " (busy mode)", BUSY } } do
    it("wakes a sleeping processor for a value, then for the timer its goroutine arms" .. mode[1], function()
      local r = helper.run(PEER .. [[
        local net = require "lugo.net"
        local time = require "lugo.time"
        start_peer(function(ping, pong)
          local ln = assert(net.listen("tcp", "127.0.0.1:0"))
          for v in ping:range() do
            time.sleep(0.002)
            pong:send(v)
          end
          ln:close()
        end)
        for i = 1, 40 do
          time.sleep(0.015)
          ping:send(i)
          local which, v = lugo.select(lugo.case.recv(pong), lugo.case.recv(time.after(10)))
          assert(which == 1, "the peer's processor slept through its wake-up")
          assert(v == i, "wrong reply to " .. i)
        end
        print("ok")
      ]], mode[2])
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("ok\n", r.stdout)
    end)
  end

  -- Two processors' threads on one CPU (taskset): an idle one gives the CPU
  -- and its processor to the other instead of spinning (findrunnable's
  -- cpu_shared), so most goroutines run on the other's thread, and after
  -- a yield, not a pause.
  local status = io.open("/proc/self/status")
  local first_cpu = status and status:read("*a"):match("Cpus_allowed_list:%s*(%d+)")
  if status then status:close() end
  local ONE_CPU = { flags = "-p 2", env = "taskset -c " .. (first_cpu or "0") }

  it("delivers every value, in order, when both processors share one CPU", function()
    local r = helper.run(PEER .. [[
      start_peer(function(ping, pong)
        for v in ping:range() do pong:send(v * 3) end
        pong:close()
      end)
      local sum = 0
      for i = 1, 20000 do
        ping:send(i)
        local back = pong:recv()
        assert(back == 3 * i, "wrong reply to " .. i)
        sum = sum + back
      end
      ping:close()
      assert(pong:recv() == nil)
      print(sum, require("lugo.runtime").numcpu())
    ]], ONE_CPU)
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal(tostring(3 * 20000 * 20001 / 2) .. "\t1\n", r.stdout)
  end)

  it("preempts a spinning goroutine when both processors share one CPU", function()
    expect_spinning_peer_preempted(ONE_CPU)
  end)
end)
