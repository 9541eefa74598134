//! Runs the Autobahn|Testsuite client protocol against a fuzzing server:
//! `cargo run --release -p tether --example autobahn_client -- ws://127.0.0.1:9001 AGENT`.
//!
//! It asks for the case count, runs every case (echoing each message back
//! exactly as received), then asks the server to write its reports.

use tether::{connect, ConnectOptions, Event, Message};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let base = args.next().unwrap_or_else(|| "ws://127.0.0.1:9001".into());
    let agent = args.next().unwrap_or_else(|| "tether".into());
    let no_compression = args.any(|a| a == "--no-compression");
    let mut options = ConnectOptions::new();
    options.keepalive(None, None).compression(!no_compression);

    let (_conn, mut rx) = connect(&format!("{base}/getCaseCount"), &options).await?;
    let count: u32 = match rx.next_message().await {
        Ok(Message::Text(t)) => t.trim().parse()?,
        other => return Err(format!("unexpected answer to getCaseCount: {other:?}").into()),
    };
    eprintln!("autobahn: {count} cases");

    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        let (conn, mut rx) = match connect(&url, &options).await {
            Ok(pair) => pair,
            Err(e) => {
                eprintln!("case {case}: connect failed: {e}");
                continue;
            }
        };
        while let Some(event) = rx.next().await {
            match event {
                Event::Message(Message::Text(t)) => {
                    let _ = conn.send_text(&t).await;
                }
                Event::Message(Message::Binary(b)) => {
                    let _ = conn.send_binary(&b).await;
                }
                Event::Closed(c) => {
                    if std::env::var_os("AUTOBAHN_VERBOSE").is_some() {
                        eprintln!(
                            "case {case}: closed {} {:?} clean={} error={:?}",
                            c.code, c.reason, c.clean, c.error
                        );
                    }
                    break;
                }
                _ => {}
            }
        }
        if case % 50 == 0 {
            eprintln!("autobahn: {case}/{count}");
        }
    }

    let (_conn, mut rx) = connect(&format!("{base}/updateReports?agent={agent}"), &options).await?;
    while let Some(event) = rx.next().await {
        if let Event::Closed(_) = event {
            break;
        }
    }
    eprintln!("autobahn: reports updated for agent {agent}");
    Ok(())
}
