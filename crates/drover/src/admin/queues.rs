//! Queues: their cached counts, who works them, and pause / resume.

use std::collections::BTreeMap;

use drover_core::{JobState, ProcessRecord, QueuePauseParams, QueueRecord};
use jiff::Timestamp;
use serde::Serialize;

use super::Admin;
use crate::error::Error;

/// Most queue names a pause's note lists.
const NOTE_QUEUES: usize = 20;

/// A queue as an operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueView {
    /// Queue name.
    pub name: String,
    /// Whether it is paused (for every process): its jobs wait, none is claimed.
    pub paused: bool,
    /// When it was paused.
    pub paused_at: Option<Timestamp>,
    /// Jobs per state at the last count; every state is present.
    pub counts: BTreeMap<JobState, u64>,
    /// True when a count reached the cap: those counts are lower bounds.
    pub estimated: bool,
    /// How long the oldest available job has waited, at the last count.
    pub oldest_available_age_seconds: Option<f64>,
    /// When the counts were taken (the leader refreshes them every few seconds).
    pub counted_at: Option<Timestamp>,
    /// Registered processes that work this queue and heartbeat (one silent for longer than
    /// [`SILENT_AFTER`](super::SILENT_AFTER) is not counted, although it is listed until the
    /// leader prunes it).
    pub processes: usize,
    /// Jobs it can run at once, cluster-wide: the sum of the configured concurrency of those
    /// processes (a process that did not record its concurrency counts as 0). HTTP workers
    /// declare none: they are counted in `http_workers`.
    pub concurrency: u64,
    /// HTTP workers (by name, through any server) whose latest lease request named this queue.
    pub http_workers: usize,
    /// In the answer to a pause or resume only, when no process or HTTP worker works the queue
    /// and no count has seen a job in it: the pause took effect all the same (a queue may be
    /// paused before its first job), but a misspelt name leaves the real queue running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl QueueView {
    fn new(record: QueueRecord, now: Timestamp, working: &Working) -> Self {
        let http_workers = working
            .http_workers
            .iter()
            .filter(|w| w.queues.contains(&record.name))
            .map(|w| w.name.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let working = working
            .processes
            .iter()
            .filter(|p| p.queues.contains(&record.name));
        let concurrency = working
            .clone()
            .map(|p| u64::from(p.concurrency.get(&record.name).copied().unwrap_or(0)))
            .sum();
        let processes = working.count();
        let counts = JobState::ALL
            .iter()
            .map(|&state| (state, record.count(state)))
            .collect();
        QueueView {
            paused: record.paused_at.is_some(),
            paused_at: record.paused_at,
            counts,
            estimated: record.estimated,
            oldest_available_age_seconds: record
                .oldest_available_at
                .map(|at| now.duration_since(at).as_secs_f64().max(0.0)),
            counted_at: record.counted_at,
            processes,
            concurrency,
            http_workers,
            note: None,
            name: record.name,
        }
    }
}

/// Who works the queues: the processes that heartbeat, and the HTTP workers of every server.
struct Working {
    processes: Vec<ProcessRecord>,
    http_workers: Vec<crate::remote::HttpWorkerView>,
}

impl Admin {
    /// Every queue known to the database (counted, paused, worked by a process or leased from
    /// by an HTTP worker), by name.
    pub async fn queues(&self) -> Result<Vec<QueueView>, Error> {
        let mut records: BTreeMap<String, QueueRecord> = self
            .store()
            .queue_list()
            .await?
            .into_iter()
            .map(|q| (q.name.clone(), q))
            .collect();
        let working = self.working().await?;
        let queues = working.processes.iter().flat_map(|p| p.queues.iter());
        let leased = working.http_workers.iter().flat_map(|w| w.queues.iter());
        for queue in queues.chain(leased) {
            records
                .entry(queue.clone())
                .or_insert_with(|| QueueRecord::unseen(queue));
        }
        let now = self.clock.now();
        Ok(records
            .into_values()
            .map(|record| QueueView::new(record, now, &working))
            .collect())
    }

    /// The processes that heartbeat and the HTTP workers of every server.
    async fn working(&self) -> Result<Working, Error> {
        let processes = super::heartbeating(self.store().process_list().await?);
        let http_workers = self.http_workers_of(&processes);
        Ok(Working {
            processes,
            http_workers,
        })
    }

    /// Job counts per queue and state counted now, exactly: a scan of the jobs table, for a
    /// person's `drover stats`. Everything that runs often reads [`Admin::queues`] instead.
    pub async fn exact_counts(&self) -> Result<Vec<drover_core::QueueStateCount>, Error> {
        Ok(self.store().job_count_by_queue().await?)
    }

    /// Why a pause or resume of `view` may have missed its mark, or `None` for a queue in
    /// use. A pause may come before a queue's first job (to fill it first), so a queue nobody
    /// knows is paused all the same; but a misspelt name would leave the real queue running.
    /// A queue counts as in use when a process or an HTTP worker works it or the leader's
    /// latest count (every few seconds) saw a job in it: a job enqueued a moment ago is not
    /// seen yet, which the note says.
    async fn unknown_queue_note(&self, view: &QueueView) -> Result<Option<String>, Error> {
        // A count of none is no sign of use: the counter also writes the zeros of a paused
        // queue, typo or not.
        let in_use = |q: &QueueView| {
            q.processes > 0 || q.http_workers > 0 || q.counts.values().any(|&n| n > 0)
        };
        if in_use(view) {
            return Ok(None);
        }
        let known: Vec<String> = self
            .queues()
            .await?
            .into_iter()
            .filter(|q| q.name != view.name && in_use(q))
            .map(|q| q.name)
            .collect();
        let shown = match known.len() {
            0 => "none yet".to_owned(),
            n if n > NOTE_QUEUES => format!(
                "{} and {} more",
                known[..NOTE_QUEUES].join(", "),
                n - NOTE_QUEUES
            ),
            _ => known.join(", "),
        };
        Ok(Some(format!(
            "no process or HTTP worker works queue {} and the latest count (every few seconds) \
             saw no job in it: check the name (queues in use: {shown})",
            view.name
        )))
    }

    /// Pauses `queue` for every process (`paused = true`) or resumes it.
    pub async fn set_paused(&self, queue: &str, paused: bool) -> Result<QueueView, Error> {
        drover_core::validate::check_name("queue", queue)?;
        let record = self
            .store()
            .queue_pause(QueuePauseParams {
                queue: queue.to_owned(),
                paused,
                now: self.clock.store_now(),
            })
            .await?;
        let mut view = QueueView::new(record, self.clock.now(), &self.working().await?);
        view.note = self.unknown_queue_note(&view).await?;
        Ok(view)
    }
}
