//! The example Grafana dashboard (examples/grafana/mcblast.json) asks only
//! for metrics mcblast exports: every PromQL expression in it (panel
//! targets and template variable queries) names at least one `mcblast_`
//! series, and each of them is on a page mcblast renders. The pages are
//! rendered with every family present (a flow with delays, every counter
//! total, the drop tracer's layers, the interface ledger), and `promtool
//! check metrics` (Debian's prometheus package) must accept them.
//! Unprivileged.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use mcblast::recv::attrib::{Layer, ReasonCount};
use mcblast::recv::live::RecvLive;
use mcblast::send::live::SendLive;
use mcblast::recv::Snapshot;
use mcblast::send::counters::{FlowCounter, WorkerCounters};
use mcblast_common::FlowKey;
use mcblast_common::tracker::FlowState;
use serde_json::Value;

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/grafana/mcblast.json");

/// A receiver page and a sender page with every family mcblast exports.
fn pages() -> Vec<String> {
    let mut st = FlowState::new();
    for seq in [0u64, 1, 3, 2, 2] {
        st.on_data(seq, 1000, 1_000_000, 1_000_000 + 40_000 * (seq + 1), 0, 7);
    }
    let key = FlowKey { sender: u32::from_ne_bytes([10, 0, 0, 1]), group: u32::from_ne_bytes([239, 0, 0, 1]), run: 9, flow: 0 };
    let kernel = Snapshot {
        flows: vec![(key, st.clone())],
        foreign: 1,
        map_full: Some(0),
        fragments: Some(0),
        other_group: Some(2),
        ..Default::default()
    };
    let socket = Snapshot { flows: vec![(key, st)], ..Default::default() };
    let reasons = vec![ReasonCount {
        reason: "SOCKET_RCVBUFF".into(),
        function: None,
        layer: Layer::Socket,
        data: 3,
        end: 0,
        other: 0,
        fragments: 0,
    }];
    let live = RecvLive { snaps: vec![("kernel", kernel), ("socket", socket)], socket_drops: Some(3), reasons: Some(reasons) };
    let local = mcblast::clock::LocalClock { id: 7, synced: false, tai_offset: 37 };
    let recv = mcblast::recv::live::recv_page(&live, &local);
    let flows = vec![mcblast::send::plan::FlowPlan { id: 0, group: "239.0.0.1".parse().unwrap(), worker: 0 }];
    let send = SendLive {
        run: 9,
        flows,
        length: 1000,
        workers: Arc::from([WorkerCounters::default()]),
        flow_sent: Arc::from([FlowCounter::default()]),
    };
    let start = mcblast::send::ledger::TxCounters::read("lo");
    let send = mcblast::send::live::send_page(&send, Some(("lo", &start)));
    vec![recv, send]
}

/// The series names on the pages (histograms as `_bucket`, `_sum`, `_count`).
fn exported(pages: &[String]) -> BTreeSet<String> {
    pages
        .iter()
        .flat_map(|p| p.lines())
        .filter(|l| !l.starts_with('#'))
        .map(|l| l[..l.find(['{', ' ']).expect("a sample line")].to_string())
        .collect()
}

/// Every PromQL expression of the dashboard: panel targets' `expr`, and
/// template variables' queries.
fn expressions(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) if s.contains('(') => out.push(s.clone()),
                    _ => expressions(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| expressions(x, out)),
        _ => {}
    }
}

/// The `mcblast_` names an expression asks for (identifiers, not inside a
/// quoted label value).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let (mut quoted, mut cur) = (false, String::new());
    for c in expr.chars().chain([' ']) {
        if c == '"' {
            quoted = !quoted;
        }
        if !quoted && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            cur.push(c);
        } else {
            if cur.starts_with("mcblast_") {
                names.push(cur.clone());
            }
            cur.clear();
        }
    }
    names
}

/// What is wrong with the dashboard `text`: expressions naming no mcblast
/// metric, and names no page has.
fn problems(text: &str, exported: &BTreeSet<String>) -> Vec<String> {
    let v: Value = serde_json::from_str(text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    expressions(&v, &mut exprs);
    assert!(exprs.len() >= 20, "the dashboard's expressions were found: {exprs:?}");
    let mut bad = Vec::new();
    for e in &exprs {
        let names = metric_names(e);
        if names.is_empty() {
            bad.push(format!("names no mcblast metric: {e}"));
        }
        bad.extend(names.into_iter().filter(|n| !exported.contains(n)).map(|n| format!("{n} is not exported: {e}")));
    }
    bad
}

#[test]
fn every_dashboard_expression_names_an_exported_metric() {
    let pages = pages();
    let exported = exported(&pages);
    assert!(exported.contains("mcblast_recv_delay_seconds_bucket") && exported.contains("mcblast_send_datagrams_total"));
    let text = std::fs::read_to_string(DASHBOARD).unwrap();
    assert_eq!(problems(&text, &exported), Vec::<String>::new());
    // The check has teeth: one wrong name (a unit dropped, a family renamed) is caught.
    for (from, to) in [
        ("mcblast_recv_datagrams_total", "mcblast_recv_received_total"),
        ("mcblast_recv_delay_seconds_bucket", "mcblast_recv_delay_bucket"),
        ("mcblast_send_refused_attempts_total", "mcblast_send_refused_total"),
    ] {
        assert!(text.contains(from), "{from}");
        let p = problems(&text.replacen(from, to, 1), &exported);
        assert!(p.len() == 1 && p[0].starts_with(&format!("{to} is not exported")), "{from} -> {to}: {p:?}");
    }
    assert_eq!(metric_names(r#"rate(mcblast_a_total{x="mcblast_b"}[1m]) / mcblast_c"#), ["mcblast_a_total", "mcblast_c"]);
}

#[test]
fn promtool_accepts_the_pages() {
    if Command::new("promtool").arg("--version").output().is_err() {
        eprintln!("SKIP: promtool not installed (cargo xtask setup installs Debian's prometheus)");
        return;
    }
    for page in pages() {
        let mut c = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{page}");
    }
}
