//! A containerd of keel's own: started as a child with a generated config, watched, restarted
//! when it dies, handled by a chosen policy when it hangs, and stopped on request.
//!
//! [`Supervisor::start`] adopts the containerd its pidfile names when that process runs the
//! configured binary with our config file and serves on our socket, and otherwise starts a
//! new one. The supervisor sees a death at once (the child's exit status, or a pidfd for an
//! adopted process) and restarts containerd at once, with a doubling delay while it keeps
//! dying. Health checks that keep failing while the process lives mark it hung, and
//! [`HungPolicy`] decides whether to wait or to dump its goroutines and restart it. Stopping
//! leaves shims and containers running unless [`Containers::Stop`] is given.
//!
//! Everything that happens is published as a [`SupervisorEvent`], through
//! [`Supervisor::subscribe`] or [`Supervisor::on_event`], so a keel client can reconnect the
//! moment containerd serves again. This crate does not depend on the keel facade; it touches
//! only the folders, sockets and processes of its own containerd.

mod config;
mod containerd_config;
mod error;
mod events;
mod health;
mod launch;
mod monitor;
mod pidfile;
mod process;
pub mod shims;
mod supervisor;

pub use config::{ContainerdOutput, HungPolicy, RestartBackoff, SupervisorConfig};
pub use containerd_config::{ContainerdConfig, DEFAULT_MESSAGE_SIZE, DISABLED_PLUGINS};
pub use error::SupervisorError;
pub use events::{Listener, SupervisorEvent, SupervisorStatus};
pub use health::connect_unix_socket;
pub use monitor::Containers;
pub use pidfile::{is_process_alive, process_state};
pub use supervisor::Supervisor;
