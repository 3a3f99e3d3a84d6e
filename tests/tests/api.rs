//! The task and exec API on a real containerd: stdio, exec ids, deletes, kills, pauses,
//! statistics, process lists and errors.

use std::time::Duration;

use keel::spec::exec_process;
use keel::{ErrorKind, Event, ProcessId, ProcessStatus, StdioRequest};
use keel_tests::{
    Harness, INPUT_OUTPUT, OUTPUT, Recorder, SIGKILL, delete_task_and_container, force_delete,
    kill_all_and_delete, kill_and_delete, read_all, start_exec, wait_within,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_names_containerd_release() {
    let harness = Harness::start().await;
    let version = harness.client.version().await.expect("version");
    assert!(!version.version.is_empty());
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_stdin_ends_cat_as_init() {
    let harness = Harness::start().await;
    for round in 0..100 {
        let id = format!("cat-{round}");
        let container = harness.create_container(&id, &["cat"]).await;
        let mut task = container
            .create_task(INPUT_OUTPUT)
            .await
            .expect("create task");
        // Close before start on even rounds, after start on odd ones.
        if round % 2 == 0 {
            task.close_stdin().await.expect("close stdin");
            task.start().await.expect("start");
        } else {
            task.start().await.expect("start");
            task.close_stdin().await.expect("close stdin");
        }
        let output = read_all(task.take_stdout()).await;
        drop(task.take_stderr());
        let expectation = format!("round {round}: cat exits");
        let status = wait_within(Duration::from_secs(5), task.wait(), &expectation).await;
        assert_eq!(status.code, 0, "round {round}");
        assert!(output.is_empty(), "round {round}");
        delete_task_and_container(&container, task).await;
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_stdin_ends_cat_as_exec() {
    let harness = Harness::start().await;
    let (container, task) = harness.run_detached("host", &["sleep", "1000"]).await;
    for round in 0..200 {
        let exec_id = format!("cat-{round}");
        let mut process = task
            .exec(&exec_id, exec_process(["cat"]), INPUT_OUTPUT)
            .await
            .expect("exec");
        if round % 2 == 0 {
            process
                .close_stdin()
                .await
                .expect("close stdin before start");
            process.start().await.expect("start");
        } else {
            process.start().await.expect("start");
            process
                .close_stdin()
                .await
                .expect("close stdin after start");
        }
        drop(process.take_stdout());
        drop(process.take_stderr());
        let expectation = format!("round {round}: cat exits");
        let status = wait_within(Duration::from_secs(5), process.wait(), &expectation).await;
        assert_eq!(status.code, 0, "round {round}");
    }
    force_delete(&container).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_then_eof_echoes_exactly() {
    let harness = Harness::start().await;
    let (_container, mut task) = harness
        .create_and_start("echo-in", harness.spec(&["cat"]), INPUT_OUTPUT)
        .await;
    let mut stdin = task.take_stdin().expect("stdin requested");
    stdin.write_all(b"hi\n").await.expect("write");
    stdin.flush().await.expect("flush");
    drop(stdin);
    task.close_stdin().await.expect("close stdin");
    let output = read_all(task.take_stdout()).await;
    drop(task.take_stderr());
    assert_eq!(output, b"hi\n");
    assert_eq!(task.wait().await.expect("wait").code, 0);

    let exec_container = task.container().clone();
    delete_task_and_container(&exec_container, task).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_sizes_arrive_byte_exact() {
    let harness = Harness::start().await;
    for exponent in 20..=26_u32 {
        for size in [
            (1_usize << exponent) - 1,
            1 << exponent,
            (1 << exponent) + 1,
        ] {
            let id = format!("size-{size}");
            let command = format!("yes abcdefg | head -c {size}");
            let spec = harness.spec(&["sh", "-c", &command]);
            let (container, mut task) = harness.create_and_start(&id, spec, OUTPUT).await;
            let output = read_all(task.take_stdout()).await;
            drop(task.take_stderr());
            assert_eq!(output.len(), size, "size {size}");
            let pattern = b"abcdefg\n";
            let mismatch = output
                .iter()
                .enumerate()
                .position(|(index, byte)| *byte != pattern[index % pattern.len()]);
            assert_eq!(mismatch, None, "size {size}: first wrong byte");
            task.wait().await.expect("wait");
            delete_task_and_container(&container, task).await;
        }
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_reader_gets_all_output() {
    let harness = Harness::start().await;
    let size = 8 << 20;
    let command = format!("head -c {size} /dev/zero");
    let (container, mut task) = harness
        .create_and_start("late", harness.spec(&["sh", "-c", &command]), OUTPUT)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let output = read_all(task.take_stdout()).await;
    drop(task.take_stderr());
    assert_eq!(output.len(), size);
    assert!(output.iter().all(|byte| *byte == 0));
    task.wait().await.expect("wait");
    delete_task_and_container(&container, task).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_stdin_reaches_wc() {
    let harness = Harness::start().await;
    let (container, mut task) = harness
        .create_and_start("wc", harness.spec(&["wc", "-c"]), INPUT_OUTPUT)
        .await;
    let mut stdin = task.take_stdin().expect("stdin requested");
    let stdout = task.take_stdout();
    let reader = tokio::spawn(read_all(stdout));
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..64 {
        stdin.write_all(&chunk).await.expect("write");
    }
    stdin.flush().await.expect("flush");
    drop(stdin);
    task.close_stdin().await.expect("close stdin");
    drop(task.take_stderr());
    let output = reader.await.expect("reader task");
    assert_eq!(String::from_utf8_lossy(&output).trim(), "67108864");
    assert_eq!(task.wait().await.expect("wait").code, 0);
    delete_task_and_container(&container, task).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_id_reusable_after_exit_or_kill() {
    let harness = Harness::start().await;
    let (container, task) = harness.run_detached("reuse", &["sleep", "1000"]).await;

    let first = start_exec(&task, "probe", &["sleep", "1000"], StdioRequest::default()).await;
    let duplicate = task
        .exec("probe", exec_process(["true"]), StdioRequest::default())
        .await
        .expect_err("live duplicate");
    assert_eq!(duplicate.kind(), ErrorKind::AlreadyExists, "{duplicate}");
    assert!(
        matches!(
            first.status().await.expect("status"),
            ProcessStatus::Running
        ),
        "the first exec keeps running"
    );

    first.kill(SIGKILL).await.expect("kill");
    assert_eq!(first.wait().await.expect("wait").code, 137);

    let second = start_exec(&task, "probe", &["true"], StdioRequest::default()).await;
    assert_eq!(second.wait().await.expect("wait").code, 0);
    let third = start_exec(&task, "probe", &["true"], StdioRequest::default()).await;
    assert_eq!(third.wait().await.expect("wait").code, 0);
    assert_eq!(third.delete().await.expect("delete exec").code, 0);

    let processes = task.processes().await.expect("processes");
    assert_eq!(processes.len(), 1, "{processes:?}");
    assert_eq!(processes[0].pid, task.pid());
    assert_eq!(processes[0].exec_id, None);
    // keel makes the bundle folder only for FIFOs, and these execs had none.
    let exec_fifos = match std::fs::read_dir(harness.bundle_dir("reuse")) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("exec."))
            .count(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(error) => panic!("cannot read the bundle folder: {error}"),
    };
    assert_eq!(exec_fifos, 0);
    force_delete(&container).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_of_missing_binary_is_executable_not_found() {
    let harness = Harness::start().await;
    let (container, task) = harness.run_detached("nobin", &["sleep", "1000"]).await;
    let mut process = task
        .exec("ghost", exec_process(["/no/such/binary"]), OUTPUT)
        .await
        .expect("exec");
    let error = process.start().await.expect_err("missing binary");
    assert_eq!(error.kind(), ErrorKind::ExecutableNotFound, "{error}");
    drop(process);
    // The failed exec was deleted, so its id is free again.
    let retry = start_exec(&task, "ghost", &["true"], StdioRequest::default()).await;
    assert_eq!(retry.wait().await.expect("wait").code, 0);

    let missing = harness
        .client
        .container("nobody")
        .await
        .expect_err("unknown container");
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    force_delete(&container).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_follow_task_state() {
    let harness = Harness::start().await;

    let idle = harness.create_container("idle", &["true"]).await;
    let task = idle.create_task(OUTPUT).await.expect("create task");
    task.delete().await.expect("created task deletes");
    idle.delete().await.expect("delete container");

    let (busy, task) = harness.run_detached("busy", &["sleep", "1000"]).await;
    let pid = task.pid();
    let error = busy
        .task()
        .await
        .expect("task")
        .delete()
        .await
        .expect_err("running task");
    assert_eq!(error.kind(), ErrorKind::FailedPrecondition, "{error}");
    assert!(matches!(
        task.status().await.expect("status"),
        ProcessStatus::Running
    ));

    force_delete(&busy).await;
    let exits = harness.recorder.exits_of("busy", &ProcessId::Init);
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert!(
        matches!(&exits[0], Event::Exited { status, pid: exit_pid, .. } if status.code == 137 && *exit_pid == pid)
    );
    assert!(!harness.bundle_dir("busy").exists());
    assert!(harness.containerd_containers().is_empty());
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_after_exit_or_delete_return_not_found() {
    let harness = Harness::start().await;
    let (container, task) = harness.run_detached("gone", &["true"]).await;
    task.wait().await.expect("wait");
    let error = task
        .kill(SIGKILL, false)
        .await
        .expect_err("kill after exit");
    assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");

    let handle = container.task().await.expect("task");
    task.delete().await.expect("delete task");
    let error = handle.stats().await.expect_err("stats after delete");
    assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");
    let error = handle
        .processes()
        .await
        .expect_err("processes after delete");
    assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");
    container.delete().await.expect("delete container");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_task_rules() {
    let harness = Harness::start().await;
    let (container, task) = harness.run_detached("frozen", &["sleep", "1000"]).await;
    task.pause().await.expect("pause");
    assert!(matches!(
        task.status().await.expect("status"),
        ProcessStatus::Paused
    ));
    let again = task.pause().await.expect_err("second pause");
    assert_eq!(again.kind(), ErrorKind::FailedPrecondition, "{again}");
    let exec_error = task
        .exec(
            "while-paused",
            exec_process(["true"]),
            StdioRequest::default(),
        )
        .await
        .expect_err("exec while paused");
    assert_eq!(
        exec_error.kind(),
        ErrorKind::FailedPrecondition,
        "{exec_error}"
    );
    task.resume().await.expect("resume");
    let running = task.resume().await.expect_err("resume of a running task");
    assert_eq!(running.kind(), ErrorKind::FailedPrecondition, "{running}");
    task.pause().await.expect("pause again");

    task.kill(SIGKILL, false).await.expect("kill paused");
    let status = wait_within(Duration::from_secs(5), task.wait(), "paused task dies").await;
    assert_eq!(status.code, 137);

    let paused_events = |events: &[Event]| {
        events
            .iter()
            .filter(|event| matches!(event, Event::Paused))
            .count()
    };
    let before = paused_events(&harness.recorder.events_of("frozen"));
    let error = task.pause().await.expect_err("pause of stopped task");
    assert_eq!(error.kind(), ErrorKind::FailedPrecondition, "{error}");
    let error = task.resume().await.expect_err("resume of stopped task");
    assert_eq!(error.kind(), ErrorKind::FailedPrecondition, "{error}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(paused_events(&harness.recorder.events_of("frozen")), before);
    delete_task_and_container(&container, task).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_processes_of_running_task() {
    let harness = Harness::start().await;
    let spec = keel::spec::SpecBuilder::new(&harness.rootfs)
        .args(["sleep", "1000"])
        .memory_limit(64 << 20)
        .build();
    let (container, task) = harness
        .create_and_start("stats", spec, StdioRequest::default())
        .await;
    let stats = task.stats().await.expect("stats");
    assert_eq!(
        stats.cgroup,
        keel::CgroupVersion::V1,
        "this machine runs cgroup v1"
    );
    assert!(stats.pids.current >= 1, "{stats:?}");
    assert_eq!(stats.memory.limit_bytes, 64 << 20, "{stats:?}");
    assert!(stats.memory.usage_bytes > 0, "{stats:?}");

    let process = start_exec(&task, "lister", &["sleep", "1000"], StdioRequest::default()).await;
    let processes = task.processes().await.expect("processes");
    assert!(
        processes
            .iter()
            .any(|info| info.pid == task.pid() && info.exec_id.is_none()),
        "{processes:?}"
    );
    assert!(
        processes.iter().any(|info| info.pid == process.pid()
            && info.exec_id.as_ref().map(|id| id.as_str()) == Some("lister")),
        "{processes:?}"
    );
    let mut resources = oci_spec::runtime::LinuxResources::default();
    let mut memory = oci_spec::runtime::LinuxMemory::default();
    memory.set_limit(Some(128 << 20));
    resources.set_memory(Some(memory));
    task.update(resources).await.expect("update");
    assert_eq!(
        task.stats().await.expect("stats").memory.limit_bytes,
        128 << 20
    );
    force_delete(&container).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_task_resizes_and_reattaches() {
    let harness = Harness::start().await;
    let spec = keel::spec::SpecBuilder::new(&harness.rootfs)
        .args(["sh", "-c", "read line; stty size; echo got $line"])
        .terminal(true)
        .build();
    let container = harness
        .client
        .create_container("tty", spec)
        .await
        .expect("create");
    let stdio = StdioRequest {
        stdin: true,
        output: true,
        terminal: true,
    };
    let mut task = container.start_task(stdio).await.expect("start");
    assert!(
        task.take_stderr().is_none(),
        "a terminal has one output stream"
    );
    task.resize(100, 40).await.expect("resize");
    let mut stdin = task.take_stdin().expect("stdin");
    stdin.write_all(b"hello\n").await.expect("write");
    let output = read_all(task.take_stdout()).await;
    let text = String::from_utf8_lossy(&output);
    assert!(text.contains("40 100"), "{text:?}");
    assert!(text.contains("got hello"), "{text:?}");
    drop(stdin);
    task.wait().await.expect("wait");
    delete_task_and_container(&container, task).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloaded_client_reattaches_init_and_execs() {
    let harness = Harness::start().await;
    let spec = harness.spec(&["sh", "-c", "read line; echo init $line"]);
    let (_container, mut task) = harness.create_and_start("again", spec, INPUT_OUTPUT).await;
    let mut process = start_exec(
        &task,
        "side",
        &["sh", "-c", "read line; echo exec $line"],
        INPUT_OUTPUT,
    )
    .await;
    // The engine goes away: its streams close and a new client takes over.
    drop(task.take_stdout());
    drop(task.take_stderr());
    drop(task.take_stdin());
    drop(process.take_stdout());
    drop(process.take_stderr());
    drop(process.take_stdin());
    harness.client.shutdown(Duration::from_secs(5)).await;

    let recorder = Recorder::default();
    let client = harness.connect(recorder.clone()).await;
    let container = client.load_container("again").await.expect("load");
    let (mut task, mut processes) = container.attach().await.expect("attach");
    assert_eq!(processes.len(), 1);
    let mut exec = processes.remove(0);
    assert_eq!(exec.exec_id().as_str(), "side");

    let mut exec_stdin = exec.take_stdin().expect("exec stdin");
    exec_stdin.write_all(b"two\n").await.expect("write exec");
    let exec_output = read_all(exec.take_stdout()).await;
    drop(exec.take_stderr());
    assert_eq!(exec_output, b"exec two\n");
    let mut stdin = task.take_stdin().expect("init stdin");
    stdin.write_all(b"one\n").await.expect("write init");
    let output = read_all(task.take_stdout()).await;
    drop(task.take_stderr());
    assert_eq!(output, b"init one\n");
    drop((stdin, exec_stdin));
    assert_eq!(task.wait().await.expect("wait").code, 0);
    delete_task_and_container(&container, task).await;
    client.shutdown(Duration::from_secs(5)).await;
    harness.containerd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loaded_task_that_stopped_meanwhile_reports_exit() {
    let harness = Harness::start().await;
    let (_container, task) = harness
        .run_detached("gap", &["sh", "-c", "sleep 1; exit 8"])
        .await;
    let pid = task.pid();
    harness.client.shutdown(Duration::from_secs(5)).await;
    // The shim reaps the process at its exit, so a gone /proc entry means containerd reports
    // the task stopped.
    let proc_entry = std::path::PathBuf::from(format!("/proc/{pid}"));
    let mut waited = Duration::ZERO;
    while proc_entry.exists() && waited < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    assert!(
        !proc_entry.exists(),
        "the task's process {pid} is still there"
    );

    let recorder = Recorder::default();
    let client = harness.connect(recorder.clone()).await;
    let container = client.load_container("gap").await.expect("load");
    let task = container.task().await.expect("task");
    let status = wait_within(
        Duration::from_secs(10),
        task.wait(),
        "wait returns the exit found at load",
    )
    .await;
    assert_eq!(status.code, 8);
    recorder
        .wait_for_init_exit("gap", Duration::from_secs(10))
        .await;
    assert_eq!(recorder.exits_of("gap", &ProcessId::Init).len(), 1);
    assert_eq!(task.delete().await.expect("delete task").code, 8);
    container.delete().await.expect("delete container");
    assert_eq!(recorder.exits_of("gap", &ProcessId::Init).len(), 1);
    client.shutdown(Duration::from_secs(5)).await;
    harness.containerd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_ignores_output_never_taken() {
    let harness = Harness::start().await;
    let spec = harness.spec(&["sh", "-c", "echo ignored; exit 4"]);
    let (container, task) = harness.create_and_start("untaken", spec, OUTPUT).await;
    let status = wait_within(
        Duration::from_secs(5),
        task.wait(),
        "wait returns although nobody took the output",
    )
    .await;
    assert_eq!(status.code, 4);
    delete_task_and_container(&container, task).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_output_never_blocks_the_process() {
    let harness = Harness::start().await;
    // Far more than a FIFO buffers, so an unread FIFO would stop the writer for good.
    let script = "head -c 4194304 /dev/zero; exit 5";
    let (container, mut task) = harness
        .create_and_start("unread", harness.spec(&["sh", "-c", script]), OUTPUT)
        .await;
    let mut stdout = task.take_stdout().expect("stdout");
    let mut start = [0; 1024];
    stdout.read_exact(&mut start).await.expect("read the start");
    drop((stdout, task.take_stderr()));
    let status = wait_within(
        Duration::from_secs(30),
        task.wait(),
        "the process ends although its output was dropped",
    )
    .await;
    assert_eq!(status.code, 5);

    delete_task_and_container(&container, task).await;

    let (container, task) = harness
        .run_detached("unread-exec", &["sleep", "1000"])
        .await;
    let process = start_exec(&task, "script", &["sh", "-c", script], OUTPUT).await;
    let status = wait_within(
        Duration::from_secs(30),
        process.wait(),
        "the exec ends although its output was never taken",
    )
    .await;
    assert_eq!(status.code, 5);
    kill_and_delete(&container, task).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_write_fails_once_the_process_exited() {
    let harness = Harness::start().await;
    let (container, mut task) = harness
        .create_and_start("deaf", harness.spec(&["sleep", "1000"]), INPUT_OUTPUT)
        .await;
    let mut stdin = task.take_stdin().expect("stdin");
    // sleep never reads, so the FIFO fills and the writer waits for room.
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 1 << 20];
        loop {
            if let Err(error) = stdin.write_all(&chunk).await {
                return error;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !writer.is_finished(),
        "the writer waits for room in the FIFO"
    );
    task.kill(SIGKILL, false).await.expect("kill");
    assert_eq!(task.wait().await.expect("wait").code, 137);
    let error = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("the waiting write ends once the process exited")
        .expect("join");
    assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
    delete_task_and_container(&container, task).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_container_handle_returns_not_found() {
    let harness = Harness::start().await;
    let container = harness.create_container("once", &["true"]).await;
    let copy = container.clone();
    container.delete().await.expect("delete");

    let again = container.delete().await.expect_err("second delete");
    assert_eq!(again.kind(), ErrorKind::NotFound, "{again}");
    let task = copy
        .start_task(StdioRequest::default())
        .await
        .expect_err("start through a copy of the handle");
    assert_eq!(task.kind(), ErrorKind::NotFound, "{task}");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_of_missing_id_never_blocks_create() {
    let harness = Harness::start().await;
    let mut failed = Vec::new();
    for round in 0..20 {
        let id = format!("probed-{round}");
        let client = harness.client.clone();
        let probed_id = id.clone();
        // An engine that probes for an id before it creates it.
        let prober = tokio::spawn(async move {
            for _ in 0..10 {
                let _ = client.load_container(&probed_id).await;
            }
        });
        tokio::task::yield_now().await;
        let created = harness
            .client
            .create_container(&id, harness.spec(&["true"]))
            .await;
        prober.await.expect("prober");
        match created {
            Ok(container) => container.delete().await.expect("delete"),
            Err(error) => failed.push(format!("{id}: {error}")),
        }
    }
    assert!(failed.is_empty(), "{failed:?}");
    assert!(harness.containerd_containers().is_empty());
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_loads_all_wait_for_the_one_exit() {
    let harness = Harness::start().await;
    let (_container, task) = harness.run_detached("shared", &["sleep", "100"]).await;
    let pid = task.pid();
    harness.client.shutdown(Duration::from_secs(5)).await;

    // A restarted engine whose handlers all load the running container at once.
    let recorder = Recorder::default();
    let client = harness.connect(recorder.clone()).await;
    let mut loads = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        loads.push(tokio::spawn(async move {
            let container = client.load_container("shared").await?;
            container.task().await
        }));
    }
    let mut waits = Vec::new();
    for load in loads {
        let task = load.await.expect("join").expect("load and find the task");
        assert_eq!(task.pid(), pid);
        waits.push(tokio::spawn(async move { task.wait().await }));
    }
    let container = client.container("shared").await.expect("tracked");
    let task = container.task().await.expect("task");
    task.kill(9, false).await.expect("kill");
    for wait in waits {
        let status = wait.await.expect("join").expect("wait");
        assert_eq!(status.code, 137);
    }
    task.delete().await.expect("delete task");
    assert_eq!(recorder.exits_of("shared", &ProcessId::Init).len(), 1);
    container.delete().await.expect("delete container");
    assert!(harness.containerd_containers().is_empty());
    client.shutdown(Duration::from_secs(5)).await;
    harness.containerd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_id_one_wins() {
    let harness = Harness::start().await;
    for round in 0..3 {
        let id = format!("contested-{round}");
        let mut creates = Vec::new();
        for _ in 0..16 {
            let client = harness.client.clone();
            let (id, spec) = (id.clone(), harness.spec(&["sleep", "100"]));
            creates.push(tokio::spawn(async move {
                client.create_container(&id, spec).await
            }));
        }
        let mut winners = Vec::new();
        for create in creates {
            match create.await.expect("join") {
                Ok(container) => winners.push(container),
                Err(error) => assert_eq!(error.kind(), ErrorKind::AlreadyExists, "{error}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        assert_eq!(harness.containerd_containers(), vec![id.clone()]);
        winners.remove(0).delete().await.expect("delete");
        assert!(harness.containerd_containers().is_empty());
        assert!(!harness.bundle_dir(&id).exists());
        let lookup = harness.client.container(&id).await.expect_err("untracked");
        assert_eq!(lookup.kind(), ErrorKind::NotFound, "{lookup}");
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_limit_holds_under_concurrent_creates() {
    let harness = Harness::start().await;
    let mut options = harness.client_options();
    options.limits.max_containers = 3;
    let client = keel::Client::connect_with(options, Recorder::default())
        .await
        .expect("connect");
    let mut creates = Vec::new();
    for index in 0..12 {
        let client = client.clone();
        let spec = harness.spec(&["true"]);
        creates.push(tokio::spawn(async move {
            client
                .create_container(&format!("limited-{index}"), spec)
                .await
        }));
    }
    let mut created = Vec::new();
    for create in creates {
        match create.await.expect("join") {
            Ok(container) => created.push(container),
            Err(error) => assert_eq!(error.kind(), ErrorKind::FailedPrecondition, "{error}"),
        }
    }
    assert_eq!(created.len(), 3);
    assert_eq!(harness.containerd_containers().len(), 3);

    // A delete frees a place.
    created.remove(0).delete().await.expect("delete");
    let again = client
        .create_container("limited-again", harness.spec(&["true"]))
        .await
        .expect("create after a delete freed a place");
    again.delete().await.expect("delete");
    for container in created {
        container.delete().await.expect("delete");
    }
    client.shutdown(Duration::from_secs(5)).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_exec_handle_spares_reused_id() {
    let harness = Harness::start().await;
    let (container, task) = harness.run_detached("reuse", &["sleep", "1000"]).await;
    let old = start_exec(
        &task,
        "job",
        &["sh", "-c", "exit 1"],
        StdioRequest::default(),
    )
    .await;
    assert_eq!(old.wait().await.expect("wait first exec").code, 1);
    let new = start_exec(&task, "job", &["sleep", "1000"], StdioRequest::default()).await;

    let kill = old
        .kill(SIGKILL)
        .await
        .expect_err("kill through the old handle");
    assert_eq!(kill.kind(), ErrorKind::NotFound, "{kill}");
    let status = old
        .status()
        .await
        .expect_err("status through the old handle");
    assert_eq!(status.kind(), ErrorKind::NotFound, "{status}");
    let resize = old
        .resize(80, 24)
        .await
        .expect_err("resize through the old handle");
    assert_eq!(resize.kind(), ErrorKind::NotFound, "{resize}");
    let old_wait = old.wait().await.expect("wait through the old handle");
    assert_eq!(old_wait.code, 1);
    let old_delete = old.delete().await.expect("delete through the old handle");
    assert_eq!(old_delete.code, 1);

    let still_running = tokio::time::timeout(Duration::from_millis(500), new.wait()).await;
    assert!(
        still_running.is_err(),
        "second exec ended: {still_running:?}"
    );
    assert_eq!(
        new.status().await.expect("status of second exec"),
        ProcessStatus::Running
    );
    new.kill(SIGKILL).await.expect("kill second exec");
    assert_eq!(
        new.wait().await.expect("wait second exec").code,
        128 + SIGKILL
    );
    kill_all_and_delete(&container, task).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_task_handle_spares_new_task() {
    let harness = Harness::start().await;
    let (container, task) = harness.run_detached("again", &["sleep", "1000"]).await;
    let old = container
        .task()
        .await
        .expect("second handle on the first task");
    task.kill(SIGKILL, true).await.expect("kill first task");
    let first_exit = task.wait().await.expect("wait first task").code;
    assert_eq!(first_exit, 128 + SIGKILL);
    task.delete().await.expect("delete first task");
    let new = container
        .start_task(StdioRequest::default())
        .await
        .expect("start second task");

    let kill = old
        .kill(SIGKILL, true)
        .await
        .expect_err("kill through the old handle");
    assert_eq!(kill.kind(), ErrorKind::NotFound, "{kill}");
    let status = old
        .status()
        .await
        .expect_err("status through the old handle");
    assert_eq!(status.kind(), ErrorKind::NotFound, "{status}");
    let pause = old.pause().await.expect_err("pause through the old handle");
    assert_eq!(pause.kind(), ErrorKind::NotFound, "{pause}");
    let exec = old
        .exec("probe", exec_process(["true"]), StdioRequest::default())
        .await
        .expect_err("exec through the old handle");
    assert_eq!(exec.kind(), ErrorKind::NotFound, "{exec}");
    assert_eq!(
        old.wait().await.expect("wait through the old handle").code,
        first_exit
    );
    assert_eq!(
        old.delete()
            .await
            .expect("delete through the old handle")
            .code,
        first_exit
    );

    assert_eq!(
        new.status().await.expect("status of second task"),
        ProcessStatus::Running
    );
    new.kill(SIGKILL, true).await.expect("kill second task");
    assert_eq!(
        new.wait().await.expect("wait second task").code,
        128 + SIGKILL
    );
    new.delete().await.expect("delete second task");
    container.delete().await.expect("delete container");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_after_container_delete_returns_not_found() {
    let harness = Harness::start().await;
    for forced in [true, false] {
        let id = format!("gone-{forced}");
        let (container, task) = harness.run_detached(&id, &["sleep", "1000"]).await;
        let exec = start_exec(&task, "p", &["sleep", "1000"], StdioRequest::default()).await;
        let task_handle = container.task().await.expect("second task handle");
        if forced {
            force_delete(&container).await;
        } else {
            kill_all_and_delete(&container, task).await;
        }

        let waits = async { tokio::join!(exec.wait(), task_handle.wait(), exec.kill(SIGKILL)) };
        let (exec_wait, task_wait, exec_kill) = tokio::time::timeout(Duration::from_secs(1), waits)
            .await
            .unwrap_or_else(|_| panic!("{id}: requests after the delete took over 1 s"));
        for (request, result) in [("exec wait", exec_wait), ("task wait", task_wait)] {
            let error = result.expect_err(request);
            assert_eq!(
                error.kind(),
                ErrorKind::NotFound,
                "{id}: {request}: {error}"
            );
        }
        let error = exec_kill.expect_err("exec kill");
        assert_eq!(
            error.kind(),
            ErrorKind::NotFound,
            "{id}: exec kill: {error}"
        );
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_delete_ignores_held_output() {
    let harness = Harness::start().await;
    let (container, task) = harness
        .create_and_start("held", harness.spec(&["sleep", "1000"]), OUTPUT)
        .await;
    let timeout = Duration::from_secs(30);

    let started = std::time::Instant::now();
    container
        .force_delete(timeout)
        .await
        .expect("force delete while the task handle holds its output");
    let elapsed = started.elapsed();

    assert!(elapsed < timeout / 2, "force delete took {elapsed:?}");
    assert!(harness.containerd_containers().is_empty());
    drop(task);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_starts_leaves_no_created_task() {
    let harness = Harness::start().await;
    let mut starts = Vec::new();
    for index in 0..20 {
        let client = harness.client.clone();
        let id = format!("racer-{index}");
        let spec = harness.spec(&["sleep", "1000"]);
        starts.push(tokio::spawn(async move {
            let container = client.create_container(&id, spec).await?;
            container.start_task(StdioRequest::default()).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    harness.client.shutdown(Duration::from_secs(5)).await;
    for start in starts {
        let _ = start.await.expect("join");
    }

    let client = harness.connect(Recorder::default()).await;
    let listed = client.list_containers().await.expect("list");
    for summary in &listed {
        if let Some(task) = &summary.task {
            assert!(
                !matches!(task.status, ProcessStatus::Created),
                "{} was left with a created task",
                summary.id
            );
        }
    }
    for summary in listed {
        let container = client
            .load_container(summary.id.as_str())
            .await
            .expect("load");
        force_delete(&container).await;
    }
    client.shutdown(Duration::from_secs(5)).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_terminal_size_set_before_start() {
    let harness = Harness::start().await;
    let (container, task) = harness.run_detached("sized", &["sleep", "1000"]).await;
    let terminal = StdioRequest {
        stdin: false,
        output: true,
        terminal: true,
    };

    let mut sized = exec_process(["stty", "size"]);
    sized.set_terminal(Some(true));
    sized.set_console_size(Some(keel::spec::console_box(120, 50)));
    let mut process = task.exec("spec", sized, terminal).await.expect("exec");
    process.start().await.expect("start");
    let output = read_all(process.take_stdout()).await;
    assert_eq!(String::from_utf8_lossy(&output).trim(), "50 120");
    process.wait().await.expect("wait");

    let mut later = exec_process(["sh", "-c", "sleep 2; stty size"]);
    later.set_terminal(Some(true));
    let mut process = task.exec("resized", later, terminal).await.expect("exec");
    process.resize(100, 30).await.expect("resize before start");
    process.start().await.expect("start");
    let output = read_all(process.take_stdout()).await;
    assert_eq!(String::from_utf8_lossy(&output).trim(), "30 100");
    process.wait().await.expect("wait");

    kill_all_and_delete(&container, task).await;
    harness.stop().await;
}
