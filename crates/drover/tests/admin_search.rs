//! A search on columns no index covers reads a bounded slice of the table per page, says where
//! it stopped, and its cursor walks every job exactly once. (The window itself, `above_id`, is
//! a conformance case on both backends; this is the admin logic above it.)

use std::sync::Arc;

use drover::Admin;
use drover::JobDefaults;
use drover::admin::{FilterText, JobFilter};
use drover_core::{DynStore, JobId, NewJob, Store, SystemClock};
use drover_sqlite::{SqliteConfig, SqliteStore};

async fn filled(dir: &tempfile::TempDir, n: usize) -> (DynStore, Vec<JobId>) {
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("search.db"))).unwrap();
    store.migrate().await.unwrap();
    let store: DynStore = Arc::new(store);
    let admin = admin(&store, 1_000);
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| {
            let args = if i % 400 == 0 {
                format!(r#"{{"n":{i},"tag":"rare"}}"#)
            } else {
                format!(r#"{{"n":{i}}}"#)
            };
            NewJob::new(if i % 2 == 0 { "even" } else { "odd" }, args)
        })
        .collect();
    let mut ids = Vec::new();
    for chunk in jobs.chunks(1000) {
        ids.extend(
            admin
                .client()
                .insert(chunk.to_vec())
                .await
                .unwrap()
                .into_iter()
                .map(|j| j.id),
        );
    }
    (store, ids)
}

fn admin(store: &DynStore, budget: JobId) -> Admin {
    Admin::new(
        store.clone(),
        JobDefaults::new(
            Arc::new(SystemClock),
            Default::default(),
            Default::default(),
        ),
        Vec::new(),
    )
    .with_search_budget(budget)
}

fn filter(args: &str) -> JobFilter {
    FilterText {
        args: Some(args.into()),
        ..Default::default()
    }
    .parse()
    .unwrap()
}

#[tokio::test]
async fn a_rare_value_is_searched_a_budget_at_a_time_and_every_match_is_found_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = filled(&dir, 5_000).await;
    let admin = admin(&store, 1_000);
    let rare = filter(r#"{"tag": "rare"}"#);
    let mut found = Vec::new();
    let mut partial_pages = 0;
    let mut after = None;
    loop {
        let page = admin.jobs(&rare, after, 50).await.unwrap();
        if let Some(to) = page.searched_to {
            partial_pages += 1;
            assert_eq!(
                page.next,
                Some(to),
                "the cursor continues where the search stopped"
            );
            assert!(
                page.jobs.iter().all(|j| j.id >= to),
                "a job below where it stopped"
            );
        }
        found.extend(page.jobs.iter().map(|j| j.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let expected: Vec<JobId> = ids.iter().copied().step_by(400).rev().collect();
    assert_eq!(found, expected, "every match once, newest first");
    assert!(
        partial_pages >= 4,
        "5,000 ids at 1,000 a page: {partial_pages} partial pages"
    );
}

#[tokio::test]
async fn a_common_value_fills_the_page_without_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = filled(&dir, 3_000).await;
    let admin = admin(&store, 1_000);
    let page = admin
        .jobs(&filter(r#"{"n": 2998}"#), None, 10)
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 1);
    assert_eq!(page.jobs[0].id, ids[2998]);
    let even = FilterText {
        kind: Some("even".into()),
        ..Default::default()
    }
    .parse()
    .unwrap();
    let page = admin.jobs(&even, None, 100).await.unwrap();
    assert_eq!(page.jobs.len(), 100);
    assert_eq!(page.searched_to, None);
    assert_eq!(page.next, Some(page.jobs[99].id));
    assert!(page.jobs.iter().all(|j| j.kind == "even"));
}
