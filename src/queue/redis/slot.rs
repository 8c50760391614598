//! Where a message lives: its batch's arrival number and its index.

/// Where a message lives: its batch's arrival number and its index. Also the
/// `row` of its [`Lease`](crate::queue::Lease) (`seq << 32 | index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot {
    pub(super) seq: u32,
    pub(super) index: u32,
}

impl Slot {
    /// Arrival numbers stay below this so a slot fits a lease's non-negative `row`.
    pub(super) const MAX_SEQ: u64 = i32::MAX as u64;

    /// `{seq}:{index}`, both zero-padded to 10 digits so members sort in arrival order.
    pub(super) fn member(self) -> String {
        format!("{:010}:{:010}", self.seq, self.index)
    }

    pub(super) fn parse_member(member: &str) -> Option<Slot> {
        let (seq, index) = member.split_once(':')?;
        let seq = seq.parse().ok()?;
        (u64::from(seq) <= Self::MAX_SEQ).then_some(())?;
        Some(Slot {
            seq,
            index: index.parse().ok()?,
        })
    }

    pub(super) fn row(self) -> i64 {
        (i64::from(self.seq) << 32) | i64::from(self.index)
    }

    pub(super) fn from_row(row: i64) -> Option<Slot> {
        let seq = u32::try_from(row >> 32).ok()?;
        Some(Slot {
            seq,
            index: (row & 0xffff_ffff) as u32,
        })
    }
}
