//! Throughput: a fixed number of `/bin/true` lifecycles at a given concurrency, through keel
//! and through the Go client.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::Env;
use crate::stats::{Batch, batch_rate, rate_ratio_interval};
use crate::workload::keel_lifecycle;

/// The figures of one concurrency level.
#[derive(Debug)]
pub struct ThroughputRow {
    /// Lifecycles in flight at once.
    pub concurrency: usize,
    /// Lifecycles run by each client.
    pub count: usize,
    /// The batches each client's lifecycles were split into.
    pub batches: usize,
    /// keel's lifecycles per second.
    pub keel_per_second: f64,
    /// keel's failed lifecycles.
    pub keel_failures: usize,
    /// The Go client's lifecycles per second and failures, or why they were not measured.
    pub go: Result<(f64, u64), String>,
    /// The 95% bootstrap interval of keel's rate divided by Go's, resampled by pairs of
    /// batches.
    pub interval: Option<(f64, f64)>,
}

/// The minimum size of a batch, in lifecycles and in lifecycles per worker. Smaller batches
/// would time mostly the end of a batch, when the slowest workers still run and the rest wait.
const MIN_BATCH_SIZE: usize = 25;
const MIN_BATCH_SIZE_PER_WORKER: usize = 5;

/// Returns how many lifecycles go in each batch of `count` at `concurrency`.
///
/// The clients' batches alternate (keel, Go, Go, keel, keel, Go, ...), so more batches leave
/// drift on the machine less room to favour either client. Their number is a multiple of
/// four, at least four, so each client runs first equally often.
pub fn batch_size(count: usize, concurrency: usize) -> usize {
    let smallest = (MIN_BATCH_SIZE_PER_WORKER * concurrency).max(MIN_BATCH_SIZE);
    let batches = (count / smallest / 4 * 4).max(4);
    count.div_ceil(batches).max(1)
}

/// Runs `count` lifecycles per client at each of `levels`, in batches of [`batch_size`].
pub async fn run(env: &Env, levels: &[usize], count: usize) -> anyhow::Result<Vec<ThroughputRow>> {
    let client = env.connect_keel().await?;
    let mut rows = Vec::new();
    for &concurrency in levels {
        let go_namespace = env.containerd.new_namespace();
        let batch = batch_size(count, concurrency);
        let mut keel = Vec::new();
        let mut keel_failures = 0;
        let mut go = Ok((Vec::new(), 0));
        let mut done = 0;
        for index in 0.. {
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
            keel.push(Batch {
                count: size,
                seconds,
            });
            keel_failures += failures;
            if keel_first {
                add_go(&mut go, env, &go_namespace, index, size, concurrency).await;
            }
            done += size;
        }
        let keel_per_second = batch_rate(&keel);
        rows.push(ThroughputRow {
            concurrency,
            count: done,
            batches: keel.len(),
            keel_per_second,
            keel_failures,
            interval: go
                .as_ref()
                .ok()
                .and_then(|(go, _)| rate_ratio_interval(&keel, go)),
            go: go.map(|(go, failures)| (batch_rate(&go), failures)),
        });
    }
    client.shutdown(Duration::from_secs(5)).await;
    Ok(rows)
}

/// The Go client's batches of one level and their failures, or why it could not run.
type GoBatches = Result<(Vec<Batch>, u64), String>;

/// Runs one batch of the Go client, or leaves `batches` as the reason it could not run.
async fn add_go(
    batches: &mut GoBatches,
    env: &Env,
    namespace: &str,
    batch: usize,
    count: usize,
    concurrency: usize,
) {
    let Ok((sums, failures)) = batches.as_mut() else {
        return;
    };
    let go = match env.go.as_ref() {
        Ok(go) => go,
        Err(reason) => {
            *batches = Err(reason.clone());
            return;
        }
    };
    let prefix = format!("go-c{concurrency}-b{batch}");
    match go.throughput(namespace, &prefix, count, concurrency).await {
        Ok(result) => {
            if let Some(error) = &result.first_error {
                tracing::warn!(%error, "Go lifecycle failed");
            }
            sums.push(Batch {
                count,
                seconds: result.seconds,
            });
            *failures += result.failures;
        }
        Err(error) => *batches = Err(format!("failed: {error:#}")),
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

#[cfg(test)]
mod tests {
    use super::batch_size;

    #[test]
    fn batch_size_keeps_minimum_and_fours() {
        assert_eq!(batch_size(600, 1), 25);
        assert_eq!(batch_size(600, 10), 50);
        assert_eq!(batch_size(600, 50), 150);
        assert_eq!(batch_size(50, 2), 13);
        assert_eq!(batch_size(2, 1), 1);
    }
}
