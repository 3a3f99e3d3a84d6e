//! The connection actor: owns the gRPC channel to containerd and watches containerd's health.
//!
//! This crate knows containerd's socket and namespace and nothing about containers. It builds
//! one lazily connected [`tonic`] channel that sends the namespace with every request, wraps it
//! in [`Services`] for the other actors, checks containerd through the gRPC health service on an
//! interval, and publishes each [`ConnectionState`] change on a `watch` channel. While
//! containerd is down it retries with capped exponential backoff, and it retries at once when
//! containerd's socket reappears or when someone calls [`ConnectionMsg::CheckNow`].

mod actor;
mod backoff;
mod deadline;
mod services;
mod socket_watch;

pub use actor::{ConnectionActor, ConnectionArgs, ConnectionMsg, ConnectionState, services_of};
pub use backoff::Backoff;
pub use deadline::{call_with_deadline, deadline_after};
pub use services::{Channel, NamespaceInterceptor, Services};
