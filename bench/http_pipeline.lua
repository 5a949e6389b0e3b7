-- wrk script for bench/http's pipelined runs, as TechEmpower's plaintext
-- test: every write carries DEPTH requests (default 16), and the next write
-- waits for all DEPTH responses.  wrk -s bench/http_pipeline.lua URL -- 16
-- wrk 4 counts each response as a request (response_complete: requests++),
-- so its Requests/sec are HTTP requests, not batches; its latency is per
-- batch (from the write to the last response).
local req

function init(args)
  local depth = tonumber(args[1]) or 16
  local r = {}
  for i = 1, depth do r[i] = wrk.format(nil) end
  req = table.concat(r)
end

function request()
  return req
end
