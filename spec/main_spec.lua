-- lugo.main: the rock's way in, from plain luajit with lugo/core.so.
local helper = require "helper"

local luajit = helper.run_luajit -- plain luajit with the built lugo/core.so and lua/lugo

local describe_main = helper.has_plain_luajit() and describe or pending

describe_main("lugo.main from plain luajit", function()
  it("runs the main goroutine with its arguments until it returns", function()
    local status, out = luajit([[
      local lugo, time = require "lugo", require "lugo.time"
      lugo.main(function(a, b)
        local c = lugo.chan()
        lugo.go(function() time.sleep(0.01) c:send(a .. b) end)
        print(c:recv())
      end, "x", "y")
      print("after")
    ]])
    assert.are.equal(0, status)
    assert.are.equal("xy\ttrue\nafter\n", out)
  end)

  it("allows non-blocking channel use before main, and refuses to block there", function()
    local status, out = luajit([[
      local lugo = require "lugo"
      local c = lugo.chan(1)
      c:send(1)
      print(c:recv())
      print(pcall(c.recv, c))
    ]])
    assert.are.equal(0, status)
    assert.matches("^1\ttrue\nfalse\t.*cannot block outside a goroutine", out)
  end)

  it("can run again after main returned, dropping goroutines left blocked", function()
    local status, out = luajit([[
      local lugo = require "lugo"
      lugo.main(function() lugo.go(function() lugo.chan():recv() end) end)
      lugo.main(function() print(require("lugo.runtime").num_goroutine()) end)
    ]])
    assert.are.equal(0, status)
    assert.are.equal("1\n", out)
  end)

  it("ends the process with status 2 on a panic or a deadlock", function()
    local status, out = luajit([[
      local lugo = require "lugo"
      lugo.main(function() error("boom") end)
      print("not reached")
    ]])
    assert.are.equal(2, status)
    assert.matches("panic: .*boom", out)
    assert.not_matches("not reached", out)
    status, out = luajit([[
      local lugo = require "lugo"
      lugo.main(function() lugo.chan():recv() end)
    ]])
    assert.are.equal(2, status)
    assert.matches("all goroutines are asleep", out)
  end)

  it("is a plain call under the lugo host", function()
    local r = helper.run([[
      local lugo = require "lugo"
      print(lugo.main(function(x) return x * 2 end, 21))
    ]])
    assert.are.equal(0, r.status)
    assert.are.equal("42\n", r.stdout)
  end)
end)
