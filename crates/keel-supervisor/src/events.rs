//! The supervisor's reports: events on a broadcast channel and to registered callbacks, and the
//! current status on a `watch` channel.

use std::process::ExitStatus;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{broadcast, watch};

/// How many events a slow subscriber may fall behind before it misses some.
const EVENT_CAPACITY: usize = 64;

/// A change in the supervised containerd's life.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SupervisorEvent {
    /// This supervisor started containerd and it serves.
    Started {
        /// containerd's pid.
        pid: u32,
    },
    /// This supervisor adopted a serving containerd found through the pidfile.
    Adopted {
        /// containerd's pid.
        pid: u32,
    },
    /// containerd exited.
    Died {
        /// The pid that exited.
        pid: u32,
        /// Its exit status; `None` for an adopted process, whose status goes to its parent.
        status: Option<ExitStatus>,
    },
    /// containerd serves again after it died: a new process, or one that another supervisor
    /// of the same folders started meanwhile.
    Restarted {
        /// The new pid.
        pid: u32,
        /// The number of the restart attempt that succeeded, from 1.
        attempt: u32,
    },
    /// A restart attempt failed; the next one follows after the backoff delay.
    RestartFailed {
        /// The number of the failed attempt, from 1.
        attempt: u32,
        /// What failed.
        reason: String,
    },
    /// containerd lives but has failed its health checks for the configured hang time.
    Hung {
        /// containerd's pid.
        pid: u32,
    },
    /// A hung containerd passes health checks again.
    Recovered {
        /// containerd's pid.
        pid: u32,
    },
    /// The supervisor stopped containerd on request.
    Stopped {
        /// The pid that was stopped, if one ran.
        pid: Option<u32>,
    },
}

impl SupervisorEvent {
    /// Returns true when containerd serves again after an outage: the moment a client should
    /// reconnect at once, for example through `keel::Client::notify_containerd_restarted`.
    pub fn is_serving_again(&self) -> bool {
        matches!(self, Self::Restarted { .. } | Self::Recovered { .. })
    }
}

/// The supervised containerd's current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SupervisorStatus {
    /// containerd passes health checks.
    Serving {
        /// containerd's pid.
        pid: u32,
    },
    /// containerd lives but fails health checks.
    Hung {
        /// containerd's pid.
        pid: u32,
    },
    /// containerd is dead and being restarted.
    Restarting,
    /// The supervisor stopped containerd.
    Stopped,
}

impl SupervisorStatus {
    /// containerd's pid while a process runs.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Serving { pid } | Self::Hung { pid } => Some(*pid),
            Self::Restarting | Self::Stopped => None,
        }
    }
}

/// A callback run for every event, on the supervisor's task. It must return quickly.
pub type Listener = Box<dyn Fn(&SupervisorEvent) + Send + Sync>;

/// The sending side of everything the supervisor reports.
#[derive(Clone)]
pub(crate) struct Publisher {
    pub(crate) events: broadcast::Sender<SupervisorEvent>,
    pub(crate) status: Arc<watch::Sender<SupervisorStatus>>,
    pub(crate) listeners: Arc<Mutex<Vec<Listener>>>,
}

impl Publisher {
    pub(crate) fn new(initial: SupervisorStatus) -> Self {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (status, _) = watch::channel(initial);
        Self {
            events,
            status: Arc::new(status),
            listeners: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub(crate) fn add_listener(&self, listener: Listener) {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(listener);
    }

    /// Logs `event`, updates the status, and sends the event to subscribers and listeners.
    pub(crate) fn publish(&self, event: SupervisorEvent) {
        log(&event);
        if let Some(status) = status_after(&event) {
            self.status.send_replace(status);
        }
        for listener in self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            listener(&event);
        }
        // No subscriber is not an error: events are also in the log and the status.
        let _ = self.events.send(event);
    }
}

fn status_after(event: &SupervisorEvent) -> Option<SupervisorStatus> {
    match *event {
        SupervisorEvent::Started { pid }
        | SupervisorEvent::Adopted { pid }
        | SupervisorEvent::Restarted { pid, .. }
        | SupervisorEvent::Recovered { pid } => Some(SupervisorStatus::Serving { pid }),
        SupervisorEvent::Hung { pid } => Some(SupervisorStatus::Hung { pid }),
        SupervisorEvent::Died { .. } => Some(SupervisorStatus::Restarting),
        SupervisorEvent::Stopped { .. } => Some(SupervisorStatus::Stopped),
        SupervisorEvent::RestartFailed { .. } => None,
    }
}

fn log(event: &SupervisorEvent) {
    match event {
        SupervisorEvent::Started { pid } => tracing::info!(pid, "containerd started"),
        SupervisorEvent::Adopted { pid } => tracing::info!(pid, "containerd adopted"),
        SupervisorEvent::Died { pid, status } => match status {
            Some(status) => tracing::warn!(pid, %status, "containerd died"),
            None => tracing::warn!(pid, "containerd died"),
        },
        SupervisorEvent::Restarted { pid, attempt } => {
            tracing::info!(pid, attempt, "containerd restarted")
        }
        SupervisorEvent::RestartFailed { attempt, reason } => {
            tracing::warn!(attempt, error = reason, "containerd restart failed")
        }
        SupervisorEvent::Hung { pid } => tracing::warn!(pid, "containerd hung"),
        SupervisorEvent::Recovered { pid } => tracing::info!(pid, "containerd recovered"),
        SupervisorEvent::Stopped { pid } => tracing::info!(pid, "containerd stopped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_updates_status_and_calls_listeners() {
        let publisher = Publisher::new(SupervisorStatus::Serving { pid: 1 });
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        publisher.add_listener(Box::new(move |event| {
            recorded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(event.clone());
        }));
        let mut status = publisher.status.subscribe();

        publisher.publish(SupervisorEvent::Died {
            pid: 1,
            status: None,
        });
        publisher.publish(SupervisorEvent::Restarted { pid: 2, attempt: 1 });

        assert_eq!(
            *status.borrow_and_update(),
            SupervisorStatus::Serving { pid: 2 }
        );
        let seen = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert_eq!(seen.len(), 2);
        assert!(!seen[0].is_serving_again());
        assert!(seen[1].is_serving_again());
    }
}
