-- lugo.sync: Mutex, RWMutex, WaitGroup, Once and Cond, as Go's sync package
-- (docs/api.md, "lugo.sync"). Every `it` body runs in the main goroutine and
-- there is one processor: a goroutine started with lugo.go runs when the body
-- blocks or calls runtime.gosched(). An error escaping any other goroutine
-- ends the process, so goroutines that expect errors catch them with pcall
-- and report over a channel.
local lugo = require "lugo"
local sync = require "lugo.sync"
local time = require "lugo.time"
local runtime = require "lugo.runtime"
local helper = require "helper"

local gosched = runtime.gosched

local settle, recv, go_pcall, error_of = helper.settle, helper.recv, helper.go_pcall, helper.error_of

-- Assert that f(...) raises an error whose message contains text (plain).
local function assert_raises(text, f, ...)
  assert.matches(text, error_of(f, ...), 1, true)
end

-- Receive n values from ch (failing if one takes over 2 s), sorted.
local function recv_sorted(ch, n, what)
  local seen = {}
  for _ = 1, n do seen[#seen + 1] = recv(ch, what) end
  table.sort(seen)
  return seen
end

-- Start n goroutines that each k times lock, read the shared counter, yield,
-- write it back plus one and unlock (then call between(), if given); wait
-- for all of them. Returns the counter and the most goroutines ever inside.
local function count_under_lock(lock, unlock, n, k, between)
  local wg = sync.waitgroup()
  local counter, inside, max_inside = 0, 0, 0
  for _ = 1, n do
    wg:add(1)
    lugo.go(function()
      for _ = 1, k do
        lock()
        inside = inside + 1
        if inside > max_inside then max_inside = inside end
        local v = counter
        gosched()
        counter = v + 1
        inside = inside - 1
        unlock()
        if between then between() end
      end
      wg:done()
    end)
  end
  local finished = lugo.chan(1)
  lugo.go(function() wg:wait() finished:send(true) end)
  assert.is_true(recv(finished, "the lockers"))
  return counter, max_inside
end

describe("sync.mutex", function()
  describe("excludes every other goroutine from the critical section", function()
    it("loses no update of a counter read and written around a yield", function()
      local m = sync.mutex()
      local N, K = 20, 25
      local counter, max_inside = count_under_lock(function() m:lock() end, function() m:unlock() end, N, K, gosched)
      assert.are.equal(N * K, counter)
      assert.are.equal(1, max_inside)
    end)
  end)

  describe("try_lock", function()
    it("takes a free mutex and fails on a held one without blocking", function()
      local m = sync.mutex()
      assert.is_true(m:try_lock())
      assert.is_false(m:try_lock())
      m:unlock()
      assert.is_true(m:try_lock())
      m:unlock()
    end)

    it("fails while another goroutine holds the mutex", function()
      local m = sync.mutex()
      local release = lugo.chan()
      lugo.go(function() m:lock() release:recv() m:unlock() end)
      settle()
      assert.is_false(m:try_lock())
      release:send(true)
      settle()
      assert.is_true(m:try_lock())
      m:unlock()
    end)
  end)

  describe("a blocked lock wakes when the mutex is unlocked", function()
    it("parks the locker until unlock, then lets it in", function()
      local m = sync.mutex()
      local got = lugo.chan(1)
      local locked = false
      m:lock()
      lugo.go(function()
        m:lock()
        locked = true
        got:send(true)
        m:unlock()
      end)
      settle()
      assert.is_false(locked)
      m:unlock()
      assert.is_true(recv(got, "the blocked locker"))
      assert.is_true(locked)
      settle()
      assert.is_true(m:try_lock())
      m:unlock()
    end)

    it("serves every one of several blocked lockers", function()
      local m = sync.mutex()
      local got = lugo.chan(10)
      m:lock()
      for i = 1, 5 do
        lugo.go(function() m:lock() got:send(i) m:unlock() end)
      end
      settle()
      assert.are.equal(0, got:len())
      m:unlock()
      local seen = recv_sorted(got, 5, "a locker")
      assert.are.same({ 1, 2, 3, 4, 5 }, seen)
    end)
  end)

  describe("unlock of an unlocked mutex", function()
    it("raises Go's error", function()
      local m = sync.mutex()
      assert_raises("sync: unlock of unlocked mutex", m.unlock, m)
    end)

    it("raises after a lock was already released", function()
      local m = sync.mutex()
      m:lock()
      m:unlock()
      assert_raises("sync: unlock of unlocked mutex", m.unlock, m)
    end)

    it("leaves the mutex working", function()
      local m = sync.mutex()
      assert.is_false((pcall(m.unlock, m)))
      assert.is_true(m:try_lock())
      assert.is_false(m:try_lock())
      m:unlock()
      m:lock()
      local got = lugo.chan(1)
      lugo.go(function() m:lock() got:send(true) m:unlock() end)
      settle()
      assert.are.equal(0, got:len())
      m:unlock()
      assert.is_true(recv(got, "the blocked locker"))
      settle()
      assert.is_true(m:try_lock())
      m:unlock()
    end)

    it("raises in any goroutine", function()
      local m = sync.mutex()
      local r = recv(go_pcall(m.unlock, m))
      assert.is_false(r[1])
      assert.matches("sync: unlock of unlocked mutex", r[2], 1, true)
    end)
  end)

  describe("a mutex belongs to no goroutine", function()
    it("may be unlocked by another goroutine than the one that locked it", function()
      local m = sync.mutex()
      m:lock()
      local r = recv(go_pcall(m.unlock, m))
      assert.is_true(r[1])
      assert.is_true(m:try_lock())
      m:unlock()
    end)
  end)

  describe("starvation mode hands the mutex to a waiter of more than 1 ms", function()
    -- Start B, a goroutine that locks m, notes that it got it and unlocks it.
    -- Returns a function telling whether B has had the mutex yet.
    local function start_locker(m)
      local got = false
      lugo.go(function()
        m:lock()
        got = true
        m:unlock()
      end)
      return function() return got end
    end

    -- Lock m again at once, up to 500 times, yielding while holding it so
    -- that B runs, finds it held and keeps waiting, until b_got(). Returns
    -- how many times m was taken before B had it.
    local function relock_until(m, b_got)
      local n, held = 0, false
      while n < 500 do
        m:lock()
        held = true
        if b_got() then break end
        n = n + 1
        gosched()
        m:unlock()
        held = false
      end
      if held then m:unlock() end
      return n
    end

    it("lets a long waiter in before a goroutine that keeps re-locking", function()
      local m = sync.mutex()
      m:lock()
      local b_got = start_locker(m)
      settle() -- B is now blocked in lock
      assert.is_false(b_got())
      time.sleep(0.005) -- hold the mutex while B waits for more than 1 ms
      m:unlock()
      -- Keep re-locking at once; yield while holding the mutex so that B gets
      -- to run, fail to get it, and switch the mutex to starvation mode.
      local reacquired = relock_until(m, b_got)
      assert.is_true(b_got(), "the waiter never got the mutex")
      assert.is_true(reacquired <= 3, "re-acquired " .. reacquired .. " times before the waiter")
    end)

    it("lets a long waiter in before a newcomer goroutine", function()
      local m = sync.mutex()
      m:lock()
      local b_got = start_locker(m)
      settle() -- B is now blocked in lock
      -- The newcomer waits on a channel, not on the mutex, until it is free.
      local gate, done = lugo.chan(), lugo.chan(1)
      lugo.go(function()
        gate:recv()
        done:send(relock_until(m, b_got))
      end)
      settle() -- the newcomer is blocked on the gate
      time.sleep(0.005) -- B has now waited for more than 1 ms
      m:unlock() -- wakes B ...
      gate:send(true) -- ... and the newcomer, which runs first
      local n = recv(done, "the newcomer")
      assert.is_true(b_got(), "the waiter never got the mutex")
      assert.is_true(n <= 3, "the newcomer got the mutex " .. n .. " times first")
    end)
  end)

  describe("rejects a self that is not a mutex", function()
    it("names the method and the type given", function()
      local m = sync.mutex()
      assert_raises("bad argument #1 to 'lock' (mutex expected, got table)", m.lock, {})
      assert_raises("bad argument #1 to 'unlock' (mutex expected, got number)", m.unlock, 42)
      assert_raises("bad argument #1 to 'try_lock' (mutex expected, got nil)", m.try_lock)
    end)

    it("rejects another sync object", function()
      local m = sync.mutex()
      assert_raises("bad argument #1 to 'lock' (mutex expected", m.lock, sync.rwmutex())
    end)
  end)
end)

describe("sync.rwmutex", function()
  -- Start a goroutine that takes rw (a read lock if `read`, else the write
  -- lock), appends name to log, releases rw and sends true on done.
  local function start_logged(rw, read, log, name, done)
    lugo.go(function()
      if read then rw:rlock() else rw:lock() end
      log[#log + 1] = name
      if read then rw:runlock() else rw:unlock() end
      done:send(true)
    end)
  end

  describe("several readers hold it at once", function()
    it("lets every reader in while the others still hold it", function()
      local rw = sync.rwmutex()
      local acquired, release = lugo.chan(10), lugo.chan()
      -- One slot per reader: goroutines can be preempted mid-update.
      local reading = {}
      local function readers()
        local n = 0
        for _ in pairs(reading) do n = n + 1 end
        return n
      end
      for i = 1, 5 do
        lugo.go(function()
          rw:rlock()
          reading[i] = true
          acquired:send(true)
          release:recv()
          reading[i] = nil
          rw:runlock()
        end)
      end
      for _ = 1, 5 do recv(acquired, "a reader") end
      assert.are.equal(5, readers())
      assert.is_true(rw:try_rlock())
      rw:runlock()
      assert.is_false(rw:try_lock())
      release:close()
      settle()
      assert.are.equal(0, readers())
      assert.is_true(rw:try_lock())
      rw:unlock()
    end)
  end)

  describe("a writer excludes readers and writers", function()
    it("blocks readers and another writer until it unlocks", function()
      local rw = sync.rwmutex()
      local log = {}
      local done = lugo.chan(10)
      rw:lock()
      for i = 1, 2 do start_logged(rw, true, log, "reader" .. i, done) end
      start_logged(rw, false, log, "writer", done)
      settle()
      assert.are.same({}, log)
      assert.is_false(rw:try_rlock())
      assert.is_false(rw:try_lock())
      rw:unlock()
      for _ = 1, 3 do recv(done, "a blocked locker") end
      assert.are.equal(3, #log)
      settle()
      assert.is_true(rw:try_lock())
      rw:unlock()
    end)

    it("waits for every active reader before it goes in", function()
      local rw = sync.rwmutex()
      rw:rlock()
      rw:rlock()
      local wrote = false
      local done = lugo.chan(1)
      lugo.go(function()
        rw:lock()
        wrote = true
        rw:unlock()
        done:send(true)
      end)
      settle()
      assert.is_false(wrote)
      rw:runlock()
      settle()
      assert.is_false(wrote)
      rw:runlock()
      assert.is_true(recv(done, "the writer"))
      assert.is_true(wrote)
    end)

    it("lets writers in one at a time", function()
      local rw = sync.rwmutex()
      local counter, max_inside = count_under_lock(function() rw:lock() end, function() rw:unlock() end, 10, 10)
      assert.are.equal(100, counter)
      assert.are.equal(1, max_inside)
    end)
  end)

  describe("a pending writer keeps new readers out", function()
    it("makes a new reader wait behind a writer waiting for an old reader", function()
      local rw = sync.rwmutex()
      local log = {}
      local done = lugo.chan(10)
      rw:rlock() -- the old reader
      start_logged(rw, false, log, "writer", done)
      settle() -- the writer is pending
      start_logged(rw, true, log, "new reader", done)
      settle()
      assert.are.same({}, log)
      assert.is_false(rw:try_rlock())
      rw:runlock()
      recv(done, "the writer")
      recv(done, "the new reader")
      assert.are.same({ "writer", "new reader" }, log)
    end)
  end)

  describe("try_lock and try_rlock", function()
    it("succeed only when they would not block", function()
      local rw = sync.rwmutex()
      assert.is_true(rw:try_lock())
      assert.is_false(rw:try_lock())
      assert.is_false(rw:try_rlock())
      rw:unlock()
      assert.is_true(rw:try_rlock())
      assert.is_true(rw:try_rlock())
      assert.is_false(rw:try_lock())
      rw:runlock()
      assert.is_false(rw:try_lock())
      rw:runlock()
      assert.is_true(rw:try_lock())
      rw:unlock()
    end)
  end)

  describe("unlocking what is not locked", function()
    it("raises Go's error for unlock", function()
      local rw = sync.rwmutex()
      assert_raises("sync: Unlock of unlocked RWMutex", rw.unlock, rw)
      rw:lock()
      rw:unlock()
      assert_raises("sync: Unlock of unlocked RWMutex", rw.unlock, rw)
    end)

    it("raises Go's error for unlock while only read-locked", function()
      local rw = sync.rwmutex()
      rw:rlock()
      assert_raises("sync: Unlock of unlocked RWMutex", rw.unlock, rw)
      rw:runlock()
    end)

    it("raises Go's error for runlock", function()
      local rw = sync.rwmutex()
      assert_raises("sync: RUnlock of unlocked RWMutex", rw.runlock, rw)
      rw:rlock()
      rw:runlock()
      assert_raises("sync: RUnlock of unlocked RWMutex", rw.runlock, rw)
    end)

    it("raises Go's error for runlock while write-locked", function()
      local rw = sync.rwmutex()
      rw:lock()
      assert_raises("sync: RUnlock of unlocked RWMutex", rw.runlock, rw)
      rw:unlock()
    end)

    it("leaves the rwmutex working", function()
      local rw = sync.rwmutex()
      assert.is_false((pcall(rw.unlock, rw)))
      assert.is_false((pcall(rw.runlock, rw)))
      assert.is_true(rw:try_rlock())
      assert.is_false(rw:try_lock())
      rw:runlock()
      assert.is_true(rw:try_lock())
      assert.is_false(rw:try_rlock())
      rw:unlock()
      rw:rlock()
      local wrote = lugo.chan(1)
      lugo.go(function() rw:lock() wrote:send(true) rw:unlock() end)
      settle()
      assert.are.equal(0, wrote:len())
      rw:runlock()
      assert.is_true(recv(wrote, "the writer"))
    end)
  end)

  describe("rejects a self that is not an rwmutex", function()
    it("names the method and the type given", function()
      local rw = sync.rwmutex()
      for _, name in ipairs({ "lock", "unlock", "rlock", "runlock", "try_lock", "try_rlock" }) do
        assert_raises("bad argument #1 to '" .. name .. "' (rwmutex expected, got table)", rw[name], {})
      end
      assert_raises("bad argument #1 to 'lock' (rwmutex expected", rw.lock, sync.mutex())
    end)
  end)
end)

describe("sync.waitgroup", function()
  describe("wait at zero", function()
    it("returns at once on a new waitgroup", function()
      local wg = sync.waitgroup()
      assert.are.equal(0, wg:count())
      wg:wait()
      assert.are.equal(0, wg:count())
    end)

    it("returns at once once the counter is back to zero", function()
      local wg = sync.waitgroup()
      wg:add(2)
      wg:done()
      wg:done()
      wg:wait()
      assert.are.equal(0, wg:count())
    end)
  end)

  describe("wait blocks until done brings the counter to zero", function()
    it("wakes the waiter at the last done only", function()
      local wg = sync.waitgroup()
      wg:add(2)
      local returned = false
      local res = lugo.chan(1)
      lugo.go(function() wg:wait() returned = true res:send(wg:count()) end)
      settle()
      assert.is_false(returned)
      wg:done()
      settle()
      assert.is_false(returned)
      assert.are.equal(1, wg:count())
      wg:done()
      assert.are.equal(0, recv(res, "the waiter"))
      assert.is_true(returned)
    end)

    it("waits for goroutines that finish later", function()
      local wg = sync.waitgroup()
      local finished = {} -- one slot per goroutine: they can be preempted mid-update
      for i = 1, 5 do
        wg:add()
        lugo.go(function()
          time.sleep(0.001 * i)
          finished[i] = true
          wg:done()
        end)
      end
      assert.are.equal(5, wg:count())
      wg:wait()
      assert.are.same({ true, true, true, true, true }, finished)
    end)
  end)

  describe("every waiter wakes", function()
    it("releases several waiters at once", function()
      local wg = sync.waitgroup()
      wg:add(1)
      local woke = lugo.chan(10)
      for i = 1, 5 do
        lugo.go(function() wg:wait() woke:send(i) end)
      end
      settle()
      assert.are.equal(0, woke:len())
      wg:done()
      local seen = recv_sorted(woke, 5, "a waiter")
      assert.are.same({ 1, 2, 3, 4, 5 }, seen)
    end)
  end)

  describe("add", function()
    it("adds 1 by default, n when given, and takes negative n", function()
      local wg = sync.waitgroup()
      wg:add()
      assert.are.equal(1, wg:count())
      wg:add(5)
      assert.are.equal(6, wg:count())
      wg:add(-2)
      assert.are.equal(4, wg:count())
      wg:add(0)
      assert.are.equal(4, wg:count())
      wg:done()
      assert.are.equal(3, wg:count())
    end)

    it("wakes waiters when a negative n brings the counter to zero", function()
      local wg = sync.waitgroup()
      wg:add(3)
      local woke = lugo.chan(1)
      lugo.go(function() wg:wait() woke:send(true) end)
      settle()
      assert.are.equal(0, woke:len())
      wg:add(-3)
      assert.is_true(recv(woke, "the waiter"))
      assert.are.equal(0, wg:count())
    end)

    it("raises a bad-argument error for a non-integer", function()
      local wg = sync.waitgroup()
      for _, bad in ipairs({ 1.5, -0.5, "1", {}, true }) do
        assert_raises("bad argument #2 to 'add' (integer expected, got " .. type(bad) .. ")", wg.add, wg, bad)
      end
      for _, bad in ipairs({ 0 / 0, math.huge, -math.huge, 2 ^ 31, 2 ^ 53 }) do
        local ok, err = pcall(wg.add, wg, bad)
        assert.is_false(ok, "accepted " .. tostring(bad))
        assert.matches("bad argument #2 to 'add'", err, 1, true)
      end
      assert.are.equal(0, wg:count())
    end)
  end)

  describe("a negative counter", function()
    it("raises Go's error from done at zero", function()
      local wg = sync.waitgroup()
      assert_raises("sync: negative WaitGroup counter", wg.done, wg)
    end)

    it("raises Go's error from add", function()
      local wg = sync.waitgroup()
      wg:add(1)
      assert_raises("sync: negative WaitGroup counter", wg.add, wg, -2)
    end)

    it("leaves the counter as it was and usable", function()
      local wg = sync.waitgroup()
      assert.is_false((pcall(wg.done, wg)))
      assert.are.equal(0, wg:count())
      wg:add(2)
      assert.is_false((pcall(wg.add, wg, -3)))
      assert.are.equal(2, wg:count())
      local woke = lugo.chan(1)
      lugo.go(function() wg:wait() woke:send(true) end)
      settle()
      assert.are.equal(0, woke:len())
      wg:done()
      wg:done()
      assert.is_true(recv(woke, "the waiter"))
      assert.are.equal(0, wg:count())
      wg:wait()
    end)
  end)

  describe("reuse before a previous wait has returned", function()
    it("raises Go's error in the waiter", function()
      local wg = sync.waitgroup()
      wg:add(1)
      local res = go_pcall(wg.wait, wg)
      settle()
      wg:done() -- releases the waiter, which has not run yet
      wg:add(1) -- reuse before its wait returned
      local r = recv(res, "the waiter")
      assert.is_false(r[1])
      assert.matches("sync: WaitGroup is reused before previous Wait has returned", r[2], 1, true)
      wg:done()
    end)
  end)

  describe("rejects a self that is not a waitgroup", function()
    it("names the method and the type given", function()
      local wg = sync.waitgroup()
      for _, name in ipairs({ "add", "done", "wait", "count" }) do
        assert_raises("bad argument #1 to '" .. name .. "' (waitgroup expected, got table)", wg[name], {})
      end
    end)
  end)
end)

describe("sync.once", function()
  describe("calls f only the first time", function()
    it("ignores later calls and their functions", function()
      local o = sync.once()
      local calls = {}
      o:call(function() calls[#calls + 1] = "first" end)
      o:call(function() calls[#calls + 1] = "second" end)
      o:call(function() calls[#calls + 1] = "third" end)
      assert.are.same({ "first" }, calls)
    end)

    it("runs f once across many goroutines", function()
      local o = sync.once()
      local n = 0
      local wg = sync.waitgroup()
      for _ = 1, 20 do
        wg:add(1)
        lugo.go(function()
          o:call(function() gosched() n = n + 1 end)
          wg:done()
        end)
      end
      wg:wait()
      assert.are.equal(1, n)
    end)

    it("keeps separate onces separate", function()
      local a, b = sync.once(), sync.once()
      local n = 0
      a:call(function() n = n + 1 end)
      b:call(function() n = n + 10 end)
      a:call(function() n = n + 100 end)
      assert.are.equal(11, n)
    end)
  end)

  describe("concurrent callers wait until the first f returns", function()
    it("does not return from a second call while f is blocked", function()
      local o = sync.once()
      local gate = lugo.chan()
      local log = {}
      local done = lugo.chan(2)
      lugo.go(function()
        o:call(function()
          log[#log + 1] = "f starts"
          gate:recv()
          log[#log + 1] = "f ends"
        end)
        log[#log + 1] = "first returns"
        done:send(true)
      end)
      settle()
      assert.are.same({ "f starts" }, log)
      lugo.go(function()
        o:call(function() log[#log + 1] = "second f" end)
        log[#log + 1] = "second returns"
        done:send(true)
      end)
      settle()
      assert.are.same({ "f starts" }, log)
      gate:send(true)
      recv(done, "a caller")
      recv(done, "a caller")
      assert.are.equal("f ends", log[2])
      assert.are.equal(4, #log)
      for i = 1, #log do assert.are_not.equal("second f", log[i]) end
    end)
  end)

  describe("an error in f", function()
    it("propagates to the caller, and later calls do nothing", function()
      local o = sync.once()
      assert_raises("boom", o.call, o, function() error("boom") end)
      local called = false
      o:call(function() called = true end)
      assert.is_false(called)
    end)

    it("propagates a non-string error value as it is", function()
      local o = sync.once()
      local e = { code = 7 }
      local ok, err = pcall(o.call, o, function() error(e) end)
      assert.is_false(ok)
      assert.are.equal(e, err)
    end)

    it("releases callers that waited for f without calling their f", function()
      local o = sync.once()
      local gate = lugo.chan()
      local first = go_pcall(o.call, o, function() gate:recv() error("late boom") end)
      settle()
      local called = false
      local second = go_pcall(o.call, o, function() called = true end)
      settle()
      assert.are.equal(0, second:len())
      gate:send(true)
      local r1 = recv(first, "the first caller")
      local r2 = recv(second, "the second caller")
      assert.is_false(r1[1])
      assert.matches("late boom", r1[2], 1, true)
      assert.is_true(r2[1])
      assert.is_false(called)
    end)
  end)

  describe("rejects bad arguments", function()
    it("wants a once and a function", function()
      local o = sync.once()
      assert_raises("bad argument #2 to 'call' (function expected, got number)", o.call, o, 1)
      assert_raises("bad argument #2 to 'call' (function expected, got nil)", o.call, o)
      assert_raises("bad argument #1 to 'call' (once expected, got table)", o.call, {}, function() end)
      -- A rejected call does not use up the once.
      local called = false
      o:call(function() called = true end)
      assert.is_true(called)
    end)
  end)
end)

describe("sync.cond", function()
  -- Start n goroutines that lock m, wait on c and report on the returned
  -- channel; returns once all of them are inside wait (each holds m until
  -- wait releases it, so seeing the count under m proves it).
  local function start_waiters(m, c, n)
    local woke = lugo.chan(n)
    local waiting = 0
    for i = 1, n do
      lugo.go(function()
        m:lock()
        waiting = waiting + 1
        c:wait()
        woke:send(i)
        m:unlock()
      end)
    end
    for _ = 1, 1000 do
      gosched()
      m:lock()
      local w = waiting
      m:unlock()
      if w == n then break end
    end
    assert.are.equal(n, waiting)
    return woke
  end

  describe("signal wakes one waiter", function()
    it("wakes exactly one per signal", function()
      local m = sync.mutex()
      local c = sync.cond(m)
      local woke = start_waiters(m, c, 3)
      settle()
      assert.are.equal(0, woke:len())
      c:signal()
      recv(woke, "a waiter")
      settle()
      assert.are.equal(0, woke:len())
      m:lock()
      c:signal()
      m:unlock()
      recv(woke, "a waiter")
      settle()
      assert.are.equal(0, woke:len())
      c:signal()
      recv(woke, "the last waiter")
    end)

    it("does nothing without waiters, and is not remembered", function()
      local m = sync.mutex()
      local c = sync.cond(m)
      c:signal()
      c:broadcast()
      local woke = start_waiters(m, c, 1)
      settle()
      assert.are.equal(0, woke:len())
      c:signal()
      assert.are.equal(1, recv(woke, "the waiter"))
    end)
  end)

  describe("broadcast wakes every waiter", function()
    it("wakes all of them", function()
      local m = sync.mutex()
      local c = sync.cond(m)
      local woke = start_waiters(m, c, 5)
      settle()
      assert.are.equal(0, woke:len())
      c:broadcast()
      local seen = recv_sorted(woke, 5, "a waiter")
      assert.are.same({ 1, 2, 3, 4, 5 }, seen)
    end)
  end)

  describe("wait releases the lock and takes it again before returning", function()
    it("unlocks while waiting", function()
      local m = sync.mutex()
      local c = sync.cond(m)
      local woke = start_waiters(m, c, 1)
      assert.is_true(m:try_lock())
      c:signal()
      m:unlock()
      assert.are.equal(1, recv(woke, "the waiter"))
    end)

    it("does not return while someone else holds the lock", function()
      local m = sync.mutex()
      local c = sync.cond(m)
      local returned = false
      local held = lugo.chan()
      local waiting = false
      lugo.go(function()
        m:lock()
        waiting = true
        c:wait()
        returned = true
        held:send(m:try_lock()) -- still holding m: try_lock fails
        held:send(true)
        m:unlock()
      end)
      settle()
      m:lock()
      assert.is_true(waiting)
      c:signal()
      settle()
      assert.is_false(returned)
      m:unlock()
      assert.is_false(recv(held, "the waiter"))
      assert.is_true(returned)
      assert.is_false(m:try_lock()) -- the waiter holds m after wait returned
      recv(held, "the waiter")
      settle()
      assert.is_true(m:try_lock())
      m:unlock()
    end)
  end)

  describe("works with an rwmutex", function()
    it("unlocks and relocks the writer lock", function()
      local rw = sync.rwmutex()
      local c = sync.cond(rw)
      assert.are.equal(rw, c:locker())
      local woke = start_waiters(rw, c, 2)
      -- Both waiters released the writer lock.
      assert.is_true(rw:try_rlock())
      rw:runlock()
      rw:lock()
      c:broadcast()
      settle()
      assert.are.equal(0, woke:len()) -- they need the writer lock back
      rw:unlock()
      recv(woke, "a waiter")
      recv(woke, "a waiter")
      settle()
      assert.is_true(rw:try_lock())
      rw:unlock()
    end)
  end)

  describe("wait without holding the lock", function()
    it("raises the locker's unlock error", function()
      local m = sync.mutex()
      local c = sync.cond(m)
      assert_raises("sync: unlock of unlocked mutex", c.wait, c)
    end)
  end)

  describe("locker", function()
    it("returns the mutex the cond was made with", function()
      local m = sync.mutex()
      local c = sync.cond(m)
      assert.are.equal(m, c:locker())
      assert.are.equal(c:locker(), c:locker())
      m:lock()
      assert.is_false(c:locker():try_lock())
      c:locker():unlock()
      assert.is_true(m:try_lock())
      m:unlock()
    end)
  end)

  describe("rejects bad arguments", function()
    it("wants a mutex or an rwmutex", function()
      for _, bad in ipairs({ {}, 1, "m" }) do
        assert_raises("bad argument #1 to 'cond' (mutex or rwmutex expected, got " .. type(bad) .. ")", sync.cond, bad)
      end
      assert_raises("bad argument #1 to 'cond' (mutex or rwmutex expected, got nil)", sync.cond)
      for _, bad in ipairs({ sync.waitgroup(), sync.once(), sync.cond(sync.mutex()) }) do
        assert_raises("bad argument #1 to 'cond' (mutex or rwmutex expected", sync.cond, bad)
      end
    end)

    it("wants a cond as self", function()
      local c = sync.cond(sync.mutex())
      for _, name in ipairs({ "wait", "signal", "broadcast", "locker" }) do
        assert_raises("bad argument #1 to '" .. name .. "' (cond expected, got table)", c[name], {})
      end
    end)
  end)
end)
