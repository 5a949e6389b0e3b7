-- lugo: goroutines, channels and select.
--
-- The channel algorithms are in runtime/chan.c and runtime/select.c; what
-- is here moves Lua values in and out of the boxes C hands back, and turns
-- C's codes into Go's errors.
local I = require "lugo.internal"
local ffi = require "ffi"

local C, rc, vals, core = I.C, I.rc, I.vals, I.core
local argerror, raise, ERR, typename = I.argerror, I.raise, I.ERR, I.typename
local send_block, recv_block, select_block = core.send, core.recv, core.select
local getmetatable, type, select, rawget, rawequal = getmetatable, type, select, rawget, rawequal
local error, format = error, string.format
local OK, WOULDBLOCK, CLOSED, SHARED, DECODE = rc.OK, rc.WOULDBLOCK, rc.CLOSED, rc.SHARED, rc.DECODE
local RECVONLY, PREEMPT, PARK, PARKBOX = rc.RECVONLY, rc.PREEMPT, rc.PARK, rc.PARKBOX
local park = core.park
local preempt_yield = core.preempt_yield
local VAL_NIL, VAL_FALSE, VAL_TRUE, VAL_NUM = rc.VAL_NIL, rc.VAL_FALSE, rc.VAL_TRUE, rc.VAL_NUM
local COPY_NIL, COPY_FALSE, COPY_TRUE, COPY_NUM = rc.COPY_NIL, rc.COPY_FALSE, rc.COPY_TRUE, rc.COPY_NUM
local take_pending = core.take_pending
local num = ffi.new("double[1]") -- where a receive returns a number copied from another VM
local CASE_NIL, CASE_RECV, CASE_SEND = rc.CASE_NIL, rc.CASE_RECV, rc.CASE_SEND

local Chan = I.mt.channel
local lugo = {}

local function callable(f)
  if type(f) == "function" then return true end
  local mt = getmetatable(f)
  return type(mt) == "table" and mt.__call ~= nil
end

-- go(f, ...): run f(...) in a new goroutine of this VM (in C: it records
-- where it was called, for "created by" in tracebacks).
lugo.go = core.go

-- spawn(f, ...): run f(...) in a new goroutine on whichever processor is
-- free. f (its bytecode, upvalues and the globals it names) and the
-- arguments are copied into that processor's VM, even when it is this one
-- (runtime/value.c); modules resolve there by name, channels and other
-- runtime objects cross by reference. (In C, to record where it was called.)
lugo.spawn = core.spawn

-- chan([cap]): a channel with a buffer of cap values (0: unbuffered).
lugo.chan = core.chan

local chan = {}
Chan.__index = chan

-- Scalars cross processors inline: no Lua C API call, no allocation.
-- block 1: when the send cannot proceed, the G is set to park (see park).
local function trysend(ch, v, block)
  local t = type(v)
  if t == "number" then return C.chan_trysend_scalar(ch, COPY_NUM, v, block) end
  if t == "boolean" then return C.chan_trysend_scalar(ch, v and COPY_TRUE or COPY_FALSE, 0, block) end
  if v == nil then return C.chan_trysend_scalar(ch, COPY_NIL, 0, block) end
  return C.chan_trysend(ch, block)
end

function chan.send(ch, v)
  if getmetatable(ch) ~= Chan then argerror(1, "send", "channel", ch) end
  local r = trysend(ch, v, 1)
  if r > 0 then
    if r < PARKBOX then
      vals[r] = v
      return
    end
    -- set to park: the FFI call did the work, park only yields (where Lua
    -- cannot yield it undoes the park, and send_block says why)
    if r > PARKBOX then vals[r - PARKBOX] = v end
    local ok = park()
    if ok then return end
    if ok == false then raise(CLOSED) end
  elseif r == OK then -- a scalar copied for another processor: no box
    return
  elseif r == PREEMPT then -- a preemption point: yield first, then send
    preempt_yield()
    return chan.send(ch, v)
  end
  if r ~= CLOSED and r ~= RECVONLY then
    local ok, why = send_block(ch, v)
    if ok == true then return end
    if ok == ERR then raise(nil, why) end
  end
  raise(r == RECVONLY and RECVONLY or CLOSED)
end

local recv_block_path

local function recv(ch)
  local r = C.chan_tryrecv(ch, num, 1)
  if r > 0 then
    local v = vals[r]
    vals[r] = nil
    return v, true
  end
  if r == VAL_NUM then return num[0], true end
  if r == PARK then -- set to park: as in send
    local v, ok, box = park()
    if ok == nil then return recv_block_path(ch) end
    if box then
      v = vals[box]
      vals[box] = nil
    elseif v == ERR then
      raise(nil, ok)
    end
    return v, ok
  end
  if r == CLOSED then return nil, false end
  if r == DECODE then return take_pending(), true end
  if r == VAL_NIL then return nil, true end
  if r == VAL_TRUE then return true, true end
  if r == VAL_FALSE then return false, true end
  if r == PREEMPT then -- a preemption point: yield first, then receive
    preempt_yield()
    return recv(ch)
  end
  return recv_block_path(ch)
end

function recv_block_path(ch)
  local box, ok = recv_block(ch)
  if box == ERR then raise(nil, ok) end
  if box == 0 then return nil, ok end
  local v = vals[box]
  vals[box] = nil
  return v, ok
end

-- recv(): the next value and true, or nil and false once closed and drained.
function chan.recv(ch)
  if getmetatable(ch) ~= Chan then argerror(1, "recv", "channel", ch) end
  return recv(ch)
end

function chan.close(ch)
  if getmetatable(ch) ~= Chan then argerror(1, "close", "channel", ch) end
  local r = C.chan_close(ch)
  if r == CLOSED then raise(nil, "close of closed channel") end
  if r == RECVONLY then raise(nil, "close of receive-only channel") end
end

function chan.len(ch)
  if getmetatable(ch) ~= Chan then argerror(1, "len", "channel", ch) end
  return C.chan_len(ch)
end

function chan.cap(ch)
  if getmetatable(ch) ~= Chan then argerror(1, "cap", "channel", ch) end
  return C.chan_cap(ch)
end

-- Also reachable as a plain function (ch:range() returns it): checks ch too.
local function range_next(ch)
  if getmetatable(ch) ~= Chan then argerror(1, "range", "channel", ch) end
  local v, ok = recv(ch)
  if ok then return v end
end

-- for v in ch:range() do ... end: every value until the channel is closed
-- and drained. A generic for stops at nil, so a nil value ends it too.
function chan.range(ch)
  if getmetatable(ch) ~= Chan then argerror(1, "range", "channel", ch) end
  return range_next, ch
end

-- Cases for select: {kind, channel, value}.
local case = {}
local DEFAULT = setmetatable({}, { __tostring = function() return "case.default" end })
case.default = DEFAULT

-- A receive case holds nothing but its channel: one per channel serves
-- every select, so a select loop allocates none (collected with disuse).
-- A script may have changed a case it was given: one that no longer
-- names its channel is replaced, so that no other code receives from the
-- wrong channel (select checks the rest).
local recv_cases = setmetatable({}, { __mode = "v" })
local NIL_RECV = { CASE_RECV }

function case.recv(ch)
  if ch == nil then
    if rawget(NIL_RECV, 2) ~= nil then NIL_RECV = { CASE_RECV } end
    return NIL_RECV
  end
  local c = recv_cases[ch]
  if c and rawget(c, 2) == ch and rawget(c, 1) == CASE_RECV then return c end
  if getmetatable(ch) ~= Chan then argerror(1, "recv", "channel or nil", ch) end
  c = { CASE_RECV, ch }
  recv_cases[ch] = c
  return c
end

function case.send(ch, v)
  if ch ~= nil and getmetatable(ch) ~= Chan then argerror(1, "send", "channel or nil", ch) end
  return { CASE_SEND, ch, v }
end
lugo.case = case

-- Only used between a selectgo call and the return that follows it, with
-- no other goroutine running in between: one per VM is enough.
local cases, ncases = ffi.new("lugo_select_case[?]", 8), 8
local result = ffi.new("lugo_select_result")

-- Describe case c to selectgo at position i (0-based); true for the default.
-- selectgo trusts what it is given, and a case is a plain table that anyone
-- may have changed since case.recv or case.send made it: check its kind and
-- its channel every time. Raw reads: no metamethod runs between here and
-- chosen, which reads the case again.
local function fill(i, c)
  local sc = cases[i]
  if rawequal(c, DEFAULT) then -- no __eq lookup: c's metatable is never consulted
    sc.c, sc.kind = nil, CASE_NIL
    return true
  end
  local kind = type(c) == "table" and rawget(c, 1)
  if kind ~= CASE_RECV and kind ~= CASE_SEND then
    argerror(i + 1, "select", "case", c, 4) -- fill < select (or select_many, a tail call) < caller
  end
  local ch = rawget(c, 2)
  if ch == nil then
    sc.c, sc.kind = nil, CASE_NIL
  elseif getmetatable(ch) == Chan then
    sc.c, sc.kind = ch, kind
  else
    error(format("bad argument #%d to 'select' (case on a channel expected, got case on %s)", i + 1, typename(ch)), 3)
  end
  return false
end

-- The results of case c (at i), which selectgo chose and did.
local function chosen(i, c)
  if rawget(c, 1) == CASE_SEND then
    vals[result.box] = rawget(c, 3)
    return i
  end
  local box = result.box
  if box ~= 0 then
    local v = vals[box]
    vals[box] = nil
    return i, v, true
  end
  if result.ok == 0 then return i, nil, false end
  -- A scalar travels inline, without a box (a local channel carries no
  -- other copies: selectgo leaves shared ones to the C select).
  local k = result.copy.kind
  if k == COPY_NUM then return i, result.copy.num, true end
  if k == COPY_TRUE then return i, true, true end
  if k == COPY_FALSE then return i, false, true end
  return i, nil, true
end

-- Nothing was ready, or a channel is shared: the C select does it all
-- (and blocks, unless there is a default).
local function blocked(default, ...)
  local i, box, ok = select_block(default, ...)
  if i == 0 then return default end
  if i == ERR then raise(nil, box) end
  if rawget((select(i, ...)), 1) ~= CASE_SEND then
    if box == 0 then return i, nil, ok end
    local v = vals[box]
    vals[box] = nil
    return i, v, ok
  end
  if not ok then raise(CLOSED) end
  return i
end

local function select_many(n, ...)
  if n > ncases then
    ncases = n
    cases = ffi.new("lugo_select_case[?]", n)
  end
  local t, default = { ... }, 0
  for i = 1, n do
    if fill(i - 1, t[i]) then
      if default ~= 0 then error("select: multiple defaults", 2) end -- reached by a tail call
      default = i
    end
  end
  local r = C.selectgo(cases, n, result)
  if r == OK then return chosen(result.idx, t[result.idx]) end
  if r == WOULDBLOCK or r == SHARED then return blocked(default, ...) end
  if r == PREEMPT then
    preempt_yield()
    return select_many(n, ...)
  end
  raise(r)
end

-- select(case, ...): wait until one case can proceed, and do it. Returns the
-- chosen case's position, and for a receive the value and ok. Among ready
-- cases the choice is random; with case.default, it never blocks.
function lugo.select(...)
  local n = select("#", ...)
  if n > 4 then return select_many(n, ...) end
  -- Up to four cases without a vararg loop, which the JIT cannot compile.
  local c1, c2, c3, c4 = ...
  local default, defaults = 0, 0
  if n >= 1 and fill(0, c1) then default, defaults = 1, defaults + 1 end
  if n >= 2 and fill(1, c2) then default, defaults = 2, defaults + 1 end
  if n >= 3 and fill(2, c3) then default, defaults = 3, defaults + 1 end
  if n >= 4 and fill(3, c4) then default, defaults = 4, defaults + 1 end
  if defaults > 1 then error("select: multiple defaults", 2) end
  local r = C.selectgo(cases, n, result)
  if r == OK then
    local i = result.idx
    return chosen(i, i == 1 and c1 or i == 2 and c2 or i == 3 and c3 or c4)
  end
  if r == WOULDBLOCK or r == SHARED then return blocked(default, ...) end
  if r == PREEMPT then -- a preemption point: yield, then select afresh
    preempt_yield()
    return lugo.select(...)
  end
  raise(r)
end

-- main(f, ...): run f as the main goroutine from plain luajit, until it
-- returns; under the lugo host (already a goroutine), just call it.
function lugo.main(f, ...)
  if not callable(f) then argerror(1, "main", "function", f) end
  if C.goid() ~= 0 then return f(...) end
  return core.main(type(f) == "function" and f or function(...) return f(...) end, ...)
end

return lugo
