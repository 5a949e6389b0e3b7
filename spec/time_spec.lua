-- lugo.time: sleep, timers, tickers and the clock (docs/api.md, "lugo.time").
--
-- Timing assertions are of two kinds only: lower bounds that are the
-- semantics (a timer never fires before its duration), and generous upper
-- bounds that catch a hang. Nothing here asserts that lugo is fast.
local lugo = require "lugo"
local time = require "lugo.time"
local runtime = require "lugo.runtime"
local helper = require "helper"

local recv = lugo.case.recv
local can_recv, recv_within = helper.can_recv, helper.recv_within
local error_message, assert_contains = helper.error_message, helper.assert_contains
local now = time.now

-- Timers measure monotonic time, time.now() the wall clock: allow a
-- sliver of difference when comparing a duration with the clock.
local EPS = 0.002
-- Against hangs only: far longer than any test's durations.
local HANG = 5

-- The elapsed seconds of f().
local function timed(f, ...)
  local t0 = now()
  f(...)
  return now() - t0
end

describe("time.sleep pauses the calling goroutine", function()
  it("never returns before its duration has elapsed", function()
    for _, d in ipairs({ 0.001, 0.01, 0.03, 0.05 }) do
      local elapsed = timed(time.sleep, d)
      assert.is_true(elapsed >= d - EPS, ("sleep(%g) returned after %g s"):format(d, elapsed))
      assert.is_true(elapsed < HANG)
    end
  end)

  it("accepts fractional seconds below a millisecond", function()
    local elapsed = timed(time.sleep, 0.0002)
    assert.is_true(elapsed >= 0.0002 - EPS)
    assert.is_true(elapsed < HANG)
  end)

  it("returns at once for a zero or negative duration", function()
    for _, d in ipairs({ 0, -1, -0.5, -math.huge }) do
      local elapsed = timed(time.sleep, d)
      assert.is_true(elapsed < 0.5, ("sleep(%g) took %g s"):format(d, elapsed))
    end
  end)

  it("does not let other goroutines run for a zero or negative duration", function()
    -- A fresh time slice first: a sleep is a preemption point, and one at
    -- the end of a slice yields whatever its duration (a sanitized build
    -- on a loaded machine ran the test body past its slice once).
    time.sleep(0.001)
    local ran = false
    lugo.go(function() ran = true end)
    time.sleep(0)
    time.sleep(-1)
    assert.is_false(ran)
    time.sleep(0.001) -- now it blocks, and the goroutine runs
    assert.is_true(ran)
  end)

  it("returns nothing", function()
    assert.are.equal(0, select("#", time.sleep(0.001)))
    assert.are.equal(0, select("#", time.sleep(0)))
  end)

  it("lets other goroutines run while it sleeps", function()
    local ch = lugo.chan(10)
    lugo.go(function()
      for i = 1, 3 do ch:send(i) end
    end)
    time.sleep(0.01)
    assert.are.equal(3, ch:len())
  end)

  it("blocks only the goroutine that sleeps", function()
    local done = lugo.chan(1)
    lugo.go(function()
      time.sleep(10)
      done:send("long sleeper woke")
    end)
    local t0 = now()
    local ch = lugo.chan()
    lugo.go(function() ch:send("other") end)
    assert.are.equal("other", ch:recv())
    assert.is_true(now() - t0 < HANG)
    assert.is_false(can_recv(done))
  end)

  -- Shuffled 1..n: deterministic, but far from sorted.
  local function shuffled(n)
    local t = {}
    for i = 1, n do t[i] = i end
    local seed = 12345
    for i = n, 2, -1 do
      seed = (seed * 1103515245 + 12345) % 2147483648
      local j = seed % i + 1
      t[i], t[j] = t[j], t[i]
    end
    return t
  end

  -- Each goroutine's state and the first frame of its traceback, by id.
  local function goroutines(trace)
    local t, cur = {}, nil
    for line in trace:gmatch("[^\n]+") do
      local id, state = line:match("^goroutine (%d+) %[([^%]]+)%]:")
      if id then
        cur = { state = state }
        t[tonumber(id)] = cur
      elseif cur and not cur.top then
        cur.top = line:match("^%s*(.-)%s*$")
      end
    end
    return t
  end

  it("wakes sleepers in deadline order, and runs those due together in that order", function()
    -- Goroutine i starts sleeping only once i - 1 sleeps, all for the same
    -- duration: their deadlines are in the order of i whatever the load.
    -- Deadlines closer than the P's wake-up latency pass together; the
    -- goroutines must then run in deadline order too. When goroutine i
    -- runs, no earlier one may still sleep, nor wait to run with its sleep
    -- over (runnable, still inside sleep); a goroutine preempted after its
    -- sleep is runnable elsewhere in its code, which is fine.
    local n, d = 20, 0.05
    local goid_of, woke, out = {}, {}, lugo.chan(n)
    local violations = {} -- one slot per goroutine: goroutines can be preempted mid-update
    for i = 1, n do
      lugo.go(function()
        goid_of[i] = runtime.goid()
        time.sleep(d)
        woke[i] = true
        local gs = goroutines(runtime.stack(true))
        for k = 1, i - 1 do
          local g = gs[goid_of[k]]
          if g and (g.state == "sleep" or (g.state == "runnable" and g.top == "[C]: in function 'sleep'")) then
            violations[i] = ("%d ran while %d, due earlier, was %s"):format(i, k, g.state)
          end
        end
        out:send(i)
      end)
      local limit = now() + HANG
      repeat
        runtime.gosched()
        local g = goid_of[i] and goroutines(runtime.stack(true))[goid_of[i]]
      until woke[i] or (g and g.state == "sleep") or now() > limit
    end
    local got = {}
    for i = 1, n do got[i] = recv_within(out, HANG) end
    assert.are.same({}, violations)
    table.sort(got)
    for i = 1, n do assert.are.equal(i, got[i]) end
  end)

  it("runs sleepers whose deadlines are far apart in deadline order", function()
    local n, gap = 6, 0.03
    local durations = shuffled(n)
    local out = lugo.chan(n)
    for i = 1, n do
      local k = durations[i]
      lugo.go(function()
        time.sleep(k * gap)
        out:send(k)
      end)
    end
    local got = {}
    for i = 1, n do got[i] = out:recv() end
    assert.are.same({ 1, 2, 3, 4, 5, 6 }, got)
  end)

  it("works in a goroutine other than the test body", function()
    local out = lugo.chan(1)
    lugo.go(function()
      local t0 = now()
      time.sleep(0.02)
      out:send(now() - t0)
    end)
    local elapsed = out:recv()
    assert.is_true(elapsed >= 0.02 - EPS)
    assert.is_true(elapsed < HANG)
  end)

  it("keeps the program alive: a pending sleep is not a deadlock", function()
    local r = helper.run([[
      local lugo, time = require "lugo", require "lugo.time"
      local ch = lugo.chan()
      lugo.go(function() time.sleep(0.05); ch:send("woke") end)
      print((ch:recv()))
    ]])
    helper.assert_clean_run(r, "woke\n")
  end)

  it("raises a bad-argument error for a duration that is not a number", function()
    assert_contains(error_message(time.sleep, "x"), "bad argument #1 to 'sleep' (number expected, got string)")
    assert_contains(error_message(time.sleep, "0.01"), "bad argument #1 to 'sleep' (number expected, got string)")
    assert_contains(error_message(time.sleep, {}), "bad argument #1 to 'sleep' (number expected, got table)")
    assert_contains(error_message(time.sleep, true), "bad argument #1 to 'sleep' (number expected, got boolean)")
    assert_contains(error_message(time.sleep), "bad argument #1 to 'sleep' (number expected, got ")
  end)
end)

describe("bad-argument errors point at the caller", function()
  -- As luaL_argerror does: the position is the line of the faulty call,
  -- not a line inside lugo.time.
  it("for time.sleep, time.timer, time.after, time.ticker, time.tick and time.after_func", function()
    local elsewhere = {}
    for name, f in pairs({
      sleep = function() time.sleep("x") end,
      timer = function() time.timer("x") end,
      after = function() time.after("x") end,
      ticker = function() time.ticker("x") end,
      tick = function() time.tick("x") end,
      after_func = function() time.after_func("x", print) end,
      since = function() time.since("x") end,
    }) do
      local err = error_message(f)
      assert.matches("bad argument #1 to '" .. name .. "'", err, 1, true)
      if not err:match("time_spec%.lua:%d+:") then elsewhere[#elsewhere + 1] = err end
    end
    table.sort(elsewhere)
    assert.are.same({}, elsewhere)
  end)

  it("for a Timer's and a Ticker's reset", function()
    local t, tk = time.timer(1), time.ticker(1)
    local err = error_message(function() t:reset("x") end)
    local tkerr = error_message(function() tk:reset("x") end)
    t:stop()
    tk:stop()
    assert.matches("bad argument #2 to 'reset'", err, 1, true)
    assert.matches("time_spec%.lua:%d+:", err)
    assert.matches("bad argument #2 to 'reset'", tkerr, 1, true)
    assert.matches("time_spec%.lua:%d+:", tkerr)
  end)

  it("for after_func's function", function()
    local err = error_message(function() time.after_func(1, 2) end)
    assert.matches("bad argument #2 to 'after_func'", err, 1, true)
    assert.matches("time_spec%.lua:%d+:", err)
  end)
end)

describe("time.after delivers the time once", function()
  it("sends one number, no earlier than its duration, close to time.now()", function()
    local t0 = now()
    local c = time.after(0.02)
    local v, ok = c:recv()
    local t1 = now()
    assert.is_true(ok)
    assert.are.equal("number", type(v))
    assert.is_true(t1 - t0 >= 0.02 - EPS, "after(0.02) fired early")
    assert.is_true(v >= t0 + 0.02 - EPS, "the time sent is before the deadline")
    assert.is_true(v <= t1 + EPS, "the time sent is after it was received")
    assert.is_true(t1 - t0 < HANG)
  end)

  it("sends nothing more", function()
    local c = time.after(0.005)
    c:recv()
    time.sleep(0.05)
    assert.is_false(can_recv(c))
  end)

  it("does not close its channel", function()
    local c = time.after(0.005)
    c:recv()
    time.sleep(0.02)
    local v, ok = recv_within(c, 0.03)
    assert.is_nil(v)
    assert.are.equal("timeout", ok)
  end)

  it("sends nothing before its duration", function()
    local t0 = now()
    local c = time.after(0.1)
    time.sleep(0.03)
    local got = can_recv(c)
    -- Measured after looking: a loaded machine may have slept past it.
    if now() - t0 < 0.1 - EPS then assert.is_false(got, "after(0.1) fired early") end
    if not got then assert.are.equal("number", type(c:recv())) end
    assert.is_true(now() - t0 >= 0.1 - EPS)
  end)

  it("fires at once for a zero or negative duration", function()
    for _, d in ipairs({ 0, -1 }) do
      local t0 = now()
      local v, ok = recv_within(time.after(d), HANG)
      assert.is_true(ok)
      assert.are.equal("number", type(v))
      assert.is_true(now() - t0 < 1)
    end
  end)

  it("returns a channel usable in select as a timeout", function()
    local never = lugo.chan()
    local t0 = now()
    local i = lugo.select(recv(never), recv(time.after(0.03)))
    assert.are.equal(2, i)
    assert.is_true(now() - t0 >= 0.03 - EPS)
  end)

  it("fires the shorter of two in a select first", function()
    local i = lugo.select(recv(time.after(0.2)), recv(time.after(0.01)))
    assert.are.equal(2, i)
  end)

  it("wakes a goroutine blocked on its channel", function()
    local c = time.after(0.02)
    local out = lugo.chan(1)
    lugo.go(function()
      local v, ok = c:recv()
      out:send({ v, ok })
    end)
    local r = out:recv()
    assert.are.equal("number", type(r[1]))
    assert.is_true(r[2])
  end)

  it("raises a bad-argument error for a duration that is not a number", function()
    assert_contains(error_message(time.after, "x"), "bad argument #1 to 'after' (number expected, got string)")
    assert_contains(error_message(time.after), "bad argument #1 to 'after' (number expected, got ")
  end)
end)

describe("time.timer fires once into t.c", function()
  it("sends one time on t.c, no earlier than its duration", function()
    local t0 = now()
    local t = time.timer(0.02)
    assert.are.equal(0, t.c:len() + (can_recv(t.c) and 1 or 0))
    local v, ok = t.c:recv()
    local t1 = now()
    assert.is_true(ok)
    assert.are.equal("number", type(v))
    assert.is_true(t1 - t0 >= 0.02 - EPS, "timer fired early")
    assert.is_true(v >= t0 + 0.02 - EPS)
    assert.is_true(v <= t1 + EPS)
    time.sleep(0.04)
    assert.is_false(can_recv(t.c), "a timer fired twice")
  end)

  it("fires at once for a zero or negative duration", function()
    for _, d in ipairs({ 0, -1 }) do
      local t = time.timer(d)
      local v, ok = recv_within(t.c, HANG)
      assert.is_true(ok)
      assert.are.equal("number", type(v))
    end
  end)

  it("never fires for an enormous duration, and can still be stopped", function()
    local t = time.timer(math.huge)
    local t2 = time.timer(1e12)
    time.sleep(0.01)
    assert.is_false(can_recv(t.c))
    assert.is_false(can_recv(t2.c))
    assert.is_true(t:stop())
    assert.is_true(t2:stop())
  end)

  it("wakes a goroutine that waits on t.c", function()
    local t = time.timer(0.02)
    local out = lugo.chan(1)
    lugo.go(function() out:send((t.c:recv())) end)
    local v = recv_within(out, HANG)
    assert.are.equal("number", type(v))
  end)

  it("raises a bad-argument error for a duration that is not a number", function()
    assert_contains(error_message(time.timer, "x"), "bad argument #1 to 'timer' (number expected, got string)")
    assert_contains(error_message(time.timer), "bad argument #1 to 'timer' (number expected, got ")
  end)
end)

describe("Timer:stop", function()
  it("returns true before the timer fires, and then nothing is ever received", function()
    local t = time.timer(0.02)
    assert.is_true(t:stop())
    time.sleep(0.06)
    assert.is_false(can_recv(t.c))
  end)

  it("returns false the second time", function()
    local t = time.timer(1)
    assert.is_true(t:stop())
    assert.is_false(t:stop())
  end)

  it("returns false once the timer has fired and its time was received", function()
    local t = time.timer(0.005)
    t.c:recv()
    assert.is_false(t:stop())
  end)

  -- Go 1.23: a timer whose time nobody received is still running for the
  -- program, whether or not its deadline has passed.
  it("returns true once the deadline passed if the time was not received, and drops it (Go 1.23)", function()
    local t = time.timer(0.01)
    time.sleep(0.05) -- due, and nobody received
    assert.is_true(t:stop())
    assert.is_false(can_recv(t.c), "a time sent before stop() was received after it")
    time.sleep(0.02)
    assert.is_false(can_recv(t.c))
    assert.is_false(t:stop())
  end)

  it("returns true for a time already in the channel, and drops it (Go 1.23)", function()
    local t = time.timer(0.01)
    time.sleep(0.05)
    assert.are.equal(1, t.c:len()) -- looking lets the due time in
    assert.is_true(t:stop())
    assert.are.equal(0, t.c:len())
    assert.is_false(can_recv(t.c))
  end)

  it("does not wake a goroutine waiting on t.c", function()
    local t = time.timer(0.02)
    local woke = false
    lugo.go(function()
      t.c:recv()
      woke = true
    end)
    runtime.gosched()
    runtime.gosched()
    assert.is_true(t:stop())
    time.sleep(0.06)
    assert.is_false(woke)
  end)

  it("stops a timer whose waiter is in a select", function()
    local t = time.timer(0.02)
    local other = lugo.chan()
    local out = lugo.chan(1)
    lugo.go(function()
      local i = lugo.select(recv(t.c), recv(other))
      out:send(i)
    end)
    time.sleep(0.001)
    assert.is_true(t:stop())
    time.sleep(0.05)
    assert.is_false(can_recv(out))
    other:send("x")
    assert.are.equal(2, out:recv())
  end)

  it("raises a bad-argument error when not called on a Timer", function()
    local t = time.timer(1)
    t:stop()
    assert_contains(error_message(t.stop, {}), "bad argument #1 to 'stop'")
    assert_contains(error_message(t.stop), "bad argument #1 to 'stop'")
    assert_contains(error_message(t.stop, time.ticker(1)), "bad argument #1 to 'stop'")
  end)
end)

describe("Timer:reset", function()
  it("returns true on an active timer and moves its deadline later", function()
    local t0 = now()
    local t = time.timer(0.02)
    assert.is_true(t:reset(0.1))
    time.sleep(0.05)
    assert.is_false(can_recv(t.c), "the timer fired at its old deadline")
    local v = t.c:recv()
    assert.is_true(now() - t0 >= 0.1 - EPS)
    assert.is_true(v >= t0 + 0.1 - EPS)
    time.sleep(0.03)
    assert.is_false(can_recv(t.c), "a reset timer fired twice")
  end)

  it("returns true on an active timer and moves its deadline earlier", function()
    local t0 = now()
    local t = time.timer(30)
    assert.is_true(t:reset(0.02))
    local v, ok = recv_within(t.c, HANG)
    assert.is_true(ok)
    assert.is_true(now() - t0 >= 0.02 - EPS)
    assert.is_true(v >= t0 + 0.02 - EPS)
  end)

  it("returns false on an expired timer and arms it again", function()
    local t = time.timer(0.005)
    t.c:recv()
    local t0 = now()
    assert.is_false(t:reset(0.02))
    local v, ok = recv_within(t.c, HANG)
    assert.is_true(ok)
    assert.is_true(now() - t0 >= 0.02 - EPS)
    assert.is_true(v >= t0 + 0.02 - EPS)
  end)

  it("returns false on a stopped timer and arms it again", function()
    local t = time.timer(1)
    assert.is_true(t:stop())
    local t0 = now()
    assert.is_false(t:reset(0.02))
    assert.is_true(t:stop(), "reset did not arm the stopped timer")
    assert.is_false(t:reset(0.02))
    local _, ok = recv_within(t.c, HANG)
    assert.is_true(ok)
    assert.is_true(now() - t0 >= 0.02 - EPS)
  end)

  it("drops a time sent before the reset, and returns true for it (Go 1.23)", function()
    local t = time.timer(0.01)
    time.sleep(0.05) -- due, not received
    local t0 = now()
    assert.is_true(t:reset(0.05))
    assert.is_false(can_recv(t.c), "the stale time was received after reset")
    local v = t.c:recv()
    assert.is_true(now() - t0 >= 0.05 - EPS)
    assert.is_true(v >= t0 + 0.05 - EPS)
  end)

  it("fires at once when reset to zero", function()
    local t = time.timer(30)
    assert.is_true(t:reset(0))
    local _, ok = recv_within(t.c, HANG)
    assert.is_true(ok)
  end)

  it("can be repeated: only the last deadline fires, once", function()
    local t0 = now()
    local t = time.timer(0.01)
    for _ = 1, 100 do assert.is_true(t:reset(0.05)) end
    assert.is_true(t:reset(0.03))
    t.c:recv()
    assert.is_true(now() - t0 >= 0.03 - EPS)
    time.sleep(0.05)
    assert.is_false(can_recv(t.c))
  end)

  it("raises a bad-argument error for a duration that is not a number", function()
    local t = time.timer(1)
    assert_contains(error_message(t.reset, t, "x"), "bad argument #2 to 'reset' (number expected, got string)")
    assert_contains(error_message(t.reset, t), "bad argument #2 to 'reset' (number expected, got ")
    assert_contains(error_message(t.reset, {}, 1), "bad argument #1 to 'reset'")
    -- The failed resets left the timer as it was.
    assert.is_true(t:stop())
  end)
end)

describe("time.ticker ticks every period", function()
  it("sends several ticks, the k-th no earlier than k periods", function()
    local d = 0.02
    local t0 = now()
    local tk = time.ticker(d)
    local last = t0
    for k = 1, 5 do
      local v, ok = recv_within(tk.c, HANG)
      local t = now()
      assert.is_true(ok, "no tick")
      assert.are.equal("number", type(v))
      assert.is_true(t - t0 >= k * d - EPS, ("tick %d came after %g s"):format(k, t - t0))
      assert.is_true(v >= t0 + k * d - EPS, "a tick carries a time before its deadline")
      assert.is_true(v >= last - EPS, "tick times went backwards")
      last = v
    end
    tk:stop()
  end)

  it("delivers no more than one tick per period to a reader that keeps up", function()
    -- Ticks are on a grid of multiples of d from the start, so a late tick
    -- may come closer than d to the next; but in any span of time there are
    -- never more ticks than periods.
    local d, span = 0.02, 0.2
    local t0 = now()
    local tk = time.ticker(d)
    local n = 0
    while true do
      local i = lugo.select(recv(tk.c), recv(time.after(t0 + span - now())))
      if i ~= 1 then break end
      n = n + 1
    end
    tk:stop()
    assert.is_true(n >= 1, "no tick at all")
    assert.is_true(n <= span / d, ("%d ticks in %g s at %g s a tick"):format(n, span, d))
  end)

  it("stops ticking after stop()", function()
    local tk = time.ticker(0.01)
    tk.c:recv()
    tk:stop()
    time.sleep(0.05)
    assert.is_false(can_recv(tk.c), "a tick arrived after stop()")
  end)

  it("drops a tick sent before stop() (Go 1.23)", function()
    local tk = time.ticker(0.01)
    time.sleep(0.035) -- ticked into its channel, not received
    tk:stop()
    assert.is_false(can_recv(tk.c))
  end)

  it("drops a tick sent before reset() (Go 1.23)", function()
    local tk = time.ticker(0.01)
    time.sleep(0.035) -- ticked into its channel, not received
    local t0 = now()
    tk:reset(0.1)
    assert.is_false(can_recv(tk.c), "a tick sent before reset() was received after it")
    tk.c:recv()
    assert.is_true(now() - t0 >= 0.1 - EPS)
    tk:stop()
  end)

  it("does not close its channel when stopped", function()
    local tk = time.ticker(0.01)
    tk:stop()
    local v, ok = recv_within(tk.c, 0.03)
    assert.is_nil(v)
    assert.are.equal("timeout", ok)
  end)

  it("can be stopped twice", function()
    local tk = time.ticker(0.01)
    tk:stop()
    assert.has_no.errors(function() tk:stop() end)
  end)

  it("changes its period with reset()", function()
    local tk = time.ticker(30)
    local t0 = now()
    tk:reset(0.02)
    for k = 1, 3 do
      local _, ok = recv_within(tk.c, HANG)
      assert.is_true(ok)
      assert.is_true(now() - t0 >= k * 0.02 - EPS)
    end
    tk:reset(0.2)
    local t1 = now()
    assert.is_false(can_recv(tk.c), "a tick of the old period survived reset()")
    time.sleep(0.06)
    assert.is_false(can_recv(tk.c), "the old period still ticks after reset()")
    tk.c:recv()
    assert.is_true(now() - t1 >= 0.2 - EPS)
    tk:stop()
  end)

  it("starts ticking again when a stopped ticker is reset", function()
    local tk = time.ticker(0.01)
    tk:stop()
    local t0 = now()
    tk:reset(0.02)
    local _, ok = recv_within(tk.c, HANG)
    assert.is_true(ok)
    assert.is_true(now() - t0 >= 0.02 - EPS)
    tk:stop()
  end)

  it("drops ticks for a slow reader instead of queueing them", function()
    local d = 0.01
    local tk = time.ticker(d)
    time.sleep(10 * d)
    assert.is_true(tk.c:len() <= 1, ("%d ticks queued"):format(tk.c:len()))
    -- Drain without blocking: at most the one pending tick.
    local n = 0
    while can_recv(tk.c) do n = n + 1 end
    assert.is_true(n <= 1, ("%d ticks were waiting"):format(n))
    tk:stop()
  end)

  it("skips the ticks a slow reader missed, keeping its grid", function()
    local d = 0.02
    local t0 = now()
    local tk = time.ticker(d)
    time.sleep(5.5 * d)
    local v1 = tk.c:recv()
    local v2 = tk.c:recv()
    local t2 = now()
    tk:stop()
    assert.is_true(v1 >= t0 + d - EPS)
    -- The next tick comes at most a period (plus lateness) later, not five.
    assert.is_true(v2 - v1 < 5 * d + 0.5, "missed ticks were not skipped")
    assert.is_true(t2 - t0 >= 6 * d - EPS)
  end)

  it("raises 'non-positive interval for NewTicker' for d <= 0", function()
    assert_contains(error_message(time.ticker, 0), "non-positive interval for NewTicker")
    assert_contains(error_message(time.ticker, -1), "non-positive interval for NewTicker")
    assert_contains(error_message(time.ticker, -0.001), "non-positive interval for NewTicker")
  end)

  it("raises 'non-positive interval for Ticker.Reset' for reset(d <= 0)", function()
    local tk = time.ticker(0.5)
    assert_contains(error_message(tk.reset, tk, 0), "non-positive interval for Ticker.Reset")
    assert_contains(error_message(tk.reset, tk, -1), "non-positive interval for Ticker.Reset")
    -- The ticker keeps its period.
    local t0 = now()
    tk:reset(0.02)
    tk.c:recv()
    assert.is_true(now() - t0 >= 0.02 - EPS)
    tk:stop()
  end)

  it("raises bad-argument errors for durations that are not numbers", function()
    assert_contains(error_message(time.ticker, "x"), "bad argument #1 to 'ticker' (number expected, got string)")
    assert_contains(error_message(time.ticker), "bad argument #1 to 'ticker' (number expected, got ")
    local tk = time.ticker(1)
    assert_contains(error_message(tk.reset, tk, "x"), "bad argument #2 to 'reset' (number expected, got string)")
    assert_contains(error_message(tk.reset, {}, 1), "bad argument #1 to 'reset'")
    assert_contains(error_message(tk.stop, {}), "bad argument #1 to 'stop'")
    assert_contains(error_message(tk.stop, time.timer(1)), "bad argument #1 to 'stop'")
    tk:stop()
  end)
end)

describe("time.tick returns a ticker's channel", function()
  it("receives the time every period", function()
    local d = 0.02
    local t0 = now()
    local c = time.tick(d)
    for k = 1, 3 do
      local v, ok = recv_within(c, HANG)
      assert.is_true(ok)
      assert.are.equal("number", type(v))
      assert.is_true(now() - t0 >= k * d - EPS)
    end
  end)

  it("returns nil for a zero or negative period", function()
    assert.is_nil(time.tick(0))
    assert.is_nil(time.tick(-1))
    assert.are.equal(1, select("#", time.tick(0)))
  end)

  it("drops ticks for a slow reader", function()
    local c = time.tick(0.01)
    time.sleep(0.1)
    assert.is_true(c:len() <= 1)
  end)

  it("raises a bad-argument error for a period that is not a number", function()
    assert_contains(error_message(time.tick, "x"), "bad argument #1 to 'tick' (number expected, got string)")
  end)
end)

describe("time.after_func calls f in its own goroutine", function()
  it("calls f once, after d, in a goroutine other than the caller's", function()
    local out = lugo.chan(2)
    local t0 = now()
    local me = runtime.goid()
    time.after_func(0.02, function()
      out:send({ goid = runtime.goid(), at = now() })
    end)
    local r = recv_within(out, HANG)
    assert.is_table(r)
    assert.is_true(r.at - t0 >= 0.02 - EPS, "after_func called f early")
    assert.are_not.equal(me, r.goid)
    assert.is_true(r.goid > 0)
    time.sleep(0.04)
    assert.is_false(can_recv(out), "f was called twice")
  end)

  it("calls f with no arguments", function()
    local out = lugo.chan(1)
    time.after_func(0, function(...) out:send(select("#", ...)) end)
    assert.are.equal(0, recv_within(out, HANG))
  end)

  it("calls f even while the caller is blocked, without a deadlock", function()
    local r = helper.run([[
      local lugo, time = require "lugo", require "lugo.time"
      local ch = lugo.chan()
      time.after_func(0.03, function() ch:send("called") end)
      print((ch:recv()))
    ]])
    helper.assert_clean_run(r, "called\n")
  end)

  it("lets f block, as any goroutine may", function()
    local out = lugo.chan(1)
    local gate = lugo.chan()
    time.after_func(0, function()
      time.sleep(0.01)
      local v = gate:recv()
      out:send(v)
    end)
    gate:send("through")
    assert.are.equal("through", recv_within(out, HANG))
  end)

  it("returns a Timer without a channel", function()
    local t = time.after_func(1, function() end)
    assert.is_nil(t.c)
    assert.is_true(t:stop())
  end)

  it("does not call f when stopped before d", function()
    local called = false
    local t = time.after_func(0.02, function() called = true end)
    assert.is_true(t:stop())
    time.sleep(0.06)
    assert.is_false(called)
    assert.is_false(t:stop())
  end)

  it("returns false from stop once f has been called", function()
    local out = lugo.chan(1)
    local t = time.after_func(0.005, function() out:send(true) end)
    recv_within(out, HANG)
    assert.is_false(t:stop())
  end)

  it("moves the call with reset on an active timer", function()
    local out = lugo.chan(2)
    local t0 = now()
    local t = time.after_func(0.02, function() out:send(now()) end)
    assert.is_true(t:reset(0.08))
    time.sleep(0.05)
    local called = can_recv(out)
    -- measured after looking: a loaded machine may have slept past 0.08
    if now() - t0 < 0.08 - EPS then assert.is_false(called, "f was called at the old deadline") end
    if not called then
      local at = recv_within(out, HANG)
      assert.is_true(at - t0 >= 0.08 - EPS, "f was called before its new deadline")
    end
    time.sleep(0.03)
    assert.is_false(can_recv(out), "f was called twice")
  end)

  it("calls f again after reset once it has run", function()
    local out = lugo.chan(2)
    local t = time.after_func(0.005, function() out:send(true) end)
    recv_within(out, HANG)
    local t0 = now()
    assert.is_false(t:reset(0.02))
    assert.is_true(recv_within(out, HANG))
    assert.is_true(now() - t0 >= 0.02 - EPS)
    time.sleep(0.03)
    assert.is_false(can_recv(out))
  end)

  it("calls f after reset on a stopped timer", function()
    local out = lugo.chan(1)
    local t = time.after_func(1, function() out:send("late") end)
    assert.is_true(t:stop())
    assert.is_false(t:reset(0.01))
    assert.are.equal("late", recv_within(out, HANG))
  end)

  it("runs each of many calls in a distinct goroutine", function()
    local out = lugo.chan(20)
    for _ = 1, 20 do
      time.after_func(0.005, function()
        out:send(runtime.goid())
      end)
    end
    local seen = {}
    for _ = 1, 20 do
      local id = recv_within(out, HANG)
      assert.is_number(id)
      assert.is_nil(seen[id], "two calls shared goroutine " .. tostring(id))
      seen[id] = true
    end
  end)

  it("ends the program with a panic when f raises", function()
    local r = helper.run([[
      local time = require "lugo.time"
      time.after_func(0.01, function() error("boom in after_func") end)
      time.sleep(1)
      print("not reached")
    ]])
    assert.are.equal(2, r.status)
    assert.are.equal("", r.stdout)
    assert.matches("panic: .*boom in after_func", r.stderr)
    assert.matches("goroutine %d+ %[running%]:", r.stderr)
  end)

  it("raises a bad-argument error when f is not a function", function()
    assert_contains(error_message(time.after_func, 1, 2), "bad argument #2 to 'after_func' (function expected, got number)")
    assert_contains(error_message(time.after_func, 1), "bad argument #2 to 'after_func' (function expected, got nil)")
    assert_contains(error_message(time.after_func, 1, "print"), "bad argument #2 to 'after_func' (function expected, got string)")
    assert_contains(error_message(time.after_func, "x", print), "bad argument #1 to 'after_func' (number expected, got string)")
  end)
end)

describe("time.now is the wall clock", function()
  it("returns seconds since the epoch, close to os.time()", function()
    local t = now()
    assert.are.equal("number", type(t))
    assert.is_true(math.abs(t - os.time()) <= 2)
  end)

  it("has sub-second resolution", function()
    local saw_fraction = false
    for _ = 1, 5 do
      local t = now()
      if t ~= math.floor(t) then saw_fraction = true end
      time.sleep(0.0013)
    end
    assert.is_true(saw_fraction)
  end)

  it("advances by at least the time slept", function()
    local t0 = now()
    time.sleep(0.03)
    assert.is_true(now() - t0 >= 0.03 - EPS)
  end)
end)

describe("time.since measures from a time", function()
  it("is time.now() - t", function()
    local t0 = now()
    time.sleep(0.02)
    local before = now()
    local s = time.since(t0)
    local after = now()
    assert.are.equal("number", type(s))
    assert.is_true(s >= before - t0)
    assert.is_true(s <= after - t0)
    assert.is_true(s >= 0.02 - EPS)
    assert.is_true(s < HANG)
  end)

  it("is negative for a time in the future", function()
    assert.is_true(time.since(now() + 100) < 0)
  end)

  it("raises a bad-argument error for a time that is not a number", function()
    assert_contains(error_message(time.since, "x"), "bad argument #1 to 'since' (number expected, got string)")
    assert_contains(error_message(time.since), "bad argument #1 to 'since' (number expected, got ")
  end)
end)

describe("timers survive garbage collection", function()
  it("a timer whose object was dropped still sends on its channel", function()
    local c = time.timer(0.03).c
    collectgarbage("collect")
    collectgarbage("collect")
    local v, ok = recv_within(c, HANG)
    assert.is_true(ok)
    assert.are.equal("number", type(v))
  end)

  it("after_func still calls f when its Timer was dropped", function()
    local out = lugo.chan(1)
    time.after_func(0.03, function() out:send("called") end)
    collectgarbage("collect")
    collectgarbage("collect")
    assert.are.equal("called", recv_within(out, HANG))
  end)

  it("a goroutine waiting on an after channel nobody else holds still wakes", function()
    local out = lugo.chan(1)
    lugo.go(function()
      local v = time.after(0.03):recv()
      out:send(v)
    end)
    runtime.gosched()
    runtime.gosched()
    collectgarbage("collect")
    collectgarbage("collect")
    assert.are.equal("number", type(recv_within(out, HANG)))
  end)
end)

describe("durations below a nanosecond round up to 1 ns", function()
  -- A positive duration is never 0 ns: a ticker of 1e-12 s ticks as fast
  -- as it can, for ever, instead of once.
  local tiny = 1e-12

  it("for time.tick and time.ticker: they keep ticking", function()
    local c = time.tick(tiny)
    for i = 1, 5 do
      local v, ok = recv_within(c, HANG)
      assert.is_true(ok, "tick " .. i .. " never came")
      assert.is_number(v)
    end
    local tk = time.ticker(tiny)
    for i = 1, 5 do assert.is_true(select(2, recv_within(tk.c, HANG)), "ticker tick " .. i) end
    tk:reset(tiny)
    for i = 1, 3 do assert.is_true(select(2, recv_within(tk.c, HANG)), "tick " .. i .. " after reset") end
    tk:stop()
  end)

  it("for a ticker's ticks received in a select", function()
    local c = time.tick(tiny)
    for i = 1, 5 do
      local k = lugo.select(recv(c), recv(time.after(HANG)))
      assert.are.equal(1, k, "select " .. i .. " timed out")
    end
  end)

  it("for time.after, time.timer, reset, time.sleep and time.after_func", function()
    assert.is_true(select(2, recv_within(time.after(tiny), HANG)))
    local t = time.timer(tiny)
    assert.is_true(select(2, recv_within(t.c, HANG)))
    t:reset(tiny)
    assert.is_true(select(2, recv_within(t.c, HANG)))
    time.sleep(tiny)
    local out = lugo.chan(1)
    time.after_func(tiny, function() out:send("called") end)
    assert.are.equal("called", recv_within(out, HANG))
  end)
end)

describe("a timer's channel is receive-only", function()
  -- Go gives t.C the type <-chan Time; lugo refuses at run time, as it
  -- does for ctx:done(). The timer's own value still arrives.
  local here, error_of = helper.here, helper.error_of
  local function check(c, what)
    local where, err
    where = here(); err = error_of(function() c:close() end)
    assert.are.equal(where .. "close of receive-only channel", err, what)
    where = here(); err = error_of(function() c:send(1) end)
    assert.are.equal(where .. "send on receive-only channel", err, what)
    where = here(); err = error_of(function() c:send({}) end)
    assert.are.equal(where .. "send on receive-only channel", err, what)
    where = here(); err = error_of(function() lugo.select(lugo.case.send(c, "x"), lugo.case.default) end)
    assert.are.equal(where .. "send on receive-only channel", err, what)
  end

  it("for a Timer's, time.after's, a Ticker's and time.tick's", function()
    local t, a, tk, tc = time.timer(0.02), time.after(0.02), time.ticker(0.02), time.tick(0.02)
    for what, c in pairs({ timer = t.c, after = a, ticker = tk.c, tick = tc }) do
      check(c, what)
      local v, ok = recv_within(c, HANG)
      assert.is_true(ok, what .. ": the timer's value never came")
      assert.is_number(v, what)
    end
    tk:stop()
  end)

  it("keeps its value when a send is refused", function()
    local t = time.timer(0.01)
    pcall(t.c.send, t.c, "user value")
    time.sleep(0.03)
    local v, ok = t.c:recv()
    assert.is_true(ok)
    assert.is_number(v)
  end)
end)

describe("a timer's value arrives when its channel is looked at (Go 1.23)", function()
  -- Nobody waits: the timer needs no heap slot, and the first look after
  -- its deadline lets its value in, the time at which it was due.
  it("through len, a select with a default, and recv", function()
    local t0 = now()
    local a, b, c = time.after(0.01), time.after(0.01), time.after(0.01)
    local t1 = now()
    time.sleep(0.05)
    assert.are.equal(1, a:len())
    assert.is_true(can_recv(b))
    local v, ok = c:recv()
    assert.is_true(ok)
    assert.is_true(v >= t0 + 0.01 - EPS)
    -- looked at 0.05 s or more after t1: the value is the deadline's time
    assert.is_true(v <= t1 + 0.01 + EPS, "the value is the look's time, not the deadline's")
  end)

  it("a Ticker a slow reader looks at gives the first missed tick, then keeps its grid", function()
    local d = 0.02
    local t0 = now()
    local tk = time.ticker(d)
    local t1 = now()
    time.sleep(5.5 * d)
    local v1 = tk.c:recv()
    assert.is_true(v1 >= t0 + d - EPS and v1 <= t1 + d + EPS, "v1 - t0 = " .. (v1 - t0))
    local v2 = tk.c:recv()
    assert.is_true(v2 >= t0 + 6 * d - EPS, "v2 - t0 = " .. (v2 - t0))
    tk:stop()
  end)
end)

describe("timers and tickers nobody references are collected before they fire (Go 1.23)", function()
  local function full_gc()
    collectgarbage("collect")
    collectgarbage("collect")
  end

  -- A timer nobody waits on holds no heap slot: with it dropped, a program
  -- whose goroutines are all blocked is deadlocked at once.
  it("a dropped Timer, Ticker, after or tick does not keep a blocked program alive", function()
    for _, make in ipairs({ "time.timer(30)", "time.ticker(30)", "time.after(30)", "time.tick(30)",
                            "time.timer(30).c", "time.ticker(30).c" }) do
      local r = helper.run(([[
        local lugo, time = require "lugo", require "lugo.time"
        local t = %s
        t = nil
        collectgarbage() collectgarbage()
        lugo.chan():recv()
      ]]):format(make), { env = "timeout 20" })
      helper.assert_deadlock(r)
    end
  end)

  it("a timer that is still referenced but nobody waits on does not either", function()
    helper.assert_deadlock(helper.run([[
      local lugo, time = require "lugo", require "lugo.time"
      local t, tk = time.timer(30), time.ticker(30)
      lugo.chan():recv()
      print(t, tk)
    ]], { env = "timeout 20" }))
  end)

  it("a goroutine waiting on an armed timer's channel is not deadlocked; on a stopped one's it is", function()
    helper.assert_clean_run(helper.run([[
      local lugo, time = require "lugo", require "lugo.time"
      local t = time.timer(0.05)
      print(type((t.c:recv())))
      local c = time.tick(0.02)
      print(type((select(2, lugo.select(lugo.case.recv(lugo.chan()), lugo.case.recv(c))))))
    ]]), "number\nnumber\n")
    helper.assert_deadlock(helper.run([[
      local lugo, time = require "lugo", require "lugo.time"
      local t = time.timer(30)
      lugo.go(function() time.sleep(0.02) t:stop() end)
      t.c:recv()
    ]], { env = "timeout 20" }))
    helper.assert_deadlock(helper.run([[
      local lugo, time = require "lugo", require "lugo.time"
      local tk = time.ticker(30)
      lugo.go(function() time.sleep(0.02) tk:stop() end)
      lugo.select(lugo.case.recv(tk.c), lugo.case.recv(lugo.chan()))
    ]], { env = "timeout 20" }))
  end)

  it("the channel alone keeps its timer working", function()
    local t0 = now()
    local c = time.timer(0.05).c
    local tc = time.ticker(0.01).c
    full_gc()
    local v, ok = recv_within(c, HANG)
    assert.is_true(ok)
    assert.is_true(now() - t0 >= 0.05 - EPS)
    assert.is_true(v >= t0 + 0.05 - EPS)
    for i = 1, 3 do
      full_gc()
      assert.is_true(select(2, recv_within(tc, HANG)), "tick " .. i)
    end
  end)

  it("a goroutine parked on a channel nobody else holds wakes, a collection in between", function()
    local out = lugo.chan(2)
    lugo.go(function() out:send((time.after(0.03):recv())) end)
    lugo.go(function() out:send((time.tick(0.03):recv())) end)
    helper.settle()
    full_gc()
    assert.is_number(recv_within(out, HANG))
    assert.is_number(recv_within(out, HANG))
  end)

  -- The C side shows in the resident size, not in memstats: rounds after a
  -- warm-up must reuse memory, where keeping each timer until it fires
  -- would add tens of MB a round. Lua's collector does not see the C side
  -- of what it frees: the rounds collect every 10,000 timers, so that the
  -- garbage waiting for a cycle stays far below a leak's size.
  local rss_it = helper.rss_measurable() and it or pending
  local MB = 1024 * 1024
  local rss = helper.rss
  local function growth(round)
    round()
    full_gc()
    local r1 = rss()
    for _ = 1, 3 do
      round()
      full_gc()
    end
    return (rss() - r1) / MB
  end

  rss_it("does not keep dropped timers, tickers and after channels (resident size, Linux)", function()
    local g = growth(function()
      for i = 1, 100000 do
        if i % 10000 == 0 then full_gc() end
        local k = i % 4
        if k == 0 then local _ = time.timer(3600)
        elseif k == 1 then local _ = time.ticker(3600)
        elseif k == 2 then local _ = time.after(3600)
        else local _ = time.tick(3600) end
      end
    end)
    assert.is_true(g < 20, ("resident size grew by %.1f MB over 3 rounds"):format(g))
  end)

  rss_it("does not keep the time.after channels of a select loop", function()
    local ch = lugo.chan(1)
    local g = growth(function()
      for i = 1, 100000 do
        if i % 10000 == 0 then full_gc() end
        ch:send(i)
        lugo.select(recv(ch), recv(time.after(3600)))
      end
    end)
    assert.is_true(g < 20, ("resident size grew by %.1f MB over 3 rounds"):format(g))
  end)

  rss_it("does not keep time.after channels a select waited on and left", function()
    local ch = lugo.chan()
    local g = growth(function()
      for i = 1, 40000 do
        if i % 10000 == 0 then full_gc() end
        lugo.go(function() ch:send(i) end)
        lugo.select(recv(ch), recv(time.after(3600)))
      end
    end)
    assert.is_true(g < 10, ("resident size grew by %.1f MB over 3 rounds"):format(g))
  end)
end)

describe("timer channels shared between processors", function()
  local spawn_elsewhere, results = helper.spawn_elsewhere, helper.spawn_results

  it("a one-shot timer wakes exactly one of the goroutines waiting on it on several processors", function()
    local t = time.timer(0.1)
    local quit, woke = lugo.chan(), lugo.chan(3)
    local res = {}
    for i = 1, 3 do
      res[i] = spawn_elsewhere(function(c, quit, woke)
        local lugo = require "lugo"
        local k, v = lugo.select(lugo.case.recv(c), lugo.case.recv(quit))
        if k == 1 then woke:send(true) end
        return k, v
      end, t.c, quit, woke)
    end
    assert.is_true((recv_within(woke, HANG)), "no waiter got the timer's value")
    quit:close()
    local n = 0
    for i = 1, 3 do
      local k, v = results(res[i], "waiter " .. i)
      if k == 1 then
        n = n + 1
        assert.is_number(v)
      end
    end
    assert.are.equal(1, n)
    assert.is_false(t:stop())
  end)

  it("a Timer stopped here does not wake a goroutine waiting on it elsewhere; reset does", function()
    local t = time.timer(30)
    local go = lugo.chan()
    local res = spawn_elsewhere(function(c, go)
      local lugo, time = require "lugo", require "lugo.time"
      go:send(true)
      local k1 = lugo.select(lugo.case.recv(c), lugo.case.recv(time.after(0.15)))
      go:send(true)
      local k2, v = lugo.select(lugo.case.recv(c), lugo.case.recv(time.after(10)))
      return k1, k2, v
    end, t.c, go)
    go:recv()
    assert.is_true(t:stop())
    go:recv()
    t:reset(0.02)
    local k1, k2, v = results(res)
    assert.are.equal(2, k1)
    assert.are.equal(1, k2)
    assert.is_number(v)
  end)

  it("a ticker's channel is read on another processor while this one resets it", function()
    local tk = time.ticker(0.01)
    local res = spawn_elsewhere(function(c)
      local n = 0
      for _ = 1, 10 do if c:recv() then n = n + 1 end end
      return n
    end, tk.c)
    for _ = 1, 5 do
      time.sleep(0.005)
      tk:reset(0.005)
    end
    assert.are.equal(10, (results(res)))
    tk:stop()
  end)
end)
