-- The lugo side of bench/http's client benchmark, the twin of
-- `bench/go/httpclient load`: G goroutines (default 100) each make R GETs
-- (default 1000) of URL over keep-alive connections, and it prints
-- reqs_per_sec. Usage: lugo -p 2 bench/lugo/httpclient.lua URL [G [R]]
--
-- The goroutines are spawned (lugo.spawn), so the scheduler spreads them
-- over the processors. A client is a Lua object of one processor's VM: the
-- goroutines that land on a processor share that processor's client (made
-- by the first of them, kept in its VM's package.loaded), whose transport
-- keeps up to G idle connections to the host, as Go's does with
-- MaxIdleConnsPerHost = G. No more than G connections are ever busy, so a
-- pool that works never needs more than G connections in all.
local lugo, sync, time = require "lugo", require "lugo.sync", require "lugo.time"
require "lugo.http" -- fail here, before timing, when there is none

local url = assert(arg[1], "usage: httpclient.lua URL [G [R]]")
local gs, reqs = tonumber(arg[2]) or 100, tonumber(arg[3]) or 1000

local wg = sync.waitgroup()
local failures = lugo.chan(gs)  -- each goroutine's count of failed requests
local clients = lugo.chan(gs)   -- one item per client made

local function worker(url, reqs, gs, wg, failures, clients)
  local http = require "lugo.http"
  local client = package.loaded["bench.httpclient.client"]
  if not client then
    client = http.client { transport = http.transport { max_idle_conns_per_host = gs } }
    package.loaded["bench.httpclient.client"] = client
    clients:send(1)
  end
  local failed, err = 0, nil
  for _ = 1, reqs do
    local res, e = client:get(url)
    if res then
      local body, e2 = res:body()
      if res.status ~= 200 or body ~= "hello\n" then
        failed, err = failed + 1, e2 or ("status " .. tostring(res.status) .. ", body " .. tostring(body))
      end
    else
      failed, err = failed + 1, e
    end
  end
  if err then io.stderr:write("httpclient.lua: ", tostring(err), "\n") end
  failures:send(failed)
  wg:done()
end

local t0 = time.now()
wg:add(gs)
for _ = 1, gs do lugo.spawn(worker, url, reqs, gs, wg, failures, clients) end
wg:wait()
local elapsed = time.now() - t0

local failed = 0
for _ = 1, gs do failed = failed + failures:recv() end
if failed > 0 then
  io.stderr:write(string.format("httpclient.lua: %d of %d requests failed\n", failed, gs * reqs))
  os.exit(1)
end
print(string.format("reqs_per_sec %.0f", gs * reqs / elapsed))
print(string.format("seconds %.3f", elapsed))
print(string.format("clients %d", clients:len()))
