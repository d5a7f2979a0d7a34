//! `mcblast lab up|status|exec|down`.

use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{Lab, LabConfig, SWITCH, down_counted, prefix_from_env, require_root};
use crate::cli::{LabCommand, LabUpArgs, OnOff};

/// Runs a lab command. The prefix comes from `$MCBLAST_LAB_PREFIX` (default `mcb-`).
pub fn run(cmd: LabCommand) -> Result<ExitCode> {
    let prefix = prefix_from_env();
    match cmd {
        LabCommand::Up(a) => up(prefix, a),
        LabCommand::Status => {
            let lab = Lab::open(&prefix)?;
            print!("{}", lab.status()?.render());
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Exec { node, cmd } => exec(&prefix, &node, &cmd),
        LabCommand::Down => {
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

fn up(prefix: String, a: LabUpArgs) -> Result<ExitCode> {
    let cfg = LabConfig {
        prefix,
        receivers: a.receivers,
        mtu: a.mtu,
        snooping: a.snooping == OnOff::On,
        querier: a.querier == OnOff::On,
    };
    cfg.validate()?;
    require_root()?;
    // Ctrl-C while building: stop, remove the half-built lab, exit.
    crate::sys::install_stop_signals().context("installing signal handlers")?;
    let lab = Lab::up(&cfg)?.keep();
    let on = |b: bool| if b { "on" } else { "off" };
    let last = cfg.receivers;
    println!(
        "lab {p} is up: sender {s}, r1..r{last} {r1}..{rn} on bridge br0 in {p}{SWITCH} \
         (mtu {m}, IGMP snooping {sn}, querier {q}, IGMPv3)",
        p = cfg.prefix,
        s = lab.addr("sender"),
        r1 = lab.addr("r1"),
        rn = lab.addr(&format!("r{last}")),
        m = cfg.mtu,
        sn = on(cfg.snooping),
        q = on(cfg.querier),
    );
    println!("  try: mcblast lab exec r1 -- mcblast recv    |    mcblast lab status    |    mcblast lab down");
    Ok(ExitCode::SUCCESS)
}

fn exec(prefix: &str, node: &str, argv: &[String]) -> Result<ExitCode> {
    let lab = Lab::open(prefix)?;
    lab.check_node(node)?;
    let mut cmd = lab.exec_cmd(node, argv);
    // Replace this process: stdio, signals and the exit status are the command's own.
    let err = std::os::unix::process::CommandExt::exec(&mut cmd);
    Err(super::spawn_error(&cmd, err))
}
