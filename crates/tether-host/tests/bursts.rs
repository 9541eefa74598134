//! A burst of messages goes to the module in one call (one trip to the
//! blocking pool); each message still runs on its own: in order, under its
//! own CPU budget, and a failing one does not stop the rest.

mod support;

use support::{call, start_host, wait_event, EchoServer, Workspace};

#[tokio::test]
async fn a_failing_message_in_a_burst_does_not_stop_the_others() {
    let echo = EchoServer::start().await;
    let ws = Workspace::with_module(
        "bursts",
        "function on_open(conn)\n  for i = 1, 50 do conn:send(i == 25 and 'bad' or tostring(i)) end\nend\n\
         function on_message(conn, msg)\n  if msg.data == 'bad' then error('bad message') end\n  emit(msg.data)\nend\n",
        &echo.url(),
    );
    let (host, app) = start_host(&ws.config(), &ws.store_url()).await;
    let mut rx = host.events().subscribe();
    call(&app, "POST", "/api/clients/t/connect", None).await;
    let mut emitted = Vec::new();
    let mut errors = Vec::new();
    // The error comes in its place: after 24, before 26.
    while emitted.len() < 49 || errors.is_empty() {
        let e = wait_event(&mut rx, "t", |b| {
            b["event"] == "module" || b["event"] == "error"
        })
        .await;
        if e["event"] == "module" {
            emitted.push(e["data"].as_str().unwrap().to_string());
        } else {
            assert_eq!(emitted.len(), 24, "the error is reported in its place");
            errors.push(e["message"].as_str().unwrap().to_string());
        }
    }
    let want: Vec<String> = (1..=50)
        .filter(|i| *i != 25)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(emitted, want, "in order, none lost");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("bad message"), "{errors:?}");
    let (_, v) = call(&app, "GET", "/api/clients/t", None).await;
    assert_eq!(v["messages_in"], 50, "{v}");
    assert_eq!(v["state"], "open");
    host.shutdown().await;
}
