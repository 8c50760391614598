use super::*;
use crate::intake::report::eta_seconds;
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

#[test]
fn the_eta_is_the_slower_of_the_message_and_segment_rates() {
    let messages = Limits {
        rate: Some(Rate::new(100.0, None)),
        ..Limits::default()
    };
    let segments = Limits {
        segments: Some(Rate::new(50.0, None)),
        ..Limits::default()
    };
    let both = Limits {
        rate: Some(Rate::new(100.0, None)),
        segments: Some(Rate::new(50.0, None)),
        ..Limits::default()
    };
    assert_eq!(eta_seconds(&messages, 1000, 3000), Some(10.0));
    assert_eq!(eta_seconds(&segments, 1000, 3000), Some(60.0));
    assert_eq!(eta_seconds(&both, 1000, 3000), Some(60.0));
    assert_eq!(eta_seconds(&both, 1000, 1000), Some(20.0));
    assert_eq!(eta_seconds(&Limits::default(), 1000, 3000), None);
}
