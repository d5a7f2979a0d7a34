//! The report page: header, headline table, comparison table, per-case plots;
//! and the side-by-side page of two runs. Every text goes through [`esc`].

use std::fmt::Write;

use super::svg::{self, Cell, Segment, Series};
use super::{CaseData, RunData};

/// HTML-escapes text (element content and attribute values).
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

const CSS: &str = "
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 8px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ccc}
h3{font-size:15px;margin:22px 0 6px}
table{border-collapse:collapse;margin:6px 0}th,td{border:1px solid #ccc;padding:3px 7px;vertical-align:top}
th{background:#f2f4f7;text-align:left;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.meta th{width:150px}
.up{color:#1a7f37}.down{color:#c62828}.note{color:#666;font-size:12px}
figure{display:inline-block;margin:6px 10px 6px 0;vertical-align:top}figcaption{font-size:12px;color:#555;max-width:560px}
svg.chart{border:1px solid #ddd}
svg .t{font-size:12px;font-weight:600}svg .xl{font-size:10px;text-anchor:middle;fill:#444}
svg .yl{font-size:10px;text-anchor:end;fill:#444}svg .lg{font-size:10px;fill:#333}
svg .grid{stroke:#eee}svg .axis{stroke:#888}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:8px}.pair>div>h4{margin:4px 0;font-size:13px}
.wide{overflow-x:auto;max-width:100%}table.cases,table.compare{font-size:12px}table.cases th,table.compare th{font-size:11px}
table.waterfall{font-size:12px}table.cases td:nth-child(2),table.compare td:nth-child(2){max-width:150px;overflow-wrap:anywhere}table.cases td,table.cases th,table.compare td,table.compare th{padding:2px 4px}
pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px}
";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{CSS}</style></head><body>\n{body}\n<p class=\"note\">Written by mcblast {} (`mcblast report`). Self-contained: no scripts, no external resources.</p>\n</body></html>\n",
        esc(title),
        esc(env!("CARGO_PKG_VERSION"))
    )
}

/// `mean ± sd` from summary.csv's strings (sd left out when empty: one sample).
fn pm(c: &CaseData, m: &str) -> String {
    let mean = c.summary.get(&format!("{m}_mean"));
    let sd = c.summary.get(&format!("{m}_sd"));
    if sd.is_empty() { esc(mean) } else { format!("{} ± {}", esc(mean), esc(sd)) }
}

fn opt_num(v: Option<u64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "–".into())
}

/// Mean of the receivers' delay_mean_us over repeats (cases.csv).
fn delay_mean(c: &CaseData) -> Option<f64> {
    let v: Vec<f64> = c.recvs.iter().filter_map(|r| r.row.num("delay_mean_us")).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn lab_text(r: &RunData) -> String {
    match &r.plan {
        Ok(p) if p.hosts.is_some() => {
            let h = p.hosts.as_ref().expect("checked");
            format!(
                "real hosts over ssh (inventory {}): sender {}, {} receivers; group {} port {}",
                h.inventory.display(),
                h.sender.name,
                h.receivers.len(),
                p.group,
                p.port
            )
        }
        Ok(p) => {
            let b = &p.base;
            let mut s = match &b.topology {
                Some(t) => format!("{} fabric, {} receiver hosts", t.fabric.as_str(), t.hosts),
                None => "flat lab".into(),
            };
            if let Some(pr) = r.plan_file.as_ref().and_then(|f| f.lab.as_ref()).and_then(|l| l.preset.as_deref()) {
                s = format!("preset {pr}: {s}");
            }
            let _ = write!(
                s,
                ", MTU {}, snooping {}, querier {}, IGMPv{} queries every {} s; group {} port {}",
                b.base.mtu,
                if b.base.snooping { "on" } else { "off" },
                if b.base.querier { "on" } else { "off" },
                b.igmp.version,
                b.igmp.query_interval_cs / 100,
                p.group,
                p.port,
            );
            s
        }
        Err(e) => format!("(plan.toml not readable: {e})"),
    }
}

fn versions(r: &RunData) -> String {
    let mut v: Vec<String> = Vec::new();
    for c in &r.cases {
        for b in c.recvs.iter().filter_map(|x| x.begin.as_ref()).chain(c.sender_begin.iter()) {
            if let Some(s) = b["version"].as_str()
                && !v.iter().any(|x| x == s)
            {
                v.push(s.to_string());
            }
        }
    }
    if v.is_empty() { "unknown".into() } else { v.join(", ") }
}

fn engines(r: &RunData) -> String {
    let mut v: Vec<String> = Vec::new();
    for c in &r.cases {
        if let Some(e) = c.sender_begin.as_ref().and_then(|b| b["engine"].as_str())
            && !v.iter().any(|x| x == e)
        {
            v.push(e.to_string());
        }
    }
    if v.is_empty() { "unknown".into() } else { v.join(", ") }
}

fn attach(c: &CaseData) -> String {
    let mut v: Vec<String> = Vec::new();
    for b in c.recvs.iter().filter_map(|x| x.begin.as_ref()) {
        let m = b["xdp_mode"].as_str().unwrap_or("socket only").to_string();
        if !v.contains(&m) {
            v.push(m);
        }
    }
    v.join(", ")
}

fn meta_rows(r: &RunData) -> Vec<(&'static str, String)> {
    let mut receivers: Vec<String> = Vec::new();
    for c in &r.cases {
        for n in c.receivers() {
            if !receivers.contains(&n) {
                receivers.push(n);
            }
        }
    }
    let repeats: u64 = r.cases.iter().filter_map(|c| c.summary.int("repeats")).sum();
    vec![
        ("Platform", r.label.clone()),
        ("Run directory", r.dir.display().to_string()),
        ("Started", r.started.clone().unwrap_or_else(|| "unknown".into())),
        ("Lab", lab_text(r)),
        ("Nodes", format!("sender, {}", receivers.join(", "))),
        ("Sender engine", engines(r)),
        ("mcblast version", versions(r)),
        ("Finished", format!("{} case(s), {repeats} run(s)", r.cases.len())),
    ]
}

fn plan_details(r: &RunData) -> String {
    match &r.plan_text {
        Some(t) => format!("<details><summary>plan.toml</summary><pre>{}</pre></details>", esc(t)),
        None => String::new(),
    }
}

/// The case with the highest load (flat out counts highest), ties by datagram length.
fn pick_highest_load(r: &RunData) -> Option<&CaseData> {
    let rate = |c: &CaseData| c.summary.num("rate_bps").unwrap_or(f64::INFINITY);
    let len = |c: &CaseData| c.summary.num("length").unwrap_or(0.0);
    r.cases.iter().fold(None, |best: Option<&CaseData>, c| match best {
        Some(b) if (rate(b), len(b)) >= (rate(c), len(c)) => Some(b),
        _ => Some(c),
    })
}

fn pick_most_receivers(r: &RunData) -> Option<&CaseData> {
    let n = |c: &CaseData| c.summary.int("receivers").unwrap_or(0);
    r.cases.iter().fold(None, |best: Option<&CaseData>, c| match best {
        Some(b) if n(b) >= n(c) => Some(b),
        _ => Some(c),
    })
}

fn pick_snooping_off(r: &RunData) -> Option<&CaseData> {
    let off = |c: &&CaseData| c.summary.get("snooping") == "off";
    r.cases
        .iter()
        .filter(off)
        .find(|c| c.summary.get("loss_injected_pct") == "0")
        .or_else(|| r.cases.iter().find(|c| off(c)))
}

fn case_ref(c: &CaseData) -> String {
    format!("case {}: {} to {} receivers", c.k, c.summary.get("load"), c.summary.get("receivers"))
}

/// The table the users write by hand: one row per platform.
fn headline_table(runs: &[&RunData]) -> String {
    let mut s = String::from(
        "<table class=\"headline\"><tr><th>Platform</th><th>Throughput at the highest load, Mbit/s</th><th>Jitter with the most receivers, µs</th><th>Loss with IGMP snooping off, %</th><th>Worst loss, %</th><th>Lost on the path / in the kernel / at the socket</th></tr>",
    );
    for r in runs {
        let cell = |c: Option<&CaseData>, m: &str, none: &str| match c {
            Some(c) => format!("<td class=\"n\">{}<br><span class=\"note\">{}</span></td>", pm(c, m), esc(&case_ref(c))),
            None => format!("<td class=\"note\">{}</td>", esc(none)),
        };
        let worst = r
            .cases
            .iter()
            .filter_map(|c| c.summary.num("loss_pct_max").map(|v| (v, c)))
            .fold(None, |b: Option<(f64, &CaseData)>, x| if b.is_none_or(|b| x.0 > b.0) { Some(x) } else { b });
        let tot = |col: &str| {
            let v: Vec<u64> = r.cases.iter().filter_map(|c| c.sum(col)).collect();
            if v.is_empty() { None } else { Some(v.iter().sum::<u64>()) }
        };
        let _ = write!(
            s,
            "<tr><th>{}</th>{}{}{}{}<td class=\"n\">{} / {} / {}</td></tr>",
            esc(&r.label),
            cell(pick_highest_load(r), "throughput_mbps", "–"),
            cell(pick_most_receivers(r), "jitter_us", "–"),
            cell(pick_snooping_off(r), "loss_pct", "no case with snooping off"),
            match worst {
                Some((_, c)) => format!(
                    "<td class=\"n\">{}<br><span class=\"note\">{}</span></td>",
                    esc(c.summary.get("loss_pct_max")),
                    esc(&case_ref(c))
                ),
                None => "<td>–</td>".into(),
            },
            opt_num(tot("path_lost")),
            opt_num(tot("kernel_dropped")),
            opt_num(tot("socket_dropped")),
        );
    }
    s.push_str("</table>");
    s
}

const PARAM_HEAD: &str = "<th>#</th><th>block</th><th>load</th><th>receivers</th><th>placement</th><th>snooping</th><th>query s</th><th>injected</th><th>duration s</th><th>repeats</th>";

/// The case's parameters as cells; `query` replaces the query interval's text.
fn param_cells(c: &CaseData, query: Option<&str>) -> String {
    let s = &c.summary;
    let mut o = format!("<td class=\"n\"><a href=\"#case-{}\">{}</a></td>", c.k, c.k);
    for k in ["block", "load"] {
        let _ = write!(o, "<td>{}</td>", esc(s.get(k)));
    }
    let _ = write!(o, "<td class=\"n\">{}</td>", esc(s.get("receivers")));
    for k in ["placement", "snooping"] {
        let _ = write!(o, "<td>{}</td>", esc(s.get(k)));
    }
    let _ = write!(o, "<td class=\"n\">{}</td>", esc(query.unwrap_or(s.get("query_interval_s"))));
    let _ = write!(o, "<td>{}</td>", esc(&c.injected()));
    for k in ["duration_s", "repeats"] {
        let _ = write!(o, "<td class=\"n\">{}</td>", esc(s.get(k)));
    }
    o
}

/// The comparison table of one run: a row per case.
fn cases_table(r: &RunData) -> String {
    let mut s = format!(
        "<div class=\"wide\"><table class=\"cases\"><tr>{PARAM_HEAD}<th>throughput Mbit/s mean ± σ (min – max)</th><th>loss % mean ± σ (max)</th><th>jitter µs mean ± σ</th><th>delay µs mean</th><th>sender CPU s mean ± σ</th><th>lost: path</th><th>kernel</th><th>socket</th></tr>"
    );
    for c in &r.cases {
        let g = |k: &str| esc(c.summary.get(k));
        let _ = write!(
            s,
            "<tr class=\"case\">{}<td class=\"n\">{}<br><span class=\"note\">{} – {}</span></td><td class=\"n\">{}<br><span class=\"note\">max {}</span></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            param_cells(c, None),
            pm(c, "throughput_mbps"),
            g("throughput_mbps_min"),
            g("throughput_mbps_max"),
            pm(c, "loss_pct"),
            g("loss_pct_max"),
            pm(c, "jitter_us"),
            delay_mean(c).map(|d| format!("{d:.3}")).unwrap_or_else(|| "–".into()),
            pm(c, "sender_cpu_s"),
            opt_num(c.sum("path_lost")),
            opt_num(c.sum("kernel_dropped")),
            opt_num(c.sum("socket_dropped")),
        );
    }
    s.push_str("</table></div><p class=\"note\">From summary.csv (σ: sample standard deviation over receivers × repeats; sender CPU over repeats) and cases.csv (delay, lost: Σ over receivers and repeats, from each receiver's loss waterfall).</p>");
    s
}

fn series_name(node: &str, rep: u32, repeats: u32) -> String {
    if repeats > 1 { format!("{node} #{rep}") } else { node.to_string() }
}

/// The case's figures: throughput and loss over time, jitter, waterfall, heat matrix.
fn case_figures(c: &CaseData) -> Vec<String> {
    let nodes = c.receivers();
    let repeats = c.recvs.iter().map(|r| r.repeat).max().unwrap_or(1);
    let col = |node: &str| svg::colour(nodes.iter().position(|n| n == node).unwrap_or(0));
    let counter = c.recvs.first().map(|r| r.counter.clone()).unwrap_or_default();
    let mut figs = Vec::new();
    let no_intervals = c.recvs.iter().all(|r| r.intervals.is_empty());
    if no_intervals {
        figs.push("<p class=\"note\">No interval lines in this run's raw files (receivers ran with -i 0): no plots over time.</p>".into());
    } else {
        figs.extend(interval_figures(c, &col, &counter, repeats));
    }
    figs.push(jitter_figure(c, &nodes, &col));
    if let Some(f) = delay_figure(c, &nodes, &col, &counter, repeats) {
        figs.push(f);
    }
    if let Some(f) = percentile_figure(c, counter.as_str(), repeats) {
        figs.push(f);
    }
    if let Some(f) = percentiles_over_time(c, &col, repeats) {
        figs.push(f);
    }
    figs.push(waterfall_figure(c, &nodes, repeats));
    if !no_intervals {
        figs.push(loss_heat_figure(c, repeats));
    }
    figs
}

/// A `<figure>` of an SVG chart with its caption.
fn figure(svg: String, cap: String) -> String {
    format!("<figure>{svg}<figcaption>{}</figcaption></figure>", esc(&cap))
}

/// The throughput and the loss per receiver over time, one point per interval report.
fn interval_figures(c: &CaseData, col: &dyn Fn(&str) -> &'static str, counter: &str, repeats: u32) -> [String; 2] {
    let series = |f: &dyn Fn(&super::Interval) -> f64| -> Vec<Series> {
        c.recvs
            .iter()
            .map(|r| Series {
                name: series_name(&r.node, r.repeat, repeats),
                colour: col(&r.node),
                dashed: r.repeat > 1,
                points: r.intervals.iter().map(|iv| (iv.end_s, f(iv))).collect(),
            })
            .collect()
    };
    [
        figure(
            svg::line_chart("Throughput per receiver", "seconds since the receiver started", "Mbit/s", &series(&|iv| iv.rate_bps / 1e6)),
            format!("Receivers' {counter} counter, one point per interval report; dashed: repeats after the first."),
        ),
        figure(
            svg::line_chart("Loss per receiver", "seconds since the receiver started", "loss %", &series(&|iv| iv.loss_pct().unwrap_or(0.0))),
            "Datagrams lost in each interval, % of those the interval accounts for.".into(),
        ),
    ]
}

/// The jitter of each receiver, one dot per repeat.
fn jitter_figure(c: &CaseData, nodes: &[String], col: &dyn Fn(&str) -> &'static str) -> String {
    let strip: Vec<svg::StripRow> = nodes
        .iter()
        .map(|n| {
            let vals = c
                .recvs
                .iter()
                .filter(|r| &r.node == n)
                .filter_map(|r| r.row.num("jitter_us").map(|j| (j, format!("{n} repeat {}: {} µs", r.repeat, r.row.get("jitter_us")))))
                .collect();
            (n.clone(), col(n), vals)
        })
        .collect();
    figure(
        svg::strip_chart("Jitter per receiver and repeat", "jitter µs (RFC 3550)", &strip),
        "One dot per repeat (cases.csv jitter_us).".into(),
    )
}

/// The one-way delay distribution per receiver, summed over repeats; None without delay histograms.
fn delay_figure(
    c: &CaseData,
    nodes: &[String],
    col: &dyn Fn(&str) -> &'static str,
    counter: &str,
    repeats: u32,
) -> Option<String> {
    let mut buckets: Vec<u64> = c.recvs.iter().flat_map(|r| r.delay_hist.iter().map(|b| b.0)).collect();
    buckets.sort();
    buckets.dedup();
    if buckets.is_empty() {
        return None;
    }
    let groups: Vec<svg::StripRow> = nodes
        .iter()
        .map(|n| {
            let count = |ge: u64| -> u64 {
                c.recvs.iter().filter(|r| &r.node == n).flat_map(|r| r.delay_hist.iter()).filter(|b| b.0 == ge).map(|b| b.1).sum()
            };
            let total: u64 = buckets.iter().map(|&b| count(b)).sum();
            let vals = buckets
                .iter()
                .map(|&ge| {
                    let k = count(ge);
                    let pct = if total > 0 { 100.0 * k as f64 / total as f64 } else { 0.0 };
                    (pct, format!("{n}, {}: {k} datagrams ({pct:.1} %)", bucket_range(ge)))
                })
                .collect();
            (n.clone(), col(n), vals)
        })
        .collect();
    let cats: Vec<String> = buckets.iter().map(|&b| format!("≥{}", bucket_short(b))).collect();
    Some(figure(
        svg::grouped_bars("One-way delay distribution per receiver", "delay µs (power-of-two buckets)", "% of datagrams", &cats, &groups),
        format!("The {counter} counter's delay histogram, Σ over {repeats} repeat(s): how the delay varies (the jitter's spread)."),
    ))
}

/// The loss waterfall per receiver (bars and table), summed over repeats; a note when no receiver printed layers.
fn waterfall_figure(c: &CaseData, nodes: &[String], repeats: u32) -> String {
    let with_layers: Vec<&super::RecvRun> = c.recvs.iter().filter(|r| r.layers.is_some()).collect();
    if with_layers.is_empty() {
        return "<p class=\"note\">No loss waterfall: the receivers printed no layers line (no drop tracer).</p>".into();
    }
    let mut rows = Vec::new();
    let mut table = String::from(
        "<table class=\"waterfall\"><tr><th>receiver</th><th>expected</th><th>lost on the path</th><th>reached the driver</th><th>kernel dropped</th><th>socket dropped</th><th>unread at close</th><th>read</th><th>adds up</th></tr>",
    );
    for n in nodes {
        let mine: Vec<&serde_json::Value> = with_layers.iter().filter(|r| &r.node == n).filter_map(|r| r.layers.as_ref()).collect();
        if mine.is_empty() {
            continue;
        }
        let sum = |k: &str| mine.iter().map(|l| l[k].as_u64().unwrap_or(0)).sum::<u64>();
        let adds = mine.iter().all(|l| l["adds_up"].as_bool() == Some(true));
        rows.push((
            n.clone(),
            vec![
                Segment { name: "read", colour: "#4caf50", value: sum("read") },
                Segment { name: "path", colour: "#d62728", value: sum("path_lost") },
                Segment { name: "kernel", colour: "#ff7f0e", value: sum("kernel_dropped") + sum("unspecified") + sum("no_listener") },
                Segment { name: "socket", colour: "#8c564b", value: sum("socket_dropped") },
                Segment { name: "unread", colour: "#9e9e9e", value: sum("unread_at_close") },
                Segment { name: "sunk", colour: "#1f77b4", value: sum("sunk") },
            ],
        ));
        let _ = write!(
            table,
            "<tr><th>{}</th><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(n),
            sum("expected"),
            sum("path_lost"),
            sum("reached_driver"),
            sum("kernel_dropped") + sum("unspecified") + sum("no_listener"),
            sum("socket_dropped"),
            sum("unread_at_close"),
            sum("read"),
            if adds { "yes" } else { "no" }
        );
    }
    table.push_str("</table>");
    format!(
        "<figure>{}{table}<figcaption>{}</figcaption></figure>",
        svg::stacked_bars("Loss waterfall per receiver", &rows),
        esc(&format!(
            "Where every data datagram went (the receivers' layers lines), Σ over {repeats} repeat(s); kernel includes unspecified and no-listener drops."
        ))
    )
}

/// The loss of each receiver's interval reports as a heat matrix (intervals binned to fit).
fn loss_heat_figure(c: &CaseData, repeats: u32) -> String {
    let bin = svg::heat_bin(c.recvs.iter().map(|r| r.intervals.len()).max().unwrap_or(0));
    let rows: Vec<(String, Vec<Cell>)> = c
        .recvs
        .iter()
        .map(|r| {
            let cells = r
                .intervals
                .chunks(bin)
                .map(|ivs| {
                    let lost: u64 = ivs.iter().map(|iv| iv.lost.max(0) as u64).sum();
                    let total = lost + ivs.iter().map(|iv| iv.received).sum::<u64>();
                    (total > 0).then(|| (100.0 * lost as f64 / total as f64, lost, total))
                })
                .collect();
            (series_name(&r.node, r.repeat, repeats), cells)
        })
        .collect();
    let x_label = if bin == 1 { "interval".to_string() } else { format!("interval ({bin} per cell)") };
    figure(
        svg::heat_matrix("Loss: receivers × intervals", &x_label, &rows, bin),
        "Each cell one interval report of one receiver: white no loss, red the most loss seen in this case, grey no traffic.".into(),
    )
}

/// A histogram by bucket top ([`super::bucket_tops`]).
type Tops = Vec<(i64, u64)>;

/// A case's delay and IPDV histograms, each merged over its receivers and repeats (bucket counts added).
fn merged_tops(c: &CaseData) -> (Tops, Tops) {
    let (mut d, mut i) = (Vec::new(), Vec::new());
    for r in &c.recvs {
        super::merge_tops(&mut d, &r.delay_tops);
        super::merge_tops(&mut i, &r.ipdv_tops);
    }
    (d, i)
}

/// `p50 ≤ 20.5 µs, p99 ≤ 65.5 µs, …`: percentiles read from a CDF (bucket tops: upper bounds).
fn pct_text(cdf: &[(f64, f64)]) -> String {
    [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9"), (0.9999, "p99.99")]
        .iter()
        .filter_map(|(q, name)| super::cdf_quantile(cdf, *q).map(|v| format!("{name} ≤ {v:.1} µs")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The percentile curves of a case's one-way delay and IPDV, merged over receivers and repeats.
fn percentile_figure(c: &CaseData, counter: &str, repeats: u32) -> Option<String> {
    let (d, i) = merged_tops(c);
    let (dc, ic) = (super::cdf(&d), super::cdf(&i));
    if dc.is_empty() && ic.is_empty() {
        return None;
    }
    let mut series = Vec::new();
    let mut cap = format!(
        "The {counter} counter's histograms, Σ over the receivers and {repeats} repeat(s); a point per bucket, at its top."
    );
    if !dc.is_empty() {
        let _ = write!(cap, " One-way delay: {}.", pct_text(&dc));
        series.push(Series { name: "one-way delay".into(), colour: svg::colour(0), dashed: false, points: dc });
    }
    if !ic.is_empty() {
        let _ = write!(cap, " IPDV (dashed): {}.", pct_text(&ic));
        series.push(Series { name: "IPDV".into(), colour: svg::colour(1), dashed: true, points: ic });
    }
    Some(format!(
        "<figure>{}<figcaption>{}</figcaption></figure>",
        svg::percentile_chart("Delay percentiles", &series),
        esc(&cap)
    ))
}

/// p50 and p99 of one-way delay per interval, a pair of lines per receiver and repeat (the interval lines'
/// `delay_p50_us`, `delay_p99_us`); None when no interval line carries them (receivers before they did).
fn percentiles_over_time(c: &CaseData, col: &dyn Fn(&str) -> &'static str, repeats: u32) -> Option<String> {
    let mut series = Vec::new();
    for r in &c.recvs {
        for (q, dashed) in [("p99", false), ("p50", true)] {
            let points: Vec<(f64, f64)> = r
                .intervals
                .iter()
                .filter_map(|iv| if q == "p99" { iv.delay_p99_us } else { iv.delay_p50_us }.map(|v| (iv.end_s, v)))
                .collect();
            if !points.is_empty() {
                let name = format!("{} {q}", series_name(&r.node, r.repeat, repeats));
                series.push(Series { name, colour: col(&r.node), dashed, points });
            }
        }
    }
    if series.is_empty() {
        return None;
    }
    Some(format!(
        "<figure>{}<figcaption>{}</figcaption></figure>",
        svg::line_chart("Delay p50 and p99 per interval", "seconds since the receiver started", "µs", &series),
        esc(
            "One-way delay percentiles of each interval alone (the interval lines' delay_p99_us, solid, and \
             delay_p50_us, dashed), a pair of lines per receiver and repeat."
        )
    ))
}

/// Both runs' percentile curves of one shared case on one chart: one-way delay solid, IPDV dashed.
fn compare_percentiles(a: &RunData, ca: &CaseData, b: &RunData, cb: &CaseData) -> Option<String> {
    let mut series = Vec::new();
    let mut cap = Vec::new();
    for (i, (r, c)) in [(a, ca), (b, cb)].into_iter().enumerate() {
        let (d, ip) = merged_tops(c);
        let (dc, ic) = (super::cdf(&d), super::cdf(&ip));
        if !dc.is_empty() {
            cap.push(format!("{} delay: {}", r.label, pct_text(&dc)));
            let name = format!("{} delay", r.label);
            series.push(Series { name, colour: svg::colour(i), dashed: false, points: dc });
        }
        if !ic.is_empty() {
            cap.push(format!("{} IPDV: {}", r.label, pct_text(&ic)));
            series.push(Series { name: format!("{} IPDV", r.label), colour: svg::colour(i), dashed: true, points: ic });
        }
    }
    if series.is_empty() {
        return None;
    }
    Some(format!(
        "<figure>{}<figcaption>{}</figcaption></figure>",
        svg::percentile_chart(&format!("Delay percentiles: {} vs {}", a.label, b.label), &series),
        esc(&format!("Σ over each run's receivers and repeats; solid one-way delay, dashed IPDV. {}.", cap.join("; ")))
    ))
}

/// `16` µs, `1k`, `2M`: a bucket floor, short.
fn bucket_short(ge: u64) -> String {
    match ge {
        g if g >= 1 << 20 && g % (1 << 20) == 0 => format!("{}Mi", g >> 20),
        g if g >= 1 << 10 && g % (1 << 10) == 0 => format!("{}Ki", g >> 10),
        g => g.to_string(),
    }
}

/// A histogram bucket's range: `32–64 µs` (the next power of two), `0–1 µs`.
fn bucket_range(ge: u64) -> String {
    let next = if ge == 0 { 1 } else { ge * 2 };
    format!("{ge}–{next} µs")
}

fn case_title(c: &CaseData) -> String {
    let s = &c.summary;
    format!(
        "Case {}: {} · {} to {} receivers ({}) · snooping {} · query {} s · injected: {} · {} s × {}",
        c.k,
        s.get("block"),
        s.get("load"),
        s.get("receivers"),
        s.get("placement"),
        s.get("snooping"),
        s.get("query_interval_s"),
        c.injected(),
        s.get("duration_s"),
        s.get("repeats")
    )
}

fn meta_table(r: &RunData) -> String {
    let mut s = String::from("<table class=\"meta\">");
    for (k, v) in meta_rows(r) {
        let _ = write!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    s.push_str("</table>");
    s
}

/// The report of one run.
pub fn run_page(r: &RunData) -> String {
    let mut b = format!("<header><h1>mcblast report: {}</h1>{}{}</header>", esc(&r.label), meta_table(r), plan_details(r));
    let _ = write!(b, "<h2>Headline</h2>{}", headline_table(&[r]));
    let _ = write!(b, "<h2>Cases</h2>{}", cases_table(r));
    for c in &r.cases {
        let _ = write!(
            b,
            "<section class=\"case\" id=\"case-{}\"><h3>{}</h3><p class=\"note\">Receivers' counter attach point: {}</p>{}</section>",
            c.k,
            esc(&case_title(c)),
            esc(&attach(c)),
            case_figures(c).join("")
        );
    }
    page(&format!("mcblast report: {} ({})", r.label, r.dir_name()), &b)
}

/// `b − a`, and relative to a when a ≠ 0; coloured by sign when higher is better (`better_up`) or worse.
fn delta(a: Option<f64>, b: Option<f64>, better_up: bool) -> String {
    match (a, b) {
        (Some(a), Some(b)) => {
            let d = b - a;
            let class = if d.abs() < 1e-12 {
                ""
            } else if (d > 0.0) == better_up {
                "up"
            } else {
                "down"
            };
            let rel = if a != 0.0 { format!(" ({:+.1} %)", d / a * 100.0) } else { String::new() };
            format!("<td class=\"n {class}\">{d:+.3}{rel}</td>")
        }
        _ => "<td class=\"n\">–</td>".into(),
    }
}

const METRICS: &[(&str, &str, bool)] = &[
    ("throughput_mbps", "throughput Mbit/s", true),
    ("loss_pct", "loss %", false),
    ("jitter_us", "jitter µs", false),
    ("sender_cpu_s", "sender CPU s", false),
];

/// Two runs side by side: cases matched by their parameters.
pub fn compare_page(a: &RunData, b: &RunData) -> String {
    let (la, lb) = (esc(&a.label), esc(&b.label));
    let mut body = format!("<header><h1>mcblast comparison: {la} vs {lb}</h1><div class=\"pair\">");
    for r in [a, b] {
        let _ = write!(body, "<div><h4>{}</h4>{}{}</div>", esc(&r.label), meta_table(r), plan_details(r));
    }
    body.push_str("</div></header>");
    let _ = write!(body, "<h2>Headline</h2>{}", headline_table(&[a, b]));
    let pairs = super::pair_cases(a, b);
    let _ = write!(body, "<h2>Cases side by side</h2><div class=\"wide\"><table class=\"compare\"><tr>{PARAM_HEAD}");
    for (_, name, _) in METRICS {
        let _ = write!(body, "<th>{} {la}</th><th>{} {lb}</th><th>Δ {lb} − {la}</th>", esc(name), esc(name));
    }
    body.push_str("</tr>");
    for (ca, cb) in &pairs {
        let (qa, qb) = (ca.summary.get("query_interval_s"), cb.summary.get("query_interval_s"));
        let q = (qa != qb).then(|| format!("{qa} / {qb}"));
        let _ = write!(body, "<tr class=\"case\">{}", param_cells(ca, q.as_deref()));
        for (m, _, up) in METRICS {
            let mean = |c: &CaseData| c.summary.num(&format!("{m}_mean"));
            let _ = write!(body, "<td class=\"n\">{}</td><td class=\"n\">{}</td>{}", pm(ca, m), pm(cb, m), delta(mean(ca), mean(cb), *up));
        }
        body.push_str("</tr>");
    }
    body.push_str("</table></div><p class=\"note\">Cases are matched by load, receivers, snooping, query interval, injected impairment (loss percent, mode and burst, reordering, duplication, seed), placement and duration (and the query interval, unless the platforms' presets set it differently: then shown as A / B); # is the case number in ");
    let _ = write!(body, "{la}. Green: {lb} better, red: {lb} worse.</p>");
    if pairs.is_empty() {
        body.push_str("<p><strong>The two runs have no case in common.</strong></p>");
    }
    for r in [a, b] {
        let only: Vec<String> = r
            .cases
            .iter()
            .filter(|c| !pairs.iter().any(|(pa, pb)| std::ptr::eq(*pa, *c) || std::ptr::eq(*pb, *c)))
            .map(|c| format!("case {}: {}", c.k, c.key()))
            .collect();
        if !only.is_empty() {
            let _ = write!(
                body,
                "<p>Only in {}: {}</p>",
                esc(&r.label),
                only.iter().map(|s| esc(s)).collect::<Vec<_>>().join("; ")
            );
        }
    }
    for (ca, cb) in &pairs {
        let _ = write!(body, "<section class=\"case\" id=\"case-{}\"><h3>{}</h3>", ca.k, esc(&case_title(ca)));
        if let Some(f) = compare_percentiles(a, ca, b, cb) {
            body.push_str(&f);
        }
        body.push_str("<div class=\"pair\">");
        for (r, c) in [(a, ca), (b, cb)] {
            let _ = write!(body, "<div><h4>{} (case {})</h4>{}</div>", esc(&r.label), c.k, case_figures(c).join(""));
        }
        body.push_str("</div></section>");
    }
    page(&format!("mcblast comparison: {} vs {}", a.label, b.label), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn deltas() {
        assert_eq!(delta(Some(10.0), Some(9.0), true), "<td class=\"n down\">-1.000 (-10.0 %)</td>");
        assert_eq!(delta(Some(0.0), Some(5.0), false), "<td class=\"n down\">+5.000</td>");
        assert_eq!(delta(Some(2.0), Some(1.0), false), "<td class=\"n up\">-1.000 (-50.0 %)</td>");
        assert_eq!(delta(None, Some(1.0), true), "<td class=\"n\">–</td>");
    }
}
