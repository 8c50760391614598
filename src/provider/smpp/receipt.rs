//! What a `deliver_sm` carries: a delivery receipt (`esm_class` says so) read
//! from its `id: … stat: … err: …` text and its `receipted_message_id` and
//! `message_state` TLVs, or a message a person sent ([`InboundReply`]).

use sha2::{Digest, Sha256};

use super::submit::{gsm_decode, unpack_all};
use crate::domain::DeliveryReport;
use crate::provider::InboundReply;

/// A `deliver_sm` as read from the wire, before it is understood.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Incoming {
    pub esm_class: u8,
    pub source_ton: u8,
    pub source: String,
    pub destination: String,
    pub data_coding: u8,
    pub short_message: Vec<u8>,
    /// `message_payload`, used when the short message is empty.
    pub payload: Option<Vec<u8>>,
    pub receipted_message_id: Option<String>,
    pub message_state: Option<u8>,
}

/// What a `deliver_sm` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// A delivery receipt: its final report, or `None` for an intermediate state
    /// (`ENROUTE`, `ACCEPTD`), which is acknowledged and dropped.
    Receipt(Option<DeliveryReport>),
    /// A message a person sent.
    Reply(InboundReply),
    /// A receipt without a message id: acknowledged and dropped, as it matches nothing.
    Unreadable(String),
}

/// `esm_class` bits 2–5: the message type. 0x04 is an SMSC delivery receipt,
/// 0x08 and 0x10 SME acknowledgements, 0x20 an intermediate notification.
const RECEIPT_TYPES: u8 = 0b0011_1100;
/// `esm_class` bit 6: the short message starts with a user data header.
const UDHI: u8 = 0b0100_0000;

/// Reads `incoming`; `now_ms` goes into a reply's key (see [`reply_key`]).
pub(crate) fn read(incoming: &Incoming, now_ms: i64) -> Delivered {
    let text = text_of(incoming);
    if incoming.esm_class & RECEIPT_TYPES == 0 {
        return Delivered::Reply(InboundReply {
            key: reply_key(incoming, &text, now_ms),
            from: e164_or_as_is(incoming.source_ton, &incoming.source),
            to: Some(incoming.destination.clone()).filter(|d| !d.is_empty()),
            body: text,
            at_ms: None,
        });
    }
    let fields = ReceiptText::parse(&text);
    let Some(id) = incoming
        .receipted_message_id
        .clone()
        .or(fields.id)
        .filter(|id| !id.is_empty())
    else {
        return Delivered::Unreadable(format!("a delivery receipt without a message id: {text:?}"));
    };
    let stat = fields.stat.map(|s| s.to_ascii_uppercase());
    let delivered = match (incoming.message_state, stat.as_deref()) {
        // message_state: 2 delivered; 3 expired, 4 deleted, 5 undeliverable,
        // 8 rejected, 7 unknown: final; 1 enroute, 6 accepted, 0 scheduled: not.
        (Some(2), _) => true,
        (Some(3 | 4 | 5 | 7 | 8), _) => false,
        (Some(_), _) => return Delivered::Receipt(None),
        (None, Some("DELIVRD")) => true,
        (None, Some("EXPIRED" | "DELETED" | "UNDELIV" | "REJECTD" | "UNKNOWN")) => false,
        (None, _) => return Delivered::Receipt(None),
    };
    let err = fields.err.filter(|e| !e.bytes().all(|b| b == b'0'));
    let code = match (stat, err) {
        (Some(stat), Some(err)) => Some(format!("{stat}/{err}")),
        (Some(stat), None) => Some(stat),
        (None, err) => err,
    };
    Delivered::Receipt(Some(DeliveryReport {
        provider_message_id: id,
        // The SMSC's form of the number may differ from the one sent to; ids
        // are unique at an SMSC, so the report is matched by id alone.
        to: None,
        delivered,
        code,
        at_ms: None,
    }))
}

/// The fields of a receipt's text, SMPP 3.4 appendix B:
/// `id:IIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:E text:…`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ReceiptText {
    pub id: Option<String>,
    pub stat: Option<String>,
    pub err: Option<String>,
}

impl ReceiptText {
    /// Reads the fields wherever they are and in any case; `text:` ends it.
    pub fn parse(text: &str) -> ReceiptText {
        let mut fields = ReceiptText::default();
        let lower = text.to_ascii_lowercase();
        let end = lower.find("text:").unwrap_or(lower.len());
        for token in text[..end].split_ascii_whitespace() {
            let Some((key, value)) = token.split_once(':') else {
                continue;
            };
            let value = Some(value.to_string()).filter(|v| !v.is_empty());
            match key.to_ascii_lowercase().as_str() {
                "id" => fields.id = value,
                "stat" => fields.stat = value,
                "err" => fields.err = value,
                _ => {}
            }
        }
        fields
    }
}

/// The text of a `deliver_sm`: its short message (or payload) without a user
/// data header, decoded by `data_coding` (GSM 7-bit one septet an octet, or
/// packed when the octets say so; Latin-1; UCS-2; else as UTF-8, lossily).
fn text_of(incoming: &Incoming) -> String {
    let raw = match &incoming.payload {
        Some(payload) if incoming.short_message.is_empty() => payload.as_slice(),
        _ => incoming.short_message.as_slice(),
    };
    let header = if incoming.esm_class & UDHI != 0 {
        raw.first()
            .map_or(0, |&len| usize::from(len) + 1)
            .min(raw.len())
    } else {
        0
    };
    let body = &raw[header..];
    match incoming.data_coding {
        0 if body.iter().any(|&b| b > 0x7F) => {
            // Octets above 0x7F: the septets are packed.
            gsm_decode(&unpack_all(raw, header))
        }
        0 => gsm_decode(body),
        3 => body.iter().map(|&b| char::from(b)).collect(),
        8 => char::decode_utf16(
            body.chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]])),
        )
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect(),
        _ => String::from_utf8_lossy(body).into_owned(),
    }
}

/// A reply's key: SMPP gives a `deliver_sm` no id, so it is a hash of the
/// sender, the number written to, the text and the minute it arrived in — the
/// same `deliver_sm` sent again within the minute is one reply.
fn reply_key(incoming: &Incoming, text: &str, now_ms: i64) -> String {
    let mut hash = Sha256::new();
    for part in [
        incoming.source.as_str(),
        incoming.destination.as_str(),
        text,
        &(now_ms / 60_000).to_string(),
    ] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex::encode(hash.finalize())
}

/// A number as E.164 when its type says international (or it is all digits),
/// else as written.
fn e164_or_as_is(ton: u8, addr: &str) -> String {
    let digits = addr.strip_prefix('+').unwrap_or(addr);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && (ton == 1 || ton == 0) {
        format!("+{digits}")
    } else {
        addr.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(text: &str) -> Incoming {
        Incoming {
            esm_class: 0x04,
            source_ton: 1,
            source: "447700900123".into(),
            destination: "Herald".into(),
            short_message: text.as_bytes().to_vec(),
            ..Incoming::default()
        }
    }

    #[test]
    fn the_appendix_receipt_text_is_read() {
        let text = "id:0123456789 sub:001 dlvrd:001 submit date:2506011200 done date:2506011201 stat:DELIVRD err:000 text:Hello";
        assert_eq!(
            ReceiptText::parse(text),
            ReceiptText {
                id: Some("0123456789".into()),
                stat: Some("DELIVRD".into()),
                err: Some("000".into()),
            }
        );
        let Delivered::Receipt(Some(report)) = read(&receipt(text), 0) else {
            panic!("a final receipt");
        };
        assert_eq!(report.provider_message_id, "0123456789");
        assert!(report.delivered);
        assert_eq!(report.code.as_deref(), Some("DELIVRD"));
    }

    #[test]
    fn a_failed_receipt_carries_its_state_and_error() {
        let text = "id:ab12 sub:001 dlvrd:000 submit date:2506011200 done date:2506011201 stat:UNDELIV err:001 text:x";
        let Delivered::Receipt(Some(report)) = read(&receipt(text), 0) else {
            panic!("a final receipt");
        };
        assert!(!report.delivered);
        assert_eq!(report.code.as_deref(), Some("UNDELIV/001"));
    }

    #[test]
    fn the_tlvs_win_over_the_text() {
        let mut incoming = receipt("id:text-id stat:UNDELIV err:001");
        incoming.receipted_message_id = Some("tlv-id".into());
        incoming.message_state = Some(2);
        let Delivered::Receipt(Some(report)) = read(&incoming, 0) else {
            panic!("a final receipt");
        };
        assert_eq!(report.provider_message_id, "tlv-id");
        assert!(report.delivered);
    }

    #[test]
    fn intermediate_states_give_no_report() {
        assert_eq!(
            read(&receipt("id:1 stat:ENROUTE err:000"), 0),
            Delivered::Receipt(None)
        );
        assert_eq!(
            read(&receipt("id:1 stat:ACCEPTD err:000"), 0),
            Delivered::Receipt(None)
        );
        assert!(matches!(
            read(&receipt("stat:DELIVRD"), 0),
            Delivered::Unreadable(_)
        ));
    }

    #[test]
    fn other_deliver_sm_are_replies_with_a_key_stable_within_the_minute() {
        let incoming = Incoming {
            source_ton: 1,
            source: "447700900123".into(),
            destination: "447700900000".into(),
            data_coding: 8,
            short_message: vec![0x00, 0x53, 0x00, 0x54, 0x00, 0x4F, 0x00, 0x50],
            ..Incoming::default()
        };
        let Delivered::Reply(reply) = read(&incoming, 60_000) else {
            panic!("a reply");
        };
        assert_eq!(reply.from, "+447700900123");
        assert_eq!(reply.body, "STOP");
        assert_eq!(reply.to.as_deref(), Some("447700900000"));
        let Delivered::Reply(again) = read(&incoming, 119_999) else {
            panic!("a reply");
        };
        assert_eq!(again.key, reply.key);
        let Delivered::Reply(later) = read(&incoming, 120_000) else {
            panic!("a reply");
        };
        assert_ne!(later.key, reply.key);
    }

    #[test]
    fn gsm_replies_are_decoded_with_their_extension_characters() {
        let incoming = Incoming {
            source: "Alice".into(),
            source_ton: 5,
            short_message: vec![0x48, 0x69, 0x1B, 0x65, 0x11],
            ..Incoming::default()
        };
        let Delivered::Reply(reply) = read(&incoming, 0) else {
            panic!("a reply");
        };
        assert_eq!(reply.body, "Hi€_");
        assert_eq!(reply.from, "Alice");
    }

    #[test]
    fn a_packed_reply_drops_the_cr_that_fills_its_last_octet() {
        let septets: Vec<u8> = "Reply ok".bytes().take(7).collect();
        let incoming = Incoming {
            source: "Alice".into(),
            source_ton: 5,
            short_message: super::super::submit::pack_after(&[], &septets),
            ..Incoming::default()
        };
        let Delivered::Reply(reply) = read(&incoming, 0) else {
            panic!("a reply");
        };
        assert_eq!(reply.body, "Reply o");
    }
}
