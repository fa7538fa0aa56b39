//! Capacity: the autoscaler's systems with their pools, every slot that holds or may hold an
//! instance (drain, interrupt), and the open reservations (release).

use std::collections::BTreeMap;

use axum::extract::State;
use drover::autoscaler::{SystemConfig, admin};
use drover_core::{ReservationCount, ReservationPhase, ReservationRecord, SlotRecord, SlotState};
use jiff::Timestamp;
use maud::{Markup, html};

use super::layout::{self, Nav};
use super::{PageResult, format};
use crate::http::AppState;

pub(super) async fn page(State(state): State<AppState>) -> PageResult {
    let slots = state.admin.slots(None, false).await?;
    let reservations = state.admin.reservations(None).await?;
    let counts = state.admin.reservation_counts().await?;
    let none = BTreeMap::new();
    let configured = state.admin.systems().unwrap_or(&none);
    let now = Timestamp::now();
    let actions = !state.settings.read_only;
    let held: u32 = slots.iter().map(|s| s.leases).sum();
    let pending = Pending(&counts);
    let open: u64 = counts.iter().map(|c| c.count).sum();
    let body = html! {
        div #capacity data-live {
            div.stats {
                (layout::stat("slots", html! { (slots.len()) }))
                (layout::stat("ready", html! { (slots.iter().filter(|s| s.state == SlotState::Ready).count()) }))
                (layout::stat("leases held", html! { (held) }))
                (layout::stat("reservations waiting", html! {
                    @let waiting = pending.of(None);
                    @if waiting > 0 { span.warn { (format::count(waiting)) } } @else { "0" }
                }))
            }
            (systems(configured, &slots, pending))
            (slot_table(&slots, configured, now, actions))
            (reservation_table(&reservations, open, now, actions))
        }
    };
    Ok(layout::page(
        "Capacity",
        Nav::Capacity,
        body,
        state.settings.token.is_some(),
    ))
}

/// The pending reservations, counted by the store (a list stops at 1,000).
#[derive(Clone, Copy)]
struct Pending<'a>(&'a [ReservationCount]);

impl Pending<'_> {
    /// Those of `system`, or of every system.
    fn of(self, system: Option<&str>) -> u64 {
        self.0
            .iter()
            .filter(|c| c.phase == ReservationPhase::Pending)
            .filter(|c| system.is_none_or(|s| s == c.system))
            .map(|c| c.count)
            .sum()
    }
}

/// One row per system: the configured pools (when this process runs the autoscaler) beside
/// what the slots hold now.
fn systems(
    configured: &BTreeMap<String, SystemConfig>,
    slots: &[SlotRecord],
    pending: Pending<'_>,
) -> Markup {
    let names: std::collections::BTreeSet<&str> = configured
        .keys()
        .map(String::as_str)
        .chain(slots.iter().map(|s| s.system.as_str()))
        .chain(pending.0.iter().map(|c| c.system.as_str()))
        .collect();
    html! {
        section.card #systems {
            h2 { "Systems" }
            @if names.is_empty() {
                p.muted {
                    "No system is declared and no slot exists. A " code { "[systems.NAME]" }
                    " table in drover.toml starts the autoscaler (" code { "[autoscaler]" }
                    " picks its runtime)."
                }
            } @else {
                div.scroll {
                    table.systems {
                        thead { tr {
                            th { "system" } th.num { "min" } th.num { "warm" } th.num { "max" }
                            th.num { "leases per slot" } th { "slots by state" }
                            th.num { "leases held" } th.num { "waiting" } th { "queues" }
                        } }
                        tbody {
                            @for name in &names {
                                @let config = configured.get(*name);
                                @let mine: Vec<&SlotRecord> = slots.iter().filter(|s| s.system == *name).collect();
                                tr data-system=(name) {
                                    td { strong { (name) } }
                                    @match config {
                                        Some(c) => {
                                            td.num { (c.min) } td.num { (c.warm) } td.num { (c.max) }
                                            td.num { (c.max_leases_per_slot) }
                                        }
                                        None => {
                                            td.num.muted colspan="4" title="Not in this server's config: the autoscaler runs in another process, or no longer serves this system." { "elsewhere" }
                                        }
                                    }
                                    td { (by_state(&mine)) }
                                    td.num { (mine.iter().map(|s| s.leases).sum::<u32>()) }
                                    td.num { (format::count(pending.of(Some(name)))) }
                                    td {
                                        @if let Some(c) = config {
                                            @for (i, q) in c.queues.iter().enumerate() {
                                                @if i > 0 { ", " } a href={ "/jobs?queue=" (q) } { (q) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                p.note { "The autoscaler keeps at least min slots and warm idle ready slots beyond the demand, and never more than max. Demand is the open reservations and the available and running jobs of the system's queues." }
            }
        }
    }
}

/// "2 ready · 1 booting", in life order.
fn by_state(slots: &[&SlotRecord]) -> Markup {
    let counts: Vec<(SlotState, usize)> = SlotState::ALL
        .iter()
        .map(|state| (*state, slots.iter().filter(|s| s.state == *state).count()))
        .filter(|(_, n)| *n > 0)
        .collect();
    html! {
        @if counts.is_empty() { span.muted { "none" } }
        @for (i, (state, n)) in counts.iter().enumerate() {
            @if i > 0 { " · " }
            (n) " " (state.as_str())
        }
    }
}

fn slot_table(
    slots: &[SlotRecord],
    configured: &BTreeMap<String, SystemConfig>,
    now: Timestamp,
    actions: bool,
) -> Markup {
    html! {
        section.card #slots {
            h2 { "Slots" }
            @if slots.is_empty() {
                p.muted { "No slot holds or is launching an instance." }
            } @else {
                div.scroll {
                    table.slots {
                        thead { tr {
                            th.num { "id" } th { "system" } th { "state" } th { "instance" }
                            th.num { "gen" } th.num { "leases" } th { "since" } th { "reason" }
                            @if actions { th { span.sr-only { "actions" } } }
                        } }
                        tbody {
                            @for s in slots {
                                tr data-slot=(s.id) {
                                    td.num { (s.id) }
                                    td { (s.system) }
                                    td { (slot_badge(s, now)) }
                                    td.mono { (s.instance_id.as_deref().unwrap_or("–")) }
                                    td.num { (s.generation) }
                                    td.num {
                                        (s.leases)
                                        @if let Some(c) = configured.get(&s.system) { span.muted { " / " (c.max_leases_per_slot) } }
                                    }
                                    td { (format::when(s.state_changed_at, now)) }
                                    td title=(s.reason) { (format::clip(&s.reason, 200)) }
                                    @if actions {
                                        td.actions {
                                            @if admin::can_drain(s) {
                                                (layout::action_button("Drain", &format!("/api/v1/slots/{}/drain", s.id),
                                                    &format!("Drain slot {}? It takes no new lease, and its instance is terminated {}.", s.id, held_leases(s.leases)), false))
                                                " "
                                            }
                                            @if admin::can_interrupt(s) {
                                                (layout::action_button("Interrupt", &format!("/api/v1/slots/{}/interrupt", s.id),
                                                    &format!("Interrupt slot {} as a provider's notice would? {} back to waiting at once, its instance is terminated, and a replacement is launched if demand needs one.", s.id, handed_back(s.leases)), true))
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                p.note { "A slot is capacity for one instance of its system. Draining: it takes no new lease and is terminated once its leases are given back. An error slot is relaunched after its cool-down." }
            }
        }
    }
}

/// When a drained slot's instance goes, for a drain's question.
fn held_leases(n: u32) -> String {
    match n {
        0 => "at the autoscaler's next tick (it holds no lease)".to_owned(),
        1 => "once its lease is given back".to_owned(),
        n => format!("once its {n} leases are given back"),
    }
}

/// "Its 2 leases go", for an interruption's question.
fn handed_back(n: u32) -> String {
    match n {
        0 => "It holds no lease to hand".to_owned(),
        1 => "Its lease goes".to_owned(),
        n => format!("Its {n} leases go"),
    }
}

/// The state, with how long an idle ready slot has been idle and when an interruption
/// notice came.
fn slot_badge(slot: &SlotRecord, now: Timestamp) -> Markup {
    let class = match slot.state {
        SlotState::Ready => "active",
        SlotState::Draining => "draining",
        SlotState::Error => "state-discarded",
        SlotState::Launching | SlotState::Booting | SlotState::Binding => "state-running",
        SlotState::Empty => "",
    };
    html! {
        span class={ "badge " (class) } { (slot.state.as_str()) }
        @if slot.state == SlotState::Ready && slot.leases == 0 {
            " " span.muted title={ "idle since " (format::exact(slot.idle_since())) } { "idle " (format::when(slot.idle_since(), now)) }
        }
        @if let Some(notice) = slot.notice_at {
            " " span.warn title={ "interruption notice at " (format::exact(notice)) } { "interrupted" }
        }
    }
}

fn reservation_table(
    reservations: &[ReservationRecord],
    open: u64,
    now: Timestamp,
    actions: bool,
) -> Markup {
    html! {
        section.card #reservations {
            h2 { "Open reservations" }
            @if reservations.is_empty() {
                p.muted {
                    "No reservation is open. Make one with " code { "drover reserve --system NAME" }
                    " or " code { "POST /api/v1/reservations" } "."
                }
            } @else {
                div.scroll {
                    table.reservations {
                        thead { tr {
                            th.num { "id" } th { "system" } th { "phase" } th { "holder" }
                            th { "slot" } th { "made" } th { "expires" }
                            @if actions { th { span.sr-only { "actions" } } }
                        } }
                        tbody {
                            @for r in reservations {
                                tr data-reservation=(r.id) {
                                    td.num { (r.id) }
                                    td { (r.system) }
                                    td {
                                        @if r.phase == ReservationPhase::Assigned {
                                            span.badge.active { "assigned" }
                                            @if let Some(at) = r.assigned_at { " " (format::when(at, now)) }
                                        } @else {
                                            span.badge.paused { (r.phase.as_str()) }
                                        }
                                    }
                                    td.mono { (format::clip(&r.holder, 60)) }
                                    td {
                                        @match (r.slot_id, r.instance_id.as_deref()) {
                                            (Some(slot), Some(instance)) => { (slot) " · " span.mono { (instance) } }
                                            (Some(slot), None) => (slot),
                                            _ => span.muted { "–" },
                                        }
                                    }
                                    td { (format::when(r.created_at, now)) }
                                    td { (format::when(r.expires_at, now)) }
                                    @if actions {
                                        td.actions {
                                            (layout::action_button("Release", &format!("/api/v1/reservations/{}/release", r.id),
                                                &format!("Release reservation {} of {}? Its holder ({}) loses its lease.", r.id, r.system, format::clip(&r.holder, 60)), true))
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if open > reservations.len() as u64 {
                    p.warn { "The oldest " (format::count(reservations.len() as u64)) " of " (format::count(open)) " open reservations." }
                }
                p.note { "Oldest first, at most 1,000. A pending reservation waits for a ready slot with a free lease; one not released by its expiry time is expired and its lease given back." }
            }
        }
    }
}
