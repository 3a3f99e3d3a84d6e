//! The event-subscriber actor.
//!
//! Lifecycle: `pre_start` spawns the stream task and keeps its handle in the state. Dropping
//! the state aborts the task, so it ends with the actor even when the actor fails. The task waits
//! until the connection is up, subscribes, publishes probe events until the first event
//! arrives on the new stream, then forwards every envelope to the actor. When the stream breaks
//! it tells the actor, asks the connection actor to check containerd at once, and starts over.
//! The actor decodes, routes, and calls [`Router::reconcile`] each time a stream is proven live,
//! and also when the connection comes back while the stream stayed open (a frozen containerd
//! keeps its streams but may have dropped events meanwhile).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use containerd_client::services::v1::{PublishRequest, SubscribeRequest};
use containerd_client::types::Envelope;
use futures::StreamExt;
use keel_connection::{Backoff, ConnectionMsg, ConnectionState, Services};
use keel_types::NamespaceEvent;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::task::AbortOnDropHandle;

use crate::{Router, decode_envelope};

/// The topic of the probe event that proves a new subscription is live. It sits outside
/// `/tasks/`, so other subscribers of the namespace that filter on task events never see it.
const PROBE_TOPIC: &str = "/keel/probe";

/// How often the probe is published while the subscription is not yet confirmed.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// Messages the event actor handles.
#[derive(Debug)]
pub enum EventMsg {
    /// An envelope from the live stream.
    Envelope(Envelope),
    /// A new stream is live: its first event arrived.
    StreamLive,
    /// The connection came back after failed health checks while the stream stayed open.
    Reconnected,
    /// The stream ended or failed; the task is already subscribing again.
    StreamEnded(String),
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
#[derive(Debug, Default)]
pub struct EventStats {
    /// Envelopes received.
    pub received: AtomicU64,
    /// Events for containers keel does not track, dropped.
    pub unrouted: AtomicU64,
    /// Envelopes that failed to decode, dropped.
    pub malformed: AtomicU64,
    /// Streams that proved live, the first one included.
    pub subscriptions: AtomicU64,
    /// Wakes [`EventStats::wait_until_live`] when a stream proves live.
    live: Notify,
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

/// The event actor's state.
pub struct EventSubscriber {
    router: Arc<dyn Router>,
    stats: Arc<EventStats>,
    observers: broadcast::Sender<NamespaceEvent>,
    /// Set when a stream ended, so the next live stream sends subscribers a gap marker.
    stream_broke: bool,
    /// The stream task; dropping the handle aborts it.
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
        let stream = tokio::spawn(run_stream(
            args.services,
            args.connection,
            args.connection_state,
            myself,
        ));
        Ok(EventSubscriber {
            router: args.router,
            stats: args.stats,
            observers: args.observers,
            stream_broke: false,
            _stream: AbortOnDropHandle::new(stream),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<EventMsg>,
        message: EventMsg,
        subscriber: &mut EventSubscriber,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            EventMsg::Envelope(envelope) => subscriber.route(&envelope),
            EventMsg::StreamLive => subscriber.stream_live(),
            #[cfg(feature = "fault-injection")]
            EventMsg::InjectFailure => {
                return Err(ActorProcessingErr::from("failure injected on request"));
            }
            EventMsg::Reconnected => {
                tracing::info!("containerd serves again on the open event stream; reconciling");
                subscriber.observe(NamespaceEvent::Gap);
                subscriber.router.reconcile();
            }
            EventMsg::StreamEnded(error) => {
                subscriber.stream_broke = true;
                tracing::warn!(%error, "event stream reset");
            }
        }
        Ok(())
    }
}

impl EventSubscriber {
    fn route(&self, envelope: &Envelope) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        if envelope.topic == PROBE_TOPIC {
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

    fn stream_live(&mut self) {
        let subscriptions = self.stats.subscriptions.fetch_add(1, Ordering::AcqRel) + 1;
        self.stats.live.notify_waiters();
        if subscriptions > 1 {
            tracing::info!(subscriptions, "event stream resubscribed; reconciling");
        }
        // A replaced actor starts with a new stream: events may have been missed since the
        // old actor's stream, too.
        if std::mem::take(&mut self.stream_broke) || subscriptions > 1 {
            self.observe(NamespaceEvent::Gap);
        }
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
    myself: ActorRef<EventMsg>,
) {
    let backoff = Backoff::default();
    let mut failed_attempts = 0;
    loop {
        if connection_state
            .wait_for(ConnectionState::is_connected)
            .await
            .is_err()
        {
            return;
        }
        let mut went_live = false;
        let result =
            forward_stream(&services, &myself, &mut connection_state, &mut went_live).await;
        let error = match result {
            Ok(()) => "stream closed by containerd".to_owned(),
            Err(status) => status.to_string(),
        };
        let _ = connection.cast(ConnectionMsg::CheckNow);
        failed_attempts = if went_live { 0 } else { failed_attempts + 1 };
        if failed_attempts <= 1 && myself.cast(EventMsg::StreamEnded(error)).is_err() {
            return;
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
    myself: &ActorRef<EventMsg>,
    connection_state: &mut watch::Receiver<ConnectionState>,
    went_live: &mut bool,
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
    if myself.cast(EventMsg::StreamLive).is_err() {
        return Ok(());
    }
    let mut health_checks_failed = false;
    loop {
        tokio::select! {
            envelope = stream.next() => {
                let Some(envelope) = envelope else {
                    return Ok(());
                };
                if myself.cast(EventMsg::Envelope(envelope?)).is_err() {
                    return Ok(());
                }
            }
            changed = connection_state.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let connected = connection_state.borrow_and_update().is_connected();
                if !connected {
                    health_checks_failed = true;
                } else if std::mem::take(&mut health_checks_failed)
                    && myself.cast(EventMsg::Reconnected).is_err()
                {
                    return Ok(());
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
