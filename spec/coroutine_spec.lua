-- coroutine.* inside goroutines (docs/api.md, "Coroutines"). A goroutine
-- that blocks inside a user coroutine parks; when it wakes, the coroutine
-- continues where it blocked and its resumer never sees the difference.
-- Every `it` body runs in the main goroutine; there is one processor. An
-- error escaping any other goroutine ends the process, so goroutines report
-- over channels and catch what they expect with pcall.
local lugo = require "lugo"
local sync = require "lugo.sync"
local time = require "lugo.time"
local runtime = require "lugo.runtime"
local helper = require "helper"

local case = lugo.case
local gosched = runtime.gosched
local settle, recv, pack, go_pcall = helper.settle, helper.recv, helper.pack, helper.go_pcall

local NOT_YIELDABLE = "cannot block here: "

-- Sort two elements with cmp as the comparator (it is called at least once).
local function sort_with(cmp)
  return pcall(table.sort, { 2, 1 }, cmp)
end

describe("a channel operation inside a user coroutine", function()
  describe("parks the goroutine and the coroutine continues after the value arrives", function()
    it("returns the coroutine's own yields and returns from resume", function()
      local ch = lugo.chan()
      local co = coroutine.create(function(a)
        local v = ch:recv()
        local b = coroutine.yield(a + v, "yielded")
        local w = ch:recv()
        return b + w, "returned"
      end)
      lugo.go(function() ch:send(20) ch:send(300) end)
      local r = pack(coroutine.resume(co, 1))
      assert.are.same({ n = 3, true, 21, "yielded" }, r)
      assert.are.equal("suspended", coroutine.status(co))
      r = pack(coroutine.resume(co, 4000))
      assert.are.same({ n = 3, true, 4300, "returned" }, r)
      assert.are.equal("dead", coroutine.status(co))
    end)

    it("does not return to the resumer while the coroutine is blocked", function()
      local ch = lugo.chan()
      local log = {}
      local co = coroutine.create(function()
        log[#log + 1] = "coroutine blocks"
        local v = ch:recv()
        log[#log + 1] = "coroutine got " .. v
        return v
      end)
      lugo.go(function()
        log[#log + 1] = "sender runs"
        ch:send("x")
      end)
      local ok, v = coroutine.resume(co)
      log[#log + 1] = "resume returned"
      assert.is_true(ok)
      assert.are.equal("x", v)
      -- The sender may run before the coroutine starts (the main goroutine
      -- can be preempted between go and resume on a loaded machine); what
      -- must hold is that resume returns only once the value came.
      local at = {}
      for i, what in ipairs(log) do at[what] = i end
      assert.are.equal(4, #log)
      assert.are.equal(4, at["resume returned"], table.concat(log, ", "))
      assert.is_true(at["sender runs"] < at["coroutine got x"], table.concat(log, ", "))
      assert.is_true(at["coroutine blocks"] < at["coroutine got x"], table.concat(log, ", "))
    end)

    it("works the same in a goroutine that is not the main one", function()
      local ch = lugo.chan()
      local res = go_pcall(function()
        local co = coroutine.create(function()
          local v = ch:recv()
          coroutine.yield(v * 2)
          return ch:recv() + 1
        end)
        local a = pack(coroutine.resume(co))
        local b = pack(coroutine.resume(co))
        return a, b, coroutine.status(co)
      end)
      settle()
      ch:send(21)
      ch:send(9)
      local r = recv(res, "the goroutine")
      assert.is_true(r[1], tostring(r[2]))
      assert.are.same({ n = 2, true, 42 }, r[2])
      assert.are.same({ n = 2, true, 10 }, r[3])
      assert.are.equal("dead", r[4])
    end)

    it("blocks in send, select and close as well", function()
      local ch = lugo.chan()
      local other = lugo.chan()
      local co = coroutine.create(function()
        ch:send("sent")
        local i, v, ok = lugo.select(case.recv(other), case.recv(lugo.chan()))
        coroutine.yield(i, v, ok)
        return ch:recv()
      end)
      lugo.go(function()
        local v = ch:recv()
        other:send(v .. " back")
        ch:close()
      end)
      assert.are.same({ n = 4, true, 1, "sent back", true }, pack(coroutine.resume(co)))
      assert.are.same({ n = 3, true, nil, false }, pack(coroutine.resume(co)))
    end)

    it("sees coroutine.running() as the user coroutine after waking", function()
      local ch = lugo.chan()
      local co
      co = coroutine.create(function()
        local before = coroutine.running()
        ch:recv()
        return before == co, coroutine.running() == co, coroutine.status(co)
      end)
      lugo.go(function() ch:send(1) end)
      assert.are.same({ n = 4, true, true, true, "running" }, pack(coroutine.resume(co)))
    end)
  end)

  describe("sync locks and timers inside a user coroutine", function()
    it("park and continue for a mutex, a waitgroup and a cond", function()
      local m = sync.mutex()
      local wg = sync.waitgroup()
      local c = sync.cond(m)
      m:lock()
      wg:add(1)
      local co = coroutine.create(function()
        m:lock() -- blocks: main holds it
        coroutine.yield("locked")
        wg:wait()
        coroutine.yield("waited")
        c:wait()
        m:unlock()
        return "signalled"
      end)
      lugo.go(function() m:unlock() end)
      assert.are.same({ n = 2, true, "locked" }, pack(coroutine.resume(co)))
      lugo.go(function() wg:done() end)
      assert.are.same({ n = 2, true, "waited" }, pack(coroutine.resume(co)))
      lugo.go(function() m:lock() c:signal() m:unlock() end)
      assert.are.same({ n = 2, true, "signalled" }, pack(coroutine.resume(co)))
      assert.is_true(m:try_lock())
      m:unlock()
    end)
  end)
end)

describe("coroutine.wrap inside goroutines", function()
  it("makes generators that work as usual", function()
    local res = go_pcall(function()
      local out = {}
      for v in coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end) do
        out[#out + 1] = v
      end
      return out
    end)
    local r = recv(res, "the goroutine")
    assert.is_true(r[1], tostring(r[2]))
    assert.are.same({ 1, 2, 3 }, r[2])
  end)

  it("makes generators that can block", function()
    local ch = lugo.chan()
    lugo.go(function()
      for i = 1, 5 do
        time.sleep(0.001)
        ch:send(i * i)
      end
      ch:close()
    end)
    local out = {}
    local gen = coroutine.wrap(function()
      for v in ch:range() do coroutine.yield(v) end
    end)
    for v in gen do out[#out + 1] = v end
    assert.are.same({ 1, 4, 9, 16, 25 }, out)
  end)

  it("passes arguments in and values out around a block", function()
    local ch = lugo.chan(1)
    local f = coroutine.wrap(function(a, b)
      ch:send(a + b)
      local c = coroutine.yield(ch:recv(), "y")
      time.sleep(0.001)
      return c * 2
    end)
    assert.are.same({ n = 2, 3, "y" }, pack(f(1, 2)))
    assert.are.same({ n = 1, 14 }, pack(f(7)))
  end)

  it("raises the coroutine's error in the caller, also after a block", function()
    local ch = lugo.chan()
    lugo.go(function() ch:send(1) end)
    local f = coroutine.wrap(function()
      ch:recv()
      error("wrapped failure")
    end)
    local ok, err = pcall(f)
    assert.is_false(ok)
    assert.matches("wrapped failure", err, 1, true)
  end)
end)

describe("nested coroutines", function()
  it("let an inner coroutine block and still yield through the outer one", function()
    local ch = lugo.chan()
    local inner = coroutine.create(function()
      local v = ch:recv()
      coroutine.yield("inner " .. v)
      return "inner done " .. ch:recv()
    end)
    local outer = coroutine.create(function()
      local ok, v = coroutine.resume(inner)
      assert(ok, v)
      coroutine.yield("outer saw " .. v)
      ok, v = coroutine.resume(inner)
      assert(ok, v)
      return "outer saw " .. v
    end)
    lugo.go(function() ch:send("a") ch:send("b") end)
    assert.are.same({ n = 2, true, "outer saw inner a" }, pack(coroutine.resume(outer)))
    assert.are.same({ n = 2, true, "outer saw inner done b" }, pack(coroutine.resume(outer)))
    assert.are.equal("dead", coroutine.status(outer))
    assert.are.equal("dead", coroutine.status(inner))
  end)

  it("show both coroutines as normal while the inner one is blocked", function()
    local ch = lugo.chan()
    local inner, outer
    inner = coroutine.create(function() return ch:recv() end)
    outer = coroutine.create(function()
      local ok, v = coroutine.resume(inner)
      return ok, v
    end)
    local res = go_pcall(function() return coroutine.resume(outer) end)
    settle()
    assert.are.equal("normal", coroutine.status(inner))
    assert.are.equal("normal", coroutine.status(outer))
    assert.are.same({ n = 2, false, "cannot resume non-suspended coroutine" }, pack(coroutine.resume(inner)))
    assert.are.same({ n = 2, false, "cannot resume non-suspended coroutine" }, pack(coroutine.resume(outer)))
    ch:send("late")
    local r = recv(res, "the goroutine")
    assert.are.same({ n = 4, true, true, true, "late" }, r)
    assert.are.equal("dead", coroutine.status(inner))
    assert.are.equal("dead", coroutine.status(outer))
  end)
end)

describe("a coroutine blocked in a channel operation", function()
  it("has status normal and cannot be resumed by another goroutine", function()
    local ch = lugo.chan()
    local co = coroutine.create(function() return "got " .. ch:recv() end)
    local res = go_pcall(function() return coroutine.resume(co) end)
    settle()
    assert.are.equal("normal", coroutine.status(co))
    local r = pack(coroutine.resume(co, "intruder"))
    assert.are.same({ n = 2, false, "cannot resume non-suspended coroutine" }, r)
    local ok, err = pcall(coroutine.wrap(function() end)) -- a fresh wrap is fine
    assert.is_true(ok, err)
    -- The failed resume did not disturb it: it still gets the value.
    ch:send("value")
    assert.are.same({ n = 3, true, true, "got value" }, recv(res, "the goroutine"))
    assert.are.equal("dead", coroutine.status(co))
  end)

  it("can be resumed once more after it has yielded again", function()
    local ch = lugo.chan()
    local co = coroutine.create(function()
      coroutine.yield(ch:recv())
      return "second"
    end)
    local res = go_pcall(function() return coroutine.resume(co) end)
    settle()
    ch:send("first")
    assert.are.same({ n = 4, true, true, "first", true }, recv(res, "the goroutine"))
    assert.are.equal("suspended", coroutine.status(co))
    assert.are.same({ n = 2, true, "second" }, pack(coroutine.resume(co)))
  end)
end)

describe("a suspended coroutine moved between goroutines", function()
  it("blocks the goroutine that resumes it", function()
    local ch = lugo.chan()
    local co = coroutine.create(function(a)
      local b = coroutine.yield(a + 1)
      return b + ch:recv()
    end)
    assert.are.same({ n = 2, true, 2 }, pack(coroutine.resume(co, 1)))
    local res = go_pcall(function() return coroutine.resume(co, 10) end)
    settle()
    assert.are.equal("normal", coroutine.status(co))
    ch:send(5)
    assert.are.same({ n = 3, true, true, 15 }, recv(res, "the goroutine"))
  end)
end)

describe("at a goroutine's top level, as in luajit's main thread", function()
  it("coroutine.running() returns nil and coroutine.isyieldable() false", function()
    assert.is_nil(coroutine.running())
    assert.is_false(coroutine.isyieldable())
    local r = recv(go_pcall(function() return coroutine.running(), coroutine.isyieldable() end))
    assert.are.same({ n = 3, true, nil, false }, r)
  end)

  it("inside a coroutine they give the coroutine, as always", function()
    local inner
    local co = coroutine.create(function()
      inner = { coroutine.running(), coroutine.isyieldable() }
    end)
    assert.is_true((coroutine.resume(co)))
    assert.are.equal(co, inner[1])
    assert.is_true(inner[2])
  end)

  it("the main chunk's debug.traceback ends in main chunk, without the runtime's frames", function()
    local r = helper.run("print(debug.traceback('here'))")
    assert.are.equal(0, r.status)
    assert.matches("^here\nstack traceback:\n\t[^\n]*:1: in main chunk\n\t%[C%]: in %?\n$", r.stdout)
  end)
end)

-- The goroutine's own coroutine, which coroutine.running() no longer gives
-- (it returns nil at a goroutine's top level): reached the way a debugging
-- tool would.
local raw_running = require("lugo.core").raw_coroutine.running

describe("a goroutine's own coroutine", function()
  it("cannot be resumed from another goroutine", function()
    local ch = lugo.chan()
    local gco
    local res = go_pcall(function()
      gco = raw_running()
      return ch:recv()
    end)
    settle()
    assert.are.equal("thread", type(gco))
    assert.are.same({ n = 2, false, "cannot resume non-suspended coroutine" }, pack(coroutine.resume(gco)))
    assert.are.same({ n = 2, false, "cannot resume non-suspended coroutine" }, pack(coroutine.resume(gco, 1, 2)))
    assert.are.equal("normal", coroutine.status(gco))
    -- The goroutine is unharmed.
    ch:send("still fine")
    assert.are.same({ n = 3, true, "still fine", true }, recv(res, "the goroutine"))
  end)

  it("cannot be resumed while it waits to run", function()
    local gco
    local res = lugo.chan(1)
    lugo.go(function()
      gco = raw_running()
      gosched()
      res:send("resumed normally")
    end)
    for _ = 1, 100 do
      if gco then break end
      gosched()
    end
    assert.are.equal("thread", type(gco))
    assert.are.same({ n = 2, false, "cannot resume non-suspended coroutine" }, pack(coroutine.resume(gco)))
    assert.are.equal("resumed normally", recv(res, "the goroutine"))
  end)

  it("of the main goroutine cannot be resumed by another goroutine", function()
    local main = raw_running()
    local res = go_pcall(function() return coroutine.resume(main), coroutine.status(main) end)
    local r = recv(res, "the goroutine")
    assert.is_true(r[1])
    assert.is_false(r[2])
    assert.are.equal("normal", r[3])
  end)

  it("cannot be resumed by itself", function()
    local r = recv(go_pcall(function()
      return coroutine.status(raw_running()), coroutine.resume(raw_running())
    end))
    assert.are.same({ n = 4, true, "running", false, "cannot resume non-suspended coroutine" }, r)
  end)
end)

describe("coroutine.yield at the top level of a goroutine", function()
  it("raises attempt to yield from outside a coroutine", function()
    local r = recv(go_pcall(function() coroutine.yield(1, 2) end))
    assert.is_false(r[1])
    assert.matches("attempt to yield from outside a coroutine", r[2], 1, true)
  end)

  it("raises in the main goroutine too", function()
    local ok, err = pcall(coroutine.yield, "x")
    assert.is_false(ok)
    assert.matches("attempt to yield from outside a coroutine", err, 1, true)
  end)

  it("raises inside a pcall, and the goroutine can block afterwards", function()
    local ch = lugo.chan()
    local res = go_pcall(function()
      local ok, err = pcall(function() coroutine.yield() end)
      return ok, err, ch:recv()
    end)
    settle()
    ch:send("after")
    local r = recv(res, "the goroutine")
    assert.is_true(r[1])
    assert.is_false(r[2])
    assert.matches("attempt to yield from outside a coroutine", r[3], 1, true)
    assert.are.equal("after", r[4])
  end)

  it("does not disturb yields inside user coroutines", function()
    local r = recv(go_pcall(function()
      assert(not pcall(coroutine.yield))
      local co = coroutine.create(function() coroutine.yield("inner") return "end" end)
      return select(2, coroutine.resume(co)), select(2, coroutine.resume(co))
    end))
    assert.are.same({ n = 3, true, "inner", "end" }, r)
  end)
end)

describe("pcall inside goroutines", function()
  it("can block", function()
    local ch = lugo.chan()
    lugo.go(function() ch:send("v") end)
    assert.are.same({ n = 3, true, "v", true }, pack(pcall(ch.recv, ch)))
    lugo.go(function() ch:send("w") end)
    assert.are.same({ n = 2, true, "w" }, pack(pcall(function() return (ch:recv()) end)))
  end)

  it("catches an error raised after a block", function()
    local ch = lugo.chan()
    lugo.go(function() ch:send(1) end)
    local ok, err = pcall(function()
      ch:recv()
      error("after the block")
    end)
    assert.is_false(ok)
    assert.matches("after the block", err, 1, true)
  end)

  it("can block when nested, in xpcall, and in another goroutine", function()
    local ch = lugo.chan()
    local res = go_pcall(function()
      local a = pack(pcall(pcall, function() time.sleep(0.001) return ch:recv() end))
      local b = pack(xpcall(function()
        ch:recv()
        error("x failed", 0)
      end, function(m) return "handled " .. m end))
      return a, b
    end)
    settle()
    ch:send("n")
    ch:send("m")
    local r = recv(res, "the goroutine")
    assert.is_true(r[1], tostring(r[2]))
    assert.are.same({ n = 4, true, true, "n", true }, r[2])
    assert.are.same({ n = 2, false, "handled x failed" }, r[3])
  end)

  it("can block inside a user coroutine, which then yields across the pcall", function()
    local ch = lugo.chan()
    local co = coroutine.create(function()
      return pcall(function()
        local v = ch:recv()
        local w = coroutine.yield(v)
        time.sleep(0.001)
        return v .. w
      end)
    end)
    lugo.go(function() ch:send("a") end)
    assert.are.same({ n = 2, true, "a" }, pack(coroutine.resume(co)))
    assert.are.same({ n = 3, true, true, "ab" }, pack(coroutine.resume(co, "b")))
  end)
end)

describe("an error inside a user coroutine", function()
  it("is returned by resume as usual", function()
    local co = coroutine.create(function() error("plain failure") end)
    local ok, err = coroutine.resume(co)
    assert.is_false(ok)
    assert.matches("plain failure", err, 1, true)
    assert.are.equal("dead", coroutine.status(co))
  end)

  it("is returned by resume after the coroutine blocked", function()
    local ch = lugo.chan()
    lugo.go(function() ch:send(1) end)
    local co = coroutine.create(function()
      ch:recv()
      error("failure after block")
    end)
    local ok, err = coroutine.resume(co)
    assert.is_false(ok)
    assert.matches("failure after block", err, 1, true)
    assert.are.equal("dead", coroutine.status(co))
    assert.are.same({ n = 2, false, "cannot resume dead coroutine" }, pack(coroutine.resume(co)))
  end)

  it("keeps a non-string error value", function()
    local e = { code = 42 }
    local ch = lugo.chan()
    lugo.go(function() ch:send(1) end)
    local co = coroutine.create(function() ch:recv() error(e) end)
    local ok, err = coroutine.resume(co)
    assert.is_false(ok)
    assert.are.equal(e, err)
  end)

  it("is returned when a blocking operation itself raises", function()
    local ch = lugo.chan()
    local co = coroutine.create(function() ch:send(1) end)
    lugo.go(function() settle() ch:close() end)
    local ok, err = coroutine.resume(co)
    assert.is_false(ok)
    assert.matches("send on closed channel", err, 1, true)
  end)
end)

describe("blocking where Lua cannot yield", function()
  local function assert_cannot_block(ok, err, reason)
    assert.is_false(ok)
    assert.matches(NOT_YIELDABLE, err, 1, true)
    if reason then assert.matches(reason, err, 1, true) end
  end

  describe("raises cannot block here", function()
    it("inside a table.sort comparator", function()
      local ch = lugo.chan()
      local ok, err = sort_with(function(a, b) ch:recv() return a < b end)
      assert_cannot_block(ok, err, "table.sort comparator")
      ok, err = sort_with(function(a, b) time.sleep(0.001) return a < b end)
      assert_cannot_block(ok, err, "table.sort comparator")
      ok, err = sort_with(function(a, b) lugo.select(case.recv(ch)) return a < b end)
      assert_cannot_block(ok, err, "table.sort comparator")
      ok, err = sort_with(function(a, b) lugo.select() return a < b end)
      assert_cannot_block(ok, err, "table.sort comparator")
    end)

    it("inside a string.gsub callback", function()
      local ch = lugo.chan()
      local ok, err = pcall(string.gsub, "abc", "%w", function(c) ch:send(c) end)
      assert_cannot_block(ok, err, "string.gsub callback")
      ok, err = pcall(string.gsub, "abc", "%w", function() time.sleep(0.001) end)
      assert_cannot_block(ok, err, "string.gsub callback")
    end)

    it("inside a metamethod called from C", function()
      local mt = { __lt = function(a, b) time.sleep(0.001) return a.v < b.v end }
      local ok, err = pcall(table.sort, { setmetatable({ v = 2 }, mt), setmetatable({ v = 1 }, mt) })
      assert_cannot_block(ok, err, "table.sort") -- the __lt was called by table.sort
      local ch = lugo.chan()
      local o = setmetatable({}, { __tostring = function() return ch:recv() end })
      ok, err = pcall(string.format, "%s", o)
      assert_cannot_block(ok, err, "a metamethod, a finalizer or a callback")
    end)

    it("inside a chunk being required", function()
      local name = "coroutine_spec_blocking_module"
      package.preload[name] = function() time.sleep(0.001) return true end
      local ok, err = pcall(require, name)
      package.preload[name], package.loaded[name] = nil, nil
      assert_cannot_block(ok, err, "chunk being required")
    end)

    it("for every kind of blocking operation", function()
      local m = sync.mutex()
      m:lock()
      local rw = sync.rwmutex()
      rw:lock()
      local wg = sync.waitgroup()
      wg:add(1)
      local ops = {
        mutex_lock = function() m:lock() end,
        rwmutex_lock = function() rw:lock() end,
        rwmutex_rlock = function() rw:rlock() end,
        waitgroup_wait = function() wg:wait() end,
        cond_wait = function() sync.cond(m):wait() end,
        send = function() lugo.chan():send(1) end,
        recv = function() lugo.chan():recv() end,
        timer = function() time.after(60):recv() end, -- one already fired would not block
      }
      for name, op in pairs(ops) do
        local ok, err = sort_with(function(a, b) op() return a < b end)
        assert.is_false(ok, name)
        assert.matches(NOT_YIELDABLE, err, 1, true)
      end
      m:unlock()
      rw:unlock()
      wg:done()
    end)
  end)

  describe("leaves what it would have blocked on untouched", function()
    it("registers no receiver on the channel", function()
      local ch = lugo.chan()
      assert.is_false((sort_with(function(a, b) ch:recv() return a < b end)))
      -- Nobody is receiving: a send cannot proceed.
      assert.are.equal(2, lugo.select(case.send(ch, "lost?"), case.default))
      local got = lugo.chan(1)
      lugo.go(function() got:send((ch:recv())) end)
      ch:send("real")
      assert.are.equal("real", recv(got, "the receiver"))
    end)

    it("registers no sender on the channel", function()
      local ch = lugo.chan()
      assert.is_false((sort_with(function(a, b) ch:send("ghost") return a < b end)))
      assert.are.equal(2, lugo.select(case.recv(ch), case.default))
    end)

    it("queues no waiter on a held mutex", function()
      local m = sync.mutex()
      m:lock()
      assert.is_false((sort_with(function(a, b) m:lock() return a < b end)))
      m:unlock()
      assert.is_true(m:try_lock())
      m:unlock()
    end)

    it("leaves a read-locked rwmutex to its readers", function()
      local rw = sync.rwmutex()
      rw:rlock()
      assert.is_false((sort_with(function(a, b) rw:lock() return a < b end)))
      assert.is_true(rw:try_rlock()) -- no writer is pending
      rw:runlock()
      rw:runlock()
      assert.is_true(rw:try_lock())
      rw:unlock()
    end)

    it("keeps the cond's mutex locked", function()
      local m = sync.mutex()
      local c = sync.cond(m)
      m:lock()
      assert.is_false((sort_with(function(a, b) c:wait() return a < b end)))
      assert.is_false(m:try_lock())
      m:unlock()
      -- The cond still works: a later waiter is woken by one signal.
      local woke = lugo.chan(1)
      local waiting = false
      lugo.go(function()
        m:lock()
        waiting = true
        c:wait()
        woke:send(true)
        m:unlock()
      end)
      settle()
      assert.is_true(waiting)
      c:signal()
      assert.is_true(recv(woke, "the cond waiter"))
    end)

    it("keeps a waitgroup's waiters as they were", function()
      local wg = sync.waitgroup()
      wg:add(1)
      assert.is_false((sort_with(function(a, b) wg:wait() return a < b end)))
      wg:done()
      assert.are.equal(0, wg:count())
      wg:wait()
      wg:add(1) -- no stale waiter makes this a misuse
      wg:done()
    end)
  end)

  describe("a coroutine resumed from there", function()
    it("gets the error back from resume instead of crashing", function()
      local ch = lugo.chan()
      local co = coroutine.create(function() ch:recv() return "never" end)
      local inner
      local ok, err = sort_with(function(a, b)
        if not inner then inner = pack(coroutine.resume(co)) end
        return a < b
      end)
      assert.is_true(ok, err)
      assert.are.equal(false, inner[1])
      assert.matches(NOT_YIELDABLE .. "inside a coroutine resumed where Lua cannot yield", inner[2], 1, true)
      assert.are.equal("dead", coroutine.status(co))
    end)

    it("raises through coroutine.wrap", function()
      local f = coroutine.wrap(function() time.sleep(0.001) end)
      local ok, err = sort_with(function(a, b) f() return a < b end)
      assert_cannot_block(ok, err, "inside a coroutine resumed where Lua cannot yield")
    end)

    it("raises in a coroutine nested two deep", function()
      local ch = lugo.chan()
      local inner = coroutine.create(function() ch:send(1) end)
      local outer = coroutine.create(function() return coroutine.resume(inner) end)
      local r
      assert.is_true((sort_with(function(a, b)
        if not r then r = pack(coroutine.resume(outer)) end
        return a < b
      end)))
      assert.is_true(r[1])
      assert.is_false(r[2])
      assert.matches(NOT_YIELDABLE, r[3], 1, true)
    end)

    it("can still yield normally", function()
      local co = coroutine.create(function()
        coroutine.yield("one")
        return "two"
      end)
      local got = {}
      assert.is_true((sort_with(function(a, b)
        if #got == 0 then
          got[1] = select(2, coroutine.resume(co))
          got[2] = select(2, coroutine.resume(co))
        end
        return a < b
      end)))
      assert.are.same({ "one", "two" }, got)
    end)

    it("leaves the goroutine able to block afterwards", function()
      local co = coroutine.create(function() time.sleep(0.001) end)
      sort_with(function(a, b) coroutine.resume(co) return a < b end)
      -- The same goroutine, and a fresh coroutine, block as usual again.
      local ch = lugo.chan()
      lugo.go(function() ch:send("a") ch:send("b") end)
      assert.are.equal("a", (ch:recv()))
      local co2 = coroutine.create(function() return ch:recv() end)
      assert.are.same({ n = 3, true, "b", true }, pack(coroutine.resume(co2)))
    end)
  end)

  describe("operations that do not block", function()
    it("still work there", function()
      local results = {}
      local ok, err = sort_with(function(a, b)
        if #results == 0 then
          local ch = lugo.chan(1)
          ch:send("buffered")
          results[#results + 1] = (ch:recv())
          results[#results + 1] = lugo.select(case.recv(ch), case.default)
          local m = sync.mutex()
          m:lock()
          results[#results + 1] = m:try_lock()
          m:unlock()
          local wg = sync.waitgroup()
          wg:wait()
          sync.once():call(function() results[#results + 1] = "once" end)
          time.sleep(0)
          gosched()
          local rw = sync.rwmutex()
          rw:rlock()
          rw:runlock()
          results[#results + 1] = "done"
        end
        return a < b
      end)
      assert.is_true(ok, err)
      assert.are.same({ "buffered", 2, false, "once", "done" }, results)
    end)

    it("include write-locking a free rwmutex", function()
      local rw = sync.rwmutex()
      local ok, err = sort_with(function(a, b)
        rw:lock()
        rw:unlock()
        return a < b
      end)
      assert.is_true(ok, err)
    end)
  end)
end)

describe("time.sleep inside a coroutine", function()
  it("pauses the coroutine, lets other goroutines run, and resumes it", function()
    local ran = false
    lugo.go(function() ran = true end)
    local co = coroutine.create(function(d)
      local t0 = time.now()
      time.sleep(d)
      local slept = time.now() - t0
      coroutine.yield(slept)
      time.sleep(d)
      return "after second sleep"
    end)
    local ok, slept = coroutine.resume(co, 0.02)
    assert.is_true(ok)
    assert.is_true(slept >= 0.019, "slept only " .. slept)
    assert.is_true(ran)
    assert.are.same({ n = 2, true, "after second sleep" }, pack(coroutine.resume(co)))
  end)

  it("works in a wrapped coroutine inside another goroutine", function()
    local r = recv(go_pcall(function()
      local out = {}
      for v in coroutine.wrap(function()
        for i = 1, 3 do
          time.sleep(0.001)
          coroutine.yield(i)
        end
      end) do
        out[#out + 1] = v
      end
      return out
    end))
    assert.is_true(r[1], tostring(r[2]))
    assert.are.same({ 1, 2, 3 }, r[2])
  end)
end)

describe("lugo.go inside a user coroutine", function()
  it("starts a goroutine that the coroutine can wait for", function()
    local f = coroutine.wrap(function()
      local c = lugo.chan()
      lugo.go(function() c:send("from the goroutine") end)
      coroutine.yield((c:recv()))
      return "end"
    end)
    assert.are.equal("from the goroutine", f())
    assert.are.equal("end", f())
  end)
end)
