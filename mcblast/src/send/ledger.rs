//! The sender's side of the ledger: what the program asked the kernel to
//! send, what the kernel took, and what the interface says left it, so
//! that datagrams lost inside the sending host are never charged to the
//! path.
//!
//! ```text
//! asked_to_send        every send attempt: handed_to_kernel + refused
//!   - refused          attempts the kernel refused (ENOBUFS, EAGAIN, other);
//!                      the sender asks again for the same sequence number,
//!                      so a refusal is not a lost datagram
//! = handed_to_kernel   data datagrams + end markers the kernel took
//! left_interface       tx_packets delta of the interface (whole interface)
//! qdisc_dropped        root qdisc drops delta (`tc -s qdisc`)
//! tx_dropped/errors    the driver's drops after taking a packet
//! ```
//!
//! A qdisc drop of a datagram sent on a socket with `IP_RECVERR` (all of
//! mcblast's) comes back to the sender as ENOBUFS, and the datagram is sent
//! again: it appears in `qdisc_dropped` and `refused`, and is not lost.
//! Drops after the qdisc (`tx_dropped`, `tx_errors`) are not reported to
//! the program: those datagrams are lost inside the sender, and receivers
//! see them as sequence gaps.

use std::process::Command;

use serde::Serialize;

use super::counters::Counts;

/// Transmit counters of one interface at one moment (None: unreadable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxCounters {
    pub tx_packets: Option<u64>,
    pub tx_dropped: Option<u64>,
    pub tx_errors: Option<u64>,
    /// Drops of the interface's root qdisc (its children's included).
    pub qdisc_drops: Option<u64>,
}

impl TxCounters {
    /// Reads sysfs statistics of `iface` (this network namespace's sysfs)
    /// and its root qdisc's drops (`tc -s -j qdisc show dev IFACE`; None
    /// when `tc` is missing or says nothing).
    pub fn read(iface: &str) -> TxCounters {
        let stat = |f: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{iface}/statistics/{f}")).ok().and_then(|s| s.trim().parse().ok())
        };
        let qdisc_drops = Command::new("tc")
            .args(["-s", "-j", "qdisc", "show", "dev", iface])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| root_qdisc_drops(&String::from_utf8_lossy(&o.stdout)));
        TxCounters { tx_packets: stat("tx_packets"), tx_dropped: stat("tx_dropped"), tx_errors: stat("tx_errors"), qdisc_drops }
    }
}

/// The `drops` of the root qdisc(s) in `tc -s -j qdisc show` output (the
/// root's counters include its children's, so children are not added).
pub fn root_qdisc_drops(json: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
    let roots: Vec<u64> = v
        .as_array()?
        .iter()
        .filter(|q| q["root"] == true)
        .map(|q| q["drops"].as_u64())
        .collect::<Option<_>>()?;
    if roots.is_empty() { None } else { Some(roots.iter().sum()) }
}

/// The ledger (JSON: the sender summary's `ledger` object).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Ledger {
    /// The interface the counters are of.
    pub interface: String,
    /// Send attempts: handed_to_kernel + refused.
    pub asked_to_send: u64,
    /// Attempts the kernel refused (ENOBUFS + EAGAIN + other); each was asked again.
    pub refused: u64,
    /// Data datagrams and end markers the kernel took.
    pub handed_to_kernel: u64,
    /// Of them, end markers.
    pub end_markers: u64,
    /// Packets the interface sent during the run (tx_packets delta). The
    /// whole interface: other traffic on it counts too (IGMP, ARP, other
    /// programs); a datagram sent fragmented counts once per fragment, and
    /// on devices that take GSO packets whole (veth) a GSO batch counts once.
    pub left_interface: Option<u64>,
    /// Drops of the root qdisc (delta); with IP_RECVERR these come back as
    /// ENOBUFS and are sent again (they are in `refused` too).
    pub qdisc_dropped: Option<u64>,
    /// Packets the driver dropped after taking them (delta): lost in the sender.
    pub tx_dropped: Option<u64>,
    /// Packets the driver failed to send (delta): lost in the sender.
    pub tx_errors: Option<u64>,
}

impl Ledger {
    pub fn new(interface: &str, t: &Counts, start: &TxCounters, end: &TxCounters) -> Ledger {
        let d = |a: Option<u64>, b: Option<u64>| Some(a?.wrapping_sub(b?));
        let handed = t.sent + t.end_markers;
        Ledger {
            interface: interface.to_string(),
            asked_to_send: handed + t.errors(),
            refused: t.errors(),
            handed_to_kernel: handed,
            end_markers: t.end_markers,
            left_interface: d(end.tx_packets, start.tx_packets),
            qdisc_dropped: d(end.qdisc_drops, start.qdisc_drops),
            tx_dropped: d(end.tx_dropped, start.tx_dropped),
            tx_errors: d(end.tx_errors, start.tx_errors),
        }
    }

    /// Datagrams lost inside the sender after the kernel took them, as far
    /// as the interface says (driver drops and errors).
    pub fn lost_in_sender(&self) -> Option<u64> {
        Some(self.tx_dropped? + self.tx_errors?)
    }

    /// The human line.
    pub fn human(&self) -> String {
        let n = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        let mut s = format!(
            "      ledger on {}: asked {} = refused {} (sent again) + handed to the kernel {} (incl. {} end markers); \
             left the interface {} (all its traffic); qdisc dropped {}, driver dropped {}, tx errors {}",
            self.interface,
            self.asked_to_send,
            self.refused,
            self.handed_to_kernel,
            self.end_markers,
            n(self.left_interface),
            n(self.qdisc_dropped),
            n(self.tx_dropped),
            n(self.tx_errors),
        );
        match (self.lost_in_sender(), self.left_interface) {
            (Some(l), _) if l > 0 => s.push_str(&format!(
                "\n      {l} packet(s) were lost in this host after the kernel took them: receivers count them as path loss, but the path never saw them"
            )),
            (_, Some(left)) if left < self.handed_to_kernel => s.push_str(&format!(
                "\n      {} fewer packets left the interface than the kernel took (GSO batches count once on some devices, or still queued)",
                self.handed_to_kernel - left
            )),
            _ => {}
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_qdisc_drops_come_from_the_root_only() {
        let tbf = r#"[{"kind":"tbf","handle":"8001:","root":true,"refcnt":2,"options":{},"bytes":10,"packets":1,"drops":7,"overlimits":3,"requeues":0,"backlog":0,"qlen":0}]"#;
        assert_eq!(root_qdisc_drops(tbf), Some(7));
        let mq = r#"[{"kind":"mq","handle":"0:","root":true,"drops":5},{"kind":"fq_codel","handle":"0:","parent":"0:1","drops":5}]"#;
        assert_eq!(root_qdisc_drops(mq), Some(5), "children are inside the root's count");
        assert_eq!(root_qdisc_drops("[]"), None);
        assert_eq!(root_qdisc_drops("not json"), None);
    }

    #[test]
    fn ledger_adds_up_and_says_what_was_lost_where() {
        let t = Counts { sent: 1000, end_markers: 3, enobufs: 4, other: 2, ..Counts::default() };
        let start = TxCounters { tx_packets: Some(10), tx_dropped: Some(1), tx_errors: Some(0), qdisc_drops: Some(0) };
        let end = TxCounters { tx_packets: Some(1010), tx_dropped: Some(4), tx_errors: Some(0), qdisc_drops: Some(4) };
        let l = Ledger::new("eth0", &t, &start, &end);
        assert_eq!((l.asked_to_send, l.refused, l.handed_to_kernel), (1009, 6, 1003));
        assert_eq!((l.left_interface, l.qdisc_dropped, l.tx_dropped, l.tx_errors), (Some(1000), Some(4), Some(3), Some(0)));
        assert_eq!(l.lost_in_sender(), Some(3));
        assert!(l.human().contains("3 packet(s) were lost in this host"), "{}", l.human());
        let unknown = Ledger::new("eth0", &t, &TxCounters::default(), &end);
        assert_eq!((unknown.left_interface, unknown.lost_in_sender()), (None, None));
        assert!(unknown.human().contains("left the interface ?"));
    }
}
