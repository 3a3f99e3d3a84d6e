//! The connection actor.
//!
//! Lifecycle: it starts in `Connecting`, checks containerd's health at once, and then moves
//! between `Connected` (checking every `health_interval`) and `Backoff` (retrying after
//! [`Backoff::delay`], or every few milliseconds for a second after containerd's socket was
//! created). Every change is published on the `watch` channel given in its
//! arguments, which outlives the actor, so subscribers keep working when a supervisor restarts
//! it. The health check runs in a task whose handle the state holds, so a frozen containerd
//! never stalls the mailbox; the actor only ever has one check in flight. The check, the timer
//! and the socket watcher are aborted when their handles drop, so they end with the actor even
//! when it fails and `post_stop` does not run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_types::{Error, Namespace};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{Backoff, Services, socket_watch};

/// The connection actor's view of containerd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// A health check is in flight; `attempt` counts the checks since containerd last served.
    Connecting {
        /// The attempt number, from 1.
        attempt: u32,
    },
    /// containerd answered its last health check with `SERVING`.
    Connected,
    /// The last check failed; the next one starts after `retry_in`.
    Backoff {
        /// The number of failed attempts so far.
        attempt: u32,
        /// The delay before the next attempt.
        retry_in: Duration,
    },
}

impl ConnectionState {
    /// Returns true when containerd answered the last health check.
    pub fn is_connected(&self) -> bool {
        matches!(self, Self::Connected)
    }
}

/// Messages the connection actor handles.
#[derive(Debug)]
pub enum ConnectionMsg {
    /// Returns the service clients.
    Services(RpcReplyPort<Services>),
    /// Checks containerd's health now, skipping any backoff wait. Sent when an event stream
    /// breaks, or by a supervisor that restarted containerd.
    CheckNow,
    /// containerd's socket was just created: checks now, and retries quickly for a while
    /// because containerd may not accept connections yet.
    SocketCreated,
    /// Timer tick: time for the next scheduled check.
    Tick,
    /// The result of the check that was in flight.
    CheckFinished(Result<(), String>),
    /// Makes the actor fail, so a test can watch its supervisor replace it.
    #[cfg(feature = "fault-injection")]
    InjectFailure,
}

/// Start-up arguments of the connection actor.
#[derive(Clone, Debug)]
pub struct ConnectionArgs {
    /// containerd's gRPC socket.
    pub socket: PathBuf,
    /// The namespace of every request.
    pub namespace: Namespace,
    /// The default deadline of one request.
    pub call_timeout: Duration,
    /// How often a connected containerd is checked.
    pub health_interval: Duration,
    /// How long one health check may take before containerd counts as down.
    pub health_timeout: Duration,
    /// The delays between reconnect attempts.
    pub backoff: Backoff,
    /// The channel state changes are published on. The caller creates it, so it outlives restarts.
    pub state: Arc<watch::Sender<ConnectionState>>,
}

/// The delay between checks while containerd starts: after its socket was created, a check
/// can still find the socket refusing connections for a moment.
const STARTUP_RETRY: Duration = Duration::from_millis(5);

/// How long after the socket was created the checks use [`STARTUP_RETRY`] instead of the
/// backoff delay.
const STARTUP_WINDOW: Duration = Duration::from_secs(1);

/// The connection actor.
#[derive(Debug, Default)]
pub struct ConnectionActor;

/// The connection actor's state.
pub struct Connection {
    args: ConnectionArgs,
    services: Services,
    lifecycle: ConnectionState,
    check: Option<AbortOnDropHandle<()>>,
    timer: Option<AbortOnDropHandle<()>>,
    /// A check was requested while one was in flight; if that one fails, the next starts at
    /// once instead of after the backoff delay, so a socket that appeared meanwhile is used.
    recheck_requested: bool,
    /// When containerd's socket was last created, until a check succeeds.
    socket_created_at: Option<Instant>,
    /// The socket watcher; held only so that dropping the state aborts it.
    _socket_watch: Option<AbortOnDropHandle<()>>,
}

impl Actor for ConnectionActor {
    type Msg = ConnectionMsg;
    type State = Connection;
    type Arguments = ConnectionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ConnectionMsg>,
        args: ConnectionArgs,
    ) -> Result<Connection, ActorProcessingErr> {
        let services = Services::new(&args.socket, args.namespace.clone(), args.call_timeout)?;
        let socket_watch = spawn_socket_watch(&args, &myself);
        let mut connection = Connection {
            args,
            services,
            lifecycle: ConnectionState::Connecting { attempt: 1 },
            check: None,
            timer: None,
            recheck_requested: false,
            socket_created_at: None,
            _socket_watch: socket_watch,
        };
        connection.start_check(&myself);
        Ok(connection)
    }

    async fn handle(
        &self,
        myself: ActorRef<ConnectionMsg>,
        message: ConnectionMsg,
        connection: &mut Connection,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConnectionMsg::Services(reply) => {
                let _ = reply.send(connection.services.clone());
            }
            ConnectionMsg::CheckNow => connection.check_now(&myself),
            ConnectionMsg::SocketCreated => {
                connection.socket_created_at = Some(Instant::now());
                connection.check_now(&myself);
            }
            ConnectionMsg::Tick => connection.start_check(&myself),
            ConnectionMsg::CheckFinished(result) => connection.finish_check(&myself, result),
            #[cfg(feature = "fault-injection")]
            ConnectionMsg::InjectFailure => {
                return Err(ActorProcessingErr::from("failure injected on request"));
            }
        }
        Ok(())
    }
}

impl Connection {
    /// Starts a health check unless one is in flight.
    fn start_check(&mut self, myself: &ActorRef<ConnectionMsg>) {
        if self
            .check
            .as_ref()
            .is_some_and(|check| !check.is_finished())
        {
            return;
        }
        if let ConnectionState::Backoff { attempt, .. } = self.lifecycle {
            self.publish(ConnectionState::Connecting {
                attempt: attempt + 1,
            });
        }
        let mut health = self.services.health();
        let timeout = self.args.health_timeout;
        let myself = myself.clone();
        self.check = Some(AbortOnDropHandle::new(tokio::spawn(async move {
            let request = HealthCheckRequest {
                service: String::new(),
            };
            let result = match tokio::time::timeout(timeout, health.check(request)).await {
                Ok(Ok(response)) if response.get_ref().status == ServingStatus::Serving as i32 => {
                    Ok(())
                }
                Ok(Ok(response)) => Err(format!("status {}", response.get_ref().status)),
                Ok(Err(status)) => Err(status.to_string()),
                Err(_elapsed) => Err(format!("no answer within {}ms", timeout.as_millis())),
            };
            let _ = myself.cast(ConnectionMsg::CheckFinished(result));
        })));
    }

    /// Checks at once, unless containerd is connected and a check is already scheduled.
    fn check_now(&mut self, myself: &ActorRef<ConnectionMsg>) {
        self.timer = None;
        if self
            .check
            .as_ref()
            .is_some_and(|check| !check.is_finished())
        {
            self.recheck_requested = true;
            return;
        }
        self.start_check(myself);
    }

    /// Moves the state machine on the result of a health check and schedules the next one.
    fn finish_check(&mut self, myself: &ActorRef<ConnectionMsg>, result: Result<(), String>) {
        self.check = None;
        if result.is_ok() {
            self.recheck_requested = false;
            self.socket_created_at = None;
        }
        let next_check = match (result, self.lifecycle) {
            (Ok(()), ConnectionState::Connected) => self.args.health_interval,
            (Ok(()), _) => {
                tracing::info!(socket = %self.args.socket.display(), "connected");
                self.publish(ConnectionState::Connected);
                self.args.health_interval
            }
            (Err(error), lifecycle) => {
                let attempt = match lifecycle {
                    ConnectionState::Connecting { attempt } => attempt,
                    ConnectionState::Backoff { attempt, .. } => attempt,
                    ConnectionState::Connected => {
                        tracing::warn!(socket = %self.args.socket.display(), %error, "containerd stopped serving");
                        1
                    }
                };
                let starting = self
                    .socket_created_at
                    .is_some_and(|created| created.elapsed() < STARTUP_WINDOW);
                let retry_in = if std::mem::take(&mut self.recheck_requested) {
                    Duration::ZERO
                } else if starting {
                    STARTUP_RETRY
                } else {
                    self.args.backoff.delay(attempt)
                };
                tracing::debug!(socket = %self.args.socket.display(), attempt, %error, retry_in_ms = retry_in.as_millis() as u64, "health check failed");
                self.publish(ConnectionState::Backoff { attempt, retry_in });
                retry_in
            }
        };
        self.timer = Some(AbortOnDropHandle::new(tokio::spawn(schedule_tick(
            myself.clone(),
            next_check,
        ))));
    }

    fn publish(&mut self, lifecycle: ConnectionState) {
        self.lifecycle = lifecycle;
        self.args.state.send_replace(lifecycle);
    }
}

async fn schedule_tick(myself: ActorRef<ConnectionMsg>, delay: Duration) {
    tokio::time::sleep(delay).await;
    let _ = myself.cast(ConnectionMsg::Tick);
}

/// Starts the socket watcher; a failure to watch only costs reconnect speed, so it is logged.
fn spawn_socket_watch(
    args: &ConnectionArgs,
    myself: &ActorRef<ConnectionMsg>,
) -> Option<AbortOnDropHandle<()>> {
    let socket = args.socket.clone();
    let myself = myself.clone();
    Some(AbortOnDropHandle::new(tokio::spawn(async move {
        let result = socket_watch::watch_socket(&socket, || {
            tracing::debug!(socket = %socket.display(), "containerd's socket was created");
            let _ = myself.cast(ConnectionMsg::SocketCreated);
        })
        .await;
        if let Err(error) = result {
            tracing::warn!(socket = %socket.display(), %error, "cannot watch containerd's socket; reconnects rely on backoff");
        }
    })))
}

/// Returns the services of a running connection actor.
///
/// # Errors
///
/// Returns [`Error::Stopped`] when the actor is gone.
pub async fn services_of(actor: &ActorRef<ConnectionMsg>) -> Result<Services, Error> {
    let stopped = || Error::Stopped {
        operation: keel_types::Operation::Connect,
        target: keel_types::Target::Containerd,
    };
    match actor.call(ConnectionMsg::Services, None).await {
        Ok(ractor::rpc::CallResult::Success(services)) => Ok(services),
        _ => Err(stopped()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    /// The backoff delay of these tests: long enough that a test would time out waiting for it.
    const SLOW_BACKOFF: Duration = Duration::from_secs(60);

    /// Waits until the published state matches `expected`, for at most 10 s.
    async fn wait_for_state(
        states: &mut watch::Receiver<ConnectionState>,
        expected: impl Fn(&ConnectionState) -> bool,
    ) {
        let waited = tokio::time::timeout(Duration::from_secs(10), states.wait_for(expected))
            .await
            .is_ok();
        assert!(
            waited,
            "state not reached; last state {:?}",
            *states.borrow()
        );
    }

    fn backoff_with(retry: Duration) -> impl Fn(&ConnectionState) -> bool {
        move |state| matches!(state, ConnectionState::Backoff { retry_in, .. } if *retry_in == retry)
    }

    #[tokio::test]
    async fn created_socket_is_retried_quickly() {
        let folder = std::env::temp_dir().join(format!("keel-connection-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let socket = folder.join("containerd.sock");
        let (state, mut states) = watch::channel(ConnectionState::Connecting { attempt: 1 });
        let args = ConnectionArgs {
            socket: socket.clone(),
            namespace: Namespace::new("test").unwrap(),
            call_timeout: Duration::from_secs(1),
            health_interval: SLOW_BACKOFF,
            health_timeout: Duration::from_secs(1),
            backoff: Backoff {
                initial: SLOW_BACKOFF,
                max: SLOW_BACKOFF,
            },
            state: Arc::new(state),
        };
        let (actor, handle) = Actor::spawn(None, ConnectionActor, args).await.unwrap();
        wait_for_state(&mut states, backoff_with(SLOW_BACKOFF)).await;

        // A socket file that refuses connections, as a starting containerd's can for a moment
        // after the file appears: the checks come every few milliseconds, not after the backoff.
        drop(UnixListener::bind(&socket).unwrap());
        wait_for_state(&mut states, backoff_with(STARTUP_RETRY)).await;

        // Once the start-up window has passed, the backoff delay applies again.
        wait_for_state(&mut states, backoff_with(SLOW_BACKOFF)).await;

        actor.stop(None);
        handle.await.unwrap();
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
