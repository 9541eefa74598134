-- builtin:stomp: a STOMP 1.2 client over WebSocket (RabbitMQ Web-STOMP,
-- ActiveMQ, Artemis). Copy this file to change it; the codec is the host's
-- `stomp` table (Rust).
--
-- Settings ([client_type.settings]):
--   subscribe    = {"/queue/orders", "/topic/prices"}  destinations
--   heartbeat_ms = 10000     both ways; 0 turns heart-beats off
--   host         = "/"       the virtual host
--   ack          = "client-individual"   or "auto"
-- The instance's user and password are the broker login.
--
-- Events (emit):
--   {stomp = "connected", server, version, heartbeat = {send_ms, receive_ms},
--    subscriptions = {...}}
--   {destination, subscription, message_id, headers = {...}, body}
--     (body is JSON-decoded when content-type says JSON)
-- A MESSAGE is ACKed once emitted, NACKed if handling it failed. An ERROR
-- frame becomes an error event with the broker's message. Durable sends
-- carry a receipt; the RECEIPT acknowledges them in the outbox.

local decoder
local login, passcode
local send_ms, receive_ms = 0, 0
local silent_ms = 0 -- since anything arrived
local tick_ms = 0
local timers = {}
local acked = {} -- receipt ids not yet reported to the outbox
local subscriptions = {}

local function setting(name, default)
  local v = settings[name]
  if v == nil then
    return default
  end
  return v
end

local function stop_timers()
  for _, id in ipairs(timers) do
    timer.cancel(id)
  end
  timers = {}
end

local function send(conn, frame)
  conn:send(stomp.encode(frame))
end

function before_connect(req)
  login, passcode = req.user, req.password
end

function on_open(conn)
  decoder = stomp.decoder()
  acked, subscriptions, silent_ms = {}, {}, 0
  stop_timers()
  local hb = setting("heartbeat_ms", 10000)
  local headers = {
    ["accept-version"] = "1.2",
    host = setting("host", "/"),
    ["heart-beat"] = hb .. "," .. hb,
  }
  if login then
    headers.login = login
    headers.passcode = passcode or ""
  end
  send(conn, { command = "CONNECT", headers = headers })
end

-- The UI shows when the broker was last heard (to the tick).
local state = {} -- what conn:report shows in the API and the UI
local function heard(conn)
  state.last_heard = os.date("!%Y-%m-%dT%H:%M:%SZ")
  conn:report(state)
end

-- Heart-beats: a newline every send_ms; the link is dead when nothing came
-- for receive_ms plus half of it (the grace the specification suggests).
local function start_heartbeats(conn)
  if send_ms > 0 then
    timers[#timers + 1] = timer.every(send_ms, function()
      conn:send("\n")
    end)
  end
  if receive_ms > 0 then
    tick_ms = math.max(10, receive_ms // 10)
    local limit = receive_ms + receive_ms // 2
    timers[#timers + 1] = timer.every(tick_ms, function()
      if silent_ms == 0 then
        heard(conn)
      end
      silent_ms = silent_ms + tick_ms
      if silent_ms >= limit then
        stop_timers()
        conn:close(4000, "STOMP heart-beat lost")
        error(string.format("STOMP heart-beat lost: nothing from the broker for %d ms (negotiated %d ms)", silent_ms, receive_ms))
      end
    end)
  end
end

local function handle_message(frame)
  local body = frame.body
  local ct = frame.headers["content-type"] or ""
  if ct:find("json", 1, true) then
    local ok, decoded = pcall(json.decode, body)
    if ok then
      body = decoded
    end
  end
  emit({
    destination = frame.headers.destination,
    subscription = frame.headers.subscription,
    message_id = frame.headers["message-id"],
    headers = frame.headers,
    body = body,
  })
end

function on_message(conn, msg)
  silent_ms = 0
  for _, frame in ipairs(decoder:feed(msg.data)) do
    local c = frame.command
    if c == "CONNECTED" then
      local hb = setting("heartbeat_ms", 10000)
      send_ms, receive_ms = stomp.heartbeats(hb, hb, frame.headers["heart-beat"])
      start_heartbeats(conn)
      local ack = setting("ack", "client-individual")
      for i, destination in ipairs(setting("subscribe", {})) do
        send(conn, {
          command = "SUBSCRIBE",
          headers = { id = "sub-" .. i, destination = destination, ack = ack },
        })
        subscriptions[#subscriptions + 1] = destination
      end
      state = {
        protocol = "STOMP " .. tostring(frame.headers.version),
        server = frame.headers.server,
        subscriptions = #subscriptions > 0 and subscriptions or nil,
        heartbeat = { send_ms = send_ms, receive_ms = receive_ms },
      }
      heard(conn)
      emit({
        stomp = "connected",
        server = frame.headers.server,
        version = frame.headers.version,
        heartbeat = { send_ms = send_ms, receive_ms = receive_ms },
        subscriptions = #subscriptions > 0 and subscriptions or nil,
      })
      conn:ready()
    elseif c == "MESSAGE" then
      local ok, err = pcall(handle_message, frame)
      local id = frame.headers.ack
      if id and setting("ack", "client-individual") ~= "auto" then
        send(conn, { command = ok and "ACK" or "NACK", headers = { id = id } })
      end
      if not ok then
        error("STOMP message on " .. tostring(frame.headers.destination) .. " not handled (NACKed): " .. tostring(err))
      end
    elseif c == "RECEIPT" then
      local id = frame.headers["receipt-id"]
      if id == "tether-disconnect" then
        conn:close(1000, "STOMP DISCONNECT receipted")
      else
        acked[#acked + 1] = id
      end
    elseif c == "ERROR" then
      local why = frame.headers.message or ""
      if #frame.body > 0 then
        why = why .. ": " .. frame.body:gsub("%s+$", "")
      end
      -- The broker should close after an ERROR; not all do over WebSocket.
      conn:close(4002, "STOMP ERROR")
      error("STOMP ERROR from the broker: " .. why)
    end
  end
end

-- An operator's close: DISCONNECT with a receipt; the RECEIPT closes the
-- link (the host closes it anyway after two seconds).
function before_close(conn)
  if state.protocol == nil then
    return false
  end
  send(conn, { command = "DISCONNECT", headers = { receipt = "tether-disconnect" } })
  return true
end

-- The receipts that arrived with this message: outbox messages done.
function outbox_ack(_)
  local ids = acked
  acked = {}
  return ids
end

function on_close(conn, _, _)
  stop_timers()
  state = {}
  conn:report(nil)
end
