//! Checkpoint and restore through criu on a real containerd: the image goes to the caller's
//! folder and containerd stores nothing, a restored process continues where it stopped, and
//! keel removes its criu work folders but never the caller's folder.
//!
//! runc runs the criu that `cargo xtask setup` prepares (see keel-testkit's `KEEL_CRIU_DIR`).

#![allow(
    clippy::expect_used,
    reason = "the helpers of these tests fail the test on any error, as the tests do"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keel::{Container, Event, ProcessId, ProcessStatus, RUNC_RUNTIME, RuncOptions, Runtime, Task};
use keel_tests::{
    Harness, OUTPUT, Recorder, SIGKILL, count_init_exits, kill_and_delete, start_exec, wait_within,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Counts up about ten times a second, replacing /tmp/n with each value and then printing it.
/// The count lives in the shell's memory, so a restored process continues it while a fresh one
/// would start again at 1. The rename keeps readers from seeing a half-written file.
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i > /tmp/n.next; \
                       mv /tmp/n.next /tmp/n; echo $i; sleep 0.1; done";

/// The count a test waits for before it checkpoints, far enough from 1 that a restored
/// process cannot be mistaken for a fresh one.
const WARM_COUNT: u64 = 10;

/// A generous bound for events, output and counts that arrive within a second normally.
const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_leaving_task_running() {
    let harness = Harness::start().await;
    let (container, task) = start_warm_counter(&harness, "running").await;
    let image = checkpoint_dir(&harness, "running");

    checkpoint(&task, &image, false).await;

    assert!(image.join("inventory.img").is_file(), "no criu inventory");
    assert_eq!(task.status().await.expect("status"), ProcessStatus::Running);
    let before = read_count_by_exec(&task, "read-before").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = read_count_by_exec(&task, "read-after").await;
    assert!(after > before, "count stopped at {before}, then {after}");
    assert_eq!(harness.containerd_content(), Vec::<String>::new());
    assert_eq!(harness.containerd_leases(), Vec::<String>::new());

    task.kill(SIGKILL, false).await.expect("kill");
    task.wait().await.expect("wait");
    task.delete().await.expect("delete task");
    assert_eq!(init_exits(&harness.recorder, "running").len(), 1);
    container.delete().await.expect("delete container");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_with_exit_then_restore_continues() {
    let harness = Harness::start().await;
    let (container, task) = start_warm_counter(&harness, "restored").await;
    let first_pid = task.pid();
    let image = checkpoint_dir(&harness, "restored");

    checkpoint(&task, &image, true).await;
    let status = wait_within(TIMEOUT, task.wait(), "task exits after checkpoint").await;
    let exits = harness
        .recorder
        .wait_for_init_exit("restored", TIMEOUT)
        .await;
    assert_eq!(count_init_exits(&exits), 1, "{exits:?}");
    assert_ne!(
        status.code, 0,
        "runc stops the checkpointed task with a signal"
    );
    let checkpointed = count_on_host(&harness).expect("count written before checkpoint");
    assert_eq!(harness.containerd_content(), Vec::<String>::new());
    assert_eq!(harness.containerd_leases(), Vec::<String>::new());
    task.delete().await.expect("delete task");

    let mut restored = container
        .restore_task(&image, OUTPUT)
        .await
        .expect("restore");
    assert_ne!(restored.pid(), 0);
    assert_ne!(restored.pid(), first_pid);
    assert_eq!(
        restored.status().await.expect("status"),
        ProcessStatus::Running
    );
    let printed = first_printed_count(&mut restored).await;
    assert!(
        printed == checkpointed || printed == checkpointed + 1,
        "restored process printed {printed}, checkpoint was at {checkpointed}"
    );
    let read = read_count_by_exec(&restored, "read-restored").await;
    assert!(read >= printed, "read {read} after {printed} was printed");

    restored.kill(SIGKILL, false).await.expect("kill");
    restored.wait().await.expect("wait");
    restored.delete().await.expect("delete restored task");
    let exits = init_exits(&harness.recorder, "restored");
    assert_eq!(exits.len(), 2, "{exits:?}");
    container.delete().await.expect("delete container");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_restores_from_one_image_at_once() {
    let harness = Harness::start().await;
    let (source, task) = start_warm_counter(&harness, "source").await;
    let image = checkpoint_dir(&harness, "shared");
    checkpoint(&task, &image, true).await;
    wait_within(TIMEOUT, task.wait(), "task exits after checkpoint").await;
    let checkpointed = count_on_host(&harness).expect("count written before checkpoint");
    task.delete().await.expect("delete task");
    source.delete().await.expect("delete source container");

    let first = create_counter(&harness, "copy-a").await;
    let second = create_counter(&harness, "copy-b").await;
    let (first_task, second_task) = tokio::join!(
        first.restore_task(&image, OUTPUT),
        second.restore_task(&image, OUTPUT)
    );
    let mut first_task = first_task.expect("restore copy-a");
    let mut second_task = second_task.expect("restore copy-b");

    assert_ne!(first_task.pid(), second_task.pid());
    for (name, task) in [("copy-a", &mut first_task), ("copy-b", &mut second_task)] {
        assert_eq!(
            task.status().await.expect("status"),
            ProcessStatus::Running,
            "{name}"
        );
        let printed = first_printed_count(task).await;
        assert!(
            printed == checkpointed || printed == checkpointed + 1,
            "{name} printed {printed}, checkpoint was at {checkpointed}"
        );
    }

    for (container, task) in [(first, first_task), (second, second_task)] {
        task.kill(SIGKILL, false).await.expect("kill");
        task.wait().await.expect("wait");
        task.delete().await.expect("delete task");
        assert_eq!(
            init_exits(&harness.recorder, container.id().as_str()).len(),
            1
        );
        container.delete().await.expect("delete container");
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_from_non_checkpoint_rejected() {
    let harness = Harness::start().await;
    let container = create_counter(&harness, "nocp").await;
    let empty = checkpoint_dir(&harness, "empty");
    std::fs::create_dir_all(&empty).expect("create empty folder");
    let missing = checkpoint_dir(&harness, "missing");

    for dir in [&empty, &missing] {
        let error = container
            .restore_task(dir, OUTPUT)
            .await
            .expect_err("restore from a folder without a checkpoint");
        assert_eq!(error.kind(), keel::ErrorKind::InvalidArgument, "{error}");
        assert!(error.to_string().contains("checkpoint folder"), "{error}");
    }

    let no_task = container.task().await.expect_err("no task was made");
    assert_eq!(no_task.kind(), keel::ErrorKind::NotFound, "{no_task}");

    // A folder that looks like a checkpoint passes the check, and runc's restore fails.
    let corrupt = checkpoint_dir(&harness, "corrupt");
    std::fs::create_dir_all(&corrupt).expect("create corrupt folder");
    std::fs::write(corrupt.join("inventory.img"), b"not an image").expect("write inventory");
    std::fs::write(corrupt.join("descriptors.json"), b"[]").expect("write descriptors");
    let error = container
        .restore_task(&corrupt, OUTPUT)
        .await
        .expect_err("restore from a corrupt image");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = harness.recorder.events_of("nocp");
    assert!(events.is_empty(), "events of a failed restore: {events:?}");

    // runc's error names criu's log, which stays until the container is deleted.
    let message = match std::error::Error::source(&error) {
        Some(source) => source.to_string(),
        None => error.to_string(),
    };
    let log = message
        .split(|c: char| c.is_whitespace() || c == '"' || c == ':')
        .find(|word| word.ends_with("restore.log"))
        .map(PathBuf::from);
    let Some(log) = log else {
        panic!("no criu log named in {message:?}");
    };
    assert!(log.is_file(), "{} is gone", log.display());

    container.delete().await.expect("delete container");
    assert!(!log.exists(), "{} outlived the container", log.display());
    assert!(!harness.bundle_dir("nocp").exists(), "bundle folder kept");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_folder_outlives_container() {
    let harness = Harness::start().await;
    let (container, task) = start_warm_counter(&harness, "kept").await;
    let image = checkpoint_dir(&harness, "kept");
    let bundle = harness.bundle_dir("kept");

    checkpoint(&task, &image, false).await;
    std::fs::write(image.join("caller-note"), "mine").expect("write caller's file");
    assert_eq!(criu_work_dirs(&bundle), Vec::<PathBuf>::new());
    checkpoint(&task, &image.join("second"), true).await;
    task.wait().await.expect("wait");
    assert_eq!(criu_work_dirs(&bundle), Vec::<PathBuf>::new());
    task.delete().await.expect("delete task");

    let mut restored = container
        .restore_task(&image, OUTPUT)
        .await
        .expect("restore");
    discard_output(&mut restored);
    assert_eq!(criu_work_dirs(&bundle), Vec::<PathBuf>::new());
    kill_and_delete(&container, restored).await;

    assert!(image.join("inventory.img").is_file(), "image removed");
    assert!(
        image.join("second/inventory.img").is_file(),
        "second image removed"
    );
    assert_eq!(
        std::fs::read_to_string(image.join("caller-note")).ok(),
        Some("mine".to_owned())
    );
    assert!(!bundle.exists(), "bundle folder left behind");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loaded_container_keeps_runtime_options() {
    let harness = Harness::start().await;
    let runtime = Runtime {
        name: RUNC_RUNTIME.to_owned(),
        runc: Some(RuncOptions {
            binary_name: "runc".to_owned(),
            ..RuncOptions::default()
        }),
    };
    let container = harness
        .client
        .create_container_with("reloaded", counter_spec(&harness), runtime, HashMap::new())
        .await
        .expect("create");
    let task = start_counter(&container).await;
    let first_pid = task.pid();
    wait_for_count(&harness, WARM_COUNT).await;
    harness.client.shutdown(Duration::from_secs(5)).await;

    let recorder = Recorder::default();
    let client = harness.connect(recorder.clone()).await;
    let container = client
        .load_container("reloaded")
        .await
        .expect("load container");
    let task = container.task().await.expect("task of loaded container");
    assert_eq!(task.pid(), first_pid);
    let image = checkpoint_dir(&harness, "reloaded");

    checkpoint(&task, &image, true).await;
    wait_within(TIMEOUT, task.wait(), "task exits after checkpoint").await;
    let events = recorder.wait_for_init_exit("reloaded", TIMEOUT).await;
    assert_eq!(count_init_exits(&events), 1, "{events:?}");
    task.delete().await.expect("delete task");

    let mut restored = container
        .restore_task(&image, OUTPUT)
        .await
        .expect("restore with the loaded runtime options");
    discard_output(&mut restored);
    assert_eq!(
        restored.status().await.expect("status"),
        ProcessStatus::Running
    );
    kill_and_delete(&container, restored).await;
    client.shutdown(Duration::from_secs(5)).await;
    harness.stop().await;
}

/// Checkpoints the task, and on failure panics with the end of criu's log, whose path runc's
/// shim puts after `path=` in the error message.
async fn checkpoint(task: &Task, dir: &Path, exit: bool) {
    let Err(error) = task.checkpoint(dir, exit).await else {
        return;
    };
    let message = format!("{error:?}");
    let log = message
        .split("path= ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|path| std::fs::read_to_string(path.trim()).ok())
        .unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    panic!(
        "checkpoint failed: {message}\ncriu log:\n{}",
        tail.join("\n")
    );
}

fn counter_spec(harness: &Harness) -> oci_spec::runtime::Spec {
    harness.spec(&["sh", "-c", COUNTER])
}

/// Starts the counter with stdout and stderr as FIFOs, so its stdio are the shim's pipes, which
/// runc connects to the new task's FIFOs on restore. keel's ends are dropped at once, because a
/// task's `wait` returns only after its output streams are closed.
async fn start_counter(container: &Container) -> Task {
    let mut task = container.start_task(OUTPUT).await.expect("start");
    discard_output(&mut task);
    task
}

fn discard_output(task: &mut Task) {
    drop(task.take_stdout());
    drop(task.take_stderr());
}

/// Creates container `id` running the counter, starts it, and waits until it reached
/// [`WARM_COUNT`].
async fn start_warm_counter(harness: &Harness, id: &str) -> (Container, Task) {
    let container = create_counter(harness, id).await;
    let task = start_counter(&container).await;
    wait_for_count(harness, WARM_COUNT).await;
    (container, task)
}

async fn create_counter(harness: &Harness, id: &str) -> Container {
    harness.create_container(id, &["sh", "-c", COUNTER]).await
}

/// Returns a folder for a checkpoint image inside the test's containerd folder; keel makes it.
fn checkpoint_dir(harness: &Harness, name: &str) -> PathBuf {
    harness.containerd.dir().join("checkpoints").join(name)
}

/// Reads the count the counter last wrote, from the host side of the shared root folder.
fn count_on_host(harness: &Harness) -> Option<u64> {
    let text = std::fs::read_to_string(harness.rootfs.join("tmp/n")).ok()?;
    text.trim().parse().ok()
}

async fn wait_for_count(harness: &Harness, count: u64) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while count_on_host(harness).is_none_or(|current| current < count) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "counter did not reach {count}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads /tmp/n inside the task's container with `cat`, run as an exec process.
async fn read_count_by_exec(task: &Task, exec_id: &str) -> u64 {
    let mut process = start_exec(task, exec_id, &["cat", "/tmp/n"], OUTPUT).await;
    drop(process.take_stderr());
    let mut stdout = process.take_stdout().expect("stdout requested");
    let mut text = String::new();
    tokio::time::timeout(TIMEOUT, stdout.read_to_string(&mut text))
        .await
        .expect("exec output in time")
        .expect("read exec output");
    drop(stdout);
    let status = process.wait().await.expect("wait exec");
    assert_eq!(status.code, 0, "cat /tmp/n failed");
    process.delete().await.expect("delete exec");
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("cat /tmp/n printed {text:?}"))
}

/// Returns the first count the task prints on its stdout, and drops both output streams.
async fn first_printed_count(task: &mut Task) -> u64 {
    drop(task.take_stderr());
    let stdout = task.take_stdout().expect("stdout requested");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(TIMEOUT, lines.next_line())
        .await
        .expect("output in time")
        .expect("read output")
        .expect("a line before end of output");
    line.trim()
        .parse()
        .unwrap_or_else(|_| panic!("counter printed {line:?}"))
}

fn init_exits(recorder: &Recorder, container_id: &str) -> Vec<Event> {
    recorder.exits_of(container_id, &ProcessId::Init)
}

/// Lists the criu work folders keel made in a bundle folder and did not remove.
fn criu_work_dirs(bundle: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(bundle) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("criu-work"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_checkpoint_keeps_its_folder() {
    let harness = Harness::start_with(
        |options| options.call_timeout = Duration::from_secs(2),
        |r| r,
    )
    .await;
    let (container, task) = start_warm_counter(&harness, "frozen").await;
    let image = checkpoint_dir(&harness, "frozen");

    // containerd freezes while the shim dumps, so the dump can finish before containerd
    // replies to the call.
    let freeze = async {
        tokio::time::sleep(Duration::from_millis(40)).await;
        harness.containerd.freeze().expect("freeze");
    };
    let (result, ()) = tokio::join!(task.checkpoint(&image, false), freeze);
    let folder_kept = image.is_dir();
    harness.containerd.thaw().expect("thaw");

    if let Err(error) = &result {
        assert_eq!(error.kind(), keel::ErrorKind::TimedOut, "{error}");
    }
    assert!(folder_kept, "the folder of an unanswered checkpoint stays");
    kill_and_delete(&container, task).await;
    assert!(
        image.is_dir(),
        "deleting the container leaves the caller's folder"
    );
    harness.stop().await;
}
