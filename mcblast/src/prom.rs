//! `--prometheus ADDR:PORT`: live counters in the Prometheus text
//! exposition format 0.0.4, served by a minimal HTTP/1.1 server on one
//! thread (std::net only).
//!
//! The server answers `GET /metrics` (200), any other path (404) and any
//! other method (405), one request per connection (`Connection: close`),
//! with a bounded request (8 KiB of head), read and write timeouts, and
//! connections handled one after another. The page is rendered on each
//! scrape by a closure the command hands over; it reads the same shared
//! state the JSON and interval output use (nothing is counted twice).
//!
//! The pages: counters end in `_total` and name their unit, no series is
//! the total of others (so `sum()` never counts twice), both carry
//! `mcblast_build_info`, the receiver's one-way delay is a histogram whose
//! `le` bounds come from [`le_buckets`], and the sender's datagrams
//! are per flow with the receivers' flow labels (`run`, `flow`, `group`).

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Largest request head accepted (request line and headers).
const MAX_HEAD: usize = 8 << 10;
/// Read and write timeout of one connection.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the idle server checks whether it should stop.
const POLL: Duration = Duration::from_millis(25);
/// Content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (the name ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative `_bucket{le}` counts, `_sum` and `_count`.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

struct Family {
    name: String,
    help: &'static str,
    kind: Kind,
    /// Rendered `name{labels} value` lines.
    samples: Vec<String>,
}

/// One scrape's page: families in the order first added, each with its
/// HELP and TYPE lines before its samples.
#[derive(Default)]
pub struct Page {
    families: Vec<Family>,
}

impl Page {
    /// The family `name` (created on first use with `kind` and `help`).
    fn family(&mut self, name: &str, kind: Kind, help: &'static str) -> &mut Family {
        debug_assert!(valid_name(name), "{name}");
        debug_assert_eq!(kind == Kind::Counter, name.ends_with("_total"), "{name}");
        let i = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(Family { name: name.to_string(), help, kind, samples: Vec::new() });
                self.families.len() - 1
            }
        };
        debug_assert_eq!(self.families[i].kind, kind, "{name}");
        &mut self.families[i]
    }

    /// Adds a sample of family `name` (created on first use with `kind`
    /// and `help`). Counter names must end in `_total`.
    pub fn add(&mut self, name: &str, kind: Kind, help: &'static str, labels: &[(&str, &str)], value: f64) {
        let line = sample(name, labels, value);
        self.family(name, kind, help).samples.push(line);
    }

    /// A counter sample (`name` ends in `_total`).
    pub fn counter(&mut self, name: &str, help: &'static str, labels: &[(&str, &str)], value: u64) {
        self.add(name, Kind::Counter, help, labels, value as f64);
    }

    /// A gauge sample.
    pub fn gauge(&mut self, name: &str, help: &'static str, labels: &[(&str, &str)], value: f64) {
        self.add(name, Kind::Gauge, help, labels, value);
    }

    /// A histogram's samples: `buckets` are (upper bound, count in that
    /// bucket alone) in increasing bound order, the last bound `+Inf`;
    /// they are rendered cumulative, `_count` being the last.
    pub fn histogram(&mut self, name: &str, help: &'static str, labels: &[(&str, &str)], buckets: &[(f64, u64)], sum: f64) {
        debug_assert!(buckets.last().is_some_and(|b| b.0 == f64::INFINITY), "{name}: the last bucket is +Inf");
        let mut lines = Vec::with_capacity(buckets.len() + 2);
        let mut cum = 0u64;
        for &(le, n) in buckets {
            cum += n;
            let le = fmt_value(le);
            let l: Vec<(&str, &str)> = labels.iter().copied().chain([("le", le.as_str())]).collect();
            lines.push(sample(&format!("{name}_bucket"), &l, cum as f64));
        }
        lines.push(sample(&format!("{name}_sum"), labels, sum));
        lines.push(sample(&format!("{name}_count"), labels, cum as f64));
        self.family(name, Kind::Histogram, help).samples.extend(lines);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.families {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help.replace('\\', "\\\\").replace('\n', "\\n"));
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
            for s in &f.samples {
                let _ = writeln!(out, "{s}");
            }
        }
        out
    }
}

/// One `name{labels} value` line (no newline).
fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> String {
    let mut s = name.to_string();
    if !labels.is_empty() {
        s.push('{');
        for (k, (l, v)) in labels.iter().enumerate() {
            debug_assert!(valid_name(l) && !l.contains(':'), "{l}");
            if k > 0 {
                s.push(',');
            }
            let _ = write!(s, "{l}=\"{}\"", escape_label(v));
        }
        s.push('}');
    }
    let _ = write!(s, " {}", fmt_value(value));
    s
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A label value with `\`, `"` and newline escaped.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Integers exactly (below 2^53), others as Go's parser reads them.
fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

/// Live state a command's main loop refreshes when a scrape asks for it,
/// so the scrape sees values as fresh as the loop's own, read the same way.
pub struct Live<T> {
    state: Mutex<LiveState<T>>,
    cv: Condvar,
}

struct LiveState<T> {
    value: T,
    generation: u64,
    wanted: bool,
    /// The final values are in: no more refreshes will come.
    done: bool,
}

impl<T: Clone> Live<T> {
    pub fn new(value: T) -> Arc<Live<T>> {
        Arc::new(Live { state: Mutex::new(LiveState { value, generation: 0, wanted: false, done: false }), cv: Condvar::new() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LiveState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a scrape is waiting for fresh values (the loop then calls [`publish`](Self::publish)).
    pub fn wanted(&self) -> bool {
        self.lock().wanted
    }

    /// Publishes fresh values.
    pub fn publish(&self, value: T) {
        let mut g = self.lock();
        g.value = value;
        g.generation += 1;
        g.wanted = false;
        self.cv.notify_all();
    }

    /// Publishes the final values: later scrapes get them without waiting.
    pub fn finish(&self, value: T) {
        let mut g = self.lock();
        g.value = value;
        g.generation += 1;
        g.wanted = false;
        g.done = true;
        self.cv.notify_all();
    }

    /// Values published after this call, or the last ones after `wait`
    /// (the loop is busy) or once final.
    pub fn fresh(&self, wait: Duration) -> T {
        let mut g = self.lock();
        if !g.done {
            let asked_at = g.generation;
            g.wanted = true;
            let deadline = Instant::now() + wait;
            while !g.done && g.generation == asked_at {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                g = self.cv.wait_timeout(g, left).unwrap_or_else(PoisonError::into_inner).0;
            }
        }
        g.value.clone()
    }
}

/// The running server; dropping it stops the thread.
pub struct MetricsServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Listens on `addr` (errors are one line saying what to do) and serves
/// `render()` at `/metrics` on a thread until the [`MetricsServer`] is dropped.
pub fn serve(addr: SocketAddr, render: impl Fn() -> String + Send + 'static) -> Result<MetricsServer> {
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) if e.kind() == ErrorKind::AddrInUse => {
            bail!("cannot serve --prometheus on {addr}: the address is in use (another exporter?); pick a free port")
        }
        Err(e) if e.kind() == ErrorKind::AddrNotAvailable => bail!(
            "cannot serve --prometheus on {addr}: no interface here has that address; use 127.0.0.1:PORT, 0.0.0.0:PORT or one of this host's addresses"
        ),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            bail!("cannot serve --prometheus on {addr}: permission denied (ports below 1024 need root); pick a port above 1023")
        }
        Err(e) => bail!("cannot serve --prometheus on {addr}: {e}"),
    };
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::Builder::new().name("mcblast-prom".into()).spawn(move || {
        while !s.load(Ordering::Relaxed) {
            match listener.accept() {
                // A broken client only costs its own connection.
                Ok((conn, _)) => {
                    let _ = handle(conn, &render);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    })?;
    Ok(MetricsServer { addr, stop, thread: Some(thread) })
}

/// Reads one request head and answers it.
fn handle(mut conn: TcpStream, render: &dyn Fn() -> String) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return respond(&mut conn, "431 Request Header Fields Too Large", "text/plain", b"request too large\n");
        }
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    match (method, target, version) {
        (Some(m), Some(t), Some(v)) if v.starts_with("HTTP/1.") && parts.next().is_none() => {
            if m != "GET" {
                respond(&mut conn, "405 Method Not Allowed", "text/plain", b"only GET /metrics\n")
            } else if t.split('?').next() != Some("/metrics") {
                respond(&mut conn, "404 Not Found", "text/plain", b"not found: the metrics are at /metrics\n")
            } else {
                respond(&mut conn, "200 OK", CONTENT_TYPE, render().as_bytes())
            }
        }
        _ => respond(&mut conn, "400 Bad Request", "text/plain", b"bad request\n"),
    }
}

fn respond(conn: &mut TcpStream, status: &str, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        r.push_str("Allow: GET\r\n");
    }
    r.push_str("\r\n");
    conn.write_all(r.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}

/// `mcblast_build_info{version,commit} 1` (commit empty when not built from git).
pub fn build_info(p: &mut Page) {
    let commit = crate::version::VERSION.split_once(" (").map_or("", |(_, c)| c.trim_end_matches(')'));
    let l: &[(&str, &str)] = &[("version", env!("CARGO_PKG_VERSION")), ("commit", commit)];
    p.gauge("mcblast_build_info", "The mcblast build serving this page (always 1).", l, 1.0);
}

/// A tracker histogram ([`mcblast_common::hist`]) as the page's buckets:
/// `(le seconds, count)` for every power of two from 2^10 ns (1.024 µs) to
/// 2^36 ns (68.719476736 s), then `+Inf`. These powers of two are bucket
/// boundaries of the tracker's log-linear histogram, so each of its buckets
/// falls in exactly one `le` bucket (the values it holds are below that
/// `le`); the first also holds negative delays (unsynchronised clocks). The
/// one place the page's bounds come from.
pub fn le_buckets(hist: &[u64]) -> Vec<(f64, u64)> {
    use mcblast_common::hist::{OCTAVES, octave, octave_upper_ns};
    let mut out: Vec<(f64, u64)> =
        (0..OCTAVES).map(|o| (octave_upper_ns(o).map_or(f64::INFINITY, |ns| ns as f64 / 1e9), 0)).collect();
    for (b, &n) in hist.iter().enumerate() {
        out[octave(b)].1 += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_groups_samples_under_help_and_type() {
        let mut p = Page::default();
        p.counter("x_total", "Things.", &[("a", "1")], 3);
        p.gauge("y", "A level.\nTwo lines \\ here.", &[], 0.5);
        p.counter("x_total", "Things.", &[("a", "q\"u\\o\nte")], 4);
        p.gauge("z", "Inf.", &[], f64::INFINITY);
        assert_eq!(
            p.render(),
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{a=\"1\"} 3\nx_total{a=\"q\\\"u\\\\o\\nte\"} 4\n\
             # HELP y A level.\\nTwo lines \\\\ here.\n# TYPE y gauge\ny 0.5\n\
             # HELP z Inf.\n# TYPE z gauge\nz +Inf\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let mut p = Page::default();
        let b = [(0.5, 2), (1.0, 0), (f64::INFINITY, 1)];
        p.histogram("d_seconds", "Delay.", &[("f", "1")], &b, 1.75);
        assert_eq!(
            p.render(),
            "# HELP d_seconds Delay.\n# TYPE d_seconds histogram\n\
             d_seconds_bucket{f=\"1\",le=\"0.5\"} 2\nd_seconds_bucket{f=\"1\",le=\"1\"} 2\n\
             d_seconds_bucket{f=\"1\",le=\"+Inf\"} 3\nd_seconds_sum{f=\"1\"} 1.75\nd_seconds_count{f=\"1\"} 3\n"
        );
    }

    #[test]
    fn delay_bounds_are_powers_of_two_on_the_tracker_buckets() {
        use mcblast_common::hist::{BUCKETS, bucket};
        let le: Vec<f64> = le_buckets(&[]).iter().map(|b| b.0).collect();
        assert_eq!(le.len(), 28);
        assert_eq!((le[0], le[1]), (1.024e-6, 2.048e-6));
        assert_eq!((fmt_value(le[0]), fmt_value(le[26])), ("0.000001024".to_string(), "68.719476736".to_string()));
        assert_eq!(le[27], f64::INFINITY);
        // Every value's count lands in the first bucket whose le is above it.
        for ns in [-5i64, 0, 1023, 1024, 1999, 2048, 123_456, 1_000_000, 999_999_999, 68_719_476_735, 86_400_000_000_000] {
            let mut hist = [0u64; BUCKETS];
            hist[bucket(ns)] = 1;
            let got = le_buckets(&hist);
            let j = got.iter().position(|b| b.1 == 1).unwrap();
            assert_eq!(got.iter().map(|b| b.1).sum::<u64>(), 1);
            assert!((ns as f64) / 1e9 < le[j], "{ns} ns under le {}", le[j]);
            assert!(j == 0 || (ns as f64) / 1e9 >= le[j - 1], "{ns} ns above le {}", le[j - 1]);
        }
    }

    #[test]
    fn build_info_names_the_version() {
        let mut p = Page::default();
        build_info(&mut p);
        let page = p.render();
        assert!(page.contains(&format!("mcblast_build_info{{version=\"{}\",commit=\"", env!("CARGO_PKG_VERSION"))), "{page}");
        let line = page.lines().last().unwrap();
        assert!(line.ends_with("\"} 1") && !line.contains(" (") && !line.contains(")\""), "{page}");
    }

    #[test]
    fn names_and_values() {
        assert!(valid_name("mcblast_recv_datagrams_total") && valid_name("_a:b"));
        assert!(!valid_name("1a") && !valid_name("") && !valid_name("a-b"));
        assert_eq!(fmt_value(18446744073709551615u64 as f64), "18446744073709552000");
        assert_eq!(fmt_value(123456789.0), "123456789");
        assert_eq!(fmt_value(f64::NAN), "NaN");
        assert_eq!(fmt_value(-0.25), "-0.25");
    }

    fn request(addr: SocketAddr, req: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(req).unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn serves_metrics_many_times_and_refuses_the_rest() {
        let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let n2 = n.clone();
        let srv = serve("127.0.0.1:0".parse().unwrap(), move || {
            let mut p = Page::default();
            p.counter("scrapes_total", "Scrapes.", &[], n2.fetch_add(1, Ordering::Relaxed) + 1);
            p.render()
        })
        .unwrap();
        for k in 1..=50u64 {
            let r = request(srv.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            let (head, body) = r.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
            assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
            assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
            assert!(body.ends_with(&format!("scrapes_total {k}\n")), "{body}");
        }
        assert!(request(srv.addr, b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        assert!(request(srv.addr, b"GET /metricsx HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 404 "));
        let post = request(srv.addr, b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET"), "{post}");
        assert!(request(srv.addr, b"garbage\r\n\r\n").starts_with("HTTP/1.1 400 "));
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 3 * MAX_HEAD));
        // The server answers once the head is too large, without reading the rest.
        let mut c = TcpStream::connect(srv.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(&big);
        let mut s = String::new();
        let _ = c.read_to_string(&mut s);
        assert!(s.starts_with("HTTP/1.1 431 "), "{s}");
        // A silent client is cut off by the timeout; the next scrape still works.
        let idle = TcpStream::connect(srv.addr).unwrap();
        assert!(request(srv.addr, b"GET /metrics?x=1 HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 "));
        drop(idle);
        assert_eq!(n.load(Ordering::Relaxed), 51);
    }

    #[test]
    fn bind_errors_say_what_to_do() {
        let srv = serve("127.0.0.1:0".parse().unwrap(), String::new).unwrap();
        let e = serve(srv.addr, String::new).err().unwrap().to_string();
        assert!(e.contains("in use") && e.contains("pick a free port"), "{e}");
        let e = serve("192.0.2.77:9464".parse().unwrap(), String::new).err().unwrap().to_string();
        assert!(e.contains("no interface here has that address"), "{e}");
    }

    #[test]
    fn live_values_are_fresh_or_final() {
        let live = Live::new(0u32);
        let l2 = live.clone();
        let t = std::thread::spawn(move || {
            while !l2.wanted() {
                std::thread::sleep(Duration::from_millis(1));
            }
            l2.publish(7);
        });
        assert_eq!(live.fresh(Duration::from_secs(30)), 7);
        t.join().unwrap();
        // Nobody refreshes: the last value after the wait.
        assert_eq!(live.fresh(Duration::from_millis(10)), 7);
        live.finish(9);
        assert!(!live.wanted());
        assert_eq!(live.fresh(Duration::from_secs(30)), 9);
    }
}
