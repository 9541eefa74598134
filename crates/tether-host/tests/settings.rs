//! `[client_type.settings]` and per-instance settings: what a module sees,
//! and how bad settings of a built-in type are refused.

mod support;

use serde_json::json;
use support::{call, start_host, wait_event, EchoServer, Workspace};

#[tokio::test]
async fn instance_settings_override_the_types_from_the_next_connect() {
    let echo = EchoServer::start().await;
    let ws = Workspace::new("settings");
    ws.write(
        "modules/m.lua",
        "function on_open(conn) emit({greeting = settings.greeting, keep = settings.keep}) end\n",
    );
    ws.write(
        "tether.toml",
        &format!(
            "[[client_type]]\nname = \"t\"\nmodule = \"modules/m.lua\"\n[client_type.settings]\ngreeting = \"from the type\"\nkeep = 7\n[client_type.defaults]\nurl = \"{}\"\n",
            echo.url()
        ),
    );
    let (host, app) = start_host(&ws.config(), &ws.store_url()).await;
    let mut rx = host.events().subscribe();
    let (status, v) = call(
        &app,
        "POST",
        "/api/clients",
        Some(json!({"type": "t", "key": "a"})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    call(&app, "POST", "/api/clients/a/connect", None).await;
    let e = wait_event(&mut rx, "a", |b| b["event"] == "module").await;
    assert_eq!(e["data"], json!({"greeting": "from the type", "keep": 7}));

    let (status, v) = call(
        &app,
        "PATCH",
        "/api/clients/a",
        Some(json!({"settings": {"greeting": "mine"}})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["settings"], json!({"greeting": "mine"}));
    call(&app, "POST", "/api/clients/a/disconnect", None).await;
    wait_event(&mut rx, "a", |b| b["event"] == "close").await;
    call(&app, "POST", "/api/clients/a/connect", None).await;
    let e = wait_event(&mut rx, "a", |b| b["event"] == "module").await;
    assert_eq!(e["data"], json!({"greeting": "mine", "keep": 7}));
    host.shutdown().await;
}

#[tokio::test]
async fn bad_settings_of_a_builtin_type_are_refused_with_the_reason() {
    let ws = Workspace::new("bad-settings");
    ws.write(
        "tether.toml",
        "[[client_type]]\nname = \"m\"\nmodule = \"builtin:mqtt\"\n[client_type.settings]\nsubscribe = [\"a/#\"]\n[client_type.defaults]\nurl = \"ws://127.0.0.1:9/\"\n",
    );
    let (host, app) = start_host(&ws.config(), &ws.store_url()).await;
    for (settings, says) in [
        (json!({"qos": 2}), "use 0 or 1"),
        (json!({"version": "4.0"}), "\"3.1.1\" or \"5\""),
        (json!({"subscribe": "a/#"}), "a list of strings"),
        (json!({"heartbeat_ms": 5}), "no such setting"),
    ] {
        let (status, v) = call(
            &app,
            "POST",
            "/api/clients",
            Some(json!({"type": "m", "settings": settings})),
        )
        .await;
        assert_eq!(status, 400, "{settings}: {v}");
        assert!(
            v["detail"].as_str().unwrap().contains(says),
            "{settings}: {v}"
        );
    }
    let (status, v) = call(
        &app,
        "POST",
        "/api/clients",
        Some(json!({"type": "m", "key": "ok", "settings": {"version": "3.1.1"}})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    // A broker send is checked before anything is stored or sent.
    let (status, v) = call(
        &app,
        "POST",
        "/api/clients/ok/send",
        Some(json!({"topic": "a/#", "body": "x"})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("+ or #"), "{v}");
    host.shutdown().await;

    // In the config too: the file and line name the bad setting.
    let ws = Workspace::new("bad-settings-config");
    ws.write(
        "tether.toml",
        "[[client_type]]\nname = \"m\"\nmodule = \"builtin:stomp\"\n[client_type.settings]\nqos = 1\n",
    );
    let e = tether_host::config::Loaded::load(&ws.dir.join("tether.toml")).unwrap_err();
    assert!(
        e.to_string()
            .contains("settings.qos: builtin:stomp has no such setting"),
        "{e}"
    );
    let ws = Workspace::new("bad-builtin");
    ws.write(
        "tether.toml",
        "[[client_type]]\nname = \"m\"\nmodule = \"builtin:amqp\"\n",
    );
    let e = tether_host::config::Loaded::load(&ws.dir.join("tether.toml")).unwrap_err();
    assert!(e.to_string().contains("no such built-in type"), "{e}");
}

#[test]
fn the_broker_example_config_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/brokers.toml");
    let loaded = tether_host::config::Loaded::load(&path).unwrap();
    let orders = &loaded.types["orders"];
    assert_eq!(orders.protocols, ["v12.stomp"]);
    assert!(orders.framing.is_some());
    assert_eq!(loaded.types["sensors"].protocols, ["mqtt"]);
}
