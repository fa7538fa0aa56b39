//! The store's own background work ([`drover_core::Store::background_health`]).

use std::collections::BTreeSet;

use drover_core::DynStore;

/// Once a store is open, its background work is reported, each piece once by name, working,
/// and recently proved so. A PostgreSQL store that listens reports its listener; SQLite keeps
/// nothing going by itself and reports nothing.
pub async fn background_work_is_reported_up(store: DynStore) {
    let work = store.background_health();
    let names: BTreeSet<&str> = work.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names.len(), work.len(), "each named once: {work:?}");
    for w in &work {
        assert!(!w.name.is_empty(), "{work:?}");
        assert!(w.outage.is_none(), "{} is down: {w:?}", w.name);
        assert!(!w.expected_every.is_zero(), "{w:?}");
        let ago = w.last_ok_ago.expect("proved itself working at least once");
        assert!(
            ago <= w.expected_every,
            "{} last worked {ago:?} ago",
            w.name
        );
    }
    let expected: BTreeSet<&str> = match store.backend() {
        "postgres" => ["postgres listener"].into(),
        _ => BTreeSet::new(),
    };
    assert_eq!(names, expected, "{work:?}");
}
