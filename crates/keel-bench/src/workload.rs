//! The container work every benchmark repeats: lifecycles through keel and through bare gRPC,
//! and long-running containers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use containerd_client::services::v1::container::Runtime as ContainerRuntime;
use containerd_client::services::v1::{
    Container as ContainerRecord, CreateContainerRequest, CreateTaskRequest,
    DeleteContainerRequest, DeleteTaskRequest, StartRequest, WaitRequest,
};
use keel::spec::SpecBuilder;
use keel::{Client, Container, StdioRequest, Task};
use keel_connection::Services;
use oci_spec::runtime::Spec;

/// The runtime every container of the benchmark uses.
const RUNC_V2: &str = "io.containerd.runc.v2";

/// The type URL containerd expects for an OCI runtime spec.
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// The spec annotation that makes containerd 1.6's runc v2 shim serve every container of a
/// group from one shim process, which keeps 1,000 running containers within memory.
const SHIM_GROUP_ANNOTATION: &str = "io.containerd.runc.v2.group";

/// Returns the spec of a container running `args` in `rootfs`.
pub fn spec(rootfs: &Path, args: &[&str]) -> Spec {
    SpecBuilder::new(rootfs).args(args.iter().copied()).build()
}

/// Returns the spec of a container running `args` that shares its shim with the other
/// containers of `group`.
pub fn grouped_spec(rootfs: &Path, args: &[&str], group: &str) -> Spec {
    let mut spec = spec(rootfs, args);
    let annotations = HashMap::from([(SHIM_GROUP_ANNOTATION.to_owned(), group.to_owned())]);
    spec.set_annotations(Some(annotations));
    spec
}

/// The steps of a lifecycle, in order, as the lifecycle report names them.
pub const STEPS: [&str; 5] = [
    "create the container",
    "create and start the task",
    "wait for the exit",
    "delete the task",
    "delete the container",
];

/// The wall time of each of [`STEPS`] in one lifecycle, in milliseconds.
pub type StepTimes = [f64; STEPS.len()];

/// Splits a lifecycle into its steps: each call to [`Laps::lap`] ends one step.
struct Laps {
    last: Instant,
    times: StepTimes,
    done: usize,
}

impl Laps {
    fn start() -> Self {
        Self {
            last: Instant::now(),
            times: [0.0; STEPS.len()],
            done: 0,
        }
    }

    fn lap(&mut self) {
        let now = Instant::now();
        if let Some(time) = self.times.get_mut(self.done) {
            *time = (now - self.last).as_secs_f64() * 1e3;
        }
        self.last = now;
        self.done += 1;
    }
}

/// Creates container `id` running `/bin/true`, runs its task to the end and deletes both,
/// through keel's facade. Returns the time of each step.
pub async fn keel_lifecycle(client: &Client, id: &str, rootfs: &Path) -> anyhow::Result<StepTimes> {
    let mut laps = Laps::start();
    let container = client
        .create_container(id, spec(rootfs, &["/bin/true"]))
        .await?;
    laps.lap();
    let task = container.start_task(StdioRequest::default()).await?;
    laps.lap();
    finish_timed(container, task, &mut laps).await?;
    Ok(laps.times)
}

/// Waits for the task's exit, checks it is 0, and deletes the task and the container.
pub async fn finish(container: Container, task: Task) -> anyhow::Result<()> {
    finish_timed(container, task, &mut Laps::start()).await
}

/// Runs [`finish`], ending a step of `laps` after the wait and after each delete.
async fn finish_timed(container: Container, task: Task, laps: &mut Laps) -> anyhow::Result<()> {
    let status = task.wait().await?;
    laps.lap();
    task.delete().await?;
    laps.lap();
    container.delete().await?;
    laps.lap();
    anyhow::ensure!(status.code == 0, "container exited with {}", status.code);
    Ok(())
}

/// Runs the lifecycle of [`keel_lifecycle`] with bare gRPC calls on `services`, waiting for the
/// exit with the `Wait` call as the Go client does. Like keel and the Go client, it puts the
/// container in the cgroup `/<namespace>/<id>`. Returns the time of each step.
pub async fn raw_lifecycle(
    services: &Services,
    id: &str,
    mut spec: Spec,
) -> anyhow::Result<StepTimes> {
    let mut laps = Laps::start();
    if let Some(linux) = spec.linux_mut() {
        let cgroup = format!("/{}/{id}", services.namespace());
        linux.set_cgroups_path(Some(cgroup.into()));
    }
    let spec = serde_json::to_vec(&spec)?;
    let record = ContainerRecord {
        id: id.to_owned(),
        runtime: Some(ContainerRuntime {
            name: RUNC_V2.to_owned(),
            options: None,
        }),
        spec: Some(prost_types::Any {
            type_url: SPEC_TYPE_URL.to_owned(),
            value: spec,
        }),
        ..ContainerRecord::default()
    };
    let mut containers = services.containers();
    let mut tasks = services.tasks();

    containers
        .create(CreateContainerRequest {
            container: Some(record),
        })
        .await?;
    laps.lap();
    tasks
        .create(CreateTaskRequest {
            container_id: id.to_owned(),
            ..CreateTaskRequest::default()
        })
        .await?;

    // The wait is sent before the start, as the Go client does.
    let mut waiter = services.tasks();
    let wait_request = WaitRequest {
        container_id: id.to_owned(),
        exec_id: String::new(),
    };
    let wait = tokio::spawn(async move { waiter.wait(wait_request).await });
    tasks
        .start(StartRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
        })
        .await?;
    laps.lap();
    let exit = wait.await??.into_inner();
    laps.lap();

    tasks
        .delete(DeleteTaskRequest {
            container_id: id.to_owned(),
        })
        .await?;
    laps.lap();
    containers
        .delete(DeleteContainerRequest { id: id.to_owned() })
        .await?;
    laps.lap();
    anyhow::ensure!(
        exit.exit_status == 0,
        "container exited with {}",
        exit.exit_status
    );
    Ok(laps.times)
}

/// A running container started by [`start_sleepers`].
pub struct Sleeper {
    /// The container.
    pub container: Container,
    /// Its task.
    pub task: Task,
}

/// Starts containers `<prefix>-<first>` to `<prefix>-<first + count - 1>` running
/// `sleep 3600`, `workers` at a time, grouped 50 to a shim. Returns them in id order.
pub async fn start_sleepers(
    client: &Client,
    rootfs: &Path,
    prefix: &str,
    first: usize,
    count: usize,
    workers: usize,
) -> anyhow::Result<Vec<Sleeper>> {
    let next = Arc::new(AtomicUsize::new(first));
    let end = first + count;
    let mut handles = Vec::new();
    for _ in 0..workers.max(1) {
        let client = client.clone();
        let rootfs = rootfs.to_owned();
        let prefix = prefix.to_owned();
        let next = Arc::clone(&next);
        handles.push(tokio::spawn(async move {
            let mut started = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                if index >= end {
                    return anyhow::Ok(started);
                }
                let group = format!("{prefix}-group-{}", index / 50);
                let spec = grouped_spec(&rootfs, &["/bin/sleep", "3600"], &group);
                let id = format!("{prefix}-{index}");
                let container = client
                    .create_container(&id, spec)
                    .await
                    .with_context(|| format!("cannot create container {id}"))?;
                let task = container.start_task(StdioRequest::default()).await?;
                started.push((index, Sleeper { container, task }));
            }
        }));
    }
    let mut sleepers = Vec::with_capacity(count);
    for handle in handles {
        sleepers.extend(handle.await??);
    }
    sleepers.sort_by_key(|(index, _)| *index);
    Ok(sleepers.into_iter().map(|(_, sleeper)| sleeper).collect())
}

/// Kills and deletes `sleepers`, `workers` at a time. Containers whose task already exited are
/// deleted as well.
pub async fn stop_sleepers(sleepers: Vec<Sleeper>, workers: usize) -> anyhow::Result<()> {
    let queue = Arc::new(tokio::sync::Mutex::new(sleepers));
    let mut handles = Vec::new();
    for _ in 0..workers.max(1) {
        let queue = Arc::clone(&queue);
        handles.push(tokio::spawn(async move {
            loop {
                let Some(sleeper) = queue.lock().await.pop() else {
                    return anyhow::Ok(());
                };
                let _ = sleeper.task.kill(9, true).await;
                sleeper.task.wait().await?;
                sleeper.task.delete().await?;
                sleeper.container.delete().await?;
            }
        }));
    }
    for handle in handles {
        handle.await??;
    }
    Ok(())
}

/// Returns the time `work` took.
pub async fn timed<T>(work: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let output = work.await;
    (output, started.elapsed())
}
