//! The channel to containerd and the service clients built on it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::{
    containers_client::ContainersClient, events_client::EventsClient, tasks_client::TasksClient,
    version_client::VersionClient,
};
use hyper_util::rt::TokioIo;
use keel_types::{Error, Namespace};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;
use tonic_health::pb::health_client::HealthClient;

/// The gRPC metadata key that carries the namespace on every containerd request.
const NAMESPACE_HEADER: &str = "containerd-namespace";

/// Adds the namespace header to every request.
#[derive(Clone, Debug)]
pub struct NamespaceInterceptor {
    namespace: AsciiMetadataValue,
}

impl tonic::service::Interceptor for NamespaceInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert(NAMESPACE_HEADER, self.namespace.clone());
        Ok(request)
    }
}

/// The channel type every service client uses.
pub type Channel = InterceptedService<tonic::transport::Channel, NamespaceInterceptor>;

/// The containerd service clients of one namespace, cheap to clone.
///
/// The channel connects on first use and reconnects by itself on the next request after a
/// failure, so a clone stays usable across containerd restarts.
#[derive(Clone, Debug)]
pub struct Services {
    channel: Channel,
    namespace: Namespace,
    socket: PathBuf,
    call_timeout: Duration,
}

impl Services {
    /// Builds the clients for `namespace` on containerd's unix socket. Makes no connection.
    ///
    /// # Errors
    ///
    /// Returns invalid argument when the namespace cannot be sent as gRPC metadata.
    pub fn new(socket: &Path, namespace: Namespace, call_timeout: Duration) -> Result<Self, Error> {
        let header: AsciiMetadataValue =
            MetadataValue::try_from(namespace.as_str()).map_err(|error| {
                Error::InvalidArgument {
                    field: "namespace",
                    value: namespace.to_string(),
                    reason: error.to_string(),
                }
            })?;
        let channel = lazy_unix_channel(socket);
        let interceptor = NamespaceInterceptor { namespace: header };
        Ok(Self {
            channel: InterceptedService::new(channel, interceptor),
            namespace,
            socket: socket.to_owned(),
            call_timeout,
        })
    }

    /// The namespace every request is sent in.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// containerd's gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The default deadline of one request.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// Returns a client of the tasks service.
    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    /// Returns a client of the containers service.
    pub fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    /// Returns a client of the events service.
    pub fn events(&self) -> EventsClient<Channel> {
        EventsClient::new(self.channel.clone())
    }

    /// Returns a client of the version service.
    pub fn version(&self) -> VersionClient<Channel> {
        VersionClient::new(self.channel.clone())
    }

    /// Returns a client of the gRPC health service.
    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }
}

/// Builds a channel to a unix socket that connects on first use.
fn lazy_unix_channel(socket: &Path) -> tonic::transport::Channel {
    let socket = socket.to_owned();
    let connector = tower::service_fn(move |_uri| {
        let socket = socket.clone();
        async move {
            tokio::net::UnixStream::connect(socket)
                .await
                .map(TokioIo::new)
        }
    });
    // The URI is required by the HTTP/2 layer but never resolved: the connector above decides
    // where the connection goes.
    //
    // No HTTP/2 keep-alive pings: containerd 1.6 sets no keep-alive policy, so its gRPC server
    // closes a connection that pings more often than every 5 minutes without data: a 10 s ping
    // broke an idle event stream after about 40 s here (`idle_event_stream_stays_open`). A dead containerd closes the unix socket,
    // and a frozen one is caught by request deadlines and the connection actor's health checks.
    Endpoint::from_static("http://containerd.sock")
        .connect_timeout(Duration::from_secs(2))
        .connect_with_connector_lazy(connector)
}
