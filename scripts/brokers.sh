#!/usr/bin/env bash
# Installs (when missing), starts and stops the message brokers the broker
# end-to-end tests talk to, all on loopback, in target/brokers:
#   - RabbitMQ with Web-STOMP (ws://127.0.0.1:15674/ws), Web-MQTT
#     (ws://127.0.0.1:15675/ws), plain STOMP on 61613 and MQTT on 1884;
#   - Mosquitto with a websockets listener (ws://127.0.0.1:8083) and a plain
#     one on 18830 for mosquitto_pub/mosquitto_sub.
# Usage: scripts/brokers.sh install|start|stop|env|start-mosquitto|stop-mosquitto
# `env` prints the variables the tests read (TETHER_TEST_*).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$root/target/brokers
mkdir -p "$dir"

rabbit_env() {
  export HOME=$dir/rabbit-home
  export RABBITMQ_NODENAME=rabbit@localhost
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=5673
  export RABBITMQ_DIST_PORT=25673
  export RABBITMQ_CONFIG_FILE=$dir/rabbitmq
  export RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
  export RABBITMQ_MNESIA_BASE=$dir/rabbit-mnesia
  export RABBITMQ_LOG_BASE=$dir/rabbit-log
  export ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  mkdir -p "$HOME" "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"
  # Started as root, rabbitmq-server runs as the rabbitmq user.
  if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
    chown -R rabbitmq:rabbitmq "$HOME" "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"
  fi
}

wait_port() { # port seconds
  for _ in $(seq 1 $(($2 * 10))); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "brokers: nothing listens on 127.0.0.1:$1 after $2 s" >&2
  return 1
}

install() {
  local missing=""
  command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || missing="$missing rabbitmq-server"
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
  command -v mosquitto_pub >/dev/null 2>&1 || missing="$missing mosquitto-clients"
  if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
  local venv=$root/target/peers/venv
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -c 'import stomp' 2>/dev/null || "$venv/bin/pip" install -q 'stomp.py>=8,<10'
}

start_rabbit() {
  rabbit_env
  cat > "$dir/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:5673
loopback_users = none
web_stomp.tcp.ip = 127.0.0.1
web_stomp.tcp.port = 15674
web_mqtt.tcp.ip = 127.0.0.1
web_mqtt.tcp.port = 15675
stomp.listeners.tcp.1 = 127.0.0.1:61613
mqtt.listeners.tcp.1 = 127.0.0.1:1884
EOF
  echo '[rabbitmq_web_mqtt,rabbitmq_web_stomp].' > "$dir/enabled_plugins"
  chmod a+r "$dir/rabbitmq.conf" "$dir/enabled_plugins"
  pgrep -x epmd >/dev/null || epmd -address 127.0.0.1 -daemon
  rabbitmq-server > "$dir/rabbit.out" 2>&1 &
  echo $! > "$dir/rabbit.pid"
  wait_port 15674 90
  rabbitmqctl -q await_startup >/dev/null
}

start_mosquitto() {
  # Started as root, mosquitto drops to its own user: its data directory must
  # be writable by that user.
  mkdir -p "$dir/mosquitto-data"; chmod 0777 "$dir/mosquitto-data"
  cat > "$dir/mosquitto.conf" <<EOF
log_dest stderr
allow_anonymous true
# No per-client queue limit: the default (1000) drops QoS 1 messages for a
# subscriber that falls behind a flood, which the benchmark makes.
max_queued_messages 0
# Sessions and their queued messages survive a restart (the broker-restart
# test registers a persistent subscriber before it stops the broker).
persistence true
persistence_location $dir/mosquitto-data/
listener 18830 127.0.0.1
socket_domain ipv4
listener 8083 127.0.0.1
socket_domain ipv4
protocol websockets
EOF
  mosquitto -c "$dir/mosquitto.conf" > "$dir/mosquitto.out" 2>&1 &
  echo $! > "$dir/mosquitto.pid"
  wait_port 8083 20
}

stop() {
  if [ -f "$dir/rabbit.pid" ]; then
    rabbit_env
    rabbitmqctl -q shutdown >/dev/null 2>&1 || kill "$(cat "$dir/rabbit.pid")" 2>/dev/null || true
    rm -f "$dir/rabbit.pid"
  fi
  if [ -f "$dir/mosquitto.pid" ]; then
    local pid; pid=$(cat "$dir/mosquitto.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$dir/mosquitto.pid"
  fi
}

env_vars() {
  echo "TETHER_TEST_RABBIT_STOMP=ws://127.0.0.1:15674/ws"
  echo "TETHER_TEST_RABBIT_MQTT=ws://127.0.0.1:15675/ws"
  echo "TETHER_TEST_RABBIT_STOMP_TCP=127.0.0.1:61613"
  echo "TETHER_TEST_MOSQUITTO=ws://127.0.0.1:8083"
  echo "TETHER_TEST_MOSQUITTO_TCP=18830"
  echo "TETHER_TEST_RABBIT_DIR=$dir"
  echo "TETHER_TEST_PYTHON=$root/target/peers/venv/bin/python"
}

case "${1:-}" in
  install) install ;;
  start) stop; start_mosquitto; start_rabbit; echo "brokers: RabbitMQ and Mosquitto up" ;;
  start-mosquitto) start_mosquitto ;;
  stop-mosquitto)
    if [ -f "$dir/mosquitto.pid" ]; then
      pid=$(cat "$dir/mosquitto.pid"); kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      rm -f "$dir/mosquitto.pid"
    fi ;;
  stop) stop ;;
  env) env_vars ;;
  *) echo "usage: $0 install|start|stop|env" >&2; exit 2 ;;
esac
