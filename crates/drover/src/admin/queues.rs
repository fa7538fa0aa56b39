//! Queues: their cached counts, who works them, and pause / resume.

use std::collections::BTreeMap;

use drover_core::{JobState, ProcessRecord, QueuePauseParams, QueueRecord};
use jiff::Timestamp;
use serde::Serialize;

use super::Admin;
use crate::error::Error;

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
    /// Registered processes that work this queue.
    pub processes: usize,
    /// Jobs it can run at once, cluster-wide: the sum of the configured concurrency of the
    /// registered processes that work it (a process that did not record its concurrency counts
    /// as 0).
    pub concurrency: u64,
}

impl QueueView {
    fn new(record: QueueRecord, now: Timestamp, processes: &[ProcessRecord]) -> Self {
        let working = processes.iter().filter(|p| p.queues.contains(&record.name));
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
            name: record.name,
        }
    }
}

impl Admin {
    /// Every queue known to the database (counted, paused, or worked by a process), by name.
    pub async fn queues(&self) -> Result<Vec<QueueView>, Error> {
        let mut records: BTreeMap<String, QueueRecord> = self
            .store()
            .queue_list()
            .await?
            .into_iter()
            .map(|q| (q.name.clone(), q))
            .collect();
        let processes = self.store().process_list().await?;
        for process in &processes {
            for queue in &process.queues {
                records.entry(queue.clone()).or_insert_with(|| QueueRecord {
                    name: queue.clone(),
                    paused_at: None,
                    counts: BTreeMap::new(),
                    estimated: false,
                    oldest_available_at: None,
                    counted_at: None,
                });
            }
        }
        let now = self.clock.now();
        Ok(records
            .into_values()
            .map(|record| QueueView::new(record, now, &processes))
            .collect())
    }

    /// Job counts per queue and state counted now, exactly: a scan of the jobs table, for a
    /// person's `drover stats`. Everything that runs often reads [`Admin::queues`] instead.
    pub async fn exact_counts(&self) -> Result<Vec<drover_core::QueueStateCount>, Error> {
        Ok(self.store().job_count_by_queue().await?)
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
        let processes = self.store().process_list().await?;
        Ok(QueueView::new(record, self.clock.now(), &processes))
    }
}
