//! SMS length: which alphabet a text travels in (GSM 03.38 7-bit or UCS-2) and how
//! many concatenated segments it costs. Pure and allocation-free, because the
//! pre-flight report measures every rendered message of a batch.

use serde::{Deserialize, Serialize};

/// The alphabet an SMS is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The GSM 03.38 default alphabet with its extension table, 7 bits a character.
    Gsm7,
    /// UCS-2 as networks carry it today (UTF-16), used as soon as one character of the
    /// text is outside the GSM 7-bit tables.
    Ucs2,
}

impl Encoding {
    /// Units that fit in a message sent as one SMS.
    fn single_limit(self) -> usize {
        match self {
            Encoding::Gsm7 => 160,
            Encoding::Ucs2 => 70,
        }
    }

    /// Units that fit in each segment of a concatenated SMS: the concatenation header
    /// takes the rest.
    fn segment_limit(self) -> usize {
        match self {
            Encoding::Gsm7 => 153,
            Encoding::Ucs2 => 67,
        }
    }
}

/// The measured length of one SMS text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Segments {
    pub encoding: Encoding,
    /// Septets for [`Encoding::Gsm7`], where an extension-table character counts 2
    /// (escape and character); UTF-16 code units for [`Encoding::Ucs2`], where a
    /// character outside the Basic Multilingual Plane (most emoji) counts 2.
    pub units: usize,
    /// SMS the text is billed and delivered as; at least 1.
    pub segments: usize,
}

/// Measures `text` as it would be sent.
///
/// A text that fits the single-message limit (160 septets, 70 UCS-2 units) is one
/// segment; a longer one is split into segments of at most 153 septets or 67 units.
/// A two-unit character (an escape pair, a surrogate pair) is never split across two
/// segments: when it does not fit, it starts the next one, leaving a unit unused.
///
/// The empty text measures as one GSM-7 segment of 0 units, because sending it still
/// costs one SMS.
pub fn measure(text: &str) -> Segments {
    let chars = text.chars().count();
    // The highest byte, in one pass without early exits: below 0x80 the text is
    // ASCII; from 0xF0 on, a byte starts a character beyond the Basic Multilingual
    // Plane, which is a surrogate pair in UCS-2: two units.
    let top = text.bytes().fold(0, u8::max);
    let (encoding, units) = match gsm_septets(text, top < 0x80) {
        Some(septets) => (Encoding::Gsm7, septets),
        None if top < 0xF0 => (Encoding::Ucs2, chars),
        None => {
            let pairs = text.bytes().filter(|&b| b >= 0xF0).count();
            (Encoding::Ucs2, chars + pairs)
        }
    };
    let segments = if units <= encoding.single_limit() {
        1
    } else if units == chars {
        // Every character is one unit: no pair to keep whole, so segments fill up.
        units.div_ceil(encoding.segment_limit())
    } else {
        let width: fn(char) -> usize = match encoding {
            Encoding::Gsm7 => gsm_width,
            Encoding::Ucs2 => char::len_utf16,
        };
        pack(text.chars().map(width), encoding.segment_limit())
    };
    Segments {
        encoding,
        units,
        segments,
    }
}

/// Septets `text` takes in GSM 7-bit, or `None` when a character is outside its
/// tables; `ascii` says the text is ASCII, one byte a character.
fn gsm_septets(text: &str, ascii: bool) -> Option<usize> {
    if ascii {
        return text
            .bytes()
            .try_fold(0, |sum, b| match ASCII_WIDTH[usize::from(b)] {
                0 => None,
                width => Some(sum + usize::from(width)),
            });
    }
    text.chars().try_fold(0, |sum, c| match gsm_width(c) {
        0 => None,
        width => Some(sum + width),
    })
}

/// The segments characters of the given widths need when each segment is filled
/// greedily and no character is split.
fn pack(widths: impl Iterator<Item = usize>, limit: usize) -> usize {
    let mut segments = 1;
    let mut used = 0;
    for width in widths {
        if used + width > limit {
            segments += 1;
            used = 0;
        }
        used += width;
    }
    segments
}

/// Septets a character takes in GSM 7-bit: 1 in the default alphabet, 2 in the
/// extension table (escape plus character), 0 when it cannot be sent in GSM 7-bit.
fn gsm_width(c: char) -> usize {
    if c.is_ascii() {
        return usize::from(ASCII_WIDTH[c as usize]);
    }
    match c {
        '£' | '¥' | 'è' | 'é' | 'ù' | 'ì' | 'ò' | 'Ç' | 'Ø' | 'ø' | 'Å' | 'å' | 'Δ' | 'Φ' | 'Γ'
        | 'Λ' | 'Ω' | 'Π' | 'Ψ' | 'Σ' | 'Θ' | 'Ξ' | 'Æ' | 'æ' | 'ß' | 'É' | '¤' | '¡' | 'Ä'
        | 'Ö' | 'Ñ' | 'Ü' | '§' | '¿' | 'ä' | 'ö' | 'ñ' | 'ü' | 'à' => 1,
        '€' => 2,
        _ => 0,
    }
}

/// [`gsm_width`] for ASCII. The default alphabet holds every printable ASCII character
/// but the backtick, plus line feed and carriage return; the extension table holds
/// form feed and `^ { } \ [ ~ ] |`. Other control characters cannot be sent.
const ASCII_WIDTH: [u8; 128] = {
    let mut table = [0; 128];
    let mut b = b' ';
    while b <= b'~' {
        table[b as usize] = 1;
        b += 1;
    }
    table[b'`' as usize] = 0;
    table[b'\n' as usize] = 1;
    table[b'\r' as usize] = 1;
    let extension = *b"\x0c^{}\\[~]|";
    let mut i = 0;
    while i < extension.len() {
        table[extension[i] as usize] = 2;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gsm(units: usize, segments: usize) -> Segments {
        Segments {
            encoding: Encoding::Gsm7,
            units,
            segments,
        }
    }

    fn ucs2(units: usize, segments: usize) -> Segments {
        Segments {
            encoding: Encoding::Ucs2,
            units,
            segments,
        }
    }

    #[test]
    fn empty_text_is_one_gsm_segment_of_nothing() {
        assert_eq!(measure(""), gsm(0, 1));
    }

    #[test]
    fn gsm_text_fits_one_segment_up_to_160_septets() {
        assert_eq!(measure(&"a".repeat(160)), gsm(160, 1));
        assert_eq!(measure(&"a".repeat(161)), gsm(161, 2));
        assert_eq!(measure(&"a".repeat(306)), gsm(306, 2));
        assert_eq!(measure(&"a".repeat(307)), gsm(307, 3));
    }

    #[test]
    fn ucs2_text_fits_one_segment_up_to_70_units() {
        assert_eq!(measure(&"é中".repeat(35)), ucs2(70, 1));
        assert_eq!(measure(&"中".repeat(71)), ucs2(71, 2));
        assert_eq!(measure(&"中".repeat(134)), ucs2(134, 2));
        assert_eq!(measure(&"中".repeat(135)), ucs2(135, 3));
    }

    #[test]
    fn chinese_text_is_ucs2() {
        assert_eq!(measure("您的验证码是 123456"), ucs2(13, 1));
    }

    #[test]
    fn one_character_outside_gsm_makes_the_whole_text_ucs2() {
        let text = format!("{}`", "a".repeat(69));
        assert_eq!(measure(&text), ucs2(70, 1));
        assert_eq!(measure("Hello, Łódź"), ucs2(11, 1));
        assert_eq!(measure("tab\there"), ucs2(8, 1));
    }

    #[test]
    fn gsm_accented_and_greek_letters_take_one_septet() {
        assert_eq!(measure("Ça coute 5£ à ΔΦΓ"), gsm(17, 1));
    }

    #[test]
    fn accents_outside_the_gsm_tables_make_the_text_ucs2() {
        assert_eq!(measure("Ça coûte 5£"), ucs2(11, 1));
        // GSM 03.38 has the capital Ç only; the lower-case ç is not in either table.
        assert_eq!(measure("garçon"), ucs2(6, 1));
    }

    #[test]
    fn euro_sign_and_extension_characters_take_two_septets() {
        assert_eq!(measure("€"), gsm(2, 1));
        assert_eq!(measure("Total: 5€ [VAT {incl}]"), gsm(27, 1));
        assert_eq!(measure("^{}\\[~]|\x0c€"), gsm(20, 1));
        assert_eq!(measure(&"€".repeat(80)), gsm(160, 1));
        assert_eq!(measure(&"€".repeat(81)), gsm(162, 2));
    }

    #[test]
    fn escape_pair_at_the_segment_boundary_moves_to_the_next_segment() {
        // 152 septets then `{`: its escape would be septet 153 and the `{` septet 154.
        let straddles = format!("{}{{{}", "a".repeat(152), "a".repeat(152));
        assert_eq!(measure(&straddles), gsm(306, 3));
        // Without the straddle the same 306 septets fill exactly two segments.
        let fits = format!("{}{{{}", "a".repeat(151), "a".repeat(153));
        assert_eq!(measure(&fits), gsm(306, 2));
    }

    #[test]
    fn surrogate_pair_at_the_segment_boundary_moves_to_the_next_segment() {
        let straddles = format!("{}😀{}", "中".repeat(66), "中".repeat(66));
        assert_eq!(measure(&straddles), ucs2(134, 3));
        let fits = format!("{}😀{}", "中".repeat(65), "中".repeat(67));
        assert_eq!(measure(&fits), ucs2(134, 2));
    }

    #[test]
    fn emoji_are_two_ucs2_units() {
        assert_eq!(measure("ok 👍"), ucs2(5, 1));
        assert_eq!(measure(&"😀".repeat(35)), ucs2(70, 1));
        assert_eq!(measure(&"😀".repeat(36)), ucs2(72, 2));
    }

    #[test]
    fn mixed_text_counts_every_character_in_the_chosen_encoding() {
        assert_eq!(measure("Order #42: 3×€5"), ucs2(15, 1), "× is not GSM");
        assert_eq!(measure("Order #42: 3x€5 ~ ok\r\n"), gsm(24, 1));
    }

    /// The `sms_splitter` crate, a port of the `split-sms` JavaScript package, as an
    /// oracle. With default options it uses the same tables (extension characters
    /// and form feed count 2), the same limits, moves escape and surrogate pairs to
    /// the next segment and measures the empty text as one GSM part, so its answer
    /// must match ours on any input.
    fn oracle(text: &str) -> Segments {
        let owned = String::from(text);
        let split = sms_splitter::SplitSms::default().split(owned);
        let (encoding, units) = match split.character_set.as_str() {
            "GSM" => (Encoding::Gsm7, split.bytes),
            "Unicode" => (Encoding::Ucs2, split.bytes / 2),
            other => panic!("unexpected character set {other}"),
        };
        Segments {
            encoding,
            units,
            segments: split.parts.len(),
        }
    }

    fn text_of(alphabet: &'static [char], max_len: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(alphabet), 0..=max_len)
            .prop_map(|chars| chars.into_iter().collect())
    }

    const GSM_ALPHABET: &[char] = &[
        'a', 'Z', '0', ' ', '@', '$', '_', '\n', '\r', 'é', 'Δ', 'Ç', 'ß', '¿', '{', '€', '|',
        '\x0c', '^', '~',
    ];
    /// Characters of one unit in either encoding, so that long texts take the
    /// path that divides instead of packing.
    const ONE_SEPTET_ASCII: &[char] = &['a', 'Z', '0', ' ', '@', '$', '_', '\n', '.'];
    const ONE_UNIT_UCS2: &[char] = &['a', ' ', '中', '文', '`', '\t', 'é', 'Ł'];
    const ANY_ALPHABET: &[char] = &[
        'a', ' ', 'é', '€', '{', '中', '文', 'ç', '`', '\t', 'Ł', '😀', '👍', '𝄞',
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn gsm_text_matches_the_oracle(text in text_of(GSM_ALPHABET, 480)) {
            prop_assert_eq!(measure(&text), oracle(&text));
        }

        #[test]
        fn one_septet_text_matches_the_oracle(text in text_of(ONE_SEPTET_ASCII, 480)) {
            prop_assert_eq!(measure(&text), oracle(&text));
        }

        #[test]
        fn one_unit_text_matches_the_oracle(text in text_of(ONE_UNIT_UCS2, 220)) {
            prop_assert_eq!(measure(&text), oracle(&text));
        }

        #[test]
        fn any_text_matches_the_oracle(text in text_of(ANY_ALPHABET, 220)) {
            prop_assert_eq!(measure(&text), oracle(&text));
        }

        #[test]
        fn arbitrary_strings_match_the_oracle(text in any::<String>()) {
            prop_assert_eq!(measure(&text), oracle(&text));
        }
    }
}
