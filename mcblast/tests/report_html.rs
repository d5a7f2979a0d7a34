//! `report.html` and `mcblast report`: the page is rendered from a run
//! directory (the committed fixtures, two real `mcblast run` outputs of the
//! same tiny plan with the TGW and OVN presets, and a fresh run on the lab)
//! and checked in headless Chromium: a screenshot of the requested size that
//! is not blank, and the rendered DOM holding the run's own numbers (read
//! here from the run's files, independently of the report code).
//! Chromium comes from `cargo xtask setup` (Debian's chromium).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{BIN, TempDir, lab_prefix, mcblast_run, serial, wait_bounded};

const NEEDS: &str = "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF) for namespaces and XDP";
const W: u32 = 1280;
const H: u32 = 3000;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/report").join(name)
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mcblast-report-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn mcblast(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run mcblast")
}

/// A CSV file as rows of name -> value.
fn csv(path: &Path) -> Vec<HashMap<String, String>> {
    let mut r = ::csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header: Vec<String> = r.headers().expect("header").iter().map(String::from).collect();
    r.records().map(|rec| header.iter().cloned().zip(rec.expect("a CSV row").iter().map(String::from)).collect()).collect()
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs Debian's chromium headless with a throwaway HOME and profile, bounded in time.
fn chromium(work: &Path, args: &[String]) -> Output {
    let home = work.join("chromium-home");
    std::fs::create_dir_all(&home).unwrap();
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", home.join("profile").display()))
        .args(args)
        .env("HOME", &home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium is not installed: run `cargo xtask setup` (Debian package chromium)");
    let out_reader = {
        let mut so = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = std::io::Read::read_to_end(&mut so, &mut v);
            v
        })
    };
    let status = wait_bounded(
        &mut child,
        Duration::from_secs(120),
        Duration::from_millis(100),
        "chromium did not finish within 120 s",
    );
    let mut stderr = Vec::new();
    let _ = std::io::Read::read_to_end(&mut child.stderr.take().unwrap(), &mut stderr);
    Output { status, stdout: out_reader.join().unwrap(), stderr }
}

fn url(p: &Path) -> String {
    format!("file://{}", p.canonicalize().unwrap().display())
}

/// Screenshot of the page; asserts a valid PNG of W × H that is not blank
/// and shows `colours` (the receivers' plot colours, the waterfall's red).
fn screenshot(work: &Path, page: &Path, png_out: &Path, colours: &[[u8; 3]]) {
    let o = chromium(work, &[format!("--screenshot={}", png_out.display()), format!("--window-size={W},{H}"), url(page)]);
    assert!(o.status.success(), "chromium --screenshot failed: {}", String::from_utf8_lossy(&o.stderr));
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png_out).expect("screenshot written")));
    let mut rd = dec.read_info().expect("a valid PNG");
    let mut buf = vec![0; rd.output_buffer_size()];
    let info = rd.next_frame(&mut buf).expect("PNG frame");
    assert_eq!((info.width, info.height), (W, H), "the size requested");
    let ch = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        t => panic!("unexpected PNG colour type {t:?}"),
    };
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let px = &buf[..info.buffer_size()];
    let mut distinct = std::collections::HashSet::new();
    let mut non_white = 0usize;
    let mut seen = vec![0usize; colours.len()];
    for p in px.chunks_exact(ch) {
        let rgb = [p[0], p[1], p[2]];
        distinct.insert(rgb);
        if rgb != [255, 255, 255] {
            non_white += 1;
        }
        for (i, c) in colours.iter().enumerate() {
            if rgb == *c {
                seen[i] += 1;
            }
        }
    }
    let total = (W * H) as usize;
    assert!(non_white * 100 > total * 3, "mostly blank: {non_white} of {total} pixels not white");
    assert!(distinct.len() > 50, "only {} distinct colours", distinct.len());
    for (c, n) in colours.iter().zip(&seen) {
        assert!(*n > 20, "colour {c:?} drawn on {n} pixels only");
    }
}

/// The DOM as Chromium rendered it.
fn dom(work: &Path, page: &Path) -> String {
    let o = chromium(work, &["--dump-dom".to_string(), url(page)]);
    assert!(o.status.success(), "chromium --dump-dom failed: {}", String::from_utf8_lossy(&o.stderr));
    let d = String::from_utf8(o.stdout).unwrap();
    assert!(d.contains("</html>"), "not a whole DOM: {}", &d[..d.len().min(300)]);
    d
}

/// The `n`-th element text from `open` to the next `close`.
fn nth<'a>(s: &'a str, open: &str, close: &str, n: usize) -> &'a str {
    let start = s.match_indices(open).nth(n).unwrap_or_else(|| panic!("no {open} #{n}")).0;
    let end = s[start..].find(close).unwrap() + start;
    &s[start..end]
}

/// `mean ± sd` of a summary.csv metric; the mean alone when sd is empty (one sample).
fn pm(s: &HashMap<String, String>, m: &str) -> String {
    let (mean, sd) = (&s[&format!("{m}_mean")], &s[&format!("{m}_sd")]);
    if sd.is_empty() { mean.clone() } else { format!("{mean} ± {sd}") }
}

/// Checks one run's page (source or rendered DOM) against the run directory's own files.
fn check_run_numbers(page: &str, dir: &Path) {
    let summary = csv(&dir.join("summary.csv"));
    let cases = csv(&dir.join("cases.csv"));
    // the comparison table: one row per case, with summary.csv's numbers
    for (i, s) in summary.iter().enumerate() {
        let row = nth(page, "<tr class=\"case\">", "</tr>", i);
        for m in ["throughput_mbps", "loss_pct", "jitter_us", "sender_cpu_s"] {
            let want = pm(s, m);
            assert!(row.contains(&want), "case {} row lacks {m} {want}: {row}", s["case"]);
        }
        let path: u64 = cases.iter().filter(|r| r["case"] == s["case"]).map(|r| r["path_lost"].parse::<u64>().unwrap()).sum();
        assert!(row.contains(&format!("<td class=\"n\">{path}</td>")), "case {} path lost {path}: {row}", s["case"]);
    }
    for s in &summary {
        let k: usize = s["case"].parse().unwrap();
        let reps: u32 = s["repeats"].parse().unwrap();
        let rows: Vec<&HashMap<String, String>> = cases.iter().filter(|r| r["case"] == s["case"]).collect();
        let mut by_node: Vec<String> = Vec::new();
        for r in &rows {
            if !by_node.contains(&r["receiver"]) {
                by_node.push(r["receiver"].clone());
            }
        }
        for node in &by_node {
            // the waterfall row: Σ over repeats of the raw layers lines
            let layers: Vec<Value> = (1..=reps)
                .map(|rep| {
                    let l = jsonl(&dir.join("raw").join(format!("c{k:03}-r{rep}-{node}.jsonl")));
                    l.into_iter().find(|v| v["type"] == "summary" && v["counter"] == "layers").expect("layers line")
                })
                .collect();
            let sum = |key: &str| layers.iter().map(|l| l[key].as_u64().unwrap()).sum::<u64>();
            let want = format!(
                "<tr><th>{node}</th><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
                sum("expected"),
                sum("path_lost"),
                sum("reached_driver")
            );
            assert!(page.contains(&want), "case {k}: no waterfall row {want}");
            // the delay distribution: each bucket's datagrams, Σ over repeats of the run's flow
            let mut hist: std::collections::BTreeMap<u64, u64> = Default::default();
            for r in rows.iter().filter(|r| &r["receiver"] == node) {
                let l = jsonl(&dir.join("raw").join(format!("c{k:03}-r{}-{node}.jsonl", r["repeat"])));
                let sm = l.iter().find(|v| v["type"] == "summary" && v["counter"] == "kernel").unwrap();
                for f in sm["flows"].as_array().unwrap().iter().filter(|f| f["run"].to_string() == r["run_id"]) {
                    for (ge, n) in mcblast::report::delay_octaves(&f["delay"]) {
                        *hist.entry(ge).or_default() += n;
                    }
                }
            }
            assert!(!hist.is_empty());
            for (ge, n) in &hist {
                let tip = format!("{node}, {ge}–{} µs: {n} datagrams", if *ge == 0 { 1 } else { ge * 2 });
                assert!(page.contains(&tip), "case {k}: no delay bar {tip}");
            }
            // every interval with traffic is a heat-matrix cell saying its counts
            for rep in 1..=reps {
                let lines = jsonl(&dir.join("raw").join(format!("c{k:03}-r{rep}-{node}.jsonl")));
                let ivs: Vec<&Value> =
                    lines.iter().filter(|v| v["type"] == "interval" && v["counter"] == "kernel").collect();
                assert!(ivs.len() >= 2, "the receivers report intervals");
                for (j, iv) in ivs.iter().enumerate() {
                    let (rx, lost) = (iv["received"].as_u64().unwrap(), iv["lost"].as_i64().unwrap().max(0) as u64);
                    if rx + lost > 0 {
                        let tip = format!(
                            "{node}{}, interval {}: {lost} of {} lost",
                            if reps > 1 { format!(" #{rep}") } else { String::new() },
                            j + 1,
                            rx + lost
                        );
                        assert!(page.contains(&tip), "case {k}: no heat cell {tip}");
                    }
                }
            }
        }
    }
}

/// Counts elements in the rendered DOM.
fn count(s: &str, pat: &str) -> usize {
    s.matches(pat).count()
}

#[test]
fn fixture_report_in_chromium() {
    let _s = serial();
    let work = tmpdir("fixture");
    let _g = TempDir(work.clone());
    let run = work.join("tgw");
    copy_dir(&fixture("tgw"), &run);
    let _ = std::fs::remove_file(run.join("report.html"));
    let o = mcblast(&["report", run.to_str().unwrap()]);
    assert!(o.status.success(), "mcblast report failed: {}", String::from_utf8_lossy(&o.stderr));
    let page = run.join("report.html");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), page.display().to_string());
    let html = std::fs::read_to_string(&page).unwrap();
    // self-contained: no script, no external resource
    for bad in ["<script", "http:", "https:", "<link", "src="] {
        assert!(!html.contains(bad), "the page holds {bad}");
    }
    check_run_numbers(&html, &run);
    let d = dom(&work, &page);
    check_run_numbers(&d, &run);
    let summary = csv(&run.join("summary.csv"));
    let cases = csv(&run.join("cases.csv"));
    // per case: throughput, loss, jitter, delay distribution, delay percentiles, waterfall, heat matrix; a line per
    // receiver and repeat in two charts, and the delay percentile curve (the fixture's flows have no IPDV histogram;
    // its interval lines no percentiles: no chart over time)
    assert_eq!(count(&d, "<svg"), 7 * summary.len());
    assert_eq!(count(&d, "<polyline"), 2 * cases.len() + summary.len());
    assert_eq!(count(&d, "<tr class=\"case\">"), summary.len());
    assert!(d.contains("<h1>mcblast report: TGW</h1>"), "the plan's preset labels the run");
    // jitter dots: one per receiver and repeat, with cases.csv's value
    assert_eq!(count(&d, "<circle"), cases.len());
    for r in &cases {
        assert!(d.contains(&format!("{} repeat {}: {} µs", r["receiver"], r["repeat"], r["jitter_us"])), "{r:?}");
    }
    // r1's blue, r2's orange, r3's green lines and the path-loss red of the waterfall
    screenshot(&work, &page, &work.join("report.png"), &[[0x1f, 0x77, 0xb4], [0xff, 0x7f, 0x0e], [0x2c, 0xa0, 0x2c], [0xd6, 0x27, 0x28]]);
    if let Ok(dest) = std::env::var("MCBLAST_REPORT_PNG") {
        // how docs/report.png is made
        std::fs::copy(work.join("report.png"), dest).unwrap();
    }
}

#[test]
fn text_from_the_run_is_escaped() {
    let work = tmpdir("escape");
    let _g = TempDir(work.clone());
    let run = work.join("run");
    copy_dir(&fixture("tgw"), &run);
    // a block name with markup in it, quoted in the CSVs as `mcblast run` writes it
    for f in ["summary.csv", "cases.csv"] {
        let p = run.join(f);
        let t = std::fs::read_to_string(&p).unwrap().replace(",tiny,", ",\"<i>x</i>,&y\",");
        std::fs::write(&p, t).unwrap();
    }
    let out = work.join("page.html");
    let o = mcblast(&["report", run.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.contains("&lt;i&gt;x&lt;/i&gt;,&amp;y"));
    assert!(!html.contains("<i>"));
    assert!(!run.join("report.html").exists(), "--out is where it goes");
}

#[test]
fn compare_ovn_and_tgw() {
    let _s = serial();
    let work = tmpdir("compare");
    let _g = TempDir(work.clone());
    let (a, b) = (fixture("tgw"), fixture("ovn"));
    let out = work.join("compare.html");
    let o = mcblast(&["report", "--compare", a.to_str().unwrap(), b.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "mcblast report --compare failed: {}", String::from_utf8_lossy(&o.stderr));
    let d = dom(&work, &out);
    assert!(d.contains("<h1>mcblast comparison: TGW vs OVN</h1>"), "labels from the plans' presets");
    let (sa, sb) = (csv(&a.join("summary.csv")), csv(&b.join("summary.csv")));
    assert_eq!(sa.len(), sb.len());
    // the side-by-side table: a row per case (matched), A's and B's numbers, the delta of the means
    for (i, (ra, rb)) in sa.iter().zip(&sb).enumerate() {
        let table = nth(&d, "<table class=\"compare\">", "</table>", 0);
        let tr = nth(table, "<tr class=\"case\">", "</tr>", i);
        for m in ["throughput_mbps", "loss_pct", "jitter_us", "sender_cpu_s"] {
            let (ma, mb): (f64, f64) = (ra[&format!("{m}_mean")].parse().unwrap(), rb[&format!("{m}_mean")].parse().unwrap());
            for r in [ra, rb] {
                let want = pm(r, m);
                assert!(tr.contains(&want), "case {i}: {m} {want} missing: {tr}");
            }
            assert!(tr.contains(&format!("{:+.3}", mb - ma)), "case {i}: delta of {m} missing: {tr}");
        }
    }
    // both runs' plots side by side, each with its own numbers
    let summaries = sa.len() + sb.len();
    // seven per case and side, and per shared case both runs' delay percentiles on one chart
    assert_eq!(count(&d, "<svg"), 7 * summaries + sa.len());
    assert_eq!(count(&d, "<svg class=\"chart pct\""), summaries + sa.len());
    // the headline table: a row per platform
    let head = nth(&d, "<table class=\"headline\">", "</table>", 0);
    assert!(head.contains("<th>TGW</th>") && head.contains("<th>OVN</th>"), "{head}");
    // rows of the two runs' own tables are in the page too (waterfalls, heat cells)
    check_compare_side(&d, &a);
    check_compare_side(&d, &b);
    screenshot(&work, &out, &work.join("compare.png"), &[[0x1f, 0x77, 0xb4], [0xd6, 0x27, 0x28]]);
    // labels given by hand
    let o = mcblast(&[
        "report", "--compare", a.to_str().unwrap(), b.to_str().unwrap(), "--label", "A=AWS", "--label", "B=SCP <OVN>", "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.contains("<h1>mcblast comparison: AWS vs SCP &lt;OVN&gt;</h1>"));
    // a case only one run has is listed, not paired; the same label twice gets the directory names
    let b2 = work.join("b2");
    copy_dir(&b, &b2);
    let text = std::fs::read_to_string(b2.join("summary.csv")).unwrap();
    let kept: Vec<&str> = text.lines().filter(|l| !l.starts_with("2,")).collect();
    std::fs::write(b2.join("summary.csv"), kept.join("\n") + "\n").unwrap();
    let o = mcblast(&[
        "report", "--compare", a.to_str().unwrap(), b2.to_str().unwrap(), "--label", "B=TGW", "--out", out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.contains("<h1>mcblast comparison: TGW (tgw) vs TGW (b2)</h1>"), "labels told apart");
    let table = nth(&html, "<table class=\"compare\">", "</table>", 0);
    assert_eq!(count(table, "<tr class=\"case\">"), 1);
    assert!(html.contains("<p>Only in TGW (tgw): case 2: 10M/1470 rx3 snoop on injected loss 5% spread 2s q120s</p>"), "unpaired case listed");
}

/// The number of points of each polyline in `svg`, in order.
fn polyline_points(svg: &str) -> Vec<usize> {
    let points = |p: &str| p.split("points=\"").nth(1).unwrap().split('"').next().unwrap().split_whitespace().count();
    svg.split("<polyline").skip(1).map(points).collect()
}

/// The fixture with what newer receivers write: per interval its delay p50/p99 (made up, rising), per flow an IPDV
/// histogram. Returns, per raw file name, how many interval lines got percentiles.
fn with_interval_percentiles(run: &Path) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for e in std::fs::read_dir(run.join("raw")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with("-sender.jsonl") {
            continue;
        }
        let mut lines = jsonl(&p);
        let mut j = 0;
        for l in lines.iter_mut() {
            if l["type"] == "interval" && l["counter"] == "kernel" && l["received"].as_u64() > Some(0) {
                l["delay_p50_us"] = serde_json::json!(20.0 + j as f64);
                l["delay_p99_us"] = serde_json::json!(60.0 + 2.0 * j as f64);
                j += 1;
            }
            if l["type"] == "summary" && l["counter"] == "kernel" {
                for f in l["flows"].as_array_mut().unwrap() {
                    f["ipdv"] = serde_json::json!({"count": 8, "histogram_ns": [[0, 5], [2048, 2], [65536, 1]]});
                }
            }
        }
        n.insert(name, j);
        std::fs::write(&p, lines.iter().map(|l| l.to_string() + "\n").collect::<String>()).unwrap();
    }
    n
}

#[test]
fn delay_percentile_plots() {
    let work = tmpdir("percentiles");
    let _g = TempDir(work.clone());
    let run = work.join("tgw");
    copy_dir(&fixture("tgw"), &run);
    let injected = with_interval_percentiles(&run);
    let o = mcblast(&["report", run.to_str().unwrap()]);
    assert!(o.status.success(), "mcblast report failed: {}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    let summary = csv(&run.join("summary.csv"));
    let cases = csv(&run.join("cases.csv"));
    assert_eq!(count(&html, "<svg"), 8 * summary.len(), "per case a percentile chart and a chart over time more");
    for (i, s) in summary.iter().enumerate() {
        let k: usize = s["case"].parse().unwrap();
        let section = nth(&html, "<section class=\"case\"", "</section>", i);
        // the percentile curves: a point per bucket of the histograms merged over receivers and repeats
        let (mut delay, mut ipdv) = (Vec::new(), Vec::new());
        let rows: Vec<&HashMap<String, String>> = cases.iter().filter(|r| r["case"] == s["case"]).collect();
        for r in &rows {
            let l = jsonl(&run.join("raw").join(format!("c{k:03}-r{}-{}.jsonl", r["repeat"], r["receiver"])));
            let sm = l.iter().find(|v| v["type"] == "summary" && v["counter"] == "kernel").unwrap();
            for f in sm["flows"].as_array().unwrap().iter().filter(|f| f["run"].to_string() == r["run_id"]) {
                mcblast::report::merge_tops(&mut delay, &mcblast::report::bucket_tops(&f["delay"]));
                mcblast::report::merge_tops(&mut ipdv, &mcblast::report::bucket_tops(&f["ipdv"]));
            }
        }
        assert!(delay.len() >= 3, "case {k}: the fixture's delays spread over buckets: {delay:?}");
        assert_eq!(ipdv.len(), 3);
        let pct = nth(section, "<svg class=\"chart pct\"", "</svg>", 0);
        assert_eq!(polyline_points(pct), vec![delay.len(), 3], "case {k}: delay then IPDV");
        for label in [">p50</text>", ">p90</text>", ">p99</text>", ">p99.9</text>", ">p99.99</text>", "µs (log scale)"] {
            assert!(pct.contains(label), "case {k}: no {label}");
        }
        assert!(pct.contains("<title>one-way delay</title>") && pct.contains("<title>IPDV</title>"));
        // y rises along each curve (x to the right, the fraction up: SVG y down)
        let first = pct.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        let ys: Vec<f64> = first.split_whitespace().map(|p| p.split(',').nth(1).unwrap().parse().unwrap()).collect();
        assert!(ys.windows(2).all(|w| w[1] <= w[0]), "case {k}: the CDF falls: {ys:?}");
        let cap = nth(section, "Σ over the receivers", "</figcaption>", 0);
        assert!(cap.contains("One-way delay: p50 ≤ "), "{cap}");
        assert!(cap.contains("IPDV (dashed): p50 ≤ 1.0 µs, p99 ≤ 69.6 µs"), "{cap}");
        // over time: a p99 and a p50 line per receiver and repeat, a point per interval with percentiles
        let over = nth(section, "<title>Delay p50 and p99 per interval</title>", "</svg>", 0);
        let want: Vec<usize> = rows
            .iter()
            .flat_map(|r| {
                let n = injected[&format!("c{k:03}-r{}-{}.jsonl", r["repeat"], r["receiver"])];
                [n, n]
            })
            .collect();
        assert!(want.iter().all(|n| *n >= 2), "case {k}: intervals with traffic {want:?}");
        assert_eq!(polyline_points(over), want, "case {k}");
        assert!(over.contains("<title>r1 p99</title>") || over.contains("<title>r1 #1 p99</title>"), "case {k}");
    }
    // --compare: both runs' curves of each shared case on one chart (A's delay and IPDV, B's delay)
    let out = work.join("compare.html");
    let b = fixture("ovn");
    let (r, b, o) = (run.to_str().unwrap(), b.to_str().unwrap(), out.to_str().unwrap());
    let o = mcblast(&["report", "--compare", r, b, "--out", o]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(&out).unwrap();
    assert_eq!(count(&html, "<title>Delay percentiles: TGW vs OVN</title>"), summary.len());
    let both = nth(&html, "<title>Delay percentiles: TGW vs OVN</title>", "</svg>", 0);
    assert_eq!(polyline_points(both).len(), 3, "TGW delay, TGW IPDV, OVN delay");
    for t in ["<title>TGW delay</title>", "<title>TGW IPDV</title>", "<title>OVN delay</title>", ">p99</text>"] {
        assert!(both.contains(t), "no {t}");
    }
}

/// The waterfall rows of one side of a comparison page.
fn check_compare_side(page: &str, dir: &Path) {
    let summary = csv(&dir.join("summary.csv"));
    let cases = csv(&dir.join("cases.csv"));
    for s in &summary {
        let reps: u32 = s["repeats"].parse().unwrap();
        let k: usize = s["case"].parse().unwrap();
        let node = "r1";
        let sum = |key: &str| -> u64 {
            (1..=reps)
                .map(|rep| {
                    let l = jsonl(&dir.join("raw").join(format!("c{k:03}-r{rep}-{node}.jsonl")));
                    l.iter().find(|v| v["type"] == "summary" && v["counter"] == "layers").unwrap()[key].as_u64().unwrap()
                })
                .sum()
        };
        let want = format!("<tr><th>{node}</th><td class=\"n\">{}</td><td class=\"n\">{}</td>", sum("expected"), sum("path_lost"));
        assert!(page.contains(&want), "no waterfall row {want}");
        let lost_csv: u64 =
            cases.iter().filter(|r| r["case"] == s["case"] && r["receiver"] == node).map(|r| r["lost"].parse::<u64>().unwrap()).sum();
        assert_eq!(sum("path_lost"), lost_csv, "the fixture's waterfall and cases.csv agree");
    }
}

#[test]
fn errors_are_one_line() {
    let work = tmpdir("errors");
    let _g = TempDir(work.clone());
    let one_line = |args: &[&str], want: &str| {
        let o = mcblast(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    };
    let w = work.to_str().unwrap();
    one_line(&["report", &format!("{w}/nope")], "is not a directory");
    one_line(&["report", w], "is not a run directory (no summary.csv)");
    std::fs::write(work.join("summary.csv"), mcblast::run::stats::summary_header().join(",") + "\n").unwrap();
    one_line(&["report", w], "cases.csv is missing");
    std::fs::write(work.join("cases.csv"), mcblast::run::stats::cases_header().join(",") + "\n").unwrap();
    one_line(&["report", w], "no finished case");
    // a finished case whose raw file is gone
    let run = work.join("run");
    copy_dir(&fixture("tgw"), &run);
    std::fs::remove_file(run.join("raw/c002-r1-r2.jsonl")).unwrap();
    one_line(&["report", run.to_str().unwrap()], "c002-r1-r2.jsonl is missing");
    let t = fixture("tgw");
    let t = t.to_str().unwrap();
    one_line(&["report", "--compare", t], "--compare takes two run directories");
    one_line(&["report", t, t], "give one run directory");
    one_line(&["report", t, "--label", "A=X"], "--label names the runs of --compare");
    one_line(&["report", "--compare", t, t, "--label", "OVN"], "write A=NAME or B=NAME");
    one_line(&["report"], "RUN_DIR");
}

#[test]
fn run_writes_report_on_the_lab() {
    if common::skip(NEEDS) {
        return;
    }
    let _s = serial();
    let (prefix, _gone) = lab_prefix("rpt");
    let work = tmpdir("run");
    let _g = TempDir(work.clone());
    let plan = work.join("tiny.toml");
    std::fs::write(
        &plan,
        "duration = 1\nrepeats = 1\n[lab]\npreset = \"ovn\"\nfabric = \"vxlan\"\nhosts = 3\nper_host = 1\n\
         [[matrix]]\nname = \"tiny\"\nload = [\"10M/1470\"]\nloss = [0, 5]\n",
    )
    .unwrap();
    let out = work.join("out");
    let o = mcblast_run(&plan, &out, &prefix).output().expect("run mcblast");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "mcblast run failed: {err}");
    let page = out.join("report.html");
    assert!(err.contains(&format!("report in {}", page.display())), "{err}");
    let cases = csv(&out.join("cases.csv"));
    assert_eq!(cases.len(), 2 * 3);
    // ground truth: the sender's count and the injected loss (the lab impairment's every 20th datagram: the 20th, 40th, ...)
    for r in &cases {
        let sent: u64 = r["sent"].parse().unwrap();
        let want = if r["loss_injected_pct"] == "5" { sent / 20 } else { 0 };
        assert_eq!(r["lost"], want.to_string(), "{r:?}");
        let k: usize = r["case"].parse().unwrap();
        let expected_row = format!("<tr><th>{}</th><td class=\"n\">{sent}</td><td class=\"n\">{want}</td>", r["receiver"]);
        let html = std::fs::read_to_string(&page).unwrap();
        let section = nth(&html, &format!("<section class=\"case\" id=\"case-{k}\">"), "</section>", 0);
        assert!(section.contains(&expected_row), "case {k}: no waterfall row {expected_row}");
    }
    let d = dom(&work, &page);
    check_run_numbers(&d, &out);
    assert!(d.contains("<h1>mcblast report: OVN</h1>"));
    // 8 charts per case: with the delay percentiles (delay and IPDV curves) and, from this version's interval lines,
    // delay p50 and p99 over time (two lines per receiver)
    assert_eq!(count(&d, "<svg"), 16);
    assert_eq!(count(&d, "<polyline"), 2 * 6 + 2 * 2 + 2 * 6);
    for k in 1..=2 {
        let section = nth(&d, &format!("<section class=\"case\" id=\"case-{k}\">"), "</section>", 0);
        let over = nth(section, "<title>Delay p50 and p99 per interval</title>", "</svg>", 0);
        assert!(polyline_points(over).iter().all(|n| *n >= 1), "case {k}: {over}");
        let pct = nth(section, "<svg class=\"chart pct\"", "</svg>", 0);
        assert!(pct.contains("<title>one-way delay</title>") && pct.contains("<title>IPDV</title>"), "case {k}");
    }
    screenshot(&work, &page, &work.join("report.png"), &[[0x1f, 0x77, 0xb4], [0xd6, 0x27, 0x28]]);
    assert!(mcblast::lab::Lab::open(&prefix).is_err(), "the run removed its lab");
}

#[test]
fn ctrl_c_report_has_the_finished_cases() {
    if common::skip(NEEDS) {
        return;
    }
    let _s = serial();
    let (prefix, _gone) = lab_prefix("rptc");
    let work = tmpdir("ctrlc");
    let _g = TempDir(work.clone());
    let plan = work.join("three.toml");
    std::fs::write(
        &plan,
        "duration = 1\nrepeats = 1\n[lab]\nhosts = 3\nper_host = 1\n[[matrix]]\nload = [\"10M/1470\"]\nloss = [0, 5, 10]\n",
    )
    .unwrap();
    let out = work.join("out");
    let mut child = mcblast_run(&plan, &out, &prefix)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mcblast");
    // Ctrl-C once the first case is in summary.csv
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rows = std::fs::read_to_string(out.join("summary.csv")).map(|t| t.lines().count()).unwrap_or(0);
        if rows >= 2 {
            break;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the first case did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let status = wait_bounded(
        &mut child,
        Duration::from_secs(60),
        Duration::from_millis(50),
        "mcblast run did not stop within 60 s of SIGINT",
    );
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    let summary = csv(&out.join("summary.csv"));
    assert!((1..3).contains(&summary.len()), "{} finished cases", summary.len());
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html after Ctrl-C");
    assert_eq!(count(&html, "<tr class=\"case\">"), summary.len(), "the finished cases only");
    check_run_numbers(&html, &out);
    assert!(err.contains("report in"), "{err}");
    assert!(mcblast::lab::Lab::open(&prefix).is_err(), "the run removed its lab");
}
