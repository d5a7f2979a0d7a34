//! Helpers shared by the tests (`mod common;` in each test file): skipping a
//! test that cannot run here (and saying so), serialisation, labs, `mcblast recv` and
//! `mcblast send` run on lab nodes, and picking lines out of their JSON;
//! guards that remove a temp dir or a lab when a test ends, bounded waits,
//! and `sh`, `nft` and /proc/net/snmp in a node's namespace (or in a bare
//! [`NetNs`]); hand-made frames in [`frames`]; one-line errors of the binary.
//! Not every test file uses every helper.
#![allow(dead_code)]

pub mod csv;
pub mod frames;
pub mod raw;

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mcblast::lab::{Lab, LabConfig};
use mcblast::netns::NetNs;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_mcblast");

/// The tests load the 2-core machine with real traffic: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The environment variable naming the file where skipped tests are
/// recorded; `cargo xtask test` sets it and counts the lines.
pub const SKIP_LOG: &str = "MCBLAST_SKIP_LOG";

/// Says that the running test cannot run here and returns without testing:
/// call it, then `return`. libtest has no way to skip at run time (the test
/// will show as `ok`), so it says so itself: one `SKIP binary::test: why`
/// line on stderr, written past libtest's output capture so a plain
/// `cargo test` shows it, and the same in `$MCBLAST_SKIP_LOG`, from which
/// `cargo xtask test` counts the test as skipped instead of passed.
pub fn skipped(why: &str) {
    let exe = std::env::current_exe().ok();
    let stem = exe.as_ref().and_then(|p| p.file_stem()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    // Cargo names test binaries `name-<hash>`.
    let bin = stem.rsplit_once('-').map_or(stem.as_str(), |(b, _)| b).to_string();
    let test = std::thread::current().name().unwrap_or("main").to_string();
    let line = format!("SKIP {bin}::{test}: {why}");
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    if let Some(log) = std::env::var_os(SKIP_LOG) {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(log);
        if let Ok(mut f) = f {
            // One write per line: O_APPEND keeps lines of parallel tests whole.
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

/// True (after [`skipped`]`(why)`) when not privileged: the test returns.
pub fn skip(why: &str) -> bool {
    if !mcblast::netns::privileged() {
        skipped(why);
        return true;
    }
    false
}

/// Asserts that `out` is the binary's one-line error (exit status 2,
/// `mcblast: ...` on stderr) containing every `needle`.
pub fn one_line_error(out: &std::process::Output, needles: &[&str]) {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line, got: {err}");
    assert!(lines[0].starts_with("mcblast: "), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "missing {n:?} in: {err}");
    }
}

/// A lab with a prefix unique to this process and `tag`, `mcblast` installed.
pub fn lab(tag: &str, receivers: u32) -> Lab {
    let cfg = LabConfig { prefix: format!("mcbt{}{tag}-", std::process::id()), receivers, ..LabConfig::default() };
    Lab::up(&cfg).expect("lab up").with_mcblast(BIN)
}

/// A receiver process whose stdout (JSON Lines) a thread reads while it runs
/// (a long loss line must never fill the pipe and stall the receiver).
pub struct Recv {
    pub node: String,
    pub child: Child,
    out: Option<std::thread::JoinHandle<String>>,
    pub begin: Value,
}

impl Drop for Recv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `mcblast recv --interface eth0 --json` on `node` with `extra`
/// arguments, plus `-i 0` and `-t 30` (a bound, in case a flow never ends)
/// unless `extra` gives its own; reads and checks its begin line.
pub fn start_recv(lab: &Lab, node: &str, extra: &[&str]) -> Recv {
    start_recv_env(lab, node, extra, &[])
}

/// As [`start_recv`], with these environment variables set for the receiver.
pub fn start_recv_env(lab: &Lab, node: &str, extra: &[&str], env: &[(&str, &str)]) -> Recv {
    let mut argv = vec!["mcblast", "recv", "--interface", "eth0", "--json"];
    if !extra.contains(&"-i") {
        argv.extend_from_slice(&["-i", "0"]);
    }
    if !extra.contains(&"-t") {
        argv.extend_from_slice(&["-t", "30"]);
    }
    argv.extend_from_slice(extra);
    let mut child = lab.exec_cmd(node, &argv).envs(env.iter().copied()).stdout(Stdio::piped()).spawn().expect("spawn recv");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).expect("read begin line");
    let begin: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{node}: bad begin line {line:?}: {e}"));
    assert_eq!(begin["type"], "begin", "{node}: {line}");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut text);
        text
    });
    Recv { node: node.into(), child, out: Some(out), begin }
}

/// Waits for the receiver to exit (bounded) with status 0 and returns its JSON lines.
pub fn finish(r: Recv) -> Vec<Value> {
    finish_with(r, 0)
}

/// Waits for the receiver to exit (bounded) with `code` and returns its JSON lines.
pub fn finish_with(mut r: Recv, code: i32) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(st) = r.child.try_wait().unwrap() {
            assert_eq!(st.code(), Some(code), "{}: recv exited with {st}", r.node);
            break;
        }
        assert!(Instant::now() < deadline, "{}: recv did not stop", r.node);
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = r.out.take().expect("output read once").join().expect("reader thread");
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"))).collect()
}

/// The receiver's summary line for `counter`.
pub fn summary<'a>(lines: &'a [Value], counter: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["type"] == "summary" && l["counter"] == counter)
        .unwrap_or_else(|| panic!("no {counter} summary in {lines:?}"))
}

/// The one flow of a summary (asserts there is exactly one).
pub fn only_flow(s: &Value) -> &Value {
    let flows = s["flows"].as_array().expect("flows");
    assert_eq!(flows.len(), 1, "expected one flow: {s}");
    &flows[0]
}

/// Waits until every receiver of the lab is a member of 239.0.0.1 (bounded).
pub fn wait_members(lab: &Lab) {
    lab.wait_members(Ipv4Addr::new(239, 0, 0, 1), &lab.receivers(), Duration::from_secs(15)).expect("joins");
}

/// Starts `mcblast send --interface eth0 --json -i 0` with `args` on the sender.
pub fn spawn_send(lab: &Lab, args: &[&str]) -> Child {
    let mut argv = vec!["mcblast", "send", "--interface", "eth0", "--json", "-i", "0"];
    argv.extend_from_slice(args);
    lab.exec_cmd("sender", &argv).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn sender")
}

/// Waits for a sender started with [`spawn_send`], asserts it succeeded and
/// returns its JSON lines.
pub fn sender_lines(child: Child) -> Vec<Value> {
    let out = child.wait_with_output().expect("wait for sender");
    assert!(out.status.success(), "sender failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The first line of `type` `t` among a sender's lines.
pub fn sender_line(lines: &[Value], t: &str) -> Value {
    lines.iter().find(|v| v["type"] == t).unwrap_or_else(|| panic!("no sender {t}")).clone()
}

/// Waits for a sender started with [`spawn_send`]; returns its JSON summary line.
pub fn sender_summary(child: Child) -> Value {
    sender_line(&sender_lines(child), "summary")
}

/// Whether an XDP program is attached to `node`'s eth0.
pub fn xdp_attached(lab: &Lab, node: &str) -> bool {
    let out = std::process::Command::new("ip")
        .args(["-n", &lab.ns_name(node), "-d", "link", "show", "eth0"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

/// A count field of a JSON line (panics, naming it, when it is not one).
pub fn u(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("{field} is not a count: {v}"))
}

/// Removes a directory when dropped (also on panic).
pub struct TempDir(pub PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes the lab of a prefix when dropped (also on panic), in case a run left it.
pub struct LabGone(pub String);
impl Drop for LabGone {
    fn drop(&mut self) {
        let _ = mcblast::lab::down(&self.0);
    }
}

/// A lab prefix unique to this process and `tag` (as [`lab`] makes them),
/// with the guard that removes its lab when the test ends.
pub fn lab_prefix(tag: &str) -> (String, LabGone) {
    let prefix = format!("mcbt{}{tag}-", std::process::id());
    (prefix.clone(), LabGone(prefix))
}

/// `mcblast run PLAN --out OUT`, its labs made under `prefix`.
pub fn mcblast_run(plan: &Path, out: &Path, prefix: &str) -> Command {
    let mut c = Command::new(BIN);
    c.arg("run").arg(plan).arg("--out").arg(out).env(mcblast::lab::PREFIX_ENV, prefix);
    c
}

/// Waits for `child` to exit, looking every `poll`; past `limit` kills it
/// and panics with `what`.
pub fn wait_bounded(child: &mut Child, limit: Duration, poll: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}");
        }
        std::thread::sleep(poll);
    }
}

/// Runs a shell script inside the namespace `ns`; asserts it succeeded.
pub fn sh(ns: &str, script: &str) {
    let out = Command::new("ip").args(["netns", "exec", ns, "sh", "-c", script]).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs a shell script inside the bare namespace `ns`; panics if it failed.
pub fn sh_netns(ns: &NetNs, script: &str) {
    ns.exec("sh", &["-c", script]).unwrap_or_else(|e| panic!("in {}: {script}: {e:#}", ns.name()));
}

/// A field of `/proc/net/snmp` in the bare namespace `ns`.
pub fn snmp_netns(ns: &NetNs, proto: &str, field: &str) -> u64 {
    let out = Command::new("ip").args(["netns", "exec", ns.name(), "cat", "/proc/net/snmp"]).output().unwrap();
    mcblast::recv::attrib::snmp_value(&String::from_utf8_lossy(&out.stdout), proto, field).expect("snmp field")
}

/// A field of /proc/net/snmp in a node's namespace.
pub fn snmp(lab: &Lab, node: &str, proto: &str, field: &str) -> u64 {
    let out = Command::new("ip").args(["netns", "exec", &lab.ns_name(node), "cat", "/proc/net/snmp"]).output().unwrap();
    mcblast::recv::attrib::snmp_value(&String::from_utf8_lossy(&out.stdout), proto, field).expect("snmp field")
}

/// Runs `nft` in the namespace `ns`; asserts it succeeded, returns its stdout.
pub fn nft(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip").args(["netns", "exec", ns, "nft"]).args(args).output().expect("nft");
    assert!(out.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Loads the nftables `rules` in the namespace `ns` (through a temp file
/// named after the process and `tag`, removed afterwards).
pub fn nft_load(ns: &str, tag: &str, rules: &str) {
    let file = std::env::temp_dir().join(format!("mcbt{}{tag}.nft", std::process::id()));
    std::fs::write(&file, rules).unwrap();
    let out =
        Command::new("ip").args(["netns", "exec", ns, "nft", "-f", file.to_str().unwrap()]).output().expect("nft");
    let _ = std::fs::remove_file(&file);
    assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
}

/// The packets of the first rule counter in the table `family` `table` of
/// the namespace `ns` (`nft -j list table`).
pub fn nft_counter(ns: &str, family: &str, table: &str) -> u64 {
    nft_packets_bytes(ns, family, table).0
}

/// The packets and bytes of the first rule counter in table `family table` of `ns`.
pub fn nft_packets_bytes(ns: &str, family: &str, table: &str) -> (u64, u64) {
    let listing: Value = serde_json::from_str(&nft(ns, &["-j", "list", "table", family, table])).unwrap();
    let items = listing["nftables"].as_array().unwrap();
    let c = items
        .iter()
        .filter_map(|i| i.get("rule"))
        .flat_map(|r| r["expr"].as_array().unwrap().iter())
        .find_map(|e| e.get("counter"))
        .expect("rule counter");
    (c["packets"].as_u64().unwrap(), c["bytes"].as_u64().unwrap())
}

/// The sequence numbers in a receiver's `loss` line of `counter`.
pub fn lost_seqs(lines: &[Value], counter: &str) -> (std::collections::BTreeSet<u64>, Value) {
    let l = lines
        .iter()
        .find(|v| v["type"] == "loss" && v["counter"] == counter)
        .unwrap_or_else(|| panic!("no {counter} loss line in {lines:?}"))
        .clone();
    let mut set = std::collections::BTreeSet::new();
    for f in l["flows"].as_array().unwrap() {
        for iv in f["intervals"].as_array().unwrap() {
            for r in iv["ranges"].as_array().unwrap() {
                let (s, n) = (r[0].as_u64().unwrap(), r[1].as_u64().unwrap());
                for q in s..s + n {
                    assert!(set.insert(q), "{q} in two ranges: {l}");
                }
            }
        }
    }
    (set, l)
}

/// The network namespaces whose name starts with `prefix` (`ip netns list`).
pub fn namespaces(prefix: &str) -> std::collections::BTreeSet<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}
