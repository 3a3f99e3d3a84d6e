//! keel against a containerd that dies, restarts, freezes or loses a shim while containers run.
//!
//! Each test starts its own private containerd and injects the fault through keel-testkit. The
//! checks are the delivery guarantees in `docs/guarantees.md`: every exit reaches the backend
//! exactly once with its real code, calls end within their deadline, and keel reconnects by
//! itself. Two environment variables make tests longer for `cargo xtask chaos`.
//! `KEEL_OUTAGE_SECS` sets how long containerd stays down around an exit: 5 s by default, and
//! 60 s in the chaos command, longer than the shim retries its exit event. `KEEL_RESTART_LOOPS`
//! sets the loops of the restart-around-an-exit test: 10 by default, and 50 in the chaos
//! command.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use keel::spec::SpecBuilder;
use keel::{
    Backend, ClientOptions, ConnectionState, Container, ContainerEvent, ErrorKind, Event,
    ExitStatus, ProcessId, StdioRequest, SyntheticReason, Task,
};
use keel_testkit::{
    fifo_count, is_process_alive, is_stale_task_bundle, loses_exits_across_restart,
};
use keel_tests::{Harness, Recorder, delete_task_and_container, start_exec};

/// The bound on how long keel may take to report an exit once containerd serves again.
const EXIT_AFTER_RECONNECT: Duration = Duration::from_secs(10);

/// How long a test retries a task create that containerd rejects for a stale task bundle.
const STALE_BUNDLE_WAIT: Duration = Duration::from_secs(5);

/// How long a test waits for late duplicates before it counts exits.
const SETTLE: Duration = Duration::from_millis(500);

/// The environment variable that sets the loops of [`exits_around_restarts_reported_once`].
const RESTART_LOOPS_ENV: &str = "KEEL_RESTART_LOOPS";

/// The environment variable that sets the outage of [`exit_during_outage_reported_once`], in
/// seconds.
const OUTAGE_SECS_ENV: &str = "KEEL_OUTAGE_SECS";

/// A [`Harness`] with the helpers of the fault tests.
struct Fixture(Harness);

impl Deref for Fixture {
    type Target = Harness;

    fn deref(&self) -> &Harness {
        &self.0
    }
}

impl DerefMut for Fixture {
    fn deref_mut(&mut self) -> &mut Harness {
        &mut self.0
    }
}

impl Fixture {
    /// Starts a private containerd and connects a client with default options that records
    /// every event.
    async fn start() -> Self {
        Self(Harness::start().await)
    }

    /// Starts a private containerd and connects a client whose options `configure` adjusts and
    /// whose backend `wrap` builds around the recorder.
    async fn start_with<B: Backend>(
        configure: impl FnOnce(&mut ClientOptions),
        wrap: impl FnOnce(Recorder) -> B,
    ) -> Self {
        Self(Harness::start_with(configure, wrap).await)
    }

    /// Returns a spec that runs `sh -c script` in the busybox root folder.
    fn shell_spec(&self, script: &str) -> oci_spec::runtime::Spec {
        self.0.spec(&["sh", "-c", script])
    }

    /// Creates container `id` running `sh -c script` and starts its task.
    async fn run(&self, id: &str, script: &str) -> (Container, Task) {
        let spec = self.shell_spec(script);
        self.create_and_start(id, spec, StdioRequest::default())
            .await
    }

    /// Returns the pid of the private containerd's live shim. Fails the test unless exactly
    /// one shim runs.
    fn only_shim(&self) -> u32 {
        let shims = self.containerd.shim_pids();
        assert_eq!(shims.len(), 1, "{shims:?}");
        shims[0]
    }

    /// Returns true when the connected containerd deletes tasks whose process exited while
    /// it was down, as containerd 1.7 does.
    async fn loses_exits_across_restart(&self) -> bool {
        let version = self
            .client
            .version()
            .await
            .unwrap_or_else(|error| panic!("containerd version: {error}"));
        loses_exits_across_restart(&version.version)
    }

    /// Waits until the client's connection is up again, at most `timeout`; returns whether it
    /// is.
    async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut state = self.client.connection_state_changes();
        tokio::time::timeout(timeout, state.wait_for(ConnectionState::is_connected))
            .await
            .is_ok_and(|result| result.is_ok())
    }

    /// Waits until container `id` reported an init exit, at most `timeout`; returns its init
    /// exits.
    async fn wait_for_exit(&self, id: &str, timeout: Duration) -> Vec<Exit> {
        let events = self.recorder.wait_for_init_exit(id, timeout).await;
        init_exits(&events)
    }

    /// Waits for late duplicates, then returns the init exits of container `id`.
    async fn settled_exits(&self, id: &str) -> Vec<Exit> {
        tokio::time::sleep(SETTLE).await;
        init_exits(&self.recorder.events_of(id))
    }

    /// Polls until the instance has `count` live shims, at most five seconds; returns the
    /// last count.
    async fn wait_for_shims(&self, count: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let shims = self.containerd.shim_pids().len();
            if shims == count || Instant::now() >= deadline {
                return shims;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Deletes the task and the container, then shuts the client down and stops containerd.
    async fn finish(self, runs: Vec<(Container, Task)>) {
        for (container, task) in runs {
            let _ = task.kill(9, true).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), task.wait()).await;
            let _ = task.delete().await;
            let _ = container.delete().await;
        }
        self.stop().await;
    }

    /// Deletes `container`, checks that its init exit was reported exactly once after late
    /// duplicates had time to arrive, then stops the fixture.
    async fn finish_with_one_exit(self, container: Container) {
        let id = container.id().to_string();
        container
            .delete()
            .await
            .unwrap_or_else(|error| panic!("{id}: delete container: {error}"));
        assert_eq!(self.settled_exits(&id).await.len(), 1, "{id}");
        self.stop().await;
    }

    async fn stop(self) {
        self.0.stop().await;
    }
}

/// One init exit as the backend saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Exit {
    pid: u32,
    code: u32,
    synthetic: Option<SyntheticReason>,
    exited_at: SystemTime,
}

fn init_exits(events: &[Event]) -> Vec<Exit> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Exited {
                process: ProcessId::Init,
                pid,
                status,
                synthetic,
            } => Some(Exit {
                pid: *pid,
                code: status.code,
                synthetic: *synthetic,
                exited_at: status.exited_at,
            }),
            _ => None,
        })
        .collect()
}

/// Checks the code of an exit that happened while containerd was down: the real code, or
/// with a containerd that `lost` such exits a synthetic one (see
/// [`keel_testkit::loses_exits_across_restart`]).
fn assert_exit_code(exit: &Exit, code: u32, lost: bool) {
    if lost && exit.synthetic.is_some() {
        assert_eq!(
            exit.synthetic,
            Some(SyntheticReason::TaskVanished),
            "{exit:?}"
        );
        assert_eq!(exit.code, SyntheticReason::EXIT_CODE, "{exit:?}");
        return;
    }
    assert_eq!(exit.synthetic, None, "{exit:?}");
    assert_eq!(exit.code, code, "{exit:?}");
}

/// Checks what deleting a task whose process exited while containerd was down returned: its
/// real code, or with a containerd that `lost` such exits the synthetic exit keel reported
/// when it found the task deleted.
fn assert_deleted_code(deleted: Result<ExitStatus, keel::Error>, code: u32, lost: bool) {
    let status = deleted.unwrap_or_else(|error| panic!("delete task: {error}"));
    if lost && status.code == SyntheticReason::EXIT_CODE {
        return;
    }
    assert_eq!(status.code, code);
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_during_outage_reported_once() {
    let mut fixture = Fixture::start().await;
    let (container, task) = fixture.run("seven", "sleep 3; exit 7").await;

    let outage = Duration::from_secs(env_count(OUTAGE_SECS_ENV, 5) as u64);
    fixture.containerd.kill().expect("kill containerd");
    tokio::time::sleep(outage).await;
    fixture.containerd.restart().await.expect("restart");

    let exits = fixture.wait_for_exit("seven", EXIT_AFTER_RECONNECT).await;
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(exits[0].pid, task.pid());
    let lost = fixture.loses_exits_across_restart().await;
    assert_exit_code(&exits[0], 7, lost);

    let deleted = task.delete().await;
    assert_deleted_code(deleted, 7, lost);
    container.delete().await.expect("delete container");
    let exits = fixture.settled_exits("seven").await;
    assert_eq!(exits.len(), 1, "after delete: {exits:?}");
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_killed_while_down_reported_once() {
    let mut fixture = Fixture::start().await;
    let (victim, victim_task) = fixture.run("victim", "sleep 1000").await;
    let (bystander, bystander_task) = fixture.run("bystander", "sleep 1000").await;

    fixture.containerd.kill().expect("kill containerd");
    fixture
        .containerd
        .kill_task_process(victim_task.pid())
        .expect("kill the victim's init");
    tokio::time::sleep(Duration::from_secs(1)).await;
    fixture.containerd.restart().await.expect("restart");
    assert!(fixture.wait_connected(Duration::from_secs(10)).await);

    let exits = fixture.wait_for_exit("victim", EXIT_AFTER_RECONNECT).await;
    assert_eq!(exits.len(), 1, "{exits:?}");
    let lost = fixture.loses_exits_across_restart().await;
    assert_exit_code(&exits[0], 137, lost);

    let deleted = victim_task.delete().await;
    assert_deleted_code(deleted, 137, lost);
    victim.delete().await.expect("delete the victim");
    assert_eq!(fixture.wait_for_shims(1).await, 1, "the victim's shim left");

    assert!(
        fixture
            .recorder
            .exits_of("bystander", &ProcessId::Init)
            .is_empty(),
        "the bystander still runs"
    );
    bystander_task.kill(9, false).await.expect("kill bystander");
    let status = bystander_task.wait().await.expect("wait bystander");
    assert_eq!(status.code, 137);
    let exits = fixture.settled_exits("bystander").await;
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(fixture.settled_exits("victim").await.len(), 1);
    fixture.finish(vec![(bystander, bystander_task)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_around_restarts_reported_once() {
    let loops = env_count(RESTART_LOOPS_ENV, 10);
    let mut fixture = Fixture::start().await;
    let lost = fixture.loses_exits_across_restart().await;

    for round in 0..loops {
        let id = format!("round-{round}");
        let (container, task) = fixture.run(&id, "sleep 1; exit 3").await;
        // Kill containerd from 0.7 s to 1.3 s after the start, so rounds cover a kill before,
        // at and after the exit.
        let offset = Duration::from_millis(700 + (round as u64 * 137) % 600);
        tokio::time::sleep(offset).await;
        fixture.containerd.kill().expect("kill containerd");
        fixture.containerd.restart().await.expect("restart");

        let exits = fixture.wait_for_exit(&id, EXIT_AFTER_RECONNECT).await;
        assert!(!exits.is_empty(), "{id} reported no exit");
        let deleted = task.delete().await;
        assert_deleted_code(deleted, 3, lost);
        container.delete().await.expect("delete container");
    }

    tokio::time::sleep(SETTLE).await;
    for round in 0..loops {
        let id = format!("round-{round}");
        let exits = init_exits(&fixture.recorder.events_of(&id));
        assert_eq!(exits.len(), 1, "{id}: {exits:?}");
        assert_exit_code(&exits[0], 3, lost);
    }
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_costs_few_attempts() {
    let mut fixture = Fixture::start().await;
    let (old, old_task) = fixture.run("old", "sleep 1000").await;
    let mut state = fixture.client.connection_state_changes();
    state.borrow_and_update();

    fixture.containerd.kill().expect("kill containerd");
    let killed_at = Instant::now();
    let watch_outage = async {
        let mut failures: Vec<(u32, Instant)> = Vec::new();
        while killed_at.elapsed() < Duration::from_secs(15) {
            let remaining = Duration::from_secs(15).saturating_sub(killed_at.elapsed());
            if tokio::time::timeout(remaining, state.changed())
                .await
                .is_err()
            {
                break;
            }
            if let ConnectionState::Backoff { attempt, .. } = *state.borrow_and_update() {
                failures.push((attempt, Instant::now()));
            }
        }
        failures
    };
    let failures = watch_outage.await;
    fixture.containerd.restart().await.expect("restart");
    assert!(fixture.wait_connected(Duration::from_secs(10)).await);

    let attempts = failures.last().map_or(0, |(attempt, _)| *attempt);
    assert!(attempts >= 1, "no failed attempt seen: {failures:?}");
    assert!(attempts <= 30, "{attempts} attempts in 15 s");
    let mut previous = killed_at;
    for (attempt, at) in &failures {
        let gap = at.duration_since(previous);
        assert!(
            gap <= Duration::from_secs(5),
            "attempt {attempt} came {gap:?} after the last"
        );
        previous = *at;
    }
    let last_gap = killed_at + Duration::from_secs(15) - previous;
    assert!(
        last_gap <= Duration::from_secs(5),
        "no attempt in the last {last_gap:?}"
    );

    old_task
        .kill(9, false)
        .await
        .expect("kill after the outage");
    let exits = fixture.wait_for_exit("old", EXIT_AFTER_RECONNECT).await;
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(exits[0].code, 137);
    let (new, new_task) = fixture.run("new", "exit 4").await;
    let exits = fixture.wait_for_exit("new", EXIT_AFTER_RECONNECT).await;
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(exits[0].code, 4);
    let events = fixture.recorder.events_of("new");
    assert!(
        matches!(events.first(), Some(Event::Created { .. })),
        "{events:?}"
    );
    assert!(
        matches!(events.get(1), Some(Event::Started { .. })),
        "{events:?}"
    );
    fixture.finish(vec![(old, old_task), (new, new_task)]).await;
}

/// What one create and start returned while containerd was killed at some moment.
#[derive(Debug)]
enum StepOutcome {
    Started(Container, Task),
    TaskFailed(Container, keel::Error),
    ContainerFailed(keel::Error),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_create_and_start_leaves_nothing() {
    let mut fixture = Fixture::start().await;
    let mut stale_bundles = Vec::new();
    for step in 0..20_u64 {
        let id = format!("step-{step}");
        let kill_after = Duration::from_millis(step * 10);
        let started = Instant::now();
        let client = fixture.client.clone();
        let spec = fixture.shell_spec("sleep 1000");
        let create_and_start = async {
            let container = match client.create_container(&id, spec).await {
                Ok(container) => container,
                Err(error) => return StepOutcome::ContainerFailed(error),
            };
            match container.start_task(StdioRequest::default()).await {
                Ok(task) => StepOutcome::Started(container, task),
                Err(error) => StepOutcome::TaskFailed(container, error),
            }
        };
        let containerd = &mut fixture.containerd;
        let kill = async {
            tokio::time::sleep(kill_after).await;
            containerd.kill().expect("kill containerd");
        };
        let (outcome, ()) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(10), create_and_start),
            kill
        );
        let elapsed = started.elapsed();
        let outcome = outcome.unwrap_or_else(|_| panic!("{id}: create and start hung"));
        assert!(elapsed <= Duration::from_secs(10), "{id}: took {elapsed:?}");
        tracing::info!(%id, ?outcome, elapsed_ms = elapsed.as_millis() as u64, "step done");
        if let Some(error) = failure(&outcome) {
            assert!(
                matches!(error.kind(), ErrorKind::Unavailable | ErrorKind::TimedOut),
                "{id}: failed with {error:?}"
            );
        }

        fixture.containerd.restart().await.expect("restart");
        assert!(fixture.wait_connected(Duration::from_secs(10)).await);
        remove_step(&fixture, &id, outcome).await;
        if !fixture.create_again(&id).await {
            stale_bundles.push(id.clone());
        }
        assert_eq!(
            fixture.wait_for_shims(0).await,
            0,
            "{id}: shims left after delete"
        );
    }
    assert_eq!(fifo_count(&fixture.state_dir).expect("count FIFOs"), 0);
    let bundles = std::fs::read_dir(fixture.state_dir.join(&fixture.namespace))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(bundles, 0, "bundle folders left");
    let task_bundles = fixture.containerd.task_bundle_ids(&fixture.namespace);
    assert_eq!(task_bundles, stale_bundles, "containerd task bundles left");
    if !stale_bundles.is_empty() {
        eprintln!("containerd kept stale task bundles of {stale_bundles:?}");
    }
    fixture.stop().await;
}

fn failure(outcome: &StepOutcome) -> Option<&keel::Error> {
    match outcome {
        StepOutcome::Started(..) => None,
        StepOutcome::TaskFailed(_, error) | StepOutcome::ContainerFailed(error) => Some(error),
    }
}

/// Deletes whatever one step left, through keel only. After a failed call the outcome is
/// unknown, so the container is loaded if keel dropped it, and force-deleted: keel adopts a
/// task that containerd created for a request whose reply was lost.
async fn remove_step(fixture: &Fixture, id: &str, outcome: StepOutcome) {
    let container = match outcome {
        StepOutcome::Started(container, task) => {
            fixture.finish_one((container, task)).await;
            return;
        }
        StepOutcome::TaskFailed(container, _) => container,
        StepOutcome::ContainerFailed(_) => match fixture.client.load_container(id).await {
            Ok(container) => container,
            Err(error) => {
                assert_eq!(error.kind(), ErrorKind::NotFound, "{id}: load: {error}");
                return;
            }
        },
    };
    container
        .force_delete(Duration::from_secs(10))
        .await
        .unwrap_or_else(|error| panic!("{id}: force delete after a failure: {error}"));
}

impl Fixture {
    /// Creates container `id` again, runs a task in it and deletes both. Returns false when
    /// containerd kept refusing the task for [`STALE_BUNDLE_WAIT`] because of a stale task
    /// bundle (see [`is_stale_task_bundle`]); the container is deleted then too.
    async fn create_again(&self, id: &str) -> bool {
        let container = self
            .client
            .create_container(id, self.shell_spec("exit 0"))
            .await
            .unwrap_or_else(|error| panic!("{id}: create again: {error}"));
        let started = Instant::now();
        loop {
            let error = match container.start_task(StdioRequest::default()).await {
                Ok(task) => {
                    self.finish_one((container, task)).await;
                    return true;
                }
                Err(error) => error,
            };
            assert!(is_stale_task_bundle(&error), "{id}: start again: {error:?}");
            // containerd 1.7.24 removed such a folder soon after it restarted; 1.6.20 kept it.
            if started.elapsed() < STALE_BUNDLE_WAIT {
                tracing::info!(%id, "task rejected for a stale task bundle; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            tracing::warn!(%id, %error, "containerd kept a stale task bundle");
            container
                .delete()
                .await
                .unwrap_or_else(|error| panic!("{id}: delete after a stale bundle: {error}"));
            return false;
        }
    }

    /// Kills, waits for, and deletes one task and its container, checking each step.
    async fn finish_one(&self, (container, task): (Container, Task)) {
        let id = container.id().to_string();
        match task.kill(9, true).await {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => panic!("{id}: kill: {error}"),
        }
        tokio::time::timeout(Duration::from_secs(10), task.wait())
            .await
            .unwrap_or_else(|_| panic!("{id}: wait hung"))
            .unwrap_or_else(|error| panic!("{id}: wait: {error}"));
        task.delete()
            .await
            .unwrap_or_else(|error| panic!("{id}: delete task: {error}"));
        container
            .delete()
            .await
            .unwrap_or_else(|error| panic!("{id}: delete container: {error}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shim_killed_reports_one_exit() {
    let fixture = Fixture::start().await;
    let (container, task) = fixture.run("orphan", "sleep 1000").await;
    let shim = fixture.only_shim();

    fixture.containerd.kill_shim(shim).expect("kill shim");
    let exits = fixture
        .wait_for_exit("orphan", Duration::from_secs(5))
        .await;
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(exits[0].pid, task.pid());
    let exits = fixture.settled_exits("orphan").await;
    assert_eq!(exits.len(), 1, "{exits:?}");

    match task.delete().await {
        Ok(_) => {}
        Err(error) => assert_eq!(error.kind(), ErrorKind::NotFound, "{error}"),
    }
    fixture.finish_with_one_exit(container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shim_killed_handles_return_reported_exits() {
    let fixture = Fixture::start().await;
    let (container, task) = fixture.run("reaped", "sleep 1000").await;
    let mut execs = Vec::new();
    for index in 0..2 {
        let exec_id = format!("sleeper-{index}");
        let exec = start_exec(&task, &exec_id, &["sleep", "1000"], StdioRequest::default()).await;
        execs.push(exec);
    }
    let shim = fixture.only_shim();

    // containerd deletes the task of a dead shim, so keel drops the task before any handle
    // requests an exit.
    fixture.containerd.kill_shim(shim).expect("kill shim");
    let is_deleted = |event: &Event| matches!(event, Event::Deleted { .. });
    let events = fixture
        .recorder
        .wait_for_event("reaped", Duration::from_secs(5), is_deleted)
        .await;
    assert!(events.iter().any(is_deleted), "no delete event: {events:?}");
    let init_exits = fixture.settled_exits("reaped").await;
    assert_eq!(init_exits.len(), 1, "{init_exits:?}");

    let task_status = task
        .wait()
        .await
        .expect("task wait after the task was dropped");
    assert_eq!(task_status.code, init_exits[0].code);
    for exec in &execs {
        let process = ProcessId::Exec(exec.exec_id().clone());
        let reported = fixture.recorder.exits_of("reaped", &process);
        assert_eq!(reported.len(), 1, "{process}: {reported:?}");
        let Event::Exited { status, .. } = &reported[0] else {
            panic!("{process}: not an exit: {reported:?}");
        };
        let waited = exec
            .wait()
            .await
            .unwrap_or_else(|error| panic!("{process}: wait after the task was dropped: {error}"));
        assert_eq!(waited.code, status.code, "{process}");
    }
    let deleted = task
        .delete()
        .await
        .expect("delete of a task containerd removed");
    assert_eq!(deleted.code, task_status.code);
    fixture.finish_with_one_exit(container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_after_shim_killed_names_stopped_task() {
    let fixture = Fixture::start().await;
    let (container, task) = fixture.run("shimless", "sleep 1000").await;
    let shim = fixture.only_shim();

    fixture.containerd.kill_shim(shim).expect("kill shim");
    let process = keel::spec::exec_process(["true"]);
    let error = match task.exec("late", process, StdioRequest::default()).await {
        Ok(mut exec) => exec
            .start()
            .await
            .expect_err("start exec after the shim died"),
        Err(error) => error,
    };
    // Before containerd drops the task, the shim's closed connection fails the exec. After
    // that, keel has dropped the task and returns not found.
    let kinds = [ErrorKind::FailedPrecondition, ErrorKind::NotFound];
    assert!(kinds.contains(&error.kind()), "{error:?}");

    let is_deleted = |event: &Event| matches!(event, Event::Deleted { .. });
    fixture
        .recorder
        .wait_for_event("shimless", Duration::from_secs(5), is_deleted)
        .await;
    delete_task_and_container(&container, task).await;
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shim_killed_during_exec_reports_container_exited() {
    let fixture = Fixture::start().await;
    let (container, task) = fixture.run("execs", "sleep 1000").await;
    let exec = start_sleeping_exec(&task).await;
    let shim = fixture.only_shim();

    // The dead shim reports neither process, so the init exit comes from containerd and the
    // exec's from keel once the init exit has been held long enough. The exec's wait is sent
    // before the kill, as an engine waits on each process it starts.
    let kill = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        fixture.containerd.kill_shim(shim).expect("kill shim");
    };
    let (exec_status, ()) = tokio::join!(exec.wait(), kill);
    let exec_status = exec_status.expect("exec wait");
    assert_eq!(exec_status.code, SyntheticReason::EXIT_CODE);
    let init_exits = fixture.wait_for_exit("execs", Duration::from_secs(5)).await;
    assert_eq!(init_exits.len(), 1, "{init_exits:?}");

    let exec_process = ProcessId::Exec(exec.exec_id().clone());
    let exec_exits = fixture.recorder.exits_of("execs", &exec_process);
    assert_eq!(exec_exits.len(), 1, "{exec_exits:?}");
    assert!(
        matches!(
            exec_exits[0],
            Event::Exited {
                synthetic: Some(SyntheticReason::ContainerExited),
                ..
            }
        ),
        "{exec_exits:?}"
    );
    let events = fixture.recorder.events_of("execs");
    let exec_exit = exit_position(&events, &exec_process);
    let init_exit = exit_position(&events, &ProcessId::Init);
    assert!(exec_exit.is_some(), "no exec exit: {events:?}");
    assert!(
        exec_exit < init_exit,
        "exec exit after init exit: {events:?}"
    );

    let _ = task.delete().await;
    fixture.finish_with_one_exit(container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_racing_an_exit_fail_precondition() {
    let fixture = Fixture::start().await;
    for round in 0..3 {
        let id = format!("gone-{round}");
        let (container, task) = fixture.run(&id, "sleep 1000").await;
        // The process dies outside keel, so a request sent at once may reach containerd
        // before keel has seen the exit event.
        fixture
            .containerd
            .kill_task_process(task.pid())
            .expect("kill init");
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_process_alive(task.pid()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }

        let paused = task.pause().await.expect_err("pause of an exited task");
        assert_eq!(paused.kind(), ErrorKind::FailedPrecondition, "{paused}");
        let image = fixture.containerd.dir().join(format!("image-{round}"));
        let checkpointed = task
            .checkpoint(&image, false)
            .await
            .expect_err("checkpoint of an exited task");
        assert_eq!(
            checkpointed.kind(),
            ErrorKind::FailedPrecondition,
            "{checkpointed}"
        );
        let limits = SpecBuilder::new("/")
            .memory_limit(64 << 20)
            .build()
            .linux()
            .as_ref()
            .and_then(|linux| linux.resources().clone())
            .expect("resources");
        let updated = task
            .update(limits)
            .await
            .expect_err("update of an exited task");
        assert_eq!(updated.kind(), ErrorKind::FailedPrecondition, "{updated}");

        task.wait().await.expect("wait");
        delete_task_and_container(&container, task).await;
    }
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_containerd_times_out_then_recovers() {
    let call_timeout = Duration::from_secs(1);
    let fixture = Fixture::start_with(|options| options.call_timeout = call_timeout, |r| r).await;
    let (frozen, frozen_task) = fixture.run("frozen", "sleep 1000").await;
    let (other, other_task) = fixture.run("other", "sleep 1000").await;

    fixture.containerd.freeze().expect("freeze");
    let frozen_at = Instant::now();
    fixture
        .containerd
        .kill_task_process(frozen_task.pid())
        .expect("kill init while frozen");

    let started = Instant::now();
    let error = fixture
        .client
        .version()
        .await
        .expect_err("version while frozen");
    assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
    assert!(started.elapsed() < call_timeout + Duration::from_millis(500));

    let started = Instant::now();
    let error = other_task
        .kill(0, false)
        .await
        .expect_err("kill while frozen");
    assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
    assert!(started.elapsed() < call_timeout * 2 + Duration::from_millis(500));

    tokio::time::sleep(Duration::from_secs(5).saturating_sub(frozen_at.elapsed())).await;
    fixture.containerd.thaw().expect("thaw");

    assert!(fixture.wait_connected(Duration::from_secs(10)).await);
    fixture.client.version().await.expect("version after thaw");
    let exits = fixture.wait_for_exit("frozen", EXIT_AFTER_RECONNECT).await;
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(exits[0].code, 137);
    assert_eq!(fixture.settled_exits("frozen").await.len(), 1);
    assert!(
        fixture
            .recorder
            .exits_of("other", &ProcessId::Init)
            .is_empty()
    );
    fixture
        .finish(vec![(frozen, frozen_task), (other, other_task)])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_timed_out_while_frozen_leaves_nothing() {
    let call_timeout = Duration::from_secs(1);
    let fixture = Fixture::start_with(|options| options.call_timeout = call_timeout, |r| r).await;
    let ids: Vec<String> = (0..4).map(|index| format!("frozen-{index}")).collect();

    fixture.containerd.freeze().expect("freeze");
    let mut creates = Vec::new();
    for id in &ids {
        let client = fixture.client.clone();
        let (id, spec) = (id.clone(), fixture.shell_spec("true"));
        creates.push(tokio::spawn(async move {
            client.create_container(&id, spec).await.map(drop)
        }));
    }
    for create in creates {
        let error = create
            .await
            .expect("join")
            .expect_err("create while frozen");
        assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
    }
    fixture.containerd.thaw().expect("thaw");

    // Once thawed, containerd may carry out the creates it had received, and keel removes
    // those records: each id can be created again, and nothing else is left.
    for id in &ids {
        let started = Instant::now();
        let container = loop {
            match fixture
                .client
                .create_container(id, fixture.shell_spec("true"))
                .await
            {
                Ok(container) => break container,
                // A create waits while keel removes the record, and times out if that takes
                // longer than its deadline.
                Err(error) if started.elapsed() < Duration::from_secs(10) => {
                    assert_eq!(error.kind(), ErrorKind::TimedOut, "{id}: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("{id}: create again: {error}"),
            }
        };
        container.delete().await.expect("delete");
    }
    let records = fixture.client.list_containers().await.expect("list");
    assert!(records.is_empty(), "{records:?}");
    fixture.stop().await;
}

/// A backend that blocks for ten seconds on the exit of one container and notes when each
/// exit arrived.
#[derive(Clone)]
struct BlockingBackend {
    recorder: Recorder,
    blocked_container: &'static str,
    arrivals: Arc<Mutex<HashMap<String, SystemTime>>>,
}

#[keel::async_trait]
impl Backend for BlockingBackend {
    async fn handle_event(&self, event: ContainerEvent) {
        let is_exit = matches!(event.event, Event::Exited { .. });
        let container_id = event.container_id.to_string();
        if is_exit && let Ok(mut arrivals) = self.arrivals.lock() {
            arrivals.insert(container_id.clone(), SystemTime::now());
        }
        self.recorder.handle_event(event).await;
        if is_exit && container_id == self.blocked_container {
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_backend_delays_only_its_container() {
    let arrivals = Arc::new(Mutex::new(HashMap::new()));
    let backend_arrivals = Arc::clone(&arrivals);
    let fixture = Fixture::start_with(
        |_| {},
        move |recorder| BlockingBackend {
            recorder,
            blocked_container: "slow",
            arrivals: backend_arrivals,
        },
    )
    .await;
    let (slow, slow_task) = fixture.run("slow", "exit 1").await;
    let slow_exits = fixture.wait_for_exit("slow", Duration::from_secs(5)).await;
    assert_eq!(slow_exits.len(), 1, "the blocking call began");

    let (fast, fast_task) = fixture.run("fast", "sleep 1; exit 2").await;
    let exits = fixture.wait_for_exit("fast", Duration::from_secs(5)).await;
    assert_eq!(exits.len(), 1, "{exits:?}");
    let arrived = arrivals
        .lock()
        .ok()
        .and_then(|arrivals| arrivals.get("fast").copied())
        .expect("arrival noted");
    let delay = arrived
        .duration_since(exits[0].exited_at)
        .unwrap_or_default();
    assert!(
        delay <= Duration::from_millis(100),
        "fast exit took {delay:?}"
    );

    delete_task_and_container(&fast, fast_task).await;
    delete_task_and_container(&slow, slow_task).await;
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_then_shim_killed_reports_real_code() {
    let fixture = Fixture::start().await;
    let (container, task) = fixture.run("five", "exit 5").await;
    let exits = fixture.wait_for_exit("five", Duration::from_secs(5)).await;
    assert_eq!(exits.len(), 1, "{exits:?}");
    let shim = fixture.only_shim();

    fixture.containerd.kill_shim(shim).expect("kill shim");
    let events = fixture
        .recorder
        .wait_for_event("five", Duration::from_secs(5), |event| {
            matches!(event, Event::Deleted { .. })
        })
        .await;
    let exits = init_exits(&events);
    assert_eq!(exits.len(), 1, "{events:?}");
    assert_eq!(exits[0].code, 5);
    assert_eq!(exits[0].synthetic, None);

    match task.delete().await {
        Ok(status) => assert_eq!(status.code, 5),
        Err(error) => assert_eq!(error.kind(), ErrorKind::NotFound, "{error}"),
    }
    fixture.finish_with_one_exit(container).await;
}

/// Adds and starts the exec `sleeper`, which sleeps in `task` until it is killed.
async fn start_sleeping_exec(task: &Task) -> keel::Process {
    start_exec(task, "sleeper", &["sleep", "1000"], StdioRequest::default()).await
}

/// Returns the position of the first exit of `process` among `events`.
fn exit_position(events: &[Event], process: &ProcessId) -> Option<usize> {
    events.iter().position(
        |event| matches!(event, Event::Exited { process: exited, .. } if exited == process),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_exit_precedes_init_exit_after_outage() {
    let mut fixture = Fixture::start().await;
    let (container, task) = fixture.run("pair", "sleep 1000").await;
    let exec = start_sleeping_exec(&task).await;

    // The kernel kills the exec when the init process of its PID namespace dies.
    fixture.containerd.kill().expect("kill containerd");
    fixture
        .containerd
        .kill_task_process(task.pid())
        .expect("kill init");
    tokio::time::sleep(Duration::from_secs(1)).await;
    fixture.containerd.restart().await.expect("restart");

    let init_exits = fixture.wait_for_exit("pair", EXIT_AFTER_RECONNECT).await;
    assert_eq!(init_exits.len(), 1, "{init_exits:?}");
    let lost = fixture.loses_exits_across_restart().await;
    assert_exit_code(&init_exits[0], 137, lost);
    let events = fixture.recorder.events_of("pair");
    let exec_process = ProcessId::Exec(exec.exec_id().clone());
    let exec_exit = exit_position(&events, &exec_process);
    let init_exit = exit_position(&events, &ProcessId::Init);
    assert!(exec_exit.is_some(), "no exec exit: {events:?}");
    assert!(
        exec_exit < init_exit,
        "exec exit after init exit: {events:?}"
    );
    let exec_exits = fixture.recorder.exits_of("pair", &exec_process);
    assert_eq!(exec_exits.len(), 1, "{exec_exits:?}");

    let _ = task.delete().await;
    fixture.finish_with_one_exit(container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_delete_right_after_shim_death_succeeds() {
    let fixture = Fixture::start().await;
    // Three rounds, because the kill meets the dead shim only before containerd notices the
    // death, and afterwards it returns not found.
    for round in 0..3 {
        let id = format!("stubborn-{round}");
        let (container, task) = fixture.run(&id, "sleep 1000").await;
        // The shim of this round's container, not the clean-up of an earlier round's.
        let shim = fixture
            .containerd
            .shim_pids()
            .into_iter()
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                    cmdline
                        .split(|byte| *byte == 0)
                        .any(|argument| argument == id.as_bytes())
                })
            })
            .expect("the container's shim");
        fixture.containerd.kill_shim(shim).expect("kill shim");
        container
            .force_delete(Duration::from_secs(10))
            .await
            .unwrap_or_else(|error| panic!("{id}: force delete: {error:?}"));
        assert_eq!(
            task.status().await.expect_err("task gone").kind(),
            ErrorKind::NotFound
        );
        assert!(fixture.containerd_containers().is_empty(), "{id} left");
    }
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_start_unanswered_while_frozen_keeps_events() {
    let fixture = Fixture::start_with(
        |options| options.call_timeout = Duration::from_secs(1),
        |recorder| recorder,
    )
    .await;
    let (container, task) = fixture.run("frozen-exec", "sleep 1000").await;
    let mut exec = task
        .exec(
            "quick",
            keel::spec::exec_process(["sh", "-c", "exit 5"]),
            StdioRequest::default(),
        )
        .await
        .expect("add exec");

    // containerd freezes while it forwards the start, so the shim can start the process
    // before containerd replies to the call.
    let freeze = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        fixture.containerd.freeze().expect("freeze");
    };
    let (started, ()) = tokio::join!(exec.start(), freeze);
    tokio::time::sleep(Duration::from_secs(2)).await;
    fixture.containerd.thaw().expect("thaw");
    assert!(fixture.wait_connected(Duration::from_secs(10)).await);
    if let Err(error) = &started {
        assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
    }

    // Whether or not containerd replied, a process that ran is reported started before its
    // one exit.
    let quick = ProcessId::Exec(exec.exec_id().clone());
    let is_quick_exit =
        |event: &Event| matches!(event, Event::Exited { process, .. } if *process == quick);
    let events = fixture
        .recorder
        .wait_for("frozen-exec", Duration::from_secs(10), |events| {
            events.iter().any(is_quick_exit)
        })
        .await;
    let exits: Vec<&Event> = events.iter().filter(|event| is_quick_exit(event)).collect();
    if let Some(Event::Exited { status, .. }) = exits.first() {
        assert_eq!(exits.len(), 1, "{events:?}");
        assert_eq!(status.code, 5, "{events:?}");
        let started_at = events.iter().position(
            |event| matches!(event, Event::ExecStarted { exec_id, .. } if exec_id == exec.exec_id()),
        );
        let exited_at = events.iter().position(is_quick_exit);
        assert!(started_at.is_some(), "{events:?}");
        assert!(started_at < exited_at, "{events:?}");
    } else {
        assert!(
            started.is_err(),
            "an answered start ran the process: {events:?}"
        );
    }
    fixture.finish(vec![(container, task)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_delete_removes_runc_state_containerd_never_tracked() {
    let fixture = Fixture::start().await;
    let id = "orphaned";
    let container = fixture.create_container(id, &["sleep", "1000"]).await;

    // What containerd dying during a task create can leave: runc created the container under
    // keel's runc root, but containerd never recorded a task for it.
    let runc_root = fixture
        .state_dir
        .join(".runc")
        .join(fixture.namespace.as_str());
    let bundle = fixture.containerd.dir().join("orphaned-bundle");
    std::fs::create_dir_all(&bundle).expect("bundle folder");
    let cgroups_path = format!("/{}/{id}", fixture.namespace);
    let mut spec = fixture.spec(&["sleep", "1000"]);
    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(Some(cgroups_path.clone().into()));
    }
    let config = serde_json::to_vec(&spec).expect("encode spec");
    std::fs::write(bundle.join("config.json"), config).expect("write config.json");
    let status = std::process::Command::new("runc")
        .arg("--root")
        .arg(&runc_root)
        .args(["create", "--bundle"])
        .arg(&bundle)
        .arg(id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run runc create");
    assert!(status.success(), "runc create: {status}");
    let hierarchy = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").is_file() {
        "/sys/fs/cgroup".to_owned()
    } else {
        "/sys/fs/cgroup/pids".to_owned()
    };
    let cgroup = std::path::PathBuf::from(format!("{hierarchy}{cgroups_path}"));
    assert!(cgroup.is_dir(), "runc made {}", cgroup.display());

    container.delete().await.expect("delete container");
    assert!(!runc_root.join(id).exists(), "runc state left");
    assert!(!cgroup.exists(), "cgroup {} left", cgroup.display());

    // runc stopped before it made its state folder leaves the cgroups alone.
    let early = "stopped-early";
    let container = fixture.create_container(early, &["sleep", "1000"]).await;
    let cgroup = std::path::PathBuf::from(format!("{hierarchy}/{}/{early}", fixture.namespace));
    std::fs::create_dir_all(&cgroup).expect("make the cgroup as runc does");
    container.delete().await.expect("delete container");
    assert!(!cgroup.exists(), "cgroup {} left", cgroup.display());
    fixture.stop().await;
}
