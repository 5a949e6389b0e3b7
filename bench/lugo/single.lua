-- One-processor benchmarks; each prints "name value unit". The same work is
-- done by bench/go/single.go; bench/run prints them side by side.
local lugo = require "lugo"
local sync = require "lugo.sync"
local time = require "lugo.time"

local which, N = arg[1], tonumber(arg[2])
local go, chan, select, case = lugo.go, lugo.chan, lugo.select, lugo.case
local now = time.now

local function report(name, value, unit) print(string.format("%s %.1f %s", name, value, unit)) end

local function rss()
  local f = io.open("/proc/self/statm")
  local _, res = f:read("*n", "*n")
  f:close()
  return res * 4096
end

local bench = {}

function bench.pingpong(n)
  local ping, pong = chan(), chan()
  go(function()
    for _ = 1, n do pong:send(ping:recv()) end
  end)
  local t = now()
  for i = 1, n do
    ping:send(i)
    pong:recv()
  end
  report("pingpong", (now() - t) * 1e9 / n, "ns/roundtrip")
end

function bench.buffered(n)
  local c = chan(128)
  go(function()
    for i = 1, n do c:send(i) end
    c:close()
  end)
  local t = now()
  local sum = 0
  for v in c:range() do sum = sum + v end
  assert(sum == n * (n + 1) / 2)
  report("buffered", (now() - t) * 1e9 / n, "ns/item")
end

function bench.spawn(n)
  local wg = sync.waitgroup()
  local t = now()
  for _ = 1, n do
    wg:add(1)
    go(function() wg:done() end)
  end
  wg:wait()
  report("spawn", (now() - t) * 1e9 / n, "ns/goroutine")
end

function bench.select(n)
  local a, b = chan(1), chan(1)
  a:send(1)
  b:send(1)
  local ra, rb = case.recv(a), case.recv(b)
  local t = now()
  for _ = 1, n do
    local i = select(case.recv(a), case.recv(b))
    if i == 1 then a:send(1) else b:send(1) end
  end
  report("select", (now() - t) * 1e9 / n, "ns/select")
  local _ = ra, rb
end

function bench.mutex(n)
  local mu, wg = sync.mutex(), sync.waitgroup()
  local counter = 0
  local t = now()
  for _ = 1, 4 do
    wg:add(1)
    go(function()
      for _ = 1, n do
        mu:lock()
        counter = counter + 1
        mu:unlock()
      end
      wg:done()
    end)
  end
  wg:wait()
  assert(counter == 4 * n)
  report("mutex", (now() - t) * 1e9 / (4 * n), "ns/lock")
end

function bench.sleepers(n)
  local wg = sync.waitgroup()
  local t = now()
  for _ = 1, n do
    wg:add(1)
    go(function()
      time.sleep(0.010)
      wg:done()
    end)
  end
  wg:wait()
  report("sleepers", (now() - t) * 1e3, "ms")
end

function bench.parked(n)
  collectgarbage()
  collectgarbage()
  local before = rss()
  local c, wg = chan(), sync.waitgroup()
  for _ = 1, n do
    wg:add(1)
    go(function()
      wg:done()
      c:recv()
    end)
  end
  wg:wait()
  collectgarbage()
  local after = rss()
  report("parked", (after - before) / n, "bytes/goroutine")
  report("parked_rss", after / 1048576, "MiB")
  c:close()
end

bench[which](N)
