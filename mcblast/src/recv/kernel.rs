//! The in-kernel counter, user side: loads the XDP program built from
//! `mcblast-ebpf` (or its tc twin), configures it, attaches it to an
//! interface through a BPF link (XDP native or generic, or tcx ingress),
//! and reads its per-flow state and global counters.
//!
//! [`KernelCounter::set_groups`] limits counting to the groups (and sources)
//! the receiver joined; without it every group to the port is counted.
//!
//! The attachment is a BPF link owned by this process: it goes away when
//! the [`KernelCounter`] is dropped, and also when the process dies in any
//! other way (SIGKILL included), because the kernel releases the link with
//! its last file descriptor. Nothing stays attached to the interface.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf};
use aya::programs::{BtfTracePoint, ProgramError, SchedClassifier, Xdp};
use aya::{Ebpf, EbpfError, EbpfLoader};
use mcblast_common::maps::{
    Config, DropConfig, DropKey, FlowEntry, FlowKey, GLOBAL_COUNTERS, GROUP_COUNT_INDEX, GROUP_GENERATION_INDEX,
    GlobalCounter, LossRecord, MAX_GROUPS, NO_DROP_REASON,
};
use mcblast_common::tracker::FlowState;

use crate::sys::kfeatures::KernelFeatures;
use crate::ebpf::{OBJECT, TC_PROGRAM};
use crate::iface::Iface;


/// Name of the XDP program in the object.
const PROGRAM: &str = "mcblast_counter";
/// The counter's walk over the datagrams of a GSO or GRO packet goes on
/// in these programs (tail calls through the named program arrays).
const XDP_STEP: &str = "mcblast_counter_step";
/// The one-buffer XDP program and its step, for kernels without XDP
/// multi-buffer (see `kfeatures`), and the program arrays of both steps.
const XDP_LINEAR_PROGRAM: &str = "mcblast_counter_linear";
const XDP_LINEAR_STEP: &str = "mcblast_counter_linear_step";
const TC_STEP: &str = "mcblast_tc_step";
/// Names of the drop tracer (tp_btf `kfree_skb`) in the object: for the
/// tracepoint with the receiving socket (4 arguments), and without (3).
const DROP_PROGRAM: &str = "mcblast_drops";
const DROP_PROGRAM_NOSK: &str = "mcblast_drops_nosk";
const DROP_PROGRAM_NOREASON: &str = "mcblast_drops_noreason";

/// Where the user asks the kernel counter to attach (`recv --xdp-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    Auto,
    Native,
    Generic,
    /// tc ingress (tcx link), not XDP.
    Tc,
}

/// Which drop tracer program to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropTracer {
    /// The one that fits the running kernel's tracepoint (from its BTF).
    Auto,
    /// `kfree_skb(skb, location, reason, rx_sk)`: socket drops are matched
    /// to the receiver's socket ([`KernelCounter::set_drop_socket`]).
    WithSocket,
    /// `kfree_skb(skb, location, reason)` (kernels 5.17 to 6.10): every
    /// drop is matched by `skb->dev`; any socket of the namespace counts.
    WithoutSocket,
    /// `kfree_skb(skb, location)` (before 5.17): as `WithoutSocket`, and
    /// every drop is recorded with reason [`NO_DROP_REASON`] and the address
    /// that freed it.
    WithoutReason,
}
/// The tracepoint the drop tracer attaches to.
const DROP_TRACEPOINT: &str = "kfree_skb";
/// `BPF_F_LOCK`: copy a map value while holding its `bpf_spin_lock`.
const BPF_F_LOCK: u64 = 4;
/// `XDP_FLAGS_SKB_MODE` / `XDP_FLAGS_DRV_MODE` from `if_link.h`.
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// Capability numbers (`linux/capability.h`).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;
/// Lines of the verifier log shown when the program is rejected.
const VERIFIER_TAIL: usize = 20;

/// How far CLOCK_TAI − CLOCK_MONOTONIC may move before the counter's copy is
/// rewritten: above the spread of its measurement (a few µs), below any delay
/// worth reporting.
const TAI_OFFSET_SLACK_NS: u64 = 10_000;

/// The XDP per-flow counter, attached to one interface.
pub struct KernelCounter {
    /// The BPF link (closing it detaches the program), or a classic tc
    /// filter's owner file (the filter goes with the program, `ebpf`).
    /// Declared first so it is released before the program and maps.
    link: Option<Attachment>,
    /// The group filter's maps, taken out of `ebpf` so `set_groups` can write
    /// them through `&self`; the lock keeps two calls from interleaving.
    groups: Mutex<GroupMaps>,
    /// The `LOSS_EVENTS` ring buffer (gaps and fills of every flow), taken
    /// out of `ebpf` so [`drain_loss`](Self::drain_loss) works through `&self`.
    loss: Mutex<RingBuf<MapData>>,
    /// The `CONFIG` map, taken out of `ebpf` so [`set_sink`](Self::set_sink) and, where the kernel has no
    /// `bpf_ktime_get_tai_ns`, [`refresh_tai_offset`](Self::refresh_tai_offset) (which corrects the offset
    /// the program adds to its monotonic clock) write it through `&self`.
    config: Mutex<Array<MapData, Config>>,
    /// Whether the program adds a measured TAI offset to its monotonic clock.
    tai_offset: bool,
    ebpf: Ebpf,
    mode: &'static str,
    /// Why the counter sits there (see [`auto_order`]).
    reason: String,
}

/// How the counter is attached.
#[derive(Debug)]
enum Attachment {
    /// A BPF link (XDP, tcx): its descriptor holds the attachment.
    #[allow(dead_code)] // held: its descriptor is the attachment
    Link(OwnedFd),
    /// A classic tc filter (kernels without tcx), detached with the program.
    #[allow(dead_code)] // held: removed when dropped
    Classic(crate::ebpf::tc_classic::Owner),
}

/// The `GROUPS` and `GROUP_COUNT` maps of the program.
struct GroupMaps {
    /// Group to its joined source (0: any), both in network byte order.
    groups: HashMap<MapData, u32, u32>,
    /// Element 0: number of entries in `groups`; 0 turns the filter off.
    count: Array<MapData, u32>,
}

impl std::fmt::Debug for KernelCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelCounter").field("mode", &self.mode).finish_non_exhaustive()
    }
}

impl KernelCounter {
    /// Loads the counter, writes `cfg` and attaches it to `iface`.
    ///
    /// [`XdpMode::Auto`] tries native (driver) XDP first, then generic XDP,
    /// then tc ingress (tcx), saying on stderr which one it uses and why;
    /// `Native`, `Generic` and `Tc` force one.
    pub fn attach(iface: &Iface, mode: XdpMode, mut cfg: Config) -> Result<KernelCounter> {
        if OBJECT.is_empty() {
            bail!("this mcblast was built without its eBPF program (AYA_BUILD_SKIP); rebuild without it");
        }
        if !privileged() {
            bail!("{}", privilege_message());
        }
        if cfg.port == 0 {
            bail!("the kernel counter needs a UDP port (got 0)");
        }
        crate::sys::bpf::raise_memlock_limit();

        let features = KernelFeatures::probe();
        if !features.tai_helper {
            cfg.mono_to_tai_ns = crate::clock::mono_to_tai_ns();
        }
        let mut ebpf = load_configured(&features, cfg)?;
        // The program keeps references to its maps; these handles stay open
        // with the counter. GROUP_COUNT starts at 0: no group filter.
        let groups = GroupMaps {
            groups: HashMap::try_from(ebpf.take_map("GROUPS").context("eBPF object has no GROUPS map")?)?,
            count: Array::try_from(ebpf.take_map("GROUP_COUNT").context("eBPF object has no GROUP_COUNT map")?)?,
        };
        let loss = Mutex::new(RingBuf::try_from(
            ebpf.take_map("LOSS_EVENTS").context("eBPF object has no LOSS_EVENTS map")?,
        )?);
        let config = Mutex::new(Array::try_from(ebpf.take_map("CONFIG").context("eBPF object has no CONFIG map")?)?);
        let tai_offset = !features.tai_helper;
        // Each program is loaded when its attach point is first tried.
        let mut attach = |point: AttachPoint| match point {
            AttachPoint::Native => attach_xdp(&mut ebpf, &features, iface, XDP_FLAGS_DRV_MODE),
            AttachPoint::Generic => attach_xdp(&mut ebpf, &features, iface, XDP_FLAGS_SKB_MODE),
            AttachPoint::Tc => attach_tc(&mut ebpf, &features, iface),
        };
        let (link, point, reason) = match AttachPoint::forced(mode) {
            Some(point) => {
                let link = attach(point)?.map_err(|e| point.error(iface, &e))?;
                (link, point, format!("--xdp-mode {}", point.mode()))
            }
            None => auto_attach(iface, &mut attach)?,
        };
        let mode = point.mode();
        let reason = attach_reason(reason, &link, point, &features);
        Ok(KernelCounter { link: Some(link), groups: Mutex::new(groups), loss, config, tai_offset, ebpf, mode, reason })
    }

    /// Without `bpf_ktime_get_tai_ns` the program adds the CLOCK_TAI −
    /// CLOCK_MONOTONIC offset measured at attach to its monotonic clock; a
    /// step of the system clock since (NTP at boot, `date -s`, a VM's clock
    /// synced by its host) moves TAI against CLOCK_MONOTONIC and every delay
    /// with it. Measures the offset again and writes it when it moved by more
    /// than [`TAI_OFFSET_SLACK_NS`]; called every 0.1 s, so a step skews the
    /// delays of the 0.1 s after it at most. Returns how far it moved (ns)
    /// when it wrote it.
    pub fn refresh_tai_offset(&self) -> Result<Option<i64>> {
        if !self.tai_offset {
            return Ok(None);
        }
        let mut config = self.config.lock().unwrap_or_else(PoisonError::into_inner);
        let mut cfg = config.get(&0, 0).context("cannot read the counter's configuration")?;
        let now = crate::clock::mono_to_tai_ns();
        let moved = now.wrapping_sub(cfg.mono_to_tai_ns) as i64;
        if moved.unsigned_abs() <= TAI_OFFSET_SLACK_NS {
            return Ok(None);
        }
        cfg.mono_to_tai_ns = now;
        config.set(0, cfg, 0).context("cannot write the counter's configuration")?;
        Ok(Some(moved))
    }

    /// Turns the sink on or off from the next packet on. The datagrams it dropped are counted in
    /// [`GlobalCounter::Sunk`].
    pub fn set_sink(&self, on: bool) -> Result<()> {
        let mut config = self.config.lock().unwrap_or_else(PoisonError::into_inner);
        let mut cfg = config.get(&0, 0).context("cannot read the counter's configuration")?;
        cfg.sink = on.into();
        config.set(0, cfg, 0).context("cannot write the counter's configuration")
    }

    /// Counts only datagrams to these groups from now on, each with the one
    /// source joined for it (`Some`: a source-specific join) or any source
    /// (`None`). Datagrams to the port for other groups, or from another
    /// source of a source-specific group, are passed untouched and counted
    /// in [`GlobalCounter::OtherGroup`], never as flows or Foreign. An empty
    /// list counts every group again, as after [`attach`](Self::attach).
    ///
    /// Call it before traffic starts: while one list replaces another, a
    /// datagram may be judged by either. Fails, changing nothing, with more
    /// than [`MAX_GROUPS`] groups, two different sources for one group, or
    /// source 0.0.0.0 (a map error part-way, which should not happen, may
    /// leave the list half replaced).
    pub fn set_groups(&self, groups: &[(Ipv4Addr, Option<Ipv4Addr>)]) -> Result<()> {
        let ne = |a: Ipv4Addr| u32::from_ne_bytes(a.octets());
        let mut want: BTreeMap<u32, u32> = BTreeMap::new();
        for &(group, source) in groups {
            let src = match source {
                Some(s) if s.is_unspecified() => {
                    bail!("source 0.0.0.0 for group {group} is no source address (None means any source)")
                }
                Some(s) => ne(s),
                None => 0,
            };
            if let Some(&prev) = want.get(&ne(group))
                && prev != src
            {
                let show =
                    |s: u32| if s == 0 { "any".to_string() } else { Ipv4Addr::from(s.to_ne_bytes()).to_string() };
                bail!(
                    "group {group} is listed with two sources ({} and {}); the kernel counter holds one per group",
                    show(prev),
                    show(src)
                );
            }
            want.insert(ne(group), src);
        }
        if want.len() > MAX_GROUPS as usize {
            bail!("the kernel counter can filter at most {MAX_GROUPS} groups, {} given", want.len());
        }

        // The lock guards no memory (the list lives in the kernel maps), so
        // a poisoned one is taken all the same.
        let mut m = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if want.is_empty() {
            m.count.set(GROUP_COUNT_INDEX, 0, 0).context("cannot turn off the kernel counter's group filter")?;
        }
        // Old entries go first, so old and new together never need more
        // than MAX_GROUPS slots.
        let old: Vec<u32> =
            m.groups.keys().collect::<Result<_, _>>().context("cannot list the kernel counter's joined groups")?;
        for group in old.into_iter().filter(|g| !want.contains_key(g)) {
            match m.groups.remove(&group) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(e).context("cannot remove a group from the kernel counter"),
            }
        }
        for (&group, &src) in &want {
            m.groups.insert(group, src, 0).context("cannot write the kernel counter's joined groups")?;
        }
        // Last: the filter takes effect once every entry is in place, and a
        // new generation retires the verdicts the counter kept per CPU.
        let on = "cannot turn on the kernel counter's group filter";
        m.count.set(GROUP_COUNT_INDEX, want.len() as u32, 0).context(on)?;
        let generation = m.count.get(&GROUP_GENERATION_INDEX, 0).context(on)?;
        m.count.set(GROUP_GENERATION_INDEX, generation.wrapping_add(1), 0).context(on)?;
        Ok(())
    }

    /// Starts the drop tracer: a tp_btf program on `skb:kfree_skb`, from the
    /// same object (it shares the port, run filter and joined groups), that
    /// counts per drop reason the datagrams to the port the kernel dropped
    /// in this process's network namespace on `iface` (or in a socket of
    /// this namespace). Read them with [`drops`](Self::drops). Drops with
    /// reason `locate_reason` (the kernel's value of NOT_SPECIFIED) are
    /// also keyed by the address that freed them; in a kernel without drop
    /// reasons, every drop is, with reason [`NO_DROP_REASON`].
    ///
    /// The attachment is a BPF link held by the loaded object: it goes with
    /// the [`KernelCounter`], and with the process however it dies.
    pub fn trace_drops(&mut self, iface: &Iface, locate_reason: u32, which: DropTracer) -> Result<DropTracer> {
        let btf = crate::sys::btf::Btf::from_kernel()?;
        let which = match which {
            DropTracer::Auto => match btf.tracepoint_args(DROP_TRACEPOINT)? {
                n if n >= 4 => DropTracer::WithSocket,
                3 => DropTracer::WithoutSocket,
                2 => DropTracer::WithoutReason,
                n => bail!("the kernel's {DROP_TRACEPOINT} tracepoint has {n} arguments (expected skb, location, ...)"),
            },
            w => w,
        };
        let (program, locate_reason) = match which {
            DropTracer::WithSocket => (DROP_PROGRAM, locate_reason),
            DropTracer::WithoutSocket => (DROP_PROGRAM_NOSK, locate_reason),
            DropTracer::WithoutReason | DropTracer::Auto => (DROP_PROGRAM_NOREASON, NO_DROP_REASON),
        };
        let off = |s: &str, p: &str| btf.offset(s, p);
        let netns = crate::sys::netns_inode().context("cannot identify this network namespace")?;
        let dc = DropConfig {
            netns: u32::try_from(netns).context("network namespace inode above 2^32")?,
            ifindex: iface.index,
            skb_dev: off("sk_buff", "dev")?,
            skb_head: off("sk_buff", "head")?,
            skb_data: off("sk_buff", "data")?,
            skb_len: off("sk_buff", "len")?,
            skb_data_len: off("sk_buff", "data_len")?,
            skb_network_header: off("sk_buff", "network_header")?,
            dev_ifindex: off("net_device", "ifindex")?,
            dev_net: off("net_device", "nd_net.net")?,
            sk_net: off("sock", "__sk_common.skc_net.net")?,
            net_inum: off("net", "ns.inum")?,
            locate_reason,
            sk_cookie: off("sock", "__sk_common.skc_cookie")?,
            cookie: 0,
            skb_end: off("sk_buff", "end")?,
            shinfo_gso_size: off("skb_shared_info", "gso_size")?,
        };
        {
            let mut m: Array<&mut MapData, DropConfig> =
                Array::try_from(self.ebpf.map_mut("DROP_CONFIG").context("eBPF object has no DROP_CONFIG map")?)?;
            m.set(0, dc, 0).context("cannot write the drop tracer's configuration")?;
        }
        let kbtf = aya::Btf::from_sys_fs().context("cannot read the kernel's BTF")?;
        let prog: &mut BtfTracePoint = self
            .ebpf
            .program_mut(program)
            .with_context(|| format!("eBPF object has no program {program}"))?
            .try_into()?;
        prog.load(DROP_TRACEPOINT, &kbtf).map_err(|e| match e {
            ProgramError::LoadError { io_error, verifier_log } if !is_eperm(&io_error) => {
                let log = verifier_log.to_string();
                let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
                let tail = lines[lines.len().saturating_sub(VERIFIER_TAIL)..].join("\n");
                anyhow!("the kernel refused the drop tracer ({io_error}); end of the verifier log:\n{tail}")
            }
            e => anyhow!("cannot load the drop tracer on tp_btf/{DROP_TRACEPOINT}: {e}"),
        })?;
        prog.attach().with_context(|| format!("cannot attach the drop tracer to tp_btf/{DROP_TRACEPOINT}"))?;
        Ok(which)
    }

    /// From now on, socket-level drops count only when they are the socket
    /// with this SO_COOKIE (the receiver's own). Call it before traffic starts.
    pub fn set_drop_socket(&mut self, cookie: u64) -> Result<()> {
        let mut m: Array<&mut MapData, DropConfig> =
            Array::try_from(self.ebpf.map_mut("DROP_CONFIG").context("eBPF object has no DROP_CONFIG map")?)?;
        let mut dc = m.get(&0, 0).context("cannot read the drop tracer's configuration")?;
        dc.cookie = cookie;
        m.set(0, dc, 0).context("cannot write the drop tracer's configuration")?;
        Ok(())
    }

    /// What the drop tracer counted: (reason, class) to datagrams, summed over CPUs.
    pub fn drops(&self) -> Result<BTreeMap<DropKey, u64>> {
        let map: PerCpuHashMap<&MapData, DropKey, u64> =
            PerCpuHashMap::try_from(self.ebpf.map("DROPS").context("eBPF object has no DROPS map")?)?;
        let mut out = BTreeMap::new();
        for item in map.iter() {
            let (k, values) = item.context("cannot read the drop tracer's counts")?;
            out.insert(k, values.iter().sum());
        }
        Ok(out)
    }

    /// Hands every loss record (a gap opened, a late datagram filled one)
    /// queued since the last call to `f`, in ring order; returns how many.
    /// Records that found the ring full are counted in
    /// [`GlobalCounter::LossEventsLost`] instead: read it to know whether
    /// the records are complete.
    pub fn drain_loss(&self, mut f: impl FnMut(LossRecord)) -> usize {
        let mut ring = self.loss.lock().unwrap_or_else(PoisonError::into_inner);
        let mut n = 0;
        while let Some(item) = ring.next() {
            if let Some(r) = LossRecord::from_bytes(&item) {
                f(r);
                n += 1;
            }
        }
        n
    }

    /// The attach point in use: `"native"` or `"generic"` (XDP), or `"tc"` (tcx ingress).
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    /// Why it is there, in one line: what `auto` chose and why, or the
    /// `--xdp-mode` asked for.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Every flow the counter has seen, each value copied under its spin
    /// lock (`BPF_F_LOCK`), so each state is consistent. Sorted by key.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowState)>> {
        Ok(self.flow_entries()?.into_iter().map(|(k, s, _)| (k, s)).collect())
    }

    /// As [`flows`](Self::flows), each flow with how many of its data
    /// datagrams arrived fragmented (counted by their first fragment; the
    /// count is part of the same locked copy as the state).
    pub fn flow_entries(&self) -> Result<Vec<(FlowKey, FlowState, u64)>> {
        let map: HashMap<&MapData, FlowKey, FlowEntry<u32>> =
            HashMap::try_from(self.ebpf.map("FLOWS").context("eBPF object has no FLOWS map")?)?;
        let mut out = Vec::new();
        for key in map.keys() {
            let key = key.context("cannot list the kernel counter's flows")?;
            match map.get(&key, BPF_F_LOCK) {
                Ok(entry) => out.push((key, entry.state, entry.fragmented)),
                // Entries are never deleted, but be robust to it.
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(e).context("cannot read a flow of the kernel counter"),
            }
        }
        out.sort_by_key(|(k, _, _)| *k);
        Ok(out)
    }

    /// The global counters ([`GlobalCounter`] indices), summed over CPUs.
    pub fn globals(&self) -> Result<[u64; GLOBAL_COUNTERS as usize]> {
        let mut sum = [0u64; GLOBAL_COUNTERS as usize];
        for cpu in self.globals_per_cpu()? {
            for (s, v) in sum.iter_mut().zip(cpu) {
                *s += v;
            }
        }
        Ok(sum)
    }

    /// The global counters of each possible CPU (index = CPU number).
    pub fn globals_per_cpu(&self) -> Result<Vec<[u64; GLOBAL_COUNTERS as usize]>> {
        let map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map("GLOBAL").context("eBPF object has no GLOBAL map")?)?;
        let mut out: Vec<[u64; GLOBAL_COUNTERS as usize]> = Vec::new();
        for i in 0..GLOBAL_COUNTERS {
            let values = map.get(&i, 0).context("cannot read the kernel counter's global counters")?;
            if out.is_empty() {
                out = vec![[0; GLOBAL_COUNTERS as usize]; values.len()];
            }
            for (cpu, v) in values.iter().enumerate() {
                out[cpu][i as usize] = *v;
            }
        }
        Ok(out)
    }

    /// One global counter, summed over CPUs.
    pub fn global(&self, c: GlobalCounter) -> Result<u64> {
        Ok(self.globals()?[c as usize])
    }
}

impl Drop for KernelCounter {
    fn drop(&mut self) {
        // Closing the link's only descriptor detaches the program now;
        // the program and maps go with `ebpf` afterwards.
        drop(self.link.take());
    }
}

/// The eBPF object loaded (its TAI helper switched to what the kernel has), with `cfg` written to its CONFIG map.
fn load_configured(features: &KernelFeatures, cfg: Config) -> Result<Ebpf> {
    let tai = u8::from(features.tai_helper);
    let mut ebpf = EbpfLoader::new().override_global("TAI_HELPER", &tai, true).load(OBJECT).map_err(explain_load)?;
    {
        let mut config: Array<&mut MapData, Config> =
            Array::try_from(ebpf.map_mut("CONFIG").context("eBPF object has no CONFIG map")?)?;
        config.set(0, cfg, 0).context("cannot write the counter's configuration")?;
    }
    Ok(ebpf)
}

/// The XDP program's link on `iface` with `flags` (native or generic), loading it and its step program the first
/// time; the outer error is the program's, the inner the attach's.
fn attach_xdp(
    ebpf: &mut Ebpf,
    features: &KernelFeatures,
    iface: &Iface,
    flags: u32,
) -> Result<std::io::Result<Attachment>> {
    let (xdp_program, xdp_step, xdp_steps) = xdp_programs(features);
    let prog: &mut Xdp = ebpf
        .program_mut(xdp_program)
        .with_context(|| format!("eBPF object has no program {xdp_program}"))?
        .try_into()?;
    if prog.fd().is_err() {
        prog.load().map_err(|e| explain_program(e, "XDP"))?;
        let step: &mut Xdp =
            ebpf.program_mut(xdp_step).with_context(|| format!("eBPF object has no {xdp_step}"))?.try_into()?;
        step.load().map_err(|e| explain_program(e, "XDP"))?;
        let fd = step.fd()?.try_clone()?;
        set_step(ebpf, xdp_steps, &fd)?;
    }
    let prog: &mut Xdp = ebpf.program_mut(xdp_program).expect("loaded above").try_into()?;
    Ok(crate::sys::bpf::xdp_link_create(prog.fd()?.as_fd(), iface.index, flags).map(Attachment::Link))
}

/// The tc program on `iface`'s ingress (a tcx link, else a classic filter), loading it and its step program; the
/// outer error is the program's, the inner the attach's.
fn attach_tc(ebpf: &mut Ebpf, features: &KernelFeatures, iface: &Iface) -> Result<std::io::Result<Attachment>> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(TC_PROGRAM)
        .with_context(|| format!("eBPF object has no program {TC_PROGRAM}"))?
        .try_into()?;
    prog.load().map_err(|e| explain_program(e, "tc"))?;
    let step: &mut SchedClassifier =
        ebpf.program_mut(TC_STEP).with_context(|| format!("eBPF object has no {TC_STEP}"))?.try_into()?;
    step.load().map_err(|e| explain_program(e, "tc"))?;
    let fd = step.fd()?.try_clone()?;
    set_step(ebpf, "TC_STEPS", &fd)?;
    let prog: &mut SchedClassifier = ebpf.program_mut(TC_PROGRAM).expect("loaded above").try_into()?;
    if features.tcx {
        return Ok(crate::sys::bpf::tcx_link_create(prog.fd()?.as_fd(), iface.index).map(Attachment::Link));
    }
    Ok(match crate::ebpf::tc_classic::attach(prog, iface) {
        Ok((owner, note)) => {
            if let Some(note) = note {
                eprintln!("{note}");
            }
            Ok(Attachment::Classic(owner))
        }
        Err(e) => Err(std::io::Error::other(format!("{e:#}"))),
    })
}

/// Why the counter is attached where it is, with what this kernel lacks (tcx, the TAI helper, XDP multi-buffer).
fn attach_reason(reason: String, link: &Attachment, point: AttachPoint, features: &KernelFeatures) -> String {
    let reason = match link {
        Attachment::Classic(_) => format!("{reason} (a classic tc filter: this kernel has no tcx links)"),
        Attachment::Link(_) => reason,
    };
    let reason = if features.tai_helper {
        reason
    } else {
        format!("{reason}; receive times from the monotonic clock plus its TAI offset (no bpf_ktime_get_tai_ns)")
    };
    if features.xdp_frags || point == AttachPoint::Tc {
        reason
    } else {
        format!("{reason}; a one-buffer XDP program (no XDP multi-buffer in this kernel)")
    }
}

/// Puts the walk's step program `fd` in slot 0 of the program array
/// `steps`, where the counter tail-calls it.
fn set_step(ebpf: &mut Ebpf, steps: &str, fd: &aya::programs::ProgramFd) -> Result<()> {
    let map = ebpf.map_mut(steps).with_context(|| format!("eBPF object has no map {steps}"))?;
    let mut array: ProgramArray<&mut MapData> = ProgramArray::try_from(map)?;
    array.set(0, fd, 0).with_context(|| format!("cannot put the counter's step program in {steps}"))
}

/// Whether this process may load and attach XDP programs.
fn privileged() -> bool {
    let cap = crate::sys::has_capability;
    (cap(CAP_BPF) || cap(CAP_SYS_ADMIN)) && cap(CAP_NET_ADMIN)
}

fn privilege_message() -> &'static str {
    "the kernel counter needs CAP_BPF and CAP_NET_ADMIN (or run as root)"
}

fn no_btf() -> bool {
    !Path::new("/sys/kernel/btf/vmlinux").exists()
}

const NO_BTF: &str = "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing); the kernel counter needs a kernel built with CONFIG_DEBUG_INFO_BTF=y";

fn is_eperm(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

/// Turns a load failure (maps, BTF) into one line a user can act on.
fn explain_load(e: EbpfError) -> anyhow::Error {
    match e {
        EbpfError::MapError(aya::maps::MapError::CreateError { name, io_error }) => {
            if is_eperm(&io_error) {
                anyhow!("{}", privilege_message())
            } else if no_btf() {
                anyhow!("{NO_BTF}")
            } else {
                anyhow!("the kernel refused to create the counter's map {name}: {io_error}")
            }
        }
        EbpfError::BtfError(e) => {
            if no_btf() {
                anyhow!("{NO_BTF}")
            } else {
                anyhow!("the kernel refused the counter's BTF: {e}")
            }
        }
        EbpfError::ProgramError(e) => explain_program(e, "eBPF"),
        e => anyhow!("cannot load the kernel counter: {e}"),
    }
}

/// The XDP program, its walk step and the step's program array this
/// kernel can load: multi-buffer (`frags`) ones where it has them.
fn xdp_programs(features: &KernelFeatures) -> (&'static str, &'static str, &'static str) {
    if features.xdp_frags {
        (PROGRAM, XDP_STEP, "XDP_STEPS")
    } else {
        (XDP_LINEAR_PROGRAM, XDP_LINEAR_STEP, "XDP_LINEAR_STEPS")
    }
}

/// Turns a program load failure into a clear error; verifier rejections
/// carry the end of the verifier log. `kind` is "XDP" or "tc".
fn explain_program(e: ProgramError, kind: &str) -> anyhow::Error {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            // The verifier says EACCES too: a privilege problem only when
            // the process lacks the capabilities.
            if is_eperm(&io_error) && !privileged() {
                return anyhow!("{}", privilege_message());
            }
            let log = verifier_log.to_string();
            let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.is_empty() {
                if no_btf() {
                    return anyhow!("{NO_BTF}");
                }
                return anyhow!(
                    "the kernel refused the counter's {kind} program: {io_error} (no verifier log: a program type, \
                     flag or helper this kernel lacks; `mcblast probe` lists what it has)"
                );
            }
            let tail = lines[lines.len().saturating_sub(VERIFIER_TAIL)..].join("\n");
            anyhow!("the kernel verifier rejected the counter's {kind} program ({io_error}); end of the verifier log:\n{tail}")
        }
        e => anyhow!("cannot load the counter's {kind} program: {e}"),
    }
}

/// Where the counter can sit on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachPoint {
    Native,
    Generic,
    Tc,
}

impl AttachPoint {
    /// The point `--xdp-mode` forces; None for `auto`.
    fn forced(mode: XdpMode) -> Option<AttachPoint> {
        match mode {
            XdpMode::Auto => None,
            XdpMode::Native => Some(AttachPoint::Native),
            XdpMode::Generic => Some(AttachPoint::Generic),
            XdpMode::Tc => Some(AttachPoint::Tc),
        }
    }

    /// Its name in `--xdp-mode` and in the JSON `xdp_mode`.
    pub fn mode(self) -> &'static str {
        match self {
            AttachPoint::Native => "native",
            AttachPoint::Generic => "generic",
            AttachPoint::Tc => "tc",
        }
    }

    /// What it costs per packet, for the line that says why it was chosen.
    fn cost(self) -> &'static str {
        match self {
            AttachPoint::Native => "native XDP reads each frame in the driver's own buffer",
            AttachPoint::Tc => "tc ingress reads each skb in place",
            AttachPoint::Generic => "generic XDP, which copies every non-linear packet",
        }
    }

    /// Why attaching here failed, for a fallback line.
    fn failure(self, iface: &Iface, e: &std::io::Error) -> String {
        match self {
            AttachPoint::Native => format!("native XDP failed ({})", native_reason(iface, e)),
            AttachPoint::Generic => format!("generic XDP failed ({e})"),
            AttachPoint::Tc => format!("tc ingress failed ({})", tc_reason(e)),
        }
    }

    /// The error when this point was asked for and failed.
    fn error(self, iface: &Iface, e: &std::io::Error) -> anyhow::Error {
        match self {
            AttachPoint::Tc => tc_attach_error(iface, e),
            p => attach_error(iface, p.mode(), e),
        }
    }
}

/// The attach points `auto` tries on an interface of this driver, cheapest
/// exact one first, and what it knows of the driver that decided the order.
///
/// veth hands native XDP only packets it has copied into a fresh page:
/// an skb made by the stack or cloned by a bridge has a locked head or too
/// little headroom, so `veth_convert_skb_to_xdp_buff` copies all of it (8 KB
/// per datagram at 8192 B, and a GSO batch is cut up for the copy), while tc
/// ingress reads the same skb where it lies and counts a GSO batch whole.
/// Other drivers run native XDP on their own receive buffers. Generic XDP
/// copies every non-linear skb, so it comes last.
pub fn auto_order(driver: Option<&str>) -> ([AttachPoint; 3], Option<&'static str>) {
    use AttachPoint::*;
    match driver {
        Some("veth") => ([Tc, Native, Generic], Some("veth copies every packet for native XDP")),
        _ => ([Native, Tc, Generic], None),
    }
}

/// `auto`: the first point of [`auto_order`] that attaches, and the line
/// that says why (what the driver does, what failed before it).
fn auto_attach(
    iface: &Iface,
    attach: &mut impl FnMut(AttachPoint) -> Result<std::io::Result<Attachment>>,
) -> Result<(Attachment, AttachPoint, String)> {
    let driver = crate::sys::ethtool::driver(&iface.name).ok();
    let (order, known) = auto_order(driver.as_deref());
    let mut why: Vec<String> = known.map(str::to_string).into_iter().collect();
    for point in order {
        match attach(point)? {
            Ok(link) => {
                why.push(point.cost().to_string());
                return Ok((link, point, why.join("; ")));
            }
            Err(e) => {
                if let Some(fatal) = fatal_attach_error(iface, &e) {
                    return Err(fatal);
                }
                why.push(point.failure(iface, &e));
            }
        }
    }
    bail!("no attach point for the kernel counter on {}: {}", iface.name, why.join("; "))
}

/// Attach errors that no other mode can fix.
fn fatal_attach_error(iface: &Iface, e: &std::io::Error) -> Option<anyhow::Error> {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => Some(anyhow!("{}", privilege_message())),
        Some(libc::EBUSY) | Some(libc::EEXIST) => Some(busy(iface)),
        _ => None,
    }
}

fn busy(iface: &Iface) -> anyhow::Error {
    anyhow!(
        "another XDP program is already attached to {}; see `ip link show {}` and detach it first",
        iface.name,
        iface.name
    )
}

fn native_reason(iface: &Iface, e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(libc::EINVAL)
        && let Some(why) = crate::sys::kfeatures::native_xdp_mtu_refusal(&iface.name, iface.mtu)
    {
        return why;
    }
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(524 /* ENOTSUPP */) => "the driver has no native XDP".to_string(),
        Some(libc::ERANGE) if !KernelFeatures::probe().xdp_frags => format!(
            "MTU {} is too large for the driver's native XDP in a kernel without XDP multi-buffer (a frame must fit \
             one page); use --xdp-mode tc (or generic), or a smaller MTU",
            iface.mtu
        ),
        Some(libc::ERANGE) => "the MTU is too large for the driver's native XDP".to_string(),
        _ => e.to_string(),
    }
}

fn tc_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EINVAL) => format!("{e}; tc ingress links (tcx) need Linux 6.6 or later"),
        _ => e.to_string(),
    }
}

fn tc_attach_error(iface: &Iface, e: &std::io::Error) -> anyhow::Error {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => anyhow!("{}", privilege_message()),
        _ => anyhow!("cannot attach the counter at tc ingress (tcx) of {}: {}", iface.name, tc_reason(e)),
    }
}

fn attach_error(iface: &Iface, mode: &str, e: &std::io::Error) -> anyhow::Error {
    if let Some(fatal) = fatal_attach_error(iface, e) {
        return fatal;
    }
    let why = if mode == "native" { native_reason(iface, e) } else { e.to_string() };
    anyhow!("cannot attach XDP in {mode} mode to {}: {why}", iface.name)
}
