-- lugo.http.fs: http.file_server(dir) and http.serve_file(w, r, path), Go's
-- http.FileServer and http.ServeFile. A real lugo server on 127.0.0.1:0
-- serves a temporary directory; curl (run in the background, so that no
-- processor waits on it) and raw requests over lugo.net check what comes
-- back, byte for byte. Each `it` body runs in the main goroutine.
local lugo = require "lugo"
local http = require "lugo.http"
local net = require "lugo.net"
local time = require "lugo.time"
local los = require "lugo.os"
local helper = require "helper"

local q = helper.shell_quote
local HANG = 15 -- seconds; only against hangs

local function sh(cmd)
  local ok = os.execute(cmd)
  assert(ok == 0 or ok == true, "command failed: " .. cmd)
end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function spit(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

-- A fresh directory named after os.tmpname, world-readable (the
-- permission test serves it as another user).
local function make_tempdir()
  local d = os.tmpname()
  os.remove(d)
  sh("mkdir -m 755 " .. q(d))
  return d
end

local function is_root()
  local p = assert(io.popen("id -u"))
  local uid = p:read("*l")
  p:close()
  return uid == "0"
end

-- Wait (sleeping, so the servers keep running) until path exists.
local function wait_file(path, limit)
  local deadline = time.now() + (limit or HANG)
  while time.now() < deadline do
    local f = io.open(path, "rb")
    if f then
      f:close()
      return true
    end
    time.sleep(0.005)
  end
  return false
end

-- ---------------------------------------------------------------- clients

local scratch -- a directory for curl's output files
local ncurl = 0

-- Start curl in the background: args are curl's, url is quoted here.
-- Returns a function that waits for it and gives { code = status number,
-- headers = { lower-case name -> value }, raw_headers, body }.
local function curl_start(args, url)
  ncurl = ncurl + 1
  local base = scratch .. "/c" .. ncurl
  local cmd = string.format("curl -s --path-as-is --max-time 10 -o %s -D %s -w '%%{http_code}' %s %s >%s 2>%s",
    q(base .. ".body"), q(base .. ".head"), args or "", q(url), q(base .. ".code"), q(base .. ".err"))
  -- .done appears whole (a rename), once curl's files are complete
  sh("{ " .. cmd .. "; echo $? >" .. q(base .. ".rc") .. "; mv " .. q(base .. ".rc") .. " " .. q(base .. ".done") ..
    "; } </dev/null >/dev/null 2>&1 &")
  return function()
    assert(wait_file(base .. ".done"), "curl did not finish: " .. url)
    local raw_headers = slurp(base .. ".head") or ""
    local headers = {}
    for line in raw_headers:gmatch("[^\r\n]+") do
      local k, v = line:match("^([^:]+):%s*(.-)%s*$")
      if k then headers[k:lower()] = v end
    end
    return {
      code = tonumber(slurp(base .. ".code")),
      headers = headers,
      raw_headers = raw_headers,
      body = slurp(base .. ".body") or "",
      exit = tonumber(slurp(base .. ".done")),
      body_file = base .. ".body",
    }
  end
end

local function curl(args, url)
  return curl_start(args, url)()
end

-- Send raw request bytes and read the whole answer (the request should
-- say "Connection: close").
local function raw(addr, request)
  local c = assert(net.dial("tcp", addr))
  c:set_deadline(time.now() + HANG)
  assert(c:write(request))
  local parts = {}
  while true do
    local s = c:read(65536)
    if not s then break end
    parts[#parts + 1] = s
  end
  c:close()
  return table.concat(parts)
end

-- The status, the headers (lower-case names) and the bytes after the head.
local function parse_response(s)
  local head_end = assert(s:find("\r\n\r\n", 1, true), "no end of head in: " .. s)
  local head, rest = s:sub(1, head_end - 1), s:sub(head_end + 4)
  local code = tonumber(head:match("^HTTP/1%.%d (%d%d%d)"))
  local headers = {}
  for line in head:gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:]+):%s*(.-)%s*$")
    if k then headers[k:lower()] = v end
  end
  return code, headers, rest
end

-- ---------------------------------------------------------------- the tree

local top, www
local outside_secret = "OUTSIDE SECRET: must never be served\n"
local hello = "hello, world\n"
local MTIME_TOUCH = "2015-10-21 07:28:00 UTC"
local MTIME_HTTP = "Wed, 21 Oct 2015 07:28:00 GMT"

local function build_tree()
  top = make_tempdir()
  www = top .. "/www"
  sh("mkdir -m 755 " .. q(www) .. " " .. q(www .. "/dir") .. " " .. q(www .. "/list") .. " " ..
    q(www .. "/list/sub") .. " " .. q(www .. "/empty_dir"))
  spit(top .. "/outside.txt", outside_secret)
  spit(www .. "/hello.txt", hello)
  spit(www .. "/empty.txt", "")
  spit(www .. "/dir/index.html", "<h1>index</h1>\n")
  spit(www .. "/list/a b.txt", "space")
  spit(www .. "/list/q?#.txt", "query")
  spit(www .. "/list/<x>&'\".txt", "markup")
  spit(www .. "/list/c:d", "colon")
  spit(www .. "/list/\195\169.txt", "utf8")
  local typed = { "page.html", "style.css", "app.js", "data.json", "img.png", "pic.jpg", "anim.gif", "logo.svg",
    "mod.wasm", "doc.pdf", "feed.xml", "favicon.ico", "photo.webp", "movie.mp4", "notes.txt", "LOUD.TXT" }
  for _, name in ipairs(typed) do spit(www .. "/" .. name, "content of " .. name) end
  spit(www .. "/sniff_html", "  <!DOCTYPE HTML><html><body>hi</body></html>")
  spit(www .. "/sniff_bin", "\0\1\2\3binary")
  spit(www .. "/sniff_text", "just some text")
  spit(www .. "/empty.dat", "") -- .dat: no type, and nothing to sniff: text
  -- random bytes after a NUL: random first bytes were sniffed as gzip
  -- (1f 8b) once in a CI run; a NUL matches no signature and is binary
  sh("{ printf '\\000'; head -c 1048575 /dev/urandom; } > " .. q(www .. "/big.bin"))
  sh("cd " .. q(www) .. " && ln -s hello.txt link_in && ln -s ../outside.txt link_out && " ..
    "ln -s /etc/passwd link_abs && ln -s .. link_up && ln -s dir link_dir && mkfifo fifo")
  sh("touch -h -d " .. q(MTIME_TOUCH) .. " " .. q(www .. "/hello.txt") .. " " .. q(www .. "/list"))
  scratch = make_tempdir()
end

local function remove_tree()
  if top then os.execute("rm -rf " .. q(top)) end
  if scratch then os.execute("rm -rf " .. q(scratch)) end
  top, www, scratch = nil, nil, nil
end

-- ---------------------------------------------------------------- servers

local servers = {}

-- Serve handler on 127.0.0.1:0 in this process; returns "http://host:port".
local function start_server(handler)
  local ln = assert(net.listen("tcp", "127.0.0.1:0"))
  local srv = http.server { handler = handler }
  local done = lugo.chan(1)
  lugo.go(function() done:send({ srv:serve(ln) }) end)
  servers[#servers + 1] = { srv = srv, done = done }
  return "http://" .. ln:addr(), ln:addr()
end

local function stop_servers()
  for _, s in ipairs(servers) do
    s.srv:close()
    helper.recv_within(s.done, HANG)
  end
  servers = {}
end

describe("http.file_server", function()
  local base, addr, base_nolist, base_servefile

  lazy_setup(function()
    build_tree()
    base, addr = start_server(http.file_server(www))
    base_nolist = start_server(http.file_server(www, { listing = false }))
    base_servefile = start_server(function(w, r)
      if r.path:match("^/dirpath/?$") then return http.serve_file(w, r, www .. "/dir") end
      return http.serve_file(w, r, www .. "/hello.txt")
    end)
  end)

  lazy_teardown(function()
    stop_servers()
    remove_tree()
  end)

  describe("serves files", function()
    it("with the exact body, type, length, Last-Modified and Accept-Ranges", function()
      local r = curl("", base .. "/hello.txt")
      assert.are.equal(0, r.exit)
      assert.are.equal(200, r.code)
      assert.are.equal(hello, r.body)
      assert.are.equal("text/plain; charset=utf-8", r.headers["content-type"])
      assert.are.equal(tostring(#hello), r.headers["content-length"])
      assert.are.equal(MTIME_HTTP, r.headers["last-modified"])
      assert.are.equal("bytes", r.headers["accept-ranges"])
    end)

    it("types files by extension (Go's table, any case)", function()
      local want = {
        ["page.html"] = "text/html; charset=utf-8", ["style.css"] = "text/css; charset=utf-8",
        ["app.js"] = "text/javascript; charset=utf-8", ["data.json"] = "application/json",
        ["img.png"] = "image/png", ["pic.jpg"] = "image/jpeg", ["anim.gif"] = "image/gif",
        ["logo.svg"] = "image/svg+xml", ["mod.wasm"] = "application/wasm", ["doc.pdf"] = "application/pdf",
        ["feed.xml"] = "text/xml; charset=utf-8", ["favicon.ico"] = "image/vnd.microsoft.icon",
        ["photo.webp"] = "image/webp", ["movie.mp4"] = "video/mp4", ["notes.txt"] = "text/plain; charset=utf-8",
        ["LOUD.TXT"] = "text/plain; charset=utf-8",
      }
      local waits = {}
      for name in pairs(want) do waits[name] = curl_start("", base .. "/" .. name) end
      for name, ctype in pairs(want) do
        local r = waits[name]()
        assert.are.equal(200, r.code)
        assert.are.equal(ctype, r.headers["content-type"], name)
        assert.are.equal("content of " .. name, r.body)
      end
    end)

    it("sniffs the type of a file without a known extension", function()
      local r = curl("", base .. "/sniff_html")
      assert.are.equal("text/html; charset=utf-8", r.headers["content-type"])
      assert.are.equal("  <!DOCTYPE HTML><html><body>hi</body></html>", r.body)
      r = curl("", base .. "/sniff_bin")
      assert.are.equal("application/octet-stream", r.headers["content-type"])
      assert.are.equal("\0\1\2\3binary", r.body)
      r = curl("", base .. "/sniff_text")
      assert.are.equal("text/plain; charset=utf-8", r.headers["content-type"])
      r = curl("", base .. "/empty.dat")
      assert.are.equal(200, r.code)
      assert.are.equal("text/plain; charset=utf-8", r.headers["content-type"])
      assert.are.equal("0", r.headers["content-length"])
    end)

    it("serves an empty file with Content-Length 0", function()
      local r = curl("", base .. "/empty.txt")
      assert.are.equal(200, r.code)
      assert.are.equal("0", r.headers["content-length"])
      assert.are.equal("", r.body)
    end)

    it("serves a 1 MiB file byte-exact, with its length declared", function()
      local r = curl("", base .. "/big.bin")
      assert.are.equal(0, r.exit)
      assert.are.equal(200, r.code)
      assert.are.equal("1048576", r.headers["content-length"])
      assert.are.equal("application/octet-stream", r.headers["content-type"])
      assert.is_nil(r.headers["transfer-encoding"])
      assert.are.equal(1048576, #r.body)
      assert.is_true(r.body == slurp(www .. "/big.bin"))
    end)

    it("serves the 1 MiB file to many clients at once, each byte-exact", function()
      local want = slurp(www .. "/big.bin")
      local waits = {}
      for i = 1, 8 do waits[i] = curl_start("", base .. "/big.bin") end
      for i = 1, 8 do
        local r = waits[i]()
        assert.are.equal(200, r.code)
        assert.is_true(r.body == want, "download " .. i .. " differs")
      end
    end)

    it("follows a link that stays inside the directory", function()
      local r = curl("", base .. "/link_in")
      assert.are.equal(200, r.code)
      assert.are.equal(hello, r.body)
      r = curl("", base .. "/link_dir/")
      assert.are.equal(200, r.code)
      assert.are.equal("<h1>index</h1>\n", r.body)
    end)

    it("answers any method as Go does (POST gets the file)", function()
      local r = curl("-X POST -d x=1", base .. "/hello.txt")
      assert.are.equal(200, r.code)
      assert.are.equal(hello, r.body)
    end)

    it("answers 404 'page not found' for a missing file or a path through a file", function()
      for _, path in ipairs({ "/missing.txt", "/hello.txt/x", "/no/such/dir/" }) do
        local r = curl("", base .. path)
        assert.are.equal(404, r.code, path)
        assert.are.equal("404 page not found\n", r.body)
        assert.are.equal("text/plain; charset=utf-8", r.headers["content-type"])
        assert.are.equal("nosniff", r.headers["x-content-type-options"])
        assert.is_nil(r.headers["last-modified"])
      end
    end)
  end)

  describe("HEAD", function()
    it("sends the headers a GET would, and no body", function()
      local s = raw(addr, "HEAD /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      local code, headers, rest = parse_response(s)
      assert.are.equal(200, code)
      assert.are.equal(tostring(#hello), headers["content-length"])
      assert.are.equal("text/plain; charset=utf-8", headers["content-type"])
      assert.are.equal(MTIME_HTTP, headers["last-modified"])
      assert.are.equal("", rest)
    end)

    it("of the 1 MiB file: its length, no body", function()
      local s = raw(addr, "HEAD /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      local code, headers, rest = parse_response(s)
      assert.are.equal(200, code)
      assert.are.equal("1048576", headers["content-length"])
      assert.are.equal("", rest)
    end)

    it("keeps a connection usable: HEAD then GET on one connection", function()
      local s = raw(addr, "HEAD /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n" ..
        "GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      local code, _, rest = parse_response(s)
      assert.are.equal(200, code)
      local code2, headers2, body2 = parse_response(rest)
      assert.are.equal(200, code2)
      assert.are.equal(tostring(#hello), headers2["content-length"])
      assert.are.equal(hello, body2)
    end)
  end)

  describe("directories", function()
    it("serve their index.html", function()
      local r = curl("", base .. "/dir/")
      assert.are.equal(200, r.code)
      assert.are.equal("<h1>index</h1>\n", r.body)
      assert.are.equal("text/html; charset=utf-8", r.headers["content-type"])
    end)

    it("redirect /dir to dir/ (relative, query kept)", function()
      local r = curl("", base .. "/dir")
      assert.are.equal(301, r.code)
      assert.are.equal("dir/", r.headers["location"])
      r = curl("", base .. "/dir?a=1&b=2")
      assert.are.equal(301, r.code)
      assert.are.equal("dir/?a=1&b=2", r.headers["location"])
      r = curl("-L", base .. "/dir")
      assert.are.equal(200, r.code)
      assert.are.equal("<h1>index</h1>\n", r.body)
    end)

    it("redirect .../index.html to ./ and /file/ to ../file", function()
      local r = curl("", base .. "/dir/index.html")
      assert.are.equal(301, r.code)
      assert.are.equal("./", r.headers["location"])
      r = curl("", base .. "/hello.txt/")
      assert.are.equal(301, r.code)
      assert.are.equal("../hello.txt", r.headers["location"])
      r = curl("-L", base .. "/hello.txt/")
      assert.are.equal(200, r.code)
      assert.are.equal(hello, r.body)
    end)

    it("are listed in Go's <pre> format, names escaped in links and in text", function()
      local r = curl("", base .. "/list/")
      assert.are.equal(200, r.code)
      assert.are.equal("text/html; charset=utf-8", r.headers["content-type"])
      assert.are.equal(MTIME_HTTP, r.headers["last-modified"])
      assert.are.equal(table.concat({
        '<!doctype html>\n',
        '<meta name="viewport" content="width=device-width">\n',
        '<pre>\n',
        '<a href="%3Cx%3E&%27%22.txt">&lt;x&gt;&amp;&#39;&#34;.txt</a>\n',
        '<a href="a%20b.txt">a b.txt</a>\n',
        '<a href="./c:d">c:d</a>\n',
        '<a href="q%3F%23.txt">q?#.txt</a>\n',
        '<a href="sub/">sub/</a>\n',
        '<a href="%C3%A9.txt">\195\169.txt</a>\n',
        '</pre>\n',
      }), r.body)
      r = curl("", base .. "/empty_dir/")
      assert.are.equal(200, r.code)
      assert.are.equal('<!doctype html>\n<meta name="viewport" content="width=device-width">\n<pre>\n</pre>\n', r.body)
    end)

    it("listed files can be fetched through their escaped links", function()
      local r = curl("", base .. "/list/q%3F%23.txt")
      assert.are.equal(200, r.code)
      assert.are.equal("query", r.body)
      r = curl("", base .. "/list/%3Cx%3E&%27%22.txt")
      assert.are.equal("markup", r.body)
      r = curl("", base .. "/list/%C3%A9.txt")
      assert.are.equal("utf8", r.body)
    end)

    it("are not listed with listing = false, but still serve their index.html", function()
      local r = curl("", base_nolist .. "/list/")
      assert.are.equal(404, r.code)
      assert.are.equal("404 page not found\n", r.body)
      r = curl("", base_nolist .. "/dir/")
      assert.are.equal(200, r.code)
      assert.are.equal("<h1>index</h1>\n", r.body)
    end)

    it("answer If-Modified-Since with 304", function()
      local r = curl("-H " .. q("If-Modified-Since: " .. MTIME_HTTP), base .. "/list/")
      assert.are.equal(304, r.code)
      assert.are.equal("", r.body)
    end)
  end)

  describe("never serves anything outside the directory", function()
    local function refused(r, path)
      assert.is_true(r.code == 404 or r.code == 400, path .. " answered " .. tostring(r.code))
      assert.is_nil(r.body:find("OUTSIDE SECRET", 1, true), path)
      assert.is_nil(r.body:find("root:", 1, true), path)
    end

    it("cleans '..' out of the path: the file outside is not found", function()
      for _, path in ipairs({ "/../outside.txt", "/dir/../../outside.txt", "/../../../../etc/passwd",
        "/%2e%2e/outside.txt", "/%2E%2E/outside.txt", "/..%2foutside.txt", "/%2e%2e%2foutside.txt",
        "/dir/%2e%2e/%2e%2e/outside.txt" }) do
        refused(curl("", base .. path), path)
      end
    end)

    it("refuses a request target without a leading slash", function()
      local s = raw(addr, "GET ../outside.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      local code, _, body = parse_response(s)
      assert.is_true(code == 404 or code == 400, "answered " .. tostring(code))
      assert.is_nil(body:find("OUTSIDE SECRET", 1, true))
    end)

    it("refuses links that lead out (relative, absolute, through a linked directory) with 403", function()
      for _, path in ipairs({ "/link_out", "/link_abs", "/link_up/outside.txt", "/link_up/www/hello.txt" }) do
        local r = curl("", base .. path)
        assert.are.equal(403, r.code, path)
        assert.are.equal("403 Forbidden\n", r.body)
      end
      local r = curl("", base .. "/link_up/")
      assert.are.equal(403, r.code)
      assert.is_nil(r.body:find("outside.txt", 1, true))
    end)

    it("refuses a NUL byte in the path with 400", function()
      local r = curl("", base .. "/hello.txt%00.png")
      assert.are.equal(400, r.code)
      assert.are.equal("invalid URL path\n", r.body)
    end)

    it("answers 403 for a FIFO at once, without waiting on it", function()
      local t0 = time.now()
      local r = curl("", base .. "/fifo")
      assert.are.equal(403, r.code)
      assert.is_true(time.now() - t0 < 5)
    end)
  end)

  describe("conditional requests", function()
    it("answer If-Modified-Since at or after the modification time with 304 and no body", function()
      for _, date in ipairs({ MTIME_HTTP, "Wednesday, 21-Oct-15 07:28:00 GMT", "Wed Oct 21 07:28:00 2015",
        "Thu, 22 Oct 2015 00:00:00 GMT" }) do
        local s = raw(addr, "GET /hello.txt HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: " .. date ..
          "\r\nConnection: close\r\n\r\n")
        local code, headers, rest = parse_response(s)
        assert.are.equal(304, code, date)
        assert.are.equal("", rest)
        assert.is_nil(headers["content-type"])
        assert.is_nil(headers["content-length"])
        assert.are.equal(MTIME_HTTP, headers["last-modified"])
      end
    end)

    it("serve the file when it changed since, or the date cannot be read", function()
      for _, date in ipairs({ "Wed, 21 Oct 2015 07:27:59 GMT", "yesterday", "Wed, 21 Oct 2015 07:28:00 UTC" }) do
        local r = curl("-H " .. q("If-Modified-Since: " .. date), base .. "/hello.txt")
        assert.are.equal(200, r.code, date)
        assert.are.equal(hello, r.body)
      end
    end)

    it("answer If-Unmodified-Since before the modification time with 412", function()
      local r = curl("-H " .. q("If-Unmodified-Since: Tue, 20 Oct 2015 00:00:00 GMT"), base .. "/hello.txt")
      assert.are.equal(412, r.code)
      assert.are.equal("", r.body)
      r = curl("-H " .. q("If-Unmodified-Since: " .. MTIME_HTTP), base .. "/hello.txt")
      assert.are.equal(200, r.code)
    end)

    it("answer If-None-Match: * with 304, and If-Match of an unknown tag with 412", function()
      local r = curl("-H 'If-None-Match: *'", base .. "/hello.txt")
      assert.are.equal(304, r.code)
      r = curl("-H 'If-Match: \"abc\"'", base .. "/hello.txt")
      assert.are.equal(412, r.code)
    end)
  end)

  describe("range requests", function()
    it("serve one range with 206, Content-Range and the exact bytes", function()
      local cases = {
        { "0-4", "hello", "bytes 0-4/13" },
        { "7-", "world\n", "bytes 7-12/13" },
        { "-6", "world\n", "bytes 7-12/13" },
        { "5-1000", ", world\n", "bytes 5-12/13" },
        { "-1000", hello, "bytes 0-12/13" },
        { "12-12", "\n", "bytes 12-12/13" },
      }
      for _, c in ipairs(cases) do
        local r = curl("-H " .. q("Range: bytes=" .. c[1]), base .. "/hello.txt")
        assert.are.equal(206, r.code, c[1])
        assert.are.equal(c[2], r.body, c[1])
        assert.are.equal(c[3], r.headers["content-range"], c[1])
        assert.are.equal(tostring(#c[2]), r.headers["content-length"], c[1])
        assert.are.equal("text/plain; charset=utf-8", r.headers["content-type"])
      end
    end)

    it("serve a range of the 1 MiB file across chunk boundaries, byte-exact", function()
      local want = slurp(www .. "/big.bin")
      for _, c in ipairs({ { 65000, 200000 }, { 1, 1048575 }, { 131072, 131072 + 65535 }, { 1048000, 1048575 } }) do
        local r = curl("-r " .. c[1] .. "-" .. c[2], base .. "/big.bin")
        assert.are.equal(206, r.code)
        assert.are.equal(string.format("bytes %d-%d/1048576", c[1], c[2]), r.headers["content-range"])
        assert.are.equal(tostring(c[2] - c[1] + 1), r.headers["content-length"])
        assert.is_true(r.body == want:sub(c[1] + 1, c[2] + 1), "bytes " .. c[1] .. "-" .. c[2])
      end
    end)

    it("answer a range past the end with 416 and 'bytes */size'", function()
      local r = curl("-H 'Range: bytes=100-200'", base .. "/hello.txt")
      assert.are.equal(416, r.code)
      assert.are.equal("bytes */13", r.headers["content-range"])
      assert.are.equal("invalid range: failed to overlap\n", r.body)
      assert.is_nil(r.headers["last-modified"])
      r = curl("-H 'Range: bytes=13-'", base .. "/hello.txt")
      assert.are.equal(416, r.code)
      assert.are.equal("bytes */13", r.headers["content-range"])
    end)

    it("answer a malformed range with 416 'invalid range'", function()
      for _, spec in ipairs({ "bytes=x-y", "bytes=5-2", "items=0-1", "bytes=--1", "bytes=1" }) do
        local r = curl("-H " .. q("Range: " .. spec), base .. "/hello.txt")
        assert.are.equal(416, r.code, spec)
        assert.are.equal("invalid range\n", r.body, spec)
        assert.is_nil(r.headers["content-range"])
      end
    end)

    it("serve an empty file whole whatever the range", function()
      local r = curl("-H 'Range: bytes=0-10'", base .. "/empty.txt")
      assert.are.equal(200, r.code)
      assert.are.equal("", r.body)
    end)

    it("serve several ranges as multipart/byteranges of the declared length", function()
      local r = curl("-H 'Range: bytes=0-1,7-8,-1'", base .. "/hello.txt")
      assert.are.equal(0, r.exit)
      assert.are.equal(206, r.code)
      local boundary = r.headers["content-type"]:match("^multipart/byteranges; boundary=(%x+)$")
      assert.is_string(boundary)
      assert.are.equal(60, #boundary)
      local function part(range, body)
        return "--" .. boundary .. "\r\nContent-Range: bytes " .. range ..
          "/13\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" .. body
      end
      local want = part("0-1", "he") .. "\r\n" .. part("7-8", "wo") .. "\r\n" .. part("12-12", "\n") ..
        "\r\n--" .. boundary .. "--\r\n"
      assert.are.equal(want, r.body)
      assert.are.equal(tostring(#want), r.headers["content-length"])
    end)

    it("serve the whole file when the ranges add up to more than it", function()
      local r = curl("-H 'Range: bytes=0-10,2-12'", base .. "/hello.txt")
      assert.are.equal(200, r.code)
      assert.are.equal(hello, r.body)
    end)

    it("honour If-Range: the range if the date matches, the whole file if not", function()
      local r = curl("-H 'Range: bytes=0-4' -H " .. q("If-Range: " .. MTIME_HTTP), base .. "/hello.txt")
      assert.are.equal(206, r.code)
      assert.are.equal("hello", r.body)
      r = curl("-H 'Range: bytes=0-4' -H 'If-Range: Tue, 20 Oct 2015 00:00:00 GMT'", base .. "/hello.txt")
      assert.are.equal(200, r.code)
      assert.are.equal(hello, r.body)
    end)
  end)

  describe("http.serve_file", function()
    it("serves the named file whatever the request path", function()
      local r = curl("", base_servefile .. "/anything")
      assert.are.equal(200, r.code)
      assert.are.equal(hello, r.body)
      assert.are.equal("text/plain; charset=utf-8", r.headers["content-type"])
      r = curl("-r 0-4", base_servefile .. "/anything")
      assert.are.equal(206, r.code)
      assert.are.equal("hello", r.body)
    end)

    it("refuses a request path with a '..' element (400 'invalid URL path')", function()
      local r = curl("", base_servefile .. "/x/../anything")
      assert.are.equal(400, r.code)
      assert.are.equal("invalid URL path\n", r.body)
    end)

    it("serves a directory's index.html, redirecting to the slash", function()
      local r = curl("", base_servefile .. "/dirpath")
      assert.are.equal(301, r.code)
      assert.are.equal("dirpath/", r.headers["location"])
      r = curl("", base_servefile .. "/dirpath/")
      assert.are.equal(200, r.code)
      assert.are.equal("<h1>index</h1>\n", r.body)
    end)
  end)

  describe("checks its arguments", function()
    it("raises for a non-string dir and for unknown or mistyped options", function()
      local err = helper.error_of(http.file_server, 5)
      assert.matches("bad argument #1 to 'file_server' %(string expected, got number%)", err)
      err = helper.error_of(http.file_server, ".", { listings = false })
      assert.matches("http.file_server: unknown option 'listings'", err, 1, true)
      err = helper.error_of(http.file_server, ".", { listing = "no" })
      assert.matches("option 'listing' must be a boolean, got string", err, 1, true)
    end)
  end)
end)

describe("http.file_server and file permissions", function()
  it("answers 403 Forbidden for a file it may not read, and serves the readable ones", function()
    -- Root reads every file: the server then runs as nobody, in a child.
    local dir = make_tempdir()
    helper.defer(function() os.execute("chmod -R 755 " .. q(dir) .. " 2>/dev/null; rm -rf " .. q(dir)) end)
    if not scratch then
      scratch = make_tempdir()
      helper.defer(function() os.execute("rm -rf " .. q(scratch)); scratch = nil end)
    end
    spit(dir .. "/open.txt", "readable")
    spit(dir .. "/closed.txt", "unreadable")
    sh("chmod 644 " .. q(dir .. "/open.txt") .. " && chmod 000 " .. q(dir .. "/closed.txt") ..
      " && mkdir -m 700 " .. q(dir .. "/private") .. " && echo x > " .. q(dir .. "/private/f.txt"))
    if not is_root() then sh("chmod 000 " .. q(dir .. "/private")) end
    local script = dir .. "/server.lua"
    spit(script, string.format([[
      local http, net = require "lugo.http", require "lugo.net"
      local ln = assert(net.listen("tcp", "127.0.0.1:0"))
      local f = assert(io.open(%q, "w")); f:write(ln:addr()); f:close()
      assert(os.rename(%q, %q)) -- the address appears whole
      require("lugo").go(function() require("lugo.time").sleep(30); os.exit(0) end) -- never outlives the spec
      http.server({ handler = http.file_server(%q) }):serve(ln)
    ]], dir .. "/addr.tmp", dir .. "/addr.tmp", dir .. "/addr", dir))
    sh("chmod 644 " .. q(script) .. " && chmod 777 " .. q(dir))
    local prefix = is_root() and "setpriv --reuid=65534 --regid=65534 --clear-groups " or ""
    local pidfile, errfile = dir .. ".pid", dir .. ".err"
    sh(prefix .. q(helper.lugo_bin()) .. " " .. q(script) .. " </dev/null >/dev/null 2>" .. q(errfile) ..
      " & echo $! > " .. q(pidfile))
    local pid = slurp(pidfile):match("%d+")
    helper.defer(function()
      os.execute("kill " .. pid .. " 2>/dev/null")
      os.remove(pidfile)
      os.remove(errfile)
    end)
    assert.is_true(wait_file(dir .. "/addr"), "the server did not start: " .. (slurp(errfile) or ""))
    local a = slurp(dir .. "/addr")
    local r = curl("", "http://" .. a .. "/closed.txt")
    assert.are.equal(403, r.code)
    assert.are.equal("403 Forbidden\n", r.body)
    r = curl("", "http://" .. a .. "/private/f.txt")
    assert.are.equal(403, r.code)
    assert.are.equal("403 Forbidden\n", r.body)
    r = curl("", "http://" .. a .. "/open.txt")
    assert.are.equal(200, r.code)
    assert.are.equal("readable", r.body)
  end)
end)
