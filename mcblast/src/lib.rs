//! mcblast: multicast saturation tester.
//!
//! * [`send`]: the sender and its engines;
//! * [`recv`]: the receiver: the eBPF kernel counter ([`kernel`]) and the
//!   socket baseline (recvmmsg) feeding the same tracker;
//! * [`lab`]: the network-namespace lab;
//! * [`output`]: the human and JSON Lines output contract.
//!
//! Unsafe code lives only in [`sys`], where the OS is called.
#![deny(unsafe_code)]

pub mod app;
pub mod attrib;
pub mod btf;
pub mod cli;
pub mod clock;
pub mod fanout;
pub mod iface;
pub mod igmp_timing;
pub mod iperf2_server;
pub mod kernel;
pub mod kfeatures;
pub mod mcast;
pub mod output;
pub mod preflight;
pub mod probe;
pub mod prom;

#[allow(unsafe_code)]
pub mod sys;
pub mod lab;
pub mod netns;
pub mod recv;
pub mod report;
pub mod run;
pub mod send;
pub mod tc_classic;
pub mod version;
