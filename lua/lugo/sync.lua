-- lugo.sync: Mutex, RWMutex, WaitGroup, Once and Cond, as Go's sync package,
-- and map: Go's hashmap shared by every processor (runtime/map.c).
-- The algorithms are in runtime/sync.c and runtime/sema.c: fast paths are FFI
-- calls, blocking paths C functions that park the goroutine (I.block).
local I = require "lugo.internal"

local C, rc, core = I.C, I.rc, I.core
local argerror, raise, block, ERR = I.argerror, I.raise, I.block, I.ERR
local getmetatable, type, error, pcall = getmetatable, type, error, pcall
local OK, YIELD, UNLOCKED, PREEMPT = rc.OK, rc.YIELD, rc.UNLOCKED, rc.PREEMPT
local preempt_yield = core.preempt_yield
local gosched, can_block, cond_wait_begin, cond_locker = core.gosched, core.can_block, core.cond_wait_begin, core.cond_locker

-- The steps of runtime/sync.c that block.
local MUTEX_LOCK, RW_RLOCK, RW_LOCK, WG_WAIT, COND_WAIT = 1, 2, 3, 4, 5

local sync = {}

local Mutex, RWMutex, WaitGroup, Once, Cond = I.mt.mutex, I.mt.rwmutex, I.mt.waitgroup, I.mt.once, I.mt.cond

-- Lock the mutex inside m (a Mutex, an RWMutex's writer lock, a Once's
-- lock); returns OK, or ERR and why the goroutine could not wait.
local function lock_mutex(m)
  local r = C.mutex_lock_fast(m)
  if r == 1 then return OK end
  if r == PREEMPT then -- a preemption point: yield first, then lock
    preempt_yield()
    return lock_mutex(m)
  end
  return block(MUTEX_LOCK, m)
end

-- After an unlock: when it handed the mutex to a waiter, let that one run.
local function unlocked(r, what)
  if r == OK then return end
  if r == YIELD then return gosched(true) end
  error("sync: unlock of unlocked " .. what, 3)
end

local mutex = {}
Mutex.__index = mutex

function mutex.lock(m)
  if getmetatable(m) ~= Mutex then argerror(1, "lock", "mutex", m) end
  local r, why = lock_mutex(m)
  if r ~= OK then raise(nil, why) end
end

function mutex.unlock(m)
  if getmetatable(m) ~= Mutex then argerror(1, "unlock", "mutex", m) end
  local r = C.mutex_unlock(m)
  if r ~= OK then unlocked(r, "mutex") end
end

function mutex.try_lock(m)
  if getmetatable(m) ~= Mutex then argerror(1, "try_lock", "mutex", m) end
  return C.mutex_try_lock(m) == 1
end

function sync.mutex() return core.mutex() end

local rwmutex = {}
RWMutex.__index = rwmutex

function rwmutex.lock(rw)
  if getmetatable(rw) ~= RWMutex then argerror(1, "lock", "rwmutex", rw) end
  local fast = C.rw_lock_fast(rw)
  if fast == 1 then return end
  if fast == PREEMPT then
    preempt_yield()
    return rwmutex.lock(rw)
  end
  -- Once the writer lock is ours, waiting for readers must not fail.
  local r, why = can_block()
  if r == OK then r, why = lock_mutex(rw) end
  if r == OK then r, why = block(RW_LOCK, rw) end
  if r ~= OK then raise(nil, why) end
end

function rwmutex.unlock(rw)
  if getmetatable(rw) ~= RWMutex then argerror(1, "unlock", "rwmutex", rw) end
  local r = C.rw_unlock(rw)
  if r == UNLOCKED then error("sync: Unlock of unlocked RWMutex", 2) end
  if r ~= OK then unlocked(r, "mutex") end
end

function rwmutex.rlock(rw)
  if getmetatable(rw) ~= RWMutex then argerror(1, "rlock", "rwmutex", rw) end
  local fast = C.rw_rlock_fast(rw)
  if fast == 1 then return end
  if fast == PREEMPT then
    preempt_yield()
    return rwmutex.rlock(rw)
  end
  local r, why = block(RW_RLOCK, rw)
  if r ~= OK then raise(nil, why) end
end

function rwmutex.runlock(rw)
  if getmetatable(rw) ~= RWMutex then argerror(1, "runlock", "rwmutex", rw) end
  if C.rw_runlock(rw) == UNLOCKED then error("sync: RUnlock of unlocked RWMutex", 2) end
end

function rwmutex.try_lock(rw)
  if getmetatable(rw) ~= RWMutex then argerror(1, "try_lock", "rwmutex", rw) end
  return C.rw_try_lock(rw) == 1
end

function rwmutex.try_rlock(rw)
  if getmetatable(rw) ~= RWMutex then argerror(1, "try_rlock", "rwmutex", rw) end
  return C.rw_try_rlock(rw) == 1
end

function sync.rwmutex() return core.rwmutex() end

local waitgroup = {}
WaitGroup.__index = waitgroup

-- add([n]): add n (default 1, may be negative) to the counter.
function waitgroup.add(wg, n)
  if getmetatable(wg) ~= WaitGroup then argerror(1, "add", "waitgroup", wg) end
  if n == nil then n = 1 end
  if type(n) ~= "number" or n % 1 ~= 0 or n > 0x7fffffff or n < -0x7fffffff then
    argerror(2, "add", "integer", n)
  end
  local r = C.wg_add(wg, n)
  if r ~= OK then raise(r) end
end

function waitgroup.done(wg)
  if getmetatable(wg) ~= WaitGroup then argerror(1, "done", "waitgroup", wg) end
  local r = C.wg_add(wg, -1)
  if r ~= OK then raise(r) end
end

-- wait(): block until the counter is zero.
function waitgroup.wait(wg)
  if getmetatable(wg) ~= WaitGroup then argerror(1, "wait", "waitgroup", wg) end
  local fast = C.wg_wait_step(wg, 0)
  if fast == OK then return end
  if fast == PREEMPT then
    preempt_yield()
    return waitgroup.wait(wg)
  end
  local r, why = block(WG_WAIT, wg)
  if r == ERR then raise(nil, why) end
  if r ~= OK then raise(r) end
end

-- count(): the counter (not in Go's API; handy in tests).
function waitgroup.count(wg)
  if getmetatable(wg) ~= WaitGroup then argerror(1, "count", "waitgroup", wg) end
  return C.wg_count(wg)
end

function sync.waitgroup() return core.waitgroup() end

local once = {}
Once.__index = once

-- call(f): call f the first time call is called on this Once, and only
-- then; every call returns after f has returned (or raised).
function once.call(o, f)
  if getmetatable(o) ~= Once then argerror(1, "call", "once", o) end
  if type(f) ~= "function" then argerror(2, "call", "function", f) end
  if C.once_done(o) == 1 then return end
  local r, why = lock_mutex(o)
  if r ~= OK then raise(nil, why) end
  if C.once_done(o) == 1 then return unlocked(C.mutex_unlock(o), "mutex") end
  local ok, err = pcall(f)
  C.once_set_done(o)
  unlocked(C.mutex_unlock(o), "mutex")
  if not ok then error(err, 0) end
end

function sync.once() return core.once() end

local cond = {}
Cond.__index = cond

-- wait(): unlock the cond's locker, wait for signal or broadcast, lock it
-- again before returning.
function cond.wait(c)
  if getmetatable(c) ~= Cond then argerror(1, "wait", "cond", c) end
  local ok, why = cond_wait_begin(c)
  if ok == ERR then raise(nil, why) end
  local l = cond_locker(c)
  l:unlock()
  block(COND_WAIT, c)
  l:lock()
end

function cond.signal(c)
  if getmetatable(c) ~= Cond then argerror(1, "signal", "cond", c) end
  C.cond_signal(c)
end

function cond.broadcast(c)
  if getmetatable(c) ~= Cond then argerror(1, "broadcast", "cond", c) end
  C.cond_broadcast(c)
end

-- locker(): the mutex or rwmutex the cond was made with (Go's c.L).
function cond.locker(c)
  if getmetatable(c) ~= Cond then argerror(1, "locker", "cond", c) end
  return cond_locker(c)
end

-- cond(l): a Cond whose wait unlocks and relocks l, a mutex or an rwmutex.
function sync.cond(l)
  local mt = getmetatable(l)
  if mt ~= Mutex and mt ~= RWMutex then argerror(1, "cond", "mutex or rwmutex", l) end
  return core.cond(l)
end

-- map{ capacity = bytes or "64m" }: a hashmap every goroutine on every
-- processor shares by reference (runtime/map.c). Its methods are C
-- functions: each is one call into the runtime.
local Map = I.mt.map
local map_methods = core.map_methods
Map.__index = map_methods
local map_new, map_shard_entries = core.map_new, core.map_shard_entries

-- load, store and incr of scalars take FFI fast paths the JIT compiles
-- (runtime/map.c's map_*_fast); anything else, and every error, the C
-- methods.
local slow_load, slow_store, slow_incr = map_methods.load, map_methods.store, map_methods.incr
local map_load_fast, map_store_fast, map_incr_fast = C.map_load_fast, C.map_store_fast, C.map_incr_fast
local num_out = require("ffi").new("double[1]") -- read right after the call: nothing runs between
local MK_NUM, MK_STR, MK_FALSE, MK_TRUE = 1, 2, 3, 4

function map_methods.load(m, k)
  if getmetatable(m) == Map then
    local tk, r = type(k), -1
    if tk == "string" then r = map_load_fast(m, MK_STR, k, #k, 0, num_out)
    elseif tk == "number" then r = map_load_fast(m, MK_NUM, nil, 0, k, num_out)
    elseif tk == "boolean" then r = map_load_fast(m, k and MK_TRUE or MK_FALSE, nil, 0, 0, num_out) end
    if r == 1 then return num_out[0], true
    elseif r == 0 then return nil, false
    elseif r == 3 then return true, true
    elseif r == 2 then return false, true end
  end
  return slow_load(m, k)
end

function map_methods.store(m, k, v, ttl)
  if ttl == nil and getmetatable(m) == Map then
    local tv, vk, vn = type(v), nil, 0
    if tv == "number" then vk, vn = 1, v elseif tv == "boolean" then vk = v and 3 or 2 end
    if vk then
      local tk, r = type(k), -1
      if tk == "string" then r = map_store_fast(m, MK_STR, k, #k, 0, vk, vn)
      elseif tk == "number" then r = map_store_fast(m, MK_NUM, nil, 0, k, vk, vn)
      elseif tk == "boolean" then r = map_store_fast(m, k and MK_TRUE or MK_FALSE, nil, 0, 0, vk, vn) end
      if r == 1 then return true end
    end
  end
  return slow_store(m, k, v, ttl)
end

function map_methods.incr(m, k, delta, init, init_ttl)
  if init_ttl == nil and type(delta) == "number" and (init == nil or type(init) == "number")
    and getmetatable(m) == Map then
    local tk, r, has_init = type(k), -1, init ~= nil and 1 or 0
    if tk == "string" then r = map_incr_fast(m, MK_STR, k, #k, 0, delta, has_init, init or 0, num_out)
    elseif tk == "number" then r = map_incr_fast(m, MK_NUM, nil, 0, k, delta, has_init, init or 0, num_out) end
    if r == 1 then return num_out[0] elseif r == 0 then return nil, "not found" end
  end
  return slow_incr(m, k, delta, init, init_ttl)
end
local units = { [""] = 1, k = 1024, m = 1024 ^ 2, g = 1024 ^ 3 }

local function parse_capacity(c)
  if c == nil then return 0 end
  if type(c) == "number" then
    if c < 0 or c ~= c then error("sync.map: capacity must not be negative", 3) end
    return c
  end
  if type(c) ~= "string" then error("sync.map: capacity must be a number of bytes or a string such as \"64m\"", 3) end
  local n, unit = c:lower():match("^%s*(%d+%.?%d*)%s*([kmg]?)b?%s*$")
  if not n then error(string.format("sync.map: bad capacity %q (use bytes, or a number with k, m or g)", c), 3) end
  return math.floor(tonumber(n) * units[unit])
end

function sync.map(opts)
  if opts ~= nil and type(opts) ~= "table" then argerror(1, "map", "table", opts) end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "capacity" and k ~= "shards" then error(string.format("sync.map: unknown option '%s'", tostring(k)), 2) end
  end
  if opts.shards ~= nil and (type(opts.shards) ~= "number" or opts.shards < 1) then
    error("sync.map: shards must be a positive number", 2)
  end
  return map_new(parse_capacity(opts.capacity), opts.shards)
end

-- range(f): f(k, v) for each entry, each key at most once, until f returns
-- false (Go's sync.Map.Range: an entry stored or deleted meanwhile may or
-- may not be seen). A shard's entries are copied out at a time, so f may
-- block, and may use the map.
function Map.__index.range(m, f)
  if getmetatable(m) ~= Map then argerror(1, "range", "map", m) end
  if type(f) ~= "function" then argerror(2, "range", "function", f) end
  local shard = 0
  while true do
    local entries = map_shard_entries(m, shard)
    if not entries then return end
    for i = 1, #entries, 2 do
      if f(entries[i], entries[i + 1]) == false then return end
    end
    shard = shard + 1
  end
end

return sync
