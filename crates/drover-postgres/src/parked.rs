//! Parked claims on PostgreSQL ([`drover_core::Store::job_claim_parked`]): an idle worker of
//! this process parks its claim, and the next enqueue through this store that makes a job of
//! its queue available makes the claim inside the enqueue's own transaction. The job is then
//! inserted and leased in one commit, and the worker starts it without the round trips of a
//! wake-up and a claim of its own (NOTIFY still tells other processes).

use drover_core::parked::Parked;
use drover_core::{ClaimResult, InsertedJob, JobState, NewJob};
use jiff::Timestamp;
use tokio_postgres::types::ToSql;

use crate::error::DbError;
use crate::insert::{InsertSql, PlainColumns};
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
    let args = ClaimArgs::new(parked);
    let (promote_params, claim_params) = (args.promote_params(parked), args.claim_params(parked));
    let client = db.client();
    let (promoted, claimed) = tokio::join!(
        biased;
        client.query_one(&promote, &promote_params),
        client.query(&claim, &claim_params),
    );
    let next_due_at = promoted?.get(1);
    jobs::claim_result(claimed?, args.token, next_due_at)
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
    // Prepared first (from the connection's cache after the first call): a prepare between the
    // pipelined requests would send them out of order.
    let insert = db.prepare(&sql.plain).await?;
    let promote = db.prepare(PROMOTE).await?;
    let claim = db.prepare(CLAIM).await?;
    let columns = PlainColumns::new(jobs);
    let insert_params = columns.params(&now);
    let claim_args: Vec<ClaimArgs> = claims.iter().map(ClaimArgs::new).collect();
    let client = db.client();
    let claim_calls = claims.iter().zip(&claim_args).map(|(parked, args)| {
        let (promote, claim) = (&promote, &claim);
        async move {
            let (promote_params, claim_params) =
                (args.promote_params(parked), args.claim_params(parked));
            tokio::join!(
                biased;
                client.query_one(promote, &promote_params),
                client.query(claim, &claim_params),
            )
        }
    });
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
    let mut made = Vec::with_capacity(claims.len());
    for ((promoted, rows), args) in claimed.into_iter().zip(&claim_args) {
        let next_due_at = promoted?.get(1);
        made.push((rows?, args.token, next_due_at));
    }
    commit?;
    let results = made
        .into_iter()
        .map(|(rows, token, next_due_at)| jobs::claim_result(rows, token, next_due_at))
        .collect::<Result<_, _>>()?;
    Ok((inserted, results))
}

/// The values of one claim's parameters that are not in its [`Parked`] params.
struct ClaimArgs {
    token: i64,
    limit: i64,
    lease: i64,
}

impl ClaimArgs {
    fn new(parked: &Parked) -> Self {
        Self {
            token: fastrand::i64(1..i64::MAX),
            limit: i64::try_from(parked.params.limit).unwrap_or(i64::MAX),
            lease: micros(parked.params.lease),
        }
    }

    fn promote_params<'a>(&'a self, parked: &'a Parked) -> [&'a (dyn ToSql + Sync); 2] {
        [&parked.params.queue, &parked.params.now]
    }

    fn claim_params<'a>(&'a self, parked: &'a Parked) -> [&'a (dyn ToSql + Sync); 6] {
        let params = &parked.params;
        [
            &params.queue,
            &self.limit,
            &params.owner,
            &self.token,
            &self.lease,
            &params.now,
        ]
    }
}
