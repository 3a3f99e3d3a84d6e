//! The monitor: the task that watches one supervised containerd, restarts it when it dies,
//! handles a hang by the configured policy, and stops it on request.
//!
//! Lifecycle: it starts with a serving containerd and loops over "watch until something
//! happens". A death (seen through the child's exit status or the adopted process's pidfd, so
//! at once) leads to a restart: immediate the first time, then after a doubling delay while
//! containerd keeps dying. Failed health checks while the process lives count as a hang once
//! they have lasted `hung_after`. The monitor ends on a stop request, or when the supervisor
//! handle is dropped, which leaves containerd running.

use std::future::Future;
use std::os::unix::fs::FileTypeExt as _;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{HungPolicy, SupervisorConfig};
use crate::events::{Publisher, SupervisorEvent};
use crate::health::is_serving;
use crate::launch::{adopt_or_start, dump_and_kill};
use crate::pidfile;
use crate::process::ContainerdProcess;
use crate::shims::stop_tasks_and_shims;

/// How long containerd may take to die after SIGKILL before the stop gives up waiting.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// The fate of the containers when the supervisor stops containerd.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Containers {
    /// Shims and containers keep running, and the next containerd on the same folders picks
    /// them up.
    #[default]
    Keep,
    /// Every task's runc container is deleted with `runc delete --force` and every shim is
    /// killed.
    Stop,
}

/// A request to the monitor.
pub(crate) enum Command {
    /// Stops containerd: SIGTERM, then SIGKILL after `grace`.
    Stop {
        grace: Duration,
        containers: Containers,
        reply: oneshot::Sender<()>,
    },
}

/// The reason a watch ended.
enum Watched {
    Died(Option<ExitStatus>),
    Hung,
    Command(Command),
    HandleDropped,
}

/// The reason the restarts after a death ended.
enum AfterDeath {
    Serving,
    Command(Command),
    HandleDropped,
}

/// The state of the monitor task.
pub(crate) struct Monitor {
    pub(crate) config: Arc<SupervisorConfig>,
    pub(crate) binary: std::path::PathBuf,
    /// The running containerd; `None` between a death and the next successful restart.
    pub(crate) process: Option<ContainerdProcess>,
    pub(crate) publisher: Publisher,
    pub(crate) commands: mpsc::Receiver<Command>,
    /// When the current containerd last started serving.
    pub(crate) serving_since: Instant,
    /// Deaths since containerd last served for `reset_after`.
    pub(crate) consecutive_deaths: u32,
}

impl Monitor {
    /// Runs until a stop request or until the handle is dropped.
    pub(crate) async fn run(mut self) {
        loop {
            match self.watch().await {
                Watched::Died(status) => match self.handle_death(status).await {
                    AfterDeath::Serving => {}
                    AfterDeath::Command(command) => return self.handle_command(command).await,
                    AfterDeath::HandleDropped => return,
                },
                Watched::Hung => self.handle_hang().await,
                Watched::Command(command) => return self.handle_command(command).await,
                Watched::HandleDropped => return,
            }
        }
    }

    /// Checks health every `health_interval` until containerd dies, hangs, or a command
    /// arrives. A hung containerd under [`HungPolicy::Wait`] is watched on, and reported as
    /// recovered when it serves again.
    async fn watch(&mut self) -> Watched {
        let Some(process) = self.process.as_mut() else {
            return Watched::Died(None);
        };
        let pid = process.pid();
        let socket = self.config.socket();
        let health_timeout = self.config.health_timeout;
        let mut tick = tokio::time::interval(self.config.health_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut probe: Option<Pin<Box<dyn Future<Output = bool> + Send>>> = None;
        let mut failing_since: Option<Instant> = None;
        let mut hung = false;

        loop {
            let probing = probe.is_some();
            let pending_probe = async {
                match probe.as_mut() {
                    Some(probe) => probe.await,
                    None => std::future::pending().await,
                }
            };
            let step = tokio::select! {
                status = process.exited() => return Watched::Died(status),
                command = self.commands.recv() => {
                    return command.map_or(Watched::HandleDropped, Watched::Command);
                }
                _ = tick.tick(), if !probing => None,
                serving = pending_probe => Some(serving),
            };
            let Some(serving) = step else {
                let socket = socket.clone();
                probe = Some(Box::pin(async move {
                    is_serving(&socket, health_timeout).await
                }));
                continue;
            };
            probe = None;

            if serving {
                failing_since = None;
                if hung {
                    hung = false;
                    self.publisher.publish(SupervisorEvent::Recovered { pid });
                }
                continue;
            }
            let since = *failing_since.get_or_insert_with(Instant::now);
            tracing::debug!(
                pid,
                failing_ms = since.elapsed().as_millis() as u64,
                "containerd health check failed"
            );
            if !hung && since.elapsed() >= self.config.hung_after && pidfile::is_process_alive(pid)
            {
                hung = true;
                self.publisher.publish(SupervisorEvent::Hung { pid });
                if self.config.hung_policy == HungPolicy::DumpAndRestart {
                    return Watched::Hung;
                }
            }
        }
    }

    /// Dumps and kills a hung containerd. The next watch then observes its death and restarts it.
    async fn handle_hang(&mut self) {
        if let Some(process) = &self.process {
            dump_and_kill(process, self.config.dump_wait).await;
        }
    }

    /// Reports the death and restarts containerd, with backoff while it keeps dying, until it
    /// serves, a command arrives, or the handle is dropped.
    async fn handle_death(&mut self, status: Option<ExitStatus>) -> AfterDeath {
        let pid = self
            .process
            .take()
            .map(|process| process.pid())
            .unwrap_or_default();
        pidfile::remove_if(&self.config.pidfile(), pid);
        self.publisher
            .publish(SupervisorEvent::Died { pid, status });

        let backoff = self.config.restart_backoff;
        if self.serving_since.elapsed() >= backoff.reset_after {
            self.consecutive_deaths = 0;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.consecutive_deaths += 1;
            let delay = backoff.delay(self.consecutive_deaths);
            tokio::select! {
                command = self.commands.recv() => {
                    return command.map_or(AfterDeath::HandleDropped, AfterDeath::Command);
                }
                () = tokio::time::sleep(delay) => {}
            }
            match adopt_or_start(&self.config, &self.binary).await {
                Ok((process, _)) => {
                    let pid = process.pid();
                    self.process = Some(process);
                    self.serving_since = Instant::now();
                    self.publisher
                        .publish(SupervisorEvent::Restarted { pid, attempt });
                    return AfterDeath::Serving;
                }
                Err(error) => {
                    self.publisher.publish(SupervisorEvent::RestartFailed {
                        attempt,
                        reason: error.to_string(),
                    });
                }
            }
        }
    }

    async fn handle_command(&mut self, command: Command) {
        match command {
            Command::Stop {
                grace,
                containers,
                reply,
            } => {
                self.stop(grace, containers).await;
                let _ = reply.send(());
            }
        }
    }

    /// Stops containerd with SIGTERM, then SIGKILL after `grace`, removes the pidfile and the
    /// sockets it left, and stops the containers when asked.
    async fn stop(&mut self, grace: Duration, containers: Containers) {
        let mut stopped_pid = None;
        if let Some(mut process) = self.process.take() {
            let pid = process.pid();
            stopped_pid = Some(pid);
            // A stopped process does not act on SIGTERM until it is continued.
            for signal in [Signal::SIGCONT, Signal::SIGTERM] {
                if let Err(error) = process.signal(signal) {
                    tracing::warn!(pid, %error, "failed to signal containerd");
                }
            }
            if tokio::time::timeout(grace, process.exited()).await.is_err() {
                tracing::warn!(
                    pid,
                    grace_ms = grace.as_millis() as u64,
                    "containerd ignored SIGTERM; sending SIGKILL"
                );
                let _ = process.signal(Signal::SIGKILL);
                let _ = tokio::time::timeout(KILL_TIMEOUT, process.exited()).await;
            }
            pidfile::remove_if(&self.config.pidfile(), pid);
            remove_sockets(&self.config);
        }
        if containers == Containers::Stop {
            let config = Arc::clone(&self.config);
            let stopped = tokio::task::spawn_blocking(move || stop_tasks_and_shims(&config)).await;
            if let Err(error) = stopped {
                tracing::error!(%error, "stopping containers failed");
            }
        }
        self.publisher
            .publish(SupervisorEvent::Stopped { pid: stopped_pid });
    }
}

/// Removes the sockets a stopped containerd left in the run folder. A containerd that starts
/// later makes them again, and shims left running reconnect to the new ones.
fn remove_sockets(config: &SupervisorConfig) {
    for socket in [
        config.socket(),
        config.ttrpc_socket(),
        config.debug_socket(),
    ] {
        let is_socket = std::fs::symlink_metadata(&socket)
            .is_ok_and(|metadata| metadata.file_type().is_socket());
        if !is_socket {
            continue;
        }
        if let Err(error) = std::fs::remove_file(&socket) {
            tracing::warn!(socket = %socket.display(), %error, "failed to remove socket");
        }
    }
}
