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

/// Runs `count` lifecycles at each of `levels`, keel first at odd levels and Go first at
/// even ones.
pub async fn run(env: &Env, levels: &[usize], count: usize) -> anyhow::Result<Vec<ThroughputRow>> {
    let client = env.connect_keel().await?;
    let mut rows = Vec::new();
    for (index, &concurrency) in levels.iter().enumerate() {
        let go_namespace = env.containerd.new_namespace();
        let mut go = Err("not run".to_owned());
        if index % 2 == 1 {
            go = run_go(env, &go_namespace, count, concurrency).await;
        }
        let (keel_per_second, keel_failures) =
            run_keel(env, &client, &format!("c{concurrency}"), count, concurrency).await;
        if index % 2 == 0 {
            go = run_go(env, &go_namespace, count, concurrency).await;
        }
        rows.push(ThroughputRow {
            concurrency,
            count,
            keel_per_second,
            keel_failures,
            go,
        });
    }
    client.shutdown(Duration::from_secs(5)).await;
    Ok(rows)
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
    (count as f64 / seconds, failures.load(Ordering::SeqCst))
}

async fn run_go(
    env: &Env,
    namespace: &str,
    count: usize,
    concurrency: usize,
) -> Result<(f64, u64), String> {
    let go = env.go.as_ref().map_err(Clone::clone)?;
    let result = go
        .throughput(namespace, count, concurrency)
        .await
        .map_err(|error| format!("failed: {error:#}"))?;
    if let Some(error) = &result.first_error {
        tracing::warn!(%error, "Go lifecycle failed");
    }
    Ok((count as f64 / result.seconds, result.failures))
}
