//! Namespace-wide event subscriptions.

use keel_types::NamespaceEvent;
use tokio::sync::broadcast;

/// The events of every container of the client's namespace, from [`Client::subscribe`].
///
/// Each subscription has its own bounded buffer
/// ([`ClientOptions::subscription_capacity`] events). A subscriber that falls further behind
/// gets [`NamespaceEvent::Lagged`] with the number of events it lost, then the newest ones. A
/// slow subscriber never slows the client or other subscribers down. Dropping the
/// subscription ends it.
///
/// [`Client::subscribe`]: crate::Client::subscribe
/// [`ClientOptions::subscription_capacity`]: crate::ClientOptions::subscription_capacity
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<NamespaceEvent>,
}

impl Subscription {
    pub(crate) fn new(receiver: broadcast::Receiver<NamespaceEvent>) -> Self {
        Self { receiver }
    }

    /// Waits for the next event. Returns `None` once the client has shut down.
    pub async fn next(&mut self) -> Option<NamespaceEvent> {
        match self.receiver.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                Some(NamespaceEvent::Lagged { missed })
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}
