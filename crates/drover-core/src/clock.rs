//! Time is an input. Every scheduling decision reads the time through a [`Clock`], so tests can
//! drive lease expiry, backoff and scheduled jobs with a [`SimulatedClock`] and no sleeps.

use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// The time to pass to store operations: `None` lets the database's own clock decide
    /// (production, so that many hosts agree on lease expiry), `Some` pins it (tests).
    fn store_now(&self) -> Option<Timestamp>;
}

/// The system clock; store operations use the database's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn store_now(&self) -> Option<Timestamp> {
        None
    }
}

/// A clock that only moves when told to. Cloning shares the same time.
#[derive(Debug, Clone)]
pub struct SimulatedClock {
    now: Arc<Mutex<Timestamp>>,
}

impl SimulatedClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward (or back, with a negative duration).
    pub fn advance(&self, by: SignedDuration) {
        let mut now = self.now.lock().expect("clock lock poisoned");
        *now = now.checked_add(by).expect("simulated time out of range");
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: Timestamp) {
        *self.now.lock().expect("clock lock poisoned") = to;
    }
}

impl Clock for SimulatedClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().expect("clock lock poisoned")
    }

    fn store_now(&self) -> Option<Timestamp> {
        Some(self.now())
    }
}
