//! Container actors: one actor per container, owning its task, exec processes, stdio and the
//! delivery of its events to the [`Backend`].
//!
//! The [`ContainersSupervisor`] spawns a [`ContainerActor`] per container, keeps the
//! [`Registry`] that the event actor routes through, and restarts a failed container actor,
//! which then rebuilds its state from containerd. Each container actor handles its messages
//! one at a time, so requests and events of one container are applied in the order they
//! arrive; its events go to a bounded queue that a delivery task drains into the backend, so a
//! slow backend never stalls the actor or any other container. This crate knows nothing of
//! the public API: the facade turns its calls into [`ContainerMsg`]s.

mod actor;
mod backend;
mod delivery;
mod events;
mod exec;
mod folders;
mod handles;
mod inspect;
mod leftovers;
mod listing;
mod metrics;
mod process;
mod registry;
mod runtime;
mod stdin_eof;
mod stdio;
mod supervisor;
mod task;

pub use actor::{
    Attached, ContainerActor, ContainerArgs, ContainerMsg, ContainerOptions, CreateContainer,
    CreateExec, CreateTask, Reply, SpecFacts,
};
pub use backend::Backend;
pub use metrics::{MetricsError, decode_metrics};
pub use process::{ProcessRef, WaitUntil};
pub use registry::Registry;
pub use runtime::{RUNC_RUNTIME, RuncOptions, Runtime};
pub use stdio::{OutputStream, ProcessIo, StdinStream, StdioRequest};
pub use supervisor::{ContainersSupervisor, SupervisorArgs, SupervisorMsg};
