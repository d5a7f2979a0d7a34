//! Clocks. Datagram timestamps are CLOCK_TAI nanoseconds: the clock eBPF
//! reads with `bpf_ktime_get_tai_ns`, so kernel and userspace receivers
//! compare like with like.

use std::sync::OnceLock;

/// Now, in ns of CLOCK_TAI.
#[inline]
pub fn tai_ns() -> u64 {
    crate::sys::clock_ns(libc::CLOCK_TAI)
}

/// Now, in ns of CLOCK_MONOTONIC (for pacing and intervals).
#[inline]
pub fn mono_ns() -> u64 {
    crate::sys::clock_ns(libc::CLOCK_MONOTONIC)
}

/// CLOCK_TAI − CLOCK_MONOTONIC now, in ns (two's complement): TAI read
/// between two monotonic reads, the tightest of a few tries, against their
/// midpoint. What a kernel without `bpf_ktime_get_tai_ns` adds to its
/// monotonic clock.
pub fn mono_to_tai_ns() -> u64 {
    (0..8)
        .map(|_| {
            let m0 = mono_ns();
            let t = tai_ns();
            let m1 = mono_ns();
            (m1 - m0, t.wrapping_sub(m0 + (m1 - m0) / 2))
        })
        .min_by_key(|&(width, _)| width)
        .map_or(0, |(_, offset)| offset)
}

/// CLOCK_TAI − CLOCK_REALTIME now, in ns: the kernel's TAI−UTC offset (whole
/// seconds; 0 where nothing set it), what turns a `gettimeofday` stamp
/// (iperf2's) into TAI.
pub fn tai_minus_utc_ns() -> u64 {
    let d = tai_ns().wrapping_sub(crate::sys::clock_ns(libc::CLOCK_REALTIME)) as i64;
    let s = (d + 500_000_000).div_euclid(1_000_000_000);
    (s.max(0) as u64) * 1_000_000_000
}

/// This kernel's clock identity: FNV-1a of the boot id. Two hosts (or
/// namespaces) with the same value read the same clock.
pub fn clock_id() -> u32 {
    static ID: OnceLock<u32> = OnceLock::new();
    *ID.get_or_init(|| {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let mut h: u32 = 0x811c_9dc5;
        for b in boot.trim().bytes() {
            h ^= b as u32;
            h = h.wrapping_mul(0x0100_0193);
        }
        if h == 0 { 1 } else { h }
    })
}

/// What a receiver knows about its own clock, to judge one-way delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalClock {
    /// [`clock_id`]: equal on sender and receiver means one shared clock.
    pub id: u32,
    /// [`synchronized`].
    pub synced: bool,
    /// The kernel's TAI−UTC offset in seconds (0..=255), as senders put it in the header.
    pub tai_offset: u8,
}

/// This host's clock identity, synchronisation and TAI offset.
pub fn local() -> LocalClock {
    LocalClock {
        id: clock_id(),
        synced: synchronized(),
        tai_offset: crate::sys::tai_offset_s().unwrap_or(0).clamp(0, 255) as u8,
    }
}

/// Whether the kernel says the clock is synchronised (adjtimex: TIME_OK or a
/// leap state, and STA_UNSYNC clear).
pub fn synchronized() -> bool {
    match crate::sys::adjtimex_state() {
        Ok((state, status)) => state != libc::TIME_ERROR && status & libc::STA_UNSYNC == 0,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clock_id_is_stable_and_nonzero() {
        assert_eq!(super::clock_id(), super::clock_id());
        assert_ne!(super::clock_id(), 0);
    }
    #[test]
    fn tai_minus_utc_is_whole_seconds() {
        let d = super::tai_minus_utc_ns();
        assert_eq!(d % 1_000_000_000, 0);
        assert!(d <= 255_000_000_000);
    }
    #[test]
    fn tai_is_close_to_realtime() {
        let tai = super::tai_ns();
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        // TAI is realtime plus the kernel's TAI offset (0 or ~37 s).
        assert!(tai + 1_000_000_000 >= real && tai < real + 60_000_000_000);
    }
}
