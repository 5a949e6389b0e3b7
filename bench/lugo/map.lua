-- sync.map benchmarks (run with -p 2), the same work as bench/go/map.go;
-- each prints "name value unit".
local lugo = require "lugo"
local sync = require "lugo.sync"
local time = require "lugo.time"

local which, N = arg[1], tonumber(arg[2])
local now = time.now

local function report(name, value, unit) print(string.format("%s %.1f %s", name, value, unit)) end

local function rss()
  local f = assert(io.open("/proc/self/statm"))
  local _, res = f:read("*n", "*n")
  f:close()
  return res * 4096
end

local bench = {}

-- 90% load, 10% store on 10,000 keys of 16 bytes, from 2 spawned
-- goroutines, n operations each.
function bench.mixed(n)
  local m = sync.map()
  for i = 0, 9999 do m:store(string.format("key-%012d", i), i) end
  local done = lugo.chan(2)
  local t = now()
  for w = 1, 2 do
    lugo.spawn(function(m, n, seed, done)
      local keys = {}
      for i = 0, 9999 do keys[i + 1] = string.format("key-%012d", i) end
      math.randomseed(seed)
      local random, load, store = math.random, m.load, m.store
      for i = 1, n do
        local k = keys[random(10000)]
        if random(10) == 1 then store(m, k, i) else load(m, k) end
      end
      done:send(true)
    end, m, n, w, done)
  end
  done:recv(); done:recv()
  report("mixed", 2 * n / (now() - t), "ops/s")
end

-- One hot key incremented from 2 spawned goroutines, n times each.
function bench.incr(n)
  local m = sync.map()
  local done = lugo.chan(2)
  local t = now()
  for _ = 1, 2 do
    lugo.spawn(function(m, n, done)
      local incr = m.incr
      for _ = 1, n do incr(m, "hot", 1, 0) end
      done:send(true)
    end, m, n, done)
  end
  done:recv(); done:recv()
  local dt = now() - t
  assert(m:load("hot") == 2 * n, "lost increments")
  report("incr", dt * 1e9 / (2 * n), "ns/op")
end

-- n integer keys into one map: the total, and the slowest single insert.
function bench.insert(n)
  local m = sync.map()
  local store, worst = m.store, 0
  local t = now()
  for i = 0, n - 1 do
    local t0 = now()
    store(m, i, i)
    local d = now() - t0
    if d > worst then worst = d end
  end
  report("insert", (now() - t) * 1e3, "ms")
  report("insert_worst", worst * 1e6, "us")
end

-- The machine's own stalls: the insert loop with the insert replaced by
-- arithmetic of about its cost (bench/go/map.go's stall).
function bench.stall(n)
  local worst, x = 0, 0
  for i = 0, n - 1 do
    local t0 = now()
    for j = 1, 300 do x = x + j * i end
    local d = now() - t0
    if d > worst then worst = d end
  end
  report("stall_worst", worst * 1e6, "us")
  return x
end

-- Memory per entry with n entries: 16-byte string keys, number values.
function bench.bytes(n)
  collectgarbage()
  local before = rss()
  local m = sync.map()
  for i = 0, n - 1 do m:store(string.format("key-%012d", i), i) end
  collectgarbage()
  report("bytes", (rss() - before) / n, "B/entry")
  assert(m:len() == n)
end

bench[which](N)
