//! keel drives containerd from Rust: create containers from an OCI spec, run their tasks with
//! stdio over FIFOs, and receive every event of every container through a [`Backend`], in order
//! per container.
//!
//! This crate is the facade. It validates input, then only sends typed messages to the actors
//! of the other keel crates: the connection actor, the event-subscriber actor, and one actor
//! per container. containerd's protobuf types never appear in its API.
//!
//! ```no_run
//! use keel::{Backend, Client, ContainerEvent, StdioRequest, spec::SpecBuilder};
//! use tokio::io::AsyncReadExt;
//!
//! struct PrintEvents;
//!
//! #[keel::async_trait]
//! impl Backend for PrintEvents {
//!     async fn handle_event(&self, event: ContainerEvent) {
//!         println!("{}: {:?}", event.container_id, event.event);
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect("/run/containerd/containerd.sock", "example", PrintEvents).await?;
//! let spec = SpecBuilder::new("/srv/rootfs").args(["echo", "hello"]).build();
//! let container = client.create_container("hello", spec).await?;
//! let mut task = container.start_task(StdioRequest { output: true, ..Default::default() }).await?;
//! let mut output = String::new();
//! task.take_stdout().expect("requested").read_to_string(&mut output).await?;
//! let status = task.wait().await?;
//! println!("{output:?} exited with {}", status.code);
//! task.delete().await?;
//! container.delete().await?;
//! # Ok(())
//! # }
//! ```

mod client;
mod container;
mod held_io;
mod process;
mod request;
pub mod spec;
mod subscription;
mod task;
mod tree;
mod validate;

pub use async_trait::async_trait;
#[cfg(feature = "fault-injection")]
pub use client::FaultTarget;
pub use client::{Client, ClientOptions, Limits, Version};
pub use container::{Container, check_checkpoint_dir};
pub use keel_connection::{Backoff, ConnectionState};
pub use keel_container::{
    Backend, ContainerOptions, OutputStream, ProcessIo, RUNC_RUNTIME, RuncOptions, Runtime,
    StdinStream, StdioRequest,
};
pub use keel_events::EventStats;
pub use keel_types::{
    BlockIoStats, CgroupVersion, ContainerEvent, ContainerId, ContainerSummary, CpuStats, Error,
    ErrorKind, Event, ExecId, ExitStatus, MemoryStats, Namespace, NamespaceEvent, Operation,
    PidsStats, ProcessId, ProcessInfo, ProcessStatus, Stats, SyntheticReason, Target, TaskSummary,
};
pub use process::Process;
pub use subscription::Subscription;
pub use task::Task;

/// Compiles the library example in the README as a doc test, so it cannot go stale.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeExample;
