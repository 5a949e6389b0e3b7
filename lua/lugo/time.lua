-- lugo.time: sleep, timers and tickers on the processor's timer heap
-- (runtime/time.c). Durations are seconds; times are seconds since the epoch.
local I = require "lugo.internal"

local C, rc, core, vals = I.C, I.rc, I.core, I.vals
local argerror, raise, ERR = I.argerror, I.raise, I.ERR
local sleep = core.sleep
local type, getmetatable, error = type, getmetatable, error
local TIMER, TICKER, FUNC = 0, 1, 2 -- a Timer's, Ticker's or after_func's kind (C.timer_kind)
local AFTER, TICK = 3, 4 -- core.timer makes only the channel

local time = {}

local function check_duration(d, n, fname)
  if type(d) ~= "number" then argerror(n, fname, "number", d, 4) end -- at the API function's caller
end

-- sleep(d): pause the goroutine for at least d seconds.
function time.sleep(d)
  check_duration(d, 1, "sleep")
  if not (d > 0) then return end
  local r, code = sleep(d)
  if r == ERR then raise(nil, code) end
end

-- Timers and tickers are runtime objects (they cross VMs by reference);
-- t.c is their channel, which is receive-only and owns the timer (Go 1.23):
-- a timer or ticker that nobody references, or only its channel, costs
-- nothing once collected, and needs no stop.
local Timer = I.mt.timer
local timer_chan = core.timer_chan
local timer_methods, ticker_methods = {}, {}
Timer.__index = function(t, k)
  -- Reachable as getmetatable(t).__index(x, k) with any x: timer_kind
  -- trusts its argument.
  if getmetatable(t) ~= Timer then argerror(1, "__index", "timer", t) end
  if k == "c" then return timer_chan(t) end
  if C.timer_kind(t) == TICKER then return ticker_methods[k] end
  return timer_methods[k]
end

local function is_timer(t) return getmetatable(t) == Timer and C.timer_kind(t) ~= TICKER end
local function is_ticker(t) return getmetatable(t) == Timer and C.timer_kind(t) == TICKER end

-- stop(): prevent the timer from firing. True if that stopped it, false if
-- it had already been stopped or its time received. No stale time is
-- received after (Go 1.23).
function timer_methods.stop(t)
  if not is_timer(t) then argerror(1, "stop", "time.Timer", t) end
  return C.timer_stop(t) == 1
end

-- reset(d): fire after d seconds instead. True as for stop.
function timer_methods.reset(t, d)
  if not is_timer(t) then argerror(1, "reset", "time.Timer", t) end
  check_duration(d, 2, "reset")
  return C.timer_reset(t, d) == 1
end

function ticker_methods.stop(t)
  if not is_ticker(t) then argerror(1, "stop", "time.Ticker", t) end
  C.timer_stop(t)
end

function ticker_methods.reset(t, d)
  if not is_ticker(t) then argerror(1, "reset", "time.Ticker", t) end
  check_duration(d, 2, "reset")
  if not (d > 0) then error("non-positive interval for Ticker.Reset", 2) end
  C.timer_reset(t, d)
end

-- timer(d): a Timer whose channel t.c receives the time once, after d.
function time.timer(d)
  check_duration(d, 1, "timer")
  return core.timer(TIMER, d)
end

-- after(d): a channel that receives the time once, after d.
function time.after(d)
  check_duration(d, 1, "after")
  return core.timer(AFTER, d)
end

-- ticker(d): a Ticker whose channel t.c receives the time every d seconds;
-- ticks are dropped for a slow reader.
function time.ticker(d)
  check_duration(d, 1, "ticker")
  if not (d > 0) then error("non-positive interval for NewTicker", 2) end
  return core.timer(TICKER, d)
end

-- tick(d): a ticker's channel, for code that never stops it; nil if d <= 0.
function time.tick(d)
  check_duration(d, 1, "tick")
  if not (d > 0) then return nil end
  return core.timer(TICK, d)
end

-- after_func(d, f): call f in its own goroutine after d. Returns a Timer
-- (without a channel) whose stop and reset work as for timer().
function time.after_func(d, f)
  check_duration(d, 1, "after_func")
  if type(f) ~= "function" then argerror(2, "after_func", "function", f) end
  local box = C.box_new()
  vals[box] = f
  return core.timer(FUNC, d, box)
end

time.now = C.walltime

-- since(t): seconds elapsed since time t.
function time.since(t)
  if type(t) ~= "number" then argerror(1, "since", "number", t) end
  return C.walltime() - t
end

return time
