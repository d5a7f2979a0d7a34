//! Empty on purpose: the programs are in the `mcblast` binary target
//! (`src/main.rs`), built for BPF by `mcblast/build.rs`. This library target
//! only lets the host build list this crate as a build-dependency.
#![no_std]
