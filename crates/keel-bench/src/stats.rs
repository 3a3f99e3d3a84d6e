//! Summaries of repeated measurements: median and tail percentiles.

use std::time::Duration;

/// A set of measurements of one quantity, in milliseconds.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    values: Vec<f64>,
}

impl Samples {
    /// Adds one measurement: milliseconds, or the unit the caller chose.
    pub fn push_value(&mut self, value: f64) {
        self.values.push(value);
    }

    /// Adds one measured duration.
    pub fn push(&mut self, duration: Duration) {
        self.push_value(duration.as_secs_f64() * 1e3);
    }

    /// Returns the number of measurements.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Returns true when nothing was measured.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Returns the median, or `None` when nothing was measured.
    pub fn median(&self) -> Option<f64> {
        self.percentile(50.0)
    }

    /// Returns the 95th percentile.
    pub fn p95(&self) -> Option<f64> {
        self.percentile(95.0)
    }

    /// Returns the 99th percentile.
    pub fn p99(&self) -> Option<f64> {
        self.percentile(99.0)
    }

    /// Returns the arithmetic mean.
    pub fn mean(&self) -> Option<f64> {
        if self.values.is_empty() {
            return None;
        }
        Some(self.values.iter().sum::<f64>() / self.values.len() as f64)
    }

    /// Returns the `percent`-th percentile by the nearest-rank method.
    pub fn percentile(&self, percent: f64) -> Option<f64> {
        if self.values.is_empty() {
            return None;
        }
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
        let index = rank.clamp(1, sorted.len()) - 1;
        Some(sorted[index])
    }
}

/// The seed of the order in which the clients run in each round of a section.
const ORDER_SEED: u64 = 0x6c69_6665;

/// Returns the generator that shuffles the clients' order in each round of a section. Its seed
/// is fixed, so every run of the benchmark uses the same orders.
pub fn order_rng() -> fastrand::Rng {
    fastrand::Rng::with_seed(ORDER_SEED)
}

/// How many resamples [`median_ratio_interval`] draws.
const RESAMPLES: usize = 2000;

/// The seed of the resampling, fixed so that the same samples always give the same interval.
const RESAMPLING_SEED: u64 = 0x6b65_656c;

/// Returns the 95% bootstrap interval of `numerator`'s median divided by `denominator`'s, or
/// `None` when either set is empty. Both sample sets are drawn again with replacement many
/// times, and the interval contains the middle 95% of the resampled ratios.
///
/// It shows how far the ratio of the two medians could move from run-to-run noise alone, so a
/// reader can tell a real difference from a lucky run.
pub fn median_ratio_interval(numerator: &Samples, denominator: &Samples) -> Option<(f64, f64)> {
    if numerator.is_empty() || denominator.is_empty() {
        return None;
    }
    let mut rng = fastrand::Rng::with_seed(RESAMPLING_SEED);
    let mut resample = |samples: &Samples| {
        let values = &samples.values;
        let drawn = (0..values.len()).map(|_| values[rng.usize(..values.len())]);
        Samples {
            values: drawn.collect(),
        }
        .median()
    };
    let mut ratios = Samples::default();
    for _ in 0..RESAMPLES {
        if let (Some(top), Some(bottom)) = (resample(numerator), resample(denominator)) {
            ratios.push_value(top / bottom);
        }
    }
    Some((ratios.percentile(2.5)?, ratios.percentile(97.5)?))
}

/// The lifecycles one client ran in one batch and the wall time the batch took.
#[derive(Clone, Copy, Debug)]
pub struct Batch {
    /// Lifecycles started in the batch.
    pub count: usize,
    /// Wall time of the whole batch.
    pub seconds: f64,
}

/// Returns the lifecycles of `batches` divided by their summed time.
pub fn batch_rate<'a>(batches: impl IntoIterator<Item = &'a Batch>) -> f64 {
    let (count, seconds) = batches
        .into_iter()
        .fold((0, 0.0), |(count, seconds), batch| {
            (count + batch.count, seconds + batch.seconds)
        });
    count as f64 / seconds
}

/// Returns the 95% bootstrap interval of the rate of `numerator`'s batches divided by the rate
/// of `denominator`'s, or `None` unless both contain the same number of batches, at least two.
///
/// Batch `i` of both clients ran next to each other, so a resample draws whole pairs. Drift
/// between pairs then widens the interval, and drift within a pair, shared by both, does not.
pub fn rate_ratio_interval(numerator: &[Batch], denominator: &[Batch]) -> Option<(f64, f64)> {
    let pairs = numerator.len();
    if pairs < 2 || denominator.len() != pairs {
        return None;
    }
    let mut rng = fastrand::Rng::with_seed(RESAMPLING_SEED);
    let mut ratios = Samples::default();
    for _ in 0..RESAMPLES {
        let drawn: Vec<usize> = (0..pairs).map(|_| rng.usize(..pairs)).collect();
        let top = batch_rate(drawn.iter().map(|&index| &numerator[index]));
        let bottom = batch_rate(drawn.iter().map(|&index| &denominator[index]));
        ratios.push_value(top / bottom);
    }
    Some((ratios.percentile(2.5)?, ratios.percentile(97.5)?))
}

/// Formats milliseconds with a precision that suits their size.
pub fn format_ms(value: Option<f64>) -> String {
    match value {
        None => "n/a".to_owned(),
        Some(ms) if ms.abs() < 1.0 => format!("{ms:.3} ms"),
        Some(ms) if ms.abs() < 100.0 => format!("{ms:.1} ms"),
        Some(ms) => format!("{ms:.0} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(values: &[f64]) -> Samples {
        let mut samples = Samples::default();
        values.iter().for_each(|&value| samples.push_value(value));
        samples
    }

    #[test]
    fn median_of_odd_count_is_middle() {
        assert_eq!(samples(&[3.0, 1.0, 2.0]).median(), Some(2.0));
    }

    #[test]
    fn p95_of_hundred_is_ninety_fifth() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(samples(&values).p95(), Some(95.0));
    }

    #[test]
    fn ratio_interval_contains_ratio_of_medians() {
        let top = samples(&[9.0, 10.0, 10.0, 10.0, 11.0]);
        let bottom = samples(&[19.0, 20.0, 20.0, 20.0, 21.0]);
        let (low, high) = median_ratio_interval(&top, &bottom).unwrap();
        assert!(low <= 0.5, "{low} to {high}");
        assert!(high >= 0.5, "{low} to {high}");
        assert!(low >= 9.0 / 21.0, "{low} to {high}");
        assert!(high <= 11.0 / 19.0, "{low} to {high}");
    }

    fn batches(seconds: &[f64]) -> Vec<Batch> {
        seconds
            .iter()
            .map(|&seconds| Batch { count: 10, seconds })
            .collect()
    }

    #[test]
    fn rate_ratio_interval_of_equal_pairs() {
        let keel = batches(&[1.0, 2.0, 1.0, 2.0]);
        let go = batches(&[2.0, 4.0, 2.0, 4.0]);
        assert_eq!(batch_rate(&keel) / batch_rate(&go), 2.0);
        let (low, high) = rate_ratio_interval(&keel, &go).unwrap();
        assert!(
            (low - 2.0).abs() < 1e-9 && (high - 2.0).abs() < 1e-9,
            "{low} to {high}"
        );
    }

    #[test]
    fn rate_ratio_interval_unmatched_pairs() {
        assert_eq!(
            rate_ratio_interval(&batches(&[1.0]), &batches(&[1.0])),
            None
        );
        assert_eq!(
            rate_ratio_interval(&batches(&[1.0, 1.0]), &batches(&[1.0])),
            None
        );
    }

    #[test]
    fn ratio_interval_of_constant_samples_is_a_point() {
        let interval = median_ratio_interval(&samples(&[3.0; 7]), &samples(&[4.0; 7]));
        assert_eq!(interval, Some((0.75, 0.75)));
    }

    #[test]
    fn ratio_interval_needs_samples_on_both_sides() {
        assert_eq!(
            median_ratio_interval(&Samples::default(), &samples(&[1.0])),
            None
        );
    }

    #[test]
    fn empty_samples_have_no_median() {
        assert_eq!(Samples::default().median(), None);
    }
}
