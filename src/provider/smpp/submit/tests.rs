use proptest::prelude::*;

use super::*;

#[test]
fn seven_septets_pack_into_the_documented_octets() {
    // "hellohello" packed, the example of GSM 03.38's packing.
    let septets: Vec<u8> = "hellohello".bytes().collect();
    assert_eq!(
        pack_after(&[], &septets),
        [0xE8, 0x32, 0x9B, 0xFD, 0x46, 0x97, 0xD9, 0xEC, 0x37]
    );
    assert_eq!(unpack_after(&pack_after(&[], &septets), 0, 10), septets);
}

#[test]
fn seven_septets_fill_their_last_octet_with_a_cr_not_an_at_sign() {
    let septets: Vec<u8> = "hellohe".bytes().collect();
    let packed = pack_after(&[], &septets);
    assert_eq!(packed.len(), 7);
    // A reader takes 8 septets from 7 octets: the eighth is CR, padding.
    assert_eq!(unpack_after(&packed, 0, 8), b"hellohe\r");
    let packed = pack_after(&[], &septets[..6]);
    assert_eq!(unpack_after(&packed, 0, 6), b"helloh");
    assert_eq!(
        packed.len(),
        6,
        "6 septets leave 6 bits, too few for another"
    );
    // After a header, 8 septets leave the last octet 7 bits.
    let header = [0x05, 0x00, 0x03, 0x2A, 0x02, 0x02];
    let packed = pack_after(&header, &[0x41; 8]);
    assert_eq!(unpack_after(&packed, 6, 9), b"AAAAAAAA\r");
}

#[test]
fn septets_after_a_header_start_on_a_septet_boundary() {
    let header = [0x05, 0x00, 0x03, 0x2A, 0x02, 0x01];
    let packed = pack_after(&header, &[0x41; 8]);
    assert_eq!(&packed[..6], &header);
    // 48 header bits, 1 fill bit, 56 bits of septets: 105 bits in 14 octets.
    assert_eq!(packed.len(), 14);
    assert_eq!(packed[6] & 1, 0, "the fill bit is zero");
    assert_eq!(unpack_after(&packed, 6, 8), [0x41; 8]);
}

#[test]
fn a_short_gsm_text_is_one_segment_of_septets() {
    let segments = segments("Hi {you} 5€", false, LongMessages::Udh, 7).unwrap();
    assert_eq!(segments.len(), 1);
    let s = &segments[0];
    assert_eq!(s.data_coding, DATA_CODING_GSM);
    assert!(!s.udhi && s.sar.is_none());
    assert_eq!(
        s.short_message,
        [
            0x48, 0x69, 0x20, 0x1B, 0x28, 0x79, 0x6F, 0x75, 0x1B, 0x29, 0x20, 0x35, 0x1B, 0x65
        ]
    );
    assert_eq!(gsm_decode(&s.short_message), "Hi {you} 5€");
}

#[test]
fn a_long_gsm_text_carries_a_header_with_reference_total_and_number() {
    let text = "a".repeat(200);
    let segments = segments(&text, false, LongMessages::Udh, 0x1234).unwrap();
    assert_eq!(segments.len(), 2);
    for (i, s) in segments.iter().enumerate() {
        assert!(s.udhi);
        assert_eq!(&s.short_message[..6], &[5, 0, 3, 0x34, 2, i as u8 + 1]);
    }
    assert_eq!(segments[0].short_message.len(), 6 + 153);
    assert_eq!(segments[1].short_message.len(), 6 + 47);
}

#[test]
fn packed_segments_fit_140_octets() {
    let text = "b".repeat(400);
    let segments = segments(&text, true, LongMessages::Udh, 1).unwrap();
    assert_eq!(segments.len(), 3);
    assert_eq!(segments[0].short_message.len(), 140);
    assert_eq!(
        unpack_after(&segments[0].short_message, 6, 153),
        vec![b'b'; 153]
    );
    let single = super::segments(&"c".repeat(160), true, LongMessages::Udh, 1).unwrap();
    assert_eq!(single[0].short_message.len(), 140);
}

#[test]
fn sar_segments_carry_no_header() {
    let text = "中".repeat(100);
    let segments = segments(&text, false, LongMessages::Sar, 0xBEEF).unwrap();
    assert_eq!(segments.len(), 2);
    assert_eq!(segments[0].data_coding, DATA_CODING_UCS2);
    assert!(!segments[0].udhi);
    assert_eq!(segments[0].sar, Some((0xBEEF, 2, 1)));
    assert_eq!(segments[1].sar, Some((0xBEEF, 2, 2)));
    assert_eq!(segments[0].short_message.len(), 134);
    assert_eq!(&segments[0].short_message[..2], &[0x4E, 0x2D]);
}

#[test]
fn an_emoji_is_not_split_across_segments() {
    let text = format!("{}😀{}", "中".repeat(66), "中".repeat(66));
    let segments = segments(&text, false, LongMessages::Udh, 1).unwrap();
    assert_eq!(segments.len(), 3);
    assert_eq!(segments[0].short_message.len(), 6 + 66 * 2);
    assert_eq!(segments[1].short_message.len(), 6 + 67 * 2);
}

#[test]
fn every_gsm_character_measures_as_its_septets() {
    let candidates = (0u32..0x2100).filter_map(char::from_u32);
    for c in candidates {
        let measured = crate::sms::measure(&c.to_string());
        match gsm_septets(c) {
            Some(septets) => {
                assert_eq!(measured.encoding, Encoding::Gsm7, "{c:?}");
                assert_eq!(measured.units, septets.len(), "{c:?}");
                assert_eq!(gsm_decode(&septets), c.to_string());
            }
            None => assert_eq!(measured.encoding, Encoding::Ucs2, "{c:?}"),
        }
    }
}

const ANY: &[char] = &['a', ' ', 'é', '€', '{', '中', 'ç', '`', '😀', '\n', 'Δ'];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn segments_are_as_many_as_measure_counts(
        chars in prop::collection::vec(prop::sample::select(ANY), 0..500),
        packed in any::<bool>(),
        sar in any::<bool>(),
    ) {
        let text: String = chars.into_iter().collect();
        let long = if sar { LongMessages::Sar } else { LongMessages::Udh };
        let segments = segments(&text, packed, long, 9).unwrap();
        prop_assert_eq!(segments.len(), crate::sms::measure(&text).segments);
        for s in &segments {
            prop_assert!(s.short_message.len() <= 160, "{}", s.short_message.len());
        }
    }
}
