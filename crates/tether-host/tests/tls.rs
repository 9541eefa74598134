//! A client type whose server is behind nginx with a private CA: the type's
//! `[defaults.tls]` makes it connect; without it the error says why.

mod support;

#[path = "../../tether/tests/support/peers.rs"]
mod peers;

use serde_json::json;
use support::{call, start_host, wait_state, EchoServer, Workspace};

#[tokio::test]
async fn type_tls_settings_reach_the_connection() {
    let pki = peers::Pki::new();
    let echo = EchoServer::start().await;
    let nginx = peers::nginx_tls(&pki, echo.addr.port(), false);
    let ws = Workspace::new("tls");
    ws.write(
        "tether.toml",
        &format!(
            "[[client_type]]\nname = \"private\"\n[client_type.defaults]\nurl = \"wss://localhost:{port}/\"\n[client_type.defaults.tls]\nca_files = [\"{ca}\"]\n\n[[client_type]]\nname = \"public\"\n[client_type.defaults]\nurl = \"wss://localhost:{port}/\"\n",
            port = nginx.port,
            ca = pki.path("ca.pem").display()
        ),
    );
    let (_host, app) = start_host(&ws.config(), &ws.store_url()).await;
    call(
        &app,
        "POST",
        "/api/clients",
        Some(json!({"type": "private", "key": "p"})),
    )
    .await;
    call(&app, "POST", "/api/clients/p/connect", None).await;
    wait_state(&app, "p", "open").await;

    call(
        &app,
        "POST",
        "/api/clients",
        Some(json!({"type": "public", "key": "q"})),
    )
    .await;
    call(&app, "POST", "/api/clients/q/connect", None).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, v) = call(&app, "GET", "/api/clients/q", None).await;
        if let Some(e) = v["last_error"].as_str() {
            assert!(e.contains("unknown issuer"), "{e}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no TLS error: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[test]
fn missing_ca_file_stops_the_config() {
    let ws = Workspace::new("tls-bad");
    ws.write(
        "tether.toml",
        "[[client_type]]\nname = \"x\"\n[client_type.defaults.tls]\nca_files = [\"nope.pem\"]\n",
    );
    let err = tether_host::Loaded::load(&ws.dir.join("tether.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tether.toml:2") && err.contains("nope.pem"),
        "{err}"
    );
}
