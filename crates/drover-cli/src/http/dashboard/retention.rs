//! Retention: each policy (the built-in jobs archive and every `[[retention]]`), its last runs
//! and the rows they moved.

use axum::extract::State;
use jiff::Timestamp;
use maud::html;

use super::layout::{self, Nav};
use super::{PageResult, format};
use crate::http::AppState;

pub(super) async fn page(State(state): State<AppState>) -> PageResult {
    let policies = state.admin.retention().await?;
    let now = Timestamp::now();
    let body = html! {
        div #retention data-live {
            @if policies.is_empty() {
                section.card { p.muted { "No retention policy is enabled." } }
            }
            @for policy in &policies {
                section.card data-policy=(policy.name) {
                    h2 { (policy.name) }
                    p {
                        "Moves rows of " code { (policy.table) } " older than " strong { (policy.age) }
                        " to " code { (policy.archive_table) } ", on " span.mono { (policy.schedule) }
                        @if let Some(next) = policy.next_run_at { " (next " (format::when(next, now)) ")" }
                        "."
                    }
                    @if policy.runs.is_empty() {
                        p.muted { "No run recorded yet." }
                    } @else {
                        div.scroll {
                            table.runs {
                                thead { tr { th { "started" } th { "took" } th { "trigger" } th.num { "rows moved" } th { "result" } } }
                                tbody {
                                    @for run in &policy.runs {
                                        tr {
                                            td { (format::when(run.started_at, now)) }
                                            td { (format::seconds(run.finished_at.duration_since(run.started_at).as_secs_f64().max(0.0))) }
                                            td { (run.trigger) }
                                            td.num { (format::count(run.rows_moved)) }
                                            td { @match &run.error {
                                                Some(error) => { span.badge.state-discarded title=(error) { "failed" } " " span.error-text { (format::clip(error, 80)) } },
                                                None => span.badge.state-completed { "ok" },
                                            } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(
        "Retention",
        Nav::Retention,
        body,
        state.settings.token.is_some(),
    ))
}
