-- Helpers shared by the specs: running the lugo host (or plain luajit) as a
-- child process, letting goroutines run, receiving with a timeout guard and
-- checking errors. lugo's modules are required when a helper is called, so
-- loading this file needs nothing but Lua and busted's luassert.
local luassert = require "luassert"

local helper = {}

-- The lugo binary under test (ctest sets LUGO_BIN).
function helper.lugo_bin()
  return os.getenv("LUGO_BIN") or "build/lugo"
end

-- A file's whole contents, "" if it cannot be read.
local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end
helper.slurp = slurp

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
helper.shell_quote = shell_quote

-- A new temporary file holding text; returns its name.
local function write_temp(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end
helper.write_temp = write_temp

-- Run a shell command line; returns its exit status.
local function shell_status(cmd)
  local p = assert(io.popen(cmd .. "; echo $?"))
  local status = tonumber(p:read("*a"):match("(%d+)%s*$"))
  p:close()
  return status
end

-- Run `code` (a Lua chunk) with the lugo host in a child process.
-- opts.args: extra script arguments; opts.flags: host options before the
-- script; opts.stdin: text for its standard input; opts.env: a prefix such
-- as "LUA_INIT='x=1'"; opts.ulimit_n: a descriptor limit.
-- Returns { status = exit status, stdout = ..., stderr = ... }.
function helper.run(code, opts)
  opts = opts or {}
  local script = write_temp(code)
  local out, err, inp = os.tmpname(), os.tmpname(), write_temp(opts.stdin or "")
  local args = {}
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = shell_quote(a) end
  local cmd = string.format("%s %s %s %s %s <%s >%s 2>%s",
    opts.env or "", shell_quote(helper.lugo_bin()), opts.flags or "",
    opts.no_script and "" or shell_quote(script), table.concat(args, " "), inp, out, err)
  if opts.ulimit_n then cmd = "ulimit -n " .. opts.ulimit_n .. "; " .. cmd end
  local status = shell_status(cmd)
  local r = { status = status, stdout = slurp(out), stderr = slurp(err), script = script }
  os.remove(out)
  os.remove(err)
  os.remove(inp)
  os.remove(script)
  return r
end

-- Start `code` with the lugo host in the background (opts as for run).
-- Returns { wait_line = function() -> its first line of stdout (waits up to
-- 30 s), kill = function() }.
function helper.start(code, opts)
  opts = opts or {}
  local script = write_temp(code)
  local out, err = os.tmpname(), os.tmpname()
  local args = {}
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = shell_quote(a) end
  local cmd = string.format("%s %s %s %s %s </dev/null >%s 2>%s & echo $!",
    opts.env or "", shell_quote(helper.lugo_bin()), opts.flags or "", shell_quote(script),
    table.concat(args, " "), out, err)
  local p = assert(io.popen(cmd))
  local pid = tonumber(p:read("*a"):match("%d+"))
  p:close()
  local child = {}
  function child.wait_line()
    for _ = 1, 3000 do
      local line = slurp(out):match("^([^\n]*)\n")
      if line then return line end
      os.execute("sleep 0.01")
    end
    error("the background child printed no line; stderr: " .. slurp(err))
  end
  function child.kill()
    os.execute("kill " .. pid .. " 2>/dev/null; wait " .. pid .. " 2>/dev/null")
    os.remove(out)
    os.remove(err)
    os.remove(script)
  end
  return child
end

-- Whether resident sizes tell what a process keeps: on Linux, and not
-- under a sanitizer (which keeps freed memory in quarantine).
function helper.rss_measurable()
  local statm = io.open("/proc/self/statm")
  if not statm then return false end
  statm:close()
  return os.getenv("LUGO_SANITIZED") ~= "1"
end

-- This process's resident size in bytes (Linux).
function helper.rss()
  local f = assert(io.open("/proc/self/statm"))
  local pages = tonumber(f:read("*l"):match("^%d+%s+(%d+)"))
  f:close()
  return pages * 4096
end

-- Whether a signal reaches a thread that runs Lua without calling out:
-- not under ThreadSanitizer, which holds a signal until the thread enters
-- an intercepted call, as a loop in LuaJIT's VM never does (a SIGURG
-- preemption of such a loop, or SIGQUIT's stop of it, never comes).
function helper.signals_reach_lua()
  return os.getenv("LUGO_TSAN") ~= "1"
end

-- Whether plain luajit can load the built lugo/core.so: ctest sets
-- LUGO_CORE_DIR, and plain luajit cannot load an ASan build of it.
function helper.has_plain_luajit()
  return os.getenv("LUGO_CORE_DIR") ~= nil and os.getenv("LUGO_SANITIZED") ~= "1"
end

-- Run `code` with plain luajit, using the built lugo/core.so and lua/lugo.
-- Returns the exit status and the output (stdout and stderr together).
function helper.run_luajit(code)
  local script, out = write_temp(code), os.tmpname()
  local status = shell_status(string.format("LUA_CPATH=%s LUA_PATH=%s luajit %s >%s 2>&1",
    shell_quote(os.getenv("LUGO_CORE_DIR") .. "/?.so;;"), shell_quote("lua/?.lua;lua/?/init.lua;;"),
    shell_quote(script), out))
  local output = slurp(out)
  os.remove(script)
  os.remove(out)
  return status, output
end

-- Assert that a helper.run result exited 0 having printed exactly stdout and
-- nothing on stderr.
function helper.assert_clean_run(r, stdout)
  luassert.are.equal("", r.stderr)
  luassert.are.equal(0, r.status)
  luassert.are.equal(stdout, r.stdout)
end

-- Assert that a helper.run result is Go's deadlock: status 2, nothing on
-- stdout, the fatal error on stderr.
function helper.assert_deadlock(r)
  luassert.are.equal(2, r.status)
  luassert.are.equal("", r.stdout)
  luassert.matches("fatal error: all goroutines are asleep - deadlock!", r.stderr, 1, true)
end

-- Seconds of monotonic-ish wall time for measuring durations in specs.
function helper.clock()
  return require("lugo.time").now()
end

-- The arguments as a table with their count in n (nils kept).
local function pack(...) return { n = select("#", ...), ... } end
helper.pack = pack

-- Let every goroutine that can run do so until it blocks: yield a few times,
-- then park on a short timer so that nothing but blocked goroutines is left.
function helper.settle()
  local gosched = require("lugo.runtime").gosched
  for _ = 1, 5 do gosched() end
  require("lugo.time").sleep(0.005)
end

-- Receive from ch, or give up after `limit` seconds: v, ok or nil, "timeout".
function helper.recv_within(ch, limit)
  local lugo = require "lugo"
  local i, v, ok = lugo.select(lugo.case.recv(ch), lugo.case.recv(require("lugo.time").after(limit)))
  if i == 1 then return v, ok end
  return nil, "timeout"
end

-- Receive from ch, failing the test instead of hanging if nothing arrives
-- within 2 s; `what` names the awaited value in the failure message.
function helper.recv(ch, what)
  local v, ok = helper.recv_within(ch, 2)
  luassert(ok ~= "timeout", "timed out waiting for " .. (what or "a value"))
  return v, ok
end

-- Whether ch has a value, a waiting sender or is closed right now (without
-- blocking); takes the value if so.
function helper.can_recv(ch)
  local lugo = require "lugo"
  return (lugo.select(lugo.case.recv(ch), lugo.case.default)) == 1
end

-- Whether a send of v on ch would proceed right now; sends v if so.
function helper.can_send(ch, v)
  local lugo = require "lugo"
  return (lugo.select(lugo.case.send(ch, v), lugo.case.default)) == 1
end

-- Run f(...) in a new goroutine under pcall; the channel returned receives
-- pack(pcall(f, ...)) ({ n = count, ok, results or error... }) when f ends.
function helper.go_pcall(f, ...)
  local lugo = require "lugo"
  local res = lugo.chan(1)
  lugo.go(function(...) res:send(pack(pcall(f, ...))) end, ...)
  return res
end

-- The error value that f(...) raises; fails the test if it raises none.
function helper.error_of(f, ...)
  local ok, err = pcall(f, ...)
  luassert.is_false(ok, "expected an error")
  return err
end

-- The error that f(...) raises, as a string; fails the test if it raises none.
function helper.error_message(f, ...)
  return tostring(helper.error_of(f, ...))
end

-- "file:line: " of the line calling here(), as Lua prefixes an error raised
-- for that line.
function helper.here()
  local info = debug.getinfo(2, "Sl")
  return info.short_src .. ":" .. info.currentline .. ": "
end

-- The state of each goroutine in a runtime.stack(true) trace, by id.
function helper.goroutine_states(trace)
  local t = {}
  for id, state in trace:gmatch("goroutine (%d+) %[([^%]]+)%]:") do t[tonumber(id)] = state end
  return t
end

-- Assert that the string haystack contains needle (plain text, no pattern).
function helper.assert_contains(haystack, needle)
  luassert(haystack:find(needle, 1, true), ("expected %q to contain %q"):format(haystack, needle))
end

-- busted's `finally`, from the environment busted gives the spec file that
-- (maybe through other helpers) called us.
local function busted_finally()
  for level = 1, 20 do
    local ok, env = pcall(getfenv, level)
    if not ok then break end
    if type(env) == "table" and env.finally then return env.finally end
  end
  error("helper: no busted `finally` in the callers' environments", 3)
end

-- Run fn when the test ends, after the cleanups registered after it. busted
-- keeps only a test's last `finally`: this one runs them all.
local cleanups
function helper.defer(fn)
  if not cleanups then
    cleanups = {}
    busted_finally()(function()
      local list = cleanups
      cleanups = nil
      for i = #list, 1, -1 do pcall(list[i]) end
    end)
  end
  cleanups[#cleanups + 1] = fn
end

-- A fresh directory for one test, removed with everything in it afterwards.
function helper.tempdir()
  local p = assert(io.popen("mktemp -d"))
  local dir = p:read("*l")
  p:close()
  assert(dir and #dir > 0, "mktemp -d failed")
  helper.defer(function() os.execute("rm -rf " .. shell_quote(dir)) end)
  return dir
end

-- The registry is per VM: this marks the VM that loaded this file (the test
-- body's), so that a goroutine can tell whether it runs there.
local HOME = "spec/helper.lua: the test body's VM"
debug.getregistry()[HOME] = true

-- Spawned code copies the functions it captures, and a field of a loaded
-- module travels by name: the other VM would require this file (and
-- busted's luassert) to find it, and its at_home would mark that VM home.
-- So the goroutines spawned below capture only these two, which are not
-- fields of helper; helper.at_home is for code that stays in its VM.
local function vm_pack(...) return { n = select("#", ...), ... } end
local function vm_at_home() return debug.getregistry()[HOME] == true end

-- Whether the calling goroutine runs in the test body's VM.
function helper.at_home() return vm_at_home() end

-- Spawn f(...) under pcall (an error escaping a spawned goroutine would end
-- the process). The channel returned receives pack(pcall(f, ...)) with
-- `home` set to whether it ran in the body's VM.
function helper.spawn_pcall(f, ...)
  local lugo = require "lugo"
  local res = lugo.chan(1)
  lugo.spawn(function(res, f, ...)
    local r = vm_pack(pcall(f, ...))
    r.home = vm_at_home()
    res:send(r)
  end, res, f, ...)
  return res
end

-- As spawn_pcall, but with more than one processor f runs in a VM other
-- than the body's: the body keeps its processor busy until another one has
-- taken the goroutine, and tries again should its own processor take it.
function helper.spawn_elsewhere(f, ...)
  local lugo, time = require "lugo", require "lugo.time"
  if require("lugo.runtime").gomaxprocs() == 1 then return helper.spawn_pcall(f, ...) end
  local res = lugo.chan(1)
  for _ = 1, 50 do
    local started = lugo.chan(1)
    lugo.spawn(function(started, res, f, ...)
      if vm_at_home() then
        started:send(false)
        return
      end
      started:send(true)
      local r = vm_pack(pcall(f, ...))
      r.home = false
      res:send(r)
    end, started, res, f, ...)
    local deadline = time.now() + 0.2
    while started:len() == 0 and time.now() < deadline do end
    if helper.recv(started, "a spawned goroutine to start") then return res end
  end
  error("no other processor ever took a spawned goroutine")
end

-- The results of a goroutine started by spawn_pcall or spawn_elsewhere,
-- failing the test if it raised or took more than 10 s; the last result is
-- whether it ran in the body's VM.
function helper.spawn_results(res, what)
  local r, ok = helper.recv_within(res, 10)
  luassert(ok ~= "timeout", "timed out waiting for " .. (what or "a spawned goroutine"))
  luassert(r[1], "the spawned goroutine raised: " .. tostring(r[2]))
  local t = { unpack(r, 2, r.n) }
  t[r.n] = r.home
  return unpack(t, 1, r.n)
end

return helper
