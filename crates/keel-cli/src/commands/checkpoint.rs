//! `keel checkpoint` and `keel restore`.

use std::path::{Path, PathBuf};

use keel::{Container, ErrorKind, ProcessStatus, StdioRequest};
use serde_json::json;

use crate::cli::{CheckpointArgs, Format, GlobalOptions, RestoreArgs};
use crate::commands::task::{load_task, task_error};
use crate::connect::{IgnoreEvents, connect};
use crate::error::CliError;
use crate::output::{print_json, write_stdout};
use crate::spinner::with_spinner;

/// Checkpoints a running container's task into a folder.
pub async fn checkpoint(global: &GlobalOptions, args: CheckpointArgs) -> Result<(), CliError> {
    let dir = absolute(&args.dir)?;
    let session = connect(global, IgnoreEvents).await?;
    let work = async {
        let container = session.client.load_container(&args.id).await?;
        let task = load_task(&container, "checkpoint").await?;
        match task.checkpoint(&dir, args.exit).await {
            Ok(()) => Ok(()),
            Err(error) => Err(task_error(&container, error).await),
        }
    };
    let result = with_spinner("checkpointing", work).await;
    session.close().await;
    result?;
    match global.format {
        Format::Json => print_json(&json!({ "id": args.id, "dir": dir })),
        Format::Table => write_stdout(&format!("{}\n", dir.display())),
    }
}

/// Starts a container's task from a checkpoint folder, detached, and prints its pid.
pub async fn restore(global: &GlobalOptions, args: RestoreArgs) -> Result<(), CliError> {
    let dir = absolute(&args.dir)?;
    // Checked before the stopped task is deleted, so a wrong folder leaves the container as is.
    if let Err(error) = keel::check_checkpoint_dir(&dir) {
        let hint = "pass the folder `keel checkpoint` printed";
        return Err(CliError::with_hint(error, hint));
    }
    let session = connect(global, IgnoreEvents).await?;
    let work = async {
        let container = session.client.load_container(&args.id).await?;
        delete_stopped_task(&container).await?;
        match container.restore_task(&dir, StdioRequest::default()).await {
            Ok(task) => Ok(task),
            Err(error) if error.kind() == ErrorKind::AlreadyExists => {
                let hint = format!(
                    "its task is running: stop it with `keel stop {}`, then restore again",
                    args.id
                );
                Err(CliError::with_hint(error, hint))
            }
            Err(error) => Err(error.into()),
        }
    };
    let result = with_spinner("restoring", work).await;
    session.close().await;
    let task = result?;
    match global.format {
        Format::Json => print_json(&json!({ "id": args.id, "pid": task.pid() })),
        Format::Table => write_stdout(&format!("{}\n", task.pid())),
    }
}

/// Deletes the container's task if it has stopped, such as after `keel checkpoint --exit`, so
/// the restore can create a new one. A running task is left for the restore to reject.
async fn delete_stopped_task(container: &Container) -> Result<(), keel::Error> {
    let task = match container.task().await {
        Ok(task) => task,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    if matches!(task.status().await?, ProcessStatus::Stopped(_)) {
        task.delete().await?;
    }
    Ok(())
}

fn absolute(dir: &Path) -> Result<PathBuf, CliError> {
    std::path::absolute(dir).map_err(|error| CliError::io("resolve", dir, error))
}
