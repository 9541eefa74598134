//! The built-in broker types against the real servers, started by
//! `scripts/brokers.sh start`: RabbitMQ (Web-STOMP, Web-MQTT) and Mosquitto
//! (websockets). Independent clients stand on the broker side:
//! `mosquitto_pub`/`mosquitto_sub` and Python's stomp.py.
//!
//! When no broker listens these tests say so and pass, unless
//! `TETHER_REQUIRE_BROKERS=1` (which `scripts/test.sh` sets after starting
//! them): then a missing broker fails the test. They run one at a time,
//! since some restart or pause a broker.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{call, start_host, wait_event, wait_state, Workspace};
use tokio::process::Command;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> std::path::PathBuf {
    root().join("target/peers/venv/bin/python")
}

/// Whether the brokers are up; panics when they are required and are not.
fn brokers_up() -> bool {
    let up = [8083u16, 15674, 61613].iter().all(|p| {
        std::net::TcpStream::connect_timeout(
            &([127, 0, 0, 1], *p).into(),
            Duration::from_millis(300),
        )
        .is_ok()
    });
    if !up && std::env::var("TETHER_REQUIRE_BROKERS").as_deref() == Ok("1") {
        panic!("the brokers are not running: scripts/brokers.sh start");
    }
    if !up {
        eprintln!("skipped: no brokers on loopback (scripts/brokers.sh start)");
    }
    up
}

fn config(types: &str) -> String {
    format!(
        r#"
[host]
listen = "127.0.0.1:0"
{types}
"#
    )
}

const MOSQUITTO: &str = r#"
[[client_type]]
name = "mosq"
module = "builtin:mqtt"
predefined = true
[client_type.settings]
subscribe = ["tether-test/in/#"]
keepalive_secs = 5
[client_type.defaults]
url = "ws://127.0.0.1:8083"
auto_connect = true
[client_type.defaults.reconnect]
initial_delay_ms = 100
max_delay_ms = 500
"#;

async fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Publishes with stomp.py over plain STOMP (61613).
async fn stomp_publish(destination: &str, body: &str, headers: Value) {
    let script = format!(
        "import stomp,json\nc=stomp.Connection12([('127.0.0.1',61613)],vhost='/')\nc.connect('guest','guest',wait=True)\nc.send({destination:?},{body:?},headers=json.loads({h:?}))\nc.disconnect()\n",
        h = headers.to_string()
    );
    run(python().to_str().unwrap(), &["-c", &script]).await;
}

/// Reads `n` messages from a queue with stomp.py; returns the bodies in
/// order of arrival.
async fn stomp_read(destination: &str, n: usize) -> Vec<String> {
    let script = format!(
        "import stomp,time,json\ngot=[]\nclass L(stomp.ConnectionListener):\n  def on_message(self,f): got.append(f.body)\nc=stomp.Connection12([('127.0.0.1',61613)],vhost='/')\nc.set_listener('',L())\nc.connect('guest','guest',wait=True)\nc.subscribe({destination:?},id=1,ack='auto')\nend=time.time()+15\nwhile len(got)<{n} and time.time()<end: time.sleep(0.05)\ntime.sleep(0.3)\nc.disconnect()\nprint(json.dumps(got))\n"
    );
    let out = run(python().to_str().unwrap(), &["-c", &script]).await;
    serde_json::from_str(out.trim()).unwrap()
}

/// Durable sends through the API, in order, each accepted (202).
async fn send_durably(app: &axum::Router, key: &str, sends: impl Iterator<Item = Value>) {
    for mut body in sends {
        body["durable"] = json!(true);
        let (status, v) = call(app, "POST", &format!("/api/clients/{key}/send"), Some(body)).await;
        assert_eq!(status, 202, "{v}");
    }
}

/// What an independent subscriber printed, a line each.
async fn lines_of(sub: tokio::process::Child) -> Vec<String> {
    let out = sub.wait_with_output().await.unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

async fn outbox_done(app: &axum::Router, key: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, v) = call(app, "GET", &format!("/api/clients/{key}/outbox"), None).await;
        if v["stats"]["done"] == n && v["stats"]["pending"] == 0 && v["stats"]["in_flight"] == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "outbox of {key} not all done: {}",
            v["stats"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn mqtt_on_mosquitto_both_ways_and_across_a_broker_restart() {
    let _one = ONE_AT_A_TIME.lock().await;
    if !brokers_up() {
        return;
    }
    let ws = Workspace::new("mosq");
    ws.write("tether.toml", &config(MOSQUITTO));
    let (host, app) = start_host(&ws.config(), &ws.store_url()).await;
    let mut rx = host.events().subscribe();
    wait_state(&app, "mosq", "open").await;
    wait_event(&mut rx, "mosq", |b| {
        b["event"] == "module" && b["data"]["mqtt"] == "connected"
    })
    .await;

    // 1. Broker side publishes (MQTT 5, JSON content type, retained).
    run(
        "mosquitto_pub",
        &[
            "-p",
            "18830",
            "-V",
            "5",
            "-t",
            "tether-test/in/a",
            "-m",
            r#"{"n":1}"#,
            "-D",
            "publish",
            "content-type",
            "application/json",
        ],
    )
    .await;
    let e = wait_event(&mut rx, "mosq", |b| {
        b["event"] == "module" && b["data"]["topic"].is_string()
    })
    .await;
    assert_eq!(e["data"]["topic"], "tether-test/in/a");
    assert_eq!(e["data"]["body"], json!({"n": 1}));
    assert_eq!(e["data"]["properties"]["content_type"], "application/json");

    // 2. Tether publishes 20 durable messages; an independent subscriber
    // gets all of them, in order, and the outbox ends all done (PUBACKs).
    // The subscriber is a persistent session, registered (and acknowledged
    // by the broker) before anything is sent: it cannot miss the first ones.
    let session = [
        "-p",
        "18830",
        "-t",
        "tether-test/out",
        "-q",
        "1",
        "-i",
        "tether-test-sub",
    ];
    // A clean connect first drops whatever an earlier run left queued.
    run("mosquitto_sub", &[&session[..], &["-E"]].concat()).await;
    run("mosquitto_sub", &[&session[..], &["-c", "-E"]].concat()).await;
    let sub = Command::new("mosquitto_sub")
        .args(session)
        .args(["-c", "-C", "20", "-W", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    send_durably(
        &app,
        "mosq",
        (0..20).map(|i| json!({"topic": "tether-test/out", "body": format!("m{i}")})),
    )
    .await;
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(lines_of(sub).await, want);
    outbox_done(&app, "mosq", 20).await;

    // 3. The broker restarts, with 10 sends queued while it is down: Tether
    // reconnects, subscribes again, and everything flows, in order. The
    // subscriber's persistent session from step 2 survives the restart (the
    // broker keeps it on disk), so whether Tether delivers before or after
    // the subscriber is back, the broker holds every message for it: a gap
    // at the front would be Tether's loss, not the test's race.
    run(
        "bash",
        &[
            root().join("scripts/brokers.sh").to_str().unwrap(),
            "stop-mosquitto",
        ],
    )
    .await;
    wait_event(&mut rx, "mosq", |b| b["event"] == "close").await;
    send_durably(
        &app,
        "mosq",
        (0..10).map(|i| json!({"topic": "tether-test/out", "body": format!("q{i}")})),
    )
    .await;
    run(
        "bash",
        &[
            root().join("scripts/brokers.sh").to_str().unwrap(),
            "start-mosquitto",
        ],
    )
    .await;
    let sub = Command::new("mosquitto_sub")
        .args(session)
        .args(["-c", "-C", "10", "-W", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let e = wait_event(&mut rx, "mosq", |b| {
        b["event"] == "module" && b["data"]["mqtt"] == "connected"
    })
    .await;
    assert_eq!(e["data"]["subscriptions"], json!(["tether-test/in/#"]));
    // Delivered after the restart, in order and once each.
    let want: Vec<String> = (0..10).map(|i| format!("q{i}")).collect();
    assert_eq!(lines_of(sub).await, want);
    outbox_done(&app, "mosq", 30).await;
    run(
        "mosquitto_pub",
        &["-p", "18830", "-t", "tether-test/in/b", "-m", "after"],
    )
    .await;
    let e = wait_event(&mut rx, "mosq", |b| {
        b["data"]["topic"] == "tether-test/in/b"
    })
    .await;
    assert_eq!(e["data"]["body"], "after");
    host.shutdown().await;
}

// Not auto-connected: each test sets the login first.
const RABBIT: &str = r#"
[[client_type]]
name = "rstomp"
module = "builtin:stomp"
predefined = true
[client_type.settings]
subscribe = ["/queue/tether-test-in"]
heartbeat_ms = 1000
[client_type.defaults]
url = "ws://127.0.0.1:15674/ws"

[[client_type]]
name = "rmqtt"
module = "builtin:mqtt"
predefined = true
[client_type.settings]
subscribe = ["tether-test/rabbit/#"]
version = "3.1.1"
[client_type.defaults]
url = "ws://127.0.0.1:15675/ws"
"#;

#[tokio::test]
async fn stomp_and_mqtt_on_rabbitmq_both_ways() {
    let _one = ONE_AT_A_TIME.lock().await;
    if !brokers_up() {
        return;
    }
    let ws = Workspace::new("rabbit");
    ws.write("tether.toml", &config(RABBIT));
    let (host, app) = start_host(&ws.config(), &ws.store_url()).await;
    let mut rx = host.events().subscribe();
    for (key, k) in [("rstomp", "stomp"), ("rmqtt", "mqtt")] {
        // Set the instance's broker login.
        let (status, v) = call(
            &app,
            "PATCH",
            &format!("/api/clients/{key}"),
            Some(json!({"user": "guest", "password": "guest"})),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        call(&app, "POST", &format!("/api/clients/{key}/connect"), None).await;
        wait_event(&mut rx, key, |b| {
            b["event"] == "module" && b["data"][k] == "connected"
        })
        .await;
    }

    // The protocol state the API (and the UI) shows.
    let (_, v) = call(&app, "GET", "/api/clients/rstomp", None).await;
    let p = &v["protocol"];
    assert_eq!(p["protocol"], "STOMP 1.2", "{v}");
    assert_eq!(p["subscriptions"], json!(["/queue/tether-test-in"]));
    assert!(
        p["heartbeat"]["receive_ms"].as_u64().unwrap() >= 1000,
        "{p}"
    );
    assert!(p["last_heard"].as_str().unwrap().ends_with('Z'), "{p}");
    let (_, v) = call(&app, "GET", "/api/clients/rmqtt", None).await;
    assert_eq!(v["protocol"]["protocol"], "MQTT 3.1.1", "{v}");
    assert_eq!(
        v["protocol"]["subscriptions"],
        json!(["tether-test/rabbit/#"])
    );

    // STOMP, broker side → Tether: body JSON-decoded, headers kept.
    stomp_publish(
        "/queue/tether-test-in",
        r#"{"order":7}"#,
        json!({"content-type": "application/json", "x-trace": "abc"}),
    )
    .await;
    let e = wait_event(&mut rx, "rstomp", |b| {
        b["event"] == "module" && b["data"]["destination"].is_string()
    })
    .await;
    assert_eq!(e["data"]["destination"], "/queue/tether-test-in");
    assert_eq!(e["data"]["body"], json!({"order": 7}));
    assert_eq!(e["data"]["headers"]["x-trace"], "abc");

    // STOMP, Tether → broker: 20 durable sends with receipts, read back by
    // an independent client in order; the receipts complete the outbox.
    send_durably(
        &app,
        "rstomp",
        (0..20).map(|i| json!({"destination": "/queue/tether-test-out", "body": format!("s{i}")})),
    )
    .await;
    outbox_done(&app, "rstomp", 20).await;
    let got = stomp_read("/queue/tether-test-out", 20).await;
    let want: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
    assert_eq!(got, want);

    // MQTT 3.1.1 on RabbitMQ: broker-side publish (plain MQTT port) in,
    // a durable send out to a STOMP reader of the same topic exchange.
    run(
        "mosquitto_pub",
        &[
            "-p",
            "1884",
            "-u",
            "guest",
            "-P",
            "guest",
            "-t",
            "tether-test/rabbit/x",
            "-m",
            "hello",
        ],
    )
    .await;
    let e = wait_event(&mut rx, "rmqtt", |b| {
        b["data"]["topic"] == "tether-test/rabbit/x"
    })
    .await;
    assert_eq!(e["data"]["body"], "hello");
    let (status, _) = call(
        &app,
        "POST",
        "/api/clients/rmqtt/send",
        Some(json!({"topic": "tether-test/rabbit/out", "body": "to-rabbit", "durable": true})),
    )
    .await;
    assert_eq!(status, 202);
    outbox_done(&app, "rmqtt", 1).await;

    // An operator's disconnect says goodbye in STOMP: DISCONNECT with a
    // receipt. RabbitMQ 3.10 answers it by closing (1000 "STOMP died")
    // rather than with a RECEIPT; either ends the link cleanly before the
    // host's own close (after 2 s, "disconnected by operator").
    let asked = Instant::now();
    call(&app, "POST", "/api/clients/rstomp/disconnect", None).await;
    let closed = wait_event(&mut rx, "rstomp", |b| b["event"] == "close").await;
    assert_eq!(closed["code"], 1000, "{closed}");
    assert_eq!(
        closed["reason"], "STOMP died",
        "the broker did not see a DISCONNECT: {closed}"
    );
    assert!(asked.elapsed() < Duration::from_secs(2));
    let (_, v) = call(&app, "GET", "/api/clients/rstomp", None).await;
    assert_eq!(v["protocol"], Value::Null, "{v}");
    host.shutdown().await;
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_error_and_backs_off() {
    let _one = ONE_AT_A_TIME.lock().await;
    if !brokers_up() {
        return;
    }
    let ws = Workspace::new("badpw");
    ws.write("tether.toml", &config(RABBIT));
    let (host, app) = start_host(&ws.config(), &ws.store_url()).await;
    let mut rx = host.events().subscribe();
    // Auto-connect: the host keeps trying, with backoff.
    let started = Instant::now();
    let (status, v) = call(
        &app,
        "PATCH",
        "/api/clients/rstomp",
        Some(json!({"user": "guest", "password": "wrong", "auto_connect": true})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    call(&app, "POST", "/api/clients/rstomp/connect", None).await;
    let e = wait_event(&mut rx, "rstomp", |b| {
        b["event"] == "error" && b["kind"] == "module"
    })
    .await;
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("STOMP ERROR from the broker"), "{message}");
    assert!(
        message.to_lowercase().contains("access refused") || message.contains("Bad CONNECT"),
        "{message}"
    );
    assert!(!message.contains("wrong"), "the password leaked: {message}");
    // Backoff: over the next 6 s, attempts numbered 1, 2, 3, … whose delays
    // stay inside windows that double from 1 s (full jitter: anywhere from
    // zero up to the window, so the count alone is not a fair test: 6
    // opens in 6 s happen about one run in 30).
    let mut opens = 1;
    let mut attempts = Vec::new();
    while started.elapsed() < Duration::from_secs(6) {
        match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            Ok(Ok(e)) if e.client == "rstomp" && e.body["event"] == "open" => opens += 1,
            Ok(Ok(e)) if e.client == "rstomp" && e.body["event"] == "reconnecting" => attempts
                .push((
                    e.body["attempt"].as_u64().unwrap_or(0),
                    e.body["delay_ms"].as_u64().unwrap_or(u64::MAX),
                )),
            _ => {}
        }
    }
    assert!(opens >= 2, "it stopped trying after one attempt");
    assert!(opens <= 8, "{opens} connections in 6 s: no backoff");
    assert!(!attempts.is_empty(), "no reconnect attempt reported");
    for (i, (attempt, delay_ms)) in attempts.iter().enumerate() {
        assert_eq!(
            *attempt,
            attempts[0].0 + i as u64,
            "attempts count up: {attempts:?}"
        );
        let window = 1000u64 << attempt.saturating_sub(1).min(6);
        assert!(
            *delay_ms < window.min(60_000),
            "attempt {attempt} waited {delay_ms} ms, over its {window} ms window: {attempts:?}"
        );
    }
    host.shutdown().await;
}

/// Resumes a paused process even when the test fails.
struct Resume(String);
impl Drop for Resume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0])
            .status();
    }
}

#[tokio::test]
async fn stomp_heartbeat_loss_is_detected_within_the_interval_and_grace() {
    let _one = ONE_AT_A_TIME.lock().await;
    if !brokers_up() {
        return;
    }
    let ws = Workspace::new("hb");
    ws.write("tether.toml", &config(RABBIT));
    let (host, app) = start_host(&ws.config(), &ws.store_url()).await;
    let mut rx = host.events().subscribe();
    call(
        &app,
        "PATCH",
        "/api/clients/rstomp",
        Some(json!({"user": "guest", "password": "guest"})),
    )
    .await;
    call(&app, "POST", "/api/clients/rstomp/connect", None).await;
    let e = wait_event(&mut rx, "rstomp", |b| b["data"]["stomp"] == "connected").await;
    let receive_ms = e["data"]["heartbeat"]["receive_ms"].as_u64().unwrap();
    assert!(receive_ms > 0, "no heart-beats negotiated: {e}");
    // Healthy for three intervals: no false alarm.
    let quiet = tokio::time::timeout(Duration::from_millis(3 * receive_ms), async {
        loop {
            let e = rx.recv().await.unwrap();
            if e.client == "rstomp" && e.body["event"] == "error" {
                return e.body.clone();
            }
        }
    })
    .await;
    assert!(
        quiet.is_err(),
        "an error while the broker was healthy: {quiet:?}"
    );
    let beam = run("pgrep", &["-f", "beam.smp.*rabbit"]).await;
    let pid = beam.lines().next().unwrap().trim().to_string();
    let _resume = Resume(pid.clone());
    run("kill", &["-STOP", &pid]).await;
    let stopped = Instant::now();
    let e = wait_event(&mut rx, "rstomp", |b| {
        b["event"] == "error" && b["kind"] == "module"
    })
    .await;
    let took = stopped.elapsed();
    drop(_resume);
    assert!(
        e["message"].as_str().unwrap().contains("heart-beat lost"),
        "{e}"
    );
    // Nothing arrived for at most receive_ms before the pause; the limit is
    // receive_ms plus half, checked every tenth.
    let limit = Duration::from_millis(receive_ms * 3 / 2 + receive_ms / 10 + 300);
    assert!(took <= limit, "detected after {took:?}, limit {limit:?}");
    host.shutdown().await;
}
