//! Privileged lab tests: real namespaces, veths, a bridge with IGMP
//! snooping, nftables loss injection. Each test uses its own namespace
//! prefix and removes its lab even when it fails (the `Lab` guard, plus a
//! `Cleanup` guard for labs it deliberately keeps). All traffic stays inside
//! the lab namespaces. Skipped, with a message, when not root.

use std::collections::BTreeSet;
use std::io;
use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::time::Duration;

use mcblast::lab::{self, Lab, LabConfig, MdbEntry};
mod common;
use common::namespaces;
use common::raw::Stream;

/// False (after saying the test is skipped) when not privileged.
fn privileged(_test: &str) -> bool {
    !common::skip("lab tests need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)")
}

fn prefix(tag: &str) -> String {
    format!("mcbt{}{tag}-", std::process::id())
}

fn config(tag: &str, receivers: u32, snooping: bool) -> LabConfig {
    LabConfig { prefix: prefix(tag), receivers, mtu: 9000, snooping, querier: true }
}

/// Removes a lab of this prefix when dropped (for labs a test keeps on purpose).
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = lab::down(&self.0);
    }
}

/// Namespaces whose name starts with `prefix`, from `ip netns list`.

fn set(prefix: &str, names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| format!("{prefix}{n}")).collect()
}

/// Interface names of the root namespace (this process's).
fn root_links() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "command failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `cat` of a file as seen inside a node (`ip netns exec` mounts the node's /sys).
fn cat(lab: &Lab, node: &str, path: &str) -> String {
    ok(lab.exec_cmd(node, &["cat", path]).output().unwrap())
}

const STREAM: Stream = Stream { len: 100, run: 7, gap: Duration::from_micros(300) };

/// Waits (bounded: 10 s) until the bridge lists every one of `ports` as a
/// member of `group`; returns the table.
fn wait_members(lab: &Lab, group: Ipv4Addr, ports: &[&str]) -> Vec<MdbEntry> {
    let g = group.to_string();
    let mut last = Vec::new();
    for _ in 0..100 {
        last = lab.mdb().unwrap();
        if ports.iter().all(|p| last.iter().any(|e| e.group == g && e.port == *p)) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("bridge group table never listed {ports:?} for {g}; last: {last:?}");
}

fn members(mdb: &[MdbEntry], group: Ipv4Addr) -> Vec<String> {
    let g = group.to_string();
    mdb.iter().filter(|e| e.group == g).map(|e| e.port.clone()).collect()
}

#[test]
fn up_builds_the_topology_and_down_removes_it() {
    if !privileged("up_builds_the_topology_and_down_removes_it") {
        return;
    }
    let mut cfg = config("t", 3, true);
    cfg.mtu = 1500;
    let p = cfg.prefix.clone();
    let _cleanup = Cleanup(p.clone());
    let root_before = root_links();

    let lab = Lab::up(&cfg).unwrap();
    assert_eq!(namespaces(&p), set(&p, &["sw", "sender", "r1", "r2", "r3"]));
    assert_eq!(lab.nodes(), ["sender", "r1", "r2", "r3"]);
    assert_eq!(lab.receivers(), ["r1", "r2", "r3"]);

    // Each node: eth0 up with its address, the lab MTU, multicast routed to eth0.
    for (node, addr) in [("sender", "10.77.0.1"), ("r1", "10.77.0.11"), ("r2", "10.77.0.12"), ("r3", "10.77.0.13")] {
        assert_eq!(lab.addr(node).to_string(), addr);
        let a = ok(lab.exec_cmd(node, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).output().unwrap());
        assert!(a.contains(&format!("inet {addr}/24")), "{node}: {a}");
        assert_eq!(cat(&lab, node, "/sys/class/net/eth0/mtu"), "1500", "{node}");
        assert_eq!(cat(&lab, node, "/sys/class/net/eth0/operstate"), "up", "{node}");
        let r = ok(lab.exec_cmd(node, &["ip", "route", "show", "224.0.0.0/4"]).output().unwrap());
        assert!(r.contains("dev eth0"), "{node}: {r}");
        assert_eq!(cat(&lab, node, "/proc/sys/net/ipv4/conf/all/rp_filter"), "0", "{node}");
        assert_eq!(cat(&lab, node, "/proc/sys/net/ipv4/conf/eth0/rp_filter"), "0", "{node}");
        // the node has only lo and eth0
        let links = ok(lab.exec_cmd(node, &["ls", "/sys/class/net"]).output().unwrap());
        assert_eq!(links.split_whitespace().collect::<Vec<_>>(), ["eth0", "lo"], "{node}");
    }
    // The switch: br0 with the lab MTU, snooping, querier, IGMPv3; every node's port enslaved.
    assert_eq!(cat(&lab, "sw", "/sys/class/net/br0/mtu"), "1500");
    assert_eq!(cat(&lab, "sw", "/sys/class/net/br0/bridge/multicast_snooping"), "1");
    assert_eq!(cat(&lab, "sw", "/sys/class/net/br0/bridge/multicast_querier"), "1");
    assert_eq!(cat(&lab, "sw", "/sys/class/net/br0/bridge/multicast_igmp_version"), "3");
    for node in lab.nodes() {
        assert_eq!(cat(&lab, "sw", &format!("/sys/class/net/{node}/mtu")), "1500", "port {node}");
        let master = ok(lab.exec_cmd("sw", &["readlink", &format!("/sys/class/net/{node}/master")]).output().unwrap());
        assert!(master.ends_with("/br0"), "port {node} master {master}");
    }
    // status() reads the same back
    let st = lab.status().unwrap();
    assert!(st.bridge.up && st.bridge.snooping && st.bridge.querier);
    assert_eq!((st.bridge.mtu, st.bridge.igmp_version), (1500, 3));
    assert_eq!(st.bridge.addr, Some(Ipv4Addr::new(10, 77, 0, 254)));
    assert_eq!(st.nodes.len(), 4);
    for n in &st.nodes {
        assert!(n.up && n.port_up, "{n:?}");
        assert_eq!((n.mtu, n.port_mtu), (1500, 1500), "{n:?}");
        assert_eq!(n.addr, Some(lab.addr(&n.name)));
    }
    // Nothing was created in the root namespace.
    let new: Vec<_> = root_links().difference(&root_before).cloned().collect();
    for name in ["br0", "sender", "r1", "r2", "r3", "eth0"] {
        assert!(!new.iter().any(|n| n == name), "{name} appeared in the root namespace");
    }
    // Lab::open finds it and reads the settings back.
    let opened = Lab::open(&p).unwrap();
    assert_eq!(opened.config(), &cfg);
    drop(opened); // never removes anything
    assert_eq!(namespaces(&p).len(), 5);

    drop(lab); // the guard removes the lab
    assert!(namespaces(&p).is_empty(), "left: {:?}", namespaces(&p));
    lab::down(&p).unwrap(); // idempotent
    let e = Lab::open(&p).unwrap_err().to_string();
    assert!(e.contains("run `mcblast lab up`"), "{e}");
}

#[test]
fn stale_and_crashed_labs_are_removed() {
    if !privileged("stale_and_crashed_labs_are_removed") {
        return;
    }
    let cfg = config("s", 2, false);
    let p = cfg.prefix.clone();
    let _cleanup = Cleanup(p.clone());

    // A kept lab survives its handle, like one left by `mcblast lab up` or a crash.
    drop(Lab::up(&cfg).unwrap().keep());
    assert_eq!(namespaces(&p), set(&p, &["sw", "sender", "r1", "r2"]));
    // up over a stale lab replaces it (here with a different shape).
    let big = LabConfig { receivers: 3, ..cfg.clone() };
    let lab = Lab::up(&big).unwrap();
    assert_eq!(namespaces(&p), set(&p, &["sw", "sender", "r1", "r2", "r3"]));
    let lab = lab.keep();

    // Processes still inside keep namespaces alive after their names are
    // gone; with both the switch and r1 held, only deleting the interfaces
    // takes r1's eth0 (and its bridge port) away. down does that.
    let hold = |node: &str| {
        let mut c = lab
            .exec_cmd(node, &["sh", "-c", "echo inside; exec sleep 30"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        io::BufRead::read_line(&mut io::BufReader::new(c.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "inside");
        c
    };
    let mut children = [hold("sw"), hold("r1")];
    let dev = format!("/proc/{}/net/dev", children[1].id());
    assert!(std::fs::read_to_string(&dev).unwrap().contains("eth0:"));
    lab::down(&p).unwrap();
    let still = std::fs::read_to_string(&dev).unwrap();
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(namespaces(&p).is_empty(), "left: {:?}", namespaces(&p));
    assert!(!still.contains("eth0:"), "eth0 survived in the held namespace: {still}");
    lab::down(&p).unwrap();

    // A partial lab (crash during up) is found and removed by down.
    for n in ["sw", "r1"] {
        ok(Command::new("ip").args(["netns", "add", &format!("{p}{n}")]).output().unwrap());
    }
    let e = Lab::open(&p).unwrap_err().to_string();
    assert!(e.contains("incomplete") && e.contains("mcblast lab down"), "{e}");
    lab::down(&p).unwrap();
    assert!(namespaces(&p).is_empty());
}

#[test]
fn snooping_forwards_only_to_joined_receivers_and_queries_are_igmpv3() {
    if !privileged("snooping_forwards_only_to_joined_receivers_and_queries_are_igmpv3") {
        return;
    }
    let lab = Lab::up(&config("j", 4, true)).unwrap();
    let group = Ipv4Addr::new(239, 77, 1, 1);
    lab.watch_ports().unwrap();
    let igmp = lab.igmp_listener("r4").unwrap();

    let rx: Vec<_> = ["r1", "r2", "r3"].iter().map(|n| STREAM.receiver(&lab, n, group)).collect();
    let mdb = wait_members(&lab, group, &["r1", "r2", "r3"]);
    assert_eq!(members(&mdb, group), ["r1", "r2", "r3"], "{mdb:?}");

    // The bridge's queries are IGMPv3, from its own address.
    lab.restart_querier().unwrap();
    for _ in 0..2 {
        let q = igmp.next_query(Duration::from_secs(10)).unwrap().expect("no IGMP query reached r4 within 10 s");
        assert_eq!(q.version, 3, "{q:?}");
        assert_eq!(q.source, Ipv4Addr::new(10, 77, 0, 254), "{q:?}");
        assert_eq!(q.group, Ipv4Addr::UNSPECIFIED, "{q:?}");
    }
    // ...so the receivers stay in IGMPv3 mode (a v2 query would switch them to V2).
    for n in ["r1", "r2", "r3"] {
        let t = cat(&lab, n, "/proc/net/igmp");
        let eth0 = t.lines().find(|l| l.contains("eth0")).unwrap_or_default();
        assert!(eth0.trim_end().ends_with("V3"), "{n}: {t}");
    }

    let count = 200;
    STREAM.send(&lab, group, count);
    for (n, t) in ["r1", "r2", "r3"].iter().zip(rx) {
        let got = t.join().unwrap();
        assert_eq!(got, (0..count).collect::<Vec<_>>(), "{n}");
    }
    // Per port: every joined receiver was offered all datagrams (data + 3 end
    // markers); the one that never joined, and the sender's own port, none.
    for n in ["r1", "r2", "r3"] {
        assert_eq!(lab.nft_offered(n).unwrap(), count + 3, "{n}");
    }
    assert_eq!(lab.nft_offered("r4").unwrap(), 0, "r4 never joined");
    assert_eq!(lab.nft_offered("sender").unwrap(), 0);
    // After the queries were answered, all three are still members.
    assert_eq!(members(&lab.mdb().unwrap(), group), ["r1", "r2", "r3"]);
}

#[test]
fn without_snooping_the_bridge_floods_every_port_and_drops_stay_per_port() {
    if !privileged("without_snooping_the_bridge_floods_every_port_and_drops_stay_per_port") {
        return;
    }
    let lab = Lab::up(&config("f", 3, false)).unwrap();
    let group = Ipv4Addr::new(239, 77, 2, 1);
    lab.drop_every_nth("r1", 2).unwrap();
    let (r1, r2) = (STREAM.receiver(&lab, "r1", group), STREAM.receiver(&lab, "r2", group));
    let count = 50;
    STREAM.send(&lab, group, count);
    // The forward hook sees each port's copy of the flooded datagram: the
    // drop toward r1 leaves r2's copy alone.
    assert_eq!(r1.join().unwrap(), (0..count).filter(|s| s % 2 != 0).collect::<Vec<_>>());
    assert_eq!(r2.join().unwrap(), (0..count).collect::<Vec<_>>());
    assert_eq!(lab.nft_dropped("r1").unwrap(), count / 2);
    assert_eq!(lab.nft_dropped("r2").unwrap(), 0);
    // r3 never joined, yet the bridge forwarded everything toward it.
    for n in ["r1", "r2", "r3"] {
        assert_eq!(lab.nft_offered(n).unwrap(), count + 3, "{n}");
    }
    assert!(lab.mdb().unwrap().is_empty(), "no group table without snooping");
}

#[test]
fn drop_every_nth_drops_exactly_what_it_counts_toward_one_port() {
    if !privileged("drop_every_nth_drops_exactly_what_it_counts_toward_one_port") {
        return;
    }
    let lab = Lab::up(&config("d", 2, true)).unwrap();
    let group = Ipv4Addr::new(239, 77, 3, 1);
    let n = 4;
    lab.drop_every_nth("r1", n).unwrap();
    assert_eq!(lab.nft_dropped("r1").unwrap(), 0);

    let (r1, r2) = (STREAM.receiver(&lab, "r1", group), STREAM.receiver(&lab, "r2", group));
    wait_members(&lab, group, &["r1", "r2"]);
    let count = 300;
    STREAM.send(&lab, group, count);
    let (got1, got2) = (r1.join().unwrap(), r2.join().unwrap());

    let dropped = lab.nft_dropped("r1").unwrap();
    assert_eq!(dropped, count.div_ceil(n), "numgen inc mod {n}: the 1st, {}th, ... data datagram", n + 1);
    assert_eq!(got1.len() as u64, count - dropped, "r1 got exactly what the rule let through");
    // exactly the datagrams the rule picked are missing: seq 0, n, 2n, ...
    assert_eq!(got1, (0..count).filter(|s| s % n != 0).collect::<Vec<_>>());
    // the other port lost nothing; end markers were never dropped
    assert_eq!(got2, (0..count).collect::<Vec<_>>());
    assert_eq!(lab.nft_dropped("r2").unwrap(), 0);
    assert_eq!(lab.nft_offered("r1").unwrap(), count + 3);
    assert_eq!(lab.nft_offered("r2").unwrap(), count + 3);
    let st = lab.status().unwrap();
    let loss = st.loss.expect("status shows the loss rules");
    let l1 = loss.iter().find(|l| l.node == "r1").unwrap();
    assert_eq!((l1.drop_every, l1.dropped, l1.offered), (Some(n), dropped, count + 3));

    // Replacing the rule restarts its count; clearing it stops the loss.
    lab.drop_every_nth("r1", 1).unwrap();
    assert_eq!(lab.nft_dropped("r1").unwrap(), 0);
    lab.clear_drop("r1").unwrap();
    let r1 = STREAM.receiver(&lab, "r1", group);
    STREAM.send(&lab, group, 20);
    assert_eq!(r1.join().unwrap(), (0..20).collect::<Vec<_>>());
    assert_eq!(lab.nft_dropped("r1").unwrap(), 0);

    // Bad input says what to do.
    let e = lab.drop_every_nth("r7", 2).unwrap_err().to_string();
    assert!(e.contains("nodes: sender, r1, r2"), "{e}");
    assert!(lab.drop_every_nth("r1", 0).is_err());
}

#[test]
fn cli_up_status_exec_down() {
    if !privileged("cli_up_status_exec_down") {
        return;
    }
    let p = prefix("c");
    let _cleanup = Cleanup(p.clone());
    let mcblast = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mcblast")).env(lab::PREFIX_ENV, &p).args(args).output().unwrap()
    };
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).trim().to_string();

    let o = mcblast(&["lab", "status"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o), format!("mcblast: no lab is up (prefix {p}): run `mcblast lab up` first"));

    let out = ok(mcblast(&["lab", "up", "--receivers", "2", "--mtu", "1500", "--snooping", "off"]));
    assert!(out.contains("is up"), "{out}");
    assert_eq!(namespaces(&p), set(&p, &["sw", "sender", "r1", "r2"]));

    let st = ok(mcblast(&["lab", "status"]));
    assert!(st.contains("IGMP snooping off, querier on (IGMPv3"), "{st}");
    assert!(st.contains("10.77.0.12") && st.contains("mtu 1500"), "{st}");

    // exec runs in the node, stdio inherited, exit status propagated
    let a = ok(mcblast(&["lab", "exec", "r2", "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0"]));
    assert!(a.contains("10.77.0.12/24"), "{a}");
    let o = mcblast(&["lab", "exec", "r1", "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    // mcblast inside a node is this same binary
    let v = ok(mcblast(&["lab", "exec", "sender", "--", "mcblast", "--version"]));
    assert!(v.starts_with("mcblast "), "{v}");
    let o = mcblast(&["lab", "exec", "r9", "--", "true"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o), "mcblast: no lab node r9; nodes: sender, r1, r2, and sw (the switch)");

    let out = ok(mcblast(&["lab", "down"]));
    assert!(out.contains("removed (4 namespaces)"), "{out}");
    assert!(namespaces(&p).is_empty());
    let out = ok(mcblast(&["lab", "down"]));
    assert!(out.contains("nothing to remove"), "{out}");
    let o = mcblast(&["lab", "exec", "r1", "--", "true"]);
    assert!(stderr(&o).contains("run `mcblast lab up`"), "{}", stderr(&o));
}
