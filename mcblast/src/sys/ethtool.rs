//! ethtool without the ethtool binary, through the `SIOCETHTOOL` ioctl: the
//! driver's name (`ethtool -i`), whether it checksums what it sends, and its
//! statistics (`ethtool -S`: `ETH_SS_STATS` names and values).
//!
//! ```text
//! ETHTOOL_GDRVINFO    the driver's name (and n_stats)
//! ETHTOOL_GTXCSUM     transmit checksumming on or off
//! ETHTOOL_GSSET_INFO  how many stats the driver has (ETHTOOL_GDRVINFO's n_stats on old drivers)
//! ETHTOOL_GSTRINGS    their names, 32 bytes each, NUL-padded
//! ETHTOOL_GSTATS      their values, u64 each, in the same order
//! ```
//! The ioctl works on any socket of the interface's network namespace.

use std::io;
use std::os::fd::AsRawFd;

use super::net::udp_socket;

const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
/// The string set of `ethtool -S`.
const ETH_SS_STATS: u32 = 1;
/// Length of one name in an `ETHTOOL_GSTRINGS` answer.
pub const ETH_GSTRING_LEN: usize = 32;
/// `n_stats` in `struct ethtool_drvinfo`: after cmd (4) and the five
/// 32-byte strings, 12 reserved bytes and n_priv_flags.
const DRVINFO_N_STATS: usize = 4 + 5 * 32 + 12 + 4;
const DRVINFO_LEN: usize = DRVINFO_N_STATS + 4 * 4;
/// `driver` in `struct ethtool_drvinfo`: the 32 bytes after cmd, NUL-padded.
const DRVINFO_DRIVER: std::ops::Range<usize> = 4..36;
/// The kernel writes as many entries as the driver has *now*, whatever the
/// request said: room for this many more than counted a moment before.
const SLACK: usize = 64;
/// More statistics than any driver has; a larger count is a bad answer.
const MAX_STATS: usize = 1 << 16;

/// The driver's statistics of `iface` (`ethtool -S`), in the driver's
/// order; empty when the driver has none (loopback, bridges, ...).
pub fn stats(iface: &str) -> io::Result<Vec<(String, u64)>> {
    let fd = udp_socket()?;
    let q = Query { fd: fd.as_raw_fd(), iface };
    let n = q.count()?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let names = q.names(n)?;
    let values = q.values(n)?;
    if names.len() != values.len() {
        // The driver's set changed between the two calls (e.g. a queue was added).
        return Err(io::Error::other(format!(
            "{iface}: the driver's statistics changed while being read ({} names, {} values)",
            names.len(),
            values.len()
        )));
    }
    Ok(names.into_iter().zip(values).collect())
}

/// Whether the device checksums outgoing packets itself (ETHTOOL_GTXCSUM):
/// UDP GSO needs it, else the kernel refuses GSO sends with EIO.
pub fn tx_checksum(iface: &str) -> io::Result<bool> {
    let fd = udp_socket()?;
    // struct ethtool_value { u32 cmd; u32 data; }
    let mut buf = [0u64; 1];
    set_u32(&mut buf, 0, ETHTOOL_GTXCSUM);
    Query { fd: fd.as_raw_fd(), iface }.ioctl(&mut buf)?;
    Ok(get_u32(&buf, 4) != 0)
}

/// The interface's driver name (ETHTOOL_GDRVINFO), e.g. `veth`, `ena`.
pub fn driver(iface: &str) -> io::Result<String> {
    let fd = udp_socket()?;
    // struct ethtool_drvinfo { u32 cmd; char driver[32]; ... }
    let mut buf = vec![0u64; DRVINFO_LEN.div_ceil(8)];
    set_u32(&mut buf, 0, ETHTOOL_GDRVINFO);
    Query { fd: fd.as_raw_fd(), iface }.ioctl(&mut buf)?;
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
    Ok(parse_names(&bytes[DRVINFO_DRIVER], 1).remove(0))
}

/// The names of an `ETHTOOL_GSTRINGS` answer: `n` NUL-padded 32-byte strings.
pub fn parse_names(data: &[u8], n: usize) -> Vec<String> {
    data.chunks(ETH_GSTRING_LEN)
        .take(n)
        .map(|c| {
            let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
            String::from_utf8_lossy(&c[..end]).into_owned()
        })
        .collect()
}

struct Query<'a> {
    fd: libc::c_int,
    iface: &'a str,
}

impl Query<'_> {
    /// Sends one ethtool command; `buf` holds the command struct (its first
    /// u32 is the command) and receives the answer.
    fn ioctl(&self, buf: &mut [u64]) -> io::Result<()> {
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        let name = self.iface.as_bytes();
        if name.is_empty() || name.len() >= ifr.ifr_name.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {:?}", self.iface)));
        }
        for (d, s) in ifr.ifr_name.iter_mut().zip(name) {
            *d = *s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_data = buf.as_mut_ptr().cast();
        // SAFETY: `ifr` names the interface (NUL-terminated, zeroed tail) and
        // points to `buf`, which lives across the call and is as large as
        // the command struct plus the entries the kernel writes (the callers
        // size it from the count, with SLACK for a count that grew, and
        // check the count the kernel answers against it).
        let rc = unsafe { libc::ioctl(self.fd, libc::SIOCETHTOOL as _, &mut ifr) };
        super::cvt(rc).map(drop)
    }

    /// How many statistics the driver has now.
    fn count(&self) -> io::Result<usize> {
        // struct ethtool_sset_info { u32 cmd; u32 reserved; u64 sset_mask; u32 data[]; }
        let mut buf = [0u64; 3];
        set_u32(&mut buf, 0, ETHTOOL_GSSET_INFO);
        buf[1] = 1u64 << ETH_SS_STATS;
        let n = match self.ioctl(&mut buf) {
            Ok(()) if buf[1] & (1 << ETH_SS_STATS) == 0 => 0,
            Ok(()) => get_u32(&buf, 16) as usize,
            // No ethtool at all (loopback, some virtual devices).
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(0),
            Err(_) => {
                // Older drivers: ETHTOOL_GDRVINFO's n_stats.
                let mut info = vec![0u64; DRVINFO_LEN.div_ceil(8)];
                set_u32(&mut info, 0, ETHTOOL_GDRVINFO);
                match self.ioctl(&mut info) {
                    Ok(()) => get_u32(&info, DRVINFO_N_STATS) as usize,
                    Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => 0,
                    Err(e) => return Err(e),
                }
            }
        };
        if n > MAX_STATS {
            return Err(io::Error::other(format!("{}: the driver claims {n} statistics", self.iface)));
        }
        Ok(n)
    }

    /// The names (`ETHTOOL_GSTRINGS` of `ETH_SS_STATS`).
    fn names(&self, n: usize) -> io::Result<Vec<String>> {
        // struct ethtool_gstrings { u32 cmd; u32 string_set; u32 len; u8 data[]; }
        let room = n + SLACK;
        let mut buf = vec![0u64; (12 + room * ETH_GSTRING_LEN).div_ceil(8)];
        set_u32(&mut buf, 0, ETHTOOL_GSTRINGS);
        set_u32(&mut buf, 4, ETH_SS_STATS);
        set_u32(&mut buf, 8, n as u32);
        self.ioctl(&mut buf)?;
        let len = get_u32(&buf, 8) as usize;
        if len > room {
            return Err(io::Error::other(format!("{}: the driver answered {len} names for {n}", self.iface)));
        }
        let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
        Ok(parse_names(&bytes[12..], len))
    }

    /// The values (`ETHTOOL_GSTATS`).
    fn values(&self, n: usize) -> io::Result<Vec<u64>> {
        // struct ethtool_stats { u32 cmd; u32 n_stats; u64 data[]; }
        let room = n + SLACK;
        let mut buf = vec![0u64; 1 + room];
        set_u32(&mut buf, 0, ETHTOOL_GSTATS);
        set_u32(&mut buf, 4, n as u32);
        self.ioctl(&mut buf)?;
        let len = get_u32(&buf, 4) as usize;
        if len > room {
            return Err(io::Error::other(format!("{}: the driver answered {len} values for {n}", self.iface)));
        }
        Ok(buf[1..1 + len].to_vec())
    }
}

/// The native-endian u32 at byte `off` of a u64-aligned buffer.
fn get_u32(buf: &[u64], off: usize) -> u32 {
    let w = buf[off / 8].to_ne_bytes();
    let i = off % 8;
    u32::from_ne_bytes([w[i], w[i + 1], w[i + 2], w[i + 3]])
}

fn set_u32(buf: &mut [u64], off: usize, v: u32) {
    let mut w = buf[off / 8].to_ne_bytes();
    let i = off % 8;
    w[i..i + 4].copy_from_slice(&v.to_ne_bytes());
    buf[off / 8] = u64::from_ne_bytes(w);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_nul_padded_32_byte_strings() {
        let mut data = vec![0u8; 3 * ETH_GSTRING_LEN];
        data[..12].copy_from_slice(b"peer_ifindex");
        data[32..32 + 22].copy_from_slice(b"rx_queue_0_xdp_packets");
        // a name of exactly 32 bytes has no NUL
        data[64..96].copy_from_slice(b"bw_in_allowance_exceeded_abcdefg");
        assert_eq!(parse_names(&data, 3), ["peer_ifindex", "rx_queue_0_xdp_packets", "bw_in_allowance_exceeded_abcdefg"]);
        assert_eq!(parse_names(&data, 2).len(), 2);
    }

    #[test]
    fn u32_fields_of_the_command_buffers() {
        let mut b = [0u64; 3];
        set_u32(&mut b, 0, 0x37);
        set_u32(&mut b, 4, 9);
        set_u32(&mut b, 16, 17);
        assert_eq!((get_u32(&b, 0), get_u32(&b, 4), get_u32(&b, 16), get_u32(&b, 8)), (0x37, 9, 17, 0));
        assert_eq!(DRVINFO_N_STATS, 180, "offsetof(struct ethtool_drvinfo, n_stats)");
    }

    #[test]
    fn loopback_driver_and_checksum() {
        // lo answers GDRVINFO only on some kernels; GTXCSUM always (it checksums in "hardware").
        assert!(tx_checksum("lo").unwrap());
        assert!(tx_checksum("mcb-nope0").is_err());
        assert!(tx_checksum("a-name-longer-than-ifnamsiz").is_err());
    }

    /// Loopback has no driver statistics: an empty list, not an error.
    #[test]
    fn loopback_has_no_driver_statistics() {
        assert_eq!(stats("lo").unwrap(), Vec::new());
        assert!(stats("no-such-if0").is_err());
    }
}
