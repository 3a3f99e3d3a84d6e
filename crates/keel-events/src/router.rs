//! The interface between the event actor and whoever keeps the containers.

use keel_types::ContainerEvent;

/// Receives decoded events and reconciles after a gap in the event stream.
pub trait Router: Send + Sync + 'static {
    /// Hands `event` to its container. Returns false when no container with that id is
    /// tracked, in which case the event actor counts and drops it.
    fn route(&self, event: ContainerEvent) -> bool;

    /// Asks every tracked container to compare its state with containerd's. Called each time
    /// a new event stream is live, so events missed while no stream was open are recovered.
    fn reconcile(&self);
}
