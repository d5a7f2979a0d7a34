//! `mcblast recv --format iperf2 --iperf2-server`: the users' own iperf2
//! server runs beside the kernel counter, on the same traffic, so its
//! Lost/Total can be set against the layers mcblast measures.
//!
//! mcblast starts `iperf -s -u -B GROUP%IFACE -p PORT -l 65507` (plus
//! `--iperf2-arg`s), reads its output, and at the end waits a moment for the
//! report iperf2 prints when a client's FIN arrives; a server that saw no
//! FIN (the client was killed, or the FIN was lost) is interrupted (SIGINT),
//! which makes it print its report up to the highest id it saw.
//!
//! iperf2's accounting (2.1.8, `Reporter.c`): `Total` is the highest id seen,
//! the FIN's included (the FIN of a test of `D` data datagrams is `-(D+1)`),
//! `Lost` the forward gaps minus the late arrivals. So the data datagrams it
//! read are `Total − Lost`, less one for the FIN when it printed the report
//! on its own.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

/// Longest the server may take to start listening.
const READY: Duration = Duration::from_secs(5);

/// The iperf2 server, running.
pub struct Iperf2Server {
    child: Child,
    /// Its output so far, appended line by line by `reader`.
    text: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
    command: String,
}

/// What the iperf2 server reported at the end.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Iperf2Report {
    /// The command line mcblast ran.
    pub command: String,
    /// iperf2's own Lost and Total, summed over its final reports (one per client).
    pub lost: u64,
    pub total: u64,
    /// Its reports: one per client that sent to it.
    pub reports: u64,
    /// Whether it printed them on its own (it saw every client's FIN) or
    /// only when interrupted at the end.
    pub saw_fin: bool,
    /// The data datagrams iperf2 read: Total − Lost, less the FIN it counts.
    pub read: u64,
}

impl Iperf2Server {
    /// Starts `iperf -s` on `group` and `port`, joined on `iface`.
    pub fn start(group: Ipv4Addr, port: u16, iface: &str, extra: &[String]) -> Result<Iperf2Server> {
        let mut args: Vec<String> =
            ["-s", "-u", "-B", &format!("{group}%{iface}"), "-p", &port.to_string(), "-l", "65507"].map(String::from).into();
        args.extend(extra.iter().cloned());
        let command = format!("iperf {}", args.join(" "));
        let mut child = Command::new("iperf")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start iperf for --iperf2-server: install iperf (iperf2), e.g. apt install iperf")?;
        let out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let text = Arc::new(Mutex::new(String::new()));
        let t = text.clone();
        let reader = std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let mut t = t.lock().expect("iperf2 output lock");
                t.push_str(&line);
                t.push('\n');
            }
        });
        let mut server = Iperf2Server { child, text, reader: Some(reader), command };
        server.wait_listening()?;
        Ok(server)
    }

    /// Waits (bounded) until the server has bound and joined: it prints its
    /// receive buffer size once it has.
    fn wait_listening(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY;
        while !self.text.lock().expect("iperf2 output lock").contains("buffer size") {
            if let Some(st) = self.child.try_wait()? {
                bail!("the iperf2 server ({}) exited with {st} before listening", self.command);
            }
            if Instant::now() > deadline {
                bail!("the iperf2 server ({}) did not start listening within {READY:?}", self.command);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits up to `wait` for iperf2's own final report, then interrupts it
    /// so it prints one, and reads it. An error when it printed none.
    pub fn stop(mut self, wait: Duration) -> Result<Iperf2Report> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline && self.child.try_wait()?.is_none() && !self.reported() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let saw_fin = self.reported();
        crate::sys::proc::interrupt(&self.child).context("cannot interrupt the iperf2 server")?;
        let limit = Instant::now() + Duration::from_secs(3);
        while self.child.try_wait()?.is_none() && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let text = self.text.lock().expect("iperf2 output lock").clone();
        let finals = final_reports(&text);
        if finals.is_empty() {
            bail!("the iperf2 server ({}) reported nothing: did an iperf2 client send to it?", self.command);
        }
        let (lost, total) = finals.iter().fold((0, 0), |(l, t), (_, lost, total)| (l + lost, t + total));
        let reports = finals.len() as u64;
        let fins = if saw_fin { reports } else { 0 };
        Ok(Iperf2Report { command: self.command.clone(), lost, total, reports, saw_fin, read: (total - lost.min(total)).saturating_sub(fins) })
    }

    /// Whether its output so far holds a final report (iperf2 prints one
    /// when a client's FIN arrives; no interval reports are asked for).
    fn reported(&self) -> bool {
        !final_reports(&self.text.lock().expect("iperf2 output lock")).is_empty()
    }
}

impl Drop for Iperf2Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each client's last `Lost/Total` line of an iperf2 server's text output,
/// as (`[ ID]`, lost, total).
pub fn final_reports(text: &str) -> Vec<(String, u64, u64)> {
    let mut last: Vec<(String, u64, u64)> = Vec::new();
    for line in text.lines() {
        let Some((id, lost, total)) = lost_total(line) else { continue };
        match last.iter_mut().find(|(i, _, _)| *i == id) {
            Some(slot) => *slot = (id, lost, total),
            None => last.push((id, lost, total)),
        }
    }
    last
}

/// `[  1] 0.0000-1.0014 sec  6.27 MBytes  52.5 Mbits/sec   0.003 ms 0/803 (0%)`: ("1", 0, 803).
fn lost_total(line: &str) -> Option<(String, u64, u64)> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (id, rest) = rest.split_once(']')?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    let at = words.iter().position(|w| w.starts_with('('))?;
    let (lost, total) = words.get(at.checked_sub(1)?)?.split_once('/')?;
    Some((id.trim().to_string(), lost.parse().ok()?, total.parse().ok()?))
}

/// iperf2's loss set against the layers mcblast measured on the same traffic.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Comparison {
    pub role: &'static str,
    pub counter: &'static str,
    #[serde(flatten)]
    pub iperf2: Iperf2Report,
    /// The data datagrams iperf2 missed: the flows' datagrams less what it read.
    pub missed: u64,
    /// FINs that reached this host but not iperf2 (dropped after the
    /// driver): the drop tracer counts a FIN whose header it cannot read (a
    /// full-size datagram's payload sits outside the skb's linear part) as
    /// data, so they are taken out of the layer they fell in.
    pub fins_dropped: u64,
    /// Where mcblast saw iperf2's data datagrams go, by layer.
    pub path_lost: u64,
    pub kernel_dropped: u64,
    pub socket_dropped: u64,
    pub unread_at_close: u64,
    /// The layer that holds all of iperf2's loss ("path", "kernel", "socket",
    /// "none" when it lost nothing), or "several".
    pub layer: &'static str,
    /// Whether the layers add up to iperf2's loss exactly.
    pub adds_up: bool,
    /// The layers' datagrams less iperf2's `missed` (0 when they add up).
    pub difference: i64,
}

/// Compares iperf2's report with the waterfall `l` of the same run, in
/// which the kernel counter saw `ended` flows end (their FINs reach the host).
pub fn compare(r: &Iperf2Report, l: &crate::recv::attrib::Layers, ended: u64) -> Comparison {
    let missed = l.expected.saturating_sub(r.read);
    let fins_dropped = ended.saturating_sub(if r.saw_fin { r.reports } else { 0 });
    // Those the tracer could not tell from data.
    let ends_classed: u64 = l.reasons.iter().map(|x| x.end).sum();
    let mut fins_as_data = fins_dropped.saturating_sub(ends_classed);
    let mut take = |n: u64| {
        let t = n.min(fins_as_data);
        fins_as_data -= t;
        n - t
    };
    let socket = take(l.socket_dropped);
    let unread = take(l.unread_at_close);
    let kernel = take(l.kernel_dropped + l.reassembly_failed + l.unspecified + l.no_listener);
    let by_layer = [("path", l.path_lost), ("kernel", kernel), ("socket", socket + unread)];
    let nonzero: Vec<_> = by_layer.iter().filter(|(_, n)| *n > 0).collect();
    let layer = match nonzero.as_slice() {
        [] => "none",
        [(name, _)] => name,
        _ => "several",
    };
    Comparison {
        role: "recv",
        counter: "iperf2",
        iperf2: r.clone(),
        missed,
        fins_dropped,
        path_lost: l.path_lost,
        kernel_dropped: kernel,
        socket_dropped: socket,
        unread_at_close: unread,
        layer,
        adds_up: by_layer.iter().map(|(_, n)| n).sum::<u64>() == missed,
        difference: by_layer.iter().map(|(_, n)| *n as i64).sum::<i64>() - missed as i64,
    }
}

/// The human lines of a comparison.
impl crate::output::Record for Comparison {
    const TYPE: &'static str = "summary";
    fn human(&self) -> String {
        human(self)
    }
}

pub fn human(c: &Comparison) -> String {
    let r = &c.iperf2;
    let pct = if r.total > 0 { 100.0 * r.lost as f64 / r.total as f64 } else { 0.0 };
    let mut t = format!("--- iperf2 beside the counter ({}) ---\n", r.command);
    t.push_str(&format!(
        "iperf2 says Lost/Total {}/{} ({pct:.3} %){}; it read {} data datagrams, missed {}\n",
        r.lost,
        r.total,
        if r.saw_fin { "" } else { ", no FIN read: interrupted for its report" },
        r.read,
        c.missed
    ));
    t.push_str(&format!(
        "mcblast: lost on the path {}, dropped in the kernel {}, dropped at the socket {} (+{} unread at close){}\n",
        c.path_lost,
        c.kernel_dropped,
        c.socket_dropped,
        c.unread_at_close,
        if c.fins_dropped > 0 { format!("; and {} FIN(s) dropped after the driver", c.fins_dropped) } else { String::new() }
    ));
    let verdict = match c.layer {
        "none" => "nothing was lost",
        "path" => "iperf2's loss was on the path (the network, before this host's driver)",
        "kernel" => "iperf2's loss was in this host's kernel, before the socket",
        "socket" => "iperf2's loss was at its own socket (receive buffer full): not the network",
        _ => "iperf2's loss was on several layers (see the waterfall)",
    };
    let sum = match (c.adds_up, r.saw_fin) {
        (true, _) => "the layers add up to it exactly".to_string(),
        (false, true) => format!("the layers hold {:+} datagram(s) against it: see docs/iperf2.md", c.difference),
        (false, false) => format!(
            "the layers hold {:+} datagram(s) against it: iperf2 read no FIN and was interrupted for its report, \
             whose count can be one off (docs/iperf2.md)",
            c.difference
        ),
    };
    t.push_str(&format!("{verdict}; {sum}"));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_clients_last_lost_total_line() {
        let text = "------------------------------------------------------------\n\
            Server listening on UDP port 5001\n\
            [  1] local 239.1.1.1 port 5001 connected with 10.77.0.1 port 39185\n\
            [ ID] Interval       Transfer     Bandwidth        Jitter   Lost/Total Datagrams\n\
            [  1] 0.0000-1.0000 sec  6.27 MBytes  52.5 Mbits/sec   0.003 ms 0/700 (0%)\n\
            [  1] 0.0000-1.0014 sec  6.27 MBytes  52.5 Mbits/sec   0.003 ms 12/803 (1.5%)\n\
            [  1] 0.0000-1.0014 sec  1 datagrams received out-of-order\n\
            [  2] 0.0000-2.0000 sec  1.25 MBytes  10.5 Mbits/sec   0.001 ms 0/1314 (0%) 0.006/0.003/0.066/0.003 ms 1313 pps 1314/0(0) pkts 210557\n";
        assert_eq!(final_reports(text), vec![("1".into(), 12, 803), ("2".into(), 0, 1314)]);
        assert_eq!(lost_total("[ ID] Interval Transfer Bandwidth Jitter Lost/Total Datagrams"), None);
    }
}
