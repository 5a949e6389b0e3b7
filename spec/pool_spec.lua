-- lugo.sync's pool (docs/api.md, "lugo.sync"): sync.pool{ new = f }, Go's
-- sync.Pool. The pool is one runtime object for every processor; each VM
-- keeps its own lists of free objects, which never leave it, emptied by
-- that VM's garbage collector with a victim cache of one cycle.
--
-- ctest runs this file with 1, 2 and 4 processors. Spawned goroutines get
-- copies of what they capture (the pool and atomics cross by reference),
-- must not name busted's assert, and report back on channels.
local lugo = require "lugo"
local sync = require "lugo.sync"
local helper = require "helper"

local recv_within, error_of, here = helper.recv_within, helper.error_of, helper.here
local spawn_elsewhere, results = helper.spawn_elsewhere, helper.spawn_results
local HANG = 60 -- seconds; only against hangs

local function expect_error(message, f, ...)
  local args = { n = select("#", ...), ... }
  local where
  local err = error_of(function() where = here(); f(unpack(args, 1, args.n)) end)
  assert.are.equal(where .. message, err)
end

-- Run f with the collector stopped (only collectgarbage() collects), so
-- that the count of cycles a test makes is the count it asks for.
local function collector_stopped(f)
  collectgarbage("stop")
  local ok, err = pcall(f)
  collectgarbage("restart")
  if not ok then error(err, 0) end
end

describe("sync.pool", function()
  it("gives back what was put, within a processor", function()
    local p = sync.pool()
    local a, b = {}, {}
    p:put(a)
    p:put(b)
    local got1, got2 = p:get(), p:get()
    assert.is_true((got1 == a and got2 == b) or (got1 == b and got2 == a))
    assert.is_nil(p:get())
  end)

  it("calls new when it is empty, and get returns nil without new", function()
    local made = sync.atomic.int() -- new is a copy: count through an object it shares
    local p = sync.pool{ new = function() made:add(1) return { fresh = true } end }
    local x = p:get()
    assert.are.same({ fresh = true }, x)
    assert.are.equal(1, made:load())
    p:put(x)
    assert.are.equal(x, p:get())
    assert.are.equal(1, made:load())
    assert.are_not.equal(x, p:get())
    assert.are.equal(2, made:load())
    assert.is_nil(sync.pool():get())
    assert.is_nil(sync.pool({}):get())
  end)

  it("ignores put(nil), as Go's Put does", function()
    local p = sync.pool()
    p:put(nil)
    p:put()
    assert.is_nil(p:get())
  end)

  it("calls a copy of new, made when the pool is, as spawn copies a function", function()
    local calls = 0
    local p = sync.pool{ new = function() calls = calls + 1 return calls end }
    assert.are.equal(1, p:get())
    assert.are.equal(2, p:get())
    assert.are.equal(0, calls) -- this chunk's upvalue is not the copy's
  end)

  it("keeps a collected cycle's objects as victims for one more cycle, then drops them", function()
    collector_stopped(function()
      local p = sync.pool{ new = function() return "new" end }
      local weak = setmetatable({}, { __mode = "v" })
      local kept = {}
      p:put(kept)
      weak[1] = kept
      kept = nil
      collectgarbage()
      assert.are.equal(weak[1], p:get()) -- from the victim cache
      assert.is_not_nil(weak[1])
      p:put(weak[1])
      collectgarbage()
      collectgarbage()
      assert.is_nil(weak[1]) -- freed by the second cycle
      assert.are.equal("new", p:get())
    end)
  end)

  it("is emptied by the collector: objects put before collectgarbage() twice are gone", function()
    local p = sync.pool()
    local weak = setmetatable({}, { __mode = "v" })
    for i = 1, 10 do
      local o = { i }
      weak[i] = o
      p:put(o)
    end
    collectgarbage()
    collectgarbage()
    assert.is_nil(next(weak))
    assert.is_nil(p:get())
  end)

  it("raises an error for a bad new or a self that is not a pool", function()
    expect_error("bad argument #1 to 'pool' (function expected for field 'new', got number)", sync.pool, { new = 1 })
    expect_error("bad argument #1 to 'pool' (table expected, got string)", sync.pool, "new")
    local co = coroutine.create(print)
    expect_error("cannot copy a coroutine to another processor at upvalue 'co' of argument #1.new",
      sync.pool, { new = function() return co end })
    local p = sync.pool()
    expect_error("bad argument #1 to 'get' (pool expected, got table)", p.get, {})
    expect_error("bad argument #1 to 'put' (pool expected, got atomic.int)", p.put, sync.atomic.int(), 1)
    expect_error("bad argument #1 to 'get' (pool expected, got nil)", p.get)
  end)

  it("is the same pool on another processor, with that processor's own list", function()
    local made = sync.atomic.int()
    local p = sync.pool{ new = function() made:add(1) return { from = "new" } end }
    p:put({ from = "here" })
    local from, again, home = results(spawn_elsewhere(function(p)
      local x = p:get()
      p:put(x)
      return x.from, p:get() == x
    end, p))
    assert.is_true(again)
    -- Objects never leave their processor's VM: elsewhere the list was
    -- empty (at -p 1 the goroutine ran here, and found ours).
    if home then
      assert.are.equal("here", from)
      assert.are.equal(0, made:load())
    else
      assert.are.equal("new", from)
      assert.are.equal(1, made:load())
      assert.are.same({ from = "here" }, p:get())
    end
  end)

  it("serves goroutines on every processor at once, each from its own VM's objects", function()
    local vm_ids = sync.atomic.int()
    local p = sync.pool{ new = function()
      local reg = debug.getregistry()
      if not reg.pool_spec_vm then reg.pool_spec_vm = vm_ids:add(1) end
      return { vm = reg.pool_spec_vm }
    end }
    local N, K = 4, 2000
    local done = lugo.chan(N)
    for _ = 1, N do
      lugo.spawn(function(p, done, K)
        local ok, err = pcall(function()
          local mine = {}
          for i = 1, K do
            local x = p:get()
            -- new ran in this VM at least once: the id it left is this VM's
            local vm = debug.getregistry().pool_spec_vm
            if x.vm ~= vm then error("an object from another processor: " .. x.vm .. " in " .. vm) end
            mine[#mine + 1] = x
            if i % 3 == 0 then
              for j = #mine, 1, -1 do
                p:put(mine[j])
                mine[j] = nil
              end
            end
          end
        end)
        done:send(ok or err)
      end, p, done, K)
    end
    for _ = 1, N do
      local r, ok = recv_within(done, HANG)
      assert(ok ~= "timeout", "timed out waiting for the spawned goroutines")
      assert.is_true(r)
    end
    assert.is_true(vm_ids:load() >= 1)
  end)
end)
