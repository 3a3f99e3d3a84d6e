//! The gRPC health check of containerd over its unix socket, and the unix socket connection
//! it uses.
//!
//! Each check opens a fresh connection, so a check after a restart never reuses a connection
//! to the dead process, and a frozen containerd, whose socket still accepts connections in the
//! kernel, fails by timing out.

use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Opens a gRPC channel to the server on the unix socket `socket`, giving up on the connection
/// after `connect_timeout`.
///
/// # Errors
///
/// Returns the transport error when the socket cannot be connected to or the HTTP/2 handshake
/// fails.
pub async fn connect_unix_socket(
    socket: &Path,
    connect_timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    let target = socket.to_owned();
    let connector = tower::service_fn(move |_uri| {
        let target = target.clone();
        async move {
            tokio::net::UnixStream::connect(target)
                .await
                .map(TokioIo::new)
        }
    });
    // HTTP/2 needs a URI, but the connector above decides where the connection goes.
    Endpoint::from_static("http://containerd.sock")
        .connect_timeout(connect_timeout)
        .connect_with_connector(connector)
        .await
}

/// Returns true when containerd on `socket` responds to the health check with `SERVING`
/// within `timeout`.
pub(crate) async fn is_serving(socket: &Path, timeout: Duration) -> bool {
    let check = async {
        let channel = connect_unix_socket(socket, timeout).await.ok()?;
        let request = HealthCheckRequest {
            service: String::new(),
        };
        let response = HealthClient::new(channel).check(request).await.ok()?;
        Some(response.into_inner().status == ServingStatus::Serving as i32)
    };
    matches!(tokio::time::timeout(timeout, check).await, Ok(Some(true)))
}

/// Checks `socket` every `interval` until it serves or `timeout` passes. Returns whether it
/// served.
pub(crate) async fn wait_until_serving(socket: &Path, timeout: Duration) -> bool {
    let started = tokio::time::Instant::now();
    loop {
        let remaining = timeout.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            return false;
        }
        if is_serving(socket, remaining.min(Duration::from_secs(1))).await {
            return true;
        }
        tokio::time::sleep(PROBE_INTERVAL.min(remaining)).await;
    }
}

/// The pause between checks while waiting for containerd to serve.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(25);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_socket_is_not_serving() {
        let socket = Path::new("/nonexistent-keel-folder/containerd.sock");
        assert!(!is_serving(socket, Duration::from_millis(200)).await);
    }
}
