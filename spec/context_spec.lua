-- lugo.context: Go's context package (lua/lugo/context.lua, runtime/context.c):
-- Background and TODO, cancellation down the tree, deadlines and timeouts,
-- values, after_func, contexts shared between processors, argument errors,
-- and children that are dropped without being cancelled.
--
-- ctest runs this file with 1, 2 and 4 processors (LUGO_MAXPROCS). Every
-- `it` body runs in the main goroutine on processor 0 and may block; every
-- wait is bounded (HANG) so that a bug fails a test instead of hanging it.
-- Times are only checked against lower bounds (never early) and generous
-- upper bounds (against hangs), never for speed.
--
-- A spawned function is copied into the VM that runs it: it may only
-- capture copyable values (never busted's assert), so spawned goroutines
-- send what they see back and the body asserts. An error escaping a spawned
-- goroutine would end the process, so they run under pcall (spawn_pcall).
local lugo = require "lugo"
local context = require "lugo.context"
local time = require "lugo.time"
local sync = require "lugo.sync"
local runtime = require "lugo.runtime"
local helper = require "helper"

local case = lugo.case
local recv, recv_within, settle = helper.recv, helper.recv_within, helper.settle
local can_recv, error_of, here = helper.can_recv, helper.error_of, helper.here
local HANG = 10 -- seconds; only against hangs
local EARLY = 0.001 -- a deadline may be observed at most this much early

local background = context.background

-- helper.pack, restated because spawned code must not require "helper".
local function pack(...) return { n = select("#", ...), ... } end

local at_home = helper.at_home -- for code that stays in this VM

-- Whether ctx is done right now (its done channel is closed), without blocking.
local function is_done(ctx)
  local done = ctx:done()
  return done ~= nil and can_recv(done)
end

-- Wait (at most HANG seconds) for ctx to be done; fails the test otherwise.
-- Returns the time it took.
local function wait_done(ctx, what)
  local t0 = time.now()
  local v, ok = recv_within(ctx:done(), HANG)
  assert(ok ~= "timeout", "timed out waiting for " .. (what or "the context") .. " to be done")
  assert.is_nil(v)
  assert.is_false(ok)
  return time.now() - t0
end

local spawn_pcall, spawn_elsewhere = helper.spawn_pcall, helper.spawn_elsewhere
local results = helper.spawn_results

-- Run go(f) for a goroutine that blocks, and wait (bounded) until it ends.
local function wait_for(f, what)
  local finished = lugo.chan(1)
  lugo.go(function() f() finished:send(true) end)
  assert.is_true(recv_within(finished, HANG) == true, "timed out waiting for " .. (what or "a goroutine"))
end

describe("context.background and context.todo", function()
  for _, k in ipairs({ { "background", "context.Background" }, { "todo", "context.TODO" } }) do
    local name, str = k[1], k[2]

    it(name .. "() is never done and has no deadline and no values", function()
      local ctx = context[name]()
      assert.is_nil(ctx:done())
      assert.is_nil(ctx:err())
      local d = pack(ctx:deadline())
      assert.are.equal(2, d.n)
      assert.is_nil(d[1])
      assert.is_false(d[2])
      assert.is_nil(ctx:value("k"))
      assert.is_nil(ctx:value({}))
      assert.is_nil(ctx:value(1))
    end)

    it(name .. "() returns the same object every time, and tostring gives " .. str, function()
      local a, b = context[name](), context[name]()
      assert.are.equal(a, b)
      assert.is_true(rawequal(a, b))
      assert.are.equal(str, tostring(a))
    end)
  end

  it("background and todo are two different contexts", function()
    assert.are_not.equal(background(), context.todo())
  end)

  it("background() is the same context on every processor", function()
    local chans = {}
    for i = 1, 3 do
      chans[i] = spawn_elsewhere(function(bg)
        local c = require "lugo.context"
        return c.background(), c.todo(), rawequal(c.background(), bg), tostring(bg)
      end, background())
    end
    for i = 1, 3 do
      local bg, todo, same_there, str = results(chans[i])
      assert.are.equal(background(), bg)
      assert.are.equal(context.todo(), todo)
      assert.is_true(same_there)
      assert.are.equal("context.Background", str)
    end
  end)

  it("children of background are never cancelled by anything but their own cancel", function()
    local v = context.with_value(background(), "k", "v")
    assert.is_nil(v:done())
    assert.is_nil(v:err())
    local c, cancel = context.with_cancel(v)
    settle()
    assert.is_false(is_done(c))
    cancel()
    assert.is_true(is_done(c))
    assert.is_nil(background():err())
    assert.is_nil(v:err())
  end)

  it("exports Go's two error strings", function()
    assert.are.equal("context canceled", context.canceled)
    assert.are.equal("context deadline exceeded", context.deadline_exceeded)
  end)
end)

describe("context.with_cancel", function()
  it("returns a context whose done channel is not ready until cancel()", function()
    local ctx, cancel = context.with_cancel(background())
    assert.are.equal("context.WithCancel", tostring(ctx))
    assert.are.equal("function", type(cancel))
    local done = ctx:done()
    assert.is_not_nil(done)
    assert.are.equal(done, ctx:done()) -- the same channel each time
    assert.is_nil(ctx:err())
    settle()
    assert.is_false(can_recv(done))
    assert.is_nil(ctx:err())
    cancel()
    local v, ok = done:recv()
    assert.is_nil(v)
    assert.is_false(ok)
    assert.are.equal(context.canceled, ctx:err())
    assert.are.equal("context canceled", ctx:err())
  end)

  it("closes done for every receiver and keeps it closed", function()
    local ctx, cancel = context.with_cancel(background())
    cancel()
    for _ = 1, 3 do
      local v, ok = ctx:done():recv()
      assert.is_nil(v)
      assert.is_false(ok)
    end
    assert.are.equal(0, ctx:done():len())
    assert.are.equal(0, ctx:done():cap())
  end)

  it("wakes a goroutine blocked on done() when cancel() is called", function()
    local ctx, cancel = context.with_cancel(background())
    local woke = lugo.chan(1)
    lugo.go(function() woke:send(pack(ctx:done():recv())) end)
    settle()
    assert.are.equal(0, woke:len())
    cancel()
    local r = recv(woke, "the waiter")
    assert.are.same({ n = 2, nil, false }, r)
  end)

  it("cancel is idempotent", function()
    local ctx, cancel = context.with_cancel(background())
    local child = context.with_cancel(ctx)
    cancel()
    assert.has_no.errors(cancel)
    assert.has_no.errors(cancel)
    assert.are.equal(context.canceled, ctx:err())
    assert.are.equal(context.canceled, child:err())
    assert.is_true(is_done(ctx))
  end)

  it("has no deadline when its parent has none", function()
    local ctx = context.with_cancel(background())
    local d = pack(ctx:deadline())
    assert.are.same({ n = 2, nil, false }, d)
  end)

  it("cancelling a parent cancels every descendant, through with_value contexts", function()
    local root, cancel = context.with_cancel(background())
    local a = context.with_cancel(root)
    local av = context.with_value(a, "k", "a")
    local b = context.with_cancel(av)
    local bv = context.with_value(b, "k", "b")
    local bvv = context.with_value(bv, "j", "bv")
    local c = context.with_cancel(bvv)
    local d = context.with_timeout(c, 3600)
    local sibling = context.with_cancel(root)
    local sv = context.with_value(sibling, "k", "s")
    local all = { root, a, av, b, bv, bvv, c, d, sibling, sv }
    settle()
    for i, ctx in ipairs(all) do
      assert.is_false(is_done(ctx), "context " .. i .. " done before cancel")
      assert.is_nil(ctx:err())
    end
    cancel()
    for i, ctx in ipairs(all) do
      assert.is_true(is_done(ctx), "context " .. i .. " not done after its root's cancel")
      assert.are.equal(context.canceled, ctx:err())
    end
    assert.are.equal("b", bvv:value("k")) -- values outlive the cancel
  end)

  it("a value context's done() is its parent's done channel", function()
    local ctx = context.with_cancel(background())
    local v = context.with_value(context.with_value(ctx, "a", 1), "b", 2)
    assert.are.equal(ctx:done(), v:done())
  end)

  it("cancelling a child affects neither its parent nor its siblings", function()
    local root, cancel_root = context.with_cancel(background())
    local c1, cancel1 = context.with_cancel(root)
    local g1 = context.with_cancel(context.with_value(c1, "k", 1))
    local c2 = context.with_cancel(root)
    local g2 = context.with_cancel(c2)
    cancel1()
    assert.is_true(is_done(c1))
    assert.is_true(is_done(g1))
    assert.are.equal(context.canceled, g1:err())
    settle()
    for _, ctx in ipairs({ root, c2, g2 }) do
      assert.is_false(is_done(ctx))
      assert.is_nil(ctx:err())
    end
    -- the parent still cancels the remaining children
    cancel_root()
    for _, ctx in ipairs({ root, c2, g2 }) do
      assert.is_true(is_done(ctx))
      assert.are.equal(context.canceled, ctx:err())
    end
  end)

  it("makes a child of an already cancelled parent born cancelled", function()
    local parent, cancel = context.with_cancel(background())
    cancel()
    local c, cancel_c = context.with_cancel(parent)
    assert.is_true(is_done(c))
    assert.are.equal(context.canceled, c:err())
    assert.has_no.errors(cancel_c)
    assert.are.equal(context.canceled, c:err())
    local v = context.with_value(parent, "k", 1)
    assert.is_true(is_done(v))
    assert.are.equal(context.canceled, v:err())
    -- its own deadline is later: the parent's error, not deadline exceeded
    local t = context.with_timeout(v, 3600)
    assert.is_true(is_done(t))
    assert.are.equal(context.canceled, t:err())
    local past = context.with_deadline(parent, time.now() - 10)
    assert.are.equal(context.canceled, past:err())
    local grandchild = context.with_cancel(context.with_cancel(c))
    assert.are.equal(context.canceled, grandchild:err())
  end)

  it("wakes every goroutine blocked in select on the done channel of any descendant", function()
    local root, cancel = context.with_cancel(background())
    local a = context.with_cancel(root)
    local av = context.with_value(a, "k", 1)
    local b = context.with_timeout(av, 3600)
    local bv = context.with_value(b, "k", 2)
    local c = context.with_cancel(bv)
    local ctxs = { root, a, av, b, bv, c }
    local per = 3
    local woke = lugo.chan(#ctxs * per)
    local never = lugo.chan()
    for i, ctx in ipairs(ctxs) do
      for _ = 1, per do
        lugo.go(function()
          local which = lugo.select(case.recv(never), case.recv(ctx:done()), case.recv(time.after(HANG)))
          woke:send({ i = i, which = which, err = ctx:err() })
        end)
      end
    end
    settle()
    assert.are.equal(0, woke:len())
    cancel()
    local count = {}
    for _ = 1, #ctxs * per do
      local r = recv_within(woke, HANG)
      assert.is_table(r)
      assert.are.equal(2, r.which)
      assert.are.equal(context.canceled, r.err)
      count[r.i] = (count[r.i] or 0) + 1
    end
    for i = 1, #ctxs do assert.are.equal(per, count[i]) end
  end)

  it("a later cancel of a cancelled child's parent leaves the child's error alone", function()
    local root, cancel_root = context.with_timeout(background(), 0.1)
    local child, cancel_child = context.with_cancel(root)
    cancel_child()
    wait_done(root, "the root's deadline")
    cancel_root()
    assert.are.equal(context.deadline_exceeded, root:err())
    assert.are.equal(context.canceled, child:err())
  end)
end)

describe("context.with_deadline and context.with_timeout", function()
  it("with_timeout: done with deadline exceeded after the timeout, not before", function()
    local D = 0.05
    local t0 = time.now()
    local ctx = context.with_timeout(background(), D)
    assert.is_nil(ctx:err())
    time.sleep(0.01)
    if time.now() - t0 < D - EARLY then -- only meaningful if the sleep was short
      assert.is_false(is_done(ctx))
      assert.is_nil(ctx:err())
    end
    wait_done(ctx, "the timeout")
    local elapsed = time.now() - t0
    assert.is_true(elapsed >= D - EARLY, "done after " .. elapsed .. " s, timeout " .. D)
    assert.is_true(elapsed < HANG)
    assert.are.equal(context.deadline_exceeded, ctx:err())
    assert.are.equal("context deadline exceeded", ctx:err())
  end)

  it("with_deadline: done with deadline exceeded at the time, not before", function()
    local t = time.now() + 0.05
    local ctx = context.with_deadline(background(), t)
    assert.are.equal("context.WithCancel", tostring(ctx))
    wait_done(ctx, "the deadline")
    local now = time.now()
    assert.is_true(now >= t - EARLY, "done " .. (t - now) .. " s before the deadline")
    assert.are.equal(context.deadline_exceeded, ctx:err())
  end)

  it("deadline() returns the time and true", function()
    local t = time.now() + 100
    local ctx = context.with_deadline(background(), t)
    local d = pack(ctx:deadline())
    assert.are.equal(2, d.n)
    assert.are.equal(t, d[1])
    assert.is_true(d[2])
    local before = time.now()
    local ctx2 = context.with_timeout(background(), 50)
    local after = time.now()
    local t2, ok = ctx2:deadline()
    assert.is_true(ok)
    assert.is_true(t2 >= before + 50 - EARLY and t2 <= after + 50 + EARLY,
      ("deadline %f not in [%f, %f]"):format(t2, before + 50, after + 50))
  end)

  it("gives a child the earlier of its own deadline and its parent's", function()
    local T = time.now() + 1000
    local parent = context.with_deadline(background(), T)
    local earlier = context.with_deadline(parent, T - 500)
    local later = context.with_deadline(parent, T + 500)
    assert.are.equal(T - 500, (earlier:deadline()))
    assert.are.equal(T, (later:deadline()))
    -- contexts without their own deadline inherit it, through values too
    local c = context.with_cancel(context.with_value(parent, "k", 1))
    local t, ok = c:deadline()
    assert.are.equal(T, t)
    assert.is_true(ok)
    assert.are.equal(T, (context.with_value(c, "j", 2):deadline()))
    -- and a grandchild gets the earliest on its path
    assert.are.equal(T - 500, (context.with_timeout(earlier, 100000):deadline()))
    local g = context.with_deadline(later, T - 100)
    assert.are.equal(T - 100, (g:deadline()))
  end)

  it("cancels a child with a later deadline at the parent's deadline, with the parent's error", function()
    local D = 0.05
    local t0 = time.now()
    local parent = context.with_timeout(background(), D)
    local child = context.with_timeout(context.with_value(parent, "k", 1), 5)
    local grandchild = context.with_cancel(child)
    assert.are.equal((parent:deadline()), (child:deadline()))
    wait_done(grandchild, "the parent's deadline")
    local elapsed = time.now() - t0
    assert.is_true(elapsed >= D - EARLY, "done after " .. elapsed .. " s")
    assert.is_true(elapsed < 4, "done after " .. elapsed .. " s: that is the child's own deadline")
    for _, ctx in ipairs({ parent, child, grandchild }) do
      assert.is_true(is_done(ctx))
      assert.are.equal(context.deadline_exceeded, ctx:err())
    end
  end)

  it("cancels every descendant with deadline exceeded when the root's deadline passes", function()
    local root = context.with_timeout(background(), 0.03)
    local a = context.with_cancel(root)
    local av = context.with_value(a, "k", 1)
    local b = context.with_cancel(av)
    local bv = context.with_value(b, "k", 2)
    local all = { root, a, av, b, bv, (context.with_timeout(bv, 3600)) }
    wait_done(all[#all], "the deepest descendant")
    for i, ctx in ipairs(all) do
      assert.is_true(is_done(ctx), "context " .. i)
      assert.are.equal(context.deadline_exceeded, ctx:err())
    end
  end)

  it("a child's own earlier deadline fires without touching its parent", function()
    local parent = context.with_timeout(background(), 3600)
    local child = context.with_timeout(parent, 0.02)
    wait_done(child, "the child's deadline")
    assert.are.equal(context.deadline_exceeded, child:err())
    settle()
    assert.is_false(is_done(parent))
    assert.is_nil(parent:err())
  end)

  it("is done at once for a deadline in the past", function()
    local past = time.now() - 1
    local cancellable = context.with_cancel(background())
    local made = {
      { (context.with_deadline(background(), past)), past },
      { (context.with_deadline(cancellable, past)), past },
      { (context.with_deadline(background(), 0)), 0 },
      { (context.with_timeout(background(), 0)) },
      { (context.with_timeout(background(), -5)) },
      { (context.with_timeout(context.with_value(cancellable, "k", 1), -0.5)) },
    }
    for i, m in ipairs(made) do
      local ctx = m[1]
      assert.is_true(is_done(ctx), "context " .. i .. " is not done at once") -- no wait, no settle
      assert.are.equal(context.deadline_exceeded, ctx:err())
      local t, ok = ctx:deadline()
      assert.is_true(ok)
      if m[2] then assert.are.equal(m[2], t) end
    end
    assert.is_nil(cancellable:err()) -- a child's deadline is not its parent's
  end)

  it("cancel() before the deadline gives canceled, and the deadline never fires afterwards", function()
    local D = 0.1
    local ctx, cancel = context.with_timeout(background(), D)
    local child = context.with_cancel(ctx)
    local other, cancel_other = context.with_deadline(background(), time.now() + D)
    -- a parent's cancel before its child's deadline
    local parent, cancel_parent = context.with_cancel(background())
    local timed_child = context.with_timeout(parent, D)
    cancel()
    cancel_other()
    cancel_parent()
    local all = { ctx, child, other, timed_child }
    for _, c in ipairs(all) do
      assert.is_true(is_done(c))
      assert.are.equal(context.canceled, c:err())
    end
    time.sleep(D + 0.05)
    for _, c in ipairs(all) do assert.are.equal(context.canceled, c:err()) end
    local t, ok = ctx:deadline() -- the deadline is still reported
    assert.is_true(ok)
    assert.is_number(t)
  end)

  it("keeps running when its context is dropped: the timer still fires", function()
    local done
    do
      local ctx = context.with_timeout(background(), 0.03)
      done = ctx:done()
    end
    collectgarbage("collect")
    collectgarbage("collect")
    local v, ok = recv_within(done, HANG)
    assert.is_nil(v)
    assert.is_false(ok)
  end)

  it("a far-off deadline is not done", function()
    local ctx = context.with_timeout(background(), 1e9)
    settle()
    assert.is_false(is_done(ctx))
    assert.is_nil(ctx:err())
  end)
end)

describe("context.with_value", function()
  it("finds the nearest value for a key through cancel and deadline contexts", function()
    local v1 = context.with_value(background(), "a", 1)
    local c = context.with_cancel(v1)
    local t = context.with_timeout(c, 3600)
    local c2 = context.with_cancel(t)
    assert.are.equal(1, c2:value("a"))
    assert.are.equal(1, t:value("a"))
    assert.are.equal(1, v1:value("a"))
    assert.are.equal("context.WithValue", tostring(v1))
    assert.is_nil(c:value("b"))
    assert.is_nil(background():value("a"))
  end)

  it("shadows an outer value of the same key, and only below the inner one", function()
    local outer = context.with_value(background(), "k", "outer")
    local mid = context.with_cancel(outer)
    local inner = context.with_value(mid, "k", "inner")
    local below = context.with_cancel(inner)
    assert.are.equal("outer", outer:value("k"))
    assert.are.equal("outer", mid:value("k"))
    assert.are.equal("inner", inner:value("k"))
    assert.are.equal("inner", below:value("k"))
    -- a false or nil value shadows too: the search stops at the nearest key
    local f = context.with_value(below, "k", false)
    assert.is_false(f:value("k"))
    local n = context.with_value(f, "k", nil)
    assert.is_nil(n:value("k"))
    assert.are.equal("inner", below:value("k"))
  end)

  it("keeps different keys apart", function()
    local ctx = background()
    local keys = { "a", "b", 1, 2, 1.5, true, false, "1" }
    for i, k in ipairs(keys) do ctx = context.with_value(ctx, k, "value " .. i) end
    for i, k in ipairs(keys) do assert.are.equal("value " .. i, ctx:value(k)) end
    assert.is_nil(ctx:value("c"))
    assert.is_nil(ctx:value(3))
    assert.are.equal("value 3", ctx:value(1)) -- 1 and "1" are different keys
    assert.are.equal("value 8", ctx:value("1"))
  end)

  it("compares table and function keys by identity", function()
    local k1, k2 = { name = "key" }, { name = "key" }
    local f1 = function() end
    local ctx = context.with_value(context.with_value(background(), k1, "one"), f1, "fn")
    assert.are.equal("one", ctx:value(k1))
    assert.is_nil(ctx:value(k2)) -- equal contents, another table
    assert.are.equal("fn", ctx:value(f1))
    assert.is_nil(ctx:value(function() end))
    local ctx2 = context.with_value(ctx, k2, "two")
    assert.are.equal("one", ctx2:value(k1))
    assert.are.equal("two", ctx2:value(k2))
  end)

  it("raises 'nil key' for a nil key", function()
    local where
    local err = error_of(function() where = here(); context.with_value(background(), nil, 1) end)
    assert.are.equal(where .. "nil key", err)
    err = error_of(function() where = here(); context.with_value(context.with_cancel(background()), nil) end)
    assert.are.equal(where .. "nil key", err)
  end)

  it("holds values of any type; in its own VM the very same value comes back", function()
    local t = { list = { 1, 2 } }
    local f = function() return 42 end
    local co = coroutine.create(function() end)
    local ch = lugo.chan(1)
    local mu = sync.mutex()
    local inner = context.with_cancel(background())
    local ud = newproxy(false)
    local values = { 7, -0.5, "str", true, false, t, f, co, ch, mu, inner, ud, math.huge }
    local ctx = background()
    for i, v in ipairs(values) do ctx = context.with_value(ctx, "k" .. i, v) end
    for i, v in ipairs(values) do
      local got = ctx:value("k" .. i)
      assert.is_true(rawequal(v, got), "value " .. i .. " (" .. type(v) .. ") is not the same")
    end
    assert.is_true(ctx:value("k6") == t)
    t.added = "later" -- by reference: a change is seen through the context
    assert.are.equal("later", ctx:value("k6").added)
    assert.are.equal(42, ctx:value("k7")())
  end)

  it("a value context is done, has an error and a deadline exactly as its parent", function()
    local T = time.now() + 100
    local parent, cancel = context.with_deadline(background(), T)
    local v = context.with_value(parent, "k", 1)
    assert.are.equal(T, (v:deadline()))
    assert.is_nil(v:err())
    settle()
    assert.is_false(is_done(v))
    cancel()
    assert.is_true(is_done(v))
    assert.are.equal(context.canceled, v:err())
  end)

  it("values of a goroutine's context are seen by goroutines of the same VM by reference", function()
    local t = {}
    local ctx = context.with_value(background(), "t", t)
    local seen = lugo.chan(1)
    lugo.go(function() seen:send(ctx:value("t")) end)
    assert.is_true(rawequal(t, recv(seen)))
  end)
end)

describe("context.after_func", function()
  it("runs f in a goroutine of its own after cancel, not before", function()
    local ctx, cancel = context.with_cancel(background())
    local ran = lugo.chan(1)
    local stop = context.after_func(ctx, function() ran:send(runtime.goid()) end)
    assert.are.equal("function", type(stop))
    settle()
    assert.are.equal(0, ran:len())
    cancel()
    local id = recv(ran, "f")
    assert.is_number(id)
    assert.are_not.equal(runtime.goid(), id)
    assert.is_false(stop())
  end)

  it("runs f when a parent is cancelled or the deadline passes", function()
    local root, cancel = context.with_cancel(background())
    local child = context.with_value(context.with_cancel(root), "k", 1)
    local ran = lugo.chan(2)
    context.after_func(child, function() ran:send("child") end)
    local t0 = time.now()
    local dl = context.with_timeout(background(), 0.03)
    context.after_func(dl, function() ran:send(time.now() - t0) end)
    cancel()
    assert.are.equal("child", recv(ran, "f of the child"))
    local elapsed = recv(ran, "f of the deadline context")
    assert.is_true(elapsed >= 0.03 - EARLY)
  end)

  it("runs f (soon) for a context that is already done", function()
    local ctx, cancel = context.with_cancel(background())
    cancel()
    local ran = lugo.chan(1)
    local stop = context.after_func(ctx, function() ran:send(true) end)
    assert.is_true(recv(ran, "f"))
    assert.is_false(stop())
  end)

  it("stop() before cancel returns true, and f never runs", function()
    local ctx, cancel = context.with_cancel(background())
    local ran = lugo.chan(1)
    local stop = context.after_func(ctx, function() ran:send(true) end)
    settle()
    assert.is_true(stop())
    assert.is_false(stop()) -- a second stop returns false
    cancel()
    settle()
    time.sleep(0.02)
    assert.are.equal(0, ran:len())
  end)

  it("stop() after f started returns false, and so does a second stop()", function()
    local ctx, cancel = context.with_cancel(background())
    local started, release, finished = lugo.chan(1), lugo.chan(), lugo.chan(1)
    local stop = context.after_func(ctx, function()
      started:send(true)
      release:recv()
      finished:send(true)
    end)
    cancel() -- f runs in its own goroutine: cancel does not wait for it
    assert.is_true(recv(started, "f to start"))
    assert.is_false(stop())
    assert.is_false(stop())
    release:send(true)
    assert.is_true(recv(finished, "f to finish"))
    assert.is_false(stop())
  end)

  it("runs each registered f once", function()
    local ctx, cancel = context.with_cancel(background())
    local ran = lugo.chan(10)
    for i = 1, 5 do context.after_func(ctx, function() ran:send(i) end) end
    cancel()
    cancel()
    local seen = {}
    for _ = 1, 5 do seen[#seen + 1] = recv(ran, "an f") end
    table.sort(seen)
    assert.are.same({ 1, 2, 3, 4, 5 }, seen)
    settle()
    assert.are.equal(0, ran:len())
  end)

  it("never runs f for a context that is never done; stop() returns true", function()
    local ran = lugo.chan(1)
    local stop = context.after_func(background(), function() ran:send(true) end)
    settle()
    assert.are.equal(0, ran:len())
    assert.is_true(stop())
    assert.is_false(stop())
  end)

  it("raises bad argument errors", function()
    local where
    local err = error_of(function() where = here(); context.after_func({}, function() end) end)
    assert.are.equal(where .. "bad argument #1 to 'after_func' (context expected, got table)", err)
    err = error_of(function() where = here(); context.after_func(background(), "f") end)
    assert.are.equal(where .. "bad argument #2 to 'after_func' (function expected, got string)", err)
  end)
end)

describe("contexts across processors", function()
  it("cancelling a root made here wakes goroutines on other processors waiting on children they made", function()
    local root, cancel = context.with_cancel(background())
    local mid = context.with_value(context.with_cancel(root), "who", "main")
    local N = 4
    local ready = lugo.chan(N)
    local res = {}
    for i = 1, N do
      res[i] = spawn_elsewhere(function(parent, ready, i, hang)
        local lugo, ctxmod, time = require "lugo", require "lugo.context", require "lugo.time"
        local child = ctxmod.with_cancel(parent)
        local grand = ctxmod.with_value(child, "i", i)
        ready:send(i)
        local which = lugo.select(lugo.case.recv(grand:done()), lugo.case.recv(time.after(hang)))
        return which, grand:err(), child:err(), parent:err(), grand:value("who"), grand:value("i")
      end, mid, ready, i, HANG)
    end
    for _ = 1, N do assert.is_number(recv(ready, "a waiter to be ready")) end
    settle()
    for i = 1, N do assert.are.equal(0, res[i]:len()) end
    assert.is_nil(root:err())
    cancel()
    local elsewhere = 0
    for i = 1, N do
      local which, e1, e2, e3, who, ii, home = results(res[i], "waiter " .. i)
      assert.are.equal(1, which)
      assert.are.equal(context.canceled, e1)
      assert.are.equal(context.canceled, e2)
      assert.are.equal(context.canceled, e3)
      assert.are.equal("main", who)
      assert.are.equal(i, ii)
      if not home then elsewhere = elsewhere + 1 end
    end
    if runtime.gomaxprocs() > 1 then assert.are.equal(N, elsewhere) end
  end)

  it("a goroutine on another processor cancels a context the main goroutine waits on", function()
    local go = lugo.chan()
    local res = spawn_elsewhere(function(go)
      local cancel = go:recv()
      require("lugo.time").sleep(0.02) -- let the main goroutine block first
      cancel()
      return true
    end, go)
    -- made once the goroutine runs, so that the deadline is far off when it cancels
    local D = 0.3
    local ctx, cancel = context.with_timeout(background(), D)
    local child = context.with_cancel(context.with_value(ctx, "k", 1))
    go:send(cancel) -- the cancel function, and the context with it, by reference
    local which = lugo.select(case.recv(child:done()), case.recv(time.after(HANG)))
    assert.are.equal(1, which)
    assert.are.equal(context.canceled, ctx:err())
    assert.are.equal(context.canceled, child:err())
    assert.is_true((results(res)))
    time.sleep(D + 0.05) -- past the deadline: it was cancelled for good
    assert.are.equal(context.canceled, ctx:err())
  end)

  it("a context made on another processor is shared by reference: cancelled there, done here", function()
    local go, out = lugo.chan(), lugo.chan(1)
    local res = spawn_elsewhere(function(go, out)
      local ctxmod = require "lugo.context"
      local ctx, cancel = ctxmod.with_cancel(ctxmod.background())
      out:send(ctx)
      go:recv()
      cancel()
      return ctx:err()
    end, go, out)
    local ctx = recv(out, "the context")
    assert.are.equal("context.WithCancel", tostring(ctx))
    local child = context.with_cancel(ctx)
    settle()
    assert.is_false(is_done(child))
    go:send(true)
    wait_done(child, "the child of the other processor's context")
    assert.are.equal(context.canceled, ctx:err())
    assert.are.equal(context.canceled, child:err())
    assert.are.equal(context.canceled, (results(res)))
  end)

  it("with_value values read on another processor are copies, and so are they here once it crossed", function()
    local t = { a = 1, nested = { "x", "y", deep = { true } } }
    debug.getregistry()["context_spec: the table"] = t
    finally(function() debug.getregistry()["context_spec: the table"] = nil end)
    local tk = {}
    local ctx = context.with_value(background(), "s", "a string")
    ctx = context.with_value(ctx, 42, 3.25)
    ctx = context.with_value(ctx, "t", t)
    ctx = context.with_value(ctx, tk, "table key")
    ctx = context.with_value(context.with_cancel(ctx), true, "boolean key")
    local s, n, copy, same, tkv, b, home = results(spawn_elsewhere(function(ctx, tk)
      local copy = ctx:value("t")
      return ctx:value("s"), ctx:value(42), copy,
        rawequal(debug.getregistry()["context_spec: the table"], copy),
        ctx:value(tk), ctx:value(true)
    end, ctx, tk))
    assert.are.equal("a string", s)
    assert.are.equal(3.25, n)
    assert.are.same(t, copy) -- equal contents
    assert.are.equal("boolean key", b)
    -- spawn copies the key table, so it is never the key the context holds
    assert.is_nil(tkv)
    if runtime.gomaxprocs() > 1 then assert.is_false(home) end
    assert.is_false(same) -- a copy, wherever it ran: the context crossed
    -- and here too now, as for a value on a shared channel
    local here_now = ctx:value("t")
    assert.are.same(t, here_now)
    assert.is_false(rawequal(t, here_now))
    assert.are.equal("table key", ctx:value(tk)) -- keys still compare by identity here
  end)

  it("values set on another processor are read here as copies", function()
    local ctx = results(spawn_elsewhere(function()
      local ctxmod = require "lugo.context"
      local c = ctxmod.with_value(ctxmod.background(), "t", { list = { 1, 2, 3 }, name = "there" })
      return ctxmod.with_value(c, "n", 99)
    end))
    assert.are.same({ list = { 1, 2, 3 }, name = "there" }, ctx:value("t"))
    assert.are.equal(99, ctx:value("n"))
    assert.is_nil(ctx:value("other"))
  end)

  it("a context with a value that cannot be copied cannot cross: the crossing raises", function()
    local co = coroutine.create(function() end)
    local ctx = context.with_value(background(), "co", co)
    local where
    local err = error_of(function() where = here(); lugo.spawn(function() end, ctx) end)
    assert.are.equal(where .. "cannot copy a coroutine to another processor at (context value for key 'co') of argument #2", err)
    -- it stays as it was here
    assert.is_true(rawequal(co, ctx:value("co")))
  end)

  it("a value context dropped here and collected last on another processor frees cleanly", function()
    local go = lugo.chan()
    local res
    do
      local parent = context.with_cancel(background())
      local ctx = context.with_value(parent, "t", { big = string.rep("x", 1000) })
      ctx = context.with_value(ctx, { "table key" }, "v")
      res = spawn_elsewhere(function(ctx, go)
        local got = ctx:value("t")
        go:recv()
        ctx, got = nil, nil
        collectgarbage("collect")
        collectgarbage("collect")
        return true
      end, ctx, go)
    end
    collectgarbage("collect")
    collectgarbage("collect")
    go:send(true)
    assert.is_true((results(res)))
    -- this VM's values still work after the other side let go
    for i = 1, 100 do
      local t = {}
      local v = context.with_value(background(), "k", t)
      assert.is_true(rawequal(t, v:value("k")), "value " .. i)
    end
  end)

  it("a deadline timer set on one processor cancels waiters on others", function()
    local N = 2
    local inbox, ready = lugo.chan(), lugo.chan(N)
    local res = {}
    for i = 1, N do
      res[i] = spawn_elsewhere(function(inbox, ready, hang, i)
        local lugo, ctxmod, time = require "lugo", require "lugo.context", require "lugo.time"
        local ctx = inbox:recv()
        local waited = i == 1 and ctx or ctxmod.with_cancel(ctx)
        ready:send(true)
        local which = lugo.select(lugo.case.recv(waited:done()), lugo.case.recv(time.after(hang)))
        return which, waited:err(), time.now()
      end, inbox, ready, HANG, i)
    end
    -- made once the waiters run: its timer is this processor's
    local D = 0.1
    local t0 = time.now()
    local ctx = context.with_timeout(background(), D)
    for _ = 1, N do inbox:send(ctx) end
    for _ = 1, N do recv(ready, "a waiter") end
    for i = 1, N do
      local which, err, at = results(res[i], "waiter " .. i)
      assert.are.equal(1, which)
      assert.are.equal(context.deadline_exceeded, err)
      assert.is_true(at - t0 >= D - EARLY, "woke after " .. (at - t0) .. " s")
    end
    assert.are.equal(context.deadline_exceeded, ctx:err())
  end)

  it("a deadline timer set on another processor cancels a waiter here", function()
    local D = 0.1
    local t0 = time.now()
    local ctx = results(spawn_elsewhere(function(d)
      local ctxmod = require "lugo.context"
      return (ctxmod.with_timeout(ctxmod.background(), d))
    end, D))
    local child = context.with_value(context.with_cancel(ctx), "k", 1)
    wait_done(child, "the other processor's deadline")
    assert.is_true(time.now() - t0 >= D - EARLY)
    assert.are.equal(context.deadline_exceeded, ctx:err())
    assert.are.equal(context.deadline_exceeded, child:err())
  end)

  it("100 spawned goroutines each make a child of one parent; cancelling the parent reaches all", function()
    local N = 100
    local parent, cancel = context.with_cancel(background())
    local wg = sync.waitgroup()
    wg:add(N)
    local out = lugo.chan(N)
    for i = 1, N do
      lugo.spawn(function(parent, wg, out, i, hang)
        local ok, err = pcall(function()
          local lugo, ctxmod, time = require "lugo", require "lugo.context", require "lugo.time"
          local child = ctxmod.with_cancel(parent)
          wg:done()
          local which = lugo.select(lugo.case.recv(child:done()), lugo.case.recv(time.after(hang)))
          return which == 1 and child:err() or "timed out"
        end)
        out:send({ i = i, ok = ok, err = err })
      end, parent, wg, out, i, HANG)
    end
    wait_for(function() wg:wait() end, "every goroutine to make its child")
    settle()
    assert.are.equal(0, out:len())
    cancel()
    local seen = {}
    for _ = 1, N do
      local r = recv_within(out, HANG)
      assert.is_table(r, "a goroutine did not report")
      assert.is_true(r.ok, tostring(r.err))
      assert.are.equal(context.canceled, r.err)
      assert.is_nil(seen[r.i])
      seen[r.i] = true
    end
  end)

  it("after_func runs f here when the context is cancelled on another processor", function()
    local ctx, cancel = context.with_cancel(background())
    local ran = lugo.chan(1)
    local stop = context.after_func(ctx, function() ran:send(at_home()) end)
    settle()
    assert.are.equal(0, ran:len())
    results(spawn_elsewhere(function(cancel) cancel() end, cancel))
    assert.is_true(recv(ran, "f")) -- f runs in the VM that registered it
    assert.is_false(stop())
  end)

  -- Go: "A CancelFunc may be called by multiple goroutines simultaneously".
  -- Several processors cancel the same contexts (some with deadlines that
  -- pass meanwhile) while the main goroutine cancels their parent.
  it("cancel may be called from several processors at once", function()
    for _ = 1, 50 do
      local parent, cancel_parent = context.with_cancel(background())
      local ctxs, cancels = {}, {}
      for i = 1, 20 do
        if i % 4 == 0 then
          ctxs[i], cancels[i] = context.with_timeout(parent, 0.0005 * (i % 3))
        else
          ctxs[i], cancels[i] = context.with_cancel(parent)
        end
      end
      local go, wg = lugo.chan(), sync.waitgroup()
      local res = {}
      for w = 1, 3 do
        wg:add(1)
        res[w] = spawn_pcall(function(go, wg, cancels, w)
          go:recv()
          local n = #cancels
          for k = 1, n do cancels[w % 2 == 1 and k or n + 1 - k]() end
          wg:done()
          return true
        end, go, wg, cancels, w)
      end
      go:close()
      cancel_parent()
      for i = 1, #cancels do cancels[i]() end
      wait_for(function() wg:wait() end, "the cancelling goroutines")
      for w = 1, 3 do assert.is_true((results(res[w]))) end
      for i = 1, #ctxs do
        assert.is_true(is_done(ctxs[i]))
        local e = ctxs[i]:err()
        assert.is_true(e == context.canceled or e == context.deadline_exceeded, tostring(e))
      end
    end
  end)

  it("children made and dropped on every processor while the parent is cancelled", function()
    local parent, cancel = context.with_cancel(background())
    local N = 4
    local res, ready = {}, lugo.chan(N)
    for i = 1, N do
      res[i] = spawn_pcall(function(parent, ready, hang)
        local ctxmod, rt, time = require "lugo.context", require "lugo.runtime", require "lugo.time"
        local made, limit = 0, time.now() + hang
        ready:send(true)
        while parent:err() == nil and time.now() < limit do
          local c, cancel_c = ctxmod.with_cancel(parent)
          local v = ctxmod.with_value(c, "k", made)
          if made % 3 == 0 then cancel_c() end
          if v:value("k") ~= made then error("lost a value") end
          made = made + 1
          if made % 100 == 0 then rt.gosched() end
          if made % 1000 == 0 then collectgarbage("step") end
        end
        collectgarbage("collect")
        local born = ctxmod.with_cancel(parent)
        return made, parent:err(), born:err()
      end, parent, ready, HANG)
    end
    for _ = 1, N do recv(ready, "a worker") end
    time.sleep(0.05)
    cancel()
    for i = 1, N do
      local made, perr, berr = results(res[i], "worker " .. i)
      assert.is_true(made > 0)
      assert.are.equal(context.canceled, perr)
      assert.are.equal(context.canceled, berr)
    end
  end)
end)

describe("context argument errors", function()
  it("refuses a nil parent", function()
    local cases = {
      -- (not tail calls: the error names the caller's line)
      function() local c = context.with_cancel(nil); return c end,
      function() local c = context.with_cancel(); return c end,
      function() local c = context.with_deadline(nil, time.now()); return c end,
      function() local c = context.with_timeout(nil, 1); return c end,
      function() local c = context.with_value(nil, "k", "v"); return c end,
    }
    local file = here():match("^(.*):%d+: $")
    for _, f in ipairs(cases) do
      -- raised at the line of the call, inside f
      local err = error_of(f)
      assert.are.equal(file, err:match("^(.*):%d+: cannot create context from nil parent$"))
    end
    local where
    local err = error_of(function() where = here(); context.with_cancel(nil) end)
    assert.are.equal(where .. "cannot create context from nil parent", err)
  end)

  it("refuses a parent that is not a context", function()
    for _, c in ipairs({
      { "with_cancel", function(p) return context.with_cancel(p) end },
      { "with_deadline", function(p) return context.with_deadline(p, 0) end },
      { "with_timeout", function(p) return context.with_timeout(p, 1) end },
      { "with_value", function(p) return context.with_value(p, "k", 1) end },
    }) do
      for _, bad in ipairs({ { {}, "table" }, { 1, "number" }, { "ctx", "string" }, { lugo.chan(), "channel" } }) do
        local err = error_of(c[2], bad[1])
        assert.matches("bad argument #1 to '" .. c[1] .. "' (context expected, got " .. bad[2] .. ")", err, 1, true)
      end
    end
  end)

  it("refuses a deadline or timeout that is not a number", function()
    local where
    local err = error_of(function() where = here(); context.with_timeout(background(), "x") end)
    assert.are.equal(where .. "bad argument #2 to 'with_timeout' (number expected, got string)", err)
    err = error_of(function() where = here(); context.with_timeout(background()) end)
    assert.are.equal(where .. "bad argument #2 to 'with_timeout' (number expected, got nil)", err)
    err = error_of(function() where = here(); context.with_deadline(background(), {}) end)
    assert.are.equal(where .. "bad argument #2 to 'with_deadline' (number expected, got table)", err)
  end)

  it("refuses a method call on something that is not a context", function()
    local m = context.with_cancel(background())
    for _, name in ipairs({ "done", "err", "deadline", "value" }) do
      for _, bad in ipairs({ { {}, "table" }, { nil, "nil" }, { "s", "string" }, { lugo.chan(), "channel" },
                             { sync.mutex(), "mutex" } }) do
        local where
        local err = error_of(function() where = here(); m[name](bad[1], "k") end)
        assert.are.equal(where .. "bad argument #1 to '" .. name .. "' (context expected, got " .. bad[2] .. ")", err)
      end
    end
    local where
    local err = error_of(function() where = here(); m.done() end) -- '.' for ':'
    assert.are.equal(where .. "bad argument #1 to 'done' (context expected, got nil)", err)
  end)
end)

describe("contexts and the garbage collector", function()
  local function collect()
    collectgarbage("collect")
    collectgarbage("collect")
  end

  local MB = 1024 * 1024

  it("frees with_cancel children dropped without cancel; the parent still cancels", function()
    local parent, cancel = context.with_cancel(background())
    local kept = context.with_cancel(parent)
    collect()
    local before = runtime.memstats().alloc
    for i = 1, 100000 do
      local c, cancel_c = context.with_cancel(parent)
      if i % 10 == 0 then context.with_value(c, "i", i) end
      local _ = cancel_c
    end
    collect()
    local growth = runtime.memstats().alloc - before
    assert.is_true(growth < 20 * MB, ("alloc grew by %.1f MB"):format(growth / MB))
    settle()
    assert.is_false(is_done(kept))
    cancel()
    assert.is_true(is_done(parent))
    assert.are.equal(context.canceled, kept:err())
    -- the parent's children made afterwards are born cancelled
    assert.are.equal(context.canceled, context.with_cancel(parent):err())
  end)

  it("frees children with deadlines once they are cancelled and dropped", function()
    local parent, cancel = context.with_cancel(background())
    collect()
    local before = runtime.memstats().alloc
    for i = 1, 50000 do
      local c, cancel_c = context.with_timeout(parent, 3600 + i)
      cancel_c()
    end
    collect()
    local growth = runtime.memstats().alloc - before
    assert.is_true(growth < 20 * MB, ("alloc grew by %.1f MB"):format(growth / MB))
    cancel()
    assert.are.equal(context.canceled, parent:err())
  end)

  -- runtime.memstats() counts Lua's heaps only; the C contexts and their
  -- channels show in the resident size. Rounds after a warm-up round must
  -- reuse memory, where a leak would add tens of MB per round.
  local rss_it = helper.rss_measurable() and it or pending
  local rss = helper.rss
  rss_it("does not keep the C side of dropped children (resident size, Linux)", function()
    local parent, cancel = context.with_cancel(background())
    local function round()
      for _ = 1, 100000 do
        local c, cancel_c = context.with_cancel(parent)
        local _, _ = c, cancel_c
      end
      collect()
    end
    round()
    local r1 = rss()
    for _ = 1, 3 do round() end
    local growth = rss() - r1
    assert.is_true(growth < 30 * MB, ("resident size grew by %.1f MB over 3 rounds"):format(growth / MB))
    cancel()
    assert.are.equal(context.canceled, parent:err())
  end)
end)

describe("contexts and deadlock detection", function()
  it("a program waiting on a context that nothing can cancel is deadlocked", function()
    helper.assert_deadlock(helper.run([[
      local context = require "lugo.context"
      local ctx = context.with_value(context.with_cancel(context.background()), "k", 1)
      ctx:done():recv()
      print("woke")
    ]]))
  end)

  it("a program waiting on a deadline is not: it goes on once the deadline passes", function()
    helper.assert_clean_run(helper.run([[
      local lugo = require "lugo"
      local context = require "lugo.context"
      local ctx = context.with_timeout(context.background(), 0.05)
      local child = context.with_cancel(ctx)
      lugo.go(function() ctx:done():recv() end)
      child:done():recv()
      print(child:err())
    ]]), "context deadline exceeded\n")
  end)
end)

describe("a context's done channel", function()
  -- Go gives Done() a receive-only channel type; lugo refuses at run time.
  it("cannot be closed or sent on by the program", function()
    local ctx, cancel = context.with_cancel(background())
    assert.are.equal(here() .. "close of receive-only channel", error_of(function() ctx:done():close() end))
    assert.are.equal(here() .. "send on receive-only channel", error_of(function() ctx:done():send(1) end))
    assert.are.equal(here() .. "send on receive-only channel", error_of(function() ctx:done():send({}) end))
    local select_line = here(); local err = error_of(function() lugo.select(case.send(ctx:done(), 1), case.default) end)
    assert.are.equal(select_line .. "send on receive-only channel", err)
    assert.is_nil(ctx:err())
    assert.is_false(can_recv(ctx:done()))
    cancel()
    assert.are.same(pack(nil, false), pack(ctx:done():recv()))
    assert.are.equal(context.canceled, ctx:err())
  end)
end)

describe("the copy rule for context values", function()
  -- with_value copies key and value when the context is made. The VM that
  -- made it reads the value itself until the context, or one derived from
  -- it, crosses to another VM; from then on every reader gets a copy, that
  -- VM too, as for values on a shared channel. So a program reads the same
  -- at every -p.
  local function cross(...) -- spawn with the arguments and wait for it
    results(helper.spawn_pcall(function() return true end, ...))
  end

  it("the VM that made it reads the value itself until it crosses, then copies", function()
    local t = { list = { 1, 2 } }
    local ctx = context.with_value(background(), "t", t)
    assert.is_true(rawequal(t, ctx:value("t")))
    cross(ctx)
    local a, b = ctx:value("t"), ctx:value("t")
    assert.are.same({ list = { 1, 2 } }, a)
    assert.is_false(rawequal(t, a))
    assert.is_false(rawequal(a, b)) -- a fresh copy each time
    t.added = "later" -- made with the context: later changes are not seen
    assert.is_nil(ctx:value("t").added)
  end)

  it("keys keep comparing by identity in the VM that made it", function()
    local k, f = {}, function() end
    local ctx = context.with_value(context.with_value(background(), k, "by table"), f, "by function")
    cross(ctx)
    assert.are.equal("by table", ctx:value(k))
    assert.are.equal("by function", ctx:value(f))
    assert.is_nil(ctx:value({}))
  end)

  it("a derived context's crossing counts for its ancestors, not for other branches", function()
    local t1, t2, t3 = {}, {}, {}
    local a = context.with_value(background(), "a", t1)
    local b = context.with_cancel(a)
    local sibling = context.with_value(a, "s", t2)
    local child = context.with_value(context.with_value(b, "c", t3), "x", 1)
    local _ = child
    cross(b)
    assert.is_false(rawequal(t1, a:value("a")))       -- an ancestor of what crossed
    assert.is_false(rawequal(t1, sibling:value("a")))
    assert.is_true(rawequal(t2, sibling:value("s")))   -- never crossed
    assert.is_true(rawequal(t3, child:value("c")))     -- made from b, did not cross itself
    assert.are.same({}, child:value("a"))
  end)

  it("crossing through a shared channel counts too", function()
    local t = {}
    local ctx = context.with_value(background(), "t", t)
    local ch = lugo.chan(1)
    cross(ch) -- the channel is shared from now on
    ch:send(ctx)
    assert.is_false(rawequal(t, ctx:value("t")))
    assert.are.equal(ctx, ch:recv()) -- the context itself crosses by reference
  end)

  it("a context that cannot be copied makes every crossing raise, wherever the goroutine would run", function()
    local co = coroutine.create(function() end)
    local bad = context.with_value(background(), "k", co)
    local derived = context.with_value(context.with_cancel(bad), "j", 1)
    local nested = context.with_value(background(), 7, { inner = { co = co } })
    local badkey = context.with_value(background(), co, "v")
    local where
    local cases = {
      { function() where = here(); lugo.spawn(print, bad) end,
        "cannot copy a coroutine to another processor at (context value for key 'k') of argument #2" },
      { function() where = here(); lugo.spawn(print, 1, { ctx = derived }) end,
        "cannot copy a coroutine to another processor at (context value for key 'k') of argument #3.ctx" },
      { function() where = here(); lugo.spawn(function() return nested end) end,
        "cannot copy a coroutine to another processor at (context value for key 7).inner.co of upvalue 'nested' of argument #1" },
      { function() where = here(); lugo.spawn(print, badkey) end,
        "cannot copy a coroutine to another processor at (context key) of argument #2" },
    }
    for i, c in ipairs(cases) do
      local err = error_of(c[1])
      assert.are.equal(where .. c[2], err, "case " .. i)
    end
    local ch = lugo.chan(1)
    cross(ch)
    local err = error_of(function() where = here(); ch:send(bad) end)
    assert.are.equal(where .. "cannot copy a coroutine to another processor at (context value for key 'k') of value", err)
    assert.are.equal(0, ch:len())
    -- nothing crossed, nothing changed here
    assert.is_true(rawequal(co, bad:value("k")))
    assert.is_true(rawequal(co, derived:value("k")))
    assert.are.equal("v", badkey:value(co))
  end)

  it("fails at the spawn, identically with one processor and with two (repro: ctx_value_uncopyable)", function()
    local script = [[
      local lugo, context = require "lugo", require "lugo.context"
      local ctx = context.with_value(context.background(), "k", coroutine.create(print))
      print(pcall(lugo.spawn, function(c) end, ctx))
    ]]
    local want = "false\tcannot copy a coroutine to another processor at (context value for key 'k') of argument #2\n"
    for _, p in ipairs({ "-p 1", "-p 2" }) do
      local r = helper.run(script, { flags = p })
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal(want, r.stdout)
    end
  end)
end)

describe("contexts at any depth", function()
  -- Cancel, free, value and deadline lookups loop; none recurses in C.
  local N = os.getenv("LUGO_SANITIZED") == "1" and 100000 or 300000

  it("a chain of " .. N .. " contexts cancels, answers and frees (repro: ctx_chain_cancel, ctx_chain_drop)", function()
    local r = helper.run(([[
      local context, time = require "lugo.context", require "lugo.time"
      local gosched = require("lugo.runtime").gosched
      local N = %d
      local root, cancel = context.with_cancel(context.background())
      local c = context.with_value(root, "top", "found")
      local deadline = time.now() + 3600
      c = context.with_deadline(c, deadline)
      for i = 1, N do
        if i %% 3 == 0 then c = context.with_value(c, i, i) else c = context.with_cancel(c) end
        if i %% 10000 == 0 then gosched() end -- a compiled loop: let sysmon see us yield
      end
      assert(c:value("top") == "found" and c:value(3) == 3 and c:value(-1) == nil)
      assert(c:deadline() == deadline and c:err() == nil)
      cancel()
      assert(c:err() == "context canceled")
      assert(select(2, c:done():recv()) == false)
      c, root = nil, nil
      collectgarbage() collectgarbage()
      local d = context.background()
      for i = 1, N do
        d = context.with_cancel(d)
        if i %% 10000 == 0 then gosched() end
      end
      d = nil
      collectgarbage() collectgarbage()
      print("ok")
    ]]):format(N))
    -- A loaded machine may make a collection run past sysmon's 1 s report
    -- of a goroutine that does not yield: only a crash or an error fails.
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("ok\n", r.stdout)
    assert.is_nil(r.stderr:match("panic") or r.stderr:match("fatal"), r.stderr)
  end)
end)

describe("contexts nobody references are collected before their deadline", function()
  local function collect()
    collectgarbage("collect")
    collectgarbage("collect")
  end

  -- The deadline's timer holds no reference: once the context is
  -- collected it is gone, and a program whose goroutines all block is
  -- deadlocked at once (as with Go 1.23's timers).
  it("a dropped with_timeout context does not keep a blocked program alive", function()
    helper.assert_deadlock(helper.run([[
      local lugo, context = require "lugo", require "lugo.context"
      local ctx, cancel = context.with_timeout(context.background(), 30)
      local child = context.with_value(ctx, "k", 1)
      ctx, cancel, child = nil, nil, nil
      collectgarbage() collectgarbage()
      lugo.chan():recv()
    ]], { env = "timeout 20" }))
  end)

  it("a goroutine parked on done() alone wakes at the deadline, a collection in between", function()
    helper.assert_clean_run(helper.run([[
      local context = require "lugo.context"
      local done = context.with_timeout(context.background(), 0.05):done()
      collectgarbage() collectgarbage()
      print(select(2, done:recv()))
      print(select(2, context.with_timeout(context.background(), 0.02):done():recv()))
    ]]), "false\nfalse\n")
    local out = lugo.chan(1)
    lugo.go(function() out:send(pack(context.with_timeout(background(), 0.05):done():recv())) end)
    settle()
    collect()
    assert.are.same({ n = 2, nil, false }, recv(out, "the waiter on done()"))
  end)

  it("a child keeps its parent's deadline working", function()
    local child = context.with_value(context.with_cancel(context.with_timeout(background(), 0.05)), "k", 1)
    collect()
    wait_done(child, "the collected parent's deadline")
    assert.are.equal(context.deadline_exceeded, child:err())
  end)

  it("a network read watching a context nobody else holds ends at its deadline", function()
    local net = require "lugo.net"
    local ln = assert(net.listen("tcp", "127.0.0.1:0"))
    local peer = lugo.chan(1)
    lugo.go(function() peer:send((ln:accept())) end)
    local c = assert(net.dial("tcp", ln:addr()))
    local server = recv(peer, "the accepted connection")
    lugo.go(function() settle() collect() end)
    local data, err = c:read(10, context.with_timeout(background(), 0.1))
    assert.is_nil(data)
    assert.are.equal(context.deadline_exceeded, err)
    c:close()
    server:close()
    ln:close()
  end)

  -- Deadlines firing on one processor while other processors drop and
  -- collect their contexts: the fire path and the free path meet on the
  -- timer heap's lock (run under TSan and ASan by CI).
  it("deadlines fire while their contexts are collected on other processors", function()
    local N = 3
    local res = {}
    for i = 1, N do
      res[i] = helper.spawn_pcall(function(parent, n)
        local ctxmod, time = require "lugo.context", require "lugo.time"
        local kept = {}
        for k = 1, n do
          local c = ctxmod.with_timeout(parent, (k % 7) * 0.0002)
          if k % 5 == 0 then kept[#kept + 1] = c end
          if k % 50 == 0 then collectgarbage("step") end
          if k % 500 == 0 then time.sleep(0.001) end
        end
        collectgarbage() collectgarbage()
        time.sleep(0.01)
        for _, c in ipairs(kept) do if c:err() ~= ctxmod.deadline_exceeded then return false end end
        return true
      end, background(), 5000)
    end
    for i = 1, N do assert.is_true((results(res[i], "worker " .. i))) end
  end)

  local rss_it, rss = helper.rss_measurable() and it or pending, helper.rss
  rss_it("does not keep dropped with_timeout contexts (resident size, Linux)", function()
    local function round() -- collecting often: Lua does not see the C side of its garbage
      for i = 1, 100000 do
        local _ = context.with_timeout(background(), 3600)
        if i % 10000 == 0 then collect() end
      end
      collect()
    end
    round()
    local r1 = rss()
    for _ = 1, 3 do round() end
    local growth = (rss() - r1) / (1024 * 1024)
    assert.is_true(growth < 10, ("resident size grew by %.1f MB over 3 rounds"):format(growth))
  end)
end)
