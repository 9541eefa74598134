//! `kill -9` of `tether serve` while a `builtin:mqtt` client has QoS 1
//! PUBLISHes in flight to Mosquitto: after a restart on the same store,
//! every send the API accepted reaches an independent subscriber
//! (`mosquitto_sub`), in order per connection, with duplicates only among
//! what was in flight, and every one ends `done` by its PUBACK.
//!
//! Needs the brokers of `scripts/brokers.sh start`; without them it says so
//! and passes, unless `TETHER_REQUIRE_BROKERS=1`.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "broker-crash-token";
const N: usize = 500;

fn brokers_up() -> bool {
    let up = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], 8083).into(),
        Duration::from_millis(300),
    )
    .is_ok();
    if !up && std::env::var("TETHER_REQUIRE_BROKERS").as_deref() == Ok("1") {
        panic!("Mosquitto is not running: scripts/brokers.sh start");
    }
    if !up {
        eprintln!("skipped: no Mosquitto on 127.0.0.1:8083 (scripts/brokers.sh start)");
    }
    up
}

fn post(agent: &ureq::Agent, url: String, body: Option<serde_json::Value>) -> serde_json::Value {
    let req = agent
        .post(url.clone())
        .header("Authorization", format!("Bearer {TOKEN}"));
    let mut r = match body {
        Some(b) => req.send_json(b).unwrap(),
        None => req.send_empty().unwrap(),
    };
    assert_eq!(
        r.status(),
        202,
        "{url}: {}",
        r.body_mut().read_to_string().unwrap_or_default()
    );
    r.body_mut().read_json().unwrap_or(serde_json::Value::Null)
}

fn outbox(agent: &ureq::Agent, api: &str) -> serde_json::Value {
    agent
        .get(format!("{api}/api/clients/pub/outbox?limit=1"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

#[test]
fn kill_9_with_qos1_in_flight_loses_nothing_the_api_accepted() {
    if !brokers_up() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tether-broker-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let topic = format!("tether-crash/{}", std::process::id());
    std::fs::write(
        dir.join("tether.toml"),
        "[host]\nlisten = \"127.0.0.1:0\"\n\n[[client_type]]\nname = \"pub\"\npredefined = true\nmodule = \"builtin:mqtt\"\n[client_type.defaults]\nurl = \"ws://127.0.0.1:8083\"\n",
    )
    .unwrap();
    // The independent subscriber, at QoS 1, for the whole test.
    let mut sub = Command::new("mosquitto_sub")
        .args(["-p", "18830", "-q", "1", "-t", &topic])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let lines = BufReader::new(sub.stdout.take().unwrap());
    let seen = got.clone();
    std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            seen.lock().unwrap().push(line);
        }
    });
    std::thread::sleep(Duration::from_millis(300));

    let config = dir.join("tether.toml");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut first = support::serve(&config, TOKEN, &[]);
    let api = first.api.clone();
    for i in 0..N {
        let stored = post(
            &agent,
            format!("{api}/api/clients/pub/send"),
            Some(serde_json::json!({"topic": topic, "body": format!("m{i}"), "durable": true})),
        );
        assert_eq!(stored["durable"], true);
    }
    post(&agent, format!("{api}/api/clients/pub/connect"), None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().len() < 50 {
        assert!(Instant::now() < deadline, "delivery never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    let before = got.lock().unwrap().len();

    let second = support::serve(&config, TOKEN, &[]);
    let api = second.api.clone();
    post(&agent, format!("{api}/api/clients/pub/connect"), None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let distinct: BTreeSet<String> = got.lock().unwrap().iter().cloned().collect();
        let stats = outbox(&agent, &api)["stats"].clone();
        if distinct.len() == N && stats["done"] == N as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {N} distinct arrived, outbox {stats}",
            distinct.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(second);
    let _ = sub.kill();
    let _ = sub.wait();

    // In order, with a resend only of a suffix of what came before the
    // kill: one increasing run from the first connection, one from the
    // second (messages the broker still held reach the subscriber after the
    // kill, so the runs are told apart by where the numbers step back).
    let got: Vec<usize> = got
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.trim_start_matches('m').parse().unwrap())
        .collect();
    let resets: Vec<usize> = (1..got.len())
        .filter(|&i| got[i] != got[i - 1] + 1)
        .collect();
    assert!(
        resets.len() <= 1,
        "out of order at {resets:?} (of {} received)",
        got.len()
    );
    let split = resets.first().copied().unwrap_or(got.len());
    let (run1, run2) = got.split_at(split);
    assert_eq!(run1.first(), Some(&0));
    assert_eq!(got.last(), Some(&(N - 1)));
    let end = *run1.last().unwrap();
    let start = run2.first().copied().unwrap_or(end + 1);
    assert!(start <= end + 1, "a gap: {end} then {start}");
    let resent = end + 1 - start;
    assert!(resent <= 256, "{resent} duplicates");
    eprintln!(
        "{before} arrived before the kill was seen, {end} before the restart; {resent} resent"
    );
    let _ = std::fs::remove_dir_all(dir);
}
