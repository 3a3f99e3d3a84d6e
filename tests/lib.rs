//! Shared set-up of the real-containerd tests: a private containerd per test, a fresh
//! namespace, a busybox root folder, and a backend that records every event.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel::spec::{SpecBuilder, exec_process};
use keel::{
    Backend, Client, ClientOptions, Container, ContainerEvent, Event, ExitStatus, OutputStream,
    Process, ProcessId, StdioRequest, Task,
};
use keel_testkit::PrivateContainerd;
use oci_spec::runtime::Spec;
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

/// Stdout and stderr as FIFOs, no stdin.
pub const OUTPUT: StdioRequest = StdioRequest {
    stdin: false,
    output: true,
    terminal: false,
};

/// Stdin, stdout and stderr as FIFOs, no terminal.
pub const INPUT_OUTPUT: StdioRequest = StdioRequest {
    stdin: true,
    output: true,
    terminal: false,
};

/// SIGKILL's number.
pub const SIGKILL: u32 = 9;

/// How long [`force_delete`] gives containerd to stop a container's processes.
const FORCE_DELETE_TIMEOUT: Duration = Duration::from_secs(10);

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

    /// Waits until an event of `container_id` matches `matches`, at most `timeout`, and
    /// returns the events of `container_id` received by then.
    pub async fn wait_for_event(
        &self,
        container_id: &str,
        timeout: Duration,
        matches: impl Fn(&Event) -> bool,
    ) -> Vec<Event> {
        self.wait_for(container_id, timeout, |events| events.iter().any(&matches))
            .await
    }

    /// Waits until the init process of `container_id` exited, at most `timeout`, and returns
    /// the events of `container_id` received by then.
    pub async fn wait_for_init_exit(&self, container_id: &str, timeout: Duration) -> Vec<Event> {
        self.wait_for_event(container_id, timeout, is_init_exit)
            .await
    }
}

/// Reports whether `event` is an exit of a container's init process.
pub fn is_init_exit(event: &Event) -> bool {
    matches!(
        event,
        Event::Exited {
            process: ProcessId::Init,
            ..
        }
    )
}

/// Counts the init exits among `events`.
pub fn count_init_exits(events: &[Event]) -> usize {
    events.iter().filter(|event| is_init_exit(event)).count()
}

/// Asserts that `events[index]` is an exit of init process `pid` with `code` that containerd
/// reported, not a synthetic one. `context` starts every failure message.
pub fn assert_init_exit(events: &[Event], index: usize, pid: u32, code: u32, context: &str) {
    let Some(Event::Exited {
        process,
        pid: exit_pid,
        status,
        synthetic,
    }) = events.get(index)
    else {
        panic!("{context}: event {index} is not an exit: {events:?}");
    };
    assert_eq!(*process, ProcessId::Init, "{context}");
    assert_eq!(*exit_pid, pid, "{context}");
    assert_eq!(status.code, code, "{context}");
    assert_eq!(*synthetic, None, "{context}");
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

/// Adds exec `exec_id` running `args` to `task` with `stdio` and starts it. Panics, and so
/// fails the test, when either step fails.
pub async fn start_exec(task: &Task, exec_id: &str, args: &[&str], stdio: StdioRequest) -> Process {
    let mut process = match task
        .exec(exec_id, exec_process(args.iter().copied()), stdio)
        .await
    {
        Ok(process) => process,
        Err(error) => panic!("failed to add exec {exec_id} {args:?}: {error}"),
    };
    if let Err(error) = process.start().await {
        panic!("failed to start exec {exec_id} {args:?}: {error}");
    }
    process
}

/// Waits for the exit that `wait` (a task's or an exec's `wait()`) returns, at most `timeout`.
/// Panics with `expectation` when the wait takes longer or fails.
pub async fn wait_within(
    timeout: Duration,
    wait: impl Future<Output = Result<ExitStatus, keel::Error>>,
    expectation: &str,
) -> ExitStatus {
    match tokio::time::timeout(timeout, wait).await {
        Ok(Ok(status)) => status,
        Ok(Err(error)) => panic!("{expectation}: wait failed: {error}"),
        Err(_) => panic!("{expectation}: timed out after {timeout:?}"),
    }
}

/// Reads `stream` to its end. `None` reads nothing. Panics when a read fails.
pub async fn read_all(stream: Option<OutputStream>) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Some(mut stream) = stream
        && let Err(error) = stream.read_to_end(&mut bytes).await
    {
        panic!("failed to read stream: {error}");
    }
    bytes
}

/// Deletes the stopped `task`, then `container`. Panics when either delete fails.
pub async fn delete_task_and_container(container: &Container, task: Task) {
    let container_id = container.id().to_string();
    if let Err(error) = task.delete().await {
        panic!("failed to delete the task of {container_id}: {error}");
    }
    if let Err(error) = container.delete().await {
        panic!("failed to delete {container_id}: {error}");
    }
}

/// Sends SIGKILL to the init process of `task`, waits for its exit, deletes the task and
/// `container`, and returns the exit status. Panics when any step fails.
pub async fn kill_and_delete(container: &Container, task: Task) -> ExitStatus {
    kill_wait_and_delete(container, task, false).await
}

/// Sends SIGKILL to every process of `task`, waits for the init exit, deletes the task and
/// `container`, and returns the init exit status. Panics when any step fails.
pub async fn kill_all_and_delete(container: &Container, task: Task) -> ExitStatus {
    kill_wait_and_delete(container, task, true).await
}

async fn kill_wait_and_delete(container: &Container, task: Task, all: bool) -> ExitStatus {
    let container_id = container.id().to_string();
    if let Err(error) = task.kill(SIGKILL, all).await {
        panic!("failed to kill {container_id}: {error}");
    }
    let status = match task.wait().await {
        Ok(status) => status,
        Err(error) => panic!("failed to wait for {container_id}: {error}"),
    };
    delete_task_and_container(container, task).await;
    status
}

/// Force-deletes `container` with its task and execs, allowing ten seconds. Panics when the
/// delete fails.
pub async fn force_delete(container: &Container) {
    if let Err(error) = container.force_delete(FORCE_DELETE_TIMEOUT).await {
        panic!("failed to force-delete {}: {error}", container.id());
    }
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
    /// Starts a private containerd and connects a client to it that records every event.
    pub async fn start() -> Self {
        Self::start_with(|_| {}, |recorder| recorder).await
    }

    /// Starts a private containerd and connects a client whose options `configure` adjusts
    /// and whose backend `wrap` builds around the harness's recorder.
    pub async fn start_with<B: Backend>(
        configure: impl FnOnce(&mut ClientOptions),
        wrap: impl FnOnce(Recorder) -> B,
    ) -> Self {
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
        let mut options =
            ClientOptions::new(containerd.socket(), namespace.as_str()).state_dir(&state_dir);
        configure(&mut options);
        let client = match Client::connect_with(options, wrap(recorder.clone())).await {
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

    /// Returns the options of the harness's client: its containerd, namespace and state folder.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions::new(self.containerd.socket(), self.namespace.as_str())
            .state_dir(&self.state_dir)
    }

    /// Connects another client with [`Self::client_options`] that sends events to `backend`,
    /// as an engine that restarted does. Panics when the connect fails.
    pub async fn connect(&self, backend: impl Backend) -> Client {
        match Client::connect_with(self.client_options(), backend).await {
            Ok(client) => client,
            Err(error) => panic!("cannot connect another client: {error}"),
        }
    }

    /// Creates `container_id` running `args` without starting a task. Panics when the create
    /// fails.
    pub async fn create_container(&self, container_id: &str, args: &[&str]) -> Container {
        match self
            .client
            .create_container(container_id, self.spec(args))
            .await
        {
            Ok(container) => container,
            Err(error) => panic!("failed to create {container_id}: {error}"),
        }
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
