-- RabbitMQ Web-STOMP module: CONNECT, SUBSCRIBE to /queue/orders, publish
-- each MESSAGE body as a module event. STOMP frames end with a NUL byte.
local NUL = "\0"

local function frame(command, headers, body)
  local lines = { command }
  for k, v in pairs(headers) do
    lines[#lines + 1] = k .. ":" .. v
  end
  return table.concat(lines, "\n") .. "\n\n" .. (body or "") .. NUL
end

local function parse(data)
  local head, body = data:match("^(.-)\n\n(.*)$")
  if not head then
    return nil
  end
  local command = head:match("^([^\n]+)")
  local headers = {}
  for k, v in head:gmatch("\n([^:\n]+):([^\n]*)") do
    headers[k] = v
  end
  body = body:gsub(NUL .. "%s*$", "")
  return command, headers, body
end

function on_open(conn)
  conn:send(frame("CONNECT", { ["accept-version"] = "1.2", host = "/", ["heart-beat"] = "0,0" }))
end

function on_message(conn, msg)
  local command, headers, body = parse(msg.data)
  if command == "CONNECTED" then
    conn:send(frame("SUBSCRIBE", { id = "sub-0", destination = "/queue/orders", ack = "auto" }))
    emit({ stomp = "connected", server = headers.server })
  elseif command == "MESSAGE" then
    emit({ destination = headers.destination, body = body })
  elseif command == "ERROR" then
    log.error("STOMP error: " .. (headers.message or body or "?"))
  end
end
