//! Loss attribution on the lab, against ground truth: loss injected at one
//! layer at a time (nftables on the bridge = path, nftables in a receiver's
//! namespace = kernel, a tiny socket buffer with a slow reader = socket)
//! must be charged to that layer only, with the exact count the injector
//! reports, and the receiver's waterfall must add up. Privileged: skipped
//! with a message when not root. Every lab is removed when its test ends.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use mcblast::lab::Lab;
use serde_json::Value;

mod common;
use common::*;

const NEEDS: &str = "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF) for namespaces, XDP and tracepoints";

fn layers(lines: &[Value]) -> &Value {
    summary(lines, "layers")
}

/// Data datagrams the tracer charged to `reason` (0 when absent).
fn reason_data(l: &Value, reason: &str) -> u64 {
    l["reasons"].as_array().unwrap().iter().filter(|r| r["reason"] == reason).map(|r| u(r, "data")).sum()
}

/// Runs the sender; returns how many data datagrams it sent.
fn send(lab: &Lab, args: &[&str]) -> u64 {
    u(&sender_summary(spawn_send(lab, args)), "sent")
}

/// The checks every waterfall must pass: it adds up, and only the layers
/// named in `charged` lost anything.
fn check_waterfall(node: &str, l: &Value, sent: u64, charged: &[&str]) {
    assert_eq!(l["adds_up"], true, "{node}: {l}");
    assert_eq!(l["unaccounted"].as_i64(), Some(0), "{node}: {l}");
    assert_eq!(u(l, "expected"), sent, "{node}: {l}");
    assert_eq!(u(l, "path_duplicates"), 0, "{node}: {l}");
    for field in ["path_lost", "kernel_dropped", "socket_dropped", "unspecified", "no_listener", "unread_at_close"] {
        if !charged.contains(&field) {
            assert_eq!(u(l, field), 0, "{node}: {field} charged for loss that happened elsewhere: {l}");
        }
    }
    let lost = u(l, "path_lost") + u(l, "kernel_dropped") + u(l, "socket_dropped");
    assert_eq!(u(l, "read") + lost, sent, "{node}: {l}");
}

#[test]
fn path_loss_is_charged_to_the_path_on_that_receiver_only() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("a", 2);
    lab.drop_every_nth("r2", 10).expect("nft rule");
    let recvs: Vec<Recv> = lab.receivers().iter().map(|n| start_recv(&lab, n, &[])).collect();
    wait_members(&lab);
    let sent = send(&lab, &["-n", "1000", "--pps", "5000", "-l", "1470"]);
    assert_eq!(sent, 1000);
    let dropped = lab.nft_dropped("r2").expect("nft counter");
    assert_eq!(dropped, 100, "every 10th of 1000 data datagrams");
    for r in recvs {
        let node = r.node.clone();
        let lines = finish(r);
        let l = layers(&lines);
        if node == "r2" {
            check_waterfall(&node, l, sent, &["path_lost"]);
            assert_eq!(u(l, "path_lost"), dropped, "{node}: {l}");
            assert_eq!(u(l, "reached_driver"), sent - dropped, "{node}: {l}");
        } else {
            check_waterfall(&node, l, sent, &[]);
            assert_eq!(u(l, "read"), sent, "{node}: {l}");
        }
    }
}

#[test]
fn netfilter_drop_in_the_receiver_is_charged_to_the_kernel_with_its_reason() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("b", 2);
    // Every 7th mcblast data datagram (magic after the UDP header, kind byte
    // 0), on r1's input hook: after its driver, before its socket.
    let rules = "table inet mcbt {\n\
        chain input { type filter hook input priority filter; policy accept;\n\
          udp dport 5001 @th,64,32 0x4d43424c @th,104,8 0 numgen inc mod 7 0 counter drop comment \"every 7th\"\n\
        }\n\
      }\n";
    nft_load(&lab.ns_name("r1"), "b", rules);
    // r1 also reports per interval.
    let recvs: Vec<Recv> =
        lab.receivers().iter().map(|n| start_recv(&lab, n, if n == "r1" { &["-i", "0.1"] } else { &[] })).collect();
    wait_members(&lab);
    let sent = send(&lab, &["-n", "1000", "--pps", "5000", "-l", "1470"]);
    assert_eq!(sent, 1000);
    let dropped = nft_counter(&lab.ns_name("r1"), "inet", "mcbt");
    assert_eq!(dropped, 143, "every 7th of 1000 data datagrams: 0, 7, ..., 994");
    for r in recvs {
        let node = r.node.clone();
        let lines = finish(r);
        let l = layers(&lines);
        if node == "r1" {
            check_waterfall(&node, l, sent, &["kernel_dropped"]);
            assert_eq!(u(l, "kernel_dropped"), dropped, "{node}: {l}");
            assert_eq!(reason_data(l, "NETFILTER_DROP"), dropped, "{node}: {l}");
            assert_eq!(u(l, "reached_driver"), sent, "{node}: {l}");
            // Interval lines: deltas that never exceed the run's total.
            let ivs: Vec<&Value> =
                lines.iter().filter(|v| v["type"] == "interval" && v["counter"] == "layers").collect();
            assert!(!ivs.is_empty(), "{node}: no layers interval lines");
            let sum: u64 = ivs.iter().map(|v| u(v, "kernel_dropped")).sum();
            assert!(sum <= dropped, "{node}: intervals charged {sum} > {dropped}");
            assert!(ivs.iter().all(|v| u(v, "socket_dropped") == 0 && v["end_s"].as_f64() > v["start_s"].as_f64()));
            // veth's own drop counters (read each interval) saw nothing: the drops were netfilter's.
            assert!(ivs.iter().all(|v| v["driver_dropped"] == 0 && v["reassembly_failed"] == 0), "{ivs:?}");
            assert_eq!(l["driver"]["dropped"], 0, "{node}: {l}");
        } else {
            check_waterfall(&node, l, sent, &[]);
            assert_eq!(u(l, "read"), sent, "{node}: {l}");
            assert_eq!(reason_data(l, "NETFILTER_DROP"), 0, "{node}: r1's drops are not r2's: {l}");
        }
    }
}

#[test]
fn full_socket_buffer_is_charged_to_the_socket() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("c", 1);
    // A receive buffer of one datagram and a reader that sleeps 2 ms per
    // datagram, against 5000 datagrams/s.
    let r = start_recv(&lab, "r1", &["--rcvbuf", "2000", "--read-delay-us", "2000"]);
    wait_members(&lab);
    let before = snmp(&lab, "r1", "Udp", "RcvbufErrors");
    let sent = send(&lab, &["-n", "1000", "--pps", "5000", "-l", "1470"]);
    assert_eq!(sent, 1000);
    let lines = finish(r);
    let rcvbuf_errors = snmp(&lab, "r1", "Udp", "RcvbufErrors") - before;
    let l = layers(&lines);
    check_waterfall("r1", l, sent, &["socket_dropped"]);
    let socket = u(l, "socket_dropped");
    assert!(socket > 0, "the slow reader must overflow its buffer: {l}");
    assert_eq!(reason_data(l, "SOCKET_RCVBUFF"), socket, "{l}");
    // Ground truth: the namespace's RcvbufErrors and the socket's own drop
    // counter count every datagram, end-of-flow markers included.
    let markers: u64 = l["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["reason"] == "SOCKET_RCVBUFF")
        .map(|r| u(r, "end"))
        .sum();
    assert_eq!(socket + markers, rcvbuf_errors, "{l}");
    assert_eq!(u(l, "so_rxq_ovfl"), rcvbuf_errors, "{l}");
    assert_eq!(l["host"]["udp_rcvbuf_errors"].as_u64(), Some(rcvbuf_errors), "{l}");
    // The flow's row: every datagram the socket dropped is the flow's.
    let f = &l["flows"][0];
    assert_eq!((u(f, "socket_dropped"), u(f, "kernel_dropped")), (socket, 0), "{f}");
    assert_eq!((f["lost_after_driver"].as_i64(), f["unaccounted"].as_i64()), (Some(socket as i64), Some(0)), "{f}");
}

/// IDs of the BPF programs named `name` that process `pid` holds (its
/// descriptors' fdinfo names each program's id; bpftool names the program).
fn bpf_progs_of(name: &str, pid: u32) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .flat_map(|t| t.lines().filter_map(|l| l.strip_prefix("prog_id:")?.trim().parse().ok()).collect::<Vec<u64>>())
        .collect();
    ids.sort();
    ids.dedup();
    ids.retain(|id| {
        let out = Command::new("bpftool").args(["-j", "prog", "show", "id", &id.to_string()]).output().unwrap();
        serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|v| v["name"] == name)
    });
    ids
}

#[test]
fn sigkilled_receiver_leaves_no_drop_tracer() {
    if common::skip(NEEDS) {
        return;
    }
    if Command::new("bpftool").arg("version").output().is_err() {
        common::skipped("bpftool is not installed (apt-get install -y bpftool)");
        return;
    }
    let _serial = serial();
    let lab = lab("d", 1);
    let mut r = start_recv(&lab, "r1", &[]);
    let pid = r.child.id();
    let ids = bpf_progs_of("mcblast_drops", pid);
    assert_eq!(ids.len(), 1, "recv should hold one drop tracer");
    r.child.kill().unwrap(); // SIGKILL
    r.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let gone = !Command::new("bpftool")
            .args(["prog", "show", "id", &ids[0].to_string()])
            .output()
            .unwrap()
            .status
            .success();
        if gone {
            break;
        }
        assert!(Instant::now() < deadline, "the drop tracer outlived a SIGKILLed receiver");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Data datagrams the library-level tests send.
const LIB_N: u64 = 200;

/// Library level, in a namespace pair of its own: the counter and the drop
/// tracer (`which`) on the receiving end, which joins a group but binds no
/// port, and drops every 5th data datagram with nftables on its input hook.
/// The tracer must charge exactly the rule's count to NETFILTER_DROP and
/// the rest, exactly Udp IgnoredMulti, to "no listener".
fn netfilter_and_no_listener(tag: &str, which: mcblast::recv::kernel::DropTracer) {
    use mcblast::recv::attrib::{self, Layer, ReasonNames, Symbols};
    use mcblast::recv::kernel::KernelCounter;
    use mcblast::netns::NetNs;
    use mcblast_common::maps::Config;
    use mcblast_common::wire::{Header, Kind, Packet};

    const PORT: u16 = 47002;
    let group = Ipv4Addr::new(239, 7, 7, 7);
    let pid = std::process::id();
    let a = NetNs::new(&format!("mcbt{pid}{tag}-a")).expect("namespace a");
    let b = NetNs::new(&format!("mcbt{pid}{tag}-b")).expect("namespace b");
    for ns in [&a, &b] {
        ns.exec("sh", &["-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6"]).unwrap();
    }
    a.exec("ip", &["link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b.name()]).unwrap();
    a.exec("ip", &["link", "set", "va", "up"]).unwrap();
    a.exec("ip", &["addr", "add", "10.78.0.1/24", "dev", "va"]).unwrap();
    a.exec("ip", &["route", "add", "224.0.0.0/4", "dev", "va"]).unwrap();
    b.exec("ip", &["link", "set", "vb", "up"]).unwrap();
    b.exec("ip", &["addr", "add", "10.78.0.2/24", "dev", "vb"]).unwrap();
    b.exec("nft", &["add table inet t; add chain inet t in { type filter hook input priority filter; }"]).unwrap();
    b.exec("nft", &[&format!("add rule inet t in udp dport {PORT} @th,104,8 0 numgen inc mod 5 0 counter drop")]).unwrap();

    let btf = mcblast::sys::btf::Btf::from_kernel().expect("kernel BTF");
    let names = ReasonNames::from_btf(&btf).expect("drop reasons");
    let unspecified = names.value("NOT_SPECIFIED").expect("NOT_SPECIFIED");
    let (k, _membership) = b
        .run(move || -> anyhow::Result<_> {
            let iface = mcblast::iface::lookup("vb")?;
            let cfg = Config { port: PORT, run_filter: 0, sink: 0, clock: 0, ..Config::default() };
            let mut k = KernelCounter::attach(&iface, mcblast::recv::kernel::XdpMode::Auto, cfg)?;
            let got = k.trace_drops(&iface, unspecified, which)?;
            assert!(which == mcblast::recv::kernel::DropTracer::Auto || got == which);
            let fd = mcblast::sys::net::udp_socket()?;
            mcblast::sys::net::join_group(&fd, group, iface.index)?;
            Ok((k, fd))
        })
        .expect("enter namespace b")
        .expect("counter, tracer and join");
    let ignored = |ns: &NetNs| {
        let out = Command::new("ip").args(["netns", "exec", ns.name(), "cat", "/proc/net/snmp"]).output().unwrap();
        attrib::snmp_value(&String::from_utf8_lossy(&out.stdout), "Udp", "IgnoredMulti").unwrap()
    };
    let before = ignored(&b);
    a.run(move || {
        let s = std::net::UdpSocket::bind("10.78.0.1:0").unwrap();
        s.set_multicast_ttl_v4(1).unwrap();
        for seq in 0..LIB_N {
            let mut buf = vec![0u8; 100];
            Header { kind: Kind::Data, flags: 0, run: 9, flow: 0, seq, tx_ns: 0, len: 100, clock: 0 }
                .emit(&mut Packet::new_unchecked(&mut buf[..]));
            s.send_to(&buf, (group, PORT)).unwrap();
            if seq % 32 == 31 {
                std::thread::sleep(Duration::from_millis(2)); // well below veth's ring
            }
        }
    })
    .unwrap();
    // The drops follow the XDP count within the same softirq: wait for both.
    let deadline = Instant::now() + Duration::from_secs(10);
    let drops = loop {
        let d = k.drops().unwrap();
        let seen: u64 = k.flows().unwrap().iter().map(|(_, s)| s.received).sum();
        if seen == LIB_N && d.values().sum::<u64>() >= LIB_N {
            break d;
        }
        assert!(Instant::now() < deadline, "counted {seen} of {LIB_N}; drops {d:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let listing = Command::new("ip").args(["netns", "exec", b.name(), "nft", "list", "table", "inet", "t"]).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let filtered: u64 = listing
        .split("counter packets ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("rule counter");
    assert_eq!(filtered, LIB_N / 5);
    let ignored_multi = ignored(&b) - before;
    assert_eq!(ignored_multi, LIB_N - filtered, "ground truth: Udp IgnoredMulti");
    let syms = Symbols::load();
    let reasons = attrib::reason_counts(&drops, &names, |a| syms.lookup(a));
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    for r in &reasons {
        assert_eq!(r.end + r.other + r.fragments, 0, "{r:?}");
        match r.reason.as_str() {
            "NETFILTER_DROP" => assert_eq!((r.layer, r.data), (Layer::Kernel, filtered), "{r:?}"),
            "NOT_SPECIFIED" => assert_eq!((r.layer, r.data), (Layer::NoListener, ignored_multi), "{r:?}"),
            _ => panic!("unexpected reason {r:?}"),
        }
    }
}

#[test]
fn netfilter_and_no_listener_with_the_kernels_tracepoint() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    netfilter_and_no_listener("e", mcblast::recv::kernel::DropTracer::Auto);
}

/// The tracer built for kernels 5.17 to 6.10 (no receiving socket in the
/// tracepoint) loads here too, and counts the same.
#[test]
fn netfilter_and_no_listener_with_the_older_tracepoint() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    netfilter_and_no_listener("g", mcblast::recv::kernel::DropTracer::WithoutSocket);
}

#[test]
fn another_sockets_overflow_on_the_port_is_not_charged() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("f", 1);
    let r = start_recv(&lab, "r1", &[]);
    // A second socket on the same port and group in r1, with the smallest
    // buffer and never read: multicast gives it a copy of every datagram,
    // and it overflows; those drops are its own, not the receiver's.
    let squatter = lab
        .run_in("r1", || -> anyhow::Result<_> {
            let (fd, _) = mcblast::sys::net::recv_socket(&mcblast::sys::net::RecvSocketOpts { port: 5001, rcvbuf: 1 })?;
            let iface = mcblast::iface::lookup("eth0")?;
            mcblast::sys::net::join_group(&fd, Ipv4Addr::new(239, 0, 0, 1), iface.index)?;
            Ok(fd)
        })
        .expect("enter r1")
        .expect("squatter socket");
    wait_members(&lab);
    let before = snmp(&lab, "r1", "Udp", "RcvbufErrors");
    let sent = send(&lab, &["-n", "1000", "--pps", "5000", "-l", "1470"]);
    assert_eq!(sent, 1000);
    let lines = finish(r);
    let squatter_drops = mcblast::sys::net::socket_drops(&squatter).unwrap() as u64;
    assert!(squatter_drops > 900, "the squatter must overflow: {squatter_drops}");
    assert_eq!(snmp(&lab, "r1", "Udp", "RcvbufErrors") - before, squatter_drops);
    let l = layers(&lines);
    check_waterfall("r1", l, sent, &[]);
    assert_eq!(u(l, "read"), sent, "{l}");
    assert_eq!(reason_data(l, "SOCKET_RCVBUFF"), 0, "another socket's drops: {l}");
}

/// The receiver NIC/driver layer from the driver's own counters: with
/// `--sink` the kernel counter drops (XDP_DROP) every datagram it counted,
/// and veth (native XDP) counts each one in its `rx_queue_N_xdp_drops`
/// statistic, which the receiver reads with SIOCETHTOOL. Ground truth: the
/// sender's data datagrams and end-of-flow markers (no loss on the lab).
#[test]
fn sink_drops_are_counted_by_the_veth_drivers_own_statistics() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("s", 1);
    // veth counts XDP drops in native mode only (auto would choose tc on veth).
    let r = start_recv(&lab, "r1", &["--sink", "--counter", "kernel", "--xdp-mode", "native"]);
    assert_eq!(r.begin["xdp_mode"], "native", "{}", r.begin);
    wait_members(&lab);
    let s = sender_summary(spawn_send(&lab, &["-n", "1000", "--pps", "5000", "-l", "1470"]));
    let (sent, markers) = (u(&s, "sent"), u(&s, "end_markers"));
    assert_eq!(sent, 1000);
    let lines = finish(r);
    let l = layers(&lines);
    assert_eq!(u(l, "sunk"), sent, "{l}");
    assert_eq!(u(l, "path_lost"), 0, "{l}");
    let d = &l["driver"];
    let counters = d["counters"].as_array().unwrap_or_else(|| panic!("no driver layer: {l}"));
    assert!(!counters.is_empty(), "{l}");
    for c in counters {
        let name = c["name"].as_str().unwrap();
        assert!(name.starts_with("rx_queue_") && name.ends_with("_xdp_drops"), "only XDP drops on this path: {l}");
    }
    // Every data datagram and every end marker the counter dropped.
    assert_eq!(u(d, "dropped"), sent + markers, "{l}");
    // XDP ran on each of them (and on whatever else arrived: IGMP queries).
    let xdp_packets: u64 = l["ethtool"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(n, _)| n.starts_with("rx_queue_") && n.ends_with("_xdp_packets"))
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    assert!(xdp_packets >= sent + markers, "{l}");
}

/// Per-flow rows: three flows; every 10th data datagram of one of them
/// (matched by its UDP source port on the bridge port toward r1) dropped on
/// the path, and every 10th of another dropped by an nft input rule in r1's
/// namespace (after the driver). The sender's namespace has exactly three
/// ephemeral ports, so the rules can name them before the run; which flow
/// got which, the sender reports. The path loss, the kernel drops (the drop
/// tracer reads each dropped datagram's flow) and the reads are exact per
/// flow, and nothing is charged to the third.
#[test]
fn loss_on_one_flow_is_charged_to_that_flow_only() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("p", 1);
    sh(&lab.ns_name("sender"), "echo '41000 41002' > /proc/sys/net/ipv4/ip_local_port_range");
    let rules = "table bridge mcbtflow {\n\
          chain forward { type filter hook forward priority filter - 10; policy accept;\n\
            oifname \"r1\" udp sport 41001 @th,104,8 0 numgen inc mod 10 0 counter drop\n\
          }\n\
        }\n";
    nft_load(&lab.access_ns("r1"), "p", rules);
    let input = "table inet mcbtflowk {\n\
          chain input { type filter hook input priority filter; policy accept;\n\
            udp sport 41002 @th,104,8 0 numgen inc mod 10 0 counter drop\n\
          }\n\
        }\n";
    nft_load(&lab.ns_name("r1"), "pk", input);
    let r = start_recv(&lab, "r1", &["--expect-flows", "3"]);
    wait_members(&lab);
    let s = sender_summary(spawn_send(&lab, &["-n", "400", "--flows", "3", "--pps", "3000", "-l", "1470"]));
    let sflows = s["flows"].as_array().unwrap();
    assert_eq!(sflows.len(), 3, "{s}");
    let lossy = sflows.iter().find(|f| f["src_port"] == 41001).unwrap_or_else(|| panic!("no flow on port 41001: {s}"));
    let lossy_id = u(lossy, "flow");
    let kernel_id = u(sflows.iter().find(|f| f["src_port"] == 41002).unwrap_or_else(|| panic!("no flow on 41002: {s}")), "flow");
    let dropped = nft_counter(&lab.access_ns("r1"), "bridge", "mcbtflow");
    assert_eq!(dropped, 40, "every 10th of 400");
    let kdropped = nft_counter(&lab.ns_name("r1"), "inet", "mcbtflowk");
    assert_eq!(kdropped, 40, "every 10th of 400");
    let lines = finish(r);
    let l = layers(&lines);
    check_waterfall("r1", l, 1200, &["path_lost", "kernel_dropped"]);
    assert_eq!(u(l, "path_lost"), dropped, "{l}");
    assert_eq!(u(l, "kernel_dropped"), kdropped, "{l}");
    let rows = l["flows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{l}");
    for f in sflows {
        let id = u(f, "flow");
        let sent = u(f, "sent");
        assert_eq!(sent, 400);
        let row = rows.iter().find(|r| r["flow"] == id).unwrap_or_else(|| panic!("no row for flow {id}: {l}"));
        let lost = if id == lossy_id { dropped } else { 0 };
        let killed = if id == kernel_id { kdropped } else { 0 };
        assert_eq!(u(row, "expected"), sent, "flow {id}: {row}");
        assert_eq!(u(row, "path_lost"), lost, "flow {id}: {row}");
        assert_eq!(u(row, "reached_driver"), sent - lost, "flow {id}: {row}");
        assert_eq!(row["lost_after_driver"].as_i64(), Some(killed as i64), "flow {id}: {row}");
        assert_eq!(u(row, "kernel_dropped"), killed, "flow {id}: {row}");
        assert_eq!((u(row, "reassembly_failed"), u(row, "socket_dropped")), (0, 0), "flow {id}: {row}");
        assert_eq!(row["unaccounted"].as_i64(), Some(0), "flow {id}: {row}");
        assert_eq!(u(row, "read"), sent - lost - killed, "flow {id}: {row}");
    }
}

/// A gso sender's batches cross the lab whole and reach the receiver's
/// counter at tc ingress (auto on veth) as one skb each, their datagrams'
/// payload in page fragments, outside the linear part the drop tracer
/// reads headers from. An nft rule in r1 drops every 7th such skb before
/// UDP cuts it up (kernel drops: its datagrams are (bytes − 28 × packets) /
/// 8192, nft counting bytes from the IP header), and a tiny socket buffer
/// with a slow reader overflows with the datagrams UDP cut from the rest
/// (socket drops). Both are charged to their flows exactly: the tracer
/// names each flow by the UDP tuple the counter noted, and counts a dropped
/// batch by its gso_size. Ground truth: the nft counter, the namespace's
/// RcvbufErrors, the sender's count.
#[test]
fn gso_batches_dropped_in_the_receiver_are_charged_to_their_flows() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("g", 1);
    let rules = "table inet mcbtgso {\n\
        chain input { type filter hook input priority filter; policy accept;\n\
          udp dport 5001 @th,64,32 0x4d43424c @th,104,8 0 numgen inc mod 7 0 counter drop\n\
        }\n\
      }\n";
    nft_load(&lab.ns_name("r1"), "g", rules);
    let r = start_recv(&lab, "r1", &["--expect-flows", "2", "--rcvbuf", "200000", "--read-delay-us", "300"]);
    assert_eq!(r.begin["xdp_mode"], "tc", "{}", r.begin);
    wait_members(&lab);
    let before = snmp(&lab, "r1", "Udp", "RcvbufErrors");
    let s = sender_summary(spawn_send(&lab, &["--engine", "gso", "--flows", "2", "-n", "3000", "--pps", "100000", "-l", "8192"]));
    let sent = u(&s, "sent");
    assert_eq!(sent, 6000, "{s}");
    let lines = finish(r);
    let rcvbuf_errors = snmp(&lab, "r1", "Udp", "RcvbufErrors") - before;
    let (packets, bytes) = nft_packets_bytes(&lab.ns_name("r1"), "inet", "mcbtgso");
    assert_eq!((bytes - 28 * packets) % 8192, 0, "{packets} packets of {bytes} bytes are not whole datagrams");
    let kdropped = (bytes - 28 * packets) / 8192;
    assert!(kdropped > packets, "no gso batch reached r1 whole: {packets} packets, {kdropped} datagrams");
    let k = summary(&lines, "kernel");
    assert!(u(k, "coalesced") > 0, "{k}");
    let l = layers(&lines);
    check_waterfall("r1", l, sent, &["kernel_dropped", "socket_dropped"]);
    assert_eq!(u(l, "kernel_dropped"), kdropped, "{l}");
    assert_eq!(reason_data(l, "NETFILTER_DROP"), kdropped, "{l}");
    let socket = u(l, "socket_dropped");
    assert!(socket > 0, "the slow reader must overflow its buffer: {l}");
    let markers: u64 = l["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["reason"] == "SOCKET_RCVBUFF")
        .map(|r| u(r, "end"))
        .sum();
    assert_eq!(socket + markers, rcvbuf_errors, "{l}");
    let rows = l["flows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{l}");
    let (mut k_sum, mut s_sum) = (0, 0);
    for row in rows {
        assert_eq!(u(row, "expected"), 3000, "{row}");
        assert_eq!(row["unaccounted"].as_i64(), Some(0), "{row}");
        let (kd, sd) = (u(row, "kernel_dropped"), u(row, "socket_dropped"));
        assert_eq!(row["lost_after_driver"].as_i64(), Some((kd + sd) as i64), "{row}");
        assert_eq!(u(row, "read") + kd + sd, 3000, "{row}");
        (k_sum, s_sum) = (k_sum + kd, s_sum + sd);
    }
    assert_eq!((k_sum, s_sum), (kdropped, socket), "{l}");
}
