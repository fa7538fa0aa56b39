//! Processes: every registered `drover` process, its host, pid, queues, start and last
//! heartbeat, and which one leads; and the HTTP workers that lease through any of them.

use axum::extract::State;
use jiff::Timestamp;
use maud::html;

use super::layout::{self, Nav};
use super::{PageResult, format};
use crate::http::AppState;

pub(super) async fn page(State(state): State<AppState>) -> PageResult {
    let cluster = state.admin.cluster().await?;
    let now = Timestamp::now();
    let leader = cluster.leader.as_ref();
    let body = html! {
        div #processes data-live {
            div.stats {
                (layout::stat("processes", html! { (cluster.processes.len()) }))
                (layout::stat("leader", html! {
                    @match leader {
                        Some(l) => span.mono title=(l.leader_id) { (super::overview::short_process(&l.leader_id)) },
                        None => span.warn { "none" },
                    }
                }))
                (layout::stat("term", html! { @match leader { Some(l) => (l.term), None => "–" } }))
                (layout::stat("term ends", html! { @match leader { Some(l) => (format::when(l.expires_at, now)), None => "–" } }))
            }
            section.card {
                @if cluster.processes.is_empty() {
                    p.muted { "No process is registered: start one with " code { "drover serve" } " or " code { "drover worker" } "." }
                } @else {
                    div.scroll {
                        table.processes {
                            thead { tr {
                                th { "host" } th.num { "pid" } th { "queues" } th { "version" }
                                th { "started" } th { "last seen" } th { "role" }
                            } }
                            tbody {
                                @for p in &cluster.processes {
                                    @let leads = leader.is_some_and(|l| l.leader_id == p.id);
                                    tr data-process=(p.id) {
                                        td.mono title=(p.id) { (p.host) }
                                        td.num { (p.pid) }
                                        td { @for (i, q) in p.queues.iter().enumerate() {
                                            @if i > 0 { ", " } a href={ "/jobs?queue=" (q) } { (q) }
                                        } }
                                        td { (p.version) }
                                        td { (format::when(p.started_at, now)) }
                                        td { (format::when(p.heartbeat_at, now)) }
                                        td {
                                            @if cluster.is_silent(p) {
                                                span.badge.silent title={ "no heartbeat since " (format::exact(p.heartbeat_at)) ": killed, or cut off from the database; its expired leases are rescued, and the leader removes it after a minute" } { "silent" }
                                            } @else if let Some(since) = p.draining_since {
                                                span.badge.draining title={ "shutting down since " (format::exact(since)) ": claims nothing more, finishes what it runs" } { "draining " (format::when(since, now)) }
                                            } @else if leads { span.badge.leader { "leader" } } @else { span.muted { "worker" } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    p.note { "Processes heartbeat every 5 s; the leader removes one silent for a minute (marked silent after 20 s). A draining process has begun its graceful shutdown: it claims nothing more, finishes what it runs, then leaves this list." }
                }
            }
            (http_workers(&cluster.http_workers, now))
        }
    };
    Ok(layout::page(
        "Processes",
        Nav::Processes,
        body,
        state.settings.token.is_some(),
    ))
}

/// The HTTP workers (the Python client's, or any other language's) that lease through any
/// server: they have no process row, and the queues they work would otherwise look unworked.
fn http_workers(workers: &[drover::remote::HttpWorkerView], now: Timestamp) -> maud::Markup {
    html! {
        section.card #http-workers {
            h2 { "HTTP workers" }
            @if workers.is_empty() {
                p.muted { "No HTTP worker has leased through any server in the last minute." }
            } @else {
                div.scroll {
                    table.processes {
                        thead { tr {
                            th { "name" } th { "queues" } th.num { "running" } th { "last lease request" } th { "through server" }
                        } }
                        tbody {
                            @for w in workers {
                                tr data-http-worker=(w.name) {
                                    td.mono { (w.name) }
                                    td { @for (i, q) in w.queues.iter().enumerate() {
                                        @if i > 0 { ", " } a href={ "/jobs?queue=" (q) } { (q) }
                                    } }
                                    td.num { (w.running) }
                                    td { (format::when(w.last_seen, now)) }
                                    td.mono title=(w.server) { (super::overview::short_process(&w.server)) }
                                }
                            }
                        }
                    }
                }
                p.note { "Another server's workers are as of its last heartbeat (every 5 s); a worker that talks to several servers is listed once for each." }
            }
        }
    }
}
