//! keel's own costs without containerd: the event pipeline's ceiling on one core, and the
//! memory of tracked containers.
//!
//! Both spawn real container actors (`keel_container::ContainerActor`) that never call
//! containerd, and feed them synthetic events. So the figures cover the decoder, the routing
//! map, the actor mailboxes, the delivery queues and the backend call, and nothing of gRPC.

use std::path::Path;

use anyhow::Context as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use containerd_client::events::{TaskPaused, TaskResumed, TaskStart};
use containerd_client::types::Envelope;
use dashmap::DashMap;
use keel::{Backend, ContainerEvent, ContainerId, Namespace};
use keel_connection::Services;
use keel_container::{ContainerActor, ContainerArgs, ContainerMsg, ContainerOptions, Registry};
use keel_events::{Router, decode_envelope};
use prost::Message as _;
use ractor::{Actor, ActorRef};
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::machine::resident_kib;

/// A backend that only counts, and wakes a waiter at a target count.
#[derive(Debug, Default)]
pub struct CountingBackend {
    delivered: AtomicU64,
    target: AtomicU64,
    reached: Notify,
}

impl CountingBackend {
    /// Waits until `target` events have been delivered in total.
    pub async fn wait_for(&self, target: u64) {
        loop {
            let reached = self.reached.notified();
            self.target.store(target, Ordering::SeqCst);
            if self.delivered.load(Ordering::SeqCst) >= target {
                return;
            }
            reached.await;
        }
    }
}

#[keel::async_trait]
impl Backend for CountingBackend {
    async fn handle_event(&self, _event: ContainerEvent) {
        let delivered = self.delivered.fetch_add(1, Ordering::SeqCst) + 1;
        if delivered >= self.target.load(Ordering::SeqCst) {
            self.reached.notify_waiters();
        }
    }
}

/// Routes events to container actors by id, as `keel_container::Registry` does; the registry
/// itself can only be filled by keel's containers supervisor.
#[derive(Debug, Default)]
pub struct MapRouter {
    containers: DashMap<ContainerId, ActorRef<ContainerMsg>>,
}

impl Router for MapRouter {
    fn route(&self, event: ContainerEvent) -> bool {
        let Some(actor) = self.containers.get(&event.container_id) else {
            return false;
        };
        actor.cast(ContainerMsg::Event(event)).is_ok()
    }

    fn reconcile(&self) {}
}

/// Container actors spawned without containers in containerd.
pub struct ActorSet {
    router: MapRouter,
    backend: Arc<CountingBackend>,
    names: Vec<String>,
    actors: Vec<ActorRef<ContainerMsg>>,
}

impl ActorSet {
    /// Spawns `count` container actors named `<prefix>-<n>` and gives each a started task
    /// through a synthetic start event, so each keeps the state of a running container.
    pub async fn spawn(
        socket: &Path,
        state_dir: &Path,
        prefix: &str,
        count: usize,
    ) -> anyhow::Result<Self> {
        let services = Services::new(
            socket,
            Namespace::new("keel-bench-synthetic")?,
            Duration::from_secs(10),
        )?;
        let backend = Arc::new(CountingBackend::default());
        let registry = Arc::new(Registry::default());
        let tracker = TaskTracker::new();
        let router = MapRouter::default();
        let mut actors = Vec::with_capacity(count);
        let names: Vec<String> = (0..count)
            .map(|index| format!("{prefix}-{index}"))
            .collect();
        for name in &names {
            let container_id = ContainerId::new(name.as_str())?;
            let args = ContainerArgs {
                container_id: container_id.clone(),
                services: services.clone(),
                backend: Arc::clone(&backend) as Arc<dyn Backend>,
                state_dir: state_dir.to_owned(),
                options: ContainerOptions::default(),
                tracker: tracker.clone(),
                registry: Arc::clone(&registry),
            };
            let (actor, _handle) = Actor::spawn(None, ContainerActor, args).await?;
            router.containers.insert(container_id, actor.clone());
            actors.push(actor);
        }
        let set = Self {
            router,
            backend,
            names,
            actors,
        };
        set.start_tasks().await?;
        Ok(set)
    }

    /// Feeds every actor a start event; each reports a created and a started event.
    async fn start_tasks(&self) -> anyhow::Result<()> {
        for index in 0..self.actors.len() {
            let start = TaskStart {
                container_id: self.container_name(index),
                pid: 1000 + u32::try_from(index)?,
            };
            let envelope = envelope("containerd.events.TaskStart", start.encode_to_vec());
            self.deliver(&envelope)?;
        }
        self.backend.wait_for(2 * self.actors.len() as u64).await;
        Ok(())
    }

    fn container_name(&self, index: usize) -> String {
        self.names[index].clone()
    }

    /// Decodes one envelope and routes its event.
    fn deliver(&self, envelope: &Envelope) -> anyhow::Result<()> {
        let event = decode_envelope(envelope)?
            .ok_or_else(|| anyhow::anyhow!("envelope {} is not reported", envelope.topic))?;
        anyhow::ensure!(self.router.route(event), "event for an untracked container");
        Ok(())
    }

    /// Returns the number of events the backend received.
    pub fn delivered(&self) -> u64 {
        self.backend.delivered.load(Ordering::SeqCst)
    }

    /// Stops every actor.
    pub async fn stop(self) {
        for actor in &self.actors {
            actor.stop(None);
        }
        for actor in self.actors {
            let _ = actor.wait(Some(Duration::from_secs(5))).await;
        }
    }
}

/// Builds an envelope as containerd sends it, stamped now.
pub fn envelope(type_url: &str, value: Vec<u8>) -> Envelope {
    Envelope {
        timestamp: Some(SystemTime::now().into()),
        namespace: "keel-bench-synthetic".to_owned(),
        topic: "/tasks/paused".to_owned(),
        event: Some(prost_types::Any {
            type_url: type_url.to_owned(),
            value,
        }),
    }
}

/// The figures of the in-process pipeline run.
#[derive(Debug)]
pub struct PipelineResults {
    /// Events pushed through.
    pub events: u64,
    /// Containers the events were spread over.
    pub containers: usize,
    /// Decode, route and delivery to the backend, events per second on one thread.
    pub pipeline_per_second: f64,
    /// Decoding alone, envelopes per second.
    pub decode_per_second: f64,
}

/// Pushes `events` synthetic pause and resume envelopes for `containers` actors through
/// decode, route and delivery on a current-thread runtime, so all of it shares one core.
pub fn run_pipeline(
    socket: &Path,
    state_dir: &Path,
    containers: usize,
    events: u64,
) -> anyhow::Result<PipelineResults> {
    let socket = socket.to_owned();
    let state_dir = state_dir.to_owned();
    let worker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(pipeline(&socket, &state_dir, containers, events))
    });
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))?
}

async fn pipeline(
    socket: &Path,
    state_dir: &Path,
    containers: usize,
    events: u64,
) -> anyhow::Result<PipelineResults> {
    let set = ActorSet::spawn(socket, state_dir, "pipeline", containers).await?;
    let envelopes: Vec<Envelope> = (0..events)
        .map(|index| {
            let container_id = set.container_name(index as usize % containers);
            if index % 2 == 0 {
                let paused = TaskPaused { container_id };
                envelope("containerd.events.TaskPaused", paused.encode_to_vec())
            } else {
                let resumed = TaskResumed { container_id };
                envelope("containerd.events.TaskResumed", resumed.encode_to_vec())
            }
        })
        .collect();

    let started = Instant::now();
    let mut decoded = 0_u64;
    for envelope in &envelopes {
        if decode_envelope(envelope)?.is_some() {
            decoded += 1;
        }
    }
    let decode_seconds = started.elapsed().as_secs_f64();

    let before = set.delivered();
    let started = Instant::now();
    for (index, envelope) in envelopes.iter().enumerate() {
        set.deliver(envelope)?;
        // The event actor takes one envelope per message, so let the actors run in between
        // as they would.
        if index % 256 == 255 {
            tokio::task::yield_now().await;
        }
    }
    set.backend.wait_for(before + events).await;
    let pipeline_seconds = started.elapsed().as_secs_f64();
    set.stop().await;
    Ok(PipelineResults {
        events,
        containers,
        pipeline_per_second: events as f64 / pipeline_seconds,
        decode_per_second: decoded as f64 / decode_seconds,
    })
}

/// The memory figures of tracked containers without shims.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct TrackedMemory {
    /// Container actors spawned.
    pub containers: usize,
    /// The process's RSS before spawning, KiB.
    pub before_kib: u64,
    /// The process's RSS with every actor holding a started task, KiB.
    pub after_kib: u64,
}

impl TrackedMemory {
    /// Returns the growth of the RSS per tracked container, KiB.
    pub fn per_container_kib(&self) -> f64 {
        self.after_kib.saturating_sub(self.before_kib) as f64 / self.containers.max(1) as f64
    }
}

/// Runs [`tracked_memory`] in a fresh copy of this program, so memory that earlier sections
/// freed cannot hide the growth.
pub async fn tracked_memory_in_child(containers: usize) -> anyhow::Result<TrackedMemory> {
    let program = std::env::current_exe()?;
    let output = tokio::process::Command::new(&program)
        .arg("--probe-tracked-memory")
        .arg(containers.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("cannot start {}", program.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "the memory probe failed with {}",
        output.status
    );
    let line = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(line.trim()).with_context(|| format!("cannot parse {line:?}"))
}

/// Spawns `containers` actors, each with a started task, and measures the RSS growth. The
/// actors' services point at a socket that does not exist, because they never call
/// containerd.
pub async fn tracked_memory(containers: usize) -> anyhow::Result<TrackedMemory> {
    let socket = Path::new("/nonexistent/keel-bench.sock");
    let state_dir = Path::new("/nonexistent/keel-bench-state");
    let before_kib = resident_kib()?;
    let set = ActorSet::spawn(socket, state_dir, "tracked", containers).await?;
    // Let the delivery tasks settle before reading the RSS.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_kib = resident_kib()?;
    set.stop().await;
    Ok(TrackedMemory {
        containers,
        before_kib,
        after_kib,
    })
}
