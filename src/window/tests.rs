use jiff::Timestamp;
use jiff::tz::TimeZone;
use proptest::prelude::*;

use super::*;

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn zone(name: &str) -> TimeZone {
    time_zone(name).unwrap()
}

fn window(text: &str) -> Window {
    Window::parse(text).unwrap()
}

#[test]
fn windows_read_back_as_written() {
    for text in [
        "08:00-21:00",
        "mon-fri 09:00-17:00",
        "sat-sun 10:00-18:00",
        "mon,wed,fri-sun 22:00-06:00",
        "00:00-24:00",
    ] {
        assert_eq!(window(text).to_string(), text);
    }
    assert_eq!(window("08:00–21:00").to_string(), "08:00-21:00");
    assert_eq!(
        window("FRI-MON 9:30-10:00").to_string(),
        "mon,fri-sun 09:30-10:00"
    );
    assert_eq!(window("22:00-00:00").to_string(), "22:00-24:00");
}

#[test]
fn malformed_windows_are_refused_with_what_is_wrong() {
    assert!(matches!(Window::parse("8-21"), Err(Error::Time(_))));
    assert!(matches!(Window::parse("08:00"), Err(Error::Malformed(_))));
    assert!(matches!(Window::parse("25:00-26:00"), Err(Error::Time(_))));
    assert!(matches!(Window::parse("08:60-09:00"), Err(Error::Time(_))));
    assert!(matches!(Window::parse("24:00-08:00"), Err(Error::Time(_))));
    assert!(matches!(Window::parse("09:00-09:00"), Err(Error::Empty(_))));
    assert!(matches!(Window::parse("00:00-00:00"), Err(Error::Empty(_))));
    assert!(matches!(
        Window::parse("weekdays 08:00-09:00"),
        Err(Error::Day(_))
    ));
    assert!(matches!(
        Window::parse("mon 08:00-09:00 x"),
        Err(Error::Malformed(_))
    ));
    assert!(matches!(Window::parse(""), Err(Error::Malformed(_))));
    assert!(matches!(time_zone("Mars/Olympus"), Err(Error::Zone(_))));
}

#[test]
fn a_window_across_midnight_is_open_until_morning() {
    let night = window("22:00-06:00");
    let utc = [TimeZone::UTC];
    assert!(night.holds(at("2026-06-01T23:00:00Z"), &utc));
    assert!(night.holds(at("2026-06-02T05:59:00Z"), &utc));
    assert!(!night.holds(at("2026-06-02T06:00:00Z"), &utc));
    assert_eq!(
        night.next_opening(at("2026-06-02T12:00:00Z"), &utc),
        Some(at("2026-06-02T22:00:00Z"))
    );
}

#[test]
fn a_window_across_midnight_belongs_to_the_day_it_opens_on() {
    // 2026-06-05 is a Friday.
    let friday_night = window("fri 22:00-06:00");
    let utc = [TimeZone::UTC];
    assert!(friday_night.holds(at("2026-06-06T03:00:00Z"), &utc));
    assert!(!friday_night.holds(at("2026-06-05T03:00:00Z"), &utc));
    assert_eq!(
        friday_night.next_opening(at("2026-06-06T07:00:00Z"), &utc),
        Some(at("2026-06-12T22:00:00Z"))
    );
}

#[test]
fn a_window_keeps_its_local_hours_across_a_change_to_summer_time() {
    // New York moves from UTC-5 to UTC-4 at 02:00 on 2026-03-08.
    let ny = [zone("America/New_York")];
    let day = window("08:00-21:00");
    assert_eq!(
        day.next_opening(at("2026-03-07T02:00:00Z"), &ny),
        Some(at("2026-03-07T13:00:00Z"))
    );
    assert_eq!(
        day.next_opening(at("2026-03-08T02:00:00Z"), &ny),
        Some(at("2026-03-08T12:00:00Z"))
    );
    // A start inside the skipped hour opens when the hour ends.
    assert_eq!(
        window("02:30-04:00").next_opening(at("2026-03-08T05:00:00Z"), &ny),
        Some(at("2026-03-08T07:00:00Z"))
    );
    // A window wholly inside the skipped hour does not open that day.
    assert_eq!(
        window("02:00-03:00").next_opening(at("2026-03-08T05:00:00Z"), &ny),
        Some(at("2026-03-09T06:00:00Z"))
    );
}

#[test]
fn a_window_opens_at_the_first_of_a_repeated_hour_when_summer_time_ends() {
    // London goes back from UTC+1 to UTC at 02:00 on 2026-10-25: 01:00-02:00 twice.
    let london = [zone("Europe/London")];
    let early = window("01:30-03:00");
    assert_eq!(
        early.next_opening(at("2026-10-24T23:00:00Z"), &london),
        Some(at("2026-10-25T00:30:00Z"))
    );
    assert!(early.holds(at("2026-10-25T01:45:00Z"), &london));
    assert!(!early.holds(at("2026-10-25T03:00:00Z"), &london));
}

#[test]
fn numbers_map_to_their_countrys_or_their_area_codes_zones() {
    let names = |n: &str| zones_of_number(n).map(|z| z.names().collect::<Vec<_>>());
    assert_eq!(names("+8613800138000"), Some(vec!["Asia/Shanghai"]));
    assert_eq!(names("+12125550100"), Some(vec!["America/New_York"]));
    assert_eq!(names("13105550100"), Some(vec!["America/Los_Angeles"]));
    assert_eq!(
        names("+447700900123").map(|z| z.contains(&"Europe/London")),
        Some(true)
    );
    assert_eq!(
        names("+19075550100"),
        Some(vec!["America/Adak", "America/Anchorage"])
    );
    assert_eq!(names("+999"), None);
    assert_eq!(names("not a number"), None);
}

#[test]
fn every_zone_in_the_number_data_is_in_the_bundled_database() {
    for name in zones_data::NAMES {
        assert!(
            TimeZone::get(name).is_ok(),
            "{name} is not in the bundled database"
        );
    }
}

#[test]
fn a_number_in_several_zones_waits_until_the_window_holds_in_all() {
    // Alaska numbers under 907 may be in Adak (UTC-10) or Anchorage (UTC-9).
    let alaska = zones_of_number("+19075550100").unwrap().zones();
    let day = window("08:00-21:00");
    let opening = day
        .next_opening(at("2026-06-01T12:00:00Z"), &alaska)
        .unwrap();
    // 08:00 in Adak (UTC-9 in summer) is 09:00 in Anchorage (UTC-8).
    assert_eq!(opening, at("2026-06-01T17:00:00Z"));
}

#[test]
fn zones_whose_windows_never_overlap_fall_back_to_the_batchs_zone() {
    let apart = [zone("Asia/Shanghai"), zone("America/New_York")];
    let short = window("09:00-10:00");
    let now = at("2026-06-01T00:00:00Z");
    assert_eq!(short.next_opening(now, &apart), None);
    assert_eq!(
        short.opening(now, &apart, &TimeZone::UTC),
        at("2026-06-01T09:00:00Z")
    );
    assert_eq!(
        short.opening(now, &[], &apart[0]),
        at("2026-06-01T01:00:00Z")
    );
}

#[test]
fn a_batch_to_china_the_us_and_britain_opens_zone_by_zone() {
    // 2026-06-01 06:00 UTC: 14:00 in Shanghai, 07:00 in London, 02:00 in New York.
    let now = at("2026-06-01T06:00:00Z");
    let day = window("08:00-21:00");
    let opening = |n: &str| {
        let zones = zones_of_number(n).unwrap().zones();
        day.opening(now, &zones, &TimeZone::UTC)
    };
    assert_eq!(opening("+8613800138000"), now);
    assert_eq!(opening("+447911123456"), at("2026-06-01T07:00:00Z"));
    assert_eq!(opening("+12125550100"), at("2026-06-01T12:00:00Z"));
    assert_eq!(opening("+13125550100"), at("2026-06-01T13:00:00Z"));
    assert_eq!(opening("+13105550100"), at("2026-06-01T15:00:00Z"));
}

fn any_window() -> impl Strategy<Value = Window> {
    (0u16..DAY, 1u16..=DAY, 1u8..=ALL_DAYS)
        .prop_filter("opens and closes apart", |(o, c, _)| o != c)
        .prop_map(|(open, close, days)| Window { open, close, days })
}

proptest! {
    #[test]
    fn the_next_opening_is_open_and_nothing_before_it_is(
        w in any_window(),
        zone in prop::sample::select(vec![
            "UTC", "America/New_York", "Europe/London", "Asia/Shanghai", "Australia/Lord_Howe",
        ]),
        secs in 1_700_000_000i64..1_900_000_000,
        probes in prop::collection::vec(0.0f64..1.0, 20),
    ) {
        let zones = [time_zone(zone).unwrap()];
        let t = Timestamp::from_second(secs).unwrap();
        let opening = w.next_opening(t, &zones).unwrap();
        prop_assert!(opening >= t);
        prop_assert!(w.holds(opening, &zones));
        let gap = opening.as_second() - t.as_second();
        for p in probes {
            let before = Timestamp::from_second(t.as_second() + (gap as f64 * p) as i64).unwrap();
            prop_assert!(before >= opening || !w.holds(before, &zones), "open at {before}, before {opening}");
        }
    }

    #[test]
    fn any_window_reads_back_as_it_prints(w in any_window()) {
        prop_assert_eq!(Window::parse(&w.to_string()), Ok(w));
    }
}
