//! Loss attribution for fragmented datagrams, against ground truth: at MTU
//! 1500 an 8192-byte datagram crosses the lab as 6 IPv4 fragments (the
//! first carries the UDP and mcblast headers, 5 later ones do not). An
//! nftables rule on the bridge drops every 7th later fragment toward r1, so
//! each drop hits a different datagram (a datagram's 5 later fragments are
//! consecutive, drops are 7 apart). Each of those datagrams reaches r1's
//! driver (its first fragment) but never reassembles: r1's waterfall must
//! charge exactly the rule's count to "never reassembled", its kernel
//! counter must count every datagram in its flow by its first fragment
//! and match every later fragment that arrived, and r2 must lose nothing.
//! A second test sinks fragmented datagrams: the counter counts each once
//! and drops every fragment, so nothing reaches the IP stack.
//! Privileged: skipped with a message when not root. The lab is removed
//! when the test ends.

use mcblast::lab::{Lab, LabConfig};

mod common;
use common::*;

const NEEDS: &str = "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF) for namespaces, XDP and tracepoints";

/// Data datagrams sent.
const COUNT: u64 = 500;
/// 8192 bytes + the UDP header = 8200 bytes of IP payload; 1480 per fragment at MTU 1500.
const LATER_FRAGMENTS: u64 = 5;
/// Drop every EVERY-th later fragment toward r1 (EVERY > LATER_FRAGMENTS).
const EVERY: u64 = 7;

#[test]
fn a_lost_fragment_is_charged_to_reassembly_as_a_whole_datagram() {
    if skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let cfg = LabConfig { prefix: format!("mcbt{}fr-", std::process::id()), receivers: 2, mtu: 1500, ..LabConfig::default() };
    let lab = Lab::up(&cfg).expect("lab up").with_mcblast(BIN);
    // r1 gives up reassembling after 1 s, with room for every pending queue.
    sh(&lab.ns_name("r1"), "echo 1 > /proc/sys/net/ipv4/ipfrag_time && echo 268435456 > /proc/sys/net/ipv4/ipfrag_high_thresh");
    // Every 7th later fragment (offset != 0) forwarded toward r1 is dropped.
    let rules = format!(
        "table bridge mcbtfrag {{\n\
           chain forward {{ type filter hook forward priority filter - 10; policy accept;\n\
             oifname \"r1\" ip daddr 239.0.0.1 ip frag-off & 0x1fff != 0 numgen inc mod {EVERY} 0 counter drop\n\
           }}\n\
         }}\n"
    );
    nft_load(&lab.access_ns("r1"), "fr", &rules);

    let reasm_before = snmp(&lab, "r1", "Ip", "ReasmTimeout");
    // The grace outlasts ipfrag_time, so every failed reassembly has timed
    // out before the receivers stop.
    let recvs: Vec<Recv> = lab.receivers().iter().map(|n| start_recv(&lab, n, &["--grace", "3"])).collect();
    wait_members(&lab);
    let s = sender_summary(spawn_send(
        &lab,
        &["-n", &COUNT.to_string(), "--pps", "1000", "-l", "8192", "--allow-fragments"],
    ));
    assert_eq!(u(&s, "sent"), COUNT);

    let dropped = nft_counter(&lab.access_ns("r1"), "bridge", "mcbtfrag");
    // Later fragments 0, 7, 14, ... of COUNT * 5: each in a different datagram.
    assert_eq!(dropped, (COUNT * LATER_FRAGMENTS).div_ceil(EVERY), "the rule's own count");

    for r in recvs {
        let node = r.node.clone();
        let lines = finish(r);
        let k = summary(&lines, "kernel");
        assert_eq!(u(k, "fragments"), COUNT, "{node}: the kernel counter saw every first fragment: {k}");
        // Every datagram in its flow, once, by its first fragment; every
        // later fragment that reached the driver matched to it.
        let kf = only_flow(k);
        assert_eq!((u(kf, "received"), u(kf, "lost"), u(kf, "fragmented")), (COUNT, 0, COUNT), "{node}: {k}");
        let later_arrived = if node == "r1" { COUNT * LATER_FRAGMENTS - dropped } else { COUNT * LATER_FRAGMENTS };
        assert_eq!(u(k, "later_fragments"), later_arrived, "{node}: {k}");
        assert_eq!(u(k, "unmatched_fragments"), 0, "{node}: {k}");
        let sock = only_flow(summary(&lines, "socket"));
        let l = summary(&lines, "layers");
        assert_eq!(u(l, "expected"), COUNT, "{node}: {l}");
        assert_eq!(u(l, "reached_driver"), COUNT, "{node}: {l}");
        assert_eq!(u(l, "fragments"), COUNT, "{node}: {l}");
        assert_eq!(u(l, "path_lost"), 0, "{node}: {l}");
        assert_eq!(u(l, "kernel_dropped") + u(l, "socket_dropped") + u(l, "unspecified"), 0, "{node}: {l}");
        assert_eq!(l["unaccounted"].as_i64(), Some(0), "{node}: {l}");
        assert_eq!(l["adds_up"], true, "{node}: {l}");
        // The flow's row: exact path numbers, fragmented datagrams included.
        let flows = l["flows"].as_array().unwrap();
        assert_eq!(flows.len(), 1, "{node}: {l}");
        let f = &flows[0];
        let lost_after = if node == "r1" { dropped } else { 0 };
        assert_eq!(
            (u(f, "expected"), u(f, "path_lost"), u(f, "reached_driver"), u(f, "fragmented"), u(f, "read")),
            (COUNT, 0, COUNT, COUNT, COUNT - lost_after),
            "{node}: {f}"
        );
        assert_eq!(f["lost_after_driver"].as_i64(), Some(lost_after as i64), "{node}: {f}");
        // The flow's share of the tracer's timeouts (read from each first
        // fragment's header); what it missed is not split by flow.
        let untraced = u(l, "reassembly_untraced");
        assert_eq!((u(f, "reassembly_failed") + untraced, u(f, "kernel_dropped"), u(f, "socket_dropped")), (lost_after, 0, 0), "{node}: {f}");
        assert_eq!(f["unaccounted"].as_i64(), Some(untraced as i64), "{node}: {f}");
        if node == "r1" {
            assert_eq!(u(sock, "lost"), dropped, "{node}: the socket misses one datagram per dropped fragment: {sock}");
            assert_eq!(u(l, "reassembly_failed"), dropped, "{node}: {l}");
            assert_eq!(u(l, "read"), COUNT - dropped, "{node}: {l}");
            let timeouts: u64 = l["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["reason"] == "FRAG_REASM_TIMEOUT")
                .map(|r| u(r, "fragments"))
                .sum();
            // The drop tracer sees the timeouts by their first fragment; it
            // can miss a timer batch of them (a kernel-side blind spot, see
            // docs/attribution.md's known limits), and then the namespace's own
            // Ip ReasmTimeout supplies exactly the rest, named as untraced.
            let untraced = u(l, "reassembly_untraced");
            assert_eq!(timeouts + untraced, dropped, "{node}: {l}");
            if untraced > 0 {
                eprintln!("{node}: the drop tracer missed {untraced} of {dropped} reassembly timeouts; charged from Ip ReasmTimeout");
            }
            // Ground truth of the namespace: one timed-out queue per datagram.
            assert_eq!(snmp(&lab, "r1", "Ip", "ReasmTimeout") - reasm_before, dropped, "{node}");
            assert_eq!(l["host"]["ip_reasm_timeout"].as_u64(), Some(dropped), "{node}: {l}");
            assert_eq!(l["host"]["ip_reasm_oks"].as_u64(), Some(COUNT - dropped), "{node}: {l}");
        } else {
            assert_eq!(u(sock, "lost"), 0, "{node}: {sock}");
            assert_eq!(u(l, "reassembly_failed"), 0, "{node}: {l}");
            assert_eq!(u(l, "read"), COUNT, "{node}: {l}");
            assert_eq!(l["host"]["ip_reasm_oks"].as_u64(), Some(COUNT), "{node}: {l}");
        }
    }
}

/// `--sink` with fragmented datagrams: the kernel counter counts each
/// datagram once (its first fragment) and drops it and every one of its
/// later fragments, so the sink drops whole datagrams. Ground truth: the
/// sender's counts, the veth driver's own XDP drop statistic (every
/// fragment of every datagram, and the end markers), and the receiver
/// namespace's IP and UDP counters (nothing reached reassembly or a socket).
#[test]
fn a_sink_drops_every_fragment_and_counts_each_datagram_once() {
    if skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let cfg = LabConfig { prefix: format!("mcbt{}fs-", std::process::id()), receivers: 1, mtu: 1500, ..LabConfig::default() };
    let lab = Lab::up(&cfg).expect("lab up").with_mcblast(BIN);
    let reqds_before = snmp(&lab, "r1", "Ip", "ReasmReqds");
    let udp_before = snmp(&lab, "r1", "Udp", "InDatagrams");
    // veth's own statistic counts XDP drops in native mode only (auto chooses tc on veth).
    let r = start_recv(&lab, "r1", &["--sink", "--xdp-mode", "native"]);
    assert_eq!((r.begin["sink"].as_bool(), r.begin["xdp_mode"].as_str()), (Some(true), Some("native")), "{}", r.begin);
    wait_members(&lab);
    let s = sender_summary(spawn_send(
        &lab,
        &["-n", &COUNT.to_string(), "--pps", "1000", "-l", "8192", "--allow-fragments"],
    ));
    let (sent, markers) = (u(&s, "sent"), u(&s, "end_markers"));
    assert_eq!(sent, COUNT);
    let lines = finish(r);

    let k = summary(&lines, "kernel");
    let kf = only_flow(k);
    assert_eq!((u(kf, "received"), u(kf, "lost"), u(kf, "duplicates"), u(kf, "fragmented")), (COUNT, 0, 0, COUNT), "{k}");
    assert_eq!(u(k, "fragments"), COUNT, "{k}");
    assert_eq!(u(k, "later_fragments"), COUNT * LATER_FRAGMENTS, "{k}");
    assert_eq!(u(k, "unmatched_fragments"), 0, "{k}");
    assert!(!lines.iter().any(|l| l["counter"] == "socket"), "no socket counter with --sink");

    let l = summary(&lines, "layers");
    assert_eq!((u(l, "expected"), u(l, "reached_driver"), u(l, "fragments"), u(l, "sunk")), (COUNT, COUNT, COUNT, COUNT), "{l}");
    assert_eq!((u(l, "path_lost"), u(l, "reassembly_failed"), u(l, "read")), (0, 0, 0), "{l}");
    assert_eq!(l["delivered_to_socket"].as_i64(), Some(0), "{l}");
    assert_eq!(l["adds_up"], true, "{l}");
    let f = &l["flows"].as_array().unwrap()[0];
    assert_eq!((u(f, "reached_driver"), u(f, "fragmented")), (COUNT, COUNT), "{f}");
    // The driver dropped every fragment of every datagram, and the markers.
    assert_eq!(u(&l["driver"], "dropped"), COUNT * (1 + LATER_FRAGMENTS) + markers, "{l}");
    // Nothing reached IP reassembly or UDP in r1.
    assert_eq!(snmp(&lab, "r1", "Ip", "ReasmReqds") - reqds_before, 0, "no fragment reached the stack");
    assert_eq!(snmp(&lab, "r1", "Udp", "InDatagrams") - udp_before, 0, "no datagram reached a socket");
}
