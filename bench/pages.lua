-- wrk script: list pages chosen at random, `?page=1..PAGES` on the URL's path (cold list, psycopg2 ceiling).
local pages = tonumber(os.getenv("PAGES") or "500")

function setup(thread)
  thread:set("seed", math.random(1, 1000000))
end

function init(args)
  math.randomseed(os.time() + (seed or 0))
end

function request()
  return wrk.format("GET", string.format("%s?page=%d", wrk.path, math.random(1, pages)))
end
