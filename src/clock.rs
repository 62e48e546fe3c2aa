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
