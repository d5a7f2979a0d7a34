//! `mcblast lab up|status|exec|down|impair`: the flags (`cli::LabCommand`) →
//! the lab's own terms (`LabSpec`, `TgwLimits`, `OvnSettings`, `ImpairConfig`) → the lab.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::cli::{EncapArg, LabCommand, LabFabric, LabImpairArgs, LabPlacement, LabPreset, LabUpArgs, OnOff, OvnArgs, OvnProfileArg};
use crate::lab::ovn::{Encap, OvnSettings};
use crate::lab::{
    Fabric, IgmpConfig, Lab, LabConfig, LabError, LabSpec, Placement, Preset, SWITCH, TgwLimits, Topology,
    default_membership_cs, down_counted, prefix_from_env, require_root,
};
use crate::output::Printer;

impl From<EncapArg> for Encap {
    fn from(e: EncapArg) -> Encap {
        match e {
            EncapArg::Geneve => Encap::Geneve,
            EncapArg::Vxlan => Encap::Vxlan,
        }
    }
}

/// Runs a lab command. The prefix comes from `$MCBLAST_LAB_PREFIX` (default `mcb-`).
pub fn run(cmd: LabCommand) -> Result<ExitCode> {
    let prefix = prefix_from_env();
    match cmd {
        LabCommand::Up(a) => up(prefix, a),
        LabCommand::Status => {
            let lab = Lab::open(&prefix)?;
            if lab.topology().is_some_and(|t| t.fabric == Fabric::Ovn) {
                return crate::lab::ovn::status_cmd(&lab);
            }
            print!("{}", lab.status()?.render());
            if let Some((l, d)) = lab.tgw_limits()? {
                print!("{}", crate::lab::tgw::render(&l, &d));
            }
            let impaired = lab.impaired_links();
            if !impaired.is_empty() {
                println!("impairments (eBPF at the port's tc egress; mcblast lab impair LINK --stats|--clear):");
                for link in impaired {
                    match lab.impair_stats(&link) {
                        Ok(r) => println!("  {link:<6} {}; {}", crate::lab::impair::describe(&r.cfg), r.counts()),
                        Err(e) => println!("  {link:<6} unreadable: {e:#}"),
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Exec { node, cmd } => exec(&prefix, &node, &cmd),
        LabCommand::Impair(a) => impair(&prefix, a),
        LabCommand::Down => {
            let impaired = crate::lab::impair::remove_all(&prefix)?;
            if impaired != 0 {
                println!("removed the impairment of {impaired} link(s) of lab {prefix}");
            }
            let n = down_counted(&prefix)?;
            if n == 0 {
                println!("no lab {prefix} was up; nothing to remove");
            } else {
                println!("lab {prefix} removed ({n} namespaces)");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What `lab up` builds from its flags: the flat lab unless a topology flag
/// (--hosts, --per-host, --fabric, --placement, --preset) is given; a
/// preset's settings, overridden by any flag given explicitly.
pub fn spec_from_args(prefix: String, a: &LabUpArgs) -> Result<LabSpec> {
    let preset = a.preset.map(|p| match p {
        LabPreset::Tgw => Preset::Tgw,
        LabPreset::Ovn => Preset::Ovn,
    });
    let hierarchical =
        preset.is_some() || a.hosts.is_some() || a.per_host.is_some() || a.fabric.is_some() || a.placement.is_some();
    let (p_fabric, p_igmp, p_mtu, p_snoop, p_querier) = match preset {
        Some(p) => p.settings(),
        None => (Fabric::Bridge, IgmpConfig::default(), 9000, true, true),
    };
    let query_interval_cs = a.query_interval.map_or(p_igmp.query_interval_cs, |s| s * 100);
    let membership_interval_cs = match (a.membership_interval, a.query_interval) {
        (Some(m), _) => m * 100,
        // a new query interval without a membership interval: the RFC default for it
        (None, Some(_)) => default_membership_cs(query_interval_cs),
        (None, None) => p_igmp.membership_interval_cs,
    };
    let igmp = IgmpConfig {
        version: a.igmp_version.unwrap_or(p_igmp.version),
        query_interval_cs,
        membership_interval_cs,
    };
    let topology = hierarchical.then(|| Topology {
        hosts: a.hosts.unwrap_or(3),
        per_host: a.per_host.unwrap_or(3),
        fabric: match a.fabric {
            Some(LabFabric::Bridge) => Fabric::Bridge,
            Some(LabFabric::Vxlan) => Fabric::Vxlan,
            Some(LabFabric::Ovn) => Fabric::Ovn,
            // --preset ovn: the real OVN when it is installed
            None => preset.map_or(p_fabric, Preset::fabric),
        },
        placement: match a.placement {
            Some(LabPlacement::SameHost) => Placement::SameHost,
            Some(LabPlacement::Spread) | None => Placement::Spread,
        },
    });
    let base = LabConfig {
        prefix,
        receivers: topology.map_or(a.receivers.unwrap_or(9), |t| t.receivers()),
        mtu: a.mtu.unwrap_or(p_mtu),
        snooping: a.snooping.map_or(p_snoop, |x| x == OnOff::On),
        querier: a.querier.map_or(p_querier, |x| x == OnOff::On),
    };
    let spec = LabSpec { base, igmp, topology };
    spec.validate()?;
    Ok(spec)
}

/// The TGW limits `lab up` enforces: on by default with `--preset tgw`,
/// switched by `--tgw-limits`, rates overridden by `--tgw-flow-pps`/`--tgw-flow-rate`.
pub fn tgw_from_args(a: &LabUpArgs, spec: &LabSpec) -> Result<Option<TgwLimits>> {
    let rates_given = a.tgw_flow_pps.is_some() || a.tgw_flow_rate.is_some() || a.tgw_max_members.is_some();
    let on = match a.tgw_limits {
        Some(x) => x == OnOff::On,
        None => a.preset == Some(LabPreset::Tgw) || rates_given,
    };
    if !on {
        if rates_given {
            bail!("--tgw-flow-pps, --tgw-flow-rate and --tgw-max-members need the TGW limits on: drop --tgw-limits off");
        }
        return Ok(None);
    }
    if spec.topology.is_none_or(|t| t.fabric != Fabric::Bridge) {
        bail!("--tgw-limits needs emulated hosts on the bridge fabric: use --preset tgw (or --fabric bridge)");
    }
    let mut l = TgwLimits::aws(spec.base.receivers);
    if let Some(p) = a.tgw_flow_pps {
        l.flow_pps = Some(p);
    }
    if let Some(r) = a.tgw_flow_rate {
        if !(8.0..=1e12).contains(&r) {
            bail!("--tgw-flow-rate {r}: must be 8 bit/s..1T");
        }
        l.flow_bps = Some(r as u64);
    }
    if let Some(m) = a.tgw_max_members {
        l.max_members = (m > 0).then_some(m);
    }
    Ok(Some(l))
}

/// The OVN fabric's settings: `OvnSettings::from_spec`, then the flags: a profile first, explicit flags over it.
pub fn ovn_settings(spec: &LabSpec, a: &OvnArgs, snooping_given: bool, querier_given: bool) -> OvnSettings {
    let mut s = OvnSettings::from_spec(spec);
    if a.profile == Some(OvnProfileArg::Neutron) {
        s.snoop = if snooping_given { s.snoop } else { true };
        s.querier = if querier_given { s.querier } else { false };
    }
    s.encap = a.encap.map_or(s.encap, Encap::from);
    s.flood_unregistered = a.flood_unregistered.map_or(s.flood_unregistered, |x| x == OnOff::On);
    s.table_size = a.mcast_table_size.unwrap_or(s.table_size);
    s.query_max_response_s = a.query_max_response.unwrap_or(s.query_max_response_s);
    s.flood_ports = dedup(&a.mcast_flood);
    s.flood_reports_ports = dedup(&a.mcast_flood_reports);
    s
}

/// The names in order, each once.
fn dedup(v: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for x in v {
        if !out.contains(x) {
            out.push(x.clone());
        }
    }
    out
}

/// The per-port flags name nodes of an OVN lab: a one-line error otherwise (before `lab up` needs root).
pub fn check_ovn_args(spec: &LabSpec, a: &OvnArgs) -> Result<(), LabError> {
    let t = match spec.topology {
        Some(t) if t.fabric == Fabric::Ovn => t,
        _ if a.mcast_flood.is_empty() && a.mcast_flood_reports.is_empty() => return Ok(()),
        _ => return Err(LabError::Config("--mcast-flood and --mcast-flood-reports need --fabric ovn".into())),
    };
    let (flood_ports, flood_reports_ports) = (a.mcast_flood.clone(), a.mcast_flood_reports.clone());
    let s = OvnSettings { flood_ports, flood_reports_ports, ..OvnSettings::from_spec(spec) };
    s.check_ports(&t)
}

fn up(prefix: String, a: LabUpArgs) -> Result<ExitCode> {
    let spec = spec_from_args(prefix, &a)?;
    let tgw = tgw_from_args(&a, &spec)?;
    check_ovn_args(&spec, &a.ovn)?;
    require_root()?;
    if spec.topology.is_some_and(|t| t.fabric == Fabric::Ovn) {
        let settings = ovn_settings(&spec, &a.ovn, a.snooping.is_some(), a.querier.is_some());
        return crate::lab::ovn::up_cmd(spec, settings);
    }
    // Ctrl-C while building: stop, remove the half-built lab, exit.
    crate::sys::install_stop_signals().context("installing signal handlers")?;
    let lab = Lab::up_spec(&spec)?;
    if let Some(l) = &tgw {
        lab.tgw_limits_apply(l)?;
    }
    let lab = lab.keep();
    let cfg = &spec.base;
    let on = |b: bool| if b { "on" } else { "off" };
    if let Some(t) = &spec.topology {
        let ig = &spec.igmp;
        println!(
            "lab {p} is up: sender {s} on host h0, r1..r{n} on hosts h1..h{h} ({pl}, {ph} per host), fabric {f}{ul} (mtu {m}, IGMP snooping {sn}, querier {q} in {p}{qn}, IGMPv{v}, queries every {qi} s, membership {mi} s)",
            p = cfg.prefix,
            s = lab.addr("sender"),
            n = t.receivers(),
            h = t.hosts,
            pl = t.placement.as_str(),
            ph = t.per_host,
            f = t.fabric.as_str(),
            ul = if t.fabric == Fabric::Vxlan {
                format!(" (underlay {}ul mtu {})", cfg.prefix, cfg.mtu + crate::lab::VXLAN_OVERHEAD)
            } else {
                String::new()
            },
            m = cfg.mtu,
            sn = on(cfg.snooping),
            q = on(cfg.querier),
            qn = t.querier_node(),
            v = ig.version,
            qi = ig.query_interval_cs as f64 / 100.0,
            mi = ig.membership_interval_cs as f64 / 100.0,
        );
        if let Some(l) = &tgw {
            println!("  TGW limits in the fabric ({}sw): {}", cfg.prefix, l.describe());
        }
        println!("  try: mcblast lab exec r1 -- mcblast recv    |    mcblast lab status    |    mcblast lab down");
        return Ok(ExitCode::SUCCESS);
    }
    let last = cfg.receivers;
    println!(
        "lab {p} is up: sender {s}, r1..r{last} {r1}..{rn} on bridge br0 in {p}{SWITCH} \
         (mtu {m}, IGMP snooping {sn}, querier {q}, IGMPv{v})",
        p = cfg.prefix,
        s = lab.addr("sender"),
        r1 = lab.addr("r1"),
        rn = lab.addr(&format!("r{last}")),
        m = cfg.mtu,
        sn = on(cfg.snooping),
        q = on(cfg.querier),
        v = spec.igmp.version,
    );
    println!("  try: mcblast lab exec r1 -- mcblast recv    |    mcblast lab status    |    mcblast lab down");
    Ok(ExitCode::SUCCESS)
}

/// One `lab impair` JSON line.
#[derive(serde::Serialize)]
struct ImpairLine<'a> {
    lab: &'a str,
    link: &'a str,
    /// "attached", "stats" or "cleared".
    action: &'a str,
    impairment: String,
    every: u32,
    burst: u32,
    loss_ppm: u32,
    duplicate_ppm: u32,
    reorder_ppm: u32,
    seed: u64,
    #[serde(flatten)]
    counts: Option<crate::lab::impair::ImpairReport>,
}

impl crate::output::Record for ImpairLine<'_> {
    const TYPE: &'static str = "impair";
    fn human(&self) -> String {
        let (link, what) = (self.link, &self.impairment);
        let counts = self.counts.as_ref().map(|r| r.counts()).unwrap_or_default();
        match self.action {
            "cleared" => format!("impair {link}: cleared ({what}); final counts: {counts}"),
            "stats" => format!("impair {link}: {what}; {counts}"),
            _ => format!("impair {link}: {what} (see `mcblast lab impair {link} --stats`, remove with --clear)"),
        }
    }
}

fn impair(prefix: &str, a: LabImpairArgs) -> Result<ExitCode> {
    let lab = Lab::open(prefix)?;
    let mut out = Printer::new(a.json);
    let link = a.link.as_str();
    let line = |action: &'static str, cfg: &mcblast_common::maps::ImpairConfig, counts| ImpairLine {
        lab: prefix,
        link,
        action,
        impairment: crate::lab::impair::describe(cfg),
        every: cfg.every,
        burst: cfg.burst.max(1),
        loss_ppm: cfg.loss_ppm,
        duplicate_ppm: cfg.duplicate_ppm,
        reorder_ppm: cfg.reorder_ppm,
        seed: cfg.seed,
        counts,
    };
    if a.stats || a.clear {
        let r = if a.clear { lab.impair_clear(link)? } else { lab.impair_stats(link)? };
        out.print(&line(if a.clear { "cleared" } else { "stats" }, &r.cfg, Some(r)))?;
        return Ok(ExitCode::SUCCESS);
    }
    let cfg = mcblast_common::maps::ImpairConfig {
        every: a.every.unwrap_or(0),
        burst: a.burst.unwrap_or(1),
        loss_ppm: a.loss.unwrap_or(0),
        duplicate_ppm: a.duplicate.unwrap_or(0),
        reorder_ppm: a.reorder.unwrap_or(0),
        _pad: 0,
        seed: a.seed,
    };
    lab.impair(link, cfg)?;
    out.print(&line("attached", &cfg, None))?;
    Ok(ExitCode::SUCCESS)
}

fn exec(prefix: &str, node: &str, argv: &[String]) -> Result<ExitCode> {
    let lab = Lab::open(prefix)?;
    lab.check_node(node)?;
    let mut cmd = lab.exec_cmd(node, argv);
    // Replace this process: stdio, signals and the exit status are the command's own.
    let err = std::os::unix::process::CommandExt::exec(&mut cmd);
    Err(crate::lab::spawn_error(&cmd, err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn spec(args: &[&str]) -> Result<LabSpec> {
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: LabUpArgs,
        }
        let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map_err(|e| anyhow::anyhow!("{e}"))?;
        spec_from_args("x-".into(), &t.a)
    }

    #[test]
    fn no_topology_flag_is_the_flat_lab_unchanged() {
        let s = spec(&[]).unwrap();
        assert_eq!(s, LabSpec::from(LabConfig { prefix: "x-".into(), ..LabConfig::default() }));
        let s = spec(&["--receivers", "3", "--mtu", "1500", "--snooping", "off"]).unwrap();
        assert_eq!((s.base.receivers, s.base.mtu, s.base.snooping, s.topology), (3, 1500, false, None));
        // IGMP knobs apply to the flat lab too
        let s = spec(&["--igmp-version", "2", "--query-interval", "10"]).unwrap();
        assert_eq!((s.igmp.version, s.igmp.query_interval_cs, s.igmp.membership_interval_cs), (2, 1000, 3000));
        assert!(s.topology.is_none());
    }

    #[test]
    fn topology_flags_and_defaults() {
        let s = spec(&["--hosts", "3", "--per-host", "3", "--fabric", "vxlan", "--placement", "same-host"]).unwrap();
        let t = s.topology.unwrap();
        assert_eq!((t.hosts, t.per_host, t.fabric, t.placement), (3, 3, Fabric::Vxlan, Placement::SameHost));
        assert_eq!(s.base.receivers, 9);
        let t = spec(&["--fabric", "bridge"]).unwrap().topology.unwrap();
        assert_eq!((t.hosts, t.per_host, t.placement), (3, 3, Placement::Spread));
        assert!(spec(&["--receivers", "3", "--hosts", "2"]).is_err(), "--receivers is the flat lab's");
        assert!(spec(&["--hosts", "0"]).is_err());
        assert!(spec(&["--hosts", "30", "--per-host", "9"]).unwrap_err().to_string().contains("at most 243"));
        assert!(spec(&["--query-interval", "100", "--membership-interval", "50"]).unwrap_err().to_string().contains("membership"));
        assert!(spec(&["--mtu", "100"]).is_err());
    }

    #[test]
    fn presets_and_overrides() {
        let s = spec(&["--preset", "tgw"]).unwrap();
        let t = s.topology.unwrap();
        assert_eq!((t.fabric, t.hosts, t.per_host), (Fabric::Bridge, 3, 3));
        assert_eq!((s.igmp.version, s.igmp.query_interval_cs, s.igmp.membership_interval_cs), (2, 12_000, 36_100));
        assert_eq!((s.base.mtu, s.base.snooping, s.base.querier), (8500, true, true));
        let s = spec(&["--preset", "ovn", "--querier", "off", "--placement", "same-host"]).unwrap();
        let t = s.topology.unwrap();
        // the real OVN when it is installed here, else the VXLAN approximation
        let want = if crate::lab::ovn::installed() { Fabric::Ovn } else { Fabric::Vxlan };
        assert_eq!((t.fabric, t.placement), (want, Placement::SameHost));
        assert_eq!((s.igmp.query_interval_cs, s.igmp.membership_interval_cs), (15_000, 30_000));
        assert!(!s.base.querier && s.base.snooping);
        // an explicit query interval without membership: derived from it, not the preset's
        let s = spec(&["--preset", "tgw", "--query-interval", "10"]).unwrap();
        assert_eq!((s.igmp.version, s.igmp.membership_interval_cs), (2, 3000));
    }

    /// A lab of 3 hosts of 3 receivers on the OVN fabric.
    fn ovn_spec() -> LabSpec {
        LabSpec {
            base: LabConfig { prefix: "x-".into(), ..Default::default() },
            igmp: IgmpConfig::default(),
            topology: Some(Topology { hosts: 3, per_host: 3, fabric: Fabric::Ovn, placement: Placement::Spread }),
        }
    }

    #[test]
    fn settings_follow_the_spec_and_the_neutron_profile() {
        let s = OvnSettings::from_spec(&ovn_spec());
        assert_eq!((s.snoop, s.querier, s.flood_unregistered, s.idle_timeout_s, s.query_interval_s), (true, true, false, 260, 125));
        let a = OvnArgs { profile: Some(OvnProfileArg::Neutron), ..Default::default() };
        let n = ovn_settings(&ovn_spec(), &a, false, false);
        assert_eq!((n.snoop, n.querier, n.flood_unregistered), (true, false, false));
        // explicit --querier on wins over the profile
        assert!(ovn_settings(&ovn_spec(), &a, false, true).querier);
        let kv = n.other_config();
        assert!(kv.contains(&("mcast_ip4_src".into(), "10.77.0.254".into())), "{kv:?}");
        assert!(kv.contains(&("mcast_flood_unregistered".into(), "false".into())), "{kv:?}");
        assert_eq!(kv.len(), 9);
    }

    #[test]
    fn per_port_options_name_nodes_of_the_lab() {
        let (mcast_flood, mcast_flood_reports) = (vec!["r2".into(), "r2".into()], vec!["sender".into()]);
        let a = OvnArgs { mcast_flood, mcast_flood_reports, ..Default::default() };
        let s = ovn_settings(&ovn_spec(), &a, false, false);
        assert_eq!(s.port_options(), [("r2".to_string(), "mcast_flood"), ("sender".to_string(), "mcast_flood_reports")]);
        assert!(check_ovn_args(&ovn_spec(), &a).is_ok());
        let bad = OvnArgs { mcast_flood_reports: vec!["r10".into()], ..Default::default() };
        let e = check_ovn_args(&ovn_spec(), &bad).unwrap_err().to_string();
        assert!(e.contains("--mcast-flood-reports r10: no such node in this lab (sender, r1..r9)"), "{e}");
        let vx = LabSpec { topology: ovn_spec().topology.map(|t| Topology { fabric: Fabric::Vxlan, ..t }), ..ovn_spec() };
        assert!(check_ovn_args(&vx, &a).unwrap_err().to_string().contains("need --fabric ovn"));
        assert!(check_ovn_args(&vx, &OvnArgs::default()).is_ok());
    }
}
