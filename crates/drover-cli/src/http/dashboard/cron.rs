//! Cron: each schedule, its zone, its last fire and next fire times, and "run now".

use axum::extract::State;
use jiff::Timestamp;
use maud::html;

use super::layout::{self, Nav};
use super::{PageResult, format};
use crate::http::AppState;

pub(super) async fn page(State(state): State<AppState>) -> PageResult {
    let schedules = state.admin.cron().await?;
    let now = Timestamp::now();
    let body = html! {
        div #cron data-live {
            @if schedules.is_empty() {
                section.card {
                    p.muted { "No schedule is configured. Add a " code { "[[cron]]" } " table to drover.toml." }
                }
            } @else {
                section.card {
                    div.scroll {
                        table.cron {
                            thead { tr {
                                th { "name" } th { "schedule" } th { "zone" } th { "kind" } th { "queue" }
                                th { "catch-up" } th { "last fire" } th { "next fires" }
                                @if !state.settings.read_only { th { span.sr-only { "actions" } } }
                            } }
                            tbody {
                                @for c in &schedules {
                                    tr data-cron=(c.name) {
                                        td { strong { (c.name) } }
                                        td.mono { (c.schedule) }
                                        td { (c.timezone) }
                                        td.mono { (c.kind) }
                                        td { (c.queue.as_deref().unwrap_or("default")) }
                                        td { (format!("{:?}", c.catch_up).to_lowercase()) }
                                        td {
                                            (format::when_opt(c.last_fire_at, now))
                                            @if let Some(id) = c.last_job_id { " · " a href={ "/jobs/" (id) } { "job " (id) } }
                                        }
                                        td {
                                            @if c.leader_fires == Some(false) {
                                                span.badge.paused title="The process that leads now has no such schedule in its config, or another expression or time zone: these times hold once a process with this schedule leads." { "not fired by the leader" }
                                            }
                                            ul.times { @for at in &c.next_fire_times { li { (format::when(*at, now)) } } }
                                        }
                                        @if !state.settings.read_only {
                                            td.actions {
                                                (layout::action_button("Run now", &format!("/api/v1/cron/{}/run", layout::path_segment(&c.name)),
                                                    &format!("Enqueue the job of {} now? Its schedule is unchanged.", c.name), false))
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    p.note { "Fired by the leader only; each fire time is enqueued exactly once." }
                }
            }
        }
    };
    Ok(layout::page(
        "Cron",
        Nav::Cron,
        body,
        state.settings.token.is_some(),
    ))
}
