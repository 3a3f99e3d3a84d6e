//! Reconnect: containerd is killed while containers run, their processes die while it is
//! down, and containerd is started again. Measured from the moment the new containerd accepts
//! connections on its socket.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use keel::ConnectionState;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Env;
use crate::recorder::Recorder;
use crate::stats::Samples;
use crate::workload::{start_sleepers, stop_sleepers};

/// How long one phase may take before the run gives up on it.
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);

/// The figures of the reconnect benchmark, in milliseconds after containerd accepted a
/// connection again.
#[derive(Debug, Default)]
pub struct ReconnectResults {
    /// Running containers whose processes died while containerd was down.
    pub containers: usize,
    /// Until keel's connection state is connected again.
    pub connected: Samples,
    /// Until a `Client::version` call sent at that point has returned.
    pub serving: Samples,
    /// Until the backend has received the exit of every container.
    pub reconciled: Samples,
}

/// Runs `repetitions` restarts with `containers` running containers each.
pub async fn run(
    env: &mut Env,
    containers: usize,
    repetitions: usize,
) -> anyhow::Result<ReconnectResults> {
    let mut results = ReconnectResults {
        containers,
        ..ReconnectResults::default()
    };
    for repetition in 0..repetitions {
        once(env, containers, repetition, &mut results).await?;
    }
    Ok(results)
}

async fn once(
    env: &mut Env,
    containers: usize,
    repetition: usize,
    results: &mut ReconnectResults,
) -> anyhow::Result<()> {
    let recorder = Arc::new(Recorder::default());
    let (client, _namespace) = env.connect_keel_recording(Arc::clone(&recorder)).await?;
    let prefix = format!("reconnect-{repetition}");
    let sleepers = start_sleepers(&client, &env.rootfs, &prefix, 0, containers, 2).await?;
    let pids: Vec<u32> = sleepers.iter().map(|sleeper| sleeper.task.pid()).collect();
    let exits_target = recorder.exits() + containers as u64;

    env.containerd.kill()?;
    for pid in pids {
        let pid = Pid::from_raw(i32::try_from(pid)?);
        kill(pid, Signal::SIGKILL)
            .with_context(|| format!("cannot kill container process {pid}"))?;
    }
    wait_for_state(&client, |state| !state.is_connected()).await?;

    let socket = env.containerd.socket().to_owned();
    let accepted = std::thread::spawn(move || wait_for_socket(&socket));
    let watcher = {
        let client = client.clone();
        let recorder = Arc::clone(&recorder);
        tokio::spawn(async move { watch_recovery(&client, &recorder, exits_target).await })
    };
    env.containerd.restart().await?;
    let accepted = accepted
        .join()
        .map_err(|_| anyhow::anyhow!("the socket watcher panicked"))??;
    let recovery = watcher.await??;

    let since = |instant: Instant| instant.saturating_duration_since(accepted);
    results.connected.push(since(recovery.connected));
    results.serving.push(since(recovery.serving));
    results.reconciled.push(since(recovery.reconciled));

    stop_sleepers(sleepers, 4).await?;
    client.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

struct Recovery {
    connected: Instant,
    serving: Instant,
    reconciled: Instant,
}

async fn watch_recovery(
    client: &keel::Client,
    recorder: &Recorder,
    exits_target: u64,
) -> anyhow::Result<Recovery> {
    let exits = async {
        tokio::time::timeout(
            PHASE_TIMEOUT,
            recorder.wait_until(|recorder| recorder.exits() >= exits_target),
        )
        .await
        .context("not every exit was reported after the restart")?;
        anyhow::Ok(Instant::now())
    };
    let serving = async {
        wait_for_state(client, ConnectionState::is_connected).await?;
        let connected = Instant::now();
        client.version().await?;
        anyhow::Ok((connected, Instant::now()))
    };
    let (reconciled, (connected, serving)) = tokio::try_join!(exits, serving)?;
    Ok(Recovery {
        connected,
        serving,
        reconciled,
    })
}

/// Polls the client's connection state every half millisecond until `condition` holds.
async fn wait_for_state(
    client: &keel::Client,
    condition: impl Fn(&ConnectionState) -> bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while !condition(&client.connection_state()) {
        anyhow::ensure!(
            started.elapsed() < PHASE_TIMEOUT,
            "the connection state stayed {:?}",
            client.connection_state()
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    Ok(())
}

/// Tries to connect to `socket` every 100 µs until it accepts; returns when it did.
fn wait_for_socket(socket: &PathBuf) -> anyhow::Result<Instant> {
    let started = Instant::now();
    loop {
        if UnixStream::connect(socket).is_ok() {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            started.elapsed() < PHASE_TIMEOUT,
            "{} accepted no connection",
            socket.display()
        );
        std::thread::sleep(Duration::from_micros(100));
    }
}
