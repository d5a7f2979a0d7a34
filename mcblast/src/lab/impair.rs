//! `mcblast lab impair LINK`: the eBPF impairment program (`mcblast_impair`
//! in `mcblast-ebpf/src/impair.rs`) on a lab link, this kernel's stand-in
//! for netem.
//!
//! A link is a receiver's port on its access bridge, named after the
//! receiver (`r1` is the port toward r1, in `<prefix>sw`, or in the
//! receiver's host namespace with emulated hosts). The program sits at the
//! port's tc egress (a tcx link): it acts on exactly the datagrams the
//! bridge forwards to that one receiver, after the fabric, before the
//! receiver's driver, and no other receiver is affected.
//!
//! The impairment belongs to the lab, not to the command: its tcx link and
//! its map (configuration, state, counters) are pinned in bpffs under
//! `/sys/fs/bpf/mcblast/<prefix>/` as `impair-<link>` and
//! `impair-<link>-map`. `--stats` reads the map, `--clear` removes both
//! pins (the kernel then detaches the program), and `mcblast lab down`
//! removes the lab's whole directory.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aya::EbpfLoader;
use aya::maps::{Array, Map, MapData};
use aya::programs::SchedClassifier;
use aya::programs::tc::{self, NlOptions, TcAttachOptions, TcAttachType, TcError};
use mcblast_common::maps::{ImpairConfig, ImpairEntry, ImpairState, ImpairStats, PPM};
use serde::Serialize;

use super::{Lab, NODE_IF, SENDER, SWITCH, node_addr, run_in_ns};
use crate::sys::kfeatures::KernelFeatures;
use crate::ebpf::tc_classic;

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
/// mcblast's directory in bpffs; one subdirectory per lab prefix.
pub const PIN_ROOT: &str = "/sys/fs/bpf/mcblast";
/// The program in the eBPF object.
const PROGRAM: &str = "mcblast_impair";
/// Its map of configuration, state and counters.
const MAP: &str = "IMPAIR";
/// `BPF_F_LOCK`: read the value while holding its `bpf_spin_lock`.
const BPF_F_LOCK: u64 = 4;
/// How long `--clear` waits for the kernel to detach the unpinned link
/// (it is freed from a work queue after an RCU grace period).
const DETACH_WAIT: Duration = Duration::from_secs(5);

/// The sender's link alias while `lab impair` has its UDP segmentation off (see [`Lab::sender_segments`]): it
/// lives and dies with the link, so nothing else records that the setting is the lab's to restore.
const SEGMENTS_ALIAS: &str = "mcblast-impair: tx-udp-segmentation off";

/// The directory of a lab's pins.
/// mcblast's eBPF object, loaded (not attached) for a lab program pinned
/// under bpffs (`what` names it in errors): bpffs mounted, memlock raised.
pub fn load_lab_object(what: &str) -> Result<aya::Ebpf> {
    if crate::ebpf::OBJECT.is_empty() {
        bail!("this mcblast was built without its eBPF programs (AYA_BUILD_SKIP); rebuild without it");
    }
    crate::sys::bpf::ensure_bpffs(Path::new(BPFFS)).with_context(|| format!("cannot mount bpffs at {BPFFS}"))?;
    crate::sys::bpf::raise_memlock_limit();
    EbpfLoader::new().load(crate::ebpf::OBJECT).with_context(|| format!("cannot load {what}'s maps"))
}

pub fn lab_dir(prefix: &str) -> PathBuf {
    Path::new(PIN_ROOT).join(prefix)
}

fn link_pin(prefix: &str, link: &str) -> PathBuf {
    lab_dir(prefix).join(format!("impair-{link}"))
}

fn map_pin(prefix: &str, link: &str) -> PathBuf {
    lab_dir(prefix).join(format!("impair-{link}-map"))
}

/// What the impairment does, in words: "every 100th datagram dropped".
pub fn describe(cfg: &ImpairConfig) -> String {
    let pct = |ppm: u32| {
        let p = format!("{:.4}", ppm as f64 * 100.0 / PPM as f64);
        let p = p.trim_end_matches('0').trim_end_matches('.');
        format!("{p}%")
    };
    let burst = if cfg.burst > 1 { format!(" in bursts of {}", cfg.burst) } else { String::new() };
    let mut parts = Vec::new();
    if cfg.every != 0 {
        let n = cfg.every;
        let th = match (n % 10, n % 100) {
            (1, r) if r != 11 => "st",
            (2, r) if r != 12 => "nd",
            (3, r) if r != 13 => "rd",
            _ => "th",
        };
        parts.push(format!("every {n}{th} datagram dropped{burst}"));
    }
    if cfg.loss_ppm != 0 {
        parts.push(format!("{} of datagrams dropped{burst}", pct(cfg.loss_ppm)));
    }
    if cfg.duplicate_ppm != 0 {
        parts.push(format!("{} duplicated", pct(cfg.duplicate_ppm)));
    }
    if cfg.reorder_ppm != 0 {
        parts.push(format!("{} delivered one place late", pct(cfg.reorder_ppm)));
    }
    let random = cfg.loss_ppm != 0 || cfg.duplicate_ppm != 0 || cfg.reorder_ppm != 0;
    let seed = if random { format!(" (seed {})", cfg.seed) } else { String::new() };
    format!("{}{seed}", parts.join(", "))
}

/// An impairment's configuration and counters, as `--stats` reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ImpairReport {
    #[serde(skip)]
    pub cfg: ImpairConfig,
    /// mcblast data datagrams seen (whole or first fragments).
    pub seen: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Held for reordering but never released (the flow ended): lost.
    pub reorder_lost: u64,
    /// 1 while a datagram is held (released by its flow's next datagram).
    pub held: u64,
    /// First fragments seen (only ever dropped, never duplicated or reordered).
    pub fragments: u64,
    /// Datagrams inside GSO packets, passed untouched (see [`ImpairStats::gso_passed`]).
    pub gso_passed: u64,
}

impl ImpairReport {
    fn new(e: &ImpairEntry<u32>) -> ImpairReport {
        let s: ImpairStats = e.stats;
        ImpairReport {
            cfg: e.cfg,
            seen: s.seen,
            dropped: s.dropped,
            duplicated: s.duplicated,
            reordered: s.reordered,
            reorder_lost: s.reorder_lost,
            held: e.state.held as u64,
            fragments: s.fragments,
            gso_passed: s.gso_passed,
        }
    }

    /// "seen 1000, dropped 10, duplicated 0, reordered 0" and, when not
    /// zero, the held/stranded/fragment counts.
    pub fn counts(&self) -> String {
        let mut s = format!(
            "seen {}, dropped {}, duplicated {}, reordered {}",
            self.seen, self.dropped, self.duplicated, self.reordered
        );
        if self.reorder_lost != 0 {
            s += &format!(", lost while held for reordering {}", self.reorder_lost);
        }
        if self.held != 0 {
            s += &format!(", held now {}", self.held);
        }
        if self.fragments != 0 {
            s += &format!(", first fragments {}", self.fragments);
        }
        if self.gso_passed != 0 {
            s += &format!(
                ", passed untouched in GSO batches {} (batches that crossed the bridge whole: the lab's sender segments its own while a link is impaired, so these came from elsewhere or with its offload turned back on; use --engine mmsg to impair them)",
                self.gso_passed
            );
        }
        s
    }
}

impl Lab {
    /// The links `lab impair` accepts: `r1` .. `rN`.
    fn check_link(&self, link: &str) -> Result<()> {
        if link != SENDER && link != SWITCH && node_addr(link, self.cfg.receivers).is_some() {
            return Ok(());
        }
        let last = self.cfg.receivers;
        let links = if last == 1 { "r1".to_string() } else { format!("r1..r{last}") };
        bail!("no lab link {link}: impair a receiver's bridge port, {links} (see `mcblast lab status`)")
    }

    /// Attaches the impairment program to the egress of `link` (the bridge
    /// port toward that receiver) and pins it, so it stays after this
    /// process exits. Fails when the link is already impaired.
    pub fn impair(&self, link: &str, cfg: ImpairConfig) -> Result<()> {
        self.check_link(link)?;
        if self.topology().is_some_and(|t| t.fabric == super::Fabric::Ovn) {
            bail!(
                "lab impair is not exact on --fabric ovn (OVS's userspace datapath hands a receiver some copies past \
                 its port's tc egress): inject loss on --fabric bridge or vxlan, or drop with nftables on the underlay"
            );
        }
        if cfg.burst > 1 && cfg.every == 0 && cfg.loss_ppm == 0 {
            bail!("--burst K sizes the drops of --loss or --every: give one of them too");
        }
        if cfg.every == 0 && cfg.loss_ppm == 0 && cfg.duplicate_ppm == 0 && cfg.reorder_ppm == 0 {
            bail!("nothing to do: give --loss PCT, --every N, --duplicate PCT or --reorder PCT");
        }
        let prefix = self.prefix();
        let (lpin, mpin) = (link_pin(prefix, link), map_pin(prefix, link));
        if lpin.exists() || mpin.exists() {
            bail!("link {link} of lab {prefix} is already impaired: run `mcblast lab impair {link} --clear` first");
        }
        self.sender_segments_or_warn(true);
        self.attach_impairment(link, cfg).inspect_err(|_| {
            if self.impaired_links().is_empty() {
                self.sender_segments_or_warn(false);
            }
        })
    }

    /// Loads the impairment program with `cfg`, pins its map and attaches it at the egress of `link`.
    fn attach_impairment(&self, link: &str, cfg: ImpairConfig) -> Result<()> {
        let prefix = self.prefix();
        let (lpin, mpin) = (link_pin(prefix, link), map_pin(prefix, link));
        let mut ebpf = load_lab_object("the impairment program")?;
        let entry = ImpairEntry::<u32> {
            lock: 0,
            _pad: 0,
            cfg,
            state: ImpairState::new(&cfg),
            stats: ImpairStats::default(),
        };
        let mut map: Array<MapData, ImpairEntry<u32>> =
            Array::try_from(ebpf.take_map(MAP).context("eBPF object has no IMPAIR map")?)?;
        map.set(0, entry, 0).context("cannot write the impairment's configuration")?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(PROGRAM)
            .with_context(|| format!("eBPF object has no program {PROGRAM}"))?
            .try_into()?;
        prog.load().map_err(|e| anyhow!("the kernel refused the impairment program: {e}"))?;
        let prog_fd: OwnedFd = prog.fd()?.as_fd().try_clone_to_owned().context("duplicating the program descriptor")?;

        std::fs::create_dir_all(lab_dir(prefix))
            .with_context(|| format!("cannot create {}", lab_dir(prefix).display()))?;
        map.pin(&mpin).map_err(|e| anyhow!("cannot pin the impairment map at {}: {e}", mpin.display()))?;
        let ns = self.access_ns(link);
        if !KernelFeatures::probe().tcx {
            return attach_classic(ebpf, &ns, link, &lpin).inspect_err(|_| {
                let _ = std::fs::remove_file(&mpin);
                remove_dir_if_empty(prefix);
            });
        }
        let (port, in_ns) = (link.to_string(), ns.clone());
        let attached = run_in_ns(&ns, move || -> Result<OwnedFd> {
            let ifindex = crate::sys::if_index(&port).with_context(|| format!("no port {port} in {in_ns}"))?;
            crate::sys::bpf::tcx_egress_link_create(prog_fd.as_fd(), ifindex)
                .map_err(|e| anyhow!("cannot attach at tc egress (tcx) of {port}: {e}; tcx needs Linux 6.6 or later"))
        })
        .and_then(|r| r)
        .and_then(|fd| {
            crate::sys::bpf::obj_pin(fd.as_fd(), &lpin)
                .with_context(|| format!("cannot pin the impairment link at {}", lpin.display()))
        });
        if let Err(e) = attached {
            let _ = std::fs::remove_file(&mpin);
            remove_dir_if_empty(prefix);
            return Err(e.context(format!("impairing {link} in {ns}")));
        }
        Ok(())
    }

    /// The impairment on `link`: configuration and counters so far.
    pub fn impair_stats(&self, link: &str) -> Result<ImpairReport> {
        self.check_link(link)?;
        read(self.prefix(), link)
    }

    /// Removes the impairment from `link` and returns its final counts.
    /// Returns once the kernel has detached the program from the port.
    pub fn impair_clear(&self, link: &str) -> Result<ImpairReport> {
        self.check_link(link)?;
        let prefix = self.prefix();
        let report = read(prefix, link)?;
        let ns = self.access_ns(link);
        if !KernelFeatures::probe().tcx {
            detach_classic(&ns, link)?;
            let _ = std::fs::remove_file(link_pin(prefix, link));
            let _ = std::fs::remove_file(map_pin(prefix, link));
            remove_dir_if_empty(prefix);
            return Ok(report);
        }
        let port = link.to_string();
        let count = move || -> Result<u32> {
            let port = port.clone();
            run_in_ns(&ns, move || {
                let ifindex = crate::sys::if_index(&port).with_context(|| format!("no port {port}"))?;
                crate::sys::bpf::tcx_egress_programs(ifindex).context("cannot list the port's tcx programs")
            })?
        };
        let before = count()?;
        std::fs::remove_file(link_pin(prefix, link))
            .with_context(|| format!("cannot remove {}", link_pin(prefix, link).display()))?;
        let _ = std::fs::remove_file(map_pin(prefix, link));
        remove_dir_if_empty(prefix);
        let deadline = Instant::now() + DETACH_WAIT;
        while count()? >= before && before > 0 {
            if Instant::now() > deadline {
                bail!("the impairment on {link} was unpinned but the kernel has not detached it yet; check again with `mcblast lab impair {link} --stats`");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.impaired_links().is_empty() {
            self.sender_segments_or_warn(false);
        }
        Ok(report)
    }

    /// A UDP GSO batch crosses veth and the bridge as one packet, which the impairment program cannot split. So
    /// while any link is impaired the sender's own stack segments its batches (`tx-udp-segmentation off` on its
    /// link, as on NICs without UDP segmentation offload), and every datagram crosses the fabric alone.
    /// `on`: turn segmentation in the stack on (a no-op when the device already segments nothing, e.g. OVN's
    /// links with tx offloads off); off: give the device back its offload, only if `lab impair` took it.
    pub fn sender_segments(&self, on: bool) -> Result<()> {
        let ns = self.ns_name(SENDER);
        let ip = |args: &[&str]| super::output(Command::new("ip").args(["-n", &ns]).args(args));
        let ours = ip(&["-o", "link", "show", "dev", NODE_IF])?.contains(SEGMENTS_ALIAS);
        if on && !ours && self.sender_offloads_segmentation()? {
            self.set_sender_offload(false)?;
            ip(&["link", "set", "dev", NODE_IF, "alias", SEGMENTS_ALIAS])?;
        } else if !on && ours {
            self.set_sender_offload(true)?;
            ip(&["link", "set", "dev", NODE_IF, "alias", ""])?;
        }
        Ok(())
    }

    /// [`Lab::sender_segments`]; when it cannot (no `ethtool`, say), one line on stderr saying what that costs.
    fn sender_segments_or_warn(&self, on: bool) {
        if let Err(e) = self.sender_segments(on) {
            let cost = if on { "; its UDP GSO batches pass the impairment whole (counted as gso_passed)" } else { "" };
            eprintln!("mcblast: warning: the lab sender's UDP segmentation offload is unchanged: {e:#}{cost}");
        }
    }

    /// Whether the lab sender's link offloads UDP segmentation (`ethtool -k`: `tx-udp-segmentation: on`).
    pub(super) fn sender_offloads_segmentation(&self) -> Result<bool> {
        let ns = self.ns_name(SENDER);
        let k = super::output(Command::new("ip").args(["netns", "exec", &ns, "ethtool", "-k", NODE_IF]))?;
        Ok(k.lines().any(|l| l.trim() == "tx-udp-segmentation: on"))
    }

    /// Gives the lab sender's link UDP segmentation offload (`on`), or makes its stack segment (`!on`).
    pub(super) fn set_sender_offload(&self, on: bool) -> Result<()> {
        let v = if on { "on" } else { "off" };
        let ns = self.ns_name(SENDER);
        super::output(Command::new("ip").args(["netns", "exec", &ns, "ethtool", "-K", NODE_IF, "tx-udp-segmentation", v]))
            .with_context(|| format!("setting tx-udp-segmentation {v} on the lab sender's link"))?;
        Ok(())
    }

    /// The lab's impaired links, sorted by name.
    pub fn impaired_links(&self) -> Vec<String> {
        impaired_links(self.prefix())
    }
}

/// On kernels without tcx links: the program as a classic filter on the
/// port's egress (a `clsact` qdisc, mcblast's priority and handle). The
/// filter holds the program after this process exits; the pinned program
/// at `lpin` marks the link impaired. `lab down` removes the port and the
/// filter with it.
fn attach_classic(ebpf: aya::Ebpf, ns: &str, port: &str, lpin: &Path) -> Result<()> {
    let (port, lpin) = (port.to_string(), lpin.to_path_buf());
    run_in_ns(ns, move || -> Result<()> {
        let mut ebpf = ebpf;
        let prog: &mut SchedClassifier = ebpf.program_mut(PROGRAM).context("no impairment program")?.try_into()?;
        match tc::qdisc_add_clsact(&port) {
            Ok(()) => {}
            Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot add a clsact qdisc to {port}")),
        }
        let opts = NlOptions { priority: tc_classic::PRIORITY, handle: tc_classic::HANDLE.into(), ..NlOptions::default() };
        let id = prog
            .attach_with_options(&port, TcAttachType::Egress, TcAttachOptions::Netlink(opts))
            .with_context(|| format!("cannot attach a classic tc filter at the egress of {port}"))?;
        // Kept attached when this process exits: the kernel holds the program.
        std::mem::forget(prog.take_link(id)?);
        crate::sys::bpf::obj_pin(prog.fd()?.as_fd(), &lpin).with_context(|| format!("cannot pin {}", lpin.display()))
    })?
}

/// Removes the classic impairment filter from the egress of `port`.
fn detach_classic(ns: &str, port: &str) -> Result<()> {
    let port = port.to_string();
    run_in_ns(ns, move || {
        tc::qdisc_detach_program(&port, TcAttachType::Egress, PROGRAM)
            .with_context(|| format!("cannot remove the impairment filter from {port}"))
    })?
}

fn impaired_links(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(lab_dir(prefix))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix("impair-")).map(str::to_string))
        .filter(|n| !n.ends_with("-map"))
        .collect();
    v.sort();
    v
}

/// Reads the pinned map of the impairment on `link`.
fn read(prefix: &str, link: &str) -> Result<ImpairReport> {
    let mpin = map_pin(prefix, link);
    if !mpin.exists() {
        bail!("link {link} of lab {prefix} is not impaired: impair it with e.g. `mcblast lab impair {link} --every 100`");
    }
    let data = MapData::from_pin(&mpin).map_err(|e| anyhow!("cannot open the impairment map {}: {e}", mpin.display()))?;
    let map: Array<MapData, ImpairEntry<u32>> = Array::try_from(Map::Array(data))?;
    let e = map.get(&0, BPF_F_LOCK).context("cannot read the impairment's counters")?;
    Ok(ImpairReport::new(&e))
}

fn remove_dir_if_empty(prefix: &str) {
    let _ = std::fs::remove_dir(lab_dir(prefix));
    // The root too, when no lab has pins left.
    let _ = std::fs::remove_dir(PIN_ROOT);
}

/// Removes every impairment of the lab with this prefix (its pins; the
/// kernel detaches the programs). Returns how many links were impaired.
pub fn remove_all(prefix: &str) -> Result<usize> {
    let dir = lab_dir(prefix);
    if !dir.exists() {
        return Ok(0);
    }
    let n = impaired_links(prefix).len();
    for e in std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let p = e?.path();
        std::fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
    }
    std::fs::remove_dir(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    let _ = std::fs::remove_dir(PIN_ROOT);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_each_part() {
        let c = |f: fn(&mut ImpairConfig)| {
            let mut c = ImpairConfig { seed: 1, ..Default::default() };
            f(&mut c);
            describe(&c)
        };
        assert_eq!(c(|c| c.every = 100), "every 100th datagram dropped");
        assert_eq!(c(|c| c.every = 1), "every 1st datagram dropped");
        assert_eq!(c(|c| c.every = 12), "every 12th datagram dropped");
        assert_eq!(c(|c| (c.every, c.burst) = (50, 3)), "every 50th datagram dropped in bursts of 3");
        assert_eq!(c(|c| c.loss_ppm = 5_000), "0.5% of datagrams dropped (seed 1)");
        assert_eq!(
            c(|c| (c.duplicate_ppm, c.reorder_ppm) = (PPM, 20_000)),
            "100% duplicated, 2% delivered one place late (seed 1)"
        );
    }

    #[test]
    fn pins_live_under_the_lab_prefix() {
        assert_eq!(link_pin("mcb-", "r3"), Path::new("/sys/fs/bpf/mcblast/mcb-/impair-r3"));
        assert_eq!(map_pin("mcb-", "r3"), Path::new("/sys/fs/bpf/mcblast/mcb-/impair-r3-map"));
    }
}
