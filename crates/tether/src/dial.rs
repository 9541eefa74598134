//! Dialing: TCP (directly or through a proxy), TLS for `wss://`, and the
//! opening handshake, up to the first event.

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tether_proto::{ClientConnection, CloseKind};

use crate::error::Error;
use crate::options::ConnectOptions;
use crate::start::Transport;
use crate::target::Target;

/// TCP (through a proxy if one applies), then TLS for `wss://`.
pub(crate) async fn establish(
    target: &Target,
    proxy: Option<&crate::proxy::Proxy>,
    options: &ConnectOptions,
) -> Result<Box<dyn Transport>, Error> {
    let tcp = match proxy {
        Some(p) => crate::proxy::tunnel(p, &target.host, target.port).await?,
        None => direct(target).await?,
    };
    if !target.secure {
        return Ok(Box::new(tcp));
    }
    let config = match &options.tls {
        Some(c) => c.clone(),
        None => crate::tls::default_config()?,
    };
    let name =
        rustls_pki_types::ServerName::try_from(target.host.clone()).map_err(|e| Error::Tls {
            host: target.host.clone(),
            source: crate::tls::TlsError::InvalidName(e),
        })?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| match Error::from_io(e, &target.host) {
            Error::Reset | Error::Abnormal => Error::Tls {
                host: target.host.clone(),
                source: crate::tls::TlsError::ClosedInHandshake,
            },
            other => other,
        })?;
    Ok(Box::new(tls))
}

/// A direct TCP connection, trying each resolved address in turn.
async fn direct(target: &Target) -> Result<TcpStream, Error> {
    let addrs: Vec<_> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|source| Error::Resolve {
            host: target.host.clone(),
            source,
        })?
        .collect();
    let mut last = None;
    let mut tcp = None;
    for addr in &addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some((addr.to_string(), e)),
        }
    }
    let tcp = match (tcp, last) {
        (Some(t), _) => t,
        (None, Some((addr, source))) => return Err(Error::Connect { addr, source }),
        (None, None) => {
            return Err(Error::Resolve {
                host: target.host.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
            })
        }
    };
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Sends the upgrade request and reads until the engine leaves `Connecting`.
pub(crate) async fn handshake(
    mut io: Box<dyn Transport>,
    target: &Target,
    options: &ConnectOptions,
) -> Result<(Box<dyn Transport>, ClientConnection, tether_proto::Opened), Error> {
    let mut engine = ClientConnection::new(options.config.clone(), &target.request)?;
    let mut out = Vec::new();
    let _ = engine.poll_transmit(&mut out);
    io.write_all(&out)
        .await
        .map_err(|e| Error::from_io(e, &target.host))?;
    io.flush()
        .await
        .map_err(|e| Error::from_io(e, &target.host))?;
    let mut buf = vec![0u8; 8192];
    while engine.state() == tether_proto::State::Connecting {
        let n = io
            .read(&mut buf)
            .await
            .map_err(|e| Error::from_io(e, &target.host))?;
        if n == 0 {
            engine.receive_eof(Instant::now());
        } else {
            engine.receive_data(Instant::now(), &buf[..n]);
        }
    }
    // The first event is Open, or Closed with the handshake's error. Bytes
    // that came with the 101 may already have produced more events.
    match engine.poll_event() {
        Some(tether_proto::Event::Open(opened)) => Ok((io, engine, opened)),
        Some(tether_proto::Event::Closed(c)) => match c.kind {
            CloseKind::Handshake(e) => Err(Error::Handshake(e)),
            _ => Err(Error::Abnormal),
        },
        _ => Err(Error::Abnormal),
    }
}
