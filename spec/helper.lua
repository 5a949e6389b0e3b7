-- Helpers shared by the specs: running the lugo host as a child process
-- (for exit statuses, panics and deadlocks) and small timing utilities.
local helper = {}

-- The lugo binary under test (ctest sets LUGO_BIN).
function helper.lugo_bin()
  return os.getenv("LUGO_BIN") or "build/lugo"
end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
helper.shell_quote = shell_quote

-- Run `code` (a Lua chunk) with the lugo host in a child process.
-- opts.args: extra script arguments; opts.flags: host options before the
-- script; opts.stdin: text for its standard input; opts.env: a prefix such
-- as "LUA_INIT='x=1'"; opts.ulimit_n: a descriptor limit.
-- Returns { status = exit status, stdout = ..., stderr = ... }.
function helper.run(code, opts)
  opts = opts or {}
  local script = os.tmpname()
  local f = assert(io.open(script, "wb"))
  f:write(code)
  f:close()
  local out, err, inp = os.tmpname(), os.tmpname(), os.tmpname()
  f = assert(io.open(inp, "wb"))
  f:write(opts.stdin or "")
  f:close()
  local args = {}
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = shell_quote(a) end
  local cmd = string.format("%s %s %s %s %s <%s >%s 2>%s; echo $?",
    opts.env or "", shell_quote(helper.lugo_bin()), opts.flags or "",
    opts.no_script and "" or shell_quote(script), table.concat(args, " "), inp, out, err)
  if opts.ulimit_n then cmd = "ulimit -n " .. opts.ulimit_n .. "; " .. cmd end
  local p = assert(io.popen(cmd))
  local status = tonumber(p:read("*a"):match("(%d+)%s*$"))
  p:close()
  local r = { status = status, stdout = slurp(out), stderr = slurp(err), script = script }
  os.remove(out)
  os.remove(err)
  os.remove(inp)
  os.remove(script)
  return r
end

-- Seconds of monotonic-ish wall time for measuring durations in specs.
function helper.clock()
  return require("lugo.time").now()
end

return helper
