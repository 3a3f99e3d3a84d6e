//! The per-container queue between a container actor and the backend.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use keel_types::{ContainerEvent, ContainerId};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::Backend;

/// The sending side of a container's event queue. Dropping it lets the delivery task finish
/// the events already queued and end.
#[derive(Debug)]
pub(crate) struct Delivery {
    sender: mpsc::Sender<ContainerEvent>,
}

impl Delivery {
    /// Starts the delivery task of one container on `tracker`, which the client waits on when
    /// it shuts down.
    pub(crate) fn spawn(
        container_id: &ContainerId,
        backend: Arc<dyn Backend>,
        capacity: usize,
        tracker: &TaskTracker,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        tracker.spawn(deliver_all(container_id.clone(), backend, receiver));
        Self { sender }
    }

    /// Queues `event`, waiting while the queue is full so a slow backend slows this container
    /// only.
    pub(crate) async fn send(&self, event: ContainerEvent) {
        if self.sender.send(event).await.is_err() {
            tracing::error!("event delivery task ended early; event dropped");
        }
    }

    /// Returns the number of events waiting for the backend.
    pub(crate) fn depth(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }
}

async fn deliver_all(
    container_id: ContainerId,
    backend: Arc<dyn Backend>,
    mut receiver: mpsc::Receiver<ContainerEvent>,
) {
    while let Some(event) = receiver.recv().await {
        let call = AssertUnwindSafe(backend.handle_event(event));
        if call.catch_unwind().await.is_err() {
            tracing::error!(%container_id, "backend panicked while handling an event; continuing");
        }
    }
}
