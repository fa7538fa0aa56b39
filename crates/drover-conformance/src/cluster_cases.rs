//! Cases of the cluster's shared state: leader election, the process registry, and cron fires.

use std::time::Duration;

use drover_core::{DynStore, JobListParams, NewJob};
use jiff::Timestamp;

use crate::cases::{at, get, t0};

fn elect_params(who: &str, now: Timestamp) -> drover_core::LeaderElectParams {
    drover_core::LeaderElectParams {
        name: "default".into(),
        leader_id: who.into(),
        ttl: Duration::from_secs(10),
        now: Some(now),
    }
}

/// One term at a time: a second candidate loses while the term is unexpired, wins after it
/// expires with a higher term, and the old leader can no longer extend its term.
pub async fn leader_election_grants_one_term_at_a_time(store: DynStore) {
    let a = store
        .leader_attempt_elect(elect_params("a", t0()))
        .await
        .unwrap()
        .expect("a is elected");
    assert_eq!(a.expires_at, at(10));
    assert!(
        store
            .leader_attempt_elect(elect_params("b", at(5)))
            .await
            .unwrap()
            .is_none()
    );
    let renewed = store
        .leader_attempt_reelect(drover_core::LeaderReelectParams {
            name: "default".into(),
            leader_id: "a".into(),
            term: a.term,
            ttl: Duration::from_secs(10),
            now: Some(at(8)),
        })
        .await
        .unwrap()
        .expect("a extends its term");
    assert_eq!(renewed.expires_at, at(18));
    assert!(
        store
            .leader_attempt_elect(elect_params("b", at(17)))
            .await
            .unwrap()
            .is_none()
    );
    let b = store
        .leader_attempt_elect(elect_params("b", at(18)))
        .await
        .unwrap()
        .expect("b takes over once a's term expired");
    assert!(b.term > a.term);
    let stale = store
        .leader_attempt_reelect(drover_core::LeaderReelectParams {
            name: "default".into(),
            leader_id: "a".into(),
            term: a.term,
            ttl: Duration::from_secs(10),
            now: Some(at(19)),
        })
        .await
        .unwrap();
    assert!(stale.is_none(), "a lost its term");
    let leader = store
        .leader_get("default".into(), Some(at(20)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((leader.leader_id.as_str(), leader.term), ("b", b.term));
    assert!(
        store
            .leader_get("default".into(), Some(at(100)))
            .await
            .unwrap()
            .is_none(),
        "an expired term shows no leader"
    );
}

/// A resignation hands over at once, and only the holder of the term can resign.
pub async fn leader_resign_hands_over_at_once(store: DynStore) {
    let a = store
        .leader_attempt_elect(elect_params("a", t0()))
        .await
        .unwrap()
        .unwrap();
    let wrong = drover_core::LeaderResignParams {
        name: "default".into(),
        leader_id: "b".into(),
        term: a.term,
    };
    assert!(!store.leader_resign(wrong).await.unwrap());
    let right = drover_core::LeaderResignParams {
        name: "default".into(),
        leader_id: "a".into(),
        term: a.term,
    };
    assert!(store.leader_resign(right).await.unwrap());
    let b = store
        .leader_attempt_elect(elect_params("b", at(1)))
        .await
        .unwrap()
        .expect("b is elected right after the resignation");
    assert_eq!(b.term, a.term + 1);
}

/// Processes register, heartbeat, list, and are pruned when silent; each heartbeat replaces
/// the HTTP workers a process lists.
pub async fn process_registry_tracks_heartbeats(store: DynStore) {
    let worker = |name: &str, running| drover_core::HttpWorkerRecord {
        name: name.into(),
        queues: vec!["py".into()],
        running,
        last_seen: at(2),
    };
    let nightly = drover_core::CronSignature {
        name: "nightly".into(),
        schedule: "0 3 * * *".into(),
        timezone: Some("Europe/Berlin".into()),
    };
    let upsert = |id: &str, now, http_workers| drover_core::ProcessUpsertParams {
        id: id.into(),
        host: "host-1".into(),
        pid: 42,
        queues: vec!["default".into(), "mail".into()],
        concurrency: Default::default(),
        version: "0.1.0".into(),
        http_workers,
        cron: if id == "a" {
            vec![nightly.clone()]
        } else {
            vec![]
        },
        draining: false,
        now: Some(now),
    };
    let first = vec![worker("w1", 3), worker("w2", 0)];
    store
        .process_upsert(upsert("a", t0(), first.clone()))
        .await
        .unwrap();
    store
        .process_upsert(upsert("b", at(1), vec![]))
        .await
        .unwrap();
    assert_eq!(store.process_list().await.unwrap()[0].http_workers, first);
    store
        .process_upsert(upsert("a", at(30), vec![worker("w2", 1)]))
        .await
        .unwrap();
    let list = store.process_list().await.unwrap();
    assert_eq!(list[0].http_workers, vec![worker("w2", 1)]);
    assert!(list[1].http_workers.is_empty());
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].id, "a");
    assert_eq!(list[0].started_at, t0());
    assert_eq!(list[0].heartbeat_at, at(30));
    assert_eq!(
        list[0].queues,
        vec!["default".to_owned(), "mail".to_owned()]
    );
    assert_eq!(list[0].pid, 42);
    assert_eq!(list[0].draining_since, None);
    // The schedules each fires while it leads: a process with none says so.
    assert_eq!(list[0].cron, Some(vec![nightly.clone()]));
    assert_eq!(list[1].cron, Some(vec![]));
    // Its shutdown began: the first heartbeat that says so records when, later ones keep it.
    for now in [at(31), at(33)] {
        store
            .process_upsert(drover_core::ProcessUpsertParams {
                draining: true,
                ..upsert("a", now, vec![])
            })
            .await
            .unwrap();
    }
    let list = store.process_list().await.unwrap();
    assert_eq!(list[0].draining_since, Some(at(31)));
    assert_eq!(list[0].heartbeat_at, at(33));
    assert_eq!(list[1].draining_since, None);
    let pruned = store
        .process_prune(drover_core::ProcessPruneParams {
            stale_after: Duration::from_secs(20),
            now: Some(at(35)),
        })
        .await
        .unwrap();
    assert_eq!(pruned, 1, "b was silent for 34 s");
    store.process_delete("a".into()).await.unwrap();
    assert!(store.process_list().await.unwrap().is_empty());
}

fn fence(store_leader: &str, term: i64) -> drover_core::LeaderFence {
    drover_core::LeaderFence {
        name: "default".into(),
        leader_id: store_leader.into(),
        term,
    }
}

/// A fire time is enqueued once, however often it is fired, and only by the current term.
pub async fn cron_fire_records_each_fire_time_once(store: DynStore) {
    let a = store
        .leader_attempt_elect(elect_params("a", t0()))
        .await
        .unwrap()
        .unwrap();
    let states = store
        .cron_register(drover_core::CronRegisterParams {
            names: vec!["nightly".into()],
            now: Some(t0()),
        })
        .await
        .unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].registered_at, t0());
    assert!(states[0].last_fire_at.is_none());
    let fire = |fence, fire_at, now| {
        let store = store.clone();
        async move {
            store
                .cron_fire(drover_core::CronFireParams {
                    schedule: "nightly".into(),
                    fire_at,
                    job: NewJob::new("report.build", r#"{"format":"pdf"}"#),
                    fence,
                    now: Some(now),
                })
                .await
                .unwrap()
        }
    };
    let first = fire(fence("a", a.term), at(3), at(3)).await;
    let drover_core::CronFireResult::Fired { job_id } = first else {
        panic!("first fire must enqueue: {first:?}");
    };
    assert_eq!(
        fire(fence("a", a.term), at(3), at(4)).await,
        drover_core::CronFireResult::AlreadyFired
    );
    let job = get(&store, job_id).await;
    assert_eq!(job.kind, "report.build");
    assert_eq!(job.args.value(), serde_json::json!({"format": "pdf"}));

    // Term a expires; b leads. A stale leader can no longer fire, even a new fire time.
    let b = store
        .leader_attempt_elect(elect_params("b", at(20)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        fire(fence("a", a.term), at(21), at(21)).await,
        drover_core::CronFireResult::NotLeader
    );
    assert_eq!(
        fire(fence("b", b.term), at(3), at(21)).await,
        drover_core::CronFireResult::AlreadyFired,
        "a new leader does not fire an old fire time again"
    );
    assert!(matches!(
        fire(fence("b", b.term), at(21), at(21)).await,
        drover_core::CronFireResult::Fired { .. }
    ));
    let states = store.cron_states().await.unwrap();
    assert_eq!(states[0].last_fire_at, Some(at(21)));
    let jobs = store
        .job_list(JobListParams {
            kind: Some("report.build".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 2, "two fire times, two jobs");

    // Pruning keeps each schedule's latest fire.
    let pruned = store
        .cron_prune(drover_core::CronPruneParams { before: at(1000) })
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    assert_eq!(
        store.cron_states().await.unwrap()[0].last_fire_at,
        Some(at(21))
    );
}
