//! Lists every container of the namespace with its task, tracked or not.
//!
//! Two calls: containerd's container list and its task list, joined by container id. A
//! container created or deleted between the two calls shows as it was in the container list,
//! with the task the second call found, if any.

use std::collections::HashMap;

use containerd_client::services::v1::{ListContainersRequest, ListTasksRequest};
use containerd_client::types::v1::{Process, Status as TaskStatus};
use keel_connection::{Services, call_with_deadline};
use keel_types::{
    ContainerId, ContainerSummary, Error, ExitStatus, Operation, ProcessStatus, Target, TaskSummary,
};

use crate::actor::system_time;

/// Returns every container of the services' namespace, sorted by id.
///
/// # Errors
///
/// Returns containerd's error, or unavailable or timed out when it does not reply.
pub(crate) async fn list_containers(services: &Services) -> Result<Vec<ContainerSummary>, Error> {
    let timeout = services.call_timeout();
    let mut containers_client = services.containers();
    let containers = call_with_deadline(
        Operation::ListContainers,
        &Target::Containerd,
        timeout,
        containers_client.list(ListContainersRequest::default()),
    )
    .await?
    .containers;
    let mut tasks_client = services.tasks();
    let tasks = call_with_deadline(
        Operation::ListContainers,
        &Target::Containerd,
        timeout,
        tasks_client.list(ListTasksRequest::default()),
    )
    .await?
    .tasks;
    let mut tasks: HashMap<String, TaskSummary> = tasks
        .into_iter()
        .map(|task| {
            let summary = TaskSummary {
                pid: task.pid,
                status: process_status(&task),
            };
            (task.id, summary)
        })
        .collect();

    let mut summaries: Vec<ContainerSummary> = containers
        .into_iter()
        .filter_map(|container| {
            let id = match ContainerId::new(container.id.as_str()) {
                Ok(id) => id,
                Err(error) => {
                    tracing::warn!(container_id = %container.id, %error, "skipped a listed container with an invalid id");
                    return None;
                }
            };
            Some(ContainerSummary {
                task: tasks.remove(id.as_str()),
                id,
                image: container.image,
                runtime: container
                    .runtime
                    .map(|runtime| runtime.name)
                    .unwrap_or_default(),
                labels: container.labels,
                created_at: container.created_at.map(|time| system_time(Some(time))),
            })
        })
        .collect();
    summaries.sort_by(|left, right| left.id.cmp(&right.id));
    Ok(summaries)
}

/// Reads the state of a process as containerd reports it.
pub(crate) fn process_status(process: &Process) -> ProcessStatus {
    match TaskStatus::try_from(process.status) {
        Ok(TaskStatus::Created) => ProcessStatus::Created,
        Ok(TaskStatus::Running) => ProcessStatus::Running,
        Ok(TaskStatus::Paused) => ProcessStatus::Paused,
        Ok(TaskStatus::Pausing) => ProcessStatus::Pausing,
        Ok(TaskStatus::Stopped) => ProcessStatus::Stopped(ExitStatus {
            code: process.exit_status,
            exited_at: system_time(process.exited_at),
        }),
        _ => ProcessStatus::Unknown,
    }
}
