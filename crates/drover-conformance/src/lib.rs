//! The [`Store`](drover_core::Store) conformance suite: every case is written once, here, and
//! run against every backend through [`conformance_suite!`]. Backend differences belong inside a
//! case, never in a fork of it.
//!
//! Cases pin the time (`now: Some(..)`) so that lease expiry, backoff and scheduled jobs are
//! tested without sleeping.

pub mod activity_cases;
pub mod admin_cases;
pub mod archive_cases;
pub mod background;
pub mod capacity;
pub mod cases;
pub mod cluster_cases;
pub mod finish_claim;
pub mod parked_cases;
pub mod pg_server;

/// Instantiates one `#[tokio::test]` per conformance case. `$make` is an expression evaluating
/// to a future of `(DynStore, guard)`: a fresh, migrated store, and anything that must live as
/// long as the test (a temporary directory, a schema to drop).
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@cases cases; $make;
            migrate_is_idempotent,
            insert_then_get_round_trips_every_field,
            bulk_insert_returns_ids_in_order,
            unique_key_dedupes_only_while_unfinished,
            claim_takes_highest_priority_then_oldest,
            claim_respects_limit_and_queue,
            scheduled_jobs_wait_until_due,
            due_jobs_of_every_queue_are_promoted,
            completion_is_fenced_by_the_lease_token,
            stale_completion_after_rescue_and_reclaim_is_rejected,
            heartbeat_renews_held_leases_and_reports_lost_ones,
            failed_attempt_is_retryable_with_backoff_and_recorded,
            discard_and_cancel_outcomes_are_terminal,
            hand_back_does_not_consume_an_attempt,
            rescue_follows_delivery_and_attempts,
            cancel_pending_running_and_finished_jobs,
            operator_retry_is_recorded_and_resets_attempts,
            list_filters_and_counts,
            enqueue_wakes_subscribers
        );
        $crate::conformance_suite!(@cases cluster_cases; $make;
            leader_election_grants_one_term_at_a_time,
            leader_resign_hands_over_at_once,
            process_registry_tracks_heartbeats,
            cron_fire_records_each_fire_time_once
        );
        $crate::conformance_suite!(@cases activity_cases; $make;
            retention_runs_are_recorded_newest_first_and_bounded,
            throughput_adds_up_per_minute_across_processes,
            attempts_name_their_process_and_finished_jobs_keep_their_owner,
            processes_record_their_concurrency_per_queue
        );
        $crate::conformance_suite!(@cases archive_cases; $make;
            archive_moves_finished_rows_past_the_cutoff,
            archive_refuses_names_that_are_not_identifiers
        );
        $crate::conformance_suite!(@cases admin_cases; $make;
            actions_on_many_jobs_change_only_what_they_apply_to,
            paused_queues_give_no_jobs_until_resumed,
            cached_counts_are_refreshed_and_capped,
            finished_counts_span_slices_and_are_capped,
            empty_queues_are_forgotten_unless_paused_or_worked,
            list_filters_by_time_and_args,
            args_filters_compare_numbers_exactly,
            repeated_outcomes_are_told_apart_from_stale_ones
        );
        $crate::conformance_suite!(@cases background; $make;
            background_work_is_reported_up
        );
        $crate::conformance_suite!(@cases finish_claim; $make;
            finish_and_claim_records_outcomes_before_claiming,
            finish_and_claim_claims_for_several_queues_and_rejects_stale_outcomes,
            finish_and_claim_with_nothing_to_finish_is_a_claim
        );
        $crate::conformance_suite!(@cases parked_cases; $make;
            an_enqueue_makes_the_parked_claim_in_its_own_commit,
            only_an_enqueue_into_the_parked_queue_makes_the_claim,
            a_full_parked_claim_still_wakes_the_other_workers,
            jobs_claimed_for_a_worker_that_went_away_are_handed_back,
            closing_the_store_answers_parked_claims
        );
        $crate::conformance_suite!(@cases capacity; $make;
            slot_transitions_are_fenced_by_state_and_generation,
            reservation_assignment_keeps_the_lease_limit,
            release_and_expiry_give_leases_back,
            hand_back_returns_reservations_to_pending,
            capacity_lists_filter_and_count,
            concurrent_assigners_keep_the_lease_limit
        );
    };
    (@cases $module:ident; $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make.await;
                $crate::$module::$case(store.clone()).await;
                store.close().await;
            }
        )*
    };
}
