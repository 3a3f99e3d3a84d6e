//! Runs one real container through keel, start to finish, on a containerd that keel's own
//! supervisor starts and watches. Started by `cargo xtask demo`; `RUST_LOG=info` shows
//! containerd's own output too.
//!
//! Everything lives in a fresh folder under `/tmp`, which the demo removes at the end, also
//! after a failure or Ctrl-C, and in a cgroup that runc removes with the task.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use keel::spec::SpecBuilder;
use keel::{Backend, Client, ClientOptions, ContainerEvent, Event, StdioRequest};
use keel_supervisor::{Containers, Supervisor, SupervisorConfig};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// The namespace the demo works in.
const NAMESPACE: &str = "keel-demo";

/// How long the supervisor waits for containerd to exit on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Forwards every event to the demo's main task.
struct ChannelBackend(mpsc::UnboundedSender<ContainerEvent>);

#[keel::async_trait]
impl Backend for ChannelBackend {
    async fn handle_event(&self, event: ContainerEvent) {
        let _ = self.0.send(event);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,containerd=error")),
        )
        .init();
    let folder = PathBuf::from(format!("/tmp/keel-demo-{}", std::process::id()));
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot make {}", folder.display()))?;

    let result = run(&folder).await;
    remove_folder(&folder);
    result
}

async fn run(folder: &Path) -> anyhow::Result<()> {
    let step = Instant::now();
    let config = SupervisorConfig::new(folder.join("containerd"), folder.join("run"));
    let supervisor = Supervisor::start(config)
        .await
        .context("keel's supervisor cannot start containerd")?;
    println!(
        "{:>8.1} ms  supervised containerd serving on {}, pid {}",
        ms(step.elapsed()),
        supervisor.socket().display(),
        supervisor.pid().unwrap_or_default()
    );

    // On Ctrl-C the container work stops where it is; the stop below then removes the
    // container's task and shim with containerd, because a dropped supervisor leaves them.
    let outcome = tokio::select! {
        outcome = run_container(folder, &supervisor) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    supervisor
        .stop(STOP_GRACE, Containers::Stop)
        .await
        .context("cannot stop containerd")?;
    println!("            containerd stopped");
    outcome
}

async fn run_container(folder: &Path, supervisor: &Supervisor) -> anyhow::Result<()> {
    let (sender, mut events) = mpsc::unbounded_channel();
    let rootfs = busybox_rootfs(&folder.join("rootfs"))?;
    let options =
        ClientOptions::new(supervisor.socket(), NAMESPACE).state_dir(folder.join("client"));

    let step = Instant::now();
    let client = Client::connect_with(options, ChannelBackend(sender)).await?;
    // A restarted containerd is used at once rather than at the next health check.
    let notified = Arc::new(client.clone());
    supervisor.on_event(move |event| {
        if event.is_serving_again() {
            notified.notify_containerd_restarted();
        }
    });
    let version = client.version().await?;
    println!(
        "{:>8.1} ms  connected to containerd {}",
        ms(step.elapsed()),
        version.version
    );

    let step = Instant::now();
    let mut spec = SpecBuilder::new(rootfs)
        .args([
            "sh",
            "-c",
            "echo hello from $(hostname) in keel; echo to stderr >&2; exit 3",
        ])
        .hostname("keel-demo")
        .build();
    // A cgroup of its own at the top: runc removes it with the task, while the default
    // `/keel-demo/demo` would leave the empty `keel-demo` cgroup behind.
    if let Some(linux) = spec.linux_mut() {
        let cgroup = format!("/keel-demo-{}", std::process::id());
        linux.set_cgroups_path(Some(cgroup.into()));
    }
    let container = client.create_container("demo", spec).await?;
    println!("{:>8.1} ms  created container demo", ms(step.elapsed()));

    let step = Instant::now();
    let stdio = StdioRequest {
        output: true,
        ..StdioRequest::default()
    };
    let mut task = container.start_task(stdio).await?;
    println!(
        "{:>8.1} ms  started task, pid {}",
        ms(step.elapsed()),
        task.pid()
    );

    let step = Instant::now();
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let mut stdout_stream = task.take_stdout().context("stdout was requested")?;
    let mut stderr_stream = task.take_stderr().context("stderr was requested")?;
    stdout_stream.read_to_string(&mut stdout).await?;
    stderr_stream.read_to_string(&mut stderr).await?;
    drop((stdout_stream, stderr_stream));
    let status = task.wait().await?;
    println!(
        "{:>8.1} ms  task exited with code {}",
        ms(step.elapsed()),
        status.code
    );
    println!("            stdout: {stdout:?}");
    println!("            stderr: {stderr:?}");

    let step = Instant::now();
    task.delete().await?;
    container.delete().await?;
    println!("{:>8.1} ms  deleted task and container", ms(step.elapsed()));

    client.shutdown(Duration::from_secs(5)).await;
    println!("events the backend received, in order:");
    while let Ok(event) = events.try_recv() {
        println!("            {}", describe(&event.event));
    }
    Ok(())
}

/// Builds a root folder from the static busybox, with a link for every applet.
fn busybox_rootfs(rootfs: &Path) -> anyhow::Result<PathBuf> {
    let bin = rootfs.join("bin");
    for folder in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(folder))?;
    }
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .context("cannot copy /bin/busybox: install it with `apt-get install busybox-static`")?;
    let applets = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet))?;
        }
    }
    Ok(rootfs.to_owned())
}

fn remove_folder(folder: &Path) {
    match std::fs::remove_dir_all(folder) {
        Ok(()) => println!("            removed {}", folder.display()),
        Err(error) => eprintln!("cannot remove {}: {error}", folder.display()),
    }
}

fn describe(event: &Event) -> String {
    match event {
        Event::Exited {
            process,
            pid,
            status,
            ..
        } => format!("exit of {process}, pid {pid}, code {}", status.code),
        Event::Deleted {
            pid,
            status: Some(status),
        } => format!("task deleted, pid {pid}, code {}", status.code),
        other => format!("{other:?}"),
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
