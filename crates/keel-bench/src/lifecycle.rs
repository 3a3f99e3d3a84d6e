//! Sequential lifecycle latency: keel, bare gRPC, the Go client, `ctr run --rm` and
//! `runc run`, interleaved round by round so drift on the machine hits all of them alike.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::Context as _;
use keel_connection::Services;
use keel_types::Namespace;

use crate::Env;
use crate::machine::cpu_time_ms;
use crate::stats::{Samples, order_rng};
use crate::workload::{STEPS, StepTimes, keel_lifecycle, raw_lifecycle, spec, timed};

/// The figures of the lifecycle benchmark.
#[derive(Debug)]
pub struct LifecycleResults {
    /// Rounds measured, after the warm-up rounds.
    pub rounds: usize,
    /// Wall time of keel's lifecycles.
    pub keel: Samples,
    /// CPU time the whole client process used during each keel lifecycle.
    pub keel_cpu: Samples,
    /// Wall time of the same lifecycle in bare gRPC calls.
    pub raw: Samples,
    /// CPU time the client process used during each bare gRPC lifecycle.
    pub raw_cpu: Samples,
    /// keel's own CPU time per lifecycle: keel's CPU time minus the bare gRPC lifecycle's of
    /// the same round, for each recorded round where both ran.
    pub own_cpu: Samples,
    /// Wall time of the Go client's lifecycles, measured inside the Go process.
    pub go: Result<Samples, String>,
    /// The time of each lifecycle step, per client: keel, the bare gRPC calls and the Go
    /// client, in that order.
    pub steps: [StepSamples; 3],
    /// Wall time of `ctr run --rm`, measured around the process.
    pub ctr: Result<Samples, String>,
    /// Wall time of `runc run`, measured around the process.
    pub runc: Result<Samples, String>,
    /// keel lifecycles run, warm-up rounds included.
    pub keel_runs: usize,
    /// keel lifecycles that failed, warm-up rounds included.
    pub keel_failures: usize,
}

/// The time of each of [`STEPS`] over the recorded rounds of one client.
pub type StepSamples = [Samples; STEPS.len()];

/// Adds one lifecycle's step times.
fn push_steps(samples: &mut StepSamples, times: &StepTimes) {
    for (step, time) in samples.iter_mut().zip(times) {
        step.push_value(*time);
    }
}

#[derive(Clone, Copy, Debug)]
enum Contender {
    Keel,
    Raw,
    Go,
    Ctr,
    Runc,
}

impl Contender {
    /// Returns the name that `--lifecycle-clients` uses for this contender.
    fn name(self) -> &'static str {
        match self {
            Self::Keel => "keel",
            Self::Raw => "bare",
            Self::Go => "go",
            Self::Ctr => "ctr",
            Self::Runc => "runc",
        }
    }
}

const CONTENDERS: [Contender; 5] = [
    Contender::Keel,
    Contender::Raw,
    Contender::Go,
    Contender::Ctr,
    Contender::Runc,
];

/// Runs `warmup` unrecorded rounds and then `rounds` recorded ones. Each round runs every
/// contender named in `clients` (all when empty) once, in an order shuffled for each round.
///
/// A fixed rotation would make each contender follow the same one every round. A lifecycle
/// can leave work behind in the kernel, such as tearing down the container's network namespace
/// and cgroups, and that work can slow whoever runs next, so a fixed order could charge it to
/// one contender.
pub async fn run(
    env: &Env,
    warmup: usize,
    rounds: usize,
    clients: &[String],
) -> anyhow::Result<LifecycleResults> {
    let client = env.connect_keel().await?;
    let raw_namespace = env.containerd.new_namespace();
    let services = Services::new(
        env.containerd.socket(),
        Namespace::new(raw_namespace)?,
        std::time::Duration::from_secs(10),
    )?;
    let raw_spec = spec(&env.rootfs, &["/bin/true"]);
    let ctr_namespace = env.containerd.new_namespace();
    let runc = RuncBundle::create(&env.work_dir, &env.rootfs);
    let selected = |contender: Contender| {
        clients.is_empty() || clients.iter().any(|name| name == contender.name())
    };
    let mut go = match &env.go {
        Ok(_) if !selected(Contender::Go) => {
            Err("not measured: left out by --lifecycle-clients".to_owned())
        }
        Ok(go) => {
            let namespace = env.containerd.new_namespace();
            go.lifecycles(&namespace, warmup + rounds)
                .map_err(|error| format!("{error:#}"))
        }
        Err(reason) => Err(reason.clone()),
    };

    let mut results = LifecycleResults {
        rounds,
        keel: Samples::default(),
        keel_cpu: Samples::default(),
        raw: Samples::default(),
        raw_cpu: Samples::default(),
        own_cpu: Samples::default(),
        go: go
            .as_ref()
            .map(|_| Samples::default())
            .map_err(Clone::clone),
        steps: Default::default(),
        ctr: Ok(Samples::default()),
        runc: runc
            .as_ref()
            .map(|_| Samples::default())
            .map_err(|error| format!("not measured: {error:#}")),
        keel_runs: 0,
        keel_failures: 0,
    };
    let mut rng = order_rng();
    for round in 0..warmup + rounds {
        let record = round >= warmup;
        let mut keel_cpu = None;
        let mut raw_cpu = None;
        let mut order = CONTENDERS;
        rng.shuffle(&mut order);
        for contender in order {
            if !selected(contender) {
                continue;
            }
            let id = format!("seq-{round}");
            match contender {
                Contender::Keel => {
                    let cpu_before = cpu_time_ms()?;
                    let (result, elapsed) = timed(keel_lifecycle(&client, &id, &env.rootfs)).await;
                    let cpu = cpu_time_ms()? - cpu_before;
                    results.keel_runs += 1;
                    match result {
                        Err(error) => {
                            tracing::warn!(error = %format!("{error:#}"), "keel lifecycle failed");
                            results.keel_failures += 1;
                        }
                        Ok(steps) if record => {
                            results.keel.push(elapsed);
                            results.keel_cpu.push_value(cpu);
                            push_steps(&mut results.steps[0], &steps);
                            keel_cpu = Some(cpu);
                        }
                        Ok(_) => {}
                    }
                }
                Contender::Raw => {
                    let cpu_before = cpu_time_ms()?;
                    let (result, elapsed) =
                        timed(raw_lifecycle(&services, &id, raw_spec.clone())).await;
                    let cpu = cpu_time_ms()? - cpu_before;
                    let steps = result.context("bare gRPC lifecycle failed")?;
                    if record {
                        results.raw.push(elapsed);
                        results.raw_cpu.push_value(cpu);
                        push_steps(&mut results.steps[1], &steps);
                        raw_cpu = Some(cpu);
                    }
                }
                Contender::Go => {
                    let Ok(lifecycles) = go.as_mut() else {
                        continue;
                    };
                    let outcome = lifecycles.run_one().await;
                    if record && let Ok(Some(steps)) = outcome.as_ref().map(|run| run.steps) {
                        push_steps(&mut results.steps[2], &steps);
                    }
                    record_outcome(&mut results.go, outcome.map(|run| run.ms), record);
                }
                Contender::Ctr => {
                    let outcome = run_ctr(env, &ctr_namespace, &id).await;
                    record_outcome(&mut results.ctr, outcome, record);
                }
                Contender::Runc => {
                    let Ok(bundle) = runc.as_ref() else {
                        continue;
                    };
                    let outcome = bundle.run(&id).await;
                    record_outcome(&mut results.runc, outcome, record);
                }
            }
        }
        if let (Some(keel), Some(raw)) = (keel_cpu, raw_cpu) {
            results.own_cpu.push_value(keel - raw);
        }
    }
    if let Ok(go) = go
        && let Err(error) = go.finish().await
    {
        results.go = Err(format!("failed: {error:#}"));
    }
    client.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(results)
}

/// Adds a measurement, or turns the column into the failure's message.
fn record_outcome(
    column: &mut Result<Samples, String>,
    outcome: anyhow::Result<f64>,
    record: bool,
) {
    let Ok(samples) = column.as_mut() else {
        return;
    };
    match outcome {
        Ok(ms) if record => samples.push_value(ms),
        Ok(_) => {}
        Err(error) => *column = Err(format!("failed: {error:#}")),
    }
}

async fn run_ctr(env: &Env, namespace: &str, id: &str) -> anyhow::Result<f64> {
    let mut command = tokio::process::Command::new("ctr");
    command
        .arg("--address")
        .arg(env.containerd.socket())
        .args(["--namespace", namespace, "run", "--rm", "--rootfs"])
        .arg(&env.rootfs)
        .args([id, "/bin/true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let output = command.output().await.context("cannot run ctr")?;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        output.status.success(),
        "ctr run failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(elapsed.as_secs_f64() * 1e3)
}

/// An OCI bundle for `runc run`, made with `runc spec` and pointed at the busybox root.
pub struct RuncBundle {
    bundle: PathBuf,
    state_root: PathBuf,
}

impl RuncBundle {
    /// Makes the bundle and runc's state folder inside `work_dir`.
    pub fn create(work_dir: &Path, rootfs: &Path) -> anyhow::Result<Self> {
        let bundle = work_dir.join("runc-bundle");
        let state_root = work_dir.join("runc-root");
        std::fs::create_dir_all(&bundle)?;
        std::fs::create_dir_all(&state_root)?;
        let status = std::process::Command::new("runc")
            .arg("spec")
            .current_dir(&bundle)
            .status()
            .context("cannot run `runc spec`")?;
        anyhow::ensure!(status.success(), "`runc spec` failed with {status}");
        let config_path = bundle.join("config.json");
        let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path)?)?;
        config["root"]["path"] = serde_json::json!(rootfs);
        config["root"]["readonly"] = serde_json::json!(true);
        config["process"]["terminal"] = serde_json::json!(false);
        config["process"]["args"] = serde_json::json!(["/bin/true"]);
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        Ok(Self { bundle, state_root })
    }

    /// Runs the bundle as container `id` until it exits; runc deletes it afterwards.
    pub async fn run(&self, id: &str) -> anyhow::Result<f64> {
        let mut command = tokio::process::Command::new("runc");
        command
            .arg("--root")
            .arg(&self.state_root)
            .args(["run", "--bundle"])
            .arg(&self.bundle)
            .arg(format!("bench-{id}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let output = command.output().await.context("cannot run runc")?;
        let elapsed = started.elapsed();
        anyhow::ensure!(
            output.status.success(),
            "runc run failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(elapsed.as_secs_f64() * 1e3)
    }
}
