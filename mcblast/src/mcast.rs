//! Facts about IPv4 multicast over UDP that the sender, the receiver, the
//! probes, preflight and test plans share: below all of them.

use std::net::Ipv4Addr;

use anyhow::{Result, bail};
use serde::Serialize;

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

/// An IGMP membership query as a host received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IgmpQuery {
    /// IP source (the querier).
    pub source: Ipv4Addr,
    /// 1, 2 or 3 (RFC 3376 section 7.1: by length, and max-resp-code for v1).
    pub version: u8,
    /// 0.0.0.0 for a general query, else the group of a group-specific query.
    pub group: Ipv4Addr,
}

const IGMP_PROTO: u8 = 2;
const IGMP_QUERY: u8 = 0x11;

/// Parses an IPv4 packet (as a raw socket returns it) holding an IGMP query.
pub fn parse_igmp_query(pkt: &[u8]) -> Option<IgmpQuery> {
    if pkt.len() < 20 || pkt[0] >> 4 != 4 || pkt[9] != IGMP_PROTO {
        return None;
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]])).min(pkt.len());
    let igmp = pkt.get(ihl..total)?;
    if igmp.len() < 8 || igmp[0] != IGMP_QUERY {
        return None;
    }
    let version = match igmp.len() {
        8 if igmp[1] == 0 => 1,
        8 => 2,
        9..=11 => return None,
        _ => 3,
    };
    Some(IgmpQuery {
        source: Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]),
        version,
        group: Ipv4Addr::new(igmp[4], igmp[5], igmp[6], igmp[7]),
    })
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

    fn packet(igmp: &[u8]) -> Vec<u8> {
        // IPv4 header with the router-alert option (ihl 6), as the bridge sends it
        let total = (24 + igmp.len()) as u16;
        let mut p = vec![0x46, 0xc0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 1, IGMP_PROTO, 0, 0, 10, 77, 0, 254, 224, 0, 0, 1, 0x94, 4, 0, 0]);
        p.extend_from_slice(igmp);
        p
    }

    #[test]
    fn tells_query_versions_apart() {
        let v3 = packet(&[0x11, 100, 0, 0, 0, 0, 0, 0, 2, 125, 0, 0]);
        assert_eq!(
            parse_igmp_query(&v3),
            Some(IgmpQuery { source: Ipv4Addr::new(10, 77, 0, 254), version: 3, group: Ipv4Addr::UNSPECIFIED })
        );
        let v2 = packet(&[0x11, 100, 0, 0, 239, 1, 2, 3]);
        let q = parse_igmp_query(&v2).unwrap();
        assert_eq!((q.version, q.group), (2, Ipv4Addr::new(239, 1, 2, 3)));
        assert_eq!(parse_igmp_query(&packet(&[0x11, 0, 0, 0, 0, 0, 0, 0])).unwrap().version, 1);
        // a v3 report is not a query; truncated packets are ignored
        assert_eq!(parse_igmp_query(&packet(&[0x22, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0, 239, 1, 1, 1])), None);
        assert_eq!(parse_igmp_query(&v3[..22]), None);
    }
}
