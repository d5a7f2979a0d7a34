//! The real `mcblast send` binary in a throwaway network namespace, with a
//! plain-socket receiver inside the namespace that checks every datagram:
//! each flow's sequence numbers are exactly 0..n-1, once each, in order, of
//! the right length and a valid header; the end markers carry n; and the
//! JSON summary says what was received. No rates are asserted.
//!
//! Privileged: skipped, with a message, when we cannot create namespaces.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mcblast::netns::NetNs;
use mcblast::sys::send::{Buffer, set_buffer};
use mcblast_common::wire::{Header, Kind};
use serde::Deserialize;
use serde_json::Value;

mod common;
use common::BIN;
/// Hard bound on any one run (sender and receiver).
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// The receiver stops this long after the sender exited with nothing more arriving.
const IDLE_AFTER_EXIT: Duration = Duration::from_secs(1);
const END_MARKERS: usize = 3;

#[derive(Deserialize, Debug)]
struct Summary {
    role: String,
    run: u32,
    engine: String,
    sent: u64,
    bytes: u64,
    errors: u64,
    errors_enobufs: u64,
    errors_eagain: u64,
    errors_other: u64,
    end_markers: u64,
    cpu_s: f64,
    target_pps: Option<f64>,
    pacing_slips: u64,
    pacing_deficit: u64,
    pacing_gap_min_us: Option<f64>,
    pacing_gap_max_us: Option<f64>,
    flows: Vec<SummaryFlow>,
}

#[derive(Deserialize, Debug)]
struct SummaryFlow {
    flow: u32,
    group: String,
    src_port: u16,
    sent: u64,
}

#[derive(Deserialize, Debug)]
struct Interval {
    sent: u64,
    pacing_slips: u64,
    pacing_deficit: u64,
}

/// What the receiver saw of one flow.
#[derive(Debug, Default)]
struct FlowRx {
    seqs: Vec<u64>,
    ends: Vec<u64>,
    src_ports: Vec<u16>,
    groups: Vec<Ipv4Addr>,
}

struct Run {
    summary: Summary,
    intervals: Vec<Interval>,
    flows: BTreeMap<u32, FlowRx>,
    /// Malformed or unexpected datagrams, described.
    problems: Vec<String>,
    code: Option<i32>,
    stderr: String,
}

struct Case<'a> {
    ns: &'a NetNs,
    groups: Vec<Ipv4Addr>,
    port: u16,
    length: usize,
    run_id: u32,
    flows: u32,
    /// More `mcblast send` flags.
    extra: Vec<String>,
    /// Send SIGINT once the receiver has this many data datagrams.
    interrupt_after: Option<u64>,
}

fn skip() -> bool {
    common::skip("needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create network namespaces")
}

fn namespace(tag: &str) -> NetNs {
    let ns = NetNs::new(&format!("mcb-send-{}-{tag}", std::process::id())).unwrap();
    ns.exec("ip", &["route", "add", "224.0.0.0/4", "dev", "lo"]).unwrap();
    ns
}

/// Runs the binary in the namespace against a receiver there.
fn run_case(c: &Case<'_>) -> Run {
    let (ready_tx, ready_rx) = mpsc::channel();
    let sender_done = AtomicBool::new(false);
    let received = AtomicU64::new(0);
    std::thread::scope(|s| {
        let rx = s.spawn(|| receive(c, &ready_tx, &sender_done, &received));
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("receiver ready");

        let mut args: Vec<String> = vec!["netns".into(), "exec".into(), c.ns.name().into(), BIN.into(), "send".into()];
        for g in &c.groups {
            args.extend(["-g".into(), g.to_string()]);
        }
        args.extend(
            [
                "--loop",
                "--interface",
                "lo",
                "--json",
                "-p",
                &c.port.to_string(),
                "-l",
                &c.length.to_string(),
                "--flows",
                &c.flows.to_string(),
                "--run-id",
                &c.run_id.to_string(),
            ]
            .map(String::from),
        );
        args.extend(c.extra.iter().cloned());
        let child = Command::new("ip").args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let pid = child.id();
        let (done_tx, done_rx) = mpsc::channel();
        s.spawn(move || {
            let _ = done_tx.send(child.wait_with_output());
        });
        if let Some(n) = c.interrupt_after {
            let t0 = Instant::now();
            while received.load(Ordering::Relaxed) < n && t0.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(5));
            }
            // `ip netns exec` execs the program, so this pid is mcblast.
            Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
        }
        let out = match done_rx.recv_timeout(RUN_LIMIT) {
            Ok(o) => o.unwrap(),
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                panic!("mcblast send {:?} did not finish within {RUN_LIMIT:?}", c.extra);
            }
        };
        sender_done.store(true, Ordering::Relaxed);
        let (flows, problems) = rx.join().unwrap();

        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let mut summary = None;
        let mut intervals = Vec::new();
        let mut begins = 0;
        for line in stdout.lines() {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            match v["type"].as_str() {
                Some("begin") => begins += 1,
                Some("interval") => intervals.push(serde_json::from_value(v).unwrap()),
                Some("summary") => summary = Some(serde_json::from_value::<Summary>(v).unwrap()),
                other => panic!("unexpected line type {other:?}: {line}\nstderr: {stderr}"),
            }
        }
        assert_eq!(begins, 1, "one begin line\n{stdout}\n{stderr}");
        let summary = summary.unwrap_or_else(|| panic!("no summary line\nstdout: {stdout}\nstderr: {stderr}"));
        Run { summary, intervals, flows, problems, code: out.status.code(), stderr }
    })
}

/// The receiver: inside the namespace, one socket per group bound to the
/// group's address (so a socket only sees its group), joined on lo.
fn receive(
    c: &Case<'_>,
    ready: &mpsc::Sender<()>,
    sender_done: &AtomicBool,
    received: &AtomicU64,
) -> (BTreeMap<u32, FlowRx>, Vec<String>) {
    c.ns.enter().unwrap();
    let socks: Vec<(Ipv4Addr, UdpSocket)> = c
        .groups
        .iter()
        .map(|&g| {
            let s = UdpSocket::bind((g, c.port)).unwrap();
            s.join_multicast_v4(&g, &Ipv4Addr::LOCALHOST).unwrap();
            // Room for the whole run, so a busy machine cannot make the receiver lose datagrams.
            set_buffer(&s, Buffer::Recv, 256 << 20).unwrap();
            s.set_nonblocking(true).unwrap();
            (g, s)
        })
        .collect();
    ready.send(()).unwrap();

    let mut flows: BTreeMap<u32, FlowRx> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut buf = vec![0u8; 65536];
    let t0 = Instant::now();
    let mut last_data = Instant::now();
    let clock = mcblast::clock::clock_id();
    // Header flags bits 8..15: the sender's kernel TAI-UTC offset (same kernel here).
    let tai = mcblast::sys::tai_offset_s().unwrap().clamp(0, 255) as u16;
    loop {
        let mut got = false;
        for (g, s) in &socks {
            // At most a bounded number per pass, so every socket is served.
            for _ in 0..1024 {
                let (n, from) = match s.recv_from(&mut buf) {
                    Ok(x) => x,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("recv: {e}"),
                };
                got = true;
                match Header::parse_datagram(&buf[..n]) {
                    Err(e) => problems.push(format!("{n}-byte datagram from {from}: {e}")),
                    Ok(h) => {
                        if h.run != c.run_id || h.clock != clock || h.tx_ns == 0 || h.flags >> 8 != tai {
                            problems.push(format!("bad header fields: {h:?}"));
                        }
                        let f = flows.entry(h.flow).or_default();
                        f.src_ports.push(from.port());
                        f.groups.push(*g);
                        match h.kind {
                            Kind::Data => {
                                if n != c.length {
                                    problems
                                        .push(format!("flow {} seq {}: {n} bytes, not {}", h.flow, h.seq, c.length));
                                }
                                f.seqs.push(h.seq);
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                            Kind::End => f.ends.push(h.seq),
                        }
                    }
                }
            }
        }
        if got {
            last_data = Instant::now();
        }
        let all_ended = flows.len() == c.flows as usize && flows.values().all(|f| f.ends.len() >= END_MARKERS);
        let exited_and_idle = sender_done.load(Ordering::Relaxed) && last_data.elapsed() > IDLE_AFTER_EXIT;
        if all_ended || exited_and_idle || t0.elapsed() > RUN_LIMIT {
            break;
        }
        if !got {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    (flows, problems)
}

/// Everything that must hold for a run the sender finished by itself or by Ctrl-C.
fn check(c: &Case<'_>, r: &Run, count: Option<u64>) {
    let ctx = format!("case {:?} length {}\nstderr: {}", c.extra, c.length, r.stderr);
    assert_eq!(r.code, Some(0), "{ctx}");
    assert!(r.problems.is_empty(), "{:?}\n{ctx}", &r.problems[..r.problems.len().min(10)]);
    let s = &r.summary;
    assert_eq!((s.role.as_str(), s.run), ("send", c.run_id), "{ctx}");
    assert!(["socket", "mmsg", "gso", "uring"].contains(&s.engine.as_str()), "{ctx}");
    // The engine named is the one that ran (auto resolves to one of them).
    if let Some(i) = c.extra.iter().position(|a| a == "-e")
        && c.extra[i + 1] != "auto"
    {
        assert_eq!(s.engine, c.extra[i + 1], "{ctx}");
    }
    assert_eq!(s.errors, s.errors_enobufs + s.errors_eagain + s.errors_other, "{ctx}");
    assert!(s.cpu_s > 0.0, "{ctx}");
    assert_eq!(s.flows.len(), c.flows as usize, "{ctx}");
    assert_eq!(s.end_markers, END_MARKERS as u64 * c.flows as u64, "{ctx}");
    assert_eq!(s.bytes, s.sent * c.length as u64, "{ctx}");
    if !r.intervals.is_empty() {
        assert_eq!(r.intervals.iter().map(|i| i.sent).sum::<u64>(), s.sent, "intervals add up to the total\n{ctx}");
        let slips: u64 = r.intervals.iter().map(|i| i.pacing_slips).sum();
        let deficit: u64 = r.intervals.iter().map(|i| i.pacing_deficit).sum();
        assert_eq!((slips, deficit), (s.pacing_slips, s.pacing_deficit), "{ctx}");
    }
    // Pacing is reported for paced runs only; how often the schedule
    // slipped depends on the machine, so it is only checked for coherence.
    let paced = c.extra.iter().any(|a| a == "--pps" || a == "-b");
    assert_eq!(s.target_pps.is_some(), paced, "{ctx}");
    if paced {
        assert_eq!(s.pacing_slips == 0, s.pacing_deficit == 0, "slips without a deficit or back\n{ctx}");
        let (a, b) = (s.pacing_gap_min_us.unwrap(), s.pacing_gap_max_us.unwrap());
        assert!(a <= b, "{ctx}");
    } else {
        assert_eq!((s.pacing_slips, s.pacing_deficit, s.pacing_gap_min_us), (0, 0, None), "{ctx}");
    }
    assert_eq!(r.flows.len(), c.flows as usize, "every flow arrived\n{ctx}");
    let mut total = 0;
    for (id, f) in &r.flows {
        let sf = s.flows.iter().find(|x| x.flow == *id).unwrap_or_else(|| panic!("flow {id} not in summary\n{ctx}"));
        let n = f.seqs.len() as u64;
        let want: Vec<u64> = (0..n).collect();
        if f.seqs != want {
            let first_bad = f.seqs.iter().zip(&want).position(|(a, b)| a != b);
            panic!(
                "flow {id}: sequence numbers are not exactly 0..{n} in order (first difference at {first_bad:?})\n{ctx}"
            );
        }
        assert_eq!(sf.sent, n, "flow {id}: summary says {} sent, received {n}\n{ctx}", sf.sent);
        if let Some(count) = count {
            assert_eq!(n, count, "flow {id}\n{ctx}");
        }
        assert!(!f.ends.is_empty() && f.ends.len() <= END_MARKERS, "flow {id}: {} end markers\n{ctx}", f.ends.len());
        assert!(f.ends.iter().all(|&e| e == n), "flow {id}: end markers {:?}, want {n}\n{ctx}", f.ends);
        assert!(f.src_ports.iter().all(|&p| p == sf.src_port), "flow {id}: one source port, {}\n{ctx}", sf.src_port);
        let group = c.groups[*id as usize % c.groups.len()];
        assert!(f.groups.iter().all(|&g| g == group), "flow {id} went to group {group} only\n{ctx}");
        assert_eq!(sf.group, group.to_string(), "{ctx}");
        total += n;
    }
    assert_eq!(s.sent, total, "summary sent equals data datagrams received\n{ctx}");
    let ports: std::collections::HashSet<u16> = s.flows.iter().map(|f| f.src_port).collect();
    assert_eq!(ports.len(), c.flows as usize, "distinct source port per flow\n{ctx}");
}

#[test]
fn every_engine_every_length_exact_sequences() {
    if skip() {
        return;
    }
    let ns = namespace("len");
    let mut port = 6100;
    for engine in ["socket", "mmsg", "gso", "uring", "auto"] {
        for length in [40usize, 1470, 8192] {
            port += 1;
            let c = Case {
                ns: &ns,
                groups: vec![Ipv4Addr::new(239, 9, 9, 1)],
                port,
                length,
                run_id: 0x5e_0000 + port as u32,
                flows: 3,
                extra: ["-e", engine, "-n", "2000", "--pps", "20000", "-t", "30", "-i", "0.1"]
                    .map(String::from)
                    .to_vec(),
                interrupt_after: None,
            };
            let r = run_case(&c);
            check(&c, &r, Some(2000));
            println!("{engine} {length}: {} datagrams, errors {}", r.summary.sent, r.summary.errors);
        }
    }
}

#[test]
fn flat_out_groups_threads_pinned_odd_batch() {
    if skip() {
        return;
    }
    let ns = namespace("grp");
    let cpus = mcblast::sys::send::allowed_cpus().unwrap();
    let cpus: Vec<String> = cpus.iter().take(2).map(|c| c.to_string()).collect();
    let mut port = 6200;
    for engine in ["socket", "mmsg", "gso", "uring", "auto"] {
        port += 1;
        let c = Case {
            ns: &ns,
            groups: vec![Ipv4Addr::new(239, 9, 8, 1), Ipv4Addr::new(239, 9, 8, 2)],
            port,
            length: 1470,
            run_id: 0x6f_0000 + port as u32,
            flows: 5,
            // No rate: flat out. Batch 7 does not divide 500, so the last batch of a flow is partial.
            extra: ["-e", engine, "-n", "500", "--threads", "2", "--cpus", &cpus.join(","), "--batch", "7", "-t", "30"]
                .map(String::from)
                .to_vec(),
            interrupt_after: None,
        };
        let r = run_case(&c);
        check(&c, &r, Some(500));
    }
}

#[test]
fn ctrl_c_ends_every_flow_cleanly() {
    if skip() {
        return;
    }
    let ns = namespace("int");
    let mut port = 6300;
    for engine in ["socket", "mmsg", "gso", "uring", "auto"] {
        port += 1;
        let c = Case {
            ns: &ns,
            groups: vec![Ipv4Addr::new(239, 9, 7, 1)],
            port,
            length: 512,
            run_id: 0x7a_0000 + port as u32,
            flows: 2,
            // Would run 30 s; interrupted once the receiver has 300 datagrams.
            extra: ["-e", engine, "--pps", "5000", "-t", "30"].map(String::from).to_vec(),
            interrupt_after: Some(300),
        };
        let r = run_case(&c);
        check(&c, &r, None);
        assert!(r.summary.sent >= 300, "{}", r.summary.sent);
    }
}

/// A tap device nobody reads has no checksum offload (tun enables it only
/// on TUNSETOFFLOAD), so the kernel would refuse UDP GSO with EIO: `--engine
/// gso` is refused up front in one line naming the probe and the way out,
/// and `auto` picks another engine and says why it skipped gso.
#[test]
fn no_checksum_offload_refuses_gso_and_auto_says_why() {
    if skip() {
        return;
    }
    let ns = namespace("tap");
    ns.exec("ip", &["tuntap", "add", "dev", "mcbtap0", "mode", "tap"]).unwrap();
    ns.exec("ip", &["link", "set", "mcbtap0", "up"]).unwrap();
    ns.exec("ip", &["route", "add", "239.77.0.0/16", "dev", "mcbtap0"]).unwrap();
    let run = |extra: &[&str]| {
        let mut a = vec!["netns", "exec", ns.name(), BIN, "send", "-I", "mcbtap0", "-g", "239.77.0.1", "-n", "3", "-l", "1000", "-i", "0"];
        a.extend_from_slice(extra);
        Command::new("ip").args(&a).output().unwrap()
    };
    let out = run(&["--engine", "gso"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("mcblast: --engine gso: mcbtap0 does not checksum in hardware (ETHTOOL_GTXCSUM off)"), "{stderr}");
    assert!(stderr.contains("use --engine mmsg"), "{stderr}");
    let out = run(&["--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let begin: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(begin["type"], "begin");
    assert!(begin["engine"] == "uring" || begin["engine"] == "mmsg", "{begin}");
    let why = begin["engine_reason"].as_str().unwrap();
    assert!(why.contains("skipped gso: mcbtap0 does not checksum in hardware"), "{why}");
    // Human mode: the choice and the reason in one line on stderr.
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().find(|l| l.starts_with("mcblast: engine auto chose ")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("skipped gso"), "{line}");
}

/// User errors: exit status 2, one line on stderr starting `mcblast: `, and
/// with --json one error line on stdout. Fails before any socket: no namespace needed.
#[test]
fn user_errors_are_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["-l", "16"], "header alone is 40 bytes"),
        (&["-g", "10.0.0.1"], "not a multicast group"),
        // -I lo: the host's default route may have a small MTU, which would be reported first.
        (&["-I", "lo", "--threads", "0"], "--threads 0"),
        (&["-I", "lo", "--flows", "0"], "--flows 0"),
        (&["-I", "mcb-nope0"], "interface mcb-nope0 not found; interfaces here:"),
        (&["-I", "lo", "--engine", "socket", "--zerocopy"], "--zerocopy applies to the uring engine only"),
        (&["-I", "lo", "--cpus", "1000"], "CPU 1000 in --cpus is not available"),
        (&["-I", "lo", "-l", "65508"], "largest UDP payload"),
        (&["-I", "lo", "-t", "2e10"], "-t must be at most 1e7 seconds"),
        (&["-I", "lo", "-i", "2e10"], "-i must be at most 1e7 seconds"),
        (&["-I", "lo", "--pps", "2G"], "more than mcblast can pace"),
        (&["-I", "lo", "-b", "1e300"], "more than mcblast can pace"),
        (&["-I", "lo", "--pps", "1e-9"], "less than one datagram per 1000 s"),
        (&["-I", "lo", "--run-id", "0"], "run ids are non-zero"),
    ];
    for (args, want) in cases {
        let out = Command::new(BIN).arg("send").args(*args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("mcblast: ") && stderr.contains(want), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");

        let out = Command::new(BIN).arg("send").arg("--json").args(*args).output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let v: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(v["type"], "error", "{stdout}");
        assert!(v["message"].as_str().unwrap().contains(want), "{stdout}");
    }
}

/// Values clap's parsers refuse: exit status 2 and the reason, at once
/// (no allocation for an absurd CPU range, no infinite rate).
#[test]
fn unparseable_rates_and_cpu_lists_are_refused() {
    let cases: &[(&[&str], &str)] = &[
        (&["-b", "1e300G"], "rate '1e300G' is too large"),
        (&["--pps", "0"], "must be positive"),
        (&["--cpus", "0-99999999999"], "CPU 99999999999 in '0-99999999999' is out of range"),
    ];
    for (args, want) in cases {
        let out = Command::new(BIN).arg("send").args(*args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
