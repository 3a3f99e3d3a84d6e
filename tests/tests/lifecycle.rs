//! A container's life, start to finish, on a real containerd.

use std::time::Duration;

use keel::{ErrorKind, Event, ProcessId, StdioRequest};
use keel_tests::{
    Harness, INPUT_OUTPUT, OUTPUT, Recorder, assert_init_exit, delete_task_and_container,
    kill_all_and_delete, kill_and_delete, start_exec,
};
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_and_stderr_arrive_separately() {
    let harness = Harness::start().await;
    let spec = harness.spec(&["sh", "-c", "echo hello; echo oops >&2"]);
    let (container, mut task) = harness.create_and_start("echo", spec, OUTPUT).await;

    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut stdout_stream = task.take_stdout().expect("stdout requested");
    let mut stderr_stream = task.take_stderr().expect("stderr requested");
    stdout_stream
        .read_to_end(&mut stdout)
        .await
        .expect("read stdout");
    stderr_stream
        .read_to_end(&mut stderr)
        .await
        .expect("read stderr");
    drop((stdout_stream, stderr_stream));

    assert_eq!(stdout, b"hello\n");
    assert_eq!(stderr, b"oops\n");
    let status = task.wait().await.expect("wait");
    assert_eq!(status.code, 0);
    delete_task_and_container(&container, task).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_reaches_backend_once() {
    let harness = Harness::start().await;
    let spec = harness.spec(&["sh", "-c", "exit 3"]);
    let (container, task) = harness
        .create_and_start("three", spec, StdioRequest::default())
        .await;
    let pid = task.pid();

    let exited = |events: &[Event]| {
        events
            .iter()
            .any(|event| matches!(event, Event::Exited { .. }))
    };
    let events = harness
        .recorder
        .wait_for("three", Duration::from_secs(10), exited)
        .await;
    assert!(
        matches!(events.first(), Some(Event::Created { pid: created }) if *created == pid),
        "{events:?}"
    );
    assert!(
        matches!(events.get(1), Some(Event::Started { pid: started }) if *started == pid),
        "{events:?}"
    );
    assert_init_exit(&events, 2, pid, 3, "three");

    let deleted = task.delete().await.expect("delete task");
    assert_eq!(deleted.code, 3);
    container.delete().await.expect("delete container");
    // Give a late duplicate from the event stream time to show up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let exits = harness.recorder.exits_of("three", &ProcessId::Init);
    assert_eq!(exits.len(), 1, "{exits:?}");
    let events = harness.recorder.events_of("three");
    let deletes: Vec<&Event> = events
        .iter()
        .filter(|event| matches!(event, Event::Deleted { .. }))
        .collect();
    assert!(
        matches!(deletes.as_slice(), [Event::Deleted { pid: deleted_pid, status: Some(status) }] if *deleted_pid == pid && status.code == 3),
        "deletes: {deletes:?}"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_bundle_and_fifos() {
    let harness = Harness::start().await;
    let container = harness.create_container("tidy", &["echo", "bye"]).await;
    let bundle_dir = harness.bundle_dir("tidy");
    assert!(!bundle_dir.exists(), "bundle folder made only when needed");

    let mut task = container.start_task(OUTPUT).await.expect("start");
    assert!(bundle_dir.is_dir(), "bundle folder made for the FIFOs");
    let fifos = std::fs::read_dir(&bundle_dir).expect("read bundle").count();
    assert_eq!(fifos, 2, "stdout and stderr FIFOs while the task lives");
    drop(task.take_stdout());
    drop(task.take_stderr());
    task.wait().await.expect("wait");
    task.delete().await.expect("delete task");
    assert_eq!(
        std::fs::read_dir(&bundle_dir).expect("read bundle").count(),
        0
    );
    container.delete().await.expect("delete container");

    assert!(!bundle_dir.exists(), "bundle folder removed");
    assert!(harness.containerd_containers().is_empty());
    assert!(harness.containerd_tasks().is_empty());
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_id_returns_already_exists() {
    let harness = Harness::start().await;
    let first = harness.create_container("twin", &["true"]).await;
    let error = harness
        .client
        .create_container("twin", harness.spec(&["true"]))
        .await
        .expect_err("second create");
    assert_eq!(error.kind(), ErrorKind::AlreadyExists, "{error}");
    first.delete().await.expect("delete");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_id_returns_not_found() {
    let harness = Harness::start().await;
    let error = harness
        .client
        .container("ghost")
        .await
        .expect_err("untracked");
    assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");
    let error = harness
        .client
        .load_container("ghost")
        .await
        .expect_err("not in containerd");
    assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");
    assert!(
        !harness.bundle_dir("ghost").exists(),
        "a failed load leaves no folder"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ids_rejected_without_side_effects() {
    let harness = Harness::start().await;
    let long = "a".repeat(77);
    let cases = [
        "",
        ".",
        "..",
        "a/b",
        "../escape",
        "-a",
        "a-",
        "a b",
        "a\0b",
        "a\nb",
        "é",
        &long,
    ];
    for id in cases {
        let error = harness
            .client
            .create_container(id, harness.spec(&["true"]))
            .await
            .expect_err(id);
        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{id:?}: {error}");
    }
    let namespace_dir = harness.state_dir.join(&harness.namespace);
    assert!(!namespace_dir.exists(), "no folder made for invalid ids");
    assert!(harness.containerd_containers().is_empty());
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_event_stream_stays_open() {
    use std::sync::atomic::Ordering;

    let harness = Harness::start().await;
    let stats = harness.client.event_stats();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while stats.subscriptions.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the event stream never went live"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // containerd 1.6 closes a connection that sends HTTP/2 pings more often than every
    // 5 minutes without data; an idle client must keep its one subscription for longer than
    // three such pings would take at a 10 s interval.
    tokio::time::sleep(Duration::from_secs(45)).await;
    assert_eq!(stats.subscriptions.load(Ordering::Relaxed), 1);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_after_reload_removes_exec_fifos() {
    let harness = Harness::start().await;
    let (_container, task) = harness.run_detached("reloaded", &["sleep", "1000"]).await;
    let mut process = start_exec(&task, "side", &["sleep", "1000"], INPUT_OUTPUT).await;
    drop(process.take_stdin());
    drop(process.take_stdout());
    drop(process.take_stderr());
    harness.client.shutdown(Duration::from_secs(5)).await;

    // A new client loads the container without attaching to its processes.
    let client = harness.connect(Recorder::default()).await;
    let container = client.load_container("reloaded").await.expect("load");
    let task = container.task().await.expect("task");
    kill_all_and_delete(&container, task).await;

    let bundle_dir = harness.bundle_dir("reloaded");
    let left: Vec<_> = std::fs::read_dir(&bundle_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.file_name())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left in the bundle folder: {left:?}");
    assert!(!bundle_dir.exists(), "bundle folder removed");
    client.shutdown(Duration::from_secs(5)).await;
    harness.containerd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_id_under_two_containerds_stays_apart() {
    let harness = Harness::start().await;
    let other = keel_testkit::PrivateContainerd::start()
        .await
        .expect("second containerd");
    // Another engine with its own containerd and state folder, in a namespace of the same name.
    let options = keel::ClientOptions::new(other.socket(), harness.namespace.as_str())
        .state_dir(other.client_state_dir());
    let other_client = keel::Client::connect_with(options, keel_tests::Recorder::default())
        .await
        .expect("connect to the second containerd");

    let (container, task) = harness.run_detached("twin", &["sleep", "1000"]).await;
    let other_container = other_client
        .create_container("twin", harness.spec(&["sleep", "1000"]))
        .await
        .expect("create the same id under the second containerd");
    let other_task = other_container
        .start_task(StdioRequest::default())
        .await
        .expect("start the same id under the second containerd");
    let other_status = kill_and_delete(&other_container, other_task).await;
    assert_eq!(other_status.code, 137);
    assert_eq!(
        task.status().await.expect("status"),
        keel::ProcessStatus::Running,
        "the first containerd's container outlives the second one's"
    );

    other_client.shutdown(Duration::from_secs(5)).await;
    other.stop().await;
    kill_and_delete(&container, task).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_start_reports_exit_and_delete() {
    let harness = Harness::start().await;
    let container = harness.create_container("doomed", &["true"]).await;
    let mut task = container
        .create_task(StdioRequest::default())
        .await
        .expect("create task");
    let pid = task.pid();
    // The created task's process is runc's init, waiting to be started; killed from outside,
    // the start has nothing left to run.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the created process");
    task.start().await.expect_err("start of a killed process");

    let deleted = |events: &[Event]| {
        events
            .iter()
            .any(|event| matches!(event, Event::Deleted { .. }))
    };
    let events = harness
        .recorder
        .wait_for("doomed", Duration::from_secs(10), deleted)
        .await;
    assert!(
        matches!(events.first(), Some(Event::Created { pid: created }) if *created == pid),
        "{events:?}"
    );
    assert_init_exit(&events, 1, pid, 137, "doomed");
    assert!(
        matches!(events.get(2), Some(Event::Deleted { pid: deleted, .. }) if *deleted == pid),
        "{events:?}"
    );
    let status = task.wait().await.expect("wait after the failed start");
    assert_eq!(status.code, 137);
    assert_eq!(
        task.status().await.expect_err("no task left").kind(),
        ErrorKind::NotFound
    );
    container.delete().await.expect("delete container");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let all = harness.recorder.events_of("doomed");
    assert_eq!(all.len(), 3, "{all:?}");
    harness.stop().await;
}
