//! The one clock every part of the bot reads time from (operations, alerts, the catalog, schedules), so that tests can run the whole bot on virtual or accelerated time.

use chrono::{DateTime, Utc};

/// The bot's one clock: the system clock, or a virtual one that follows tokio's (pausable) clock
/// from a chosen start, or one that runs faster than real time, so tests run days in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub enum Clock {
    #[default]
    System,
    Virtual {
        start: DateTime<Utc>,
        at: tokio::time::Instant,
    },
    /// Starts at `start` and runs `factor` times faster than tokio's clock.
    Scaled {
        start: DateTime<Utc>,
        at: tokio::time::Instant,
        factor: u32,
    },
}

impl Clock {
    pub fn starting_at(start: DateTime<Utc>) -> Clock {
        Clock::Virtual {
            start,
            at: tokio::time::Instant::now(),
        }
    }

    /// A clock from `start` that runs `factor` times faster than real time.
    pub fn scaled(start: DateTime<Utc>, factor: u32) -> Clock {
        Clock::Scaled {
            start,
            at: tokio::time::Instant::now(),
            factor: factor.max(1),
        }
    }

    /// Now, in milliseconds since the Unix epoch (what the store and journal record).
    pub fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Scaled { start, at, factor } => {
                *start
                    + chrono::Duration::from_std(at.elapsed() * *factor)
                        .unwrap_or(chrono::Duration::MAX)
            }
            Clock::Virtual { start, at } => {
                *start + chrono::Duration::from_std(at.elapsed()).unwrap_or(chrono::Duration::MAX)
            }
        }
    }

    /// Sleeps until `t`; on the system clock in steps of at most a minute, so a clock that jumps
    /// (suspend, NTP) is followed.
    pub async fn sleep_until(&self, t: DateTime<Utc>) {
        loop {
            let left = (t - self.now()).to_std().unwrap_or_default();
            if left.is_zero() {
                return;
            }
            let step = match self {
                Clock::System => left.min(std::time::Duration::from_secs(60)),
                Clock::Virtual { .. } => left,
                Clock::Scaled { factor, .. } => {
                    (left / *factor).max(std::time::Duration::from_millis(1))
                }
            };
            tokio::time::sleep(step).await;
        }
    }
}

/// A duration as every message writes it: `0.4 s`, `12 s`, `3 min 12 s`, `14 min`, `1 h 4 min`,
/// `2 d 3 h`. Under ten seconds it keeps a tenth; past that, two units at most.
pub fn human(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 10_000 {
        return format!("{:.1} s", ms as f64 / 1000.0);
    }
    let s = ((ms + 500) / 1000) as u64;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec} s"),
        (0, 0, m) if m < 10 && sec > 0 => format!("{m} min {sec} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, 0, _) => format!("{d} d"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

/// How long ago `at_ms` was at `now_ms`, in whole seconds and up: `just now`, `12 s ago`,
/// `3 min ago`, `1 h 4 min ago`.
pub fn ago(at_ms: i64, now_ms: i64) -> String {
    let s = ((now_ms - at_ms).max(0) / 1000) as u64;
    if s == 0 {
        return "just now".into();
    }
    // Whole seconds: no tenths in an age.
    let shown = if s < 10 {
        format!("{s} s")
    } else {
        human(std::time::Duration::from_secs(s))
    };
    format!("{shown} ago")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_duration_is_written_one_way_with_two_units_at_most() {
        let cases = [
            (Duration::from_millis(400), "0.4 s"),
            (Duration::from_millis(9_940), "9.9 s"),
            (Duration::from_secs(12), "12 s"),
            (Duration::from_secs(192), "3 min 12 s"),
            (Duration::from_secs(180), "3 min"),
            (Duration::from_secs(14 * 60 + 5), "14 min"),
            (Duration::from_secs(3600), "1 h"),
            (Duration::from_secs(3840), "1 h 4 min"),
            (Duration::from_secs(2 * 86_400 + 3 * 3600 + 60), "2 d 3 h"),
            (Duration::from_secs(7 * 86_400), "7 d"),
        ];
        for (d, want) in cases {
            assert_eq!(human(d), want, "{d:?}");
        }
    }

    #[test]
    fn an_age_is_in_whole_units() {
        assert_eq!(ago(1_000, 1_400), "just now");
        assert_eq!(ago(0, 4_700), "4 s ago");
        assert_eq!(ago(0, 180_000), "3 min ago");
        assert_eq!(ago(0, 3_840_000), "1 h 4 min ago");
    }
}
