-- wrk script: product detail pages, ids chosen at random from 1..IDS (all of them cached beforehand).
local ids = tonumber(os.getenv("IDS") or "1000")

function setup(thread)
  thread:set("seed", math.random(1, 1000000))
end

function init(args)
  math.randomseed(os.time() + (seed or 0))
end

function request()
  return wrk.format("GET", string.format("/api/products/%d/", math.random(1, ids)))
end
