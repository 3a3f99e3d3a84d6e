//! Identifiers, events and errors shared by every keel crate.
//!
//! This crate owns the vocabulary the actors speak: validated ids ([`ContainerId`], [`ExecId`],
//! [`Namespace`]), the typed events a [`Backend`](../keel/trait.Backend.html) receives, and the
//! error type with its [`ErrorKind`]. It holds no I/O and no protobuf types, so every other crate
//! can depend on it without pulling containerd's API in.

mod error;
mod event;
mod ids;
mod status;
mod summary;

pub use error::{Error, ErrorKind, Operation, Target, kind_of_status};
pub use event::{ContainerEvent, Event, ExitStatus, NamespaceEvent, ProcessId, SyntheticReason};
pub use ids::{ContainerId, ExecId, MAX_IDENTIFIER_LEN, Namespace};
pub use status::{
    BlockIoStats, CgroupVersion, CpuStats, MemoryStats, PidsStats, ProcessInfo, ProcessStatus,
    Stats,
};
pub use summary::{ContainerSummary, TaskSummary};
