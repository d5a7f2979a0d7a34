//! placeholder until the recv branch lands
use std::process::ExitCode;
pub fn run(_a: impl std::fmt::Debug) -> anyhow::Result<ExitCode> { anyhow::bail!("recv: not built yet") }
