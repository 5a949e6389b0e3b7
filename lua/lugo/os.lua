-- lugo.os: file access that does not hold up the processor. The calls run
-- in the blocking pool (runtime/syscall.c) while the goroutine waits.
local I = require "lugo.internal"

local core, argerror, raise, ERR = I.core, I.argerror, I.raise, I.ERR
local type, select, error, getmetatable = type, select, error, getmetatable

local os = {}

local function done(...)
  if (...) == ERR then raise(nil, (select(2, ...))) end
  return ...
end

-- read_file(path) -> the file's contents, or nil and an error such as
-- "open /x: no such file or directory".
function os.read_file(path)
  if type(path) ~= "string" then argerror(1, "read_file", "string", path) end
  return done(core.read_file(path))
end

-- write_file(path, data) -> true, or nil and an error; creates or truncates.
function os.write_file(path, data)
  if type(path) ~= "string" then argerror(1, "write_file", "string", path) end
  if type(data) ~= "string" then argerror(2, "write_file", "string", data) end
  return done(core.write_file(path, data))
end

local floor = math.floor
local setmetatable, match = setmetatable, string.match

-- A byte offset or count: a non-negative integer.
local function check_count(v, n, fname)
  if type(v) ~= "number" then argerror(n, fname, "number", v, 4) end
  if v < 0 or v ~= floor(v) or v > 2 ^ 53 then
    error(string.format("bad argument #%d to '%s' (%s must be a non-negative integer)", n, fname,
      n == 2 and "offset" or "length"), 3)
  end
end

-- The last element of a path, as Go's filepath.Base.
local function base(path)
  path = match(path, "^(.-)/*$")
  if path == "" then return "/" end
  return match(path, "([^/]*)$")
end

-- A stat result gets its name (Go's FileInfo.Name).
local function named(info, path)
  info.name = base(path)
  return info
end

-- stat(path) -> { name, size, mtime, is_dir, is_regular, mode }, or nil
-- and an error such as "stat /x: no such file or directory". Follows
-- symbolic links, as Go's os.Stat; mtime is in seconds (fractional), mode
-- the permission bits.
function os.stat(path)
  if type(path) ~= "string" then argerror(1, "stat", "string", path) end
  local info, err = done(core.stat(path))
  if not info then return nil, err end
  return named(info, path)
end

-- read_dir(path) -> the directory's entries sorted by name, each
-- { name, is_dir, size } ("." and ".." left out; a link is not followed),
-- or nil and an error ("open /x: ...", "readdirent /x: not a directory").
function os.read_dir(path)
  if type(path) ~= "string" then argerror(1, "read_dir", "string", path) end
  return done(core.read_dir(path))
end

-- read_range(path, offset, length) -> up to length bytes from offset:
-- fewer at the end of the file, "" past it; or nil and an error.
function os.read_range(path, offset, length)
  if type(path) ~= "string" then argerror(1, "read_range", "string", path) end
  check_count(offset, 2, "read_range")
  check_count(length, 3, "read_range")
  return done(core.read_range(path, offset, length))
end

-- A Root (Go's os.Root): names are resolved beneath its directory, and
-- neither "..", an absolute name nor a symbolic link (absolute, or
-- relative and climbing out) leaves it: "openat ../x: path escapes from
-- parent". The directory is found again by its name at every call.
local Root = {}
Root.__index = Root

local function check_root(root, fname)
  if getmetatable(root) ~= Root then argerror(1, fname, "os.Root", root, 4) end
end

function Root.name(root)
  check_root(root, "name")
  return root._dir
end

function Root.stat(root, name)
  check_root(root, "stat")
  if type(name) ~= "string" then argerror(1, "stat", "string", name) end
  local info, err = done(core.stat(name, root._dir))
  if not info then return nil, err end
  return named(info, name)
end

function Root.read_dir(root, name)
  check_root(root, "read_dir")
  if type(name) ~= "string" then argerror(1, "read_dir", "string", name) end
  return done(core.read_dir(name, root._dir))
end

function Root.read_range(root, name, offset, length)
  check_root(root, "read_range")
  if type(name) ~= "string" then argerror(1, "read_range", "string", name) end
  check_count(offset, 2, "read_range")
  check_count(length, 3, "read_range")
  return done(core.read_range(name, offset, length, root._dir))
end

-- open_root(dir) -> a Root for the directory dir, or nil and an error:
-- "open /x: no such file or directory", "open /x: not a directory".
function os.open_root(dir)
  if type(dir) ~= "string" then argerror(1, "open_root", "string", dir) end
  local info, err = done(core.stat(dir))
  if not info then return nil, "open" .. err:sub(5) end -- "stat <dir>: ..." as Go's OpenRoot says it
  if not info.is_dir then return nil, "open " .. dir .. ": not a directory" end
  return setmetatable({ _dir = dir }, Root)
end

-- os.signal: Go's os/signal. The handler and the relay are in C
-- (runtime/sigqueue.c): a signal sets a bit, sysmon sends its name
-- ("SIGTERM") to every channel that asked for it, never blocking: a full
-- channel misses it, so give notify a buffered channel, as in Go.
local signal = {}
os.signal = signal

local Chan, Context = I.mt.channel, I.mt.context
local check_signal = core.signal_check
local c_notify, c_stop, c_ignore, c_reset, c_ignored =
  core.signal_notify, core.signal_stop, core.signal_ignore, core.signal_reset, core.signal_ignored

-- The numbers of the signals named in ..., the first being argument #first
-- of fname; a misuse is raised at the API function's caller.
local function numbers(fname, first, ...)
  local n = select("#", ...)
  local t = {}
  for i = 1, n do
    local v = (select(i, ...))
    if type(v) ~= "string" and type(v) ~= "number" then
      argerror(first + i - 1, fname, "signal name or number", v, 4)
    end
    local sig, err = check_signal(v, fname)
    if not sig then error(err, 3) end
    t[i] = sig
  end
  return t, n
end

local unpack = unpack

-- notify(ch, sig...): relay the signals (names such as "SIGTERM", or
-- numbers; none: every signal that can be relayed) to ch, as their names.
-- Again with the same channel adds signals. While any channel wants a
-- signal, its default action (SIGINT and SIGTERM end the process) is off.
function signal.notify(ch, ...)
  if getmetatable(ch) ~= Chan then argerror(1, "notify", "channel", ch) end
  local t, n = numbers("notify", 2, ...)
  local ok, err = c_notify(ch, unpack(t, 1, n))
  if ok == false then error(err, 2) end
end

-- stop(ch): no signal is sent to ch once stop returns; a signal no channel
-- wants any more gets back its default action.
function signal.stop(ch)
  if getmetatable(ch) ~= Chan then argerror(1, "stop", "channel", ch) end
  c_stop(ch)
end

-- ignore(sig...): the signals (none: all) are ignored, and leave every
-- channel that wanted them.
function signal.ignore(...)
  local t, n = numbers("ignore", 1, ...)
  c_ignore(unpack(t, 1, n))
end

-- reset(sig...): the signals (none: all) leave every channel and get back
-- the behaviour they had before the program changed it.
function signal.reset(...)
  local t, n = numbers("reset", 1, ...)
  c_reset(unpack(t, 1, n))
end

-- ignored(sig) -> whether sig is ignored now (by ignore, or inherited).
function signal.ignored(sig)
  if type(sig) ~= "string" and type(sig) ~= "number" then argerror(1, "ignored", "signal name or number", sig) end
  local n, err = check_signal(sig, "ignored")
  if not n then error(err, 2) end
  return c_ignored(n)
end

-- notify_context(parent, sig...) -> ctx, stop: ctx is cancelled ("context
-- canceled") when one of the signals comes, or parent ends; stop() cancels
-- ctx and unregisters, so that the signals get their default action back
-- (a second Ctrl-C then kills). Go's NotifyContext, with its goroutine.
function signal.notify_context(parent, ...)
  if parent == nil then error("cannot create context from nil parent", 2) end
  if getmetatable(parent) ~= Context then argerror(1, "notify_context", "context", parent) end
  local t, n = numbers("notify_context", 2, ...)
  local lugo, context = require "lugo", require "lugo.context"
  local ctx, cancel = context.with_cancel(parent)
  local ch = lugo.chan(1)
  c_notify(ch, unpack(t, 1, n))
  if not ctx:err() then
    local recv = lugo.case.recv
    lugo.go(function()
      lugo.select(recv(ch), recv(ctx:done()))
      cancel()
    end)
  end
  return ctx, function()
    cancel()
    c_stop(ch)
  end
end

return os
