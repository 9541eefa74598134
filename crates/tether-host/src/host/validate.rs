//! Checks on API input, and what of an instance may be shown.

use std::collections::BTreeMap;

use serde_json::json;

use super::HostError;
use crate::store::InstanceRecord;

/// Header names whose values are secrets.
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "authorization"
        || n == "proxy-authorization"
        || n == "cookie"
        || ["token", "secret", "password", "api-key", "apikey"]
            .iter()
            .any(|s| n.contains(s))
}

pub(super) fn masked(headers: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                if is_secret_header(k) {
                    "***".into()
                } else {
                    v.clone()
                },
            )
        })
        .collect()
}

pub(super) fn audit_detail(r: &InstanceRecord) -> serde_json::Value {
    json!({
        "type": r.type_name,
        "url": tether::redact(&r.url),
        "user": r.user,
        "password": if r.password.is_some() { "set" } else { "not set" },
        "headers": masked(&r.headers),
        "timeout": r.timeout_secs,
        "auto_connect": r.auto_connect,
        "use_env_proxy": r.use_env_proxy,
        "settings": r.settings,
    })
}

pub(super) fn check_key(key: &str) -> Result<(), HostError> {
    if key.is_empty()
        || key.len() > 128
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return Err(HostError::Invalid(format!(
            "invalid key {key:?}: use 1-128 letters, digits, '-', '_', '.' or ':'"
        )));
    }
    Ok(())
}

pub(super) fn check_timeout(secs: u64) -> Result<u64, HostError> {
    if secs == 0 || secs > 3600 {
        return Err(HostError::Invalid(format!(
            "timeout must be 1..=3600 seconds, not {secs}"
        )));
    }
    Ok(secs)
}

/// Headers must be valid and not ones the handshake sets itself.
pub(super) fn check_headers(headers: &BTreeMap<String, String>) -> Result<(), HostError> {
    let mut request = tether::proto::Request::new("localhost", 80, false, "/");
    for (k, v) in headers {
        request.header(k.clone(), v.clone());
    }
    request
        .validate()
        .map_err(|e| HostError::Invalid(e.to_string()))
}
