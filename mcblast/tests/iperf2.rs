//! `mcblast recv --format iperf2` against Debian's real iperf 2.1.8 in the
//! lab, nothing mocked: a clean 1 → 3 run, every 50th datagram dropped on one
//! switch port, an iperf2 server with a tiny receive buffer beside the
//! counter, a client killed mid-run, ids past 2^32 (hand-made, in iperf2's
//! exact layout: no iperf2 option starts its ids high), and garbage on the port.

mod common;

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const NEEDS: &str = "needs root (namespaces, eBPF) and iperf";
const GROUP: &str = "239.0.0.1";

fn skip_here() -> bool {
    if common::skip(NEEDS) {
        return true;
    }
    if Command::new("iperf").arg("-v").output().is_err() {
        common::skipped("iperf (iperf2) is not installed: cargo xtask setup installs it");
        return true;
    }
    false
}

/// `mcblast recv --format iperf2` on `node` (kernel and socket counters unless `extra` says otherwise).
fn recv(lab: &mcblast::lab::Lab, node: &str, extra: &[&str]) -> Recv {
    let mut args = vec!["-g", GROUP, "-p", "5001", "--format", "iperf2", "--sender-clock", "shared", "--expect-flows", "1"];
    args.extend_from_slice(extra);
    start_recv(lab, node, &args)
}

/// Runs the real iperf2 client on the sender; returns its data datagram count
/// ("Sent N datagrams" counts the FIN and an end-of-job marker too: N − 2).
fn iperf_client(lab: &mcblast::lab::Lab, rate: &str, length: &str, secs: &str) -> u64 {
    let out = lab
        .exec_cmd("sender", &["iperf", "-c", GROUP, "-p", "5001", "-u", "-T", "1", "-b", rate, "-l", length, "-t", secs])
        .output()
        .expect("iperf client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "iperf: {text} {}", String::from_utf8_lossy(&out.stderr));
    let sent: u64 = text
        .lines()
        .find_map(|l| l.split("Sent ").nth(1)?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no 'Sent N datagrams' in: {text}"));
    sent - 2
}

fn kernel_flow(lines: &[Value]) -> Value {
    let s = summary(lines, "kernel");
    assert_eq!(s["format"], "iperf2", "{s}");
    only_flow(s).clone()
}

#[test]
fn a_clean_iperf2_run_is_counted_exactly_on_every_receiver() {
    if skip_here() {
        return;
    }
    let _serial = serial();
    let lab = lab("ic", 3);
    // r3 sinks: its kernel counter drops every iperf2 datagram it counted.
    let rs: Vec<Recv> =
        lab.receivers().iter().map(|n| recv(&lab, n, if n == "r3" { &["--sink"] } else { &[] })).collect();
    wait_members(&lab);
    let data = iperf_client(&lab, "100M", "8192", "2");
    for r in rs {
        let node = r.node.clone();
        let lines = finish(r);
        if node == "r3" {
            let f = kernel_flow(&lines);
            assert_eq!((u(&f, "received"), u(&f, "lost"), f["ended"].as_bool()), (data, 0, Some(true)), "sink: {f}");
            let l = lines.iter().find(|l| l["counter"] == "layers").expect("sink layers");
            assert_eq!((u(l, "sunk"), u(l, "read")), (data, 0), "every datagram sunk, none read: {l}");
            continue;
        }
        for counter in ["kernel", "socket"] {
            let f = only_flow(summary(&lines, counter)).clone();
            assert_eq!((u(&f, "received"), u(&f, "lost"), u(&f, "expected")), (data, 0, data), "{node} {counter}: {f}");
            assert_eq!((u(&f, "duplicates"), u(&f, "reordered"), f["ended"].as_bool()), (0, 0, Some(true)), "{f}");
            assert_eq!(u(&f, "run"), 5001, "the flow's port: {f}");
            assert!(f["delay"]["trusted"].as_bool().unwrap(), "shared clock: delay trusted: {f}");
        }
        assert_eq!(u(summary(&lines, "kernel"), "foreign"), 0, "{node}");
    }
}

#[test]
fn every_50th_datagram_dropped_on_one_port_is_that_receivers_path_loss_exactly() {
    if skip_here() {
        return;
    }
    let _serial = serial();
    let lab = lab("in", 3);
    // iperf2 data datagrams (id's sign bit clear, first fragments) toward r1 only.
    let rules = "table bridge mcbtiperf {\n\
          chain forward { type filter hook forward priority filter - 10; policy accept;\n\
            oifname \"r1\" udp dport 5001 @th,64,1 0 numgen inc mod 50 0 counter drop\n\
          }\n\
        }\n";
    nft_load(&lab.access_ns("r1"), "in", rules);
    let rs: Vec<Recv> = lab.receivers().iter().map(|n| recv(&lab, n, &[])).collect();
    wait_members(&lab);
    let data = iperf_client(&lab, "50M", "8192", "2");
    let dropped = nft_counter(&lab.access_ns("r1"), "bridge", "mcbtiperf");
    assert_eq!(dropped, data.div_ceil(50), "every 50th of {data}");
    let dir = TempDir(std::env::temp_dir().join(format!("mcbt{}iperf2-fanout", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let mut files = Vec::new();
    for r in rs {
        let node = r.node.clone();
        let begin = r.begin.clone();
        let lines = finish(r);
        let file = dir.0.join(format!("{node}.jsonl"));
        std::fs::write(&file, std::iter::once(&begin).chain(&lines).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        files.push(file);
        let f = kernel_flow(&lines);
        let lost = if node == "r1" { dropped } else { 0 };
        assert_eq!((u(&f, "lost"), u(&f, "received"), u(&f, "expected")), (lost, data - lost, data), "{node}: {f}");
        let l = lines.iter().find(|l| l["counter"] == "layers").unwrap_or_else(|| panic!("{node}: no layers"));
        assert_eq!(u(l, "path_lost"), lost, "{node}: {l}");
        assert!(l["adds_up"].as_bool().unwrap(), "{node}: {l}");
    }
    // `mcblast report` over the three: r1's loss is its own (unique), none common.
    let out = Command::new(BIN).arg("report").args(&files).arg("--json").output().expect("mcblast report");
    assert!(out.status.success(), "report: {}", String::from_utf8_lossy(&out.stderr));
    let rep: Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    let t = &rep["totals"];
    assert_eq!((u(t, "common"), u(t, "partial"), u(&t["unique"], "r1")), (0, 0, dropped), "{t}");
}

#[test]
fn an_iperf2_server_with_a_tiny_buffer_loses_at_its_socket_not_on_the_path() {
    if skip_here() {
        return;
    }
    let _serial = serial();
    let lab = lab("is", 1);
    let before = snmp(&lab, "r1", "Udp", "RcvbufErrors");
    let r = recv(&lab, "r1", &["--iperf2-server", "--iperf2-arg=-w", "--iperf2-arg=8K"]);
    wait_members(&lab);
    let data = iperf_client(&lab, "600M", "8192", "2");
    let lines = finish(r);
    let rcvbuf_errors = snmp(&lab, "r1", "Udp", "RcvbufErrors") - before;
    let f = kernel_flow(&lines);
    assert_eq!((u(&f, "lost"), u(&f, "received")), (0, data), "nothing lost on the path: {f}");
    let c = lines.iter().find(|l| l["counter"] == "iperf2").unwrap_or_else(|| panic!("no iperf2 comparison: {lines:?}"));
    let iperf_lost = u(c, "lost");
    assert!(iperf_lost > 0, "a tiny buffer at 600 Mbit/s must overflow: {c}");
    // iperf2's Total counts its FIN when it read it, else it is the highest data id.
    let fin_read = c["saw_fin"].as_bool().unwrap();
    assert_eq!(u(c, "total"), data + fin_read as u64, "{c}");
    assert_eq!(u(c, "fins_dropped"), !fin_read as u64, "{c}");
    // The socket layer (data datagrams and the FIN) is exactly Udp RcvbufErrors.
    let l = lines.iter().find(|l| l["counter"] == "layers").expect("layers");
    let ends: u64 = l["reasons"].as_array().unwrap().iter().map(|r| u(r, "end")).sum();
    assert_eq!(u(l, "socket_dropped") + ends, rcvbuf_errors, "the socket layer = Udp RcvbufErrors: {l}");
    assert_eq!(u(c, "socket_dropped") + u(c, "fins_dropped"), rcvbuf_errors, "{c}");
    assert_eq!((u(c, "path_lost"), u(c, "kernel_dropped"), c["layer"].as_str()), (0, 0, Some("socket")), "{c}");
    assert_eq!(u(c, "missed"), iperf_lost, "{c}");
    if fin_read {
        // iperf2 printed its own report: its loss is the socket's, exactly.
        assert_eq!((u(c, "socket_dropped"), c["adds_up"].as_bool()), (iperf_lost, Some(true)), "{c}");
    } else {
        // Interrupted for its report (its FIN was dropped), iperf 2.1.8 was
        // seen to count one datagram fewer lost than its socket dropped.
        assert!(u(c, "socket_dropped").abs_diff(iperf_lost) <= 1, "{c}");
    }
}

#[test]
fn a_killed_client_leaves_the_tail_unknown() {
    if skip_here() {
        return;
    }
    let _serial = serial();
    let lab = lab("ik", 1);
    let r = recv(&lab, "r1", &["-t", "4"]);
    wait_members(&lab);
    let mut client = lab
        .exec_cmd("sender", &["iperf", "-c", GROUP, "-p", "5001", "-u", "-T", "1", "-b", "20M", "-l", "1470", "-t", "10"])
        .stdout(Stdio::null())
        .spawn()
        .expect("iperf client");
    std::thread::sleep(Duration::from_millis(1500));
    client.kill().expect("kill -9 the client");
    let _ = client.wait();
    let lines = finish(r);
    for counter in ["kernel", "socket"] {
        let f = only_flow(summary(&lines, counter)).clone();
        assert_eq!(f["ended"].as_bool(), Some(false), "no FIN: {f}");
        assert!(u(&f, "received") > 100, "{f}");
        assert_eq!(u(&f, "lost"), 0, "no loss invented after the last datagram: {f}");
        assert_eq!(u(&f, "expected"), u(&f, "received"), "expected ends at the highest id seen: {f}");
    }
}

/// An iperf2 2.1 datagram header (64-bit id): id, tv_sec, tv_usec, id2, flags.
fn iperf2_datagram(id: i64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    b[0..4].copy_from_slice(&(id as u32).to_be_bytes());
    b[4..8].copy_from_slice(&(now.as_secs() as u32).to_be_bytes());
    b[8..12].copy_from_slice(&now.subsec_micros().to_be_bytes());
    b[12..16].copy_from_slice(&((id >> 32) as u32).to_be_bytes());
    b[16..20].copy_from_slice(&0x4801_0098u32.to_be_bytes());
    b
}

/// Sends `datagrams` to the group from the sender, from one socket, from inside its namespace.
fn send_from_sender(lab: &mcblast::lab::Lab, datagrams: Vec<Vec<u8>>) {
    mcblast::netns::run_in(&lab.ns_name("sender"), move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        s.set_multicast_ttl_v4(1).unwrap();
        for d in &datagrams {
            s.send_to(d, (GROUP, 5001)).expect("send");
            std::thread::sleep(Duration::from_micros(200));
        }
    })
    .expect("in the sender's namespace");
}

#[test]
fn ids_past_2_pow_32_and_garbage_on_the_port_are_counted_right() {
    if skip_here() {
        return;
    }
    let _serial = serial();
    let lab = lab("ib", 1);
    let r = recv(&lab, "r1", &[]);
    wait_members(&lab);
    // 2^32 − 3 .. 2^32 + 6 with 2^32 + 1 missing, then the FIN; garbage
    // from the same socket before, among and after them.
    let base = 1i64 << 32;
    let mut ds = vec![b"random bytes, not iperf2 at all".to_vec(), vec![0xff; 100]];
    for id in base - 3..=base + 6 {
        if id != base + 1 {
            ds.push(iperf2_datagram(id, 200));
        }
        if id == base {
            ds.push(vec![0u8; 200]); // id 0: never sent by iperf2
            let mut late = iperf2_datagram(base + 2, 200);
            late[8..12].copy_from_slice(&2_000_000u32.to_be_bytes()); // tv_usec out of range
            ds.push(late);
        }
    }
    ds.push(iperf2_datagram(-(base + 7), 200)); // FIN: ids up to 2^32 + 6 were sent
    ds.push(b"MCBL and more".to_vec());
    send_from_sender(&lab, ds);
    let lines = finish(r);
    for counter in ["kernel", "socket"] {
        let s = summary(&lines, counter);
        let f = only_flow(s);
        // seq = id − 1: the flow's sequence numbers 2^32 − 4 .. 2^32 + 5; before them, 2^32 − 4 numbers never seen.
        let expected = (base + 6) as u64;
        assert_eq!(u(f, "expected"), expected, "{counter}: {f}");
        assert_eq!(u(f, "received"), 9, "{counter}: {f}");
        assert_eq!(u(f, "lost"), expected - 9, "{counter}: the ids below and the one missing: {f}");
        assert_eq!((u(f, "duplicates"), f["ended"].as_bool()), (0, Some(true)), "{counter}: {f}");
        assert_eq!(u(s, "foreign"), 5, "{counter}: every garbage datagram is foreign: {s}");
    }
}
