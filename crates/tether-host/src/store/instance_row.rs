//! Rows as both stores keep them: an instance (its secrets sealed on the
//! way in and opened on the way out) and an audit entry.

use std::collections::BTreeMap;

use super::secrets::Secrets;
use super::sqlite_secrets::url_has_password;
use super::{InstanceRecord, StoreError};
use crate::host::is_secret_header;

/// The `instances` row, secrets as stored (sealed, or plaintext).
#[derive(Debug, sqlx::FromRow)]
pub(super) struct InstanceRow {
    pub key: String,
    pub type_name: String,
    pub predefined: bool,
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub headers: String,
    pub timeout_secs: i64,
    pub auto_connect: bool,
    pub use_env_proxy: bool,
    pub settings: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub version: i64,
}

impl InstanceRow {
    /// The row for `r`, its secrets sealed.
    pub fn sealed(r: &InstanceRecord, secrets: &Secrets) -> Result<Self, StoreError> {
        let url = if url_has_password(&r.url) {
            secrets.seal(&r.url, &format!("the URL password of {:?}", r.key))?
        } else {
            r.url.clone()
        };
        let password = r
            .password
            .as_deref()
            .map(|p| secrets.seal(p, &format!("the password of {:?}", r.key)))
            .transpose()?;
        let mut headers = BTreeMap::new();
        for (n, v) in &r.headers {
            let v = if is_secret_header(n) {
                secrets.seal(v, &format!("header {n:?} of {:?}", r.key))?
            } else {
                v.clone()
            };
            headers.insert(n.clone(), v);
        }
        Ok(InstanceRow {
            key: r.key.clone(),
            type_name: r.type_name.clone(),
            predefined: r.predefined,
            url,
            user: r.user.clone(),
            password,
            headers: headers_text(&headers),
            timeout_secs: r.timeout_secs.min(i64::MAX as u64) as i64,
            auto_connect: r.auto_connect,
            use_env_proxy: r.use_env_proxy,
            settings: serde_json::Value::Object(r.settings.clone()).to_string(),
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
            version: r.version,
        })
    }

    /// The record, its secrets opened.
    pub fn open(self, secrets: &Secrets) -> Result<InstanceRecord, StoreError> {
        Ok(InstanceRecord {
            url: secrets.open(&self.url)?,
            password: self.password.map(|p| secrets.open(&p)).transpose()?,
            headers: parse_headers(&self.headers)?
                .into_iter()
                .map(|(n, v)| Ok((n, secrets.open(&v)?)))
                .collect::<Result<_, StoreError>>()?,
            timeout_secs: self.timeout_secs.max(0) as u64,
            settings: serde_json::from_str(&self.settings)
                .map_err(|e| StoreError::Corrupt(format!("instance settings: {e}")))?,
            key: self.key,
            type_name: self.type_name,
            predefined: self.predefined,
            user: self.user,
            auto_connect: self.auto_connect,
            use_env_proxy: self.use_env_proxy,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            version: self.version,
        })
    }
}

/// An `audit` row (`detail` as stored text).
#[derive(Debug, sqlx::FromRow)]
pub(super) struct AuditRow {
    id: i64,
    at_ms: i64,
    actor: String,
    action: String,
    key: String,
    detail: String,
}

impl From<AuditRow> for super::AuditEntry {
    fn from(r: AuditRow) -> Self {
        super::AuditEntry {
            id: r.id,
            at_ms: r.at_ms,
            actor: r.actor,
            action: r.action,
            key: r.key,
            detail: serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::Null),
        }
    }
}

pub(super) fn parse_headers(text: &str) -> Result<BTreeMap<String, String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("bad headers column: {e}")))
}

pub(super) fn headers_text(h: &BTreeMap<String, String>) -> String {
    serde_json::to_string(h).unwrap_or_else(|_| "{}".into())
}

/// Refuses a change made against a version other than the stored one.
pub(super) fn check_version(
    key: &str,
    expected: Option<i64>,
    current: i64,
) -> Result<(), StoreError> {
    match expected {
        Some(expected) if expected != current => Err(StoreError::Conflict {
            key: key.to_string(),
            expected,
            current,
        }),
        _ => Ok(()),
    }
}
