-- Multi-processor benchmarks (run with -p 2); each prints "name value unit".
-- The same work is done by bench/go/multi.go.
local lugo = require "lugo"
local sync = require "lugo.sync"
local time = require "lugo.time"
local runtime = require "lugo.runtime"

local which, N = arg[1], tonumber(arg[2])
local now = time.now

local function report(name, value, unit) print(string.format("%s %.1f %s", name, value, unit)) end

local bench = {}

-- Ping-pong between the main goroutine (processor 0) and a spawned one on
-- another processor: main keeps processor 0 busy until the spawned
-- goroutine has started, so another processor must have taken it.
function bench.xpingpong(n)
  local ping, pong, ready = lugo.chan(), lugo.chan(), lugo.chan(1)
  lugo.spawn(function(ping, pong, ready, n)
    ready:send(true)
    for _ = 1, n do pong:send(ping:recv()) end
  end, ping, pong, ready, n)
  while ready:len() == 0 do end
  ready:recv()
  local t = now()
  for i = 1, n do
    ping:send(i)
    pong:recv()
  end
  report("xpingpong", (now() - t) * 1e9 / n, "ns/roundtrip")
end

-- 1,000,000 small jobs over a buffered channel to 2 x GOMAXPROCS spawned
-- workers, results back over another.
function bench.fanout(n)
  local jobs, results = lugo.chan(1024), lugo.chan(1024)
  local workers = 2 * runtime.gomaxprocs()
  local wg = sync.waitgroup()
  local t = now()
  for _ = 1, workers do
    wg:add(1)
    lugo.spawn(function(jobs, results, wg)
      for x in jobs:range() do results:send(x * x % 7) end
      wg:done()
    end, jobs, results, wg)
  end
  lugo.go(function()
    for i = 1, n do jobs:send(i) end
    jobs:close()
  end)
  lugo.go(function()
    wg:wait()
    results:close()
  end)
  local sum = 0
  for r in results:range() do sum = sum + r end
  report("fanout", (now() - t) * 1e9 / n, "ns/job")
  assert(sum > 0)
end

-- A CPU-bound job split into GOMAXPROCS spawned parts: total wall time.
function bench.cpu(n)
  local procs = runtime.gomaxprocs()
  local out = lugo.chan(procs)
  local t = now()
  for p = 1, procs do
    lugo.spawn(function(from, to, out)
      local s = 0
      for k = from, to do s = s + (k * k) % 13 end
      out:send(s)
    end, math.floor((p - 1) * n / procs) + 1, math.floor(p * n / procs), out)
  end
  local sum = 0
  for _ = 1, procs do sum = sum + out:recv() end
  report("cpu", (now() - t) * 1e3, "ms")
  assert(sum > 0)
end

-- The concurrent prime sieve: a generator and one spawned filter per prime
-- found, chained by unbuffered channels; the first n primes. Every number
-- crosses the chain one hand-off at a time, wherever the filters landed.
function bench.sieve(n)
  local t = now()
  local ch = lugo.chan()
  lugo.spawn(function(out)
    local i = 2
    while true do
      out:send(i)
      i = i + 1
    end
  end, ch)
  local prime
  for _ = 1, n do
    prime = ch:recv()
    local out = lugo.chan()
    lugo.spawn(function(inp, out, p)
      while true do
        local v = inp:recv()
        if v % p ~= 0 then out:send(v) end
      end
    end, ch, out, prime)
    ch = out
  end
  report("sieve", (now() - t) * 1e3, "ms")
  assert(prime > n)
  os.exit(0) -- the filters block for good: do not wait for them
end

bench[which](N)
