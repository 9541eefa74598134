//! Proxies: HTTP CONNECT (for `ws://` and `wss://`) and SOCKS5 (names
//! resolved on the proxy), chosen explicitly or from the environment
//! (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, lower case too).

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use url::Url;

use crate::error::Error;

pub use crate::options::ProxyMode;

/// A resolved proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Proxy {
    pub kind: ProxyKind,
    pub host: String,
    pub port: u16,
    pub auth: Option<(String, String)>,
    /// The proxy URL without credentials, for messages.
    pub display: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyKind {
    Http,
    Socks5,
}

impl Proxy {
    pub fn parse(url: &str) -> Result<Proxy, Error> {
        let bad = |reason: String| Error::InvalidUrl {
            url: crate::target::redact(url),
            reason,
        };
        let parsed = Url::parse(url).map_err(|e| bad(format!("invalid proxy URL: {e}")))?;
        let kind = match parsed.scheme() {
            "http" => ProxyKind::Http,
            "socks5" | "socks5h" => ProxyKind::Socks5,
            other => {
                return Err(bad(format!(
                    "unsupported proxy scheme {other:?}; use http:// or socks5://"
                )))
            }
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| bad("the proxy URL has no host".into()))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = parsed.port().unwrap_or(match kind {
            ProxyKind::Http => 8080,
            ProxyKind::Socks5 => 1080,
        });
        let auth = (!parsed.username().is_empty()).then(|| {
            (
                crate::target::decode_userinfo(parsed.username()),
                crate::target::decode_userinfo(parsed.password().unwrap_or("")),
            )
        });
        let scheme = parsed.scheme();
        Ok(Proxy {
            kind,
            display: format!("{scheme}://{}:{port}", parsed.host_str().unwrap_or("")),
            host,
            port,
            auth,
        })
    }
}

fn env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

/// Whether `host` (and `port`) matches a NO_PROXY list: `*`, exact names,
/// domain suffixes (`example.com` and `.example.com` both match
/// `a.example.com`), IP addresses, each optionally with `:port`.
pub fn no_proxy_matches(list: &str, host: &str, port: u16) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let (name, entry_port) = match entry.rsplit_once(':') {
                Some((n, p)) if !n.contains(':') || n.ends_with(']') => (n, p.parse::<u16>().ok()),
                _ => (entry, None),
            };
            if entry_port.is_some_and(|p| p != port) {
                return false;
            }
            let name = name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .to_ascii_lowercase();
            host == name || host.ends_with(&format!(".{name}"))
        })
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The proxy to use for a target, if any.
pub(crate) fn resolve(
    mode: &ProxyMode,
    host: &str,
    port: u16,
    secure: bool,
) -> Result<Option<Proxy>, Error> {
    match mode {
        ProxyMode::None => Ok(None),
        ProxyMode::Url(u) => Proxy::parse(u).map(Some),
        ProxyMode::Environment => {
            // Loopback is never sent through an environment proxy.
            if is_loopback(host) {
                return Ok(None);
            }
            if let Some(list) = env(&["NO_PROXY", "no_proxy"]) {
                if no_proxy_matches(&list, host, port) {
                    return Ok(None);
                }
            }
            let url = if secure {
                env(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])
            } else {
                env(&["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
            };
            url.map(|u| Proxy::parse(&u)).transpose()
        }
    }
}

/// Connects to the proxy and opens a tunnel to `host:port` through it.
pub(crate) async fn tunnel(proxy: &Proxy, host: &str, port: u16) -> Result<TcpStream, Error> {
    let addr = format!("{}:{}", proxy.host, proxy.port);
    let mut tcp = TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(|source| Error::Connect {
            addr: format!("proxy {}", proxy.display),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let io_err = |e: std::io::Error| Error::Proxy {
        proxy: proxy.display.clone(),
        reason: format!("I/O error: {e}"),
        source: Some(e),
    };
    match proxy.kind {
        ProxyKind::Http => {
            let authority = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
            if let Some((u, p)) = &proxy.auth {
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                req.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
            }
            req.push_str("\r\n");
            tcp.write_all(req.as_bytes()).await.map_err(io_err)?;
            // Read the response head byte by byte: nothing after it may be consumed.
            let mut head = Vec::with_capacity(256);
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if head.len() > 16 * 1024 {
                    return Err(Error::Proxy {
                        proxy: proxy.display.clone(),
                        reason: "response head over 16 KiB".into(),
                        source: None,
                    });
                }
                if tcp.read(&mut byte).await.map_err(io_err)? == 0 {
                    return Err(Error::Proxy {
                        proxy: proxy.display.clone(),
                        reason: "closed the connection before answering CONNECT".into(),
                        source: None,
                    });
                }
                head.push(byte[0]);
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            resp.parse(&head).map_err(|e| Error::Proxy {
                proxy: proxy.display.clone(),
                reason: format!("invalid answer to CONNECT: {e}"),
                source: None,
            })?;
            match resp.code {
                Some(200..=299) => Ok(tcp),
                Some(status) => Err(Error::ProxyRefused {
                    proxy: proxy.display.clone(),
                    status,
                }),
                None => Err(Error::Proxy {
                    proxy: proxy.display.clone(),
                    reason: "no status in the answer to CONNECT".into(),
                    source: None,
                }),
            }
        }
        ProxyKind::Socks5 => {
            socks5(&mut tcp, proxy, host, port)
                .await
                .map_err(|e| match e {
                    Socks5Error::Io(e) => io_err(e),
                    Socks5Error::Refused(reason) => Error::Proxy {
                        proxy: proxy.display.clone(),
                        reason,
                        source: None,
                    },
                })?;
            let _ = addr;
            Ok(tcp)
        }
    }
}

enum Socks5Error {
    Io(std::io::Error),
    Refused(String),
}

impl From<std::io::Error> for Socks5Error {
    fn from(e: std::io::Error) -> Self {
        Socks5Error::Io(e)
    }
}

/// RFC 1928 (with RFC 1929 username/password): CONNECT by domain name.
async fn socks5(
    tcp: &mut TcpStream,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> Result<(), Socks5Error> {
    let methods: &[u8] = if proxy.auth.is_some() {
        &[0x00, 0x02]
    } else {
        &[0x00]
    };
    let mut hello = vec![0x05, methods.len() as u8];
    hello.extend_from_slice(methods);
    tcp.write_all(&hello).await?;
    let mut reply = [0u8; 2];
    tcp.read_exact(&mut reply).await?;
    if reply[0] != 0x05 {
        return Err(Socks5Error::Refused("not a SOCKS5 server".into()));
    }
    match reply[1] {
        0x00 => {}
        0x02 => {
            let (u, p) = proxy.auth.clone().ok_or_else(|| {
                Socks5Error::Refused(
                    "asks for a username and password; put them in the proxy URL".into(),
                )
            })?;
            if u.len() > 255 || p.len() > 255 {
                return Err(Socks5Error::Refused(
                    "username or password over 255 bytes".into(),
                ));
            }
            let mut auth = vec![0x01, u.len() as u8];
            auth.extend_from_slice(u.as_bytes());
            auth.push(p.len() as u8);
            auth.extend_from_slice(p.as_bytes());
            tcp.write_all(&auth).await?;
            let mut r = [0u8; 2];
            tcp.read_exact(&mut r).await?;
            if r[1] != 0x00 {
                return Err(Socks5Error::Refused(
                    "rejected the username or password".into(),
                ));
            }
        }
        0xFF => {
            return Err(Socks5Error::Refused(
                "accepts none of our authentication methods (is a password needed?)".into(),
            ))
        }
        m => {
            return Err(Socks5Error::Refused(format!(
                "chose unknown authentication method {m:#x}"
            )))
        }
    }
    if host.len() > 255 {
        return Err(Socks5Error::Refused("host name over 255 bytes".into()));
    }
    let mut req = vec![0x05, 0x01, 0x00];
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => {
            req.push(0x01);
            req.extend_from_slice(&ip.octets());
        }
        Ok(std::net::IpAddr::V6(ip)) => {
            req.push(0x04);
            req.extend_from_slice(&ip.octets());
        }
        Err(_) => {
            req.push(0x03);
            req.push(host.len() as u8);
            req.extend_from_slice(host.as_bytes());
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    tcp.write_all(&req).await?;
    let mut head = [0u8; 4];
    tcp.read_exact(&mut head).await?;
    if head[1] != 0x00 {
        let why = match head[1] {
            0x01 => "general failure",
            0x02 => "connection not allowed by ruleset",
            0x03 => "network unreachable",
            0x04 => "host unreachable",
            0x05 => "connection refused by the destination",
            0x06 => "TTL expired",
            0x07 => "command not supported",
            0x08 => "address type not supported",
            _ => "unknown error",
        };
        return Err(Socks5Error::Refused(format!(
            "CONNECT failed: {why} (code {})",
            head[1]
        )));
    }
    let skip = match head[3] {
        0x01 => 4,
        0x04 => 16,
        0x03 => {
            let mut n = [0u8; 1];
            tcp.read_exact(&mut n).await?;
            n[0] as usize
        }
        _ => {
            return Err(Socks5Error::Refused(
                "invalid address type in the reply".into(),
            ))
        }
    };
    let mut rest = vec![0u8; skip + 2];
    tcp.read_exact(&mut rest).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_lists() {
        assert!(no_proxy_matches("*", "anything", 1));
        assert!(no_proxy_matches(
            "localhost,.example.com",
            "a.example.com",
            80
        ));
        assert!(no_proxy_matches("example.com", "example.com", 80));
        assert!(no_proxy_matches("example.com", "deep.a.example.com", 80));
        assert!(!no_proxy_matches("example.com", "badexample.com", 80));
        assert!(no_proxy_matches("127.0.0.1", "127.0.0.1", 9000));
        assert!(no_proxy_matches("h:8080", "h", 8080));
        assert!(!no_proxy_matches("h:8080", "h", 9090));
        assert!(no_proxy_matches("[::1]", "::1", 1));
        assert!(!no_proxy_matches("", "h", 1));
    }

    #[test]
    fn environment_picks_by_scheme_and_honours_no_proxy() {
        // The only test in this binary that touches these variables.
        std::env::set_var("HTTP_PROXY", "http://plain:3128");
        std::env::set_var("HTTPS_PROXY", "http://secure:3128");
        std::env::set_var("NO_PROXY", "internal.example,127.0.0.1");
        let env = ProxyMode::Environment;
        assert_eq!(
            resolve(&env, "a.test", 80, false).unwrap().unwrap().host,
            "plain"
        );
        assert_eq!(
            resolve(&env, "a.test", 443, true).unwrap().unwrap().host,
            "secure"
        );
        assert_eq!(
            resolve(&env, "x.internal.example", 80, false).unwrap(),
            None
        );
        assert_eq!(resolve(&env, "127.0.0.1", 80, false).unwrap(), None);
        std::env::remove_var("NO_PROXY");
        // Loopback never goes through an environment proxy.
        assert_eq!(resolve(&env, "127.0.0.2", 80, false).unwrap(), None);
        assert_eq!(resolve(&env, "localhost", 80, false).unwrap(), None);
        assert_eq!(resolve(&env, "::1", 80, false).unwrap(), None);
        // An explicit proxy wins; None turns proxies off.
        let explicit = ProxyMode::Url("socks5://s:1080".into());
        assert_eq!(
            resolve(&explicit, "x.internal.example", 80, false)
                .unwrap()
                .unwrap()
                .kind,
            ProxyKind::Socks5
        );
        assert_eq!(
            resolve(&ProxyMode::None, "a.test", 80, false).unwrap(),
            None
        );
        for v in ["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"] {
            std::env::remove_var(v);
        }
    }

    #[test]
    fn proxy_urls() {
        let p = Proxy::parse("http://u%40x:p%3Aw@proxy.local:3128").unwrap();
        assert_eq!(
            (p.kind, p.host.as_str(), p.port),
            (ProxyKind::Http, "proxy.local", 3128)
        );
        assert_eq!(p.auth, Some(("u@x".into(), "p:w".into())));
        assert!(!p.display.contains("p:w") && !p.display.contains("p%3Aw"));
        assert_eq!(Proxy::parse("socks5h://s").unwrap().port, 1080);
        assert!(Proxy::parse("ftp://x").is_err());
    }
}
