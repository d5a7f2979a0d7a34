//! mcblast: multicast saturation tester.
//!
//! * [`app`] dispatches [`cli`]'s commands (the flags) to [`commands`], which
//!   resolve them into each domain's plan;
//! * [`send`]: the sender and its engines;
//! * [`recv`]: the receiver: the eBPF kernel counter ([`recv::kernel`]) and the
//!   socket baseline (recvmmsg) feeding the same tracker;
//! * [`lab`]: the network-namespace lab;
//! * [`output`]: the human and JSON Lines output contract.
//!
//! Unsafe code lives only in [`sys`], where the OS is called.
#![deny(unsafe_code)]

pub mod app;
pub mod check;
pub mod cli;
pub mod commands;
pub mod clock;
pub mod ebpf;
pub mod iface;
pub mod mcast;
pub mod output;
pub mod prom;

#[allow(unsafe_code)]
pub mod sys;
pub mod lab;
pub mod netns;
pub mod recv;
pub mod report;
pub mod run;
pub mod send;
pub mod version;
