//! Retrying database calls whose data exists nowhere else once dropped: a
//! run's events and its outcome. While Postgres is away the caller waits
//! here; nothing it holds is lost.

use std::future::Future;
use std::time::Duration;

/// The first pause before a failed database call is tried again; it doubles
/// up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Failures of one call logged as warnings before they are errors: a short
/// blip (a restart of Postgres, a dropped connection) is not an operator's
/// business, an outage is.
const QUIET_FAILURES: u32 = 5;

/// Calls `call` until it succeeds, pausing between attempts (doubling up to
/// `MAX_BACKOFF`).
pub(super) async fn retry_forever<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = crate::store::Result<T>>,
{
    loop {
        // Only after `u32::MAX` failures in a row does this come back with
        // an error; then the count starts again.
        if let Ok(value) = retry_bounded(what, u32::MAX, &mut call).await {
            return value;
        }
    }
}

/// `retry_forever` with at most `attempts` calls; the last error is the
/// caller's.
pub(super) async fn retry_bounded<T, F, Fut>(
    what: &str,
    attempts: u32,
    mut call: F,
) -> crate::store::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = crate::store::Result<T>>,
{
    let mut delay = FIRST_BACKOFF;
    let mut failures = 0u32;
    loop {
        match call().await {
            Ok(value) => {
                if failures > 0 {
                    tracing::info!(what, failures, "database call went through after retrying");
                }
                return Ok(value);
            }
            Err(error) => {
                failures += 1;
                if failures >= attempts {
                    return Err(error);
                }
                log_failure(what, failures, &error);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn log_failure(what: &str, failures: u32, error: &crate::store::StoreError) {
    if failures <= QUIET_FAILURES {
        tracing::warn!(error.cause_chain = ?error, what, failures, "database call failed; retrying");
    } else {
        tracing::error!(error.cause_chain = ?error, what, failures, "database call keeps failing; retrying");
    }
}
