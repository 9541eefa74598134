//! The browser transport in headless Chromium (wasm-bindgen-test), against
//! the loopback echo server `scripts/web-test.sh` starts
//! (`scripts/peers/web_echo_server.py`).
#![cfg(target_arch = "wasm32")]

use std::time::Duration;

use futures_util::future::{select, Either};
use tether::{
    ConnectOptions, Error, Event, Message, Persistent, PersistentEvent, PersistentOptions,
    PersistentState, ProxyMode, ReconnectPolicy, Registry, RegistryError, SendError, State,
};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// The echo server.
const ECHO: &str = match option_env!("TETHER_WEB_ECHO") {
    Some(url) => url,
    None => "ws://127.0.0.1:9330/",
};
/// A TCP listener that accepts and never answers the handshake.
const SILENT: &str = match option_env!("TETHER_WEB_SILENT") {
    Some(url) => url,
    None => "ws://127.0.0.1:9332/",
};
/// A loopback port nobody listens on.
const REFUSED: &str = match option_env!("TETHER_WEB_REFUSED") {
    Some(url) => url,
    None => "ws://127.0.0.1:9331/",
};

#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(callback: &js_sys::Function, millis: u32) -> wasm_bindgen::JsValue;
}

async fn sleep(ms: u32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        set_timeout(&resolve, ms);
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// `fut`, or a panic naming `what` after 10 s.
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match select(Box::pin(fut), Box::pin(sleep(10_000))).await {
        Either::Left((value, _)) => value,
        Either::Right(_) => panic!("timed out waiting for {what}"),
    }
}

async fn next_event(rx: &mut tether::Receiver, what: &str) -> Event {
    within(what, rx.next())
        .await
        .unwrap_or_else(|| panic!("stream ended before {what}"))
}

async fn next(rx: &mut tether::PersistentReceiver, what: &str) -> PersistentEvent {
    within(what, rx.next()).await.expect("events go on")
}

async fn connect() -> (tether::Connection, tether::Receiver) {
    within("connect", tether::connect(ECHO, &ConnectOptions::new()))
        .await
        .expect("the echo server accepts")
}

#[wasm_bindgen_test]
async fn echoes_text_and_binary_including_a_mebibyte() {
    let (conn, mut rx) = connect().await;
    assert_eq!(conn.state(), State::Open);
    assert_eq!(conn.url(), ECHO);
    conn.send_text("hello").await.unwrap();
    conn.send_binary([0u8, 1, 2, 255]).await.unwrap();
    let big: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    conn.send_binary(&big).await.unwrap();
    let mut got = Vec::new();
    for n in 0..3 {
        match next_event(&mut rx, &format!("echo {n}")).await {
            Event::Message(m) => got.push(m),
            other => panic!("expected a message, got {other:?}"),
        }
    }
    assert_eq!(got[0], Message::Text("hello".into()));
    assert_eq!(got[1], Message::Binary(vec![0, 1, 2, 255]));
    assert_eq!(got[2], Message::Binary(big));
    assert_eq!(rx.queued_bytes(), 0);
}

#[wasm_bindgen_test]
async fn the_client_closes_with_its_code_and_reason() {
    let (conn, mut rx) = connect().await;
    conn.close(4001, "done here").unwrap();
    assert_eq!(conn.state(), State::Closing);
    let Event::Closed(closed) = next_event(&mut rx, "close").await else {
        panic!("expected Closed")
    };
    assert_eq!((closed.code, closed.reason.as_str()), (4001, "done here"));
    assert!(closed.clean && closed.error.is_none(), "{closed:?}");
    assert!(within("end of stream", rx.next()).await.is_none());
    assert_eq!(conn.state(), State::Closed);
    assert!(matches!(
        conn.send_text("late").await,
        Err(SendError::Closed)
    ));
    // The server saw our code and reason.
    let (check, mut check_rx) = connect().await;
    check.send_text("last-close").await.unwrap();
    assert_eq!(
        within("last close", check_rx.next_message()).await.unwrap(),
        Message::Text("4001 done here".into())
    );
}

#[wasm_bindgen_test]
async fn the_server_closes_with_its_code_and_reason() {
    let (conn, mut rx) = connect().await;
    conn.send_text("close:4002:server says bye").await.unwrap();
    let Event::Closed(closed) = next_event(&mut rx, "close").await else {
        panic!("expected Closed")
    };
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (4002, "server says bye")
    );
    assert!(closed.clean && closed.error.is_none(), "{closed:?}");
}

#[wasm_bindgen_test]
async fn a_refused_connection_is_a_typed_error() {
    let err = within("refusal", tether::connect(REFUSED, &ConnectOptions::new()))
        .await
        .expect_err("nothing listens there");
    assert!(
        matches!(err, Error::BrowserConnect { ref url } if url == REFUSED),
        "{err:?}"
    );
    assert_eq!(err.kind(), "connect");
    // With open(), the receiver reports it as the close's error.
    let (_conn, mut rx) = tether::open("refused", REFUSED, &ConnectOptions::new()).unwrap();
    let Event::Closed(closed) = next_event(&mut rx, "close").await else {
        panic!("expected Closed")
    };
    assert_eq!(closed.code, 1006);
    assert!(matches!(closed.error, Some(Error::BrowserConnect { .. })));
}

#[wasm_bindgen_test]
async fn a_handshake_that_never_comes_times_out() {
    let mut options = ConnectOptions::new();
    options.connect_timeout(Duration::from_millis(300));
    let started = web_time::Instant::now();
    let err = within("timeout", tether::connect(SILENT, &options))
        .await
        .expect_err("the server never answers");
    assert!(
        matches!(err, Error::ConnectTimeout(d) if d == Duration::from_millis(300)),
        "{err:?}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[wasm_bindgen_test]
async fn what_a_browser_cannot_do_is_refused_by_name() {
    let unsupported = |options: &ConnectOptions| match tether::open("x", ECHO, options) {
        Err(Error::Unsupported { option }) => option,
        other => panic!("expected Unsupported, got {other:?}"),
    };
    assert_eq!(
        unsupported(ConnectOptions::new().header("X-Token", "t")),
        "headers"
    );
    assert_eq!(
        unsupported(ConnectOptions::new().basic_auth("u", "p")),
        "basic_auth"
    );
    assert_eq!(
        unsupported(ConnectOptions::new().proxy(ProxyMode::Environment)),
        "proxy"
    );
    let tls = tether::TlsOptions {
        insecure: true,
        ..Default::default()
    };
    assert_eq!(unsupported(ConnectOptions::new().tls(tls)), "tls");
    assert_eq!(
        unsupported(ConnectOptions::new().keepalive(None, None)),
        "keepalive"
    );
    assert_eq!(
        unsupported(ConnectOptions::new().compression(false)),
        "compression"
    );
    assert!(matches!(
        tether::open(
            "x",
            "ws://user:secret@127.0.0.1:9330/",
            &ConnectOptions::new()
        ),
        Err(Error::Unsupported {
            option: "credentials in the URL"
        })
    ));
    assert!(matches!(
        tether::open("x", "http://127.0.0.1:9330/", &ConnectOptions::new()),
        Err(Error::InvalidUrl { .. })
    ));
    let (conn, _rx) = connect().await;
    assert!(matches!(conn.ping(b"x"), Err(SendError::Unsupported(_))));
    assert!(matches!(
        conn.close(1001, ""),
        Err(SendError::Unsupported(_))
    ));
    assert_eq!(conn.state(), State::Open, "a refused close leaves it open");
}

#[wasm_bindgen_test]
async fn persistent_reconnects_after_a_restart_and_sends_the_queue_in_order() {
    let policy = ReconnectPolicy {
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(400),
        ..ReconnectPolicy::default()
    };
    let (p, mut rx) = Persistent::open(
        "persistent",
        ECHO,
        &ConnectOptions::new(),
        PersistentOptions {
            policy,
            queue_bytes: 1 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(
        next(&mut rx, "open").await,
        PersistentEvent::Open { .. }
    ));
    p.send_text("restart:1500").await.unwrap();
    loop {
        match next(&mut rx, "disconnect").await {
            PersistentEvent::Disconnected(c) => {
                assert_eq!(c.code, 1012);
                break;
            }
            PersistentEvent::Message(m) => panic!("unexpected message {m:?}"),
            _ => {}
        }
    }
    assert_ne!(p.state(), PersistentState::Open);
    for n in 0..20 {
        p.send_text(&format!("queued-{n}"))
            .await
            .expect("queued while down");
    }
    let (mut attempts, mut echoes) = (0, Vec::new());
    while echoes.len() < 20 {
        match next(&mut rx, "reconnect and echoes").await {
            PersistentEvent::Reconnecting { .. } => attempts += 1,
            PersistentEvent::Open { .. } => assert_eq!(echoes.len(), 0),
            PersistentEvent::Message(Message::Text(t)) => echoes.push(t),
            PersistentEvent::Disconnected(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected: Vec<String> = (0..20).map(|n| format!("queued-{n}")).collect();
    assert_eq!(echoes, expected, "every queued send, once, in order");
    assert!(
        attempts >= 2,
        "the server was down for 1.5 s: {attempts} attempts"
    );
    assert_eq!(p.state(), PersistentState::Open);
    p.close(1000, "").unwrap();
    loop {
        match next(&mut rx, "closed").await {
            PersistentEvent::Closed => break,
            PersistentEvent::Disconnected(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[wasm_bindgen_test]
async fn the_registry_finds_connections_by_key() {
    let registry = Registry::new();
    let (a, mut a_rx) = registry
        .open("feed-a", ECHO, &ConnectOptions::new())
        .unwrap();
    let (_b, mut b_rx) = registry
        .open("feed-b", ECHO, &ConnectOptions::new())
        .unwrap();
    assert!(matches!(
        registry.open("feed-a", ECHO, &ConnectOptions::new()),
        Err(RegistryError::KeyInUse(k)) if k == "feed-a"
    ));
    assert!(matches!(
        next_event(&mut a_rx, "a open").await,
        Event::Open { .. }
    ));
    assert!(matches!(
        next_event(&mut b_rx, "b open").await,
        Event::Open { .. }
    ));
    let keys: Vec<String> = registry
        .list()
        .iter()
        .map(|c| c.key().to_string())
        .collect();
    assert_eq!(keys, ["feed-a", "feed-b"]);
    let found = registry.get("feed-b").expect("b is registered");
    found.send_text("via the registry").await.unwrap();
    assert_eq!(
        within("echo on b", b_rx.next_message()).await.unwrap(),
        Message::Text("via the registry".into())
    );
    a.close(1000, "").unwrap();
    while !matches!(next_event(&mut a_rx, "a closed").await, Event::Closed(_)) {}
    assert!(
        registry.get("feed-a").is_none(),
        "a closed connection leaves"
    );
    assert!(registry.get("feed-b").is_some());
}

#[wasm_bindgen_test]
async fn handlers_see_open_messages_and_close_in_order() {
    use std::sync::{Arc, Mutex};
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (conn, rx) = tether::open("handlers", ECHO, &ConnectOptions::new()).unwrap();
    let (l1, l2, l3) = (log.clone(), log.clone(), log.clone());
    tether::Handlers::new()
        .on_open(move |c| {
            l1.lock().unwrap().push("open".into());
            let _ = c.try_send_text("ping-1");
        })
        .on_message(move |c, m| {
            l2.lock().unwrap().push(format!("{m:?}"));
            let _ = c.close(1000, "enough");
        })
        .on_close(move |_, code, reason| l3.lock().unwrap().push(format!("close {code} {reason}")))
        .spawn(conn, rx);
    for _ in 0..500 {
        if log.lock().unwrap().len() >= 3 {
            break;
        }
        sleep(10).await;
    }
    assert_eq!(
        *log.lock().unwrap(),
        ["open", "Text(\"ping-1\")", "close 1000 enough"]
    );
}
