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

use crate::error::DbError;
use crate::finish::{self, FinishArgs, Finished};
use crate::jobs::ClaimStatements;
use crate::session::Db;

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
    let finish = db.prepare(args.sql()).await?;
    let statements = ClaimStatements::prepare(db).await?;
    let texts = args.texts();
    let finish_params = args.params(&texts, &now, &channel);
    let client = db.client();
    let claim_calls = claims.iter().map(|params| statements.claim(client, params));
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
    let claimed = claimed.into_iter().collect::<Result<Vec<_>, _>>()?;
    commit?;
    let seen = args.seen(db, &finished).await?;
    Ok((finish::finish_results(outcomes, &args.sent, &seen), claimed))
}
