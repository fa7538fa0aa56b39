//! The job list: filters in the URL (bookmarkable; the back button works), a cursor to page
//! through any number of jobs, and actions on the selected jobs or on every job that matches.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use drover::admin::{FilterText, JobFilter};
use drover_core::{JobRecord, JobState};
use jiff::{Timestamp, ToSpan};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav};
use super::{PageError, format};
use crate::http::AppState;

/// Jobs on one page.
const PAGE: usize = 50;

/// The query string: the API's filters, plus `created_within` (a window that stays relative
/// when bookmarked) and the cursor.
#[derive(Debug, Default, Deserialize)]
pub(super) struct JobsQuery {
    state: Option<String>,
    queue: Option<String>,
    kind: Option<String>,
    args: Option<String>,
    created_within: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    finished_after: Option<String>,
    finished_before: Option<String>,
    after: Option<String>,
}

/// The windows offered for `created_within`.
const WINDOWS: [(&str, &str); 5] = [
    ("", "any time"),
    ("15m", "last 15 minutes"),
    ("1h", "last hour"),
    ("24h", "last 24 hours"),
    ("7d", "last 7 days"),
];

impl JobsQuery {
    /// The filter as the API takes it, with the window turned into a time.
    fn filter_text(&self, now: Timestamp) -> Result<FilterText, (&'static str, String)> {
        let mut created_after = self.created_after.clone();
        if let Some(window) = self.created_within.as_deref().filter(|w| !w.is_empty()) {
            let span = match window {
                "15m" => 15.minutes(),
                "1h" => 1.hour(),
                "24h" => 24.hours(),
                "7d" => 168.hours(),
                other => {
                    return Err((
                        "created_within",
                        format!("{other:?} is not one of 15m, 1h, 24h, 7d"),
                    ));
                }
            };
            let from = now
                .checked_sub(span)
                .map_err(|err| ("created_within", err.to_string()))?;
            created_after = Some(from.to_string());
        }
        Ok(FilterText {
            state: self.state.clone(),
            queue: self.queue.clone(),
            kind: self.kind.clone(),
            created_after,
            created_before: self.created_before.clone(),
            finished_after: self.finished_after.clone(),
            finished_before: self.finished_before.clone(),
            args: self.args.clone(),
        })
    }

    /// The query string of this filter with another cursor.
    fn with_after(&self, after: Option<i64>) -> String {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("state", &self.state),
            ("queue", &self.queue),
            ("kind", &self.kind),
            ("args", &self.args),
            ("created_within", &self.created_within),
            ("created_after", &self.created_after),
            ("created_before", &self.created_before),
            ("finished_after", &self.finished_after),
            ("finished_before", &self.finished_before),
        ] {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                pairs.append_pair(key, value);
            }
        }
        if let Some(after) = after {
            pairs.append_pair("after", &after.to_string());
        }
        pairs.finish()
    }
}

pub(super) async fn page(
    State(state): State<AppState>,
    Query(query): Query<JobsQuery>,
) -> Result<Response, PageError> {
    let now = Timestamp::now();
    let signed_in = state.settings.token.is_some();
    let parsed = query
        .filter_text(now)
        .map_err(|(field, message)| (field.to_owned(), message))
        .and_then(|text| {
            let filter = text.parse().map_err(|err| {
                (
                    crate::http::error::field_of(&err).to_owned(),
                    err.to_string(),
                )
            })?;
            Ok((text, filter))
        });
    let after = match query.after.as_deref().filter(|a| !a.is_empty()) {
        Some(text) => match text.parse::<i64>() {
            Ok(id) => Some(id),
            Err(_) => {
                return Ok(invalid(
                    &query,
                    "after",
                    "the cursor is not a job id",
                    signed_in,
                ));
            }
        },
        None => None,
    };
    let (text, filter) = match parsed {
        Ok(parsed) => parsed,
        Err((field, message)) => return Ok(invalid(&query, &field, &message, signed_in)),
    };
    let page = state.admin.jobs(&filter, after, PAGE).await?;
    let queues: Vec<String> = state
        .admin
        .queues()
        .await?
        .into_iter()
        .map(|q| q.name)
        .collect();
    let filter_json = serde_json::to_string(&filter_payload(&text)).unwrap_or_default();
    let body = html! {
        (filter_form(&query, &queues, None))
        div #jobs data-live {
            @if !state.settings.read_only {
                (bulk_bar(&filter, &filter_json))
            }
            (table(&page.jobs, now, !state.settings.read_only))
            @if let Some(to) = page.searched_to {
                p.searched #searched-to {
                    "Searched the jobs down to id " (to) " (a search on args, kind or times reads "
                    (format::count(drover::admin::SEARCH_BUDGET as u64)) " jobs a page, so it never times out): "
                    (page.jobs.len()) " found so far. "
                    a href={ "/jobs?" (query.with_after(Some(to))) } { "Search older jobs →" }
                }
            }
            nav.pager {
                @if after.is_some() {
                    a href={ "/jobs?" (query.with_after(None)) } { "← Newest" }
                }
                @if let Some(next) = page.next.filter(|_| page.searched_to.is_none()) {
                    a #next-page href={ "/jobs?" (query.with_after(Some(next))) } { "Older →" }
                }
                span.muted { (page.jobs.len()) " jobs on this page" }
            }
        }
    };
    Ok(layout::page("Jobs", Nav::Jobs, body, signed_in).into_response())
}

/// The page again with the filter form marking the bad field; nothing is listed.
fn invalid(query: &JobsQuery, field: &str, message: &str, signed_in: bool) -> Response {
    let body = html! {
        (filter_form(query, &[], Some((field, message))))
    };
    (
        StatusCode::BAD_REQUEST,
        layout::page("Jobs", Nav::Jobs, body, signed_in),
    )
        .into_response()
}

/// The filter as the bulk-action endpoint takes it (only the fields set).
fn filter_payload(text: &FilterText) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    for (key, value) in [
        ("state", &text.state),
        ("queue", &text.queue),
        ("kind", &text.kind),
        ("created_after", &text.created_after),
        ("created_before", &text.created_before),
        ("finished_after", &text.finished_after),
        ("finished_before", &text.finished_before),
        ("args", &text.args),
    ] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            map.insert(key.to_owned(), value.into());
        }
    }
    map
}

/// `text` as a page may show it: a control character (a NUL sent in a filter, refused) is a
/// parse error in HTML, which escaping leaves in; it is shown as U+FFFD, as browsers do.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

fn filter_form(query: &JobsQuery, queues: &[String], error: Option<(&str, &str)>) -> Markup {
    let value = |v: &Option<String>| printable(v.as_deref().unwrap_or_default());
    let bad = |field: &str| error.is_some_and(|(f, _)| f == field);
    let exact_open = [
        &query.created_after,
        &query.created_before,
        &query.finished_after,
        &query.finished_before,
    ]
    .iter()
    .any(|v| v.as_deref().is_some_and(|v| !v.is_empty()));
    html! {
        form.filters #filters method="get" action="/jobs" {
            label { "State"
                select name="state" aria-invalid=[bad("state").then_some("true")] {
                    option value="" { "any" }
                    @for s in JobState::ALL {
                        option value=(s.as_str()) selected[query.state.as_deref() == Some(s.as_str())] { (s.as_str()) }
                    }
                }
            }
            label { "Queue"
                input name="queue" list="queue-names" value=(value(&query.queue)) placeholder="any"
                    aria-invalid=[bad("queue").then_some("true")];
                datalist #queue-names { @for q in queues { option value=(q) {} } }
            }
            label { "Kind"
                input name="kind" value=(value(&query.kind)) placeholder="any"
                    aria-invalid=[bad("kind").then_some("true")];
            }
            label.wide { "Args contain (JSON)"
                input.mono name="args" value=(value(&query.args)) placeholder=r#"{"user": 7}"#
                    aria-invalid=[bad("args").then_some("true")];
            }
            label { "Created"
                select name="created_within" aria-invalid=[bad("created_within").then_some("true")] {
                    @for (key, label) in WINDOWS {
                        option value=(key) selected[query.created_within.as_deref().unwrap_or("") == key] { (label) }
                    }
                }
            }
            details.exact open[exact_open || error.is_some_and(|(f, _)| f.ends_with("_after") || f.ends_with("_before"))] {
                summary { "Exact times (RFC 3339, UTC)" }
                @for (name, label) in [("created_after", "created from"), ("created_before", "created before"),
                                        ("finished_after", "finished from"), ("finished_before", "finished before")] {
                    @let current = match name {
                        "created_after" => value(&query.created_after),
                        "created_before" => value(&query.created_before),
                        "finished_after" => value(&query.finished_after),
                        _ => value(&query.finished_before),
                    };
                    label { (label)
                        input.mono name=(name) value=(current) placeholder="2026-12-01T09:00:00Z"
                            aria-invalid=[bad(name).then_some("true")];
                    }
                }
            }
            div.buttons {
                button type="submit" { "Filter" }
                a.button.secondary href="/jobs" { "Clear" }
            }
            @if let Some((field, message)) = error {
                p.form-error role="alert" { strong { (field) } ": " (printable(message)) }
            }
        }
    }
}

fn bulk_bar(filter: &JobFilter, filter_json: &str) -> Markup {
    let filtered = *filter != JobFilter::default();
    html! {
        div.bulk #bulk data-filter=(filter_json) {
            label { input #select-page type="checkbox"; " select this page" }
            @if filtered {
                label { input #select-matching type="checkbox"; " all jobs that match the filter" }
            }
            span #selected-count.muted { "none selected" }
            button.action type="button" data-bulk="retry" disabled { "Retry" }
            button.action type="button" data-bulk="cancel" disabled { "Cancel" }
            button.action.danger type="button" data-bulk="discard" disabled { "Discard" }
        }
    }
}

fn table(jobs: &[JobRecord], now: Timestamp, actions: bool) -> Markup {
    html! {
        @if jobs.is_empty() {
            p.empty { "No job matches." }
        } @else {
            div.scroll {
                table.jobs {
                    thead { tr {
                        @if actions { th { span.sr-only { "select" } } }
                        th.num { "id" } th { "state" } th { "queue" } th { "kind" } th { "args" }
                        th.num { "attempt" } th { "created" } th { "finished / due" } th { "last error" }
                    } }
                    tbody {
                        @for job in jobs {
                            tr data-id=(job.id) data-state=(job.state.as_str()) {
                                @if actions {
                                    td { input.pick type="checkbox" value=(job.id) aria-label={ "select job " (job.id) }; }
                                }
                                td.num { a href={ "/jobs/" (job.id) } { (job.id) } }
                                td { (state_badge(job.state)) }
                                td { (job.queue) }
                                td.mono { (job.kind) }
                                td.mono.args { (format::clip(job.args.get(), 60)) }
                                td.num { (job.attempt) "/" (job.max_attempts) }
                                td { (format::when(job.created_at, now)) }
                                td {
                                    @match (job.completed_at, job.state) {
                                        (Some(at), _) => (format::when(at, now)),
                                        (None, JobState::Scheduled | JobState::Retryable) => (format::when(job.scheduled_at, now)),
                                        _ => span.muted { "–" },
                                    }
                                }
                                @match (job.errors.last(), job.state) {
                                    // A later attempt succeeded: the error is history, not news.
                                    (Some(error), JobState::Completed) => td.muted title="an earlier attempt's error; a later one completed" {
                                        "attempt " (error.attempt) ": " (format::clip(&error.message, 60))
                                    },
                                    (Some(error), _) => td.error-text {
                                        "attempt " (error.attempt) ": " (format::clip(&error.message, 60))
                                    },
                                    (None, _) => td {},
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A job state as a coloured badge.
pub(super) fn state_badge(state: JobState) -> Markup {
    html! { span class={ "badge state-" (state.as_str()) } { (state.as_str()) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: i64, state: &str, errors: &str) -> JobRecord {
        serde_json::from_str(&format!(
            r#"{{"id":{id},"queue":"default","kind":"x","args":{{}},"state":"{state}",
            "priority":0,"attempt":2,"max_attempts":3,"delivery":"at-least-once",
            "unique_key":null,"scheduled_at":"2026-12-06T10:00:00Z",
            "created_at":"2026-12-06T10:00:00Z","attempted_at":null,"completed_at":null,
            "lease_owner":null,"lease_expires_at":null,"cancel_requested_at":null,"step":null,
            "errors":{errors},"history":[]}}"#
        ))
        .expect("a job record")
    }

    #[test]
    fn a_control_character_sent_in_a_filter_is_not_echoed_into_the_page() {
        let query: JobsQuery =
            serde_json::from_value(serde_json::json!({"queue": "a\u{0}b"})).expect("a query");
        let html = filter_form(&query, &[], Some(("queue", "bad \u{0}"))).into_string();
        assert!(!html.contains('\u{0}'), "{html}");
        assert!(html.contains("value=\"a\u{FFFD}b\""), "{html}");
    }

    #[test]
    fn an_earlier_attempts_error_is_shown_muted_on_a_completed_job() {
        let error = r#"[{"attempt":1,"at":"2026-12-06T10:00:01Z","message":"card declined"}]"#;
        let jobs = [
            job(1, "completed", error),
            job(2, "retryable", error),
            job(3, "completed", "[]"),
        ];
        let html = table(&jobs, "2026-12-06T10:01:00Z".parse().unwrap(), false).into_string();
        let rows: Vec<&str> = html.split("<tr data-id=").skip(1).collect();
        assert_eq!(rows.len(), 3);
        assert!(rows[0].contains(r#"<td class="muted" title="an earlier attempt's error; a later one completed">attempt 1: card declined</td>"#), "{}", rows[0]);
        assert!(
            rows[1].contains(r#"<td class="error-text">attempt 1: card declined</td>"#),
            "{}",
            rows[1]
        );
        assert!(!rows[2].contains("attempt 1"), "{}", rows[2]);
    }
}
