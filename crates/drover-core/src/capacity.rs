//! The capacity model of the autoscaler: slots (units of capacity of one system) and
//! reservations (demand for one lease of a system), as the [`Store`](crate::Store) keeps them.
//!
//! # Slots
//!
//! ```text
//!              launch recorded                runtime answered
//!   (new) ──► launching ───────────────────► booting ──► binding ──► ready
//!   empty ──►    │  ▲   (idempotent by slot id     │           │         │
//!                │  │    and generation)           │           │         │ idle / operator /
//!                │  └── error (after the cool-down)│           │         │ notice / vanished
//!                ▼                                 ▼           ▼         ▼
//!              error ◄───── boot timeout ──────────┴───────────┘     draining
//!                                                                       │ leases finished
//!                                                                       │ (or handed back)
//!                                                                       ▼
//!                                                    instance terminated: empty
//! ```
//!
//! Every change of state is fenced by the state and generation the caller read
//! ([`SlotTransitionParams`]): two leaders (an old one that has not noticed it lost its term, and
//! the new one) can never both move one slot. The generation grows every time a slot enters
//! `launching`, so that a runtime can make its launch idempotent by (slot id, generation): a
//! leader killed between recording a launch and making it leads, on the next tick, to the same
//! launch, which returns the instance the first one may have made.
//!
//! A slot holds at most `max_leases_per_slot` leases: the store counts assigned reservations
//! in `leases`, and refuses an assignment that would pass the limit.
//!
//! # Reservations
//!
//! ```text
//!   pending ──► assigned ──► released
//!      │  ▲        │
//!      │  └────────┤  slot drained with hand-back, interrupted, vanished, errored
//!      ▼           ▼
//!   expired ◄── time to live passed
//! ```
//!
//! `released` and `expired` are terminal.

use jiff::Timestamp;
use serde::Serialize;

/// The id of a slot.
pub type SlotId = i64;

/// The id of a reservation.
pub type ReservationId = i64;

/// Where a slot is in its life. See the module documentation for the diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SlotState {
    /// No instance; the row is kept for reuse.
    Empty,
    /// A launch is recorded; the runtime has not yet answered with an instance id.
    Launching,
    /// The instance exists and is starting.
    Booting,
    /// The instance runs; its worker has not yet registered with its slot id.
    Binding,
    /// Serving: takes leases.
    Ready,
    /// Takes no new leases; terminated once its leases are finished.
    Draining,
    /// A launch failed or the slot was stuck booting; relaunched after the cool-down.
    Error,
}

impl SlotState {
    /// Every state, in life order.
    pub const ALL: [SlotState; 7] = [
        SlotState::Empty,
        SlotState::Launching,
        SlotState::Booting,
        SlotState::Binding,
        SlotState::Ready,
        SlotState::Draining,
        SlotState::Error,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Empty => "empty",
            SlotState::Launching => "launching",
            SlotState::Booting => "booting",
            SlotState::Binding => "binding",
            SlotState::Ready => "ready",
            SlotState::Draining => "draining",
            SlotState::Error => "error",
        }
    }

    /// Capacity on its way: launched, not yet serving.
    pub fn in_flight(self) -> bool {
        matches!(
            self,
            SlotState::Launching | SlotState::Booting | SlotState::Binding
        )
    }
}

impl std::fmt::Display for SlotState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SlotState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SlotState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown slot state {s:?}"))
    }
}

/// Where a reservation is. See the module documentation for the diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ReservationPhase {
    /// Waiting for a ready slot with a free lease.
    Pending,
    /// Holds a lease of a slot.
    Assigned,
    /// Given back by its holder. Terminal.
    Released,
    /// Its time to live passed. Terminal.
    Expired,
}

impl ReservationPhase {
    /// Every phase.
    pub const ALL: [ReservationPhase; 4] = [
        ReservationPhase::Pending,
        ReservationPhase::Assigned,
        ReservationPhase::Released,
        ReservationPhase::Expired,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationPhase::Pending => "pending",
            ReservationPhase::Assigned => "assigned",
            ReservationPhase::Released => "released",
            ReservationPhase::Expired => "expired",
        }
    }
}

impl std::fmt::Display for ReservationPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ReservationPhase {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReservationPhase::ALL
            .into_iter()
            .find(|phase| phase.as_str() == s)
            .ok_or_else(|| format!("unknown reservation phase {s:?}"))
    }
}

/// A slot as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SlotRecord {
    /// The slot.
    pub id: SlotId,
    /// The system it is capacity of.
    pub system: String,
    /// Its state.
    pub state: SlotState,
    /// The runtime's id of its instance, once the runtime answered the launch.
    pub instance_id: Option<String>,
    /// Grows every time the slot enters `launching`.
    pub generation: i64,
    /// Reservations assigned to it now.
    pub leases: u32,
    /// Launch failures in a row (reset when the slot becomes ready); the cool-down grows with it.
    pub failures: u32,
    /// Why it last changed state.
    pub reason: String,
    /// When the row was made.
    pub created_at: Timestamp,
    /// When its current generation was launched.
    pub launched_at: Option<Timestamp>,
    /// When it last changed state.
    pub state_changed_at: Timestamp,
    /// When a lease was last assigned or given back (the start of an idle spell).
    pub last_used_at: Timestamp,
    /// The deadline of an interruption notice, when it got one.
    pub notice_at: Option<Timestamp>,
}

impl SlotRecord {
    /// Since when the slot has held no lease (meaningful when `leases == 0`).
    pub fn idle_since(&self) -> Timestamp {
        self.last_used_at.max(self.state_changed_at)
    }
}

/// A reservation as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReservationRecord {
    /// The reservation.
    pub id: ReservationId,
    /// The system it wants a lease of.
    pub system: String,
    /// Its phase.
    pub phase: ReservationPhase,
    /// Who asked (free text for operators: a program name, `cli`, a job id).
    pub holder: String,
    /// The slot holding its lease, while assigned.
    pub slot_id: Option<SlotId>,
    /// That slot's instance id, while assigned (read with the reservation).
    pub instance_id: Option<String>,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it expires unless released first.
    pub expires_at: Timestamp,
    /// When it was last assigned.
    pub assigned_at: Option<Timestamp>,
    /// When it was released or expired.
    pub finished_at: Option<Timestamp>,
}

/// Params of [`Store::slot_insert`](crate::Store::slot_insert).
#[derive(Debug, Clone)]
pub struct SlotInsertParams {
    /// The system.
    pub system: String,
    /// Why the slot is launched (`demand`, `warm`, `min`, …).
    pub reason: String,
    /// The time; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// Params of [`Store::slot_transition`](crate::Store::slot_transition).
///
/// Side effects by target state:
/// - `launching`: the generation grows by one, `launched_at` is now, the instance id and the
///   notice are cleared.
/// - `ready`: the failure count is reset; the idle spell starts now.
/// - `error`: the failure count grows by one.
/// - `empty` and `error`: the instance id is cleared (when `instance_id` is `None`) and assigned
///   reservations are handed back, as with `hand_back`.
#[derive(Debug, Clone)]
pub struct SlotTransitionParams {
    /// The slot.
    pub id: SlotId,
    /// The state the caller read: the change happens only if the slot is still in it…
    pub from: SlotState,
    /// …at this generation.
    pub generation: i64,
    /// The new state.
    pub to: SlotState,
    /// The instance id to record (the runtime's answer to a launch).
    pub instance_id: Option<String>,
    /// Why.
    pub reason: String,
    /// Assigned reservations of the slot go back to `pending` (to be assigned elsewhere) and
    /// its lease count to zero: an interruption hands work back at once.
    pub hand_back: bool,
    /// The deadline of an interruption notice, to record.
    pub notice_at: Option<Timestamp>,
    /// The time; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// Params of [`Store::slot_list`](crate::Store::slot_list).
#[derive(Debug, Clone, Default)]
pub struct SlotListParams {
    /// Only this slot.
    pub id: Option<SlotId>,
    /// Only slots of this system.
    pub system: Option<String>,
    /// Only slots in these states (all when empty).
    pub states: Vec<SlotState>,
}

/// Params of [`Store::reservation_insert`](crate::Store::reservation_insert).
#[derive(Debug, Clone)]
pub struct ReservationInsertParams {
    /// The system.
    pub system: String,
    /// Who asks.
    pub holder: String,
    /// How long it lives unless released.
    pub ttl: std::time::Duration,
    /// The time; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// One assignment asked of [`Store::reservation_assign`](crate::Store::reservation_assign).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationAssignment {
    /// A pending reservation.
    pub reservation: ReservationId,
    /// A ready slot of the same system.
    pub slot: SlotId,
    /// The slot's lease limit: the assignment is refused when the slot already holds this many.
    pub max_leases: u32,
}

/// Params of [`Store::reservation_assign`](crate::Store::reservation_assign).
#[derive(Debug, Clone)]
pub struct ReservationAssignParams {
    /// Assignments, made in order in one transaction.
    pub assignments: Vec<ReservationAssignment>,
    /// The time; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// Params of [`Store::reservation_release`](crate::Store::reservation_release).
#[derive(Debug, Clone)]
pub struct ReservationReleaseParams {
    /// The reservation.
    pub id: ReservationId,
    /// The time; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// Params of [`Store::reservation_expire`](crate::Store::reservation_expire).
#[derive(Debug, Clone)]
pub struct ReservationExpireParams {
    /// The time; `None` for the database clock.
    pub now: Option<Timestamp>,
}

/// Params of [`Store::reservation_list`](crate::Store::reservation_list).
#[derive(Debug, Clone, Default)]
pub struct ReservationListParams {
    /// Only this reservation.
    pub id: Option<ReservationId>,
    /// Only reservations of this system.
    pub system: Option<String>,
    /// Only reservations in these phases (all when empty).
    pub phases: Vec<ReservationPhase>,
    /// Most reservations to return, oldest first (0: no limit).
    pub limit: usize,
}

/// A count of open (pending or assigned) reservations of one system and phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReservationCount {
    /// The system.
    pub system: String,
    /// The phase.
    pub phase: ReservationPhase,
    /// How many.
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in SlotState::ALL {
            assert_eq!(state.as_str().parse::<SlotState>(), Ok(state));
        }
        for phase in ReservationPhase::ALL {
            assert_eq!(phase.as_str().parse::<ReservationPhase>(), Ok(phase));
        }
        assert!("nope".parse::<SlotState>().is_err());
    }
}
