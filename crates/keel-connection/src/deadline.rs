//! Deadlines for gRPC calls.

use std::future::Future;
use std::time::Duration;

use keel_types::{Error, Operation, Target};

/// How far ahead [`deadline_after`] puts a deadline that the clock cannot hold: about 30
/// years, which no caller waits for.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// Returns the moment `timeout` from now. A timeout too long for the clock, such as
/// `Duration::MAX`, gives a moment [`FAR_FUTURE`] from now instead of overflowing.
pub fn deadline_after(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(timeout).unwrap_or(now + FAR_FUTURE)
}

/// Runs one gRPC call with a deadline and maps its failure to keel's [`Error`].
///
/// The deadline is enforced on the client side, so a frozen containerd cannot hold the caller
/// past `timeout` even when it never answers; dropping the future resets the HTTP/2 stream.
///
/// # Errors
///
/// Returns [`Error::TimedOut`] when the deadline passes, or the mapped gRPC status.
pub async fn call_with_deadline<T>(
    operation: Operation,
    target: &Target,
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Error> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(Error::from_status(operation, target.clone(), status)),
        Err(_elapsed) => Err(Error::TimedOut {
            operation,
            target: target.clone(),
            timeout,
        }),
    }
}
