//! Cases of the autoscaler's slots and reservations.

use std::time::Duration;

use drover_core::{
    DynStore, ReservationAssignParams, ReservationAssignment, ReservationCount,
    ReservationExpireParams, ReservationInsertParams, ReservationListParams, ReservationPhase,
    ReservationRecord, ReservationReleaseParams, SlotInsertParams, SlotListParams, SlotRecord,
    SlotState, SlotTransitionParams,
};
use jiff::{SignedDuration, Timestamp};

use crate::cases::t0;

fn at(secs: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(secs)
}

async fn new_slot(store: &DynStore, system: &str, now: Timestamp) -> SlotRecord {
    store
        .slot_insert(SlotInsertParams {
            system: system.into(),
            reason: "demand".into(),
            now: Some(now),
        })
        .await
        .expect("slot insert")
}

async fn move_slot(
    store: &DynStore,
    slot: &SlotRecord,
    to: SlotState,
    instance_id: Option<&str>,
    hand_back: bool,
    now: Timestamp,
) -> Option<SlotRecord> {
    store
        .slot_transition(SlotTransitionParams {
            id: slot.id,
            from: slot.state,
            generation: slot.generation,
            to,
            instance_id: instance_id.map(str::to_owned),
            reason: format!("to {to}"),
            hand_back,
            notice_at: None,
            now: Some(now),
        })
        .await
        .expect("slot transition")
}

/// A slot launched and brought to `ready` with an instance.
async fn ready_slot(store: &DynStore, system: &str, instance: &str) -> SlotRecord {
    let slot = new_slot(store, system, at(0)).await;
    let slot = move_slot(
        store,
        &slot,
        SlotState::Booting,
        Some(instance),
        false,
        at(1),
    )
    .await
    .unwrap();
    let slot = move_slot(store, &slot, SlotState::Binding, None, false, at(2))
        .await
        .unwrap();
    move_slot(store, &slot, SlotState::Ready, None, false, at(3))
        .await
        .unwrap()
}

async fn reserve(
    store: &DynStore,
    system: &str,
    ttl_secs: u64,
    now: Timestamp,
) -> ReservationRecord {
    store
        .reservation_insert(ReservationInsertParams {
            system: system.into(),
            holder: "test".into(),
            ttl: Duration::from_secs(ttl_secs),
            now: Some(now),
        })
        .await
        .expect("reservation insert")
}

async fn assign(
    store: &DynStore,
    pairs: &[(i64, i64)],
    max_leases: u32,
    now: Timestamp,
) -> Vec<bool> {
    store
        .reservation_assign(ReservationAssignParams {
            assignments: pairs
                .iter()
                .map(|&(reservation, slot)| ReservationAssignment {
                    reservation,
                    slot,
                    max_leases,
                })
                .collect(),
            now: Some(now),
        })
        .await
        .expect("assign")
}

async fn slot_now(store: &DynStore, id: i64) -> SlotRecord {
    store
        .slot_list(SlotListParams {
            id: Some(id),
            ..Default::default()
        })
        .await
        .expect("slot list")
        .pop()
        .expect("slot exists")
}

async fn reservation(store: &DynStore, id: i64) -> ReservationRecord {
    store
        .reservation_list(ReservationListParams {
            id: Some(id),
            ..Default::default()
        })
        .await
        .expect("reservation list")
        .pop()
        .expect("reservation exists")
}

/// Every state change is fenced by the state and generation read; relaunching grows the
/// generation and clears the instance; the failure count follows errors and readiness.
pub async fn slot_transitions_are_fenced_by_state_and_generation(store: DynStore) {
    let slot = new_slot(&store, "gpu", at(0)).await;
    assert_eq!(slot.state, SlotState::Launching);
    assert_eq!(slot.generation, 1);
    assert_eq!(slot.leases, 0);
    assert_eq!(slot.instance_id, None);
    assert_eq!(slot.launched_at, Some(at(0)));
    assert_eq!(slot.reason, "demand");

    let booting = move_slot(&store, &slot, SlotState::Booting, Some("i-1"), false, at(1))
        .await
        .expect("fresh fence holds");
    assert_eq!(booting.instance_id.as_deref(), Some("i-1"));
    assert_eq!(booting.state_changed_at, at(1));
    // The same change again: the slot is no longer launching.
    assert_eq!(
        move_slot(&store, &slot, SlotState::Booting, Some("i-2"), false, at(2)).await,
        None
    );
    let failed = move_slot(&store, &booting, SlotState::Error, None, false, at(5))
        .await
        .unwrap();
    assert_eq!(failed.failures, 1);
    assert_eq!(
        failed.instance_id, None,
        "an errored slot forgets its instance"
    );

    let relaunch = move_slot(&store, &failed, SlotState::Launching, None, false, at(9))
        .await
        .unwrap();
    assert_eq!(relaunch.generation, 2);
    assert_eq!(relaunch.launched_at, Some(at(9)));
    assert_eq!(
        relaunch.failures, 1,
        "failures count until the slot is ready"
    );
    // A fence with the old generation is refused even though the state matches.
    let stale = SlotRecord {
        generation: 1,
        ..relaunch.clone()
    };
    assert_eq!(
        move_slot(
            &store,
            &stale,
            SlotState::Booting,
            Some("i-x"),
            false,
            at(10)
        )
        .await,
        None
    );
    let booting = move_slot(
        &store,
        &relaunch,
        SlotState::Booting,
        Some("i-3"),
        false,
        at(10),
    )
    .await
    .unwrap();
    let ready = move_slot(&store, &booting, SlotState::Ready, None, false, at(12))
        .await
        .unwrap();
    assert_eq!(ready.failures, 0);
    assert_eq!(ready.instance_id.as_deref(), Some("i-3"));
    assert_eq!(ready.idle_since(), at(12));
    assert_eq!(slot_now(&store, ready.id).await, ready);

    // A notice is recorded with the change that acts on it.
    let draining = store
        .slot_transition(SlotTransitionParams {
            id: ready.id,
            from: SlotState::Ready,
            generation: ready.generation,
            to: SlotState::Draining,
            instance_id: None,
            reason: "interrupted".into(),
            hand_back: true,
            notice_at: Some(at(40)),
            now: Some(at(13)),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(draining.notice_at, Some(at(40)));
    let empty = move_slot(&store, &draining, SlotState::Empty, None, false, at(14))
        .await
        .unwrap();
    assert_eq!(empty.instance_id, None);
    assert_eq!(empty.reason, "to empty");
}

/// An assignment takes a lease only from a ready slot of the reservation's system under its
/// limit, and only for a pending, unexpired reservation.
pub async fn reservation_assignment_keeps_the_lease_limit(store: DynStore) {
    let gpu = ready_slot(&store, "gpu", "i-gpu").await;
    let cpu = ready_slot(&store, "cpu", "i-cpu").await;
    let launching = new_slot(&store, "gpu", at(3)).await;
    let r: Vec<ReservationRecord> = [
        reserve(&store, "gpu", 60, at(4)).await,
        reserve(&store, "gpu", 60, at(4)).await,
        reserve(&store, "gpu", 60, at(4)).await,
        reserve(&store, "gpu", 1, at(4)).await,
    ]
    .into();
    assert!(r.iter().all(|r| r.phase == ReservationPhase::Pending));
    assert_eq!(r[0].expires_at, at(64));

    assert_eq!(
        assign(
            &store,
            &[
                (r[0].id, cpu.id),
                (r[0].id, launching.id),
                (r[3].id, gpu.id)
            ],
            2,
            at(5)
        )
        .await,
        vec![false, false, false],
        "wrong system, slot not ready, reservation expired"
    );
    // Three asked of a slot with a limit of two in one call: the third is refused.
    assert_eq!(
        assign(
            &store,
            &[(r[0].id, gpu.id), (r[1].id, gpu.id), (r[2].id, gpu.id)],
            2,
            at(5)
        )
        .await,
        vec![true, true, false]
    );
    // Already assigned: refused.
    assert_eq!(
        assign(&store, &[(r[0].id, gpu.id)], 5, at(5)).await,
        vec![false]
    );
    let slot_now = slot_now(&store, gpu.id).await;
    assert_eq!(slot_now.leases, 2);
    assert_eq!(slot_now.last_used_at, at(5));
    let first = reservation(&store, r[0].id).await;
    assert_eq!(first.phase, ReservationPhase::Assigned);
    assert_eq!(first.slot_id, Some(gpu.id));
    assert_eq!(first.instance_id.as_deref(), Some("i-gpu"));
    assert_eq!(first.assigned_at, Some(at(5)));
    assert_eq!(
        reservation(&store, r[2].id).await.phase,
        ReservationPhase::Pending
    );
}

/// Release and expiry end a reservation once and give its lease back.
pub async fn release_and_expiry_give_leases_back(store: DynStore) {
    let gpu = ready_slot(&store, "gpu", "i-gpu").await;
    let a = reserve(&store, "gpu", 60, at(4)).await;
    let b = reserve(&store, "gpu", 30, at(4)).await;
    let c = reserve(&store, "gpu", 30, at(4)).await;
    assert_eq!(
        assign(&store, &[(a.id, gpu.id), (b.id, gpu.id)], 4, at(5)).await,
        vec![true, true]
    );

    let released = store
        .reservation_release(ReservationReleaseParams {
            id: a.id,
            now: Some(at(6)),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(released.phase, ReservationPhase::Released);
    assert_eq!(released.finished_at, Some(at(6)));
    assert_eq!(released.instance_id, None);
    assert_eq!(slot_now(&store, gpu.id).await.leases, 1);
    assert_eq!(slot_now(&store, gpu.id).await.last_used_at, at(6));
    // Twice: unchanged, and the lease is not given back twice.
    let again = store
        .reservation_release(ReservationReleaseParams {
            id: a.id,
            now: Some(at(7)),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.finished_at, Some(at(6)));
    assert_eq!(slot_now(&store, gpu.id).await.leases, 1);
    assert!(
        store
            .reservation_release(ReservationReleaseParams {
                id: 999_999,
                now: Some(at(7)),
            })
            .await
            .unwrap()
            .is_none()
    );

    let expire = |secs| {
        store.reservation_expire(ReservationExpireParams {
            now: Some(at(secs)),
        })
    };
    assert_eq!(expire(33).await.unwrap(), 0, "not yet");
    assert_eq!(expire(34).await.unwrap(), 2, "b (assigned) and c (pending)");
    assert_eq!(expire(35).await.unwrap(), 0, "once");
    assert_eq!(
        reservation(&store, b.id).await.phase,
        ReservationPhase::Expired
    );
    assert_eq!(
        reservation(&store, c.id).await.phase,
        ReservationPhase::Expired
    );
    assert_eq!(slot_now(&store, gpu.id).await.leases, 0);
    assert!(store.reservation_count().await.unwrap().is_empty());
}

/// Draining with a hand-back (an interruption) returns the slot's reservations to pending at
/// once; draining without one (scale-down, an operator's drain) lets them finish.
pub async fn hand_back_returns_reservations_to_pending(store: DynStore) {
    let one = ready_slot(&store, "gpu", "i-1").await;
    let two = ready_slot(&store, "gpu", "i-2").await;
    let a = reserve(&store, "gpu", 60, at(4)).await;
    let b = reserve(&store, "gpu", 60, at(4)).await;
    assert_eq!(
        assign(&store, &[(a.id, one.id), (b.id, two.id)], 1, at(5)).await,
        vec![true, true]
    );
    let one_now = slot_now(&store, one.id).await;
    let drained = move_slot(&store, &one_now, SlotState::Draining, None, false, at(6))
        .await
        .unwrap();
    assert_eq!(
        drained.leases, 1,
        "an ordinary drain lets its leases finish"
    );
    assert_eq!(
        reservation(&store, a.id).await.phase,
        ReservationPhase::Assigned
    );

    let two_now = slot_now(&store, two.id).await;
    let interrupted = move_slot(&store, &two_now, SlotState::Draining, None, true, at(6))
        .await
        .unwrap();
    assert_eq!(interrupted.leases, 0);
    let handed = reservation(&store, b.id).await;
    assert_eq!(handed.phase, ReservationPhase::Pending);
    assert_eq!(handed.slot_id, None);
    // Releasing a handed-back reservation gives back no lease it no longer holds.
    store
        .reservation_release(ReservationReleaseParams {
            id: b.id,
            now: Some(at(7)),
        })
        .await
        .unwrap();
    assert_eq!(slot_now(&store, two.id).await.leases, 0);

    // Emptying a slot always hands its work back.
    let emptied = move_slot(&store, &drained, SlotState::Empty, None, false, at(8))
        .await
        .unwrap();
    assert_eq!(emptied.leases, 0);
    assert_eq!(
        reservation(&store, a.id).await.phase,
        ReservationPhase::Pending
    );
}

/// Lists filter by id, system and state (slots) or phase (reservations); counts cover the open
/// phases.
pub async fn capacity_lists_filter_and_count(store: DynStore) {
    let gpu = ready_slot(&store, "gpu", "i-gpu").await;
    let _cpu = ready_slot(&store, "cpu", "i-cpu").await;
    let launching = new_slot(&store, "gpu", at(4)).await;
    let all = store.slot_list(SlotListParams::default()).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    let gpu_ready = store
        .slot_list(SlotListParams {
            system: Some("gpu".into()),
            states: vec![SlotState::Ready, SlotState::Draining],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(gpu_ready, vec![gpu.clone()]);
    let in_flight = store
        .slot_list(SlotListParams {
            states: vec![SlotState::Launching],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(in_flight, vec![launching]);

    let a = reserve(&store, "gpu", 60, at(4)).await;
    let _b = reserve(&store, "gpu", 60, at(4)).await;
    let _c = reserve(&store, "cpu", 60, at(4)).await;
    assert_eq!(
        assign(&store, &[(a.id, gpu.id)], 1, at(5)).await,
        vec![true]
    );
    let counts = store.reservation_count().await.unwrap();
    let count = |system: &str, phase| ReservationCount {
        system: system.into(),
        phase,
        count: 1,
    };
    assert_eq!(
        counts,
        vec![
            count("cpu", ReservationPhase::Pending),
            count("gpu", ReservationPhase::Assigned),
            count("gpu", ReservationPhase::Pending),
        ]
    );
    let pending_gpu = store
        .reservation_list(ReservationListParams {
            system: Some("gpu".into()),
            phases: vec![ReservationPhase::Pending],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pending_gpu.len(), 1);
    let first_two = store
        .reservation_list(ReservationListParams {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(first_two.len(), 2);
    assert_eq!(first_two[0].id, a.id);
}

/// Two assigners at once (an old leader and a new one) cannot pass the lease limit together.
pub async fn concurrent_assigners_keep_the_lease_limit(store: DynStore) {
    let gpu = ready_slot(&store, "gpu", "i-gpu").await;
    let mut reservations = Vec::new();
    for _ in 0..8 {
        reservations.push(reserve(&store, "gpu", 60, at(4)).await.id);
    }
    let mut tasks = Vec::new();
    for pair in reservations.chunks(2) {
        let store = store.clone();
        let pairs: Vec<(i64, i64)> = pair.iter().map(|r| (*r, gpu.id)).collect();
        tasks.push(tokio::spawn(async move {
            assign(&store, &pairs, 3, at(5)).await
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await.unwrap().iter().filter(|ok| **ok).count();
    }
    assert_eq!(accepted, 3, "exactly the limit");
    assert_eq!(slot_now(&store, gpu.id).await.leases, 3);
    let assigned = store
        .reservation_list(ReservationListParams {
            phases: vec![ReservationPhase::Assigned],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(assigned.len(), 3);
}
