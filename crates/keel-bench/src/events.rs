//! The event pipeline against a real containerd. Pause and resume events, of real tasks or
//! published through containerd, are timed from their envelope's timestamp to keel's backend
//! and to a Go subscriber listening at the same time.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use containerd_client::events::{TaskPaused, TaskResumed};
use containerd_client::services::v1::{PauseTaskRequest, PublishRequest, ResumeTaskRequest};
use keel_connection::Services;
use prost::Message as _;

use crate::Env;
use crate::go::GoEvents;
use crate::recorder::Recorder;
use crate::stats::Samples;

/// How long the delivery of the last event may take before the run gives up waiting.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The pause between two published events, so the clients are measured unloaded.
const PUBLISH_INTERVAL: Duration = Duration::from_micros(500);

/// The origin of a run's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Real tasks paused and resumed; their shim stamps each envelope.
    PauseResume,
    /// Pause and resume events sent through containerd's `Publish` call, which stamps each
    /// envelope itself, so the latency holds only containerd's delivery and the client.
    Published,
}

/// The figures of one event run.
#[derive(Debug)]
pub struct EventRow {
    /// The origin of the events.
    pub source: Source,
    /// Running containers the load was spread over.
    pub containers: usize,
    /// Pause and resume events generated.
    pub events: usize,
    /// Events per second keel's backend received while the load ran.
    pub keel_per_second: f64,
    /// Latency from containerd's envelope stamp to keel's backend.
    pub keel_latency: Samples,
    /// Latency from the envelope stamp to the Go subscriber, or why it was not measured.
    pub go_latency: Result<Samples, String>,
}

/// Produces `2 * pairs` pause and resume events for `ids` round-robin from `source`, while
/// keel's backend and a Go subscriber time every event. Pausing keeps `workers` requests in
/// flight; publishing sends one event every [`PUBLISH_INTERVAL`].
pub async fn run(
    env: &Env,
    namespace: &str,
    recorder: &Recorder,
    ids: &[String],
    pairs: usize,
    workers: usize,
    source: Source,
) -> anyhow::Result<EventRow> {
    let services = Services::new(
        env.containerd.socket(),
        keel::Namespace::new(namespace)?,
        Duration::from_secs(10),
    )?;
    let mut go = match &env.go {
        Ok(go) => Ok(go.events(namespace)?),
        Err(reason) => Err(reason.clone()),
    };
    if let Ok(subscriber) = go.as_mut() {
        subscriber.wait_for_line("subscribed").await?;
        warm_up(&services, recorder, subscriber, &ids[0]).await?;
        subscriber.reset().await?;
    }

    let target = recorder.timed_events() + 2 * pairs as u64;
    let load = Load {
        socket: env.containerd.socket().to_owned(),
        namespace: namespace.to_owned(),
        ids: ids.to_vec(),
        pairs,
        workers,
        source,
    };
    recorder.start_recording();
    let started = Instant::now();
    load.run_on_own_thread().await?;
    let drained = tokio::time::timeout(
        DRAIN_TIMEOUT,
        recorder.wait_until(|recorder| recorder.timed_events() >= target),
    )
    .await;
    let elapsed = started.elapsed();
    let keel_latency = recorder.stop_recording();
    drained.context("keel's backend did not receive every pause and resume event")?;

    let go_latency = match go {
        Ok(subscriber) => subscriber
            .finish()
            .await
            .map(|result| {
                let mut samples = Samples::default();
                result
                    .latencies_ms
                    .iter()
                    .for_each(|&ms| samples.push_value(ms));
                samples
            })
            .map_err(|error| format!("failed: {error:#}")),
        Err(reason) => Err(reason),
    };
    Ok(EventRow {
        source,
        containers: ids.len(),
        events: 2 * pairs,
        keel_per_second: 2.0 * pairs as f64 / elapsed.as_secs_f64(),
        keel_latency,
        go_latency,
    })
}

/// Publishes a resume event every 20 ms until the Go subscriber has received one and keel's
/// backend has received every one, so both streams are live before the measurement.
async fn warm_up(
    services: &Services,
    recorder: &Recorder,
    subscriber: &mut GoEvents,
    container_id: &str,
) -> anyhow::Result<()> {
    let mut events = services.events();
    let target = recorder.timed_events();
    let live = subscriber.wait_for_line("live");
    tokio::pin!(live);
    let mut published = 0;
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            result = &mut live => {
                result?;
                break;
            }
            _ = ticks.tick() => {
                anyhow::ensure!(published < 250, "the Go subscriber received no event in 5 s");
                let resumed = TaskResumed { container_id: container_id.to_owned() };
                events.publish(publish_request("/tasks/resumed", "containerd.events.TaskResumed", resumed.encode_to_vec())).await?;
                published += 1;
            }
        }
    }
    let target = target + published;
    tokio::time::timeout(
        DRAIN_TIMEOUT,
        recorder.wait_until(|recorder| recorder.timed_events() >= target),
    )
    .await
    .context("keel's backend did not receive the warm-up events")?;
    Ok(())
}

fn publish_request(topic: &str, type_url: &str, value: Vec<u8>) -> PublishRequest {
    PublishRequest {
        topic: topic.to_owned(),
        event: Some(prost_types::Any {
            type_url: type_url.to_owned(),
            value,
        }),
    }
}

/// The events the benchmark makes containerd send, and where it sends them.
struct Load {
    socket: PathBuf,
    namespace: String,
    ids: Vec<String>,
    pairs: usize,
    workers: usize,
    source: Source,
}

impl Load {
    /// Runs the load on a thread of its own, with a current-thread runtime and a connection
    /// of its own, and waits for it to finish. On keel's runtime the load's gRPC calls would
    /// run on keel's worker threads and delay keel's events, while the Go subscriber shares
    /// nothing with the load.
    async fn run_on_own_thread(self) -> anyhow::Result<()> {
        tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(self.run())
        })
        .await?
    }

    async fn run(self) -> anyhow::Result<()> {
        let namespace = keel::Namespace::new(self.namespace)?;
        let services = Services::new(&self.socket, namespace, Duration::from_secs(10))?;
        match self.source {
            Source::PauseResume => {
                pause_and_resume(&services, &self.ids, self.pairs, self.workers).await
            }
            Source::Published => publish(&services, &self.ids, self.pairs).await,
        }
    }
}

async fn pause_and_resume(
    services: &Services,
    ids: &[String],
    pairs: usize,
    workers: usize,
) -> anyhow::Result<()> {
    let ids: Arc<Vec<String>> = Arc::new(ids.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..workers.max(1) {
        let ids = Arc::clone(&ids);
        let next = Arc::clone(&next);
        let mut tasks = services.tasks();
        handles.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                if index >= pairs {
                    return anyhow::Ok(());
                }
                let container_id = ids[index % ids.len()].clone();
                tasks
                    .pause(PauseTaskRequest {
                        container_id: container_id.clone(),
                    })
                    .await
                    .with_context(|| format!("cannot pause {container_id}"))?;
                tasks
                    .resume(ResumeTaskRequest {
                        container_id: container_id.clone(),
                    })
                    .await
                    .with_context(|| format!("cannot resume {container_id}"))?;
            }
        }));
    }
    for handle in handles {
        handle.await??;
    }
    Ok(())
}

/// Publishes `pairs` pause and resume events for `ids` round-robin, one per
/// [`PUBLISH_INTERVAL`].
async fn publish(services: &Services, ids: &[String], pairs: usize) -> anyhow::Result<()> {
    let mut events = services.events();
    let mut ticks = tokio::time::interval(PUBLISH_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for index in 0..2 * pairs {
        ticks.tick().await;
        let container_id = ids[(index / 2) % ids.len()].clone();
        let (topic, type_url, value) = if index % 2 == 0 {
            let paused = TaskPaused { container_id };
            (
                "/tasks/paused",
                "containerd.events.TaskPaused",
                paused.encode_to_vec(),
            )
        } else {
            let resumed = TaskResumed { container_id };
            (
                "/tasks/resumed",
                "containerd.events.TaskResumed",
                resumed.encode_to_vec(),
            )
        };
        let request = publish_request(topic, type_url, value);
        events
            .publish(request)
            .await
            .context("cannot publish an event")?;
    }
    Ok(())
}
