-- wrk script: many shoppers through Nginx, 90% anonymous catalog reads and 10% orders.
--
-- Each connection is one shopper, kept open (keep-alive) for the whole run: a first request at a
-- random moment within RAMP_MS (shoppers arrive evenly, not all at once), then a think time of 0.5
-- to 1.5 x THINK_MS between requests, so N connections offer about N / THINK_MS requests a second
-- whatever the server does: an open load, as real visitors are. (Without think time every
-- connection would send its next request the moment it gets an answer, and with 10,000 of them a
-- closed loop measures only the queue.) Think times stay under Nginx's keep-alive timeout (65 s);
-- bench/run.py lets a new connection wait 60 s for its first request, as wrk connects them all at
-- the start where a browser connects when its request is ready.
--
-- Reads follow a popularity curve: product ids and page numbers are drawn log-uniformly, so low
-- ones are seen most (a few best sellers and first pages), yet every product is seen now and then.
-- Environment: TOKENS (comma-separated access tokens, one per buyer), PRODUCTS, CATEGORIES,
-- THINK_MS, RAMP_MS (default THINK_MS), CONNECTIONS and THREADS (as given to wrk), ORDER_SHARE (0.10).
local products = tonumber(os.getenv("PRODUCTS") or "10000")
local categories = tonumber(os.getenv("CATEGORIES") or "20")
local think_ms = tonumber(os.getenv("THINK_MS") or "9000")
local order_share = tonumber(os.getenv("ORDER_SHARE") or "0.10")
local ramp_ms = tonumber(os.getenv("RAMP_MS") or tostring(think_ms))
-- Each thread connects its share of the connections first, and wrk asks for a delay before each
-- one's first request: the first that many delays of a thread are those.
local first_delays = math.ceil(tonumber(os.getenv("CONNECTIONS") or "1") / tonumber(os.getenv("THREADS") or "1"))
local delays = 0
local tokens = {}
for token in string.gmatch(os.getenv("TOKENS") or "", "[^,]+") do
  tokens[#tokens + 1] = token
end
local words = {"wireless", "mouse", "keyboard", "compact", "lamp", "smart", "speaker", "desk", "silent", "webcam"}
local orderings = {"price", "-price", "name", "-created_at"}
local counter = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", string.format("%d-%d", os.time(), threads))
  thread:set("seed", threads)
end

function init(args)
  math.randomseed(os.time() * 100 + (seed or 0))
end

-- 1..n, log-uniform: 1 is as likely as 2..3, as 4..7, and so on.
local function popular(n)
  return math.min(n, math.floor(n ^ math.random()))
end

local function read()
  local r = math.random()
  if r < 0.35 then
    return string.format("/api/products/?page=%d", popular(500))
  elseif r < 0.55 then
    return string.format("/api/products/%d/", popular(products))
  elseif r < 0.75 then
    return string.format("/api/products/?category=%d&ordering=%s&page=%d",
      math.random(1, categories), orderings[math.random(1, #orderings)], popular(25))
  elseif r < 0.85 then
    return string.format("/api/products/?search=%s&in_stock=true", words[math.random(1, #words)])
  elseif r < 0.95 then
    local low = math.random(0, 40) * 10
    return string.format("/api/products/?min_price=%d&max_price=%d&page=%d", low, low + 50, popular(10))
  else
    return "/api/categories/"
  end
end

local function order()
  counter = counter + 1
  local a = math.random(1, products)
  local b = a % products + 1
  local body = string.format(
    '{"items": [{"product_id": %d, "quantity": 1}, {"product_id": %d, "quantity": 1}]}', a, b)
  local headers = {
    ["Authorization"] = "Bearer " .. tokens[(counter % #tokens) + 1],
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = string.format("mix-%s-%d", thread_id or "t", counter),
  }
  return wrk.format("POST", "/api/orders/", headers, body)
end

function request()
  if #tokens > 0 and math.random() < order_share then
    return order()
  end
  return wrk.format("GET", read())
end

function delay()
  delays = delays + 1
  if delays <= first_delays then
    return math.random(0, ramp_ms)
  end
  return math.random(math.floor(think_ms / 2), math.floor(think_ms * 3 / 2))
end
