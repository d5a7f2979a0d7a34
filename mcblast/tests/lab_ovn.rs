//! Privileged tests of `--fabric ovn`: a real OVN (OVS userspace datapath,
//! ovn-controller per emulated hypervisor, Geneve tunnels) built by the lab.
//! Each test has its own namespace prefix (`mcbt<pid>o<tag>-`); the `Lab`
//! guard and a `LabGone` guard stop every daemon and remove every namespace
//! and file even when a test fails. Tests run one at a time (the machine has
//! 2 cores and OVS's userspace datapath is CPU-bound); every load is bounded
//! (a fixed count at 10 Mbit/s or less). Skipped, with a message, when not
//! root or when OVN is not installed (`cargo xtask setup` installs it).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mcblast::lab::ovn::{self, OvnSettings};
use mcblast::lab::{Fabric, IgmpConfig, Lab, LabConfig, LabSpec, Placement, Topology};
use serde_json::Value;

mod common;
use common::{BIN, Recv, finish, lab_prefix, nft_counter, nft_load, only_flow, sender_summary, serial, spawn_send, start_recv, summary, u};

const GROUP: Ipv4Addr = Ipv4Addr::new(239, 0, 0, 1);
const OTHER: Ipv4Addr = Ipv4Addr::new(239, 0, 0, 2);
/// Geneve's UDP port on the underlay.
const GENEVE_PORT: u16 = 6081;

/// False (after saying why the test is skipped) when the test cannot run here.
fn runnable() -> bool {
    if common::skip("OVN lab tests need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)") {
        return false;
    }
    if !ovn::installed() {
        common::skipped("OVN is not installed (openvswitch-switch, ovn-central, ovn-host): run cargo xtask setup");
        return false;
    }
    true
}

/// An OVN lab of `hosts` x `per_host` receivers with the Neutron defaults
/// (snooping on, no querier, unregistered groups not flooded), snooping as given.
fn ovn_lab(tag: &str, hosts: u32, per_host: u32, snoop: bool) -> (Lab, common::LabGone) {
    ovn_lab_with(tag, hosts, per_host, snoop, |_, _| {})
}

/// As [`ovn_lab`], the spec and settings changed by `change` before the lab is built.
fn ovn_lab_with(
    tag: &str,
    hosts: u32,
    per_host: u32,
    snoop: bool,
    change: impl FnOnce(&mut LabSpec, &mut OvnSettings),
) -> (Lab, common::LabGone) {
    let (prefix, gone) = lab_prefix(&format!("o{tag}"));
    let topology = Topology { hosts, per_host, fabric: Fabric::Ovn, placement: Placement::Spread };
    let mut spec = LabSpec {
        base: LabConfig { prefix, receivers: hosts * per_host, mtu: 9000, snooping: snoop, querier: false },
        igmp: IgmpConfig::default(),
        topology: Some(topology),
    };
    let mut settings = OvnSettings { flood_unregistered: false, ..OvnSettings::from_spec(&spec) };
    change(&mut spec, &mut settings);
    let started = Instant::now();
    let lab = Lab::up_ovn(&spec, &settings).expect("OVN lab up").with_mcblast(BIN);
    eprintln!("OVN lab {} up in {:.1} s", lab.prefix(), started.elapsed().as_secs_f64());
    (lab, gone)
}

/// Sends `n` datagrams of `len` bytes to `group` at `rate`; asserts all were sent.
fn send(lab: &Lab, group: Ipv4Addr, n: u64, len: usize, rate: &str) {
    let (g, n_s, l) = (group.to_string(), n.to_string(), len.to_string());
    let s = sender_summary(spawn_send(lab, &["-g", &g, "-n", &n_s, "-l", &l, "-b", rate]));
    assert_eq!(u(&s, "sent"), n, "{s}");
}

/// The kernel counter's one flow: every datagram exactly once, none lost; the layers add up with no path loss.
fn assert_exact(node: &str, lines: &[Value], n: u64) {
    let k = only_flow(summary(lines, "kernel"));
    assert_eq!((u(k, "received"), u(k, "lost"), u(k, "duplicates")), (n, 0, 0), "{node}: {k}");
    let layers = summary(lines, "layers");
    assert_eq!(layers["adds_up"], true, "{node}: {layers}");
    assert_eq!(u(layers, "path_lost"), 0, "{node}: {layers}");
}

/// Receivers for `members` on GROUP and `others` on OTHER (bounded by `-t`).
fn receivers(lab: &Lab, members: &[&str], others: &[&str]) -> (Vec<Recv>, Vec<Recv>) {
    let m = members.iter().map(|n| start_recv(lab, n, &[])).collect();
    let o = others.iter().map(|n| start_recv(lab, n, &["-g", &OTHER.to_string(), "-t", "8"])).collect();
    (m, o)
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn snooping_off_floods_to_non_members() {
    if !runnable() {
        return;
    }
    let _serial = serial();
    let (lab, _gone) = ovn_lab("f", 2, 2, false);
    // r1, r3 (one per host) join GROUP; r2, r4 join another group only.
    let (members, others) = receivers(&lab, &["r1", "r3"], &["r2", "r4"]);
    // OVN learns nothing with snooping off: wait_members returns at once; the joins are sent by now.
    lab.wait_members(GROUP, &names(&["r1", "r3"]), Duration::from_secs(10)).unwrap();
    send(&lab, GROUP, 300, 1470, "10M");
    for r in members {
        let node = r.node.clone();
        assert_exact(&node, &finish(r), 300);
    }
    for r in others {
        let node = r.node.clone();
        let lines = finish(r);
        let k = summary(&lines, "kernel");
        // Flooded: every datagram and the 3 end markers reached the non-member, set aside as another group's.
        assert_eq!(u(k, "other_group"), 303, "{node}: {k}");
        assert_eq!(k["flows"].as_array().map(Vec::len), Some(0), "{node}: {k}");
    }
    assert!(ovn::sbctl(lab.prefix(), &["--bare", "--columns=address", "find", "IGMP_Group", "address=239.0.0.1"]).unwrap().trim().is_empty());
}

#[test]
fn snooping_on_delivers_only_to_members() {
    if !runnable() {
        return;
    }
    let _serial = serial();
    let (lab, _gone) = ovn_lab("s", 2, 2, true);
    let (members, others) = receivers(&lab, &["r1", "r3"], &["r2", "r4"]);
    let learned = lab.wait_members(GROUP, &names(&["r1", "r3"]), Duration::from_secs(20)).unwrap();
    lab.wait_members(OTHER, &names(&["r2", "r4"]), Duration::from_secs(20)).unwrap();
    // OVN's IGMP_Group lists each member on its own chassis.
    let mut per_chassis: Vec<(String, String)> = learned.iter().map(|e| (e.port.clone(), e.state.clone())).collect();
    per_chassis.sort();
    assert_eq!(per_chassis, [("r1".to_string(), "h1".to_string()), ("r3".to_string(), "h2".to_string())]);
    // `lab status` shows OVN's view beside each receiver's own membership.
    let st = lab.ovn_status().unwrap();
    let status = st.render();
    assert!(status.contains("239.0.0.1       on h1   r1"), "{status}");
    assert!(status.contains("mcast_snoop                true"), "{status}");
    let own = |r: &str| st.memberships.iter().find(|(n, _)| n == r).map(|(_, m)| m.clone()).unwrap_or_default();
    assert!(own("r1").contains(&GROUP.to_string()) && own("r2").contains(&OTHER.to_string()), "{status}");
    send(&lab, GROUP, 300, 1470, "10M");
    for r in members {
        let node = r.node.clone();
        assert_exact(&node, &finish(r), 300);
    }
    for r in others {
        let node = r.node.clone();
        let lines = finish(r);
        let k = summary(&lines, "kernel");
        assert_eq!(u(k, "other_group"), 0, "{node}: nothing of a group it did not join: {k}");
        assert_eq!(k["flows"].as_array().map(Vec::len), Some(0), "{node}: {k}");
    }
}

/// `--mcast-flood r2`: with snooping on, the port with `options:mcast_flood=true`
/// gets every datagram of a group it never joined; the same kind of non-member
/// without it gets none; the members count exactly.
#[test]
fn mcast_flood_port_gets_a_group_it_did_not_join() {
    if !runnable() {
        return;
    }
    let _serial = serial();
    let (lab, _gone) = ovn_lab_with("p", 2, 2, true, |_, s| s.flood_ports = names(&["r2"]));
    let st = lab.ovn_status().unwrap();
    assert_eq!(st.port_options.get("r2").cloned(), Some(names(&["mcast_flood=true"])), "{}", st.render());
    assert_eq!(st.port_options.len(), 1, "{}", st.render());
    assert!(st.render().contains("r2      mcast_flood=true"), "{}", st.render());
    // r1, r3 join GROUP; r2 (flooded) and r4 join OTHER only.
    let (members, others) = receivers(&lab, &["r1", "r3"], &["r2", "r4"]);
    lab.wait_members(GROUP, &names(&["r1", "r3"]), Duration::from_secs(20)).unwrap();
    lab.wait_members(OTHER, &names(&["r2", "r4"]), Duration::from_secs(20)).unwrap();
    send(&lab, GROUP, 300, 1470, "10M");
    for r in members {
        let node = r.node.clone();
        assert_exact(&node, &finish(r), 300);
    }
    for r in others {
        let node = r.node.clone();
        let lines = finish(r);
        let k = summary(&lines, "kernel");
        // r2: every datagram and the 3 end markers, set aside as another group's; r4: nothing.
        let want = if node == "r2" { 303 } else { 0 };
        assert_eq!(u(k, "other_group"), want, "{node}: {k}");
        assert_eq!(k["flows"].as_array().map(Vec::len), Some(0), "{node}: {k}");
    }
}

/// The per-port flags name nodes of an OVN lab; anything else is a one-line error before root is needed.
#[test]
fn per_port_flags_one_line_errors() {
    let up = |args: &[&str]| {
        let mut c = std::process::Command::new(BIN);
        c.args(["lab", "up"]).args(args).env(mcblast::lab::PREFIX_ENV, "mcbtnone-").output().unwrap()
    };
    common::one_line_error(&up(&["--fabric", "ovn", "--hosts", "2", "--per-host", "2", "--mcast-flood", "r5"]), &[
        "--mcast-flood r5: no such node in this lab (sender, r1..r4)",
    ]);
    common::one_line_error(&up(&["--fabric", "vxlan", "--mcast-flood-reports", "r1"]), &["need --fabric ovn"]);
}

/// The seed's case on OVN: 1 sender -> 3 hosts x 3 receivers at 10 Mbit/s, 1470 B and 8192 B.
#[test]
fn one_to_three_by_three_at_10_mbit_every_receiver_exact() {
    if !runnable() {
        return;
    }
    let _serial = serial();
    let (lab, _gone) = ovn_lab("n", 3, 3, true);
    let all = lab.receivers();
    // 10 Mbit/s for about 1.5 s each: 1275 x 1470 B, 230 x 8192 B.
    for (len, n) in [(1470usize, 1275u64), (8192, 230)] {
        let recvs: Vec<Recv> = all.iter().map(|r| start_recv(&lab, r, &["--counter", "kernel"])).collect();
        lab.wait_members(GROUP, &all, Duration::from_secs(30)).unwrap();
        let t = Instant::now();
        send(&lab, GROUP, n, len, "10M");
        eprintln!("{len} B: {n} datagrams sent in {:.2} s", t.elapsed().as_secs_f64());
        for r in recvs {
            let node = r.node.clone();
            let lines = finish(r);
            let k = only_flow(summary(&lines, "kernel"));
            assert_eq!((u(k, "received"), u(k, "lost"), u(k, "duplicates")), (n, 0, 0), "{node} {len} B: {k}");
        }
    }
}

/// nftables on the underlay switch: drops every `every`-th Geneve packet toward
/// `host` that carries an mcblast data datagram (inner UDP payload magic "MCBL",
/// kind 0), before that host's hypervisor sees it.
fn drop_toward_host(lab: &Lab, host: &str, every: u64) {
    // Outer UDP 8 + Geneve 8 + OVN's option 8 + inner Ethernet 14 + IPv4 20 + UDP 8 = 66 bytes to the payload.
    let magic = 66 * 8;
    let kind = magic + 40;
    let rules = format!(
        "table bridge mcbtovn {{\n\
           chain uldrop {{ type filter hook forward priority filter; policy accept;\n\
             oifname \"{host}\" udp dport {GENEVE_PORT} @th,{magic},32 0x4d43424c @th,{kind},8 0 numgen inc mod {every} 0 counter drop\n\
           }}\n\
         }}\n"
    );
    nft_load(&lab.ns_name("ul"), "ovn", &rules);
}

#[test]
fn underlay_drop_toward_one_hypervisor_is_path_loss_of_its_receivers_only() {
    if !runnable() {
        return;
    }
    let _serial = serial();
    let (lab, _gone) = ovn_lab("u", 3, 2, true);
    drop_toward_host(&lab, "h2", 10);
    let all = lab.receivers();
    let recvs: Vec<Recv> = all.iter().map(|r| start_recv(&lab, r, &[])).collect();
    lab.wait_members(GROUP, &all, Duration::from_secs(30)).unwrap();
    let n = 1000;
    send(&lab, GROUP, n, 1470, "10M");
    let dropped = nft_counter(&lab.ns_name("ul"), "bridge", "mcbtovn");
    // Head-end replication: h0 sends one copy per host, so one drop is one datagram lost at every receiver of h2.
    assert_eq!(dropped, n / 10, "every 10th of {n} data datagrams toward h2");
    for r in recvs {
        let node = r.node.clone();
        let lines = finish(r);
        let on_h2 = lab.host_of(&node).as_deref() == Some("h2");
        let want = if on_h2 { dropped } else { 0 };
        let k = only_flow(summary(&lines, "kernel"));
        assert_eq!((u(k, "received"), u(k, "lost")), (n - want, want), "{node}: {k}");
        let layers = summary(&lines, "layers");
        assert_eq!(layers["adds_up"], true, "{node}: {layers}");
        assert_eq!(u(layers, "path_lost"), want, "{node}: the loss is charged to the path: {layers}");
        assert_eq!(u(layers, "kernel_dropped") + u(layers, "socket_dropped"), 0, "{node}: {layers}");
    }
}

/// `lab impair` is refused on OVN with one line saying why: tried, the program at the egress of a receiver's
/// port on its hypervisor saw only part of the copies OVS's userspace datapath handed that receiver (r1 got 902
/// of 1000 with every 10th dropped, 1 run in 3 exact), so the injected loss would not be exact.
#[test]
fn lab_impair_is_refused_on_ovn() {
    if !runnable() {
        return;
    }
    let _serial = serial();
    let (lab, _gone) = ovn_lab("i", 1, 1, true);
    let out = std::process::Command::new(BIN)
        .args(["lab", "impair", "r1", "--every", "10"])
        .env(mcblast::lab::PREFIX_ENV, lab.prefix())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!((out.status.code(), err.lines().count()), (Some(2), 1), "{err}");
    assert!(err.contains("--fabric ovn") && err.contains("--fabric bridge"), "{err}");
    assert!(lab.impaired_links().is_empty());
}

/// `lab down` after the `mcblast` that built the lab was killed with SIGKILL
/// (mid-build): every OVN daemon and namespace of the lab is gone.
#[test]
fn lab_down_removes_everything_after_kill_9() {
    if !runnable() {
        return;
    }
    let _serial = serial();
    let (prefix, _gone) = lab_prefix("ok");
    let mut up = std::process::Command::new(BIN)
        .args(["lab", "up", "--fabric", "ovn", "--hosts", "2", "--per-host", "1"])
        .env(mcblast::lab::PREFIX_ENV, &prefix)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let dir = ovn::lab_dir(&prefix);
    // Kill it once some daemons run (their pidfiles exist), or once it is done.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("h1").join("ovs-vswitchd.pid").exists() && up.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "lab up made no hypervisor in 20 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = up.kill();
    let _ = up.wait();
    let daemons = || -> Vec<String> {
        let ps = std::process::Command::new("ps").args(["-eo", "stat=,args="]).output().unwrap();
        let d = dir.display().to_string();
        String::from_utf8_lossy(&ps.stdout).lines().filter(|l| !l.starts_with('Z') && l.contains(&d)).map(str::to_string).collect()
    };
    assert!(!daemons().is_empty(), "the killed lab up left daemons behind (the case under test)");
    let out = std::process::Command::new(BIN).args(["lab", "down"]).env(mcblast::lab::PREFIX_ENV, &prefix).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(daemons(), Vec::<String>::new());
    assert!(!dir.exists(), "{} still exists", dir.display());
    let left = common::namespaces(&prefix);
    assert!(left.is_empty(), "namespaces left: {left:?}");
}

/// Drops (and counts) every IGMP packet a node sends: its reports and leaves never reach OVN.
const DROP_IGMP_OUT: &str = "table ip mcbtidle {
  chain out { type filter hook output priority filter; policy accept;
    ip protocol igmp counter drop
  }
}
";

/// The idle timeout every test below sets (OVN's smallest `mcast_idle_timeout`).
const IDLE_S: u64 = 15;

/// When each of `nodes` first appeared in and then left OVN's IGMP_Group of GROUP, as
/// seconds since `t0`: polled every 100 ms until `stop` is set or `limit` has passed.
type Seen = (Option<f64>, Option<f64>);
fn watch_members(lab: &Lab, nodes: &[&str], stop: &AtomicBool, t0: Instant, limit: Duration) -> Vec<Seen> {
    let mut seen: Vec<Seen> = vec![(None, None); nodes.len()];
    let deadline = Instant::now() + limit;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let members = lab.ovn_members(GROUP).unwrap();
        let now = t0.elapsed().as_secs_f64();
        for (i, n) in nodes.iter().enumerate() {
            let member = members.iter().any(|m| m == n);
            match seen[i] {
                (None, _) if member => seen[i].0 = Some(now),
                (Some(_), None) if !member => seen[i].1 = Some(now),
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    seen
}

/// The receiver's IGMP timing of its one group.
fn igmp_group(lines: &[Value]) -> Value {
    let igmp = lines.iter().find(|l| l["type"] == "igmp").unwrap_or_else(|| panic!("no igmp line in {lines:?}"));
    igmp["groups"][0].clone()
}

fn secs(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} is not a number: {v}")) / 1000.0
}

/// Neutron-like (snooping on, no querier) with `mcast_idle_timeout` 15 s, one receiver per host:
/// r1 leaves after 8 s and its leave reaches OVN: it stops at once; r2 leaves after 8 s
/// but its IGMP is dropped in its own namespace (a receiver that stops answering): OVN
/// forwards to it until the idle timeout from its join; r3 stays and, with no querier to
/// ask it again, is aged out at the idle timeout too. Margins: the join's second
/// unsolicited report comes up to 1 s after the first, 3 s more for OVN's aging run,
/// northd and the sender's chassis' flows on a loaded 2-core machine (and the 100 ms poll).
#[test]
fn idle_timeout_ages_out_members_that_stop_reporting() {
    if !runnable() {
        return;
    }
    let _serial = serial();
    let (lab, _gone) = ovn_lab_with("i", 3, 1, true, |_, s| s.idle_timeout_s = IDLE_S);
    assert_eq!(lab.ovn_status().unwrap().other_config.get("mcast_idle_timeout").map(String::as_str), Some("15"));
    let idle = IDLE_S as f64;
    let (t0, stop) = (Instant::now(), AtomicBool::new(false));
    let nodes = ["r1", "r2", "r3"];
    // Started together: each leave comes 8 s after its own join, however slow the start.
    let leave = ["-t", "8", "--leave-window", "11"];
    let args = [("r1", &leave[..]), ("r2", &leave), ("r3", &["-t", "21"])];
    let (seen, lines) = std::thread::scope(|sc| {
        let watch = sc.spawn(|| watch_members(&lab, &nodes, &stop, t0, Duration::from_secs(60)));
        let starting: Vec<_> = args.iter().map(|(n, a)| sc.spawn(|| start_recv(&lab, n, a))).collect();
        let recvs: Vec<Recv> = starting.into_iter().map(|h| h.join().unwrap()).collect();
        lab.wait_members(GROUP, &names(&nodes), Duration::from_secs(10)).unwrap();
        nft_load(&lab.ns_name("r2"), "idle", DROP_IGMP_OUT);
        // 100 datagrams/s for 19 s: past the idle timeout of every member.
        let n = 1900u64;
        send(&lab, GROUP, n, 1000, "0.8M");
        let lines: Vec<Vec<Value>> = recvs.into_iter().map(finish).collect();
        stop.store(true, Ordering::Relaxed);
        (watch.join().unwrap(), lines)
    });
    eprintln!("IGMP_Group (joined, left) s: {seen:?}");
    let in_ovn = |i: usize| match seen[i] {
        (Some(a), Some(b)) => b - a,
        other => panic!("{}: not seen joining and leaving OVN's IGMP_Group: {other:?}", nodes[i]),
    };
    // r1: its leave removed it from OVN at once; nothing (but what was in flight) after it.
    let g1 = igmp_group(&lines[0]);
    assert!(in_ovn(0) < 8.0 + 1.5, "r1 left OVN with its leave, after 8 s: {:?}", seen[0]);
    assert!(g1["stopped_after_leave"] == true && secs(&g1, "leave_to_last_ms") < 1.0, "{g1}");
    // r2: its leave never reached OVN (the IGMP it sent was dropped, the leave's 2 reports at least).
    assert!(nft_counter(&lab.ns_name("r2"), "ip", "mcbtidle") >= 2);
    let g2 = igmp_group(&lines[1]);
    let join_to_last = 8.0 + secs(&g2, "leave_to_last_ms");
    eprintln!("r2: join -> last datagram {join_to_last:.2} s ({g2})");
    assert!(g2["stopped_after_leave"] == true && (idle - 1.5..=idle + 4.0).contains(&join_to_last), "{g2}");
    assert!((idle - 1.5..=idle + 4.0).contains(&in_ovn(1)), "r2 aged out of OVN: {:?}", seen[1]);
    // r3: never left, yet aged out as well: nothing asked it to report again.
    assert!((idle - 1.5..=idle + 4.0).contains(&in_ovn(2)), "r3 aged out of OVN: {:?}", seen[2]);
    let k3 = only_flow(summary(&lines[2], "kernel"));
    eprintln!("r3: received {} of 1900", u(k3, "received"));
    assert!(u(k3, "received") < 1900, "r3 stopped getting the group while the sender still sent: {k3}");
}

/// Counts the IGMPv2 membership reports (type 0x16) a node receives from the others.
fn count_foreign_v2_reports(lab: &Lab, node: &str) {
    let own = lab.addr(node);
    let rules = format!(
        "table ip mcbtrep {{\n  chain in {{ type filter hook input priority filter; policy accept;\n    \
         ip protocol igmp ip saddr != {own} @th,0,8 0x16 counter\n  }}\n}}\n"
    );
    nft_load(&lab.ns_name(node), "rep", &rules);
}

/// An OVN lab of `per_host` receivers all on h1 with a querier, IGMPv2 on every node
/// (`force_igmp_version=2`), queries every `query_s` seconds, idle timeout 15 s,
/// `mcast_flood_reports` on `flood_reports`.
fn igmpv2_lab(tag: &str, per_host: u32, query_s: u64, flood_reports: &[&str]) -> (Lab, common::LabGone) {
    ovn_lab_with(tag, 1, per_host, true, |spec, s| {
        spec.igmp = IgmpConfig { version: 2, query_interval_cs: query_s * 100, membership_interval_cs: IDLE_S * 100 };
        spec.base.querier = true;
        (s.querier, s.query_interval_s, s.idle_timeout_s) = (true, query_s, IDLE_S);
        s.flood_reports_ports = names(flood_reports);
    })
}

/// What each receiver of `nodes` got while the sender sent `n` datagrams at 50/s, with
/// the IGMPv2 reports of the others it received counted: (OVN's IGMP_Group times, a
/// leave only while the sender sent; lines). The receivers in `first` join (and OVN
/// lists them) before the others start: one that hears the others' reports would
/// otherwise suppress its own join report as well (Linux delays it up to 0.2 s and
/// drops it on hearing another's) and stay out until it wins a query.
fn igmpv2_run(lab: &Lab, nodes: &[&str], first: &[&str], n: u64) -> (Vec<Seen>, Vec<Vec<Value>>) {
    for node in nodes {
        count_foreign_v2_reports(lab, node);
    }
    let (t0, stop) = (Instant::now(), AtomicBool::new(false));
    let bound = &(n / 50 + 15).to_string();
    std::thread::scope(|sc| {
        let watch = sc.spawn(|| watch_members(lab, nodes, &stop, t0, Duration::from_secs(90)));
        let waves: [Vec<usize>; 2] = [false, true].map(|rest| (0..nodes.len()).filter(|&i| first.contains(&nodes[i]) != rest).collect());
        let mut recvs: Vec<Option<Recv>> = nodes.iter().map(|_| None).collect();
        for wave in waves.iter().filter(|w| !w.is_empty()) {
            let starting: Vec<_> = wave.iter().map(|&i| (i, sc.spawn(move || start_recv(lab, nodes[i], &["-t", bound])))).collect();
            for (i, h) in starting {
                recvs[i] = Some(h.join().unwrap());
            }
            let joined: Vec<&str> = wave.iter().map(|&i| nodes[i]).collect();
            lab.wait_members(GROUP, &names(&joined), Duration::from_secs(10)).unwrap();
        }
        let recvs: Vec<Recv> = recvs.into_iter().flatten().collect();
        send(lab, GROUP, n, 1000, "0.4M");
        let sent = t0.elapsed().as_secs_f64();
        // A receiver that dropped out for good never gets the end markers: -t ends it.
        let lines: Vec<Vec<Value>> = recvs.into_iter().map(finish).collect();
        stop.store(true, Ordering::Relaxed);
        // Leaving IGMP_Group after the sender was done is the receivers' own leave as they exit.
        let seen = watch.join().unwrap().into_iter().map(|(j, l)| (j, l.filter(|&l| l < sent))).collect();
        (seen, lines)
    })
}

/// One receiver's figures: (received, foreign IGMPv2 reports it got, its IGMP timing line).
fn igmpv2_figures(lab: &Lab, node: &str, lines: &[Value]) -> (u64, u64, Value) {
    let k = only_flow(summary(lines, "kernel"));
    let igmp = lines.iter().find(|l| l["type"] == "igmp").unwrap_or_else(|| panic!("{node}: no igmp line")).clone();
    let reports = nft_counter(&lab.ns_name(node), "ip", "mcbtrep");
    eprintln!("{node}: received {}, others' IGMPv2 reports {reports}, igmp {igmp}", u(k, "received"));
    (u(k, "received"), reports, igmp)
}

/// General queries seen: at least `min`, every one OVN's (IGMPv3, from mcast_ip4_src).
fn assert_ovn_queries(node: &str, igmp: &Value, min: usize) {
    let q = igmp["queries"].as_array().unwrap();
    assert!(q.len() >= min, "{node}: {igmp}");
    assert!(q.iter().all(|q| q["version"] == 3 && q["source"] == "10.77.0.254" && q["group"] == "0.0.0.0"), "{node}: {igmp}");
}

/// The reported OVN behaviour: IGMPv2 receivers on one chassis suppressing each
/// other's reports (each hears another's report to the group after a query and keeps
/// its own), so OVN ages the silent ones out. On 23.03 with default ports OVN punts
/// every report to ovn-controller and forwards it to no other port: no receiver hears
/// another's report, each answers every query itself, none ever leaves IGMP_Group and
/// every one gets every datagram, over 5 queries and more than one idle timeout.
#[test]
fn igmpv2_receivers_on_one_chassis_do_not_suppress_each_other() {
    if !runnable() {
        return;
    }
    let _serial = serial();
    let nodes = ["r1", "r2", "r3"];
    let (lab, _gone) = igmpv2_lab("v", 3, 5, &[]);
    // 25 s at 50/s: 5 queries, the idle timeout more than once over.
    let n = 1250;
    let (seen, lines) = igmpv2_run(&lab, &nodes, &[], n);
    for (i, node) in nodes.iter().enumerate() {
        let (received, reports, igmp) = igmpv2_figures(&lab, node, &lines[i]);
        assert_eq!(reports, 0, "{node} heard none of the others' reports");
        assert_eq!(received, n, "{node}: {igmp}");
        // A member aged out stays out until it answers a query (5 s later at most), losing
        // data; a gap the timing shows here lost nothing (every datagram arrived): a stall
        // of the loaded machine, never that long.
        for d in igmp["dropouts"].as_array().unwrap() {
            assert!(secs(d, "duration_ms") < 5.0, "{node}: {d}");
        }
        assert_ovn_queries(node, &igmp, 4);
        assert!(seen[i].0.is_some() && seen[i].1.is_none(), "{node} never left IGMP_Group: {:?}", seen[i]);
    }
}

/// What the suppression does when reports do reach a member on the same chassis:
/// `--mcast-flood-reports r2` forwards the others' reports to r2 (r1, r3..r5 hear none).
/// After a query r2 hears a report to its group before its own random delay (up to the
/// 1 s max response) runs out, keeps its own, and with queries every 10 s and an idle
/// timeout of 15 s one such query is enough for OVN to age it out while it is still
/// joined: it loses data, and a dropout it recovers from starts about 5 s (15 − 10, +1
/// for its delay, +4 s for OVN on a loaded machine, −1.5 for whole seconds) after the
/// query before it. r2 answers first with a chance of 1 in 5 per query; it stays in
/// through all 4 queries of the run with a chance of 1 in 625.
#[test]
fn igmpv2_member_hearing_the_others_reports_suppresses_its_own_and_drops_out() {
    if !runnable() {
        return;
    }
    let _serial = serial();
    let nodes = ["r1", "r2", "r3", "r4", "r5"];
    let (lab, _gone) = igmpv2_lab("w", 5, 10, &["r2"]);
    // 45 s at 50/s: 4 queries.
    let n = 2250;
    let (seen, lines) = igmpv2_run(&lab, &nodes, &["r2"], n);
    for (i, node) in nodes.iter().enumerate() {
        let (received, reports, igmp) = igmpv2_figures(&lab, node, &lines[i]);
        assert_ovn_queries(node, &igmp, 3);
        if *node != "r2" {
            assert_eq!((reports, received), (0, n), "{node}: {igmp}");
            assert!(seen[i].1.is_none(), "{node} never left IGMP_Group: {:?}", seen[i]);
            continue;
        }
        assert!(reports >= 4, "r2 heard the others' reports: {reports}");
        assert!(seen[i].1.is_some(), "r2 was aged out of IGMP_Group while joined: {:?}", seen[i]);
        assert!(received < n, "r2 lost data while joined: {igmp}");
        for d in igmp["dropouts"].as_array().unwrap() {
            let after_query = secs(d, "query_to_gap_ms");
            assert!((3.5..=IDLE_S as f64 - 10.0 + 1.0 + 4.0).contains(&after_query), "r2: {d}");
        }
    }
}

/// A drop coverage counter of one hypervisor in `lab status`'s datapath drops (0 when absent).
fn drop_counter(st: &mcblast::lab::OvnStatus, host: &str, counter: &str) -> u64 {
    let d = st.datapath_drops.iter().find(|d| d.host == host).unwrap_or_else(|| panic!("no {host}: {}", st.render()));
    assert_eq!(d.unreadable, None, "{}", st.render());
    d.counters.iter().find(|(c, _)| c == counter).map_or(0, |(_, n)| *n)
}

/// Loss inside the userspace datapath shows in `lab status`: with snooping on and
/// unregistered groups not flooded, every datagram to a group nobody joined (and its
/// 3 end markers) is dropped by h0's OpenFlow pipeline, OVS's `drop_action_of_pipeline`
/// coverage counter, counted per packet also on datapath-cached flows; no receiver sees
/// any of it. (OVS adds its threads' coverage counts to the totals about once a second:
/// polled, up to 10 s.)
#[test]
fn datapath_drops_of_an_unregistered_group_show_in_lab_status() {
    if !runnable() {
        return;
    }
    let _serial = serial();
    let (lab, _gone) = ovn_lab("d", 1, 2, true);
    let (members, others) = receivers(&lab, &["r1"], &["r2"]);
    lab.wait_members(GROUP, &names(&["r1"]), Duration::from_secs(20)).unwrap();
    lab.wait_members(OTHER, &names(&["r2"]), Duration::from_secs(20)).unwrap();
    const PIPELINE: &str = "drop_action_of_pipeline";
    let before = lab.ovn_status().unwrap();
    let (h0_before, h1_before) = (drop_counter(&before, "h0", PIPELINE), drop_counter(&before, "h1", PIPELINE));
    // 239.0.0.3: nobody joined it.
    let n = 200u64;
    send(&lab, Ipv4Addr::new(239, 0, 0, 3), n, 1000, "1M");
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let st = lab.ovn_status().unwrap();
        if drop_counter(&st, "h0", PIPELINE) - h0_before >= n + 3 || Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let status = after.render();
    assert_eq!(drop_counter(&after, "h0", PIPELINE) - h0_before, n + 3, "{status}");
    assert_eq!(drop_counter(&after, "h1", PIPELINE) - h1_before, 0, "nothing of it reached h1: {status}");
    assert!(status.contains(&format!("  h0   {PIPELINE} {}", drop_counter(&after, "h0", PIPELINE))), "{status}");
    // The member of GROUP then gets GROUP exactly, and neither receiver saw 239.0.0.3.
    send(&lab, GROUP, 100, 1000, "1M");
    for r in members.into_iter().chain(others) {
        let node = r.node.clone();
        let lines = finish(r);
        if node == "r1" {
            assert_exact(&node, &lines, 100);
        }
        assert_eq!(u(summary(&lines, "kernel"), "other_group"), 0, "{node}");
    }
}

/// Loss inside the OVS datapath toward one receiver: an OVN ACL (`to-lport`, drop)
/// on r2's port for about a second in the middle of a stream. r2 loses a run of
/// datagrams, all charged to the path, r1 gets every one. OVS's drop coverage
/// counters do not see them: the datapath's action for the stream still delivers to
/// r1, only r2's copy is left out, and `drop_action_of_pipeline` counts packets whose
/// whole action is a drop; on h1 it rises only by the receivers' IGMP (at most 2
/// reports per join and per leave: 8), on h0 not at all.
#[test]
fn acl_drop_of_one_receivers_copy_is_path_loss_not_in_the_drop_counters() {
    if !runnable() {
        return;
    }
    let _serial = serial();
    let (lab, _gone) = ovn_lab("a", 1, 2, true);
    let recvs: Vec<Recv> = ["r1", "r2"].iter().map(|n| start_recv(&lab, n, &[])).collect();
    lab.wait_members(GROUP, &names(&["r1", "r2"]), Duration::from_secs(20)).unwrap();
    const PIPELINE: &str = "drop_action_of_pipeline";
    let before = lab.ovn_status().unwrap();
    let n = 1500u64;
    let sender = spawn_send(&lab, &["-g", &GROUP.to_string(), "-n", &n.to_string(), "--pps", "500", "-l", "1000"]);
    std::thread::sleep(Duration::from_millis(1000));
    let acl = ["acl-add", ovn::LSWITCH, "to-lport", "1001", "outport == \"r2\" && ip4.dst == 239.0.0.1 && udp", "drop"];
    ovn::nbctl(lab.prefix(), &acl).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    ovn::nbctl(lab.prefix(), &["acl-del", ovn::LSWITCH]).unwrap();
    assert_eq!(u(&sender_summary(sender), "sent"), n);
    let lines: Vec<Vec<Value>> = recvs.into_iter().map(finish).collect();
    // OVS folds its threads' coverage counts into the totals about once a second.
    std::thread::sleep(Duration::from_millis(2500));
    let after = lab.ovn_status().unwrap();
    let lost = |i: usize| u(only_flow(summary(&lines[i], "kernel")), "lost");
    assert_exact("r1", &lines[0], n);
    let layers = summary(&lines[1], "layers");
    assert!(lost(1) > 100, "the ACL dropped about a second at 500/s: {layers}");
    assert_eq!((u(layers, "path_lost"), &layers["adds_up"]), (lost(1), &Value::Bool(true)), "{layers}");
    let delta = |h: &str| drop_counter(&after, h, PIPELINE) - drop_counter(&before, h, PIPELINE);
    eprintln!("r2 lost {}; {PIPELINE}: h0 +{}, h1 +{}", lost(1), delta("h0"), delta("h1"));
    assert_eq!(delta("h0"), 0, "{}", after.render());
    assert!(delta("h1") <= 8, "{}", after.render());
}
