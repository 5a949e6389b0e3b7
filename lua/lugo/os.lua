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

return os
