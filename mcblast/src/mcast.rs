//! Facts about IPv4 multicast over UDP that the sender, the receiver, the
//! probes, preflight and test plans share: below all of them.

use std::net::Ipv4Addr;

use anyhow::{Result, bail};

/// IPv4 + UDP header bytes around every datagram (no IP options).
pub const IP_UDP_OVERHEAD: usize = 28;

/// Checks the groups are multicast addresses.
pub fn check_groups(groups: &[Ipv4Addr]) -> Result<()> {
    for g in groups {
        if !g.is_multicast() {
            bail!("{g} is not a multicast group: use an address in 224.0.0.0/4, e.g. 239.0.0.1");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn groups_must_be_multicast() {
        assert!(check_groups(&["239.1.1.1".parse().unwrap()]).is_ok());
        let e = check_groups(&["10.0.0.1".parse().unwrap()]).unwrap_err().to_string();
        assert!(e.contains("not a multicast group"));
    }
}
