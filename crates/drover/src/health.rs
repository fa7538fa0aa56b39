//! The last successful tick of each background service, so that a stalled loop is visible
//! (a hung connection must not silently stop a service).

use std::collections::BTreeMap;
use std::sync::Mutex;

use jiff::Timestamp;

#[derive(Debug, Default)]
pub(crate) struct Health {
    last_ok: Mutex<BTreeMap<&'static str, Timestamp>>,
}

impl Health {
    /// Records a successful tick of `service`.
    pub(crate) fn ok(&self, service: &'static str) {
        self.last_ok
            .lock()
            .expect("health lock poisoned")
            .insert(service, Timestamp::now());
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<&'static str, Timestamp> {
        self.last_ok.lock().expect("health lock poisoned").clone()
    }
}
