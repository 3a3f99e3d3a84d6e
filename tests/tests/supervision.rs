//! The actor tree's restarts on a real containerd: each actor is made to fail on request,
//! and the client must go on serving, with every exit reported once and with its code.

use std::sync::Arc;
use std::time::Duration;

use keel::spec::exec_process;
use keel::{Event, ExecId, FaultTarget, ProcessId, StdioRequest};
use keel_tests::{Harness, INPUT_OUTPUT, SIGKILL, delete_task_and_container, start_exec};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How long a test waits for the backend to receive an exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// Waits until the backend received an exit of `container_id`'s init process, then waits a
/// little longer for a duplicate, and returns every exit received.
async fn init_exits(harness: &Harness, container_id: &str) -> Vec<Event> {
    harness
        .recorder
        .wait_for(container_id, EXIT_TIMEOUT, |events| {
            events
                .iter()
                .any(|event| matches!(event, Event::Exited { .. }))
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    harness.recorder.exits_of(container_id, &ProcessId::Init)
}

fn exit_code(event: &Event) -> Option<u32> {
    match event {
        Event::Exited { status, .. } => Some(status.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_container_actor_keeps_handles_working() {
    let harness = Harness::start().await;
    let (container, task) = harness
        .run_detached("phoenix", &["sh", "-c", "sleep 2; exit 3"])
        .await;
    let waiting = tokio::spawn({
        let task_handle = container.task().await.expect("task handle");
        async move { task_handle.wait().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    harness
        .client
        .inject_failure(FaultTarget::Container(container.id().clone()))
        .expect("inject failure");

    let status = waiting
        .await
        .expect("join")
        .expect("wait across the restart");
    assert_eq!(status.code, 3);
    let exits = init_exits(&harness, "phoenix").await;
    assert_eq!(exits.len(), 1, "exits: {exits:?}");
    assert_eq!(exit_code(&exits[0]), Some(3));
    assert_eq!(harness.client.tracked_containers(), 1);
    task.delete()
        .await
        .expect("delete task through the old handle");
    container.delete().await.expect("delete container");
    assert_eq!(harness.client.tracked_containers(), 0);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_container_actor_keeps_exec_handles() {
    let harness = Harness::start().await;
    let (container, task) = harness.run_detached("execs", &["sleep", "1000"]).await;
    let mut process = task
        .exec(
            "probe",
            exec_process(["sh", "-c", "sleep 2; exit 7"]),
            StdioRequest::default(),
        )
        .await
        .expect("exec");
    process.start().await.expect("start exec");
    let process = Arc::new(process);
    let waiting = tokio::spawn({
        let process = Arc::clone(&process);
        async move { process.wait().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    harness
        .client
        .inject_failure(FaultTarget::Container(container.id().clone()))
        .expect("inject failure");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let status = process
        .status()
        .await
        .expect("exec status after the restart");
    assert!(
        matches!(status, keel::ProcessStatus::Running),
        "status: {status:?}"
    );
    let status = waiting
        .await
        .expect("join")
        .expect("exec wait across the restart");
    assert_eq!(status.code, 7);
    let code = process.wait().await.expect("wait after the exit").code;
    assert_eq!(code, 7);
    let probe = ProcessId::Exec(ExecId::new("probe").expect("exec id"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exits = harness.recorder.exits_of("execs", &probe);
    assert_eq!(exits.len(), 1, "exits: {exits:?}");
    assert_eq!(exit_code(&exits[0]), Some(7));

    task.kill(9, true).await.expect("kill task");
    assert_eq!(task.wait().await.expect("wait task").code, 137);
    delete_task_and_container(&container, task).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_container_actor_keeps_stdin_and_added_exec() {
    let harness = Harness::start().await;
    let (container, mut task) = harness
        .create_and_start("echo", harness.spec(&["cat"]), INPUT_OUTPUT)
        .await;
    let mut stdin = task.take_stdin().expect("stdin");
    let mut stdout = BufReader::new(task.take_stdout().expect("stdout")).lines();
    let mut added = task
        .exec(
            "added",
            exec_process(["sh", "-c", "exit 14"]),
            StdioRequest::default(),
        )
        .await
        .expect("add exec");
    stdin.write_all(b"before\n").await.expect("write before");
    let line = stdout.next_line().await.expect("read before");
    assert_eq!(line.as_deref(), Some("before"));

    harness
        .client
        .inject_failure(FaultTarget::Container(container.id().clone()))
        .expect("inject failure");
    tokio::time::sleep(Duration::from_millis(200)).await;

    stdin
        .write_all(b"after\n")
        .await
        .expect("write after the restart");
    let line = stdout.next_line().await.expect("read after");
    assert_eq!(line.as_deref(), Some("after"));
    added.start().await.expect("start the exec added before");
    assert_eq!(added.wait().await.expect("wait added exec").code, 14);
    let exec = ProcessId::Exec(ExecId::new("added").expect("exec id"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exits = harness.recorder.exits_of("echo", &exec);
    assert_eq!(exits.len(), 1, "exits: {exits:?}");

    // The replacement counts the stream taken before, and `wait` waits for it to close.
    drop((stdin, stdout));
    task.close_stdin()
        .await
        .expect("close stdin after the restart");
    assert_eq!(task.wait().await.expect("wait cat").code, 0);
    delete_task_and_container(&container, task).await;
    harness.stop().await;
}

/// Writes 1 MiB chunks to `stdin` until a write fails, and returns that error.
fn write_until_error(mut stdin: keel::StdinStream) -> tokio::task::JoinHandle<std::io::Error> {
    tokio::spawn(async move {
        let chunk = vec![b'x'; 1 << 20];
        loop {
            if let Err(error) = stdin.write_all(&chunk).await {
                return error;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_write_fails_at_exit_after_restart() {
    let harness = Harness::start().await;
    let (container, mut task) = harness
        .create_and_start("deaf", harness.spec(&["sleep", "1000"]), INPUT_OUTPUT)
        .await;
    let mut exec = start_exec(&task, "deaf-exec", &["sleep", "1000"], INPUT_OUTPUT).await;
    // sleep never reads, so each FIFO fills and its writer waits for room.
    let task_writer = write_until_error(task.take_stdin().expect("task stdin"));
    let exec_writer = write_until_error(exec.take_stdin().expect("exec stdin"));

    harness
        .client
        .inject_failure(FaultTarget::Container(container.id().clone()))
        .expect("inject failure");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !task_writer.is_finished(),
        "the task's write waits for room"
    );
    assert!(
        !exec_writer.is_finished(),
        "the exec's write waits for room"
    );

    exec.kill(SIGKILL).await.expect("kill the exec");
    assert_eq!(exec.wait().await.expect("wait exec").code, 137);
    let error = tokio::time::timeout(Duration::from_secs(10), exec_writer)
        .await
        .expect("the exec's waiting write ends at its exit")
        .expect("join");
    assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");

    task.kill(SIGKILL, false).await.expect("kill the task");
    assert_eq!(task.wait().await.expect("wait task").code, 137);
    let error = tokio::time::timeout(Duration::from_secs(10), task_writer)
        .await
        .expect("the task's waiting write ends at its exit")
        .expect("join");
    assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
    delete_task_and_container(&container, task).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_event_actor_resubscribes() {
    let harness = Harness::start().await;
    let (container, task) = harness
        .run_detached("listener", &["sh", "-c", "sleep 1; exit 4"])
        .await;

    harness
        .client
        .inject_failure(FaultTarget::Events)
        .expect("inject failure");

    let exits = init_exits(&harness, "listener").await;
    assert_eq!(exits.len(), 1, "exits: {exits:?}");
    assert_eq!(exit_code(&exits[0]), Some(4));
    let subscriptions = harness
        .client
        .event_stats()
        .subscriptions
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(subscriptions >= 2, "subscriptions: {subscriptions}");
    delete_task_and_container(&container, task).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_connection_actor_is_replaced() {
    let harness = Harness::start().await;
    harness
        .client
        .inject_failure(FaultTarget::Connection)
        .expect("inject failure");
    tokio::time::sleep(Duration::from_millis(200)).await;

    harness
        .client
        .version()
        .await
        .expect("version after restart");
    let (container, task) = harness.run_detached("after", &["sh", "-c", "exit 5"]).await;
    assert_eq!(task.wait().await.expect("wait").code, 5);
    let exits = init_exits(&harness, "after").await;
    assert_eq!(exits.len(), 1, "exits: {exits:?}");
    delete_task_and_container(&container, task).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_containers_supervisor_reloads_containers() {
    let harness = Harness::start().await;
    let mut containers = Vec::new();
    let mut waits = Vec::new();
    for (index, code) in [6_u32, 7].into_iter().enumerate() {
        let id = format!("kept-{index}");
        let script = format!("sleep 2; exit {code}");
        let (container, task) = harness.run_detached(&id, &["sh", "-c", &script]).await;
        waits.push(tokio::spawn(async move { task.wait().await }));
        containers.push((container, code));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    harness
        .client
        .inject_failure(FaultTarget::Containers)
        .expect("inject failure");

    for (wait, (_, code)) in waits.into_iter().zip(&containers) {
        let status = wait.await.expect("join").expect("wait across the restart");
        assert_eq!(status.code, *code);
    }
    assert_eq!(harness.client.tracked_containers(), 2);
    for (container, code) in &containers {
        let exits = init_exits(&harness, container.id().as_str()).await;
        assert_eq!(exits.len(), 1, "{}: {exits:?}", container.id());
        assert_eq!(exit_code(&exits[0]), Some(*code));
        let task = container.task().await.expect("task after the restart");
        delete_task_and_container(container, task).await;
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_actor_reports_no_exit_again() {
    let harness = Harness::start().await;
    let (container, task) = harness.run_detached("once", &["sleep", "1000"]).await;
    let exec = start_exec(
        &task,
        "three",
        &["sh", "-c", "exit 3"],
        StdioRequest::default(),
    )
    .await;
    assert_eq!(exec.wait().await.expect("wait exec").code, 3);
    task.kill(SIGKILL, false).await.expect("kill");
    assert_eq!(task.wait().await.expect("wait task").code, 137);
    let exec_id = ProcessId::Exec(ExecId::new("three").expect("exec id"));

    for round in 0..2 {
        harness
            .client
            .inject_failure(FaultTarget::Container(container.id().clone()))
            .expect("inject failure");
        // The replacement loads and reconciles before it serves a handle's request. A request
        // that reached the failing actor first is cancelled.
        let mut status = task.status().await;
        for _ in 0..50 {
            if status.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            status = task.status().await;
        }
        let status = status.expect("status after the restart");
        assert!(
            matches!(status, keel::ProcessStatus::Stopped(exit) if exit.code == 137),
            "round {round}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let init_exits = harness.recorder.exits_of("once", &ProcessId::Init);
        assert_eq!(init_exits.len(), 1, "round {round}: {init_exits:?}");
        let exec_exits = harness.recorder.exits_of("once", &exec_id);
        assert_eq!(exec_exits.len(), 1, "round {round}: {exec_exits:?}");
        let exec_status = exec.wait().await.expect("wait exec after the restart");
        assert_eq!(exec_status.code, 3, "round {round}");
        let task_status = task.wait().await.expect("wait task after the restart");
        assert_eq!(task_status.code, 137, "round {round}");
    }
    delete_task_and_container(&container, task).await;
    harness.stop().await;
}
