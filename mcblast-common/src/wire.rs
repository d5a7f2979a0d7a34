//! The mcblast datagram header.
//!
//! Every mcblast datagram (the UDP payload) starts with this 40-byte header,
//! all integers in network byte order:
//!
//! ```text
//!  0        4    5    6        8        12       16               24               32       36       40
//!  +--------+----+----+--------+--------+--------+----------------+----------------+--------+--------+
//!  | magic  |ver |kind| flags  | run id | flow id| sequence (u64) | tx time (u64)  | length | clock  |
//!  +--------+----+----+--------+--------+--------+----------------+----------------+--------+--------+
//! ```
//!
//! * `magic` is `b"MCBL"`, `ver` is [`VERSION`].
//! * `kind` is [`Kind::Data`] or [`Kind::End`]. An end-of-flow marker carries
//!   in its sequence field the number of data datagrams the flow sent (its
//!   final sequence number plus one), so receivers can count tail loss.
//! * `run id` is random per sender run; `flow id` numbers the run's flows.
//! * `tx time` is the send time in nanoseconds of `CLOCK_TAI` (the clock eBPF
//!   reads with `bpf_ktime_get_tai_ns`).
//! * `length` is the whole datagram's length (header and filler), so a
//!   truncated datagram is detected.
//! * `clock` identifies the sender's kernel clock (a hash of its boot id): a
//!   receiver with the same value shares the sender's clock, so its one-way
//!   delay is exact whatever the clock synchronisation says.
//! * flag bit 0 ([`FLAG_CLOCK_SYNCED`]): the sender's clock was synchronised
//!   (NTP/PTP) when the run started.
//!
//! The rest of the datagram is filler; its content is not defined.

/// The four magic bytes every mcblast datagram starts with.
pub const MAGIC: [u8; 4] = *b"MCBL";
/// The header version this crate reads and writes.
pub const VERSION: u8 = 1;
/// Length of the header in bytes.
pub const HEADER_LEN: usize = 40;
/// Flag: the sender's clock was synchronised when the run started.
pub const FLAG_CLOCK_SYNCED: u16 = 1;
/// Flags bits 8..15 carry the sender's TAI−UTC offset in seconds (0 when
/// unknown): the offset is `(flags >> FLAG_TAI_SHIFT) & 0xff`.
pub const FLAG_TAI_SHIFT: u16 = 8;

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..4;
    pub const VERSION: usize = 4;
    pub const KIND: usize = 5;
    pub const FLAGS: Range<usize> = 6..8;
    pub const RUN: Range<usize> = 8..12;
    pub const FLOW: Range<usize> = 12..16;
    pub const SEQ: Range<usize> = 16..24;
    pub const TX_NS: Range<usize> = 24..32;
    pub const LEN: Range<usize> = 32..36;
    pub const CLOCK: Range<usize> = 36..40;
}

/// What a datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A data datagram with a sequence number.
    Data = 0,
    /// An end-of-flow marker; its sequence field is the flow's datagram count.
    End = 1,
}

impl Kind {
    /// The kind for a byte on the wire, if it is one.
    #[inline(always)]
    pub fn from_u8(v: u8) -> Option<Kind> {
        match v {
            0 => Some(Kind::Data),
            1 => Some(Kind::End),
            _ => None,
        }
    }
}

/// Why a buffer is not a valid mcblast datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the header.
    Truncated,
    /// The magic bytes are wrong: not an mcblast datagram.
    BadMagic,
    /// An mcblast datagram of a version this build does not read.
    BadVersion,
    /// Unknown kind byte.
    BadKind,
    /// The length field disagrees with the datagram's real length.
    BadLength,
    /// Sequence number (or end-marker count) u64::MAX: no sender gets there,
    /// and accepting it would wrap the tracker's arithmetic.
    BadSeq,
    /// Not an iperf2 datagram: a field iperf2 never sends that way
    /// (see [`crate::iperf2`]).
    NotIperf2,
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "shorter than the 40-byte mcblast header",
            WireError::BadMagic => "not an mcblast datagram (bad magic)",
            WireError::BadVersion => "unsupported mcblast header version",
            WireError::BadKind => "unknown mcblast datagram kind",
            WireError::BadLength => "length field disagrees with the datagram length",
            WireError::BadSeq => "sequence number out of range",
            WireError::NotIperf2 => "not an iperf2 datagram (time stamp or id out of range)",
        })
    }
}

/// A zero-copy view of an mcblast datagram in a byte buffer.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

#[inline(always)]
fn be_u16(b: &[u8], r: core::ops::Range<usize>) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[r]);
    u16::from_be_bytes(a)
}
#[inline(always)]
fn be_u32(b: &[u8], r: core::ops::Range<usize>) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[r]);
    u32::from_be_bytes(a)
}
#[inline(always)]
fn be_u64(b: &[u8], r: core::ops::Range<usize>) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[r]);
    u64::from_be_bytes(a)
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short one.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds a whole header; after this no accessor panics.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn magic(&self) -> [u8; 4] {
        let mut m = [0u8; 4];
        m.copy_from_slice(&self.buffer.as_ref()[field::MAGIC]);
        m
    }
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }
    pub fn kind_raw(&self) -> u8 {
        self.buffer.as_ref()[field::KIND]
    }
    pub fn flags(&self) -> u16 {
        be_u16(self.buffer.as_ref(), field::FLAGS)
    }
    pub fn run(&self) -> u32 {
        be_u32(self.buffer.as_ref(), field::RUN)
    }
    pub fn flow(&self) -> u32 {
        be_u32(self.buffer.as_ref(), field::FLOW)
    }
    pub fn seq(&self) -> u64 {
        be_u64(self.buffer.as_ref(), field::SEQ)
    }
    pub fn tx_ns(&self) -> u64 {
        be_u64(self.buffer.as_ref(), field::TX_NS)
    }
    pub fn len_field(&self) -> u32 {
        be_u32(self.buffer.as_ref(), field::LEN)
    }
    pub fn clock(&self) -> u32 {
        be_u32(self.buffer.as_ref(), field::CLOCK)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_magic(&mut self) {
        self.buffer.as_mut()[field::MAGIC].copy_from_slice(&MAGIC);
    }
    pub fn set_version(&mut self, v: u8) {
        self.buffer.as_mut()[field::VERSION] = v;
    }
    pub fn set_kind(&mut self, k: Kind) {
        self.buffer.as_mut()[field::KIND] = k as u8;
    }
    pub fn set_flags(&mut self, v: u16) {
        self.buffer.as_mut()[field::FLAGS].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_run(&mut self, v: u32) {
        self.buffer.as_mut()[field::RUN].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_flow(&mut self, v: u32) {
        self.buffer.as_mut()[field::FLOW].copy_from_slice(&v.to_be_bytes());
    }
    /// The per-datagram hot path writes only this and [`Packet::set_tx_ns`].
    #[inline(always)]
    pub fn set_seq(&mut self, v: u64) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&v.to_be_bytes());
    }
    #[inline(always)]
    pub fn set_tx_ns(&mut self, v: u64) {
        self.buffer.as_mut()[field::TX_NS].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_len_field(&mut self, v: u32) {
        self.buffer.as_mut()[field::LEN].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_clock(&mut self, v: u32) {
        self.buffer.as_mut()[field::CLOCK].copy_from_slice(&v.to_be_bytes());
    }
}

/// The parsed header: what a datagram says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub flags: u16,
    pub run: u32,
    pub flow: u32,
    /// Data: the sequence number. End: the flow's data datagram count.
    pub seq: u64,
    /// Send time, ns of CLOCK_TAI.
    pub tx_ns: u64,
    /// Total datagram length, header included.
    pub len: u32,
    /// Sender's clock identity (boot id hash).
    pub clock: u32,
}

impl Header {
    /// Parses and validates a header. `datagram_len` is the real length of the
    /// whole datagram (the UDP payload), which the length field must equal.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>, datagram_len: usize) -> Result<Header, WireError> {
        p.check_len()?;
        if p.magic() != MAGIC {
            return Err(WireError::BadMagic);
        }
        if p.version() != VERSION {
            return Err(WireError::BadVersion);
        }
        let kind = Kind::from_u8(p.kind_raw()).ok_or(WireError::BadKind)?;
        let len = p.len_field();
        if len as usize != datagram_len || (len as usize) < HEADER_LEN {
            return Err(WireError::BadLength);
        }
        let seq = p.seq();
        if seq == u64::MAX {
            return Err(WireError::BadSeq);
        }
        Ok(Header {
            kind,
            flags: p.flags(),
            run: p.run(),
            flow: p.flow(),
            seq,
            tx_ns: p.tx_ns(),
            len,
            clock: p.clock(),
        })
    }

    /// Parses a whole datagram held in `buf`.
    pub fn parse_datagram(buf: &[u8]) -> Result<Header, WireError> {
        Header::parse(&Packet::new_unchecked(buf), buf.len())
    }

    /// Writes the header into the start of `buf`.
    ///
    /// Panics if `buf` is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_magic();
        p.set_version(VERSION);
        p.set_kind(self.kind);
        p.set_flags(self.flags);
        p.set_run(self.run);
        p.set_flow(self.flow);
        p.set_seq(self.seq);
        p.set_tx_ns(self.tx_ns);
        p.set_len_field(self.len);
        p.set_clock(self.clock);
    }
}

/// Datagrams each step of the kernel counter's walk over a GSO or GRO
/// packet counts (each step is a program of its own, reached by a tail
/// call, with this many copies of the tracker for the verifier to check);
/// those of one flow are counted under one hold of the flow's lock. Two in
/// the one-buffer XDP program of kernels before 5.18, whose verifiers run
/// out of budget on four.
pub const WALK_PER_STEP: usize = 4;

/// Most datagrams of one packet the kernel counter counts: [`WALK_PER_STEP`]
/// per tail call, of which the kernel allows 33 a packet. More than any
/// GSO batch (`UDP_MAX_SEGMENTS`, 128 on current kernels) or UDP GRO packet
/// (64, `UDP_GRO_CNT_MAX`) holds; a longer packet's rest would be counted as
/// unwalked, never guessed. (Half as many, 66, in one-buffer XDP before
/// 5.18: still more than mcblast's sender puts in one batch.)
pub const MAX_WALKED: usize = 33 * WALK_PER_STEP;

/// How a UDP payload of `payload_len` bytes is cut into mcblast datagrams,
/// given the length field of the first header in it (`first_len`): the
/// stride between consecutive headers.
///
/// A datagram is its whole payload (stride `payload_len`). A GSO packet (a
/// sender's unsegmented `UDP_SEGMENT` batch that veth and bridges pass whole)
/// or a GRO packet (datagrams the receiver merged, fraglist too) carries
/// several datagrams back to back behind one UDP header whose length covers
/// them all; every one but the last is `gso_size` bytes, and mcblast's
/// datagrams of one flow all have one length, so the first header's own
/// length is that size. Each piece is then parsed and checked on its own.
///
/// A payload whose last piece at that stride could not hold a header is
/// not cut: it is one datagram whose length field is wrong, and the parse
/// of the whole payload says so.
#[inline(always)]
pub fn stride(first_len: u32, payload_len: usize) -> usize {
    let first = first_len as usize;
    if first < HEADER_LEN || first >= payload_len {
        return payload_len;
    }
    let last = payload_len - (payload_len - 1) / first * first;
    if last < HEADER_LEN { payload_len } else { first }
}

/// Number of datagrams a payload of `payload_len` bytes holds at `stride`
/// (the last may be shorter); 0 for an empty payload.
#[inline(always)]
pub fn datagrams(payload_len: usize, stride: usize) -> usize {
    if stride == 0 { 0 } else { payload_len.div_ceil(stride) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BYTES: [u8; 40] = [
        b'M', b'C', b'B', b'L', 1, 0, 0x00, 0x01, // magic, version, kind, flags
        0xde, 0xad, 0xbe, 0xef, // run
        0, 0, 0, 7, // flow
        0, 0, 0, 0, 0, 0, 0x01, 0x02, // seq
        0, 0, 0, 0, 0x3b, 0x9a, 0xca, 0x00, // tx_ns = 1e9
        0, 0, 0, 40, // len
        0x12, 0x34, 0x56, 0x78, // clock
    ];

    fn repr() -> Header {
        Header {
            kind: Kind::Data,
            flags: FLAG_CLOCK_SYNCED,
            run: 0xdead_beef,
            flow: 7,
            seq: 0x0102,
            tx_ns: 1_000_000_000,
            len: 40,
            clock: 0x1234_5678,
        }
    }

    #[test]
    fn parse_known_bytes() {
        assert_eq!(Header::parse_datagram(&BYTES), Ok(repr()));
    }

    #[test]
    fn emit_known_bytes() {
        let mut buf = [0xffu8; 40];
        repr().emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, BYTES);
    }

    #[test]
    fn end_marker_round_trip() {
        let mut buf = [0u8; 64];
        let h = Header { kind: Kind::End, seq: 12345, len: 64, ..repr() };
        h.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf[5], 1);
        assert_eq!(Header::parse_datagram(&buf), Ok(h));
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(Header::parse_datagram(&BYTES[..39]), Err(WireError::Truncated));
        assert_eq!(Header::parse_datagram(&[]), Err(WireError::Truncated));
        let mut b = BYTES;
        b[0] = b'X';
        assert_eq!(Header::parse_datagram(&b), Err(WireError::BadMagic));
        let mut b = BYTES;
        b[4] = 2;
        assert_eq!(Header::parse_datagram(&b), Err(WireError::BadVersion));
        let mut b = BYTES;
        b[5] = 9;
        assert_eq!(Header::parse_datagram(&b), Err(WireError::BadKind));
        let mut long = [0u8; 41];
        long[..40].copy_from_slice(&BYTES);
        assert_eq!(Header::parse_datagram(&long), Err(WireError::BadLength));
        let mut b = BYTES;
        b[16..24].copy_from_slice(&[0xff; 8]);
        assert_eq!(Header::parse_datagram(&b), Err(WireError::BadSeq));
        let mut b = BYTES;
        b[35] = 39; // claims shorter than a header
        assert_eq!(Header::parse(&Packet::new_unchecked(&b[..]), 39), Err(WireError::BadLength));
    }

    #[test]
    fn checked_view_never_panics() {
        assert!(Packet::new_checked(&BYTES[..10]).is_err());
        let p = Packet::new_checked(&BYTES[..]).unwrap();
        assert_eq!(p.seq(), 0x102);
        assert_eq!(p.flow(), 7);
    }

    #[test]
    fn stride_cuts_gso_payloads_at_the_first_length() {
        // one datagram: its payload
        assert_eq!(stride(8192, 8192), 8192);
        // seven 8192-byte datagrams behind one UDP header
        assert_eq!(stride(8192, 7 * 8192), 8192);
        assert_eq!(datagrams(7 * 8192, 8192), 7);
        // a shorter last segment
        assert_eq!(datagrams(2 * 1470 + 100, 1470), 3);
        // a length field larger than the payload (truncated), or below the
        // header: no cut, the parse judges the whole payload
        assert_eq!(stride(9000, 8192), 8192);
        assert_eq!(stride(10, 8192), 8192);
        // a 100-byte datagram whose length field says 99: not two pieces
        assert_eq!(stride(99, 100), 100);
        // a last piece that can hold a header is a piece
        assert_eq!(stride(60, 100), 60);
        assert_eq!(datagrams(0, 0), 0);
    }
}
