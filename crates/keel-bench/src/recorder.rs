//! The benchmark's [`Backend`]: counts events and records how long each took to arrive.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use keel::{Backend, ContainerEvent, Event};
use tokio::sync::Notify;

use crate::stats::Samples;

/// Counts the events keel delivers and, while recording, the latency of each pause and resume
/// event from containerd's envelope stamp to this backend.
///
/// Only pause and resume events are timed, because keel stamps an exit with the process's
/// exit time rather than the envelope's, and created and started events may come from a
/// reply instead of the stream.
#[derive(Debug, Default)]
pub struct Recorder {
    recording: AtomicBool,
    latencies: Mutex<Samples>,
    events: AtomicU64,
    exits: AtomicU64,
    timed_events: AtomicU64,
    changed: Notify,
}

impl Recorder {
    /// Starts recording latencies, dropping any recorded before.
    pub fn start_recording(&self) {
        *lock(&self.latencies) = Samples::default();
        self.recording.store(true, Ordering::SeqCst);
    }

    /// Stops recording and returns the latencies recorded since the start.
    pub fn stop_recording(&self) -> Samples {
        self.recording.store(false, Ordering::SeqCst);
        std::mem::take(&mut *lock(&self.latencies))
    }

    /// Returns the number of events delivered so far.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::SeqCst)
    }

    /// Returns the number of exit events delivered so far.
    pub fn exits(&self) -> u64 {
        self.exits.load(Ordering::SeqCst)
    }

    /// Returns the number of pause and resume events delivered so far.
    pub fn timed_events(&self) -> u64 {
        self.timed_events.load(Ordering::SeqCst)
    }

    /// Waits until `condition` holds for this recorder; checked after every event.
    pub async fn wait_until(&self, condition: impl Fn(&Self) -> bool) {
        loop {
            let changed = self.changed.notified();
            if condition(self) {
                return;
            }
            changed.await;
        }
    }
}

#[keel::async_trait]
impl Backend for Recorder {
    async fn handle_event(&self, event: ContainerEvent) {
        let received = SystemTime::now();
        match event.event {
            Event::Exited { .. } => {
                self.exits.fetch_add(1, Ordering::SeqCst);
            }
            Event::Paused | Event::Resumed => {
                if self.recording.load(Ordering::SeqCst) {
                    let latency = received.duration_since(event.timestamp).unwrap_or_default();
                    lock(&self.latencies).push(latency);
                }
                self.timed_events.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
        self.events.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

fn lock(samples: &Mutex<Samples>) -> std::sync::MutexGuard<'_, Samples> {
    samples
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A [`Recorder`] shared between the client, which owns its backend, and the benchmark.
#[derive(Clone, Debug)]
pub struct SharedRecorder(pub Arc<Recorder>);

#[keel::async_trait]
impl Backend for SharedRecorder {
    async fn handle_event(&self, event: ContainerEvent) {
        self.0.handle_event(event).await;
    }
}
