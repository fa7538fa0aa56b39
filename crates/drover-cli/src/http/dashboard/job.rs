//! One job: its args, its fields, and a timeline of everything that happened to it — every
//! attempt with its error, step and process, and the operator's and engine's actions.

use axum::extract::{Path, State};
use drover_core::{JobRecord, JobState};
use jiff::Timestamp;
use maud::{Markup, html};

use super::jobs::state_badge;
use super::layout::{self, Nav};
use super::{PageError, PageResult, format};
use crate::http::AppState;

pub(super) async fn page(State(state): State<AppState>, Path(id): Path<String>) -> PageResult {
    let id: i64 = id.parse().map_err(|_| {
        PageError::from(crate::http::ApiError::invalid(
            "id",
            format!("{id:?} is not a job id"),
        ))
    })?;
    let job = state.admin.job(id).await?;
    let now = Timestamp::now();
    let body = html! {
        div #job data-live data-state=(job.state.as_str()) {
            div.stats {
                (layout::stat("state", state_badge(job.state)))
                (layout::stat("attempt", html! { (job.attempt) " of " (job.max_attempts) }))
                (layout::stat("queue", html! { a href={ "/jobs?queue=" (job.queue) } { (job.queue) } }))
                (layout::stat("kind", html! { span.mono { (job.kind) } }))
                (layout::stat("priority", html! { (job.priority) }))
                (layout::stat("delivery", html! { (job.delivery.as_str()) }))
            }
            @if !state.settings.read_only {
                div.actions { (actions(&job)) }
            }
            div.columns {
                section.card {
                    h2 { "Timeline" }
                    (timeline(&job, now))
                }
                section.card {
                    h2 { "Args" }
                    pre.json { (job.args.pretty()) }
                    h2 { "Fields" }
                    (fields(&job, now))
                }
            }
        }
    };
    Ok(layout::page(
        &format!("Job {id}"),
        Nav::Jobs,
        body,
        state.settings.token.is_some(),
    ))
}

/// The actions that apply to the job's state (the API refuses the others anyway).
fn actions(job: &JobRecord) -> Markup {
    let id = job.id;
    let waiting = matches!(
        job.state,
        JobState::Scheduled | JobState::Available | JobState::Retryable
    );
    let finished = job.state.is_terminal();
    html! {
        @if finished || job.state == JobState::Retryable {
            (layout::action_button("Retry", &format!("/api/v1/jobs/{id}/retry"),
                &format!("Retry job {id}? It runs again with a fresh attempt budget."), false))
        }
        @if waiting || job.state == JobState::Running {
            (layout::action_button("Cancel", &format!("/api/v1/jobs/{id}/cancel"),
                &format!("Cancel job {id}?{}", if job.state == JobState::Running { " Its handler is asked to stop." } else { "" }), true))
        }
        @if waiting {
            (layout::action_button("Discard", &format!("/api/v1/jobs/{id}/discard"),
                &format!("Discard job {id}? It will not run."), true))
        }
    }
}

/// One line of the timeline.
struct Event {
    at: Timestamp,
    kind: &'static str,
    title: String,
    detail: Option<String>,
    step: Option<String>,
    process: Option<String>,
}

fn events(job: &JobRecord) -> Vec<Event> {
    let mut events = vec![Event {
        at: job.created_at,
        kind: "created",
        title: "enqueued".into(),
        detail: job.unique_key.as_ref().map(|k| format!("unique key {k}")),
        step: None,
        process: None,
    }];
    for error in &job.errors {
        events.push(Event {
            at: error.at,
            kind: "failed",
            title: format!("attempt {} failed", error.attempt),
            detail: Some(error.message.clone()),
            step: error.step.clone(),
            process: error.process.clone(),
        });
    }
    for entry in &job.history {
        events.push(Event {
            at: entry.at,
            kind: "history",
            title: entry.event.replace('_', " "),
            detail: Some(entry.detail.clone()).filter(|d| !d.is_empty()),
            step: None,
            process: None,
        });
    }
    match (job.state, job.attempted_at, job.completed_at) {
        (JobState::Running, Some(at), _) => events.push(Event {
            at,
            kind: "running",
            title: format!("attempt {} running", job.attempt),
            detail: job
                .lease_expires_at
                .map(|until| format!("lease until {}", format::exact(until))),
            step: job.step.clone(),
            process: job.lease_owner.clone(),
        }),
        (JobState::Completed, _, Some(at)) => events.push(Event {
            at,
            kind: "completed",
            title: format!("attempt {} completed", job.attempt),
            detail: None,
            step: job.step.clone(),
            process: job.lease_owner.clone(),
        }),
        (JobState::Discarded | JobState::Cancelled, _, Some(at)) => events.push(Event {
            at,
            kind: "ended",
            title: job.state.as_str().into(),
            detail: None,
            step: None,
            process: None,
        }),
        _ => {}
    }
    // Stable: an attempt's failure and the history entry written in the same instant keep
    // their recorded order.
    events.sort_by_key(|e| e.at);
    events
}

fn timeline(job: &JobRecord, now: Timestamp) -> Markup {
    html! {
        ol.timeline {
            @for event in events(job) {
                li class={ "event event-" (event.kind) } {
                    div.event-head {
                        strong { (event.title) }
                        " " (format::when(event.at, now))
                    }
                    @if let Some(step) = &event.step { div.muted { "step " span.mono { (step) } } }
                    @if let Some(process) = &event.process { div.muted { "on " span.mono { (process) } } }
                    @if let Some(detail) = &event.detail {
                        @if event.kind == "failed" { pre.detail { (detail) } } @else { div.muted { (detail) } }
                    }
                }
            }
        }
    }
}

fn fields(job: &JobRecord, now: Timestamp) -> Markup {
    html! {
        dl.fields {
            dt { "id" } dd.mono { (job.id) }
            dt { "unique key" } dd.mono { (job.unique_key.as_deref().unwrap_or("–")) }
            dt { "created" } dd { (format::when(job.created_at, now)) }
            dt { "scheduled" } dd { (format::when(job.scheduled_at, now)) }
            dt { "last attempt began" } dd { (format::when_opt(job.attempted_at, now)) }
            dt { "finished" } dd { (format::when_opt(job.completed_at, now)) }
            dt { "process" } dd.mono { (job.lease_owner.as_deref().unwrap_or("–")) }
            dt { "lease" } dd {
                @match (&job.lease_owner, job.lease_expires_at) {
                    (Some(owner), Some(until)) => { span.mono { (owner) } " until " (format::when(until, now)) },
                    _ => span.muted { "–" },
                }
            }
            dt { "cancel requested" } dd { (format::when_opt(job.cancel_requested_at, now)) }
            dt { "step" } dd.mono { (job.step.as_deref().unwrap_or("–")) }
        }
    }
}
