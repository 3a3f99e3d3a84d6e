//! The `keel` binary against a real containerd. The tests cover output and exit codes, piped
//! stdin, kill (real-time signals too), rm, and ps and events of containers another client
//! made. They also cover JSON output, a pseudo-terminal session, exit codes after a shim dies,
//! the errors of commands on a container without a task, and keel's own supervised containerd.
//!
//! The binary is built once per test run with `cargo build -p keel-cli` into the target folder
//! of this test binary, because cargo hands `CARGO_BIN_EXE_*` only to tests of the binary's
//! own package.

#![allow(
    clippy::expect_used,
    reason = "the helpers of these tests fail the test on any error, as the tests do"
)]

use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use keel_supervisor::{Containers, Supervisor, SupervisorConfig};
use keel_testkit::PrivateContainerd;
use keel_tests::{create_and_start, delete_task_and_container};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::Command;

/// Generous bound for a command that should take a second or two.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the `keel` binary once and returns its path.
fn keel_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let test_binary = std::env::current_exe().expect("test binary path");
        // The test binary is <target>/<profile>/deps/cli-<hash>.
        let profile_dir = test_binary
            .parent()
            .and_then(Path::parent)
            .expect("profile folder");
        let target_dir = profile_dir.parent().expect("target folder");
        let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let status = std::process::Command::new(option_env!("CARGO").unwrap_or("cargo"))
            .args(["build", "--quiet", "--package", "keel-cli", "--bin", "keel"])
            .args(["--profile", profile])
            .arg("--target-dir")
            .arg(target_dir)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build of keel-cli failed");
        profile_dir.join("keel")
    })
}

/// A private containerd, a namespace, a busybox root folder and a state folder for the CLI.
struct CliHarness {
    containerd: PrivateContainerd,
    namespace: String,
    rootfs: PathBuf,
    state_dir: PathBuf,
}

impl CliHarness {
    async fn start() -> Self {
        keel_tests::init_tracing();
        let binary = keel_binary().to_owned();
        assert!(binary.is_file(), "{} missing", binary.display());
        let containerd = PrivateContainerd::start()
            .await
            .expect("start private containerd");
        let namespace = containerd.new_namespace();
        let rootfs = containerd.busybox_rootfs().expect("busybox rootfs");
        let state_dir = containerd.dir().join("cli");
        Self {
            containerd,
            namespace,
            rootfs,
            state_dir,
        }
    }

    /// Returns `keel --address <socket> --namespace <ns> --state-dir <dir> <args>`.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(keel_binary());
        command
            .arg("--address")
            .arg(self.containerd.socket())
            .args(["--namespace", &self.namespace])
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(args)
            .kill_on_drop(true);
        command
    }

    /// Returns `keel run --rootfs <busybox root folder> <flags> <id> -- <command>`.
    fn run_command(&self, flags: &[&str], id: &str, command: &[&str]) -> Command {
        let rootfs = self.rootfs.to_string_lossy().into_owned();
        let mut args = vec!["run", "--rootfs", rootfs.as_str()];
        args.extend_from_slice(flags);
        args.push(id);
        args.push("--");
        args.extend_from_slice(command);
        self.command(&args)
    }

    /// Runs `keel <args>` with `stdin` piped in (or none) and returns its output.
    async fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        output_of(self.command(args), stdin).await
    }

    /// Runs `keel run` with the busybox root folder.
    async fn run_container(&self, flags: &[&str], id: &str, command: &[&str]) -> Output {
        output_of(self.run_command(flags, id, command), None).await
    }

    /// Runs `keel run -d` with the busybox root folder and asserts that it succeeded.
    async fn start_detached(&self, id: &str, command: &[&str]) {
        let started = self.run_container(&["-d"], id, command).await;
        assert!(started.status.success(), "run -d {id} failed: {started:?}");
    }

    /// Returns the rows of `keel ps --format json`.
    async fn ps(&self) -> Vec<serde_json::Value> {
        let output = self.run(&["ps", "--format", "json"], None).await;
        assert!(output.status.success(), "ps failed: {output:?}");
        let rows: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("ps output is JSON");
        rows.as_array().expect("ps output is an array").clone()
    }

    /// Runs `keel ps` every 100 ms until `done` holds for its rows, at most 100 times, and
    /// returns the last rows.
    async fn poll_ps(&self, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
        let mut rows = Vec::new();
        for _ in 0..100 {
            rows = self.ps().await;
            if done(&rows) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        rows
    }

    /// Starts `keel events --format json` and returns it with the first exit event it prints.
    async fn first_exit_event(&self) -> (tokio::process::Child, serde_json::Value) {
        let mut events = self.command(&["events", "--format", "json"]);
        events.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = events.spawn().expect("spawn keel events");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let read_exit = async {
            while let Some(line) = lines.next_line().await.expect("read events") {
                let event: serde_json::Value = serde_json::from_str(&line).expect("event is JSON");
                if event["event"].get("Exited").is_some() {
                    return event;
                }
            }
            panic!("events ended without an exit");
        };
        let exit = tokio::time::timeout(COMMAND_TIMEOUT, read_exit)
            .await
            .expect("exit event in time");
        (child, exit)
    }

    async fn stop(self) {
        self.containerd.stop().await;
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `command` with `stdin` piped in (or none) and returns its output.
async fn output_of(mut command: Command, stdin: Option<&[u8]>) -> Output {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn keel");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin piped");
        pipe.write_all(input).await.expect("write stdin");
        drop(pipe);
    }
    finish(child).await
}

/// Sends `signal` to the `keel` process `child`.
fn send_signal(child: &tokio::process::Child, signal: Signal) {
    let pid = i32::try_from(child.id().expect("keel pid")).expect("pid fits");
    nix::sys::signal::kill(Pid::from_raw(pid), signal)
        .unwrap_or_else(|error| panic!("failed to send {signal} to keel: {error}"));
}

/// Waits for the `keel` process `child` to exit, at most [`COMMAND_TIMEOUT`]. Panics with
/// `expectation` when it takes longer.
async fn exit_in_time(child: &mut tokio::process::Child, expectation: &str) -> ExitStatus {
    tokio::time::timeout(COMMAND_TIMEOUT, child.wait())
        .await
        .unwrap_or_else(|_| panic!("{expectation}: timed out after {COMMAND_TIMEOUT:?}"))
        .expect("wait for keel")
}

/// Asserts that the `keel` process behind `output` exited with `code` and wrote nothing to
/// stderr.
fn assert_quiet_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stderr: {}",
        text(&output.stderr)
    );
    assert!(
        output.stderr.is_empty(),
        "no error printed: {}",
        text(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_prints_output_and_exit_code() {
    let harness = CliHarness::start().await;

    let output = harness
        .run_container(
            &["--rm"],
            "echo",
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
        )
        .await;

    assert_eq!(text(&output.stdout), "out\n");
    assert_eq!(text(&output.stderr), "err\n");
    assert_eq!(output.status.code(), Some(3));
    assert!(harness.ps().await.is_empty(), "--rm removed the container");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_interactive_reads_piped_stdin() {
    let harness = CliHarness::start().await;
    let command = harness.run_command(&["-i", "--rm"], "cat", &["cat"]);

    let output = output_of(command, Some(b"line one\nline two\n")).await;

    assert_eq!(text(&output.stdout), "line one\nline two\n");
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        text(&output.stderr)
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_then_rm_detached_container() {
    let harness = CliHarness::start().await;

    let started = harness
        .run_container(&["-d"], "sleeper", &["sleep", "1000"])
        .await;
    let running = harness.ps().await;
    let killed = harness.run(&["kill", "-s", "KILL", "sleeper"], None).await;
    let stopped = harness.poll_ps(|rows| rows[0]["status"] != "running").await;
    let removed = harness.run(&["rm", "sleeper"], None).await;
    let after_rm = harness.ps().await;

    assert!(started.status.success(), "run -d failed: {started:?}");
    assert_eq!(running.len(), 1);
    assert_eq!(running[0]["id"], "sleeper");
    assert_eq!(running[0]["status"], "running");
    assert!(running[0]["pid"].as_u64().is_some_and(|pid| pid > 0));
    assert!(killed.status.success(), "kill failed: {killed:?}");
    assert_eq!(stopped[0]["status"], "stopped (exit 137)");
    assert!(removed.status.success(), "rm failed: {removed:?}");
    assert_eq!(text(&removed.stdout), "sleeper\n");
    assert!(after_rm.is_empty());
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_of_running_container_needs_force() {
    let harness = CliHarness::start().await;
    harness
        .run_container(&["-d"], "busy", &["sleep", "1000"])
        .await;

    let refused = harness.run(&["rm", "busy"], None).await;
    let forced = harness.run(&["rm", "-f", "busy"], None).await;

    assert_eq!(refused.status.code(), Some(5), "failed precondition");
    let message = text(&refused.stderr);
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(message.contains("busy"), "names the id: {message}");
    assert!(message.contains("keel rm -f"), "says what to do: {message}");
    assert!(forced.status.success(), "rm -f failed: {forced:?}");
    assert!(harness.ps().await.is_empty());
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_exit_with_code_of_kind() {
    let harness = CliHarness::start().await;
    harness
        .run_container(&["-d"], "taken", &["sleep", "1000"])
        .await;

    let missing = harness.run(&["kill", "missing"], None).await;
    let duplicate = harness.run_container(&[], "taken", &["true"]).await;
    let bad_id = harness.run_container(&[], "bad id", &["true"]).await;
    let bad_filter = harness.run(&["events", "bad id"], None).await;
    let memory = harness
        .run_container(&["--rm", "--memory", "1k"], "tiny", &["true"])
        .await;
    let bad_path = harness
        .run_container(&["--rm"], "nocmd", &["/no/such/program"])
        .await;

    assert_eq!(missing.status.code(), Some(3), "not found");
    assert!(text(&missing.stderr).contains("missing"));
    assert!(text(&missing.stderr).contains("keel ps"));
    assert_eq!(duplicate.status.code(), Some(4), "already exists");
    assert_eq!(bad_id.status.code(), Some(2), "invalid argument");
    assert_eq!(
        bad_filter.status.code(),
        Some(2),
        "events with an invalid id"
    );
    assert_eq!(memory.status.code(), Some(2), "memory limit below 6 MiB");
    assert_eq!(bad_path.status.code(), Some(127), "executable not found");

    harness.start_detached("ended", &["true"]).await;
    harness
        .poll_ps(|rows| {
            rows.iter()
                .any(|row| row["id"] == "ended" && row["status"] == "stopped")
        })
        .await;
    let resumed = harness.run(&["resume", "ended"], None).await;
    assert_eq!(
        resumed.status.code(),
        Some(5),
        "resume of a stopped task: {}",
        text(&resumed.stderr)
    );
    let piped = output_of(
        harness.run_command(&["-i", "-t", "--rm"], "piped", &["wc", "-l"]),
        Some(b"a\nb\n"),
    )
    .await;
    assert_eq!(piped.status.code(), Some(2), "-i -t with piped stdin");
    assert!(
        text(&piped.stderr).contains("terminal"),
        "{}",
        text(&piped.stderr)
    );
    let exec_piped = harness
        .run(
            &["exec", "-i", "-t", "taken", "--", "wc", "-l"],
            Some(b"a\n"),
        )
        .await;
    assert_eq!(
        exec_piped.status.code(),
        Some(2),
        "exec -i -t with piped stdin"
    );
    harness.run(&["rm", "-f", "taken", "ended"], None).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_print_exit_as_json() {
    let harness = CliHarness::start().await;
    harness
        .start_detached("short", &["sh", "-c", "sleep 2; exit 7"])
        .await;

    let (mut child, exit) = harness.first_exit_event().await;
    send_signal(&child, Signal::SIGINT);
    let status = exit_in_time(&mut child, "keel events stops").await;

    assert_eq!(exit["container_id"], "short");
    assert_eq!(exit["event"]["Exited"]["status"]["code"], 7);
    assert_eq!(exit["event"]["Exited"]["process"], "Init");
    let timestamp = exit["timestamp"].as_str().unwrap_or_default();
    assert!(
        timestamp.ends_with('Z'),
        "not an RFC 3339 time: {timestamp:?}"
    );
    assert_eq!(status.code(), Some(0));
    harness.run(&["rm", "-f", "short"], None).await;
    harness.stop().await;
}

/// A backend for a library client that the CLI must not depend on.
struct NoEvents;

#[keel::async_trait]
impl keel::Backend for NoEvents {
    async fn handle_event(&self, _event: keel::ContainerEvent) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ps_and_events_show_containers_of_other_clients() {
    let harness = CliHarness::start().await;
    let options = keel::ClientOptions::new(harness.containerd.socket(), harness.namespace.as_str())
        .state_dir(harness.containerd.dir().join("library"));
    let client = keel::Client::connect_with(options, NoEvents)
        .await
        .expect("connect a library client");
    let spec = keel::spec::SpecBuilder::new(&harness.rootfs)
        .args(["sh", "-c", "sleep 2; exit 4"])
        .build();
    let (container, task) =
        create_and_start(&client, "library-made", spec, keel::StdioRequest::default()).await;

    let rows = harness.ps().await;
    assert_eq!(rows.len(), 1, "ps rows: {rows:?}");
    assert_eq!(rows[0]["id"], "library-made");
    assert_eq!(rows[0]["pid"], task.pid());
    assert_eq!(rows[0]["status"], "running");
    assert_eq!(rows[0]["runtime"], "io.containerd.runc.v2");

    let (mut child, exit) = harness.first_exit_event().await;
    child.kill().await.expect("stop keel events");
    assert_eq!(exit["container_id"], "library-made");
    assert_eq!(exit["event"]["Exited"]["status"]["code"], 4);

    assert_eq!(task.wait().await.expect("wait").code, 4);
    let rows = harness.ps().await;
    assert_eq!(rows[0]["status"], "stopped (exit 4)");
    delete_task_and_container(&container, task).await;
    assert!(harness.ps().await.is_empty(), "ps after delete");
    client.shutdown(Duration::from_secs(5)).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_session_follows_window_size() {
    let harness = CliHarness::start().await;
    let size = nix::pty::Winsize {
        ws_row: 30,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("open pty");
    let script = "echo \"first $(stty size)\"; \
                  for want in '30 100' '40 120'; do \
                  i=0; \
                  while [ \"$(stty size)\" != \"$want\" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; \
                  echo \"size $(stty size)\"; \
                  done; \
                  [ -t 0 ] && echo on-a-tty";
    let mut command = harness.run_command(&["-i", "-t", "--rm"], "tty", &["sh", "-c", script]);
    let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("clone pty slave"));
    command
        .stdin(slave(&pty.slave))
        .stdout(slave(&pty.slave))
        .stderr(slave(&pty.slave));
    let mut child = command.spawn().expect("spawn keel run -t");
    drop(pty.slave);
    let screen = read_pty(pty.master.try_clone().expect("clone pty master"));

    wait_for_text(&screen, "size 30 100").await;
    let bigger = rustix::termios::Winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(&pty.master, bigger).expect("resize pty");
    send_signal(&child, Signal::SIGWINCH);
    let status = exit_in_time(&mut child, "keel run -t finishes").await;
    wait_for_text(&screen, "on-a-tty").await;
    let shown = screen.lock().expect("screen lock").clone();

    assert!(shown.contains("first 30 100"), "screen: {shown:?}");
    assert!(shown.contains("size 30 100"), "screen: {shown:?}");
    assert!(shown.contains("size 40 120"), "screen: {shown:?}");
    assert!(shown.contains("on-a-tty"), "screen: {shown:?}");
    assert_eq!(status.code(), Some(0), "screen: {shown:?}");
    harness.stop().await;
}

/// Collects everything written to the pseudo-terminal on a thread, until all slave ends close.
fn read_pty(master: OwnedFd) -> Arc<Mutex<String>> {
    let screen = Arc::new(Mutex::new(String::new()));
    let collected = Arc::clone(&screen);
    std::thread::spawn(move || {
        let mut master = std::fs::File::from(master);
        let mut buffer = [0_u8; 4096];
        // Reading fails with EIO once the last slave end is closed.
        while let Ok(count @ 1..) = master.read(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..count]).into_owned();
            collected.lock().expect("screen lock").push_str(&text);
        }
    });
    screen
}

async fn wait_for_text(screen: &Mutex<String>, wanted: &str) {
    let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
    while !screen.lock().expect("screen lock").contains(wanted) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{wanted:?} not shown: {:?}",
            screen.lock().expect("screen lock")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

static STATE_COUNTER: AtomicU32 = AtomicU32::new(0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervised_containerd_starts_once_and_is_reused() {
    let _ = keel_binary();
    // A private containerd only for its busybox root folder and namespace cleanup.
    let harness = CliHarness::start().await;
    let counter = STATE_COUNTER.fetch_add(1, Ordering::Relaxed);
    // A relative --state-dir, which keel must make absolute before containerd reads it.
    let relative_state_dir = format!("kc-{}-{counter}", std::process::id());
    let state_dir = Path::new("/tmp").join(&relative_state_dir);
    let _ = std::fs::remove_dir_all(&state_dir);
    let rootfs = harness.rootfs.to_string_lossy().into_owned();
    let keel = |args: &[&str]| {
        let mut command = Command::new(keel_binary());
        command
            .current_dir("/tmp")
            .arg("--state-dir")
            .arg(&relative_state_dir)
            .args(["--namespace", &harness.namespace])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    };
    let pidfile = state_dir.join("run/containerd.pid");
    let read_pid = || {
        std::fs::read_to_string(&pidfile)
            .ok()?
            .trim()
            .parse::<u32>()
            .ok()
    };

    let first = keel(&[
        "run", "--rm", "--rootfs", &rootfs, "hello", "--", "echo", "hi",
    ])
    .output()
    .await
    .expect("run keel");
    let first_pid = read_pid();
    let second = keel(&["ps"]).output().await.expect("run keel ps");
    let second_pid = read_pid();

    // Stop the supervised containerd through a supervisor that adopts it.
    // The CLI runs the binary KEEL_CONTAINERD names, and adoption checks the executable.
    let mut config = SupervisorConfig::new(state_dir.join("containerd"), state_dir.join("run"));
    if let Some(binary) = std::env::var_os("KEEL_CONTAINERD") {
        config.containerd = PathBuf::from(binary);
    }
    let supervisor = Supervisor::start(config)
        .await
        .expect("adopt keel's containerd");
    let adopted_pid = supervisor.pid();
    supervisor
        .stop(Duration::from_secs(5), Containers::Stop)
        .await
        .expect("stop keel's containerd");
    let _ = std::fs::remove_dir_all(&state_dir);

    assert_eq!(
        text(&first.stdout),
        "hi\n",
        "stderr: {}",
        text(&first.stderr)
    );
    assert_eq!(first.status.code(), Some(0));
    assert!(first_pid.is_some(), "a pidfile names keel's containerd");
    assert!(second.status.success(), "ps failed: {second:?}");
    assert_eq!(
        second_pid, first_pid,
        "the second command reused containerd"
    );
    assert_eq!(
        adopted_pid, first_pid,
        "containerd ran detached between commands"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_pause_inspect_and_stop() {
    let harness = CliHarness::start().await;
    harness.start_detached("svc", &["sleep", "1000"]).await;

    let exec = harness
        .run(
            &["exec", "svc", "--", "sh", "-c", "echo from-exec; exit 4"],
            None,
        )
        .await;
    let exec_input = harness
        .run(
            &["exec", "-i", "--exec-id", "reader", "svc", "--", "cat"],
            Some(b"piped\n"),
        )
        .await;
    let init_pid = harness.ps().await[0]["pid"].clone();
    let top = harness.run(&["top", "--format", "json", "svc"], None).await;
    let stats = harness
        .run(&["stats", "--format", "json", "svc"], None)
        .await;
    let paused = harness.run(&["pause", "svc"], None).await;
    let while_paused = harness.ps().await;
    let resumed = harness.run(&["resume", "svc"], None).await;
    let while_resumed = harness.ps().await;
    // busybox sleep as the container's pid 1 ignores SIGTERM, so stop has to escalate.
    let stopped = harness.run(&["stop", "-t", "1", "svc"], None).await;
    let after_stop = harness.ps().await;

    assert_eq!(text(&exec.stdout), "from-exec\n");
    assert_eq!(exec.status.code(), Some(4));
    assert_eq!(text(&exec_input.stdout), "piped\n");
    assert_eq!(exec_input.status.code(), Some(0));
    let processes: serde_json::Value = serde_json::from_slice(&top.stdout).expect("top is JSON");
    let pids: Vec<&serde_json::Value> = processes
        .as_array()
        .expect("top is an array")
        .iter()
        .map(|process| &process["pid"])
        .collect();
    assert!(pids.contains(&&init_pid), "top {pids:?} lacks {init_pid}");
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("stats is JSON");
    assert_eq!(stats["id"], "svc");
    assert!(
        stats["memory"]["limit_bytes"].is_null(),
        "no memory limit is null: {stats}"
    );
    assert!(
        stats["memory"]["usage_bytes"]
            .as_u64()
            .is_some_and(|bytes| bytes > 0)
    );
    assert!(
        stats["pids"]["current"]
            .as_u64()
            .is_some_and(|count| count >= 1)
    );
    assert!(paused.status.success(), "pause failed: {paused:?}");
    assert_eq!(while_paused[0]["status"], "paused");
    assert!(resumed.status.success(), "resume failed: {resumed:?}");
    assert_eq!(while_resumed[0]["status"], "running");
    assert!(stopped.status.success(), "stop failed: {stopped:?}");
    assert_eq!(after_stop[0]["status"], "stopped (exit 137)");
    harness.run(&["rm", "svc"], None).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_then_restore_runs_again() {
    let harness = CliHarness::start().await;
    harness
        .start_detached("counter", &["sh", "-c", "while true; do sleep 0.1; done"])
        .await;
    let image = harness.containerd.dir().join("image");
    let image_arg = image.to_string_lossy().into_owned();

    let checkpointed = harness
        .run(&["checkpoint", "counter", &image_arg, "--exit"], None)
        .await;
    let after = harness.ps().await;
    let empty = harness.containerd.dir().join("empty");
    std::fs::create_dir_all(&empty).expect("create empty folder");
    let empty_arg = empty.to_string_lossy().into_owned();
    let rejected = harness.run(&["restore", "counter", &empty_arg], None).await;
    let after_rejected = harness.ps().await;
    let restored = harness.run(&["restore", "counter", &image_arg], None).await;
    let after_restore = harness.ps().await;
    let while_running = harness.run(&["restore", "counter", &image_arg], None).await;

    assert!(
        checkpointed.status.success(),
        "checkpoint failed: {}",
        text(&checkpointed.stderr)
    );
    assert_eq!(text(&checkpointed.stdout), format!("{image_arg}\n"));
    assert!(image.join("inventory.img").is_file(), "no criu inventory");
    assert!(
        after[0]["status"]
            .as_str()
            .is_some_and(|status| status.starts_with("stopped")),
        "ps after checkpoint: {after:?}"
    );
    let message = text(&rejected.stderr);
    assert_eq!(rejected.status.code(), Some(2), "{message}");
    assert!(message.contains("checkpoint folder"), "{message}");
    assert_eq!(after_rejected[0]["status"], after[0]["status"]);
    assert!(
        restored.status.success(),
        "restore failed: {}",
        text(&restored.stderr)
    );
    let restored_pid: u64 = text(&restored.stdout)
        .trim()
        .parse()
        .expect("restore prints a pid");
    assert!(restored_pid > 0);
    assert_eq!(after_restore[0]["status"], "running");
    assert_eq!(after_restore[0]["pid"], restored_pid);
    let message = text(&while_running.stderr);
    assert_eq!(while_running.status.code(), Some(4), "{message}");
    assert!(message.contains("keel stop counter"), "{message}");
    harness.run(&["rm", "-f", "counter"], None).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_passes_interrupt_to_process() {
    let harness = CliHarness::start().await;
    let script = "trap 'exit 42' INT; echo ready; while true; do sleep 0.1; done";
    let command = harness.run_command(&["--rm"], "trapper", &["sh", "-c", script]);
    let (mut child, _stdout, ready) = spawn_until_first_line(command).await;

    send_signal(&child, Signal::SIGINT);
    let status = exit_in_time(&mut child, "keel run finishes").await;

    assert_eq!(ready.as_deref(), Some("ready"));
    assert_eq!(
        status.code(),
        Some(42),
        "the process trapped the forwarded SIGINT"
    );
    harness.stop().await;
}

/// Polls until the harness's containerd has `count` live shims, for at most ten seconds, and
/// returns their pids.
async fn wait_for_shims(harness: &CliHarness, count: usize) -> Vec<u32> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let shims = harness.containerd.shim_pids();
        if shims.len() == count || tokio::time::Instant::now() >= deadline {
            return shims;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Spawns `command` with stdin closed and stdout piped, and returns the child, its stdout
/// reader and the first line it printed within [`COMMAND_TIMEOUT`]. Holding the reader keeps
/// the pipe open for later output.
async fn spawn_until_first_line(
    mut command: Command,
) -> (
    tokio::process::Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    Option<String>,
) {
    command.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut child = command.spawn().expect("spawn keel");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(COMMAND_TIMEOUT, lines.next_line())
        .await
        .expect("first line in time")
        .expect("read stdout");
    (child, lines, first)
}

/// Waits for a `keel` child started with piped output and returns its output.
async fn finish(child: tokio::process::Child) -> Output {
    tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .expect("keel finished in time")
        .expect("wait for keel")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_finishes_after_its_reader_closed_the_pipe() {
    let harness = CliHarness::start().await;
    // As in `keel run ... | head -c 10`: far more output than the pipes hold.
    let script = "head -c 16777216 /dev/zero; exit 5";
    let mut command = harness.run_command(&["--rm"], "early", &["sh", "-c", script]);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().expect("spawn keel run");
    let mut stdout = child.stdout.take().expect("stdout piped");
    let mut start = [0; 10];
    tokio::time::timeout(COMMAND_TIMEOUT, stdout.read_exact(&mut start))
        .await
        .expect("first bytes in time")
        .expect("read stdout");
    drop(stdout);
    let status = exit_in_time(&mut child, "keel finishes although its reader went away").await;
    assert_eq!(status.code(), Some(5));
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_137_when_shim_dies() {
    let harness = CliHarness::start().await;
    let mut command = harness.run_command(&[], "orphan", &["sleep", "500"]);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().expect("spawn keel run");
    // The shim must not die before the task started, or `run` fails to start it. Its pid is
    // read only then, because while the task is created a short-lived `shim start` process
    // also names the socket.
    let running = harness
        .poll_ps(|rows| rows.first().is_some_and(|row| row["status"] == "running"))
        .await;
    assert_eq!(running[0]["status"], "running", "ps: {running:?}");
    let shims = wait_for_shims(&harness, 1).await;
    assert_eq!(shims.len(), 1, "shims: {shims:?}");

    harness.containerd.kill_shim(shims[0]).expect("kill shim");
    let output = finish(child).await;

    assert_quiet_exit(&output, 137);
    harness.run(&["rm", "-f", "orphan"], None).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_exits_255_when_shim_dies() {
    let harness = CliHarness::start().await;
    harness.start_detached("host", &["sleep", "1000"]).await;
    let shims = wait_for_shims(&harness, 1).await;
    assert_eq!(shims.len(), 1, "shims: {shims:?}");
    let mut command = harness.command(&["exec", "host", "--", "sh", "-c", "echo ready; sleep 500"]);
    command.stderr(Stdio::piped());
    let (child, _stdout, ready) = spawn_until_first_line(command).await;
    assert_eq!(ready.as_deref(), Some("ready"));

    harness.containerd.kill_shim(shims[0]).expect("kill shim");
    let output = finish(child).await;

    // The dead shim never reports the exec's exit, so keel reports the synthetic code 255.
    assert_quiet_exit(&output, 255);
    harness.run(&["rm", "-f", "host"], None).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_dir_that_is_a_file_fails() {
    let counter = STATE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let file = PathBuf::from(format!("/tmp/kc-file-{}-{counter}", std::process::id()));
    std::fs::write(&file, b"").expect("create the file");

    let output = Command::new(keel_binary())
        .arg("--state-dir")
        .arg(&file)
        .arg("ps")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run keel ps");
    // A path under the file is refused the same way.
    let nested = Command::new(keel_binary())
        .arg("--state-dir")
        .arg(file.join("state"))
        .arg("ps")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run keel ps");
    let is_still_file = file.is_file();
    let _ = std::fs::remove_file(&file);
    assert_eq!(nested.status.code(), Some(2), "{}", text(&nested.stderr));

    let message = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {message}");
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("Not a directory"), "OS error: {message}");
    assert!(message.contains("--state-dir"), "next step: {message}");
    assert!(is_still_file, "keel left the file alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_sends_real_time_signal() {
    let harness = CliHarness::start().await;
    // The C library's SIGRTMIN, as the CLI resolves RTMIN (34 with glibc).
    let signal = nix::libc::SIGRTMIN() + 1;
    let script = format!("trap 'exit 9' {signal}; echo ready; while true; do sleep 0.1; done");
    let command = harness.run_command(&["--rm"], "realtime", &["sh", "-c", &script]);
    let (mut child, _stdout, ready) = spawn_until_first_line(command).await;

    let killed = harness
        .run(&["kill", "-s", "SIGRTMIN+1", "realtime"], None)
        .await;
    let status = exit_in_time(&mut child, "keel run finishes").await;
    let max = nix::libc::SIGRTMAX();
    let too_high = (max + 1).to_string();
    let out_of_range = harness
        .run(&["kill", "-s", &too_high, "realtime"], None)
        .await;

    assert_eq!(ready.as_deref(), Some("ready"));
    assert!(killed.status.success(), "kill failed: {killed:?}");
    assert_eq!(
        status.code(),
        Some(9),
        "the process trapped signal {signal}"
    );
    assert_eq!(out_of_range.status.code(), Some(2));
    let message = text(&out_of_range.stderr);
    assert!(
        message.contains("from 1 to 64"),
        "names the range: {message}"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_without_task_name_themselves() {
    let harness = CliHarness::start().await;
    // `run` without --rm deletes the task after the exit and keeps the container.
    let ran = harness.run_container(&[], "idle", &["true"]).await;
    assert_eq!(ran.status.code(), Some(0), "run failed: {ran:?}");
    let checkpoint_dir = harness.containerd.dir().join("no-task-image");
    let checkpoint_arg = checkpoint_dir.to_string_lossy().into_owned();
    let cases: [(&str, Vec<&str>); 8] = [
        ("stats", vec!["stats", "idle"]),
        ("top", vec!["top", "idle"]),
        ("kill", vec!["kill", "idle"]),
        ("pause", vec!["pause", "idle"]),
        ("resume", vec!["resume", "idle"]),
        ("stop", vec!["stop", "idle"]),
        ("checkpoint", vec!["checkpoint", "idle", &checkpoint_arg]),
        ("exec", vec!["exec", "idle", "--", "true"]),
    ];

    for (command, args) in cases {
        let output = harness.run(&args, None).await;
        let message = text(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{command}: {message}");
        assert_eq!(message.lines().count(), 1, "{command}, one line: {message}");
        assert!(
            message.starts_with(&format!("keel: {command} failed for container idle")),
            "{command} names itself: {message}"
        );
        assert!(message.contains("has no task"), "{command}: {message}");
        assert!(message.contains("keel rm idle"), "{command}: {message}");
        assert!(
            message.contains("keel restore idle"),
            "{command}: {message}"
        );
        assert!(
            !message.contains("create one first"),
            "{command}: {message}"
        );
    }
    harness.run(&["rm", "idle"], None).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_errors_suggest_fitting_step() {
    let harness = CliHarness::start().await;
    harness.start_detached("busy", &["sleep", "1000"]).await;
    let mut first = harness.command(&[
        "exec",
        "--exec-id",
        "twice",
        "busy",
        "--",
        "sh",
        "-c",
        "echo ready; sleep 1000",
    ]);
    first.stderr(Stdio::piped());
    let (mut first, _stdout, ready) = spawn_until_first_line(first).await;
    assert_eq!(ready.as_deref(), Some("ready"));

    let duplicate = harness
        .run(&["exec", "--exec-id", "twice", "busy", "--", "true"], None)
        .await;
    first.kill().await.expect("stop the first keel exec");
    harness.start_detached("ended", &["true"]).await;
    let stopped = harness
        .poll_ps(|rows| {
            let row = rows.iter().find(|row| row["id"] == "ended");
            row.is_some_and(|row| row["status"] != "running" && row["status"] != "created")
        })
        .await;
    let into_stopped = harness.run(&["exec", "ended", "--", "true"], None).await;
    let image = harness.state_dir.join("ended-image");
    let image_arg = image.to_string_lossy().into_owned();
    let checkpoint_stopped = harness
        .run(&["checkpoint", "ended", &image_arg], None)
        .await;
    let missing_args = [
        "exec",
        "--exec-id",
        "nobin",
        "busy",
        "--",
        "/no/such/binary",
    ];
    let missing_first = harness.run(&missing_args, None).await;
    let missing_again = harness.run(&missing_args, None).await;

    let message = text(&duplicate.stderr);
    assert_eq!(
        duplicate.status.code(),
        Some(4),
        "already exists: {message}"
    );
    assert!(
        message.contains("--exec-id"),
        "suggests another id: {message}"
    );
    assert!(!message.contains("keel rm -f"), "{message}");
    let message = text(&into_stopped.stderr);
    assert_eq!(
        into_stopped.status.code(),
        Some(5),
        "{message}; ps: {stopped:?}"
    );
    assert_eq!(message.matches("has stopped").count(), 1, "{message}");
    assert!(message.contains("keel rm ended"), "{message}");
    assert!(!message.contains("keel stop"), "{message}");
    let message = text(&checkpoint_stopped.stderr);
    assert_eq!(checkpoint_stopped.status.code(), Some(5), "{message}");
    assert_eq!(message.matches("has stopped").count(), 1, "{message}");
    assert!(!image.exists(), "folder of a refused checkpoint made");
    assert!(!missing_first.status.success(), "{missing_first:?}");
    assert_eq!(
        missing_again.status.code(),
        missing_first.status.code(),
        "the failed exec's id is free again: {}",
        text(&missing_again.stderr)
    );
    harness.run(&["rm", "-f", "busy", "ended"], None).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_of_stop_ps_and_rm() {
    let harness = CliHarness::start().await;
    for id in ["first", "second"] {
        harness.start_detached(id, &["sleep", "1000"]).await;
    }

    let stopped = harness
        .run(&["stop", "-t", "1", "--format", "json", "first"], None)
        .await;
    let rows = harness.ps().await;
    let removed = harness
        .run(
            &["rm", "-f", "--format", "json", "first", "missing", "second"],
            None,
        )
        .await;

    assert!(stopped.status.success(), "stop failed: {stopped:?}");
    let stop_record: serde_json::Value =
        serde_json::from_slice(&stopped.stdout).expect("stop output is JSON");
    assert_eq!(stop_record, serde_json::json!({ "id": "first" }));
    let first = rows
        .iter()
        .find(|row| row["id"] == "first")
        .expect("first row");
    assert_eq!(first["status"], "stopped (exit 137)");
    assert_eq!(first["exit_code"], 137);
    let exited_at = first["exited_at"].as_str().unwrap_or_default();
    // An RFC 3339 time in UTC with milliseconds, such as 2026-01-02T03:04:05.678Z.
    assert_eq!(exited_at.len(), 24, "exited_at: {first}");
    assert_eq!(exited_at.get(10..11), Some("T"), "exited_at: {first}");
    assert!(exited_at.ends_with('Z'), "exited_at: {first}");
    assert!(!exited_at.starts_with("1970"), "exited_at: {first}");
    let second = rows
        .iter()
        .find(|row| row["id"] == "second")
        .expect("second row");
    assert_eq!(second["status"], "running");
    assert!(second["exit_code"].is_null(), "{second}");
    assert!(second["exited_at"].is_null(), "{second}");
    assert_eq!(
        removed.status.code(),
        Some(3),
        "missing is not found: {removed:?}"
    );
    let removed_records: serde_json::Value =
        serde_json::from_slice(&removed.stdout).expect("rm output is JSON");
    assert_eq!(
        removed_records,
        serde_json::json!([{ "id": "first" }, { "id": "second" }])
    );
    assert!(text(&removed.stderr).contains("missing"), "{removed:?}");
    assert!(harness.ps().await.is_empty());
    harness.stop().await;
}
