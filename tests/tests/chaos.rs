//! Container lifecycles while containerd is killed and restarted at random moments.
//!
//! Four workers run lifecycles (create, start a process that exits with a known code, wait,
//! delete the task and the container) while the test kills containerd with SIGKILL and
//! restarts it at moments drawn from a seeded generator. A lifecycle retries a step whose call
//! failed because containerd was down. The outcome of a failed create or start is unknown, so
//! the lifecycle then force-deletes the container and starts over with the same id.
//!
//! Checks: every process whose start succeeded reports exactly one exit with its true code
//! (with containerd 1.7, a process that exited while containerd was down reports a synthetic
//! exit instead, see `keel_testkit::loses_exits_across_restart`), every call returns within
//! its deadline, and at the end no shim, FIFO or bundle folder is left. `KEEL_CHAOS_SEED` replays a run (the seed is printed first), and
//! `KEEL_CHAOS_LIFECYCLES` sets the number of lifecycles (40 by default; `cargo xtask chaos`
//! runs 1000).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keel::spec::SpecBuilder;
use keel::{
    Client, ClientOptions, ConnectionState, Container, Error, ErrorKind, Event, ProcessId,
    StdioRequest, SyntheticReason, Task,
};
use keel_testkit::{
    PrivateContainerd, fifo_count, is_stale_task_bundle, loses_exits_across_restart,
};
use keel_tests::Recorder;

/// The environment variable with the seed of the fault schedule and the lifecycles.
const SEED_ENV: &str = "KEEL_CHAOS_SEED";

/// The environment variable with the number of lifecycles.
const LIFECYCLES_ENV: &str = "KEEL_CHAOS_LIFECYCLES";

/// How many lifecycles run at once.
const CONCURRENCY: usize = 4;

/// The deadline of one request to containerd in this test.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// How much longer than its deadline a call may take before the test counts it as late: the
/// scheduling delay of a loaded two-core machine.
const DEADLINE_SLACK: Duration = Duration::from_secs(1);

/// The bound of one lifecycle, retries included.
const LIFECYCLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The bound of `force_delete` after a failed create or start.
const FORCE_DELETE_TIMEOUT: Duration = Duration::from_secs(10);

/// SplitMix64: a small generator whose sequence depends only on the seed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut value = self.0;
        value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        value ^ (value >> 31)
    }

    /// Returns a value in `low..high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low).max(1)
    }
}

/// What one lifecycle runs: its container id, its process's exit code and run time.
#[derive(Clone, Debug)]
struct Plan {
    id: String,
    code: u32,
    run_millis: u64,
}

/// A process whose start succeeded, and the exit status `Task::wait` returned for it.
#[derive(Clone, Debug)]
struct Started {
    id: String,
    pid: u32,
    expected_code: u32,
    waited_code: u32,
}

/// What the workers collect.
#[derive(Default)]
struct Outcome {
    started: Vec<Started>,
    late_calls: Vec<String>,
    /// Container ids whose task containerd refused for a stale task bundle.
    stale_bundles: Vec<String>,
}

/// Why a start failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StartFailure {
    /// containerd was down or frozen; the task may or may not exist.
    Outage,
    /// containerd refused the task because of a stale task bundle (see
    /// [`is_stale_task_bundle`]); no task with this container id can be created any more.
    StaleBundle,
}

/// The calls of one worker, each timed against its deadline.
struct Worker {
    client: Client,
    rootfs: PathBuf,
    outcome: Arc<Mutex<Outcome>>,
}

impl Worker {
    /// Runs `call` and notes it as late when it takes longer than `deadline` plus the slack.
    async fn timed<T>(&self, what: &str, deadline: Duration, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let result = call.await;
        let elapsed = started.elapsed();
        if elapsed > deadline + DEADLINE_SLACK
            && let Ok(mut outcome) = self.outcome.lock()
        {
            outcome
                .late_calls
                .push(format!("{what} took {elapsed:?}, deadline {deadline:?}"));
        }
        result
    }

    /// Waits until the client is connected, at most 30 seconds.
    async fn wait_connected(&self) {
        let mut state = self.client.connection_state_changes();
        let connected = tokio::time::timeout(
            Duration::from_secs(30),
            state.wait_for(ConnectionState::is_connected),
        )
        .await;
        assert!(connected.is_ok(), "not connected within 30 s");
    }

    async fn run(&self, plan: &Plan) {
        let mut plan = plan.clone();
        for attempt in 1.. {
            let container = self.create_container(&plan).await;
            let failure = match self.start_task(&plan, &container).await {
                Ok(task) => {
                    self.finish(&plan, &container, task).await;
                    return;
                }
                Err(failure) => failure,
            };
            self.force_delete(&plan, &container).await;
            if failure == StartFailure::StaleBundle {
                if let Ok(mut outcome) = self.outcome.lock() {
                    outcome.stale_bundles.push(plan.id.clone());
                }
                plan.id = format!("{}-{attempt}", plan.id);
            }
        }
    }

    /// Creates the container, loading it when an earlier attempt created it after all.
    async fn create_container(&self, plan: &Plan) -> Container {
        loop {
            let script = format!("usleep {}; exit {}", plan.run_millis * 1000, plan.code);
            let spec = SpecBuilder::new(&self.rootfs)
                .args(["sh", "-c", script.as_str()])
                .build();
            let create = self.client.create_container(&plan.id, spec);
            let error = match self.timed("create", CALL_TIMEOUT * 3, create).await {
                Ok(container) => return container,
                Err(error) => error,
            };
            match error.kind() {
                ErrorKind::AlreadyExists => {
                    let load = self.client.load_container(&plan.id);
                    match self.timed("load", CALL_TIMEOUT * 3, load).await {
                        Ok(container) => return container,
                        Err(error) => self.expect_outage(plan, "load", &error).await,
                    }
                }
                _ => self.expect_outage(plan, "create", &error).await,
            }
        }
    }

    /// Creates and starts the task; on failure the caller cleans up and starts over.
    async fn start_task(&self, plan: &Plan, container: &Container) -> Result<Task, StartFailure> {
        let start = container.start_task(StdioRequest::default());
        let error = match self.timed("start", CALL_TIMEOUT * 5, start).await {
            Ok(task) => return Ok(task),
            Err(error) => error,
        };
        if is_stale_task_bundle(&error) {
            tracing::warn!(id = %plan.id, %error, "containerd kept a stale task bundle");
            return Err(StartFailure::StaleBundle);
        }
        self.expect_outage(plan, "start", &error).await;
        Err(StartFailure::Outage)
    }

    /// Force-deletes the container after a failed call, retrying while containerd is down.
    async fn force_delete(&self, plan: &Plan, container: &Container) {
        loop {
            let force_delete = container.force_delete(FORCE_DELETE_TIMEOUT);
            let deadline = FORCE_DELETE_TIMEOUT + CALL_TIMEOUT * 3;
            match self.timed("force delete", deadline, force_delete).await {
                Ok(()) => return,
                Err(error) if error.kind() == ErrorKind::NotFound => return,
                Err(error) => self.expect_outage(plan, "force delete", &error).await,
            }
        }
    }

    /// Waits for the exit, then deletes the task and the container.
    async fn finish(&self, plan: &Plan, container: &Container, task: Task) {
        let pid = task.pid();
        let status = tokio::time::timeout(LIFECYCLE_TIMEOUT, task.wait())
            .await
            .unwrap_or_else(|_| panic!("{}: wait hung", plan.id))
            .unwrap_or_else(|error| panic!("{}: wait: {error}", plan.id));
        if let Ok(mut outcome) = self.outcome.lock() {
            outcome.started.push(Started {
                id: plan.id.clone(),
                pid,
                expected_code: plan.code,
                waited_code: status.code,
            });
        }
        self.delete_task(plan, container, task).await;
        self.delete_container(plan, container).await;
    }

    async fn delete_task(&self, plan: &Plan, container: &Container, task: Task) {
        let mut task = Some(task);
        loop {
            let handle = match task.take() {
                Some(task) => task,
                None => match self.timed("task", CALL_TIMEOUT, container.task()).await {
                    Ok(task) => task,
                    Err(error) if error.kind() == ErrorKind::NotFound => return,
                    Err(error) => {
                        self.expect_outage(plan, "task", &error).await;
                        continue;
                    }
                },
            };
            match self
                .timed("delete task", CALL_TIMEOUT * 2, handle.delete())
                .await
            {
                Ok(_) => return,
                Err(error) if error.kind() == ErrorKind::NotFound => return,
                Err(error) => self.expect_outage(plan, "delete task", &error).await,
            }
        }
    }

    async fn delete_container(&self, plan: &Plan, container: &Container) {
        loop {
            match self
                .timed("delete", CALL_TIMEOUT * 4, container.delete())
                .await
            {
                Ok(()) => return,
                Err(error) if error.kind() == ErrorKind::NotFound => return,
                Err(error) if error.kind() == ErrorKind::FailedPrecondition => {
                    self.force_delete(plan, container).await;
                    return;
                }
                Err(error) => self.expect_outage(plan, "delete", &error).await,
            }
        }
    }

    /// Checks that a call failed only because containerd was down or frozen, then waits for
    /// the connection.
    async fn expect_outage(&self, plan: &Plan, what: &str, error: &Error) {
        assert!(
            matches!(error.kind(), ErrorKind::Unavailable | ErrorKind::TimedOut),
            "{}: {what} failed with {error:?}",
            plan.id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.wait_connected().await;
    }
}

/// Lists the entries of `folder` and of each subfolder, as `name: [entries]`; a missing
/// folder lists nothing.
fn folder_listing(folder: &std::path::Path) -> Vec<String> {
    let names = |folder: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(folder)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    names(folder)
        .into_iter()
        .map(|name| format!("{name}: {:?}", names(&folder.join(&name))))
        .collect()
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

fn plans(random: &mut Random, count: usize) -> Vec<Plan> {
    (0..count)
        .map(|index| Plan {
            id: format!("life-{index}"),
            code: random.between(0, 126) as u32,
            run_millis: random.between(0, 800),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycles_survive_containerd_kills() {
    keel_tests::init_tracing();
    let seed = env_number(SEED_ENV).unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64)
    });
    let lifecycles = env_number(LIFECYCLES_ENV).unwrap_or(40) as usize;
    eprintln!("chaos: {SEED_ENV}={seed} {LIFECYCLES_ENV}={lifecycles}");
    let mut random = Random(seed);
    let plans = Arc::new(plans(&mut random, lifecycles));

    let mut containerd = PrivateContainerd::start().await.expect("start containerd");
    let namespace = containerd.new_namespace();
    let state_dir = containerd.client_state_dir();
    let rootfs = containerd.busybox_rootfs().expect("busybox rootfs");
    let recorder = Recorder::default();
    let mut options =
        ClientOptions::new(containerd.socket(), namespace.as_str()).state_dir(&state_dir);
    options.call_timeout = CALL_TIMEOUT;
    let client = Client::connect_with(options, recorder.clone())
        .await
        .expect("connect");

    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let worker = Worker {
            client: client.clone(),
            rootfs: rootfs.clone(),
            outcome: Arc::clone(&outcome),
        };
        let plans = Arc::clone(&plans);
        let next = Arc::clone(&next);
        workers.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(plan) = plans.get(index) else {
                    return;
                };
                let run = worker.run(plan);
                if tokio::time::timeout(LIFECYCLE_TIMEOUT, run).await.is_err() {
                    panic!("{}: lifecycle hung", plan.id);
                }
            }
        }));
    }

    let mut kills = 0;
    while !workers.iter().all(|worker| worker.is_finished()) {
        tokio::time::sleep(Duration::from_millis(random.between(300, 3000))).await;
        if workers.iter().all(|worker| worker.is_finished()) {
            break;
        }
        containerd.kill().expect("kill containerd");
        kills += 1;
        tokio::time::sleep(Duration::from_millis(random.between(0, 1500))).await;
        containerd.restart().await.expect("restart containerd");
    }
    for worker in workers {
        worker.await.expect("worker panicked");
    }
    eprintln!("chaos: {kills} kills during {lifecycles} lifecycles");

    tokio::time::sleep(Duration::from_millis(500)).await;
    let outcome = std::mem::take(&mut *outcome.lock().expect("outcome lock"));
    assert!(
        outcome.late_calls.is_empty(),
        "seed {seed}: calls past their deadline: {:?}",
        outcome.late_calls
    );
    assert_eq!(outcome.started.len(), lifecycles, "seed {seed}");
    let mut exits: HashMap<(String, u32), Vec<Event>> = HashMap::new();
    for started in &outcome.started {
        let events = recorder.exits_of(&started.id, &ProcessId::Init);
        let of_pid = events
            .into_iter()
            .filter(|event| matches!(event, Event::Exited { pid, .. } if *pid == started.pid))
            .collect();
        exits.insert((started.id.clone(), started.pid), of_pid);
    }
    let version = client.version().await.expect("containerd version").version;
    let lost = loses_exits_across_restart(&version);
    let mut synthetic_exits = 0;
    for started in &outcome.started {
        let label = format!("seed {seed}: {} pid {}", started.id, started.pid);
        let of_pid = &exits[&(started.id.clone(), started.pid)];
        assert_eq!(of_pid.len(), 1, "{label}: {of_pid:?}");
        let Some(Event::Exited {
            status, synthetic, ..
        }) = of_pid.first()
        else {
            panic!("{label}: no exit");
        };
        assert_eq!(started.waited_code, status.code, "{label}: wait");
        // containerd 1.7 deletes a task whose process exited while containerd was down, so
        // keel can only report a synthetic exit for it.
        if lost && synthetic.is_some() {
            assert_eq!(*synthetic, Some(SyntheticReason::TaskVanished), "{label}");
            assert_eq!(status.code, SyntheticReason::EXIT_CODE, "{label}");
            synthetic_exits += 1;
            continue;
        }
        assert_eq!(status.code, started.expected_code, "{label}");
        assert_eq!(*synthetic, None, "{label}");
    }
    eprintln!("chaos: containerd {version}: {synthetic_exits} synthetic exits");

    let deadline = Instant::now() + Duration::from_secs(5);
    while !containerd.shim_pids().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        containerd.shim_pids(),
        Vec::<u32>::new(),
        "seed {seed}: shims left"
    );
    assert_eq!(
        fifo_count(&state_dir).expect("count FIFOs"),
        0,
        "seed {seed}: FIFOs left"
    );
    let bundles = folder_listing(&state_dir.join(&namespace));
    assert!(
        bundles.is_empty(),
        "seed {seed}: bundle folders left: {bundles:?}"
    );
    // A stale bundle stays with containerd 1.6.20 and is removed by containerd 1.7 later.
    let stale_bundles = &outcome.stale_bundles;
    let task_bundles = containerd.task_bundle_ids(&namespace);
    assert!(
        task_bundles.iter().all(|id| stale_bundles.contains(id)),
        "seed {seed}: containerd task bundles left: {task_bundles:?}, stale: {stale_bundles:?}"
    );
    if !stale_bundles.is_empty() {
        eprintln!("chaos: containerd kept stale task bundles of {stale_bundles:?}");
    }
    assert_eq!(client.tracked_containers(), 0, "seed {seed}");

    client.shutdown(Duration::from_secs(5)).await;
    containerd.stop().await;
}
