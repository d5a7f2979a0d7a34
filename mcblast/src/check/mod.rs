//! Checking a machine before a test: `mcblast probe` (what it supports) and `mcblast preflight` (what on it
//! would spoil a test, also run by `mcblast run` on every lab node before each case).

pub mod preflight;
pub mod probe;
