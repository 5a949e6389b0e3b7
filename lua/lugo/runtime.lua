-- lugo.runtime: the scheduler's view of the program, as Go's runtime package.
local I = require "lugo.internal"

local C, core = I.C, I.core
local argerror = I.argerror

local runtime = {}

-- gosched(): let other goroutines run; this one continues soon after.
function runtime.gosched() core.gosched(false) end

-- goid(): the current goroutine's id (1 is the main goroutine; 0 outside).
function runtime.goid() return C.goid() end

function runtime.num_goroutine() return C.num_goroutine() end

-- gomaxprocs([n]): the number of processors; it is fixed for a run.
function runtime.gomaxprocs(n)
  local cur = C.gomaxprocs()
  if n ~= nil then
    if type(n) ~= "number" then argerror(1, "gomaxprocs", "number", n) end
    if n >= 1 and n ~= cur then
      error("runtime.gomaxprocs: the number of processors is fixed for a run (use lugo -p N)", 2)
    end
  end
  return cur
end

runtime.numcpu = core.numcpu

-- stack([all]): this goroutine's traceback, and with all, every goroutine's.
function runtime.stack(all) return core.stack(all) end

-- goroutine_dump() -> every goroutine of every processor, as kill -QUIT
-- prints them, without stopping the program (a processor running compiled
-- code is named, not shown). It waits in the blocking pool.
function runtime.goroutine_dump()
  local s, err = core.goroutine_dump()
  if s == I.ERR then error(err, 2) end
  return s
end

-- sched_stats() -> { gomaxprocs, idleprocs, spinningthreads, runqueue,
-- goroutines, runqueues = { per processor } }, LUGO_DEBUG=schedtrace's figures
runtime.sched_stats = core.sched_stats

-- memstats(): { alloc = bytes, by_processor = { bytes, ... }, goroutines = n }
runtime.memstats = core.memstats

function runtime.gc() collectgarbage("collect") end

return runtime
