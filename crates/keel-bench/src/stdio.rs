//! Stdout throughput: a container writes N bytes of zeros and the client reads them, through
//! keel's FIFOs, the Go client's FIFOs and `ctr run`, against a plain pipe on the host.

use std::process::Stdio;
use std::time::Instant;

use anyhow::Context as _;
use keel::StdioRequest;
use tokio::io::AsyncReadExt;

use crate::Env;
use crate::machine::{children_cpu_time_ms, cpu_time_ms};
use crate::stats::{Samples, order_rng};
use crate::workload::spec;

/// The read buffer size of every reader here.
const READ_BUFFER: usize = 64 * 1024;

/// The figures of one size, as MiB/s per repetition, or why a column was not measured.
#[derive(Debug)]
pub struct StdioRow {
    /// Bytes written per run.
    pub bytes: u64,
    /// Through keel's FIFOs.
    pub keel: Samples,
    /// CPU time of the benchmark process during each keel run, in milliseconds.
    pub keel_cpu: Samples,
    /// CPU time of the Go client's process for each run, in milliseconds.
    pub go_cpu: Samples,
    /// Through the Go client's FIFOs.
    pub go: Result<Samples, String>,
    /// Through `ctr run`, read from ctr's stdout.
    pub ctr: Result<Samples, String>,
    /// `head` on the host writing into a pipe.
    pub pipe: Samples,
}

/// The readers each repetition runs once.
#[derive(Clone, Copy)]
enum Reader {
    Keel,
    Go,
    Ctr,
    Pipe,
}

const READERS: [Reader; 4] = [Reader::Keel, Reader::Go, Reader::Ctr, Reader::Pipe];

/// Measures `repetitions` runs of each reader for each size in `sizes`, in an order shuffled
/// for each repetition, so that no reader always follows the same one.
pub async fn run(env: &Env, sizes: &[u64], repetitions: usize) -> anyhow::Result<Vec<StdioRow>> {
    let client = env.connect_keel().await?;
    let go_namespace = env.containerd.new_namespace();
    let ctr_namespace = env.containerd.new_namespace();
    let mut rows = Vec::new();
    let mut rng = order_rng();
    for &bytes in sizes {
        let mut row = StdioRow {
            bytes,
            keel: Samples::default(),
            keel_cpu: Samples::default(),
            go_cpu: Samples::default(),
            go: env
                .go
                .as_ref()
                .map(|_| Samples::default())
                .map_err(Clone::clone),
            ctr: Ok(Samples::default()),
            pipe: Samples::default(),
        };
        for repetition in 0..repetitions {
            let id = format!("stdio-{bytes}-{repetition}");
            let mut order = READERS;
            rng.shuffle(&mut order);
            for reader in order {
                match reader {
                    Reader::Keel => {
                        let cpu_before = cpu_time_ms()?;
                        let seconds = keel_run(&client, env, &id, bytes).await?;
                        row.keel_cpu.push_value(cpu_time_ms()? - cpu_before);
                        row.keel.push_value(rate(bytes, seconds));
                    }
                    Reader::Go => go_run(env, &go_namespace, &id, &mut row).await?,
                    Reader::Ctr => {
                        if let Ok(samples) = row.ctr.as_mut() {
                            match ctr_run(env, &ctr_namespace, &id, bytes).await {
                                Ok(seconds) => samples.push_value(rate(bytes, seconds)),
                                Err(error) => row.ctr = Err(format!("failed: {error:#}")),
                            }
                        }
                    }
                    Reader::Pipe => {
                        let seconds = pipe_run(bytes).await?;
                        row.pipe.push_value(rate(bytes, seconds));
                    }
                }
            }
        }
        rows.push(row);
    }
    client.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(rows)
}

/// Runs the Go client's lifecycle once and adds its rate and CPU time to `row`, or turns its
/// column into the failure.
async fn go_run(env: &Env, namespace: &str, id: &str, row: &mut StdioRow) -> anyhow::Result<()> {
    let (Ok(go), Ok(samples)) = (env.go.as_ref(), row.go.as_mut()) else {
        return Ok(());
    };
    let bytes = row.bytes;
    let cpu_before = children_cpu_time_ms()?;
    let outcome = go.stdio(namespace, id, bytes).await;
    row.go_cpu.push_value(children_cpu_time_ms()? - cpu_before);
    match outcome {
        Ok(result) if result.bytes == bytes => samples.push_value(rate(bytes, result.seconds)),
        Ok(result) => row.go = Err(format!("read {} of {bytes} bytes", result.bytes)),
        Err(error) => row.go = Err(format!("failed: {error:#}")),
    }
    Ok(())
}

/// Returns MiB per second.
fn rate(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / seconds
}

fn head_args(bytes: u64) -> [String; 4] {
    [
        "/bin/head".to_owned(),
        "-c".to_owned(),
        bytes.to_string(),
        "/dev/zero".to_owned(),
    ]
}

/// Runs a whole lifecycle through keel, reading stdout to its end; returns its wall time.
async fn keel_run(client: &keel::Client, env: &Env, id: &str, bytes: u64) -> anyhow::Result<f64> {
    let args = head_args(bytes);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let container = client
        .create_container(id, spec(&env.rootfs, &args))
        .await?;
    let request = StdioRequest {
        output: true,
        ..StdioRequest::default()
    };
    let mut task = container.start_task(request).await?;
    let mut stdout = task.take_stdout().context("keel returned no stdout")?;
    // `Task::wait` also waits for stderr to close, so drain it as the Go client does.
    let mut stderr = task.take_stderr().context("keel returned no stderr")?;
    // Each stream is read by a task of its own on the runtime's worker threads, as the Go
    // client copies each FIFO in a goroutine of its own. Read by the benchmark's main task,
    // which runs on the thread that called `block_on`, every wake-up of the reader would be
    // a hand-off from a worker thread to that thread.
    let drain = tokio::spawn(async move { count_bytes(&mut stderr).await });
    let read = tokio::spawn(async move { count_bytes(&mut stdout).await }).await??;
    drain.await??;
    crate::workload::finish(container, task).await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(read == bytes, "keel read {read} of {bytes} bytes");
    Ok(seconds)
}

async fn count_bytes(reader: &mut (impl tokio::io::AsyncRead + Unpin)) -> anyhow::Result<u64> {
    let mut buffer = vec![0_u8; READ_BUFFER];
    let mut total = 0_u64;
    loop {
        let read = reader.read(&mut buffer).await?;
        if read == 0 {
            return Ok(total);
        }
        total += read as u64;
    }
}

async fn ctr_run(env: &Env, namespace: &str, id: &str, bytes: u64) -> anyhow::Result<f64> {
    let mut command = tokio::process::Command::new("ctr");
    command
        .arg("--address")
        .arg(env.containerd.socket())
        .args(["--namespace", namespace, "run", "--rm", "--rootfs"])
        .arg(&env.rootfs)
        .arg(id)
        .args(head_args(bytes))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    timed_child_output(command, bytes).await
}

async fn pipe_run(bytes: u64) -> anyhow::Result<f64> {
    // The same busybox `head` as inside the containers.
    let mut command = tokio::process::Command::new("/bin/busybox");
    command
        .args(["head", "-c", &bytes.to_string(), "/dev/zero"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    timed_child_output(command, bytes).await
}

/// Runs `command`, counts its stdout and returns the wall time until it exited.
async fn timed_child_output(
    mut command: tokio::process::Command,
    bytes: u64,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut child = command.spawn()?;
    let mut stdout = child.stdout.take().context("no stdout pipe")?;
    let read = count_bytes(&mut stdout).await?;
    let output = child.wait_with_output().await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        output.status.success(),
        "exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    anyhow::ensure!(read == bytes, "read {read} of {bytes} bytes");
    Ok(seconds)
}
