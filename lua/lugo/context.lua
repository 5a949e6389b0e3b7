-- lugo.context: Go's context package. The tree, its cancellation and its
-- deadlines live in C (runtime/context.c), so a context works the same on
-- every processor; this module checks arguments and shapes results.
local I = require "lugo.internal"
local lugo = require "lugo"
local sync = require "lugo.sync"

local core, C, argerror = I.core, I.C, I.argerror
local type, getmetatable, error = type, getmetatable, error
local background, with_cancel, cancel = core.ctx_background, core.ctx_with_cancel, core.ctx_cancel
local with_value, value, done, err, deadline, kind =
  core.ctx_with_value, core.ctx_value, core.ctx_done, core.ctx_err, core.ctx_deadline, core.ctx_kind
local recv = lugo.case.recv

local Context = I.mt.context

local context = {
  canceled = "context canceled",
  deadline_exceeded = "context deadline exceeded",
}

local function check(c, n, fname)
  if getmetatable(c) ~= Context then argerror(n, fname, "context", c, 4) end
end

local function check_parent(parent, fname)
  if parent == nil then error("cannot create context from nil parent", 3) end
  if getmetatable(parent) ~= Context then argerror(1, fname, "context", parent, 4) end
end

function context.background() return background(false) end
function context.todo() return background(true) end

local function canceler(ctx) return function() cancel(ctx) end end

-- with_cancel(parent) -> ctx, cancel: cancel() cancels ctx and everything
-- derived from it, on every processor; calling it again does nothing.
function context.with_cancel(parent)
  check_parent(parent, "with_cancel")
  local ctx = with_cancel(parent)
  return ctx, canceler(ctx)
end

-- with_deadline(parent, t) -> ctx, cancel: also cancelled at time t
-- (seconds since the epoch) with "context deadline exceeded".
function context.with_deadline(parent, t)
  check_parent(parent, "with_deadline")
  if type(t) ~= "number" then argerror(2, "with_deadline", "number", t) end
  local ctx = with_cancel(parent, t)
  return ctx, canceler(ctx)
end

-- with_timeout(parent, d) -> ctx, cancel: with_deadline(parent, now + d).
function context.with_timeout(parent, d)
  check_parent(parent, "with_timeout")
  if type(d) ~= "number" then argerror(2, "with_timeout", "number", d) end
  local ctx = with_cancel(parent, C.walltime() + d)
  return ctx, canceler(ctx)
end

-- with_value(parent, key, value) -> ctx whose value(key) is value. In the
-- VM that made it, key and value are the values given; on another
-- processor, copies of them (taken now).
function context.with_value(parent, key, val)
  check_parent(parent, "with_value")
  if key == nil then error("nil key", 2) end
  return with_value(parent, key, val)
end

-- after_func(ctx, f) -> stop: f runs in a goroutine of its own once ctx is
-- done. stop() prevents that and returns true, or returns false if f has
-- been started already (or stop was called before).
function context.after_func(ctx, f)
  check(ctx, 1, "after_func")
  if type(f) ~= "function" then argerror(2, "after_func", "function", f) end
  local once, stop_ch = sync.once(), lugo.chan()
  local ch = done(ctx)
  if ch then
    lugo.go(function()
      if lugo.select(recv(ch), recv(stop_ch)) ~= 1 then return end
      local run = false
      once:call(function() run = true end)
      if run then f() end
    end)
  end
  return function()
    local stopped = false
    once:call(function() stopped = true end)
    if stopped then stop_ch:close() end
    return stopped
  end
end

local methods = {}
Context.__index = methods

local names = { background = "context.Background", todo = "context.TODO" }
Context.__tostring = function(c)
  local k = kind(c)
  return names[k] or ("context." .. (k == "value" and "WithValue" or "WithCancel"))
end

-- done() -> a channel closed when the context is cancelled; nil for a
-- context that can never be cancelled (background, todo).
function methods.done(c)
  check(c, 1, "done")
  return done(c)
end

-- err() -> nil while not done, then context.canceled or
-- context.deadline_exceeded.
function methods.err(c)
  check(c, 1, "err")
  return err(c)
end

-- deadline() -> t, true (seconds since the epoch), or nil, false.
function methods.deadline(c)
  check(c, 1, "deadline")
  local t = deadline(c)
  return t, t ~= nil
end

-- value(key) -> the value of the nearest with_value for key, or nil.
function methods.value(c, key)
  check(c, 1, "value")
  return value(c, key)
end

return context
