//! The trait through which an engine receives events.

use keel_types::ContainerEvent;

/// Receives every event of every container, in order per container.
///
/// keel calls `handle_event` for one container at a time: the next event of that container
/// waits until the call returns. Events of different containers are delivered concurrently,
/// so a slow call delays only its own container. A panic inside the call is caught and logged,
/// and later events still arrive.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Handles one event.
    async fn handle_event(&self, event: ContainerEvent);
}
