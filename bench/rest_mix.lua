-- bench_scale's REST mix for wrk (https://github.com/wg/wrk): 40 % create, 30 % list (limit
-- 100), 30 % terminate of a VM this thread created. The same mix as bench_scale's Python load
-- generator, without its CPU (7-8 ms per request, as much as the daemon's own): wrk is C and
-- LuaJIT. Arguments (after wrk's "--"): the bearer token, the API prefix.
--
-- Each wrk thread has its own Lua state: its ids come from its own creates' responses (201,
-- {"ids":[N]}); the op counts and error bodies are read from every thread in done().

local token, prefix = nil, "/api/v1"
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  token = args[1]
  prefix = args[2] or prefix
  ids = {}
  creates, lists, terminates, failed, first_error = 0, 0, 0, 0, ""
  math.randomseed(tid or 1)
  headers = {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}
end

local create_body = '{"template": "CPU=1\\nMEMORY=512\\n", "name": "load"}'
local terminate_body = '{"action": "terminate"}'

function request()
  local r = math.random()
  if r < 0.4 or #ids == 0 then
    creates = creates + 1
    return wrk.format("POST", prefix .. "/vms", headers, create_body)
  elseif r < 0.7 then
    lists = lists + 1
    return wrk.format("GET", prefix .. "/vms?limit=100", headers)
  end
  terminates = terminates + 1
  return wrk.format("POST", prefix .. "/vms/" .. table.remove(ids, 1) .. "/action", headers,
                    terminate_body)
end

function response(status, headers, body)
  if status == 201 then
    for id in string.gmatch(body, "%d+") do table.insert(ids, id) end
  elseif status >= 400 then
    failed = failed + 1
    if first_error == "" then first_error = status .. " " .. string.sub(body, 1, 200) end
  end
end

function done(summary, latency, requests)
  local c, l, t, f, e = 0, 0, 0, 0, ""
  for _, thread in ipairs(threads) do
    c = c + thread:get("creates")
    l = l + thread:get("lists")
    t = t + thread:get("terminates")
    f = f + thread:get("failed")
    if e == "" then e = thread:get("first_error") end
  end
  local errs = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "status_errors": %d, ' ..
    '"timeouts": %d, "create_n": %d, "list_n": %d, "terminate_n": %d, "http_errors": %d, ' ..
    '"first_error": "%s"}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, errs.connect, errs.read, errs.write, errs.status, errs.timeout, c, l, t, f,
    string.gsub(e, '[%c"\\]', " ")))
end
