-- Echo service module: greets the server, publishes every reply, and keeps
-- an application-level heartbeat going while the connection is open.
local util = require("util")

local heartbeat = nil
local sent = 0

function before_connect(client)
  -- Secrets come from the environment, never from the config file.
  local token = env("ECHO_TOKEN")
  if token then
    client.headers["Authorization"] = "Bearer " .. token
  end
end

function on_open(conn)
  log.info("echo connected as " .. conn.key)
  conn:send(json.encode({ type = "hello", from = conn.key }))
  heartbeat = timer.every(10000, function()
    sent = sent + 1
    conn:send(json.encode({ type = "heartbeat", n = sent }))
  end)
end

function on_message(conn, msg)
  if msg.type == "text" then
    emit({ echoed = util.try_json(msg.data) })
  else
    emit({ echoed_bytes = #msg.data })
  end
end

function on_error(conn, kind, description)
  log.warn("echo error (" .. kind .. "): " .. description)
end

function on_close(conn, code, reason)
  if heartbeat then
    timer.cancel(heartbeat)
    heartbeat = nil
  end
  log.info("echo closed with " .. code)
end
