//! The client: connects to containerd, owns the actor tree, and hands out container handles.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use containerd_client::services::v1::VersionResponse;
use keel_connection::{
    Backoff, ConnectionArgs, ConnectionMsg, ConnectionState, Services, call_with_deadline,
};
use keel_container::{
    Backend, ContainerOptions, CreateContainer, RUNC_RUNTIME, Registry, RuncOptions, Runtime,
    SpecFacts, SupervisorMsg,
};
use keel_events::EventStats;
use keel_types::{
    ContainerId, ContainerSummary, Error, ErrorKind, Namespace, NamespaceEvent, Operation, Target,
};
use oci_spec::runtime::Spec;
use ractor::{Actor, ActorRef};
use tokio::sync::{broadcast, watch};
use tokio_util::task::TaskTracker;

use crate::container::{Container, HandleContext};
use crate::request::{request, stopped};
use crate::subscription::Subscription;
use crate::tree::{Children, Tree, TreeArgs};
use crate::validate::{check_labels, check_options, check_spec, encode_spec};

/// Settings of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// containerd's gRPC socket.
    pub socket: PathBuf,
    /// The containerd namespace the client works in.
    pub namespace: String,
    /// keel's own folder for bundle folders and FIFOs; made with owner-only permissions.
    pub state_dir: PathBuf,
    /// The deadline of one request to containerd.
    pub call_timeout: Duration,
    /// How long [`Client::connect_with`] waits for containerd to serve.
    pub connect_timeout: Duration,
    /// How often a connected containerd is health-checked.
    pub health_interval: Duration,
    /// How long one health check may take.
    pub health_timeout: Duration,
    /// The delays between reconnect attempts.
    pub backoff: Backoff,
    /// Tunables of each container actor.
    pub container: ContainerOptions,
    /// Bounds on caller input and on what the client tracks.
    pub limits: Limits,
    /// How many events each [`Subscription`] buffers before its subscriber starts losing the
    /// oldest ones.
    pub subscription_capacity: usize,
}

/// Bounds on caller input and on what a client tracks. Input over a bound is rejected with
/// invalid argument before anything is created; a full table rejects new entries with failed
/// precondition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest spec, or exec process, keel sends, in bytes of JSON. containerd's own gRPC
    /// message limit is 16 MiB; a spec near it would break the request rather than fail cleanly.
    pub max_spec_bytes: usize,
    /// The maximum number of labels on one container.
    pub max_labels: usize,
    /// The maximum number of containers one client tracks at once.
    pub max_containers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_spec_bytes: 1 << 20,
            max_labels: 256,
            max_containers: 100_000,
        }
    }
}

impl ClientOptions {
    /// Returns the default settings for `socket` and `namespace`, with the state folder
    /// `/run/keel`.
    pub fn new(socket: impl Into<PathBuf>, namespace: impl Into<String>) -> Self {
        Self {
            socket: socket.into(),
            namespace: namespace.into(),
            state_dir: PathBuf::from("/run/keel"),
            call_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            health_interval: Duration::from_secs(1),
            health_timeout: Duration::from_secs(2),
            backoff: Backoff::default(),
            container: ContainerOptions::default(),
            limits: Limits::default(),
            subscription_capacity: 4096,
        }
    }

    /// Sets keel's state folder.
    pub fn state_dir(mut self, state_dir: impl Into<PathBuf>) -> Self {
        self.state_dir = state_dir.into();
        self
    }
}

/// An actor of the tree that [`Client::inject_failure`] makes fail.
#[cfg(feature = "fault-injection")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultTarget {
    /// The connection actor.
    Connection,
    /// The event-subscriber actor.
    Events,
    /// The containers supervisor, and with it every container actor.
    Containers,
    /// The actor of one tracked container.
    Container(ContainerId),
}

/// The containerd version a client is connected to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The release, such as `1.6.20~ds1`.
    pub version: String,
    /// The source revision.
    pub revision: String,
}

/// A connection to containerd in one namespace, with its actor tree.
///
/// Cheap to clone; every clone drives the same actors. Call [`Client::shutdown`] to stop the
/// tree and wait for the last events to reach the backend.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    tree: ActorRef<()>,
    children: Arc<RwLock<Option<Children>>>,
    services: Services,
    connection_state: watch::Receiver<ConnectionState>,
    tracker: TaskTracker,
    registry: Arc<Registry>,
    event_stats: Arc<EventStats>,
    observers: broadcast::WeakSender<NamespaceEvent>,
    /// The registry, shutdown flag and deadline every container handle of this client shares.
    handle_context: Arc<HandleContext>,
    call_timeout: Duration,
    limits: Limits,
    /// runc's state folder for the runc containers this client creates.
    runc_root: PathBuf,
}

/// The folder in the client's state folder for runc's state of its containers, one folder per
/// namespace. A namespace name starts with a letter or digit, so no namespace's
/// folder of bundles can take this name.
const RUNC_ROOT_FOLDER: &str = ".runc";

impl Client {
    /// Connects to containerd at `socket` in `namespace` with default options, so the FIFOs and
    /// bundle folders of its containers go under `/run/keel`.
    ///
    /// # Errors
    ///
    /// Returns invalid argument for a bad namespace, and unavailable when containerd does not
    /// serve, or its event stream does not start, within the connect timeout.
    pub async fn connect(
        socket: impl Into<PathBuf>,
        namespace: &str,
        backend: impl Backend,
    ) -> Result<Self, Error> {
        Self::connect_with(ClientOptions::new(socket, namespace), backend).await
    }

    /// Connects with explicit options; see [`Client::connect`].
    ///
    /// # Errors
    ///
    /// As [`Client::connect`].
    pub async fn connect_with(
        options: ClientOptions,
        backend: impl Backend,
    ) -> Result<Self, Error> {
        let namespace = Namespace::new(options.namespace.clone())?;
        check_options(&options)?;
        let services = Services::new(&options.socket, namespace.clone(), options.call_timeout)?;
        let (state_sender, mut connection_state) =
            watch::channel(ConnectionState::Connecting { attempt: 1 });
        let connection = ConnectionArgs {
            socket: options.socket.clone(),
            namespace,
            call_timeout: options.call_timeout,
            health_interval: options.health_interval,
            health_timeout: options.health_timeout,
            backoff: options.backoff,
            state: Arc::new(state_sender),
        };
        let children = Arc::new(RwLock::new(None));
        let tracker = TaskTracker::new();
        let registry = Arc::new(Registry::default());
        let event_stats = Arc::new(EventStats::default());
        let (observers, _) = broadcast::channel(options.subscription_capacity.max(1));
        let weak_observers = observers.downgrade();
        let args = TreeArgs {
            connection,
            services: services.clone(),
            backend: Arc::new(backend),
            state_dir: options.state_dir.clone(),
            container_options: options.container.clone(),
            tracker: tracker.clone(),
            registry: Arc::clone(&registry),
            event_stats: Arc::clone(&event_stats),
            observers,
            children: Arc::clone(&children),
            max_containers: options.limits.max_containers,
        };
        let (tree, _) = Actor::spawn(None, Tree, args)
            .await
            .map_err(|error| Error::Rejected {
                operation: Operation::Connect,
                target: Target::Containerd,
                kind: ErrorKind::Internal,
                reason: format!("cannot start the actor tree: {error}"),
            })?;

        let deadline = keel_connection::deadline_after(options.connect_timeout);
        let serving = tokio::time::timeout_at(
            deadline,
            connection_state.wait_for(ConnectionState::is_connected),
        )
        .await
        .is_ok_and(|result| result.is_ok());
        // Events flow once connect returns, so a subscription taken right after it misses
        // nothing containerd publishes from then on.
        let streaming = serving
            && tokio::time::timeout_at(deadline, event_stats.wait_until_live())
                .await
                .is_ok();
        if !streaming {
            let _ = tree.stop_and_wait(None, Some(Duration::from_secs(5))).await;
            let what = if serving {
                "serves, but its event stream did not start"
            } else {
                "did not serve"
            };
            return Err(Error::Rejected {
                operation: Operation::Connect,
                target: Target::Containerd,
                kind: ErrorKind::Unavailable,
                reason: format!(
                    "containerd at {} {what} within {}ms; check that it runs and the socket path is right",
                    options.socket.display(),
                    options.connect_timeout.as_millis()
                ),
            });
        }
        let handle_context = Arc::new(HandleContext {
            registry: Arc::clone(&registry),
            stopping: Arc::new(AtomicBool::new(false)),
            call_timeout: options.call_timeout,
            max_spec_bytes: options.limits.max_spec_bytes,
        });
        Ok(Self {
            inner: Arc::new(ClientInner {
                tree,
                children,
                services,
                connection_state,
                tracker,
                registry,
                event_stats,
                observers: weak_observers,
                handle_context,
                call_timeout: options.call_timeout,
                limits: options.limits,
                runc_root: options.state_dir.join(RUNC_ROOT_FOLDER),
            }),
        })
    }

    /// Returns the version of the connected containerd.
    ///
    /// # Errors
    ///
    /// Returns unavailable or timed out when containerd does not reply.
    pub async fn version(&self) -> Result<Version, Error> {
        if self.inner.handle_context.stopping.load(Ordering::Acquire) {
            return Err(stopped(Operation::Version, &Target::Containerd));
        }
        let mut client = self.inner.services.version();
        let response: VersionResponse = call_with_deadline(
            Operation::Version,
            &Target::Containerd,
            self.inner.call_timeout,
            client.version(()),
        )
        .await?;
        Ok(Version {
            version: response.version,
            revision: response.revision,
        })
    }

    /// Creates a container from `spec` with the runc runtime and no labels.
    ///
    /// # Errors
    ///
    /// Returns invalid argument for a bad id or spec (before anything is created), already
    /// exists for a taken id, or containerd's error.
    pub async fn create_container(&self, id: &str, spec: Spec) -> Result<Container, Error> {
        self.create_container_with(id, spec, Runtime::default(), HashMap::new())
            .await
    }

    /// Creates a container with an explicit runtime and labels; see [`Client::create_container`].
    ///
    /// # Errors
    ///
    /// As [`Client::create_container`].
    pub async fn create_container_with(
        &self,
        id: &str,
        mut spec: Spec,
        runtime: Runtime,
        labels: HashMap<String, String>,
    ) -> Result<Container, Error> {
        let container_id = ContainerId::new(id)?;
        check_spec(&spec)?;
        check_labels(&labels, &self.inner.limits)?;
        self.set_default_cgroups_path(&mut spec, &container_id);
        let spec_json = encode_spec(&spec, &self.inner.limits)?;
        let runtime = self.with_default_runc_root(runtime);

        let containers = self.children()?.containers;
        let target = Target::Container(container_id.clone());
        let create = Box::new(CreateContainer {
            spec_json,
            spec_facts: SpecFacts::of(&spec),
            runtime,
            labels,
        });
        let actor = request(
            &containers,
            Operation::CreateContainer,
            &target,
            self.inner.call_timeout * 2,
            |reply| SupervisorMsg::Create(container_id.clone(), create, reply),
        )
        .await?;
        Ok(Container::new(
            container_id,
            actor,
            Arc::clone(&self.inner.handle_context),
        ))
    }

    /// Returns the handle of a container this client created or loaded.
    ///
    /// # Errors
    ///
    /// Returns invalid argument for a bad id and not found for an untracked container.
    pub async fn container(&self, id: &str) -> Result<Container, Error> {
        self.lookup(id, false).await
    }

    /// Loads a container that exists in containerd, for example after the engine restarted,
    /// and picks up its task's state. Returns the tracked handle when already loaded.
    ///
    /// # Errors
    ///
    /// Returns invalid argument for a bad id and not found when containerd has no such
    /// container. Such a load reserves nothing, so a create of the same id may run meanwhile.
    pub async fn load_container(&self, id: &str) -> Result<Container, Error> {
        self.lookup(id, true).await
    }

    async fn lookup(&self, id: &str, load: bool) -> Result<Container, Error> {
        let container_id = ContainerId::new(id)?;
        let target = Target::Container(container_id.clone());
        let containers = self.children()?.containers;
        // A load waits for containerd's two reads: the record and the task.
        let timeout = if load {
            self.inner.call_timeout * 3
        } else {
            self.inner.call_timeout
        };
        let actor = request(
            &containers,
            Operation::LoadContainer,
            &target,
            timeout,
            |reply| SupervisorMsg::Lookup {
                container_id: container_id.clone(),
                load,
                reply,
            },
        )
        .await?;
        Ok(Container::new(
            container_id,
            actor,
            Arc::clone(&self.inner.handle_context),
        ))
    }

    /// Lists every container of the namespace as containerd records it, with its task, whether
    /// or not this client tracks it. Tracks nothing new and changes nothing.
    ///
    /// # Errors
    ///
    /// Returns unavailable or timed out when containerd does not reply, or stopped after
    /// shutdown.
    pub async fn list_containers(&self) -> Result<Vec<ContainerSummary>, Error> {
        let containers = self.children()?.containers;
        request(
            &containers,
            Operation::ListContainers,
            &Target::Containerd,
            self.inner.call_timeout * 2,
            SupervisorMsg::List,
        )
        .await
    }

    /// Subscribes to the events of every container of the namespace, including containers
    /// this client does not track and events other clients caused, from now on.
    ///
    /// A subscription receives what containerd publishes and nothing keel infers: for the exactly
    /// once, in order delivery of a tracked container's events, use the [`Backend`]. When the
    /// event stream to containerd breaks, the subscription gets [`NamespaceEvent::Gap`] once
    /// a new stream is live.
    ///
    /// # Errors
    ///
    /// Returns stopped after shutdown.
    pub fn subscribe(&self) -> Result<Subscription, Error> {
        self.inner
            .observers
            .upgrade()
            .map(|observers| Subscription::new(observers.subscribe()))
            .ok_or_else(|| stopped(Operation::Subscribe, &Target::Containerd))
    }

    /// Makes one actor of the tree fail, as a bug or a panic inside it would, so a test can
    /// check that its supervisor replaces it and that no event is lost or repeated.
    ///
    /// # Errors
    ///
    /// Returns not found for an untracked container, or cancelled after shutdown.
    #[cfg(feature = "fault-injection")]
    pub fn inject_failure(&self, actor: FaultTarget) -> Result<(), Error> {
        let children = self.children()?;
        let target = match &actor {
            FaultTarget::Container(container_id) => Target::Container(container_id.clone()),
            _ => Target::Containerd,
        };
        let sent = match actor {
            FaultTarget::Connection => children
                .connection
                .cast(ConnectionMsg::InjectFailure)
                .is_ok(),
            FaultTarget::Events => children
                .events
                .cast(keel_events::EventMsg::InjectFailure)
                .is_ok(),
            FaultTarget::Containers => children
                .containers
                .cast(SupervisorMsg::InjectFailure)
                .is_ok(),
            FaultTarget::Container(container_id) => {
                let Some(container) = self.inner.registry.get(&container_id) else {
                    return Err(Error::Rejected {
                        operation: Operation::Status,
                        target,
                        kind: ErrorKind::NotFound,
                        reason: "no such container; create or load it first".to_owned(),
                    });
                };
                container
                    .cast(keel_container::ContainerMsg::InjectFailure)
                    .is_ok()
            }
        };
        if sent {
            Ok(())
        } else {
            Err(stopped(Operation::Status, &target))
        }
    }

    /// Returns the connection's current state.
    pub fn connection_state(&self) -> ConnectionState {
        *self.inner.connection_state.borrow()
    }

    /// Returns a receiver of the connection's state, which is updated on every transition
    /// (connected, each reconnect attempt, each backoff) and keeps working when the connection
    /// actor is restarted. Like every `watch` receiver, one that falls behind sees only the
    /// latest state.
    pub fn connection_state_changes(&self) -> watch::Receiver<ConnectionState> {
        self.inner.connection_state.clone()
    }

    /// Makes the connection actor check containerd's health now, skipping the rest of its
    /// health interval or backoff wait. Call it when a supervisor has restarted containerd, so
    /// the client reconnects and reconciles at once. Does nothing after shutdown.
    pub fn notify_containerd_restarted(&self) {
        if let Ok(children) = self.children() {
            let _ = children.connection.cast(ConnectionMsg::CheckNow);
        }
    }

    /// Returns the number of containers this client tracks.
    pub fn tracked_containers(&self) -> usize {
        self.inner.registry.len()
    }

    /// Returns the event pipeline's counters.
    pub fn event_stats(&self) -> &EventStats {
        &self.inner.event_stats
    }

    /// Stops the actor tree and waits until every queued event reached the backend, at most
    /// `timeout`. Containers and tasks keep running in containerd.
    pub async fn shutdown(&self, timeout: Duration) {
        self.inner
            .handle_context
            .stopping
            .store(true, Ordering::Release);
        let _ = self.inner.tree.stop_and_wait(None, Some(timeout)).await;
        self.inner.tracker.close();
        let _ = tokio::time::timeout(timeout, self.inner.tracker.wait()).await;
    }

    fn children(&self) -> Result<Children, Error> {
        self.inner
            .children
            .read()
            .ok()
            .and_then(|children| children.clone())
            .ok_or_else(|| stopped(Operation::Connect, &Target::Containerd))
    }

    /// Puts the container in the cgroup `/<namespace>/<id>` when the spec names none, as
    /// containerd's Go client does.
    /// Keeps runc's state of a runc container under the client's state folder when the
    /// runtime's options name no runc state folder, as dockerd does with its own. runc's
    /// default folder, `/run/containerd/runc`, is shared by every containerd on the host. A
    /// container with the same namespace and id under another containerd would collide with
    /// this one there, and its clean-up could kill this one.
    fn with_default_runc_root(&self, mut runtime: Runtime) -> Runtime {
        if runtime.name == RUNC_RUNTIME {
            let options = runtime.runc.get_or_insert_with(RuncOptions::default);
            if options.root.is_empty() {
                options.root = self.inner.runc_root.to_string_lossy().into_owned();
            }
        }
        runtime
    }

    fn set_default_cgroups_path(&self, spec: &mut Spec, container_id: &ContainerId) {
        let namespace = self.inner.services.namespace();
        if let Some(linux) = spec.linux_mut()
            && linux.cgroups_path().is_none()
        {
            linux.set_cgroups_path(Some(PathBuf::from(format!("/{namespace}/{container_id}"))));
        }
    }
}
