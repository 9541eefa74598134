//! Stored instances: create, change, delete, connect, disconnect, send.

use std::sync::Arc;

use serde_json::json;

use super::validate::{audit_detail, check_headers, check_key, check_timeout, masked};
use super::{ClientView, Host, HostError, InstanceInput};
use crate::client::ClientState;
use crate::config::check_url;
use crate::store::{now_ms, Change, InstanceRecord, StoreError};

impl Host {
    /// Creates an instance and connects it when auto-connect is set.
    pub async fn create_client(
        self: &Arc<Self>,
        input: InstanceInput,
        actor: &str,
    ) -> Result<ClientView, HostError> {
        let type_name = input
            .type_name
            .clone()
            .ok_or_else(|| HostError::Invalid("field \"type\" is required".into()))?;
        let t = self
            .types
            .get(&type_name)
            .ok_or_else(|| HostError::UnknownType(type_name.clone()))?;
        if input.predefined == Some(true) {
            return Err(HostError::Invalid("instances cannot be made predefined through the API; set predefined = true on the type in the config".into()));
        }
        let key = match input.key.clone() {
            Some(k) => {
                check_key(&k)?;
                k
            }
            None => uuid::Uuid::new_v4().to_string(),
        };
        let url = input
            .url
            .clone()
            .or_else(|| t.config.url.clone())
            .ok_or_else(|| {
                HostError::Invalid(format!(
                    "field \"url\" is required: type {type_name:?} has no default URL"
                ))
            })?;
        check_url(&url).map_err(HostError::Invalid)?;
        let headers = input
            .headers
            .clone()
            .unwrap_or_else(|| t.config.headers.clone());
        check_headers(&headers)?;
        if let Some(s) = &input.settings {
            check_instance_settings(&t.config, s)?;
        }
        let now = now_ms();
        let record = InstanceRecord {
            key: key.clone(),
            type_name,
            predefined: false,
            url,
            user: input.user.clone().filter(|u| !u.is_empty()),
            password: input.password.clone().filter(|p| !p.is_empty()),
            headers,
            timeout_secs: check_timeout(input.timeout.unwrap_or(t.config.timeout))?,
            auto_connect: input.auto_connect.unwrap_or(t.config.auto_connect),
            use_env_proxy: input.use_env_proxy.unwrap_or(t.config.use_env_proxy),
            settings: input.settings.clone().unwrap_or_default(),
            created_ms: now,
            updated_ms: now,
            version: 1,
        };
        if self.dynamic_runtime(&key).is_ok() {
            return Err(HostError::Duplicate(key));
        }
        let change = Change {
            actor,
            action: "create",
            detail: audit_detail(&record),
        };
        self.store
            .insert(&record, change)
            .await
            .map_err(|e| match e {
                StoreError::Duplicate(k) => HostError::Duplicate(k),
                other => other.into(),
            })?;
        self.start_instance(&record);
        self.get_client(&key).await
    }

    /// Changes an instance. New settings apply from the next connection.
    /// With `expected`, the change applies only to that version.
    pub async fn update_client(
        &self,
        key: &str,
        input: InstanceInput,
        expected: Option<i64>,
        actor: &str,
    ) -> Result<ClientView, HostError> {
        let mut record = self
            .store
            .get(key)
            .await?
            .ok_or_else(|| HostError::NotFound(key.to_string()))?;
        if input.key.as_deref().is_some_and(|k| k != key) {
            return Err(HostError::Invalid("the key cannot be changed".into()));
        }
        if input
            .type_name
            .as_deref()
            .is_some_and(|t| t != record.type_name)
        {
            return Err(HostError::Invalid(
                "the type cannot be changed; create a new instance".into(),
            ));
        }
        if input.predefined.is_some_and(|p| p != record.predefined) {
            return Err(HostError::Predefined(key.to_string()));
        }
        let mut changed = serde_json::Map::new();
        if let Some(url) = input.url {
            check_url(&url).map_err(HostError::Invalid)?;
            changed.insert("url".into(), json!(tether::redact(&url)));
            record.url = url;
        }
        if let Some(user) = input.user {
            changed.insert("user".into(), json!(user));
            record.user = Some(user).filter(|u| !u.is_empty());
        }
        if let Some(password) = input.password {
            changed.insert(
                "password".into(),
                json!(if password.is_empty() {
                    "cleared"
                } else {
                    "changed"
                }),
            );
            record.password = Some(password).filter(|p| !p.is_empty());
        }
        if let Some(headers) = input.headers {
            check_headers(&headers)?;
            changed.insert("headers".into(), json!(masked(&headers)));
            record.headers = headers;
        }
        if let Some(t) = input.timeout {
            record.timeout_secs = check_timeout(t)?;
            changed.insert("timeout".into(), json!(t));
        }
        if let Some(a) = input.auto_connect {
            record.auto_connect = a;
            changed.insert("auto_connect".into(), json!(a));
        }
        if let Some(s) = &input.settings {
            if let Some(t) = self.types.get(&record.type_name) {
                check_instance_settings(&t.config, s)?;
            }
            record.settings = s.clone();
            changed.insert("settings".into(), json!(s));
        }
        if let Some(p) = input.use_env_proxy {
            record.use_env_proxy = p;
            changed.insert("use_env_proxy".into(), json!(p));
        }
        record.updated_ms = now_ms();
        let change = Change {
            actor,
            action: "update",
            detail: serde_json::Value::Object(changed),
        };
        record.version = self.store.update(&record, expected, change).await?;
        if let Ok(rt) = self.runtime(key) {
            rt.set_spec(self.spec_for(&record));
        }
        self.get_client(key).await
    }

    /// Deletes an instance (not a predefined one), closing its connection.
    /// With `expected`, only that version is deleted.
    pub async fn delete_client(
        &self,
        key: &str,
        expected: Option<i64>,
        actor: &str,
    ) -> Result<(), HostError> {
        let record = self
            .store
            .get(key)
            .await?
            .ok_or_else(|| HostError::NotFound(key.to_string()))?;
        if record.predefined
            && self
                .types
                .get(&record.type_name)
                .is_some_and(|t| t.config.predefined)
        {
            return Err(HostError::Predefined(key.to_string()));
        }
        let change = Change {
            actor,
            action: "delete",
            detail: json!({"type": record.type_name}),
        };
        self.store.delete(key, expected, change).await?;
        if let Some(rt) = self
            .clients
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key)
        {
            rt.shutdown();
        }
        Ok(())
    }

    /// Connects an instance.
    pub async fn connect_client(&self, key: &str, actor: &str) -> Result<ClientView, HostError> {
        let rt = self.runtime(key)?;
        if rt.status().state == ClientState::Disabled {
            return Err(HostError::Invalid(format!(
                "client {key:?} is disabled: its type is not in the config"
            )));
        }
        self.own_for_connect(key).await?;
        rt.connect();
        self.store.audit(actor, "connect", key, json!({})).await?;
        self.get_client(key).await
    }

    /// Disconnects an instance and stops reconnecting it.
    pub async fn disconnect_client(&self, key: &str, actor: &str) -> Result<ClientView, HostError> {
        let rt = self.runtime(key)?;
        self.own_for_disconnect(key).await?;
        rt.disconnect();
        self.store
            .audit(actor, "disconnect", key, json!({}))
            .await?;
        self.get_client(key).await
    }

    /// Stores a message in an instance's outbox; returns once it is on disk.
    /// `durable: None` follows the type's `[client_type.outbox] durable`.
    pub async fn send_durable(
        &self,
        key: &str,
        message: &tether::Message,
        id: Option<String>,
        ttl_secs: Option<u64>,
    ) -> Result<crate::outbox::Stored, HostError> {
        let rt = self.runtime(key)?;
        let handle = rt.handle();
        let sender = handle.durable().ok_or_else(|| {
            HostError::Invalid(format!(
                "client {key:?} has no outbox: its type is not in the config"
            ))
        })?;
        Ok(sender.send(message, id, ttl_secs).await?)
    }

    /// Wakes an instance's outbox delivery (after a retry).
    pub fn wake_outbox(&self, key: &str) {
        self.outbox.waker(key).notify_one();
    }

    /// Whether sends to `key` are durable unless they say otherwise.
    pub fn durable_by_default(&self, key: &str) -> bool {
        self.runtime(key).ok().is_some_and(|rt| {
            rt.handle()
                .durable()
                .is_some_and(|d| d.durable_by_default())
        })
    }

    /// Sends a message on an open instance.
    pub fn send(&self, key: &str, message: &tether::Message) -> Result<(), HostError> {
        let rt = self.runtime(key)?;
        if self.clustered && self.cluster().and_then(|c| c.epoch(key)).is_none() {
            return Err(HostError::NotOwner {
                key: key.to_string(),
                owner: None,
            });
        }
        rt.send(message).map_err(|source| HostError::Send {
            key: key.to_string(),
            source,
        })
    }

    /// A send to a broker type (`builtin:stomp`, `builtin:mqtt`): `send` is
    /// `{"destination"|"topic", "body", "headers"|"qos", …}`, framed for the
    /// protocol. Durable: stored with the receipt (STOMP) or QoS 1 (MQTT)
    /// that acknowledges it; returns what was stored. Plain: sent now.
    pub async fn send_broker(
        &self,
        key: &str,
        send: &serde_json::Value,
        durable: Option<(Option<String>, Option<u64>)>,
    ) -> Result<Option<crate::outbox::Stored>, HostError> {
        let rt = self.runtime(key)?;
        let handle = rt.handle();
        let sender = handle.durable();
        let framing = sender.and_then(|d| d.framing()).ok_or_else(|| {
            HostError::Invalid(format!(
                "client {key:?} is not of a broker type (module = \"builtin:stomp\" or \"builtin:mqtt\"); send \"text\" or \"base64\""
            ))
        })?;
        let as_message = |bytes: Vec<u8>| match framing {
            crate::brokers::framing::Framing::Stomp => match String::from_utf8(bytes) {
                Ok(t) => tether::Message::Text(t),
                Err(e) => tether::Message::Binary(e.into_bytes()),
            },
            _ => tether::Message::Binary(bytes),
        };
        let invalid = |e: crate::brokers::framing::FramingError| HostError::Invalid(e.to_string());
        match (durable, sender) {
            (Some((id, ttl)), Some(sender)) => {
                let id = id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
                let framed = framing.frame(send, Some(&id)).map_err(invalid)?;
                let stored = sender
                    .send(&as_message(framed.bytes), Some(id), ttl)
                    .await?;
                Ok(Some(stored))
            }
            _ => {
                let framed = framing.frame(send, None).map_err(invalid)?;
                rt.send(&as_message(framed.bytes))
                    .map_err(|source| HostError::Send {
                        key: key.to_string(),
                        source,
                    })?;
                Ok(None)
            }
        }
    }
}

/// Instance settings of a built-in broker type are checked as the type's
/// are (known keys, right kinds), merged over the type's.
fn check_instance_settings(
    t: &crate::config::ClientType,
    settings: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), HostError> {
    let Some(module) = t.module.as_ref().and_then(|m| m.to_str()) else {
        return Ok(());
    };
    if t.framing.is_none() {
        return Ok(());
    }
    let name = module
        .strip_prefix("builtin/")
        .and_then(|m| m.strip_suffix(".lua"))
        .unwrap_or(module);
    let merged = crate::brokers::builtin::merge(&t.settings, settings);
    crate::brokers::builtin::Builtin::load(name, &merged)
        .map(|_| ())
        .map_err(HostError::Invalid)
}
