-- lugo.runtime: the scheduler's view of the program (docs/api.md,
-- "lugo.runtime"), and the lifetime of lugo's objects under Lua's collector.
local lugo = require "lugo"
local runtime = require "lugo.runtime"
local time = require "lugo.time"
local sync = require "lugo.sync"
local helper = require "helper"

local recv, default = lugo.case.recv, lugo.case.default
local settle, recv_within = helper.settle, helper.recv_within
local assert_contains, states = helper.assert_contains, helper.goroutine_states
local HANG = 5 -- seconds; only against hangs

local function is_integer(n)
  return type(n) == "number" and n == math.floor(n) and n > -math.huge and n < math.huge
end

-- Assert that n is an integer of at least 1.
local function assert_positive_integer(n)
  assert.is_true(is_integer(n))
  assert.is_true(n >= 1)
end

-- Compiled traces may hold the very closures they were recorded through
-- (LuaJIT specialises on function identity): flush them first, so only the
-- runtime's own references are left to keep an object alive.
local function full_gc()
  if jit then jit.flush() end
  collectgarbage("collect")
  collectgarbage("collect")
end

-- Whether the object make() returns is collected once nothing refers to it.
-- `pass` lets the scheduler run between collections: the runtime releases
-- some references (values held for a dead channel) at a scheduling point.
local function collected(make, pass)
  local weak = setmetatable({}, { __mode = "v" })
  weak[1] = make()
  full_gc()
  if pass then
    settle()
    full_gc()
  end
  return weak[1] == nil
end

describe("runtime.gosched lets other goroutines run", function()
  it("runs a goroutine started just before it, at program start", function()
    local r = helper.run([[
      local lugo, runtime = require "lugo", require "lugo.runtime"
      local ran = false
      lugo.go(function() ran = true end)
      runtime.gosched()
      print(ran)
    ]])
    helper.assert_clean_run(r, "true\n")
  end)

  it("runs a runnable goroutine, and then the caller continues", function()
    local ran = false
    lugo.go(function() ran = true end)
    -- Go checks its global queue first once every 61 scheduling rounds, so
    -- one gosched may come straight back; two always let the other run.
    runtime.gosched()
    if not ran then runtime.gosched() end
    assert.is_true(ran)
  end)

  it("returns at once when nothing else is runnable", function()
    local t0 = time.now()
    for _ = 1, 100 do runtime.gosched() end
    assert.is_true(time.now() - t0 < HANG)
  end)

  it("returns nothing", function()
    assert.are.equal(0, select("#", runtime.gosched()))
  end)

  it("interleaves goroutines that call it in a loop", function()
    local log = {}
    local done = lugo.chan(2)
    for _, name in ipairs({ "a", "b" }) do
      lugo.go(function()
        for _ = 1, 20 do
          log[#log + 1] = name
          runtime.gosched()
        end
        done:send(true)
      end)
    end
    done:recv()
    done:recv()
    assert.are.equal(40, #log)
    local run = 1
    for i = 2, #log do
      run = log[i] == log[i - 1] and run + 1 or 1
      assert.is_true(run <= 2, "one goroutine ran 3 times in a row: " .. table.concat(log))
    end
  end)

  it("works in a goroutine other than the test body", function()
    local out = lugo.chan(1)
    local other_ran = false
    lugo.go(function()
      lugo.go(function() other_ran = true end)
      runtime.gosched()
      if not other_ran then runtime.gosched() end
      out:send(other_ran)
    end)
    assert.is_true(recv_within(out, HANG))
  end)
end)

describe("runtime.goid identifies the goroutine", function()
  it("is a positive integer in the test body", function()
    local id = runtime.goid()
    assert.is_true(is_integer(id))
    assert.is_true(id > 0)
  end)

  it("is 1 in a program's main goroutine", function()
    local r = helper.run([[print(require("lugo.runtime").goid())]])
    assert.are.equal(0, r.status)
    assert.are.equal("1\n", r.stdout)
  end)

  it("is distinct for each goroutine and larger for newer ones", function()
    local main = runtime.goid()
    local out = lugo.chan(10)
    for i = 1, 10 do
      lugo.go(function() out:send({ i, runtime.goid() }) end)
    end
    local ids, seen = {}, {}
    for _ = 1, 10 do
      local r = out:recv()
      ids[r[1]] = r[2]
    end
    for i = 1, 10 do
      assert.is_true(is_integer(ids[i]))
      assert.are_not.equal(main, ids[i])
      assert.is_nil(seen[ids[i]], "two goroutines share id " .. tostring(ids[i]))
      seen[ids[i]] = true
      if i > 1 then assert.is_true(ids[i] > ids[i - 1], "a newer goroutine has a smaller id") end
    end
  end)

  it("is not reused after a goroutine ends", function()
    local out = lugo.chan(1)
    lugo.go(function() out:send(runtime.goid()) end)
    local first = out:recv()
    settle()
    for _ = 1, 5 do
      lugo.go(function() out:send(runtime.goid()) end)
      local id = out:recv()
      assert.is_true(id > first, "goroutine id " .. id .. " reused")
      first = id
      settle()
    end
  end)

  it("stays the same across blocking", function()
    local out = lugo.chan(1)
    lugo.go(function()
      local before = runtime.goid()
      time.sleep(0.002)
      local ch = lugo.chan()
      lugo.go(function() ch:send(1) end)
      ch:recv()
      runtime.gosched()
      out:send({ before, runtime.goid() })
    end)
    local r = recv_within(out, HANG)
    assert.are.equal(r[1], r[2])
    local me = runtime.goid()
    time.sleep(0.001)
    assert.are.equal(me, runtime.goid())
  end)

  -- Plain luajit loads lugo/core.so from LUGO_CORE_DIR (set by ctest); it
  -- cannot load an ASan build of it.
  local plain = helper.has_plain_luajit() and it or pending
  plain("is 0 outside any goroutine (plain luajit), 1 in lugo.main", function()
    local _, out = helper.run_luajit([[
      local runtime = require "lugo.runtime"
      io.write(runtime.goid(), " ")
      require("lugo").main(function() io.write(runtime.goid()) end)
    ]])
    assert.are.equal("0 1", out)
  end)
end)

describe("runtime.num_goroutine counts the goroutines that exist", function()
  it("is 1 at the start of a program", function()
    local r = helper.run([[print(require("lugo.runtime").num_goroutine())]])
    assert.are.equal("1\n", r.stdout)
  end)

  it("counts started, not-yet-started, blocked and sleeping goroutines, and drops as they end", function()
    settle()
    local base = runtime.num_goroutine()
    assert_positive_integer(base)
    local gate = lugo.chan()
    for _ = 1, 5 do lugo.go(function() gate:recv() end) end
    assert.are.equal(base + 5, runtime.num_goroutine(), "not-yet-started goroutines")
    settle()
    assert.are.equal(base + 5, runtime.num_goroutine(), "goroutines blocked in recv")
    lugo.go(function() time.sleep(0.05) end)
    settle()
    assert.are.equal(base + 6, runtime.num_goroutine(), "a sleeping goroutine")
    gate:close()
    settle()
    assert.are.equal(base + 1, runtime.num_goroutine(), "after the receivers ended")
    time.sleep(0.08)
    assert.are.equal(base, runtime.num_goroutine(), "after the sleeper ended")
  end)

  it("counts a goroutine blocked forever", function()
    settle()
    local base = runtime.num_goroutine()
    lugo.go(function() lugo.select() end)
    settle()
    full_gc()
    assert.are.equal(base + 1, runtime.num_goroutine())
  end)

  it("is seen the same from any goroutine", function()
    settle()
    local base = runtime.num_goroutine()
    local out = lugo.chan(1)
    lugo.go(function() out:send(runtime.num_goroutine()) end)
    assert.are.equal(base + 1, out:recv())
  end)
end)

describe("runtime.gomaxprocs is fixed for a run", function()
  it("returns a positive integer, the same every time", function()
    local n = runtime.gomaxprocs()
    assert_positive_integer(n)
    assert.are.equal(n, runtime.gomaxprocs())
  end)

  it("accepts the current value, and a value below 1 as a query", function()
    local n = runtime.gomaxprocs()
    assert.are.equal(n, runtime.gomaxprocs(n))
    assert.are.equal(n, runtime.gomaxprocs(0))
    assert.are.equal(n, runtime.gomaxprocs(-1))
    assert.are.equal(n, runtime.gomaxprocs())
  end)

  it("raises an error when asked for a different number", function()
    local n = runtime.gomaxprocs()
    assert.has_error(function() runtime.gomaxprocs(n + 1) end)
    assert.has_error(function() runtime.gomaxprocs(n + 7) end)
    assert.are.equal(n, runtime.gomaxprocs())
  end)

  it("raises a bad-argument error for a value that is not a number", function()
    local ok, err = pcall(runtime.gomaxprocs, "2")
    assert.is_false(ok)
    assert_contains(tostring(err), "bad argument #1 to 'gomaxprocs' (number expected, got string)")
  end)
end)

describe("runtime.numcpu", function()
  it("is a positive integer", function()
    local n = runtime.numcpu()
    assert_positive_integer(n)
  end)

  it("is the number of CPUs the process may use", function()
    local p = io.popen("nproc 2>/dev/null")
    local expect = p and tonumber(p:read("*a"))
    if p then p:close() end
    if expect then assert.are.equal(expect, runtime.numcpu()) end
  end)
end)

describe("runtime.stack shows tracebacks", function()
  -- Not a tail call: the frame must stay on the stack.
  local function stack_from_a_named_function(all)
    local s = runtime.stack(all)
    return s
  end

  it("returns this goroutine's traceback under 'goroutine N [running]:'", function()
    local s = stack_from_a_named_function()
    assert.are.equal("string", type(s))
    assert.matches("^goroutine " .. runtime.goid() .. " %[running%]:\n", s)
    assert_contains(s, "stack_from_a_named_function")
    assert_contains(s, "runtime_spec.lua")
  end)

  it("shows only the calling goroutine without all", function()
    local gate = lugo.chan()
    lugo.go(function() gate:recv() end)
    settle()
    local s = runtime.stack()
    local n = 0
    for _ in s:gmatch("goroutine %d+ %[") do n = n + 1 end
    assert.are.equal(1, n)
    gate:close()
  end)

  it("shows the id of the goroutine that calls it", function()
    local out = lugo.chan(1)
    lugo.go(function()
      local function inner_goroutine_function()
        local s = runtime.stack()
        return s
      end
      out:send({ runtime.goid(), inner_goroutine_function() })
    end)
    local r = recv_within(out, HANG)
    assert.matches("^goroutine " .. r[1] .. " %[running%]:", r[2])
    assert_contains(r[2], "inner_goroutine_function")
  end)

  it("with all, lists a goroutine blocked in a channel receive as [chan receive]", function()
    local ch = lugo.chan()
    local function blocked_receiver_body()
      ch:recv()
    end
    local id
    lugo.go(function()
      id = runtime.goid()
      blocked_receiver_body()
    end)
    settle()
    local s = stack_from_a_named_function(true)
    assert.matches("^goroutine " .. runtime.goid() .. " %[running%]:", s)
    assert_contains(s, "goroutine " .. id .. " [chan receive]:")
    assert_contains(s, "blocked_receiver_body")
    ch:close()
  end)

  it("with all, names the state of each blocked goroutine as Go does", function()
    local ids = {}
    local function spawn(state, f)
      lugo.go(function()
        ids[state] = runtime.goid()
        f()
      end)
    end
    local sendc, recvc, quit = lugo.chan(), lugo.chan(), lugo.chan()
    local m, rw, wg = sync.mutex(), sync.rwmutex(), sync.waitgroup()
    local cond = sync.cond(sync.mutex())
    m:lock()
    rw:lock()
    wg:add(1)
    spawn("chan send", function() sendc:send(1) end)
    spawn("chan receive", function() recvc:recv() end)
    spawn("select", function() lugo.select(recv(quit), recv(recvc)) end)
    local slept = lugo.chan(1)
    spawn("sleep", function() time.sleep(0.05); slept:send(true) end)
    spawn("sync.Mutex.Lock", function() m:lock(); m:unlock() end)
    spawn("sync.RWMutex.RLock", function() rw:rlock(); rw:runlock() end)
    spawn("sync.WaitGroup.Wait", function() wg:wait() end)
    spawn("sync.Cond.Wait", function()
      cond:locker():lock()
      cond:wait()
      cond:locker():unlock()
    end)
    settle()
    local st = states(runtime.stack(true))
    local got = {}
    for state, id in pairs(ids) do got[state] = st[id] end
    assert.are.same({
      ["chan send"] = "chan send",
      ["chan receive"] = "chan receive",
      ["select"] = "select",
      ["sleep"] = "sleep",
      ["sync.Mutex.Lock"] = "sync.Mutex.Lock",
      ["sync.RWMutex.RLock"] = "sync.RWMutex.RLock",
      ["sync.WaitGroup.Wait"] = "sync.WaitGroup.Wait",
      ["sync.Cond.Wait"] = "sync.Cond.Wait",
    }, got)
    sendc:recv()
    recvc:close()
    quit:close()
    m:unlock()
    rw:unlock()
    wg:done()
    cond:broadcast()
    slept:recv()
    settle()
  end)

  it("with all, lists a goroutine blocked in select() with no cases", function()
    local id
    lugo.go(function()
      id = runtime.goid()
      lugo.select()
    end)
    settle()
    assert.are.equal("select (no cases)", states(runtime.stack(true))[id])
  end)

  it("with all, lists a goroutine that has not started as runnable", function()
    local id_before = runtime.goid()
    local started = false
    lugo.go(function() started = true end)
    local st = states(runtime.stack(true))
    assert.is_false(started)
    local runnable = 0
    for id, state in pairs(st) do
      if id ~= id_before and state == "runnable" then runnable = runnable + 1 end
    end
    assert.is_true(runnable >= 1)
    settle()
  end)

  it("with all, lists the current goroutine first and leaves out finished ones", function()
    local finished
    lugo.go(function() finished = runtime.goid() end)
    settle()
    local s = runtime.stack(true)
    assert.matches("^goroutine " .. runtime.goid() .. " %[running%]:", s)
    assert.is_nil(states(s)[finished])
    -- Every goroutine that exists is listed.
    local n = 0
    for _ in pairs(states(s)) do n = n + 1 end
    assert.are.equal(runtime.num_goroutine(), n)
  end)
end)

describe("runtime.goroutine_dump shows every processor's goroutines without stopping", function()
  it("lists goroutines parked on other processors, and the program goes on", function()
    local procs = runtime.gomaxprocs()
    local release, started = lugo.chan(), lugo.chan(procs)
    for _ = 1, procs do
      lugo.spawn(function(release, started)
        started:send(true)
        release:recv()
      end, release, started)
    end
    for i = 1, procs do recv_within(started, HANG, "spawned goroutine " .. i) end
    -- a goroutine that has sent `started` may not have parked yet: the dump
    -- shows it running until it does
    local dump, parked
    local deadline = time.now() + HANG
    repeat
      dump = runtime.goroutine_dump()
      parked = 0
      for _ in dump:gmatch("%[chan receive%]") do parked = parked + 1 end
      if parked < procs then time.sleep(0.005) end
    until parked >= procs or time.now() > deadline
    assert_contains(dump, "goroutine 1 [")
    assert.is_true(parked >= procs, dump)
    assert_contains(dump, "created by")
    release:close()
    assert.is_true(#runtime.goroutine_dump() > 0) -- again: the protocol resets
  end)

  it("sched_stats gives the scheduler's counters", function()
    local s = runtime.sched_stats()
    assert.are.equal(runtime.gomaxprocs(), s.gomaxprocs)
    assert.are.equal(runtime.gomaxprocs(), #s.runqueues)
    assert.is_true(s.goroutines >= 1)
    assert.is_true(s.idleprocs >= 0 and s.idleprocs <= s.gomaxprocs)
  end)
end)

describe("runtime.memstats describes memory and goroutines", function()
  it("has numeric alloc, a by_processor table of numbers and goroutines", function()
    local m = runtime.memstats()
    assert.are.equal("table", type(m))
    assert.are.equal("number", type(m.alloc))
    assert.is_true(m.alloc > 0)
    assert.are.equal("table", type(m.by_processor))
    assert.are.equal(runtime.gomaxprocs(), #m.by_processor)
    for _, b in ipairs(m.by_processor) do
      assert.are.equal("number", type(b))
      assert.is_true(b >= 0)
    end
    assert.are.equal(runtime.num_goroutine(), m.goroutines)
  end)

  it("counts goroutines as num_goroutine does", function()
    local gate = lugo.chan()
    for _ = 1, 3 do lugo.go(function() gate:recv() end) end
    assert.are.equal(runtime.num_goroutine(), runtime.memstats().goroutines)
    settle()
    assert.are.equal(runtime.num_goroutine(), runtime.memstats().goroutines)
    gate:close()
    settle()
    assert.are.equal(runtime.num_goroutine(), runtime.memstats().goroutines)
  end)

  it("grows when memory is kept, and shrinks when it is collected", function()
    runtime.gc()
    local before = runtime.memstats().alloc
    local big = {}
    for i = 1, 200000 do big[i] = { i } end
    local during = runtime.memstats().alloc
    assert.is_true(during - before > 1e6, ("alloc grew by %d bytes"):format(during - before))
    big = nil -- luacheck: ignore
    runtime.gc()
    runtime.gc()
    local after = runtime.memstats().alloc
    assert.is_true(after < during - 1e6, ("alloc %d after freeing, %d before"):format(after, during))
  end)
end)

describe("runtime.gc collects garbage", function()
  it("runs without error, in the test body and in other goroutines", function()
    assert.has_no.errors(function() runtime.gc() end)
    local out = lugo.chan(1)
    lugo.go(function() out:send(pcall(runtime.gc)) end)
    assert.is_true(recv_within(out, HANG))
  end)

  it("frees unreachable objects", function()
    local weak = setmetatable({}, { __mode = "v" })
    weak[1] = {}
    weak[2] = lugo.chan()
    runtime.gc()
    runtime.gc()
    assert.is_nil(weak[1])
    assert.is_nil(weak[2])
  end)
end)

describe("unreachable objects are collected", function()
  it("an unbuffered, a buffered and a closed channel", function()
    assert.is_true(collected(function() return lugo.chan() end))
    assert.is_true(collected(function() return lugo.chan(10) end))
    assert.is_true(collected(function()
      local c = lugo.chan(1)
      c:send(1)
      c:close()
      return c
    end))
  end)

  it("a channel that was used in a select", function()
    assert.is_true(collected(function()
      local c = lugo.chan()
      lugo.select(recv(c), default)
      return c
    end))
  end)

  it("mutexes, rwmutexes, waitgroups, onces and conds", function()
    assert.is_true(collected(function() return sync.mutex() end), "mutex")
    assert.is_true(collected(function()
      local m = sync.mutex()
      m:lock()
      return m
    end), "locked mutex")
    assert.is_true(collected(function() return sync.rwmutex() end), "rwmutex")
    assert.is_true(collected(function() return sync.waitgroup() end), "waitgroup")
    assert.is_true(collected(function() return sync.once() end), "once")
    assert.is_true(collected(function() return sync.cond(sync.mutex()) end), "cond")
  end)

  it("stopped timers and tickers, and their channels", function()
    assert.is_true(collected(function()
      local t = time.timer(10)
      t:stop()
      return t.c
    end), "timer channel")
    assert.is_true(collected(function()
      local t = time.ticker(10)
      t:stop()
      return t.c
    end), "ticker channel")
  end)

  it("the channel of a ticker nobody stopped (Go 1.23)", function()
    assert.is_true(collected(function() return time.ticker(10).c end), "ticker")
    assert.is_true(collected(function() return time.tick(10) end), "tick")
    assert.is_true(collected(function() return time.after(10) end), "after")
  end)

  it("values buffered in a channel that became unreachable", function()
    assert.is_true(collected(function()
      local c = lugo.chan(3)
      local v = {}
      c:send(v)
      return v
    end, true))
  end)

  it("a value once it has been received", function()
    assert.is_true(collected(function()
      local c = lugo.chan(3)
      local v = {}
      c:send(v)
      c:recv()
      return v
    end))
    local c = lugo.chan()
    assert.is_true(collected(function()
      lugo.go(function() c:send({}) end)
      local v = c:recv()
      return v
    end, true))
  end)

  it("the value of a send case that was not chosen", function()
    assert.is_true(collected(function()
      local v = {}
      lugo.select(lugo.case.send(lugo.chan(), v), default)
      return v
    end, true))
  end)

  it("a finished goroutine's function and arguments", function()
    assert.is_true(collected(function()
      local arg = {}
      lugo.go(function() end, arg)
      settle()
      return arg
    end, true), "argument")
    assert.is_true(collected(function()
      local up = {}
      lugo.go(function() return up end)
      settle()
      return up
    end, true), "upvalue")
  end)

  it("the functions and arguments of many goroutines that ended", function()
    local weak = setmetatable({}, { __mode = "k" })
    local gate = lugo.chan()
    for _ = 1, 50 do
      local arg = {}
      weak[arg] = true
      lugo.go(function() gate:recv() end, arg)
    end
    settle()
    gate:close()
    settle()
    full_gc()
    settle()
    full_gc()
    local left = 0
    for _ in pairs(weak) do left = left + 1 end
    assert.are.equal(0, left)
  end)

  it("an after_func's function once its Timer is stopped and dropped", function()
    assert.is_true(collected(function()
      local f = function() end
      time.after_func(10, f):stop()
      return f
    end, true))
  end)
end)

describe("collection does not disturb goroutines", function()
  it("keeps channels that only goroutines refer to", function()
    local out = lugo.chan(1)
    do
      local a, b = lugo.chan(), lugo.chan()
      lugo.go(function()
        local n = 0
        for v in a:range() do n = n + v; b:send(n) end
        b:close()
      end)
      lugo.go(function()
        local last
        for i = 1, 100 do
          a:send(i)
          last = b:recv()
          if i % 10 == 0 then runtime.gosched() end
        end
        a:close()
        out:send(last)
      end)
    end
    for _ = 1, 5 do
      full_gc()
      runtime.gosched()
    end
    assert.are.equal(5050, recv_within(out, HANG))
  end)

  it("keeps values in flight: buffered, held by a blocked sender or a select", function()
    local buffered, unbuffered, sel = lugo.chan(2), lugo.chan(), lugo.chan()
    buffered:send({ "buffered" })
    lugo.go(function() unbuffered:send({ "sender" }) end)
    lugo.go(function() lugo.select(lugo.case.send(sel, { "select" }), recv(lugo.chan())) end)
    settle()
    full_gc()
    settle()
    full_gc()
    assert.are.same({ "buffered" }, buffered:recv())
    assert.are.same({ "sender" }, unbuffered:recv())
    assert.are.same({ "select" }, sel:recv())
  end)

  it("keeps a not-yet-started goroutine's function and arguments", function()
    local out = lugo.chan(1)
    lugo.go(function(t, s) out:send(t[1] .. s) end, { "arg" }, "ument")
    full_gc()
    full_gc()
    assert.are.equal("argument", recv_within(out, HANG))
  end)

  it("keeps sleeping goroutines and pending timers", function()
    local out = lugo.chan(3)
    lugo.go(function() time.sleep(0.02); out:send("sleep") end)
    local t = time.timer(0.02)
    time.after_func(0.02, function() out:send("after_func") end)
    settle()
    full_gc()
    assert.is_number(recv_within(t.c, HANG))
    local got = { (recv_within(out, HANG)), (recv_within(out, HANG)) }
    table.sort(got)
    assert.are.same({ "after_func", "sleep" }, got)
  end)

  it("leaves a goroutine blocked forever on a private channel alone", function()
    local id
    lugo.go(function()
      id = runtime.goid()
      lugo.chan():recv()
    end)
    settle()
    local base = runtime.num_goroutine()
    for _ = 1, 5 do
      full_gc()
      runtime.gosched()
    end
    settle()
    assert.are.equal(base, runtime.num_goroutine())
    assert.are.equal("chan receive", states(runtime.stack(true))[id])
    -- Other goroutines still work.
    local c = lugo.chan()
    lugo.go(function() c:send("still fine") end)
    assert.are.equal("still fine", recv_within(c, HANG))
  end)

  it("does not crash a program whose goroutines block forever on channels nobody else holds", function()
    local r = helper.run([[
      local lugo, runtime, time = require "lugo", require "lugo.runtime", require "lugo.time"
      for i = 1, 200 do
        lugo.go(function()
          local c = lugo.chan(i % 2)
          if i % 3 == 0 then c:send({}) ; c:send({}) else c:recv() end
        end)
      end
      time.sleep(0.01)
      for _ = 1, 5 do
        collectgarbage("collect")
        runtime.gc()
        time.sleep(0.002)
      end
      print(runtime.num_goroutine())
    ]])
    helper.assert_clean_run(r, "201\n")
  end)

  it("survives collections while many goroutines churn through channels", function()
    local results = lugo.chan(20)
    for g = 1, 20 do
      lugo.go(function()
        local c = lugo.chan(g % 3)
        lugo.go(function()
          for i = 1, 50 do c:send({ i }) end
          c:close()
        end)
        local sum = 0
        for v in c:range() do
          sum = sum + v[1]
          if v[1] % 10 == 0 then collectgarbage("step", 100) end
        end
        results:send(sum)
      end)
    end
    for _ = 1, 20 do
      assert.are.equal(1275, recv_within(results, HANG))
    end
  end)
end)

describe("the values in flight take box numbers that follow what is live", function()
  -- A value waiting in the runtime (in a channel, a context, a goroutine
  -- not yet started) sits in the VM's box table at a number (rt.h). The
  -- numbers are reused at once and the table shrinks after a burst
  -- (ctx_value_growth.lua: 4,000,000 fresh numbers and 44-80 MB kept).
  it("reuses the numbers of contexts collected in a loop that never blocks", function()
    -- Its own program: the loop is compiled and never reaches the
    -- scheduler, as in ctx_value_growth.lua.
    local r = helper.run([[
      local context = require "lugo.context"
      local vals = require("lugo.internal").vals
      local parent = context.background()
      collectgarbage() collectgarbage()
      local before = collectgarbage("count")
      for i = 1, 400000 do
        local c = context.with_value(parent, "k", i)
      end
      collectgarbage() collectgarbage()
      local top = 0
      for k in pairs(vals) do if k > top then top = k end end
      print(top, (collectgarbage("count") - before) / 1024)
    ]])
    assert.are.equal(0, r.status, r.stderr)
    local top, grown = r.stdout:match("^(%d+)\t(%S+)\n$")
    -- 800,000 boxes were taken, two at a time; the collector freed them as
    -- the loop went, and their numbers came back without the scheduler
    assert.is_true(tonumber(top) < 200000, "highest box " .. tostring(top))
    assert.is_true(tonumber(grown) < 4, "heap grew by " .. tostring(grown) .. " MB")
  end)

  -- Each burst runs as its own program: goroutines other tests left behind
  -- may hold boxes, at any number, in this one.
  local burst_prelude = [[
    local lugo, runtime, sync = require "lugo", require "lugo.runtime", require "lugo.sync"
    local vals = require("lugo.internal").vals
    local function heap_mb()
      collectgarbage() collectgarbage()
      return collectgarbage("count") / 1024
    end
    local function boxes()
      local n, top = 0, 0
      for k in pairs(vals) do n, top = n + 1, math.max(top, k) end
      return n, top
    end
  ]]

  it("gives the table's memory back once a burst of values in flight is taken", function()
    local r = helper.run(burst_prelude .. [[
      local before = heap_mb()
      local N = 500000 -- 4 MB of table slots at least
      local ch, t = lugo.chan(N), {}
      for _ = 1, N do ch:send(t) end
      local full = heap_mb()
      for _ = 1, N do assert(ch:recv() == t) end
      runtime.gosched() -- the scheduler tidies the boxes
      local after = heap_mb()
      ch:send(t) -- and the numbers start low again
      local _, top = boxes()
      print(string.format("%.2f %.2f %d", full - before, after - before, top))
    ]])
    assert.are.equal(0, r.status, r.stderr)
    local full, after, top = r.stdout:match("^(%S+) (%S+) (%d+)\n$")
    assert.is_true(tonumber(full) > 3, r.stdout)
    assert.is_true(tonumber(after) < 1, "the heap stayed " .. tostring(after) .. " MB larger")
    assert.is_true(tonumber(top) < 1000, "highest box " .. tostring(top))
  end)

  it("does the same after goroutines parked with values in flight are released", function()
    local r = helper.run(burst_prelude .. [[
      local N = 50000
      local function burst()
        local ch, done = lugo.chan(), sync.waitgroup()
        for i = 1, N do
          done:add(1)
          lugo.go(function() ch:send({ i }); done:done() end)
        end
        runtime.gosched()
        local sum = 0
        for _ = 1, N do sum = sum + ch:recv()[1] end
        done:wait()
        assert(sum == N * (N + 1) / 2)
        runtime.gosched()
        local n, top = boxes()
        return heap_mb(), n, top
      end
      local h1, n1, top1 = burst()
      local h2, n2, top2 = burst()
      print(string.format("%d %d %d %d %.2f", n1, top1, n2, top2, h2 - h1))
    ]])
    assert.are.equal(0, r.status, r.stderr)
    local n1, top1, n2, top2, grown = r.stdout:match("^(%d+) (%d+) (%d+) (%d+) (%S+)\n$")
    assert.are.same({ "0", "0", "0", "0" }, { n1, top1, n2, top2 }, r.stdout)
    assert.is_true(tonumber(grown) < 1, "the heap grew by " .. tostring(grown) .. " MB")
  end)

  -- The set that anchors the goroutines' coroutines grew to a slot per
  -- goroutine of the burst and kept them (25 MB after 1,000,000): it is
  -- rebuilt once three quarters of it is gone. 4,096 idle coroutines stay
  -- pooled (about 3.5 MB).
  it("gives back the memory of a burst of goroutines once they have ended", function()
    local r = helper.run(burst_prelude .. [[
      local before = heap_mb()
      local N, gate, done = 200000, lugo.chan(), sync.waitgroup()
      for _ = 1, N do
        done:add(1)
        lugo.go(function() gate:recv() done:done() end)
      end
      runtime.gosched()
      local parked = heap_mb()
      gate:close()
      done:wait()
      runtime.gosched()
      print(string.format("%.1f %.1f", parked - before, heap_mb() - before))
    ]], { flags = "-p 1" })
    assert.are.equal(0, r.status, r.stderr)
    local parked, after = r.stdout:match("^(%S+) (%S+)\n$")
    assert.is_true(tonumber(parked) > 50, r.stdout)
    assert.is_true(tonumber(after) < 8, "the heap stayed " .. tostring(after) .. " MB larger")
  end)
end)
