//! Sending wake-ups: `pg_notify` inside the transaction that made work available, so that
//! listeners hear of it exactly when it commits (and never when it rolls back).
//!
//! A payload is a queue name or a short tag, never job data: notifications are limited to
//! 8,000 bytes (ansible/awx#12999), and listeners do not read payloads anyway. PostgreSQL folds
//! identical notifications of one transaction into one, and we send at most a few distinct ones
//! per statement, however many jobs it touched.

use crate::error::DbError;
use crate::session::Db;

/// Most distinct payloads in one notification statement; beyond it, one [`MANY`] stands for all.
const MAX_PAYLOADS: usize = 8;

/// Payload when many queues woke at once. `#` cannot appear in a queue name.
const MANY: &str = "#many";

/// Payload of a resignation: electors of other processes try at once.
pub(crate) const LEADER: &str = "#leader";

/// Distinct payloads for these queue names.
pub(crate) fn payloads<'a>(queues: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for queue in queues {
        if !out.iter().any(|q| q == queue) {
            if out.len() == MAX_PAYLOADS {
                return vec![MANY.to_owned()];
            }
            out.push(queue.to_owned());
        }
    }
    out
}

/// Queues a notification per payload; delivered when the transaction commits.
pub(crate) async fn notify(db: &Db<'_>, channel: &str, payloads: &[String]) -> Result<(), DbError> {
    if payloads.is_empty() {
        return Ok(());
    }
    db.execute(
        "SELECT count(pg_notify($1, p)) FROM unnest($2::text[]) AS p",
        &[&channel, &payloads],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_distinct_and_few() {
        assert_eq!(payloads(["a", "b", "a"]), vec!["a", "b"]);
        assert!(payloads([]).is_empty());
        let many: Vec<String> = (0..20).map(|i| format!("q{i}")).collect();
        assert_eq!(payloads(many.iter().map(String::as_str)), vec![MANY]);
        let eight: Vec<String> = (0..8).map(|i| format!("q{i}")).collect();
        assert_eq!(payloads(eight.iter().map(String::as_str)).len(), 8);
    }
}
