//! `mcblast recv`: the flags (`cli::RecvArgs`) → the plan ([`RecvPlan`]) → the
//! receiver. The flags that only make sense together, the interface and the
//! kernel counter's capabilities are checked here, before anything is attached.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cli::{CounterModeArg, FormatArg, RecvArgs, SenderClockArg, SinkArg, XdpModeArg};
use crate::iface;
use crate::mcast::check_groups;
use crate::recv::kernel::XdpMode;
use crate::recv::sink::Sink;
use crate::recv::{CounterMode, Format, MAX_SECS, Reader, RecvPlan, SenderClock};
use crate::sys;

impl From<CounterModeArg> for CounterMode {
    fn from(c: CounterModeArg) -> CounterMode {
        match c {
            CounterModeArg::Kernel => CounterMode::Kernel,
            CounterModeArg::Socket => CounterMode::Socket,
            CounterModeArg::Both => CounterMode::Both,
        }
    }
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Mcblast => Format::Mcblast,
            FormatArg::Iperf2 => Format::Iperf2,
        }
    }
}

impl From<SenderClockArg> for SenderClock {
    fn from(c: SenderClockArg) -> SenderClock {
        match c {
            SenderClockArg::Unknown => SenderClock::Unknown,
            SenderClockArg::Synced => SenderClock::Synced,
            SenderClockArg::Shared => SenderClock::Shared,
        }
    }
}

impl From<XdpModeArg> for XdpMode {
    fn from(m: XdpModeArg) -> XdpMode {
        match m {
            XdpModeArg::Auto => XdpMode::Auto,
            XdpModeArg::Native => XdpMode::Native,
            XdpModeArg::Generic => XdpMode::Generic,
            XdpModeArg::Tc => XdpMode::Tc,
        }
    }
}

/// Runs `mcblast recv`: the flags resolved, then the receiver.
pub fn run(a: RecvArgs) -> Result<ExitCode> {
    crate::recv::run(plan(&a)?)
}

/// The flags of `--format iperf2` that only make sense together.
fn check_format(a: &RecvArgs) -> Result<()> {
    let (format, counter, sender_clock) = (Format::from(a.format), CounterMode::from(a.counter), SenderClock::from(a.sender_clock));
    if format == Format::Iperf2 && a.run_id.is_some() {
        bail!("--run-id picks an mcblast run; iperf2 flows are told apart by their source port: drop --run-id");
    }
    if a.iperf2_server && format != Format::Iperf2 {
        bail!("--iperf2-server runs iperf2's server on iperf2 traffic: add --format iperf2");
    }
    if a.iperf2_server && (counter != CounterMode::Kernel || a.sink == SinkArg::On) {
        bail!("--iperf2-server makes iperf2 the socket reader beside the kernel counter: drop --counter and --sink");
    }
    if format == Format::Mcblast && sender_clock != SenderClock::Unknown {
        bail!("--sender-clock is for --format iperf2: mcblast datagrams carry their sender's clock themselves");
    }
    Ok(())
}

/// `--sink`: as asked, or, with `auto` (the default) for the kernel counter alone, what this host allows.
fn sink(a: &RecvArgs, counter: CounterMode, iface: &iface::Iface) -> Result<Sink> {
    Ok(match a.sink {
        SinkArg::On if counter != CounterMode::Kernel => bail!(
            "--sink drops mcblast datagrams in the kernel counter, so no socket would see them: use --sink with --counter kernel"
        ),
        SinkArg::On => Sink::asked(true),
        SinkArg::Auto if counter == CounterMode::Kernel && !a.iperf2_server => Sink::auto(iface, a.common.port),
        SinkArg::Auto | SinkArg::Off => Sink::asked(false),
    })
}

/// Resolves the flags against this machine (interface, capabilities), or says what is wrong.
pub fn plan(a: &RecvArgs) -> Result<RecvPlan> {
    check_groups(&a.common.groups)?;
    check_format(a)?;
    let name = match &a.common.interface {
        Some(n) => n.clone(),
        None => iface::default_for_group(a.common.groups[0]).with_context(|| {
            format!(
                "no route for {} and no --interface: name the interface to join on, e.g. --interface eth0 (interfaces here: {})",
                a.common.groups[0],
                iface::names().join(", ")
            )
        })?,
    };
    let iface = iface::lookup(&name)?;
    if a.source.is_some() && iface.addr.is_none() {
        bail!("interface {} has no IPv4 address: a source-specific join (--source) needs one", iface.name);
    }
    let counter = CounterMode::from(a.counter);
    let (kernel, socket) = match counter {
        CounterMode::Kernel => (true, false),
        CounterMode::Socket => (false, true),
        CounterMode::Both => (true, true),
    };
    let sink = sink(a, counter, &iface)?;
    if kernel && !(sys::has_capability(39) || sys::has_capability(21)) || kernel && !sys::has_capability(12) {
        bail!(
            "the kernel counter needs CAP_BPF and CAP_NET_ADMIN to load and attach its XDP program: run as root, or use --counter socket"
        );
    }
    let secs = |s: f64, what: &str| -> Result<Duration> {
        if (0.0..=MAX_SECS).contains(&s) {
            Ok(Duration::from_secs_f64(s))
        } else {
            bail!("{what} must be a number of seconds from 0 to {MAX_SECS:e}, not {s}")
        }
    };
    if a.leave_window > 0.0 && !kernel {
        bail!("--leave-window counts what arrives after the leave with the kernel counter: use --counter kernel or both");
    }
    secs(a.leave_window, "--leave-window")?;
    if a.run_id == Some(0) {
        bail!("--run-id 0 is not a run id: run ids are non-zero (the sender prints its run id)");
    }
    if let Some(p) = a.max_loss
        && !(0.0..=100.0).contains(&p)
    {
        bail!("--max-loss is a percentage from 0 to 100, not {p}");
    }
    Ok(RecvPlan {
        groups: a.common.groups.clone(),
        port: a.common.port,
        source: a.source,
        kernel,
        socket,
        sink,
        interval: Some(secs(a.common.interval, "--interval")?).filter(|d| !d.is_zero()),
        time: a.time.map(|t| secs(t, "--time")).transpose()?,
        grace: secs(a.grace, "--grace")?,
        reader: Reader::new(a.format.into(), a.sender_clock.into(), a.run_id, a.common.port),
        iperf2_server: a.iperf2_server,
        iperf2_args: a.iperf2_arg.clone(),
        xdp_mode: a.xdp_mode.into(),
        rcvbuf: a.rcvbuf,
        read_delay: Duration::from_micros(a.read_delay_us),
        leave_window: a.leave_window,
        expect_flows: a.expect_flows,
        max_loss: a.max_loss,
        verbose: a.verbose,
        json: a.common.json,
        prometheus: a.common.prometheus,
        stop_on_stdin_eof: a.common.stop_on_stdin_eof,
        iface,
    })
}

