//! `mcblast send`: the flags (`cli::SendArgs`) → the plan ([`SendPlan`]) → the
//! run. Everything a user can get wrong is found here, before a socket is
//! opened, and reported as one line that says what to do.

use std::process::ExitCode;

use anyhow::{Result, bail};
use mcblast_common::wire::HEADER_LEN;

use crate::cli::{Common, EngineArg, SendArgs};
use crate::iface::Iface;
use crate::send::Engine;
use crate::send::plan::{
    DEFAULT_SECONDS, FlowPlan, IP_UDP_OVERHEAD, IfaceSource, MAX_BATCH, MAX_DATAGRAM, MAX_FLOWS, MAX_PPS, MAX_SECONDS,
    MIN_PPS, Machine, SendPlan, System, WorkerPlan, cpu_of, fmt_cpus, group_of, pps_for_bps, worker_of, worker_pps,
};
use crate::send::support;

impl From<EngineArg> for Engine {
    fn from(e: EngineArg) -> Engine {
        match e {
            EngineArg::Socket => Engine::Socket,
            EngineArg::Mmsg => Engine::Mmsg,
            EngineArg::Gso => Engine::Gso,
            EngineArg::Uring => Engine::Uring,
            EngineArg::Xdp => Engine::Xdp,
            EngineArg::Auto => Engine::Auto,
        }
    }
}

/// Runs `mcblast send`: the flags resolved against this machine, then the run.
pub fn run(a: SendArgs) -> Result<ExitCode> {
    crate::send::run(resolve(&a, &System)?)
}

/// The plan of `mcblast send ARGS...` on this machine (for the send domain's own tests).
#[cfg(test)]
pub(crate) fn test_plan(argv: &[&str]) -> SendPlan {
    use clap::Parser;
    let v: Vec<&str> = ["mcblast", "send"].iter().chain(argv).copied().collect();
    let crate::cli::Command::Send(a) = crate::cli::Cli::try_parse_from(v).unwrap().command else { unreachable!() };
    resolve(&a, &System).unwrap()
}

/// A number as a user would write it: `2e10` rather than `20000000000`.
fn num(v: f64) -> String {
    if v != 0.0 && !(1e-3..1e6).contains(&v.abs()) { format!("{v:e}") } else { format!("{v}") }
}

/// The engine to run: the one named, if its probe passes (else one line
/// saying which probe failed and what to use instead), or what `auto` picks.
fn resolve_engine(
    a: &SendArgs,
    host: &dyn Machine,
    iface: Option<&str>,
    mtu: Option<u32>,
) -> Result<(Engine, Option<String>)> {
    let engine = Engine::from(a.engine);
    if a.zerocopy && !matches!(engine, Engine::Uring | Engine::Auto) {
        bail!("--zerocopy applies to the uring engine only: use --engine uring --zerocopy, or leave out --zerocopy");
    }
    if matches!(engine, Engine::Socket | Engine::Mmsg) {
        return Ok((engine, None));
    }
    let support = host.engines(iface);
    if engine == Engine::Auto {
        if a.zerocopy {
            // Zero-copy is an io_uring feature: auto means "uring if it can".
            return match support::check(Engine::Uring, &support, a.length, mtu, true) {
                Ok(how) => Ok((Engine::Uring, Some(format!("--zerocopy needs io_uring ({how})")))),
                Err(why) => bail!("--zerocopy: {why}; leave out --zerocopy"),
            };
        }
        let (e, why) = support::choose(&support, a.length, mtu, false);
        return Ok((e, Some(why)));
    }
    if let Err(why) = support::check(engine, &support, a.length, mtu, a.zerocopy) {
        let instead = if engine == Engine::Uring && a.zerocopy { "--engine uring without --zerocopy" } else { "--engine mmsg" };
        bail!("--engine {}{}: {why}; use {instead} (or --engine auto)", engine.name(), if a.zerocopy { " --zerocopy" } else { "" });
    }
    Ok((engine, None))
}

/// Checks the groups and the report interval (`-g`, `-i`).
fn check_groups_and_interval(c: &Common) -> Result<()> {
    crate::mcast::check_groups(&c.groups)?;
    if c.groups.is_empty() {
        bail!("no multicast group: give one with -g, e.g. -g 239.0.0.1");
    }
    if !(c.interval.is_finite() && c.interval >= 0.0) {
        bail!("-i {} is not an interval: give seconds between reports, or 0 for none", c.interval);
    }
    if c.interval > MAX_SECONDS {
        bail!(
            "-i {} is too long: -i must be at most {} seconds (about 115 days), or 0 for no interval reports",
            num(c.interval),
            num(MAX_SECONDS)
        );
    }
    Ok(())
}

/// Checks `--run-id` and the datagram length `-l` against the header and the largest UDP payload.
fn check_run_id_and_length(a: &SendArgs) -> Result<()> {
    if a.run_id == Some(0) {
        bail!(
            "--run-id 0: run ids are non-zero (0 means \"any run\" to a receiver); give 1 or more, or leave it out for a random one"
        );
    }
    if a.length < HEADER_LEN {
        bail!(
            "datagram length {} is too short: the mcblast header alone is {HEADER_LEN} bytes; use -l {HEADER_LEN} or more",
            a.length
        );
    }
    if a.length > MAX_DATAGRAM {
        bail!(
            "datagram length {} is too long: the largest UDP payload over IPv4 is {MAX_DATAGRAM} bytes; use -l {MAX_DATAGRAM} or less",
            a.length
        );
    }
    Ok(())
}

/// The outgoing interface (`--interface`, else the route to the first group; None: neither), its MTU checked.
fn resolve_iface(a: &SendArgs, host: &dyn Machine) -> Result<Option<(Iface, IfaceSource)>> {
    let c = &a.common;
    let iface = match &c.interface {
        Some(name) => Some((host.lookup(name)?, IfaceSource::Flag)),
        None => host.route_iface(c.groups[0]).and_then(|n| host.lookup(&n).ok()).map(|i| (i, IfaceSource::Route)),
    };
    if let Some((ifc, _)) = &iface {
        let packet = a.length + IP_UDP_OVERHEAD;
        if packet > ifc.mtu as usize && !a.allow_fragments {
            bail!(
                "-l {} makes {packet}-byte IP packets, more than the {}-byte MTU of {}: they would fragment, \
                 and AWS Transit Gateway drops fragmented multicast; use -l {} or less, or --allow-fragments to send anyway",
                a.length,
                ifc.mtu,
                ifc.name,
                (ifc.mtu as usize).saturating_sub(IP_UDP_OVERHEAD).max(HEADER_LEN)
            );
        }
    }
    Ok(iface)
}

/// Checks `--flows` and `--threads` (each thread sends whole flows).
fn check_flows_and_threads(a: &SendArgs) -> Result<()> {
    if a.flows == 0 {
        bail!("--flows 0 sends nothing: use --flows 1 or more");
    }
    if a.flows > MAX_FLOWS {
        bail!("--flows {} is too many: each flow has its own socket and source port, so use at most {MAX_FLOWS}", a.flows);
    }
    if a.threads == 0 {
        bail!("--threads 0 leaves no one to send: use --threads 1 or more");
    }
    if a.threads > a.flows {
        bail!(
            "--threads {} is more than --flows {}: each thread sends whole flows, so use --flows {} or more, or fewer threads",
            a.threads,
            a.flows,
            a.threads
        );
    }
    Ok(())
}

/// The CPUs of `--cpus` (empty without it), each one this process may use.
fn resolve_cpus(a: &SendArgs, host: &dyn Machine) -> Result<Vec<usize>> {
    let Some(list) = &a.cpus else { return Ok(Vec::new()) };
    let have = host.cpus();
    if let Some(bad) = list.iter().find(|c| !have.contains(c)) {
        bail!("CPU {bad} in --cpus is not available: this machine lets mcblast use CPUs {}", fmt_cpus(&have));
    }
    Ok(list.clone())
}

/// The run's duration in seconds (`-t`; the default without `-t` and `-n`; None: `-n` alone), `-t` and `-n` checked.
fn resolve_duration(a: &SendArgs) -> Result<Option<f64>> {
    if let Some(t) = a.time
        && !(t.is_finite() && t > 0.0)
    {
        bail!("-t {t} is not a duration: give a positive number of seconds");
    }
    if let Some(t) = a.time
        && t > MAX_SECONDS
    {
        bail!("-t {} is too long: -t must be at most {} seconds (about 115 days)", num(t), num(MAX_SECONDS));
    }
    if a.count == Some(0) {
        bail!("-n 0 sends nothing: give the datagrams per flow, e.g. -n 1000");
    }
    Ok(match (a.time, a.count) {
        (Some(t), _) => Some(t),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_SECONDS),
    })
}

/// The datagrams/s of all flows together (`--pps`, or `-b` over the length; None: flat out), within what can be paced.
fn resolve_rate(a: &SendArgs) -> Result<Option<f64>> {
    let pps = match (a.pps, a.rate) {
        (Some(p), _) => Some(p),
        (None, Some(b)) => Some(pps_for_bps(b, a.length)),
        (None, None) => None,
    };
    if let Some(p) = pps {
        // Named as the user gave it: --pps, or -b with the length it is divided by.
        let given = match a.pps {
            Some(_) => format!("--pps {}", num(p)),
            None => format!("-b {} with -l {} is {} datagrams/s, which", num(a.rate.unwrap_or(0.0)), a.length, num(p)),
        };
        let flag = if a.pps.is_some() { "--pps" } else { "-b" };
        if p > MAX_PPS {
            bail!(
                "{given} is more than mcblast can pace ({} datagrams/s at most); leave out {flag} to send as fast as possible",
                num(MAX_PPS)
            );
        }
        if p < MIN_PPS {
            bail!("{given} is less than one datagram per {} s: give a higher rate", num(1.0 / MIN_PPS));
        }
    }
    Ok(pps)
}

/// The flows (group and worker of each) and the workers (CPU, flows and rate share of each).
fn resolve_flows(a: &SendArgs, cpus: &[usize], pps: Option<f64>) -> (Vec<FlowPlan>, Vec<WorkerPlan>) {
    let groups = &a.common.groups;
    let threads = a.threads as usize;
    let flows: Vec<FlowPlan> = (0..a.flows)
        .map(|id| FlowPlan { id, group: groups[group_of(id, groups.len())], worker: worker_of(id, threads) })
        .collect();
    let mut per_worker: Vec<Vec<u32>> = vec![Vec::new(); threads];
    for f in &flows {
        per_worker[f.worker].push(f.id);
    }
    let workers = per_worker
        .into_iter()
        .enumerate()
        .map(|(w, mine)| WorkerPlan {
            index: w,
            cpu: cpu_of(w, cpus),
            pps: pps.map(|p| worker_pps(p, mine.len(), flows.len())),
            flows: mine,
        })
        .collect();
    (flows, workers)
}

/// Resolves the flags against the machine, or says what is wrong.
pub fn resolve(a: &SendArgs, host: &dyn Machine) -> Result<SendPlan> {
    let c = &a.common;
    check_groups_and_interval(c)?;
    check_run_id_and_length(a)?;
    let iface = resolve_iface(a, host)?;
    check_flows_and_threads(a)?;
    let cpus = resolve_cpus(a, host)?;
    if a.batch == 0 || a.batch > MAX_BATCH {
        bail!("--batch {} is out of range: use 1..{MAX_BATCH} (the kernel's limit for one sendmmsg)", a.batch);
    }
    let duration_s = resolve_duration(a)?;
    let pps = resolve_rate(a)?;
    let mtu = iface.as_ref().map(|(i, _)| i.mtu);
    let (engine, engine_reason) = resolve_engine(a, host, iface.as_ref().map(|(i, _)| i.name.as_str()), mtu)?;
    let (flows, workers) = resolve_flows(a, &cpus, pps);
    Ok(SendPlan {
        engine,
        engine_reason,
        zerocopy: a.zerocopy,
        groups: c.groups.clone(),
        port: c.port,
        iface,
        ttl: a.ttl,
        loopback: a.loopback,
        length: a.length,
        allow_fragments: a.allow_fragments,
        pps,
        bps: if a.pps.is_some() { None } else { a.rate },
        duration_s,
        count: a.count,
        batch: a.batch,
        run_id: a.run_id,
        tai_offset: host.tai_offset_s().clamp(0, 255) as u8,
        interval_s: c.interval,
        json: c.json,
        prometheus: c.prometheus,
        stop_on_stdin_eof: c.stop_on_stdin_eof,
        flows,
        workers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli;
    use crate::send::support;
    use clap::Parser;
    use std::net::Ipv4Addr;

    struct Fake {
        mtu: u32,
        route: Option<&'static str>,
        tai: i32,
    }
    impl Machine for Fake {
        fn lookup(&self, name: &str) -> Result<Iface> {
            match name {
                "eth0" | "lo" => {
                    Ok(Iface { name: name.into(), index: 2, mtu: self.mtu, addr: Some(Ipv4Addr::new(10, 0, 0, 1)) })
                }
                _ => anyhow::bail!("interface {name} not found; interfaces here: eth0, lo"),
            }
        }
        fn route_iface(&self, _g: Ipv4Addr) -> Option<String> {
            self.route.map(str::to_string)
        }
        fn cpus(&self) -> Vec<usize> {
            vec![0, 1, 2, 3]
        }
        fn tai_offset_s(&self) -> i32 {
            self.tai
        }
        fn engines(&self, _iface: Option<&str>) -> support::EngineSupport {
            support::EngineSupport::all()
        }
    }
    const HOST: Fake = Fake { mtu: 9001, route: Some("eth0"), tai: 37 };

    fn args(extra: &[&str]) -> SendArgs {
        let mut v = vec!["mcblast", "send"];
        v.extend_from_slice(extra);
        match cli::Cli::try_parse_from(v).unwrap().command {
            cli::Command::Send(a) => a,
            _ => unreachable!(),
        }
    }
    fn plan(extra: &[&str]) -> Result<SendPlan> {
        resolve(&args(extra), &HOST)
    }
    fn err(extra: &[&str]) -> String {
        let e = format!("{:#}", plan(extra).unwrap_err());
        assert!(!e.contains('\n'), "one line: {e}");
        e
    }

    #[test]
    fn defaults() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.groups, vec![Ipv4Addr::new(239, 0, 0, 1)]);
        assert_eq!(p.length, 8192);
        assert_eq!(p.duration_s, Some(10.0));
        assert_eq!(p.count, None);
        assert_eq!(p.pps, None);
        assert_eq!(p.batch, 32);
        let (i, src) = p.iface.as_ref().unwrap();
        assert_eq!((i.name.as_str(), *src), ("eth0", IfaceSource::Route));
        assert_eq!(p.workers.len(), 1);
        assert_eq!(p.workers[0].flows, vec![0]);
        assert_eq!(p.workers[0].cpu, None);
    }

    #[test]
    fn count_alone_means_no_time_limit_and_both_apply_together() {
        let p = plan(&["-n", "100"]).unwrap();
        assert_eq!((p.count, p.duration_s), (Some(100), None));
        let p = plan(&["-n", "100", "-t", "2"]).unwrap();
        assert_eq!((p.count, p.duration_s), (Some(100), Some(2.0)));
    }

    #[test]
    fn no_route_lets_the_kernel_choose_and_skips_the_mtu_check() {
        let p = resolve(&args(&["-l", "9000"]), &Fake { mtu: 1500, route: None, tai: 0 }).unwrap();
        assert!(p.iface.is_none());
        assert_eq!(p.iface_name(), "default");
    }

    #[test]
    fn group_must_be_multicast() {
        let e = err(&["-g", "10.1.1.1"]);
        assert!(e.contains("10.1.1.1 is not a multicast group"), "{e}");
    }

    #[test]
    fn unknown_interface_lists_real_ones() {
        let e = err(&["-I", "eth9"]);
        assert!(e.contains("interface eth9 not found; interfaces here: eth0, lo"), "{e}");
        // And on the real machine.
        let e = format!("{:#}", resolve(&args(&["-I", "mcb-nope0"]), &System).unwrap_err());
        assert!(e.contains("mcb-nope0 not found") && e.contains("lo"), "{e}");
    }

    #[test]
    fn length_bounds_explain_the_header_and_udp_limit() {
        let e = err(&["-l", "16"]);
        assert!(e.contains("too short") && e.contains("header alone is 40 bytes") && e.contains("-l 40"), "{e}");
        let e = err(&["-l", "65508", "--allow-fragments"]);
        assert!(e.contains("too long") && e.contains("65507"), "{e}");
        assert!(plan(&["-l", "40"]).is_ok());
        assert!(plan(&["-l", "65507", "--allow-fragments"]).is_ok());
    }

    #[test]
    fn over_mtu_says_fragments_and_tgw_and_the_way_out() {
        let host = Fake { mtu: 1500, route: Some("eth0"), tai: 0 };
        let e = format!("{:#}", resolve(&args(&["-l", "1473"]), &host).unwrap_err());
        assert!(e.contains("1501-byte IP packets") && e.contains("1500-byte MTU of eth0"), "{e}");
        assert!(e.contains("fragment") && e.contains("Transit Gateway"), "{e}");
        assert!(e.contains("-l 1472 or less") && e.contains("--allow-fragments"), "{e}");
        assert!(resolve(&args(&["-l", "1472"]), &host).is_ok());
        let p = resolve(&args(&["-l", "8192", "--allow-fragments"]), &host).unwrap();
        assert!(p.allow_fragments);
        // Explicit interface too.
        let e = format!("{:#}", resolve(&args(&["-I", "lo", "-l", "2000"]), &host).unwrap_err());
        assert!(e.contains("MTU of lo"), "{e}");
    }

    #[test]
    fn zero_threads_flows_count_batch_time() {
        assert!(err(&["--threads", "0"]).contains("--threads 0"));
        assert!(err(&["--flows", "0"]).contains("--flows 0"));
        let e = err(&["--threads", "3", "--flows", "2"]);
        assert!(e.contains("--threads 3 is more than --flows 2"), "{e}");
        assert!(err(&["-n", "0"]).contains("-n 0 sends nothing"));
        assert!(err(&["--batch", "0"]).contains("--batch 0 is out of range"));
        assert!(err(&["--batch", "1025"]).contains("1..1024"));
        assert!(err(&["-t", "0"]).contains("-t 0 is not a duration"));
        assert!(err(&["--interval=-1"]).contains("-i -1 is not an interval"));
    }

    #[test]
    fn huge_durations_and_intervals_are_refused_up_front() {
        let e = err(&["-t", "2e10"]);
        assert!(e.contains("-t 2e10 is too long") && e.contains("at most 1e7 seconds"), "{e}");
        let e = err(&["-i", "2e10"]);
        assert!(e.contains("-i 2e10 is too long") && e.contains("at most 1e7 seconds"), "{e}");
        assert_eq!(plan(&["-t", "1e7", "-i", "1e7"]).unwrap().duration_s, Some(1e7));
    }

    #[test]
    fn rates_must_be_paceable() {
        let e = err(&["--pps", "2G"]);
        assert!(e.contains("--pps 2e9 is more than mcblast can pace") && e.contains("leave out --pps"), "{e}");
        let e = err(&["-b", "1e300", "-l", "1000"]);
        assert!(e.contains("-b 1e300 with -l 1000 is 1.25e296 datagrams/s"), "{e}");
        assert!(e.contains("more than mcblast can pace") && e.contains("leave out -b"), "{e}");
        let e = err(&["--pps", "1e-9"]);
        assert!(e.contains("--pps 1e-9 is less than one datagram per 1000 s"), "{e}");
        let e = err(&["-b", "1", "-l", "1000"]);
        assert!(e.contains("-b 1 with -l 1000 is 1.25e-4 datagrams/s, which is less than one datagram per 1000 s"), "{e}");
        assert_eq!(plan(&["--pps", "1G"]).unwrap().pps, Some(1e9));
        assert_eq!(plan(&["--pps", "0.001"]).unwrap().pps, Some(1e-3));
    }

    #[test]
    fn tai_offset_is_read_once_and_fits_eight_bits() {
        assert_eq!(plan(&[]).unwrap().tai_offset, 37);
        for (tai, want) in [(0, 0), (-5, 0), (300, 255)] {
            let p = resolve(&args(&[]), &Fake { tai, ..HOST }).unwrap();
            assert_eq!(p.tai_offset, want, "tai {tai}");
        }
    }

    #[test]
    fn run_id_zero_is_refused() {
        let e = err(&["--run-id", "0"]);
        assert!(e.contains("run ids are non-zero"), "{e}");
        assert_eq!(plan(&["--run-id", "1"]).unwrap().run_id, Some(1));
        assert_eq!(plan(&[]).unwrap().run_id, None);
    }

    #[test]
    fn flows_are_capped_and_many_threads_plan_quickly() {
        let e = err(&["--flows", "65536"]);
        assert!(e.contains("--flows 65536 is too many") && e.contains("at most 65535"), "{e}");
        // Every flow on its own worker: built in one pass over the flows.
        let p = plan(&["--flows", "65535", "--threads", "65535"]).unwrap();
        assert_eq!(p.workers.len(), 65_535);
        assert!(p.workers.iter().enumerate().all(|(i, w)| w.flows == vec![i as u32]));
    }

    #[test]
    fn cpus_must_exist() {
        let e = err(&["--cpus", "1,7", "--threads", "2", "--flows", "2"]);
        assert!(e.contains("CPU 7 in --cpus is not available") && e.contains("CPUs 0-3"), "{e}");
        let p = plan(&["--cpus", "2-3", "--threads", "3", "--flows", "3"]).unwrap();
        let cpus: Vec<_> = p.workers.iter().map(|w| w.cpu).collect();
        assert_eq!(cpus, vec![Some(2), Some(3), Some(2)]);
    }

    #[test]
    fn flows_map_to_groups_and_threads_round_robin() {
        let p = plan(&["-g", "239.1.1.1", "-g", "239.1.1.2", "--flows", "5", "--threads", "2"]).unwrap();
        let g: Vec<_> = p.flows.iter().map(|f| f.group.octets()[3]).collect();
        assert_eq!(g, vec![1, 2, 1, 2, 1]);
        let w: Vec<_> = p.flows.iter().map(|f| f.worker).collect();
        assert_eq!(w, vec![0, 1, 0, 1, 0]);
        assert_eq!(p.workers[0].flows, vec![0, 2, 4]);
        assert_eq!(p.workers[1].flows, vec![1, 3]);
        assert_eq!((group_of(7, 3), worker_of(7, 4)), (1, 3));
    }

    #[test]
    fn rate_splits_per_flow_and_bits_count_udp_payload() {
        let p = plan(&["-b", "100M", "-l", "1250", "--flows", "5", "--threads", "2"]).unwrap();
        assert_eq!(p.pps, Some(10_000.0));
        assert_eq!(p.bps, Some(100e6));
        let w: Vec<_> = p.workers.iter().map(|w| w.pps.unwrap()).collect();
        assert_eq!(w, vec![6_000.0, 4_000.0]);
        let p = plan(&["--pps", "20k", "--flows", "3"]).unwrap();
        assert_eq!(p.pps, Some(20_000.0));
        assert_eq!(p.workers[0].pps, Some(20_000.0));
        assert!(plan(&[]).unwrap().workers[0].pps.is_none());
    }

    /// HOST, but with the given engine probes.
    struct Probed(support::EngineSupport);
    impl Machine for Probed {
        fn lookup(&self, name: &str) -> Result<Iface> {
            HOST.lookup(name)
        }
        fn route_iface(&self, g: Ipv4Addr) -> Option<String> {
            HOST.route_iface(g)
        }
        fn cpus(&self) -> Vec<usize> {
            HOST.cpus()
        }
        fn tai_offset_s(&self) -> i32 {
            HOST.tai_offset_s()
        }
        fn engines(&self, _iface: Option<&str>) -> support::EngineSupport {
            self.0.clone()
        }
    }

    #[test]
    fn auto_is_the_default_and_resolved_with_a_reason() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.engine, support::PREFERENCE[0]);
        assert!(p.engine_reason.as_deref().unwrap().contains("fastest supported"), "{:?}", p.engine_reason);
        let p = plan(&["--engine", "mmsg"]).unwrap();
        assert_eq!((p.engine, p.engine_reason), (Engine::Mmsg, None));
    }

    #[test]
    fn an_unsupported_engine_names_the_failed_probe_and_the_way_out() {
        let no = support::EngineSupport {
            gso: Err("setsockopt(UDP_SEGMENT) failed: Protocol not available".into()),
            uring: Err("io_uring_setup failed: Operation not permitted".into()),
            uring_zc: Err("io_uring_setup failed: Operation not permitted".into()),
        };
        let host = Probed(no);
        let e = |extra: &[&str]| {
            let e = format!("{:#}", resolve(&args(extra), &host).unwrap_err());
            assert!(!e.contains('\n'), "{e}");
            e
        };
        let g = e(&["--engine", "gso"]);
        assert!(g.contains("--engine gso: setsockopt(UDP_SEGMENT) failed") && g.contains("use --engine mmsg"), "{g}");
        let u = e(&["--engine", "uring"]);
        assert!(u.contains("--engine uring: io_uring_setup failed") && u.contains("use --engine mmsg"), "{u}");
        // auto falls through to mmsg and says why.
        let p = resolve(&args(&[]), &host).unwrap();
        assert_eq!(p.engine, Engine::Mmsg);
        let why = p.engine_reason.unwrap();
        assert!(why.contains("skipped gso: setsockopt(UDP_SEGMENT) failed"), "{why}");
        // Zero-copy: only for uring, and only with SEND_ZC.
        let z = e(&["--engine", "uring", "--zerocopy"]);
        assert!(z.contains("--engine uring --zerocopy: io_uring_setup failed"), "{z}");
        let z = err(&["--engine", "mmsg", "--zerocopy"]);
        assert!(z.contains("--zerocopy applies to the uring engine only"), "{z}");
        let p = plan(&["--zerocopy"]).unwrap();
        assert_eq!((p.engine, p.zerocopy), (Engine::Uring, true));
        // GSO cannot fragment.
        let host = Fake { mtu: 1500, ..HOST };
        let e = format!("{:#}", resolve(&args(&["--engine", "gso", "-l", "8192", "--allow-fragments"]), &host).unwrap_err());
        assert!(e.contains("must fit the 1500-byte MTU"), "{e}");
        let p = resolve(&args(&["-l", "8192", "--allow-fragments"]), &host).unwrap();
        assert_ne!(p.engine, Engine::Gso);
    }
}
