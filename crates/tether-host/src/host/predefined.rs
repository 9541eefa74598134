//! Predefined instances: one per `predefined = true` type, made or brought
//! up to date from the config at every start.

use serde_json::json;

use super::{Host, HostError};
use crate::store::{now_ms, Change, InstanceRecord};

impl Host {
    /// Makes each predefined type's instance match the config.
    pub(super) async fn sync_predefined(&self) -> Result<(), HostError> {
        for t in self.types.values().filter(|t| t.config.predefined) {
            let c = &t.config;
            let url = c.url.clone().unwrap_or_default();
            let now = now_ms();
            match self.store.get(&c.name).await? {
                None => {
                    let record = InstanceRecord {
                        key: c.name.clone(),
                        type_name: c.name.clone(),
                        predefined: true,
                        url,
                        user: None,
                        password: None,
                        headers: c.headers.clone(),
                        timeout_secs: c.timeout,
                        auto_connect: c.auto_connect,
                        use_env_proxy: c.use_env_proxy,
                        settings: Default::default(),
                        created_ms: now,
                        updated_ms: now,
                        version: 1,
                    };
                    let change = Change {
                        actor: "host",
                        action: "create",
                        detail: json!({"predefined": true, "url": tether::redact(&record.url)}),
                    };
                    self.store.insert(&record, change).await?;
                }
                Some(mut record) => {
                    let before = record.clone();
                    record.type_name = c.name.clone();
                    record.predefined = true;
                    record.url = url;
                    record.headers = c.headers.clone();
                    record.timeout_secs = c.timeout;
                    record.auto_connect = c.auto_connect;
                    record.use_env_proxy = c.use_env_proxy;
                    if record != before {
                        record.updated_ms = now;
                        let change = Change {
                            actor: "host",
                            action: "update",
                            detail: json!({"from": "config"}),
                        };
                        self.store.update(&record, None, change).await?;
                    }
                }
            }
        }
        Ok(())
    }
}
