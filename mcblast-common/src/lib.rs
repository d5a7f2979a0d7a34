//! Types shared by the mcblast eBPF programs (kernel side) and the mcblast
//! binary (user side): the datagram header on the wire, the keys and values
//! of the kernel counter's maps, and the sequence tracker.
//!
//! Everything here is `no_std`, allocation-free, and uses only bounded loops,
//! so the same code runs inside the eBPF verifier and in userspace.
#![no_std]
#![deny(unsafe_code)]

pub mod hist;
pub mod iperf2;
pub mod maps;
pub mod tracker;
pub mod wire;

pub use maps::{Config, FlowKey, GlobalCounter};
pub use tracker::FlowState;
pub use wire::{Header, Kind, Packet, WireError};
