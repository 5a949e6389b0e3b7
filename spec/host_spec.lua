local helper = require "helper"
local run = helper.run

describe("the lugo host", function()
  it("runs a script file with arguments in arg and ...", function()
    local r = run([[
      print(arg[0] ~= nil, arg[1], arg[2], select("#", ...), ...)
      print(arg[-1] ~= nil)
    ]], { args = { "a", "b c" } })
    assert.are.equal(0, r.status)
    assert.are.equal("true\ta\tb c\t2\ta\tb c\ntrue\n", r.stdout)
  end)

  it("runs -e chunks in order before the script", function()
    local r = run("print('script', x)", { flags = "-e 'x = 1' -e 'x = x + 1; print(\"e\", x)'" })
    assert.are.equal(0, r.status)
    assert.are.equal("e\t2\nscript\t2\n", r.stdout)
  end)

  it("runs -e alone without waiting for stdin", function()
    local r = run("", { flags = "-e 'print(42)'", no_script = true })
    assert.are.equal(0, r.status)
    assert.are.equal("42\n", r.stdout)
  end)

  it("requires libraries with -l", function()
    local r = run("print(package.loaded['lugo.time'] ~= nil)", { flags = "-l lugo.time" })
    assert.are.equal("true\n", r.stdout)
  end)

  it("prints its version with -v", function()
    local r = run("", { flags = "-v", no_script = true })
    assert.are.equal(0, r.status)
    assert.matches("^lugo %d+%.%d+%.%d+ %-%- LuaJIT", r.stdout)
  end)

  it("runs a script from stdin with -", function()
    local r = run("", { flags = "- x y", no_script = true, stdin = "print('stdin', ...)" })
    assert.are.equal(0, r.status)
    assert.are.equal("stdin\tx\ty\n", r.stdout)
  end)

  it("runs stdin when it is not a terminal and nothing else is asked", function()
    local r = run("", { no_script = true, stdin = "print(1 + 1)" })
    assert.are.equal("2\n", r.stdout)
  end)

  it("evaluates lines with -i", function()
    local r = run("", { flags = "-i", no_script = true, stdin = "1 + 2\nx = 5\nx * 2\n" })
    assert.are.equal(0, r.status)
    assert.matches("3\n", r.stdout)
    assert.matches("10\n", r.stdout)
  end)

  it("skips a #! line", function()
    local r = run("#!/usr/bin/env lugo\nprint('ok')")
    assert.are.equal("ok\n", r.stdout)
  end)

  it("runs LUA_INIT first", function()
    local r = run("print(init)", { env = "LUA_INIT='init = 7'" })
    assert.are.equal("7\n", r.stdout)
  end)

  it("finds the lugo modules with no environment set", function()
    local r = run([[
      local lugo, time = require "lugo", require "lugo.time"
      local sync, runtime = require "lugo.sync", require "lugo.runtime"
      print(type(lugo.go), type(time.sleep), type(sync.mutex), type(runtime.gosched))
    ]], { env = "env -i" })
    assert.are.equal(0, r.status)
    assert.are.equal("function\tfunction\tfunction\tfunction\n", r.stdout)
  end)

  it("honours LUA_PATH", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    local f = io.open(dir .. "/mymod.lua", "w")
    f:write("return { answer = 42 }")
    f:close()
    local r = run("print(require('mymod').answer)", { env = "LUA_PATH='" .. dir .. "/?.lua;;'" })
    os.execute("rm -rf " .. dir)
    assert.are.equal("42\n", r.stdout)
  end)

  it("reports a script that does not compile with status 1", function()
    local r = run("local = 1")
    assert.are.equal(1, r.status)
    assert.matches("^[^\n]*lugo: .*expected near", r.stderr)
  end)

  it("reports a missing script with status 1", function()
    local r = run("", { flags = "/nonexistent/script.lua", no_script = true })
    assert.are.equal(1, r.status)
    assert.matches("cannot open", r.stderr)
  end)

  it("rejects an unknown option with usage and status 1", function()
    local r = run("", { flags = "-Z", no_script = true })
    assert.are.equal(1, r.status)
    assert.matches("usage:", r.stderr)
  end)
end)

describe("program lifetime", function()
  it("exits 0 when main returns, even with goroutines blocked", function()
    local r = run([[
      local lugo = require "lugo"
      local c = lugo.chan()
      for i = 1, 10 do lugo.go(function() c:recv() end) end
      lugo.go(function() lugo.select() end)
      require("lugo.runtime").gosched()
      print("main done")
    ]])
    helper.assert_clean_run(r, "main done\n")
  end)

  it("exits 0 when main returns with goroutines not yet started", function()
    local r = run([[
      local lugo = require "lugo"
      for i = 1, 5 do lugo.go(function() print("never") end) end
    ]])
    assert.are.equal(0, r.status)
    assert.are.equal("", r.stdout)
  end)

  it("panics with exit status 2 when an error escapes a goroutine", function()
    local r = run([[
      local lugo = require "lugo"
      local function explode() error("boom") end
      lugo.go(function() explode() end)
      require("lugo.time").sleep(10)
    ]])
    assert.are.equal(2, r.status)
    assert.matches("^panic: [^\n]*: boom\n\ngoroutine 2 %[running%]:\n", r.stderr)
    assert.matches("in function 'explode'", r.stderr)
  end)

  it("ends a panic's traceback with the line that created the goroutine", function()
    local r = run([[
      local lugo = require "lugo"
      local function handler(req) return req.user.name end
      local function worker() handler({}) end
      local function start()
        lugo.go(worker)
      end
      start()
      require("lugo.time").sleep(10)
    ]])
    assert.are.equal(2, r.status)
    local script = r.script:gsub("%p", "%%%0")
    assert.matches("\n\t" .. script .. ":2: in function 'handler'\n", r.stderr)
    assert.matches("\n\t" .. script .. ":3: in function <" .. script .. ":3>\n", r.stderr)
    assert.matches("\ncreated by function 'start' in goroutine 1\n\t" .. script .. ":5\n$", r.stderr)
  end)

  it("says which goroutine and line spawned a goroutine that panics", function()
    local r = run([[
      local lugo = require "lugo"
      lugo.spawn(function(x) error("spawned " .. x) end, 7)
      require("lugo.time").sleep(10)
    ]])
    assert.are.equal(2, r.status)
    local script = r.script:gsub("%p", "%%%0")
    assert.matches("^panic: " .. script .. ":2: spawned 7\n\ngoroutine %d+ %[running%]:\n", r.stderr)
    assert.matches("\ncreated by main chunk in goroutine 1\n\t" .. script .. ":2\n$", r.stderr)
  end)

  -- The main chunk (and -e, -l) behaves as under luajit: its error is
  -- reported as "progname: message" and the traceback, with status 1.
  it("ends with status 1 and luajit's report when an error escapes the main chunk", function()
    local r = run([[
      local function inner() error("main failed") end
      inner()
    ]])
    assert.are.equal(1, r.status)
    local script = r.script:gsub("%p", "%%%0")
    local bin = helper.lugo_bin():gsub("%p", "%%%0")
    assert.matches("^" .. bin .. ": " .. script .. ":1: main failed\nstack traceback:\n\t%[C%]: in function 'error'\n\t"
      .. script .. ":1: in function 'inner'\n\t" .. script .. ":2: in main chunk\n\t%[C%]: in %?\n$", r.stderr)
  end)

  it("reports an error escaping -e as luajit does", function()
    local r = run("", { flags = "-e " .. helper.shell_quote("error('from e')"), no_script = true })
    assert.are.equal(1, r.status)
    assert.matches(": %(command line%):1: from e\nstack traceback:\n", r.stderr)
  end)

  it("reports a non-string error from the main chunk as luajit does", function()
    local r = run("error(setmetatable({}, { __tostring = function() return 'custom' end }))")
    assert.are.equal(1, r.status)
    assert.matches(": custom\nstack traceback:\n", r.stderr)
    r = run("error({})")
    assert.are.equal(1, r.status)
    assert.matches(": %(error object is not a string%)\n$", r.stderr)
    r = run("error()") -- luajit says nothing: busted fails a suite this way
    assert.are.equal(1, r.status)
    assert.are.equal("", r.stderr)
  end)

  it("reports a panic whose error's __tostring raises or returns no string", function()
    for _, tostr in ipairs({ "function() error('boom in tostring') end", "function() return nil end" }) do
      local r = run([[
        require("lugo").go(function() error(setmetatable({}, { __tostring = ]] .. tostr .. [[ })) end)
        require("lugo.time").sleep(10)
      ]])
      assert.are.equal(2, r.status)
      assert.matches("^panic: %(error object is a table value%)\n\ngoroutine 2 %[running%]:\n", r.stderr)
    end
  end)

  it("still panics with status 2 for a non-string error escaping another goroutine", function()
    local r = run([[
      local lugo = require "lugo"
      lugo.go(function() error(setmetatable({}, { __tostring = function() return 'custom' end })) end)
      require("lugo.time").sleep(10)
    ]])
    assert.are.equal(2, r.status)
    assert.matches("^panic: custom\n", r.stderr)
    r = run("require('lugo').go(function() error() end) require('lugo.time').sleep(10)")
    assert.are.equal(2, r.status)
    assert.matches("^panic: nil\n", r.stderr)
  end)

  it("stops other goroutines at the first panic", function()
    local r = run([[
      local lugo = require "lugo"
      local time = require "lugo.time"
      lugo.go(function() time.sleep(0.2) print("too late") end)
      lugo.go(function() error("first") end)
      time.sleep(1)
    ]])
    assert.are.equal(2, r.status)
    assert.are.equal("", r.stdout)
  end)

  it("reports a deadlock with every goroutine's state and exits 2", function()
    local r = run([[
      local lugo = require "lugo"
      local sync = require "lugo.sync"
      local c = lugo.chan()
      local mu = sync.mutex()
      mu:lock()
      lugo.go(function() c:send(1) end)
      lugo.go(function() mu:lock() end)
      local wg = sync.waitgroup()
      wg:add(1)
      wg:wait()
    ]])
    assert.are.equal(2, r.status)
    assert.matches("^fatal error: all goroutines are asleep %- deadlock!\n", r.stderr)
    assert.matches("goroutine 1 %[sync.WaitGroup.Wait%]:", r.stderr)
    assert.matches("goroutine 2 %[chan send%]:", r.stderr)
    assert.matches("goroutine 3 %[sync.Mutex.Lock%]:", r.stderr)
  end)

  it("reports a deadlock of the main goroutine alone", function()
    local r = run("require('lugo').chan():recv()")
    assert.are.equal(2, r.status)
    assert.matches("goroutine 1 %[chan receive%]:", r.stderr)
  end)

  it("does not report a deadlock while a timer can still wake someone", function()
    local r = run([[
      local lugo, time = require "lugo", require "lugo.time"
      local c = lugo.chan()
      time.after_func(0.05, function() c:send("woken") end)
      print((c:recv()))
    ]])
    assert.are.equal(0, r.status)
    assert.are.equal("woken\n", r.stdout)
  end)

  it("exits with os.exit's status, running no more goroutines", function()
    local r = run([[
      local lugo, time = require "lugo", require "lugo.time"
      lugo.go(function() time.sleep(0.1) print("too late") end)
      io.stdout:write("bye\n")
      os.exit(3)
    ]])
    assert.are.equal(3, r.status)
    assert.are.equal("bye\n", r.stdout)
    assert.are.equal(1, run("os.exit(false)").status)
    assert.are.equal(0, run("os.exit(true)").status)
  end)

  it("exits from os.exit called inside a goroutine", function()
    local r = run([[
      local lugo = require "lugo"
      lugo.go(function() os.exit(7) end)
      lugo.chan():recv()
    ]])
    assert.are.equal(7, r.status)
  end)

  it("exits non-zero when a script raises nil (how busted fails on 5.1)", function()
    assert.are_not.equal(0, run("error()").status)
  end)

  -- exit_while_spinning.lua: sysmon stopped preempting once the exit began,
  -- so a processor running an interpreted loop never left it.
  local it_signals = helper.signals_reach_lua() and it or pending -- see helper.lua
  it_signals("ends at once on os.exit while goroutines spin in interpreted loops on every processor", function()
    for _, how in ipairs({ "exit", "panic", "return" }) do
      local r = run([[
        local lugo, time, runtime = require "lugo", require "lugo.time", require "lugo.runtime"
        for _ = 1, runtime.gomaxprocs() + 1 do
          lugo.spawn(function() jit.off(true, true) local x = 0 while true do x = x + 1 end end)
        end
        time.sleep(0.1)
        local how = ...
        if how == "return" then return end
        lugo.spawn(function(how)
          if how == "panic" then error("boom") end
          os.exit(3)
        end, how)
        time.sleep(30)
      ]], { args = { how }, env = "timeout 20" })
      assert.are.equal(how == "exit" and 3 or how == "panic" and 2 or 0, r.status, how .. ": " .. r.stderr)
    end
  end)

  it_signals("ends on os.exit even while another processor runs compiled code", function()
    local r = run([[
      local lugo = require "lugo"
      local started = lugo.chan(1)
      lugo.spawn(function(started)
        started:send(true)
        local x = 0
        while true do x = x + 1 end -- compiled: never reaches a safe point
      end, started)
      -- Keep this processor busy (len is no preemption point), so that the
      -- loop starts on the other one.
      while started:len() == 0 do end
      os.exit(4)
    ]], { flags = "-p 2", env = "timeout 20" })
    assert.are.equal(4, r.status)
  end)

  it("writes each print from many processors as one whole line", function()
    local r = run([[
      local lugo, sync = require "lugo", require "lugo.sync"
      local wg = sync.waitgroup()
      for w = 1, 4 do
        wg:add(1)
        lugo.spawn(function(w, wg)
          for i = 1, 5000 do print("worker", w, "line", i, "end") end
          wg:done()
        end, w, wg)
      end
      wg:wait()
    ]], { flags = "-p 4" })
    assert.are.equal(0, r.status)
    local n = 0
    for line in r.stdout:gmatch("[^\n]*\n") do
      n = n + 1
      if not line:match("^worker\t%d\tline\t%d+\tend\n$") then error("torn line: " .. line) end
    end
    assert.are.equal(20000, n)
  end)

  it("prints as luajit does: tostring on each argument, tabs between", function()
    local r = run([[print(1, nil, true, "s", 2.5, setmetatable({}, { __tostring = function() return "T" end })) print()]])
    assert.are.equal("1\tnil\ttrue\ts\t2.5\tT\n\n", r.stdout)
    -- a first argument that fills print's buffer exactly
    r = run([[print(string.rep("a", 8192), "b")]])
    assert.are.equal(string.rep("a", 8192) .. "\tb\n", r.stdout)
    r = run([[print(setmetatable({}, { __tostring = function() return {} end }))]])
    assert.are.equal(1, r.status)
    assert.matches("'tostring' must return a string to 'print'", r.stderr, 1, true)
  end)

  -- A write to a stdout whose reader is gone ends the process with SIGPIPE,
  -- as in Go (the runtime ignores SIGPIPE for sockets, so this is checked).
  it("dies of SIGPIPE on a write to a broken stdout, as luajit and Go do", function()
    for _, write in ipairs({ "print(i)", "io.write(i, '\\n')", "io.stdout:write(i, '\\n')" }) do
      local status_file = os.tmpname()
      local code = "for i = 1, 3e6 do " .. write .. " end io.stderr:write('finished\\n')"
      local cmd = string.format("(%s -e %s 2>/dev/null; echo $? >%s) | head -1 >/dev/null",
        helper.shell_quote(helper.lugo_bin()), helper.shell_quote(code), helper.shell_quote(status_file))
      assert.is_true(os.execute(cmd) ~= nil)
      local status = tonumber(helper.slurp(status_file):match("%d+"))
      os.remove(status_file)
      assert.are.equal(141, status, write)
    end
  end)

  it("gets EPIPE, and goes on, writing to any other broken pipe, as Go does", function()
    local r = run([[
      local p = io.popen("true", "w")
      require("lugo.time").sleep(0.2) -- the reader has gone
      print(p:write(string.rep("x", 100000)))
      print("alive")
    ]])
    assert.are.equal(0, r.status)
    assert.are.equal("nil\tBroken pipe\t32\nalive\n", r.stdout)
  end)

  it("keeps the io functions' own error messages", function()
    local r = run("io.write({})")
    assert.are.equal(1, r.status)
    assert.matches(":1: bad argument #1 to 'write' %(string expected, got table%)", r.stderr)
  end)
end)

-- The LuaJIT this runs on raises a finalizer's error where the collection
-- that ran it was: in a goroutine, that goroutine gets it (as under luajit);
-- in the scheduler, between goroutines, it is reported and the program goes
-- on (as newer LuaJITs do), instead of ending as an unprotected error.
describe("finalizers (__gc)", function()
  it("raise their error in the goroutine whose collection ran them", function()
    local r = run([[
      local armed = false -- finalizers that run while the loop allocates do nothing
      for i = 1, 100 do
        local u = newproxy(true)
        getmetatable(u).__gc = function() if armed then error("gc boom " .. i) end end
      end
      armed = true
      local ok, err = pcall(collectgarbage)
      armed = false -- the finalizers still pending (the error stopped them) stay quiet
      print(ok, (err:gsub("^.-gc boom %d+$", "gc boom")))
    ]])
    assert.are.equal("false\tgc boom\n", r.stdout:sub(1, #"false\tgc boom\n"))
  end)

  it("that block raise cannot block here", function()
    local r = run([[
      local time = require "lugo.time"
      local armed = false
      for i = 1, 10 do
        local u = newproxy(true)
        getmetatable(u).__gc = function() if armed then time.sleep(0.001) end end
      end
      armed = true
      local ok, err = pcall(collectgarbage)
      armed = false
      print(ok, err:match("cannot block here: [^;]*; Lua cannot yield across a C call") ~= nil)
    ]])
    assert.are.equal("false\ttrue\n", r.stdout:sub(1, #"false\ttrue\n"))
  end)

  it("are reported with their traceback when the scheduler ran them, and the program goes on", function()
    local r = run([[
      local lugo, time, runtime = require "lugo", require "lugo.time", require "lugo.runtime"
      local function f() time.sleep(0.01) end
      for round = 1, 20 do
        for i = 1, 200 do
          local u = newproxy(true)
          -- Only between goroutines (goid 0): the main goroutine must not
          -- get the error in this test.
          getmetatable(u).__gc = function()
            if runtime.goid() == 0 then error("scheduler gc boom") end
          end
          local v = newproxy(true)
          getmetatable(v).__gc = function()
            if runtime.goid() == 0 then time.sleep(0.001) end
          end
        end
        for i = 1, 3000 do lugo.go(f) end -- their coroutines are made between goroutines
        time.sleep(0.02)
      end
      print("survived")
    ]])
    assert.are.equal(0, r.status)
    assert.are.equal("survived\n", r.stdout)
    assert.matches("lugo: error in a finalizer %(__gc%) run by the scheduler: [^\n]*: scheduler gc boom\n" ..
      "stack traceback:\n\t%[C%]: in function 'error'\n\t[^\n]+: in function <", r.stderr)
    assert.matches("run by the scheduler: [^\n]*cannot block here: inside a finalizer %(__gc%) run by the scheduler", r.stderr)
  end)

  it("that raise while a spawned goroutine's arguments are unpacked do not end the program", function()
    local r = run([[
      local lugo, time, runtime = require "lugo", require "lugo.time", require "lugo.runtime"
      local function f(a, b) time.sleep(0.01) end
      for round = 1, 10 do
        for i = 1, 200 do
          local u = newproxy(true)
          getmetatable(u).__gc = function() if runtime.goid() == 0 then error("gc boom") end end
        end
        for i = 1, 3000 do lugo.spawn(f, 1, 2) end
        time.sleep(0.03)
      end
      print("survived")
    ]], { flags = "-p 1" })
    assert.are.equal(0, r.status)
    assert.are.equal("survived\n", r.stdout)
  end)
end)

-- ../shared/repro/busted_fail: busted fails a suite on 5.1 by raising nil
-- from its main chunk; under lugo that ended with "panic: nil" and a
-- traceback through busted.
describe("busted under lugo", function()
  it("ends a failing suite as under luajit: its report and status 1, nothing else", function()
    local dir = helper.tempdir()
    local f = assert(io.open(dir .. "/plain_fail_spec.lua", "w"))
    f:write('describe("a", function() it("fails", function() assert.are.equal(1, 2) end) end)\n')
    f:close()
    local function busted(lua)
      local out = os.tmpname()
      local p = assert(io.popen(string.format("busted --lua=%s -o plainTerminal %s >%s 2>&1; echo $?",
        helper.shell_quote(lua), helper.shell_quote(dir), helper.shell_quote(out))))
      local status = tonumber(p:read("*a"):match("(%d+)%s*$"))
      p:close()
      local text = helper.slurp(out):gsub("%d+%.%d+ seconds", "N seconds")
      os.remove(out)
      return status, text
    end
    local status, text = busted(helper.lugo_bin())
    assert.are.equal(1, status)
    assert.matches("0 successes / 1 failure / 0 errors / 0 pending", text, 1, true)
    assert.is_nil(text:find("panic", 1, true), text)
    if helper.has_plain_luajit() then
      local lstatus, ltext = busted("luajit")
      assert.are.equal(lstatus, status)
      assert.are.equal(ltext, text)
    end
  end)
end)
