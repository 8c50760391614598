//! What an SMSC's `command_status` on a `submit_sm_resp` means for the message:
//! SMPP 3.4's codes mapped to Herald's outcomes ([`Error`]).

use std::time::Duration;

use super::super::Error;

/// How long a throttled or queue-full submit waits before the next try, when the
/// SMSC says nothing of it (SMPP has no retry-after).
pub(crate) const THROTTLE_WAIT: Duration = Duration::from_secs(1);

/// The outcome of a submit the SMSC refused with `status` (not 0), whose name
/// is `name`.
pub(crate) fn refusal(status: u32, name: &str) -> Error {
    let reason = format!("the SMSC refused the submit: {name} (0x{status:08X})");
    match status {
        // ESME_RTHROTTLED, ESME_RMSGQFUL: the account is sending too fast or the
        // SMSC's queue is full. They pace; they never fail a message.
        0x58 | 0x14 => Error::throttled(reason, Some(THROTTLE_WAIT)),
        // ESME_RINVDSTADR, ESME_RINVDSTTON, ESME_RINVDSTNPI: this destination
        // cannot be sent to. ESME_RINVDESTFLAG and ESME_RINVNUMDESTS are about
        // submit_multi, which Herald does not send.
        0x0B | 0x50 | 0x51 => Error::Undeliverable { reason },
        // The request itself: its length, command, source address, service type,
        // esm_class, flags, data coding, TLVs, a prohibited or unauthorised
        // service. Sending it again cannot help.
        0x01
        | 0x02
        | 0x03
        | 0x06
        | 0x07
        | 0x0A
        | 0x15
        | 0x43
        | 0x48
        | 0x49
        | 0x53
        | 0x54
        | 0x61
        | 0x62
        | 0x63
        | 0xC0..=0xC4
        | 0x100..=0x106 => Error::Permanent { reason },
        // Not bound (ESME_RINVBNDSTS, ESME_RALYBND), system errors, submit failed,
        // ESME_RX_T_APPN, unknown errors and codes of the SMSC's own: worth trying again.
        _ => Error::Transient {
            reason,
            retry_after: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_and_full_queue_pace_without_failing() {
        assert!(refusal(0x58, "ESME_RTHROTTLED").is_throttle());
        assert!(refusal(0x14, "ESME_RMSGQFUL").is_throttle());
    }

    #[test]
    fn an_invalid_destination_is_undeliverable_and_a_bad_request_permanent() {
        for status in [0x0B, 0x50, 0x51] {
            assert!(matches!(refusal(status, "x"), Error::Undeliverable { .. }));
        }
        for status in [0x0A, 0x104, 0x43] {
            assert!(matches!(refusal(status, "x"), Error::Permanent { .. }));
        }
    }

    #[test]
    fn bind_and_system_errors_are_transient() {
        for status in [0x04, 0x08, 0x45, 0x64, 0xFF, 0x400] {
            assert!(
                matches!(refusal(status, "x"), Error::Transient { .. }),
                "{status:#x}"
            );
        }
    }
}
