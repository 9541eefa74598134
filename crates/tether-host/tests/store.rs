//! The store as an operator relies on it: a change and its audit row land
//! together or not at all, two editors cannot overwrite each other, a
//! database failure never leaks its text, and secrets are sealed on disk.

mod support;

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use support::{call, Workspace, TOKEN};
use tether_host::api::{router, AppState, TokenCheck};
use tether_host::store::{SecretKey, Secrets};
use tether_host::{Host, Loaded, SqliteStore, Store};
use tower::ServiceExt;

const CONFIG: &str =
    "[[client_type]]\nname = \"feed\"\n[client_type.defaults]\nurl = \"ws://127.0.0.1:9/\"\n";

async fn host_on(ws: &Workspace, secrets: Secrets) -> (Arc<SqliteStore>, axum::Router) {
    let store = Arc::new(
        SqliteStore::open_with(&ws.store_url(), secrets)
            .await
            .unwrap(),
    );
    let config: Loaded = Loaded::parse(CONFIG, "t.toml", &ws.dir).unwrap();
    let host = Host::start(&config, store.clone() as Arc<dyn Store>)
        .await
        .unwrap();
    (store, router(AppState::new(host, TokenCheck::new(TOKEN))))
}

/// Calls with extra headers; returns status, ETag and body.
async fn call_with(
    app: &axum::Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, Option<String>, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let etag = response
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, etag, value)
}

/// Every byte of the store's files, as text.
fn file_bytes(ws: &Workspace) -> String {
    let mut all = Vec::new();
    for name in ["tether.db", "tether.db-wal"] {
        if let Ok(b) = std::fs::read(ws.dir.join(name)) {
            all.extend(b);
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test]
async fn an_audit_failure_leaves_no_instance_and_no_database_text() {
    let ws = Workspace::new("atomic");
    let (store, app) = host_on(&ws, Secrets::Plaintext).await;
    // Make every audit insert fail, as a full disk or a broken table would.
    let pool = sqlx::SqlitePool::connect(&ws.store_url()).await.unwrap();
    sqlx::query("CREATE TRIGGER audit_fails BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
        .execute(&pool)
        .await
        .unwrap();
    let (s, v) = call(
        &app,
        "POST",
        "/api/clients",
        Some(json!({"type": "feed", "key": "f1"})),
    )
    .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    assert_eq!(v["error"], "internal");
    let id = v["request_id"].as_str().unwrap();
    assert!(v["detail"].as_str().unwrap().contains(id), "{v}");
    assert!(
        !v.to_string().contains("disk says no"),
        "database text leaked: {v}"
    );
    assert!(!v.to_string().to_lowercase().contains("sqlite"), "{v}");
    // Nothing half-done: the instance is not stored.
    assert!(store.get("f1").await.unwrap().is_none());
    let (s, _) = call(&app, "GET", "/api/clients/f1", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Updates roll back the same way.
    sqlx::query("DROP TRIGGER audit_fails")
        .execute(&pool)
        .await
        .unwrap();
    let (s, _) = call(
        &app,
        "POST",
        "/api/clients",
        Some(json!({"type": "feed", "key": "f2"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    sqlx::query("CREATE TRIGGER audit_fails BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
        .execute(&pool)
        .await
        .unwrap();
    let (s, _) = call(
        &app,
        "PATCH",
        "/api/clients/f2",
        Some(json!({"timeout": 9})),
    )
    .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    let stored = store.get("f2").await.unwrap().unwrap();
    assert_eq!((stored.timeout_secs, stored.version), (30, 1));
}

#[tokio::test]
async fn two_editors_cannot_overwrite_each_other() {
    let ws = Workspace::new("versions");
    let (_store, app) = host_on(&ws, Secrets::Plaintext).await;
    let (s, etag, v) = call_with(
        &app,
        "POST",
        "/api/clients",
        &[],
        Some(json!({"type": "feed", "key": "f1"})),
    )
    .await;
    assert_eq!(
        (s, etag.as_deref()),
        (StatusCode::CREATED, Some("\"1\"")),
        "{v}"
    );
    let (_, etag, v) = call_with(&app, "GET", "/api/clients/f1", &[], None).await;
    assert_eq!(
        (etag.as_deref(), v["version"].as_i64()),
        (Some("\"1\""), Some(1))
    );

    // Alice and Bob both read version 1; Alice saves first.
    let (s, etag, _) = call_with(
        &app,
        "PATCH",
        "/api/clients/f1",
        &[("if-match", "\"1\"")],
        Some(json!({"timeout": 10})),
    )
    .await;
    assert_eq!((s, etag.as_deref()), (StatusCode::OK, Some("\"2\"")));
    let (s, _, v) = call_with(
        &app,
        "PATCH",
        "/api/clients/f1",
        &[("if-match", "\"1\"")],
        Some(json!({"timeout": 20})),
    )
    .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED, "{v}");
    assert_eq!(v["error"], "version_conflict");
    assert_eq!(v["current_version"], 2);
    let (s, _, _) = call_with(
        &app,
        "DELETE",
        "/api/clients/f1",
        &[("if-match", "W/\"1\"")],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    let (_, _, v) = call_with(&app, "GET", "/api/clients/f1", &[], None).await;
    assert_eq!(v["timeout"], 10, "Bob's stale change was not applied");
    let (s, _, v) = call_with(
        &app,
        "PATCH",
        "/api/clients/f1",
        &[("if-match", "yesterday")],
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _, _) = call_with(
        &app,
        "DELETE",
        "/api/clients/f1",
        &[("if-match", "\"2\"")],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn secrets_are_sealed_on_disk_and_open_with_the_key() {
    let ws = Workspace::new("sealed");
    let key = SecretKey::generate();
    {
        let (store, app) = host_on(&ws, Secrets::Sealed(key.clone())).await;
        let (s, v) = call(
            &app,
            "POST",
            "/api/clients",
            Some(json!({"type": "feed", "key": "f1", "user": "u", "password": "pw-visible-plain",
                        "url": "ws://user:url-pass-plain@127.0.0.1:9/",
                        "headers": {"Authorization": "Bearer header-token-plain", "X-Plain": "plain-header"}})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        store.close().await;
    }
    let text = file_bytes(&ws);
    for secret in ["pw-visible-plain", "header-token-plain", "url-pass-plain"] {
        assert!(!text.contains(secret), "{secret} is on disk in plaintext");
    }
    assert!(
        text.contains("plain-header"),
        "non-secret headers stay readable"
    );
    assert!(text.contains("enc:v1:"));

    // The same key opens them again.
    let store = SqliteStore::open_with(&ws.store_url(), Secrets::Sealed(key.clone()))
        .await
        .unwrap();
    let r = store.get("f1").await.unwrap().unwrap();
    assert_eq!(r.password.as_deref(), Some("pw-visible-plain"));
    assert_eq!(r.headers["Authorization"], "Bearer header-token-plain");
    assert_eq!(r.url, "ws://user:url-pass-plain@127.0.0.1:9/");
    store.close().await;

    // Another key, or none, is refused with a reason.
    let e = SqliteStore::open_with(&ws.store_url(), Secrets::Sealed(SecretKey::generate()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not the key this store was sealed with"), "{e}");
    let e = SqliteStore::open_with(&ws.store_url(), Secrets::Refused)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("set TETHER_SECRET_KEY"), "{e}");

    // Rotation: the new key opens, the old one no longer does.
    let store = SqliteStore::open_with(&ws.store_url(), Secrets::Sealed(key.clone()))
        .await
        .unwrap();
    let new = SecretKey::generate();
    assert_eq!(store.rotate(&new).await.unwrap(), 1);
    store.close().await;
    let store = SqliteStore::open_with(&ws.store_url(), Secrets::Sealed(new))
        .await
        .unwrap();
    assert_eq!(
        store.get("f1").await.unwrap().unwrap().password.as_deref(),
        Some("pw-visible-plain")
    );
    store.close().await;
    assert!(
        SqliteStore::open_with(&ws.store_url(), Secrets::Sealed(key))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn without_a_key_secrets_are_refused_and_a_plaintext_store_is_sealed_later() {
    let ws = Workspace::new("refused");
    {
        let (store, app) = host_on(&ws, Secrets::Refused).await;
        let (s, v) = call(
            &app,
            "POST",
            "/api/clients",
            Some(json!({"type": "feed", "key": "f1", "password": "x"})),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["error"], "no_secret_key");
        assert!(
            v["detail"].as_str().unwrap().contains("TETHER_SECRET_KEY"),
            "{v}"
        );
        let (s, _) = call(
            &app,
            "POST",
            "/api/clients",
            Some(json!({"type": "feed", "key": "f2"})),
        )
        .await;
        assert_eq!(
            s,
            StatusCode::CREATED,
            "instances without secrets need no key"
        );
        store.close().await;
    }
    // An older store with plaintext secrets…
    {
        let (store, app) = host_on(&ws, Secrets::Plaintext).await;
        let (s, _) = call(
            &app,
            "POST",
            "/api/clients",
            Some(json!({"type": "feed", "key": "f3", "password": "old-plain-password"})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
        store.close().await;
    }
    assert!(file_bytes(&ws).contains("old-plain-password"));
    // …is sealed on its first start with a key, leaving no plaintext copy.
    let key = SecretKey::generate();
    let store = SqliteStore::open_with(&ws.store_url(), Secrets::Sealed(key))
        .await
        .unwrap();
    assert_eq!(
        store.get("f3").await.unwrap().unwrap().password.as_deref(),
        Some("old-plain-password")
    );
    store.close().await;
    assert!(!file_bytes(&ws).contains("old-plain-password"));
}

/// A one-byte text message for client `c` with the caller's id `id`.
fn m(id: &str) -> tether_host::store::outbox::NewOutboxMessage {
    tether_host::store::outbox::NewOutboxMessage {
        client: "c".into(),
        msg_id: id.into(),
        caller_id: true,
        binary: false,
        payload: b"x".to_vec(),
        expires_ms: None,
        limits: Default::default(),
    }
}

#[tokio::test]
async fn an_abandoned_group_commit_is_all_or_nothing_and_the_writer_goes_on() {
    // A caller that gives up after one poll: depending on how far the
    // driver's thread got, its transaction is rolled back (the guard's
    // ROLLBACK) or, its COMMIT already sent, lands; either way whole, with
    // the queue count agreeing, and the next commit lands.
    use tether_host::store::outbox::{Appended, OutboxCommit};
    let ws = Workspace::new("abandoned-commit");
    let store = SqliteStore::open(&ws.store_url()).await.unwrap();
    let ids = |store: &SqliteStore| {
        let store = store.clone();
        async move {
            store
                .outbox_list("c", None, 1000)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.id)
                .collect::<Vec<String>>()
        }
    };
    let (mut abandoned, mut rolled_back) = (0, 0);
    for i in 0..20 {
        let batch = [m(&format!("a{i}"))];
        let mut commit = Box::pin(store.outbox_commit(OutboxCommit {
            appends: &batch,
            ..Default::default()
        }));
        let first =
            std::future::poll_fn(|cx| std::task::Poll::Ready(commit.as_mut().poll(cx))).await;
        drop(commit);
        if first.is_ready() {
            continue; // finished in one step: nothing was abandoned
        }
        abandoned += 1;
        let next = store.outbox_append(&[m(&format!("b{i}"))]).await.unwrap();
        assert!(matches!(next[..], [Appended::Stored { .. }]), "{next:?}");
        let now = ids(&store).await;
        assert!(now.contains(&format!("b{i}")));
        if !now.contains(&format!("a{i}")) {
            rolled_back += 1;
        }
    }
    assert!(
        abandoned > 0 && rolled_back > 0,
        "{abandoned} abandoned, {rolled_back} rolled back"
    );
    // The queue count matches the rows: a limit of one more takes exactly one.
    let stored = ids(&store).await.len() as u64;
    let limited = |id: &str| {
        let mut x = m(id);
        x.limits.max_messages = stored + 1;
        x
    };
    let over = store
        .outbox_append(&[limited("over-1"), limited("over-2")])
        .await
        .unwrap();
    assert!(
        matches!(over[..], [Appended::Stored { .. }, Appended::Full { messages, .. }] if messages == stored + 1),
        "{over:?} with {stored} stored"
    );
    // And the writer still takes transactions of every kind.
    store.audit("test", "check", "c", json!({})).await.unwrap();
    store.close().await;
}
