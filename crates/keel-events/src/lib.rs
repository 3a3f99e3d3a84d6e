//! The event-subscriber actor: subscribes to containerd's `/tasks/` events of one namespace,
//! decodes each envelope into a typed [`keel_types::ContainerEvent`] and routes it by container.
//!
//! This crate knows the event protocol and nothing about how containers are kept: it hands
//! every decoded event to a [`Router`], which the container crate implements. After a broken
//! stream it waits for the connection, subscribes again, proves the new stream is live with a
//! probe event, and only then asks the router to reconcile, so no exit can fall between the
//! subscription and the reconciliation.

mod actor;
mod decode;
mod repeats;
mod router;

pub use actor::{EventActor, EventArgs, EventMsg, EventStats};
pub use decode::{DecodeError, decode_envelope};
pub use router::Router;
