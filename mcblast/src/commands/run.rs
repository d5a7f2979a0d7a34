//! `mcblast run` and its hidden reaper: the flags → the run's own arguments.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{ReaperArgs, RunArgs};

/// Runs `mcblast run`; `after_run` gets the results directory once a case has finished.
pub fn run(a: RunArgs, after_run: impl FnOnce(&std::path::Path)) -> Result<ExitCode> {
    crate::run::run(&a.plan, a.quick.then_some("quick"), a.out, a.deploy, after_run)
}

/// Runs `mcblast run-reaper`.
pub fn reaper(a: ReaperArgs) -> Result<ExitCode> {
    crate::run::reaper::serve(a.lab_prefix.as_deref(), a.parent)
}
