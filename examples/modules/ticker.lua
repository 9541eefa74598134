-- Market feed module: subscribes to symbols, keeps the last price of each,
-- and publishes a compact quote event for every update.
local util = require("util")

local last = {}

function on_open(conn)
  conn:send(json.encode({ op = "subscribe", symbols = { "ACME", "GLOBEX", "INITECH" } }))
end

function on_message(conn, msg)
  local q = util.try_json(msg.data)
  if type(q) ~= "table" or q.symbol == nil then
    return
  end
  local previous = last[q.symbol]
  last[q.symbol] = q.price
  emit({ symbol = q.symbol, price = q.price, change = previous and (q.price - previous) or 0 })
end
