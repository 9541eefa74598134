//! Dynamic connections: opened by key and URL through the API, not stored,
//! forgotten once closed.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;

use super::validate::{check_headers, check_key};
use super::{Host, HostError};
use crate::client::{ClientRuntime, ClientState};
use crate::config::check_url;
use crate::store::{now_ms, InstanceRecord};

impl Host {
    pub(super) fn dynamic_runtime(&self, key: &str) -> Result<Arc<ClientRuntime>, HostError> {
        self.dynamic
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
            .ok_or_else(|| HostError::NotFound(key.to_string()))
    }

    /// Opens a connection that is not stored; `type_name` lends its module
    /// and defaults. It is forgotten once closed.
    pub fn open_dynamic(
        self: &Arc<Self>,
        key: Option<String>,
        url: String,
        type_name: Option<String>,
        headers: BTreeMap<String, String>,
    ) -> Result<serde_json::Value, HostError> {
        let key = match key {
            Some(k) => {
                check_key(&k)?;
                k
            }
            None => uuid::Uuid::new_v4().to_string(),
        };
        if let Some(t) = &type_name {
            if !self.types.contains_key(t) {
                return Err(HostError::UnknownType(t.clone()));
            }
        }
        check_url(&url).map_err(HostError::Invalid)?;
        check_headers(&headers)?;
        if self.has_client(&key) {
            return Err(HostError::Duplicate(key));
        }
        let record = InstanceRecord {
            key: key.clone(),
            type_name: type_name.clone().unwrap_or_default(),
            predefined: false,
            url,
            user: None,
            password: None,
            headers,
            timeout_secs: type_name
                .as_ref()
                .and_then(|t| self.types.get(t))
                .map_or(30, |t| t.config.timeout),
            auto_connect: false,
            use_env_proxy: false,
            settings: Default::default(),
            created_ms: now_ms(),
            updated_ms: now_ms(),
            version: 0,
        };
        let mut spec = self.spec_for(&record);
        spec.reconnect = false;
        let rt = self.spawn_client(&key, type_name.as_deref(), true, spec, ClientState::Closed);
        self.dynamic
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), rt.clone());
        // Forget it once it has closed.
        let dynamic = Arc::downgrade(&self.dynamic);
        let mut events = self.bus.subscribe();
        let watch_key = key.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e)
                        if e.client == watch_key
                            && e.dynamic
                            && e.name() == "state"
                            && e.body["state"] == "closed" =>
                    {
                        break
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
            if let Some(d) = dynamic.upgrade() {
                if let Some(rt) = d
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&watch_key)
                {
                    rt.shutdown();
                }
            }
        });
        rt.connect();
        Ok(dynamic_view(&key, type_name.as_deref(), &record.url, &rt))
    }

    /// Every dynamic connection.
    pub fn list_dynamic(&self) -> Vec<serde_json::Value> {
        let map = self
            .dynamic
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        map.iter()
            .map(|(k, rt)| {
                dynamic_view(
                    k,
                    None,
                    &rt.handle()
                        .connection()
                        .map(|c| c.url().to_string())
                        .unwrap_or_default(),
                    rt,
                )
            })
            .collect()
    }

    /// One dynamic connection.
    pub fn get_dynamic(&self, key: &str) -> Result<serde_json::Value, HostError> {
        let rt = self.dynamic_runtime(key)?;
        let url = rt
            .handle()
            .connection()
            .map(|c| c.url().to_string())
            .unwrap_or_default();
        Ok(dynamic_view(key, None, &url, &rt))
    }

    /// Closes a dynamic connection.
    pub fn close_dynamic(&self, key: &str) -> Result<(), HostError> {
        self.dynamic_runtime(key)?.disconnect();
        Ok(())
    }

    /// Sends on a dynamic connection.
    pub fn send_dynamic(&self, key: &str, message: &tether::Message) -> Result<(), HostError> {
        self.dynamic_runtime(key)?
            .send(message)
            .map_err(|source| HostError::Send {
                key: key.to_string(),
                source,
            })
    }
}

fn dynamic_view(
    key: &str,
    type_name: Option<&str>,
    url: &str,
    rt: &ClientRuntime,
) -> serde_json::Value {
    let mut v = json!({"key": key, "type": type_name, "url": tether::redact(url), "dynamic": true});
    if let (Some(obj), Ok(serde_json::Value::Object(status))) =
        (v.as_object_mut(), serde_json::to_value(rt.status()))
    {
        obj.extend(status);
    }
    v
}
