//! The task behind one client: it owns the module and a
//! [`tether::Persistent`] link (the library's one reconnect supervisor:
//! backoff with full jitter, attempt events), and runs the hooks one at a
//! time, in event order, on the blocking pool: `before_connect` too, which
//! the link asks for before every attempt. A hook call that overruns its
//! limit fails the client instead of freezing it.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use tether::PersistentEvent;

use super::{ClientRuntime, ClientState, Control};
use crate::events::body;
use crate::modules::{ClientModule, ConnHandle, ModuleError, NoModule, TimerRequest};
use crate::store::{now_ms, rfc3339};

/// Past a hook's call limit, how long the worker still waits before it
/// gives the call up (the Lua budget stops Lua code well inside this).
mod link;
mod timers;

use link::{next_event, Link};

const CALL_GRACE: Duration = Duration::from_secs(1);

/// The most messages of a burst handed to the module in one call.
const MESSAGE_BATCH: usize = 256;

/// The task behind one client.
pub(super) struct Worker {
    rt: Arc<ClientRuntime>,
    /// `None` while a hook call runs, and after one overran its limit.
    module: Option<Box<dyn ClientModule>>,
    /// A hook call given up on: it still owns the module until it returns.
    stuck: Option<JoinHandle<Box<dyn ClientModule>>>,
    call_limit: Duration,
    control: mpsc::UnboundedReceiver<Control>,
    timers: mpsc::UnboundedReceiver<TimerRequest>,
    timer_tasks: HashMap<u64, (JoinHandle<()>, Arc<AtomicBool>)>,
    /// The connection that should stay up, while it runs.
    link: Option<Link>,
    /// An operator wants the client connected.
    want: bool,
    /// A connect came while the link was still closing: start a new one
    /// once it has.
    reopen: bool,
    /// Why the link last went down, for a give-up message.
    last_loss: String,
    /// The outbox's delivery on the current connection, and its stop.
    delivery: Option<(JoinHandle<()>, tokio_util::sync::CancellationToken)>,
    /// The module acknowledges outbox messages (`outbox_ack`).
    acks: bool,
    /// An operator's close waiting for the module's protocol goodbye.
    close_at: Option<tokio::time::Instant>,
}

impl Worker {
    pub(super) fn new(
        rt: Arc<ClientRuntime>,
        module: Box<dyn ClientModule>,
        call_limit: Duration,
        control: mpsc::UnboundedReceiver<Control>,
        timers: mpsc::UnboundedReceiver<TimerRequest>,
    ) -> Self {
        let acks = module.acks_outbox();
        Worker {
            link: None,
            reopen: false,
            last_loss: String::new(),
            acks,
            close_at: None,
            delivery: None,
            rt,
            module: Some(module),
            stuck: None,
            call_limit,
            control,
            timers,
            timer_tasks: HashMap::new(),
            want: false,
        }
    }

    pub(super) async fn run(mut self) {
        // Each step is boxed while it runs: an idle client's task then
        // holds what it waits on, not the largest step (1,648 -> 736 bytes).
        loop {
            tokio::select! {
                c = self.control.recv() => match c {
                    Some(Control::Connect) => self.connect(),
                    Some(Control::Disconnect) => Box::pin(self.disconnect()).await,
                    Some(Control::Timer(id)) => Box::pin(self.timer(id)).await,
                    Some(Control::Attempt(reply)) => Box::pin(self.prepare_attempt(reply)).await,
                    Some(Control::Shutdown) | None => {
                        self.stop(1001, "host shutting down");
                        Box::pin(self.drain_until_closed()).await;
                        break;
                    }
                },
                Some(t) = self.timers.recv() => self.schedule(t),
                event = next_event(&mut self.link) => match event {
                    Some(e) => Box::pin(self.handle_event(e)).await,
                    None => self.link = None,
                },
                _ = sleep_until(self.close_at), if self.close_at.is_some() => {
                    self.close_at = None;
                    self.stop(1000, "disconnected by operator");
                }
            }
        }
        self.cancel_timers();
        // A module that shares a Lua state lets go of it under the state's
        // lock, which another instance's call may hold: not on this thread.
        if let Some(module) = self.module.take() {
            tokio::task::spawn_blocking(move || drop(module));
        }
    }

    /// Runs a hook on a blocking thread, keeping hooks in order. Without a
    /// module (one failed) nothing runs.
    async fn hook<R: Send + 'static>(
        &mut self,
        name: &'static str,
        f: impl FnOnce(&mut dyn ClientModule, &ConnHandle) -> Result<R, ModuleError> + Send + 'static,
    ) -> Option<R> {
        let mut module = self.module.take()?;
        // A shared Lua state: wait for it here, holding no thread.
        let gate = match module.gate() {
            None => None,
            Some(gate) => {
                match tokio::time::timeout(self.call_limit + CALL_GRACE, gate.lock_owned()).await {
                    Ok(guard) => Some(guard),
                    Err(_) => {
                        self.module = Some(module);
                        let message = format!(
                            "{name} could not run: the type's shared Lua state stayed busy for {} ms with another instance's call; the client is stopped until it is connected again",
                            (self.call_limit + CALL_GRACE).as_millis()
                        );
                        self.fail(name, message);
                        return None;
                    }
                }
            }
        };
        let handle = self.rt.handle();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let mut task = tokio::task::spawn_blocking(move || {
            let _ = started_tx.send(());
            let started = Instant::now();
            let r = f(module.as_mut(), &handle);
            crate::telemetry::handler_ran(started.elapsed());
            drop(gate);
            (module, r)
        });
        // The limit counts from when the call starts, not while it queues
        // for a blocking thread.
        let _ = started_rx.await;
        let joined = match tokio::time::timeout(self.call_limit + CALL_GRACE, &mut task).await {
            Ok(joined) => joined,
            Err(_) => {
                self.give_up(name, task);
                return None;
            }
        };
        match joined {
            Ok((module, result)) => {
                self.module = Some(module);
                match result {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(client = %self.rt.key, error = %e, "handler failed");
                        self.rt.publish_error("module", &e.message);
                        None
                    }
                }
            }
            Err(e) => {
                // A panicking Rust module: keep the client running without it.
                self.rt
                    .publish_error("module", &format!("{name} panicked: {e}; module disabled"));
                self.module = Some(Box::new(NoModule));
                None
            }
        }
    }

    /// A hook call overran its limit and cannot be interrupted (a Lua C
    /// function, a Rust module that blocks): the client fails. Its
    /// connection closes and no hook runs until the call has returned and
    /// an operator connects it again.
    fn give_up(
        &mut self,
        name: &'static str,
        task: JoinHandle<(
            Box<dyn ClientModule>,
            Result<impl Send + 'static, ModuleError>,
        )>,
    ) {
        let message = format!(
            "{name} did not return within its limit of {} ms (stuck inside one call that cannot be interrupted); the client is stopped until it is connected again",
            self.call_limit.as_millis()
        );
        self.stuck = Some(tokio::spawn(async move {
            match task.await {
                Ok((module, _)) => module,
                Err(_) => Box::new(NoModule) as Box<dyn ClientModule>,
            }
        }));
        self.fail(name, message);
    }

    /// The client fails: its connection closes, its timers stop, and it
    /// stays down until an operator connects it again.
    fn fail(&mut self, name: &'static str, message: String) {
        tracing::error!(client = %self.rt.key, hook = name, "{message}");
        self.cancel_timers();
        self.want = false;
        self.reopen = false;
        self.rt.update(|s| s.last_error = Some(message.clone()));
        self.rt.publish_error("module", &message);
        if let Some(link) = self.link.as_mut() {
            link.stopping = true;
            let _ = link.persistent.close(1011, "handler stuck");
        }
        self.rt.set_state(ClientState::Failed);
    }

    /// Before connecting a failed client: takes the module back if its stuck
    /// call has returned. False (with an error event) while it still runs.
    fn recover(&mut self) -> bool {
        let Some(stuck) = self.stuck.as_mut() else {
            return true;
        };
        if !stuck.is_finished() {
            self.rt.publish_error(
                "module",
                "cannot connect: a hook call of this client is still running past its limit",
            );
            return false;
        }
        let stuck = self.stuck.take();
        if let Some(Ok(module)) = stuck.and_then(futures_util::FutureExt::now_or_never) {
            self.module = Some(module);
        }
        true
    }

    async fn handle_event(&mut self, event: PersistentEvent) {
        match event {
            PersistentEvent::Open { protocol } => {
                let conn = self.link.as_ref().and_then(|l| l.persistent.connection());
                self.rt.handle.set(conn);
                self.rt.set_state(ClientState::Open);
                self.rt
                    .update(|s| s.connected_since = Some(rfc3339(now_ms())));
                self.rt.publish(body::open(protocol.as_deref()));
                self.rt.handle.reset_ready();
                self.start_delivery();
                self.hook("on_open", |m, c| m.on_open(c)).await;
                let ready_on_open = self
                    .rt
                    .handle
                    .durable()
                    .is_some_and(|d| d.config().ready == crate::config::ReadyWhen::Open);
                if ready_on_open {
                    self.rt.handle.mark_ready();
                }
            }
            PersistentEvent::Message(message) => {
                let handles = self.module.as_ref().is_some_and(|m| m.handles_messages());
                let mut batch = vec![message];
                let mut deferred = None;
                // A burst that already arrived goes to the module in one
                // call: one trip to the blocking pool, not one per message.
                while handles && batch.len() < MESSAGE_BATCH {
                    match self.link.as_mut().and_then(|l| l.events.try_next()) {
                        Some(PersistentEvent::Message(m)) => batch.push(m),
                        Some(other) => {
                            deferred = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                for m in &batch {
                    self.rt.update(|s| {
                        s.messages_in += 1;
                        s.bytes_in += m.len() as u64;
                    });
                    self.rt.publish_message(m);
                }
                if handles {
                    self.on_messages(batch).await;
                }
                if let Some(e) = deferred {
                    Box::pin(self.handle_event(e)).await;
                }
            }
            PersistentEvent::Disconnected(closed) => {
                self.close_at = None;
                self.rt.handle.set(None);
                if !self.want {
                    // Closed on request, or the server answered a goodbye:
                    // no more attempts.
                    if let Some(link) = self.link.as_mut() {
                        link.stopping = true;
                        let _ = link.persistent.close(1000, "");
                    }
                }
                self.stop_delivery().await;
                let error = closed
                    .error
                    .as_ref()
                    .map(|e| (e.kind().to_string(), e.to_string()));
                if let Some((kind, message)) = error.clone() {
                    self.rt.update(|s| s.last_error = Some(message.clone()));
                    self.rt.publish_error(&kind, &message);
                    self.hook("on_error", move |m, c| m.on_error(c, &kind, &message))
                        .await;
                }
                let (code, reason) = (closed.code, closed.reason.clone());
                self.rt.publish(body::close(code, &reason));
                self.hook("on_close", move |m, c| m.on_close(c, code, &reason))
                    .await;
                let state = self.rt.status().state;
                if self.want && self.rt.spec().reconnect && state != ClientState::Failed {
                    // The link's next event is its attempt (or its give-up).
                    self.rt.set_state(ClientState::Reconnecting);
                }
                self.last_loss =
                    error.map_or_else(|| format!("closed with {}", closed.code), |(_, m)| m);
            }
            PersistentEvent::Reconnecting { attempt, delay } => {
                let stopping = self.link.as_ref().is_none_or(|l| l.stopping);
                if !stopping && self.rt.status().state != ClientState::Failed {
                    self.rt.update(|s| s.reconnects += 1);
                    self.rt.set_state(ClientState::Reconnecting);
                    self.rt
                        .publish(body::reconnecting(attempt, delay.as_millis()));
                }
            }
            PersistentEvent::GaveUp { attempts } => {
                self.link = None;
                if self.rt.spec().reconnect {
                    let why = std::mem::take(&mut self.last_loss);
                    self.rt.update(|s| {
                        s.last_error = Some(format!("gave up after {attempts} attempts: {why}"))
                    });
                }
                self.settle();
            }
            PersistentEvent::Closed => {
                self.link = None;
                if std::mem::take(&mut self.reopen) && self.want {
                    self.start_link();
                } else {
                    self.settle();
                }
            }
            PersistentEvent::Failed(error) => {
                self.link = None;
                self.unusable(&error);
            }
            _ => {}
        }
    }

    /// Runs `on_message` (and, in ack mode, `outbox_ack`) for each message,
    /// in order, in as few hook calls as the call limit allows: a call
    /// stops taking messages once it has run for half the limit, and the
    /// next call goes on. A failing message is reported and the rest still
    /// run.
    async fn on_messages(&mut self, batch: Vec<tether::Message>) {
        let acks = self.acks;
        let budget = self.call_limit / 2;
        let mut rest = batch;
        while !rest.is_empty() {
            let chunk = std::mem::take(&mut rest);
            let rt = self.rt.clone();
            let done = self
                .hook("on_message", move |m, c| {
                    let started = Instant::now();
                    let mut acked = Vec::new();
                    let mut messages = chunk.into_iter();
                    for message in messages.by_ref() {
                        let handled = m.on_message(c, &message).and_then(|()| {
                            if acks {
                                m.outbox_ack(c, &message)
                            } else {
                                Ok(Vec::new())
                            }
                        });
                        match handled {
                            Ok(ids) => acked.extend(ids),
                            // Reported in place: between the events of the
                            // messages before and after it.
                            Err(e) => {
                                tracing::warn!(client = %rt.key, error = %e, "handler failed");
                                rt.publish_error("module", &e.message);
                            }
                        }
                        if started.elapsed() >= budget {
                            break;
                        }
                    }
                    Ok((acked, messages.collect::<Vec<_>>()))
                })
                .await;
            // The module is stuck or gone: nothing more to run.
            let Some((acked, left)) = done else {
                return;
            };
            if !acked.is_empty() {
                record_acks(self.rt.clone(), acked).await;
            }
            rest = left;
        }
    }

    /// Starts delivering the outbox on the new connection (it waits for
    /// the connection to be ready).
    fn start_delivery(&mut self) {
        let (Some(durable), Some(conn)) = (self.rt.handle.durable(), self.rt.handle.connection())
        else {
            return;
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let delivery = super::delivery::Delivery {
            stop: stop.clone(),
            rt: self.rt.clone(),
            conn,
            store: durable.outbox().store().clone(),
            outbox: durable.outbox().clone(),
            wake: durable.outbox().waker(&self.rt.key),
            config: durable.config().clone(),
            acks: self.acks,
            framing: durable.framing(),
        };
        self.delivery = Some((tokio::spawn(delivery.run()), stop));
    }

    /// Ends the delivery on a connection that is gone, and puts what it had
    /// in flight back in line: it is sent again on the next connection.
    async fn stop_delivery(&mut self) {
        if let Some((task, stop)) = self.delivery.take() {
            stop.cancel();
            let _ = task.await;
        }
        if let Some(d) = self.rt.handle.durable() {
            if let Err(e) = d.outbox().store().outbox_requeue(&self.rt.key).await {
                self.rt
                    .publish_error("outbox", &format!("cannot requeue in-flight messages: {e}"));
            }
        }
    }

    async fn drain_until_closed(&mut self) {
        let deadline = tokio::time::sleep(Duration::from_secs(6));
        tokio::pin!(deadline);
        while self.link.is_some() {
            tokio::select! {
                e = next_event(&mut self.link) => match e {
                    Some(e) => self.handle_event(e).await,
                    None => break,
                },
                _ = &mut deadline => break,
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Records the acknowledgements the module reported (in the outbox's next
/// group commit). An MQTT type reports packet ids: each names the oldest
/// in-flight message whose sequence number gave it.
async fn record_acks(rt: Arc<ClientRuntime>, acked: Vec<String>) {
    use crate::store::outbox::{AckId, OutboxAck};
    let Some(d) = rt.handle.durable() else {
        return;
    };
    let packets = matches!(
        d.framing(),
        Some(crate::brokers::framing::Framing::Mqtt { .. })
    );
    let mut acks = Vec::with_capacity(acked.len());
    for id in acked {
        let id = if packets {
            match id.parse() {
                Ok(pid) => AckId::Packet(pid),
                Err(_) => {
                    rt.publish_error(
                        "outbox",
                        &format!("outbox_ack: {id:?} is not an MQTT packet id"),
                    );
                    continue;
                }
            }
        } else {
            AckId::Message(id)
        };
        acks.push(OutboxAck {
            client: rt.key.clone(),
            id,
        });
    }
    if let Err(e) = d.outbox().ack(acks).await {
        rt.publish_error("outbox", &format!("cannot record acknowledgements: {e}"));
    }
}
