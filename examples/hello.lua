-- Goroutines, channels, select and a timer: the first lugo program.
-- Run it with `build/lugo examples/hello.lua`.
local lugo = require "lugo"
local time = require "lugo.time"
local sync = require "lugo.sync"

local jobs, results = lugo.chan(16), lugo.chan(16)
local wg = sync.waitgroup()

-- Three workers square numbers; each job takes a little while.
for worker = 1, 3 do
  wg:add(1)
  lugo.go(function()
    for n in jobs:range() do
      time.sleep(0.01)
      results:send({ worker = worker, n = n, square = n * n })
    end
    wg:done()
  end)
end

lugo.go(function()
  for n = 1, 9 do jobs:send(n) end
  jobs:close()
  wg:wait()
  results:close()
end)

-- Collect results until the channel closes, with a deadline beside it.
local sum, deadline = 0, time.after(5)
while true do
  local i, r, ok = lugo.select(lugo.case.recv(results), lugo.case.recv(deadline))
  if i == 2 then error("timed out") end
  if not ok then break end
  sum = sum + r.square
end
print(string.format("sum of squares 1..9 = %d", sum))
