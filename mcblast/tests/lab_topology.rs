//! Privileged tests of the lab topologies that emulate the platforms:
//! emulated hosts (a namespace and a bridge each) joined by a shared switch
//! (`--fabric bridge`, TGW-like) or by VXLAN with head-end replication
//! (`--fabric vxlan`, OVN-like), and the `tgw`/`ovn` presets. Each test
//! has its own namespace prefix; the `Lab` guard (and a `Cleanup` guard
//! for kept labs) removes every namespace even when a test fails. Tests
//! run one at a time (a static mutex): the machine has 2 cores. Skipped,
//! with a message, when not root.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::time::Duration;

use mcblast::lab::{self, Fabric, IgmpConfig, Lab, LabConfig, LabSpec, Placement, Preset, Topology};
use common::raw::{Seqs, Stream};

mod common;
use common::namespaces;
use common::{serial, snmp};

/// False (after saying the test is skipped) when not privileged.
fn privileged(_test: &str) -> bool {
    !common::skip("lab tests need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)")
}

fn prefix(tag: &str) -> String {
    format!("mcbt{}t{tag}-", std::process::id())
}

/// A 3 hosts x 3 receivers spec with the given fabric and placement, and a preset's or the default IGMP settings.
fn spec(tag: &str, fabric: Fabric, placement: Placement, preset: Option<Preset>) -> LabSpec {
    let (mtu, igmp) = match preset {
        Some(p) => {
            let (_, igmp, mtu, _, _) = p.settings();
            (mtu, igmp)
        }
        None => (9000, IgmpConfig::default()),
    };
    let topology = Topology { hosts: 3, per_host: 3, fabric, placement };
    LabSpec {
        base: LabConfig { prefix: prefix(tag), receivers: 9, mtu, snooping: true, querier: true },
        igmp,
        topology: Some(topology),
    }
}

/// Removes a lab of this prefix when dropped (for labs a test keeps on purpose).
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = lab::down(&self.0);
    }
}


fn ok(out: Output) -> String {
    assert!(out.status.success(), "command failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn cat(lab: &Lab, node: &str, path: &str) -> String {
    ok(lab.exec_cmd(node, &["cat", path]).output().unwrap())
}


/// 8192-byte datagrams: 8220-byte IP packets, as the platforms' MTUs must carry unfragmented.
const LEN: usize = 8192;

const STREAM: Stream = Stream { len: LEN, run: 9, gap: Duration::from_millis(1) };

fn all(count: u64) -> Seqs {
    (0..count).collect()
}

/// Every receiver joins, a stream of 8192-byte datagrams reaches each exactly
/// once, and the fabric carries exactly one copy per host with members.
/// Returns the lab for further checks.
fn stream_reaches_every_receiver_once(lab: &Lab, group: Ipv4Addr, count: u64) {
    let t = *lab.topology().expect("hosts");
    lab.watch_fabric().unwrap();
    lab.watch_ports().unwrap();
    let receivers = lab.receivers();
    let threads: Vec<_> = receivers.iter().map(|n| STREAM.receiver(lab, n, group)).collect();
    lab.wait_members(group, &receivers, Duration::from_secs(15)).unwrap();
    let reasm_before: Vec<u64> = receivers.iter().map(|n| snmp(lab, n, "Ip", "ReasmReqds")).collect();

    STREAM.send(lab, group, count);
    for (n, th) in receivers.iter().zip(threads) {
        assert_eq!(th.join().unwrap(), all(count), "{n}: every datagram exactly once, in order");
        assert_eq!(lab.nft_offered(n).unwrap(), count + 3, "{n}: its access port forwarded each datagram once");
    }
    // Not fragmented anywhere: the receivers reassembled nothing, the sender
    // (and, for VXLAN, the sender's host encapsulating) fragmented nothing.
    for (n, before) in receivers.iter().zip(reasm_before) {
        assert_eq!(snmp(lab, n, "Ip", "ReasmReqds"), before, "{n} reassembled fragments");
    }
    assert_eq!(snmp(lab, "sender", "Ip", "FragCreates"), 0);
    assert_eq!(snmp(lab, "h0", "Ip", "FragCreates"), 0);

    // The fabric: exactly one copy per host that has members, none to the
    // others, none back to the sender's host; not one per receiver.
    let mut total = 0;
    for k in 0..=t.hosts {
        let members = receivers.iter().filter(|n| t.host_of(n) == Some(k)).count();
        let got = lab.fabric_delivered(k).unwrap();
        let want = if members > 0 { count + 3 } else { 0 };
        assert_eq!(got, want, "fabric toward h{k} ({members} receivers there)");
        total += got;
    }
    let hosts_with_members = (1..=t.hosts).filter(|&k| receivers.iter().any(|n| t.host_of(n) == Some(k))).count();
    assert_eq!(total, hosts_with_members as u64 * (count + 3), "one copy per host, not {} (one per receiver)", 9 * (count + 3));
}

#[test]
fn bridge_fabric_spread_and_same_host_deliver_once_with_one_copy_per_host() {
    if !privileged("bridge_fabric_spread_and_same_host_deliver_once_with_one_copy_per_host") {
        return;
    }
    let _s = serial();
    let lab = Lab::up_spec(&spec("b", Fabric::Bridge, Placement::Spread, None)).unwrap();
    let p = lab.prefix().to_string();
    let want: BTreeSet<String> = ["sw", "h0", "h1", "h2", "h3", "sender", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"]
        .iter()
        .map(|n| format!("{p}{n}"))
        .collect();
    assert_eq!(namespaces(&p), want);
    // r1..r3 on h1, r4..r6 on h2, r7..r9 on h3: each port on its host's bridge.
    for (n, h) in [("r1", "h1"), ("r5", "h2"), ("r9", "h3"), ("sender", "h0")] {
        assert_eq!(lab.host_of(n).as_deref(), Some(h));
        let master = ok(lab.exec_cmd(h, &["readlink", &format!("/sys/class/net/{n}/master")]).output().unwrap());
        assert!(master.ends_with("/br0"), "{n} on {h}: {master}");
    }
    let g = Ipv4Addr::new(239, 77, 10, 1);
    // Loss injection stays on the receiver's access port (on its host's bridge).
    lab.drop_every_nth("r5", 4).unwrap();
    let count = 200;
    lab.watch_fabric().unwrap();
    lab.watch_ports().unwrap();
    let receivers = lab.receivers();
    let threads: Vec<_> = receivers.iter().map(|n| STREAM.receiver(&lab, n, g)).collect();
    lab.wait_members(g, &receivers, Duration::from_secs(15)).unwrap();
    STREAM.send(&lab, g, count);
    for (n, th) in receivers.iter().zip(threads) {
        let got = th.join().unwrap();
        if n == "r5" {
            assert_eq!(got, (0..count).filter(|s| s % 4 != 0).collect::<Vec<_>>(), "r5 loses every 4th");
        } else {
            assert_eq!(got, all(count), "{n}");
        }
    }
    assert_eq!(lab.nft_dropped("r5").unwrap(), count / 4);
    assert_eq!(lab.nft_dropped("r4").unwrap(), 0);
    // The drop was after the fabric: h2 still got every datagram once.
    for k in 1..=3 {
        assert_eq!(lab.fabric_delivered(k).unwrap(), count + 3, "h{k}");
    }
    assert_eq!(lab.fabric_delivered(0).unwrap(), 0);
    // status shows the hosts, where each node lives, per-host group tables.
    let st = lab.status().unwrap();
    let topo = st.topology.as_ref().unwrap();
    assert_eq!((topo.fabric.as_str(), topo.hosts.len()), ("bridge", 4));
    let h2 = &topo.hosts[2];
    assert_eq!(h2.nodes, ["r4", "r5", "r6"]);
    // (IGMPv3 reports go to 224.0.0.22, which bridges flood, so h2 may also
    // list its uplink up0 after hearing h1's and h3's reports: harmless, the
    // data comes in on up0.)
    let members: Vec<&str> = h2
        .mdb
        .iter()
        .filter(|e| e.group == g.to_string() && e.port != "up0")
        .map(|e| e.port.as_str())
        .collect();
    assert_eq!(members, ["r4", "r5", "r6"]);
    let sw: Vec<&str> = st.mdb.iter().filter(|e| e.group == g.to_string()).map(|e| e.port.as_str()).collect();
    assert_eq!(sw, ["h1", "h2", "h3"], "the shared switch knows the hosts, not the receivers");
    let text = st.render();
    assert!(text.contains("fabric bridge") && text.contains("host h2") && text.contains("r4 r5 r6"), "{text}");
    drop(lab);
    assert!(namespaces(&p).is_empty(), "left: {:?}", namespaces(&p));

    // All receivers on h1: only h1 gets copies.
    let lab = Lab::up_spec(&spec("bs", Fabric::Bridge, Placement::SameHost, None)).unwrap();
    assert!(lab.receivers().iter().all(|n| lab.host_of(n).as_deref() == Some("h1")));
    stream_reaches_every_receiver_once(&lab, Ipv4Addr::new(239, 77, 10, 2), 100);
}

#[test]
fn vxlan_fabric_replicates_head_end_once_per_remote_host_with_members() {
    if !privileged("vxlan_fabric_replicates_head_end_once_per_remote_host_with_members") {
        return;
    }
    let _s = serial();
    // The OVN preset's settings: VXLAN, snooping, IGMPv3, 150 s queries, 300 s idle timeout.
    let lab = Lab::up_spec(&spec("v", Fabric::Vxlan, Placement::Spread, Some(Preset::Ovn))).unwrap();
    let p = lab.prefix().to_string();
    assert!(namespaces(&p).contains(&format!("{p}ul")));
    assert!(!namespaces(&p).contains(&format!("{p}sw")));
    // Underlay MTU = overlay + 50; the overlay keeps 9000.
    for h in ["h0", "h1", "h2", "h3"] {
        assert_eq!(cat(&lab, h, "/sys/class/net/ul0/mtu"), "9050", "{h}");
        assert_eq!(cat(&lab, h, "/sys/class/net/br0/mtu"), "9000", "{h}");
        // one tunnel port per remote host, with a static all-zero FDB entry to it
        for j in ["h0", "h1", "h2", "h3"].iter().filter(|j| *j != &h) {
            let fdb = ok(lab.exec_cmd(h, &["bridge", "fdb", "show", "dev", &format!("vx-{j}")]).output().unwrap());
            let k: u32 = j[1..].parse().unwrap();
            assert!(fdb.contains(&format!("00:00:00:00:00:00 dst {} self permanent", lab::underlay_addr(k))), "{h}: {fdb}");
        }
    }
    assert_eq!(cat(&lab, "h0", "/sys/class/net/br0/bridge/multicast_query_interval"), "15000");
    assert_eq!(cat(&lab, "h1", "/sys/class/net/br0/bridge/multicast_membership_interval"), "30000");
    for n in ["r1", "r9", "sender"] {
        assert_eq!(cat(&lab, n, "/sys/class/net/eth0/mtu"), "9000", "{n}");
    }

    let g = Ipv4Addr::new(239, 77, 11, 1);
    lab.drop_every_nth("r8", 3).unwrap();
    lab.watch_fabric().unwrap();
    let receivers = lab.receivers();
    let threads: Vec<_> = receivers.iter().map(|n| STREAM.receiver(&lab, n, g)).collect();
    lab.wait_members(g, &receivers, Duration::from_secs(15)).unwrap();
    // The sender's host learned members per tunnel port: one per remote host.
    let h0: Vec<String> = lab.mdb().unwrap().into_iter().filter(|e| e.group == g.to_string()).map(|e| e.port).collect();
    assert_eq!(h0, ["vx-h1", "vx-h2", "vx-h3"]);
    let count = 200;
    STREAM.send(&lab, g, count);
    for (n, th) in receivers.iter().zip(threads) {
        let got = th.join().unwrap();
        if n == "r8" {
            assert_eq!(got, (0..count).filter(|s| s % 3 != 0).collect::<Vec<_>>(), "r8 loses every 3rd");
        } else {
            assert_eq!(got, all(count), "{n}");
        }
    }
    assert_eq!(lab.nft_dropped("r8").unwrap(), count.div_ceil(3));
    // Head-end replication: the underlay carried one copy per remote host (3), not per receiver (9).
    for k in 1..=3 {
        assert_eq!(lab.fabric_delivered(k).unwrap(), count + 3, "underlay toward h{k}");
    }
    assert_eq!(lab.fabric_delivered(0).unwrap(), 0, "nothing back to the sender's host");
    assert_eq!(snmp(&lab, "h0", "Ip", "FragCreates"), 0, "VXLAN packets were not fragmented");

    // A group nobody joined crosses nothing (unregistered multicast is not flooded).
    let before: Vec<u64> = (0..=3).map(|k| lab.fabric_delivered(k).unwrap()).collect();
    STREAM.send(&lab, Ipv4Addr::new(239, 77, 11, 99), 20);
    let after: Vec<u64> = (0..=3).map(|k| lab.fabric_delivered(k).unwrap()).collect();
    assert_eq!(after, before, "an unjoined group reached the underlay");
    drop(lab);
    assert!(namespaces(&p).is_empty(), "left: {:?}", namespaces(&p));

    // All receivers on h1: the underlay carries one copy, to h1 only.
    let lab = Lab::up_spec(&spec("vs", Fabric::Vxlan, Placement::SameHost, None)).unwrap();
    stream_reaches_every_receiver_once(&lab, Ipv4Addr::new(239, 77, 11, 2), 100);
    let h0: Vec<String> =
        lab.mdb().unwrap().into_iter().filter(|e| e.group == "239.77.11.2").map(|e| e.port).collect();
    assert_eq!(h0, ["vx-h1"]);
}

#[test]
fn tgw_preset_speaks_igmpv2_every_120_s_with_mtu_8500() {
    if !privileged("tgw_preset_speaks_igmpv2_every_120_s_with_mtu_8500") {
        return;
    }
    let _s = serial();
    let mut s = spec("g", Fabric::Bridge, Placement::Spread, Some(Preset::Tgw));
    s.topology = Some(Topology { hosts: 2, per_host: 2, fabric: Fabric::Bridge, placement: Placement::Spread });
    s.base.receivers = 4;
    let lab = Lab::up_spec(&s).unwrap();

    // MTU 8500 on every link and bridge.
    for n in lab.nodes() {
        assert_eq!(cat(&lab, &n, "/sys/class/net/eth0/mtu"), "8500", "{n}");
        let h = lab.host_of(&n).unwrap();
        assert_eq!(cat(&lab, &h, &format!("/sys/class/net/{n}/mtu")), "8500", "port {n}");
    }
    for h in ["h0", "h1", "h2"] {
        assert_eq!(cat(&lab, h, "/sys/class/net/br0/mtu"), "8500", "{h}");
        assert_eq!(cat(&lab, h, "/sys/class/net/up0/mtu"), "8500", "{h}");
        assert_eq!(cat(&lab, "sw", &format!("/sys/class/net/{h}/mtu")), "8500", "sw port {h}");
    }
    assert_eq!(cat(&lab, "sw", "/sys/class/net/br0/mtu"), "8500");
    // The shared switch is the querier: IGMPv2, 120 s, member dropped after 3 missed queries.
    assert_eq!(cat(&lab, "sw", "/sys/class/net/br0/bridge/multicast_querier"), "1");
    assert_eq!(cat(&lab, "sw", "/sys/class/net/br0/bridge/multicast_igmp_version"), "2");
    assert_eq!(cat(&lab, "sw", "/sys/class/net/br0/bridge/multicast_query_interval"), "12000");
    assert_eq!(cat(&lab, "sw", "/sys/class/net/br0/bridge/multicast_membership_interval"), "36100");
    for h in ["h0", "h1", "h2"] {
        assert_eq!(cat(&lab, h, "/sys/class/net/br0/bridge/multicast_querier"), "0", "{h}");
    }
    for n in lab.nodes() {
        assert_eq!(cat(&lab, &n, "/proc/sys/net/ipv4/conf/eth0/force_igmp_version"), "2", "{n}");
    }

    // The queries that reach a receiver are IGMPv2, from the switch's address.
    let igmp = lab.igmp_listener("r3").unwrap();
    lab.restart_querier().unwrap();
    let q = igmp.next_query(Duration::from_secs(10)).unwrap().expect("no IGMP query reached r3 within 10 s");
    assert_eq!((q.version, q.source, q.group), (2, Ipv4Addr::new(10, 77, 0, 254), Ipv4Addr::UNSPECIFIED), "{q:?}");

    // Receivers join in IGMPv2, and 8192-byte datagrams cross MTU 8500 unfragmented.
    let g = Ipv4Addr::new(239, 77, 12, 1);
    lab.watch_fabric().unwrap();
    let receivers = lab.receivers();
    let threads: Vec<_> = receivers.iter().map(|n| STREAM.receiver(&lab, n, g)).collect();
    lab.wait_members(g, &receivers, Duration::from_secs(15)).unwrap();
    for n in &receivers {
        let t = cat(&lab, n, "/proc/net/igmp");
        let eth0 = t.lines().find(|l| l.contains("eth0")).unwrap_or_default();
        assert!(eth0.trim_end().ends_with("V2"), "{n}: {t}");
    }
    STREAM.send(&lab, g, 50);
    for (n, th) in receivers.iter().zip(threads) {
        assert_eq!(th.join().unwrap(), all(50), "{n}");
        assert_eq!(snmp(&lab, n, "Ip", "ReasmReqds"), 0, "{n}");
    }
    assert_eq!((lab.fabric_delivered(1).unwrap(), lab.fabric_delivered(2).unwrap()), (53, 53));
}

#[test]
fn cli_preset_up_status_exec_down() {
    if !privileged("cli_preset_up_status_exec_down") {
        return;
    }
    let _s = serial();
    let p = prefix("c");
    let _cleanup = Cleanup(p.clone());
    let mcblast = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mcblast")).env(lab::PREFIX_ENV, &p).args(args).output().unwrap()
    };
    // --fabric vxlan: the approximation (--preset ovn alone is the real OVN where it is installed, tests/lab_ovn.rs)
    let out = ok(mcblast(&["lab", "up", "--preset", "ovn", "--fabric", "vxlan", "--hosts", "2", "--per-host", "2", "--placement", "same-host"]));
    assert!(out.contains("fabric vxlan") && out.contains("same-host"), "{out}");
    let ns = namespaces(&p);
    for n in ["ul", "h0", "h1", "h2", "sender", "r1", "r2", "r3", "r4"] {
        assert!(ns.contains(&format!("{p}{n}")), "{n} missing: {ns:?}");
    }
    assert_eq!(ns.len(), 9);

    // Lab::open reads the whole spec back.
    let opened = Lab::open(&p).unwrap();
    let t = opened.topology().unwrap();
    assert_eq!((t.hosts, t.per_host, t.fabric, t.placement), (2, 2, Fabric::Vxlan, Placement::SameHost));
    assert_eq!((opened.igmp().query_interval_cs, opened.igmp().membership_interval_cs), (15_000, 30_000));
    drop(opened);

    let st = ok(mcblast(&["lab", "status"]));
    assert!(st.contains("fabric vxlan") && st.contains("host h1") && st.contains("r1 r2 r3 r4"), "{st}");
    assert!(st.contains("underlay ul0 10.78.0.11 mtu 9050"), "{st}");
    // exec keeps the short names, for nodes, hosts and the underlay switch
    let a = ok(mcblast(&["lab", "exec", "r4", "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0"]));
    assert!(a.contains("10.77.0.14/24"), "{a}");
    let l = ok(mcblast(&["lab", "exec", "h1", "--", "ip", "-o", "link", "show", "vx-h0"]));
    assert!(l.contains("vx-h0"), "{l}");
    let o = mcblast(&["lab", "exec", "sw", "--", "true"]);
    assert_eq!(o.status.code(), Some(2), "no shared switch with the VXLAN fabric");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("h0, h1, h2, ul"), "{e}");

    let out = ok(mcblast(&["lab", "down"]));
    assert!(out.contains("removed (9 namespaces)"), "{out}");
    assert!(namespaces(&p).is_empty());

    // Flags that do not fit together are refused before anything is built.
    let o = mcblast(&["lab", "up", "--receivers", "3", "--hosts", "2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(namespaces(&p).is_empty());
}
