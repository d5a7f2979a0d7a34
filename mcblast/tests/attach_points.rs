//! Every engine × every attach point of the kernel counter (tc ingress,
//! generic XDP, native XDP) × with and without `--sink`: each receiver's
//! kernel counter counts every datagram exactly once (0 lost, 0 foreign,
//! 0 unwalked). The sender runs fast enough that the gso engine's batches
//! cross veth and the bridge whole: tc and generic XDP see several
//! datagrams behind one UDP header and must count each (they read 100 %
//! loss before the walk existed). Ground truth: the sender's own count.
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

fn round(sink: bool) {
    let _serial = serial();
    let lab = lab(if sink { "aps" } else { "ap" }, 3);
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
            let r = start_recv(&lab, node, &extra);
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
    let runs: Vec<(&str, u64, u64)> = ENGINES
        .iter()
        .map(|e| {
            let (run, sent) = send(&lab, e);
            assert_eq!(sent, COUNT, "{e}");
            (*e, run, sent)
        })
        .collect();
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
