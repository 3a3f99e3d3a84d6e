//! The handle of one container.

use std::time::Duration;

use keel_container::{ContainerMsg, ProcessIo, StdioRequest};
use keel_types::{ContainerId, Error, Operation, Target};
use ractor::ActorRef;

use crate::request::request;
use crate::task::Task;

/// A container, created or loaded through a [`crate::Client`].
#[derive(Clone, Debug)]
pub struct Container {
    container_id: ContainerId,
    target: Target,
    actor: ActorRef<ContainerMsg>,
    call_timeout: Duration,
}

impl Container {
    pub(crate) fn new(
        container_id: ContainerId,
        actor: ActorRef<ContainerMsg>,
        call_timeout: Duration,
    ) -> Self {
        Self {
            target: Target::Container(container_id.clone()),
            container_id,
            actor,
            call_timeout,
        }
    }

    /// The container's id.
    pub fn id(&self) -> &ContainerId {
        &self.container_id
    }

    /// Creates the task without starting it; start it with [`Task::start`].
    ///
    /// # Errors
    ///
    /// Returns already exists when the container has a task, or containerd's error; nothing
    /// is left behind on failure.
    pub async fn create_task(&self, stdio: StdioRequest) -> Result<Task, Error> {
        let (io, pid): (ProcessIo, u32) = request(
            &self.actor,
            Operation::CreateTask,
            &self.target,
            self.call_timeout * 2,
            |reply| ContainerMsg::CreateTask(stdio, reply),
        )
        .await?;
        Ok(Task::new(self.clone(), pid, io))
    }

    /// Creates and starts the task. A task whose start fails is killed and deleted.
    ///
    /// # Errors
    ///
    /// As [`Container::create_task`], plus the start's error.
    pub async fn start_task(&self, stdio: StdioRequest) -> Result<Task, Error> {
        let mut task = self.create_task(stdio).await?;
        task.start().await?;
        Ok(task)
    }

    /// Deletes the container record and its bundle folder. The task must be deleted first.
    ///
    /// # Errors
    ///
    /// Returns failed precondition while a task exists, or containerd's error.
    pub async fn delete(&self) -> Result<(), Error> {
        request(
            &self.actor,
            Operation::DeleteContainer,
            &self.target,
            self.call_timeout * 2,
            ContainerMsg::Delete,
        )
        .await
    }

    pub(crate) fn actor(&self) -> &ActorRef<ContainerMsg> {
        &self.actor
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    pub(crate) fn call_timeout(&self) -> Duration {
        self.call_timeout
    }
}
