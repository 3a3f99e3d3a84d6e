//! `keel-bench`: measures keel against containerd's Go client, `ctr` and `runc` on a private
//! containerd, and writes the report kept in `docs/benchmarks.md`.
//!
//! Started by `cargo xtask bench`, which installs the Go toolchain and containerd's Go sources
//! first. Nothing here fails because the machine is slow: a missed target is printed as
//! "missed" in the report, and only a broken lifecycle or tool makes the run fail.

mod events;
mod exec;
mod go;
mod inprocess;
mod lifecycle;
mod machine;
mod reconnect;
mod recorder;
mod report;
mod stats;
mod stdio;
mod throughput;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use keel::{Client, ClientOptions};
use keel_testkit::PrivateContainerd;

use crate::go::GoClient;
use crate::recorder::{Recorder, SharedRecorder};
use crate::report::Report;

/// Benchmarks keel against containerd's Go client, ctr and runc on a private containerd.
#[derive(Debug, Parser)]
#[command(name = "keel-bench")]
struct Cli {
    /// Runs every benchmark with fewer repetitions and at most 250 running containers.
    #[arg(long, conflicts_with = "smoke")]
    quick: bool,
    /// Runs every benchmark once at a tiny size, to check that the benchmark itself works.
    #[arg(long)]
    smoke: bool,
    /// Skips the Go client, even when Go and containerd's Go sources are installed.
    #[arg(long)]
    no_go: bool,
    /// The file to write the Markdown report to; the report goes to stdout when not set.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Runs only these sections (comma-separated): tracked, pipeline, lifecycle, throughput,
    /// exec, fleet, stdio, reconnect. Runs all when not set.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Measures the memory of this many tracked containers, prints the result as JSON and
    /// exits. The full run starts a copy of itself with this flag to measure in a fresh process.
    #[arg(long, hide = true)]
    probe_tracked_memory: Option<usize>,
    /// Runs the clients on tokio's current-thread runtime instead of the multi-thread one.
    #[arg(long)]
    current_thread: bool,
    /// Runs only these clients in the lifecycle section (comma-separated): keel, bare, go,
    /// ctr, runc. Runs all when not set. For profiling one client, for example under callgrind.
    #[arg(long, value_delimiter = ',', value_parser = ["keel", "bare", "go", "ctr", "runc"])]
    lifecycle_clients: Vec<String>,
    /// Overrides the number of recorded lifecycle rounds.
    #[arg(long)]
    lifecycle_rounds: Option<usize>,
    /// Overrides the numbers of running containers the fleet section grows through
    /// (comma-separated, increasing).
    #[arg(long, value_delimiter = ',')]
    fleet_sizes: Vec<usize>,
    /// Overrides the number of pause and resume pairs per event run.
    #[arg(long)]
    event_pairs: Option<usize>,
    /// Overrides the sizes of the stdio section, in MiB (comma-separated).
    #[arg(long, value_delimiter = ',')]
    stdio_mib: Vec<u64>,
    /// Overrides the number of runs per size in the stdio section.
    #[arg(long)]
    stdio_repetitions: Option<usize>,
}

/// How much of each benchmark to run.
#[derive(Clone, Debug)]
pub struct Sizes {
    mode: &'static str,
    lifecycle_warmup: usize,
    lifecycle_rounds: usize,
    throughput_levels: Vec<usize>,
    throughput_count: usize,
    exec_warmup: usize,
    exec_count: usize,
    event_sizes: Vec<usize>,
    event_pairs: usize,
    pipeline_containers: usize,
    pipeline_events: u64,
    stdio_sizes: Vec<u64>,
    stdio_repetitions: usize,
    reconnect_containers: usize,
    reconnect_repetitions: usize,
    tracked_containers: usize,
}

const MIB: u64 = 1024 * 1024;

impl Sizes {
    fn full() -> Self {
        Self {
            mode: "full",
            lifecycle_warmup: 5,
            lifecycle_rounds: 400,
            throughput_levels: vec![1, 2, 10, 50],
            throughput_count: 600,
            exec_warmup: 5,
            exec_count: 100,
            event_sizes: vec![1, 100, 1000],
            event_pairs: 1000,
            pipeline_containers: 1000,
            pipeline_events: 1_000_000,
            stdio_sizes: vec![64 * MIB, 512 * MIB],
            stdio_repetitions: 11,
            reconnect_containers: 100,
            reconnect_repetitions: 3,
            tracked_containers: 10_000,
        }
    }

    fn quick() -> Self {
        Self {
            mode: "quick",
            lifecycle_warmup: 3,
            lifecycle_rounds: 30,
            throughput_count: 50,
            exec_count: 30,
            event_sizes: vec![1, 100, 250],
            event_pairs: 200,
            pipeline_events: 200_000,
            stdio_sizes: vec![64 * MIB],
            stdio_repetitions: 2,
            reconnect_repetitions: 1,
            ..Self::full()
        }
    }

    fn smoke() -> Self {
        Self {
            mode: "smoke",
            lifecycle_warmup: 0,
            lifecycle_rounds: 1,
            throughput_levels: vec![1, 2],
            throughput_count: 2,
            exec_warmup: 0,
            exec_count: 1,
            event_sizes: vec![1, 2],
            event_pairs: 2,
            pipeline_containers: 10,
            pipeline_events: 1_000,
            stdio_sizes: vec![MIB],
            stdio_repetitions: 1,
            reconnect_containers: 2,
            reconnect_repetitions: 1,
            tracked_containers: 100,
        }
    }
}

/// The private containerd, folders and Go client that every benchmark uses.
pub struct Env {
    /// The private containerd.
    pub containerd: PrivateContainerd,
    /// The busybox root folder every container runs in.
    pub rootfs: PathBuf,
    /// A folder for the benchmark's own files, inside the containerd's folder.
    pub work_dir: PathBuf,
    /// The Go client, or why it is not available.
    pub go: Result<GoClient, String>,
}

impl Env {
    /// Connects a keel client in a new namespace, with a backend that only counts.
    pub async fn connect_keel(&self) -> anyhow::Result<Client> {
        let (client, _) = self
            .connect_keel_recording(Arc::new(Recorder::default()))
            .await?;
        Ok(client)
    }

    /// Connects a keel client in a new namespace whose backend is `recorder`; returns the
    /// client and its namespace.
    pub async fn connect_keel_recording(
        &self,
        recorder: Arc<Recorder>,
    ) -> anyhow::Result<(Client, String)> {
        let namespace = self.containerd.new_namespace();
        let options = ClientOptions::new(self.containerd.socket(), namespace.as_str())
            .state_dir(self.containerd.client_state_dir());
        let client = Client::connect_with(options, SharedRecorder(recorder)).await?;
        Ok((client, namespace))
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = if cli.current_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Runtime::new()?
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(containers) = cli.probe_tracked_memory {
        let tracked = inprocess::tracked_memory(containers).await?;
        println!("{}", serde_json::to_string(&tracked)?);
        return Ok(());
    }
    let mut sizes = if cli.smoke {
        Sizes::smoke()
    } else if cli.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    if let Some(rounds) = cli.lifecycle_rounds {
        sizes.lifecycle_rounds = rounds;
    }
    if !cli.fleet_sizes.is_empty() {
        sizes.event_sizes = cli.fleet_sizes.clone();
    }
    if let Some(pairs) = cli.event_pairs {
        sizes.event_pairs = pairs;
    }
    if !cli.stdio_mib.is_empty() {
        sizes.stdio_sizes = cli.stdio_mib.iter().map(|mib| mib * MIB).collect();
    }
    if let Some(repetitions) = cli.stdio_repetitions {
        sizes.stdio_repetitions = repetitions;
    }
    let containerd = PrivateContainerd::start()
        .await
        .context("cannot start a private containerd")?;
    let rootfs = containerd.busybox_rootfs()?;
    let work_dir = containerd.dir().join("bench");
    std::fs::create_dir_all(&work_dir)?;
    let go = if cli.no_go {
        Err("not measured: the run was started with --no-go".to_owned())
    } else {
        go::build(&work_dir)
            .map(|binary| GoClient::new(binary, containerd.socket(), &rootfs))
            .map_err(|error| format!("not measured: {error:#}"))
    };
    if let Err(reason) = &go {
        eprintln!("Go client: {reason}");
    }
    let mut env = Env {
        containerd,
        rootfs,
        work_dir,
        go,
    };

    let started = Instant::now();
    let result = run_all(&mut env, &sizes, &cli.only, &cli.lifecycle_clients).await;
    if result.is_err() {
        eprintln!(
            "containerd's log ({}) ends with:\n{}",
            env.containerd.log_path().display(),
            env.containerd.log_tail()
        );
    }
    env.containerd.stop().await;
    let mut report = result?;
    report.duration = started.elapsed();
    report.current_thread = cli.current_thread;

    let markdown = report.render();
    match &cli.output {
        Some(path) => {
            std::fs::write(path, &markdown)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("report written to {}", path.display());
        }
        None => print!("{markdown}"),
    }
    Ok(())
}

async fn run_all(
    env: &mut Env,
    sizes: &Sizes,
    only: &[String],
    lifecycle_clients: &[String],
) -> anyhow::Result<Report> {
    let mut report = Report::new(sizes.clone());
    let state_dir = env.work_dir.join("synthetic-state");
    let selected = |section: &str| {
        let run = only.is_empty() || only.iter().any(|name| name == section);
        if run {
            eprintln!("== {section}");
        }
        run
    };

    // First, while the process has allocated little, because the allocator keeps what later
    // sections free, and reusing it would hide the growth.
    if selected("fleet") {
        fleet(env, sizes, &mut report).await?;
    }
    if selected("tracked") {
        report.tracked = Some(inprocess::tracked_memory_in_child(sizes.tracked_containers).await?);
    }
    if selected("pipeline") {
        let pipeline = inprocess::run_pipeline(
            env.containerd.socket(),
            &state_dir,
            sizes.pipeline_containers,
            sizes.pipeline_events,
        )?;
        report.pipeline = Some(pipeline);
    }
    if selected("lifecycle") {
        let lifecycle = lifecycle::run(
            env,
            sizes.lifecycle_warmup,
            sizes.lifecycle_rounds,
            lifecycle_clients,
        )
        .await?;
        report.lifecycle = Some(lifecycle);
    }
    if selected("throughput") {
        report.throughput =
            throughput::run(env, &sizes.throughput_levels, sizes.throughput_count).await?;
    }
    if selected("exec") {
        report.exec = Ok(exec::run(env, sizes.exec_warmup, sizes.exec_count).await?);
    }
    if selected("stdio") {
        report.stdio = stdio::run(env, &sizes.stdio_sizes, sizes.stdio_repetitions).await?;
    }
    // Last, because it restarts containerd.
    if selected("reconnect") {
        let reconnect =
            reconnect::run(env, sizes.reconnect_containers, sizes.reconnect_repetitions).await?;
        report.reconnect = Some(reconnect);
    }
    Ok(report)
}

/// Grows a set of running containers through the event sizes, measuring the client's memory
/// and the event pipeline at each size.
async fn fleet(env: &Env, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let recorder = Arc::new(Recorder::default());
    let (client, namespace) = env.connect_keel_recording(Arc::clone(&recorder)).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    report.running_memory.push((0, machine::resident_kib()?));

    let mut sleepers = Vec::new();
    for &size in &sizes.event_sizes {
        let started = sleepers.len();
        let more =
            workload::start_sleepers(&client, &env.rootfs, "fleet", started, size - started, 2)
                .await?;
        sleepers.extend(more);
        tokio::time::sleep(Duration::from_millis(200)).await;
        report
            .running_memory
            .push((sleepers.len(), machine::resident_kib()?));

        let ids: Vec<String> = sleepers
            .iter()
            .map(|sleeper| sleeper.container.id().to_string())
            .collect();
        let workers = if ids.len() >= 4 { 2 } else { 1 };
        for source in [events::Source::PauseResume, events::Source::Published] {
            let row = events::run(
                env,
                &namespace,
                &recorder,
                &ids,
                sizes.event_pairs,
                workers,
                source,
            )
            .await?;
            report.events.push(row);
        }
    }
    workload::stop_sleepers(sleepers, 4).await?;
    client.shutdown(Duration::from_secs(10)).await;
    Ok(())
}
