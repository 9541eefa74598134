//! The client's link: a [`tether::Persistent`] (the library's reconnect
//! supervisor) that asks this worker before every attempt, and the
//! operator's connect, disconnect and stop.

use std::sync::Arc;

use tether::{Attempt, Persistent, PersistentEvent, PersistentOptions, PersistentReceiver};

use super::Worker;
use crate::client::{AttemptReply, ClientState, Control};
use crate::modules::ConnectRequest;

/// A running [`Persistent`] and its events.
pub(super) struct Link {
    pub persistent: Persistent,
    pub events: PersistentReceiver,
    /// Closed on request: it reconnects no more.
    pub stopping: bool,
}

impl Worker {
    /// An operator's connect: start the link, reopen one that is closing,
    /// or cut the wait of one between attempts short.
    pub(super) fn connect(&mut self) {
        if !self.recover() {
            return;
        }
        self.want = true;
        match self.link.as_mut() {
            None => self.start_link(),
            Some(link) if link.stopping => self.reopen = true,
            // Waiting between attempts: try now (the count of attempts stays,
            // so a caller that keeps connecting does not undo the backoff).
            Some(link) if self.rt.status().state == ClientState::Reconnecting => {
                link.persistent.reconnect_now();
            }
            Some(_) => {}
        }
    }

    /// Opens the link. Each of its attempts asks this worker first (see
    /// [`prepare_attempt`](Self::prepare_attempt)).
    pub(super) fn start_link(&mut self) {
        let spec = self.rt.spec();
        self.rt.set_state(ClientState::Connecting);
        let mut policy = spec.policy.clone();
        if !spec.reconnect {
            policy.max_attempts = Some(0);
        }
        // Asked on the control channel, so it is answered in order with
        // the other hooks. Weak: the link must not keep the worker alive.
        let control = self.rt.control.downgrade();
        let before_attempt: tether::BeforeAttempt = Arc::new(move |_given: Attempt| {
            let control = control.upgrade();
            Box::pin(async move {
                let (reply, answer) = tokio::sync::oneshot::channel();
                control
                    .and_then(|c| c.send(Control::Attempt(reply)).ok())
                    .ok_or_else(|| "the client has stopped".to_string())?;
                answer
                    .await
                    .map_err(|_| "the client has stopped".to_string())?
            })
        });
        let options = PersistentOptions {
            policy,
            queue_bytes: 0,
            before_attempt: Some(before_attempt),
        };
        let opened = Persistent::open(
            self.rt.key.clone(),
            &spec.url,
            &spec.options(&spec.headers),
            options,
        );
        match opened {
            Ok((persistent, events)) => {
                self.link = Some(Link {
                    persistent,
                    events,
                    stopping: false,
                });
            }
            Err(e) => self.unusable(&e),
        }
    }

    /// The URL or headers are unusable: retrying cannot help.
    pub(super) fn unusable(&mut self, e: &tether::Error) {
        self.rt.publish_error(e.kind(), &e.to_string());
        self.rt.update(|s| s.last_error = Some(e.to_string()));
        self.want = false;
        self.rt.set_state(ClientState::Closed);
    }

    /// Before an attempt of the link: `before_connect` with the current
    /// settings, then the URL and options the attempt uses.
    pub(super) async fn prepare_attempt(&mut self, reply: AttemptReply) {
        if !self.want {
            let _ = reply.send(Err("disconnected".into()));
            return;
        }
        let spec = self.rt.spec();
        self.rt.set_state(ClientState::Connecting);
        let connect = ConnectRequest {
            key: self.rt.key.clone(),
            url: spec.url.clone(),
            headers: spec.headers.clone(),
            credentials: spec.credentials.clone(),
            settings: spec.settings.clone(),
        };
        let prepared = self
            .hook("before_connect", move |m, _| {
                let mut r = connect;
                m.before_connect(&mut r).map(|()| r)
            })
            .await;
        let Some(connect) = prepared else {
            self.last_loss = "before_connect failed".into();
            let _ = reply.send(Err(self.last_loss.clone()));
            return;
        };
        let mut options = spec.options(&connect.headers);
        if let Some(gate) = self.rt.handle.gate() {
            // In a cluster: bytes queued before a pause never go out after it.
            let key = self.rt.key.clone();
            options.write_gate(Arc::new(move || gate(&key)));
        }
        let _ = reply.send(Ok(Attempt {
            url: connect.url,
            options,
        }));
    }

    /// The link has ended: closed, unless disabled or failed.
    pub(super) fn settle(&mut self) {
        self.want = false;
        let state = self.rt.status().state;
        if !matches!(state, ClientState::Disabled | ClientState::Failed) {
            self.rt.set_state(ClientState::Closed);
        }
    }

    /// An operator's close: the module may say goodbye first (and close
    /// once the server answered); the host closes after the grace anyway.
    pub(super) async fn disconnect(&mut self) {
        let open = self.rt.handle.connection().is_some() && self.link.is_some();
        if open && self.module.is_some() {
            self.want = false;
            self.reopen = false;
            let waits = self
                .hook("before_close", |m, c| m.before_close(c))
                .await
                .unwrap_or(false);
            if waits && self.link.is_some() {
                self.rt.set_state(ClientState::Closing);
                self.close_at = Some(tokio::time::Instant::now() + crate::modules::CLOSE_GRACE);
                return;
            }
        }
        self.stop(1000, "disconnected by operator");
    }

    /// Closes the connection with `code` and stops reconnecting. A failed
    /// client stays failed.
    pub(super) fn stop(&mut self, code: u16, reason: &str) {
        self.want = false;
        self.reopen = false;
        let state = self.rt.status().state;
        let connected = self.rt.handle.connection().is_some();
        if let Some(link) = self.link.as_mut() {
            link.stopping = true;
            let closed = link.persistent.close(code, reason).is_ok();
            if closed && connected && state != ClientState::Failed {
                self.rt.set_state(ClientState::Closing);
                return;
            }
        }
        if !connected && !matches!(state, ClientState::Disabled | ClientState::Failed) {
            self.rt.set_state(ClientState::Closed);
        }
    }
}

pub(super) async fn next_event(link: &mut Option<Link>) -> Option<PersistentEvent> {
    match link {
        Some(link) => link.events.next().await,
        None => std::future::pending().await,
    }
}
