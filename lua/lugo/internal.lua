-- lugo.internal: what every lugo module shares. Loaded once per VM.
--
-- The runtime's algorithms are in C (runtime/). This module casts their FFI
-- entry points, keeps the protocol by which a goroutine parks (yield PARK
-- up to the scheduler, through any user coroutines in between), turns the
-- C return codes into Go's errors, and wraps coroutine.* so that user
-- coroutines keep working inside goroutines.
local ffi = require "ffi"
local core = require "lugo.core"

local I = {}

if not pcall(ffi.typeof, "lugo_select_case") then ffi.cdef(core.cdef) end

local C = {}
for name, ptr in pairs(core.fn) do C[name] = ffi.cast(core.types[name], ptr) end
I.C = C
I.core = core
I.vals = core.vals
I.mt = core.mt
I.rc = core.rc

local rc = core.rc
local PARK, TOPYIELD = core.PARK, core.TOPYIELD
local raw = core.raw_coroutine
local raw_resume, raw_yield, raw_status, raw_create = raw.resume, raw.yield, raw.status, raw.create
local raw_running, isyieldable = raw.running, raw.isyieldable
local park_forever = core.park_forever
-- {[1] = set of the goroutines' own coroutines}: the set is replaced by a
-- smaller one after a burst of goroutines.
local goroutine_coroutines = core.goroutine_coroutines
local error, type, select, getmetatable, format = error, type, select, getmetatable, string.format

I.PARK = PARK

-- The name of a value's type as lugo's errors spell it.
local function typename(v)
  local mt = getmetatable(v)
  if type(mt) == "table" and type(mt.__name) == "string" and type(v) == "userdata" then
    return mt.__name
  end
  return type(v)
end
I.typename = typename

-- Raise luaL_argerror's message at the caller of the API function (level:
-- where that caller is, counted from here; 3 when the API function itself
-- calls argerror).
function I.argerror(n, fname, expected, v, level)
  error(format("bad argument #%d to '%s' (%s expected, got %s)", n, fname, expected, typename(v)), level or 3)
end

local messages = {
  [rc.CLOSED] = "send on closed channel",
  [rc.RECVONLY] = "send on receive-only channel",
  [rc.NEGATIVE] = "sync: negative WaitGroup counter",
  [rc.MISUSE] = "sync: WaitGroup misuse: Add called concurrently with Wait",
  [rc.REUSED] = "sync: WaitGroup is reused before previous Wait has returned",
}

-- Raise the error a return code stands for (or the message `what`), at the
-- API function's caller.
function I.raise(code, what)
  error(what or messages[code] or ("lugo: unexpected runtime code " .. tostring(code)), 3)
end

-- What a blocking C function returns, before the reason, when it cannot park.
I.ERR = core.ERR
local ERR = core.ERR

-- Run a blocking step of runtime/sync.c to completion: the C function parks
-- as often as it must, returning nothing after each wake-up. Returns the
-- step's code, or ERR and the message saying why it could not park.
local sync_block = core.sync_block
function I.block(step, obj)
  local r, code = sync_block(step, obj, 1)
  while r == nil do r, code = sync_block(step, obj, 2) end
  return r, code
end

-- coroutine.* for user code. A park deep inside user coroutines travels up
-- as a yield of PARK from each, to the goroutine's own coroutine and the
-- scheduler; the wake-up's results travel back down the same way.
local parked = setmetatable({}, { __mode = "k" }) -- user coroutines a park passed through
local resumed

local function wake(co, ...)
  parked[co] = nil
  return resumed(co, raw_resume(co, ...))
end

resumed = function(co, ok, first, ...)
  if ok and first == PARK then
    parked[co] = true
    return wake(co, raw_yield(PARK))
  end
  return ok, first, ...
end

local function pack(...) return { n = select("#", ...), ... } end

local function resume(co, ...)
  if parked[co] or goroutine_coroutines[1][co] then
    return false, "cannot resume non-suspended coroutine"
  end
  if isyieldable() then return resumed(co, raw_resume(co, ...)) end
  -- The resumer cannot yield: a park inside co must fail instead.
  C.nonyield(1)
  local r = pack(raw_resume(co, ...))
  C.nonyield(-1)
  return unpack(r, 1, r.n)
end

local function yielded(first, ...)
  if first == TOPYIELD then error("attempt to yield from outside a coroutine", 3) end
  return first, ...
end

local function yield(...) return yielded(raw_yield(...)) end

local function status(co)
  if parked[co] then return "normal" end
  if goroutine_coroutines[1][co] and co ~= raw_running() then return "normal" end
  return raw_status(co)
end

local function wrapped(ok, ...)
  if ok then return ... end
  error((...), 0)
end

local function wrap(f)
  local co = raw_create(f)
  return function(...) return wrapped(resume(co, ...)) end
end

-- At a goroutine's top level Lua code runs as in luajit's main thread:
-- there is no coroutine to yield from (coroutine libraries test this).
local function running()
  local co = raw_running()
  if co == nil or goroutine_coroutines[1][co] then return nil end
  return co
end

local function yieldable()
  local co = raw_running()
  if co == nil or goroutine_coroutines[1][co] then return false end
  return isyieldable()
end

coroutine.resume, coroutine.yield, coroutine.status, coroutine.wrap = resume, yield, status, wrap
coroutine.running, coroutine.isyieldable = running, yieldable

-- Tracebacks leave the runtime's own frames out: a main chunk's ends
-- "in main chunk", as under luajit.
debug.traceback = core.traceback

-- os.exit stops the program as Go's os.Exit does, but closes every VM on the
-- way out so that finalizers run and nothing leaks.
local raw_exit = os.exit
os.exit = function(code)
  if code == nil or code == true then code = 0 elseif code == false then code = 1 end
  if type(code) ~= "number" then I.argerror(1, "exit", "number", code) end
  C.exit(code)
  park_forever() -- returns only where this goroutine cannot park
  io.stdout:flush()
  return raw_exit(code)
end

return I
