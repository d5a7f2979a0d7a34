//! The xdp (AF_XDP) engine on the lab: the real `mcblast` binary sends with
//! `-e xdp` from the sender namespace (veth: copy mode, multi-buffer frames
//! for 8192-byte datagrams), and every datagram is checked on the receiving
//! side — by two `mcblast recv` (kernel counter: header and length at the
//! driver; socket counter: the IP stack accepted the checksums) and by a
//! plain UDP socket in a third receiver that compares every byte of every
//! payload with what the sender builds. Privileged: skipped when not root.

use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use mcblast::lab::{Lab, NodeThread};
use mcblast_common::wire::{HEADER_LEN, Header, Kind};
use serde_json::Value;

mod common;
use common::*;

const GROUP: Ipv4Addr = Ipv4Addr::new(239, 0, 0, 1);

const NEEDS: &str = "needs root (namespaces, XDP, AF_XDP)";

fn lab(tag: &str, receivers: u32) -> Lab {
    common::lab(&format!("x{tag}"), receivers)
}

fn flow<'a>(lines: &'a [Value], counter: &str) -> &'a Value {
    only_flow(summary(lines, counter))
}

/// Starts the sender with `-e xdp`; returns the child (JSON on stdout).
fn spawn_send(lab: &Lab, args: &[&str]) -> Child {
    let mut argv = vec!["-e", "xdp"];
    argv.extend_from_slice(args);
    common::spawn_send(lab, &argv)
}

/// Waits for the sender; returns its begin and summary lines.
fn sender_done(child: Child) -> (Value, Value) {
    let lines = sender_lines(child);
    let (b, s) = (sender_line(&lines, "begin"), sender_line(&lines, "summary"));
    assert_eq!((&b["engine"], &s["engine"]), (&Value::from("xdp"), &Value::from("xdp")));
    // veth has no zero-copy: the report must say copy mode.
    assert_eq!(b["xdp_mode"], "copy", "{b}");
    assert_eq!(s["xdp_mode"], "copy", "{s}");
    (b, s)
}

/// What the plain-socket checker saw.
#[derive(Debug, Default)]
struct Raw {
    /// Times each sequence number arrived.
    seen: Vec<u32>,
    data: u64,
    ends: u32,
    end_count: Option<u64>,
    /// Descriptions of the first wrong datagrams.
    bad: Vec<String>,
    bad_count: u64,
}

/// The filler the sender puts after the header (see `Template::filler`).
fn filler_byte(i: usize) -> u8 {
    (i % 251) as u8 | 0x80
}

/// A plain UDP socket in `node` that joins the group and checks every byte
/// of every datagram of run `run` until three end markers (or 30 s).
fn raw_checker(lab: &Lab, node: &str, run: u32, length: usize) -> NodeThread<Raw> {
    let addr = lab.addr(node);
    lab.spawn(node, move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 5001)).expect("bind 5001");
        s.join_multicast_v4(&GROUP, &addr).expect("join");
        mcblast::sys::send::set_buffer(&s, mcblast::sys::send::Buffer::Recv, 32 << 20).expect("rcvbuf");
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut raw = Raw::default();
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(30);
        let bad = |raw: &mut Raw, why: String| {
            raw.bad_count += 1;
            if raw.bad.len() < 5 {
                raw.bad.push(why);
            }
        };
        while raw.ends < 3 && Instant::now() < deadline {
            let n = match s.recv(&mut buf) {
                Ok(n) => n,
                Err(_) => continue,
            };
            let d = &buf[..n];
            let Ok(h) = Header::parse_datagram(d) else {
                bad(&mut raw, format!("{n}-byte datagram with no mcblast header"));
                continue;
            };
            if h.run != run {
                continue;
            }
            match h.kind {
                Kind::End => {
                    raw.ends += 1;
                    raw.end_count = Some(h.seq);
                }
                Kind::Data => {
                    raw.data += 1;
                    if n != length || h.len as usize != length || h.flow != 0 {
                        bad(&mut raw, format!("seq {}: {n} bytes, len field {}, flow {}", h.seq, h.len, h.flow));
                        continue;
                    }
                    if let Some(i) = (HEADER_LEN..n).find(|&i| d[i] != filler_byte(i - HEADER_LEN)) {
                        bad(
                            &mut raw,
                            format!(
                                "seq {}: byte {i} is {:#04x}, sent {:#04x}",
                                h.seq,
                                d[i],
                                filler_byte(i - HEADER_LEN)
                            ),
                        );
                        continue;
                    }
                    let q = h.seq as usize;
                    if q >= 10_000_000 {
                        bad(&mut raw, format!("seq {q} out of range"));
                        continue;
                    }
                    if raw.seen.len() <= q {
                        raw.seen.resize(q + 1, 0);
                    }
                    raw.seen[q] += 1;
                }
            }
        }
        raw
    })
    .expect("checker thread")
}

/// Every sequence number 0..sent exactly once, every byte right.
fn check_raw(raw: &Raw, sent: u64, what: &str) {
    check_raw_but(raw, sent, 0, what);
}

/// As [`check_raw`], with `missing` sequence numbers that never arrived.
fn check_raw_but(raw: &Raw, sent: u64, missing: usize, what: &str) {
    assert_eq!(raw.bad_count, 0, "{what}: {} wrong datagrams, e.g. {:?}", raw.bad_count, raw.bad);
    assert_eq!(raw.ends, 3, "{what}: end markers");
    assert_eq!(raw.end_count, Some(sent), "{what}: end marker count");
    assert_eq!(raw.seen.len() as u64, sent, "{what}: highest sequence number + 1");
    let absent = raw.seen.iter().filter(|&&c| c == 0).count();
    let repeated = raw.seen.iter().filter(|&&c| c > 1).count();
    assert_eq!((absent, repeated), (missing, 0), "{what}: sequence numbers missing / repeated");
    assert_eq!(raw.data, sent - missing as u64, "{what}: data datagrams");
}

/// Kernel and socket counters of one receiver saw every datagram once.
fn check_exact(lines: &[Value], node: &str, sent: u64, length: u64) {
    for counter in ["kernel", "socket"] {
        let f = flow(lines, counter);
        let what = format!("{node} {counter}, -l {length}: {f}");
        assert_eq!(f["received"].as_u64(), Some(sent), "{what}");
        assert_eq!(f["expected"].as_u64(), Some(sent), "{what}");
        assert_eq!(f["lost"].as_u64(), Some(0), "{what}");
        assert_eq!(f["duplicates"].as_u64(), Some(0), "{what}");
        assert_eq!(f["reordered"].as_u64(), Some(0), "{what}");
        assert_eq!(f["bytes"].as_u64(), Some(sent * length), "{what}");
        assert_eq!(f["ended"], true, "{what}");
        assert_eq!(f["sender"], "10.77.0.1", "{what}");
    }
}

#[test]
fn paced_xdp_delivers_every_datagram_once_with_every_byte_right() {
    if common::skip(NEEDS) {
        return;
    }
    let _s = serial();
    let lab = lab("a", 3);
    for (k, length) in [64usize, 1470, 8192].into_iter().enumerate() {
        let run = (100 + k).to_string();
        let recvs: Vec<Recv> = ["r1", "r2"].iter().map(|n| start_recv(&lab, n, &["--run-id", &run])).collect();
        let checker = raw_checker(&lab, "r3", 100 + k as u32, length);
        lab.wait_members(GROUP, &lab.receivers(), Duration::from_secs(15)).expect("joins");
        let (_, s) = sender_done(spawn_send(
            &lab,
            &["--pps", "4000", "-n", "1500", "-l", &length.to_string(), "--run-id", &run],
        ));
        let sent = s["sent"].as_u64().unwrap();
        assert_eq!(sent, 1500, "{s}");
        assert_eq!(s["bytes"].as_u64(), Some(sent * length as u64), "{s}");
        assert_eq!(s["end_markers"].as_u64(), Some(3), "{s}");
        for r in recvs {
            let node = r.node.clone();
            check_exact(&finish(r), &node, sent, length as u64);
        }
        check_raw(&checker.join(), sent, &format!("r3 raw, -l {length}"));
    }
}

#[test]
fn flat_out_xdp_kernel_counters_equal_sent() {
    if common::skip(NEEDS) {
        return;
    }
    let _s = serial();
    let lab = lab("b", 2);
    let recvs: Vec<Recv> =
        lab.receivers().iter().map(|n| start_recv(&lab, n, &["--run-id", "7", "--rcvbuf", "67108864"])).collect();
    lab.wait_members(GROUP, &lab.receivers(), Duration::from_secs(15)).expect("joins");
    let (_, s) = sender_done(spawn_send(&lab, &["-t", "2", "-l", "8192", "--run-id", "7"]));
    let sent = s["sent"].as_u64().unwrap();
    assert!(sent > 0);
    assert_eq!(s["bytes"].as_u64(), Some(sent * 8192));
    eprintln!("flat out: sent {sent} ({:.0} datagrams/s), errors {}", s["rate_pps"].as_f64().unwrap(), s["errors"]);
    for r in recvs {
        let node = r.node.clone();
        let lines = finish(r);
        let k = flow(&lines, "kernel");
        assert_eq!(k["received"].as_u64(), Some(sent), "{node} kernel: {k}");
        assert_eq!((k["lost"].as_u64(), k["duplicates"].as_u64()), (Some(0), Some(0)), "{node} kernel: {k}");
        assert_eq!(k["ended"], true, "{node}: {k}");
        // The socket counter may lose datagrams to its own buffer on this
        // 2-core machine (that is the receiving host, not the sender):
        // numbers reported, never more than sent, never a duplicate.
        let so = flow(&lines, "socket");
        eprintln!("{node}: kernel {} socket {} (lost {})", k["received"], so["received"], so["lost"]);
        assert_eq!(so["expected"].as_u64(), Some(sent), "{node} socket: {so}");
        assert_eq!(so["duplicates"].as_u64(), Some(0), "{node} socket: {so}");
    }
}

/// The sender's switch port goes down for a moment mid-run: the driver
/// refuses frames (sendto EBUSY), the engine counts them as ENOBUFS and
/// sends the same sequence numbers again once the link is back, so the
/// receivers see every number at most once and nothing the sender did not
/// count. What the switch itself loses is the ground truth of the loss:
/// datagrams already across the link when the port goes down (queued in the
/// switch's backlog) reach the bridge after it disabled the port and die
/// there. nftables counts what entered the switch port (netdev ingress,
/// before the bridge) and what the bridge forwarded to each receiver; each
/// receiver's loss is exactly the difference, and both miss the same numbers.
#[test]
fn frames_the_driver_drops_are_counted_and_sent_again() {
    if common::skip(NEEDS) {
        return;
    }
    let _s = serial();
    let lab = lab("c", 2);
    let sw = lab.ns_name("sw");
    nft_load(&sw, "flap", &flap_counters());
    let recv = start_recv(&lab, "r1", &["--run-id", "9"]);
    let checker = raw_checker(&lab, "r2", 9, 1470);
    lab.wait_members(GROUP, &lab.receivers(), Duration::from_secs(15)).expect("joins");
    let child = spawn_send(&lab, &["--pps", "20000", "-t", "3", "-l", "1470", "--run-id", "9"]);
    let link = |state: &str| {
        let st = Command::new("ip").args(["-n", &sw, "link", "set", "sender", state]).status().expect("ip link");
        assert!(st.success(), "ip link set sender {state}");
    };
    std::thread::sleep(Duration::from_millis(1000));
    link("down");
    std::thread::sleep(Duration::from_millis(300));
    link("up");
    let (_, s) = sender_done(child);
    let sent = s["sent"].as_u64().unwrap();
    assert!(s["errors_enobufs"].as_u64().unwrap() > 0, "the link flap made the driver refuse frames: {s}");
    let lines = finish(recv);
    let raw = checker.join();
    let entered = nft_counter(&sw, "netdev", "mcbt_flap_in");
    let died = |node: &str| entered - nft_counter(&sw, "bridge", &format!("mcbt_flap_{node}"));
    let refused = s["errors_enobufs"].clone();
    eprintln!("link flap: sent {sent}, ENOBUFS {refused}, entered the switch {entered}, died there {}", died("r1"));
    // Refused frames never cross the link (veth refuses toward a port that is down), so the sender's count is
    // what enters the switch: no datagram twice, none skipped.
    assert_eq!(entered, sent + 3, "the switch port saw each datagram and end marker once");
    let k = flow(&lines, "kernel");
    assert_eq!((k["lost"].as_u64(), k["duplicates"].as_u64()), (Some(died("r1")), Some(0)), "r1 kernel: {k}");
    assert_eq!(k["received"].as_u64(), Some(sent - died("r1")), "r1 kernel: {k}");
    let (r1_lost, _) = lost_seqs(&lines, "kernel");
    let r2_missing: std::collections::BTreeSet<u64> =
        raw.seen.iter().enumerate().filter(|&(_, &c)| c == 0).map(|(q, _)| q as u64).collect();
    assert_eq!(r1_lost, r2_missing, "r1 and r2 miss the same datagrams: the ones that died in the switch");
    assert_eq!(died("r2"), died("r1"));
    check_raw_but(&raw, sent, r2_missing.len(), "r2 raw after a link flap");
}

/// Counters in the switch for the link flap: mcblast's datagrams (port 5001)
/// entering the port `sender` (netdev ingress, before the bridge), and those
/// the bridge forwarded from it to r1 and to r2.
fn flap_counters() -> String {
    let mut s = String::from(
        "table netdev mcbt_flap_in {\n chain in {\n  type filter hook ingress device \"sender\" priority 0; \
         policy accept;\n  udp dport 5001 counter\n }\n}\n",
    );
    for r in ["r1", "r2"] {
        s += &format!(
            "table bridge mcbt_flap_{r} {{\n chain pass {{\n  type filter hook forward priority 0; policy accept;\n  \
             iifname \"sender\" oifname \"{r}\" udp dport 5001 counter\n }}\n}}\n"
        );
    }
    s
}
