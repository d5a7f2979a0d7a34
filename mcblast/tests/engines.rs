//! Engine conformance: every engine, at 64, 1470 and 8192 bytes, delivers
//! every datagram exactly once, in order, to every receiver — as counted by
//! each receiver's kernel (XDP) counter and its socket counter. The real
//! `mcblast` binary runs in a throwaway lab (1 sender, 2 receivers);
//! privileged, skipped with a message when not root.

use std::net::Ipv4Addr;
use std::time::Duration;

use mcblast::lab::{Lab, LabConfig};
use serde_json::Value;

mod common;
use common::*;

const LENGTHS: [usize; 3] = [64, 1470, 8192];
/// Datagrams per run, and the rate: low, so nothing may be lost.
const COUNT: u64 = 300;
const PPS: &str = "3000";

const NEEDS: &str = "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF) for namespaces and XDP";

fn start_recv(lab: &Lab, node: &str, flows: usize) -> Recv {
    common::start_recv(lab, node, &["--grace", "0.5", "--expect-flows", &flows.to_string()])
}

/// One sender run: (run id, engine it reports, its summary).
struct SendRun {
    run: u64,
    length: usize,
    sent: u64,
}

/// Runs `mcblast send --json -i 0 --engine ENGINE -l LENGTH -n COUNT --pps PPS EXTRA`
/// in the sender; returns (its JSON lines, its stderr), asserting it succeeded.
fn sender(lab: &Lab, engine: &str, length: usize, extra: &[&str]) -> (Vec<Value>, String) {
    let (len, n) = (length.to_string(), COUNT.to_string());
    let mut argv =
        vec!["mcblast", "send", "--interface", "eth0", "--json", "-i", "0", "--engine", engine, "-l", &len, "-n", &n, "--pps", PPS];
    argv.extend_from_slice(extra);
    let out = lab.exec_cmd("sender", &argv).output().expect("run sender");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{engine} -l {length}: sender failed: {stderr}");
    let lines = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (lines, stderr)
}

fn send(lab: &Lab, engine: &str, length: usize) -> SendRun {
    let (lines, stderr) = sender(lab, engine, length, &[]);
    // No silent (or loud) fallback: the engine asked for is the one that sent.
    assert!(!stderr.contains("refused") && !stderr.contains("falling back"), "{engine}: {stderr}");
    let begin = lines.iter().find(|v| v["type"] == "begin").expect("sender begin");
    let summary = lines.iter().find(|v| v["type"] == "summary").expect("sender summary");
    let used = begin["engine"].as_str().unwrap();
    if engine == "auto" {
        assert!(["gso", "uring", "mmsg", "socket"].contains(&used), "{begin}");
        assert!(begin["engine_reason"].as_str().is_some_and(|r| !r.is_empty()), "auto says why: {begin}");
    } else {
        assert_eq!(used, engine, "{begin}");
        assert!(begin["engine_reason"].is_null(), "{begin}");
    }
    assert_eq!(summary["engine"], begin["engine"]);
    let sent = summary["sent"].as_u64().unwrap();
    assert_eq!(sent, COUNT, "{engine} -l {length}: {summary}");
    assert_eq!(summary["errors"].as_u64(), Some(0), "{engine} -l {length}: {summary}");
    assert_eq!(summary["bytes"].as_u64(), Some(sent * length as u64));
    SendRun { run: begin["run"].as_u64().unwrap(), length, sent }
}

/// Every length with `engine`, both receivers, both counters: each
/// datagram exactly once.
fn conformance(engine: &str, tag: &str) {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab(tag, 2);
    let recvs: Vec<Recv> = lab.receivers().iter().map(|n| start_recv(&lab, n, LENGTHS.len())).collect();
    lab.wait_members(Ipv4Addr::new(239, 0, 0, 1), &lab.receivers(), Duration::from_secs(15)).expect("joins");
    let runs: Vec<SendRun> = LENGTHS.iter().map(|&l| send(&lab, engine, l)).collect();
    for r in recvs {
        let node = r.node.clone();
        let lines = finish(r);
        for counter in ["kernel", "socket"] {
            let s = lines
                .iter()
                .find(|l| l["type"] == "summary" && l["counter"] == counter)
                .unwrap_or_else(|| panic!("{node}: no {counter} summary"));
            let flows = s["flows"].as_array().unwrap();
            assert_eq!(flows.len(), runs.len(), "{engine} {node} {counter}: one flow per run: {s}");
            assert_eq!(s["foreign"].as_u64(), Some(0), "{engine} {node} {counter}");
            for run in &runs {
                let f = flows.iter().find(|f| f["run"].as_u64() == Some(run.run)).unwrap_or_else(|| {
                    panic!("{engine} {node} {counter}: no flow of run {:x} (-l {})", run.run, run.length)
                });
                let what = format!("{engine} -l {} {node} {counter}: {f}", run.length);
                assert_eq!(f["received"].as_u64(), Some(run.sent), "{what}");
                assert_eq!(f["expected"].as_u64(), Some(run.sent), "{what}");
                assert_eq!(f["lost"].as_u64(), Some(0), "{what}");
                assert_eq!(f["duplicates"].as_u64(), Some(0), "{what}");
                assert_eq!(f["reordered"].as_u64(), Some(0), "{what}");
                assert_eq!(f["stale"].as_u64(), Some(0), "{what}");
                assert_eq!(f["ended"], true, "{what}");
                assert_eq!(f["bytes"].as_u64(), Some(run.sent * run.length as u64), "{what}");
            }
        }
    }
}

#[test]
fn socket_engine_delivers_every_datagram_once() {
    conformance("socket", "s");
}

#[test]
fn mmsg_engine_delivers_every_datagram_once() {
    conformance("mmsg", "m");
}

#[test]
fn gso_engine_delivers_every_datagram_once() {
    conformance("gso", "g");
}

#[test]
fn uring_engine_delivers_every_datagram_once() {
    conformance("uring", "u");
}

#[test]
fn auto_engine_delivers_every_datagram_once() {
    conformance("auto", "a");
}

/// With the zero-copy option too (the kernel may copy on veth; delivery must be exact either way).
#[test]
fn uring_zerocopy_delivers_every_datagram_once() {
    if common::skip(NEEDS) {
        return;
    }
    let probe = std::process::Command::new(BIN).args(["probe", "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&probe.stdout).unwrap();
    let zc =
        v["checks"].as_array().unwrap().iter().any(|c| c["name"] == "io_uring IORING_OP_SEND_ZC" && c["ok"] == true);
    if !zc {
        common::skipped("no IORING_OP_SEND_ZC here");
        return;
    }
    conformance_zc();
}

fn conformance_zc() {
    let _serial = serial();
    let cfg = LabConfig { prefix: format!("mcbt{}z-", std::process::id()), receivers: 2, ..LabConfig::default() };
    let lab = Lab::up(&cfg).expect("lab up").with_mcblast(BIN);
    let recvs: Vec<Recv> = lab.receivers().iter().map(|n| start_recv(&lab, n, 1)).collect();
    lab.wait_members(Ipv4Addr::new(239, 0, 0, 1), &lab.receivers(), Duration::from_secs(15)).expect("joins");
    let (lines, _) = sender(&lab, "uring", 8192, &["--zerocopy"]);
    let begin = lines.iter().find(|v| v["type"] == "begin").unwrap();
    assert_eq!((begin["engine"].as_str(), begin["zerocopy"].as_bool()), (Some("uring"), Some(true)), "{begin}");
    for r in recvs {
        let node = r.node.clone();
        let lines = finish(r);
        for counter in ["kernel", "socket"] {
            let s = lines.iter().find(|l| l["type"] == "summary" && l["counter"] == counter).unwrap();
            let f = &s["flows"][0];
            let what = format!("zerocopy {node} {counter}: {f}");
            assert_eq!(f["received"].as_u64(), Some(COUNT), "{what}");
            assert_eq!(
                (f["lost"].as_u64(), f["duplicates"].as_u64(), f["reordered"].as_u64()),
                (Some(0), Some(0), Some(0)),
                "{what}"
            );
            assert_eq!(f["bytes"].as_u64(), Some(COUNT * 8192), "{what}");
            assert_eq!(f["ended"], true, "{what}");
        }
    }
}
