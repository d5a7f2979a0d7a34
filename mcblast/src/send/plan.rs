//! The plan of a send run: flows, workers, rates, the engine resolved. The
//! flags are read and checked in `commands/send.rs` (flags → plan) before a
//! socket is opened; this module holds what the plan is and the machine it is
//! resolved against.

use std::net::Ipv4Addr;

use anyhow::Result;

use super::Engine;
use crate::iface::Iface;

pub use crate::mcast::IP_UDP_OVERHEAD;
/// The largest UDP payload in an IPv4 packet.
pub const MAX_DATAGRAM: usize = 65_535 - IP_UDP_OVERHEAD;
/// The kernel's limit on messages per `sendmmsg` (UIO_MAXIOV).
pub const MAX_BATCH: usize = 1024;
/// Run length when neither `-t` nor `-n` is given.
pub const DEFAULT_SECONDS: f64 = 10.0;
/// The longest `-t` and `-i` (about 115 days): in nanoseconds, added to a
/// CLOCK_MONOTONIC time, it stays far from u64 overflow.
pub const MAX_SECONDS: f64 = 1e7;
/// The highest total rate that can be paced, in datagrams/s (no link
/// carries it: 100 Gbit/s of 40-byte datagrams is 312.5 M/s).
pub const MAX_PPS: f64 = 1e9;
/// The lowest total rate, in datagrams/s: one datagram per 1000 s.
pub const MIN_PPS: f64 = 1e-3;
/// At most this many flows: each has its own socket and source port.
pub const MAX_FLOWS: u32 = 65_535;

/// What the plan needs from the machine (a fake one in tests).
pub trait Machine {
    /// Resolves an interface by name; the error lists the real ones.
    fn lookup(&self, name: &str) -> Result<Iface>;
    /// The interface the route to `group` uses, if any.
    fn route_iface(&self, group: Ipv4Addr) -> Option<String>;
    /// CPUs this process may use.
    fn cpus(&self) -> Vec<usize>;
    /// The kernel's TAI−UTC offset in seconds (0 when it cannot be read).
    fn tai_offset_s(&self) -> i32;
    /// What the engines' probes say for interface `iface`.
    fn engines(&self, iface: Option<&str>) -> crate::send::support::EngineSupport;
}

/// The real machine.
pub struct System;

impl Machine for System {
    fn lookup(&self, name: &str) -> Result<Iface> {
        crate::iface::lookup(name)
    }
    fn route_iface(&self, group: Ipv4Addr) -> Option<String> {
        crate::iface::default_for_group(group)
    }
    fn cpus(&self) -> Vec<usize> {
        crate::sys::send::allowed_cpus().unwrap_or_default()
    }
    fn tai_offset_s(&self) -> i32 {
        crate::sys::tai_offset_s().unwrap_or(0)
    }
    fn engines(&self, iface: Option<&str>) -> crate::send::support::EngineSupport {
        crate::send::support::engine_support(iface)
    }
}

/// How the outgoing interface was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfaceSource {
    /// `--interface`.
    Flag,
    /// The route to the first group.
    Route,
}

/// One flow: its own socket, flow id, group and worker.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowPlan {
    pub id: u32,
    pub group: Ipv4Addr,
    pub worker: usize,
}

/// One worker thread.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerPlan {
    pub index: usize,
    /// Pin to this CPU (from `--cpus`, round robin).
    pub cpu: Option<usize>,
    /// Flow ids this worker sends, ascending.
    pub flows: Vec<u32>,
    /// This worker's share of the datagram rate (None: flat out).
    pub pps: Option<f64>,
}

/// The resolved plan of a send run.
#[derive(Debug, Clone)]
pub struct SendPlan {
    /// The engine the workers run: never `Auto` (resolved by probing).
    pub engine: Engine,
    /// Why `auto` chose `engine` (None when the user named the engine).
    pub engine_reason: Option<String>,
    /// uring engine: zero-copy sends.
    pub zerocopy: bool,
    pub groups: Vec<Ipv4Addr>,
    pub port: u16,
    /// None: no route and no flag, the kernel chooses per datagram.
    pub iface: Option<(Iface, IfaceSource)>,
    pub ttl: u8,
    pub loopback: bool,
    /// Datagram (UDP payload) length, header included.
    pub length: usize,
    pub allow_fragments: bool,
    /// Target datagrams/s for all flows together (from `--pps`, or `-b`
    /// divided by `length × 8`); None: as fast as possible.
    pub pps: Option<f64>,
    /// The `-b` the user gave, if any (for reports).
    pub bps: Option<f64>,
    pub duration_s: Option<f64>,
    pub count: Option<u64>,
    pub batch: usize,
    pub run_id: Option<u32>,
    /// The kernel's TAI−UTC offset in seconds, read once here and carried
    /// in every header's flags (clamped to 0..=255, the 8 bits it has).
    pub tai_offset: u8,
    pub interval_s: f64,
    pub json: bool,
    /// Serve live counters in the Prometheus format here.
    pub prometheus: Option<std::net::SocketAddr>,
    /// Stop (as on Ctrl-C) when standard input ends.
    pub stop_on_stdin_eof: bool,
    pub flows: Vec<FlowPlan>,
    pub workers: Vec<WorkerPlan>,
}

/// Datagrams/s for a rate in bits/s: `-b` counts UDP payload bits (the
/// datagram with its mcblast header, without UDP/IP/Ethernet headers), as
/// iperf does, so `-b 100M -l 1250` is 10,000 datagrams/s.
pub fn pps_for_bps(bps: f64, length: usize) -> f64 {
    bps / (length as f64 * 8.0)
}

/// Flow `i` of `groups` groups sends to group `i % groups`.
pub fn group_of(flow: u32, groups: usize) -> usize {
    flow as usize % groups
}

/// Flow `i` of `threads` workers runs on worker `i % threads`.
pub fn worker_of(flow: u32, threads: usize) -> usize {
    flow as usize % threads
}

/// Worker `w` is pinned to the `w % len`-th CPU of the list.
pub fn cpu_of(worker: usize, cpus: &[usize]) -> Option<usize> {
    (!cpus.is_empty()).then(|| cpus[worker % cpus.len()])
}

/// A worker's share of the total rate: proportional to its flows, so every
/// flow gets the same rate whether or not flows divide evenly over threads.
pub fn worker_pps(total: f64, worker_flows: usize, all_flows: usize) -> f64 {
    total * worker_flows as f64 / all_flows as f64
}

/// `0-3,6` for a CPU list.
pub fn fmt_cpus(cpus: &[usize]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if j > i { format!("{}-{}", cpus[i], cpus[j]) } else { cpus[i].to_string() });
        i = j + 1;
    }
    out.join(",")
}

impl SendPlan {
    /// The interface's name for reports ("default" when the kernel chooses).
    pub fn iface_name(&self) -> String {
        self.iface.as_ref().map_or_else(|| "default".to_string(), |(i, _)| i.name.clone())
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_format_as_ranges() {
        assert_eq!(fmt_cpus(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
        assert_eq!(fmt_cpus(&[5]), "5");
    }
}
