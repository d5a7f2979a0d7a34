//! `mcblast lab impair`: the eBPF impairment program on a lab link, run
//! through the real binary. Each test builds a lab with a sender and two
//! receivers, impairs r1's bridge port, sends a bounded stream
//! (`mcblast send -n COUNT`), and checks that r1's kernel counter lost,
//! duplicated or reordered exactly what the program says it touched, that
//! the program's counts are the ones its decision function
//! (`ImpairState::on_data`, replayed here on the same datagram sequence)
//! gives, and that r2 saw every datagram once, in order. Privileged:
//! skipped when not root.

use std::process::{Command, Output};

use mcblast::lab::Lab;
use mcblast::lab::impair::lab_dir;
use mcblast_common::maps::{FlowKey, ImpairConfig, ImpairState, ImpairStats, PPM};
use serde_json::Value;

mod common;
use common::*;

const NEEDS: &str = "needs root (namespaces, tcx, bpffs)";

fn lab(tag: &str) -> Lab {
    common::lab(&format!("i{tag}"), 2)
}

/// Runs `mcblast lab impair ARGS` against the lab.
fn cli(lab: &Lab, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["lab", "impair"])
        .args(args)
        .env(mcblast::lab::PREFIX_ENV, lab.prefix())
        .output()
        .expect("run mcblast lab impair")
}

/// Runs `mcblast lab impair ARGS --json`, asserts success, returns its line.
fn impair(lab: &Lab, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = cli(lab, &a);
    assert!(out.status.success(), "lab impair {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line: {text}");
    let v: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["type"], "impair", "{v}");
    v
}

/// Runs `mcblast lab impair ARGS`, asserts it fails with exit code 2 and
/// one stderr line; returns that line.
fn fails(lab: &Lab, args: &[&str]) -> String {
    let out = cli(lab, args);
    assert_eq!(out.status.code(), Some(2), "lab impair {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

/// Receivers on r1 and r2, `count` data datagrams from the sender (with
/// `extra` sender flags); each receiver's JSON lines.
fn traffic(lab: &Lab, count: u64, extra: &[&str]) -> (Vec<Value>, Vec<Value>) {
    let r1 = start_recv(lab, "r1", &[]);
    let r2 = start_recv(lab, "r2", &[]);
    wait_members(lab);
    let n = count.to_string();
    let mut args = vec!["-n", n.as_str(), "--pps", "5000", "-l", "1470"];
    args.extend_from_slice(extra);
    let sent = u(&sender_summary(spawn_send(lab, &args)), "sent");
    assert_eq!(sent, count);
    (finish(r1), finish(r2))
}

/// The one flow of a receiver's `counter` summary.
fn flow<'a>(lines: &'a [Value], counter: &str) -> &'a Value {
    only_flow(summary(lines, counter))
}

/// r2 got every datagram exactly once, in order, in both counters.
fn untouched(lines: &[Value], count: u64) {
    for c in ["kernel", "socket"] {
        let f = flow(lines, c);
        assert_eq!(
            (u(f, "received"), u(f, "lost"), u(f, "duplicates"), u(f, "reordered")),
            (count, 0, 0, 0),
            "r2 {c}: {f}"
        );
    }
}

/// What the program's decision function does with `count` data datagrams
/// of one flow followed by its end marker.
fn replay(cfg: ImpairConfig, count: u64) -> ImpairStats {
    let mut s = ImpairState::new(&cfg);
    let mut st = ImpairStats::default();
    let key = FlowKey::default();
    for _ in 0..count {
        s.on_data(&cfg, &mut st, &key, 1470, false);
    }
    s.on_end(&mut st, &key);
    st
}

/// Programs at the tcx egress hook of port `link` in the switch.
fn tcx_egress(lab: &Lab, link: &str) -> u32 {
    let link = link.to_string();
    lab.run_in("sw", move || {
        let ifindex = mcblast::sys::if_index(&link).expect("port exists");
        mcblast::sys::bpf::tcx_egress_programs(ifindex).expect("tcx query")
    })
    .unwrap()
}

/// Clears the impairment on `link`, checks the final counts it printed
/// equal `stats`, and that nothing is left on the port.
fn clear(lab: &Lab, link: &str, stats: &Value) {
    let c = impair(lab, &[link, "--clear"]);
    assert_eq!(c["action"], "cleared");
    for f in ["seen", "dropped", "duplicated", "reordered", "reorder_lost"] {
        assert_eq!(c[f], stats[f], "{f}: {c} vs {stats}");
    }
    assert_eq!(tcx_egress(lab, link), 0, "no tcx program left on {link}");
    assert!(!lab_dir(lab.prefix()).join(format!("impair-{link}")).exists());
}

#[test]
fn every_nth_and_bursts_drop_exactly_what_the_receiver_loses() {
    if skip(NEEDS) {
        return;
    }
    let _s = serial();
    let lab = lab("e");
    let count = 1000;

    let a = impair(&lab, &["r1", "--every", "100"]);
    assert_eq!((a["action"].as_str(), a["impairment"].as_str()), (Some("attached"), Some("every 100th datagram dropped")));
    assert_eq!(tcx_egress(&lab, "r1"), 1);
    assert_eq!(tcx_egress(&lab, "r2"), 0);
    let (l1, l2) = traffic(&lab, count, &[]);
    let st = impair(&lab, &["r1", "--stats"]);
    assert_eq!((u(&st, "seen"), u(&st, "dropped")), (count, count / 100), "{st}");
    for c in ["kernel", "socket"] {
        let f = flow(&l1, c);
        assert_eq!((u(f, "lost"), u(f, "received")), (u(&st, "dropped"), count - u(&st, "dropped")), "r1 {c}: {f}");
        assert_eq!((u(f, "duplicates"), u(f, "reordered")), (0, 0), "r1 {c}: {f}");
    }
    untouched(&l2, count);
    clear(&lab, "r1", &st);

    // Bursts: every 10th starts a drop of 3 (10,11,12, 20,21,22, ...); the
    // last event, at 1000, ends with the flow.
    impair(&lab, &["r1", "--every", "10", "--burst", "3"]);
    let (l1, l2) = traffic(&lab, count, &[]);
    let st = impair(&lab, &["r1", "--stats"]);
    let expected: u64 = (1..=count / 10).map(|k| 3.min(count - 10 * k + 1)).sum();
    assert_eq!(u(&st, "dropped"), expected, "{st}");
    let f = flow(&l1, "kernel");
    assert_eq!((u(f, "lost"), u(f, "received")), (expected, count - expected), "r1: {f}");
    untouched(&l2, count);
}

#[test]
fn seeded_random_loss_is_exact_and_repeats() {
    if skip(NEEDS) {
        return;
    }
    let _s = serial();
    let lab = lab("l");
    let count = 1000;
    let cfg = ImpairConfig { loss_ppm: 3 * PPM / 100, seed: 42, ..Default::default() };
    let want = replay(cfg, count).dropped;
    assert!(want > 0);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let a = impair(&lab, &["r1", "--loss", "3", "--seed", "42"]);
        assert_eq!(a["impairment"], "3% of datagrams dropped (seed 42)");
        let (l1, l2) = traffic(&lab, count, &[]);
        let st = impair(&lab, &["r1", "--stats"]);
        assert_eq!(u(&st, "dropped"), want, "the seed's decisions: {st}");
        let f = flow(&l1, "kernel");
        assert_eq!((u(f, "lost"), u(f, "received")), (want, count - want), "r1: {f}");
        untouched(&l2, count);
        clear(&lab, "r1", &st);
        runs.push(st);
    }
    assert_eq!(runs[0], runs[1], "same seed, same counts");
}

#[test]
fn duplicates_arrive_as_duplicates() {
    if skip(NEEDS) {
        return;
    }
    let _s = serial();
    let lab = lab("d");
    let count = 1000;
    let want = replay(ImpairConfig { duplicate_ppm: 5 * PPM / 100, seed: 7, ..Default::default() }, count).duplicated;
    assert!(want > 0);
    impair(&lab, &["r1", "--duplicate", "5", "--seed", "7"]);
    let (l1, l2) = traffic(&lab, count, &[]);
    let st = impair(&lab, &["r1", "--stats"]);
    assert_eq!((u(&st, "duplicated"), u(&st, "dropped")), (want, 0), "{st}");
    for c in ["kernel", "socket"] {
        let f = flow(&l1, c);
        assert_eq!(
            (u(f, "duplicates"), u(f, "received"), u(f, "lost"), u(f, "reordered")),
            (want, count + want, 0, 0),
            "r1 {c}: {f}"
        );
    }
    untouched(&l2, count);
}

/// UDP checksum errors counted in a node's namespace.
fn csum_errors(lab: &Lab, node: &str) -> u64 {
    snmp(lab, node, "Udp", "InCsumErrors")
}

#[test]
fn reordered_datagrams_arrive_one_place_late_with_valid_checksums() {
    if skip(NEEDS) {
        return;
    }
    let _s = serial();
    let lab = lab("r");
    let count = 1000;
    let want = replay(ImpairConfig { reorder_ppm: 10 * PPM / 100, seed: 3, ..Default::default() }, count);
    assert!(want.reordered > 0);
    impair(&lab, &["r1", "--reorder", "10", "--seed", "3"]);
    // The xdp engine computes every UDP checksum in software, so r1's stack
    // verifies the rewritten datagrams' checksums for real.
    let csum_before = csum_errors(&lab, "r1");
    let (l1, l2) = traffic(&lab, count, &["-e", "xdp"]);
    let st = impair(&lab, &["r1", "--stats"]);
    assert_eq!((u(&st, "reordered"), u(&st, "reorder_lost")), (want.reordered, want.reorder_lost), "{st}");
    assert_eq!(u(&st, "held"), 0, "{st}");
    for c in ["kernel", "socket"] {
        let f = flow(&l1, c);
        assert_eq!(
            (u(f, "reordered"), u(f, "lost"), u(f, "duplicates"), u(f, "received")),
            (want.reordered, want.reorder_lost, 0, count - want.reorder_lost),
            "r1 {c}: {f}"
        );
    }
    assert_eq!(csum_errors(&lab, "r1"), csum_before, "rewritten datagrams keep valid UDP checksums");
    untouched(&l2, count);
    clear(&lab, "r1", &st);

    // Every datagram, 11 of them: 5 pairs swapped, and the 11th still held
    // when the flow ends: counted as lost, and the receiver lost it.
    impair(&lab, &["r1", "--reorder", "100"]);
    let (l1, l2) = traffic(&lab, 11, &[]);
    let st = impair(&lab, &["r1", "--stats"]);
    assert_eq!((u(&st, "seen"), u(&st, "reordered"), u(&st, "reorder_lost"), u(&st, "held")), (11, 5, 1, 0), "{st}");
    let f = flow(&l1, "kernel");
    assert_eq!((u(f, "reordered"), u(f, "lost"), u(f, "received")), (5, 1, 10), "r1: {f}");
    untouched(&l2, 11);
}

#[test]
fn fragmented_datagrams_are_dropped_by_their_first_fragment_and_never_duplicated() {
    if skip(NEEDS) {
        return;
    }
    let _s = serial();
    // MTU 1500 and 8192-byte datagrams: each crosses as 6 fragments; the
    // kernel counter cannot see them as datagrams, the socket counter does.
    let cfg = mcblast::lab::LabConfig {
        prefix: format!("mcbt{}if-", std::process::id()),
        receivers: 2,
        mtu: 1500,
        ..Default::default()
    };
    let lab = Lab::up(&cfg).expect("lab up").with_mcblast(BIN);
    let count = 100;
    impair(&lab, &["r1", "--every", "10"]);
    impair(&lab, &["r2", "--duplicate", "100"]);
    let r1 = start_recv(&lab, "r1", &[]);
    let r2 = start_recv(&lab, "r2", &[]);
    wait_members(&lab);
    let args = ["-n", "100", "--pps", "2000", "-l", "8192", "--allow-fragments"];
    assert_eq!(u(&sender_summary(spawn_send(&lab, &args)), "sent"), count);
    let (l1, l2) = (finish(r1), finish(r2));
    let s1 = impair(&lab, &["r1", "--stats"]);
    assert_eq!((u(&s1, "seen"), u(&s1, "fragments"), u(&s1, "dropped")), (count, count, count / 10), "{s1}");
    let f = flow(&l1, "socket");
    assert_eq!((u(f, "received"), u(f, "lost")), (count - count / 10, count / 10), "r1: {f}");
    let s2 = impair(&lab, &["r2", "--stats"]);
    assert_eq!((u(&s2, "seen"), u(&s2, "fragments"), u(&s2, "duplicated")), (count, count, 0), "{s2}");
    let f = flow(&l2, "socket");
    assert_eq!((u(f, "received"), u(f, "lost"), u(f, "duplicates")), (count, 0, 0), "r2: {f}");
}

#[test]
fn errors_are_one_line_and_lab_down_removes_every_impairment() {
    if skip(NEEDS) {
        return;
    }
    let _s = serial();
    let lab = lab("x");
    assert!(fails(&lab, &["r9", "--every", "10"]).contains("no lab link r9"));
    assert!(fails(&lab, &["sender", "--every", "10"]).contains("no lab link sender"));
    assert!(fails(&lab, &["r1", "--every", "10", "--loss", "1"]).contains("cannot be used with"));
    assert!(fails(&lab, &["r1", "--loss", "101"]).contains("out of range"));
    assert!(fails(&lab, &["r1", "--duplicate", "0"]).contains("out of range"));
    assert!(fails(&lab, &["r1", "--burst", "3"]).contains("--burst K sizes the drops"));
    assert!(fails(&lab, &["r1"]).contains("nothing to do"));
    assert!(fails(&lab, &["r1", "--stats"]).contains("is not impaired"));
    assert!(fails(&lab, &["r1", "--clear"]).contains("is not impaired"));

    impair(&lab, &["r1", "--every", "10"]);
    impair(&lab, &["r2", "--duplicate", "1"]);
    assert!(fails(&lab, &["r1", "--every", "5"]).contains("already impaired"));
    let dir = lab_dir(lab.prefix());
    assert!(dir.join("impair-r1").exists() && dir.join("impair-r2-map").exists());
    assert_eq!(lab.impaired_links(), ["r1", "r2"]);
    let out = Command::new(BIN).args(["lab", "status"]).env(mcblast::lab::PREFIX_ENV, lab.prefix()).output().unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains("\n  r1     every 10th datagram dropped; seen 0, dropped 0"), "{status}");
    assert!(status.contains("\n  r2     1% duplicated (seed 1); seen 0"), "{status}");
    let prefix = lab.prefix().to_string();
    lab.down().unwrap();
    assert!(!dir.exists(), "lab down removed the pins");
    let out = Command::new(BIN).args(["lab", "impair", "r1", "--stats"]).env(mcblast::lab::PREFIX_ENV, &prefix).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no lab is up"));
}

/// The sender's `tx-udp-segmentation` setting, as `ethtool -k` shows it.
fn sender_segmentation(lab: &Lab) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns_name("sender"), "ethtool", "-k", "eth0"])
        .output()
        .expect("ethtool -k");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().find_map(|l| l.trim().strip_prefix("tx-udp-segmentation: ").map(str::to_string)).expect("the feature")
}

#[test]
fn gso_sender_is_impaired_datagram_by_datagram() {
    if skip(NEEDS) {
        return;
    }
    let _s = serial();
    let lab = lab("g");
    let count = 3200;
    // A UDP GSO batch would cross the bridge as one packet; while a link is
    // impaired the lab's sender segments batches in its own stack, so the
    // program sees and impairs every datagram.
    assert_eq!(sender_segmentation(&lab), "on", "the lab's sender offloads UDP segmentation to its link");
    impair(&lab, &["r1", "--every", "13"]);
    assert_eq!(sender_segmentation(&lab), "off", "segmented in the sender's stack while impaired");
    // Flat out: the pacer then fills whole batches (at a low rate a batch is one datagram).
    let r1 = start_recv(&lab, "r1", &[]);
    let r2 = start_recv(&lab, "r2", &[]);
    wait_members(&lab);
    let n = count.to_string();
    let sent = u(&sender_summary(spawn_send(&lab, &["-n", &n, "-l", "1470", "--engine", "gso"])), "sent");
    assert_eq!(sent, count);
    let (l1, l2) = (finish(r1), finish(r2));
    let st = impair(&lab, &["r1", "--stats"]);
    assert_eq!((u(&st, "gso_passed"), u(&st, "seen")), (0, count), "every datagram seen on its own: {st}");
    assert_eq!(u(&st, "dropped"), count / 13, "every 13th: {st}");
    // The kernel counter (at the driver) is the path; a flat-out burst may
    // overflow a socket on this shared machine, which is not the point here.
    let f = flow(&l1, "kernel");
    assert_eq!((u(f, "lost"), u(f, "received")), (u(&st, "dropped"), count - u(&st, "dropped")), "r1 kernel: {f}");
    let f = flow(&l2, "kernel");
    assert_eq!((u(f, "received"), u(f, "lost"), u(f, "duplicates")), (count, 0, 0), "r2 kernel: {f}");
    clear(&lab, "r1", &st);
    assert_eq!(sender_segmentation(&lab), "on", "the offload given back once no link is impaired");
}
