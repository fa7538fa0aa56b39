//! Queues: concurrency, depth by state, the oldest waiting job, and pause / resume.

use axum::extract::State;
use jiff::Timestamp;
use maud::html;

use super::layout::{self, Nav};
use super::overview::{counted_note, depth_table};
use super::{PageResult, format};
use crate::http::AppState;

pub(super) async fn page(State(state): State<AppState>) -> PageResult {
    let queues = state.admin.queues().await?;
    let now = Timestamp::now();
    let actions = !state.settings.read_only;
    let body = html! {
        div #queues data-live {
            section.card {
                h2 { "Workers and pause" }
                @if queues.is_empty() {
                    p.muted { "No queue has jobs or workers yet." }
                } @else {
                    div.scroll {
                        table.queues {
                            thead { tr {
                                th { "queue" } th { "status" } th.num { "processes" } th.num { "concurrency" }
                                th.num { "waiting" } th.num { "running" } th.num { "oldest waiting" }
                                @if actions { th { span.sr-only { "actions" } } }
                            } }
                            tbody {
                                @for q in &queues {
                                    @let waiting: u64 = q.counts.iter().filter(|(s, _)| matches!(s,
                                        drover_core::JobState::Available | drover_core::JobState::Scheduled | drover_core::JobState::Retryable))
                                        .map(|(_, n)| *n).sum();
                                    tr data-queue=(q.name) {
                                        td { a href={ "/jobs?queue=" (q.name) } { (q.name) } }
                                        td {
                                            @if q.paused {
                                                span.badge.paused { "paused" }
                                                @if let Some(at) = q.paused_at { " " (format::when(at, now)) }
                                            } @else {
                                                span.badge.active { "active" }
                                            }
                                        }
                                        td.num {
                                            (q.processes)
                                            @if q.http_workers > 0 {
                                                " + " a href="/processes#http-workers" title="HTTP workers leasing from this queue" { (q.http_workers) " HTTP" }
                                            }
                                        }
                                        td.num { (q.concurrency) }
                                        td.num { (format::count(waiting)) }
                                        td.num { (format::count(q.counts.get(&drover_core::JobState::Running).copied().unwrap_or(0))) }
                                        td.num {
                                            @match q.oldest_available_age_seconds {
                                                Some(age) => (format::seconds(age)),
                                                None => span.muted { "–" },
                                            }
                                        }
                                        @if actions {
                                            td.actions {
                                                @if q.paused {
                                                    (layout::action_button("Resume", &format!("/api/v1/queues/{}/resume", layout::path_segment(&q.name)),
                                                        &format!("Resume queue {}? Its jobs start again.", q.name), false))
                                                } @else {
                                                    (layout::action_button("Pause", &format!("/api/v1/queues/{}/pause", layout::path_segment(&q.name)),
                                                        &format!("Pause queue {} for every process? Running jobs finish; no new job of it starts.", q.name), true))
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section.card {
                h2 { "Depth by state" }
                (depth_table(&queues))
                (counted_note(&queues, now))
            }
        }
    };
    Ok(layout::page(
        "Queues",
        Nav::Queues,
        body,
        state.settings.token.is_some(),
    ))
}
