//! The simulator's in-memory capacity store passes the same capacity conformance cases as the
//! SQLite and PostgreSQL backends.

use std::sync::Arc;

use drover::autoscaler::MemoryCapacityStore;
use drover_core::DynStore;

macro_rules! capacity_cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let store: DynStore = Arc::new(MemoryCapacityStore::new());
                drover_conformance::capacity::$case(store).await;
            }
        )*
    };
}

capacity_cases!(
    slot_transitions_are_fenced_by_state_and_generation,
    reservation_assignment_keeps_the_lease_limit,
    release_and_expiry_give_leases_back,
    hand_back_returns_reservations_to_pending,
    capacity_lists_filter_and_count,
    concurrent_assigners_keep_the_lease_limit,
);
