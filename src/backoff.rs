//! The one backoff policy of every retry loop: capped exponential delays with jitter, from `backon`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The policy: delays from `min`, doubling up to `max`, each with up to as much again of jitter
/// (so that many clients retrying after one outage do not arrive together).
pub fn policy(min: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
}

/// The delays of a loop that retries until it succeeds or gives up by its own deadline.
pub fn delays(min: Duration, max: Duration) -> ExponentialBackoff {
    policy(min, max).without_max_times().build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_from_the_minimum_and_stay_within_twice_the_maximum() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        let d: Vec<Duration> = delays(min, max).take(30).collect();
        assert_eq!(d.len(), 30, "a retry loop never runs out of delays");
        assert!(d[0] >= min && d[0] <= min * 2, "{:?}", d[0]);
        assert!(d.iter().all(|x| *x <= max * 2), "{d:?}");
        assert!(d[29] >= max, "{:?}", d[29]);
    }
}
