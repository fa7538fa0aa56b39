//! Finishing and claiming in one transaction ([`Store::job_finish_and_claim`]): the outcomes
//! of the last batch and the claims of the next share one commit, so a drain makes one durable
//! commit per batch instead of two.
//!
//! `BEGIN`, the completions, each claim's promotion and claim, and `COMMIT` go to the server
//! together (pipelined): one round trip. The completions come first — the order that cannot
//! deadlock against another process doing the same, since a claim only takes rows nobody has
//! locked (`SKIP LOCKED`) while a completion waits for its own rows only. A deadlock with
//! anything else (a heartbeat renewing the same rows) rolls it all back, and the store tries
//! again.
//!
//! [`Store::job_finish_and_claim`]: drover_core::Store::job_finish_and_claim

use drover_core::{ClaimResult, JobClaimParams, JobOutcome};
use jiff::Timestamp;
use tokio_postgres::types::ToSql;

use crate::error::DbError;
use crate::finish::{self, FINISH, FINISH_COMPLETED, FinishArgs, Finished, Seen};
use crate::jobs::{self, CLAIM, PROMOTE};
use crate::session::Db;
use crate::time::micros;

/// Records `outcomes`, then makes `claims`, in one pipelined transaction. Runs outside any
/// transaction.
pub(crate) async fn finish_and_claim(
    db: &Db<'_>,
    channel: &str,
    outcomes: &[JobOutcome],
    claims: &[JobClaimParams],
    now: Option<Timestamp>,
) -> Result<(Finished, Vec<ClaimResult>), DbError> {
    // Prepared first (from the connection's cache after the first call): a prepare between the
    // pipelined requests would send them out of order.
    let args = FinishArgs::new(outcomes);
    let completions_only = args.completions_only();
    let finish = db
        .prepare(if completions_only {
            FINISH_COMPLETED
        } else {
            FINISH
        })
        .await?;
    let promote = db.prepare(PROMOTE).await?;
    let claim = db.prepare(CLAIM).await?;

    let (steps, messages) = args.texts();
    let finish_params: Vec<&(dyn ToSql + Sync)> = if completions_only {
        vec![&args.ids, &args.tokens, &now]
    } else {
        vec![
            &args.ids,
            &args.tokens,
            &args.kinds,
            &steps,
            &messages,
            &args.delays,
            &now,
            &channel,
        ]
    };
    // (token, limit, lease) of each claim.
    let claim_args: Vec<(i64, i64, i64)> = claims
        .iter()
        .map(|c| {
            (
                fastrand::i64(1..i64::MAX),
                i64::try_from(c.limit).unwrap_or(i64::MAX),
                micros(c.lease),
            )
        })
        .collect();
    let promote_params: Vec<[&(dyn ToSql + Sync); 2]> = claims
        .iter()
        .map(|c| [&c.queue as _, &c.now as _])
        .collect();
    let claim_params: Vec<[&(dyn ToSql + Sync); 6]> = claims
        .iter()
        .zip(&claim_args)
        .map(|(c, (token, limit, lease))| {
            [
                &c.queue as _,
                limit as _,
                &c.owner as _,
                token as _,
                lease as _,
                &c.now as _,
            ]
        })
        .collect();

    let client = db.client();
    let claim_calls = claims.iter().enumerate().map(|(i, _)| {
        let promote = &promote;
        let claim = &claim;
        let promote_params = &promote_params[i];
        let claim_params = &claim_params[i];
        async move {
            tokio::join!(
                biased;
                client.query_one(promote, promote_params),
                client.query(claim, claim_params),
            )
        }
    });
    // Each request is sent when its future is first polled, and both `biased` joins and
    // `join_all` poll in order. When a statement fails, the ones after it fail too and COMMIT
    // rolls the transaction back.
    let (begin, finished, claimed, commit) = tokio::join!(
        biased;
        client.batch_execute("BEGIN"),
        async {
            if outcomes.is_empty() {
                Ok(Vec::new())
            } else {
                client.query(&finish, &finish_params).await
            }
        },
        futures_util::future::join_all(claim_calls),
        client.batch_execute("COMMIT"),
    );
    begin?;
    let finished = finished?;
    let mut results = Vec::with_capacity(claims.len());
    let mut claimed_rows = Vec::with_capacity(claims.len());
    for (promoted, rows) in claimed {
        claimed_rows.push((promoted?.get::<_, Option<Timestamp>>(1), rows?));
    }
    commit?;
    let seen = if completions_only {
        finish::completions_seen(db, &args, &finished).await?
    } else {
        Seen::of_finish(&finished)?
    };
    let finished = finish::finish_results(outcomes, &args.sent, &seen);
    for ((next_due_at, rows), (token, _, _)) in claimed_rows.into_iter().zip(&claim_args) {
        results.push(jobs::claim_result(rows, *token, next_due_at)?);
    }
    Ok((finished, results))
}
