//! Every engine × every attach point of the kernel counter (tc ingress,
//! generic XDP, native XDP) × with and without `--sink`: each receiver's
//! kernel counter counts every datagram exactly once (0 lost, 0 foreign,
//! 0 unwalked). The sender runs fast enough that the gso engine's batches
//! cross veth and the bridge whole: tc and generic XDP see several
//! datagrams behind one UDP header and must count each (they read 100 %
//! loss before the walk existed). Ground truth: the sender's own count.
//!
//! With an nftables every-Nth drop on each receiver's switch port, each
//! receiver's loss is what its rule dropped, exactly. The rule sees what
//! the bridge forwards: a gso batch that crosses whole is one packet, so
//! the test derives datagrams from the rule's byte counter (see
//! [`dropped_datagrams`]).
//! Privileged, skipped with a message when not root.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::*;

const NEEDS: &str = "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF) for namespaces and XDP";

/// The receivers and the attach point each counts at.
const MODES: [(&str, &str); 3] = [("r1", "tc"), ("r2", "generic"), ("r3", "native")];
const ENGINES: [&str; 5] = ["socket", "mmsg", "gso", "uring", "xdp"];
/// Datagrams per engine, at a rate where gso sends many per batch.
const COUNT: u64 = 3000;
const PPS: &str = "100000";
const LENGTH: u64 = 8192;

/// Runs one engine in the sender: (run id, datagrams sent).
fn send(lab: &mcblast::lab::Lab, engine: &str) -> (u64, u64) {
    let (n, l) = (COUNT.to_string(), LENGTH.to_string());
    let argv = [
        "mcblast",
        "send",
        "--interface",
        "eth0",
        "--json",
        "-i",
        "0",
        "--engine",
        engine,
        "-l",
        &l,
        "-n",
        &n,
        "--pps",
        PPS,
    ];
    let out = lab.exec_cmd("sender", &argv).output().expect("run sender");
    assert!(
        out.status.success(),
        "{engine}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let s = sender_line(&lines, "summary");
    assert_eq!(s["engine"], engine, "{s}");
    (s["run"].as_u64().unwrap(), u(&s, "sent"))
}

/// Datagrams the drop rule toward `node` dropped. nft counts skbs and
/// their bytes from the IP header: each dropped skb is 28 bytes of IPv4
/// and UDP header and k whole datagrams of `LENGTH` (k > 1 for a gso batch
/// that crossed the bridge whole; every datagram of these runs is LENGTH
/// long), so the datagrams are (bytes − 28 × packets) / LENGTH, and the
/// division must be exact.
fn dropped_datagrams(lab: &mcblast::lab::Lab, node: &str) -> (u64, u64) {
    let (packets, bytes) = lab.nft_dropped_counter(node).expect("nft counter");
    let payload = bytes - 28 * packets;
    assert_eq!(payload % LENGTH, 0, "{node}: {packets} packets of {bytes} bytes are not whole datagrams");
    (packets, payload / LENGTH)
}

/// Starts the receivers, one per attach point, each expecting every engine's flow.
fn start_receivers(lab: &mcblast::lab::Lab, sink: bool) -> Vec<Recv> {
    let flows = ENGINES.len().to_string();
    let recvs: Vec<Recv> = MODES
        .iter()
        .map(|(node, mode)| {
            let mut extra = vec![
                "--xdp-mode",
                mode,
                "--grace",
                "0.5",
                "--expect-flows",
                &flows,
            ];
            if sink {
                extra.push("--sink");
            }
            let r = start_recv(lab, node, &extra);
            assert_eq!(r.begin["xdp_mode"], *mode, "{}", r.begin);
            r
        })
        .collect();
    lab.wait_members(
        Ipv4Addr::new(239, 0, 0, 1),
        &lab.receivers(),
        Duration::from_secs(15),
    )
    .expect("joins");
    recvs
}

/// Every engine in turn: (engine, run id, datagrams sent).
fn send_all(lab: &mcblast::lab::Lab) -> Vec<(&'static str, u64, u64)> {
    ENGINES
        .iter()
        .map(|e| {
            let (run, sent) = send(lab, e);
            assert_eq!(sent, COUNT, "{e}");
            (*e, run, sent)
        })
        .collect()
}

fn round(sink: bool) {
    let _serial = serial();
    let lab = lab(if sink { "aps" } else { "ap" }, 3);
    let recvs = start_receivers(&lab, sink);
    let runs = send_all(&lab);
    for (r, (_, mode)) in recvs.into_iter().zip(MODES) {
        let node = r.node.clone();
        let lines = finish(r);
        let s = summary(&lines, "kernel");
        let what = format!("{node} at {mode}{}", if sink { " with --sink" } else { "" });
        assert_eq!(s["foreign"].as_u64(), Some(0), "{what}: {s}");
        assert_eq!(s["unwalked"].as_u64().unwrap_or(0), 0, "{what}: {s}");
        if mode == "tc" {
            // The gso engine's batches reached tc whole: the walk ran.
            assert!(
                s["coalesced"].as_u64().unwrap_or(0) > 0,
                "{what}: no GSO batch crossed whole: {s}"
            );
        }
        let flows = s["flows"].as_array().unwrap();
        for (engine, run, sent) in &runs {
            let f = flows
                .iter()
                .find(|f| f["run"].as_u64() == Some(*run))
                .unwrap_or_else(|| panic!("{what}: no flow of {engine}: {s}"));
            let got = (
                u(f, "received"),
                u(f, "expected"),
                u(f, "lost"),
                u(f, "duplicates"),
                u(f, "bytes"),
            );
            assert_eq!(
                got,
                (*sent, *sent, 0, 0, sent * LENGTH),
                "{what}, {engine}: {f}"
            );
            assert_eq!(f["ended"], true, "{what}, {engine}: {f}");
        }
        if sink {
            let layers = summary(&lines, "layers");
            assert_eq!(
                layers["sunk"].as_u64(),
                Some(COUNT * ENGINES.len() as u64),
                "{what}: {layers}"
            );
        }
    }
}

#[test]
fn every_engine_is_counted_exactly_at_every_attach_point() {
    if skip(NEEDS) {
        return;
    }
    round(false);
}

#[test]
fn every_engine_is_sunk_exactly_at_every_attach_point() {
    if skip(NEEDS) {
        return;
    }
    round(true);
}

#[test]
fn a_drop_on_the_switch_port_is_lost_exactly_at_every_attach_point() {
    if skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("apd", 3);
    for (node, _) in MODES {
        lab.drop_every_nth(node, 10).expect("nft drop rule");
    }
    let recvs = start_receivers(&lab, false);
    let runs = send_all(&lab);
    let total = COUNT * ENGINES.len() as u64;
    for (r, (_, mode)) in recvs.into_iter().zip(MODES) {
        let node = r.node.clone();
        let lines = finish(r);
        let s = summary(&lines, "kernel");
        let (packets, dropped) = dropped_datagrams(&lab, &node);
        let what = format!("{node} at {mode}: the rule dropped {dropped} datagrams in {packets} packets");
        assert!(dropped > packets, "{what}: no gso batch was dropped whole");
        assert_eq!(s["foreign"].as_u64(), Some(0), "{what}: {s}");
        assert_eq!(s["unwalked"].as_u64().unwrap_or(0), 0, "{what}: {s}");
        let flows = s["flows"].as_array().unwrap();
        let mine: Vec<&Value> =
            runs.iter().map(|(e, run, _)| {
                flows.iter().find(|f| f["run"].as_u64() == Some(*run)).unwrap_or_else(|| panic!("{what}: no flow of {e}: {s}"))
            }).collect();
        for (f, (engine, _, sent)) in mine.iter().zip(&runs) {
            assert_eq!(u(f, "expected"), *sent, "{what}, {engine}: {f}");
            assert_eq!(u(f, "received") + u(f, "lost"), *sent, "{what}, {engine}: {f}");
            assert_eq!(u(f, "duplicates"), 0, "{what}, {engine}: {f}");
        }
        let lost: u64 = mine.iter().map(|f| u(f, "lost")).sum();
        assert_eq!(lost, dropped, "{what}: the receiver's loss over all engines: {s}");
        let received: u64 = mine.iter().map(|f| u(f, "received")).sum();
        assert_eq!(received, total - dropped, "{what}: {s}");
    }
}
