-- lugo: goroutines, channels and select.
--
-- The channel algorithms are in runtime/chan.c and runtime/select.c; what
-- is here moves Lua values in and out of the boxes C hands back, and turns
-- C's codes into Go's errors.
local I = require "lugo.internal"
local ffi = require "ffi"

local C, rc, vals, core = I.C, I.rc, I.vals, I.core
local park, take, argerror, raise, check_block = I.park, I.take, I.argerror, I.raise, I.check_block
local getmetatable, type, select = getmetatable, type, select
local OK, WOULDBLOCK, PARK, CLOSED, PARKBOX = rc.OK, rc.WOULDBLOCK, rc.PARK, rc.CLOSED, rc.PARKBOX
local CASE_NIL, CASE_RECV, CASE_SEND = rc.CASE_NIL, rc.CASE_RECV, rc.CASE_SEND

local Chan = I.mt.channel
local lugo = {}

local function callable(f)
  if type(f) == "function" then return true end
  local mt = getmetatable(f)
  return type(mt) == "table" and mt.__call ~= nil
end

-- go(f, ...): run f(...) in a new goroutine of this VM.
function lugo.go(f, ...)
  if not callable(f) then argerror(1, "go", "function", f) end
  local n = select("#", ...)
  local box = C.newproc(n)
  if box < 0 then raise(box) end
  if n == 0 then vals[box] = f else vals[box] = { f, ... } end
end

-- chan([cap]): a channel with a buffer of cap values (0: unbuffered).
lugo.chan = core.chan

local chan = {}
Chan.__index = chan

function chan.send(ch, v)
  if getmetatable(ch) ~= Chan then argerror(1, "send", "channel", ch) end
  local r = C.chan_send(ch, 0)
  if r > 0 then
    vals[r] = v
    return
  end
  if r == WOULDBLOCK then
    check_block()
    r = C.chan_send(ch, 1)
    if r >= PARKBOX then
      vals[r - PARKBOX] = v
      local _, ok = park()
      if ok then return end
      r = CLOSED
    elseif r > 0 then
      vals[r] = v
      return
    end
  end
  raise(r)
end

local function recv(ch)
  local r = C.chan_recv(ch, 0)
  if r > 0 then
    local v = vals[r]
    vals[r] = nil
    return v, true
  end
  if r == CLOSED then return nil, false end
  check_block()
  r = C.chan_recv(ch, 1)
  if r == PARK then
    local box, ok = park()
    return take(box), ok
  elseif r > 0 then
    local v = vals[r]
    vals[r] = nil
    return v, true
  elseif r == CLOSED then
    return nil, false
  end
  raise(r)
end

-- recv(): the next value and true, or nil and false once closed and drained.
function chan.recv(ch)
  if getmetatable(ch) ~= Chan then argerror(1, "recv", "channel", ch) end
  return recv(ch)
end

function chan.close(ch)
  if getmetatable(ch) ~= Chan then argerror(1, "close", "channel", ch) end
  if C.chan_close(ch) == CLOSED then raise(nil, "close of closed channel") end
end

function chan.len(ch)
  if getmetatable(ch) ~= Chan then argerror(1, "len", "channel", ch) end
  return C.chan_len(ch)
end

function chan.cap(ch)
  if getmetatable(ch) ~= Chan then argerror(1, "cap", "channel", ch) end
  return C.chan_cap(ch)
end

local function range_next(ch)
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

function case.recv(ch)
  if ch ~= nil and getmetatable(ch) ~= Chan then argerror(1, "recv", "channel or nil", ch) end
  return { CASE_RECV, ch }
end

function case.send(ch, v)
  if ch ~= nil and getmetatable(ch) ~= Chan then argerror(1, "send", "channel or nil", ch) end
  return { CASE_SEND, ch, v }
end
lugo.case = case

-- Only used between a selectgo call and the park or return that follows
-- it, with no other goroutine running in between: one per VM is enough.
local cases, ncases = ffi.new("lugo_select_case[?]", 8), 8
local result = ffi.new("lugo_select_result")

local function selected(...)
  local i = result.idx
  local c = select(i, ...)
  if c[1] == CASE_SEND then
    vals[result.box] = c[3]
    return i
  end
  return i, take(result.box), result.ok == 1
end

-- select(case, ...): wait until one case can proceed, and do it. Returns the
-- chosen case's position, and for a receive the value and ok. Among ready
-- cases the choice is random; with case.default, it never blocks.
function lugo.select(...)
  local n = select("#", ...)
  if n > ncases then
    ncases = n
    cases = ffi.new("lugo_select_case[?]", n)
  end
  local default = 0
  for i = 1, n do
    local c, sc = select(i, ...), cases[i - 1]
    if c == DEFAULT then
      if default ~= 0 then error("select: multiple defaults", 2) end
      default = i
      sc.c, sc.kind = nil, CASE_NIL
    else
      if type(c) ~= "table" or (c[1] ~= CASE_RECV and c[1] ~= CASE_SEND) then
        argerror(i, "select", "case", c)
      end
      local ch = c[2]
      if ch == nil then
        sc.c, sc.kind = nil, CASE_NIL
      else
        sc.c, sc.kind = ch, c[1]
      end
    end
  end
  local r = C.selectgo(cases, n, 0, result)
  if r == OK then return selected(...) end
  if r == WOULDBLOCK then
    if default ~= 0 then return default end
    check_block()
    r = C.selectgo(cases, n, 1, result)
    if r == OK then return selected(...) end
    if r == PARK then
      for i = 1, n do -- a send case's value waits in its box while we sleep
        local sc = cases[i - 1]
        if sc.kind == CASE_SEND then vals[sc.box] = (select(i, ...))[3] end
      end
      local box, ok, i = park()
      if (select(i, ...))[1] == CASE_SEND then
        if ok then return i end
        r = CLOSED
      else
        return i, take(box), ok
      end
    end
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
