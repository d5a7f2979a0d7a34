//! The iperf2 sender of `mcblast run` (`sender = "iperf2"`): the client's
//! command line from a case, and the sender's result from the client's
//! output (iperf 2.1.x, e.g. Debian's `iperf` 2.1.8):
//!
//! ```text
//! [  1] local 10.77.0.1 port 39151 connected with 239.1.1.1 port 5001
//! [ ID] Interval       Transfer     Bandwidth
//! [  1] 0.0000-2.0007 sec  25.0 MBytes   105 Mbits/sec
//! [  1] Sent 3204 datagrams
//! ```
//!
//! `Sent N` is not the number of data datagrams. The client (Client.cpp of
//! iperf 2.1.8) sends data datagram id 1 from `SendFirstPayload` (it carries
//! the client header; `StartSynch` reports it), ids 2..=M from `RunUDP`, then
//! in `FinishTrafficActions` one FIN with id −(M+1), which it also reports as
//! a packet (with the positive id M+1); the final `Sent` is the reporter's
//! `cntDatagrams = stats->PacketID` (Reporter.c), the last reported id, not a
//! count of writes. That reading gives M + 1; the last one is the reporter's
//! end-of-job marker (a packet record with id −1 that `EndJob` queues, not
//! flagged empty, so `reporter_compute_packet_pps` counts it too). Measured on this build
//! (Debian's iperf 2.1.8, multicast, `-T 1`) with receivers that saw every
//! datagram and nothing foreign: N = M + 2 every time (3204 for 3202 data
//! datagrams at -b 100M -l 8192 -t 2; 896 for 894 at 10M/1470 -t 1; 260 for
//! 258 at 1M/512 -t 1 -e, whose `Write/Err` said 258). The receivers count M
//! data datagrams (ids 1..=M, `expected` = M from the FIN) and the FIN apart,
//! so the data count is N − [`SENT_OVER_DATA`]; `tests/run.rs`
//! (`iperf2_sender_one_case`) checks it against the receivers.

use anyhow::{Context, Result};

use super::plan::Case;
use super::stats::SendResult;

/// `Sent N datagrams` minus the data datagrams the receivers count (see the module comment).
pub const SENT_OVER_DATA: u64 = 2;

/// The client program on the sender node.
pub const PROGRAM: &str = "iperf";

/// `-c GROUP -p PORT -u -T TTL -b RATE -l LENGTH -t SECS` and the plan's `iperf2_args`.
/// The plan refuses loads without a rate for iperf2; a missing one would be iperf's default.
pub fn client_args(group: &str, port: &str, ttl: u8, case: &Case, secs: f64, extra: &[String]) -> Vec<String> {
    let ttl = ttl.to_string();
    let mut v: Vec<String> = ["-c", group, "-p", port, "-u", "-T", &ttl].iter().map(|s| s.to_string()).collect();
    if let Some(r) = case.load.rate_bps {
        v.extend(["-b".to_string(), format!("{}", r.round() as u64)]);
    }
    v.extend(["-l".to_string(), case.load.length.to_string(), "-t".to_string(), format!("{secs}")]);
    v.extend(extra.iter().cloned());
    v
}

/// What the client's output says: the sender's result and its UDP source
/// port (the flow's `flow` at the receivers), when it printed one.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientReport {
    pub send: SendResult,
    /// The `Sent N datagrams` count as printed.
    pub sent_reported: u64,
    pub source_port: Option<u16>,
}

/// Reads the client's stdout: `Sent N datagrams`, its final interval line (the
/// last `A-B sec ... bits/sec` line: duration and rate) and its `local ... port P` line.
pub fn parse_client(text: &str) -> Result<ClientReport> {
    let sent_reported = text
        .lines()
        .rev()
        .find_map(|l| l.split_once("Sent ")?.1.strip_suffix("datagrams")?.trim().parse::<u64>().ok())
        .context("the iperf client printed no `Sent N datagrams` line")?;
    let (duration_s, rate_bps) =
        text.lines().rev().find_map(interval_line).context("the iperf client printed no final interval line")?;
    let send = SendResult {
        run_id: 0,
        sent: sent_reported.saturating_sub(SENT_OVER_DATA),
        duration_s,
        rate_bps,
        // iperf2 does not report its CPU time
        cpu_s: 0.0,
    };
    Ok(ClientReport { send, sent_reported, source_port: text.lines().find_map(source_port) })
}

/// `[  1] 0.0000-2.0007 sec  25.0 MBytes   105 Mbits/sec ...`: (seconds, bit/s).
fn interval_line(l: &str) -> Option<(f64, f64)> {
    let w: Vec<&str> = l.split_whitespace().collect();
    let at = w.iter().position(|t| *t == "sec")?;
    let (a, b) = w.get(at.checked_sub(1)?)?.split_once('-')?;
    let secs = b.parse::<f64>().ok()? - a.parse::<f64>().ok()?;
    let unit = w.iter().skip(at).position(|t| t.ends_with("bits/sec"))? + at;
    let mult = match w[unit].strip_suffix("bits/sec")? {
        "" => 1.0,
        "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        _ => return None,
    };
    Some((secs, w.get(unit - 1)?.parse::<f64>().ok()? * mult))
}

/// `[  1] local 10.77.0.1%eth0 port 43934 connected with 239.1.1.1 port 5001 ...`: 43934.
fn source_port(l: &str) -> Option<u16> {
    let rest = l.split_once(" local ")?.1;
    let w: Vec<&str> = rest.split_whitespace().collect();
    (w.get(1) == Some(&"port") && w.get(3) == Some(&"connected")).then(|| w[2].parse().ok())?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outputs of iperf 2.1.8 on this machine (multicast, receivers in lab namespaces).
    const PLAIN: &str = "------------------------------------------------------------
Client connecting to 239.1.1.1, UDP port 5001
Sending 8192 byte datagrams, IPG target: 625.00 us (kalman adjust)
UDP buffer size:  208 KByte (default)
------------------------------------------------------------
[  1] local 10.77.0.1 port 39151 connected with 239.1.1.1 port 5001
[ ID] Interval       Transfer     Bandwidth
[  1] 0.0000-2.0007 sec  25.0 MBytes   105 Mbits/sec
[  1] Sent 3204 datagrams
";
    const ENHANCED: &str = "[  1] local 10.77.0.1%eth0 port 43934 connected with 239.1.1.1 port 5001 (sock=3) on 2026-12-06 15:03:24 (UTC)
[ ID] Interval            Transfer     Bandwidth      Write/Err  PPS
[  1] 0.0000-1.0040 sec   130 KBytes  1.06 Mbits/sec  258/0      259 pps
[  1] Sent 260 datagrams
";

    #[test]
    fn reads_the_client_output() {
        let r = parse_client(PLAIN).unwrap();
        assert_eq!((r.sent_reported, r.send.sent, r.source_port), (3204, 3202, Some(39151)));
        assert!((r.send.duration_s - 2.0007).abs() < 1e-9 && r.send.rate_bps == 105e6, "{r:?}");
        let e = parse_client(ENHANCED).unwrap();
        assert_eq!((e.sent_reported, e.send.sent, e.source_port), (260, 258, Some(43934)));
        assert!((e.send.rate_bps - 1.06e6).abs() < 1e-3, "{e:?}");
        let err = parse_client("connect failed: Network is unreachable\n").unwrap_err().to_string();
        assert!(err.contains("Sent N datagrams"), "{err}");
    }

    #[test]
    fn client_command_line() {
        let t = "sender = \"iperf2\"\n[[matrix]]\nload = [\"10M/1470\"]\n";
        let p = super::super::plan::parse(t, "p.toml", None, "x-").unwrap();
        let a = client_args("239.0.0.1", "5001", 1, &p.cases[0], 1.5, &["-e".into()]);
        assert_eq!(a.join(" "), "-c 239.0.0.1 -p 5001 -u -T 1 -b 10000000 -l 1470 -t 1.5 -e");
    }
}
