//! Schedules and retention. For now: the retention plan (grandfather-father-son), a pure function.

pub mod retention;
