//! Loss attribution at the sender's maximum rate, on the users' topology:
//! one sender, nine receivers on one bridge, the sender running flat out
//! (no `-b`/`--pps`; bounded by `-n`), and in the same run four injected
//! losses, each with an independent counter as ground truth:
//!
//! - every 10th data datagram dropped by nftables as it enters the bridge
//!   from the sender (the rule's counter): **path** loss at every receiver,
//!   and **common** to all nine in `mcblast report`;
//! - every 13th of the survivors dropped by `mcblast lab impair` on r1's
//!   bridge port (the program's `dropped`): **path** loss at r1 and
//!   **unique** to r1;
//! - every 7th of the survivors dropped by an nftables rule on r2's input
//!   hook (the rule's counter): **kernel** at r2, as NETFILTER_DROP;
//! - a one-datagram receive buffer and a reader sleeping 2 ms per datagram
//!   at r3 (the namespace's `Udp RcvbufErrors` and the socket's
//!   SO_RXQ_OVFL): **socket** at r3.
//!
//! No other loss is expected: with the mmsg engine the sender's own
//! syscalls carry every datagram through the bridge to each receiver's
//! socket (veth), so it cannot outrun the receivers' drivers and stacks.
//! The test does not take that on trust: every counter that would show
//! loss the machine added at flat-out rate (the sender's ledger, the bridge
//! ports' `tx_dropped`, each receiver's driver, `rx_dropped` and softnet
//! counters, every waterfall layer) must be 0 beyond what the injections
//! explain, and every waterfall must add up. The one place a loaded machine
//! may add loss of its own is a receiver's socket (a reader starved of CPU):
//! there it must be charged to the socket layer only, exactly the
//! namespace's `Udp RcvbufErrors` and the socket's SO_RXQ_OVFL, like r3's.
//! Privileged: skipped with a message when not root.
//! The lab, the rules and the impairment are removed when the test ends.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use mcblast::lab::Lab;
use serde_json::Value;

mod common;
use common::*;

const NEEDS: &str = "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF) for namespaces, XDP, tcx and tracepoints";

/// The injections' periods.
const SENDER_EVERY: u64 = 10;
const IMPAIR_EVERY: u64 = 13;
const NETFILTER_EVERY: u64 = 7;

fn u(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("{field} is not a count: {v}"))
}

/// Runs `nft` in namespace `ns`; returns its stdout.
fn nft(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip").args(["netns", "exec", ns, "nft"]).args(args).output().expect("nft");
    assert!(out.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Loads `rules` (an nft script) into namespace `ns`.
fn nft_load(ns: &str, tag: &str, rules: &str) {
    let file = std::env::temp_dir().join(format!("mcbt{}{tag}.nft", std::process::id()));
    std::fs::write(&file, rules).unwrap();
    nft(ns, &["-f", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
}

/// The packet count of the one counter in `family table`, in `ns`.
fn nft_counter(ns: &str, family: &str, table: &str) -> u64 {
    let v: Value = serde_json::from_str(&nft(ns, &["-j", "list", "table", family, table])).unwrap();
    let counts: Vec<u64> = v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.get("rule"))
        .flat_map(|r| r["expr"].as_array().unwrap().iter())
        .filter_map(|e| e["counter"]["packets"].as_u64())
        .collect();
    assert_eq!(counts.len(), 1, "one counter in {family} {table}: {v}");
    counts[0]
}

/// Runs `mcblast lab impair ARGS --json` against the lab; returns its line.
fn impair(lab: &Lab, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .args(["lab", "impair"])
        .args(args)
        .arg("--json")
        .env(mcblast::lab::PREFIX_ENV, lab.prefix())
        .output()
        .expect("run mcblast lab impair");
    assert!(out.status.success(), "lab impair {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("lab impair {args:?}: {e}"))
}

/// `tx_dropped` of every bridge port in the switch (the veth ends facing
/// the nodes), by port name.
fn bridge_tx_dropped(lab: &Lab) -> Vec<(String, u64)> {
    let out = Command::new("ip").args(["-n", &lab.access_ns("sender"), "-j", "-s", "link", "show"]).output().unwrap();
    assert!(out.status.success(), "ip -s link: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|l| l["link_type"] == "ether")
        .map(|l| (l["ifname"].as_str().unwrap().to_string(), u(&l["stats64"]["tx"], "dropped")))
        .collect()
}

/// Data datagrams the tracer charged to `reason` (0 when absent).
fn reason_data(l: &Value, reason: &str) -> u64 {
    l["reasons"].as_array().unwrap().iter().filter(|r| r["reason"] == reason).map(|r| u(r, "data")).sum()
}

/// The sequence numbers in a receiver's kernel-counter `loss` line (asserted complete).
fn kernel_lost_seqs(node: &str, lines: &[Value]) -> BTreeSet<u64> {
    let (set, l) = lost_seqs(lines, "kernel");
    assert_eq!((l["complete"].as_bool(), l["events_lost"].as_u64()), (Some(true), Some(0)), "{node}: {}", l["events_lost"]);
    set
}

/// Removes a directory when dropped (the receivers' JSONL files).
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The waterfall fields that must be 0 unless an injection explains them.
const LAYER_FIELDS: [&str; 8] = [
    "path_duplicates",
    "sunk",
    "kernel_dropped",
    "reassembly_failed",
    "unspecified",
    "no_listener",
    "socket_dropped",
    "unread_at_close",
];

/// One flat-out run of `count` data datagrams of `len` bytes, 1 -> 9, with
/// the four injections; every receiver's waterfall and the fan-out report
/// checked against the injectors' counters.
fn flat_out(tag: &str, count: u64, len: u64) {
    let _serial = serial();
    let lab = lab(tag, 9);
    let dir = TempDir(std::env::temp_dir().join(format!("mcbt{}{tag}mr", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let sw = lab.access_ns("sender");

    // Before the bridge replicates: every 10th data datagram from the sender.
    nft_load(
        &sw,
        &format!("{tag}s"),
        &format!(
            "table bridge mcbtmr {{\n\
               chain pre {{ type filter hook prerouting priority filter; policy accept;\n\
                 iifname \"sender\" meta l4proto udp @th,64,32 0x4d43424c @th,104,8 0 numgen inc mod {SENDER_EVERY} 0 counter drop\n\
               }}\n\
             }}\n"
        ),
    );
    // r1's bridge port: the impairment program.
    let a = impair(&lab, &["r1", "--every", &IMPAIR_EVERY.to_string()]);
    assert_eq!(a["action"], "attached", "{a}");
    // r2's input hook: after its driver, before its socket.
    nft_load(
        &lab.ns_name("r2"),
        &format!("{tag}k"),
        &format!(
            "table inet mcbtmr {{\n\
               chain input {{ type filter hook input priority filter; policy accept;\n\
                 udp dport 5001 @th,64,32 0x4d43424c @th,104,8 0 numgen inc mod {NETFILTER_EVERY} 0 counter drop\n\
               }}\n\
             }}\n"
        ),
    );
    // r3: a receive buffer of one datagram, a reader sleeping 2 ms per datagram.
    let recvs: Vec<Recv> = lab
        .receivers()
        .iter()
        .map(|n| start_recv(&lab, n, if n == "r3" { &["--rcvbuf", "2000", "--read-delay-us", "2000", "-t", "90"] } else { &["-t", "90"] }))
        .collect();
    wait_members(&lab);
    let rcvbuf_before: Vec<u64> = lab.receivers().iter().map(|n| snmp(&lab, n, "Udp", "RcvbufErrors")).collect();
    let tx_dropped_before = bridge_tx_dropped(&lab);

    let t0 = std::time::Instant::now();
    let (n, l) = (count.to_string(), len.to_string());
    let send_lines = sender_lines(spawn_send(&lab, &["-n", &n, "-l", &l, "--engine", "mmsg"]));
    let s = sender_line(&send_lines, "summary");
    let (secs, pps) = (s["duration_s"].as_f64().unwrap_or(0.0), s["rate_pps"].as_f64().unwrap_or(0.0));
    eprintln!("flat out: {count} x {len} B in {secs:.1} s, {pps:.0} datagrams/s");
    // Flat out: no rate was asked for, and the sender's ledger lost nothing.
    assert!(s["target_pps"].is_null() && s["target_bps"].is_null(), "{s}");
    assert_eq!(u(&s, "sent"), count, "{s}");
    let markers = u(&s, "end_markers");
    let ledger = &s["ledger"];
    assert_eq!(u(ledger, "handed_to_kernel"), count + markers, "{s}");
    assert_eq!(u(ledger, "left_interface"), count + markers, "{s}");
    for f in ["refused", "qdisc_dropped", "tx_dropped", "tx_errors"] {
        assert_eq!(u(ledger, f), 0, "sender ledger {f}: {s}");
    }
    assert_eq!(u(&s, "errors"), 0, "{s}");

    // Ground truth: the injectors' counters, and what their periods give.
    let common: BTreeSet<u64> = (0..count).filter(|q| q % SENDER_EVERY == 0).collect();
    let survivors: Vec<u64> = (0..count).filter(|q| q % SENDER_EVERY != 0).collect();
    let r1_unique: BTreeSet<u64> = survivors.iter().skip(IMPAIR_EVERY as usize - 1).step_by(IMPAIR_EVERY as usize).copied().collect();
    let common_n = nft_counter(&sw, "bridge", "mcbtmr");
    assert_eq!(common_n, common.len() as u64, "the sender-port rule: every {SENDER_EVERY}th of {count}");
    let st = impair(&lab, &["r1", "--stats"]);
    let impaired = u(&st, "dropped");
    assert_eq!((u(&st, "seen"), impaired), (survivors.len() as u64, r1_unique.len() as u64), "impair r1: {st}");
    let netfilter = nft_counter(&lab.ns_name("r2"), "inet", "mcbtmr");
    assert_eq!(netfilter, (survivors.len() as u64).div_ceil(NETFILTER_EVERY), "r2's input rule: every {NETFILTER_EVERY}th");
    let survived = survivors.len() as u64;

    let mut files = Vec::new();
    for (i, r) in recvs.into_iter().enumerate() {
        let node = r.node.clone();
        let begin = r.begin.clone();
        let lines = finish(r);
        let l = summary(&lines, "layers");
        let rcvbuf_errors = snmp(&lab, &node, "Udp", "RcvbufErrors") - rcvbuf_before[i];
        // Every waterfall adds up, over exactly what the sender sent.
        assert_eq!((l["adds_up"].as_bool(), l["unaccounted"].as_i64()), (Some(true), Some(0)), "{node}: {l}");
        assert_eq!(u(l, "expected"), count, "{node}: {l}");
        // The host saw no loss of its own before the socket: driver,
        // interface, softnet.
        assert_eq!(u(&l["driver"], "dropped"), 0, "{node}: {l}");
        for f in ["rx_dropped", "rx_missed_errors", "rx_fifo_errors", "softnet_dropped"] {
            assert_eq!(l["host"][f].as_u64(), Some(0), "{node}: host {f}: {l}");
        }
        // Path: the common loss, and at r1 the impairment's too; the
        // receiver's loss records name exactly those sequence numbers.
        let path: BTreeSet<u64> = if node == "r1" { common.union(&r1_unique).copied().collect() } else { common.clone() };
        assert_eq!(u(l, "path_lost"), if node == "r1" { common_n + impaired } else { common_n }, "{node}: {l}");
        assert_eq!(kernel_lost_seqs(&node, &lines), path, "{node}: kernel loss records");
        assert_eq!(u(l, "reached_driver"), count - path.len() as u64, "{node}: {l}");
        // Socket: r3's slow reader overflows its buffer on purpose. Any
        // other receiver's socket overflowing at flat-out rate (a reader
        // starved of CPU) is loss too, and must land in the socket layer
        // with the same exact ground truth: the data datagrams the tracer
        // charged, plus the end markers it saw dropped there, equal the
        // namespace's Udp RcvbufErrors (and InErrors) and the socket's own
        // SO_RXQ_OVFL.
        let socket = u(l, "socket_dropped");
        let ends: u64 =
            l["reasons"].as_array().unwrap().iter().filter(|r| r["reason"] == "SOCKET_RCVBUFF").map(|r| u(r, "end")).sum();
        assert_eq!(socket + ends, rcvbuf_errors, "{node}: Udp RcvbufErrors: {l}");
        assert_eq!(u(l, "so_rxq_ovfl"), rcvbuf_errors, "{node}: SO_RXQ_OVFL: {l}");
        for f in ["udp_in_errors", "udp_rcvbuf_errors"] {
            assert_eq!(l["host"][f].as_u64(), Some(rcvbuf_errors), "{node}: host {f}: {l}");
        }
        if node == "r3" {
            assert!(socket > 0 && socket < survived, "r3: the slow reader must read some and lose some: {l}");
        } else if socket > 0 {
            eprintln!("{node}: its socket overflowed at flat-out rate: {socket} data datagrams, exactly Udp RcvbufErrors");
        }
        // Kernel: r2's rule only. Each layer holds exactly what its injector
        // (or its host counter) says, and nothing is charged anywhere else.
        let kernel = if node == "r2" { netfilter } else { 0 };
        assert_eq!(reason_data(l, "NETFILTER_DROP"), kernel, "{node}: {l}");
        assert_eq!(reason_data(l, "SOCKET_RCVBUFF"), socket, "{node}: {l}");
        for f in LAYER_FIELDS {
            let want = match f {
                "kernel_dropped" => kernel,
                "socket_dropped" => socket,
                _ => 0,
            };
            assert_eq!(u(l, f), want, "{node}: {f} charged for loss that happened elsewhere: {l}");
        }
        assert_eq!(u(l, "read"), count - path.len() as u64 - kernel - socket, "{node}: {l}");
        assert_eq!(u(only_flow(summary(&lines, "socket")), "received"), u(l, "read"), "{node}");

        let file = dir.0.join(format!("{node}.jsonl"));
        let text: String = std::iter::once(&begin).chain(&lines).map(|l| format!("{l}\n")).collect();
        std::fs::write(&file, text).unwrap();
        files.push(file);
    }
    // Nothing dropped leaving the bridge toward any node.
    let tx_dropped = bridge_tx_dropped(&lab);
    assert_eq!(tx_dropped, tx_dropped_before, "bridge ports' tx_dropped");

    // The fan-out report: common == the sender-port rule's count, unique to
    // r1 == the impairment's; nothing partial, nothing unique elsewhere.
    let send_file = dir.0.join("sender.jsonl");
    std::fs::write(&send_file, send_lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    files.push(send_file);
    let out = Command::new(BIN).arg("report").args(&files).arg("--json").output().expect("mcblast report");
    assert!(out.status.success(), "report: {}", String::from_utf8_lossy(&out.stderr));
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["complete"], true, "{rep}");
    let t = &rep["totals"];
    assert_eq!((u(t, "common"), u(t, "partial")), (common_n, 0), "{t}");
    assert_eq!((u(t, "sender"), u(t, "path")), (0, common_n), "{t}");
    let unique = t["unique"].as_object().unwrap();
    assert_eq!(unique.len(), 9, "{t}");
    for (name, v) in unique {
        assert_eq!(v.as_u64(), Some(if name == "r1" { impaired } else { 0 }), "unique at {name}: {t}");
    }
    assert_eq!(u(&rep["flows"][0], "sent"), count, "{rep}");
    for row in rep["receivers"].as_array().unwrap() {
        let want = if row["name"] == "r1" { common_n + impaired } else { common_n };
        assert_eq!((u(row, "lost"), u(row, "recorded")), (want, want), "{row}");
    }
    eprintln!("flat out: whole test {:.1} s", t0.elapsed().as_secs_f64());
}

/// 200 000 datagrams of 1470 bytes (the common MTU-sized payload).
#[test]
fn injected_losses_at_max_rate_land_in_their_layers_1470() {
    if common::skip(NEEDS) {
        return;
    }
    flat_out("x", 200_000, 1470);
}

/// 50 000 datagrams of 8192 bytes (unfragmented: the lab's MTU is 9000).
#[test]
fn injected_losses_at_max_rate_land_in_their_layers_8192() {
    if common::skip(NEEDS) {
        return;
    }
    flat_out("y", 50_000, 8192);
}
