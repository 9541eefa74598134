//! TLS and proxies against servers nobody here wrote: nginx terminating TLS
//! (with and without client certificates), squid and tinyproxy as CONNECT
//! proxies, dante and pproxy as SOCKS5 servers.
// Native: these tests run their own servers on tokio sockets.
#![cfg(not(target_arch = "wasm32"))]

mod support;

use std::time::Duration;

use support::echo_server;
use support::peers::{dante, nginx_tls, nginx_tls_with, pproxy_socks5, squid, tinyproxy, Pki};
use tether::{connect, CertificateProblem, ConnectOptions, Error, Message, ProxyMode, TlsOptions};

/// The certificate problem of a TLS failure.
fn problem(err: &Error) -> Option<CertificateProblem> {
    match err {
        Error::Tls { source, .. } => source.certificate_problem(),
        _ => None,
    }
}

async fn echo_once(url: &str, options: &ConnectOptions) -> Result<(), Error> {
    let (conn, mut rx) = tokio::time::timeout(Duration::from_secs(15), connect(url, options))
        .await
        .expect("no hang")?;
    conn.send_text("through").await.unwrap();
    assert_eq!(
        rx.next_message().await.unwrap(),
        Message::Text("through".into())
    );
    conn.close(1000, "").unwrap();
    Ok(())
}

fn with_ca(pki: &Pki) -> ConnectOptions {
    let mut o = ConnectOptions::new();
    o.tls(TlsOptions {
        ca_files: vec![pki.path("ca.pem")],
        ..Default::default()
    });
    o
}

#[tokio::test]
async fn nginx_tls_needs_the_private_ca() {
    let pki = Pki::new();
    let echo = echo_server().await;
    let nginx = nginx_tls(&pki, echo.port(), false);
    let url = format!("wss://localhost:{}/", nginx.port);
    echo_once(&url, &with_ca(&pki)).await.unwrap();
    // By IP address too: the certificate has IP:127.0.0.1.
    echo_once(&format!("wss://127.0.0.1:{}/", nginx.port), &with_ca(&pki))
        .await
        .unwrap();
    let err = echo_once(&url, &ConnectOptions::new()).await.unwrap_err();
    assert_eq!(err.kind(), "tls");
    assert!(err.to_string().contains("unknown issuer"), "{err}");
    assert_eq!(problem(&err), Some(CertificateProblem::UnknownIssuer));
    let mut insecure = ConnectOptions::new();
    insecure.tls(TlsOptions {
        insecure: true,
        ..Default::default()
    });
    echo_once(&url, &insecure).await.unwrap();
}

#[tokio::test]
async fn expired_certificate_is_reported() {
    let pki = Pki::new();
    let echo = echo_server().await;
    let nginx = nginx_tls_with(&pki, "expired", echo.port(), false);
    let err = echo_once(&format!("wss://localhost:{}/", nginx.port), &with_ca(&pki))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "tls");
    assert!(err.to_string().contains("expired"), "{err}");
    assert_eq!(problem(&err), Some(CertificateProblem::Expired));
}

#[tokio::test]
async fn name_mismatch_is_reported() {
    let pki = Pki::new();
    let echo = echo_server().await;
    let nginx = nginx_tls_with(&pki, "other", echo.port(), false);
    let err = echo_once(&format!("wss://localhost:{}/", nginx.port), &with_ca(&pki))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "tls");
    assert!(err.to_string().contains("name mismatch"), "{err}");
    assert_eq!(problem(&err), Some(CertificateProblem::NameMismatch));
    // The rustls error is the source, for a caller that wants all of it.
    let source = std::error::Error::source(&err).expect("a TLS error keeps its source");
    assert!(std::error::Error::source(source)
        .and_then(|e| e.downcast_ref::<tether::rustls::Error>())
        .is_some());
}

#[tokio::test]
async fn nginx_mtls_requires_the_client_certificate() {
    let pki = Pki::new();
    let echo = echo_server().await;
    let nginx = nginx_tls(&pki, echo.port(), true);
    let url = format!("wss://localhost:{}/", nginx.port);
    let mut o = ConnectOptions::new();
    o.tls(TlsOptions {
        ca_files: vec![pki.path("ca.pem")],
        client_cert: Some((pki.path("client.pem"), pki.path("client.key"))),
        insecure: false,
    });
    echo_once(&url, &o).await.unwrap();
    // Without it nginx answers 400 to the upgrade.
    let err = echo_once(&url, &with_ca(&pki)).await.unwrap_err();
    assert_eq!(err.http_status(), Some(400), "{err}");
}

#[tokio::test]
async fn bad_tls_files_are_reported_before_connecting() {
    let mut o = ConnectOptions::new();
    o.tls(TlsOptions {
        ca_files: vec!["/nonexistent/ca.pem".into()],
        ..Default::default()
    });
    let err = tether::open("k", "wss://localhost:1/", &o).err().unwrap();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    // The reader's error is kept: not found, not a parse error.
    let io = std::error::Error::source(&err)
        .and_then(|e| e.downcast_ref::<tether::rustls_pki_types::pem::Error>());
    assert!(
        matches!(io, Some(tether::rustls_pki_types::pem::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound),
        "{io:?}"
    );
}

#[tokio::test]
async fn squid_tunnels_ws_and_wss() {
    let pki = Pki::new();
    let echo = echo_server().await;
    let nginx = nginx_tls(&pki, echo.port(), false);
    let squid = squid();
    let mut o = with_ca(&pki);
    o.proxy(ProxyMode::Url(format!("http://127.0.0.1:{}", squid.port)));
    echo_once(&format!("ws://127.0.0.1:{}/", echo.port()), &o)
        .await
        .unwrap();
    echo_once(&format!("wss://localhost:{}/", nginx.port), &o)
        .await
        .unwrap();
}

#[tokio::test]
async fn tinyproxy_with_and_without_auth() {
    let pki = Pki::new();
    let echo = echo_server().await;
    let nginx = nginx_tls(&pki, echo.port(), false);
    let open = tinyproxy(None);
    let guarded = tinyproxy(Some(("tether", "s3cret")));
    let ws = format!("ws://127.0.0.1:{}/", echo.port());
    let wss = format!("wss://localhost:{}/", nginx.port);
    for (proxy, ok) in [
        (format!("http://127.0.0.1:{}", open.port), true),
        (
            format!("http://tether:s3cret@127.0.0.1:{}", guarded.port),
            true,
        ),
    ] {
        let mut o = with_ca(&pki);
        o.proxy(ProxyMode::Url(proxy));
        assert_eq!(echo_once(&ws, &o).await.is_ok(), ok);
        assert_eq!(echo_once(&wss, &o).await.is_ok(), ok);
    }
    let mut o = with_ca(&pki);
    o.proxy(ProxyMode::Url(format!("http://127.0.0.1:{}", guarded.port)));
    let err = echo_once(&ws, &o).await.unwrap_err();
    assert!(
        matches!(err, Error::ProxyRefused { status: 407, .. }),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains(&format!("127.0.0.1:{}", guarded.port)));
    o.proxy(ProxyMode::Url(format!(
        "http://tether:wrong@127.0.0.1:{}",
        guarded.port
    )));
    let err = echo_once(&ws, &o).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::ProxyRefused {
                status: 401 | 407,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        !err.to_string().contains("wrong"),
        "credentials stay out of messages: {err}"
    );
}

#[tokio::test]
async fn socks5_through_dante_and_pproxy() {
    let pki = Pki::new();
    let echo = echo_server().await;
    let nginx = nginx_tls(&pki, echo.port(), false);
    let dante = dante();
    let pproxy = pproxy_socks5("tether", "pw");
    let ws = format!("ws://127.0.0.1:{}/", echo.port());
    // "localhost" is resolved by the proxy, not by us.
    let wss = format!("wss://localhost:{}/", nginx.port);
    for proxy in [
        format!("socks5://127.0.0.1:{}", dante.port),
        format!("socks5://tether:pw@127.0.0.1:{}", pproxy.port),
    ] {
        let mut o = with_ca(&pki);
        o.proxy(ProxyMode::Url(proxy.clone()));
        echo_once(&ws, &o)
            .await
            .unwrap_or_else(|e| panic!("{proxy}: {e}"));
        echo_once(&wss, &o)
            .await
            .unwrap_or_else(|e| panic!("{proxy}: {e}"));
    }
    let mut o = ConnectOptions::new();
    o.proxy(ProxyMode::Url(format!(
        "socks5://tether:bad@127.0.0.1:{}",
        pproxy.port
    )));
    let err = echo_once(&ws, &o).await.unwrap_err();
    assert_eq!(err.kind(), "proxy", "{err}");
}
