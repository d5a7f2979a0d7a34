//! End-to-end tests on the lab: the real `mcblast` binary sends and
//! receives inside throwaway network namespaces, and the receivers' JSON
//! output is checked against ground truth (what the sender says it sent,
//! what nftables says it dropped). Privileged: skipped with a message when
//! not root. Every lab is removed when its test ends, pass or fail.

use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mcblast::lab::{Lab, LabConfig};
use mcblast_common::wire::{Header, Kind, Packet};
use serde_json::Value;

mod common;
use common::*;

const NEEDS: &str = "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF) for namespaces and XDP";

/// Runs the sender with arguments; returns its JSON summary line.
fn send(lab: &Lab, args: &[&str]) -> Value {
    wait_send(spawn_send(lab, args))
}

/// Waits for a sender started with [`spawn_send`]; returns its JSON summary line.
fn wait_send(child: Child) -> Value {
    let s = sender_summary(child);
    assert_eq!(s["role"], "send");
    s
}

#[test]
fn clean_run_one_to_nine_no_loss_kernel_equals_socket() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("a", 9);
    // interval lines each second (the helper's default is none): each carries its own delay percentiles
    let recvs: Vec<Recv> = lab.receivers().iter().map(|n| start_recv(&lab, n, &["-i", "1"])).collect();
    for r in &recvs {
        // auto on the lab's veth: tc ingress (veth copies every packet for native XDP).
        assert_eq!(r.begin["xdp_mode"], "tc", "{}", r.begin);
    }
    wait_members(&lab);
    let s = send(&lab, &["-b", "100M", "-l", "8192", "-t", "3"]);
    let sent = s["sent"].as_u64().unwrap();
    assert!(sent > 0);
    assert_eq!(s["bytes"].as_u64().unwrap(), sent * 8192);
    for r in recvs {
        let node = r.node.clone();
        let lines = finish(r);
        let k = summary(&lines, "kernel");
        let so = summary(&lines, "socket");
        let (kf, sf) = (only_flow(k), only_flow(so));
        for f in [kf, sf] {
            assert_eq!(f["received"].as_u64(), Some(sent), "{node}: {f}");
            assert_eq!(f["expected"].as_u64(), Some(sent), "{node}: {f}");
            assert_eq!(f["lost"].as_u64(), Some(0), "{node}: {f}");
            assert_eq!(f["duplicates"].as_u64(), Some(0), "{node}: {f}");
            assert_eq!(f["bytes"].as_u64(), Some(sent * 8192), "{node}: {f}");
            assert_eq!(f["ended"], true, "{node}: {f}");
        }
        for field in ["sender", "group", "run", "flow", "received", "lost", "reordered", "duplicates", "bytes"] {
            assert_eq!(kf[field], sf[field], "{node}: kernel and socket disagree on {field}");
        }
        assert_eq!(k["foreign"].as_u64(), Some(0), "{node}");
        // Delay percentiles from both counters, ordered; the kernel counter
        // stamps each datagram at tc ingress, the socket counter when it is
        // read, later, on the same clock: each of its percentiles is at least
        // the kernel's.
        let ps = ["min_us", "p50_us", "p90_us", "p99_us", "p999_us", "p9999_us", "max_us"];
        let of = |f: &Value| -> Vec<f64> { ps.iter().map(|p| f["delay"][*p].as_f64().expect(p)).collect() };
        let (kp, sp) = (of(kf), of(sf));
        for p in [&kp, &sp] {
            assert!(p.windows(2).all(|w| w[0] <= w[1]), "{node}: percentiles out of order {p:?}");
        }
        assert!(kp.iter().zip(&sp).all(|(k, s)| k <= s), "{node}: kernel {kp:?} above socket {sp:?}");
        for f in [kf, sf] {
            assert_eq!(f["ipdv"]["count"].as_u64(), Some(sent - 1), "{node}: {f}");
        }
        // Each interval with traffic carries its own delay and IPDV percentiles, ordered; one shared clock: trusted.
        for counter in ["kernel", "socket"] {
            let ivs: Vec<&Value> = lines
                .iter()
                .filter(|l| l["type"] == "interval" && l["counter"] == counter && l["received"].as_u64() > Some(0))
                .collect();
            assert!(!ivs.is_empty(), "{node} {counter}: no interval with traffic");
            for iv in ivs {
                interval_percentiles_ordered(iv, &format!("{node} {counter}"));
                // The same per flow: the flows' counts add up to the counter's, each with its own percentiles.
                let flows = iv["flows"].as_array().unwrap_or_else(|| panic!("{node} {counter}: no flows in {iv}"));
                let sum = |k: &str| flows.iter().map(|f| f[k].as_i64().expect(k)).sum::<i64>();
                let total = (iv["received"].as_i64().unwrap(), iv["lost"].as_i64().unwrap());
                assert_eq!((sum("received"), sum("lost")), total, "{node} {counter}: {iv}");
                for f in flows.iter().filter(|f| f["received"].as_u64() > Some(1)) {
                    interval_percentiles_ordered(f, &format!("{node} {counter} flow {}", f["flow"]));
                }
            }
        }
    }
}

/// An interval line's (or one of its flows') delay and IPDV percentiles: present, positive, in order, trusted.
fn interval_percentiles_ordered(iv: &Value, what: &str) {
    let q = |k: &str| iv[k].as_f64().unwrap_or_else(|| panic!("{what}: no {k} in {iv}"));
    let ps = ["p50_us", "p90_us", "p99_us", "p999_us", "p9999_us", "max_us"];
    let d: Vec<f64> = ps.iter().map(|p| q(&format!("delay_{p}"))).collect();
    assert!(d[0] > 0.0 && d.windows(2).all(|w| w[0] <= w[1]), "{what}: delay out of order {iv}");
    let i: Vec<f64> = ps.iter().map(|p| q(&format!("ipdv_{p}"))).collect();
    assert!(i.windows(2).all(|w| w[0] <= w[1]), "{what}: ipdv out of order {iv}");
    assert_eq!(iv["delay_trusted"], true, "{what}: {iv}");
}

#[test]
fn loss_on_one_receivers_path_is_counted_exactly_there_only() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("b", 3);
    lab.drop_every_nth("r2", 10).expect("nft rule");
    // --max-loss 5: r2 loses 10 % and must exit with status 1, the others 0.
    let recvs: Vec<Recv> = lab.receivers().iter().map(|n| start_recv(&lab, n, &["--max-loss", "5"])).collect();
    every_10th_lost_at_r2(&lab, recvs);
}

#[test]
fn sigkilled_receiver_leaves_no_xdp_program() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("c", 1);
    // XDP explicitly: auto counts at tc on veth (see tc_attach_point_counts_exactly_and_leaves_nothing_behind).
    let mut r = start_recv(&lab, "r1", &["--xdp-mode", "native"]);
    assert!(xdp_attached(&lab, "r1"), "XDP program should be attached while recv runs");
    r.child.kill().unwrap(); // SIGKILL
    r.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while xdp_attached(&lab, "r1") {
        assert!(Instant::now() < deadline, "XDP program outlived a SIGKILLed receiver");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `payloads` to 239.0.0.1:5001 from inside the sender namespace.
fn send_raw(lab: &Lab, payloads: Vec<Vec<u8>>) {
    mcblast::netns::run_in(&lab.ns_name("sender"), move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_multicast_ttl_v4(1).unwrap();
        for p in &payloads {
            s.send_to(p, (Ipv4Addr::new(239, 0, 0, 1), 5001)).unwrap();
        }
    })
    .unwrap();
}

#[test]
fn foreign_and_malformed_datagrams_leave_flows_unchanged() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("d", 1);
    // Count only run 77: a valid datagram of another run is foreign too.
    let r = start_recv(&lab, "r1", &["--run-id", "77"]);
    wait_members(&lab);
    let header = |run: u32, len: usize, seq: u64| {
        let mut b = vec![0u8; len];
        Header { kind: Kind::Data, flags: 0, run, flow: 0, seq, tx_ns: 0, len: len as u32, clock: 0 }
            .emit(&mut Packet::new_unchecked(&mut b[..]));
        b
    };
    let mut bad = Vec::new();
    bad.push(b"not mcblast at all, just some bytes..............".to_vec()); // bad magic
    bad.push(header(77, 100, 0)[..20].to_vec()); // short
    let mut v = header(77, 100, 0);
    v[4] = 9; // version
    bad.push(v);
    let mut v = header(77, 100, 0);
    v[35] = 99; // length field says 99, datagram is 100
    bad.push(v);
    let mut v = header(77, 100, 0);
    v[5] = 7; // kind
    bad.push(v);
    bad.push(header(77, 100, u64::MAX)); // sequence out of range
    bad.push(header(5, 100, 3)); // a valid datagram of another run
    let n_bad = bad.len() as u64;
    // Foreign datagrams before, during and after the real flow.
    send_raw(&lab, bad.clone());
    let sender = spawn_send(&lab, &["--run-id", "77", "-n", "300", "--pps", "600", "-l", "1470"]);
    std::thread::sleep(Duration::from_millis(200));
    send_raw(&lab, bad.clone());
    assert_eq!(wait_send(sender)["sent"].as_u64(), Some(300));
    send_raw(&lab, bad);
    let lines = finish(r);
    for counter in ["kernel", "socket"] {
        let sm = summary(&lines, counter);
        assert_eq!(sm["foreign"].as_u64(), Some(3 * n_bad), "{counter}: {sm}");
        let f = only_flow(sm);
        assert_eq!(f["run"].as_u64(), Some(77), "{counter}: {f}");
        assert_eq!(f["received"].as_u64(), Some(300), "{counter}: {f}");
        assert_eq!(f["lost"].as_u64(), Some(0), "{counter}: {f}");
        assert_eq!(f["duplicates"].as_u64(), Some(0), "{counter}: {f}");
    }
}

#[test]
fn socket_only_counter_and_ctrl_c_still_reports() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("e", 2);
    let r1 = start_recv(&lab, "r1", &["--counter", "socket"]);
    let r2 = start_recv(&lab, "r2", &[]);
    assert!(r1.begin["xdp_mode"].is_null(), "socket-only receiver loads no XDP program: {}", r1.begin);
    assert!(!xdp_attached(&lab, "r1"));
    wait_members(&lab);
    // r1 sees a whole flow; r2 is interrupted (SIGINT) in the middle of it.
    let sender = spawn_send(&lab, &["-n", "3000", "--pps", "1500", "-l", "1470"]);
    std::thread::sleep(Duration::from_millis(700));
    let st = Command::new("kill").args(["-INT", &r2.child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let l2 = finish(r2);
    let sent = wait_send(sender)["sent"].as_u64().unwrap();
    assert_eq!(sent, 3000);
    for counter in ["kernel", "socket"] {
        let f = only_flow(summary(&l2, counter));
        let got = f["received"].as_u64().unwrap();
        assert!(got > 0 && got < sent, "{counter}: interrupted receiver saw part of the flow: {f}");
        assert_eq!(f["ended"], false, "{counter}: {f}");
        assert_eq!(f["lost"].as_u64(), Some(0), "{counter}: no gap before the interruption: {f}");
    }
    assert!(!xdp_attached(&lab, "r2"), "Ctrl-C must detach the XDP program");
    let l1 = finish(r1);
    assert!(l1.iter().all(|l| l["type"] != "summary" || l["counter"] == "socket"), "{l1:?}");
    let f = only_flow(summary(&l1, "socket"));
    assert_eq!(f["received"].as_u64(), Some(sent), "{f}");
    assert_eq!(f["lost"].as_u64(), Some(0), "{f}");
    assert_eq!(f["ended"], true, "{f}");
}

#[test]
fn source_specific_join_and_unjoined_groups_are_not_flows() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    // Snooping off: the bridge floods every group to every port, so each
    // receiver's XDP program sees traffic it did not join and must set it
    // aside (other_group) instead of making flows of it.
    let cfg = LabConfig {
        prefix: format!("mcbt{}f-", std::process::id()),
        receivers: 2,
        snooping: false,
        ..LabConfig::default()
    };
    let lab = Lab::up(&cfg).expect("lab up").with_mcblast(BIN);
    let sender = lab.addr("sender").to_string();
    // r1 joins 239.0.0.1 from the sender only; r2 from an address that never sends.
    let r1 = start_recv(&lab, "r1", &["--source", &sender]);
    let r2 = start_recv(&lab, "r2", &["--source", "10.77.0.99", "-t", "4"]);
    let s2 = send(&lab, &["-g", "239.0.0.2", "-n", "50", "--pps", "1000", "-l", "1470"]);
    assert_eq!(s2["sent"].as_u64(), Some(50));
    let s1 = send(&lab, &["-n", "300", "--pps", "1000", "-l", "1470"]);
    assert_eq!(s1["sent"].as_u64(), Some(300));
    let l1 = finish(r1);
    for counter in ["kernel", "socket"] {
        let f = only_flow(summary(&l1, counter));
        assert_eq!(f["group"], "239.0.0.1", "{counter}: {f}");
        assert_eq!(f["sender"], sender.as_str(), "{counter}: {f}");
        assert_eq!(f["received"].as_u64(), Some(300), "{counter}: {f}");
        assert_eq!(f["lost"].as_u64(), Some(0), "{counter}: {f}");
    }
    let k = summary(&l1, "kernel");
    // 50 data datagrams + 3 end markers to the group r1 did not join.
    assert_eq!(k["other_group"].as_u64(), Some(53), "{k}");
    assert_eq!(k["foreign"].as_u64(), Some(0), "{k}");
    let l2 = finish(r2);
    for counter in ["kernel", "socket"] {
        let s = summary(&l2, counter);
        assert_eq!(s["flows"].as_array().map(Vec::len), Some(0), "{counter}: wrong-source receiver has no flows: {s}");
    }
    // r2 saw both groups flooded: 53 to 239.0.0.2, and 303 to 239.0.0.1 from a source it did not join.
    assert_eq!(summary(&l2, "kernel")["other_group"].as_u64(), Some(53 + 303));
}

/// Udp InDatagrams + IgnoredMulti of a node: every UDP datagram its stack saw.
fn udp_seen(lab: &Lab, node: &str) -> u64 {
    snmp(lab, node, "Udp", "InDatagrams") + snmp(lab, node, "Udp", "IgnoredMulti")
}

#[test]
fn sink_counts_every_datagram_at_the_driver_and_none_reach_the_stack() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("sk", 1);

    // --sink with a socket counter is a one-line error.
    let out = lab
        .exec_cmd("r1", &["mcblast", "recv", "--interface", "eth0", "--sink", "--counter", "both", "-t", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "--sink --counter both must fail");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--sink") && err.contains("--counter kernel"), "{err}");

    // Control: the kernel counter alone with the sink off passes what it
    // counted on to the stack, which has no listener for it (Udp IgnoredMulti grows).
    let before = udp_seen(&lab, "r1");
    let r = start_recv(&lab, "r1", &["--counter", "kernel", "--sink=off"]);
    assert_eq!(r.begin["sink"], false);
    wait_members(&lab);
    let s = send(&lab, &["-n", "500", "--pps", "5000", "-l", "1470"]);
    assert_eq!(s["sent"].as_u64(), Some(500));
    finish(r);
    assert!(udp_seen(&lab, "r1") - before >= 500, "without --sink the stack sees the datagrams");

    // --sink (implies --counter kernel): counted exactly, and none reached the stack.
    let before = udp_seen(&lab, "r1");
    let r = start_recv(&lab, "r1", &["--sink"]);
    assert_eq!(r.begin["sink"], true, "{}", r.begin);
    assert_eq!(r.begin["counters"], serde_json::json!(["kernel"]), "{}", r.begin);
    wait_members(&lab);
    let s = send(&lab, &["-n", "2000", "--pps", "5000", "-l", "1470"]);
    let sent = s["sent"].as_u64().unwrap();
    assert_eq!(sent, 2000);
    let lines = finish(r);
    assert!(!lines.iter().any(|l| l["counter"] == "socket"), "no socket counter with --sink");
    let f = only_flow(summary(&lines, "kernel"));
    assert_eq!(f["received"].as_u64(), Some(sent), "{f}");
    assert_eq!(f["expected"].as_u64(), Some(sent), "{f}");
    assert_eq!(f["lost"].as_u64(), Some(0), "{f}");
    assert_eq!(f["ended"], true, "{f}");
    let l = summary(&lines, "layers");
    assert_eq!(l["sunk"].as_u64(), Some(sent), "{l}");
    assert_eq!(l["reached_driver"].as_u64(), Some(sent), "{l}");
    assert_eq!(l["path_lost"].as_u64(), Some(0), "{l}");
    assert_eq!(l["delivered_to_socket"].as_i64(), Some(0), "{l}");
    assert_eq!(l["adds_up"], true, "{l}");
    // Ground truth: the receiver's UDP stack saw none of them (nor the end markers).
    assert_eq!(udp_seen(&lab, "r1") - before, 0, "sunk datagrams must not reach the UDP stack");
}

#[test]
fn sink_auto_drops_only_what_nothing_else_takes_and_stops_once_a_socket_binds_the_port() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("sa", 1);
    // The kernel counter alone, nothing else on r1: `--sink auto` (the default) turns the sink on and says why.
    // A long grace keeps it running from the first run's end marker into the second run.
    let before = udp_seen(&lab, "r1");
    let k = start_recv(&lab, "r1", &["--counter", "kernel", "-t", "40", "--grace", "8"]);
    assert_eq!(k.begin["sink"], true, "{}", k.begin);
    let why = k.begin["sink_reason"].as_str().unwrap_or_default().to_string();
    assert!(why.contains("nothing else here takes port 5001"), "{}", k.begin);
    wait_members(&lab);
    let first = send(&lab, &["-n", "300", "--pps", "5000", "-l", "1470"]);
    assert_eq!(first["sent"].as_u64(), Some(300));
    assert_eq!(udp_seen(&lab, "r1") - before, 0, "sunk datagrams must not reach the UDP stack");

    // A socket bound to the port: the sink goes off (checked every 0.1 s), and what follows reaches it.
    let sock = start_recv(&lab, "r1", &["--counter", "socket", "-t", "40", "--grace", "3"]);
    // Meanwhile a new kernel-only receiver sees the socket and leaves the sink off, saying why.
    let other = start_recv(&lab, "r1", &["--counter", "kernel", "-t", "0.5"]);
    assert_eq!(other.begin["sink"], false, "{}", other.begin);
    assert_eq!(other.begin["sink_reason"], "1 socket is bound to port 5001 here", "{}", other.begin);
    finish(other);
    std::thread::sleep(Duration::from_millis(1500));
    let second = send(&lab, &["-n", "400", "--pps", "5000", "-l", "1470"]);
    assert_eq!(second["sent"].as_u64(), Some(400));

    let s = only_flow(summary(&finish(sock), "socket")).clone();
    assert_eq!((s["received"].as_u64(), s["lost"].as_u64()), (Some(400), Some(0)), "the socket gets the second run: {s}");
    let lines = finish(k);
    let off: Vec<&Value> = lines.iter().filter(|l| l["type"] == "notice" && l["notice"] == "sink_off").collect();
    assert_eq!(off.len(), 1, "{lines:?}");
    assert_eq!(off[0]["why"], "1 socket is bound to port 5001 here", "{}", off[0]);
    let flows = summary(&lines, "kernel")["flows"].as_array().expect("flows").clone();
    let mut received: Vec<u64> = flows.iter().map(|f| f["received"].as_u64().unwrap_or(0)).collect();
    received.sort();
    assert_eq!(received, [300, 400], "the kernel counter counts both runs: {flows:?}");
    assert!(flows.iter().all(|f| f["lost"].as_u64() == Some(0)), "{flows:?}");
    // Ground truth: exactly the first run's datagrams were dropped after counting.
    let l = summary(&lines, "layers");
    assert_eq!(l["sunk"].as_u64(), Some(300), "{l}");
}

/// Programs on the tcx ingress hook of a node's eth0 (from the kernel, BPF_PROG_QUERY).
fn tcx_programs(lab: &Lab, node: &str) -> u32 {
    lab.run_in(node, || {
        let idx = mcblast::iface::lookup("eth0").expect("eth0").index;
        mcblast::sys::bpf::tcx_ingress_programs(idx).expect("BPF_PROG_QUERY tcx ingress")
    })
    .expect("run in node")
}

#[test]
fn tc_attach_point_counts_exactly_and_leaves_nothing_behind() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("stc", 2);
    lab.drop_every_nth("r2", 10).expect("nft rule");
    let recvs: Vec<Recv> =
        lab.receivers().iter().map(|n| start_recv(&lab, n, &["--xdp-mode", "tc", "--max-loss", "5"])).collect();
    for r in &recvs {
        assert_eq!(r.begin["xdp_mode"], "tc", "{}", r.begin);
        assert_eq!(tcx_programs(&lab, &r.node), 1, "{}: the counter is on tcx ingress", r.node);
        assert!(!xdp_attached(&lab, &r.node), "{}: no XDP program with --xdp-mode tc", r.node);
    }
    for (node, lines, want) in every_10th_lost_at_r2(&lab, recvs) {
        for counter in ["kernel", "socket"] {
            let f = only_flow(summary(&lines, counter));
            assert_eq!(f["bytes"].as_u64(), Some((1000 - want) * 8192), "{node} {counter}: {f}");
        }
        let l = summary(&lines, "layers");
        assert_eq!(l["path_lost"].as_u64(), Some(want), "{node}: {l}");
        assert_eq!(l["adds_up"], true, "{node}: {l}");
        assert_eq!(tcx_programs(&lab, &node), 0, "{node}: a finished receiver detaches");
    }

    // --sink at tc ingress: counted, then dropped before the stack.
    lab.clear_drop("r2").expect("clear nft rule");
    let before = udp_seen(&lab, "r1");
    let r = start_recv(&lab, "r1", &["--xdp-mode", "tc", "--sink", "--expect-flows", "1"]);
    // r1 only: r2's receiver has finished, and its membership goes with it.
    lab.wait_members(Ipv4Addr::new(239, 0, 0, 1), &["r1".to_string()], Duration::from_secs(15)).expect("r1 joins");
    let s = send(&lab, &["-n", "500", "--pps", "5000", "-l", "8192"]);
    assert_eq!(s["sent"].as_u64(), Some(500));
    let lines = finish(r);
    let f = only_flow(summary(&lines, "kernel"));
    assert_eq!(f["received"].as_u64(), Some(500), "{f}");
    assert_eq!(summary(&lines, "layers")["sunk"].as_u64(), Some(500));
    assert_eq!(udp_seen(&lab, "r1") - before, 0, "sunk at tc ingress: nothing reached UDP");

    // SIGKILL: the tcx link goes with the process.
    let mut r = start_recv(&lab, "r1", &["--xdp-mode", "tc"]);
    assert_eq!(tcx_programs(&lab, "r1"), 1);
    r.child.kill().unwrap(); // SIGKILL
    r.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while tcx_programs(&lab, "r1") != 0 {
        assert!(Instant::now() < deadline, "tc program outlived a SIGKILLed receiver");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a command in a node's namespace; its stdout. Panics when it fails.
fn in_ns(lab: &Lab, node: &str, argv: &[&str], stdin: Option<&str>) -> String {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &lab.ns_name(node)]).args(argv).stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        c.stdin(Stdio::piped());
    }
    let mut child = c.spawn().unwrap();
    if let Some(text) = stdin {
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The sender's ledger, checked for what every run must satisfy.
fn ledger(s: &Value) -> &Value {
    let l = &s["ledger"];
    assert_eq!(l["interface"], "eth0", "{s}");
    let (sent, ends) = (s["sent"].as_u64().unwrap(), s["end_markers"].as_u64().unwrap());
    assert_eq!(l["handed_to_kernel"].as_u64(), Some(sent + ends), "{s}");
    assert_eq!(l["end_markers"].as_u64(), Some(ends), "{s}");
    assert_eq!(l["refused"].as_u64(), s["errors"].as_u64(), "{s}");
    assert_eq!(l["asked_to_send"].as_u64(), Some(sent + ends + s["errors"].as_u64().unwrap()), "{s}");
    assert!(l["left_interface"].as_u64().unwrap() >= sent + ends, "everything the kernel took left: {s}");
    assert_eq!(l["tx_dropped"].as_u64(), Some(0), "{s}");
    assert_eq!(l["tx_errors"].as_u64(), Some(0), "{s}");
    l
}

/// One receiver, one flow of `n` data datagrams, none lost on the path.
fn assert_no_path_loss(lines: &[Value], n: u64) {
    let f = only_flow(summary(lines, "kernel"));
    assert_eq!((f["received"].as_u64(), f["lost"].as_u64(), f["expected"].as_u64()), (Some(n), Some(0), Some(n)), "{f}");
    let l = summary(lines, "layers");
    assert_eq!(l["path_lost"].as_u64(), Some(0), "{l}");
    assert_eq!(l["adds_up"], true, "{l}");
}

#[test]
fn sender_ledger_counts_drops_in_the_sending_host_apart_from_the_path() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("sl", 1);
    // One datagram per send call (socket engine): every refusal is one datagram.
    let args = ["-n", "1000", "--pps", "5000", "-l", "1470", "--engine", "socket"];

    // Clean: everything handed to the kernel left, nothing dropped.
    let r = start_recv(&lab, "r1", &[]);
    wait_members(&lab);
    let s = send(&lab, &args);
    assert_eq!(s["sent"].as_u64(), Some(1000));
    let l = ledger(&s);
    assert_eq!((l["refused"].as_u64(), l["qdisc_dropped"].as_u64()), (Some(0), Some(0)), "{s}");
    eprintln!("clean: ledger {l}");
    assert_no_path_loss(&finish(r), 1000);

    // netfilter output drop of every 10th attempt in the sender: the send
    // call fails (EPERM), the datagram is asked again; nothing is lost.
    in_ns(
        &lab,
        "sender",
        &["nft", "-f", "-"],
        Some(
            "table ip mcbtsl {\n chain out {\n  type filter hook output priority 0; policy accept;\n  \
             udp dport 5001 numgen inc mod 10 == 0 counter drop\n }\n}\n",
        ),
    );
    let r = start_recv(&lab, "r1", &[]);
    wait_members(&lab);
    let s = send(&lab, &args);
    let rules = in_ns(&lab, "sender", &["nft", "list", "table", "ip", "mcbtsl"], None);
    let nft: u64 = rules
        .split("counter packets ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {rules}"));
    in_ns(&lab, "sender", &["nft", "delete", "table", "ip", "mcbtsl"], None);
    assert!(nft >= 100, "every 10th of at least 1000 attempts: {nft}");
    assert_eq!(s["sent"].as_u64(), Some(1000));
    let l = ledger(&s);
    eprintln!("nft output drop ({nft}): ledger {l}");
    assert_eq!(l["refused"].as_u64(), Some(nft), "ledger refused = nft counter: {s}");
    assert_eq!(s["errors_other"].as_u64(), Some(nft), "{s}");
    assert_eq!(l["qdisc_dropped"].as_u64(), Some(0), "{s}");
    assert_no_path_loss(&finish(r), 1000);

    // A tiny tbf qdisc on the sender's eth0 drops at the qdisc: ENOBUFS
    // (IP_RECVERR), the datagram is asked again; nothing is lost.
    in_ns(&lab, "sender", &["tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "20mbit", "burst", "3000", "limit", "3000"], None);
    let r = start_recv(&lab, "r1", &[]);
    wait_members(&lab);
    let before = mcblast::send::ledger::root_qdisc_drops(&in_ns(&lab, "sender", &["tc", "-s", "-j", "qdisc", "show", "dev", "eth0"], None)).unwrap();
    let s = send(&lab, &args);
    let after = mcblast::send::ledger::root_qdisc_drops(&in_ns(&lab, "sender", &["tc", "-s", "-j", "qdisc", "show", "dev", "eth0"], None)).unwrap();
    in_ns(&lab, "sender", &["tc", "qdisc", "del", "dev", "eth0", "root"], None);
    let dropped = after - before;
    assert!(dropped > 0, "5000 datagrams/s of 1470 bytes exceed 20 Mbit/s: the tbf must drop");
    assert_eq!(s["sent"].as_u64(), Some(1000));
    let l = ledger(&s);
    eprintln!("tbf ({dropped} dropped): ledger {l}");
    assert_eq!(l["qdisc_dropped"].as_u64(), Some(dropped), "ledger = tc's drop counter: {s}");
    assert_eq!(s["errors_enobufs"].as_u64(), Some(dropped), "each qdisc drop came back as ENOBUFS: {s}");
    assert_no_path_loss(&finish(r), 1000);
}

/// Sends 1000 datagrams of 8192 bytes while the bridge drops every 10th
/// towards r2 (`drop_every_nth("r2", 10)` installed by the caller); each
/// receiver, finished (r2 with exit status 1: `--max-loss`), must have lost
/// exactly the nft counter's 100 (r2) or nothing, in both counters.
/// Returns (node, its JSON lines, datagrams it lost).
fn every_10th_lost_at_r2(lab: &Lab, recvs: Vec<Recv>) -> Vec<(String, Vec<Value>, u64)> {
    wait_members(lab);
    let s = send(lab, &["-n", "1000", "--pps", "5000", "-l", "8192"]);
    assert_eq!(s["sent"].as_u64(), Some(1000));
    let dropped = lab.nft_dropped("r2").expect("nft counter");
    assert_eq!(dropped, 100, "every 10th of 1000 data datagrams");
    let mut out = Vec::new();
    for r in recvs {
        let node = r.node.clone();
        let lines = finish_with(r, if node == "r2" { 1 } else { 0 });
        let want = if node == "r2" { dropped } else { 0 };
        for counter in ["kernel", "socket"] {
            let f = only_flow(summary(&lines, counter));
            assert_eq!(f["lost"].as_u64(), Some(want), "{node} {counter}: {f}");
            assert_eq!(f["received"].as_u64(), Some(1000 - want), "{node} {counter}: {f}");
            assert_eq!(f["expected"].as_u64(), Some(1000), "{node} {counter}: {f}");
        }
        out.push((node, lines, want));
    }
    out
}
