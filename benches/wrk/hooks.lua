-- wrk script: each thread sends its share of the pre-signed requests in requests.tsv (written by
-- setup.py), each once. Arguments: the number of wrk threads, then the requests file.
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

local requests = {}
local i = 0
local body = '{"alarm":"cpu-high","value":0.93}'

function init(args)
  local threads, file = tonumber(args[1]), args[2]
  local n = 0
  for line in io.lines(file) do
    n = n + 1
    if n % threads == id then
      local path, nonce, ts, sig = line:match("([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)")
      requests[#requests + 1] = wrk.format("POST", path, {
        ["webhook-id"] = nonce, ["webhook-timestamp"] = ts,
        ["webhook-signature"] = sig, ["content-type"] = "application/json"}, body)
    end
  end
end

function request()
  i = i + 1
  if i > #requests then i = 1 end -- past the end nonces repeat: 409s, counted as non-2xx
  return requests[i]
end
