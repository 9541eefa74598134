//! `tether connect` flags for TLS and proxies, against nginx and tinyproxy
//! (the same helpers as the tether crate's peer tests).

use std::process::Output;
use std::time::Duration;

mod support;
use support::echo_server;

#[path = "../../tether/tests/support/peers.rs"]
mod peers;

async fn tether(args: Vec<String>) -> Output {
    support::run_tether(args, b"via flags\n", Duration::from_millis(700)).await
}

#[tokio::test]
async fn ca_insecure_and_proxy_flags() {
    let pki = peers::Pki::new();
    let echo = echo_server().await;
    let nginx = peers::nginx_tls(&pki, echo.port(), false);
    let proxy = peers::tinyproxy(Some(("u", "p")));
    let url = format!("wss://localhost:{}/", nginx.port);
    let ca = pki.path("ca.pem").display().to_string();

    let out = tether(vec![
        "connect".into(),
        "--ca".into(),
        ca.clone(),
        url.clone(),
    ])
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "via flags\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));

    let out = tether(vec!["connect".into(), "--json".into(), url.clone()]).await;
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"kind\":\"tls\"") && text.contains("unknown issuer"),
        "{text}"
    );

    let out = tether(vec!["connect".into(), "--insecure".into(), url.clone()]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARNING: --insecure"));

    let out = tether(vec![
        "connect".into(),
        "--ca".into(),
        ca.clone(),
        "--proxy".into(),
        format!("http://u:p@127.0.0.1:{}", proxy.port),
        url.clone(),
    ])
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "via flags\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = tether(vec![
        "connect".into(),
        "--json".into(),
        "--proxy".into(),
        format!("http://127.0.0.1:{}", proxy.port),
        format!("ws://127.0.0.1:{}/", echo.port()),
    ])
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"kind\":\"proxy\"") && text.contains("\"status\":407"),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(1));
}
