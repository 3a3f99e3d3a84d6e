//! gRPC connections to a private containerd over its unix socket.

use std::path::Path;
use std::time::Duration;

use containerd_client::services::v1::version_client::VersionClient;
use keel_supervisor::connect_unix_socket;
use tonic::transport::Channel;

use crate::TestkitError;

/// Connects to the gRPC server on the unix socket `socket`, giving up after `timeout`.
pub(crate) async fn connect(socket: &Path, timeout: Duration) -> Result<Channel, TestkitError> {
    connect_unix_socket(socket, timeout)
        .await
        .map_err(|source| TestkitError::Connect {
            socket: socket.to_owned(),
            source,
        })
}

/// Returns the version string from containerd's Version service, or `None` if the connection
/// or the request failed or took longer than `timeout`.
pub(crate) async fn probe_version(socket: &Path, timeout: Duration) -> Option<String> {
    let request = async {
        let channel = connect(socket, timeout).await.ok()?;
        let reply = VersionClient::new(channel).version(()).await.ok()?;
        Some(reply.into_inner().version)
    };
    tokio::time::timeout(timeout, request).await.ok().flatten()
}
