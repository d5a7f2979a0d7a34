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
