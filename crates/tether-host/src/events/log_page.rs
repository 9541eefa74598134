//! Reading the event log after a number without missing what the trimmer
//! took: the one rule the poll API, SSE catch-up and webhooks share.

use crate::store::{LoggedEvent, Store, StoreError};

/// A page of the log after some number.
#[derive(Debug)]
pub enum LogPage {
    /// Everything kept after that number, up to the limit.
    Events(Vec<LoggedEvent>),
    /// Events after that number are no longer kept; `oldest` is.
    Gone {
        /// The oldest number the log still keeps.
        oldest: i64,
    },
}

/// The oldest number kept, when the log (with these bounds) no longer holds
/// everything after `after`. Numbers start at 1 and have no gaps: nothing is
/// missing before the oldest unless something was trimmed.
pub fn gone_after(after: i64, (oldest, newest): (i64, i64)) -> Option<i64> {
    (after.max(0) + 1 < oldest && after < newest).then_some(oldest)
}

/// The page after `after` (one client's events with `key`). The bounds are
/// read after the page: the oldest kept number only moves forward, so a
/// trim that ran before or during the read shows. A page of the whole log
/// that starts at `after + 1` needs no check.
pub async fn read_after(
    store: &dyn Store,
    after: i64,
    key: Option<&str>,
    limit: u32,
) -> Result<LogPage, StoreError> {
    let page = store.events_after(after, key, limit).await?;
    let starts_right = key.is_none() && page.first().is_some_and(|e| e.seq == after.max(0) + 1);
    if !starts_right {
        if let Some(oldest) = gone_after(after, store.events_bounds().await?) {
            return Ok(LogPage::Gone { oldest });
        }
    }
    Ok(LogPage::Events(page))
}
