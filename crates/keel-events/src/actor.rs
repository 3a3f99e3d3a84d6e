//! The event-subscriber actor.
//!
//! Lifecycle: `pre_start` spawns the stream task and keeps its handle in the state. Dropping
//! the state aborts the task, so it ends with the actor even when the actor fails. A panic in
//! the task makes the actor fail, so its supervisor replaces both. The task waits until the
//! connection is up, subscribes, publishes probe events until the first event arrives on the
//! new stream, then decodes each envelope and routes it to its container. When the stream
//! breaks it has the connection actor check containerd at once, and starts over. It calls
//! [`Router::reconcile`] each time a stream is proven live, and also when the connection comes
//! back while the stream stayed open (a frozen containerd keeps its streams but may have
//! dropped events meanwhile).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use containerd_client::services::v1::{PublishRequest, SubscribeRequest};
use containerd_client::types::Envelope;
use futures::{FutureExt as _, StreamExt};
use keel_connection::{Backoff, ConnectionMsg, ConnectionState, Services};
use keel_types::NamespaceEvent;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::task::AbortOnDropHandle;

use crate::repeats::RecentEnvelopes;
use crate::{Router, decode_envelope};

/// The topic of the probe event that proves a new subscription is live. It sits outside
/// `/tasks/`, so other subscribers of the namespace that filter on task events never see it.
const PROBE_TOPIC: &str = "/keel/probe";

/// How often the probe is published while the subscription is not yet confirmed.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// Messages the event actor handles.
#[derive(Debug)]
pub enum EventMsg {
    /// The stream task panicked. The actor fails, so its supervisor starts a new one with a
    /// new stream.
    StreamTaskFailed(String),
    /// Makes the actor fail, so a test can watch its supervisor replace it.
    #[cfg(feature = "fault-injection")]
    InjectFailure,
}

/// Start-up arguments of the event actor.
pub struct EventArgs {
    /// The service clients.
    pub services: Services,
    /// The receiver of decoded events.
    pub router: Arc<dyn Router>,
    /// The connection actor, told to check containerd when the stream breaks.
    pub connection: ActorRef<ConnectionMsg>,
    /// The connection's published state, used to wait before subscribing again.
    pub connection_state: watch::Receiver<ConnectionState>,
    /// Counters shared with the client, kept across restarts of the actor.
    pub stats: Arc<EventStats>,
    /// The channel that also carries every decoded event of the namespace to namespace-wide
    /// subscriptions. It is kept across restarts of the actor.
    pub observers: broadcast::Sender<NamespaceEvent>,
}

/// Counters of the event pipeline.
#[derive(Default)]
pub struct EventStats {
    /// Envelopes received.
    pub received: AtomicU64,
    /// Events for containers keel does not track, dropped.
    pub unrouted: AtomicU64,
    /// Envelopes that failed to decode, dropped.
    pub malformed: AtomicU64,
    /// Envelopes equal to one received shortly before, dropped. A shim sends an envelope again
    /// when containerd did not take it in time.
    pub repeated: AtomicU64,
    /// Streams that proved live, the first one included.
    pub subscriptions: AtomicU64,
    /// Wakes [`EventStats::wait_until_live`] when a stream proves live.
    live: Notify,
}

impl std::fmt::Debug for EventStats {
    /// Shows the counters only; the wake-up is tokio's internal state.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        formatter
            .debug_struct("EventStats")
            .field("received", &count(&self.received))
            .field("unrouted", &count(&self.unrouted))
            .field("malformed", &count(&self.malformed))
            .field("repeated", &count(&self.repeated))
            .field("subscriptions", &count(&self.subscriptions))
            .finish()
    }
}

impl EventStats {
    /// Waits until an event stream has proved live at least once.
    pub async fn wait_until_live(&self) {
        loop {
            // Registered before the check, so a stream going live in between still wakes it.
            let live = self.live.notified();
            if self.subscriptions.load(Ordering::Acquire) > 0 {
                return;
            }
            live.await;
        }
    }
}

/// The event-subscriber actor.
#[derive(Debug, Default)]
pub struct EventActor;

/// The event actor's state: the stream task, aborted when the state is dropped.
pub struct EventSubscriber {
    _stream: AbortOnDropHandle<()>,
}

impl Actor for EventActor {
    type Msg = EventMsg;
    type State = EventSubscriber;
    type Arguments = EventArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<EventMsg>,
        args: EventArgs,
    ) -> Result<EventSubscriber, ActorProcessingErr> {
        let routing = Routing {
            router: args.router,
            stats: args.stats,
            observers: args.observers,
            recent: RecentEnvelopes::default(),
        };
        let stream = run_stream(
            args.services,
            args.connection,
            args.connection_state,
            routing,
        );
        let stream = tokio::spawn(async move {
            if let Err(panic) = AssertUnwindSafe(stream).catch_unwind().await {
                let reason = panic_message(panic.as_ref());
                let _ = myself.cast(EventMsg::StreamTaskFailed(reason));
            }
        });
        Ok(EventSubscriber {
            _stream: AbortOnDropHandle::new(stream),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<EventMsg>,
        message: EventMsg,
        _subscriber: &mut EventSubscriber,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            EventMsg::StreamTaskFailed(reason) => Err(ActorProcessingErr::from(format!(
                "the event stream task panicked: {reason}"
            ))),
            #[cfg(feature = "fault-injection")]
            EventMsg::InjectFailure => Err(ActorProcessingErr::from("failure injected on request")),
        }
    }
}

/// Returns the text of a panic's payload, when it has one.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "no message".to_owned()
    }
}

/// The destinations of what the stream task reads: the router, the counters and the
/// namespace-wide subscriptions. The task decodes and routes each envelope itself, so an event
/// reaches its container actor in one hand-off, in the order containerd sent it.
struct Routing {
    router: Arc<dyn Router>,
    stats: Arc<EventStats>,
    observers: broadcast::Sender<NamespaceEvent>,
    /// The envelopes received lately, kept across streams, to drop the copies a shim resends.
    recent: RecentEnvelopes,
}

impl Routing {
    fn route(&mut self, envelope: &Envelope) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        if envelope.topic == PROBE_TOPIC {
            return;
        }
        if self.recent.is_repeat(envelope, Instant::now()) {
            let repeated = self.stats.repeated.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(topic = %envelope.topic, repeated, "repeated envelope dropped");
            return;
        }
        let event = match decode_envelope(envelope) {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(error) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = %envelope.topic, error = %error, "dropped malformed event");
                return;
            }
        };
        tracing::trace!(container_id = %event.container_id, topic = %envelope.topic, "event");
        if self.observers.receiver_count() > 0 {
            self.observe(NamespaceEvent::Event(event.clone()));
        }
        let container_id = event.container_id.clone();
        if !self.router.route(event) {
            let dropped = self.stats.unrouted.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%container_id, topic = %envelope.topic, dropped, "event for an untracked container");
        }
    }

    /// Marks a new stream live and reconciles. `stream_broke` is set when an earlier stream of
    /// this task ended, so events may have been missed.
    fn stream_live(&self, stream_broke: bool) {
        let subscriptions = self.stats.subscriptions.fetch_add(1, Ordering::AcqRel) + 1;
        self.stats.live.notify_waiters();
        if subscriptions > 1 {
            tracing::info!(subscriptions, "event stream resubscribed; reconciling");
        }
        // A replaced actor starts with a new stream: events may have been missed since the
        // old actor's stream, too.
        if stream_broke || subscriptions > 1 {
            self.observe(NamespaceEvent::Gap);
        }
        self.router.reconcile();
    }

    /// Reconciles after the connection came back while the stream stayed open.
    fn reconnected(&self) {
        tracing::info!("containerd serves again on the open event stream; reconciling");
        self.observe(NamespaceEvent::Gap);
        self.router.reconcile();
    }

    /// Publishes to the namespace-wide subscriptions; without any, the event is dropped.
    fn observe(&self, event: NamespaceEvent) {
        let _ = self.observers.send(event);
    }
}

/// Subscribes, forwards, and subscribes again after every break, until aborted.
///
/// A subscription that fails before its stream goes live is retried with capped backoff, so a
/// containerd that answers health checks but rejects subscriptions costs few attempts and
/// few log lines. A change of the connection's state ends the wait early, so a restarted
/// containerd is subscribed to as soon as the connection actor sees it serve.
async fn run_stream(
    services: Services,
    connection: ActorRef<ConnectionMsg>,
    mut connection_state: watch::Receiver<ConnectionState>,
    mut routing: Routing,
) {
    let backoff = Backoff::default();
    let mut failed_attempts = 0;
    let mut stream_broke = false;
    loop {
        if connection_state
            .wait_for(ConnectionState::is_connected)
            .await
            .is_err()
        {
            return;
        }
        let mut went_live = false;
        let result = forward_stream(
            &services,
            &mut routing,
            &mut connection_state,
            &mut went_live,
            stream_broke,
        )
        .await;
        let error = match result {
            Ok(()) => "stream closed by containerd".to_owned(),
            Err(status) => status.to_string(),
        };
        let _ = connection.cast(ConnectionMsg::CheckNow);
        stream_broke = true;
        failed_attempts = if went_live { 0 } else { failed_attempts + 1 };
        if failed_attempts <= 1 {
            tracing::warn!(%error, "event stream reset");
        }
        // Give the connection actor time to see the failure before waiting on its state again.
        let delay = match failed_attempts {
            0 => Duration::from_millis(5),
            attempt => backoff.delay(attempt),
        };
        let _ = tokio::time::timeout(delay, connection_state.changed()).await;
    }
}

/// Runs one subscription until the stream ends. Sets `went_live` once the stream delivered its
/// first event.
async fn forward_stream(
    services: &Services,
    routing: &mut Routing,
    connection_state: &mut watch::Receiver<ConnectionState>,
    went_live: &mut bool,
    stream_broke: bool,
) -> Result<(), tonic::Status> {
    let namespace = services.namespace();
    let request = SubscribeRequest {
        filters: vec![
            format!("namespace=={namespace},topic~=|^/tasks/|"),
            format!("namespace=={namespace},topic==\"{PROBE_TOPIC}\""),
        ],
    };
    let mut events = services.events();
    let subscribe = events.subscribe(request);
    tokio::pin!(subscribe);

    // containerd answers Subscribe only once the first event arrives, so probes are published
    // until the call returns.
    let mut probes = tokio::time::interval(PROBE_INTERVAL);
    let mut stream = loop {
        tokio::select! {
            response = &mut subscribe => break response?.into_inner(),
            _ = probes.tick() => publish_probe(services).await?,
        }
    };

    // The first envelope, probe or not, came through this subscription, so it is live.
    *went_live = true;
    routing.stream_live(stream_broke);
    let mut health_checks_failed = false;
    loop {
        tokio::select! {
            envelope = stream.next() => {
                let Some(envelope) = envelope else {
                    return Ok(());
                };
                routing.route(&envelope?);
            }
            changed = connection_state.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let connected = connection_state.borrow_and_update().is_connected();
                if !connected {
                    health_checks_failed = true;
                } else if std::mem::take(&mut health_checks_failed) {
                    routing.reconnected();
                }
            }
        }
    }
}

async fn publish_probe(services: &Services) -> Result<(), tonic::Status> {
    let request = PublishRequest {
        topic: PROBE_TOPIC.to_owned(),
        event: Some(prost_types::Any {
            type_url: "keel.probe".to_owned(),
            value: Vec::new(),
        }),
    };
    let timeout = services.call_timeout();
    match tokio::time::timeout(timeout, services.events().publish(request)).await {
        Ok(result) => result.map(drop),
        Err(_elapsed) => Err(tonic::Status::deadline_exceeded(
            "publishing the probe timed out",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_debug_shows_counters_only() {
        let stats = EventStats::default();
        stats.received.store(3, Ordering::Relaxed);
        assert_eq!(
            format!("{stats:?}"),
            "EventStats { received: 3, unrouted: 0, malformed: 0, repeated: 0, subscriptions: 0 }"
        );
    }
}
