//! Cheap, side-effect-free questions to the kernel for `mcblast probe` and
//! the `auto` engine: can an AF_XDP socket be created, what does the
//! driver say about an interface (ethtool ioctls). Every `unsafe` block
//! carries a `// SAFETY:` note.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::cvt;

/// `socket(AF_XDP, SOCK_RAW, 0)`, closed at once. Needs CAP_NET_RAW.
pub fn af_xdp_socket() -> io::Result<()> {
    // SAFETY: plain socket(2) call with constant arguments.
    let fd = cvt(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns; dropping closes it once.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
const ETHTOOL_GTXCSUM: u32 = 0x0000_0016;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// `ifreq` with the data pointer member (what SIOCETHTOOL takes).
#[repr(C)]
struct IfreqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

fn ethtool(ifname: &str, data: *mut libc::c_void) -> io::Result<()> {
    if ifname.len() >= libc::IFNAMSIZ || ifname.as_bytes().contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let sock = super::net::udp_socket()?;
    let mut ifr = IfreqData { name: [0; libc::IFNAMSIZ], data, _pad: [0; 16] };
    for (d, s) in ifr.name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: `ifr` is a valid ifreq with a NUL-terminated name and a data
    // pointer to a live ethtool command struct of the size that command
    // implies; the kernel writes only inside it.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL as _, &mut ifr) }).map(drop)
}

/// Whether the device checksums outgoing packets itself (ETHTOOL_GTXCSUM):
/// UDP GSO needs it, else the kernel refuses GSO sends with EIO.
pub fn tx_checksum(ifname: &str) -> io::Result<bool> {
    let mut v = EthtoolValue { cmd: ETHTOOL_GTXCSUM, data: 0 };
    ethtool(ifname, (&mut v as *mut EthtoolValue).cast())?;
    Ok(v.data != 0)
}

/// The interface's driver name (ETHTOOL_GDRVINFO), e.g. `veth`, `ena`.
pub fn driver(ifname: &str) -> io::Result<String> {
    // SAFETY: all-zero is a valid ethtool_drvinfo (byte arrays and integers).
    let mut d: EthtoolDrvinfo = unsafe { std::mem::zeroed() };
    d.cmd = ETHTOOL_GDRVINFO;
    ethtool(ifname, (&mut d as *mut EthtoolDrvinfo).cast())?;
    let end = d.driver.iter().position(|&b| b == 0).unwrap_or(d.driver.len());
    Ok(String::from_utf8_lossy(&d.driver[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_driver_and_checksum() {
        // lo answers GDRVINFO only on some kernels; GTXCSUM always (it checksums in "hardware").
        assert!(super::tx_checksum("lo").unwrap());
        assert!(super::tx_checksum("mcb-nope0").is_err());
        assert!(super::tx_checksum("a-name-longer-than-ifnamsiz").is_err());
    }
}
