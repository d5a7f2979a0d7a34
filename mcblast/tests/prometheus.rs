//! `--prometheus` on the lab: the receiver's and the sender's endpoints are
//! scraped during and after a bounded send, the exposition is parsed
//! strictly, and the scraped counts must equal the final JSON summaries.
//! Privileged: skipped with a message when not root; the lab is removed
//! when the test ends.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mcblast::lab::Lab;

mod common;
use common::*;

const NEEDS: &str = "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF) for namespaces and XDP";

/// One sample: name and labels (sorted) to value.
type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses the text exposition format 0.0.4 strictly: every family has a
/// HELP then a TYPE line before its samples, its samples are together,
/// counters end in `_total`, names and labels are valid, label values are
/// properly escaped, values are numbers, no series repeats.
fn parse(text: &str) -> Samples {
    let mut out = Samples::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut help_seen: Option<String> = None;
    let mut current: Option<String> = None;
    let mut finished: Vec<String> = Vec::new();
    assert!(text.ends_with('\n'), "the page must end with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').unwrap_or_else(|| panic!("HELP without text: {line}"));
            assert!(valid_name(name), "{line}");
            assert!(!types.contains_key(name) && !finished.contains(&name.to_string()), "family {name} twice");
            if let Some(c) = current.take() {
                finished.push(c);
            }
            help_seen = Some(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("bad TYPE: {line}"));
            assert_eq!(help_seen.as_deref(), Some(name), "TYPE without HELP before it: {line}");
            assert!(kind == "counter" || kind == "gauge", "{line}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "counters and only counters end in _total: {line}");
            types.insert(name.to_string(), kind.to_string());
            current = Some(name.to_string());
        } else {
            assert!(!line.starts_with('#') && !line.is_empty(), "unexpected line {line:?}");
            let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value: {line}"));
            let name = &line[..name_end];
            assert!(valid_name(name), "{line}");
            assert_eq!(current.as_deref(), Some(name), "sample outside its family's block: {line}");
            let mut rest = &line[name_end..];
            let mut labels = Vec::new();
            if let Some(r) = rest.strip_prefix('{') {
                let mut chars = r.char_indices().peekable();
                loop {
                    let (start, c) = chars.next().unwrap_or_else(|| panic!("unterminated labels: {line}"));
                    if c == '}' {
                        rest = &r[start + 1..];
                        break;
                    }
                    let eq = r[start..].find('=').unwrap_or_else(|| panic!("label without =: {line}")) + start;
                    let lname = &r[start..eq];
                    assert!(valid_name(lname) && !lname.contains(':'), "label name {lname:?}: {line}");
                    while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                        chars.next();
                    }
                    assert_eq!(chars.next().map(|x| x.1), Some('"'), "label value not quoted: {line}");
                    let mut value = String::new();
                    loop {
                        match chars.next().map(|x| x.1) {
                            Some('\\') => match chars.next().map(|x| x.1) {
                                Some('\\') => value.push('\\'),
                                Some('"') => value.push('"'),
                                Some('n') => value.push('\n'),
                                e => panic!("bad escape {e:?}: {line}"),
                            },
                            Some('"') => break,
                            Some('\n') | None => panic!("unterminated label value: {line}"),
                            Some(c) => value.push(c),
                        }
                    }
                    labels.push((lname.to_string(), value));
                    match chars.peek().map(|x| x.1) {
                        Some(',') => {
                            chars.next();
                        }
                        Some('}') => {}
                        other => panic!("expected , or }} after a label, got {other:?}: {line}"),
                    }
                }
            }
            let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("no space before the value: {line}"));
            let v: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                v => v.parse().unwrap_or_else(|_| panic!("value {v:?} is not a number: {line}")),
            };
            labels.sort();
            assert!(out.insert((name.to_string(), labels), v).is_none(), "series twice: {line}");
        }
    }
    out
}

/// GET /metrics on 127.0.0.1:`port` inside `node`; returns the body (asserting 200 and the content type).
fn scrape(lab: &Lab, node: &str, port: u16) -> String {
    lab.run_in(node, move || {
        let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect to the endpoint");
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut r = String::new();
        c.read_to_string(&mut r).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").expect("HTTP response");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
        body.to_string()
    })
    .expect("scrape in the node")
}

/// The value of `name` for the series whose labels include `want`.
fn value(s: &Samples, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let hits: Vec<f64> = s
        .iter()
        .filter(|((n, l), _)| n == name && want.iter().all(|(k, v)| l.iter().any(|(a, b)| a == k && b == v)))
        .map(|(_, v)| *v)
        .collect();
    assert!(hits.len() <= 1, "{name} {want:?} matches {} series", hits.len());
    hits.first().copied()
}

/// Every counter of `before` is in `after` and has not gone down.
fn monotonic(before: &Samples, after: &Samples) {
    for ((name, labels), v) in before {
        if name.ends_with("_total") {
            let w = after.get(&(name.clone(), labels.clone())).unwrap_or_else(|| panic!("{name} {labels:?} vanished"));
            assert!(w >= v, "{name} {labels:?} went down: {v} -> {w}");
        }
    }
}

#[test]
fn scraped_counters_equal_the_final_summaries() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("prom", 1);
    let (rport, sport) = (9464u16, 9465u16);
    let rp = format!("127.0.0.1:{rport}");
    let r = start_recv(&lab, "r1", &["--prometheus", &rp, "--grace", "3"]);
    wait_members(&lab);

    // A second endpoint on the same address: one line saying what to do, exit 2.
    let out = lab.exec_cmd("r1", &["mcblast", "recv", "-I", "eth0", "-p", "5999", "-t", "1", "--prometheus", &rp]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("in use") && err.contains("pick a free port"), "{err}");
    // An address this node does not have.
    let out = lab
        .exec_cmd("r1", &["mcblast", "recv", "-I", "eth0", "-p", "5999", "-t", "1", "--prometheus", "192.0.2.1:9464"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no interface here has that address"), "{err}");

    // Before any traffic: the page parses and has no flows yet.
    let idle = parse(&scrape(&lab, "r1", rport));
    assert_eq!(value(&idle, "mcblast_recv_foreign_total", &[("counter", "kernel")]), Some(0.0));
    assert!(idle.keys().all(|(n, _)| n != "mcblast_recv_received_total"));

    let n = 6000u64;
    let sp = format!("127.0.0.1:{sport}");
    let sender = spawn_send(&lab, &["-n", &n.to_string(), "--pps", "2000", "-l", "1000", "--prometheus", &sp]);

    // During the send: both endpoints, twice each.
    let deadline = Instant::now() + Duration::from_secs(20);
    let during = loop {
        let s = parse(&scrape(&lab, "r1", rport));
        if value(&s, "mcblast_recv_received_total", &[("counter", "kernel")]).is_some_and(|v| v > 0.0) {
            break s;
        }
        assert!(Instant::now() < deadline, "the receiver's endpoint never showed traffic");
        std::thread::sleep(Duration::from_millis(100));
    };
    let s1 = parse(&scrape(&lab, "sender", sport));
    std::thread::sleep(Duration::from_millis(300));
    let s2 = parse(&scrape(&lab, "sender", sport));
    monotonic(&s1, &s2);
    let all = [("worker", "all")];
    let sent_during = value(&s2, "mcblast_send_sent_total", &all).expect("sent_total");
    assert!(sent_during > 0.0 && sent_during <= n as f64, "{sent_during}");
    assert_eq!(
        value(&s2, "mcblast_send_asked_total", &all),
        Some(
            sent_during
                + value(&s2, "mcblast_send_end_markers_total", &all).unwrap()
                + ["enobufs", "eagain", "other"]
                    .iter()
                    .map(|r| value(&s2, "mcblast_send_refused_total", &[("worker", "all"), ("reason", r)]).unwrap())
                    .sum::<f64>()
        )
    );
    assert!(value(&s2, "mcblast_send_interface_tx_packets_total", &[]).is_some(), "ledger counters");

    let send_lines = sender_lines(sender);
    let ssum = sender_line(&send_lines, "summary");
    assert_eq!(ssum["sent"].as_u64(), Some(n));
    let run = ssum["run"].as_u64().expect("run id").to_string();

    // After the end marker, in the receiver's grace window: every flow has
    // ended in both counters; those are the final counts.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let s = parse(&scrape(&lab, "r1", rport));
        let ended: Vec<f64> =
            ["kernel", "socket"].iter().filter_map(|c| value(&s, "mcblast_recv_flow_ended", &[("counter", c)])).collect();
        if ended == [1.0, 1.0] {
            break s;
        }
        assert!(Instant::now() < deadline, "the flow never ended on the endpoint");
        std::thread::sleep(Duration::from_millis(50));
    };
    monotonic(&during, &after);

    let lines = finish(r);
    for counter in ["kernel", "socket"] {
        let f = only_flow(summary(&lines, counter));
        let l = [("counter", counter), ("run", run.as_str()), ("flow", "0")];
        assert_eq!(value(&after, "mcblast_recv_received_total", &l), f["received"].as_f64(), "{counter}: {f}");
        assert_eq!(value(&after, "mcblast_recv_lost_datagrams", &l), f["lost"].as_f64(), "{counter}: {f}");
        assert_eq!(value(&after, "mcblast_recv_bytes_total", &l), f["bytes"].as_f64(), "{counter}: {f}");
        assert_eq!(value(&after, "mcblast_recv_duplicates_total", &l), f["duplicates"].as_f64(), "{counter}: {f}");
        assert_eq!(value(&after, "mcblast_recv_expected_datagrams", &l), Some(n as f64), "{counter}");
        assert_eq!(f["received"].as_u64(), Some(n), "{counter}: the lab loses nothing at this rate: {f}");
        assert_eq!(
            value(&after, "mcblast_recv_jitter_seconds", &l).map(|j| (j * 1e9).round()),
            f["jitter_us"].as_f64().map(|j| (j * 1e3).round()),
            "{counter}"
        );
    }
    // The drop tracer's layers are there, and nothing was dropped.
    if lines.iter().any(|l| l["counter"] == "layers") {
        assert_eq!(value(&after, "mcblast_recv_layer_dropped_total", &[("layer", "socket")]), Some(0.0));
    }
}
