//! The host: client types from the config, instances from the store, the
//! live clients, and the operations the management API exposes.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::client::{ClientRuntime, ClientSetup, ClientSpec, ClientState, Status};
use crate::config::{ClientType, Loaded};
use crate::events::{body, EventBus};
use crate::modules::lua::LuaFactory;
use crate::modules::{ClientLookup, ConnHandle, ModuleContext, ModuleFactory, NoModule};
use crate::store::{rfc3339, InstanceRecord, Store, StoreError};

mod cluster;
mod dynamic;
mod instances;
mod predefined;
mod validate;

pub use validate::is_secret_header;
use validate::masked;

/// Why an operation was refused. The API maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// No client type with this name.
    #[error("unknown client type {0:?}")]
    UnknownType(String),
    /// A field is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The key is taken.
    #[error("a client with key {0:?} already exists")]
    Duplicate(String),
    /// No client with this key.
    #[error("no client with key {0:?}")]
    NotFound(String),
    /// Predefined instances cannot be deleted or un-predefined.
    #[error("client {0:?} is predefined by the config; change the config instead")]
    Predefined(String),
    /// A message could not be sent now: the client is not open, is
    /// closing, or its outgoing buffer is full.
    #[error("client {key:?} cannot send: {source}")]
    Send {
        /// The client.
        key: String,
        /// Why.
        #[source]
        source: tether::SendError,
    },
    /// Another node of the cluster holds the client's lease (or none does
    /// right now): the send must go to the owner.
    #[error("client {key:?} is connected on another node of the cluster{}", owner.as_ref().map(|o| format!(" ({})", o.addr)).unwrap_or_else(|| " (none holds it right now; retry in a few seconds)".into()))]
    NotOwner {
        /// The client.
        key: String,
        /// The owner, when one holds a live lease.
        owner: Option<crate::cluster::Owner>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A durable send was not stored.
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
}

/// A type with its module factory.
struct TypeRuntime {
    config: ClientType,
    factory: Option<Arc<dyn ModuleFactory>>,
}

/// What the API shows of a client. Never holds a password.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClientView {
    /// The key.
    pub key: String,
    /// The client type (for dynamic connections, the module's type if any).
    #[serde(rename = "type")]
    pub type_name: Option<String>,
    /// Made from a predefined type.
    pub predefined: bool,
    /// Connects at start and reconnects.
    pub auto_connect: bool,
    /// Honours the proxy environment.
    pub use_env_proxy: bool,
    /// The URL.
    pub url: String,
    /// The Basic-auth user.
    pub user: Option<String>,
    /// Whether a password is stored (the value never leaves the host).
    pub password_set: bool,
    /// Headers, values of credential headers masked.
    pub headers: BTreeMap<String, String>,
    /// Module settings over the type's.
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// Connect timeout in seconds.
    pub timeout: u64,
    /// Its type is gone from the config.
    pub orphaned: bool,
    /// Live state and counters.
    #[serde(flatten)]
    pub status: Status,
    /// Creation time.
    pub created_at: Option<String>,
    /// Last change.
    pub updated_at: Option<String>,
    /// Bumped by every change; sent as the ETag, checked against If-Match.
    pub version: i64,
    /// Its durable outbox in numbers.
    pub outbox: crate::store::outbox::OutboxStats,
}

/// Fields for creating or changing an instance (the API's JSON body).
#[derive(Debug, Default, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceInput {
    /// The client type (create only).
    #[serde(rename = "type")]
    pub type_name: Option<String>,
    /// The key (create only; a UUID when missing).
    pub key: Option<String>,
    /// The URL.
    pub url: Option<String>,
    /// The Basic-auth user; `""` clears it.
    pub user: Option<String>,
    /// The Basic-auth password; `""` clears it.
    pub password: Option<String>,
    /// Headers (replace all).
    pub headers: Option<BTreeMap<String, String>>,
    /// Connect timeout in seconds.
    pub timeout: Option<u64>,
    /// Connect at start and reconnect.
    pub auto_connect: Option<bool>,
    /// Honour the proxy environment.
    pub use_env_proxy: Option<bool>,
    /// Module settings over the type's `[client_type.settings]` (replace
    /// all; `{}` clears them).
    pub settings: Option<serde_json::Map<String, serde_json::Value>>,
    /// Predefined flag: may not be changed.
    pub predefined: Option<bool>,
}

/// The running host.
pub struct Host {
    types: BTreeMap<String, TypeRuntime>,
    store: Arc<dyn Store>,
    clients: RwLock<BTreeMap<String, Arc<ClientRuntime>>>,
    dynamic: Arc<RwLock<BTreeMap<String, Arc<ClientRuntime>>>>,
    bus: EventBus,
    outbox: Arc<crate::outbox::Outbox>,
    webhooks: Vec<Arc<crate::webhooks::Webhook>>,
    /// Set when the host shares its clients with other hosts: then a client
    /// connects only while this node holds its lease.
    clustered: bool,
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// In a cluster: the event log other nodes append to as well.
    shared_log: Option<Arc<crate::events::SharedLog>>,
}

impl Host {
    /// Starts the host: makes the predefined instances, starts every stored
    /// instance, connects the auto-connect ones.
    pub async fn start(config: &Loaded, store: Arc<dyn Store>) -> Result<Arc<Host>, HostError> {
        Self::start_with_modules(config, store, BTreeMap::new()).await
    }

    /// Like [`start`](Self::start), with Rust modules for some types (by type
    /// name); they win over a Lua module of the same type.
    pub async fn start_with_modules(
        config: &Loaded,
        store: Arc<dyn Store>,
        rust_modules: BTreeMap<String, Arc<dyn ModuleFactory>>,
    ) -> Result<Arc<Host>, HostError> {
        Self::start_inner(config, store, rust_modules, false).await
    }

    async fn start_inner(
        config: &Loaded,
        store: Arc<dyn Store>,
        mut rust_modules: BTreeMap<String, Arc<dyn ModuleFactory>>,
        clustered: bool,
    ) -> Result<Arc<Host>, HostError> {
        let types = config
            .types
            .values()
            .map(|t| {
                let factory = rust_modules.remove(&t.name).or_else(|| {
                    let source = t.module_source.clone()?;
                    let path = t.module.clone()?;
                    Some(Arc::new(
                        LuaFactory::new(source, path)
                            .env(t.env.clone())
                            .settings(t.settings.clone())
                            .cpu_limit(t.cpu_limit)
                            .memory_limit(t.memory_limit)
                            .shared_state(t.lua_state == crate::config::LuaState::Shared),
                    ) as Arc<dyn ModuleFactory>)
                });
                (
                    t.name.clone(),
                    TypeRuntime {
                        config: t.clone(),
                        factory,
                    },
                )
            })
            .collect();
        // In a cluster every node's streams show every node's events.
        let shared_log = clustered.then(|| Arc::new(crate::events::SharedLog::default()));
        let bus = match &shared_log {
            Some(shared) => EventBus::with_shared_log(
                4096,
                store.clone(),
                config.event_retention,
                shared.clone(),
            ),
            None => EventBus::with_log(4096, store.clone(), config.event_retention),
        }
        .with_memory(config.event_memory);
        let mut webhooks = Vec::new();
        for w in &config.webhooks {
            webhooks.push(crate::webhooks::Webhook::start(w.clone(), store.clone(), &bus).await?);
        }
        let host = Arc::new(Host {
            webhooks,
            types,
            outbox: crate::outbox::Outbox::start(store.clone(), config.outbox_keep_done),
            store,
            clients: RwLock::new(BTreeMap::new()),
            dynamic: Arc::new(RwLock::new(BTreeMap::new())),
            bus,
            clustered,
            cluster: std::sync::OnceLock::new(),
            shared_log,
        });
        host.sync_predefined().await?;
        for record in host.store.list().await? {
            host.start_instance(&record);
        }
        Ok(host)
    }

    fn spec_for(&self, record: &InstanceRecord) -> ClientSpec {
        let t = self.types.get(&record.type_name).map(|t| &t.config);
        let keepalive = t.map_or((Some(20), Some(20)), |t| {
            (
                Some(t.keepalive.ping_interval_secs),
                Some(t.keepalive.ping_timeout_secs),
            )
        });
        let secs = |s: Option<u64>| s.filter(|s| *s > 0).map(Duration::from_secs);
        ClientSpec {
            url: record.url.clone(),
            credentials: record
                .user
                .clone()
                .map(|u| (u, record.password.clone().unwrap_or_default())),
            headers: record.headers.clone(),
            protocols: t.map(|t| t.protocols.clone()).unwrap_or_default(),
            timeout: Duration::from_secs(record.timeout_secs.max(1)),
            reconnect: record.auto_connect,
            policy: t.map(|t| t.reconnect.policy()).unwrap_or_default(),
            keepalive: (secs(keepalive.0), secs(keepalive.1)),
            compression: t.is_none_or(|t| t.compression),
            use_env_proxy: record.use_env_proxy,
            tls: t.map(|t| t.tls.clone()).unwrap_or_default(),
            settings: crate::brokers::builtin::merge(
                &t.map(|t| t.settings.clone()).unwrap_or_default(),
                &record.settings,
            ),
        }
    }

    fn module_context(
        &self,
        rt: &Arc<ClientRuntime>,
        timers: tokio::sync::mpsc::UnboundedSender<crate::modules::TimerRequest>,
        lookup: ClientLookup,
    ) -> ModuleContext {
        let weak = Arc::downgrade(rt);
        ModuleContext {
            key: rt.key.clone(),
            conn: rt.handle(),
            emit: Arc::new(move |v| {
                if let Some(rt) = weak.upgrade() {
                    rt.publish(body::module(v));
                }
            }),
            clients: lookup,
            timers,
        }
    }

    /// A lookup other clients' modules use; it does not keep the host alive.
    fn lookup(self: &Arc<Self>) -> ClientLookup {
        let weak = Arc::downgrade(self);
        Arc::new(move |key| weak.upgrade().and_then(|h| h.find_handle(key)))
    }

    fn find_handle(&self, key: &str) -> Option<ConnHandle> {
        if let Some(c) = self
            .clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            return Some(c.handle());
        }
        self.dynamic
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map(|c| c.handle())
    }

    fn spawn_client(
        self: &Arc<Self>,
        key: &str,
        type_name: Option<&str>,
        dynamic: bool,
        spec: ClientSpec,
        initial: ClientState,
    ) -> Arc<ClientRuntime> {
        let factory = type_name
            .and_then(|t| self.types.get(t))
            .and_then(|t| t.factory.clone());
        let call_limit = factory
            .as_ref()
            .and_then(|f| f.call_limit())
            .unwrap_or(crate::modules::DEFAULT_CALL_LIMIT);
        let lookup = self.lookup();
        let host = self.clone();
        let durable = match (dynamic, type_name.and_then(|t| self.types.get(t))) {
            (false, Some(t)) => Some(
                crate::outbox::DurableSender::new(
                    self.outbox.clone(),
                    key.to_string(),
                    t.config.outbox.clone(),
                )
                .with_framing(crate::brokers::builtin::framing_for(
                    &t.config,
                    &spec.settings,
                )),
            ),
            _ => None,
        };
        let setup = ClientSetup {
            key: key.to_string(),
            dynamic,
            spec,
            initial,
            bus: self.bus.clone(),
            logged: type_name
                .and_then(|t| self.types.get(t))
                .and_then(|t| t.config.log_events.clone()),
            call_limit,
        };
        let gate = if dynamic { None } else { self.send_gate() };
        ClientRuntime::spawn(setup, move |rt, timers| {
            if let Some(d) = durable {
                rt.handle().set_durable(d);
            }
            if let Some(gate) = gate {
                rt.handle().set_gate(gate);
            }
            let Some(factory) = factory else {
                return Box::new(NoModule) as Box<dyn crate::modules::ClientModule>;
            };
            match factory.create(host.module_context(rt, timers, lookup)) {
                Ok(m) => m,
                Err(e) => {
                    rt.publish_error("module", &format!("module failed to load: {e}"));
                    Box::new(NoModule)
                }
            }
        })
    }

    fn start_instance(self: &Arc<Self>, record: &InstanceRecord) {
        let orphaned = !self.types.contains_key(&record.type_name);
        if orphaned {
            tracing::warn!(client = %record.key, r#type = %record.type_name, "client type is not in the config: instance kept, disabled");
        }
        let initial = if orphaned {
            ClientState::Disabled
        } else {
            ClientState::Closed
        };
        let rt = self.spawn_client(
            &record.key,
            Some(&record.type_name),
            false,
            self.spec_for(record),
            initial,
        );
        // In a cluster the lease decides (`cluster::Members::acquired`).
        if record.auto_connect && !orphaned && !self.clustered {
            rt.connect();
        }
        self.clients
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(record.key.clone(), rt);
    }

    /// The webhook sinks.
    pub fn webhooks(&self) -> &[Arc<crate::webhooks::Webhook>] {
        &self.webhooks
    }

    /// The event bus.
    pub fn events(&self) -> &EventBus {
        &self.bus
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The client types, as the API shows them.
    pub fn types(&self) -> Vec<serde_json::Value> {
        self.types
            .values()
            .map(|t| {
                let c = &t.config;
                json!({
                    "name": c.name,
                    "module": c.module.as_ref().map(|p| p.display().to_string()),
                    "predefined": c.predefined,
                    "defaults": {
                        "url": c.url,
                        "headers": masked(&c.headers),
                        "protocols": c.protocols,
                        "timeout": c.timeout,
                        "auto_connect": c.auto_connect,
                        "use_env_proxy": c.use_env_proxy,
                        "compression": c.compression,
                        "reconnect": {
                            "initial_delay_ms": c.reconnect.initial_delay_ms,
                            "max_delay_ms": c.reconnect.max_delay_ms,
                            "multiplier": c.reconnect.multiplier,
                            "max_attempts": c.reconnect.max_attempts,
                            "reset_after_secs": c.reconnect.reset_after_secs,
                        },
                        "keepalive": {
                            "ping_interval_secs": c.keepalive.ping_interval_secs,
                            "ping_timeout_secs": c.keepalive.ping_timeout_secs,
                        },
                    },
                })
            })
            .collect()
    }

    fn runtime(&self, key: &str) -> Result<Arc<ClientRuntime>, HostError> {
        self.clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
            .ok_or_else(|| HostError::NotFound(key.to_string()))
    }

    fn view(&self, record: &InstanceRecord, rt: Option<&Arc<ClientRuntime>>) -> ClientView {
        ClientView {
            key: record.key.clone(),
            type_name: Some(record.type_name.clone()),
            predefined: record.predefined,
            auto_connect: record.auto_connect,
            use_env_proxy: record.use_env_proxy,
            url: tether::redact(&record.url),
            user: record.user.clone(),
            password_set: record.password.as_deref().is_some_and(|p| !p.is_empty()),
            headers: masked(&record.headers),
            settings: record.settings.clone(),
            timeout: record.timeout_secs,
            orphaned: !self.types.contains_key(&record.type_name),
            status: rt.map(|r| r.status()).unwrap_or_else(Status::closed),
            created_at: Some(rfc3339(record.created_ms)),
            updated_at: Some(rfc3339(record.updated_ms)),
            version: record.version,
            outbox: Default::default(),
        }
    }

    /// Every stored instance with its live state.
    pub async fn list_clients(&self) -> Result<Vec<ClientView>, HostError> {
        let records = self.store.list().await?;
        let clients = self
            .clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut outboxes = self.store.outbox_stats_all().await?;
        Ok(records
            .iter()
            .map(|r| {
                let mut v = self.view(r, clients.get(&r.key));
                v.outbox = outboxes.remove(&r.key).unwrap_or_default();
                v
            })
            .collect())
    }

    /// One instance.
    pub async fn get_client(&self, key: &str) -> Result<ClientView, HostError> {
        let record = self
            .store
            .get(key)
            .await?
            .ok_or_else(|| HostError::NotFound(key.to_string()))?;
        let mut view = self.view(&record, self.runtime(key).ok().as_ref());
        view.outbox = self.store.outbox_stats(key).await?;
        Ok(view)
    }

    /// The recent events of one client (stored or dynamic).
    pub fn client_history(
        &self,
        key: &str,
    ) -> Result<Vec<Arc<crate::events::HostEvent>>, HostError> {
        if let Ok(rt) = self.runtime(key) {
            return Ok(rt.history());
        }
        self.dynamic_runtime(key).map(|rt| rt.history())
    }

    /// Whether a stored or dynamic client has this key.
    pub fn has_client(&self, key: &str) -> bool {
        self.runtime(key).is_ok() || self.dynamic_runtime(key).is_ok()
    }

    /// Closes every connection (waiting up to the close timeout for each).
    pub async fn shutdown(&self) {
        let all: Vec<_> = self
            .clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let dynamic: Vec<_> = self
            .dynamic
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for rt in all.iter().chain(dynamic.iter()) {
            rt.shutdown();
            // Directly too: a worker waiting for a stuck hook would not
            // see its shutdown in time.
            if let Some(conn) = rt.handle().connection() {
                let _ = conn.close(1001, "host shutting down");
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
        for rt in all.iter().chain(dynamic.iter()) {
            while matches!(
                rt.status().state,
                ClientState::Open | ClientState::Closing | ClientState::Connecting
            ) && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
