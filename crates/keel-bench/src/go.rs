//! The Go baseline: building `go/lifecycle/main.go` against Debian's containerd sources and
//! running its modes.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context as _;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::workload::StepTimes;

/// Debian's GOPATH for packaged Go sources, into which golang-github-containerd-containerd-dev
/// installs containerd's.
const DEBIAN_GOPATH: &str = "/usr/share/gocode";

/// The source of the Go program, relative to this package.
const SOURCE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/go/lifecycle");

/// The built Go program and the containerd it talks to.
#[derive(Clone, Debug)]
pub struct GoClient {
    binary: PathBuf,
    socket: PathBuf,
    rootfs: PathBuf,
}

/// Returns Go's build cache: next to the benchmark's binary in cargo's target folder, so it
/// outlives a run and stays out of shared folders, or inside `work_dir` when that is unknown.
fn go_cache(work_dir: &Path) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|binary| {
            binary
                .parent()
                .map(|folder| folder.join("keel-bench-go-cache"))
        })
        .unwrap_or_else(|| work_dir.join("go-cache"))
}

/// Builds the Go program into `work_dir` in GOPATH mode, offline.
///
/// # Errors
///
/// Returns an error naming the missing package when Go or containerd's sources are missing,
/// or the compiler's output when the build fails.
pub fn build(work_dir: &Path) -> anyhow::Result<PathBuf> {
    let containerd_sources = Path::new(DEBIAN_GOPATH).join("src/github.com/containerd/containerd");
    anyhow::ensure!(
        containerd_sources.is_dir(),
        "{} is missing; install golang-github-containerd-containerd-dev",
        containerd_sources.display()
    );
    let gopath = work_dir.join("gopath");
    let package_dir = gopath.join("src/keelbench/lifecycle");
    std::fs::create_dir_all(&package_dir)?;
    std::fs::copy(
        Path::new(SOURCE_DIR).join("main.go"),
        package_dir.join("main.go"),
    )?;
    let binary = work_dir.join("go-lifecycle");
    let output = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&package_dir)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOPATH", format!("{}:{DEBIAN_GOPATH}", gopath.display()))
        .env("GOCACHE", go_cache(work_dir))
        .output()
        .context("cannot run `go build`; install golang-go")?;
    anyhow::ensure!(
        output.status.success(),
        "`go build` of {SOURCE_DIR} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(binary)
}

/// The result line of the throughput mode.
#[derive(Debug, Deserialize)]
pub struct ThroughputResult {
    /// Wall time of all lifecycles.
    pub seconds: f64,
    /// Lifecycles that failed.
    pub failures: u64,
    /// The first failure's message.
    pub first_error: Option<String>,
}

/// The result line of the stdio mode.
#[derive(Debug, Deserialize)]
pub struct StdioResult {
    /// Wall time of the lifecycle.
    pub seconds: f64,
    /// Bytes read from the container's stdout.
    pub bytes: u64,
}

/// The result line of the events mode.
#[derive(Debug, Deserialize)]
pub struct EventsResult {
    /// The latency of every event received, sorted.
    pub latencies_ms: Vec<f64>,
}

impl GoClient {
    /// Returns the client for `binary` that works on `socket` with containers rooted at
    /// `rootfs`.
    pub fn new(binary: PathBuf, socket: &Path, rootfs: &Path) -> Self {
        Self {
            binary,
            socket: socket.to_owned(),
            rootfs: rootfs.to_owned(),
        }
    }

    fn command(&self, mode: &str, namespace: &str, prefix: &str) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg(mode)
            .arg("-socket")
            .arg(&self.socket)
            .args(["-namespace", namespace, "-prefix", prefix])
            .arg("-rootfs")
            .arg(&self.rootfs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        command
    }

    /// Starts the lifecycle mode for `count` lifecycles, each run on request.
    pub fn lifecycles(&self, namespace: &str, count: usize) -> anyhow::Result<GoOnRequest> {
        self.on_request("lifecycle", namespace, "go-seq", count)
    }

    /// Starts the exec mode for `count` execs in one running container, each run on request.
    pub fn execs(&self, namespace: &str, count: usize) -> anyhow::Result<GoOnRequest> {
        self.on_request("exec", namespace, "go", count)
    }

    fn on_request(
        &self,
        mode: &str,
        namespace: &str,
        prefix: &str,
        count: usize,
    ) -> anyhow::Result<GoOnRequest> {
        let mut command = self.command(mode, namespace, prefix);
        command
            .args(["-n", &count.to_string()])
            .stdin(Stdio::piped());
        let mut child = command.spawn().context("cannot start the Go client")?;
        let stdin = child.stdin.take().context("Go client has no stdin")?;
        let stdout = child.stdout.take().context("Go client has no stdout")?;
        Ok(GoOnRequest {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// Runs `count` lifecycles of containers named `<prefix>-<n>`, `workers` at a time.
    pub async fn throughput(
        &self,
        namespace: &str,
        prefix: &str,
        count: usize,
        workers: usize,
    ) -> anyhow::Result<ThroughputResult> {
        let mut command = self.command("throughput", namespace, prefix);
        command.args(["-n", &count.to_string(), "-c", &workers.to_string()]);
        run_for_json(command).await
    }

    /// Runs one container that writes `bytes` bytes to stdout.
    pub async fn stdio(
        &self,
        namespace: &str,
        prefix: &str,
        bytes: u64,
    ) -> anyhow::Result<StdioResult> {
        let mut command = self.command("stdio", namespace, prefix);
        command.args(["-bytes", &bytes.to_string()]);
        run_for_json(command).await
    }

    /// Starts the events mode, which subscribes to `namespace` until [`GoEvents::finish`].
    pub fn events(&self, namespace: &str) -> anyhow::Result<GoEvents> {
        let mut command = self.command("events", namespace, "go-events");
        command.stdin(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().context("cannot start the Go subscriber")?;
        let stdin = child.stdin.take().context("Go subscriber has no stdin")?;
        let stderr = child.stderr.take().context("Go subscriber has no stderr")?;
        Ok(GoEvents {
            child,
            stdin,
            stderr: BufReader::new(stderr).lines(),
        })
    }
}

async fn run_for_json<T: for<'de> Deserialize<'de>>(mut command: Command) -> anyhow::Result<T> {
    command.stderr(Stdio::piped());
    let output = command.output().await.context("cannot run the Go client")?;
    anyhow::ensure!(
        output.status.success(),
        "the Go client failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let line = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(line.trim()).with_context(|| format!("cannot parse {line:?}"))
}

/// The Go client in a mode that runs one measured operation per request: a lifecycle or an
/// exec.
pub struct GoOnRequest {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

/// One operation the Go client ran: its wall time inside the Go process, and in lifecycle mode
/// the time of each step, in milliseconds.
#[derive(Debug, Deserialize)]
pub struct GoRun {
    /// Wall time of the whole operation.
    pub ms: f64,
    /// The time of each of [`crate::workload::STEPS`], in lifecycle mode.
    #[serde(default)]
    pub steps: Option<StepTimes>,
}

impl GoOnRequest {
    /// Closes stdin, which ends the Go client after it removed its containers, and waits for
    /// it to exit.
    pub async fn finish(self) -> anyhow::Result<()> {
        let Self {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        let status = child.wait().await?;
        anyhow::ensure!(status.success(), "the Go client failed with {status}");
        Ok(())
    }

    /// Runs one operation and returns its times.
    pub async fn run_one(&mut self) -> anyhow::Result<GoRun> {
        self.stdin.write_all(b"go\n").await?;
        self.stdin.flush().await?;
        let line = self
            .lines
            .next_line()
            .await?
            .context("the Go client ended before the lifecycle finished")?;
        serde_json::from_str(&line).with_context(|| format!("cannot parse {line:?}"))
    }
}

/// The Go subscriber, running.
pub struct GoEvents {
    child: Child,
    stdin: ChildStdin,
    stderr: Lines<BufReader<tokio::process::ChildStderr>>,
}

impl GoEvents {
    /// Waits until the subscriber writes `expected` to stderr, passing other lines on.
    pub async fn wait_for_line(&mut self, expected: &str) -> anyhow::Result<()> {
        while let Some(line) = self.stderr.next_line().await? {
            if line.trim() == expected {
                return Ok(());
            }
            eprintln!("{line}");
        }
        anyhow::bail!("the Go subscriber ended before writing {expected:?}")
    }

    /// Makes the subscriber forget the events it received so far, and waits until it has.
    pub async fn reset(&mut self) -> anyhow::Result<()> {
        self.stdin.write_all(b"reset\n").await?;
        self.stdin.flush().await?;
        self.wait_for_line("reset").await
    }

    /// Closes the subscriber's stdin, which ends its subscription, and returns what it
    /// measured.
    pub async fn finish(self) -> anyhow::Result<EventsResult> {
        drop(self.stdin);
        let output = self.child.wait_with_output().await?;
        anyhow::ensure!(
            output.status.success(),
            "the Go subscriber failed with {}",
            output.status
        );
        let line = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(line.trim()).with_context(|| format!("cannot parse {line:?}"))
    }
}
