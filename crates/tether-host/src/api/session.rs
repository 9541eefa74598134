//! Browser sessions for the web UI: log in with the admin token, get an
//! HttpOnly, SameSite=Strict cookie; every state-changing request must also
//! carry the session's CSRF token in `X-CSRF-Token`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{ApiError, ApiJson, AppState};

/// The session cookie's name.
pub const COOKIE: &str = "tether_session";
/// Sessions end after this long.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);

type Mac = hmac::Hmac<sha2::Sha256>;

/// Sessions are signed, not stored: the cookie is `NONCE.EXPIRY.MAC` under
/// a key derived from the host's secret key, so they survive a restart of a
/// host that has one (without one, the key is random per process and a
/// restart logs everyone out). Logouts are remembered until the cookie
/// would have expired anyway.
#[derive(Clone)]
pub struct Sessions {
    key: Arc<[u8; 32]>,
    revoked: Arc<Mutex<HashMap<String, u64>>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::with_key(rand::random())
    }
}

fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Sessions {
    /// Sessions signed with `key`.
    pub fn with_key(key: [u8; 32]) -> Self {
        Sessions {
            key: Arc::new(key),
            revoked: Arc::default(),
        }
    }

    fn mac(&self, label: &str, text: &str) -> String {
        use hmac::Mac as _;
        let mut mac =
            <Mac as hmac::Mac>::new_from_slice(&*self.key).expect("HMAC takes any key length");
        mac.update(label.as_bytes());
        mac.update(b"\0");
        mac.update(text.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    fn create(&self) -> (String, String) {
        let body = format!("{}.{}", random_token(), unix_now() + LIFETIME.as_secs());
        let id = format!("{body}.{}", self.mac("session", &body));
        let csrf = self.mac("csrf", &id);
        (id, csrf)
    }

    /// The CSRF token of a valid, unexpired, not logged-out session.
    fn csrf(&self, id: &str) -> Option<String> {
        let (body, mac) = id.rsplit_once('.')?;
        let expected = self.mac("session", body);
        if !bool::from(mac.as_bytes().ct_eq(expected.as_bytes())) {
            return None;
        }
        let expires: u64 = body.rsplit_once('.')?.1.parse().ok()?;
        if expires <= unix_now() {
            return None;
        }
        let revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        if revoked.contains_key(id) {
            return None;
        }
        Some(self.mac("csrf", id))
    }

    fn remove(&self, id: &str) {
        let Some(expires) = id.rsplit('.').nth(1).and_then(|e| e.parse::<u64>().ok()) else {
            return;
        };
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        let now = unix_now();
        revoked.retain(|_, e| *e > now);
        revoked.insert(id.to_string(), expires);
    }
}

/// The session id from the request's cookies.
pub fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// Whether the request is authenticated by a session (and, for anything but
/// GET and HEAD, carries the matching CSRF token).
pub fn check(sessions: &Sessions, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    let id = session_id(headers).ok_or_else(|| ApiError::unauthorized("log in first"))?;
    let csrf = sessions
        .csrf(&id)
        .ok_or_else(|| ApiError::unauthorized("the session has expired; log in again"))?;
    if method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    let sent = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if bool::from(sent.as_bytes().ct_eq(csrf.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "missing or wrong X-CSRF-Token header",
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Login {
    token: String,
}

fn cookie(value: &str, max_age: u64) -> String {
    format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}")
}

/// `POST /ui/login {"token": …}` → sets the cookie, returns the CSRF token.
pub(super) async fn login(State(s): State<AppState>, ApiJson(body): ApiJson<Login>) -> Response {
    if !s.token.accepts(body.token.trim()) {
        tracing::warn!("web UI login with a wrong token");
        return ApiError::unauthorized("the admin token is wrong").into_response();
    }
    let (id, csrf) = s.sessions.create();
    let mut response = Json(json!({"csrf": csrf})).into_response();
    if let Ok(v) = cookie(&id, LIFETIME.as_secs()).parse() {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// `GET /ui/session` → the CSRF token of a live session (after a reload).
pub(super) async fn current(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = session_id(&headers).ok_or_else(|| ApiError::unauthorized("log in first"))?;
    let csrf = s
        .sessions
        .csrf(&id)
        .ok_or_else(|| ApiError::unauthorized("the session has expired; log in again"))?;
    Ok(Json(json!({"csrf": csrf})))
}

/// `POST /ui/logout` → ends the session and clears the cookie.
pub(super) async fn logout(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        s.sessions.remove(&id);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = cookie("", 0).parse() {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}
