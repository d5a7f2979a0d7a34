//! `mcblast probe` and `mcblast preflight`: the flags → what the checks need.

use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};

use crate::check::preflight::{PreflightPlan, PreflightRole};
use crate::cli::{PreflightArgs, PreflightRoleArg, ProbeArgs};

impl From<PreflightRoleArg> for PreflightRole {
    fn from(r: PreflightRoleArg) -> PreflightRole {
        match r {
            PreflightRoleArg::Send => PreflightRole::Send,
            PreflightRoleArg::Recv => PreflightRole::Recv,
            PreflightRoleArg::Both => PreflightRole::Both,
        }
    }
}

/// Runs `mcblast probe`.
pub fn probe(a: ProbeArgs) -> Result<ExitCode> {
    crate::check::probe::run(a.interface.as_deref(), a.json)
}

/// Runs `mcblast preflight`: the flags resolved (groups, interface, length), then the checks.
pub fn preflight(a: PreflightArgs) -> Result<ExitCode> {
    crate::check::preflight::run(&preflight_plan(&a)?, a.json)
}

/// What preflight checks: the groups checked, the interface named or the route's, the length in range.
fn preflight_plan(a: &PreflightArgs) -> Result<PreflightPlan> {
    crate::mcast::check_groups(&a.groups)?;
    let name = match &a.interface {
        Some(n) => n.clone(),
        None => crate::iface::default_for_group(a.groups[0]).ok_or_else(|| {
            anyhow!(
                "no route for {} and no --interface: name the interface, e.g. -I eth0 (interfaces here: {})",
                a.groups[0],
                crate::iface::names().join(", ")
            )
        })?,
    };
    let iface = crate::iface::lookup(&name)?;
    if !(mcblast_common::wire::HEADER_LEN..=crate::send::plan::MAX_DATAGRAM).contains(&a.length) {
        bail!("-l {} is not a datagram length: use {}..{}", a.length, mcblast_common::wire::HEADER_LEN, crate::send::plan::MAX_DATAGRAM);
    }
    Ok(PreflightPlan {
        iface,
        groups: a.groups.clone(),
        port: a.port,
        length: a.length,
        rate: a.rate,
        role: a.role.into(),
        igmp_version: a.igmp_version,
    })
}
