//! AWS TGW's limits as the lab's fabric enforces them (`lab up --preset tgw`,
//! `--tgw-limits`): the per-flow datagram and bit rates, fragmented multicast
//! dropped, IGMPv3 reports ignored. Each drop is counted by the fabric (nftables
//! in the switch); the receivers' path loss must equal those counts exactly —
//! the fabric's own counters are the ground truth, never a rate × time
//! expectation. The rates are set low (`--tgw-flow-pps 2000`, 8 Mbit/s) so a
//! sender exceeds them on a shared 2-core machine; the mechanism is the one
//! `--preset tgw` uses with AWS's 75,000/s and 1 Gbit/s. Privileged: skipped
//! with a message when not root; every lab is removed when its test ends.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use mcblast::lab::{Fabric, IgmpConfig, Lab, LabConfig, LabSpec, Placement, Preset, TgwLimits, Topology};
use serde_json::Value;

mod common;
use common::*;

const NEEDS: &str = "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF) for namespaces and nftables";

fn prefix(tag: &str) -> String {
    format!("mcbt{}g{tag}-", std::process::id())
}

/// A `--preset tgw` lab of one receiver host with 2 receivers, with `limits` in its fabric.
fn tgw_lab(tag: &str, limits: &TgwLimits) -> Lab {
    tgw_lab_igmp(tag, limits, 2)
}

/// As [`tgw_lab`], with IGMP version `version` (3: the nodes are not forced to IGMPv2).
fn tgw_lab_igmp(tag: &str, limits: &TgwLimits, version: u8) -> Lab {
    tgw_lab_hosts(tag, limits, version, 1, 2)
}

fn tgw_lab_hosts(tag: &str, limits: &TgwLimits, version: u8, hosts: u32, per_host: u32) -> Lab {
    let (_, mut igmp, _, _, _) = Preset::Tgw.settings();
    igmp.version = version;
    tgw_lab_with(tag, limits, igmp, hosts, per_host)
}

fn tgw_lab_with(tag: &str, limits: &TgwLimits, igmp: IgmpConfig, hosts: u32, per_host: u32) -> Lab {
    let (_, _, mtu, _, _) = Preset::Tgw.settings();
    let topology = Topology { hosts, per_host, fabric: Fabric::Bridge, placement: Placement::Spread };
    let spec = LabSpec {
        base: LabConfig { prefix: prefix(tag), receivers: hosts * per_host, mtu, snooping: true, querier: true },
        igmp,
        topology: Some(topology),
    };
    let lab = Lab::up_spec(&spec).expect("lab up").with_mcblast(BIN);
    lab.tgw_limits_apply(limits).expect("TGW limits");
    lab
}

/// Member cap `cap`, no rate limits.
fn capped(cap: u32) -> TgwLimits {
    TgwLimits { max_members: Some(cap), ..limits(None, None) }
}

fn limits(pps: Option<u64>, bps: Option<u64>) -> TgwLimits {
    TgwLimits { fragments: true, flow_pps: pps, flow_bps: bps, igmpv2_only: true, max_members: None, queries_from_zero: true }
}

/// Receivers on r1 and r2, the sender run with `args`; returns (sent, every receiver's layers).
fn run(lab: &Lab, args: &[&str]) -> (u64, Vec<(String, Value)>) {
    let recvs: Vec<Recv> = lab.receivers().iter().map(|n| start_recv(lab, n, &["-t", "20"])).collect();
    wait_members(lab);
    let sent = u(&sender_summary(spawn_send(lab, args)), "sent");
    let layers = recvs
        .into_iter()
        .map(|r| {
            let node = r.node.clone();
            let lines = finish(r);
            (node, summary(&lines, "layers").clone())
        })
        .collect();
    (sent, layers)
}

/// Every receiver lost exactly `dropped` on the path and nothing elsewhere.
fn charged_to_the_path(layers: &[(String, Value)], sent: u64, dropped: u64) {
    for (node, l) in layers {
        assert_eq!(l["adds_up"], true, "{node}: {l}");
        assert_eq!(u(l, "expected"), sent, "{node}: {l}");
        assert_eq!(u(l, "path_lost"), dropped, "{node}: the fabric dropped {dropped}: {l}");
        assert_eq!(u(l, "reached_driver"), sent - dropped, "{node}: {l}");
        assert_eq!(u(l, "read"), sent - dropped, "{node}: {l}");
        for f in ["kernel_dropped", "socket_dropped", "path_duplicates"] {
            assert_eq!(u(l, f), 0, "{node}: {f}: {l}");
        }
    }
}

#[test]
fn a_flow_over_the_datagram_rate_loses_exactly_what_the_fabric_dropped() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = tgw_lab("p", &limits(Some(2000), None));
    // 10,000 datagrams at 5,000/s against a 2,000/s bucket: about 6,000 over
    let (sent, layers) = run(&lab, &["--engine", "mmsg", "-n", "10000", "--pps", "5000", "-l", "64"]);
    assert_eq!(sent, 10_000);
    let (l, d) = lab.tgw_limits().expect("read").expect("limits in force");
    assert_eq!(l.flow_pps, Some(2000));
    assert!(d.over_pps > 0 && d.over_pps < sent, "the bucket dropped some, not all: {d:?}");
    assert_eq!((d.over_bps, d.fragments), (0, 0), "{d:?}");
    assert_eq!(d.flows.len(), 1, "{d:?}");
    assert_eq!(d.flows[0].dropped, d.over_pps, "{d:?}");
    assert_eq!(lab.tgw_dropped().unwrap(), d.over_pps);
    charged_to_the_path(&layers, sent, d.over_pps);
    // lab status shows the limit and its count
    let out = Command::new(BIN).args(["lab", "status"]).env("MCBLAST_LAB_PREFIX", lab.prefix()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("TGW limits"), "{text}");
    let line = text.lines().find(|l| l.contains("datagrams/s per flow")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("2000 /s") && line.ends_with(&format!("dropped {}", d.over_pps)), "{line}");
}

#[test]
fn a_gso_senders_datagrams_meet_the_rate_limit_one_by_one() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = tgw_lab("g", &limits(Some(2000), None));
    // ENA has no UDP segmentation offload: with TGW's rate limits the lab's sender segments in its own stack, so
    // the fabric's bucket counts datagrams, not GSO batches.
    let k = Command::new("ip").args(["netns", "exec", &lab.ns_name("sender"), "ethtool", "-k", "eth0"]).output().unwrap();
    assert!(String::from_utf8_lossy(&k.stdout).contains("tx-udp-segmentation: off"), "the sender segments");
    // flat out, where the gso engine fills whole batches
    let (sent, layers) = run(&lab, &["--engine", "gso", "-n", "6000", "-l", "1470"]);
    assert_eq!(sent, 6000);
    let (_, d) = lab.tgw_limits().expect("read").expect("limits in force");
    assert!(d.over_pps > 0 && d.over_pps < sent, "the bucket dropped some, not all: {d:?}");
    for (node, l) in &layers {
        assert_eq!(u(l, "expected"), sent, "{node}: {l}");
        assert_eq!(u(l, "path_lost"), d.over_pps, "{node}: each packet the fabric dropped was one datagram: {l}");
    }
}

#[test]
fn a_flow_over_the_bit_rate_loses_exactly_what_the_fabric_dropped() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    // 8 Mbit/s per flow; 1470-byte datagrams (1498 IP bytes) at 2,000/s are about 24 Mbit/s
    let lab = tgw_lab("b", &limits(None, Some(8_000_000)));
    let (sent, layers) = run(&lab, &["--engine", "mmsg", "-n", "4000", "--pps", "2000", "-l", "1470"]);
    assert_eq!(sent, 4000);
    let (_, d) = lab.tgw_limits().expect("read").expect("limits in force");
    assert!(d.over_bps > 0 && d.over_bps < sent, "{d:?}");
    assert_eq!((d.over_pps, d.fragments), (0, 0), "{d:?}");
    assert_eq!(d.flows.iter().map(|f| f.dropped).sum::<u64>(), d.over_bps, "{d:?}");
    charged_to_the_path(&layers, sent, d.over_bps);
}

#[test]
fn a_fragmented_datagram_never_arrives_and_is_charged_to_the_path() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = tgw_lab("f", &limits(None, None));
    // 9000-byte datagrams: 9028-byte IP packets over MTU 8500, two fragments each
    let (sent, layers) = run(&lab, &["--engine", "mmsg", "-n", "50", "--pps", "200", "-l", "9000", "--allow-fragments"]);
    assert_eq!(sent, 50);
    let (_, d) = lab.tgw_limits().expect("read").expect("limits in force");
    assert_eq!(d.fragmented_datagrams, 50, "{d:?}");
    assert_eq!(d.fragments, 100, "{d:?}");
    assert_eq!((d.over_pps, d.over_bps), (0, 0), "{d:?}");
    charged_to_the_path(&layers, sent, 50);
}

#[test]
fn limits_off_leave_the_fabric_alone_and_flags_are_checked() {
    // without root: the flags are checked before anything is built
    let out = Command::new(BIN).args(["lab", "up", "--receivers", "2", "--tgw-limits", "on"]).output().unwrap();
    one_line_error(&out, &["--tgw-limits", "bridge fabric"]);
    let out = Command::new(BIN)
        .args(["lab", "up", "--preset", "tgw", "--tgw-limits", "off", "--tgw-flow-pps", "10"])
        .output()
        .unwrap();
    one_line_error(&out, &["--tgw-flow-pps"]);
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = tgw_lab("o", &limits(Some(10), None));
    assert!(lab.tgw_limits().unwrap().is_some());
    lab.tgw_limits_remove().unwrap();
    assert!(lab.tgw_limits().unwrap().is_none());
    assert_eq!(lab.tgw_dropped().unwrap(), 0);
}

/// TGW queries from 0.0.0.0; the members answer such queries and stay members. Queries every 2 s (membership
/// 7 s: 3 missed queries) so that 10 s span several.
#[test]
fn queries_come_from_0_0_0_0_and_members_stay_through_them() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let (_, mut igmp, _, _, _) = Preset::Tgw.settings();
    (igmp.query_interval_cs, igmp.membership_interval_cs) = (200, 700);
    let lab = tgw_lab_with("q", &limits(None, None), igmp, 1, 2);
    let listener = lab.igmp_listener("r1").expect("IGMP listener");
    let r = start_recv(&lab, "r1", &["-t", "14"]);
    let group = Ipv4Addr::new(239, 0, 0, 1);
    lab.wait_members(group, &["r1".to_string()], Duration::from_secs(5)).expect("r1 joins");
    let q = listener.next_query(Duration::from_secs(5)).unwrap().expect("a query within 5 s");
    assert_eq!((q.version, q.source, q.group), (2, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED), "{q:?}");
    std::thread::sleep(Duration::from_secs(10));
    lab.wait_members(group, &["r1".to_string()], Duration::from_secs(1)).expect("r1 still a member after 10 s");
    let (l, _) = lab.tgw_limits().expect("read").expect("limits in force");
    assert!(l.queries_from_zero, "{l:?}");
    drop(r);
}

#[test]
fn igmpv3_reports_are_ignored_so_a_v3_receiver_never_becomes_a_member() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    // IGMPv3 queries, nodes not forced to v2: their reports are v3 and the fabric drops them
    let lab = tgw_lab_igmp("v", &limits(None, None), 3);
    let r = start_recv(&lab, "r1", &["-t", "4"]);
    let joined = lab.wait_members(Ipv4Addr::new(239, 0, 0, 1), &["r1".to_string()], Duration::from_secs(3));
    assert!(joined.is_err(), "r1 became a member through IGMPv3: {joined:?}");
    drop(r);
    let (_, d) = lab.tgw_limits().expect("read").expect("limits in force");
    assert!(d.igmpv3_reports > 0, "{d:?}");
    assert_eq!(d.fragments + d.over_pps + d.over_bps, 0, "{d:?}");
}

/// The 100-member cap, tested with a cap of 2 (the mechanism is the same; 101
/// receivers are too heavy for this machine): r1 and r2 (host h1) join and
/// are admitted, r3 (host h2) joins third and gets nothing — its reports are
/// refused, so no bridge learns it and the fabric sends h2 no datagram.
#[test]
fn a_member_over_the_cap_gets_nothing() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = tgw_lab_hosts("m", &capped(2), 2, 2, 2);
    lab.watch_fabric().expect("fabric counters");
    let group = Ipv4Addr::new(239, 0, 0, 1);
    let first: Vec<Recv> = ["r1", "r2"].iter().map(|n| start_recv(&lab, n, &["-t", "20"])).collect();
    lab.wait_members(group, &["r1".to_string(), "r2".to_string()], Duration::from_secs(15)).expect("r1, r2 join");
    let r3 = start_recv(&lab, "r3", &["-t", "20"]);
    let joined = lab.wait_members(group, &["r3".to_string()], Duration::from_secs(3));
    assert!(joined.is_err(), "r3 became the third member: {joined:?}");
    let sent = u(&sender_summary(spawn_send(&lab, &["--engine", "mmsg", "-n", "500", "--pps", "1000", "-l", "64"])), "sent");
    assert_eq!(sent, 500);
    for r in first {
        let node = r.node.clone();
        let lines = finish(r);
        assert_eq!(u(summary(&lines, "layers"), "read"), sent, "{node}");
    }
    assert_eq!(lab.fabric_delivered(2).unwrap(), 0, "the fabric sent h2 (r3's host) something");
    let (limits, d) = lab.tgw_limits().expect("read").expect("limits in force");
    assert_eq!(limits.max_members, Some(2));
    let g = d.groups.iter().find(|g| g.group == group).unwrap_or_else(|| panic!("{d:?}"));
    assert!(g.refused > 0, "{d:?}");
    drop(r3);
}

/// TGW drops a member after 3 missed queries and its place goes to the next: a cap of 2, queries every 2 s,
/// membership 7 s. r1 and r2 (host h1) are admitted and r3 (host h2) refused; then r1 falls silent (nftables in
/// r1 drops its own IGMP reports; its socket stays joined), the bridges and the cap age it out, and r3's next
/// answer to a query takes its place: r3 becomes a member and reads every datagram sent afterwards, r1 none.
#[test]
fn a_silent_member_ages_out_and_its_place_goes_to_the_next() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let (_, mut igmp, _, _, _) = Preset::Tgw.settings();
    (igmp.query_interval_cs, igmp.membership_interval_cs) = (200, 700);
    let lab = tgw_lab_with("a", &capped(2), igmp, 2, 2);
    let group = Ipv4Addr::new(239, 0, 0, 1);
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let r1 = start_recv(&lab, "r1", &["-t", "40"]);
    let r2 = start_recv(&lab, "r2", &["-t", "40"]);
    lab.wait_members(group, &names(&["r1", "r2"]), Duration::from_secs(15)).expect("r1, r2 join");
    let r3 = start_recv(&lab, "r3", &["-t", "40"]);
    let early = lab.wait_members(group, &names(&["r3"]), Duration::from_secs(3));
    assert!(early.is_err(), "r3 became the third member while r1 and r2 report: {early:?}");
    let quiet = "table ip mcbt_quiet {\n chain out {\n  type filter hook output priority 0; policy accept;\n  \
                 ip protocol igmp counter drop\n }\n}\n";
    nft_load(&lab.ns_name("r1"), "quiet", quiet);
    lab.wait_members(group, &names(&["r3"]), Duration::from_secs(20)).expect("r3 takes r1's place");
    let (_, d) = lab.tgw_limits().expect("read").expect("limits in force");
    let g = *d.groups.iter().find(|g| g.group == group).unwrap_or_else(|| panic!("{d:?}"));
    assert_eq!((g.members, g.aged_out), (2, 1), "r2 and r3 live, r1 aged out: {g:?}");
    assert!(g.refused > 0, "r3's early reports were refused: {g:?}");
    assert!(nft_counter(&lab.ns_name("r1"), "ip", "mcbt_quiet") > 0, "r1 never tried to report");
    lab.watch_fabric().expect("fabric counters");
    let sent = u(&sender_summary(spawn_send(&lab, &["--engine", "mmsg", "-n", "300", "--pps", "1000", "-l", "64"])), "sent");
    assert_eq!(sent, 300);
    for r in [r2, r3] {
        let node = r.node.clone();
        let lines = finish(r);
        assert_eq!(u(summary(&lines, "layers"), "read"), sent, "{node}");
    }
    let to_h2 = lab.fabric_delivered(2).unwrap();
    assert_eq!(to_h2, sent + 3, "h2 (r3's host): one copy of each datagram and of the 3 end markers");
    drop(r1);
}
