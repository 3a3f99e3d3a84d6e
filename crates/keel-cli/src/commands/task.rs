//! Loading a container's task for a command, and errors that name the command's own step and
//! a next step that a user of this command line can take.

use keel::{Container, ErrorKind, ProcessStatus, Task};

use crate::error::CliError;

/// Returns the container's task, or [`CliError::NoTask`] naming `command` when it has none.
pub(crate) async fn load_task(
    container: &Container,
    command: &'static str,
) -> Result<Task, CliError> {
    match container.task().await {
        Ok(task) => Ok(task),
        Err(error) if error.kind() == ErrorKind::NotFound => {
            tracing::debug!(container_id = %container.id(), %error, "container has no task");
            Err(CliError::NoTask {
                command,
                container_id: container.id().to_string(),
            })
        }
        Err(error) => Err(error.into()),
    }
}

/// The start of the hint for a stopped task.
const STOPPED: &str = "the task has stopped";

/// Converts the error of a request on the container's task. When the task has stopped, it
/// adds the next step for a stopped task, because the hint of the error's kind does not fit
/// that case.
pub(crate) async fn task_error(container: &Container, error: keel::Error) -> CliError {
    match task_status(container).await {
        Ok(ProcessStatus::Stopped(_)) => {
            let container_id = container.id();
            // keel's own rejection of a request on a stopped task already ends with this text.
            let stopped = if error.to_string().ends_with(STOPPED) {
                String::new()
            } else {
                format!("{STOPPED}: ")
            };
            let hint = format!(
                "{stopped}see its exit code with `keel ps`, then remove the container with \
                 `keel rm {container_id}` and run it again with `keel run`, or start a task \
                 from a checkpoint with `keel restore {container_id} DIR`"
            );
            CliError::with_hint(error, hint)
        }
        Ok(_) => error.into(),
        Err(status_error) => {
            tracing::debug!(%status_error, "failed to read the task's status after an error");
            error.into()
        }
    }
}

async fn task_status(container: &Container) -> Result<ProcessStatus, keel::Error> {
    container.task().await?.status().await
}
