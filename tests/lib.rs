//! Shared set-up of the real-containerd tests: a private containerd per test, a fresh
//! namespace, a busybox root folder, and a backend that records every event.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel::spec::SpecBuilder;
use keel::{
    Backend, Client, ClientOptions, Container, ContainerEvent, Event, ProcessId, StdioRequest, Task,
};
use keel_testkit::PrivateContainerd;
use oci_spec::runtime::Spec;
use tokio::sync::Notify;

/// Records events in arrival order and wakes waiters on each one.
#[derive(Clone, Default)]
pub struct Recorder {
    events: Arc<Mutex<Vec<ContainerEvent>>>,
    arrived: Arc<Notify>,
}

#[keel::async_trait]
impl Backend for Recorder {
    async fn handle_event(&self, event: ContainerEvent) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event);
        }
        self.arrived.notify_waiters();
    }
}

impl Recorder {
    /// Returns the events of `container_id` received so far.
    pub fn events_of(&self, container_id: &str) -> Vec<Event> {
        self.events
            .lock()
            .map(|events| {
                events
                    .iter()
                    .filter(|event| event.container_id.as_str() == container_id)
                    .map(|event| event.event.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Returns the exits of `process` in `container_id` received so far.
    pub fn exits_of(&self, container_id: &str, process: &ProcessId) -> Vec<Event> {
        self.events_of(container_id)
            .into_iter()
            .filter(
                |event| matches!(event, Event::Exited { process: exited, .. } if exited == process),
            )
            .collect()
    }

    /// Waits until `condition` holds for the events of `container_id`, at most `timeout`.
    pub async fn wait_for(
        &self,
        container_id: &str,
        timeout: Duration,
        condition: impl Fn(&[Event]) -> bool,
    ) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.arrived.notified();
            let events = self.events_of(container_id);
            if condition(&events) || tokio::time::Instant::now() >= deadline {
                return events;
            }
            let _ = tokio::time::timeout_at(deadline, arrived).await;
        }
    }
}

/// Creates `container_id` from `spec` through `client` and starts its task with `stdio`.
/// Panics, and so fails the test, when either step fails.
pub async fn create_and_start(
    client: &Client,
    container_id: &str,
    spec: Spec,
    stdio: StdioRequest,
) -> (Container, Task) {
    let container = match client.create_container(container_id, spec).await {
        Ok(container) => container,
        Err(error) => panic!("failed to create {container_id}: {error}"),
    };
    let task = match container.start_task(stdio).await {
        Ok(task) => task,
        Err(error) => panic!("failed to start {container_id}: {error}"),
    };
    (container, task)
}

/// A private containerd, a client in a fresh namespace, and a busybox root folder.
pub struct Harness {
    /// The client under test.
    pub client: Client,
    /// Every event the client delivered.
    pub recorder: Recorder,
    /// The busybox root folder.
    pub rootfs: PathBuf,
    /// The client's state folder.
    pub state_dir: PathBuf,
    /// The namespace of this test.
    pub namespace: String,
    /// The private containerd; stopped and removed when the harness drops.
    pub containerd: PrivateContainerd,
}

/// Sends the log of the test's client to the test's captured output, which the test runner
/// prints when the test fails. `RUST_LOG` sets the level. The default is warnings and errors,
/// so a failure shows what keel warned about, such as the end of a failed criu run's log.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

impl Harness {
    /// Starts a private containerd and connects a client to it.
    pub async fn start() -> Self {
        init_tracing();
        let containerd = match PrivateContainerd::start().await {
            Ok(containerd) => containerd,
            Err(error) => panic!("cannot start a private containerd: {error}"),
        };
        let namespace = containerd.new_namespace();
        let state_dir = containerd.client_state_dir();
        let rootfs = match containerd.busybox_rootfs() {
            Ok(rootfs) => rootfs,
            Err(error) => panic!("cannot build the busybox root folder: {error}"),
        };
        let recorder = Recorder::default();
        let options =
            ClientOptions::new(containerd.socket(), namespace.as_str()).state_dir(&state_dir);
        let client = match Client::connect_with(options, recorder.clone()).await {
            Ok(client) => client,
            Err(error) => panic!("cannot connect to the private containerd: {error}"),
        };
        Self {
            client,
            recorder,
            rootfs,
            state_dir,
            namespace,
            containerd,
        }
    }

    /// Returns a spec that runs `args` in the busybox root folder.
    pub fn spec(&self, args: &[&str]) -> Spec {
        SpecBuilder::new(&self.rootfs)
            .args(args.iter().copied())
            .build()
    }

    /// Creates `container_id` running `args` and starts its task without stdio.
    pub async fn run_detached(&self, container_id: &str, args: &[&str]) -> (Container, Task) {
        self.create_and_start(container_id, self.spec(args), StdioRequest::default())
            .await
    }

    /// Creates `container_id` from `spec` and starts its task with `stdio`, through
    /// [`create_and_start`] on this harness's client.
    pub async fn create_and_start(
        &self,
        container_id: &str,
        spec: Spec,
        stdio: StdioRequest,
    ) -> (Container, Task) {
        create_and_start(&self.client, container_id, spec, stdio).await
    }

    /// Returns the bundle folder keel uses for `container_id`.
    pub fn bundle_dir(&self, container_id: &str) -> PathBuf {
        self.state_dir.join(&self.namespace).join(container_id)
    }

    /// Lists the ids of containerd's containers in this namespace, with containerd's own
    /// command-line client.
    pub fn containerd_containers(&self) -> Vec<String> {
        self.ctr(&["containers", "list", "--quiet"])
    }

    /// Lists the ids of containerd's tasks in this namespace.
    pub fn containerd_tasks(&self) -> Vec<String> {
        self.ctr(&["tasks", "list", "--quiet"])
    }

    /// Lists the digests of the blobs of this namespace in containerd's content store.
    pub fn containerd_content(&self) -> Vec<String> {
        self.ctr(&["content", "list", "--quiet"])
    }

    /// Lists the ids of containerd's leases in this namespace.
    pub fn containerd_leases(&self) -> Vec<String> {
        self.ctr(&["leases", "list", "--quiet"])
    }

    fn ctr(&self, args: &[&str]) -> Vec<String> {
        let output = std::process::Command::new("ctr")
            .arg("--address")
            .arg(self.containerd.socket())
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args)
            .output();
        let output = match output {
            Ok(output) if output.status.success() => output,
            Ok(output) => panic!(
                "ctr {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => panic!("cannot run ctr: {error}"),
        };
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .filter(|line| !line.is_empty())
            .collect()
    }

    /// Shuts the client down, then stops containerd.
    pub async fn stop(self) {
        self.client.shutdown(Duration::from_secs(5)).await;
        self.containerd.stop().await;
    }
}
