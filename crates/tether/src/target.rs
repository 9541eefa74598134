//! Turning a `ws://` or `wss://` URL into where to connect and what to ask.

use base64::Engine as _;
use tether_proto::Request;
use url::Url;

use crate::error::Error;
use crate::options::ConnectOptions;

/// Where a connection goes. (In a browser only the checks are used: the
/// browser connects.)
#[derive(Debug, Clone)]
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) struct Target {
    /// Host for DNS and SNI, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    pub secure: bool,
    pub request: Request,
}

/// Decodes the %XX escapes of a URL's user or password (RFC 3986: `+` is
/// a plus sign there, not a space). The one decoder for every URL we take.
pub(crate) fn decode_userinfo(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

impl Target {
    pub fn parse(url: &str, options: &ConnectOptions) -> Result<Target, Error> {
        let bad = |reason: &str| Error::InvalidUrl {
            url: redact(url),
            reason: reason.to_string(),
        };
        let parsed = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        let secure = match parsed.scheme() {
            "ws" => false,
            "wss" => true,
            "http" | "https" => return Err(bad("use ws:// or wss:// (not http:// or https://)")),
            other => {
                return Err(bad(&format!(
                    "unsupported scheme {other:?}; use ws:// or wss://"
                )))
            }
        };
        if parsed.fragment().is_some() {
            return Err(bad("a WebSocket URL cannot have a #fragment"));
        }
        let host_header = match parsed.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
            None => return Err(bad("the URL has no host")),
        };
        let host = host_header
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = parsed
            .port_or_known_default()
            .unwrap_or(if secure { 443 } else { 80 });
        let mut resource = parsed.path().to_string();
        if resource.is_empty() {
            resource.push('/');
        }
        if let Some(q) = parsed.query() {
            resource.push('?');
            resource.push_str(q);
        }
        let mut request = Request::new(host_header, port, secure, resource);
        if let Some(origin) = &options.origin {
            request.origin(origin.clone());
        }
        for p in &options.protocols {
            request.protocol(p.clone());
        }
        let url_auth = (!parsed.username().is_empty()).then(|| {
            (
                decode_userinfo(parsed.username()),
                decode_userinfo(parsed.password().unwrap_or("")),
            )
        });
        if let Some((user, pass)) = options.basic_auth.clone().or(url_auth) {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            request.header("Authorization", format!("Basic {token}"));
        }
        for (name, value) in &options.headers {
            request.header(name.clone(), value.clone());
        }
        request.validate()?;
        Ok(Target {
            host,
            port,
            secure,
            request,
        })
    }
}

/// The URL with any password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => url.to_string(),
        // Not a URL the parser takes, yet it may still carry a password:
        // mask whatever follows the user name in the authority.
        Err(_) => {
            let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
                return url.to_string();
            };
            let rest = &url[scheme_end..];
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let Some(at) = rest[..authority_end].rfind('@') else {
                return url.to_string();
            };
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end], &rest[at..])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_even_in_urls_that_do_not_parse() {
        assert_eq!(redact("ws://u:pw@h/x"), "ws://u:***@h/x");
        assert_eq!(redact("postgres://u:pw@/db"), "postgres://u:***@/db");
        assert_eq!(
            redact("postgres://u:p@w:x@[bad/db"),
            "postgres://u:***@[bad/db"
        );
        assert_eq!(redact("ws://h/x@y"), "ws://h/x@y");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn parses_urls() {
        let o = ConnectOptions::default();
        let t = Target::parse("wss://example.com/a/b?x=1", &o).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.secure),
            ("example.com", 443, true)
        );
        let t = Target::parse("ws://[::1]:9001", &o).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9001));
        for bad in [
            "http://x/",
            "ftp://x/",
            "ws://x/#frag",
            "not a url",
            "ws://:80/",
        ] {
            assert!(Target::parse(bad, &o).is_err(), "{bad}");
        }
    }

    #[test]
    fn decodes_userinfo_and_redacts() {
        assert_eq!(decode_userinfo("a%40b%3Ac"), "a@b:c");
        assert_eq!(decode_userinfo("100%"), "100%");
        assert_eq!(decode_userinfo("a+b%2B"), "a+b+");
        assert_eq!(redact("ws://u:secret@h/"), "ws://u:***@h/");
        let err = Target::parse("http://u:secret@h/", &ConnectOptions::default()).unwrap_err();
        assert!(!err.to_string().contains("secret"));
    }
}
