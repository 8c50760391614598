use super::*;
use crate::intake::eta::{Ahead, eta_seconds};
use crate::ratelimit::Limits;
use crate::ratelimit::Rate;

#[test]
fn duplicates_are_found_by_hash_and_colliding_hashes_told_apart() {
    let mut seen = FirstSeen::default();
    assert_eq!(seen.first("+8613800000000", 0), None);
    assert_eq!(seen.first("+8613800000001", 1), None);
    assert_eq!(seen.first("+8613800000000", 2), Some(0));
    // Two hashes alike in their first 64 bits, different after.
    let a = (7u128 << 64) | 1;
    let b = (7u128 << 64) | 2;
    assert_eq!(seen.first_of_hash(a, 10), None);
    assert_eq!(seen.first_of_hash(b, 11), None);
    assert_eq!(seen.first_of_hash(b, 12), Some(11));
    assert_eq!(seen.first_of_hash(a, 13), Some(10));
}

/// Limits of `messages` and `segments` a second.
fn rates(messages: Option<f64>, segments: Option<f64>) -> Limits {
    Limits {
        rate: messages.map(|r| Rate::new(r, None)),
        segments: segments.map(|r| Rate::new(r, None)),
        ..Limits::default()
    }
}

#[test]
fn the_eta_is_the_slower_of_the_message_and_segment_rates() {
    let (messages, segments) = (rates(Some(100.0), None), rates(None, Some(50.0)));
    let both = rates(Some(100.0), Some(50.0));
    assert_eq!(
        eta_seconds(&messages, 1000, 3000, &Ahead::default()),
        Some(10.0)
    );
    assert_eq!(
        eta_seconds(&segments, 1000, 3000, &Ahead::default()),
        Some(60.0)
    );
    assert_eq!(
        eta_seconds(&both, 1000, 3000, &Ahead::default()),
        Some(60.0)
    );
    assert_eq!(
        eta_seconds(&both, 1000, 1000, &Ahead::default()),
        Some(20.0)
    );
    assert_eq!(
        eta_seconds(&Limits::default(), 1000, 3000, &Ahead::default()),
        None
    );
}

#[test]
fn the_eta_counts_the_messages_queued_ahead_and_falls_back_to_the_measured_rate() {
    let (messages, segments) = (rates(Some(100.0), None), rates(None, Some(50.0)));
    let ahead = Ahead {
        messages: 500,
        measured_per_sec: Some(20.0),
    };
    // 500 queued, then 1000: 15 s at 100 a second, the configured rate winning.
    assert_eq!(eta_seconds(&messages, 1000, 3000, &ahead), Some(15.0));
    // Those ahead are taken to have the batch's 3 segments each: 4500 at 50.
    assert_eq!(eta_seconds(&segments, 1000, 3000, &ahead), Some(90.0));
    // No configured rate: the measured one, 1500 at 20 a second.
    assert_eq!(
        eta_seconds(&Limits::default(), 1000, 3000, &ahead),
        Some(75.0)
    );
    let unmeasured = Ahead {
        measured_per_sec: None,
        ..ahead
    };
    assert_eq!(
        eta_seconds(&Limits::default(), 1000, 3000, &unmeasured),
        None
    );
}
