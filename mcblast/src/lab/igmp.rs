//! Watching the IGMP queries that reach a node: which version the querier
//! speaks, from which address. Used to check the bridge sends IGMPv3.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use super::Lab;
use crate::mcast::{IgmpQuery, parse_igmp_query};

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
