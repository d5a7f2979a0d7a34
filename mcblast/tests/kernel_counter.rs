//! Privileged tests of the in-kernel XDP counter. Each test builds its own
//! pair of throwaway network namespaces joined by a veth pair (MTU 9000),
//! attaches the counter to the receiving end, sends crafted mcblast
//! datagrams with a plain UDP socket from the other end to multicast groups,
//! and requires exact counts. Nothing is sent outside the namespaces.
//!
//! Skipped, with a message, when not run as root.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mcblast::recv::kernel::XdpMode;
use mcblast::recv::kernel::KernelCounter;
use mcblast::netns::NetNs;
use mcblast_common::maps::{Config, FlowKey, GlobalCounter, MAX_FLOWS};
use mcblast_common::tracker::{FlowState, STATE_SENDER_SYNCED};
use mcblast_common::wire::{FLAG_CLOCK_SYNCED, FLAG_TAI_SHIFT, HEADER_LEN, Header, Kind};

mod common;
use common::frames::{frame, header_datagram, ip_frame, udp};
use common::{sh_netns as sh, snmp_netns as snmp};

const PORT: u16 = 47001;
const SENDER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// A second address of the sender's veth end, for source-specific tests.
const SENDER2: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
const RECEIVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const CLOCK: u32 = 0x00c0_ffee;
/// The TAI−UTC offset (s) the test's datagrams carry in flags bits 8..15.
const TAI_OFFSET: u8 = 37;
/// Most datagrams a sender lets run ahead of what the counter has seen:
/// well below veth's 256-slot rings and the 1000-packet backlog, so the
/// test itself never makes the kernel drop a datagram.
const IN_FLIGHT: u64 = 64;
/// How long to wait for the counter to see what was sent before failing.
const STALL: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Namespaces

/// Two namespaces joined by a veth pair: `va` (sender side, 10.77.0.1 and
/// 10.77.0.3) in `a`, `vb` (receiver side, 10.77.0.2) in `b`. Removed on drop.
struct Pair {
    a: NetNs,
    b: NetNs,
}

/// Not privileged: the test says it is skipped and returns.
fn skip_unless_root() -> bool {
    common::skip("needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN + CAP_BPF)")
}

impl Pair {
    /// `queues`: TX/RX queues on each veth end (several let native XDP run
    /// on several CPUs at once).
    fn new(tag: &str, queues: u32) -> Pair {
        let pid = std::process::id();
        let a = NetNs::new(&format!("mcbt-kc-{pid}-{tag}-a")).expect("create namespace a");
        let b = NetNs::new(&format!("mcbt-kc-{pid}-{tag}-b")).expect("create namespace b");
        // No IPv6: no router solicitations or MLD reports on the link, so
        // every packet the counter sees is one the test sent.
        for ns in [&a, &b] {
            sh(ns, "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6");
        }
        let q = queues.to_string();
        a.exec(
            "ip",
            &[
                "link", "add", "va", "numtxqueues", &q, "numrxqueues", &q, "type", "veth", "peer", "name", "vb",
                "netns", b.name(), "numtxqueues", &q, "numrxqueues", &q,
            ],
        )
        .expect("create veth pair");
        a.exec("ip", &["link", "set", "va", "mtu", "9000", "up"]).unwrap();
        a.exec("ip", &["addr", "add", "10.77.0.1/24", "dev", "va"]).unwrap();
        a.exec("ip", &["addr", "add", "10.77.0.3/24", "dev", "va"]).unwrap();
        a.exec("ip", &["route", "add", "224.0.0.0/4", "dev", "va"]).unwrap();
        b.exec("ip", &["link", "set", "vb", "mtu", "9000", "up"]).unwrap();
        b.exec("ip", &["addr", "add", "10.77.0.2/24", "dev", "vb"]).unwrap();
        Pair { a, b }
    }

    /// Attaches the counter to `vb` (from inside namespace b).
    fn attach(&self, mode: XdpMode, cfg: Config) -> KernelCounter {
        self.b
            .run(move || {
                let iface = mcblast::iface::lookup("vb")?;
                KernelCounter::attach(&iface, mode, cfg)
            })
            .expect("enter namespace b")
            .expect("attach the kernel counter")
    }

    /// `ip -d link show vb` in namespace b.
    fn link_details(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", self.b.name(), "ip", "-d", "link", "show", "vb"])
            .output()
            .expect("run ip");
        assert!(out.status.success(), "ip -d link show failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn config() -> Config {
    Config { port: PORT, run_filter: 0, sink: 0, clock: CLOCK, ..Config::default() }
}

// ---------------------------------------------------------------------------
// Sending

/// One datagram of the test's script.
#[derive(Clone, Copy, Debug)]
enum Ev {
    Data(u64),
    End(u64),
}

#[derive(Clone, Copy, Debug)]
struct FlowId {
    group: Ipv4Addr,
    run: u32,
    flow: u32,
    /// Datagram length (UDP payload) of its data datagrams.
    len: usize,
}

impl FlowId {
    fn key_from(&self, sender: Ipv4Addr) -> FlowKey {
        FlowKey {
            sender: u32::from_ne_bytes(sender.octets()),
            group: u32::from_ne_bytes(self.group.octets()),
            run: self.run,
            flow: self.flow,
        }
    }

    fn datagram(&self, ev: Ev) -> Vec<u8> {
        let (kind, seq, len) = match ev {
            Ev::Data(s) => (Kind::Data, s, self.len),
            Ev::End(c) => (Kind::End, c, HEADER_LEN),
        };
        header_datagram(Header {
            kind,
            flags: FLAG_CLOCK_SYNCED | ((TAI_OFFSET as u16) << FLAG_TAI_SHIFT),
            run: self.run,
            flow: self.flow,
            seq,
            tx_ns: mcblast::clock::tai_ns(),
            len: len as u32,
            clock: CLOCK,
        })
    }
}

/// A sender socket in namespace a that never lets more than [`IN_FLIGHT`]
/// datagrams run ahead of what the counter has seen (`sent` may be shared
/// by several senders).
struct Tx<'a> {
    sock: UdpSocket,
    raw: mcblast::sys::packet::PacketSocket,
    counter: &'a KernelCounter,
    base: u64,
    sent: &'a AtomicU64,
}

impl<'a> Tx<'a> {
    /// Must be called on a thread inside namespace a.
    fn new(counter: &'a KernelCounter, base: u64, sent: &'a AtomicU64) -> Tx<'a> {
        let sock = sender_socket(SENDER);
        let va = mcblast::sys::if_index("va").expect("va in namespace a");
        let raw = mcblast::sys::packet::PacketSocket::open(va).expect("open AF_PACKET socket");
        Tx { sock, raw, counter, base, sent }
    }

    fn send_to(&self, buf: &[u8], group: Ipv4Addr, port: u16) {
        let n = self.sock.send_to(buf, (group, port)).expect("send datagram");
        assert_eq!(n, buf.len());
        self.sent_one();
    }

    /// Sends a whole Ethernet frame, as built.
    fn send_frame(&self, frame: &[u8]) {
        let n = self.raw.send(frame).expect("send frame");
        assert_eq!(n, frame.len());
        self.sent_one();
    }

    fn sent_one(&self) {
        let sent = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
        wait_seen(self.counter, self.base, sent.saturating_sub(IN_FLIGHT));
    }

    fn send(&self, f: &FlowId, ev: Ev) {
        self.send_to(&f.datagram(ev), f.group, PORT);
    }

    /// Like [`Tx::send`], from another socket (another source address).
    fn send_via(&self, sock: &UdpSocket, f: &FlowId, ev: Ev) {
        let buf = f.datagram(ev);
        let n = sock.send_to(&buf, (f.group, PORT)).expect("send datagram");
        assert_eq!(n, buf.len());
        self.sent_one();
    }
}

/// A UDP socket bound to one of the sender's addresses; call it on a
/// thread inside namespace a.
fn sender_socket(addr: Ipv4Addr) -> UdpSocket {
    let sock = UdpSocket::bind((addr, 0)).expect("bind sender socket");
    sock.set_multicast_ttl_v4(1).unwrap();
    sock.set_multicast_loop_v4(false).unwrap();
    sock
}

fn packets(counter: &KernelCounter) -> u64 {
    counter.global(GlobalCounter::Packets).expect("read global counters")
}

/// Waits until the counter has seen `base + n` packets.
fn wait_seen(counter: &KernelCounter, base: u64, n: u64) {
    let start = Instant::now();
    loop {
        let seen = packets(counter) - base;
        if seen >= n {
            return;
        }
        assert!(start.elapsed() < STALL, "the counter saw {seen} packets of {n} sent; stalled");
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// Runs `f` with a [`Tx`] on a thread inside namespace a, then waits until
/// the counter has seen everything sent. Returns the number of packets sent.
fn send_all(pair: &Pair, counter: &KernelCounter, f: impl FnOnce(&Tx<'_>) + Send) -> u64 {
    let base = packets(counter);
    let sent = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            pair.a.enter().expect("enter namespace a");
            mcblast::sys::send::pin_current_thread(0).expect("pin sender");
            let tx = Tx::new(counter, base, &sent);
            f(&tx);
        });
    });
    let n = sent.load(Ordering::SeqCst);
    wait_seen(counter, base, n);
    n
}

// ---------------------------------------------------------------------------
// The expected result: a set-based model, independent of the tracker.

#[derive(Debug, Default, PartialEq, Eq)]
struct Expect {
    received: u64,
    bytes: u64,
    lost: u64,
    reordered: u64,
    duplicates: u64,
    stale: u64,
    next_seq: u64,
    ended: u32,
    end_count: u64,
}

fn model(f: &FlowId, events: &[Ev]) -> Expect {
    let mut seen = BTreeSet::new();
    let mut m = Expect::default();
    for e in events {
        match *e {
            Ev::Data(s) => {
                m.received += 1;
                m.bytes += f.len as u64;
                if s >= m.next_seq {
                    m.next_seq = s + 1;
                    seen.insert(s);
                } else if !seen.insert(s) {
                    m.duplicates += 1;
                } else {
                    m.reordered += 1;
                }
            }
            Ev::End(c) => {
                if m.ended == 0 {
                    m.ended = 1;
                    m.end_count = c;
                    m.next_seq = m.next_seq.max(c);
                }
            }
        }
    }
    m.lost = m.next_seq - seen.len() as u64;
    m
}

fn observed(st: &FlowState) -> Expect {
    Expect {
        received: st.received,
        bytes: st.bytes,
        lost: st.lost,
        reordered: st.reordered,
        duplicates: st.duplicates,
        stale: st.stale,
        next_seq: st.next_seq,
        ended: st.ended,
        end_count: st.end_count,
    }
}

/// Checks what every flow's state must say about time and the sender.
fn check_timing(st: &FlowState) {
    assert_eq!(st.sender_clock, CLOCK);
    assert_ne!(st.flags & STATE_SENDER_SYNCED, 0);
    assert_eq!(st.sender_tai_offset(), TAI_OFFSET);
    assert_eq!(st.delay_count, st.received - st.duplicates - st.stale);
    assert_eq!(st.delay_hist.iter().sum::<u64>(), st.delay_count);
    if st.delay_count > 0 {
        assert!(st.first_rx_ns > 0 && st.last_rx_ns >= st.first_rx_ns);
        // Sender and receiver share this machine's CLOCK_TAI: the kernel
        // must read the same clock (bpf_ktime_get_tai_ns), so no datagram
        // can arrive before it was sent.
        assert!(st.delay_min_ns >= 0, "negative one-way delay {}: wrong clock?", st.delay_min_ns);
        assert!(st.delay_max_ns >= st.delay_min_ns);
    }
}

/// The flows with data datagrams that arrived fragmented, with how many.
fn fragmented(counter: &KernelCounter) -> Vec<(FlowKey, u64)> {
    counter.flow_entries().unwrap().into_iter().filter(|(_, _, n)| *n > 0).map(|(k, _, n)| (k, n)).collect()
}

fn flow_state(flows: &[(FlowKey, FlowState)], f: &FlowId) -> FlowState {
    flow_state_from(flows, f, SENDER)
}

fn flow_state_from(flows: &[(FlowKey, FlowState)], f: &FlowId, sender: Ipv4Addr) -> FlowState {
    flows
        .iter()
        .find(|(k, _)| *k == f.key_from(sender))
        .unwrap_or_else(|| panic!("no flow {f:?} from {sender} among {} flows", flows.len()))
        .1
}

// ---------------------------------------------------------------------------
// Scripts

/// Sequence numbers 0..n with some dropped, then rearranged by `moves`
/// (seq, sent right after seq) and duplicated by `dups` (seq, extra copies).
fn script(n: u64, drop: &[u64], moves: &[(u64, u64)], dups: &[(u64, usize)], ends: usize) -> Vec<Ev> {
    let mut order: Vec<u64> = (0..n).filter(|s| !drop.contains(s)).collect();
    for &(s, after) in moves {
        let i = order.iter().position(|&x| x == s).unwrap();
        order.remove(i);
        let j = order.iter().position(|&x| x == after).unwrap();
        order.insert(j + 1, s);
    }
    let mut ev = Vec::new();
    for s in order {
        ev.push(Ev::Data(s));
        if let Some(&(_, copies)) = dups.iter().find(|(d, _)| *d == s) {
            ev.extend(std::iter::repeat_n(Ev::Data(s), copies));
        }
    }
    ev.extend(std::iter::repeat_n(Ev::End(n), ends));
    ev
}

// ---------------------------------------------------------------------------
// Tests

/// Several flows (groups, runs, flow ids, sizes up to 8972 bytes: the
/// multi-buffer path) interleaved, with known loss (inside and at the tail),
/// reordering, duplicates and end-of-flow markers: every count is exact.
#[test]
fn exact_counts_for_interleaved_flows() {
    if skip_unless_root() {
        return;
    }
    let pair = Pair::new("exact", 1);
    let counter = pair.attach(XdpMode::Native, config());
    assert_eq!(counter.mode(), "native");

    let g1 = Ipv4Addr::new(239, 1, 1, 1);
    let g2 = Ipv4Addr::new(239, 1, 1, 2);
    let run = 0x1234_5678;
    let flows = [
        // 200 sent: 4 lost inside, 5 lost at the tail, 2 reordered, 3 duplicates.
        (
            FlowId { group: g1, run, flow: 0, len: 1200 },
            script(200, &[5, 17, 18, 100, 195, 196, 197, 198, 199], &[(30, 31), (50, 60)], &[(70, 1), (120, 2)], 2),
        ),
        // 8192-byte datagrams: the first and the last lost, one swap, one duplicate.
        (
            FlowId { group: g2, run, flow: 1, len: 8192 },
            script(100, &[0, 99], &[(10, 11)], &[(42, 1)], 1),
        ),
        // The largest datagram that fits MTU 9000 unfragmented; no end marker.
        (FlowId { group: g2, run, flow: 2, len: 8972 }, script(40, &[3, 4], &[], &[], 0)),
        // Header-only datagrams.
        (FlowId { group: g1, run, flow: 3, len: HEADER_LEN }, script(60, &[59], &[(1, 7)], &[(0, 3)], 1)),
        // Same group and flow id as the first flow, another run: another flow.
        (FlowId { group: g1, run: run + 1, flow: 0, len: 512 }, script(30, &[], &[], &[], 1)),
        // Nothing but the end marker arrived.
        (FlowId { group: g1, run, flow: 9, len: 1000 }, vec![Ev::End(50)]),
    ];

    // Round-robin over the flows so their datagrams interleave.
    let total: usize = flows.iter().map(|(_, ev)| ev.len()).sum();
    let sent = send_all(&pair, &counter, |tx| {
        let mut i = 0;
        loop {
            let mut any = false;
            for (f, ev) in &flows {
                if let Some(&e) = ev.get(i) {
                    tx.send(f, e);
                    any = true;
                }
            }
            if !any {
                break;
            }
            i += 1;
        }
    });
    assert_eq!(sent as usize, total);

    let got = counter.flows().unwrap();
    assert_eq!(got.len(), flows.len(), "flows: {got:?}");
    for (f, ev) in &flows {
        let st = flow_state(&got, f);
        assert_eq!(observed(&st), model(f, ev), "flow {f:?}");
        check_timing(&st);
        if ev.iter().any(|e| matches!(e, Ev::Data(_))) {
            assert_eq!(st.last_len as usize, f.len);
        }
    }
    // The model agrees with what the scripts say by hand.
    let first = observed(&flow_state(&got, &flows[0].0));
    assert_eq!(
        (first.received, first.lost, first.reordered, first.duplicates, first.next_seq),
        (200 - 9 + 3, 9, 2, 3, 200)
    );
    let big = observed(&flow_state(&got, &flows[1].0));
    assert_eq!((big.received, big.lost, big.bytes), (99, 2, 99 * 8192));
    let only_end = observed(&flow_state(&got, &flows[5].0));
    assert_eq!((only_end.received, only_end.lost, only_end.ended), (0, 50, 1));

    let g = counter.globals().unwrap();
    assert_eq!(g[GlobalCounter::Packets as usize], total as u64);
    assert_eq!(g[GlobalCounter::Foreign as usize], 0);
    assert_eq!(g[GlobalCounter::MapFull as usize], 0);
    assert_eq!(g[GlobalCounter::Fragments as usize], 0);

    // The loss records (ring buffer: gaps minus fills) name exactly the
    // sequence numbers the scripts dropped, the reordered ones excepted.
    let book = loss_book(&counter);
    for (f, ev) in &flows {
        assert_eq!(book_lost(&book, f), lost_set(ev), "flow {f:?}");
    }
}

/// One GSO packet of the script in [`coalesced_packets_of_two_flows_with_foreign_datagrams_count_exactly`]:
/// its datagrams, each a flow's event or (None) a foreign datagram of the same length.
type Coalesced = Vec<Option<(usize, Ev)>>;

/// GSO packets (UDP_SEGMENT sends: veth passes them whole, so the counter
/// walks each) whose datagrams mix two flows, a foreign datagram, a reordered
/// one and a duplicate: at tc ingress, in generic and in native XDP every
/// count is exact, the foreign datagram is counted apart, and the walk
/// counts each datagram of a run of one flow once (the counter takes a
/// step's datagrams of one flow together, and a datagram of another flow
/// ends the step).
#[test]
fn coalesced_packets_of_two_flows_with_foreign_datagrams_count_exactly() {
    if skip_unless_root() {
        return;
    }
    let group = Ipv4Addr::new(239, 5, 0, 1);
    let flows = [FlowId { group, run: 77, flow: 0, len: 1000 }, FlowId { group, run: 77, flow: 1, len: 1000 }];
    let (a, b) = (|s| Some((0, Ev::Data(s))), |s| Some((1, Ev::Data(s))));
    let packets: Vec<Coalesced> = vec![
        vec![a(0), a(1), b(0), None, a(2), b(1), b(2)],
        vec![b(3), a(3), a(4), a(5), b(4)],
        vec![a(7), a(6), a(6), b(5)],
        vec![b(6), b(7), b(8), b(9), b(10), b(11), b(12), b(13), b(14)],
    ];
    let ends = [(0, Ev::End(8)), (1, Ev::End(15))];
    let script = |k: usize| -> Vec<Ev> {
        let data = packets.iter().flatten().flatten().filter(|(f, _)| *f == k).map(|&(_, e)| e);
        data.chain(ends.iter().filter(|(f, _)| *f == k).map(|&(_, e)| e)).collect()
    };
    for (mode, tag) in [(XdpMode::Tc, "gsotc"), (XdpMode::Generic, "gsogen"), (XdpMode::Native, "gsonat")] {
        let pair = Pair::new(tag, 1);
        let counter = pair.attach(mode, config());
        send_all(&pair, &counter, |tx| {
            let sock = sender_socket(SENDER);
            sock.connect((group, PORT)).unwrap();
            for p in &packets {
                let mut foreign = flows[0].datagram(Ev::Data(999));
                foreign[0] = b'X';
                let mut buf = mcblast::sys::gso::GsoBuf::new(&foreign, p.len());
                for (i, d) in p.iter().enumerate() {
                    if let Some((f, e)) = d {
                        buf.datagram_mut(i).copy_from_slice(&flows[*f].datagram(*e));
                    }
                }
                buf.send(&sock, p.len()).expect("GSO send");
                tx.sent_one();
            }
            for (f, e) in ends {
                tx.send(&flows[f], e);
            }
        });
        let got = counter.flows().unwrap();
        assert_eq!(got.len(), 2, "{tag}: {got:?}");
        for (k, f) in flows.iter().enumerate() {
            assert_eq!(observed(&flow_state(&got, f)), model(f, &script(k)), "{tag}: flow {k}");
        }
        let a0 = observed(&flow_state(&got, &flows[0]));
        assert_eq!((a0.received, a0.lost, a0.reordered, a0.duplicates), (9, 0, 1, 1), "{tag}");
        let g = counter.globals().unwrap();
        assert_eq!(g[GlobalCounter::Foreign as usize], 1, "{tag}");
        assert_eq!(g[GlobalCounter::Unwalked as usize], 0, "{tag}");
        if mode == XdpMode::Tc {
            let coalesced = g[GlobalCounter::Coalesced as usize];
            assert_eq!(coalesced, packets.len() as u64, "{tag}: the GSO packets crossed whole");
        }
    }
}

/// Drains the counter's loss records into a [`mcblast::report::fanout::LossBook`];
/// asserts the ring buffer lost none.
fn loss_book(counter: &KernelCounter) -> mcblast::report::fanout::LossBook {
    let mut book = mcblast::report::fanout::LossBook::default();
    counter.drain_loss(|r| book.apply(r.key, r.event().expect("known record kind"), r.rx_ns, 1_000_000_000));
    assert_eq!(counter.global(GlobalCounter::LossEventsLost).unwrap(), 0);
    book
}

/// The sequence numbers a flow's loss records hold.
fn book_lost(book: &mcblast::report::fanout::LossBook, f: &FlowId) -> BTreeSet<u64> {
    let Some(log) = book.flows.get(&f.key_from(SENDER)) else { return BTreeSet::new() };
    assert!(!log.truncated());
    log.ranges().iter().flat_map(|&[s, n]| s..s + n).collect()
}

/// The sequence numbers below the highest (or the end marker's count) that never arrived.
fn lost_set(events: &[Ev]) -> BTreeSet<u64> {
    let seen: BTreeSet<u64> = events.iter().filter_map(|e| if let Ev::Data(s) = e { Some(*s) } else { None }).collect();
    let end = events.iter().find_map(|e| if let Ev::End(c) = e { Some(*c) } else { None }).unwrap_or(0);
    let next = seen.last().map_or(0, |s| s + 1).max(end);
    (0..next).filter(|s| !seen.contains(s)).collect()
}

/// Datagrams to the port that are not valid mcblast datagrams (or belong to
/// a filtered run) change no flow and are counted as Foreign; other ports
/// are ignored; a fragmented datagram is counted in its flow by its first
/// fragment, and its later fragment is matched to it.
#[test]
fn foreign_and_malformed_datagrams_touch_no_flow() {
    if skip_unless_root() {
        return;
    }
    let pair = Pair::new("foreign", 1);
    let run = 0xabcd_0001;
    let counter = pair.attach(XdpMode::Native, Config { run_filter: run, ..config() });
    let group = Ipv4Addr::new(239, 2, 0, 1);
    let f = FlowId { group, run, flow: 4, len: 300 };
    let valid = |seq| Header {
        kind: Kind::Data,
        flags: 0,
        run,
        flow: 4,
        seq,
        tx_ns: mcblast::clock::tai_ns(),
        len: 300,
        clock: CLOCK,
    };

    let mut foreign: Vec<Vec<u8>> = Vec::new();
    let mut b = header_datagram(valid(1));
    b[0] = b'X'; // bad magic
    foreign.push(b);
    let mut b = header_datagram(valid(2));
    b[4] = 2; // wrong version
    foreign.push(b);
    let mut b = header_datagram(valid(3));
    b[5] = 7; // unknown kind
    foreign.push(b);
    let mut b = header_datagram(valid(4));
    b.truncate(250); // length field (300) disagrees with the datagram (250)
    foreign.push(b);
    let mut b = header_datagram(valid(5));
    b.extend_from_slice(&[0; 8]); // longer than the length field says
    foreign.push(b);
    foreign.push(header_datagram(valid(6))[..39].to_vec()); // shorter than a header
    foreign.push(Vec::new()); // empty
    foreign.push(header_datagram(Header { run: run + 1, ..valid(7) })); // another run

    let sent = send_all(&pair, &counter, |tx| {
        tx.send(&f, Ev::Data(0));
        for d in &foreign {
            tx.send_to(d, group, PORT);
        }
        // A valid datagram to another port: not ours at all.
        tx.send_to(&header_datagram(valid(8)), group, PORT + 1);
        // A valid datagram too big for the MTU: two IPv4 fragments; the
        // first (with the UDP header) is counted in flow 5, the second is
        // matched to it.
        tx.send_to(&header_datagram(Header { len: 10_000, flow: 5, ..valid(9) }), group, PORT);
    });
    // `send_all` counted each datagram once; the fragmented one is two packets.
    let packets = sent + 1;
    wait_seen(&counter, 0, packets);

    let got = counter.flows().unwrap();
    assert_eq!(got.len(), 2, "flows: {got:?}");
    let st = flow_state(&got, &f);
    assert_eq!(observed(&st), model(&f, &[Ev::Data(0)]));
    check_timing(&st);
    let big = FlowId { flow: 5, len: 10_000, ..f };
    let st = flow_state(&got, &big);
    assert_eq!(observed(&st), model(&big, &[Ev::Data(9)]), "the fragmented datagram, whole length");
    assert_eq!(fragmented(&counter), vec![(big.key_from(SENDER), 1)], "only flow 5 arrived fragmented");

    let g = counter.globals().unwrap();
    assert_eq!(g[GlobalCounter::Foreign as usize], foreign.len() as u64);
    assert_eq!(g[GlobalCounter::Fragments as usize], 1);
    assert_eq!(g[GlobalCounter::LaterFragments as usize], 1);
    assert_eq!(g[GlobalCounter::UnmatchedFragments as usize], 0);
    assert_eq!(g[GlobalCounter::MapFull as usize], 0);
    assert_eq!(g[GlobalCounter::Packets as usize], packets);
}

/// With the joined groups listed, only they are counted: a group the
/// receiver did not join (flooded to it by a bridge), or another source of a
/// source-specific group, is OtherGroup (malformed or fragmented or not),
/// never Foreign and never a flow. Replacing the list removes old entries;
/// an empty list counts every group again; bad lists change nothing.
#[test]
fn only_joined_groups_and_sources_are_counted() {
    if skip_unless_root() {
        return;
    }
    let pair = Pair::new("groups", 1);
    let counter = pair.attach(XdpMode::Native, config());
    let any = Ipv4Addr::new(239, 8, 0, 1); // joined, any source
    let ssm = Ipv4Addr::new(232, 8, 0, 2); // joined, from SENDER2 only
    let other = Ipv4Addr::new(239, 8, 0, 3); // not joined
    counter.set_groups(&[(any, None), (ssm, Some(SENDER2)), (any, None)]).expect("set groups");

    // Bad lists fail with one line and leave the filter as it was.
    let too_many: Vec<_> = (0..=mcblast_common::maps::MAX_GROUPS)
        .map(|i| (Ipv4Addr::from(u32::from(Ipv4Addr::new(239, 9, 0, 0)) + i), None))
        .collect();
    for bad in [
        &too_many[..],
        &[(other, None), (any, Some(SENDER)), (any, None)][..],
        &[(other, Some(Ipv4Addr::UNSPECIFIED))][..],
    ] {
        let e = format!("{:#}", counter.set_groups(bad).expect_err("a bad group list"));
        assert!(!e.contains('\n') && !e.is_empty(), "{e}");
    }

    let run = 0x6e0u32;
    let a1 = FlowId { group: any, run, flow: 0, len: 700 };
    let a1_ev = script(50, &[3, 49], &[(10, 12)], &[(20, 1)], 1);
    let a2 = FlowId { group: any, run, flow: 1, len: 100 }; // from both sources
    let s1 = FlowId { group: ssm, run, flow: 2, len: 300 }; // from both sources
    let s1_ev = script(30, &[7], &[], &[], 1);
    let o1 = FlowId { group: other, run, flow: 3, len: 200 };
    let data = |n: u64| (0..n).map(Ev::Data).collect::<Vec<_>>();

    let sent = send_all(&pair, &counter, |tx| {
        let alt = sender_socket(SENDER2);
        for &e in &a1_ev {
            tx.send(&a1, e);
        }
        for s in 0..10 {
            tx.send(&a2, Ev::Data(s));
            tx.send_via(&alt, &a2, Ev::Data(s));
        }
        for &e in &s1_ev {
            tx.send_via(&alt, &s1, e);
        }
        for s in 0..17 {
            tx.send(&s1, Ev::Data(s)); // wrong source: other
        }
        for &e in data(23).iter().chain(&[Ev::End(23)]) {
            tx.send(&o1, e); // unjoined: other
        }
        let mut bad = o1.datagram(Ev::Data(100));
        bad[0] = b'X';
        tx.send_to(&bad, other, PORT); // malformed, unjoined: other, not foreign
        tx.send_to(&bad, any, PORT); // malformed, joined: foreign
        // Two fragments to the unjoined group: the first is other, not a
        // fragment; the second matches nothing and, to a group not joined,
        // is not even counted as unmatched.
        tx.send_to(&header_datagram(Header { len: 10_000, ..header(&o1, 101) }), other, PORT);
        tx.send_to(&header_datagram(header(&o1, 102)), other, PORT + 1); // another port: nothing
    });
    let mut packets = sent + 1;
    wait_seen(&counter, 0, packets);
    let mut other_group = 17 + 24 + 1 + 1;

    let got = counter.flows().unwrap();
    assert_eq!(got.len(), 4, "flows: {got:?}");
    for (f, from, ev) in
        [(&a1, SENDER, &a1_ev), (&a2, SENDER, &data(10)), (&a2, SENDER2, &data(10)), (&s1, SENDER2, &s1_ev)]
    {
        let st = flow_state_from(&got, f, from);
        assert_eq!(observed(&st), model(f, ev), "flow {f:?} from {from}");
        check_timing(&st);
    }
    let g = counter.globals().unwrap();
    assert_eq!(g[GlobalCounter::OtherGroup as usize], other_group);
    assert_eq!(g[GlobalCounter::Foreign as usize], 1);
    assert_eq!(g[GlobalCounter::Fragments as usize], 0);
    assert_eq!(g[GlobalCounter::LaterFragments as usize], 0);
    assert_eq!(g[GlobalCounter::UnmatchedFragments as usize], 0);
    assert_eq!(g[GlobalCounter::MapFull as usize], 0);
    assert_eq!(g[GlobalCounter::Packets as usize], packets);

    // A new list replaces the old one: `any` and `ssm` are gone.
    counter.set_groups(&[(other, Some(SENDER))]).expect("replace groups");
    packets += send_all(&pair, &counter, |tx| {
        let alt = sender_socket(SENDER2);
        for s in 0..5 {
            tx.send(&o1, Ev::Data(s));
        }
        for s in 0..3 {
            tx.send_via(&alt, &o1, Ev::Data(s)); // wrong source: other
        }
        for s in 50..54 {
            tx.send(&a1, Ev::Data(s)); // no longer joined: other
        }
        tx.send_via(&alt, &s1, Ev::Data(30)); // no longer joined: other
    });
    other_group += 3 + 4 + 1;
    let got = counter.flows().unwrap();
    assert_eq!(got.len(), 5, "flows: {got:?}");
    assert_eq!(observed(&flow_state(&got, &o1)), model(&o1, &data(5)));
    assert_eq!(observed(&flow_state(&got, &a1)), model(&a1, &a1_ev), "a flow no longer joined changed");
    assert_eq!(observed(&flow_state_from(&got, &s1, SENDER2)), model(&s1, &s1_ev));

    // The map holds MAX_GROUPS groups.
    let full: Vec<_> = too_many[1..256].iter().copied().chain([(ssm, None)]).collect();
    assert_eq!(full.len(), mcblast_common::maps::MAX_GROUPS as usize);
    counter.set_groups(&full).expect("MAX_GROUPS groups");
    packets += send_all(&pair, &counter, |tx| {
        for s in 0..2 {
            tx.send(&s1, Ev::Data(s)); // any source now
        }
        tx.send(&o1, Ev::Data(5)); // no longer joined: other
    });
    other_group += 1;

    // An empty list counts every group again.
    counter.set_groups(&[]).expect("clear groups");
    packets += send_all(&pair, &counter, |tx| {
        let alt = sender_socket(SENDER2);
        for s in 0..3 {
            tx.send_via(&alt, &o1, Ev::Data(s));
        }
    });
    let got = counter.flows().unwrap();
    assert_eq!(got.len(), 7, "flows: {got:?}");
    assert_eq!(observed(&flow_state(&got, &s1)), model(&s1, &data(2)));
    assert_eq!(observed(&flow_state_from(&got, &o1, SENDER2)), model(&o1, &data(3)));
    assert_eq!(observed(&flow_state(&got, &o1)), model(&o1, &data(5)));
    for (_, st) in &got {
        check_timing(st);
    }
    let g = counter.globals().unwrap();
    assert_eq!(g[GlobalCounter::OtherGroup as usize], other_group);
    assert_eq!(g[GlobalCounter::Foreign as usize], 1);
    assert_eq!(g[GlobalCounter::Fragments as usize], 0);
    assert_eq!(g[GlobalCounter::LaterFragments as usize], 0);
    assert_eq!(g[GlobalCounter::UnmatchedFragments as usize], 0);
    assert_eq!(g[GlobalCounter::Packets as usize], packets);
}

/// A valid data header of flow `f` with sequence `seq` (any flags).
fn header(f: &FlowId, seq: u64) -> Header {
    Header {
        kind: Kind::Data,
        flags: 0,
        run: f.run,
        flow: f.flow,
        seq,
        tx_ns: mcblast::clock::tai_ns(),
        len: f.len as u32,
        clock: CLOCK,
    }
}

/// One flow sent from two threads pinned to different CPUs at once (veth
/// runs XDP on the sending CPU; two queues with XPS give each CPU its own),
/// in native and in generic mode: the totals are exact, so no update was
/// lost to a race on the flow's state.
#[test]
fn one_flow_from_two_cpus_native() {
    two_cpus(XdpMode::Native, "2cpu-n");
}

#[test]
fn one_flow_from_two_cpus_generic() {
    two_cpus(XdpMode::Generic, "2cpu-g");
}

fn two_cpus(mode: XdpMode, tag: &str) {
    let name = format!("one_flow_from_two_cpus ({tag})");
    if skip_unless_root() {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        common::skipped(&format!("needs 2 CPUs, this machine has {cpus}"));
        return;
    }
    let pair = Pair::new(tag, 2);
    // Transmit queue i of `va` is used by CPU i, and veth hands a packet
    // sent on queue i to receive queue i of `vb`, processed on that CPU.
    sh(&pair.a, "echo 1 > /sys/class/net/va/queues/tx-0/xps_cpus && echo 2 > /sys/class/net/va/queues/tx-1/xps_cpus");
    let counter = pair.attach(mode, config());

    const N: u64 = 400 * ROUND;
    // The two threads share one sequence counter and meet at a barrier
    // every ROUND numbers, so no datagram falls more than ROUND (plus what
    // is in flight) behind the highest one: within the tracker's 1024-wide
    // reorder window, so the exact answer is "nothing lost".
    const ROUND: u64 = 256;
    // Overshooting threads leave `next_seq` past the round's end; the barrier
    // puts it back to the next round's start.
    let f = FlowId { group: Ipv4Addr::new(239, 3, 0, 1), run: 77, flow: 0, len: 64 };
    let base = packets(&counter);
    let sent = AtomicU64::new(0);
    let next_seq = AtomicU64::new(0);
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        for cpu in 0..2 {
            let (pair, counter, sent, next_seq, f, barrier) = (&pair, &counter, &sent, &next_seq, &f, &barrier);
            s.spawn(move || {
                pair.a.enter().expect("enter namespace a");
                mcblast::sys::send::pin_current_thread(cpu).expect("pin sender");
                let tx = Tx::new(counter, base, sent);
                for round in 0..N / ROUND {
                    let end = (round + 1) * ROUND;
                    loop {
                        let seq = next_seq.fetch_add(1, Ordering::SeqCst);
                        if seq >= end {
                            break;
                        }
                        tx.send(f, Ev::Data(seq));
                    }
                    barrier.wait();
                    if cpu == 0 {
                        next_seq.store(end, Ordering::SeqCst);
                    }
                    barrier.wait();
                }
            });
        }
    });
    wait_seen(&counter, base, N);
    send_all(&pair, &counter, |tx| tx.send(&f, Ev::End(N)));
    assert_eq!(packets(&counter) - base, N + 1);

    let got = counter.flows().unwrap();
    assert_eq!(got.len(), 1);
    let st = flow_state(&got, &f);
    assert_eq!(st.received, N, "datagrams lost to a race");
    assert_eq!(st.bytes, N * f.len as u64);
    assert_eq!(st.next_seq, N);
    assert_eq!((st.lost, st.duplicates, st.stale), (0, 0, 0));
    assert_eq!(st.ended, 1);
    assert!(st.reordered < N);
    check_timing(&st);
    // Every gap one CPU opened the other filled, whatever order their
    // records took through the ring buffer: nothing is recorded lost.
    assert_eq!(book_lost(&loss_book(&counter), &f), BTreeSet::new());

    // The program really ran on both CPUs.
    let per_cpu = counter.globals_per_cpu().unwrap();
    let busy: Vec<usize> =
        (0..per_cpu.len()).filter(|&c| per_cpu[c][GlobalCounter::Packets as usize] > 0).collect();
    assert!(busy.len() >= 2, "XDP ran only on CPUs {busy:?}");
    eprintln!(
        "{name}: {N} datagrams; per-CPU packets {:?}; {} arrived out of order",
        per_cpu.iter().map(|c| c[GlobalCounter::Packets as usize]).collect::<Vec<_>>(),
        st.reordered
    );
}

/// With `sink` set, counted datagrams are dropped in XDP and never reach a
/// socket; foreign ones still do. Without it, everything passes.
#[test]
fn sink_drops_counted_datagrams_only() {
    if skip_unless_root() {
        return;
    }
    let pair = Pair::new("sink", 1);
    let group = Ipv4Addr::new(239, 4, 0, 1);
    let f = FlowId { group, run: 5, flow: 0, len: 200 };
    let rx = pair
        .b
        .run(move || {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)).unwrap();
            s.join_multicast_v4(&group, &RECEIVER).unwrap();
            s.set_read_timeout(Some(STALL)).unwrap();
            s
        })
        .unwrap();
    let foreign = |i: u8| {
        let mut b = f.datagram(Ev::Data(1000 + i as u64));
        b[0] = b'X';
        b
    };

    for sink in [1, 0] {
        let counter = pair.attach(XdpMode::Native, Config { sink, ..config() });
        let base = counter.flows().unwrap().first().map_or(0, |(_, st)| st.received);
        assert_eq!(base, 0, "a new counter starts empty");
        send_all(&pair, &counter, |tx| {
            for s in 0..20 {
                tx.send(&f, Ev::Data(s));
            }
            for i in 0..3 {
                tx.send_to(&foreign(i), group, PORT);
            }
        });
        let st = flow_state(&counter.flows().unwrap(), &f);
        assert_eq!(st.received, 20);
        // Sent in order on one CPU: once the three foreign datagrams are in,
        // every valid one before them has been passed or dropped.
        let expected = if sink == 1 { 3 } else { 23 };
        let mut valid = 0;
        let mut buf = [0u8; 512];
        for _ in 0..expected {
            let n = rx.recv(&mut buf).expect("datagram should reach the socket");
            if Header::parse_datagram(&buf[..n]).is_ok() {
                valid += 1;
            }
        }
        assert_eq!(valid, if sink == 1 { 0 } else { 20 }, "sink={sink}");
        drop(counter);
    }
}

/// Fragmented datagrams (20000 bytes at MTU 9000: 3 fragments each) in XDP
/// and at tc ingress: each counted once in its flow by its first fragment,
/// its 2 later fragments matched; with `sink` every fragment is dropped, so
/// nothing reaches IP reassembly or the socket (the foreign datagrams sent
/// after them do); without it every datagram reassembles and is read.
#[test]
fn sink_drops_fragmented_datagrams_whole_in_xdp_and_at_tc() {
    if skip_unless_root() {
        return;
    }
    let pair = Pair::new("fsink", 1);
    let group = Ipv4Addr::new(239, 4, 0, 2);
    let f = FlowId { group, run: 6, flow: 0, len: 20_000 };
    const N: u64 = 20;
    const LATER: u64 = 2;
    let rx = pair
        .b
        .run(move || {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)).unwrap();
            s.join_multicast_v4(&group, &RECEIVER).unwrap();
            s.set_read_timeout(Some(STALL)).unwrap();
            // Room for every datagram of a round (the default buffer holds
            // only a few reassembled 20000-byte datagrams).
            let granted = mcblast::sys::send::set_buffer(&s, mcblast::sys::send::Buffer::Recv, 16 << 20).unwrap();
            assert!(granted >= 16 << 20, "receive buffer {granted}");
            s
        })
        .unwrap();
    let foreign = |i: u8| {
        let mut b = FlowId { len: 200, ..f }.datagram(Ev::Data(1000 + i as u64));
        b[0] = b'X';
        b
    };

    for mode in [XdpMode::Native, XdpMode::Tc] {
        for sink in [1, 0] {
            let reqds = snmp(&pair.b, "Ip", "ReasmReqds");
            let counter = pair.attach(mode, Config { sink, ..config() });
            let base = packets(&counter);
            send_all(&pair, &counter, |tx| {
                for s in 0..N {
                    tx.send(&f, Ev::Data(s));
                }
                for i in 0..3 {
                    tx.send_to(&foreign(i), group, PORT);
                }
            });
            wait_seen(&counter, base, N * (1 + LATER) + 3);
            let got = counter.flows().unwrap();
            assert_eq!(got.len(), 1, "{mode:?} sink={sink}: {got:?}");
            assert_eq!(observed(&flow_state(&got, &f)), model(&f, &(0..N).map(Ev::Data).collect::<Vec<_>>()), "{mode:?} sink={sink}");
            assert_eq!(fragmented(&counter), vec![(f.key_from(SENDER), N)], "{mode:?} sink={sink}");
            let g = counter.globals().unwrap();
            let fr = (g[GlobalCounter::Fragments as usize], g[GlobalCounter::LaterFragments as usize], g[GlobalCounter::UnmatchedFragments as usize]);
            assert_eq!(fr, (N, N * LATER, 0), "{mode:?} sink={sink}");
            // Sent in order on one CPU: once the three foreign datagrams are
            // read, every fragmented one before them was delivered or dropped.
            let expected = if sink == 1 { 3 } else { N + 3 };
            let mut valid = 0;
            let mut buf = vec![0u8; 32 * 1024];
            for _ in 0..expected {
                let n = rx.recv(&mut buf).unwrap_or_else(|e| panic!("{mode:?} sink={sink}: a datagram should reach the socket: {e}"));
                if Header::parse_datagram(&buf[..n]).is_ok() {
                    assert_eq!(n, f.len, "{mode:?} sink={sink}: a whole datagram");
                    valid += 1;
                }
            }
            assert_eq!(valid, if sink == 1 { 0 } else { N }, "{mode:?} sink={sink}");
            let reassembled = snmp(&pair.b, "Ip", "ReasmReqds") - reqds;
            assert_eq!(reassembled, if sink == 1 { 0 } else { N * (1 + LATER) }, "{mode:?} sink={sink}: fragments reaching the stack");
            drop(counter);
        }
    }
}

/// Frames the IP stack would not send: an 802.1Q tag in the frame data,
/// the longest IPv4 options (IHL 15), both at once; all counted exactly.
/// A frame with an outer tag of another type (802.1ad) is not parsed.
/// Hand-made fragments: a first fragment is counted in its flow as its
/// whole datagram; later fragments are matched to it until its last
/// fragment; a later fragment before its first fragment, after the last,
/// or of a datagram to another port is counted as unmatched.
#[test]
fn vlan_tags_ip_options_and_fragments_are_parsed() {
    if skip_unless_root() {
        return;
    }
    let pair = Pair::new("frames", 1);
    let counter = pair.attach(XdpMode::Native, config());
    let group = Ipv4Addr::new(239, 6, 0, 1);
    let opts = [1u8; 40]; // 40 NOP options: a 60-byte IPv4 header
    let dot1q = Some((0x8100, 100));
    let cases: [(FlowId, Option<(u16, u16)>, &[u8]); 4] = [
        (FlowId { group, run: 9, flow: 0, len: 100 }, None, &[]),
        (FlowId { group, run: 9, flow: 1, len: 100 }, dot1q, &[]),
        (FlowId { group, run: 9, flow: 2, len: 1000 }, None, &opts),
        (FlowId { group, run: 9, flow: 3, len: 8000 }, dot1q, &opts),
    ];
    let qinq = FlowId { group, run: 9, flow: 4, len: 100 };
    let fr = FlowId { group, run: 9, flow: 5, len: 3000 };
    // A datagram as fragments of up to 1480 bytes (MTU 1500): (IP id,
    // flags/offset, bytes) of each, offsets 0, 185, 370 (x 8 bytes).
    let pieces = |id: u16, l4: &[u8]| -> Vec<(u16, u16, Vec<u8>)> {
        l4.chunks(1480)
            .enumerate()
            .map(|(i, c)| {
                let last = (i + 1) * 1480 >= l4.len();
                (id, (i * 185) as u16 | if last { 0 } else { 0x2000 }, c.to_vec())
            })
            .collect()
    };
    let a = pieces(0x1001, &udp(PORT, &fr.datagram(Ev::Data(0))));
    let b = pieces(0x1002, &udp(PORT, &fr.datagram(Ev::Data(1))));
    let other_port = pieces(0x1003, &udp(PORT + 1, &fr.datagram(Ev::Data(2))));
    assert_eq!((a.len(), b.len()), (3, 3));
    // In order, then the last fragment again (its datagram is done: unmatched);
    // b's middle fragment before its first one (unmatched), then the rest;
    // another port's datagram (the later fragment matches nothing).
    let frags: Vec<&(u16, u16, Vec<u8>)> =
        vec![&a[0], &a[1], &a[2], &a[2], &b[1], &b[0], &b[2], &other_port[0], &other_port[1]];
    let ev = script(10, &[2], &[(5, 7)], &[(8, 1)], 1);

    send_all(&pair, &counter, |tx| {
        for e in &ev {
            for (f, tag, opts) in &cases {
                tx.send_frame(&frame(*tag, opts, 0, group, PORT, &f.datagram(*e)));
            }
        }
        // 802.1ad outer tag: not an 802.1Q tag, so not looked into.
        tx.send_frame(&frame(Some((0x88a8, 100)), &[], 0, group, PORT, &qinq.datagram(Ev::Data(0))));
        for (id, frag, l4) in &frags {
            tx.send_frame(&ip_frame(None, &[], *id, *frag, group, l4));
        }
    });

    let got = counter.flows().unwrap();
    assert_eq!(got.len(), cases.len() + 1, "flows: {got:?}");
    for (f, _, _) in &cases {
        let st = flow_state(&got, f);
        assert_eq!(observed(&st), model(f, &ev), "flow {f:?}");
        check_timing(&st);
    }
    // Both fragmented datagrams, counted once each with their whole length.
    let st = flow_state(&got, &fr);
    assert_eq!(observed(&st), model(&fr, &[Ev::Data(0), Ev::Data(1)]));
    assert_eq!(fragmented(&counter), vec![(fr.key_from(SENDER), 2)]);
    let g = counter.globals().unwrap();
    assert_eq!(g[GlobalCounter::Fragments as usize], 2, "a[0], b[0]");
    assert_eq!(g[GlobalCounter::LaterFragments as usize], 3, "a[1], a[2], b[2]");
    assert_eq!(g[GlobalCounter::UnmatchedFragments as usize], 3, "a[2] again, b[1] early, the other port's");
    assert_eq!(g[GlobalCounter::Foreign as usize], 0);
    assert_eq!(g[GlobalCounter::Packets as usize], (ev.len() * cases.len() + 1 + frags.len()) as u64);
}

/// Flows beyond MAX_FLOWS find no room: counted in MapFull, while the
/// flows already in the map go on counting.
#[test]
fn full_flow_map_counts_map_full() {
    if skip_unless_root() {
        return;
    }
    let pair = Pair::new("full", 1);
    let counter = pair.attach(XdpMode::Native, config());
    let group = Ipv4Addr::new(239, 7, 0, 1);
    let flow = |i: u32| FlowId { group, run: 3, flow: i, len: 64 };
    const EXTRA: u32 = 3;
    send_all(&pair, &counter, |tx| {
        for i in 0..MAX_FLOWS + EXTRA {
            tx.send(&flow(i), Ev::Data(0));
        }
        tx.send(&flow(0), Ev::Data(1));
    });
    let got = counter.flows().unwrap();
    assert_eq!(got.len(), MAX_FLOWS as usize);
    assert_eq!(counter.global(GlobalCounter::MapFull).unwrap(), EXTRA as u64);
    let first = flow_state(&got, &flow(0));
    assert_eq!((first.received, first.next_seq, first.lost), (2, 2, 0));
    let counted: u64 = got.iter().map(|(_, st)| st.received).sum();
    assert_eq!(counted, MAX_FLOWS as u64 + 1);
}

/// Auto mode picks tc ingress on veth, and says why: veth copies every
/// packet it hands native XDP (`veth_convert_skb_to_xdp_buff`), tc reads
/// the skb in place. On a tap, whose native XDP runs on the buffer the
/// packet was written into, it picks native XDP.
#[test]
fn auto_picks_the_attach_point_that_reads_packets_in_place() {
    if skip_unless_root() {
        return;
    }
    let pair = Pair::new("auto", 1);
    let counter = pair.attach(XdpMode::Auto, config());
    assert_eq!(counter.mode(), "tc");
    assert_eq!(counter.reason(), "veth copies every packet for native XDP; tc ingress reads each skb in place");
    assert!(!pair.link_details().contains("xdp"), "{}", pair.link_details());
    drop(counter);

    sh(&pair.b, "ip tuntap add dev mcbtap mode tap && ip link set mcbtap up");
    let counter = pair
        .b
        .run(|| KernelCounter::attach(&mcblast::iface::lookup("mcbtap")?, XdpMode::Auto, config()))
        .expect("enter namespace b")
        .expect("attach the kernel counter to the tap");
    assert_eq!((counter.mode(), counter.reason()), ("native", "native XDP reads each frame in the driver's own buffer"));
}

/// Dropping the counter detaches it.
#[test]
fn drop_detaches_the_program() {
    if skip_unless_root() {
        return;
    }
    let pair = Pair::new("detach", 1);
    assert!(!pair.link_details().contains("xdp"));
    let counter = pair.attach(XdpMode::Native, config());
    assert_eq!(counter.mode(), "native");
    assert!(pair.link_details().contains("xdp"), "{}", pair.link_details());
    drop(counter);
    let after = pair.link_details();
    assert!(!after.contains("xdp"), "still attached after drop: {after}");

    // Generic mode attaches too, and detaches the same way.
    let counter = pair.attach(XdpMode::Generic, config());
    assert_eq!(counter.mode(), "generic");
    assert!(pair.link_details().contains("xdpgeneric"), "{}", pair.link_details());
    drop(counter);
    assert!(!pair.link_details().contains("xdp"));
}

const CHILD_ENV: &str = "MCBT_KC_CHILD_NS";
const CHILD_READY: &str = "MCBT-KC-CHILD-ATTACHED";

/// A process killed with SIGKILL leaves nothing attached: the kernel
/// releases the BPF link with the process's descriptors.
#[test]
fn sigkill_leaves_nothing_attached() {
    if skip_unless_root() {
        return;
    }
    let pair = Pair::new("kill", 1);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_attaches_and_waits", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, pair.b.name())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let ready = BufReader::new(stdout).lines().map_while(Result::ok).any(|l| l.contains(CHILD_READY));
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        panic!("child did not attach the counter");
    }
    assert!(pair.link_details().contains("xdp"), "child's program not attached");
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();
    let after = pair.link_details();
    assert!(!after.contains("xdp"), "still attached after SIGKILL: {after}");
}

/// Not a test on its own: the child process of
/// `sigkill_leaves_nothing_attached`, which attaches the counter in the
/// namespace named by the environment and waits to be killed.
#[test]
#[ignore = "child process of sigkill_leaves_nothing_attached"]
fn child_attaches_and_waits() {
    let ns = std::env::var(CHILD_ENV).expect("run only by sigkill_leaves_nothing_attached");
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    mcblast::sys::setns_net(std::os::fd::AsFd::as_fd(&file)).unwrap();
    let iface = mcblast::iface::lookup("vb").unwrap();
    let _counter = KernelCounter::attach(&iface, XdpMode::Native, config()).unwrap();
    println!("{CHILD_READY}");
    std::thread::sleep(STALL * 3);
    panic!("child was not killed");
}

/// Delays the histogram test stamps its datagrams with: the midpoints of
/// random buckets from 1 s to 34 s, either sign (a negative one is a send
/// time in the future: clocks apart), each also far from its predecessor by
/// a difference (the IPDV) at least `MARGIN` from its own bucket's edges.
/// The real transit (µs, or a few ms on a loaded machine) then moves no
/// value out of its bucket.
fn stamped_delays(n: usize) -> Vec<i64> {
    use mcblast_common::hist::{bucket, lower_ns, upper_ns};
    const MARGIN: i64 = 10_000_000;
    let first = bucket(1 << 30);
    let mid = |b: usize| lower_ns(b) + (upper_ns(b) - lower_ns(b)) / 2;
    let clear = |x: i64| x >= 1 << 30 && x - lower_ns(bucket(x)) >= MARGIN && upper_ns(bucket(x)) - x >= MARGIN;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        seed >> 33
    };
    let mut out: Vec<i64> = Vec::new();
    while out.len() < n {
        let d = mid(first + (next() % 80) as usize) * if next() % 4 == 0 { -1 } else { 1 };
        if out.last().is_none_or(|&p| clear((d - p).abs())) {
            out.push(d);
        }
    }
    out
}

/// Ground truth for the kernel's histograms: datagrams stamped with chosen
/// send times (so each one-way delay and each IPDV is known to well within
/// its bucket) must fill the kernel's delay and IPDV histograms exactly as
/// the host's tracker fills them from the same delays, bucket for bucket.
#[test]
fn delay_and_ipdv_histograms_in_the_kernel_match_the_host_tracker() {
    if skip_unless_root() {
        return;
    }
    let pair = Pair::new("hist", 1);
    let counter = pair.attach(XdpMode::Native, config());
    let f = FlowId { group: Ipv4Addr::new(239, 1, 1, 9), run: 0x4157, flow: 0, len: 400 };
    let delays = stamped_delays(60);
    send_all(&pair, &counter, |tx| {
        for (i, &d) in delays.iter().enumerate() {
            let h = Header {
                kind: Kind::Data,
                flags: FLAG_CLOCK_SYNCED | ((TAI_OFFSET as u16) << FLAG_TAI_SHIFT),
                run: f.run,
                flow: f.flow,
                seq: i as u64,
                tx_ns: (mcblast::clock::tai_ns() as i64 - d) as u64,
                len: f.len as u32,
                clock: CLOCK,
            };
            tx.send_to(&header_datagram(h), f.group, PORT);
        }
    });
    let kernel = flow_state(&counter.flows().expect("read flows"), &f);
    let mut host = FlowState::new();
    let t0 = 1u64 << 40;
    for (i, &d) in delays.iter().enumerate() {
        host.on_data(i as u64, f.len as u32, t0, (t0 as i64 + d) as u64, 0, 0);
    }
    assert_eq!((kernel.received, kernel.delay_count, kernel.ipdv_count), (60, 60, 59));
    assert!(host.delay_negative > 0 && host.delay_negative < 60, "the script has both signs");
    assert_eq!(kernel.delay_negative, host.delay_negative);
    assert_eq!(kernel.delay_hist, host.delay_hist, "delay histogram");
    assert_eq!(kernel.ipdv_hist, host.ipdv_hist, "IPDV histogram");
}
