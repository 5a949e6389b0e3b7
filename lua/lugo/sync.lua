-- lugo.sync: Mutex, RWMutex, WaitGroup, Once, Cond, atomics and Pool, as Go's
-- sync and sync/atomic packages, and map: Go's hashmap shared by every
-- processor. The algorithms are in runtime/sync.c, runtime/sema.c,
-- runtime/atomic.c and runtime/map.c: fast paths are FFI calls, blocking
-- paths C functions that park the goroutine (I.block).
local ffi = require "ffi"
local I = require "lugo.internal"

local C, rc, core = I.C, I.rc, I.core
local argerror, raise, block, ERR = I.argerror, I.raise, I.block, I.ERR
local getmetatable, setmetatable, type, error, pcall, pairs, next = getmetatable, setmetatable, type, error, pcall, pairs, next
local format, newproxy, tonumber = string.format, newproxy, tonumber
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
-- functions, each one call into the runtime; load, store and incr try an
-- FFI fast path first.
local Map = I.mt.map
local map_methods = core.map_methods
Map.__index = map_methods
local map_new, map_shard_entries = core.map_new, core.map_shard_entries

-- load, store and incr of scalars take FFI fast paths the JIT compiles
-- (runtime/map.c's map_*_fast); anything else, and every error, the C
-- methods.
local slow_load, slow_store, slow_incr = map_methods.load, map_methods.store, map_methods.incr
local map_load_fast, map_store_fast, map_incr_fast = C.map_load_fast, C.map_store_fast, C.map_incr_fast
local num_out = ffi.new("double[1]") -- read right after the call: nothing runs between
local MK_NUM, MK_STR, MK_FALSE, MK_TRUE = 1, 2, 3, 4

-- A key as the fast paths take it: kind, bytes, length, number; nothing
-- for a key only the C methods can judge (they raise).
local function ffi_key(k)
  local tk = type(k)
  if tk == "string" then return MK_STR, k, #k, 0
  elseif tk == "number" then return MK_NUM, nil, 0, k
  elseif tk == "boolean" then return k and MK_TRUE or MK_FALSE, nil, 0, 0 end
end

function map_methods.load(m, k)
  if getmetatable(m) == Map then
    local kind, s, len, num = ffi_key(k)
    local r = kind and map_load_fast(m, kind, s, len, num, num_out) or -1
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
    local kind, s, len, num = ffi_key(k)
    if vk and kind and map_store_fast(m, kind, s, len, num, vk, vn) == 1 then return true end
  end
  return slow_store(m, k, v, ttl)
end

function map_methods.incr(m, k, delta, init, init_ttl)
  if init_ttl == nil and type(delta) == "number" and (init == nil or type(init) == "number")
    and getmetatable(m) == Map then
    local kind, s, len, num = ffi_key(k)
    local r = kind and map_incr_fast(m, kind, s, len, num, delta, init ~= nil and 1 or 0, init or 0, num_out) or -1
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

-- ---- atomics (runtime/atomic.c) ----
--
-- An atomic.int holds a safe integer: within ±(2^53 - 1), where every Lua
-- number is exact. The C entry points answer a number beyond that range for
-- a status (preempt, bad argument, overflow), so the fast path costs one
-- comparison.

local SAFE = 2 ^ 53 - 1
local AINT_PREEMPT, AINT_BADARG = 2 ^ 60, 2 ^ 61
local MISUSE = rc.MISUSE
local aint_load, aint_store, aint_add, aint_swap, aint_cas = C.aint_load, C.aint_store, C.aint_add, C.aint_swap, C.aint_cas
local AtomicInt, AtomicValue, Pool = I.mt["atomic.int"], I.mt["atomic.value"], I.mt.pool

local function safe_int(v) return v >= -SAFE and v <= SAFE and v % 1 == 0 end

-- The shortest text that reads back as the number v.
local function shown(v)
  for digits = 14, 16 do
    local s = format("%." .. digits .. "g", v)
    if tonumber(s) == v then return s end
  end
  return format("%.17g", v)
end

-- Raise the error for argument n of fname, v, which is not a safe integer
-- (called by the API function: the error goes to its caller).
local function bad_int(n, fname, v)
  if type(v) ~= "number" then argerror(n, fname, "integer", v, 4) end
  if v ~= v or v % 1 ~= 0 then
    error(format("bad argument #%d to '%s' (integer expected, got %s)", n, fname, shown(v)), 3)
  end
  error(format("bad argument #%d to '%s' (integer within ±(2^53-1) expected, got %s)", n, fname, shown(v)), 3)
end

local aint = {}
AtomicInt.__index = aint

function aint.load(a)
  if getmetatable(a) ~= AtomicInt then argerror(1, "load", "atomic.int", a) end
  local v = aint_load(a)
  while v > SAFE do -- the time slice is over: yield, then load
    preempt_yield()
    v = aint_load(a)
  end
  return v
end

function aint.store(a, v)
  if getmetatable(a) ~= AtomicInt then argerror(1, "store", "atomic.int", a) end
  if type(v) ~= "number" then argerror(2, "store", "integer", v) end
  local r = aint_store(a, v)
  while r ~= OK do
    if r == MISUSE then bad_int(2, "store", v) end
    preempt_yield()
    r = aint_store(a, v)
  end
end

-- add(delta) -> the new value. A sum outside the safe range raises an
-- error and leaves the value as it was (Go's Add wraps around at 2^63).
function aint.add(a, delta)
  if getmetatable(a) ~= AtomicInt then argerror(1, "add", "atomic.int", a) end
  if type(delta) ~= "number" then argerror(2, "add", "integer", delta) end
  local v = aint_add(a, delta)
  while v > SAFE do
    if v == AINT_BADARG then bad_int(2, "add", delta) end
    if v ~= AINT_PREEMPT then
      error(format("sync: atomic.int add overflows the safe integer range ±(2^53-1) (%s + %s)",
        shown(aint.load(a)), shown(delta)), 2)
    end
    preempt_yield()
    v = aint_add(a, delta)
  end
  return v
end

-- swap(v) -> the old value.
function aint.swap(a, v)
  if getmetatable(a) ~= AtomicInt then argerror(1, "swap", "atomic.int", a) end
  if type(v) ~= "number" then argerror(2, "swap", "integer", v) end
  local old = aint_swap(a, v)
  while old > SAFE do
    if old == AINT_BADARG then bad_int(2, "swap", v) end
    preempt_yield()
    old = aint_swap(a, v)
  end
  return old
end

-- compare_and_swap(old, new) -> true if the value was old and is now new.
function aint.compare_and_swap(a, old, new)
  if getmetatable(a) ~= AtomicInt then argerror(1, "compare_and_swap", "atomic.int", a) end
  if type(old) ~= "number" then argerror(2, "compare_and_swap", "integer", old) end
  if type(new) ~= "number" then argerror(3, "compare_and_swap", "integer", new) end
  local r = aint_cas(a, old, new)
  while r < 0 do
    if r == MISUSE then
      if safe_int(old) then bad_int(3, "compare_and_swap", new) end
      bad_int(2, "compare_and_swap", old)
    end
    preempt_yield()
    r = aint_cas(a, old, new)
  end
  return r == 1
end

local atomic = {}
sync.atomic = atomic

-- atomic.int([v]) -> an atomic.int holding v (default 0).
function atomic.int(v)
  if v == nil then v = 0 end
  if type(v) ~= "number" or not safe_int(v) then bad_int(1, "int", v) end
  return core.atomic_int(v)
end

-- An atomic.value holds any value a channel can carry, as a channel's copy:
-- stored and loaded values are copies (tables deep), runtime objects are the
-- same object. nil, booleans and numbers load without the Lua C API.
local VAL_NIL, VAL_FALSE, VAL_TRUE, VAL_NUM = rc.VAL_NIL, rc.VAL_FALSE, rc.VAL_TRUE, rc.VAL_NUM
local aval_load_scalar = C.aval_load_scalar
local aval_load, aval_store, aval_swap, aval_cas = core.aval_load, core.aval_store, core.aval_swap, core.aval_cas
local num = ffi.new("double[1]") -- where a loaded number comes back

local aval = {}
AtomicValue.__index = aval

function aval.load(a)
  if getmetatable(a) ~= AtomicValue then argerror(1, "load", "atomic.value", a) end
  local r = aval_load_scalar(a, num)
  if r == VAL_NUM then return num[0] end
  if r == VAL_NIL then return nil end
  if r == VAL_TRUE then return true end
  if r == VAL_FALSE then return false end
  if r == PREEMPT then
    preempt_yield()
    return aval.load(a)
  end
  local v, why = aval_load(a)
  if v == ERR then error(why, 2) end
  return v
end

function aval.store(a, v)
  if getmetatable(a) ~= AtomicValue then argerror(1, "store", "atomic.value", a) end
  local ok, why = aval_store(a, v)
  if ok == ERR then error(why, 2) end
end

-- swap(v) -> the old value.
function aval.swap(a, v)
  if getmetatable(a) ~= AtomicValue then argerror(1, "swap", "atomic.value", a) end
  local old, why = aval_swap(a, v)
  if old == ERR then error(why, 2) end
  return old
end

-- compare_and_swap(old, new) -> true if the value was old (nil, a boolean,
-- a number, a string compared by value; a runtime object by identity; any
-- other old raises an error) and is now new.
function aval.compare_and_swap(a, old, new)
  if getmetatable(a) ~= AtomicValue then argerror(1, "compare_and_swap", "atomic.value", a) end
  local ok, why = aval_cas(a, old, new)
  if ok == ERR then error(why, 2) end
  return ok
end

-- atomic.value([v]) -> an atomic.value holding v (default nil).
function atomic.value(v)
  local a = core.atomic_value()
  if v ~= nil then
    local ok, why = aval_store(a, v)
    if ok == ERR then error(why, 2) end
  end
  return a
end

-- ---- Pool ----
--
-- The pool object (runtime/atomic.c) is the same in every VM and holds the
-- encoded `new`; each VM keeps its own lists here, keyed by the pool's
-- proxy (one per VM): pooled objects never leave their VM. As Go clears its
-- pools at each GC and keeps the cleared objects one more cycle as a victim
-- cache, a sentinel's finalizer (once per GC cycle of this VM) turns each
-- pool's list into its victim list, with weak values: the objects can still
-- be taken until the next cycle, which frees those that were not.

local weak_values = { __mode = "v" }
local pools = setmetatable({}, { __mode = "k" }) -- pool proxy -> { new, primary, victim }
local pool_new_fn = core.pool_new_fn
local armed = false -- a sentinel is alive: exactly one at a time, or cycles would count twice
local arm_sentinel

local function gc_cycle()
  armed = false
  if next(pools) == nil then return end -- no pool in this VM any more: rest until the next one
  for _, e in pairs(pools) do
    local primary = e.primary
    if primary[1] == nil then
      e.victim = nil
    else
      e.victim = setmetatable(primary, weak_values)
      e.primary = {}
    end
  end
  arm_sentinel()
end

arm_sentinel = function()
  armed = true
  local s = newproxy(true)
  getmetatable(s).__gc = gc_cycle
end

-- This VM's lists of pool p, made at its first use here.
local function enter(p, fname)
  if getmetatable(p) ~= Pool then argerror(1, fname, "pool", p, 4) end
  local new, why = pool_new_fn(p)
  if new == ERR then error(why, 3) end
  if not armed then arm_sentinel() end
  local e = { new = new or false, primary = {}, victim = nil }
  pools[p] = e
  return e
end

local pool = {}
Pool.__index = pool

-- get() -> an object from this processor's list, else new()'s, else nil.
function pool.get(p)
  local e = pools[p] or enter(p, "get")
  local list = e.primary
  local n = #list
  if n == 0 then
    list = e.victim
    n = list and #list or 0
    if n == 0 then
      local new = e.new
      if new then return new() end
      return nil
    end
  end
  local v = list[n]
  list[n] = nil
  return v
end

-- put(v): give v back to this processor's list (nil is ignored, as in Go).
function pool.put(p, v)
  local e = pools[p] or enter(p, "put")
  if v == nil then return end
  local list = e.primary
  list[#list + 1] = v
end

-- pool{ new = f } -> a Pool; f is copied as spawn copies a function, and
-- every processor calls its own copy.
function sync.pool(opts)
  if opts ~= nil and type(opts) ~= "table" then argerror(1, "pool", "table", opts) end
  local new = opts and opts.new
  if new ~= nil and type(new) ~= "function" then
    error(format("bad argument #1 to 'pool' (function expected for field 'new', got %s)", I.typename(new)), 2)
  end
  local p, why = core.pool(new)
  if p == ERR then error(why, 2) end
  return p
end

return sync
