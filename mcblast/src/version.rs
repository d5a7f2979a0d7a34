//! The build's version string, low in the tree so that any module may name it.

/// What `mcblast --version` prints after `mcblast `: the crate version and
/// the git commit it was built from, when known (`0.1.0 (3f2a9c1d04be)`).
/// `mcblast run` compares it with every remote host's.
pub const VERSION: &str = env!("MCBLAST_VERSION");
