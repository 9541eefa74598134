//! Browser sessions for the web UI: log in with the admin token, get an
//! HttpOnly, SameSite=Strict cookie; every state-changing request must also
//! carry the session's CSRF token in `X-CSRF-Token`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

struct Session {
    csrf: String,
    expires: Instant,
}

/// Live sessions, in memory (a restart logs everyone out).
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<String, Session>>>,
}

fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

impl Sessions {
    fn create(&self) -> (String, String) {
        let (id, csrf) = (random_token(), random_token());
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        map.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                expires: now + LIFETIME,
            },
        );
        (id, csrf)
    }

    fn csrf(&self, id: &str) -> Option<String> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.csrf.clone())
    }

    fn remove(&self, id: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
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
