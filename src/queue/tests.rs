//! The engine conformance suite: every test runs against every engine through the
//! public `Queue` handle, each on a store of its own.
//!
//! Each topic file (`accept`, `claim`, `lease`, `settle`, `control`, `deadline`, `ledger`,
//! `limit`, `failover`, `receipts`, `held`, `template`, `suppression`, `fingerprint`,
//! `unacked`, `outbox`, `deliveries`, `replies`, `window`, `spend`, `capped`, `search`,
//! `erase`, `prune`, `segments`)
//! writes its tests once, as functions of a [`TestStore`]; [`conformance!`] makes
//! one test of each per engine, named `queue::tests::<engine>::<test>`, so
//! `cargo test --lib queue::tests::redis` runs Redis's alone and a failure names
//! its engine. `store` opens the stores; `new_batch` builds the batches.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::domain::{batch_state, message_id, now_ms};
use crate::ratelimit::{Cap, Limits, Rate};

pub(crate) use new_batch::{TestBatch, batch, batch_to};
pub(crate) use outbox::{assert_reply_and_cancel, reply_case, reply_to};
pub(crate) use store::TestStore;

async fn accept(q: &Queue, b: NewBatch) -> BatchId {
    match q.accept(b).await.expect("accept") {
        Accepted::New(id) => id,
        other => panic!("expected a new batch, got {other:?}"),
    }
}

async fn counts(q: &Queue, id: BatchId) -> Counts {
    q.batch(id).await.unwrap().expect("batch exists").counts
}

const LEASE: Duration = Duration::from_secs(30);

fn settle_all(claimed: &[Claimed], outcome: Outcome) -> Vec<Settlement> {
    claimed
        .iter()
        .map(|c| Settlement {
            lease: c.lease,
            outcome: outcome.clone(),
            sent_by: None,
        })
        .collect()
}

/// Claims `p`'s messages again until some come due (a lease lapsed, a wait
/// ended), for at most 5 s.
async fn claim_when_due(q: &Queue) -> Vec<Claimed> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let again = q.claim("p", 10, LEASE).await.unwrap();
        if !again.is_empty() {
            return again;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing came due within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts staging `b`, which must be new.
async fn begin(q: &Queue, b: NewBatch) -> Staging {
    match q.begin(b, Arrival::Streamed).await.expect("begin") {
        Begun::Staging(staging) => staging,
        Begun::Answered(answer) => panic!("expected to stage, got {answer:?}"),
    }
}

/// One test per suite function listed, for `$engine`, on a fresh store from the
/// function of that name in `store`.
macro_rules! engine_tests {
    ($engine:ident: $($(#[$attr:meta])+ $topic:ident::$test:ident;)+) => {
        mod $engine {
            $(
                $(#[$attr])+
                async fn $test() {
                    super::$topic::$test(super::store::$engine().await).await;
                }
            )+
        }
    };
}

/// The conformance suite, for each engine named: every suite function with the
/// runtime it needs.
macro_rules! conformance {
    ($($engine:ident),+) => {$(
        engine_tests! { $engine:
            #[tokio::test] accept::an_accepted_batch_is_stored_whole_and_survives_reopening;
            #[tokio::test] accept::a_batch_stored_in_chunks_is_invisible_until_committed_then_whole;
            #[tokio::test] accept::a_discarded_staging_leaves_nothing_and_the_next_batch_is_unaffected;
            #[tokio::test] accept::staging_with_a_used_idempotency_key_answers_with_the_first_batch;
            #[tokio::test] accept::an_idempotency_key_replays_the_same_request_and_refuses_a_different_one;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)] accept::concurrent_accepts_with_one_idempotency_key_store_one_batch;
            #[tokio::test] accept::recipients_refused_at_intake_leave_gaps_in_the_indices;
            #[tokio::test] claim::a_claim_carries_the_segments_template_and_vars_stored_with_the_message;
            #[tokio::test] claim::a_batch_rendered_from_a_template_is_claimed_with_each_body_and_its_vars;
            #[tokio::test] claim::pending_counts_a_providers_waiting_messages_up_to_the_cap;
            #[tokio::test] claim::next_due_is_the_earliest_pending_lease_end_or_unknown_check_of_a_provider;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)] claim::concurrent_claims_never_hand_out_a_message_twice;
            #[tokio::test] claim::claims_go_by_priority_then_send_time_then_arrival;
            #[tokio::test] claim::claims_only_take_the_named_providers_messages;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)] claim::two_handles_on_one_store_never_claim_the_same_message;
            #[tokio::test] settle::an_expired_lease_is_claimed_again_and_the_old_lease_cannot_settle;
            #[tokio::test] settle::a_retry_waits_for_its_time_and_counts_an_attempt_a_release_does_not;
            #[tokio::test] settle::failures_are_recorded_and_retry_requeues_only_the_failed;
            #[tokio::test] control::pause_holds_messages_resume_releases_them_cancel_ends_them;
            #[tokio::test] control::an_expired_lease_in_a_paused_batch_comes_back_paused;
            #[tokio::test] control::a_cancelled_batch_can_be_cancelled_again_but_not_retried;
            #[tokio::test] control::a_finished_batch_refuses_every_control_and_keeps_its_history;
            #[tokio::test] control::a_batch_that_ended_expired_can_only_be_retried;
            #[tokio::test] control::a_paused_batch_that_finished_can_be_resumed_but_not_cancelled;
            #[tokio::test] lease::a_renewed_lease_outlives_its_term_and_then_lapses_when_renewal_stops;
            #[tokio::test] lease::a_lost_lease_is_not_renewed_back_nor_a_settled_one;
            #[tokio::test] lease::a_message_whose_lease_lapsed_comes_back_as_an_unknown_outcome_since_its_claim;
            #[tokio::test] control::pause_and_resume_put_each_message_back_in_its_own_providers_queue;
            #[tokio::test] deadline::a_message_is_never_claimed_after_its_deadline_and_ends_expired_with_its_last_error;
            #[tokio::test] deadline::the_sweep_expires_paused_unknown_and_unclaimed_messages_and_leaves_the_rest;
            #[tokio::test] deadline::a_retry_brings_failed_and_expired_messages_back_with_a_fresh_deadline;
            #[tokio::test] deadline::a_release_with_an_error_keeps_it_as_the_last_error_and_spends_no_attempt;
            #[tokio::test] deadline::a_send_that_ends_after_the_deadline_leaves_its_message_expired;
            #[tokio::test] window::a_message_due_later_than_its_batch_waits_for_its_own_time_whole_or_staged;
            #[tokio::test] window::a_message_claimed_outside_its_window_goes_back_with_no_attempt_spent;
            #[tokio::test] window::a_waiting_message_outlives_a_restart_and_is_claimed_when_its_time_comes;
            #[tokio::test] capped::recipients_at_a_cap_are_counted_from_the_sends_claims_recorded;
            #[tokio::test] spend::a_batch_at_its_cap_holds_the_rest_with_why_until_resumed_with_a_higher_cap;
            #[tokio::test] spend::a_charge_is_given_back_when_not_sent_unless_an_attempt_was_unknown;
            #[tokio::test] spend::a_spent_daily_budget_releases_to_the_providers_next_local_midnight;
            #[tokio::test] spend::each_providers_budget_rolls_over_at_its_own_local_midnight;
            #[tokio::test] spend::a_days_spend_outlives_a_restart_and_still_holds_the_budget;
            #[tokio::test] spend::a_batch_stored_in_chunks_keeps_its_cap;
            #[tokio::test] ledger::batches_are_listed_newest_first_in_pages_without_those_being_staged;
            #[tokio::test] ledger::ledger_pages_follow_index_order_and_filter_by_state;
            #[tokio::test] limit::a_segment_rate_pays_for_each_messages_segments;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)] limit::a_rate_holds_across_handles_on_one_store;
            #[tokio::test] limit::a_rate_wait_claims_nothing_and_an_empty_claim_spends_nothing;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)] limit::a_recipient_cap_holds_across_handles_and_defers_the_rest;
            #[tokio::test] failover::a_claim_within_another_providers_limits_pays_that_providers_bucket_and_caps;
            #[tokio::test] failover::a_message_sent_through_another_provider_names_it_and_a_retry_stays_with_its_own;
            #[tokio::test] receipts::a_receipt_moves_a_sent_message_to_delivered_or_undelivered_with_its_code;
            #[tokio::test] receipts::a_receipt_that_arrives_twice_or_contradicts_a_delivery_counts_once;
            #[tokio::test] receipts::a_receipt_before_the_send_is_recorded_is_held_and_applied_by_the_settlement;
            #[tokio::test] receipts::a_message_sent_or_confirmed_through_another_provider_takes_that_providers_receipts;
            #[tokio::test] receipts::a_provider_id_shared_by_a_request_is_told_apart_by_the_recipient;
            #[tokio::test] receipts::an_unknown_outcome_waits_then_comes_back_marked_and_a_confirmation_is_no_attempt;
            #[tokio::test] receipts::an_unknown_outcome_in_a_cancelled_batch_ends_cancelled;
            #[tokio::test] receipts::held_receipts_expire_after_a_day;
            #[tokio::test] held::a_settlement_answers_the_held_receipts_it_applied_and_only_those;
            #[tokio::test] segments::a_receipt_for_a_later_segment_settles_its_message_before_and_after_reopening;
            #[tokio::test] segments::an_early_receipt_for_a_later_segment_is_held_and_applied_at_settle;
            #[tokio::test] segments::pruning_takes_a_messages_segment_ids_with_it;
            #[tokio::test] template::a_template_is_created_once_and_each_replace_is_a_new_version;
            #[tokio::test] template::templates_page_in_id_order_and_a_deleted_one_is_gone;
            #[tokio::test] suppression::suppressing_counts_the_new_and_an_existing_one_keeps_its_time_but_takes_the_reason;
            #[tokio::test] suppression::suppressed_returns_exactly_the_suppressed_subset;
            #[tokio::test] suppression::unsuppressing_removes_only_the_named_addresses_on_that_channel;
            #[tokio::test] suppression::suppressions_page_by_channel_then_address;
            #[tokio::test] #[ignore = "a measurement, not a check"] suppression::suppressed_timing_for_100000_addresses_against_100000_suppressions;
            #[tokio::test] fingerprint::recently_sent_returns_the_remembered_subset_since_the_given_time_per_channel;
            #[tokio::test] fingerprint::forgetting_removes_only_the_fingerprints_older_than_the_cutoff;
            #[tokio::test] fingerprint::five_thousand_fingerprints_are_remembered_and_found_in_one_call;
            #[tokio::test] replies::a_reply_is_stored_once_and_linked_to_the_latest_message_sent_to_its_sender;
            #[tokio::test] replies::replies_page_by_seq_and_filter_by_sender;
            #[tokio::test] replies::an_opt_out_suppresses_its_sender_and_an_opt_in_lifts_only_what_a_reply_made;
            #[tokio::test] replies::a_reply_records_its_event_for_the_answered_batch_and_the_endpoints_wanting_replies;
            #[tokio::test] replies::a_message_of_unknown_outcome_to_a_number_that_opted_out_ends_cancelled_saying_so;
            #[tokio::test] replies::queued_messages_to_a_number_that_opted_out_end_cancelled_but_its_auto_reply_goes;
            #[tokio::test] unacked::unacked_markers_are_found_oldest_first_by_source_and_body_and_expire_after_a_day;
            #[tokio::test] outbox::settlements_record_sent_and_failed_for_a_subscribed_batch_and_nothing_for_another;
            #[tokio::test] outbox::receipts_on_arrival_and_held_record_delivered_and_undelivered_with_their_codes;
            #[tokio::test] outbox::messages_expired_at_claim_and_by_the_sweep_record_expired;
            #[tokio::test] outbox::a_cancel_records_cancelled_and_a_send_in_flight_ends_cancelled_too;
            #[tokio::test] outbox::batch_finished_is_recorded_once_with_the_final_counts;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)] outbox::batch_finished_is_recorded_when_the_last_messages_settle_at_once;
            #[tokio::test] outbox::each_subscription_gets_only_the_kinds_it_wants;
            #[tokio::test] outbox::a_batch_stored_in_chunks_or_gathered_keeps_its_subscriptions_and_callback;
            #[tokio::test] outbox::a_lapsed_lease_in_a_cancelled_batch_records_cancelled_at_the_next_claim;
            #[tokio::test] outbox::an_event_recorded_twice_is_one_delivery;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)] deliveries::deliveries_are_claimed_exclusively_and_a_lapsed_lease_is_claimed_again;
            #[tokio::test] deliveries::settlements_post_retry_or_fail_and_a_lapsed_lease_settles_nothing;
            #[tokio::test] deliveries::deliveries_are_listed_newest_first_in_pages_and_by_state;
            #[tokio::test] deliveries::replay_makes_one_event_or_every_failed_one_due_again_afresh;
            #[tokio::test] deliveries::a_replay_while_a_post_is_in_flight_makes_that_post_settle_nothing;
            #[tokio::test] deliveries::delivery_counts_are_pending_and_failed_per_endpoint;
            #[tokio::test] deliveries::pruning_deletes_only_deliveries_posted_before_the_cutoff;
            #[tokio::test] search::a_search_by_recipient_pages_newest_first_across_batches_without_staged_ones;
            #[tokio::test] search::a_search_by_ref_narrows_by_recipient_state_and_creation_time;
            #[tokio::test] search::a_mailbox_with_a_display_name_is_found_by_its_address;
            #[tokio::test] erase::erasing_cancels_queued_messages_hashes_the_rest_and_keeps_the_suppression;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)] erase::erasing_while_a_batch_to_the_address_is_sending_waits_for_the_send_then_hashes_it;
            #[tokio::test] prune::pruning_removes_exactly_what_is_old_and_finished;
            #[tokio::test] prune::audit_entries_page_newest_first_by_filter_and_keep_their_own_age;
            #[tokio::test] prune::pruning_removes_posted_and_failed_deliveries_and_leaves_pending_ones;
        }
    )+};
}

conformance!(sqlite, postgres, redis);

mod accept;
mod capped;
mod claim;
mod control;
mod deadline;
mod deliveries;
mod erase;
mod failover;
mod fingerprint;
mod held;
mod lease;
mod ledger;
mod limit;
mod new_batch;
pub(crate) mod outbox;
mod prune;
mod receipts;
mod replies;
mod search;
mod segments;
mod settle;
mod spend;
pub(crate) mod store;
mod suppression;
mod template;
mod unacked;
mod window;
