//! Fan-out across receivers on the lab, against ground truth: one sender,
//! nine receivers on one bridge. nftables drops every 10th data datagram
//! as it enters the bridge from the sender (before the replication point:
//! every receiver loses it) and every 7th of what the bridge forwards toward
//! r5 (after it: only r5 loses it). The receivers' exact loss records must
//! name exactly those sequence numbers, and `mcblast report` over their
//! `--json` outputs must classify the first as common at all nine, the
//! second as unique to r5, nothing as partial, with the nft counters'
//! counts. Privileged: skipped with a message when not root. The lab (and
//! with it every rule) is removed when the test ends.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use mcblast::lab::Lab;
use serde_json::Value;

mod common;
use common::*;

const NEEDS: &str = "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF) for namespaces and XDP";

const SENT: u64 = 1000;
const SENDER_EVERY: u64 = 10;
const R5_EVERY: u64 = 7;

/// Drops every `n`-th mcblast data datagram entering the bridge from the
/// sender's port (bridge prerouting: once per datagram, before the bridge
/// replicates it). The table lives in the lab's switch namespace.
fn drop_from_sender(lab: &Lab, n: u64) {
    let rules = format!(
        "table bridge mcbtfan {{\n\
           chain pre {{ type filter hook prerouting priority filter; policy accept;\n\
             iifname \"sender\" meta l4proto udp @th,64,32 0x4d43424c @th,104,8 0 numgen inc mod {n} 0 counter drop\n\
           }}\n\
         }}\n"
    );
    nft_load(&lab.access_ns("sender"), "fan", &rules);
}

/// What the sender-port rule dropped.
fn dropped_from_sender(lab: &Lab) -> u64 {
    nft_counter(&lab.access_ns("sender"), "bridge", "mcbtfan")
}

/// Runs `mcblast report` over `files`; returns (status, stdout, stderr).
fn report(files: &[PathBuf], json: bool) -> (i32, String, String) {
    let mut c = Command::new(BIN);
    c.arg("report").args(files);
    if json {
        c.arg("--json");
    }
    let out = c.output().expect("run mcblast report");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sender_link_loss_is_common_and_receiver_link_loss_is_unique() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("f", 9);
    let dir = TempDir(std::env::temp_dir().join(format!("mcbt{}fan", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();

    drop_from_sender(&lab, SENDER_EVERY);
    lab.drop_every_nth("r5", R5_EVERY).expect("nft rule toward r5");
    let recvs: Vec<Recv> = lab.receivers().iter().map(|n| start_recv(&lab, n, &[])).collect();
    wait_members(&lab);
    let n = SENT.to_string();
    let send_lines = sender_lines(spawn_send(&lab, &["-n", &n, "--pps", "4000", "-l", "200", "--engine", "mmsg"]));
    assert_eq!(u(&sender_line(&send_lines, "summary"), "sent"), SENT);

    // Ground truth from the injectors.
    let common_truth: BTreeSet<u64> = (0..SENT).filter(|s| s % SENDER_EVERY == 0).collect();
    let survivors: Vec<u64> = (0..SENT).filter(|s| s % SENDER_EVERY != 0).collect();
    let r5_truth: BTreeSet<u64> = survivors.iter().step_by(R5_EVERY as usize).copied().collect();
    assert_eq!(dropped_from_sender(&lab), common_truth.len() as u64, "every {SENDER_EVERY}th of {SENT}");
    assert_eq!(lab.nft_dropped("r5").unwrap(), r5_truth.len() as u64, "every {R5_EVERY}th of the survivors");

    let mut files = Vec::new();
    for r in recvs {
        let node = r.node.clone();
        let begin = r.begin.clone();
        let lines = finish(r);
        // The receiver's own records name exactly the dropped sequence numbers.
        let (kernel, line) = lost_seqs(&lines, "kernel");
        assert_eq!(line["complete"], true, "{node}: {line}");
        assert_eq!(line["events_lost"].as_u64(), Some(0), "{node}: {line}");
        let want: BTreeSet<u64> =
            if node == "r5" { common_truth.union(&r5_truth).copied().collect() } else { common_truth.clone() };
        assert_eq!(kernel, want, "{node}: kernel loss records");
        let k = only_flow(summary(&lines, "kernel"));
        assert_eq!(u(k, "lost"), want.len() as u64, "{node}: {k}");
        // The socket's records agree with its own count (it may lose more, on a busy machine).
        let (socket, _) = lost_seqs(&lines, "socket");
        assert_eq!(socket.len() as u64, u(only_flow(summary(&lines, "socket")), "lost"), "{node}");
        assert!(socket.is_superset(&kernel), "{node}: the socket lost less than the kernel counter saw lost");
        let file = dir.0.join(format!("{node}.jsonl"));
        // The whole output, as `mcblast recv --json > FILE` writes it.
        let text: String = std::iter::once(&begin).chain(&lines).map(|l| format!("{l}\n")).collect();
        std::fs::write(&file, text).unwrap();
        files.push(file);
    }
    let send_file = dir.0.join("sender.jsonl");
    std::fs::write(&send_file, send_lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();

    // The report, receivers only and with the sender.
    let (code, out, err) = report(&files, true);
    assert_eq!(code, 0, "report failed: {err}");
    let rep: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("report JSON {out:?}: {e}"));
    assert_eq!(rep["complete"], true, "{rep}");
    let t = &rep["totals"];
    assert_eq!(u(t, "common"), common_truth.len() as u64, "{t}");
    assert_eq!(u(t, "partial"), 0, "{t}");
    for (name, v) in t["unique"].as_object().unwrap() {
        let want = if name == "r5" { r5_truth.len() as u64 } else { 0 };
        assert_eq!(v.as_u64(), Some(want), "unique at {name}: {t}");
    }
    assert_eq!(t["unique"].as_object().unwrap().len(), 9, "{t}");
    let flows = rep["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 1, "{rep}");
    assert_eq!(flows[0]["receivers"].as_array().unwrap().len(), 9);
    assert_eq!(u(&flows[0]["common"], "ranges"), common_truth.len() as u64, "single-datagram gaps: {rep}");
    let uniq = flows[0]["unique"].as_array().unwrap();
    assert_eq!(uniq.len(), 1, "{rep}");
    assert_eq!((uniq[0]["receiver"].as_str(), u(&uniq[0], "count")), (Some("r5"), r5_truth.len() as u64));
    // The matrix: each row adds up to that receiver's kernel `lost`.
    for row in rep["receivers"].as_array().unwrap() {
        let sum: u64 = row["per_interval"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(sum, u(row, "lost"), "{row}");
        assert_eq!(u(row, "recorded"), u(row, "lost"), "{row}");
        let want = if row["name"] == "r5" { common_truth.len() + r5_truth.len() } else { common_truth.len() };
        assert_eq!(u(row, "lost"), want as u64, "{row}");
        assert_eq!(row["counter"], "kernel");
    }

    let mut with_sender = files.clone();
    with_sender.push(send_file);
    let (code, out, err) = report(&with_sender, true);
    assert_eq!(code, 0, "report failed: {err}");
    let rep: Value = serde_json::from_str(out.trim()).unwrap();
    let t = &rep["totals"];
    // veth drops nothing after the kernel took it: all common loss is the path's.
    assert_eq!((u(t, "sender"), u(t, "path")), (0, common_truth.len() as u64), "{t}");
    assert_eq!(u(&rep["flows"][0], "sent"), SENT, "{rep}");

    let (code, text, err) = report(&with_sender, false);
    assert_eq!(code, 0, "report failed: {err}");
    println!("{text}");
    assert!(text.contains(&format!("total: common {}, partial 0, unique r5 {}", common_truth.len(), r5_truth.len())), "{text}");

    // A receiver's file given twice is refused, in one line.
    let (code, _, err) = report(&[files[0].clone(), files[0].clone()], false);
    assert_eq!(code, 2);
    assert!(err.starts_with("mcblast: ") && err.contains("both name receiver r1") && err.lines().count() == 1, "{err}");
}

/// Many gaps: every 2nd of 100 000 datagrams dropped entering the bridge,
/// at 50 000 datagrams/s (the mmsg engine: one datagram per packet, so the
/// nft rule counts datagrams; GSO would hand the bridge batches). 50 000 single-datagram gaps go through the kernel
/// counter's ring buffer; the receiver's records must hold exactly the even
/// sequence numbers, complete, and the report must agree.
#[test]
fn fifty_thousand_gaps_are_recorded_exactly() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("g", 1);
    let dir = TempDir(std::env::temp_dir().join(format!("mcbt{}fang", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    drop_from_sender(&lab, 2);
    let r = start_recv(&lab, "r1", &["--counter", "kernel"]);
    wait_members(&lab);
    let t0 = std::time::Instant::now();
    let s = sender_summary(spawn_send(&lab, &["-n", "100000", "--pps", "50000", "-l", "64", "--engine", "mmsg"]));
    assert_eq!(u(&s, "sent"), 100_000);
    assert_eq!(dropped_from_sender(&lab), 50_000);
    let begin = r.begin.clone();
    let lines = finish(r);
    eprintln!("100000 datagrams, 50000 gaps recorded in {:.1} s (sender and receiver)", t0.elapsed().as_secs_f64());
    let (kernel, line) = lost_seqs(&lines, "kernel");
    eprintln!("the kernel counter's loss line: {} bytes", line.to_string().len());
    assert_eq!(line["complete"], true, "{}", line["events_lost"]);
    assert_eq!(line["events_lost"].as_u64(), Some(0));
    assert_eq!(kernel, (0..100_000).step_by(2).collect::<BTreeSet<u64>>());
    assert_eq!(u(only_flow(summary(&lines, "kernel")), "lost"), 50_000);

    let file = dir.0.join("r1.jsonl");
    std::fs::write(&file, std::iter::once(&begin).chain(&lines).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let (code, out, err) = report(&[file], true);
    assert_eq!(code, 0, "{err}");
    let rep: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((u(&rep["totals"], "common"), u(&rep["flows"][0]["common"], "ranges")), (50_000, 50_000), "one receiver: all common");
    assert_eq!(rep["flows"][0]["common"]["top"].as_array().unwrap().len(), 10, "top ranges only");
}
