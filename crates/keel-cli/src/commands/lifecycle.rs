//! `keel kill`, `keel stop`, `keel pause`, `keel resume` and `keel rm`.

use std::time::Duration;

use keel::{Client, ErrorKind, ProcessStatus, Task};
use serde_json::json;

use crate::cli::{Format, GlobalOptions, KillArgs, RmArgs, StopArgs};
use crate::commands::task::{load_task, task_error};
use crate::connect::{IgnoreEvents, connect};
use crate::error::CliError;
use crate::output::{print_json, write_stdout};

/// How long `keel rm -f` may take per container.
const FORCE_DELETE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `keel stop` waits for the exit after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Sends a signal to a container's task.
pub async fn kill(global: &GlobalOptions, args: KillArgs) -> Result<(), CliError> {
    let signal = args.signal.unsigned_abs();
    with_task(global, &args.id, "kill", |task| async move {
        task.kill(signal, args.all).await
    })
    .await
}

/// Freezes a container's task.
pub async fn pause(global: &GlobalOptions, id: &str) -> Result<(), CliError> {
    with_task(
        global,
        id,
        "pause",
        |task| async move { task.pause().await },
    )
    .await
}

/// Thaws a container's task.
pub async fn resume(global: &GlobalOptions, id: &str) -> Result<(), CliError> {
    with_task(
        global,
        id,
        "resume",
        |task| async move { task.resume().await },
    )
    .await
}

/// Sends SIGTERM, waits up to the timeout for the exit, then sends SIGKILL and waits again.
/// The stopped task stays until `keel rm`, so `keel ps` shows its exit code.
pub async fn stop(global: &GlobalOptions, args: StopArgs) -> Result<(), CliError> {
    let grace = Duration::from_secs(args.timeout_secs);
    with_task(global, &args.id, "stop", |task| async move {
        stop_task(&task, grace).await
    })
    .await?;
    match global.format {
        Format::Json => print_json(&json!({ "id": args.id })),
        Format::Table => write_stdout(&format!("{}\n", args.id)),
    }
}

async fn stop_task(task: &Task, grace: Duration) -> Result<(), keel::Error> {
    if matches!(task.status().await?, ProcessStatus::Stopped(_)) {
        return Ok(());
    }
    ignore_not_found(task.kill(nix::libc::SIGTERM.unsigned_abs(), false).await)?;
    if tokio::time::timeout(grace, task.wait()).await.is_ok() {
        return Ok(());
    }
    ignore_not_found(task.kill(nix::libc::SIGKILL.unsigned_abs(), true).await)?;
    match tokio::time::timeout(KILL_WAIT, task.wait()).await {
        Ok(status) => status.map(drop),
        Err(_) => Err(keel::Error::Rejected {
            operation: keel::Operation::Kill,
            target: keel::Target::Container(task.container().id().clone()),
            kind: ErrorKind::TimedOut,
            reason: "the task did not exit after SIGKILL".to_owned(),
        }),
    }
}

/// Removes containers: a stopped task is deleted first; a running one only with `--force`.
/// Every id is tried; the first error is returned after the others were attempted. Each
/// removed id is printed as it goes, or with `--format json`, one array of `{"id": ...}`
/// objects at the end.
pub async fn rm(global: &GlobalOptions, args: RmArgs) -> Result<(), CliError> {
    let session = connect(global, IgnoreEvents).await?;
    let mut removed = Vec::new();
    let mut first_error = None;
    for id in &args.ids {
        match remove(&session.client, id, args.force).await {
            Ok(()) if global.format == Format::Json => removed.push(json!({ "id": id })),
            Ok(()) => write_stdout(&format!("{id}\n"))?,
            Err(error) => {
                if first_error.is_some() {
                    eprintln!("keel: {}", CliError::from(error));
                } else {
                    first_error = Some(error);
                }
            }
        }
    }
    session.close().await;
    if global.format == Format::Json {
        print_json(&removed)?;
    }
    match first_error {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}

async fn remove(client: &Client, id: &str, force: bool) -> Result<(), keel::Error> {
    let container = client.load_container(id).await?;
    if force {
        return container.force_delete(FORCE_DELETE_TIMEOUT).await;
    }
    match container.task().await {
        Ok(task) => {
            if !matches!(task.status().await?, ProcessStatus::Stopped(_)) {
                return Err(keel::Error::Rejected {
                    operation: keel::Operation::DeleteContainer,
                    target: keel::Target::Container(container.id().clone()),
                    kind: ErrorKind::FailedPrecondition,
                    reason: "its task is running; stop it with `keel stop` or remove it with `keel rm -f`".to_owned(),
                });
            }
            task.delete().await?;
        }
        Err(error) if error.kind() == ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    container.delete().await
}

/// Connects, loads the container's task, runs `action` on it, and closes the session.
/// `command` names the command in errors.
async fn with_task<F, Fut>(
    global: &GlobalOptions,
    id: &str,
    command: &'static str,
    action: F,
) -> Result<(), CliError>
where
    F: FnOnce(Task) -> Fut,
    Fut: Future<Output = Result<(), keel::Error>>,
{
    let session = connect(global, IgnoreEvents).await?;
    let result = async {
        let container = session.client.load_container(id).await?;
        let task = load_task(&container, command).await?;
        match action(task).await {
            Ok(()) => Ok(()),
            Err(error) => Err(task_error(&container, error).await),
        }
    }
    .await;
    session.close().await;
    result
}

fn ignore_not_found(result: Result<(), keel::Error>) -> Result<(), keel::Error> {
    match result {
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
