//! What the shared code (handlers, registry, reconnecting) needs from the
//! platform: spawning a task, sleeping, the clock and a random number. On
//! tokio natively, on the page's event loop in a browser.

use std::future::Future;
use std::time::Duration;

/// A point in time for the reconnect policy: `std`'s natively; in a
/// browser, where `std::time::Instant::now` cannot work, `web-time`'s
/// (backed by `performance.now()`).
#[cfg(not(target_arch = "wasm32"))]
pub use std::time::Instant;
/// A point in time for the reconnect policy: `std`'s natively; in a
/// browser, where `std::time::Instant::now` cannot work, `web-time`'s
/// (backed by `performance.now()`).
#[cfg(target_arch = "wasm32")]
pub use web_time::Instant;

/// Runs `task` in the background.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(task);
}

/// Runs `task` in the background.
#[cfg(target_arch = "wasm32")]
pub(crate) fn spawn(task: impl Future<Output = ()> + 'static) {
    wasm_bindgen_futures::spawn_local(task);
}

/// Waits for `duration`.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) async fn sleep(duration: Duration) {
    tokio::time::sleep(duration).await;
}

/// Waits for `duration` (a `setTimeout`).
#[cfg(target_arch = "wasm32")]
pub(crate) async fn sleep(duration: Duration) {
    use wasm_bindgen::prelude::*;
    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_name = setTimeout)]
        fn set_timeout(callback: &js_sys::Function, millis: f64) -> JsValue;
    }
    let millis = duration.as_secs_f64() * 1000.0;
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        set_timeout(&resolve, millis);
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// A uniformly random number in `[0, 1)`, for jitter (not for secrets).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn unit_random() -> f64 {
    rand::random::<f64>()
}

/// A uniformly random number in `[0, 1)`, for jitter (not for secrets).
#[cfg(target_arch = "wasm32")]
pub(crate) fn unit_random() -> f64 {
    js_sys::Math::random()
}
