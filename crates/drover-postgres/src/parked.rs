//! Parked claims on PostgreSQL ([`drover_core::Store::job_claim_parked`]): an idle worker of
//! this process parks its claim, and the next enqueue through this store that makes a job of
//! its queue available makes the claim inside the enqueue's own transaction. The job is then
//! inserted and leased in one commit, and the worker starts it without the round trips of a
//! wake-up and a claim of its own (NOTIFY still tells other processes).

use drover_core::parked::Parked;
use drover_core::{ClaimResult, InsertedJob, JobState, NewJob};
use tokio_postgres::types::ToSql;

use crate::error::DbError;
use crate::jobs::{self, CLAIM, PROMOTE};
use crate::session::Db;
use crate::time::micros;

/// The queues where an insert made jobs available now (not scheduled, not duplicates), once
/// each.
pub(crate) fn available_queues<'a>(inserted: &[InsertedJob], jobs: &'a [NewJob]) -> Vec<&'a str> {
    let mut queues: Vec<&str> = Vec::new();
    for (result, job) in inserted.iter().zip(jobs) {
        if !result.duplicate
            && result.state == JobState::Available
            && !queues.contains(&job.queue.as_str())
        {
            queues.push(&job.queue);
        }
    }
    queues
}

/// Makes a parked claim inside the caller's transaction: the promotion and the claim,
/// pipelined (one round trip).
pub(crate) async fn claim_in_transaction(
    db: &Db<'_>,
    parked: &Parked,
) -> Result<ClaimResult, DbError> {
    let promote = db.prepare(PROMOTE).await?;
    let claim = db.prepare(CLAIM).await?;
    let params = &parked.params;
    let token = fastrand::i64(1..i64::MAX);
    let limit = i64::try_from(params.limit).unwrap_or(i64::MAX);
    let lease = micros(params.lease);
    let promote_params: [&(dyn ToSql + Sync); 2] = [&params.queue, &params.now];
    let claim_params: [&(dyn ToSql + Sync); 6] = [
        &params.queue,
        &limit,
        &params.owner,
        &token,
        &lease,
        &params.now,
    ];
    let client = db.client();
    let (promoted, claimed) = tokio::join!(
        biased;
        client.query_one(&promote, &promote_params),
        client.query(&claim, &claim_params),
    );
    let next_due_at = promoted?.get(1);
    jobs::claim_result(claimed?, token, next_due_at)
}
