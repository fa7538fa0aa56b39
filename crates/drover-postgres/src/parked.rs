//! Parked claims on PostgreSQL ([`drover_core::Store::job_claim_parked`]): an idle worker of
//! this process parks its claim, and the next enqueue through this store that makes a job of
//! its queue available makes the claim inside the enqueue's own transaction. The job is then
//! inserted and leased in one commit, and the worker starts it without the round trips of a
//! wake-up and a claim of its own (NOTIFY still tells other processes).

use drover_core::parked::Parked;
use drover_core::{ClaimResult, InsertedJob, JobState, NewJob};
use jiff::Timestamp;

use crate::error::DbError;
use crate::insert::{InsertSql, PlainColumns};
use crate::jobs::ClaimStatements;
use crate::session::Db;

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
    ClaimStatements::prepare(db)
        .await?
        .claim(db.client(), &parked.params)
        .await
}

/// Inserts [plain](crate::insert::is_plain) jobs and makes the parked `claims` in one
/// transaction, every statement pipelined: `BEGIN`, the insert, each claim's promotion and
/// claim, and `COMMIT` go to the server together, one round trip for what would otherwise
/// take five (`BEGIN`, ids, insert, claim, `COMMIT`). This is an idle worker's path from
/// enqueue to start. When a statement fails, the ones after it fail too and `COMMIT` rolls
/// the transaction back. Runs outside any transaction.
pub(crate) async fn insert_plain_and_claim(
    db: &Db<'_>,
    sql: &InsertSql,
    jobs: &[NewJob],
    now: Option<Timestamp>,
    claims: &[Parked],
) -> Result<(Vec<InsertedJob>, Vec<ClaimResult>), DbError> {
    // Prepared first: a prepare between the pipelined requests would send them out of order.
    let insert = db.prepare(&sql.plain).await?;
    let statements = ClaimStatements::prepare(db).await?;
    let columns = PlainColumns::new(jobs);
    let insert_params = columns.params(&now);
    let client = db.client();
    let claim_calls = claims
        .iter()
        .map(|parked| statements.claim(client, &parked.params));
    // Each request is sent when its future is first polled, in order (`biased`, `join_all`).
    let (begin, inserted, claimed, commit) = tokio::join!(
        biased;
        client.batch_execute("BEGIN"),
        client.query(&insert, &insert_params),
        futures_util::future::join_all(claim_calls),
        client.batch_execute("COMMIT"),
    );
    begin?;
    let inserted = columns.inserted(&inserted?)?;
    let claimed = claimed.into_iter().collect::<Result<Vec<_>, _>>()?;
    commit?;
    Ok((inserted, claimed))
}
