//! What the benchmark binaries share.

use std::process::Child;

/// The median of `v` (the upper one of an even count); 0 when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Receiver processes by node, killed when dropped (also on error).
pub struct Receivers(pub Vec<(String, Child)>);

impl Drop for Receivers {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Receivers {
    /// Waits for every receiver to stop and sums its kernel counter's
    /// flows: (received, lost).
    pub fn kernel_totals(mut self) -> anyhow::Result<(u64, u64)> {
        use anyhow::Context as _;
        let (mut received, mut lost) = (0, 0);
        for (node, mut child) in std::mem::take(&mut self.0) {
            let mut text = String::new();
            std::io::Read::read_to_string(child.stdout.as_mut().expect("stdout"), &mut text)?;
            child.wait()?;
            let s = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["type"] == "summary" && v["counter"] == "kernel")
                .with_context(|| format!("no kernel summary from {node}"))?;
            for f in s["flows"].as_array().into_iter().flatten() {
                received += f["received"].as_u64().unwrap_or(0);
                lost += f["lost"].as_u64().unwrap_or(0);
            }
        }
        Ok((received, lost))
    }
}
