//! iperf2's UDP datagrams, read as mcblast reads its own (`recv --format iperf2`).
//!
//! Every UDP datagram an iperf2 client sends (2.0.x and 2.1.x) starts with,
//! in network byte order:
//!
//! ```text
//!  0        4         8          12       16
//!  +--------+---------+----------+--------+------------------------
//!  |   id   | tv_sec  | tv_usec  |  id2   | client header (flags, ...)
//!  +--------+---------+----------+--------+------------------------
//! ```
//!
//! * `id` is the datagram's sequence number, 1 for the first datagram of a
//!   test; `id2` is its upper 32 bits when the client sets
//!   [`HEADER_SEQNO64B`] in the flags word at offset 16 (2.1 clients
//!   always do). Without that flag `id` is a signed 32-bit number and `id2`
//!   is not read.
//! * A negative id marks the client's final datagram(s) (the FIN): `-n`,
//!   where `n` is the id the next data datagram would have had, so the test
//!   sent `n - 1` data datagrams. A multicast client sends it once, so a
//!   lost FIN (or a killed client) leaves the tail unknown.
//! * `tv_sec`/`tv_usec` are the send time from `gettimeofday`
//!   (CLOCK_REALTIME, UTC): [`parse`] converts it to CLOCK_TAI with the
//!   receiver's TAI−UTC offset ([`Reading::tai_minus_utc_ns`]).
//!
//! The tracker counts sequence numbers from 0, so data datagram `id` is
//! sequence `id - 1` and the FIN `-n` announces `n - 1` datagrams.
//!
//! iperf2 datagrams carry no magic, so what is not iperf2 is told by
//! what iperf2 never sends: a microsecond field of a million or more, a
//! data id of 0, a 64-bit id whose upper half is out of range, or an
//! mcblast header. Such datagrams are foreign and never touch a flow.

use crate::wire::{Header, Kind, MAGIC, WireError};

/// Bytes of the part read: id, tv_sec, tv_usec, id2 and the flags word.
pub const PEEK_LEN: usize = 20;
/// Shortest iperf2 datagram counted: the id, the time stamp and `id2`.
/// iperf2 itself sends at least its client header (more than this).
pub const MIN_LEN: usize = PEEK_LEN;

/// Flags word bit: the id is 64 bits, its upper half in `id2`.
pub const HEADER_SEQNO64B: u32 = 0x0800_0000;

/// Largest upper half of a 64-bit id accepted: no test sends 2^48
/// datagrams, and random bytes rarely fall below it.
const MAX_ID_HIGH: u32 = 0xffff;

/// What the receiver adds to an iperf2 datagram that the datagram does not
/// carry itself: how to turn its UTC time into TAI, and what is known about
/// the sender's clock (iperf2 sends no clock identity or sync flag).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    /// CLOCK_TAI − CLOCK_REALTIME of the receiver, ns (its TAI−UTC offset).
    pub tai_minus_utc_ns: u64,
    /// The clock identity given to every iperf2 flow (the receiver's own
    /// when the user says sender and receiver share one clock, else 0).
    pub clock: u32,
    /// The header flags given to every iperf2 flow
    /// ([`crate::wire::FLAG_CLOCK_SYNCED`] and the TAI offset when the
    /// user says the sender's clock is synchronised).
    pub flags: u16,
    pub _pad: u16,
}

#[inline(always)]
fn be32(b: &[u8; PEEK_LEN], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses the first [`PEEK_LEN`] bytes of an iperf2 datagram of
/// `datagram_len` bytes (its UDP payload), sent from UDP port `sport` to
/// `dport`, into the header the tracker takes: the flow is the port pair
/// (`run` = destination port, `flow` = source port).
#[inline(always)]
pub fn parse(b: &[u8; PEEK_LEN], datagram_len: usize, sport: u16, dport: u16, r: &Reading) -> Result<Header, WireError> {
    if datagram_len < MIN_LEN {
        return Err(WireError::Truncated);
    }
    if b[0..4] == MAGIC {
        return Err(WireError::NotIperf2);
    }
    let (id, sec, usec, id2, flags) = (be32(b, 0), be32(b, 4), be32(b, 8), be32(b, 12), be32(b, 16));
    if usec >= 1_000_000 {
        return Err(WireError::NotIperf2);
    }
    let id = if flags & HEADER_SEQNO64B != 0 {
        let high_ok = if id2 & 0x8000_0000 != 0 { !id2 <= MAX_ID_HIGH } else { id2 <= MAX_ID_HIGH };
        if !high_ok {
            return Err(WireError::NotIperf2);
        }
        (((id2 as u64) << 32) | id as u64) as i64
    } else {
        id as i32 as i64
    };
    let (kind, seq) = match id {
        0 => return Err(WireError::NotIperf2),
        n if n > 0 => (Kind::Data, (n - 1) as u64),
        n => (Kind::End, n.unsigned_abs() - 1),
    };
    let utc_ns = (sec as u64) * 1_000_000_000 + (usec as u64) * 1_000;
    Ok(Header {
        kind,
        flags: r.flags,
        run: dport as u32,
        flow: sport as u32,
        seq,
        tx_ns: utc_ns.wrapping_add(r.tai_minus_utc_ns),
        len: datagram_len as u32,
        clock: r.clock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first 20 bytes of datagrams iperf 2.1.8 sent (`iperf -c 239.9.9.9
    /// -u -T 1 -b 10M -l 1000`), captured on loopback: the first data
    /// datagram and the FIN after 396 data datagrams.
    const FIRST: &str = "000000016b1577790001d17d0000000048010098";
    const FIN: &str = "fffffe736b15777900066b23ffffffff48010098";

    fn bytes(hex: &str) -> [u8; PEEK_LEN] {
        let mut b = [0u8; PEEK_LEN];
        for (i, out) in b.iter_mut().enumerate() {
            *out = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        b
    }

    const R: Reading = Reading { tai_minus_utc_ns: 37_000_000_000, clock: 7, flags: 1, _pad: 0 };

    #[test]
    fn reads_captured_iperf_2_1_8_datagrams() {
        let h = parse(&bytes(FIRST), 1000, 57299, 5001, &R).unwrap();
        assert_eq!((h.kind, h.seq, h.run, h.flow, h.len, h.clock, h.flags), (Kind::Data, 0, 5001, 57299, 1000, 7, 1));
        assert_eq!(h.tx_ns, (0x6b15_7779u64 * 1_000_000_000 + 0x1d17d * 1000) + 37_000_000_000);
        let end = parse(&bytes(FIN), 1000, 57299, 5001, &R).unwrap();
        assert_eq!((end.kind, end.seq), (Kind::End, 396), "FIN -397: 396 data datagrams");
    }

    #[test]
    fn ids_of_32_bits_are_signed() {
        let mut b = bytes(FIRST);
        b[16..20].copy_from_slice(&0u32.to_be_bytes()); // a 2.0 client: no 64-bit flag
        b[12..16].copy_from_slice(&0x8000_0000u32.to_be_bytes()); // id2 is its flags there: not read
        b[0..4].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(parse(&b, 100, 1, 2, &R).map(|h| (h.kind, h.seq)), Ok((Kind::End, 4)));
        b[0..4].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
        assert_eq!(parse(&b, 100, 1, 2, &R).map(|h| (h.kind, h.seq)), Ok((Kind::Data, 0x7fff_fffe)));
    }

    #[test]
    fn ids_of_64_bits_cross_the_32_bit_boundary() {
        let mut b = bytes(FIRST);
        b[0..4].copy_from_slice(&0x8000_0000u32.to_be_bytes());
        assert_eq!(parse(&b, 100, 1, 2, &R).map(|h| (h.kind, h.seq)), Ok((Kind::Data, 0x7fff_ffff)));
        b[0..4].copy_from_slice(&5u32.to_be_bytes());
        b[12..16].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(parse(&b, 100, 1, 2, &R).map(|h| h.seq), Ok((1u64 << 32) + 4));
        let fin = -((1i64 << 32) + 5);
        b[0..4].copy_from_slice(&(fin as u32).to_be_bytes());
        b[12..16].copy_from_slice(&((fin >> 32) as u32).to_be_bytes());
        assert_eq!(parse(&b, 100, 1, 2, &R).map(|h| (h.kind, h.seq)), Ok((Kind::End, (1u64 << 32) + 4)));
    }

    #[test]
    fn what_iperf2_never_sends_is_foreign() {
        let first = bytes(FIRST);
        assert_eq!(parse(&first, MIN_LEN - 1, 1, 2, &R), Err(WireError::Truncated));
        let mut b = first;
        b[8..12].copy_from_slice(&1_000_000u32.to_be_bytes());
        assert_eq!(parse(&b, 100, 1, 2, &R), Err(WireError::NotIperf2));
        let mut b = first;
        b[0..4].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(parse(&b, 100, 1, 2, &R), Err(WireError::NotIperf2));
        let mut b = first;
        b[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        assert_eq!(parse(&b, 100, 1, 2, &R), Err(WireError::NotIperf2));
        let mut b = first;
        b[0..4].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&5u32.to_be_bytes());
        assert_eq!(parse(&b, 100, 1, 2, &R), Err(WireError::NotIperf2));
    }
}
