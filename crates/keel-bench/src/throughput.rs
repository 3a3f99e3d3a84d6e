//! Throughput: a fixed number of `/bin/true` lifecycles at a given concurrency, through keel
//! and through the Go client.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::Env;
use crate::workload::keel_lifecycle;

/// The figures of one concurrency level.
#[derive(Debug)]
pub struct ThroughputRow {
    /// Lifecycles in flight at once.
    pub concurrency: usize,
    /// Lifecycles run by each client.
    pub count: usize,
    /// keel's lifecycles per second.
    pub keel_per_second: f64,
    /// keel's failed lifecycles.
    pub keel_failures: usize,
    /// The Go client's lifecycles per second and failures, or why they were not measured.
    pub go: Result<(f64, u64), String>,
}

/// The number of batches each client's lifecycles of one level are split into. Batches run in
/// the order keel, Go, Go, keel, so drift on the machine reaches both clients alike.
const BATCHES: usize = 4;

/// Runs `count` lifecycles per client at each of `levels`, in [`BATCHES`] batches each.
pub async fn run(env: &Env, levels: &[usize], count: usize) -> anyhow::Result<Vec<ThroughputRow>> {
    let client = env.connect_keel().await?;
    let mut rows = Vec::new();
    for &concurrency in levels {
        let go_namespace = env.containerd.new_namespace();
        let batch = count.div_ceil(BATCHES).max(1);
        let mut keel = Totals::default();
        let mut go = Ok(Totals::default());
        let mut done = 0;
        for index in 0..BATCHES {
            let size = batch.min(count - done);
            if size == 0 {
                break;
            }
            let keel_first = index % 2 == 0;
            if !keel_first {
                add_go(&mut go, env, &go_namespace, index, size, concurrency).await;
            }
            let prefix = format!("c{concurrency}-b{index}");
            let (seconds, failures) = run_keel(env, &client, &prefix, size, concurrency).await;
            keel.add(size, seconds, failures);
            if keel_first {
                add_go(&mut go, env, &go_namespace, index, size, concurrency).await;
            }
            done += size;
        }
        rows.push(ThroughputRow {
            concurrency,
            count: keel.count,
            keel_per_second: keel.rate(),
            keel_failures: keel.failures,
            go: go.map(|go| (go.rate(), go.failures as u64)),
        });
    }
    client.shutdown(Duration::from_secs(5)).await;
    Ok(rows)
}

/// Lifecycles, seconds and failures summed over batches.
#[derive(Debug, Default)]
struct Totals {
    count: usize,
    seconds: f64,
    failures: usize,
}

impl Totals {
    fn add(&mut self, count: usize, seconds: f64, failures: usize) {
        self.count += count;
        self.seconds += seconds;
        self.failures += failures;
    }

    fn rate(&self) -> f64 {
        self.count as f64 / self.seconds
    }
}

/// Runs one batch of the Go client, or leaves `totals` as the reason it could not run.
async fn add_go(
    totals: &mut Result<Totals, String>,
    env: &Env,
    namespace: &str,
    batch: usize,
    count: usize,
    concurrency: usize,
) {
    let Ok(sums) = totals.as_mut() else {
        return;
    };
    let Ok(go) = env.go.as_ref() else {
        *totals = env
            .go
            .as_ref()
            .map(|_| Totals::default())
            .map_err(Clone::clone);
        return;
    };
    let prefix = format!("go-c{concurrency}-b{batch}");
    match go.throughput(namespace, &prefix, count, concurrency).await {
        Ok(result) => {
            if let Some(error) = &result.first_error {
                tracing::warn!(%error, "Go lifecycle failed");
            }
            sums.add(
                count,
                result.seconds,
                usize::try_from(result.failures).unwrap_or(usize::MAX),
            );
        }
        Err(error) => *totals = Err(format!("failed: {error:#}")),
    }
}

async fn run_keel(
    env: &Env,
    client: &keel::Client,
    prefix: &str,
    count: usize,
    concurrency: usize,
) -> (f64, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let rootfs = env.rootfs.clone();
        let prefix = prefix.to_owned();
        let next = Arc::clone(&next);
        let failures = Arc::clone(&failures);
        workers.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                if index >= count {
                    return;
                }
                let id = format!("{prefix}-{index}");
                if let Err(error) = keel_lifecycle(&client, &id, &rootfs).await {
                    tracing::warn!(container_id = %id, error = %format!("{error:#}"), "keel lifecycle failed");
                    failures.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for worker in workers {
        if worker.await.is_err() {
            failures.fetch_add(1, Ordering::SeqCst);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    (seconds, failures.load(Ordering::SeqCst))
}
