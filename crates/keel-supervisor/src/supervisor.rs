//! The handle of a supervised containerd.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::SupervisorConfig;
use crate::error::SupervisorError;
use crate::events::{Publisher, SupervisorEvent, SupervisorStatus};
use crate::launch::{Origin, adopt_or_start, prepare, resolve_binary};
use crate::monitor::{Command, Containers, Monitor};

/// A containerd that keel started or adopted, and the task that watches it.
///
/// Dropping the handle ends the watching and leaves containerd running; the next
/// [`Supervisor::start`] on the same folders adopts it through the pidfile. Call
/// [`Supervisor::stop`] to stop containerd.
///
/// ```no_run
/// use std::time::Duration;
/// use keel_supervisor::{Containers, Supervisor, SupervisorConfig};
///
/// # async fn run() -> Result<(), keel_supervisor::SupervisorError> {
/// let config = SupervisorConfig::new("/var/lib/my-engine/containerd", "/run/my-engine");
/// let supervisor = Supervisor::start(config).await?;
/// // Pass supervisor.socket() to keel::ClientOptions::new, then wire restarts to the client:
/// // supervisor.on_event(move |event| if event.is_serving_again() {
/// //     client.notify_containerd_restarted()
/// // });
/// supervisor.stop(Duration::from_secs(10), Containers::Keep).await?;
/// # Ok(())
/// # }
/// ```
pub struct Supervisor {
    config: Arc<SupervisorConfig>,
    publisher: Publisher,
    status: watch::Receiver<SupervisorStatus>,
    commands: mpsc::Sender<Command>,
    monitor: JoinHandle<()>,
}

impl Supervisor {
    /// Writes the config file, then adopts the containerd the pidfile names if it is ours and
    /// serves, or else starts one and waits until it serves (at most `start_timeout`), and
    /// starts watching it.
    ///
    /// # Errors
    ///
    /// Returns an error when the binary is missing, a folder or file cannot be written,
    /// containerd exits or does not serve in time, or the pidfile names our containerd that
    /// does not serve under [`crate::HungPolicy::Wait`].
    pub async fn start(config: SupervisorConfig) -> Result<Self, SupervisorError> {
        let binary = resolve_binary(&config)?;
        prepare(&config)?;
        let (process, origin) = adopt_or_start(&config, &binary).await?;
        let pid = process.pid();

        let publisher = Publisher::new(SupervisorStatus::Serving { pid });
        let status = publisher.status.subscribe();
        publisher.publish(match origin {
            Origin::Started => SupervisorEvent::Started { pid },
            Origin::Adopted => SupervisorEvent::Adopted { pid },
        });

        let config = Arc::new(config);
        let (commands, receiver) = mpsc::channel(4);
        let monitor = Monitor {
            config: Arc::clone(&config),
            binary,
            process: Some(process),
            publisher: publisher.clone(),
            commands: receiver,
            serving_since: Instant::now(),
            consecutive_deaths: 0,
        };
        let monitor = tokio::spawn(monitor.run());
        Ok(Self {
            config,
            publisher,
            status,
            commands,
            monitor,
        })
    }

    /// containerd's gRPC socket, the one to pass to `keel::ClientOptions::new`.
    pub fn socket(&self) -> PathBuf {
        self.config.socket()
    }

    /// The settings the supervisor runs with.
    pub fn config(&self) -> &SupervisorConfig {
        &self.config
    }

    /// containerd's current state.
    pub fn status(&self) -> SupervisorStatus {
        *self.status.borrow()
    }

    /// The pid of the running containerd, or `None` while it is being restarted or after a stop.
    pub fn pid(&self) -> Option<u32> {
        self.status().pid()
    }

    /// Returns a receiver of containerd's state, updated on every event.
    pub fn watch_status(&self) -> watch::Receiver<SupervisorStatus> {
        self.status.clone()
    }

    /// Returns a receiver of the events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SupervisorEvent> {
        self.publisher.events.subscribe()
    }

    /// Runs `listener` for every event from now on, on the supervisor's task, so it must
    /// return quickly. Wire a keel client with
    /// `move |event| if event.is_serving_again() { client.notify_containerd_restarted() }`.
    pub fn on_event(&self, listener: impl Fn(&SupervisorEvent) + Send + Sync + 'static) {
        self.publisher.add_listener(Box::new(listener));
    }

    /// Waits until the status satisfies `condition`, at most `timeout`. Returns the status
    /// then, or `None` on timeout.
    pub async fn wait_for_status(
        &self,
        timeout: Duration,
        condition: impl Fn(&SupervisorStatus) -> bool,
    ) -> Option<SupervisorStatus> {
        let mut status = self.status.clone();
        let waited = tokio::time::timeout(timeout, status.wait_for(|status| condition(status)));
        match waited.await {
            Ok(Ok(status)) => Some(*status),
            _ => None,
        }
    }

    /// Stops containerd: SIGTERM, then SIGKILL after `grace`. With [`Containers::Keep`] the
    /// shims and containers keep running for the next containerd; with [`Containers::Stop`]
    /// they are stopped too. A restart in progress finishes first.
    ///
    /// # Errors
    ///
    /// Returns [`SupervisorError::Stopped`] when the monitor has already ended.
    pub async fn stop(
        self,
        grace: Duration,
        containers: Containers,
    ) -> Result<(), SupervisorError> {
        let (reply, stopped) = oneshot::channel();
        let command = Command::Stop {
            grace,
            containers,
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| SupervisorError::Stopped)?;
        stopped.await.map_err(|_| SupervisorError::Stopped)
    }

    /// The pidfile of the supervised containerd.
    pub fn pidfile(&self) -> PathBuf {
        self.config.pidfile()
    }

    /// The run folder of the sockets, config file and pidfile.
    pub fn run_dir(&self) -> &Path {
        &self.config.run_dir
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.monitor.abort();
    }
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Supervisor")
            .field("socket", &self.config.socket())
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}
