-- wrk script: authenticated order creation, two random products, a fresh Idempotency-Key each.
-- TOKEN (an access token) and PRODUCTS (how many product ids, from 1) come from the environment.
local token = os.getenv("TOKEN")
local products = tonumber(os.getenv("PRODUCTS") or "1000")
local counter = 0

local threads = 0
function setup(thread)
  threads = threads + 1
  -- Keys unique across threads and across runs against the same database.
  thread:set("thread_id", string.format("%d-%d", os.time(), threads))
  thread:set("seed", threads)
end

function init(args)
  math.randomseed(os.time() * 100 + (seed or 0))
end

function request()
  counter = counter + 1
  local a = math.random(1, products)
  local b = a % products + 1
  local body = string.format(
    '{"items": [{"product_id": %d, "quantity": 1}, {"product_id": %d, "quantity": 1}]}', a, b)
  local headers = {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = string.format("%s-%d", thread_id or "t", counter),
  }
  return wrk.format("POST", "/api/orders/", headers, body)
end


function done(summary, latency, requests)
  io.write(string.format("orders: %d requests, %.1f/s, p50 %.1f ms, p99 %.1f ms, errors %d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
