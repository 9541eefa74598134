//! The host's one small HTTP/1.1 client, for its own outgoing requests
//! (webhook deliveries, sends forwarded between cluster nodes): one
//! request per connection, over TLS for `https://`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An answer: the status, and the body (up to 1 MiB).
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// The most of an answer read.
const MAX_ANSWER: usize = (1 << 20) + 64 * 1024;

/// POSTs `body` as JSON to `url` with extra `headers`; gives up after
/// `timeout`. Errors say what failed, for logs and API answers.
pub async fn post_json(
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Answer, String> {
    tokio::time::timeout(timeout, post_once(url, headers, body))
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
}

async fn post_once(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Answer, String> {
    let url = url::Url::parse(url).map_err(|e| e.to_string())?;
    let host = url.host_str().ok_or("no host")?.to_string();
    let port = url.port_or_known_default().ok_or("no port")?;
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: tether\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let mut response = Vec::new();
    if url.scheme() == "https" {
        let config = tether::TlsOptions::default()
            .build()
            .map_err(|e| e.to_string())?;
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("bad server name {host}: {e}"))?;
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        tls.write_all(&request).await.map_err(|e| e.to_string())?;
        read_all(&mut tls, &mut response).await?;
    } else {
        let mut tcp = tcp;
        tcp.write_all(&request).await.map_err(|e| e.to_string())?;
        read_all(&mut tcp, &mut response).await?;
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed
        .parse(&response)
        .map_err(|e| format!("bad HTTP response: {e}"))?
    {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Err("the answer ended inside its head".into()),
    };
    let status = parsed.code.ok_or("no HTTP status")?;
    Ok(Answer {
        status,
        body: response[head_len..].to_vec(),
    })
}

/// Reads until the connection's end (the request said `Connection: close`).
async fn read_all(
    io: &mut (impl tokio::io::AsyncRead + Unpin),
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let mut buf = [0u8; 8192];
    loop {
        let n = match io.read(&mut buf).await {
            Ok(n) => n,
            // A peer that closes without TLS's close_notify, after a
            // complete answer, still answered.
            Err(e) if !out.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e.to_string()),
        };
        if n == 0 {
            return if out.is_empty() {
                Err("the server closed without answering".into())
            } else {
                Ok(())
            };
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > MAX_ANSWER {
            return Err("the answer is over 1 MiB".into());
        }
        if complete(out) {
            return Ok(());
        }
    }
}

/// Whether `out` holds a whole answer: its head, and as many body bytes as
/// its Content-Length says (without one, the answer ends with the
/// connection).
fn complete(out: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = parsed.parse(out) else {
        return false;
    };
    parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .is_some_and(|len| out.len() >= head + len)
}
