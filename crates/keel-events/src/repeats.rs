//! Recognizing an envelope that containerd delivers a second time.
//!
//! A shim whose publish to containerd fails or times out, for example while containerd is
//! frozen, sends the same envelope again, up to five more times, waiting 1 to 5 seconds
//! before each (containerd 1.6, `runtime/v2/shim/publisher.go`). containerd passes each copy on. The copies
//! carry the timestamp the shim set once, so an envelope equal in topic, timestamp and payload
//! to a recent one is a repeat.

use std::collections::{HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use containerd_client::types::Envelope;

/// How long an envelope is remembered. It covers the shim's retries: five delays of 1 to 5 s
/// and up to 5 s for each failed attempt.
const WINDOW: Duration = Duration::from_secs(60);

/// The maximum number of envelopes remembered at once, so a busy namespace uses bounded
/// memory. Above about 270 envelopes a second the window is shorter than [`WINDOW`].
const CAPACITY: usize = 16_384;

/// The fingerprints of the envelopes received in the last [`WINDOW`], oldest first.
#[derive(Debug, Default)]
pub(crate) struct RecentEnvelopes {
    order: VecDeque<(u128, Instant)>,
    seen: HashSet<u128>,
}

impl RecentEnvelopes {
    /// Returns true when an envelope equal to `envelope` arrived within the window, and
    /// remembers `envelope` otherwise.
    pub(crate) fn is_repeat(&mut self, envelope: &Envelope, now: Instant) -> bool {
        while let Some(&(fingerprint, at)) = self.order.front() {
            if now.duration_since(at) < WINDOW && self.order.len() < CAPACITY {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&fingerprint);
        }
        let fingerprint = fingerprint(envelope);
        if !self.seen.insert(fingerprint) {
            return true;
        }
        self.order.push_back((fingerprint, now));
        false
    }
}

/// Returns a 128-bit hash of the envelope's topic, timestamp and payload, from two 64-bit
/// hashes with different seeds. Two different envelopes within one window share it with a
/// chance far below 2^-90.
fn fingerprint(envelope: &Envelope) -> u128 {
    let half = |seed: u8| {
        let mut hasher = DefaultHasher::new();
        seed.hash(&mut hasher);
        envelope.namespace.hash(&mut hasher);
        envelope.topic.hash(&mut hasher);
        if let Some(timestamp) = &envelope.timestamp {
            timestamp.seconds.hash(&mut hasher);
            timestamp.nanos.hash(&mut hasher);
        }
        if let Some(event) = &envelope.event {
            event.type_url.hash(&mut hasher);
            event.value.hash(&mut hasher);
        }
        hasher.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(topic: &str, nanos: i32, value: &[u8]) -> Envelope {
        Envelope {
            timestamp: Some(prost_types::Timestamp { seconds: 1, nanos }),
            namespace: "keel".to_owned(),
            topic: topic.to_owned(),
            event: Some(prost_types::Any {
                type_url: "containerd.events.TaskExit".to_owned(),
                value: value.to_vec(),
            }),
        }
    }

    #[test]
    fn second_copy_is_a_repeat() {
        let mut recent = RecentEnvelopes::default();
        let now = Instant::now();
        let exit = envelope("/tasks/exit", 5, b"exit");
        assert!(!recent.is_repeat(&exit, now));
        assert!(recent.is_repeat(&exit, now + Duration::from_secs(20)));
    }

    #[test]
    fn different_fields_are_not_repeats() {
        let mut recent = RecentEnvelopes::default();
        let now = Instant::now();
        let cases = [
            envelope("/tasks/exit", 5, b"exit"),
            envelope("/tasks/exit", 6, b"exit"),
            envelope("/tasks/exit", 5, b"other"),
            envelope("/tasks/delete", 5, b"exit"),
        ];
        for case in &cases {
            assert!(!recent.is_repeat(case, now), "{case:?}");
        }
    }

    #[test]
    fn copy_after_window_is_new() {
        let mut recent = RecentEnvelopes::default();
        let now = Instant::now();
        let exit = envelope("/tasks/exit", 5, b"exit");
        assert!(!recent.is_repeat(&exit, now));
        assert!(!recent.is_repeat(&exit, now + WINDOW));
    }

    #[test]
    fn memory_stays_within_capacity() {
        let mut recent = RecentEnvelopes::default();
        let now = Instant::now();
        for nanos in 0..(CAPACITY as i32 + 10) {
            recent.is_repeat(&envelope("/tasks/exit", nanos, b"exit"), now);
        }
        assert!(recent.order.len() <= CAPACITY);
        assert_eq!(recent.order.len(), recent.seen.len());
    }
}
