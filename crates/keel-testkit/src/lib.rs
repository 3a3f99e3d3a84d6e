//! Test support for keel: private containerd instances, busybox root filesystems and fault
//! injection.
//!
//! [`PrivateContainerd`] runs a containerd of its own in a fresh folder under `/tmp`, so tests
//! can run in parallel and never touch the machine's containerd. It needs root. The crate owns
//! only the processes, files, mounts and cgroups of the instances it starts, and its cleanup
//! checks that ownership before it removes anything.

mod error;
mod grpc;
mod instance;
mod layout;
mod leftovers;
mod process;
mod programs;
mod quirks;
mod rootfs;

pub use error::TestkitError;
pub use instance::PrivateContainerd;
pub use keel_supervisor::is_process_alive;
pub use leftovers::fifo_count;
pub use programs::{BUSYBOX_ENV, CONTAINERD_ENV, CRIU_DIR_ENV};
pub use quirks::{is_stale_task_bundle, loses_exits_across_restart};
