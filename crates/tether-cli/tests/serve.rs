//! `tether serve` and `tether clients` as an operator runs them: the real
//! binary, a config folder, the SQLite default, a tungstenite echo server.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod support;
use support::{echo_server, Serve};

const TOKEN: &str = "cli-test-token";

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("modules")).unwrap();
    dir
}

/// Starts `tether serve`; returns it and the API URL it printed.
fn serve(config: &std::path::Path) -> (Serve, String) {
    serve_with(config, &[])
}

/// `serve` with more environment variables.
fn serve_with(config: &std::path::Path, env: &[(&str, &str)]) -> (Serve, String) {
    let s = support::serve(config, TOKEN, env);
    let api = s.api.clone();
    (s, api)
}

fn clients(api: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("clients")
        .args(args)
        .args(["--api", api])
        .env("TETHER_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test]
async fn operator_walkthrough() {
    let echo = echo_server().await;
    let dir = tempdir("walk");
    std::fs::write(
        dir.join("tether.toml"),
        format!(
            "[host]\nlisten = \"127.0.0.1:0\"\n\n[[client_type]]\nname = \"feed\"\nmodule = \"modules/feed.lua\"\n[client_type.defaults]\nurl = \"ws://{echo}/\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("modules/feed.lua"),
        "function on_message(conn, msg) emit({ got = msg.data }) end\n",
    )
    .unwrap();
    let config = dir.join("tether.toml");
    let (server, api) = blocking(move || serve(&config)).await;
    assert!(
        dir.join("tether.db").exists(),
        "the SQLite store is created next to the config"
    );

    let a = api.clone();
    let added = json(
        &blocking(move || {
            clients(
                &a,
                &[
                    "add",
                    "--type",
                    "feed",
                    "--key",
                    "f1",
                    "--json",
                    "--setting",
                    r#"subscribe=["/queue/a"]"#,
                    "--setting",
                    "qos=1",
                    "--setting",
                    "name=plain text",
                ],
            )
        })
        .await,
    );
    assert_eq!(added["key"], "f1");
    assert_eq!(
        added["settings"],
        serde_json::json!({"subscribe": ["/queue/a"], "qos": 1, "name": "plain text"})
    );
    let a = api.clone();
    let out = blocking(move || clients(&a, &["connect", "f1", "--json"])).await;
    assert!(out.status.success());

    let a = api.clone();
    let events = std::thread::spawn(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["clients", "events", "f1", "--api", &a])
            .env("TETHER_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let reader = BufReader::new(child.stdout.take().unwrap());
        let mut seen = Vec::new();
        for line in reader.lines() {
            let line = line.unwrap();
            let done = line.contains("\"event\":\"module\"");
            seen.push(line);
            if done {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        seen
    });
    // Wait for open, then send through the CLI.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let a = api.clone();
        let v = json(&blocking(move || clients(&a, &["show", "f1", "--json"])).await);
        if v["state"] == "open" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never opened: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = api.clone();
    let out = blocking(move || clients(&a, &["send", "f1", "ping from cli"])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = blocking(move || events.join().unwrap()).await;
    let module = seen.last().unwrap();
    assert!(module.contains("\"got\":\"ping from cli\""), "{seen:?}");

    let a = api.clone();
    let table = blocking(move || clients(&a, &["list"])).await;
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("KEY"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("f1") && l.contains("open")),
        "{text}"
    );

    let a = api.clone();
    let wrong = blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["clients", "list", "--api", &a, "--token", "nope"])
            .output()
            .unwrap()
    })
    .await;
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"));

    let a = api.clone();
    let missing = blocking(move || clients(&a, &["rm", "ghost"])).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
    let a = api.clone();
    assert!(blocking(move || clients(&a, &["rm", "f1"]))
        .await
        .status
        .success());
    drop(server);
    let _ = std::fs::remove_dir_all(tempdir("walk"));
}

#[test]
fn bad_config_names_file_and_line() {
    let dir = tempdir("badconfig");
    std::fs::write(
        dir.join("tether.toml"),
        "[host]\nlisten = \"127.0.0.1:0\"\n\n[[client_type]]\nname = \"x\"\nurl = \"ws://h/\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--config"])
        .arg(dir.join("tether.toml"))
        .env("TETHER_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tether.toml:6") && err.contains("url"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn non_loopback_bind_without_a_token_is_refused() {
    let dir = tempdir("bind");
    std::fs::write(dir.join("tether.toml"), "[host]\nlisten = \"0.0.0.0:0\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--config"])
        .arg(dir.join("tether.toml"))
        .env_remove("TETHER_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not loopback"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The README's main job: the example config, with nothing else running,
/// has a predefined client that opens and gets its echo from the host's
/// own demo endpoint.
#[tokio::test]
async fn the_example_config_works_out_of_the_box() {
    let dir = tempdir("example");
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    for name in ["echo.lua", "ticker.lua", "stomp.lua", "util.lua"] {
        std::fs::copy(
            examples.join("modules").join(name),
            dir.join("modules").join(name),
        )
        .unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = std::fs::read_to_string(examples.join("tether.toml"))
        .unwrap()
        .replace("127.0.0.1:7878", "127.0.0.1:0")
        .replace("127.0.0.1:7879", &format!("127.0.0.1:{port}"));
    assert!(config.contains(&format!("url = \"ws://127.0.0.1:{port}/\"")));
    std::fs::write(dir.join("tether.toml"), config).unwrap();
    let path = dir.join("tether.toml");
    let (server, api) = blocking(move || serve(&path)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let a = api.clone();
        let history = blocking(move || {
            let out = Command::new(env!("CARGO_BIN_EXE_tether"))
                .args(["clients", "show", "echo", "--json", "--api", &a])
                .env("TETHER_ADMIN_TOKEN", TOKEN)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .await;
        if history.contains("\"state\": \"open\"") || history.contains("\"state\":\"open\"") {
            assert!(
                history.contains("\"last_error\": null") || history.contains("\"last_error\":null"),
                "{history}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "echo never opened: {history}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The module's hello came back from the demo endpoint as a module event.
    let a = api.clone();
    let history = blocking(move || {
        let agent = ureq_get(&format!("{a}/api/clients/echo/history"));
        agent
    })
    .await;
    assert!(history.contains("\"echoed\""), "{history}");
    assert!(history.contains("\"hello\""), "{history}");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

fn ureq_get(url: &str) -> String {
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `tether clients edit --if-version` refuses to overwrite a change made
/// meanwhile; `tether secrets rotate` re-seals a stopped host's store so
/// that it starts with the new key only.
#[tokio::test]
async fn edit_conflicts_and_secret_rotation_through_the_binary() {
    let dir = tempdir("rotate");
    std::fs::write(
        dir.join("tether.toml"),
        "[host]\nlisten = \"127.0.0.1:0\"\n\n[[client_type]]\nname = \"feed\"\n[client_type.defaults]\nurl = \"ws://127.0.0.1:9/\"\n",
    )
    .unwrap();
    let old_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let new_key = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
    let config = dir.join("tether.toml");
    let (server, api) =
        blocking(move || serve_with(&config, &[("TETHER_SECRET_KEY", old_key)])).await;
    let a = api.clone();
    let out = blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tether"))
            .args([
                "clients", "add", "--type", "feed", "--key", "f1", "--user", "u",
            ])
            .args([
                "--password-env",
                "ROTATE_TEST_PASSWORD",
                "--json",
                "--api",
                &a,
            ])
            .env("TETHER_ADMIN_TOKEN", TOKEN)
            .env("ROTATE_TEST_PASSWORD", "rotate-me-plain")
            .output()
            .unwrap()
    })
    .await;
    assert_eq!(json(&out)["version"], 1);
    let a = api.clone();
    assert_eq!(
        json(&blocking(move || clients(&a, &["edit", "f1", "--timeout", "7", "--json"])).await)
            ["version"],
        2
    );
    let a = api.clone();
    let stale =
        blocking(move || clients(&a, &["edit", "f1", "--if-version", "1", "--timeout", "9"])).await;
    assert_eq!(stale.status.code(), Some(1));
    let err = String::from_utf8_lossy(&stale.stderr);
    assert!(
        err.contains("412") && err.contains("changed meanwhile"),
        "{err}"
    );
    drop(server);

    let db = std::fs::read(dir.join("tether.db")).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains("rotate-me-plain"));
    let rotate = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["secrets", "rotate", "--config"])
        .arg(dir.join("tether.toml"))
        .env("TETHER_SECRET_KEY", old_key)
        .env("TETHER_NEW_SECRET_KEY", new_key)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&rotate.stderr);
    assert!(rotate.status.success(), "{text}");
    assert!(text.contains("of 1 instances"), "{text}");
    // The old key no longer opens the store; the new one does.
    let refused = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--config"])
        .arg(dir.join("tether.toml"))
        .env("TETHER_ADMIN_TOKEN", TOKEN)
        .env("TETHER_SECRET_KEY", old_key)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not the key this store was sealed with"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let config = dir.join("tether.toml");
    let (server, api) =
        blocking(move || serve_with(&config, &[("TETHER_SECRET_KEY", new_key)])).await;
    let a = api.clone();
    let v = json(&blocking(move || clients(&a, &["show", "f1", "--json"])).await);
    assert_eq!(
        (v["password_set"].as_bool(), v["timeout"].as_u64()),
        (Some(true), Some(7))
    );
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
