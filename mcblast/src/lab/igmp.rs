//! Watching the IGMP queries that reach a node: which version the querier
//! speaks, from which address. Used to check the bridge sends IGMPv3.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use super::Lab;

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

/// A raw IGMP socket inside a lab node; sees every query the node receives.
pub struct IgmpListener {
    // std has no raw-socket type; UdpSocket only owns the descriptor here,
    // and its recv (recv(2)) and read timeout (SO_RCVTIMEO) work on any
    // datagram-like socket, raw ones included.
    sock: UdpSocket,
}

impl IgmpListener {
    /// The next IGMP query within `timeout`, or None.
    pub fn next_query(&self, timeout: Duration) -> Result<Option<IgmpQuery>> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.sock.set_read_timeout(Some(left))?;
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    if let Some(q) = parse_igmp_query(&buf[..n]) {
                        return Ok(Some(q));
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return Ok(None);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("receiving IGMP"),
            }
        }
    }
}

impl Lab {
    /// Starts watching the IGMP queries that reach `node` (start it before
    /// [`Lab::restart_querier`] to see the startup queries).
    pub fn igmp_listener(&self, node: &str) -> Result<IgmpListener> {
        let fd = self
            .run_in(node, || crate::sys::raw_ipv4_socket(libc::IPPROTO_IGMP))?
            .with_context(|| format!("raw IGMP socket in {node}"))?;
        Ok(IgmpListener { sock: UdpSocket::from(fd) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
