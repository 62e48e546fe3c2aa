//! The one rule for poisoned locks: take the guard back and log it, never fail open.
//!
//! A `std::sync::Mutex` is poisoned when a thread panicked while holding it. Every mutex of the
//! command pipeline guards a small in-memory table (rate-limit buckets, waiting confirmations and
//! approvals, looked-up roles, flood windows) that each update leaves whole, so what is inside is
//! the last state written. The rule, everywhere in `app` and `policy`:
//!
//! - recover the guard with [`std::sync::PoisonError::into_inner`], log at error naming the lock,
//!   clear the poison (one log line per panic, not one per message), and carry on with that state;
//! - never read a poisoned lock as "allowed" or "nothing there" (the rate limiter letting every
//!   message through, an approval left unregistered while the chat is told it waits);
//! - a step that cannot go on with the recovered state fails with a message to the user
//!   ([`crate::error::UserError::Internal`]) and is logged; none of today's tables needs that.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the guard back if a panicking thread poisoned it (see the module's rule).
pub fn lock<'a, T>(m: &'a Mutex<T>, what: &'static str) -> MutexGuard<'a, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => {
            tracing::error!(
                lock = what,
                "a thread panicked while holding this lock; carrying on with the state it left"
            );
            let guard = poisoned.into_inner();
            m.clear_poison();
            guard
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Pending, RateLimiter};
    use std::time::Duration;

    fn poison<T: Send>(m: &Mutex<T>) {
        std::thread::scope(|s| {
            let _ = s
                .spawn(|| {
                    let _g = m.lock();
                    panic!("poisoning the lock on purpose");
                })
                .join();
        });
        assert!(m.is_poisoned());
    }

    #[tokio::test(start_paused = true)]
    async fn a_poisoned_rate_limiter_still_limits_instead_of_letting_everything_through() {
        let limiter = Mutex::new(RateLimiter::new(6, 2));
        assert!(lock(&limiter, "rate limiter").check("alice").is_ok());
        assert!(lock(&limiter, "rate limiter").check("alice").is_ok());
        poison(&limiter);
        assert_eq!(lock(&limiter, "rate limiter").check("alice"), Err(10));
        assert!(!limiter.is_poisoned(), "logged once, then clear");
    }

    #[tokio::test(start_paused = true)]
    async fn an_approval_filed_behind_a_poisoned_lock_is_still_registered() {
        let pending: Mutex<Pending<&str>> = Mutex::new(Pending::default());
        poison(&pending);
        lock(&pending, "pending").ask_approval(
            7,
            "alice",
            "deploy prod v1",
            1,
            Duration::from_secs(600),
        );
        assert!(lock(&pending, "pending").peek_approval(7).is_some());
    }
}
