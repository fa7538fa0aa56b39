//! The overview: throughput over the last hour, depth by queue and state, the oldest waiting
//! job per queue, the leader and the processes. Every number comes from the leader's cached
//! counts, so the page costs the same at ten jobs and at ten million.

use axum::extract::State;
use drover::admin::QueueView;
use drover_core::JobState;
use jiff::Timestamp;
use maud::{Markup, html};

use super::layout::{self, Nav};
use super::{PageResult, chart, format};
use crate::http::AppState;

pub(super) async fn page(State(state): State<AppState>) -> PageResult {
    let queues = state.admin.queues().await?;
    let cluster = state.admin.cluster().await?;
    let throughput = state.admin.throughput(60).await?;
    let now = Timestamp::now();
    let total = |states: &[JobState]| -> u64 {
        queues
            .iter()
            .flat_map(|q| states.iter().map(|s| q.counts.get(s).copied().unwrap_or(0)))
            .sum()
    };
    let estimated = queues.iter().any(|q| q.estimated);
    let shown = |n: u64| {
        html! { @if estimated { span title="At least: a count reached its cap" { "≥ " } } (format::count(n)) }
    };
    let leader = cluster.leader.as_ref().map(|l| l.leader_id.clone());
    let body = html! {
        div #overview data-live {
            div.stats {
                (layout::stat("waiting", shown(total(&[JobState::Available, JobState::Scheduled, JobState::Retryable]))))
                (layout::stat("running", shown(total(&[JobState::Running]))))
                (layout::stat("completed", shown(total(&[JobState::Completed]))))
                (layout::stat("discarded", shown(total(&[JobState::Discarded]))))
                (layout::stat("processes", html! { (cluster.processes.len()) }))
                (layout::stat("leader", html! {
                    @match &leader { Some(id) => span.mono title=(id) { (short_process(id)) }, None => span.warn { "none" } }
                }))
            }
            section.card {
                h2 { "Jobs per second, last hour" }
                (chart::throughput(&throughput))
            }
            section.card {
                h2 { "Queues" }
                (depth_table(&queues))
                (counted_note(&queues, now))
            }
            section.card {
                h2 { a href="/processes" { "Processes" } }
                @if cluster.processes.is_empty() {
                    p.muted { "No process is registered." }
                } @else {
                    ul.processes-brief {
                        @for p in &cluster.processes {
                            li {
                                span.mono title=(p.id) { (short_process(&p.id)) }
                                @if leader.as_deref() == Some(p.id.as_str()) { " " span.badge.leader { "leader" } }
                                @if p.draining_since.is_some() { " " span.badge.draining { "draining" } }
                                span.muted { " · " (p.queues.join(", ")) " · seen " (format::when(p.heartbeat_at, now)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(
        "Overview",
        Nav::Overview,
        body,
        state.settings.token.is_some(),
    ))
}

/// Queue × state, each count a link to the matching job list.
pub(super) fn depth_table(queues: &[QueueView]) -> Markup {
    html! {
        @if queues.is_empty() {
            p.muted { "No queue has jobs or workers yet." }
        } @else {
            div.scroll {
                table.depth {
                    thead { tr {
                        th { "queue" }
                        @for s in JobState::ALL { th.num { (s.as_str()) } }
                        th.num { "oldest waiting" }
                    } }
                    tbody {
                        @for q in queues {
                            tr {
                                td {
                                    a href={ "/jobs?queue=" (q.name) } { (q.name) }
                                    @if q.paused { " " span.badge.paused { "paused" } }
                                }
                                @for s in JobState::ALL {
                                    @let n = q.counts.get(&s).copied().unwrap_or(0);
                                    td.num {
                                        @if n == 0 { span.muted { "0" } } @else {
                                            a.state-count href={ "/jobs?queue=" (q.name) "&state=" (s.as_str()) } { (format::count(n)) }
                                        }
                                    }
                                }
                                td.num {
                                    @match q.oldest_available_age_seconds {
                                        Some(age) => span.age[age > 60.0] { (format::seconds(age)) },
                                        None => span.muted { "–" },
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

/// When the counts were taken, and whether any is a lower bound.
pub(super) fn counted_note(queues: &[QueueView], now: Timestamp) -> Markup {
    let counted = queues.iter().filter_map(|q| q.counted_at).max();
    html! {
        p.note {
            "Counts cached by the leader, taken " (format::when_opt(counted, now)) "."
            @if queues.iter().any(|q| q.estimated) {
                " Counts marked ≥ reached the cap ([worker] counts_cap) and are lower bounds."
            }
        }
    }
}

/// `host:pid` out of a process id like `host:pid:random`.
pub(super) fn short_process(id: &str) -> String {
    match id.rsplit_once(':') {
        Some((host_pid, _random)) if host_pid.contains(':') => host_pid.to_owned(),
        _ => id.to_owned(),
    }
}
