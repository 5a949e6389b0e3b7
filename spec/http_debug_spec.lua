-- http.debug_handler: Go's net/http/pprof for lugo, over a real server.
local lugo = require "lugo"
local http = require "lugo.http"
local net = require "lugo.net"
local time = require "lugo.time"
local runtime = require "lugo.runtime"
local helper = require "helper"

local HANG = 10 -- seconds; only against hangs
local assert_contains = helper.assert_contains

-- GET path with "Connection: close": status, headers (lower-case), body.
local function get(addr, path)
  local c = assert(net.dial("tcp", addr))
  c:set_deadline(time.now() + HANG)
  assert(c:write("GET " .. path .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
  local parts = {}
  while true do
    local s = c:read()
    if not s then break end
    parts[#parts + 1] = s
  end
  c:close()
  local raw = table.concat(parts)
  local head, body = raw:match("^(.-)\r\n\r\n(.*)$")
  assert(head, "no response head in: " .. raw)
  local status = tonumber(head:match("^HTTP/1%.1 (%d+)"))
  local headers = {}
  for k, v in head:gmatch("\r\n([^:]+): ([^\r]*)") do headers[k:lower()] = v end
  if headers["transfer-encoding"] == "chunked" then
    local out, pos = {}, 1
    while true do
      local size, at = body:match("^(%x+)\r\n()", pos)
      size = tonumber(size, 16)
      if not size or size == 0 then break end
      out[#out + 1] = body:sub(at, at + size - 1)
      pos = at + size + 2
    end
    body = table.concat(out)
  end
  return status, headers, body
end

describe("http.debug_handler", function()
  local srv, addr, served

  before_each(function()
    local mux = http.serve_mux()
    mux:handle("/debug/", http.debug_handler())
    local ln = assert(net.listen("tcp", "127.0.0.1:0"))
    addr = ln:addr()
    srv = http.server({ handler = mux })
    served = lugo.chan(1)
    lugo.go(function() served:send({ srv:serve(ln) }) end)
  end)

  after_each(function()
    srv:close()
    assert.are.same({ nil, "http: Server closed" }, helper.recv_within(served, HANG, "serve's return"))
  end)

  it("serves every goroutine of every processor, without stopping the program", function()
    local procs = runtime.gomaxprocs()
    local release, started = lugo.chan(), lugo.chan(procs)
    for _ = 1, procs do
      lugo.spawn(function(release, started)
        started:send(true)
        release:recv()
      end, release, started)
    end
    for i = 1, procs do helper.recv_within(started, HANG, "parked goroutine " .. i) end
    local status, headers, body = get(addr, "/debug/goroutine")
    assert.are.equal(200, status)
    assert.are.equal("text/plain; charset=utf-8", headers["content-type"])
    local parked = 0
    for _ in body:gmatch("%[chan receive%]") do parked = parked + 1 end
    assert.is_true(parked >= procs, body)
    assert_contains(body, "created by")
    assert_contains(body, "[syscall]") -- the handler's own goroutine, waiting for the dump
    release:close()
    -- twice in a row: the dump protocol is reset after each
    assert.are.equal(200, (get(addr, "/debug/goroutine")))
  end)

  it("serves memstats and the scheduler's counters as text and JSON", function()
    local status, headers, body = get(addr, "/debug/sched")
    assert.are.equal(200, status)
    assert.are.equal("text/plain; charset=utf-8", headers["content-type"])
    assert_contains(body, "gomaxprocs " .. runtime.gomaxprocs() .. "\n")
    assert_contains(body, "runqueues.1 ")
    status, headers, body = get(addr, "/debug/sched?format=json")
    assert.are.equal(200, status)
    assert.are.equal("application/json", headers["content-type"])
    assert.is_truthy(body:match('^{.*"gomaxprocs":' .. runtime.gomaxprocs() .. '[,}]'), body)
    assert.is_truthy(body:match('"runqueues":%[[%d,]+%]'), body)
    status, _, body = get(addr, "/debug/memstats?format=json")
    assert.are.equal(200, status)
    local alloc = tonumber(body:match('"alloc":(%d+)'))
    assert.is_true(alloc and alloc > 0, body)
    assert.is_truthy(body:match('"by_processor":%['), body)
  end)

  it("has an index, and 404 for what it does not know", function()
    local status, headers, body = get(addr, "/debug/")
    assert.are.equal(200, status)
    assert.are.equal("text/html; charset=utf-8", headers["content-type"])
    assert_contains(body, 'href="goroutine"')
    status, _, body = get(addr, "/debug/nothing")
    assert.are.equal(404, status)
    assert.are.equal("404 page not found\n", body)
  end)
end)
