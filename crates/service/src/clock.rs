//! Clocks: the wall clock for serving, a settable one for the demo's simulated years.

use std::sync::Mutex;

use consentry_types::Instant;

/// Where the service gets "now" from. Never goes backwards.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The system clock, held monotonic.
#[derive(Debug, Default)]
pub struct SystemClock {
    last: Mutex<Option<Instant>>,
}

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        let now = Instant::now();
        match self.last.lock() {
            Ok(mut last) => {
                let now = last.map_or(now, |l| l.max(now));
                *last = Some(now);
                now
            }
            Err(_) => now,
        }
    }
}

/// A clock the demo and tests move by hand.
#[derive(Debug)]
pub struct SimulatedClock {
    now: Mutex<Instant>,
}

impl SimulatedClock {
    pub fn starting_at(at: Instant) -> SimulatedClock {
        SimulatedClock { now: Mutex::new(at) }
    }
    /// Moves the clock to `at`; earlier instants are ignored (time does not go back).
    pub fn set(&self, at: Instant) {
        if let Ok(mut now) = self.now.lock() {
            *now = (*now).max(at);
        }
    }
    pub fn advance_secs(&self, secs: i64) {
        if let Ok(mut now) = self.now.lock() {
            *now = now.plus_secs(secs.max(0));
        }
    }
}

impl Clock for SimulatedClock {
    fn now(&self) -> Instant {
        self.now.lock().map_or(Instant::MIN, |n| *n)
    }
}
