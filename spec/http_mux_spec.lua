-- lugo.http.mux: Go 1.22's ServeMux (lua/lugo/http/mux.lua). Pure Lua:
-- every test drives the mux with fake requests and response writers that
-- follow lugo.http's contract (r.method, r.path, r.raw_path, r.raw_query,
-- r.host, r.proto; w:header() with set/add/get/del, w:write_header,
-- w:write), so this file runs under plain LuaJIT as well as under lugo.
local mux = require "lugo.http.mux"

local concat = table.concat

-- ---------------------------------------------------------------- fakes

local function new_header()
  local values = {} -- lower-case name -> list of values
  local h = {}
  function h.set(_, k, v) values[k:lower()] = { v } end
  function h.add(_, k, v)
    local l = values[k:lower()]
    if l then l[#l + 1] = v else values[k:lower()] = { v } end
  end
  function h.get(_, k)
    local l = values[k:lower()]
    return l and l[1]
  end
  function h.del(_, k) values[k:lower()] = nil end
  return h
end

local function new_writer()
  local w = { hdr = new_header(), chunks = {}, writes_header = 0 }
  function w.header(self) return self.hdr end
  function w.write_header(self, code)
    self.writes_header = self.writes_header + 1
    if not self.status then self.status = code end
  end
  function w.write(self, s)
    if not self.status then self.status = 200 end
    self.chunks[#self.chunks + 1] = s
    return #s
  end
  function w.body(self) return concat(self.chunks) end
  return w
end

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- request(method, target[, host]): target is the request line's
-- "escaped-path[?query]"; r.path is its decoded path, r.raw_path the
-- escaped one when they differ.
local function request(method, target, host)
  local raw, q = target:match("^([^?]*)%??(.*)$")
  local path = unescape(raw)
  return {
    method = method, path = path, raw_path = raw ~= path and raw or nil, raw_query = q,
    host = host or "example.com", proto = "HTTP/1.1",
  }
end

local function serve(m, method, target, host)
  local w, r = new_writer(), request(method, target, host)
  m:serve_http(w, r)
  return w, r
end

-- A handler that answers its name and records the request it got.
local function named(name, seen)
  return function(w, r)
    if seen then seen[#seen + 1] = r end
    w:write(name)
  end
end

-- The mux answering each of names as a handler of that pattern.
local function mux_of(...)
  local m = mux.new()
  for i = 1, select("#", ...) do
    local p = select(i, ...)
    m:handle(p, named(p))
  end
  return m
end

local function line() return debug.getinfo(2, "l").currentline end

-- The message of the error f raises.
local function error_of(f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok)
  return tostring(e)
end

local function has(s, part) return s:find(part, 1, true) ~= nil end

-- ---------------------------------------------------------------- tests

describe("lugo.http.mux", function()
  describe("matching", function()
    it("dispatches a literal path and sets r.pattern and r.path_values", function()
      local seen = {}
      local m = mux.new()
      m:handle("/hello", named("hello", seen))
      local w, r = serve(m, "GET", "/hello")
      assert.are.equal(200, w.status)
      assert.are.equal("hello", w:body())
      assert.are.equal(r, seen[1])
      assert.are.equal("/hello", r.pattern)
      assert.are.same({}, r.path_values)
    end)

    it("prefers a literal segment to a wildcard, in either registration order", function()
      for _, order in ipairs({ { "/items/{id}", "/items/new" }, { "/items/new", "/items/{id}" } }) do
        local m = mux_of(order[1], order[2])
        local w, r = serve(m, "GET", "/items/new")
        assert.are.equal("/items/new", w:body())
        assert.are.same({}, r.path_values)
        w, r = serve(m, "GET", "/items/42")
        assert.are.equal("/items/{id}", w:body())
        assert.are.equal("/items/{id}", r.pattern)
        assert.are.same({ id = "42" }, r.path_values)
      end
    end)

    it("backtracks from a literal branch that fails to a wildcard branch", function()
      local m = mux_of("/a/b/z", "/a/{x}/c")
      local w, r = serve(m, "GET", "/a/b/c")
      assert.are.equal("/a/{x}/c", w:body())
      assert.are.same({ x = "b" }, r.path_values)
      w = serve(m, "GET", "/a/b/z")
      assert.are.equal("/a/b/z", w:body())
    end)

    it("prefers a pattern with a method to one without", function()
      local m = mux_of("GET /x", "/x")
      assert.are.equal("GET /x", serve(m, "GET", "/x"):body())
      assert.are.equal("GET /x", serve(m, "HEAD", "/x"):body())
      assert.are.equal("/x", serve(m, "POST", "/x"):body())
      assert.are.equal("/x", serve(m, "DELETE", "/x"):body())
    end)

    it("matches HEAD with GET patterns, but a HEAD pattern first", function()
      local m = mux_of("GET /h")
      local w, r = serve(m, "HEAD", "/h")
      assert.are.equal("GET /h", w:body())
      assert.are.equal("GET /h", r.pattern)
      m:handle("HEAD /h", named("head"))
      assert.are.equal("head", serve(m, "HEAD", "/h"):body())
      assert.are.equal("GET /h", serve(m, "GET", "/h"):body())
    end)

    it("prefers host patterns, ignores the request's port, and falls back to patterns without host", function()
      local m = mux_of("/", "example.com/", "api.test/v1/{x}")
      assert.are.equal("example.com/", serve(m, "GET", "/a", "example.com"):body())
      assert.are.equal("example.com/", serve(m, "GET", "/a", "example.com:8080"):body())
      assert.are.equal("/", serve(m, "GET", "/a", "other.org"):body())
      assert.are.equal("/", serve(m, "GET", "/a", "other.org:80"):body())
      local w, r = serve(m, "GET", "/v1/k", "api.test:443")
      assert.are.equal("api.test/v1/{x}", w:body())
      assert.are.same({ x = "k" }, r.path_values)
      -- the host's patterns do not match this path: those without a host do
      assert.are.equal("/", serve(m, "GET", "/v2", "api.test"):body())
      -- a host that is not host:port stays as it is
      assert.are.equal("/", serve(m, "GET", "/a", "example.com:80:90"):body())
    end)

    it("{$} matches only the end of the path", function()
      local m = mux_of("/{$}", "/a/{$}", "/a/")
      assert.are.equal("/{$}", serve(m, "GET", "/"):body())
      assert.are.equal(404, serve(m, "GET", "/x").status)
      assert.are.equal("/a/{$}", serve(m, "GET", "/a/"):body())
      assert.are.equal("/a/", serve(m, "GET", "/a/b"):body())
      assert.are.equal("/a/", serve(m, "GET", "/a/b/"):body())
    end)

    it("{name...} takes the rest of the path, decoded, and may be empty", function()
      local m = mux_of("/files/{path...}")
      local w, r = serve(m, "GET", "/files/a/b/c.txt")
      assert.are.equal("/files/{path...}", w:body())
      assert.are.same({ path = "a/b/c.txt" }, r.path_values)
      _, r = serve(m, "GET", "/files/a%20b/c%2Fd")
      assert.are.same({ path = "a b/c/d" }, r.path_values)
      _, r = serve(m, "GET", "/files/")
      assert.are.same({ path = "" }, r.path_values)
    end)

    it("a trailing slash matches the subtree; the most specific subtree wins", function()
      local m = mux_of("/images/", "/images/thumbnails/")
      assert.are.equal("/images/", serve(m, "GET", "/images/a.png"):body())
      assert.are.equal("/images/", serve(m, "GET", "/images/"):body())
      assert.are.equal("/images/thumbnails/", serve(m, "GET", "/images/thumbnails/a.png"):body())
      assert.are.equal(404, serve(m, "GET", "/img").status)
    end)

    it("several wildcards give several path values", function()
      local m = mux_of("/b/{bucket}/o/{objectname...}")
      local w, r = serve(m, "GET", "/b/mine/o/dir/file")
      assert.are.equal("/b/{bucket}/o/{objectname...}", w:body())
      assert.are.same({ bucket = "mine", objectname = "dir/file" }, r.path_values)
    end)

    it("decodes each segment: %2F stays inside its segment's value", function()
      local m = mux_of("/items/{id}", "/items/{id}/parts")
      local w, r = serve(m, "GET", "/items/a%2Fb")
      assert.are.equal("/items/{id}", w:body())
      assert.are.same({ id = "a/b" }, r.path_values)
      w, r = serve(m, "GET", "/items/a%2Fb/parts")
      assert.are.equal("/items/{id}/parts", w:body())
      assert.are.same({ id = "a/b" }, r.path_values)
      _, r = serve(m, "GET", "/items/a%20b")
      assert.are.same({ id = "a b" }, r.path_values)
      -- an invalid escape is kept as it is
      _, r = serve(m, "GET", "/items/100%zz")
      assert.are.same({ id = "100%zz" }, r.path_values)
    end)

    it("decodes literal segments of patterns and of paths", function()
      local m = mux_of("/%61", "/a%2Fb/")
      assert.are.equal("/%61", serve(m, "GET", "/a"):body())
      assert.are.equal("/%61", serve(m, "GET", "/%61"):body())
      assert.are.equal("/a%2Fb/", serve(m, "GET", "/a%2fb/c"):body())
      assert.are.equal(404, serve(m, "GET", "/a/b/c").status)
    end)

    it("a single wildcard does not match an empty trailing segment", function()
      local m = mux_of("/u/{name}")
      assert.are.equal("/u/{name}", serve(m, "GET", "/u/x"):body())
      assert.are.equal(404, serve(m, "GET", "/u/").status)
      assert.are.equal(404, serve(m, "GET", "/u/x/y").status)
    end)
  end)

  describe("errors", function()
    it("answers 404 page not found, as Go's NotFound", function()
      local m = mux_of("/x")
      local w, r = serve(m, "GET", "/nothing")
      assert.are.equal(404, w.status)
      assert.are.equal("404 page not found\n", w:body())
      assert.are.equal("text/plain; charset=utf-8", w:header():get("Content-Type"))
      assert.are.equal("nosniff", w:header():get("X-Content-Type-Options"))
      assert.are.equal("", r.pattern)
      -- an empty mux too
      w = serve(mux.new(), "GET", "/")
      assert.are.equal(404, w.status)
      assert.are.equal("404 page not found\n", w:body())
    end)

    it("answers 405 with the allowed methods, sorted, GET implying HEAD", function()
      local m = mux_of("GET /r", "POST /r", "PUT /other")
      local w, r = serve(m, "DELETE", "/r")
      assert.are.equal(405, w.status)
      assert.are.equal("Method Not Allowed\n", w:body())
      assert.are.equal("GET, HEAD, POST", w:header():get("Allow"))
      assert.are.equal("text/plain; charset=utf-8", w:header():get("Content-Type"))
      assert.are.equal("nosniff", w:header():get("X-Content-Type-Options"))
      assert.are.equal("", r.pattern)
      w = serve(m, "DELETE", "/other")
      assert.are.equal("PUT", w:header():get("Allow"))
      -- no pattern at all for the path: 404, not 405
      assert.are.equal(404, serve(m, "DELETE", "/none").status)
    end)

    it("counts methods of patterns that would match after a trailing slash", function()
      local m = mux_of("POST /t/")
      local w = serve(m, "GET", "/t")
      assert.are.equal(405, w.status)
      assert.are.equal("POST", w:header():get("Allow"))
    end)

    it("counts the host's patterns for 405", function()
      local m = mux_of("PATCH api.test/x", "GET /x")
      local w = serve(m, "DELETE", "/x", "api.test:80")
      assert.are.equal(405, w.status)
      assert.are.equal("GET, HEAD, PATCH", w:header():get("Allow"))
      w = serve(m, "DELETE", "/x", "other.test")
      assert.are.equal("GET, HEAD", w:header():get("Allow"))
    end)

    it("answers 400 with Connection: close to a request for *", function()
      local m = mux_of("/")
      local w = new_writer()
      local r = request("GET", "/")
      r.path = "*"
      m:serve_http(w, r)
      assert.are.equal(400, w.status)
      assert.are.equal("close", w:header():get("Connection"))
      assert.are.equal("", w:body())
    end)
  end)

  describe("redirects", function()
    it("redirects /tree to /tree/ with 301, keeping the query", function()
      local m = mux_of("/tree/")
      local w, r = serve(m, "GET", "/tree?x=1&y=2")
      assert.are.equal(301, w.status)
      assert.are.equal("/tree/?x=1&y=2", w:header():get("Location"))
      assert.are.equal("text/html; charset=utf-8", w:header():get("Content-Type"))
      assert.are.equal('<a href="/tree/?x=1&amp;y=2">Moved Permanently</a>.\n\n', w:body())
      assert.are.equal("/tree/", r.pattern)
      local h, pattern = m:handler(request("GET", "/tree"))
      assert.are.equal("function", type(h))
      assert.are.equal("/tree/", pattern)
    end)

    it("redirects /tree to /tree/ for a {x...} pattern, not when /tree is registered", function()
      local m = mux_of("/tree/{rest...}")
      local w = serve(m, "GET", "/tree")
      assert.are.equal(301, w.status)
      assert.are.equal("/tree/", w:header():get("Location"))
      m:handle("/tree", named("/tree"))
      w = serve(m, "GET", "/tree")
      assert.are.equal(200, w.status)
      assert.are.equal("/tree", w:body())
    end)

    it("does not redirect to a trailing slash that would only match a subtree", function()
      local m = mux_of("/")
      local w = serve(m, "GET", "/foo")
      assert.are.equal(200, w.status)
      assert.are.equal("/", w:body())
    end)

    it("escapes the redirect's path", function()
      local m = mux_of("/a%20b/")
      local w = serve(m, "GET", "/a%20b")
      assert.are.equal(301, w.status)
      assert.are.equal("/a%20b/", w:header():get("Location"))
    end)

    it("sends no body for HEAD and neither body nor Content-Type for POST", function()
      local m = mux_of("/tree/")
      local w = serve(m, "HEAD", "/tree")
      assert.are.equal(301, w.status)
      assert.are.equal("/tree/", w:header():get("Location"))
      assert.are.equal("text/html; charset=utf-8", w:header():get("Content-Type"))
      assert.are.equal("", w:body())
      w = serve(m, "POST", "/tree")
      assert.are.equal(301, w.status)
      assert.are.equal("/tree/", w:header():get("Location"))
      assert.is_nil(w:header():get("Content-Type"))
      assert.are.equal("", w:body())
    end)

    it("redirects non-canonical paths to the cleaned path, keeping the query", function()
      local m = mux_of("/b", "/x", "/a/b")
      local cases = {
        { "/a/../b", "/b" }, { "//x", "/x" }, { "/a/./b?q=1", "/a/b?q=1" }, { "/a//b/", "/a/b/" },
        { "/a/b/..", "/a" }, { "/../x", "/x" },
      }
      for _, c in ipairs(cases) do
        local w = serve(m, "GET", c[1])
        assert.are.equal(301, w.status)
        assert.are.equal(c[2], w:header():get("Location"))
        assert.are.equal('<a href="' .. c[2] .. '">Moved Permanently</a>.\n\n', w:body())
      end
      -- the pattern reported is the one the cleaned path matches
      local _, pattern = m:handler(request("GET", "/a/../b"))
      assert.are.equal("/b", pattern)
      _, pattern = m:handler(request("GET", "/a/../nothing"))
      assert.are.equal("", pattern)
    end)

    it("redirects an unclean path straight to the trailing-slash path", function()
      local m = mux_of("/tree/")
      local w = serve(m, "GET", "/x/../tree?k=v")
      assert.are.equal(301, w.status)
      assert.are.equal("/tree/?k=v", w:header():get("Location"))
    end)

    it("does not clean CONNECT paths nor strip their port", function()
      local seen = {}
      local m = mux.new()
      m:handle("/", named("/", seen))
      local w, r = serve(m, "CONNECT", "/a/../b")
      assert.are.equal(200, w.status)
      assert.are.equal("/", w:body())
      assert.are.equal("/", r.pattern)
    end)
  end)

  describe("registration", function()
    it("raises Go's message for conflicting patterns, naming where each was registered", function()
      local m = mux.new()
      m:handle("/a/{x}", named("a")); local l1 = line()
      local e = error_of(function() m:handle("/{y}/b", named("b")) end); local l2 = line()
      local expect = ('pattern "/{y}/b" (registered at %s:%d) conflicts with pattern "/a/{x}" (registered at %s:%d):\n' ..
        '/{y}/b and /a/{x} both match some paths, like "/a/b".\n' ..
        "But neither is more specific than the other.\n" ..
        '/{y}/b matches "/y/b", but /a/{x} doesn\'t.\n' ..
        '/a/{x} matches "/a/x", but /{y}/b doesn\'t.')
      local src = debug.getinfo(1, "S").source:gsub("^@", "")
      assert.is_true(has(e, expect:format(src, l2, src, l1)), e)
      -- the first pattern still works, the second was not added
      assert.are.equal("a", serve(m, "GET", "/a/b"):body())
      assert.are.equal(404, serve(m, "GET", "/c/b").status)
    end)

    it("raises for patterns that match the same requests", function()
      local m = mux_of("/a/{x}")
      local e = error_of(function() m:handle("/a/{y}", named("y")) end)
      assert.is_true(has(e, 'pattern "/a/{y}" (registered at '), e)
      assert.is_true(has(e, "conflicts with pattern \"/a/{x}\""), e)
      assert.is_true(has(e, "/a/{y} matches the same requests as /a/{x}"), e)
      e = error_of(function() m:handle("/a/{x}", named("x")) end)
      assert.is_true(has(e, "/a/{x} matches the same requests as /a/{x}"), e)
      m:handle("/t/", named("t"))
      e = error_of(function() m:handle("/t/{rest...}", named("r")) end)
      assert.is_true(has(e, "/t/{rest...} matches the same requests as /t/"), e)
    end)

    it("raises when methods and paths disagree on which is more specific", function()
      local m = mux_of("GET /")
      local e = error_of(function() m:handle("/index.html", named("i")) end)
      assert.is_true(has(e, "/index.html matches more methods than GET /, but has a more specific path pattern"), e)
      m = mux_of("/index.html")
      e = error_of(function() m:handle("GET /", named("g")) end)
      assert.is_true(has(e, "GET / matches fewer methods than /index.html, but has a more general path pattern"), e)
    end)

    it("accepts patterns that differ in host, method or specificity", function()
      local m = mux_of("/x", "a.test/x", "GET /x", "POST /x", "HEAD /x", "/x/{y}", "/z/{a}/c", "/a/b/{c}",
        "/a/{b}/", "/a/{b}/{$}")
      assert.are.equal("a.test/x", serve(m, "PUT", "/x", "a.test"):body())
      assert.are.equal("POST /x", serve(m, "POST", "/x"):body())
      assert.are.equal("HEAD /x", serve(m, "HEAD", "/x"):body())
      assert.are.equal("/x", serve(m, "PUT", "/x"):body())
      assert.are.equal("/a/b/{c}", serve(m, "GET", "/a/b/c"):body())
      assert.are.equal("/z/{a}/c", serve(m, "GET", "/z/q/c"):body())
      assert.are.equal("/a/{b}/{$}", serve(m, "GET", "/a/q/"):body())
      assert.are.equal("/a/{b}/", serve(m, "GET", "/a/q/r/s"):body())
    end)

    it("raises Go's messages for invalid patterns", function()
      local cases = {
        { "", "http: invalid pattern" },
        { "foo", 'parsing "foo": at offset 0: host/path missing /' },
        { "/{x", "parsing \"/{x\": at offset 1: bad wildcard segment (must end with '}')" },
        { "/a{x}", "parsing \"/a{x}\": at offset 1: bad wildcard segment (must start with '{')" },
        { "/{x...}/b", 'parsing "/{x...}/b": at offset 1: {...} wildcard not at end' },
        { "/{$}/a", 'parsing "/{$}/a": at offset 1: {$} not at end' },
        { "/{}", 'parsing "/{}": at offset 1: empty wildcard' },
        { "/{...}", 'parsing "/{...}": at offset 1: empty wildcard' },
        { "/{1x}", 'parsing "/{1x}": at offset 1: bad wildcard name "1x"' },
        { "/{x}/{x}", 'parsing "/{x}/{x}": at offset 5: duplicate wildcard name "x"' },
        { "GE{T /", 'parsing "GE{T /": at offset 0: invalid method "GE{T"' },
        { "GET /a/../b", 'parsing "GET /a/../b": at offset 4: non-CONNECT pattern with unclean path can never match' },
        { "{host}/", "parsing \"{host}/\": at offset 0: host contains '{' (missing initial '/'?)" },
        { "GET example.com{x}/", "parsing \"GET example.com{x}/\": at offset 15: host contains '{' (missing initial '/'?)" },
        { "/{a\n}", 'parsing "/{a\\n}": at offset 1: bad wildcard name "a\\n"' },
      }
      for _, c in ipairs(cases) do
        local m = mux.new()
        local e = error_of(function() m:handle(c[1], named("x")) end)
        assert.is_true(has(e, c[2]), e)
      end
    end)

    it("accepts unclean paths without a method and for CONNECT, and spaces or tabs after the method", function()
      local m = mux_of("/a/../b", "CONNECT /c/../d", "PUT \t /tabbed")
      assert.are.equal("/a/../b", serve(m, "CONNECT", "/a/../b"):body())
      assert.are.equal("CONNECT /c/../d", serve(m, "CONNECT", "/c/../d"):body())
      assert.are.equal("PUT \t /tabbed", serve(m, "PUT", "/tabbed"):body())
    end)

    it("raises for a missing or unusable handler", function()
      local m = mux.new()
      assert.is_true(has(error_of(function() m:handle("/x", nil) end), "http: nil handler"))
      assert.is_true(has(error_of(function() m:handle("/x", 42) end), "http: handler must be a function"))
      assert.is_true(has(error_of(function() m:handle("/x", {}) end), "http: handler must be a function"))
      assert.is_true(has(error_of(function() m:handle(7, function() end) end), "string expected"))
      assert.are.equal(404, serve(m, "GET", "/x").status)
    end)

    it("handle_func is handle", function()
      local m = mux.new()
      m:handle_func("/f", named("f"))
      assert.are.equal("f", serve(m, "GET", "/f"):body())
    end)
  end)

  describe("handlers", function()
    it("calls serve_http on handler objects", function()
      local obj = { calls = 0 }
      function obj:serve_http(w, r)
        self.calls = self.calls + 1
        w:write("obj " .. r.path_values.id)
      end
      local m = mux.new()
      m:handle("/o/{id}", obj)
      assert.are.equal("obj 7", serve(m, "GET", "/o/7"):body())
      assert.are.equal(1, obj.calls)
    end)

    it("calls callable tables", function()
      local got
      local callable = setmetatable({}, { __call = function(self, w, r) got = self; w:write(r.pattern) end })
      local m = mux.new()
      m:handle("/c", callable)
      assert.are.equal("/c", serve(m, "GET", "/c"):body())
      assert.are.equal(callable, got)
    end)

    it("a mux is callable and serves as another mux's handler", function()
      local inner = mux_of("/api/v1/{thing}")
      local outer = mux.new()
      outer:handle("/api/", inner)
      outer:handle("/", named("root"))
      local w, r = serve(outer, "GET", "/api/v1/users")
      assert.are.equal("/api/v1/{thing}", w:body())
      assert.are.equal("/api/v1/{thing}", r.pattern)
      assert.are.same({ thing = "users" }, r.path_values)
      assert.are.equal("root", serve(outer, "GET", "/else"):body())
      -- called as a function
      w, r = new_writer(), request("GET", "/api/v1/x")
      inner(w, r)
      assert.are.equal("/api/v1/{thing}", w:body())
      assert.are.same({ thing = "x" }, r.path_values)
      -- as a function handler of another mux
      local m = mux.new()
      m:handle("/api/", function(w2, r2) return inner(w2, r2) end)
      assert.are.equal("/api/v1/{thing}", serve(m, "GET", "/api/v1/y"):body())
    end)

    it("handler(r) returns the handler and pattern without setting anything", function()
      local h1 = named("one")
      local m = mux.new()
      m:handle("GET /one/{x}", h1)
      local r = request("HEAD", "/one/2")
      local h, pattern = m:handler(r)
      assert.are.equal(h1, h)
      assert.are.equal("GET /one/{x}", pattern)
      assert.is_nil(r.pattern)
      assert.is_nil(r.path_values)
      h, pattern = m:handler(request("GET", "/two"))
      assert.are.equal(mux.not_found, h)
      assert.are.equal("", pattern)
      h, pattern = m:handler(request("POST", "/one/2"))
      assert.are.equal("", pattern)
      local w = new_writer()
      h(w, request("POST", "/one/2"))
      assert.are.equal(405, w.status)
      assert.are.equal("GET, HEAD", w:header():get("Allow"))
    end)
  end)

  describe("helpers", function()
    it("error() replaces the content headers and writes msg and a newline", function()
      local w = new_writer()
      w:header():set("Content-Length", "99")
      w:header():set("Content-Type", "application/json")
      mux.error(w, "teapot here", 418)
      assert.are.equal(418, w.status)
      assert.are.equal("teapot here\n", w:body())
      assert.is_nil(w:header():get("Content-Length"))
      assert.are.equal("text/plain; charset=utf-8", w:header():get("Content-Type"))
      assert.are.equal("nosniff", w:header():get("X-Content-Type-Options"))
    end)

    it("not_found() writes Go's 404", function()
      local w = new_writer()
      mux.not_found(w, request("GET", "/"))
      assert.are.equal(404, w.status)
      assert.are.equal("404 page not found\n", w:body())
    end)

    it("redirect() makes relative URLs absolute against r.path and cleans them", function()
      local cases = {
        { "/a/b/c", "d", "/a/b/d" }, { "/a/b/c", "../x?y=1", "/a/x?y=1" }, { "/a/b/", "", "/a/b/" },
        { "/a/b/c", "./", "/a/b/" }, { "/a", "/x//y/../z/", "/x/z/" },
        { "/a", "http://other.test/p/../q", "http://other.test/p/../q" },
        { "/a", "//other.test/p", "//other.test/p" },
        { "/a/b", "mailto:x@y", "mailto:x@y" },
      }
      for _, c in ipairs(cases) do
        local w, r = new_writer(), request("GET", c[1])
        mux.redirect(w, r, c[2], 302)
        assert.are.equal(302, w.status)
        assert.are.equal(c[3], w:header():get("Location"))
        assert.are.equal('<a href="' .. c[3]:gsub("&", "&amp;") .. '">Found</a>.\n\n', w:body())
      end
    end)

    it("redirect() escapes non-ASCII in Location and HTML in the body", function()
      local w, r = new_writer(), request("GET", "/")
      mux.redirect(w, r, "/caf\195\169?a=<b>&c='d\"", 303)
      assert.are.equal(303, w.status)
      assert.are.equal("/caf%c3%a9?a=<b>&c='d\"", w:header():get("Location"))
      assert.are.equal('<a href="/caf\195\169?a=&lt;b&gt;&amp;c=&#39;d&#34;">See Other</a>.\n\n', w:body())
    end)

    it("redirect() leaves the body and Content-Type alone when Content-Type is set", function()
      local w, r = new_writer(), request("GET", "/")
      w:header():set("Content-Type", "application/json")
      mux.redirect(w, r, "/there", 307)
      assert.are.equal(307, w.status)
      assert.are.equal("/there", w:header():get("Location"))
      assert.are.equal("application/json", w:header():get("Content-Type"))
      assert.are.equal("", w:body())
    end)

    it("clean_path() is Go's cleanPath", function()
      local cases = {
        { "", "/" }, { "/", "/" }, { "a", "/a" }, { "/a/b", "/a/b" }, { "/a/b/", "/a/b/" },
        { "//a", "/a" }, { "/a//b//", "/a/b/" }, { "/a/./b", "/a/b" }, { "/a/../b", "/b" },
        { "/../a", "/a" }, { "/a/..", "/" }, { "/a/b/..", "/a" }, { "/a/b/../", "/a/" }, { "/.", "/" },
        { "/..", "/" }, { "/a/.", "/a" }, { "/a/...", "/a/..." }, { "/..a/b.", "/..a/b." },
      }
      for _, c in ipairs(cases) do
        assert.are.equal(c[2], mux.clean_path(c[1]), "clean_path(" .. c[1] .. ")")
      end
    end)

    it("status_text has Go's StatusText", function()
      local st = mux.status_text
      assert.are.equal("OK", st[200])
      assert.are.equal("Moved Permanently", st[301])
      assert.are.equal("Not Found", st[404])
      assert.are.equal("Method Not Allowed", st[405])
      assert.are.equal("I'm a teapot", st[418])
      assert.are.equal("Request Entity Too Large", st[413])
      assert.are.equal("Too Early", st[425])
      assert.are.equal("Early Hints", st[103])
      assert.are.equal("Network Authentication Required", st[511])
      assert.is_nil(st[299])
      local n = 0
      for _ in pairs(st) do n = n + 1 end
      assert.are.equal(62, n)
    end)
  end)
end)
