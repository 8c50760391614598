//! A text as `submit_sm` short messages: the alphabet [`crate::sms::measure`]
//! chooses (GSM 7-bit, packed or one septet an octet, as `data_coding` 0; or
//! UCS-2 as `data_coding` 8), split into the same number of segments it counts,
//! each tied to the others by a user data header or by the SAR TLVs.

use crate::sms::{self, Encoding};

use super::settings::LongMessages;

/// `data_coding` of the SMSC's default alphabet (GSM 7-bit).
pub(crate) const DATA_CODING_GSM: u8 = 0;
/// `data_coding` of UCS-2.
pub(crate) const DATA_CODING_UCS2: u8 = 8;

/// One `submit_sm`'s worth of a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub data_coding: u8,
    /// The short message starts with a user data header (`esm_class` UDHI).
    pub udhi: bool,
    pub short_message: Vec<u8>,
    /// `(reference, total, number from 1)` for the SAR TLVs.
    pub sar: Option<(u16, u8, u8)>,
}

/// Septets of one GSM 7-bit single message, and of each concatenated segment.
const GSM_SINGLE: usize = 160;
const GSM_SEGMENT: usize = 153;
/// UTF-16 units of one UCS-2 single message, and of each concatenated segment.
const UCS2_SINGLE: usize = 70;
const UCS2_SEGMENT: usize = 67;
/// The escape septet before an extension-table character.
const ESCAPE: u8 = 0x1B;
/// CR, the septet that fills a packed text's last octet (GSM 03.38 6.1.2.3.1).
const PADDING: u8 = 0x0D;

/// Splits `text` into segments as [`sms::measure`] counts them. `reference` ties
/// a long message's segments together (its low 8 bits in a header, all 16 in
/// SAR); `packed` packs GSM 7-bit septets. A text of more than 255 segments
/// cannot be sent.
pub(crate) fn segments(
    text: &str,
    packed: bool,
    long: LongMessages,
    reference: u16,
) -> Result<Vec<Segment>, String> {
    let measured = sms::measure(text);
    let (data_coding, units, single, each): (u8, Vec<Vec<u8>>, usize, usize) =
        match measured.encoding {
            Encoding::Gsm7 => (
                DATA_CODING_GSM,
                text.chars()
                    .map(|c| gsm_septets(c).ok_or_else(|| format!("{c:?} is not GSM 7-bit")))
                    .collect::<Result<_, _>>()?,
                GSM_SINGLE,
                GSM_SEGMENT,
            ),
            Encoding::Ucs2 => (
                DATA_CODING_UCS2,
                text.chars()
                    .map(|c| {
                        let mut buf = [0u16; 2];
                        c.encode_utf16(&mut buf)
                            .iter()
                            .flat_map(|u| u.to_be_bytes())
                            .collect()
                    })
                    .collect(),
                UCS2_SINGLE,
                UCS2_SEGMENT,
            ),
        };
    // Units of a character: septets, or UTF-16 code units (2 octets each).
    let width = |c: &Vec<u8>| match measured.encoding {
        Encoding::Gsm7 => c.len(),
        Encoding::Ucs2 => c.len() / 2,
    };
    let parts: Vec<Vec<u8>> = if measured.units <= single {
        vec![units.concat()]
    } else {
        let mut parts = vec![Vec::new()];
        let mut used = 0;
        for c in &units {
            if used + width(c) > each {
                parts.push(Vec::new());
                used = 0;
            }
            used += width(c);
            parts
                .last_mut()
                .expect("starts with one")
                .extend_from_slice(c);
        }
        parts
    };
    debug_assert_eq!(parts.len(), measured.segments);
    let total = u8::try_from(parts.len()).map_err(|_| {
        format!(
            "the text is {} segments; at most 255 can be tied",
            parts.len()
        )
    })?;
    let gsm = measured.encoding == Encoding::Gsm7;
    Ok(parts
        .into_iter()
        .zip(1u8..)
        .map(|(body, number)| {
            let header = (total > 1 && long == LongMessages::Udh).then_some([
                0x05,
                0x00,
                0x03,
                reference as u8,
                total,
                number,
            ]);
            let short_message = match (gsm && packed, header) {
                (true, Some(header)) => pack_after(&header, &body),
                (true, None) => pack_after(&[], &body),
                (false, Some(header)) => [&header[..], &body].concat(),
                (false, None) => body,
            };
            Segment {
                data_coding,
                udhi: header.is_some(),
                short_message,
                sar: (total > 1 && long == LongMessages::Sar).then_some((reference, total, number)),
            }
        })
        .collect())
}

/// `header` followed by `septets` packed 7 bits at a time, least significant
/// bit first, the first septet starting on a septet boundary after the header
/// (so 1 fill bit after a 6-octet header). When the septets leave 7 bits of the
/// last octet, room for one more that a reader would take for `@`, those bits
/// are a CR, which GSM 03.38 has readers drop as padding.
pub(crate) fn pack_after(header: &[u8], septets: &[u8]) -> Vec<u8> {
    let header_bits = header.len() * 8;
    let start = header_bits.div_ceil(7) * 7;
    let total_bits = start + septets.len() * 7;
    let mut out = vec![0u8; total_bits.div_ceil(8)];
    out[..header.len()].copy_from_slice(header);
    let padding = (out.len() * 8 - total_bits == 7).then_some(PADDING);
    for (i, &septet) in septets.iter().chain(&padding).enumerate() {
        let bit = start + i * 7;
        let (byte, shift) = (bit / 8, bit % 8);
        let value = u16::from(septet & 0x7F) << shift;
        out[byte] |= value as u8;
        if shift > 1 {
            out[byte + 1] |= (value >> 8) as u8;
        }
    }
    out
}

/// Every septet packed after `header_len` octets, as many as the octets hold,
/// without a CR that only fills the last octet (see [`pack_after`]).
pub(crate) fn unpack_all(octets: &[u8], header_len: usize) -> Vec<u8> {
    let bits = (octets.len() * 8).saturating_sub((header_len * 8).div_ceil(7) * 7);
    let mut septets = unpack_after(octets, header_len, bits / 7);
    if bits.is_multiple_of(7) && septets.last() == Some(&PADDING) {
        septets.pop();
    }
    septets
}

/// Unpacks `count` septets packed after `header_len` octets: [`pack_after`]'s inverse.
pub(crate) fn unpack_after(octets: &[u8], header_len: usize, count: usize) -> Vec<u8> {
    let start = (header_len * 8).div_ceil(7) * 7;
    (0..count)
        .map(|i| {
            let bit = start + i * 7;
            let (byte, shift) = (bit / 8, bit % 8);
            let low = u16::from(octets.get(byte).copied().unwrap_or(0));
            let high = u16::from(octets.get(byte + 1).copied().unwrap_or(0));
            (((high << 8 | low) >> shift) & 0x7F) as u8
        })
        .collect()
}

/// The septets of `c` in GSM 03.38: one from the default alphabet, or the
/// escape and one from the extension table; `None` outside both.
pub(crate) fn gsm_septets(c: char) -> Option<Vec<u8>> {
    if c == char::from(ESCAPE) {
        return None;
    }
    if let Some(i) = DEFAULT.iter().position(|&d| d == c) {
        return Some(vec![i as u8]);
    }
    EXTENSION
        .iter()
        .find(|(e, _)| *e == c)
        .map(|&(_, code)| vec![ESCAPE, code])
}

/// Decodes GSM 7-bit septets (one an octet) to text; unknown codes read as `?`.
pub(crate) fn gsm_decode(septets: &[u8]) -> String {
    let mut text = String::new();
    let mut escaped = false;
    for &s in septets {
        if escaped {
            escaped = false;
            text.push(
                EXTENSION
                    .iter()
                    .find(|(_, code)| *code == s)
                    .map_or('?', |&(c, _)| c),
            );
        } else if s == ESCAPE {
            escaped = true;
        } else {
            text.push(DEFAULT.get(usize::from(s)).copied().unwrap_or('?'));
        }
    }
    text
}

/// The GSM 03.38 default alphabet by code. At 0x1B, the escape, stands U+001B:
/// a control character [`sms::measure`] sends as UCS-2, so no GSM text has it.
const DEFAULT: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1B}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The extension table: each character after the escape.
const EXTENSION: [(char, u8); 10] = [
    ('\x0c', 0x0A),
    ('^', 0x14),
    ('{', 0x28),
    ('}', 0x29),
    ('\\', 0x2F),
    ('[', 0x3C),
    ('~', 0x3D),
    (']', 0x3E),
    ('|', 0x40),
    ('€', 0x65),
];

#[cfg(test)]
mod tests;
