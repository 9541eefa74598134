-- builtin:mqtt: an MQTT 3.1.1 / 5.0 client over WebSocket (Mosquitto,
-- RabbitMQ Web-MQTT, EMQX, HiveMQ). Copy this file to change it; the codec
-- is the host's `mqtt` table (Rust).
--
-- Settings ([client_type.settings]):
--   subscribe = {"sensors/+/temp", "alerts/#"}  topic filters
--   qos       = 1          for subscriptions and durable sends (0 or 1)
--   version   = "5"        or "3.1.1"
--   client_id = "…"        default: the instance key
--   clean_start = true     false keeps the broker-side session
--   session_expiry_secs = 0  (version 5, with clean_start = false)
--   keepalive_secs = 30    PINGREQ period; the link is dead after 1.5 x
--   will = {topic = "…", payload = "…", qos = 0, retain = false}
-- The instance's user and password are the broker login.
--
-- Events (emit):
--   {mqtt = "connected", session_present, subscriptions = {...}}
--   {topic, qos, retain, dup, properties = {...}, body}
--     (body is JSON-decoded when the content type says JSON)
-- An incoming PUBLISH at QoS 1 gets its PUBACK once emitted. Durable sends
-- are PUBLISHes at QoS 1 whose packet ids the outbox assigns (1 to 65000);
-- the PUBACK acknowledges them. This module's own packets (SUBSCRIBE) use
-- ids above 65000.

local version
local decoder
local login, passcode
local timers = {}
local acked = {} -- packet ids of PUBACKs not yet reported to the outbox
local silent_ms = 0
local subscriptions = {}

local function stop_timers()
  for _, id in ipairs(timers) do
    timer.cancel(id)
  end
  timers = {}
end

local function send(conn, packet)
  conn:send_binary(mqtt.encode(packet, version))
end

function before_connect(req)
  login, passcode = req.user, req.password
end

function on_open(conn)
  version = settings.version or "5"
  decoder = mqtt.decoder(version)
  acked, subscriptions, silent_ms = {}, {}, 0
  stop_timers()
  local clean = settings.clean_start
  if clean == nil then
    clean = true
  end
  local props = nil
  if version == "5" and settings.session_expiry_secs then
    props = { session_expiry = settings.session_expiry_secs }
  end
  send(conn, {
    type = "connect",
    client_id = settings.client_id or conn.key,
    clean = clean,
    keepalive = settings.keepalive_secs or 30,
    username = login,
    password = passcode,
    will = settings.will,
    properties = props,
  })
end

local state = {} -- what conn:report shows in the API and the UI
local function heard(conn)
  state.last_heard = os.date("!%Y-%m-%dT%H:%M:%SZ")
  conn:report(state)
end

local function start_keepalive(conn)
  local period = (settings.keepalive_secs or 30) * 1000
  if period == 0 then
    return
  end
  timers[#timers + 1] = timer.every(period, function()
    send(conn, { type = "pingreq" })
  end)
  local tick = math.max(10, period // 10)
  local limit = period + period // 2
  timers[#timers + 1] = timer.every(tick, function()
    if silent_ms == 0 then
      heard(conn)
    end
    silent_ms = silent_ms + tick
    if silent_ms >= limit then
      stop_timers()
      conn:close(4000, "MQTT keepalive lost")
      error(string.format("MQTT keepalive lost: nothing from the broker for %d ms", silent_ms))
    end
  end)
end

local CONNACK = {
  [1] = "unacceptable protocol version", [2] = "client id rejected",
  [3] = "server unavailable", [4] = "bad user name or password", [5] = "not authorized",
  [128] = "unspecified error", [132] = "unsupported protocol version",
  [133] = "client id not valid", [134] = "bad user name or password",
  [135] = "not authorized", [136] = "server unavailable", [137] = "server busy",
  [138] = "banned",
}

local function handle_publish(p)
  local body = p.payload
  local ct = p.properties and p.properties.content_type or ""
  if ct:find("json", 1, true) then
    local ok, decoded = pcall(json.decode, body)
    if ok then
      body = decoded
    end
  end
  emit({
    topic = p.topic,
    qos = p.qos,
    retain = p.retain,
    dup = p.dup,
    properties = p.properties,
    body = body,
  })
end

function on_message(conn, msg)
  silent_ms = 0
  for _, p in ipairs(decoder:feed(msg.data)) do
    local t = p.type
    if t == "connack" then
      if p.code ~= 0 then
        local why = CONNACK[p.code] or ("code " .. p.code)
        if p.properties and p.properties.reason_string then
          why = why .. ": " .. p.properties.reason_string
        end
        conn:close(4001, "MQTT CONNECT refused")
        error("MQTT CONNECT refused by the broker: " .. why)
      end
      start_keepalive(conn)
      local filters = {}
      for _, f in ipairs(settings.subscribe or {}) do
        filters[#filters + 1] = { f, settings.qos or 1 }
        subscriptions[#subscriptions + 1] = f
      end
      if #filters > 0 then
        send(conn, { type = "subscribe", pid = 65001, filters = filters })
      end
      state = {
        protocol = "MQTT " .. version,
        subscriptions = #subscriptions > 0 and subscriptions or nil,
        keepalive_secs = settings.keepalive_secs or 30,
        session_present = p.session_present,
      }
      heard(conn)
      emit({
        mqtt = "connected",
        session_present = p.session_present,
        subscriptions = #subscriptions > 0 and subscriptions or nil,
      })
      conn:ready()
    elseif t == "publish" then
      local ok, err = pcall(handle_publish, p)
      if not ok then
        -- No PUBACK: the broker sends it again (QoS 1).
        error("MQTT message on " .. tostring(p.topic) .. " not handled: " .. tostring(err))
      end
      if p.qos == 1 then
        send(conn, { type = "puback", pid = p.pid })
      end
    elseif t == "puback" then
      acked[#acked + 1] = p.pid
    elseif t == "suback" then
      for i, code in ipairs(p.codes) do
        if code >= 128 then
          error("MQTT subscription to " .. tostring(subscriptions[i]) .. " refused (code " .. code .. ")")
        end
      end
    elseif t == "disconnect" then
      local why = p.properties and p.properties.reason_string or ("code " .. p.code)
      error("MQTT DISCONNECT from the broker: " .. why)
    end
  end
end

-- An operator's close: DISCONNECT (MQTT has no answer to it), then the
-- host closes the link.
function before_close(conn)
  if state.protocol ~= nil then
    send(conn, { type = "disconnect" })
  end
  return false
end

-- The PUBACKs that arrived with this message: outbox messages done.
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
