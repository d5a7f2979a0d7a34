//! placeholder until the send branch lands
use std::process::ExitCode;
pub fn run(_a: impl std::fmt::Debug) -> anyhow::Result<ExitCode> { anyhow::bail!("send: not built yet") }
