//! Capped exponential backoff for reconnect attempts.

use std::time::Duration;

/// The delays between reconnect attempts: `initial`, doubling up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failed attempt.
    pub initial: Duration,
    /// The largest delay between two attempts.
    pub max: Duration,
}

impl Default for Backoff {
    /// Starts at 25 ms and caps at 2 s, so a 15 s outage costs about 13 attempts.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(25),
            max: Duration::from_secs(2),
        }
    }
}

impl Backoff {
    /// Returns the delay after failed attempt number `attempt`, counting from 1.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial
            .saturating_mul(1_u32 << doublings)
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_then_caps() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(1), Duration::from_millis(25));
        assert_eq!(backoff.delay(2), Duration::from_millis(50));
        assert_eq!(backoff.delay(7), Duration::from_millis(1600));
        assert_eq!(backoff.delay(8), Duration::from_secs(2));
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn fifteen_second_outage_stays_within_budget() {
        let backoff = Backoff::default();
        let mut elapsed = Duration::ZERO;
        let mut attempts = 0;
        while elapsed < Duration::from_secs(15) {
            attempts += 1;
            let delay = backoff.delay(attempts);
            assert!(
                delay <= Duration::from_secs(5),
                "gap {delay:?} after attempt {attempts}"
            );
            elapsed += delay;
        }
        assert!(attempts <= 30, "{attempts} attempts in 15 s");
    }
}
