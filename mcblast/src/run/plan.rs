//! The plan file of `mcblast run` (TOML) and its expansion into cases.
//!
//! Every `[[matrix]]` block is a cartesian product of its lists; the plan's
//! cases are the blocks' cases one after the other. A list left out of a
//! block takes the plan's base value (`[lab]` and top-level keys).
//!
//! A plan with `[hosts]` instead of `[lab]` runs on real hosts: an
//! Ansible-style inventory names the sender and the receivers (see
//! [`super::inventory`]); the lab-only knobs are refused there.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::inventory::{self, Host};
use crate::lab::{Fabric, IgmpConfig, LabConfig, LabSpec, Placement, Preset, Topology};
use crate::send::Engine;
use mcblast_common::maps::{ImpairConfig, PPM};

/// RFC 3376 membership interval for a query interval (as `mcblast lab up --query-interval`): 2 x q + 10 s.
fn default_membership_cs(query_interval_cs: u64) -> u64 {
    2 * query_interval_cs + 1000
}

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// Multicast group (default 239.0.0.1).
    pub group: Option<Ipv4Addr>,
    /// UDP port (default 5001).
    pub port: Option<u16>,
    /// Seconds of measured sending per run (default 10).
    pub duration: Option<f64>,
    /// Seconds of unmeasured traffic (another run id) before each measured run (default 0).
    pub warmup: Option<f64>,
    /// Runs per case (default 5).
    pub repeats: Option<u32>,
    /// Sender engine (default auto).
    pub engine: Option<String>,
    /// Who sends: `mcblast` (default) or `iperf2` (the users' own `iperf -c GROUP -u`).
    pub sender: Option<String>,
    /// sender = "iperf2": extra flags for the iperf client (e.g. `["-e"]`).
    pub iperf2_args: Option<Vec<String>>,
    /// Lab impairment of every case (a block's lists replace these): see [`Impairment`].
    pub loss: Option<f64>,
    pub loss_mode: Option<String>,
    pub burst: Option<u32>,
    pub reorder: Option<f64>,
    pub duplicate: Option<f64>,
    pub seed: Option<u64>,
    pub lab: Option<LabSection>,
    /// Real hosts instead of the lab.
    pub hosts: Option<HostsSection>,
    #[serde(default)]
    pub matrix: Vec<MatrixBlock>,
    #[serde(default)]
    pub profile: BTreeMap<String, PlanProfile>,
}

/// The lab every case runs on (the matrix may vary some of it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabSection {
    /// Namespace prefix (default: $MCBLAST_LAB_PREFIX, else `mcb-run-`).
    pub prefix: Option<String>,
    /// `tgw` or `ovn`: fabric, IGMP timers/version and MTU of the platform.
    pub preset: Option<String>,
    /// `bridge` or `vxlan`.
    pub fabric: Option<String>,
    /// Receiver hosts (default 3).
    pub hosts: Option<u32>,
    /// Receivers per host when the matrix has no `receivers` (default 3).
    pub per_host: Option<u32>,
    /// `spread` or `same-host`.
    pub placement: Option<String>,
    pub snooping: Option<bool>,
    pub querier: Option<bool>,
    /// Seconds between IGMP general queries.
    pub query_interval: Option<u64>,
    pub mtu: Option<u32>,
    /// TGW's documented limits in the fabric (default on with `preset = "tgw"`; needs the bridge fabric).
    pub tgw_limits: Option<bool>,
}

/// `[hosts]`: the inventory and the groups to take the sender and the receivers from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostsSection {
    /// Ansible inventory, INI or YAML (`.yml`/`.yaml`); relative to the plan's directory.
    pub inventory: String,
    /// Group of the sender: its first host sends (default `senders`).
    pub senders: Option<String>,
    /// Group of the receivers: a case's `receivers = N` takes the first N (default `receivers`).
    pub receivers: Option<String>,
}

/// The real hosts of a `[hosts]` plan.
#[derive(Debug, Clone)]
pub struct Hosts {
    pub inventory: PathBuf,
    pub sender: Host,
    pub receivers: Vec<Host>,
}

/// One block of the matrix: the cartesian product of its lists.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixBlock {
    /// Optional label, copied into every case of the block.
    pub name: Option<String>,
    /// `rate/length`: `1M/512`, `100M/8192`, `max/8192` (flat out).
    pub load: Option<Vec<String>>,
    /// Total receivers; must be a multiple of the lab's hosts.
    pub receivers: Option<Vec<u32>>,
    pub snooping: Option<Vec<bool>>,
    pub query_interval: Option<Vec<u64>>,
    /// Injected loss, percent of data datagrams per receiver.
    pub loss: Option<Vec<f64>>,
    /// `every` (deterministic every Nth) or `random` (seeded).
    pub loss_mode: Option<Vec<String>>,
    /// Datagrams dropped together per loss event.
    pub burst: Option<Vec<u32>>,
    /// Percent of data datagrams delivered one place late.
    pub reorder: Option<Vec<f64>>,
    /// Percent of data datagrams sent twice.
    pub duplicate: Option<Vec<f64>>,
    /// Seed of the random decisions.
    pub seed: Option<Vec<u64>>,
    pub placement: Option<Vec<String>>,
    /// Seconds of measured sending.
    pub duration: Option<Vec<f64>>,
}

/// The impairment keys as one value each (top level, `[profile.NAME]`).
#[derive(Debug, Clone, Default)]
pub struct ImpairKeys {
    pub loss: Option<f64>,
    pub loss_mode: Option<String>,
    pub burst: Option<u32>,
    pub reorder: Option<f64>,
    pub duplicate: Option<f64>,
    pub seed: Option<u64>,
}

impl ImpairKeys {
    /// The first key that is set, for the `[hosts]` refusal.
    fn first_set(&self) -> Option<&'static str> {
        [
            ("loss", self.loss.is_some()),
            ("loss_mode", self.loss_mode.is_some()),
            ("burst", self.burst.is_some()),
            ("reorder", self.reorder.is_some()),
            ("duplicate", self.duplicate.is_some()),
            ("seed", self.seed.is_some()),
        ]
        .into_iter()
        .find(|k| k.1)
        .map(|k| k.0)
    }
}

/// `[profile.NAME]`: replaces durations, warm-up, repeats and the impairment keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanProfile {
    pub duration: Option<f64>,
    pub warmup: Option<f64>,
    pub repeats: Option<u32>,
    pub loss: Option<f64>,
    pub loss_mode: Option<String>,
    pub burst: Option<u32>,
    pub reorder: Option<f64>,
    pub duplicate: Option<f64>,
    pub seed: Option<u64>,
}

impl PlanFile {
    fn impair(&self) -> ImpairKeys {
        ImpairKeys {
            loss: self.loss,
            loss_mode: self.loss_mode.clone(),
            burst: self.burst,
            reorder: self.reorder,
            duplicate: self.duplicate,
            seed: self.seed,
        }
    }
}

impl PlanProfile {
    fn impair(&self) -> ImpairKeys {
        ImpairKeys {
            loss: self.loss,
            loss_mode: self.loss_mode.clone(),
            burst: self.burst,
            reorder: self.reorder,
            duplicate: self.duplicate,
            seed: self.seed,
        }
    }
}

/// How the plan's `loss` is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossMode {
    /// Deterministic: every Nth data datagram (the Nth, 2Nth, ...), N = round(100 x burst / loss).
    Every,
    /// Seeded random drop events.
    Random,
}

impl LossMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LossMode::Every => "every",
            LossMode::Random => "random",
        }
    }
}

/// The seed when the plan gives none: runs repeat.
pub const DEFAULT_SEED: u64 = 1;

/// A case's injected impairment (lab only), as the plan gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Percent of data datagrams dropped toward each receiver.
    pub loss_pct: f64,
    pub loss_mode: LossMode,
    /// Consecutive data datagrams per drop event (1: single drops).
    pub burst: u32,
    pub reorder_pct: f64,
    pub duplicate_pct: f64,
    pub seed: u64,
}

impl Default for Impairment {
    fn default() -> Self {
        Impairment { loss_pct: 0.0, loss_mode: LossMode::Every, burst: 1, reorder_pct: 0.0, duplicate_pct: 0.0, seed: DEFAULT_SEED }
    }
}

/// A percentage as the impairment program's parts per million.
fn ppm(pct: f64) -> u32 {
    (pct * f64::from(PPM) / 100.0).round() as u32
}

impl Impairment {
    /// The configuration of `mcblast lab impair` for each receiver's port;
    /// None when nothing is injected.
    ///
    /// `every`: every Nth datagram starts a drop of `burst`, N = round(100 x
    /// burst / loss), so `loss` percent are dropped (exactly ⌊C / N⌋ x burst
    /// of C datagrams, less a cut-off last burst). `random`: a drop event
    /// starts with probability p = f / (burst − f x (burst − 1)), f = loss /
    /// 100 (none starts inside a burst), which drops f of the datagrams in
    /// expectation.
    pub fn config(&self) -> Option<ImpairConfig> {
        if self.loss_pct == 0.0 && self.reorder_pct == 0.0 && self.duplicate_pct == 0.0 {
            return None;
        }
        let k = if self.loss_pct > 0.0 { self.burst.max(1) } else { 1 };
        let (every, loss_ppm) = match self.loss_mode {
            _ if self.loss_pct == 0.0 => (0, 0),
            LossMode::Every => ((100.0 * f64::from(k) / self.loss_pct).round() as u32, 0),
            LossMode::Random => {
                let f = self.loss_pct / 100.0;
                (0, ppm(100.0 * f / (f64::from(k) - f * f64::from(k - 1))))
            }
        };
        Some(ImpairConfig {
            every,
            burst: k,
            loss_ppm,
            duplicate_ppm: ppm(self.duplicate_pct),
            reorder_ppm: ppm(self.reorder_pct),
            _pad: 0,
            seed: self.seed,
        })
    }

    /// Without loss, `loss_mode` and `burst` change nothing, and without a
    /// random part neither does `seed`: they take their defaults, so cases
    /// that differ only there are one case.
    fn normalized(mut self) -> Impairment {
        let d = Impairment::default();
        if self.loss_pct == 0.0 {
            (self.loss_mode, self.burst) = (d.loss_mode, d.burst);
        }
        if !self.random() {
            self.seed = d.seed;
        }
        self
    }

    /// Whether a part draws from the seeded PRNG.
    pub fn random(&self) -> bool {
        (self.loss_pct > 0.0 && self.loss_mode == LossMode::Random) || self.reorder_pct > 0.0 || self.duplicate_pct > 0.0
    }

    /// One line naming the key when a value is out of range.
    fn validate(&self, file: &str) -> Result<()> {
        let pct = |key: &str, p: f64| -> Result<()> {
            if !(0.0..=100.0).contains(&p) || (p > 0.0 && ppm(p) == 0) {
                bail!("{file}: {key} {p} %: use 0 (none) or 0.0001..=100");
            }
            Ok(())
        };
        pct("loss", self.loss_pct)?;
        pct("reorder", self.reorder_pct)?;
        pct("duplicate", self.duplicate_pct)?;
        if !(1..=1000).contains(&self.burst) {
            bail!("{file}: burst {}: use 1..=1000 datagrams per drop event", self.burst);
        }
        if self.loss_mode == LossMode::Every && self.loss_pct > 0.0 {
            let n = 100.0 * f64::from(self.burst) / self.loss_pct;
            if n.round() > f64::from(u32::MAX) {
                bail!("{file}: loss {} % with burst {}: too small for loss_mode \"every\"; use a larger loss or loss_mode = \"random\"", self.loss_pct, self.burst);
            }
        }
        Ok(())
    }
}

fn loss_mode_of(file: &str, s: &str) -> Result<LossMode> {
    match s {
        "every" => Ok(LossMode::Every),
        "random" => Ok(LossMode::Random),
        _ => bail!("{file}: loss_mode '{s}': use \"every\" (every Nth datagram) or \"random\" (seeded)"),
    }
}

/// A load: rate in bit/s of UDP payload (None: flat out) and datagram length.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    pub text: String,
    pub rate_bps: Option<f64>,
    pub length: u32,
}

/// Parses `RATE/LENGTH` (`10M/1470`, `max/8192`).
pub fn parse_load(s: &str) -> Result<Load> {
    let bad = || format!("load '{s}': write RATE/LENGTH, e.g. \"10M/1470\" or \"max/8192\" (rate in bit/s with k/M/G, length 40..65507 bytes)");
    let (rate, len) = s.split_once('/').with_context(bad)?;
    let length: u32 = len.trim().parse().ok().filter(|l| (40..=65507).contains(l)).with_context(bad)?;
    let rate = rate.trim();
    let rate_bps = if rate.eq_ignore_ascii_case("max") {
        None
    } else {
        let (num, mult) = match rate.chars().last() {
            Some('k' | 'K') => (&rate[..rate.len() - 1], 1e3),
            Some('m' | 'M') => (&rate[..rate.len() - 1], 1e6),
            Some('g' | 'G') => (&rate[..rate.len() - 1], 1e9),
            _ => (rate, 1.0),
        };
        let v: f64 = num.parse().ok().filter(|v: &f64| v.is_finite() && *v > 0.0).with_context(bad)?;
        Some(v * mult)
    };
    Ok(Load { text: s.trim().to_string(), rate_bps, length })
}

/// One case: everything a run needs besides the repeat number.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub block: String,
    pub load: Load,
    pub receivers: u32,
    pub snooping: bool,
    pub query_interval: u64,
    /// Injected loss, reordering and duplication (lab only; all zero on real hosts).
    pub impair: Impairment,
    pub placement: Placement,
    pub duration: f64,
    /// False on real hosts: snooping, query interval and placement are not ours to set there.
    pub on_lab: bool,
}

impl Case {
    /// The impairment to install on each receiver's port; None on real
    /// hosts and when the case injects nothing.
    pub fn impair_config(&self) -> Option<ImpairConfig> {
        if self.on_lab { self.impair.config() } else { None }
    }
}

/// Who sends a plan's datagrams (`sender`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// `mcblast send` with the plan's engine.
    Mcblast,
    /// `iperf -c GROUP -u ...` (iperf2 on the sender node), with these extra client flags;
    /// the receivers count with `recv --format iperf2`.
    Iperf2 { args: Vec<String> },
}

/// The resolved plan.
#[derive(Debug, Clone)]
pub struct TestPlan {
    pub group: Ipv4Addr,
    pub port: u16,
    pub warmup: f64,
    pub repeats: u32,
    pub engine: String,
    pub sender: Sender,
    /// The lab for the base settings; cases change receivers, snooping, query interval, placement.
    pub base: LabSpec,
    /// Whether the lab enforces TGW's documented limits (`TgwLimits::aws` for the case's receivers).
    pub tgw_limits: bool,
    /// Set for a `[hosts]` plan: the cases run there, not on a lab.
    pub hosts: Option<Hosts>,
    pub cases: Vec<Case>,
}

impl TestPlan {
    /// The lab a case runs on.
    pub fn spec_for(&self, c: &Case) -> LabSpec {
        let mut s = self.base.clone();
        let mut t = s.topology.expect("run labs have hosts");
        t.per_host = c.receivers / t.hosts;
        t.placement = c.placement;
        s.topology = Some(t);
        s.base.receivers = t.receivers();
        s.base.snooping = c.snooping;
        if c.query_interval * 100 != s.igmp.query_interval_cs {
            s.igmp.query_interval_cs = c.query_interval * 100;
            s.igmp.membership_interval_cs = default_membership_cs(s.igmp.query_interval_cs);
        }
        s
    }
}

/// Why the impairment keys are refused on real hosts.
const IMPAIR_WHY: &str = "loss, reordering and duplication are injected by the lab's impairment program";

/// A block's impairments: the product of its lists (each taking the top
/// level's value when left out, and the profile's when it has one),
/// validated.
fn impairments(file: &str, top: &ImpairKeys, prof: &ImpairKeys, b: &MatrixBlock) -> Result<Vec<Impairment>> {
    fn list<T: Clone>(p: &Option<T>, block: &Option<Vec<T>>, top: &Option<T>, default: T) -> Vec<T> {
        match (p, block) {
            (Some(v), _) => vec![v.clone()],
            (None, Some(v)) => v.clone(),
            (None, None) => vec![top.clone().unwrap_or(default)],
        }
    }
    let d = Impairment::default();
    let losses = list(&prof.loss, &b.loss, &top.loss, d.loss_pct);
    let modes = list(&prof.loss_mode, &b.loss_mode, &top.loss_mode, "every".to_string())
        .iter()
        .map(|m| loss_mode_of(file, m))
        .collect::<Result<Vec<_>>>()?;
    let bursts = list(&prof.burst, &b.burst, &top.burst, d.burst);
    let reorders = list(&prof.reorder, &b.reorder, &top.reorder, d.reorder_pct);
    let duplicates = list(&prof.duplicate, &b.duplicate, &top.duplicate, d.duplicate_pct);
    let seeds = list(&prof.seed, &b.seed, &top.seed, d.seed);
    let mut v = Vec::new();
    for &loss_pct in &losses {
        for &loss_mode in &modes {
            for &burst in &bursts {
                for &reorder_pct in &reorders {
                    for &duplicate_pct in &duplicates {
                        for &seed in &seeds {
                            let i = Impairment { loss_pct, loss_mode, burst, reorder_pct, duplicate_pct, seed };
                            i.validate(file)?;
                            v.push(i.normalized());
                        }
                    }
                }
            }
        }
    }
    Ok(v)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads and resolves a plan file; `profile` applies `[profile.NAME]`.
pub fn load(path: &Path, profile: Option<&str>, default_prefix: &str) -> Result<TestPlan> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading plan {}", path.display()))?;
    parse(&text, &path.display().to_string(), profile, default_prefix)
}

/// Parses plan text; `file` names it in errors.
pub fn parse(text: &str, file: &str, profile: Option<&str>, default_prefix: &str) -> Result<TestPlan> {
    let f: PlanFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|sp| text[..sp.start.min(text.len())].matches('\n').count() + 1);
        match line {
            Some(l) => anyhow::anyhow!("{file}:{l}: {}", one_line(e.message())),
            None => anyhow::anyhow!("{file}: {}", one_line(e.message())),
        }
    })?;
    resolve(f, file, profile, default_prefix)
}

fn resolve(f: PlanFile, file: &str, profile: Option<&str>, default_prefix: &str) -> Result<TestPlan> {
    let prof = resolve_profile(&f, file, profile)?;
    let group = f.group.unwrap_or(Ipv4Addr::new(239, 0, 0, 1));
    crate::mcast::check_groups(&[group]).with_context(|| format!("{file}: group"))?;
    let hosts = resolve_hosts(&f, file, profile, &prof)?;
    let (base, tgw_limits) = resolve_lab(f.lab.clone().unwrap_or_default(), file, default_prefix)?;
    let (duration, warmup, repeats) = resolve_timing(&f, &prof, file)?;
    let sender = sender_of(&f, file)?;
    let engine = resolve_engine(&f, file)?;
    let cx = CaseBase { file, top: f.impair(), prof: &prof, base: &base, hosts: hosts.as_ref(), duration };
    let cases = resolve_cases(&cx, &f.matrix)?;
    if sender != Sender::Mcblast {
        check_iperf2_cases(file, &cases)?;
    }
    let fabric = base.topology.expect("run labs have hosts").fabric;
    if hosts.is_none() && fabric == Fabric::Ovn && cases.iter().any(|c| c.impair_config().is_some()) {
        bail!(
            "{file}: loss, reorder and duplicate are not injected exactly on lab.fabric = \"ovn\" \
             (the real OVN, which preset = \"ovn\" picks where it is installed; see mcblast lab impair): \
             set fabric = \"bridge\" or \"vxlan\" for those cases"
        );
    }
    Ok(TestPlan { group, port: f.port.unwrap_or(5001), warmup, repeats, engine, sender, base, tgw_limits, hosts, cases })
}

/// The `[profile.NAME]` asked for (all keys unset without one); an error listing the profiles when it is missing.
fn resolve_profile(f: &PlanFile, file: &str, profile: Option<&str>) -> Result<PlanProfile> {
    match profile {
        None => Ok(PlanProfile::default()),
        Some(p) => f.profile.get(p).cloned().with_context(|| {
            format!("{file}: no [profile.{p}] (profiles: {})", f.profile.keys().cloned().collect::<Vec<_>>().join(", "))
        }),
    }
}

/// The real hosts of a `[hosts]` plan from its inventory (None for a lab plan), refusing `[lab]` and the impairment keys.
fn resolve_hosts(f: &PlanFile, file: &str, profile: Option<&str>, prof: &PlanProfile) -> Result<Option<Hosts>> {
    let Some(h) = &f.hosts else { return Ok(None) };
    if f.lab.is_some() {
        bail!("{file}: both [lab] and [hosts]: a plan runs on the lab or on real hosts, remove one");
    }
    let dir = Path::new(file).parent().unwrap_or(Path::new(""));
    let path = dir.join(&h.inventory);
    let inv = inventory::load(&path)?;
    let senders = inv.group(h.senders.as_deref().unwrap_or("senders"))?;
    let receivers = inv.group(h.receivers.as_deref().unwrap_or("receivers"))?;
    if let Some(r) = receivers.iter().find(|r| r.name == senders[0].name) {
        bail!("{}: host `{}` is both the sender and a receiver: give each role its own host", inv.file(), r.name);
    }
    let refused = f.impair().first_set().map(|k| (k, String::new())).or_else(|| {
        profile.and_then(|p| prof.impair().first_set().map(|k| (k, format!("[profile.{p}]: "))))
    });
    if let Some((key, at)) = refused {
        bail!("{file}: {at}`{key}` is lab-only, not applicable on real hosts ({IMPAIR_WHY}); remove it");
    }
    Ok(Some(Hosts { inventory: path, sender: senders[0].clone(), receivers }))
}

/// A `placement` value of the plan.
fn placement_of(file: &str, x: &str) -> Result<Placement> {
    match x {
        "spread" => Ok(Placement::Spread),
        "same-host" => Ok(Placement::SameHost),
        _ => Err(anyhow::anyhow!("{file}: placement '{x}': use spread or same-host")),
    }
}

/// The base lab of `[lab]` (its preset's settings overridden by its own keys, validated) and whether it enforces
/// TGW's limits.
fn resolve_lab(l: LabSection, file: &str, default_prefix: &str) -> Result<(LabSpec, bool)> {
    let preset = match l.preset.as_deref() {
        None => None,
        Some("tgw") => Some(Preset::Tgw),
        Some("ovn") => Some(Preset::Ovn),
        Some(p) => bail!("{file}: lab.preset '{p}': use tgw or ovn"),
    };
    let (p_fabric, p_igmp, p_mtu, p_snoop, p_querier) = match preset {
        Some(p) => p.settings(),
        None => (Fabric::Bridge, IgmpConfig::default(), 9000, true, true),
    };
    let fabric = match l.fabric.as_deref() {
        // preset = "ovn": the real OVN when it is installed, as with `lab up --preset ovn`
        None => preset.map_or(p_fabric, Preset::fabric),
        Some("bridge") => Fabric::Bridge,
        Some("vxlan") => Fabric::Vxlan,
        // a real OVN (lab/ovn.rs): snooping, querier, query and membership intervals become ls0's mcast_* knobs
        Some("ovn") => Fabric::Ovn,
        Some(x) => bail!("{file}: lab.fabric '{x}': use bridge, vxlan or ovn"),
    };
    let placement = l.placement.as_deref().map(|x| placement_of(file, x)).transpose()?.unwrap_or(Placement::Spread);
    let mut igmp = p_igmp;
    if let Some(q) = l.query_interval {
        igmp.query_interval_cs = q * 100;
        igmp.membership_interval_cs = default_membership_cs(igmp.query_interval_cs);
    }
    let topology = Topology { hosts: l.hosts.unwrap_or(3), per_host: l.per_host.unwrap_or(3), fabric, placement };
    let base = LabSpec {
        base: LabConfig {
            prefix: l.prefix.clone().unwrap_or_else(|| default_prefix.to_string()),
            receivers: topology.receivers(),
            mtu: l.mtu.unwrap_or(p_mtu),
            snooping: l.snooping.unwrap_or(p_snoop),
            querier: l.querier.unwrap_or(p_querier),
        },
        igmp,
        topology: Some(topology),
    };
    base.validate().map_err(|e| anyhow::anyhow!("{file}: [lab]: {e}"))?;
    let tgw_limits = tgw_limits(file, &l, preset, fabric)?;
    Ok((base, tgw_limits))
}

/// `[lab] tgw_limits`: on by default with `preset = "tgw"` on its bridge fabric; it needs that fabric.
fn tgw_limits(file: &str, l: &LabSection, preset: Option<Preset>, fabric: Fabric) -> Result<bool> {
    let on = l.tgw_limits.unwrap_or(preset == Some(Preset::Tgw) && fabric == Fabric::Bridge);
    if on && fabric != Fabric::Bridge {
        bail!("{file}: lab.tgw_limits needs the bridge fabric: use preset = \"tgw\" (or fabric = \"bridge\")");
    }
    Ok(on)
}

/// (duration, warm-up, repeats): the profile's, else the file's, else the defaults; each checked against its range.
fn resolve_timing(f: &PlanFile, prof: &PlanProfile, file: &str) -> Result<(f64, f64, u32)> {
    let duration = prof.duration.or(f.duration).unwrap_or(10.0);
    let warmup = prof.warmup.or(f.warmup).unwrap_or(0.0);
    let repeats = prof.repeats.or(f.repeats).unwrap_or(5);
    if !(duration > 0.0 && duration <= 86_400.0) {
        bail!("{file}: duration {duration} s: use more than 0 and at most 86400");
    }
    if !(0.0..=3600.0).contains(&warmup) {
        bail!("{file}: warmup {warmup} s: use 0..=3600");
    }
    if !(1..=1000).contains(&repeats) {
        bail!("{file}: repeats {repeats}: use 1..=1000");
    }
    Ok((duration, warmup, repeats))
}

/// The plan's `engine` (default `auto`), one of the names `mcblast send` knows.
fn resolve_engine(f: &PlanFile, file: &str) -> Result<String> {
    let engine = f.engine.clone().unwrap_or_else(|| Engine::Auto.name().into());
    if !Engine::ALL.iter().any(|e| e.name() == engine) {
        let names: Vec<&str> = Engine::ALL.iter().map(|e| e.name()).collect();
        let (last, rest) = names.split_last().expect("engines");
        bail!("{file}: engine '{engine}': use {} or {last}", rest.join(", "));
    }
    Ok(engine)
}

/// What a matrix block's left-out lists fall back to: the plan's resolved base values.
struct CaseBase<'a> {
    file: &'a str,
    /// The top-level impairment keys.
    top: ImpairKeys,
    prof: &'a PlanProfile,
    base: &'a LabSpec,
    hosts: Option<&'a Hosts>,
    duration: f64,
}

/// One block's lists, each resolved and checked.
struct BlockAxes {
    name: String,
    loads: Vec<Load>,
    receivers: Vec<u32>,
    snooping: Vec<bool>,
    query_intervals: Vec<u64>,
    impairs: Vec<Impairment>,
    placements: Vec<Placement>,
    durations: Vec<f64>,
}

/// The plan's cases: every block's product in order (one default block without a matrix), identical cases merged.
fn resolve_cases(cx: &CaseBase, matrix: &[MatrixBlock]) -> Result<Vec<Case>> {
    let blocks = if matrix.is_empty() { vec![MatrixBlock::default()] } else { matrix.to_vec() };
    let mut cases: Vec<Case> = Vec::new();
    for (bi, b) in blocks.iter().enumerate() {
        let axes = block_axes(cx, bi, b)?;
        add_block_cases(cx, &axes, &mut cases)?;
    }
    Ok(cases)
}

/// The lists of block number `bi` (from 0), with the base values for those left out, checked in the file's terms.
fn block_axes(cx: &CaseBase, bi: usize, b: &MatrixBlock) -> Result<BlockAxes> {
    let (file, base) = (cx.file, cx.base);
    let topology = base.topology.expect("run labs have hosts");
    let name = b.name.clone().unwrap_or_else(|| format!("block{}", bi + 1));
    let loads = match &b.load {
        Some(v) => v.iter().map(|s| parse_load(s).map_err(|e| anyhow::anyhow!("{file}: {e:#}"))).collect::<Result<Vec<_>>>()?,
        None => vec![parse_load("10M/1470")?],
    };
    if let Some(h) = cx.hosts {
        check_block_on_hosts(file, &name, b, h)?;
    }
    let all_receivers = cx.hosts.map_or(topology.receivers(), |h| h.receivers.len() as u32);
    let receivers = b.receivers.clone().unwrap_or(vec![all_receivers]);
    for &r in &receivers {
        if cx.hosts.is_none() && (r == 0 || r % topology.hosts != 0) {
            bail!("{file}: receivers {r}: use a multiple of lab.hosts ({}): each host gets receivers / hosts", topology.hosts);
        }
    }
    let snooping = b.snooping.clone().unwrap_or(vec![base.base.snooping]);
    let query_intervals = b.query_interval.clone().unwrap_or(vec![base.igmp.query_interval_cs / 100]);
    for &q in &query_intervals {
        if !(1..=3600).contains(&q) {
            bail!("{file}: query_interval {q} s: use 1..=3600");
        }
    }
    let impairs = impairments(file, &cx.top, &cx.prof.impair(), b)?;
    let placements = match &b.placement {
        Some(v) => v.iter().map(|s| placement_of(file, s)).collect::<Result<Vec<_>>>()?,
        None => vec![topology.placement],
    };
    let durations = b.duration.clone().unwrap_or(vec![cx.duration]);
    for ld in loads.iter().filter(|_| cx.hosts.is_none()) {
        if ld.length + crate::mcast::IP_UDP_OVERHEAD as u32 > base.base.mtu {
            bail!("{file}: load {}: a {}-byte datagram does not fit the lab's MTU {}", ld.text, ld.length, base.base.mtu);
        }
    }
    Ok(BlockAxes { name, loads, receivers, snooping, query_intervals, impairs, placements, durations })
}

/// Refuses a block's lab-only keys on real hosts, and receiver counts the inventory does not have.
fn check_block_on_hosts(file: &str, name: &str, b: &MatrixBlock, h: &Hosts) -> Result<()> {
    let lab_only = [
        ("snooping", b.snooping.is_some(), "IGMP snooping is the switch's"),
        ("query_interval", b.query_interval.is_some(), "the querier is the network's"),
        ("loss", b.loss.is_some(), IMPAIR_WHY),
        ("loss_mode", b.loss_mode.is_some(), IMPAIR_WHY),
        ("burst", b.burst.is_some(), IMPAIR_WHY),
        ("reorder", b.reorder.is_some(), IMPAIR_WHY),
        ("duplicate", b.duplicate.is_some(), IMPAIR_WHY),
        ("seed", b.seed.is_some(), IMPAIR_WHY),
        ("placement", b.placement.is_some(), "placement is the inventory's"),
    ];
    if let Some((key, _, why)) = lab_only.iter().find(|k| k.1) {
        bail!("{file}: [[matrix]] {name}: `{key}` is lab-only, not applicable on real hosts ({why}); remove it");
    }
    let have = h.receivers.len() as u32;
    if let Some(r) = b.receivers.iter().flatten().find(|&&r| r == 0 || r > have) {
        bail!("{file}: receivers {r}: the inventory has {have} receiver(s); use 1..={have}");
    }
    Ok(())
}

/// Appends a block's product to `cases`, merging a case identical to an earlier one into it.
fn add_block_cases(cx: &CaseBase, a: &BlockAxes, cases: &mut Vec<Case>) -> Result<()> {
    let file = cx.file;
    // Topology axes outermost, so consecutive cases share a lab.
    for &pl in &a.placements {
        for &r in &a.receivers {
            for &sn in &a.snooping {
                for &q in &a.query_intervals {
                    for ld in &a.loads {
                        for &imp in &a.impairs {
                            for &d in &a.durations {
                                let d = cx.prof.duration.unwrap_or(d);
                                let c = Case {
                                    block: a.name.clone(),
                                    load: ld.clone(),
                                    receivers: r,
                                    snooping: sn,
                                    query_interval: q,
                                    impair: imp,
                                    placement: pl,
                                    duration: d,
                                    on_lab: cx.hosts.is_none(),
                                };
                                if !(d > 0.0 && d <= 86_400.0) {
                                    bail!("{file}: duration {d} s: use more than 0 and at most 86400");
                                }
                                merge_case(cases, c, &a.name);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Adds a case to `cases`, or, when one differs from it only by block, names block `name` in that one:
/// identical cases (in two blocks, or made identical by a profile) run once.
fn merge_case(cases: &mut Vec<Case>, c: Case, name: &str) {
    match cases.iter_mut().find(|o| Case { block: c.block.clone(), ..(*o).clone() } == c) {
        Some(o) => {
            if !o.block.split('+').any(|b| b == name) {
                o.block = format!("{}+{name}", o.block);
            }
        }
        None => cases.push(c),
    }
}

/// Why a key is refused with `sender = "iperf2"`.
const IPERF2_WHY: &str = "sender = \"iperf2\" sends one flow with iperf's own pacing";

/// Client flags `mcblast run` sets itself (from the case, or `-f` and `-i` to read the output) or that
/// iperf2 cannot do here (`-P`: flows > 1).
const IPERF2_OWN_FLAGS: &[(&str, &str)] = &[
    ("-c", "--client"),
    ("-s", "--server"),
    ("-u", "--udp"),
    ("-p", "--port"),
    ("-T", "--ttl"),
    ("-b", "--bandwidth"),
    ("-l", "--len"),
    ("-t", "--time"),
    ("-n", "--num"),
    ("-P", "--parallel"),
    ("-i", "--interval"),
    ("-f", "--format"),
];

/// The plan's `sender` and `iperf2_args`; one line naming the key when they do not fit the rest.
fn sender_of(f: &PlanFile, file: &str) -> Result<Sender> {
    match f.sender.as_deref() {
        None | Some("mcblast") => {
            if f.iperf2_args.is_some() {
                bail!("{file}: `iperf2_args` is for sender = \"iperf2\": remove it or set sender = \"iperf2\"");
            }
            Ok(Sender::Mcblast)
        }
        Some("iperf2") => {
            if f.engine.is_some() {
                bail!("{file}: {IPERF2_WHY}: drop `engine`");
            }
            let args = f.iperf2_args.clone().unwrap_or_default();
            for a in &args {
                let own = IPERF2_OWN_FLAGS.iter().find(|(short, long)| {
                    (a.starts_with(short) && !a.starts_with("--")) || a == long || a.starts_with(&format!("{long}="))
                });
                match own {
                    Some(("-P", _)) => bail!("{file}: {IPERF2_WHY} (not flows > 1): drop `{a}` from `iperf2_args`"),
                    Some(_) => {
                        bail!("{file}: iperf2_args `{a}`: mcblast run sets it itself (from the case, or to read the output); drop it")
                    }
                    None => {}
                }
            }
            Ok(Sender::Iperf2 { args })
        }
        Some(x) => bail!("{file}: sender '{x}': use \"mcblast\" or \"iperf2\""),
    }
}

/// What iperf2 cannot send: flat out (`max`: iperf2 paces with -b) and the
/// lab's impairment (its program reads mcblast's header only, so iperf2's
/// datagrams would pass it untouched).
fn check_iperf2_cases(file: &str, cases: &[Case]) -> Result<()> {
    for c in cases {
        if c.load.rate_bps.is_none() {
            bail!("{file}: load {}: {IPERF2_WHY} (-b): give `load` a rate, not max", c.load.text);
        }
        let i = &c.impair;
        let key = [("loss", i.loss_pct), ("reorder", i.reorder_pct), ("duplicate", i.duplicate_pct)].into_iter().find(|k| k.1 > 0.0);
        if let Some((key, _)) = key {
            bail!("{file}: sender = \"iperf2\": the lab's impairment program reads mcblast's header only: drop `{key}`");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
group = "239.0.0.1"
duration = 30
repeats = 5
[lab]
hosts = 3
fabric = "vxlan"
[[matrix]]
name = "load"
load = ["1M/512", "10M/1470", "100M/8192", "max/8192"]
receivers = [3, 6, 9]
[[matrix]]
name = "loss"
loss = [0, 1, 5]
snooping = [true, false]
[profile.quick]
duration = 2
repeats = 2
"#;

    #[test]
    fn good_file_and_case_count() {
        let p = parse(GOOD, "g.toml", None, "x-").unwrap();
        assert_eq!(p.repeats, 5);
        // 4 loads x 3 receiver counts, 3 losses x 2 snooping; 10M/1470 to 9 receivers is in both blocks
        assert_eq!(p.cases.len(), 4 * 3 + 3 * 2 - 1);
        assert_eq!(p.cases[9].block, "load+loss");
        assert_eq!((p.cases[9].load.length, p.cases[9].receivers), (1470, 9));
        assert_eq!(p.cases[0].duration, 30.0);
        assert_eq!(p.base.topology.unwrap().fabric, Fabric::Vxlan);
        assert_eq!(p.base.base.prefix, "x-");
        let c = &p.cases[0];
        assert_eq!(c.load, Load { text: "1M/512".into(), rate_bps: Some(1e6), length: 512 });
        assert_eq!(p.cases[3].load.rate_bps, None);
        let spec = p.spec_for(&p.cases[4]); // 6 receivers
        assert_eq!(spec.topology.unwrap().per_host, 2);
        assert_eq!(spec.base.receivers, 6);
        let every = |i: usize| p.cases[i].impair_config().map(|c| (c.every, c.burst, c.loss_ppm, c.seed));
        assert_eq!(every(12), Some((100, 1, 0, DEFAULT_SEED)));
        assert_eq!(every(13), Some((20, 1, 0, DEFAULT_SEED)));
        assert_eq!(every(14), None);
        assert!(!p.cases[14].snooping);
    }

    #[test]
    fn impairment_refused_on_ovn_and_tgw_limits_with_the_tgw_preset() {
        let ovn = GOOD.replace("fabric = \"vxlan\"", "fabric = \"ovn\"");
        let e = parse(&ovn, "g.toml", None, "x-").unwrap_err().to_string();
        assert!(e.starts_with("g.toml: loss, reorder and duplicate are not injected exactly on lab.fabric = \"ovn\""), "{e}");
        assert!(!parse(GOOD, "g.toml", None, "x-").unwrap().tgw_limits, "off without the tgw preset");
        let tgw = GOOD.replace("fabric = \"vxlan\"", "preset = \"tgw\"");
        assert!(parse(&tgw, "g.toml", None, "x-").unwrap().tgw_limits, "on with it");
        let off = tgw.replace("preset = \"tgw\"", "preset = \"tgw\"\ntgw_limits = false");
        assert!(!parse(&off, "g.toml", None, "x-").unwrap().tgw_limits);
        let vx = GOOD.replace("fabric = \"vxlan\"", "fabric = \"vxlan\"\ntgw_limits = true");
        assert!(parse(&vx, "g.toml", None, "x-").unwrap_err().to_string().contains("needs the bridge fabric"));
    }

    #[test]
    fn the_ovn_preset_is_the_real_ovn_where_it_is_installed() {
        let plain = GOOD.replace("fabric = \"vxlan\"", "preset = \"ovn\"");
        let want = if crate::lab::ovn::installed() { Fabric::Ovn } else { Fabric::Vxlan };
        let no_loss = plain.replace("loss = [0, 1, 5]", "loss = [0]");
        assert_ne!(plain, no_loss, "GOOD's loss list changed: update this test");
        assert_eq!(parse(&no_loss, "g.toml", None, "x-").unwrap().base.topology.unwrap().fabric, want);
        // with injected loss, the real OVN is refused and says how to get the approximation
        let with_loss = parse(&plain, "g.toml", None, "x-");
        match want {
            Fabric::Ovn => assert!(with_loss.unwrap_err().to_string().contains("set fabric = \"bridge\" or \"vxlan\"")),
            _ => assert_eq!(with_loss.unwrap().base.topology.unwrap().fabric, Fabric::Vxlan),
        }
        let vx = plain.replace("preset = \"ovn\"", "preset = \"ovn\"\nfabric = \"vxlan\"");
        assert_eq!(parse(&vx, "g.toml", None, "x-").unwrap().base.topology.unwrap().fabric, Fabric::Vxlan);
    }

    #[test]
    fn engines_are_the_senders_own_names() {
        let bad = format!("engine = \"turbo\"\n{GOOD}");
        let e = parse(&bad, "g.toml", None, "x-").unwrap_err().to_string();
        assert_eq!(e, "g.toml: engine 'turbo': use auto, socket, mmsg, gso, uring or xdp");
        for name in ["auto", "socket", "mmsg", "gso", "uring", "xdp"] {
            let ok = format!("engine = \"{name}\"\n{GOOD}");
            assert_eq!(parse(&ok, "g.toml", None, "x-").unwrap().engine, name);
        }
    }

    #[test]
    fn quick_profile_shortens() {
        let p = parse(GOOD, "g.toml", Some("quick"), "x-").unwrap();
        assert_eq!(p.repeats, 2);
        assert!(p.cases.iter().all(|c| c.duration == 2.0));
        assert_eq!(p.cases.len(), 17);
        let e = parse(GOOD, "g.toml", Some("slow"), "x-").unwrap_err().to_string();
        assert!(e.contains("no [profile.slow]"), "{e}");
    }

    #[test]
    fn profile_merges_identical_cases() {
        let t = "[[matrix]]\nduration = [60, 600, 3600]\n[profile.quick]\nduration = 1\n";
        assert_eq!(parse(t, "d.toml", None, "x-").unwrap().cases.len(), 3);
        assert_eq!(parse(t, "d.toml", Some("quick"), "x-").unwrap().cases.len(), 1);
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let e = parse("duration = 3\n[lab]\nhostz = 3\n", "plan.toml", None, "x-").unwrap_err().to_string();
        assert!(e.starts_with("plan.toml:3:"), "{e}");
        assert!(e.contains("hostz"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn bad_load_strings() {
        for s in ["10M", "fast/1470", "10M/20", "10M/x", "-1M/512", "10Q/512"] {
            assert!(parse_load(s).is_err(), "{s}");
        }
        assert_eq!(parse_load("2.5G/8192").unwrap().rate_bps, Some(2.5e9));
        let e = parse("[[matrix]]\nload = [\"10M\"]\n", "p.toml", None, "x-").unwrap_err().to_string();
        assert!(e.contains("p.toml") && e.contains("RATE/LENGTH"), "{e}");
    }

    #[test]
    fn impairment_keys_top_level_matrix_and_profile() {
        let t = "loss = 2\nseed = 9\n\
                 [[matrix]]\nname = \"a\"\n\
                 [[matrix]]\nname = \"b\"\nloss_mode = [\"every\", \"random\"]\nburst = [4]\nreorder = [0.5]\nduplicate = [1]\n\
                 [profile.q]\nseed = 3\nloss = 5\n";
        let p = parse(t, "i.toml", None, "x-").unwrap();
        assert_eq!(p.cases.len(), 3);
        let a = p.cases[0].impair;
        // every Nth has no random part: the top-level seed 9 makes no difference there
        assert_eq!((a.loss_pct, a.loss_mode, a.burst, a.seed), (2.0, LossMode::Every, 1, DEFAULT_SEED));
        assert_eq!(p.cases[0].impair_config().map(|c| (c.every, c.burst, c.loss_ppm)), Some((50, 1, 0)));
        // every 200th starts a burst of 4: 2 %
        let b = p.cases[1].impair_config().unwrap();
        assert_eq!((b.every, b.burst, b.loss_ppm, b.reorder_ppm, b.duplicate_ppm, b.seed), (200, 4, 0, 5_000, 10_000, 9));
        // random, bursts of 4: p = 0.02 / (4 - 0.02 x 3) = 0.005076...
        let r = p.cases[2].impair_config().unwrap();
        assert_eq!((r.every, r.burst, r.loss_ppm), (0, 4, 5_076));
        let q = parse(t, "i.toml", Some("q"), "x-").unwrap();
        assert!(q.cases.iter().all(|c| c.impair.loss_pct == 5.0), "{:?}", q.cases);
        assert_eq!(q.cases.iter().map(|c| c.impair.seed).collect::<Vec<_>>(), [DEFAULT_SEED, 3, 3], "seeds where random");
        // no loss: burst is ignored, reorder alone is an impairment
        let o = parse("burst = 3\nreorder = 1\n", "o.toml", None, "x-").unwrap();
        assert_eq!(o.cases[0].impair_config().map(|c| (c.every, c.burst, c.loss_ppm, c.reorder_ppm)), Some((0, 1, 0, 10_000)));
        // what makes no difference makes no case: loss 0 in both modes and bursts is one
        // case, and so are the seeds of a case without a random part
        let m = "[[matrix]]\nloss = [0, 1]\nloss_mode = [\"every\", \"random\"]\nburst = [1, 2]\nseed = [1, 2]\n";
        let cases = parse(m, "m.toml", None, "x-").unwrap().cases;
        let got: Vec<_> = cases.iter().map(|c| (c.impair.loss_pct, c.impair.loss_mode, c.impair.burst, c.impair.seed)).collect();
        assert_eq!(
            got,
            [
                (0.0, LossMode::Every, 1, 1),
                (1.0, LossMode::Every, 1, 1),
                (1.0, LossMode::Every, 2, 1),
                (1.0, LossMode::Random, 1, 1),
                (1.0, LossMode::Random, 1, 2),
                (1.0, LossMode::Random, 2, 1),
                (1.0, LossMode::Random, 2, 2),
            ]
        );
        assert_eq!(parse("", "e.toml", None, "x-").unwrap().cases[0].impair_config(), None);
    }

    #[test]
    fn impairment_ranges_are_one_line_each() {
        for (t, want) in [
            ("loss = 101", "i.toml: loss 101 %: use 0 (none) or 0.0001..=100"),
            ("[[matrix]]\nreorder = [-1]", "i.toml: reorder -1 %: use 0 (none) or 0.0001..=100"),
            ("duplicate = 0.00001", "i.toml: duplicate 0.00001 %: use 0 (none) or 0.0001..=100"),
            ("burst = 0", "i.toml: burst 0: use 1..=1000 datagrams per drop event"),
            ("[[matrix]]\nburst = [1001]", "i.toml: burst 1001: use 1..=1000 datagrams per drop event"),
            ("loss_mode = \"netem\"", "i.toml: loss_mode 'netem': use \"every\" (every Nth datagram) or \"random\" (seeded)"),
            ("[profile.p]\nloss = 200", ""),
        ] {
            let prof = t.starts_with("[profile").then_some("p");
            let e = parse(t, "i.toml", prof, "x-").unwrap_err().to_string();
            let want = if want.is_empty() { "i.toml: loss 200 %: use 0 (none) or 0.0001..=100" } else { want };
            assert_eq!(e, want);
        }
    }

    #[test]
    fn receivers_must_divide_by_hosts() {
        let e = parse("[[matrix]]\nreceivers = [4]\n", "p.toml", None, "x-").unwrap_err().to_string();
        assert!(e.contains("multiple of lab.hosts"), "{e}");
    }

    #[test]
    fn no_matrix_is_one_case() {
        let p = parse("", "e.toml", None, "x-").unwrap();
        assert_eq!(p.cases.len(), 1);
        assert_eq!(p.cases[0].receivers, 9);
        assert_eq!(p.repeats, 5);
    }
}

#[cfg(test)]
mod iperf2_tests {
    use super::*;

    #[test]
    fn iperf2_sender_and_its_args() {
        let t = "sender = \"iperf2\"\niperf2_args = [\"-e\"]\n[[matrix]]\nload = [\"10M/1470\"]\n";
        let p = parse(t, "i.toml", None, "x-").unwrap();
        assert_eq!(p.sender, Sender::Iperf2 { args: vec!["-e".into()] });
        assert_eq!(parse("", "m.toml", None, "x-").unwrap().sender, Sender::Mcblast);
        assert_eq!(parse("sender = \"mcblast\"", "m.toml", None, "x-").unwrap().sender, Sender::Mcblast);
    }

    #[test]
    fn what_iperf2_cannot_do_is_one_line_naming_the_key() {
        let iperf = "sender = \"iperf2\"\n";
        for (t, want) in [
            (format!("{iperf}engine = \"mmsg\""), "i.toml: sender = \"iperf2\" sends one flow with iperf's own pacing: drop `engine`"),
            (
                format!("{iperf}iperf2_args = [\"-P\", \"4\"]"),
                "i.toml: sender = \"iperf2\" sends one flow with iperf's own pacing (not flows > 1): drop `-P` from `iperf2_args`",
            ),
            (
                format!("{iperf}iperf2_args = [\"--parallel=2\"]"),
                "i.toml: sender = \"iperf2\" sends one flow with iperf's own pacing (not flows > 1): drop `--parallel=2` from `iperf2_args`",
            ),
            (
                format!("{iperf}iperf2_args = [\"-b\", \"5M\"]"),
                "i.toml: iperf2_args `-b`: mcblast run sets it itself (from the case, or to read the output); drop it",
            ),
            (
                format!("{iperf}[[matrix]]\nload = [\"max/8192\"]"),
                "i.toml: load max/8192: sender = \"iperf2\" sends one flow with iperf's own pacing (-b): give `load` a rate, not max",
            ),
            (
                format!("{iperf}[[matrix]]\nloss = [0, 1]"),
                "i.toml: sender = \"iperf2\": the lab's impairment program reads mcblast's header only: drop `loss`",
            ),
            (format!("{iperf}reorder = 1"), "i.toml: sender = \"iperf2\": the lab's impairment program reads mcblast's header only: drop `reorder`"),
            ("iperf2_args = [\"-e\"]".to_string(), "i.toml: `iperf2_args` is for sender = \"iperf2\": remove it or set sender = \"iperf2\""),
            ("sender = \"iperf3\"".to_string(), "i.toml: sender 'iperf3': use \"mcblast\" or \"iperf2\""),
        ] {
            let e = parse(&t, "i.toml", None, "x-").unwrap_err().to_string();
            assert_eq!(e, want, "{t}");
        }
    }

    /// The shipped iperf2 variant of the seed matrix parses, with and without the quick profile.
    #[test]
    fn seed_matrix_iperf2_example() {
        let text = include_str!("../../../examples/seed-matrix-iperf2.toml");
        let full = parse(text, "seed-matrix-iperf2.toml", None, "x-").unwrap();
        assert!(matches!(full.sender, Sender::Iperf2 { .. }));
        assert!(full.cases.iter().all(|c| c.load.rate_bps.is_some() && c.impair_config().is_none()));
        let quick = parse(text, "seed-matrix-iperf2.toml", Some("quick"), "x-").unwrap();
        assert!(quick.cases.len() <= full.cases.len() && quick.repeats <= full.repeats);
    }
}

#[cfg(test)]
mod seed_tests {
    use super::*;

    /// The shipped example parses, with and without the quick profile.
    #[test]
    fn seed_matrix_example() {
        let text = include_str!("../../../examples/seed-matrix.toml");
        let full = parse(text, "seed-matrix.toml", None, "x-").unwrap();
        assert_eq!(full.repeats, 5);
        let quick = parse(text, "seed-matrix.toml", Some("quick"), "x-").unwrap();
        assert_eq!(quick.repeats, 2);
        assert_eq!(quick.cases.len(), 12, "{:#?}", quick.cases.iter().map(|c| &c.block).collect::<Vec<_>>());
        assert_eq!(quick.cases[1].block, "load+scaling+snooping+query-interval+placement");
        // full: 4 loads, scaling 3 and 6, snooping off, query 10/125/300 at 300 s,
        // durations 600 and 3600 (60 s at 100M/8192 is new too), loss 1/5 and 0 at 6, same-host
        assert_eq!(full.cases.len(), 4 + 2 + 1 + 3 + 3 + 2 + 1);
    }

    /// The two halves of the platform comparison run the same cases, on their presets' fabrics.
    #[test]
    fn platform_examples() {
        let ovn = parse(include_str!("../../../examples/platforms/ovn.toml"), "ovn.toml", None, "x-").unwrap();
        let tgw = parse(include_str!("../../../examples/platforms/tgw.toml"), "tgw.toml", None, "x-").unwrap();
        let loads = |p: &TestPlan| p.cases.iter().map(|c| (c.load.text.clone(), c.receivers)).collect::<Vec<_>>();
        assert_eq!(loads(&ovn).len(), 5);
        assert_eq!(loads(&ovn), loads(&tgw));
        let snooping = |p: &TestPlan| p.cases.iter().map(|c| c.snooping).collect::<Vec<_>>();
        assert_eq!(snooping(&ovn), [true, true, true, true, false], "the last case is the seed's snooping toggle");
        assert_eq!(snooping(&ovn), snooping(&tgw));
        let want = if crate::lab::ovn::installed() { Fabric::Ovn } else { Fabric::Vxlan };
        assert_eq!(ovn.base.topology.unwrap().fabric, want);
        assert_eq!(tgw.base.topology.unwrap().fabric, Fabric::Bridge);
        assert!(tgw.tgw_limits && !ovn.tgw_limits);
    }
}

#[cfg(test)]
mod hosts_tests {
    use super::*;

    /// A plan "next to" examples/hosts.ini: its inventory path resolves there.
    fn file() -> String {
        format!("{}/../examples/p.toml", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn three_hosts_example() {
        let p = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/three-hosts.toml"), None, "x-").unwrap();
        let h = p.hosts.as_ref().unwrap();
        assert_eq!(h.sender.name, "tx");
        assert_eq!(h.sender.mcblast_path, "sudo -n /usr/local/bin/mcblast");
        assert_eq!(h.receivers.iter().map(|r| r.address.as_str()).collect::<Vec<_>>(), ["10.0.1.11", "10.0.1.12"]);
        assert_eq!(h.receivers[1].interface.as_deref(), Some("ens5"));
        // 3 loads to 2, then 10M/1470 to 1 (to 2 is the same case as the load block's)
        assert_eq!(p.cases.len(), 4);
        assert_eq!(p.cases.iter().map(|c| c.receivers).collect::<Vec<_>>(), [2, 2, 2, 1]);
        assert_eq!(p.cases[1].block, "load+scaling");
        assert!(p.cases.iter().all(|c| !c.on_lab && c.impair_config().is_none()));
        let q = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/three-hosts.toml"), Some("quick"), "x-").unwrap();
        assert_eq!((q.repeats, q.cases[0].duration), (2, 2.0));
    }

    #[test]
    fn lab_only_keys_refused_on_hosts() {
        for (key, list) in [
            ("snooping", "[true]"),
            ("query_interval", "[10]"),
            ("loss", "[1]"),
            ("loss_mode", "[\"random\"]"),
            ("burst", "[2]"),
            ("reorder", "[1]"),
            ("duplicate", "[1]"),
            ("seed", "[5]"),
            ("placement", "[\"spread\"]"),
        ] {
            let t = format!("[hosts]\ninventory = \"hosts.ini\"\n[[matrix]]\nname = \"m\"\n{key} = {list}\n");
            let e = parse(&t, &file(), None, "x-").unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}` is lab-only, not applicable on real hosts")), "{e}");
            assert!(e.contains("[[matrix]] m") && !e.contains('\n'), "{e}");
        }
        for key in ["loss = 1", "loss_mode = \"every\"", "burst = 2", "reorder = 1", "duplicate = 1", "seed = 5"] {
            let name = key.split(' ').next().unwrap();
            let t = format!("{key}\n[hosts]\ninventory = \"hosts.ini\"\n");
            let e = parse(&t, &file(), None, "x-").unwrap_err().to_string();
            assert!(e.ends_with(&format!(": `{name}` is lab-only, not applicable on real hosts (loss, reordering and duplication are injected by the lab's impairment program); remove it")), "{e}");
            assert!(!e.contains('\n'), "{e}");
            let t = format!("[hosts]\ninventory = \"hosts.ini\"\n[profile.p]\n{key}\n");
            assert!(parse(&t, &file(), None, "x-").is_ok(), "an unused profile is not checked");
            let e = parse(&t, &file(), Some("p"), "x-").unwrap_err().to_string();
            assert!(e.contains(&format!("[profile.p]: `{name}` is lab-only")), "{e}");
        }
        let e = parse("[lab]\nhosts = 1\n[hosts]\ninventory = \"hosts.ini\"\n", &file(), None, "x-").unwrap_err().to_string();
        assert!(e.ends_with("both [lab] and [hosts]: a plan runs on the lab or on real hosts, remove one"), "{e}");
    }

    #[test]
    fn receivers_and_groups_checked_against_the_inventory() {
        let e = parse("[hosts]\ninventory = \"hosts.ini\"\n[[matrix]]\nreceivers = [3]\n", &file(), None, "x-")
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("receivers 3: the inventory has 2 receiver(s); use 1..=2"), "{e}");
        let e = parse("[hosts]\ninventory = \"hosts.ini\"\nsenders = \"tx\"\n", &file(), None, "x-").unwrap_err().to_string();
        assert!(e.ends_with("hosts.ini: no group `tx` (groups: receivers, senders)"), "{e}");
        let e = parse("[hosts]\ninventory = \"nope.ini\"\n", &file(), None, "x-").unwrap_err();
        assert!(format!("{e:#}").contains("reading inventory") && format!("{e:#}").contains("nope.ini"), "{e:#}");
        let e = parse("[hosts]\ninventory = \"hosts.ini\"\nsenders = \"receivers\"\n", &file(), None, "x-")
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("host `rx1` is both the sender and a receiver: give each role its own host"), "{e}");
    }
}
