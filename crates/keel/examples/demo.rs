//! Runs one real container through keel on a private containerd: create, start, read its
//! output, receive its events, delete. Started by `cargo xtask demo`.

use std::time::{Duration, Instant};

use anyhow::Context;
use keel::spec::SpecBuilder;
use keel::{Backend, Client, ClientOptions, ContainerEvent, Event, StdioRequest};
use keel_testkit::PrivateContainerd;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

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
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let started = Instant::now();
    let containerd = PrivateContainerd::start()
        .await
        .context("cannot start a private containerd")?;
    println!(
        "{:>8.1} ms  private containerd serving on {}",
        ms(started.elapsed()),
        containerd.socket().display()
    );

    let result = tokio::select! {
        result = run(&containerd) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    containerd.stop().await;
    println!("private containerd stopped and its folders removed");
    result
}

async fn run(containerd: &PrivateContainerd) -> anyhow::Result<()> {
    let (sender, mut events) = mpsc::unbounded_channel();
    let namespace = containerd.new_namespace();
    let options = ClientOptions::new(containerd.socket(), namespace.as_str())
        .state_dir(containerd.client_state_dir());
    let rootfs = containerd.busybox_rootfs()?;

    let step = Instant::now();
    let client = Client::connect_with(options, ChannelBackend(sender)).await?;
    let version = client.version().await?;
    println!(
        "{:>8.1} ms  connected to containerd {}",
        ms(step.elapsed()),
        version.version
    );

    let step = Instant::now();
    let spec = SpecBuilder::new(rootfs)
        .args([
            "sh",
            "-c",
            "echo hello from $(hostname) in keel; echo to stderr >&2; exit 3",
        ])
        .hostname("keel-demo")
        .build();
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

fn describe(event: &Event) -> String {
    match event {
        Event::Exited {
            process,
            pid,
            status,
            ..
        } => {
            format!("exit of {process}, pid {pid}, code {}", status.code)
        }
        other => format!("{other:?}"),
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
