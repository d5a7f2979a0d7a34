//! Hand-made datagrams and Ethernet frames for the tests that send raw
//! frames or craft headers (the kernel counter's parser: VLAN tags, IP
//! options, fragments, foreign datagrams).

use std::net::Ipv4Addr;

use mcblast_common::wire::{Header, Packet};

/// The IPv4 source of [`ip_frame`]'s packets: the lab's and the tests' sender.
pub const SOURCE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// A datagram of `h.len` bytes: the header `h`, then filler.
pub fn header_datagram(h: Header) -> Vec<u8> {
    let mut buf = vec![0x5a; h.len as usize];
    h.emit(&mut Packet::new_unchecked(&mut buf[..]));
    buf
}

/// Ethernet frame to `group`'s multicast MAC: optional 802.1Q tag (or any
/// outer tag type), IPv4 with `opts` (a multiple of 4 bytes) and the given
/// flags/fragment-offset field, UDP to `port` carrying `payload`.
pub fn frame(tag: Option<(u16, u16)>, opts: &[u8], frag: u16, group: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    ip_frame(tag, opts, 0x1234, frag, group, &udp(port, payload))
}

/// A UDP header to `port` (length 8 + `payload`, no checksum), then `payload`.
pub fn udp(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&40000u16.to_be_bytes());
    u.extend_from_slice(&port.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]); // no UDP checksum
    u.extend_from_slice(payload);
    u
}

/// Ethernet frame to `group`'s multicast MAC, as [`frame`], of an IPv4
/// packet (protocol UDP) with IP id `id` and flags/fragment-offset `frag`
/// carrying `l4` as its payload as it is (a UDP datagram, or a part of one
/// for a fragment).
pub fn ip_frame(tag: Option<(u16, u16)>, opts: &[u8], id: u16, frag: u16, group: Ipv4Addr, l4: &[u8]) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0);
    let g = group.octets();
    let mut f = vec![0x01, 0x00, 0x5e, g[1] & 0x7f, g[2], g[3], 0x02, 0, 0, 0, 0, 0x01];
    if let Some((tpid, vid)) = tag {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ihl = 20 + opts.len();
    let total = (ihl + l4.len()) as u16;
    let mut ip = vec![0x40 | (ihl / 4) as u8, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&id.to_be_bytes());
    ip.extend_from_slice(&frag.to_be_bytes());
    ip.extend_from_slice(&[1, 17, 0, 0]);
    ip.extend_from_slice(&SOURCE.octets());
    ip.extend_from_slice(&g);
    ip.extend_from_slice(opts);
    let mut sum: u32 = ip.chunks(2).map(|w| u16::from_be_bytes([w[0], w[1]]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}
