-- lugo.os: file access that does not hold up the processor. The calls run
-- in the blocking pool (runtime/syscall.c) while the goroutine waits.
local I = require "lugo.internal"

local core, argerror, raise, ERR = I.core, I.argerror, I.raise, I.ERR
local type, select = type, select

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

return os
