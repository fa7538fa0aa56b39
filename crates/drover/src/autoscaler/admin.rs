//! Operator actions on capacity — list, drain, interrupt, reserve, release — as functions over
//! the store, shared by the CLI and the HTTP API. The tick does the rest: a drained slot is
//! terminated once its leases are finished, an interrupted one at once.

use std::time::Duration;

use drover_core::{
    Clock, ReservationId, ReservationInsertParams, ReservationListParams, ReservationPhase,
    ReservationRecord, ReservationReleaseParams, SlotId, SlotListParams, SlotRecord, SlotState,
    SlotTransitionParams, Store, StoreError,
};

/// Why an operator action did nothing.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No such slot or reservation.
    #[error("{0}")]
    NotFound(String),
    /// The action does not apply in the current state.
    #[error("{0}")]
    Conflict(String),
    /// Bad input: the field it is in, and what is wrong.
    #[error("{message}")]
    Invalid {
        /// The field (`system`, `holder`, `ttl`).
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Slots, by id; only those of `system` when given; empty slots left out unless `all`.
pub async fn slots(
    store: &dyn Store,
    system: Option<String>,
    all: bool,
) -> Result<Vec<SlotRecord>, AdminError> {
    let states = if all {
        Vec::new()
    } else {
        SlotState::ALL
            .into_iter()
            .filter(|s| *s != SlotState::Empty)
            .collect()
    };
    Ok(store
        .slot_list(SlotListParams {
            system,
            states,
            ..Default::default()
        })
        .await?)
}

async fn slot(store: &dyn Store, id: SlotId) -> Result<SlotRecord, AdminError> {
    store
        .slot_list(SlotListParams {
            id: Some(id),
            ..Default::default()
        })
        .await?
        .pop()
        .ok_or_else(|| AdminError::NotFound(format!("no slot with id {id}")))
}

async fn to_draining(
    store: &dyn Store,
    clock: &dyn Clock,
    id: SlotId,
    interrupt: bool,
) -> Result<SlotRecord, AdminError> {
    let current = slot(store, id).await?;
    let allowed = if interrupt {
        can_interrupt(&current)
    } else {
        can_drain(&current)
    };
    if !allowed {
        return Err(AdminError::Conflict(if interrupt {
            format!(
                "slot {id} is {}: only a booting, binding, ready or draining slot can be \
                 interrupted, once",
                current.state
            )
        } else {
            format!(
                "slot {id} is {}: only a booting, binding or ready slot can be drained",
                current.state
            )
        }));
    }
    let now = clock.now();
    let updated = store
        .slot_transition(SlotTransitionParams {
            id,
            from: current.state,
            generation: current.generation,
            to: SlotState::Draining,
            instance_id: None,
            reason: if interrupt {
                "interrupted by an operator".into()
            } else {
                "drained by an operator".into()
            },
            hand_back: interrupt,
            notice_at: interrupt.then_some(now),
            now: clock.store_now(),
        })
        .await?;
    updated.ok_or_else(|| {
        AdminError::Conflict(format!(
            "slot {id} changed meanwhile (the autoscaler moved it); look again"
        ))
    })
}

/// Whether an operator may drain `slot`: it serves or is about to.
pub fn can_drain(slot: &SlotRecord) -> bool {
    matches!(
        slot.state,
        SlotState::Booting | SlotState::Binding | SlotState::Ready
    )
}

/// Whether an operator may interrupt `slot`: a slot that may be drained, or a draining one not
/// interrupted yet (it may hold leases for as long as their reservations live; an interruption
/// hands them back at once, once).
pub fn can_interrupt(slot: &SlotRecord) -> bool {
    can_drain(slot) || slot.state == SlotState::Draining && slot.notice_at.is_none()
}

/// Drains a slot: it takes no new lease, finishes those it holds, then its instance is
/// terminated.
pub async fn drain(
    store: &dyn Store,
    clock: &dyn Clock,
    id: SlotId,
) -> Result<SlotRecord, AdminError> {
    to_draining(store, clock, id, false).await
}

/// Interrupts a slot as a provider's notice would: its leases are handed back at once (their
/// reservations pending again, for another slot) and its instance is terminated at the next
/// tick, which launches a replacement when demand needs one.
pub async fn interrupt(
    store: &dyn Store,
    clock: &dyn Clock,
    id: SlotId,
) -> Result<SlotRecord, AdminError> {
    to_draining(store, clock, id, true).await
}

/// Refuses a `system` that is not among the `declared` ones (`[systems.NAME]` of the config).
pub fn check_declared(system: &str, declared: &[String]) -> Result<(), AdminError> {
    if declared.iter().any(|s| s == system) {
        return Ok(());
    }
    let declared = if declared.is_empty() {
        "no system is declared".to_owned()
    } else {
        format!("declared: {}", declared.join(", "))
    };
    Err(AdminError::Invalid {
        field: "system",
        message: format!("invalid system: no [systems.{system}] in the config ({declared})"),
    })
}

/// The longest a reservation may live: one forgotten for longer keeps a slot from draining.
pub const MAX_RESERVATION_TTL: Duration = Duration::from_secs(30 * 86_400);
/// The shortest a reservation may live: less could expire before any tick assigned it.
pub const MIN_RESERVATION_TTL: Duration = Duration::from_secs(1);

/// A reservation's time to live, checked: between [`MIN_RESERVATION_TTL`] and
/// [`MAX_RESERVATION_TTL`].
pub fn check_ttl(ttl: Duration) -> Result<(), AdminError> {
    if (MIN_RESERVATION_TTL..=MAX_RESERVATION_TTL).contains(&ttl) {
        return Ok(());
    }
    Err(AdminError::Invalid {
        field: "ttl",
        message: "invalid ttl: the time to live must be at least 1 second and at most 30 days"
            .into(),
    })
}

/// A reservation asked for.
#[derive(Debug, Clone, Copy)]
pub struct Reservation<'a> {
    /// The system, like `gpu`.
    pub system: &'a str,
    /// How long it lives unless released.
    pub ttl: Duration,
    /// Who holds it (shown to operators).
    pub holder: &'a str,
    /// The systems the autoscaler serves, when known: any other is refused, since its
    /// reservation would wait in vain. `None` takes every system.
    pub declared: Option<&'a [String]>,
}

/// Makes a reservation of one lease of `system` for `ttl`.
pub async fn reserve(
    store: &dyn Store,
    clock: &dyn Clock,
    request: Reservation<'_>,
) -> Result<ReservationRecord, AdminError> {
    let Reservation {
        system,
        ttl,
        holder,
        declared,
    } = request;
    drover_core::validate::check_name("system", system).map_err(|err| AdminError::Invalid {
        field: "system",
        message: err.to_string(),
    })?;
    // Free text, but stored and shown: a NUL would reach PostgreSQL's text as an encoding
    // error, and control characters would garble the dashboard and the CLI.
    if holder.is_empty() || holder.chars().count() > 200 || holder.chars().any(char::is_control) {
        return Err(AdminError::Invalid {
            field: "holder",
            message: "invalid holder: 1 to 200 characters, none of them control characters".into(),
        });
    }
    check_ttl(ttl)?;
    if let Some(declared) = declared {
        check_declared(system, declared)?;
    }
    Ok(store
        .reservation_insert(ReservationInsertParams {
            system: system.to_owned(),
            holder: holder.to_owned(),
            ttl,
            now: clock.store_now(),
        })
        .await?)
}

/// Most open reservations a list returns.
pub const RESERVATION_LIST_LIMIT: usize = 1_000;

/// The open reservations (pending and assigned), oldest first, at most
/// [`RESERVATION_LIST_LIMIT`]; only those of `system` when given. How an operator finds one
/// whose id was lost, and sees what holds a system's capacity.
pub async fn reservations(
    store: &dyn Store,
    system: Option<String>,
) -> Result<Vec<ReservationRecord>, AdminError> {
    Ok(store
        .reservation_list(ReservationListParams {
            system,
            phases: vec![ReservationPhase::Pending, ReservationPhase::Assigned],
            limit: RESERVATION_LIST_LIMIT,
            ..Default::default()
        })
        .await?)
}

/// How many reservations are open, per system and phase: exact, where a list stops at
/// [`RESERVATION_LIST_LIMIT`].
pub async fn reservation_counts(
    store: &dyn Store,
) -> Result<Vec<drover_core::ReservationCount>, AdminError> {
    Ok(store.reservation_count().await?)
}

/// One reservation.
pub async fn reservation(
    store: &dyn Store,
    id: ReservationId,
) -> Result<ReservationRecord, AdminError> {
    store
        .reservation_list(ReservationListParams {
            id: Some(id),
            ..Default::default()
        })
        .await?
        .pop()
        .ok_or_else(|| AdminError::NotFound(format!("no reservation with id {id}")))
}

/// Waits until a reservation is no longer pending (assigned, or ended), polling every
/// `every`, for at most `timeout`. Returns it as last read.
pub async fn wait_answered(
    store: &dyn Store,
    id: ReservationId,
    every: Duration,
    timeout: Duration,
) -> Result<ReservationRecord, AdminError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let now = reservation(store, id).await?;
        if now.phase != ReservationPhase::Pending || tokio::time::Instant::now() >= deadline {
            return Ok(now);
        }
        tokio::time::sleep(every).await;
    }
}

/// Releases a reservation (its lease goes back to its slot).
pub async fn release(
    store: &dyn Store,
    clock: &dyn Clock,
    id: ReservationId,
) -> Result<ReservationRecord, AdminError> {
    store
        .reservation_release(ReservationReleaseParams {
            id,
            now: clock.store_now(),
        })
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no reservation with id {id}")))
}
