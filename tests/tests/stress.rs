//! Stress and race tests of the task and exec API on a real containerd.
//!
//! They cover an exec racing its container's exit, concurrent execs in one container, the order
//! of lifecycle events over many containers, and out-of-memory kills. The leak test counts
//! FIFOs, bundle folders, file descriptors and shims before and after many cycles.
//!
//! Every test takes [`SERIAL`] for its whole run, so the tests of this file run one at a time. The
//! leak test counts the file descriptors of the whole test process, and the 5 s bound of the
//! exec race should not depend on the CPU load of other tests. Inside a test, rounds run with
//! bounded concurrency.

#![allow(
    clippy::expect_used,
    reason = "the helpers of these tests fail the test on any error, as the tests do"
)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keel::spec::{SpecBuilder, exec_process};
use keel::{
    Client, Error, ErrorKind, Event, ExecId, ExitStatus, OutputStream, ProcessId, StdioRequest,
    Task,
};
use keel_testkit::is_process_alive;
use keel_tests::{
    Harness, INPUT_OUTPUT, OUTPUT, Recorder, SIGKILL, count_init_exits, create_and_start,
    delete_task_and_container, read_all, wait_within,
};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

/// The lock every test of this file takes for its whole run.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// The exit code of a process killed with SIGKILL.
const KILLED: u32 = 128 + SIGKILL;

/// How long a test waits for late duplicate events before it counts events.
const SETTLE: Duration = Duration::from_millis(500);

/// The bound on one exec in the race test: create, start, output and wait.
const EXEC_BOUND: Duration = Duration::from_secs(5);

/// A generous bound on one step that should take milliseconds, so a hang fails the test.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the leak test polls for its counts to settle, before and after the cycles.
const LEAK_SETTLE: Duration = Duration::from_secs(10);

/// What a round needs from the harness, cheap to clone into spawned tasks.
#[derive(Clone)]
struct Shared {
    client: Client,
    recorder: Recorder,
    rootfs: PathBuf,
}

impl Shared {
    fn of(harness: &Harness) -> Self {
        Self {
            client: harness.client.clone(),
            recorder: harness.recorder.clone(),
            rootfs: harness.rootfs.clone(),
        }
    }

    fn spec(&self, args: &[&str]) -> oci_spec::runtime::Spec {
        SpecBuilder::new(&self.rootfs)
            .args(args.iter().copied())
            .build()
    }
}

/// Runs `round(0..rounds)` on `concurrency` workers and returns the results in round order.
/// A panic in a round fails the caller with that panic.
async fn run_rounds<T, F, Fut>(rounds: usize, concurrency: usize, round: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let round = Arc::new(round);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let round = Arc::clone(&round);
        let next = Arc::clone(&next);
        workers.spawn(async move {
            let mut results = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= rounds {
                    return results;
                }
                results.push((index, round(index).await));
            }
        });
    }
    let mut results = Vec::with_capacity(rounds);
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(worker_results) => results.extend(worker_results),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => panic!("round worker failed: {error}"),
        }
    }
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

/// How an exec ended.
enum ExecOutcome {
    /// The process ran and exited.
    Exited { status: ExitStatus, stdout: Vec<u8> },
    /// The exec, start or wait request failed.
    Rejected { step: &'static str, error: Error },
}

/// Adds exec `exec_id` running `args` with stdout and stderr, starts it, reads its output and
/// waits for its exit.
async fn run_exec(task: &Task, exec_id: &str, args: &[&str]) -> ExecOutcome {
    let process = exec_process(args.iter().copied());
    let mut process = match task.exec(exec_id, process, OUTPUT).await {
        Ok(process) => process,
        Err(error) => {
            return ExecOutcome::Rejected {
                step: "exec",
                error,
            };
        }
    };
    let stdout = process.take_stdout();
    let stderr = process.take_stderr();
    if let Err(error) = process.start().await {
        let waited = process.wait().await;
        assert!(
            waited
                .as_ref()
                .is_err_and(|error| error.kind() == ErrorKind::NotFound),
            "wait of an exec whose start failed: {waited:?}"
        );
        return ExecOutcome::Rejected {
            step: "start",
            error,
        };
    }
    let (stdout, _) = tokio::join!(read_all(stdout), read_all(stderr));
    match process.wait().await {
        Ok(status) => ExecOutcome::Exited { status, stdout },
        Err(error) => ExecOutcome::Rejected {
            step: "wait",
            error,
        },
    }
}

/// Runs `true` as exec `exec_id` and checks that it exits 0.
async fn run_true(task: &Task, exec_id: &str, container_id: &str) {
    let outcome = tokio::time::timeout(STEP_TIMEOUT, run_exec(task, exec_id, &["true"]))
        .await
        .unwrap_or_else(|_| panic!("{container_id}: exec of true timed out"));
    match outcome {
        ExecOutcome::Exited { status, .. } => {
            assert_eq!(status.code, 0, "{container_id}: exit code of true");
        }
        ExecOutcome::Rejected { step, error } => {
            panic!("{container_id}: {step} of true failed: {error}")
        }
    }
}

/// The rounds of [`exec_racing_container_exit_resolves`].
const RACE_ROUNDS: usize = 200;

/// What one round of the exec race saw.
struct RaceRound {
    container_id: String,
    outcome: ExecOutcome,
}

/// Starts a container whose init process sleeps 30 to 60 ms, then at once runs `echo hi` as an
/// exec, which races the container's exit.
async fn race_round(shared: Shared, round: usize) -> RaceRound {
    let container_id = format!("race-{round}");
    let micros = (30_000 + round * 30_000 / (RACE_ROUNDS - 1)).to_string();
    let spec = shared.spec(&["usleep", &micros]);
    let (container, task) =
        create_and_start(&shared.client, &container_id, spec, StdioRequest::default()).await;

    let outcome = tokio::time::timeout(EXEC_BOUND, run_exec(&task, "echo", &["echo", "hi"]))
        .await
        .unwrap_or_else(|_| panic!("{container_id}: exec did not end within {EXEC_BOUND:?}"));

    let expectation = format!("{container_id}: init exits");
    let init = wait_within(STEP_TIMEOUT, task.wait(), &expectation).await;
    assert_eq!(init.code, 0, "{container_id}: init exit code");
    container
        .force_delete(STEP_TIMEOUT)
        .await
        .expect("force delete");
    RaceRound {
        container_id,
        outcome,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_racing_container_exit_resolves() {
    let _serial = SERIAL.lock().await;
    let harness = Harness::start().await;
    let started = Instant::now();
    let shared = Shared::of(&harness);
    let rounds = run_rounds(RACE_ROUNDS, 4, move |round| {
        race_round(shared.clone(), round)
    })
    .await;
    tokio::time::sleep(SETTLE).await;

    let echo = ProcessId::Exec(ExecId::new("echo").expect("valid exec id"));
    let mut outcomes: Vec<String> = Vec::new();
    for round in &rounds {
        let id = round.container_id.as_str();
        let events = harness.recorder.events_of(id);
        assert_eq!(count_init_exits(&events), 1, "{id}: {events:?}");
        let exec_exits = harness.recorder.exits_of(id, &echo);
        let added = events
            .iter()
            .filter(|event| matches!(event, Event::ExecAdded { .. }))
            .count();
        assert!(added <= 1, "{id}: {events:?}");
        match &round.outcome {
            ExecOutcome::Exited { status, stdout } => {
                if status.code == 0 {
                    assert_eq!(stdout, b"hi\n", "{id}: output of an exec that exited 0");
                }
                assert_eq!(exec_exits.len(), 1, "{id}: {events:?}");
                outcomes.push(format!("exit {}", status.code));
            }
            ExecOutcome::Rejected { step, error } => {
                let expected = [
                    ErrorKind::FailedPrecondition,
                    ErrorKind::NotFound,
                    ErrorKind::ExecutableNotFound,
                ];
                assert!(
                    expected.contains(&error.kind()),
                    "{id}: {step} failed with an unexpected kind: {error:?}"
                );
                assert_eq!(exec_exits.len(), 0, "{id}: {events:?}");
                outcomes.push(format!("{step}: {}", error.kind()));
            }
        }
    }
    outcomes.sort();
    println!(
        "exec race: {} rounds in {:?}; outcomes {:?}",
        rounds.len(),
        started.elapsed(),
        count_each(&outcomes),
    );
    harness.stop().await;
}

/// Counts equal neighbours of a sorted list.
fn count_each(sorted: &[String]) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for item in sorted {
        match counts.last_mut() {
            Some((last, count)) if last == item => *count += 1,
            _ => counts.push((item.clone(), 1)),
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_execs_all_print() {
    const ROUNDS: usize = 50;
    const EXECS: usize = 6;

    let _serial = SERIAL.lock().await;
    let harness = Harness::start().await;
    let started = Instant::now();
    let (container, task) = harness.run_detached("execs", &["sleep", "1000"]).await;
    let task = Arc::new(task);

    for round in 0..ROUNDS {
        let mut execs = JoinSet::new();
        for index in 0..EXECS {
            let task = Arc::clone(&task);
            execs.spawn(async move {
                let exec_id = format!("echo-{index}");
                let run = run_exec(&task, &exec_id, &["echo", "hi"]);
                let outcome = tokio::time::timeout(STEP_TIMEOUT, run).await;
                (exec_id, outcome)
            });
        }
        while let Some(joined) = execs.join_next().await {
            let (exec_id, outcome) = joined.expect("exec task");
            let Ok(outcome) = outcome else {
                panic!("round {round}: {exec_id} timed out");
            };
            match outcome {
                ExecOutcome::Exited { status, stdout } => {
                    assert_eq!(status.code, 0, "round {round}: {exec_id} exit code");
                    assert_eq!(stdout, b"hi\n", "round {round}: {exec_id} output");
                }
                ExecOutcome::Rejected { step, error } => {
                    panic!("round {round}: {step} of {exec_id} failed: {error}")
                }
            }
        }
    }

    tokio::time::sleep(SETTLE).await;
    for index in 0..EXECS {
        let exec_id = ExecId::new(format!("echo-{index}")).expect("valid exec id");
        let exits = harness
            .recorder
            .exits_of("execs", &ProcessId::Exec(exec_id));
        assert_eq!(exits.len(), ROUNDS, "exits of echo-{index}");
    }
    println!(
        "concurrent execs: {ROUNDS} rounds of {EXECS} in {:?}",
        started.elapsed()
    );

    task.kill(SIGKILL, false).await.expect("kill");
    let status = task.wait().await.expect("wait");
    assert_eq!(status.code, KILLED);
    let Ok(task) = Arc::try_unwrap(task) else {
        panic!("a finished exec still holds the task");
    };
    delete_task_and_container(&container, task).await;
    harness.stop().await;
}

/// Runs `true` in a fresh container, waits for its exit and deletes it. Returns the container
/// id and the init pid.
async fn order_round(shared: Shared, round: usize) -> (String, u32) {
    let container_id = format!("order-{round}");
    let (container, task) = create_and_start(
        &shared.client,
        &container_id,
        shared.spec(&["true"]),
        StdioRequest::default(),
    )
    .await;
    let pid = task.pid();
    let expectation = format!("{container_id}: true exits");
    let status = wait_within(STEP_TIMEOUT, task.wait(), &expectation).await;
    assert_eq!(status.code, 0, "{container_id}: exit code");
    let events = shared
        .recorder
        .wait_for_init_exit(&container_id, STEP_TIMEOUT)
        .await;
    assert_eq!(count_init_exits(&events), 1, "{container_id}: {events:?}");
    delete_task_and_container(&container, task).await;
    (container_id, pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_in_order() {
    let _serial = SERIAL.lock().await;
    let harness = Harness::start().await;
    let started = Instant::now();
    let shared = Shared::of(&harness);
    let rounds = run_rounds(500, 8, move |round| order_round(shared.clone(), round)).await;
    tokio::time::sleep(SETTLE).await;

    for (id, pid) in &rounds {
        let events = harness.recorder.events_of(id);
        assert_eq!(
            events.first(),
            Some(&Event::Created { pid: *pid }),
            "{id}: {events:?}"
        );
        assert_eq!(
            events.get(1),
            Some(&Event::Started { pid: *pid }),
            "{id}: {events:?}"
        );
        let Some(Event::Exited {
            process,
            pid: exit_pid,
            status,
            synthetic,
        }) = events.get(2)
        else {
            panic!("{id}: third event is not an exit: {events:?}");
        };
        assert_eq!(*process, ProcessId::Init, "{id}");
        assert_eq!(exit_pid, pid, "{id}");
        assert_eq!(status.code, 0, "{id}");
        assert_eq!(*synthetic, None, "{id}");
        assert_eq!(count_init_exits(&events), 1, "{id}: {events:?}");
    }
    println!(
        "event order: {} containers in {:?}",
        rounds.len(),
        started.elapsed()
    );
    harness.stop().await;
}

/// Returns the parent of `pid`, or `None` when the process is gone.
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised command name come the state letter and then the parent pid.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Returns true when a child of `parent` other than `except` has `arg` among its arguments.
fn has_child_with_arg(parent: u32, except: u32, arg: &str) -> bool {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
        return false;
    };
    threads
        .filter_map(Result::ok)
        .filter_map(|thread| std::fs::read_to_string(thread.path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .filter_map(|child| child.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|child| *child != except)
        .any(|child| {
            std::fs::read(format!("/proc/{child}/cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .split(|&byte| byte == 0)
                    .any(|a| a == arg.as_bytes())
            })
        })
}

/// Starts `task` with containerd stopped from the moment the shim runs `runc start` until the
/// init process is dead, so the process dies before the start request returns. The start's
/// reply and the process's events then reach keel in whatever order containerd sends them.
async fn start_frozen(harness: &Harness, mut task: Task) -> Task {
    let pid = task.pid();
    let shim = parent_pid(pid).expect("the shim of the created task");
    let start = tokio::spawn(async move {
        let result = task.start().await;
        (task, result)
    });
    // Spin instead of sleeping: `runc start` runs for a few milliseconds only.
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !has_child_with_arg(shim, pid, "start")
        && !start.is_finished()
        && Instant::now() < deadline
    {
        std::thread::yield_now();
    }
    let frozen = !start.is_finished() && harness.containerd.freeze().is_ok();
    if frozen {
        while is_process_alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        harness.containerd.thaw().expect("thaw containerd");
    }
    let (task, result) = start.await.expect("start request task");
    result.expect("start task");
    task
}

/// Runs a process that outgrows a 32 MiB memory limit and checks its exit code. Deletes the
/// task at once, as an engine does on an exit, then waits for the out-of-memory event and,
/// after late duplicates had time to arrive, checks that exactly one was reported. Returns
/// true when the process was dead when the start request returned.
///
/// Even runs start normally and grow a shell variable by doubling it. Odd runs have `dd`
/// fill a 64 MiB buffer, and stop containerd across the start (see [`start_frozen`]).
async fn oom_run(harness: &Harness, run: usize) -> bool {
    let container_id = format!("oom-{run}");
    let frozen = run % 2 == 1;
    let args: &[&str] = if frozen {
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]
    } else {
        &["sh", "-c", "x=a; while true; do x=$x$x; done"]
    };
    let spec = SpecBuilder::new(&harness.rootfs)
        .args(args.iter().copied())
        .memory_limit(32 << 20)
        .build();
    let container = harness
        .client
        .create_container(&container_id, spec)
        .await
        .expect("create container");
    let mut task = container
        .create_task(StdioRequest::default())
        .await
        .expect("create task");
    if frozen {
        task = start_frozen(harness, task).await;
    } else {
        task.start().await.expect("start task");
    }
    let died_before_start_returned = !is_process_alive(task.pid());

    let expectation = format!("{container_id}: the process dies");
    let status = wait_within(STEP_TIMEOUT, task.wait(), &expectation).await;
    assert_eq!(status.code, KILLED, "{container_id}: exit code");
    let is_oom = |event: &Event| matches!(event, Event::OutOfMemory);
    task.delete().await.expect("delete task");
    let events = harness
        .recorder
        .wait_for_event(&container_id, STEP_TIMEOUT, is_oom)
        .await;
    assert!(events.iter().any(is_oom), "{container_id}: {events:?}");
    tokio::time::sleep(SETTLE).await;
    let events = harness.recorder.events_of(&container_id);
    let ooms = events.iter().filter(|event| is_oom(event)).count();
    assert_eq!(ooms, 1, "{container_id}: {events:?}");
    container.delete().await.expect("delete container");
    died_before_start_returned
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_reported_once() {
    const RUNS: usize = 20;

    let _serial = SERIAL.lock().await;
    let harness = Harness::start().await;
    let started = Instant::now();
    let mut early = Vec::new();
    for run in 0..RUNS {
        if oom_run(&harness, run).await {
            early.push(run);
        }
    }
    println!(
        "out of memory: {RUNS} runs in {:?}; dead when start returned: runs {early:?}",
        started.elapsed()
    );
    assert!(
        early.iter().any(|run| run % 2 == 1),
        "no run with containerd stopped across the start saw the process die first"
    );
    harness.stop().await;
}

/// The leak test's counts of what keel and containerd hold.
#[derive(Debug, PartialEq, Eq)]
struct Holdings {
    /// Entries below the namespace folder of the state folder: bundle folders and FIFOs.
    state_entries: usize,
    /// Open file descriptors of the test process.
    file_descriptors: usize,
    /// Live shims of the private containerd.
    shims: usize,
}

fn holdings(harness: &Harness) -> Holdings {
    Holdings {
        state_entries: count_entries(&harness.state_dir.join(&harness.namespace)),
        file_descriptors: std::fs::read_dir("/proc/self/fd")
            .expect("list file descriptors")
            .count(),
        shims: harness.containerd.shim_pids().len(),
    }
}

/// Returns the counts once two samples 200 ms apart agree, or after [`LEAK_SETTLE`]. A test
/// that ran before releases [`SERIAL`] before its runtime and sockets are dropped.
async fn settled_holdings(harness: &Harness) -> Holdings {
    let deadline = Instant::now() + LEAK_SETTLE;
    let mut previous = holdings(harness);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let current = holdings(harness);
        if current == previous || Instant::now() >= deadline {
            return current;
        }
        previous = current;
    }
}

/// Counts the entries below `folder`, recursively, or returns 0 when it does not exist.
fn count_entries(folder: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return 0;
    };
    entries
        .map(|entry| entry.expect("read state folder entry"))
        .map(|entry| {
            let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
            1 + if is_dir {
                count_entries(&entry.path())
            } else {
                0
            }
        })
        .sum()
}

/// Kills the running init process, reads its output streams to the end, waits for the exit
/// and deletes the task and the container.
async fn kill_and_delete(
    container: keel::Container,
    task: Task,
    streams: [Option<OutputStream>; 2],
) {
    let id = container.id().to_string();
    task.kill(SIGKILL, false).await.expect("kill");
    let [stdout, stderr] = streams;
    let drained = tokio::join!(read_all(stdout), read_all(stderr));
    assert_eq!(drained, (Vec::new(), Vec::new()), "{id}: output of sleep");
    let status = wait_within(
        STEP_TIMEOUT,
        task.wait(),
        &format!("{id}: killed init exits"),
    )
    .await;
    assert_eq!(status.code, KILLED, "{id}: exit code after kill");
    let deleted = task.delete().await.expect("delete task");
    assert_eq!(deleted.code, KILLED, "{id}: exit code from delete");
    container.delete().await.expect("delete container");
}

/// Runs `true` in the task, then pauses and resumes it.
async fn exercise(task: &Task, container_id: &str) {
    run_true(task, "true", container_id).await;
    task.pause().await.expect("pause");
    task.resume().await.expect("resume");
}

/// Runs one full cycle on one client: create, start with all streams, exec, pause, resume, kill,
/// wait, delete the task and the container.
async fn leak_cycle(shared: Shared, cycle: usize) {
    let container_id = format!("leak-{cycle}");
    let (container, mut task) = create_and_start(
        &shared.client,
        &container_id,
        shared.spec(&["sleep", "1000"]),
        INPUT_OUTPUT,
    )
    .await;
    let stdin = task.take_stdin();
    let streams = [task.take_stdout(), task.take_stderr()];
    exercise(&task, &container_id).await;
    drop(stdin);
    kill_and_delete(container, task, streams).await;
}

/// Replaces the harness's client with a new one on the same containerd, namespace and state
/// folder, after shutting the old one down.
async fn reconnect(harness: &mut Harness) {
    harness.client.shutdown(Duration::from_secs(5)).await;
    harness.client = harness.connect(harness.recorder.clone()).await;
}

/// Runs a cycle with a client restart between start and delete: the new client loads the container
/// and takes a handle on its task without stdio.
async fn reconnect_cycle(harness: &mut Harness, cycle: usize) {
    let container_id = format!("reload-{cycle}");
    let (container, task) = harness
        .create_and_start(
            &container_id,
            harness.spec(&["sleep", "1000"]),
            INPUT_OUTPUT,
        )
        .await;
    drop((task, container));

    reconnect(harness).await;
    let container = harness
        .client
        .load_container(&container_id)
        .await
        .expect("load container");
    let task = container.task().await.expect("task of loaded container");
    exercise(&task, &container_id).await;
    kill_and_delete(container, task, [None, None]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_leak_nothing() {
    let _serial = SERIAL.lock().await;
    let mut harness = Harness::start().await;
    let before = settled_holdings(&harness).await;
    let started = Instant::now();

    let shared = Shared::of(&harness);
    run_rounds(500, 4, move |cycle| leak_cycle(shared.clone(), cycle)).await;
    let plain = started.elapsed();
    for cycle in 0..50 {
        reconnect_cycle(&mut harness, cycle).await;
    }
    let reloads = started.elapsed() - plain;

    let deadline = Instant::now() + LEAK_SETTLE;
    let mut after = holdings(&harness);
    while after != before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = holdings(&harness);
    }
    println!(
        "leaks: 500 cycles in {plain:?}, 50 reload cycles in {reloads:?}; before {before:?}, after {after:?}"
    );
    assert_eq!(after.state_entries, before.state_entries, "state folder");
    assert_eq!(
        after.file_descriptors, before.file_descriptors,
        "file descriptors"
    );
    assert_eq!(after.shims, before.shims, "shims");
    harness.stop().await;
}
