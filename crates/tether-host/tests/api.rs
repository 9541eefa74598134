//! The management API through the router, without a socket, on in-memory
//! SQLite: authentication, every bad input and its status, secrets.

mod support;

use axum::http::StatusCode;
use serde_json::{json, Value};
use support::{call, call_raw, start_host, Workspace};

const CONFIG: &str = r#"
[[client_type]]
name = "feed"
[client_type.defaults]
url = "ws://127.0.0.1:1/"
headers = { "X-Source" = "tether" }

[[client_type]]
name = "fixed"
predefined = true
[client_type.defaults]
url = "ws://127.0.0.1:1/fixed"
"#;

async fn app() -> (Workspace, axum::Router) {
    let ws = Workspace::new("api");
    ws.write("tether.toml", CONFIG);
    let (_host, app) = start_host(&ws.config(), "sqlite::memory:").await;
    (ws, app)
}

#[tokio::test]
async fn healthz_is_open_everything_else_needs_the_token() {
    let (_ws, app) = app().await;
    let (s, v) = call_raw(&app, "GET", "/healthz", None, None).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"status": "ok"})));
    let (s, v) = call_raw(&app, "GET", "/api/clients", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"], "unauthorized");
    let (s, v) = call_raw(&app, "GET", "/api/clients", None, Some("wrong")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(v["detail"].as_str().unwrap().contains("wrong"));
    let (s, _) = call(&app, "GET", "/api/clients", None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn predefined_instance_exists_and_cannot_be_deleted() {
    let (_ws, app) = app().await;
    let (s, v) = call(&app, "GET", "/api/clients/fixed", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["predefined"].as_bool(), v["type"].as_str()),
        (Some(true), Some("fixed"))
    );
    let (s, v) = call(&app, "DELETE", "/api/clients/fixed", None).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("predefined"))
    );
    let (s, _) = call(
        &app,
        "PATCH",
        "/api/clients/fixed",
        Some(json!({"predefined": false})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn create_read_update_delete() {
    let (_ws, app) = app().await;
    let (s, v) = call(
        &app,
        "POST",
        "/api/clients",
        Some(json!({"type": "feed", "key": "a", "url": "ws://127.0.0.1:2/x"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["state"], "closed");
    assert_eq!(v["headers"]["X-Source"], "tether", "type defaults apply");
    let (s, v) = call(
        &app,
        "PATCH",
        "/api/clients/a",
        Some(json!({"timeout": 5, "auto_connect": false})),
    )
    .await;
    assert_eq!((s, v["timeout"].as_u64()), (StatusCode::OK, Some(5)));
    let (_, list) = call(&app, "GET", "/api/clients", None).await;
    let keys: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a", "fixed"]);
    let (s, _) = call(&app, "DELETE", "/api/clients/a", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(&app, "GET", "/api/clients/a", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A key is generated when none is given.
    let (s, v) = call(&app, "POST", "/api/clients", Some(json!({"type": "feed"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(v["key"].as_str().unwrap().len(), 36);
}

#[tokio::test]
async fn bad_inputs_get_their_status() {
    let (_ws, app) = app().await;
    let cases: Vec<(&str, &str, Option<Value>, StatusCode, &str)> = vec![
        (
            "POST",
            "/api/clients",
            Some(json!({"type": "nope", "url": "ws://h/"})),
            StatusCode::BAD_REQUEST,
            "unknown_type",
        ),
        (
            "POST",
            "/api/clients",
            Some(json!({"type": "feed", "url": "http://h/"})),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "POST",
            "/api/clients",
            Some(json!({"type": "feed", "key": "bad key"})),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "POST",
            "/api/clients",
            Some(json!({"type": "feed", "timeout": 0})),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "POST",
            "/api/clients",
            Some(json!({"type": "feed", "headers": {"Bad Name": "x"}})),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "POST",
            "/api/clients",
            Some(json!({"type": "feed", "bogus": 1})),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        (
            "POST",
            "/api/clients",
            Some(json!({"type": "feed", "key": "fixed"})),
            StatusCode::CONFLICT,
            "duplicate_key",
        ),
        (
            "GET",
            "/api/clients/missing",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "PATCH",
            "/api/clients/missing",
            Some(json!({})),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "DELETE",
            "/api/clients/missing",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "POST",
            "/api/clients/missing/connect",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "POST",
            "/api/clients/fixed/send",
            Some(json!({"text": "x"})),
            StatusCode::CONFLICT,
            "not_open",
        ),
        (
            "POST",
            "/api/clients/fixed/send",
            Some(json!({"text": "x", "base64": "eA=="})),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "POST",
            "/api/clients/fixed/send",
            Some(json!({"base64": "***"})),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "PATCH",
            "/api/clients/fixed",
            Some(json!({"url": "tcp://x/"})),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "POST",
            "/api/connections",
            Some(json!({"url": "ws://h/", "type": "nope"})),
            StatusCode::BAD_REQUEST,
            "unknown_type",
        ),
        (
            "GET",
            "/api/nothing",
            None,
            StatusCode::NOT_FOUND,
            "no_route",
        ),
        (
            "PUT",
            "/api/clients",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (s, v) = call(&app, method, path, body.clone()).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (status, Some(code)),
            "{method} {path} {body:?}: {v}"
        );
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    }
    let (s, v) = call_raw(
        &app,
        "POST",
        "/api/clients",
        Some("{not json".into()),
        Some(support::TOKEN),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_json"))
    );
    let big = format!(
        "{{\"type\":\"feed\",\"url\":\"ws://h/{}\"}}",
        "a".repeat(1 << 20)
    );
    let (s, v) = call_raw(
        &app,
        "POST",
        "/api/clients",
        Some(big),
        Some(support::TOKEN),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
}

#[tokio::test]
async fn secrets_never_come_back() {
    let (_ws, app) = app().await;
    let body = json!({
        "type": "feed", "key": "s", "url": "ws://u:urlpass@127.0.0.1:2/",
        "user": "alice", "password": "hunter2",
        "headers": {"Authorization": "Bearer tok-123", "X-Api-Key": "k-456", "X-Plain": "visible"},
    });
    let (s, created) = call(&app, "POST", "/api/clients", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, one) = call(&app, "GET", "/api/clients/s", None).await;
    let (_, list) = call(&app, "GET", "/api/clients", None).await;
    let (_, audit) = call(
        &app,
        "PATCH",
        "/api/clients/s",
        Some(json!({"password": "hunter3"})),
    )
    .await;
    let (_, log) = call(&app, "GET", "/api/audit", None).await;
    for v in [&created, &one, &list, &audit, &log] {
        let text = v.to_string();
        for secret in ["hunter2", "hunter3", "tok-123", "k-456", "urlpass"] {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
    }
    assert_eq!(one["password_set"], true);
    assert_eq!(one["user"], "alice");
    assert_eq!(one["headers"]["Authorization"], "***");
    assert_eq!(one["headers"]["X-Plain"], "visible");
    let actions: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.starts_with(&["update", "create"]), "{actions:?}");
}

#[tokio::test]
async fn types_are_listed_with_defaults() {
    let (_ws, app) = app().await;
    let (s, v) = call(&app, "GET", "/api/types", None).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["feed", "fixed"]);
    assert_eq!(v[0]["defaults"]["url"], "ws://127.0.0.1:1/");
    assert_eq!(v[0]["defaults"]["reconnect"]["initial_delay_ms"], 1000);
}

/// docs/openapi.json is what the handlers' annotations generate, so it
/// cannot drift from the code: regenerate it with
/// `TETHER_WRITE_OPENAPI=1 cargo test -p tether-host --test api`.
#[tokio::test]
async fn docs_openapi_json_is_the_generated_document() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let generated = tether_host::api::openapi_document() + "\n";
    if std::env::var("TETHER_WRITE_OPENAPI").is_ok() {
        std::fs::write(path, &generated).unwrap();
    }
    let kept = std::fs::read_to_string(path).unwrap();
    assert!(
        kept == generated,
        "docs/openapi.json is stale: run TETHER_WRITE_OPENAPI=1 cargo test -p tether-host --test api"
    );
    // And the API serves the same document.
    let (_ws, app) = app().await;
    let (s, served) = call(&app, "GET", "/api/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(served, serde_json::from_str::<Value>(&generated).unwrap());
    // Every documented route is in the router's list, and back.
    let mut routed: Vec<(String, String)> = tether_host::api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    routed.sort();
    assert_eq!(tether_host::api::documented_routes(), routed);
}

/// Every operation in docs/openapi.json is routed (neither `no_route` nor
/// `method_not_allowed`), and the document lists every route the API has.
#[tokio::test]
async fn openapi_document_matches_the_routes() {
    let (_ws, app) = app().await;
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut documented = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
            if path.ends_with("/events") {
                continue; // streams forever; routing is checked below
            }
            let concrete = path.replace("{key}", "fixed");
            let body = matches!(method.as_str(), "post" | "patch").then(|| json!({}));
            let (s, v) = call(&app, &method.to_uppercase(), &concrete, body).await;
            assert!(
                v["error"] != "no_route" && v["error"] != "method_not_allowed",
                "{method} {path} is documented but not routed: {s} {v}"
            );
        }
    }
    let (s, _) = call(&app, "GET", "/api/clients/missing/events", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "events route checks the key");
    documented.sort();
    let mut routed: Vec<String> = tether_host::api::ROUTES
        .iter()
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    routed.sort();
    assert_eq!(
        documented, routed,
        "docs/openapi.json and api::ROUTES differ"
    );
}

#[tokio::test]
async fn metrics_need_the_token_and_speak_prometheus() {
    let (_ws, app) = app().await;
    let (s, _) = call_raw(&app, "GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = call(&app, "GET", "/metrics", None).await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().unwrap();
    assert!(text.contains("# TYPE tether_client_state gauge"), "{text}");
    assert!(
        text.contains("tether_client_state{client=\"fixed\",type=\"fixed\",state=\"closed\"} 1"),
        "{text}"
    );
    assert!(text.contains("tether_messages_received_total{client=\"fixed\"} 0"));
    assert!(text.contains("tether_handler_duration_seconds_bucket{le=\"+Inf\"}"));
    // OpenMetrics: every family typed once, and the end marked.
    assert!(
        text.contains("# TYPE tether_messages_received counter"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[tokio::test]
async fn the_bearer_scheme_is_matched_in_any_case_for_the_api_and_metrics() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;
    let (_ws, app) = app().await;
    for (header, want) in [
        (format!("Bearer {}", support::TOKEN), StatusCode::OK),
        (format!("bearer {}", support::TOKEN), StatusCode::OK),
        (format!("BEARER  {} ", support::TOKEN), StatusCode::OK),
        (
            format!("Basic {}", support::TOKEN),
            StatusCode::UNAUTHORIZED,
        ),
        ("Bearer wrong".to_string(), StatusCode::UNAUTHORIZED),
    ] {
        for path in ["/api/clients", "/metrics"] {
            let req = Request::builder()
                .uri(path)
                .header("authorization", &header)
                .body(Body::empty())
                .unwrap();
            let status = app.clone().oneshot(req).await.unwrap().status();
            assert_eq!(status, want, "{path} with {header:?}");
        }
    }
}

mod browser_session {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn send(
        app: &axum::Router,
        req: Request<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let response = app.clone().oneshot(req).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (parts.status, parts.headers, v)
    }

    #[tokio::test]
    async fn login_cookie_csrf_and_logout() {
        let (_ws, app) = app().await;
        let (s, _, _) = send(
            &app,
            Request::post("/ui/login")
                .header("content-type", "application/json")
                .body(Body::from(r#"{"token":"nope"}"#))
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, headers, v) = send(
            &app,
            Request::post("/ui/login")
                .header("content-type", "application/json")
                .body(Body::from(format!(r#"{{"token":"{}"}}"#, support::TOKEN)))
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let cookie = headers["set-cookie"].to_str().unwrap().to_string();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        let session = cookie.split(';').next().unwrap().to_string();
        let csrf = v["csrf"].as_str().unwrap().to_string();

        let list = || {
            Request::get("/api/clients")
                .header("cookie", &session)
                .body(Body::empty())
                .unwrap()
        };
        let (s, _, _) = send(&app, list()).await;
        assert_eq!(s, StatusCode::OK, "a session authenticates reads");
        let create = |csrf: Option<&str>| {
            let mut r = Request::post("/api/clients")
                .header("cookie", &session)
                .header("content-type", "application/json");
            if let Some(c) = csrf {
                r = r.header("x-csrf-token", c);
            }
            r.body(Body::from(r#"{"type":"feed"}"#)).unwrap()
        };
        let (s, _, v) = send(&app, create(None)).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("csrf"))
        );
        let (s, _, _) = send(&app, create(Some("forged"))).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _, _) = send(&app, create(Some(&csrf))).await;
        assert_eq!(s, StatusCode::CREATED);

        let (s, headers, _) = send(
            &app,
            Request::post("/ui/logout")
                .header("cookie", &session)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        assert!(headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0"));
        let (s, _, _) = send(&app, list()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "the session is gone");
    }

    #[tokio::test]
    async fn the_page_is_served_with_a_strict_policy() {
        let (_ws, app) = app().await;
        let (s, headers, _) = send(&app, Request::get("/").body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::OK);
        assert!(headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'"));
        let (s, headers, _) =
            send(&app, Request::get("/app.js").body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::OK);
        assert!(headers["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript"));
    }
}
