//! `--prometheus` on the lab: the receiver's and the sender's endpoints are
//! scraped during and after a bounded send, the exposition is parsed
//! strictly and checked by `promtool check metrics`, and the scraped counts
//! must equal the final JSON summaries. Then a real Prometheus server
//! (Debian's package, started on the receiver node's loopback with its own
//! config and storage, killed and removed at the end) scrapes a receiver,
//! and its `histogram_quantile(0.99, …)` agrees with the receiver's JSON
//! p99 delay within one of the page's buckets; every expression of the example Grafana dashboard is
//! valid PromQL to it. Privileged: skipped with a message when not root;
//! the lab is removed when the test ends.

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
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "counters and only counters end in _total: {line}");
            types.insert(name.to_string(), kind.to_string());
            current = Some(name.to_string());
        } else {
            assert!(!line.starts_with('#') && !line.is_empty(), "unexpected line {line:?}");
            let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value: {line}"));
            let name = &line[..name_end];
            assert!(valid_name(name), "{line}");
            let family = match types.get(current.as_deref().unwrap_or("")).map(String::as_str) {
                Some("histogram") => ["_bucket", "_sum", "_count"].iter().find_map(|x| name.strip_suffix(x)).unwrap_or(name),
                _ => name,
            };
            assert_eq!(current.as_deref(), Some(family), "sample outside its family's block: {line}");
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

/// The sum of `name` over the series whose labels include `want`.
fn sum(s: &Samples, name: &str, want: &[(&str, &str)]) -> f64 {
    s.iter()
        .filter(|((n, l), _)| n == name && want.iter().all(|(k, v)| l.iter().any(|(a, b)| a == k && b == v)))
        .map(|(_, v)| *v)
        .sum()
}

/// `promtool check metrics` (Debian's prometheus package) accepts the page with nothing to say.
fn promtool_check(page: &str) {
    let mut c = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (cargo xtask setup installs Debian's prometheus package)");
    c.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{page}");
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
    assert_eq!(value(&idle, "mcblast_recv_foreign_datagrams_total", &[("counter", "kernel")]), Some(0.0));
    assert!(idle.keys().all(|(n, _)| n != "mcblast_recv_datagrams_total"));
    let info = idle.keys().find(|(n, _)| n == "mcblast_build_info").expect("build info");
    assert!(info.1.iter().any(|(k, v)| k == "version" && v == env!("CARGO_PKG_VERSION")), "{info:?}");

    let n = 6000u64;
    let sp = format!("127.0.0.1:{sport}");
    let sender = spawn_send(&lab, &["-n", &n.to_string(), "--pps", "2000", "-l", "1000", "--prometheus", &sp]);

    // During the send: both endpoints, twice each.
    let deadline = Instant::now() + Duration::from_secs(20);
    let during = loop {
        let s = parse(&scrape(&lab, "r1", rport));
        if value(&s, "mcblast_recv_datagrams_total", &[("counter", "kernel")]).is_some_and(|v| v > 0.0) {
            break s;
        }
        assert!(Instant::now() < deadline, "the receiver's endpoint never showed traffic");
        std::thread::sleep(Duration::from_millis(100));
    };
    let s1 = parse(&scrape(&lab, "sender", sport));
    std::thread::sleep(Duration::from_millis(300));
    let page = scrape(&lab, "sender", sport);
    promtool_check(&page);
    let s2 = parse(&page);
    monotonic(&s1, &s2);
    // No total series beside the parts: nothing says worker="all".
    assert!(s2.keys().all(|(_, l)| !l.iter().any(|(_, v)| v == "all")), "{s2:?}");
    // Per flow, with the receivers' labels.
    let flow = [("flow", "0"), ("group", "239.0.0.1"), ("worker", "0")];
    let sent_during = value(&s2, "mcblast_send_datagrams_total", &flow).expect("the flow's datagrams");
    assert!(sent_during > 0.0 && sent_during <= n as f64, "{sent_during}");
    assert_eq!(value(&s2, "mcblast_send_bytes_total", &flow), Some(sent_during * 1000.0));
    let refused = sum(&s2, "mcblast_send_refused_attempts_total", &[]);
    let attempts = sum(&s2, "mcblast_send_attempts_total", &[]);
    assert!(attempts >= refused + sum(&s2, "mcblast_send_end_markers_total", &[]) && attempts > 0.0, "{attempts}");
    assert!(value(&s2, "mcblast_send_interface_tx_packets_total", &[]).is_some(), "ledger counters");

    let send_lines = sender_lines(sender);
    let ssum = sender_line(&send_lines, "summary");
    assert_eq!(ssum["sent"].as_u64(), Some(n));
    let run = ssum["run"].as_u64().expect("run id").to_string();

    // After the end marker, in the receiver's grace window: every flow has
    // ended in both counters; those are the final counts.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (page, after) = loop {
        let page = scrape(&lab, "r1", rport);
        let s = parse(&page);
        let ended: Vec<f64> =
            ["kernel", "socket"].iter().filter_map(|c| value(&s, "mcblast_recv_flow_ended", &[("counter", c)])).collect();
        if ended == [1.0, 1.0] {
            break (page, s);
        }
        assert!(Instant::now() < deadline, "the flow never ended on the endpoint");
        std::thread::sleep(Duration::from_millis(50));
    };
    monotonic(&during, &after);
    promtool_check(&page);

    let lines = finish(r);
    for counter in ["kernel", "socket"] {
        let f = only_flow(summary(&lines, counter));
        let l = [("counter", counter), ("run", run.as_str()), ("flow", "0")];
        assert_eq!(value(&after, "mcblast_recv_datagrams_total", &l), f["received"].as_f64(), "{counter}: {f}");
        assert_eq!(value(&after, "mcblast_recv_lost_datagrams", &l), f["lost"].as_f64(), "{counter}: {f}");
        assert_eq!(value(&after, "mcblast_recv_bytes_total", &l), f["bytes"].as_f64(), "{counter}: {f}");
        assert_eq!(value(&after, "mcblast_recv_duplicate_datagrams_total", &l), f["duplicates"].as_f64(), "{counter}: {f}");
        assert_eq!(value(&after, "mcblast_recv_expected_datagrams", &l), Some(n as f64), "{counter}");
        assert_eq!(f["received"].as_u64(), Some(n), "{counter}: the lab loses nothing at this rate: {f}");
        assert_eq!(
            value(&after, "mcblast_recv_jitter_seconds", &l).map(|j| (j * 1e9).round()),
            f["jitter_us"].as_f64().map(|j| (j * 1e3).round()),
            "{counter}"
        );
        // The delay histogram: every datagram timed once, +Inf holds them all.
        assert_eq!(value(&after, "mcblast_recv_delay_seconds_count", &l), Some(n as f64), "{counter}");
        let inf: Vec<(&str, &str)> = l.iter().copied().chain([("le", "+Inf")]).collect();
        assert_eq!(value(&after, "mcblast_recv_delay_seconds_bucket", &inf), Some(n as f64), "{counter}");
        let mean = value(&after, "mcblast_recv_delay_seconds_sum", &l).unwrap() / n as f64;
        assert!((mean * 1e6 - f["delay"]["mean_us"].as_f64().unwrap()).abs() < 1.0, "{counter}: mean {mean} s: {f}");
        // IPDV: one per consecutive pair of timed datagrams, as in the JSON.
        assert_eq!(value(&after, "mcblast_recv_ipdv_seconds_count", &l), Some((n - 1) as f64), "{counter}");
        assert_eq!(f["ipdv"]["count"].as_u64(), Some(n - 1), "{counter}: {f}");
        assert_eq!(value(&after, "mcblast_recv_ipdv_seconds_bucket", &inf), Some((n - 1) as f64), "{counter}");
    }
    // The drop tracer's layers are there, and nothing was dropped.
    if lines.iter().any(|l| l["counter"] == "layers") {
        assert_eq!(value(&after, "mcblast_recv_layer_dropped_datagrams_total", &[("layer", "socket")]), Some(0.0));
    }
}

/// A Prometheus server this test started on a lab node's loopback, with its
/// own config and storage dir: killed, waited for and its dir removed when
/// dropped (a failing test included).
struct PromServer {
    child: std::process::Child,
    dir: std::path::PathBuf,
    port: u16,
}

impl Drop for PromServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port nobody listens on at 127.0.0.1 in `node` (bound and released).
fn free_port(lab: &Lab, node: &str) -> u16 {
    lab.run_in(node, || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()).unwrap()
}

/// Starts `prometheus` in `node`, listening on 127.0.0.1 only and scraping
/// 127.0.0.1:`target` every second.
fn start_prometheus(lab: &Lab, node: &str, target: u16) -> PromServer {
    let dir = std::env::temp_dir().join(format!("mcblast-prom-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: mcblast\n    \
         static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = free_port(lab, node);
    let (cfg, data) = (dir.join("prometheus.yml"), dir.join("data"));
    let child = lab
        .exec_cmd(node, &[
            "prometheus".to_string(),
            format!("--config.file={}", cfg.display()),
            format!("--storage.tsdb.path={}", data.display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus (cargo xtask setup installs Debian's prometheus package)");
    PromServer { child, dir, port }
}

/// Percent-encodes a query parameter.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query through Prometheus's HTTP API (`/api/v1/query`): its JSON answer.
fn promql(lab: &Lab, node: &str, prom: &PromServer, q: &str) -> serde_json::Value {
    let (port, path) = (prom.port, format!("/api/v1/query?query={}", urlencode(q)));
    let body = lab
        .run_in(node, move || {
            let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).ok()?;
            let mut r = String::new();
            c.read_to_string(&mut r).ok()?;
            r.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
        })
        .unwrap();
    body.and_then(|b| serde_json::from_str(&b).ok()).unwrap_or(serde_json::Value::Null)
}

/// The single value of an instant query's vector answer (None: no answer or no series yet).
fn promql_value(lab: &Lab, node: &str, prom: &PromServer, q: &str) -> Option<f64> {
    let v = promql(lab, node, prom, q);
    let r = v["data"]["result"].as_array()?;
    assert!(r.len() <= 1, "{q}: {v}");
    r.first()?["value"][1].as_str()?.parse().ok()
}

/// Polls `q` until it returns `want` (bounded).
fn await_value(lab: &Lab, node: &str, prom: &PromServer, q: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while promql_value(lab, node, prom, q) != Some(want) {
        let log = std::fs::read_to_string(prom.dir.join("prometheus.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "{q} never returned {want}; prometheus said: {log}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The page's `le` bucket holding a delay of `us` µs, as [lo, hi) µs: the
/// page's bounds are the powers of two from 2^10 ns (see `prom::le_buckets`).
fn le_bucket_of(us: f64) -> (f64, f64) {
    let ns = us * 1e3;
    let mut lo = 0.0;
    for k in 10..=36 {
        let le = (1u64 << k) as f64;
        if ns < le {
            return (lo / 1e3, le / 1e3);
        }
        lo = le;
    }
    (lo / 1e3, f64::INFINITY)
}

#[test]
fn a_real_prometheus_scrapes_a_receiver() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("promsrv", 1);
    let rport = free_port(&lab, "r1");
    let rp = format!("127.0.0.1:{rport}");
    let r = start_recv(&lab, "r1", &["--prometheus", &rp, "--grace", "15"]);
    let prom = start_prometheus(&lab, "r1", rport);
    await_value(&lab, "r1", &prom, r#"up{job="mcblast"}"#, 1.0);
    wait_members(&lab);

    let n = 4000u64;
    let sender = spawn_send(&lab, &["-n", &n.to_string(), "--pps", "4000", "-l", "1000"]);
    let run = sender_line(&sender_lines(sender), "summary")["run"].as_u64().unwrap().to_string();
    let sel = format!(r#"counter="kernel",run="{run}""#);
    // The scrape after the end marker: every datagram timed.
    await_value(&lab, "r1", &prom, &format!("mcblast_recv_delay_seconds_count{{{sel}}}"), n as f64);
    let q = format!("histogram_quantile(0.99, sum by (le) (mcblast_recv_delay_seconds_bucket{{{sel}}}))");
    let p99_s = promql_value(&lab, "r1", &prom, &q).expect("a p99 from Prometheus");

    // Every expression of the example dashboard is valid PromQL to this server.
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/grafana/mcblast.json")).unwrap())
            .unwrap();
    let panels = dash["panels"].as_array().unwrap();
    let exprs: Vec<&str> =
        panels.iter().flat_map(|p| p["targets"].as_array().into_iter().flatten()).filter_map(|t| t["expr"].as_str()).collect();
    assert!(exprs.len() >= 20, "{exprs:?}");
    for e in exprs {
        let e = e.replace("$run", ".*").replace("$counter", "kernel").replace("$__rate_interval", "1m");
        let v = promql(&lab, "r1", &prom, &e);
        assert_eq!(v["status"], "success", "{e}: {v}");
    }
    drop(prom);

    let lines = finish(r);
    let f = only_flow(summary(&lines, "kernel"));
    assert_eq!(f["received"].as_u64(), Some(n), "{f}");
    // The JSON p99 (from the fine histogram) and the page's le bucket it is in.
    let json_p99 = f["delay"]["p99_us"].as_f64().expect("p99_us");
    let (lo, hi) = le_bucket_of(json_p99);
    let p99_us = p99_s * 1e6;
    eprintln!("PromQL p99 {p99_us:.1} µs; the JSON p99 {json_p99} µs, in the page's bucket [{lo}, {hi}) µs");
    // histogram_quantile interpolates inside the le bucket that holds the
    // rank, which holds the fine bucket of the JSON p99: the same bucket.
    assert!(lo <= p99_us && p99_us <= hi, "PromQL p99 {p99_us} µs outside the JSON p99's bucket [{lo}, {hi}) µs: {f}");
    let (min, max) = (f["delay"]["min_us"].as_f64().unwrap(), f["delay"]["max_us"].as_f64().unwrap());
    assert!(lo <= max && min < hi, "the bucket [{lo}, {hi}) µs meets the delays [{min}, {max}] µs");
}
