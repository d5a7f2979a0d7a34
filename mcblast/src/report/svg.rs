//! Inline SVG charts for the report: line charts over time, a strip chart,
//! stacked horizontal bars (the waterfall) and a heat matrix. Plain SVG
//! elements only (no script); every label goes through [`esc`].

use std::fmt::Write;

use super::html::esc;

/// Distinguishable colours, one per receiver (cycled).
pub const PALETTE: &[&str] =
    &["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

pub fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// Number text for axes: no trailing zeros.
fn num(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let s = if x.abs() >= 100.0 { format!("{x:.0}") } else if x.abs() >= 1.0 { format!("{x:.2}") } else { format!("{x:.3}") };
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// About five round tick values from 0 (or `lo`) to at least `hi`.
pub fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 6.0).unwrap_or(10.0 * mag);
    let first = (lo / step).floor() * step;
    let mut v = Vec::new();
    let mut t = first;
    while t < hi + step * 0.999 && v.len() < 12 {
        v.push(t);
        t += step;
    }
    v
}

/// One line of a line chart.
pub struct Series {
    pub name: String,
    pub colour: &'static str,
    pub dashed: bool,
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 560.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 110.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 40.0;

fn open(w: f64, h: f64, class: &str, title: &str) -> String {
    format!(
        "<svg class=\"{class}\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\"><title>{}</title>\
         <rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#fff\"/>",
        esc(title)
    )
}

/// A chart of width [`W`] opened with its title text and the y axis: a grid
/// line and a label at each of the ticks `yt` (`sy` maps a value to its y,
/// `pw` is the plot's width).
fn open_with_y_grid(h: f64, class: &str, title: &str, yt: &[f64], pw: f64, sy: impl Fn(f64) -> f64) -> String {
    let marks: Vec<(f64, String)> = yt.iter().map(|&t| (t, num(t))).collect();
    open_with_y_marks(h, class, title, &marks, pw, sy)
}

/// As [`open_with_y_grid`], each grid line with its own label.
fn open_with_y_marks(h: f64, class: &str, title: &str, marks: &[(f64, String)], pw: f64, sy: impl Fn(f64) -> f64) -> String {
    let mut s = open(W, h, class, title);
    let _ = write!(s, "<text x=\"{LEFT}\" y=\"15\" class=\"t\">{}</text>", esc(title));
    for (t, label) in marks {
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"yl\">{label}</text>",
            LEFT + pw,
            LEFT - 4.0,
            sy(*t) + 4.0,
            y = sy(*t)
        );
    }
    s
}

/// The series as polylines, each point mapped to the chart by `at`.
fn polylines(s: &mut String, series: &[Series], at: impl Fn((f64, f64)) -> (f64, f64)) {
    for se in series {
        let pts: Vec<String> = se.points.iter().map(|&p| at(p)).map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let dash = if se.dashed { " stroke-dasharray=\"5 3\"" } else { "" };
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\"{dash} points=\"{}\"><title>{}</title></polyline>",
            se.colour,
            pts.join(" "),
            esc(&se.name)
        );
    }
}

/// The legend on the right of a plot `pw` wide: a line of each (name, colour, dashed) and its name.
fn line_legend(s: &mut String, legend: &[(&str, &str, bool)], pw: f64) {
    for (i, (name, colour, dashed)) in legend.iter().enumerate() {
        let ly = TOP + 4.0 + i as f64 * 14.0;
        let lx = LEFT + pw + 10.0;
        let dash = if *dashed { " stroke-dasharray=\"5 3\"" } else { "" };
        let _ = write!(
            s,
            "<line x1=\"{lx:.1}\" x2=\"{:.1}\" y1=\"{ly:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/><text x=\"{:.1}\" y=\"{:.1}\" class=\"lg\">{}</text>",
            lx + 18.0,
            lx + 22.0,
            ly + 4.0,
            esc(name)
        );
    }
}

/// The x and y axis labels of a plot `pw` × `ph` in a chart `h` high.
fn axis_labels(s: &mut String, x_label: &str, y_label: &str, pw: f64, ph: f64, h: f64) {
    let _ = write!(s, "<text x=\"{:.1}\" y=\"{:.1}\" class=\"xl\">{}</text>", LEFT + pw / 2.0, h - 6.0, esc(x_label));
    let _ = write!(
        s,
        "<text transform=\"translate(12 {:.1}) rotate(-90)\" class=\"xl\">{}</text>",
        TOP + ph / 2.0,
        esc(y_label)
    );
}

/// A line chart: x and y axes from 0 to the data's maxima, a legend on the
/// right naming each colour once (series of one colour are one receiver's repeats).
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let mut legend: Vec<(&str, &str)> = Vec::new();
    for se in series {
        if !legend.iter().any(|l| l.1 == se.colour) {
            legend.push((se.name.split(" #").next().unwrap_or(&se.name), se.colour));
        }
    }
    let h = (TOP + 14.0 * legend.len() as f64 + 10.0).max(240.0);
    let (pw, ph) = (W - LEFT - RIGHT, h - TOP - BOTTOM);
    let xmax = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(0.0, f64::max).max(1e-9);
    let ymax = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max);
    let yt = ticks(0.0, if ymax > 0.0 { ymax } else { 1.0 });
    let xt = ticks(0.0, xmax);
    let (xtop, ytop) = (*xt.last().unwrap(), *yt.last().unwrap());
    let sx = |x: f64| LEFT + x / xtop * pw;
    let sy = |y: f64| TOP + ph - y / ytop * ph;
    let mut s = open_with_y_grid(h, "chart line", title, &yt, pw, sy);
    for &t in &xt {
        let _ = write!(s, "<text x=\"{:.1}\" y=\"{:.1}\" class=\"xl\">{}</text>", sx(t), TOP + ph + 14.0, num(t));
    }
    let _ = write!(
        s,
        "<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{:.1}\" class=\"axis\"/><line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" class=\"axis\"/>",
        TOP + ph,
        LEFT + pw,
        TOP + ph,
        TOP + ph
    );
    axis_labels(&mut s, x_label, y_label, pw, ph, h);
    polylines(&mut s, series, |(x, y)| (sx(x), sy(y)));
    let legend: Vec<(&str, &str, bool)> = legend.into_iter().map(|(n, c)| (n, c, false)).collect();
    line_legend(&mut s, &legend, pw);
    s.push_str("</svg>");
    s
}

/// The top of a percentile chart's "nines" axis: 99.99 % (values above it are drawn there).
pub const NINES_TOP: f64 = 4.0;

/// A fraction of the values on the "nines" axis: −log10(1 − F), so 90 % is 1, 99 % 2, 99.9 % 3, 99.99 % 4.
pub fn nines(f: f64) -> f64 {
    if f >= 1.0 { NINES_TOP } else { (-(1.0 - f.max(0.0)).log10()).min(NINES_TOP) }
}

/// A percentile chart: each series' points are (value µs, fraction of the values up to it), drawn with x on a log
/// scale (µs) and y on the "nines" axis ([`nines`]) labelled p50 … p99.99, so the tail is as visible as the body.
pub fn percentile_chart(title: &str, series: &[Series]) -> String {
    let mut legend: Vec<(&str, &str, bool)> = Vec::new();
    for se in series {
        if !legend.iter().any(|l| l.0 == se.name) {
            legend.push((&se.name, se.colour, se.dashed));
        }
    }
    let h = (TOP + 14.0 * legend.len() as f64 + 10.0).max(240.0);
    let (pw, ph) = (W - LEFT - RIGHT, h - TOP - BOTTOM);
    let xs = || series.iter().flat_map(|s| s.points.iter().map(|p| p.0.max(0.1)));
    let lo = xs().fold(f64::INFINITY, f64::min);
    let hi = xs().fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() { (lo.log10().floor(), hi.log10().ceil()) } else { (0.0, 1.0) };
    let hi = if hi <= lo { lo + 1.0 } else { hi };
    let sx = |x: f64| LEFT + (x.max(0.1).log10() - lo) / (hi - lo) * pw;
    let sy = |n: f64| TOP + ph - n / NINES_TOP * ph;
    // no label at 0: p50 sits just above it
    let marks = [(0.0, ""), (nines(0.5), "p50"), (1.0, "p90"), (2.0, "p99"), (3.0, "p99.9"), (4.0, "p99.99")];
    let marks: Vec<(f64, String)> = marks.iter().map(|&(n, l)| (n, l.to_string())).collect();
    let mut s = open_with_y_marks(h, "chart pct", title, &marks, pw, sy);
    let mut e = lo;
    while e <= hi + 1e-9 {
        let x = 10f64.powf(e);
        let _ = write!(
            s,
            "<line x1=\"{v:.1}\" x2=\"{v:.1}\" y1=\"{TOP}\" y2=\"{:.1}\" class=\"grid\"/><text x=\"{v:.1}\" y=\"{:.1}\" class=\"xl\">{}</text>",
            TOP + ph,
            TOP + ph + 14.0,
            num(x),
            v = sx(x)
        );
        e += 1.0;
    }
    axis_labels(&mut s, "µs (log scale)", "percentile", pw, ph, h);
    polylines(&mut s, series, |(x, f)| (sx(x), sy(nines(f))));
    line_legend(&mut s, &legend, pw);
    s.push_str("</svg>");
    s
}

/// A row of a strip chart or a group of bars: label, colour, (value, tooltip) per dot or bar.
pub type StripRow = (String, &'static str, Vec<(f64, String)>);

/// A strip chart: one row per label, a dot per value (with its text as tooltip).
pub fn strip_chart(title: &str, x_label: &str, rows: &[StripRow]) -> String {
    let row_h = 22.0;
    let h = TOP + BOTTOM + row_h * rows.len().max(1) as f64;
    let pw = W - LEFT - 30.0;
    let xmax = rows.iter().flat_map(|r| r.2.iter().map(|v| v.0)).fold(0.0, f64::max);
    let xt = ticks(0.0, if xmax > 0.0 { xmax } else { 1.0 });
    let xtop = *xt.last().unwrap();
    let sx = |x: f64| LEFT + x / xtop * pw;
    let mut s = open(W, h, "chart strip", title);
    let _ = write!(s, "<text x=\"{LEFT}\" y=\"15\" class=\"t\">{}</text>", esc(title));
    let bottom = TOP + row_h * rows.len().max(1) as f64;
    for &t in &xt {
        let _ = write!(
            s,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{bottom:.1}\" class=\"grid\"/><text x=\"{x:.1}\" y=\"{:.1}\" class=\"xl\">{}</text>",
            bottom + 14.0,
            num(t),
            x = sx(t)
        );
    }
    let _ = write!(s, "<text x=\"{:.1}\" y=\"{:.1}\" class=\"xl\">{}</text>", LEFT + pw / 2.0, h - 6.0, esc(x_label));
    for (i, (label, col, vals)) in rows.iter().enumerate() {
        let y = TOP + row_h * (i as f64 + 0.5);
        let _ = write!(s, "<text x=\"{:.1}\" y=\"{:.1}\" class=\"yl\">{}</text>", LEFT - 6.0, y + 4.0, esc(label));
        for (v, text) in vals {
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"5\" fill=\"{col}\" fill-opacity=\"0.75\"><title>{}</title></circle>",
                sx(*v),
                esc(text)
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// Grouped vertical bars: per category (x), a bar per group (y: a share in %),
/// each with its tooltip; the legend names the groups.
pub fn grouped_bars(title: &str, x_label: &str, y_label: &str, cats: &[String], groups: &[StripRow]) -> String {
    let h = (TOP + 14.0 * groups.len() as f64 + 10.0).max(240.0);
    let (pw, ph) = (W - LEFT - RIGHT, h - TOP - BOTTOM);
    let ymax = groups.iter().flat_map(|g| g.2.iter().map(|v| v.0)).fold(0.0, f64::max);
    let yt = ticks(0.0, if ymax > 0.0 { ymax } else { 1.0 });
    let ytop = *yt.last().unwrap();
    let sy = |y: f64| TOP + ph - y / ytop * ph;
    let cw = pw / cats.len().max(1) as f64;
    let bw = (cw * 0.8 / groups.len().max(1) as f64).max(0.5);
    let mut s = open_with_y_grid(h, "chart groups", title, &yt, pw, sy);
    for (i, c) in cats.iter().enumerate() {
        let _ = write!(s, "<text x=\"{:.1}\" y=\"{:.1}\" class=\"xl\">{}</text>", LEFT + cw * (i as f64 + 0.5), TOP + ph + 14.0, esc(c));
    }
    let _ = write!(s, "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" class=\"axis\"/>", LEFT + pw, TOP + ph, TOP + ph);
    let _ = write!(s, "<text x=\"{:.1}\" y=\"{:.1}\" class=\"xl\">{}</text>", LEFT + pw / 2.0, h - 6.0, esc(x_label));
    let _ = write!(s, "<text transform=\"translate(12 {:.1}) rotate(-90)\" class=\"xl\">{}</text>", TOP + ph / 2.0, esc(y_label));
    for (gi, (name, col, vals)) in groups.iter().enumerate() {
        for (i, (v, tip)) in vals.iter().enumerate() {
            if *v <= 0.0 {
                continue;
            }
            let x = LEFT + cw * i as f64 + cw * 0.1 + bw * gi as f64;
            let _ = write!(
                s,
                "<rect x=\"{x:.2}\" y=\"{:.1}\" width=\"{bw:.2}\" height=\"{:.1}\" fill=\"{col}\"><title>{}</title></rect>",
                sy(*v),
                (TOP + ph - sy(*v)).max(0.5),
                esc(tip)
            );
        }
        let ly = TOP + 4.0 + gi as f64 * 14.0;
        let lx = LEFT + pw + 10.0;
        let _ = write!(
            s,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{col}\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"lg\">{}</text>",
            ly - 5.0,
            lx + 14.0,
            ly + 4.0,
            esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

/// One segment of a stacked bar.
pub struct Segment {
    pub name: &'static str,
    pub colour: &'static str,
    pub value: u64,
}

/// Stacked horizontal bars, one per row, each scaled to the largest row total;
/// the legend lists the segments of the first row.
pub fn stacked_bars(title: &str, rows: &[(String, Vec<Segment>)]) -> String {
    let row_h = 22.0;
    let legend_h = 18.0;
    let h = TOP + legend_h + 10.0 + row_h * rows.len().max(1) as f64;
    let pw = W - LEFT - 30.0;
    let max = rows.iter().map(|r| r.1.iter().map(|s| s.value).sum::<u64>()).max().unwrap_or(0).max(1) as f64;
    let mut s = open(W, h, "chart bars", title);
    let _ = write!(s, "<text x=\"{LEFT}\" y=\"15\" class=\"t\">{}</text>", esc(title));
    if let Some((_, segs)) = rows.first() {
        let mut lx = LEFT;
        for sg in segs {
            let _ = write!(
                s,
                "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"lg\">{}</text>",
                TOP - 2.0,
                sg.colour,
                lx + 13.0,
                TOP + 7.0,
                esc(sg.name)
            );
            lx += 22.0 + 6.2 * sg.name.len() as f64;
        }
    }
    for (i, (label, segs)) in rows.iter().enumerate() {
        let y = TOP + legend_h + row_h * i as f64;
        let _ = write!(s, "<text x=\"{:.1}\" y=\"{:.1}\" class=\"yl\">{}</text>", LEFT - 6.0, y + 14.0, esc(label));
        let mut x = LEFT;
        for sg in segs.iter().filter(|sg| sg.value > 0) {
            let w = sg.value as f64 / max * pw;
            let _ = write!(
                s,
                "<rect x=\"{x:.2}\" y=\"{y:.1}\" width=\"{:.2}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {} {}</title></rect>",
                w.max(1.0),
                row_h - 6.0,
                sg.colour,
                esc(label),
                esc(sg.name),
                sg.value
            );
            x += w;
        }
    }
    s.push_str("</svg>");
    s
}

/// White (0 %) to red (≥ `full` %).
fn heat_colour(pct: f64, full: f64) -> String {
    let f = (pct / full).clamp(0.0, 1.0);
    let g = (255.0 - 200.0 * f).round() as u8;
    let b = (255.0 - 215.0 * f).round() as u8;
    if pct > 0.0 && f < 0.08 {
        // any loss at all is visible
        return "#fde0c8".into();
    }
    format!("#ff{g:02x}{b:02x}")
}

/// A cell of the heat matrix: (loss %, lost, datagrams accounted) or None (no traffic).
pub type Cell = Option<(f64, u64, u64)>;

/// Most columns of the heat matrix: longer runs put `bin` intervals in a cell.
pub const HEAT_COLUMNS: usize = 120;

/// Intervals per cell so that `n` intervals fit [`HEAT_COLUMNS`].
pub fn heat_bin(n: usize) -> usize {
    n.div_ceil(HEAT_COLUMNS).max(1)
}

/// Which intervals cell `j` holds, 1-based: `3` or `121–240`.
fn cell_span(j: usize, bin: usize) -> String {
    if bin == 1 { format!("interval {}", j + 1) } else { format!("intervals {}–{}", j * bin + 1, (j + 1) * bin) }
}

/// Rows × columns of coloured cells (each `bin` intervals); the scale's top is the largest loss % seen.
pub fn heat_matrix(title: &str, x_label: &str, rows: &[(String, Vec<Cell>)], bin: usize) -> String {
    let cols = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(1);
    let row_h = 16.0;
    let pw = W - LEFT - 30.0;
    let cw = (pw / cols as f64).min(40.0);
    let h = TOP + BOTTOM + row_h * rows.len().max(1) as f64;
    let full = rows.iter().flat_map(|r| r.1.iter().flatten().map(|c| c.0)).fold(0.0, f64::max).max(1e-9);
    let mut s = open(W, h, "chart heat", title);
    let _ = write!(s, "<text x=\"{LEFT}\" y=\"15\" class=\"t\">{} (red = {}&#160;%)</text>", esc(title), num(full));
    for (i, (label, cells)) in rows.iter().enumerate() {
        let y = TOP + row_h * i as f64;
        let _ = write!(s, "<text x=\"{:.1}\" y=\"{:.1}\" class=\"yl\">{}</text>", LEFT - 6.0, y + 12.0, esc(label));
        for (j, c) in cells.iter().enumerate() {
            let x = LEFT + cw * j as f64;
            let (fill, tip) = match c {
                None => ("#eeeeee".to_string(), format!("{label}, {}: no traffic", cell_span(j, bin))),
                Some((p, lost, total)) => {
                    (heat_colour(*p, full), format!("{label}, {}: {lost} of {total} lost ({p:.3} %)", cell_span(j, bin)))
                }
            };
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\" stroke=\"#d0d0d0\"><title>{}</title></rect>",
                cw,
                row_h,
                esc(&tip)
            );
        }
    }
    let bottom = TOP + row_h * rows.len().max(1) as f64;
    let step = (cols / 10).max(1);
    for j in (0..cols).step_by(step) {
        let _ = write!(s, "<text x=\"{:.1}\" y=\"{:.1}\" class=\"xl\">{}</text>", LEFT + cw * (j as f64 + 0.5), bottom + 14.0, j * bin + 1);
    }
    let _ = write!(s, "<text x=\"{:.1}\" y=\"{:.1}\" class=\"xl\">{}</text>", LEFT + pw / 2.0, h - 6.0, esc(x_label));
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_ticks() {
        assert_eq!(ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(0.0, 9.5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(0.0, 0.37);
        assert_eq!(t.first(), Some(&0.0));
        assert!(*t.last().unwrap() >= 0.37 && t.len() <= 7, "{t:?}");
    }

    #[test]
    fn labels_are_escaped() {
        let s = line_chart("<t>", "x&", "y", &[Series { name: "<r1>".into(), colour: "#000", dashed: false, points: vec![(1.0, 2.0)] }]);
        assert!(s.contains("&lt;t&gt;") && s.contains("x&amp;") && s.contains("&lt;r1&gt;"));
        assert!(!s.contains("<r1>"));
    }

    #[test]
    fn nines_axis() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(0.9) - 1.0).abs() < 1e-9 && (nines(0.999) - 3.0).abs() < 1e-9);
        assert_eq!(nines(1.0), NINES_TOP);
        let c = percentile_chart(
            "d",
            &[Series { name: "delay".into(), colour: "#000", dashed: false, points: vec![(1.0, 0.5), (100.0, 1.0)] }],
        );
        assert_eq!(c.matches("<polyline").count(), 1);
        assert!(c.contains(">p50</text>") && c.contains(">p99.99</text>") && c.contains(">100</text>"));
    }

    #[test]
    fn heat_bins() {
        assert_eq!((heat_bin(0), heat_bin(5), heat_bin(120), heat_bin(121), heat_bin(3600)), (1, 1, 1, 2, 30));
        assert_eq!(cell_span(2, 1), "interval 3");
        assert_eq!(cell_span(1, 30), "intervals 31–60");
    }

    #[test]
    fn heat_scale() {
        assert_eq!(heat_colour(0.0, 5.0), "#ffffff");
        assert_eq!(heat_colour(5.0, 5.0), "#ff3728");
        assert_eq!(heat_colour(0.1, 5.0), "#fde0c8");
    }
}
