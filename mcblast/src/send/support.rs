//! Which send engines can run on this machine and interface, found by cheap probes without side effects:
//! `send` checks `--engine` with them and resolves `auto` to the fastest supported one; `mcblast probe` lists
//! them with how each was determined.

use crate::send::Engine;
use crate::sys::gso::max_segments;
/// The engines `auto` tries, fastest first: the order measured on the lab
/// (`cargo xtask bench`, see docs/performance.md). gso was
/// ×1.6–3.7 the socket engine in every case; mmsg about ×1 (0.94–1.09);
/// uring below both on a quiet machine (×0.86–0.98), so it comes last and
/// `auto` never picks it while socket works; it stays for machines where
/// it measures better (`--engine uring`).
pub const PREFERENCE: [Engine; 4] = [Engine::Gso, Engine::Mmsg, Engine::Socket, Engine::Uring];

/// Whether an engine can run here: `Ok(how it was determined)` or
/// `Err(which probe failed, and why)`.
pub type Verdict = std::result::Result<String, String>;

/// The engine probes, for one interface (None: the route's, unknown).
#[derive(Debug, Clone)]
pub struct EngineSupport {
    /// UDP_SEGMENT accepted by the kernel and the device checksums in hardware.
    pub gso: Verdict,
    /// io_uring with IORING_OP_SENDMSG and waits with a timeout.
    pub uring: Verdict,
    /// io_uring's IORING_OP_SEND_ZC.
    pub uring_zc: Verdict,
}

impl EngineSupport {
    /// Everything supported (for tests of the plan).
    pub fn all() -> EngineSupport {
        EngineSupport { gso: Ok("test".into()), uring: Ok("test".into()), uring_zc: Ok("test".into()) }
    }
}

/// Probes the engines on this machine, for interface `iface`.
pub fn engine_support(iface: Option<&str>) -> EngineSupport {
    let gso = gso_kernel().and_then(|how| match iface {
        Some(i) => gso_iface(i).map(|h| format!("{how}; {h}")),
        None => Ok(format!("{how}; device checksum offload not checked (no interface)")),
    });
    let (uring, uring_zc) = match crate::sys::uring::probe() {
        Err(e) => {
            let why = format!("io_uring_setup failed: {e}{}", io_uring_disabled_note());
            (Err(why.clone()), Err(why))
        }
        Ok(p) => {
            let uring = if !p.sendmsg {
                Err("IORING_REGISTER_PROBE: IORING_OP_SENDMSG not supported".to_string())
            } else if !p.ext_arg {
                Err("io_uring lacks IORING_FEAT_EXT_ARG (kernel before 5.11): waits cannot be bounded".to_string())
            } else {
                Ok("io_uring_setup + IORING_REGISTER_PROBE: IORING_OP_SENDMSG supported".to_string())
            };
            let zc = match (&uring, p.send_zc) {
                (Err(e), _) => Err(e.clone()),
                (Ok(_), true) => Ok("IORING_REGISTER_PROBE: IORING_OP_SEND_ZC supported".to_string()),
                (Ok(_), false) => {
                    Err("IORING_REGISTER_PROBE: IORING_OP_SEND_ZC not supported (kernel before 6.0)".into())
                }
            };
            (uring, zc)
        }
    };
    EngineSupport { gso, uring, uring_zc }
}

pub(crate) fn io_uring_disabled_note() -> String {
    match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").map(|s| s.trim().to_string()) {
        Ok(v) if v != "0" => format!(" (kernel.io_uring_disabled = {v})"),
        _ => String::new(),
    }
}

/// UDP_SEGMENT set and cleared on a fresh UDP socket (quinn-udp's probe).
pub(crate) fn gso_kernel() -> Verdict {
    let s = crate::sys::net::udp_socket().map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    crate::sys::gso::probe_sockopt(&s)
        .map(|()| "setsockopt(UDP_SEGMENT) accepted".to_string())
        .map_err(|e| format!("setsockopt(UDP_SEGMENT) failed: {e} (kernel before 4.18?)"))
}

/// The device must checksum in hardware, else a GSO send fails with EIO.
pub(crate) fn gso_iface(iface: &str) -> Verdict {
    match crate::sys::ethtool::tx_checksum(iface) {
        Ok(true) => Ok(format!("{iface} checksums in hardware (ETHTOOL_GTXCSUM on)")),
        Ok(false) => Err(format!(
            "{iface} does not checksum in hardware (ETHTOOL_GTXCSUM off): the kernel refuses UDP GSO sends with EIO"
        )),
        Err(e) => Err(format!("ETHTOOL_GTXCSUM on {iface} failed: {e}")),
    }
}

/// Whether `engine` can send `length`-byte datagrams here: an error says
/// which probe failed.
pub fn check(engine: Engine, s: &EngineSupport, length: usize, mtu: Option<u32>, zerocopy: bool) -> Verdict {
    match engine {
        Engine::Socket => Ok("sendto needs no probe".into()),
        Engine::Mmsg => Ok("sendmmsg needs no probe".into()),
        Engine::Gso => {
            let how = s.gso.clone()?;
            if let Some(m) = mtu
                && length + crate::mcast::IP_UDP_OVERHEAD > m as usize
            {
                return Err(format!(
                    "UDP GSO cannot fragment: each {length}-byte datagram must fit the {m}-byte MTU (the kernel answers EINVAL)"
                ));
            }
            Ok(how)
        }
        Engine::Uring if zerocopy => s.uring_zc.clone(),
        Engine::Uring => s.uring.clone(),
        // The frame layout, MTU and queue checks are the engine's own
        // (send::engine::xdp::check_plan); here only whether AF_XDP exists.
        Engine::Xdp => crate::sys::probe::af_xdp_socket()
            .map(|()| "socket(AF_XDP, SOCK_RAW, 0) succeeded".to_string())
            .map_err(|e| format!("socket(AF_XDP, SOCK_RAW, 0) failed: {e} (no AF_XDP in this kernel, or no CAP_NET_RAW)")),
        Engine::Auto => Ok("auto".into()),
    }
}

/// The engine `auto` picks, and why, in one line.
pub fn choose(s: &EngineSupport, length: usize, mtu: Option<u32>, zerocopy: bool) -> (Engine, String) {
    let mut skipped = Vec::new();
    for e in PREFERENCE {
        if e == Engine::Gso && max_segments(length) < 2 {
            skipped.push(format!("gso: {length}-byte datagrams leave room for only one per GSO send"));
            continue;
        }
        match check(e, s, length, mtu, zerocopy) {
            Ok(how) => {
                let mut why = format!("fastest supported here ({how})");
                if !skipped.is_empty() {
                    why.push_str(&format!("; skipped {}", skipped.join("; ")));
                }
                return (e, why);
            }
            Err(why) => skipped.push(format!("{}: {why}", e.name())),
        }
    }
    unreachable!("mmsg and socket always work")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sup(gso: bool, uring: bool, zc: bool) -> EngineSupport {
        let v = |ok: bool, what: &str| if ok { Ok(format!("{what} ok")) } else { Err(format!("{what} probe failed")) };
        EngineSupport { gso: v(gso, "gso"), uring: v(uring, "uring"), uring_zc: v(zc, "zc") }
    }

    #[test]
    fn auto_takes_the_first_supported_in_preference_order() {
        let (e, why) = choose(&sup(true, true, true), 8192, Some(9000), false);
        assert_eq!(e, PREFERENCE[0], "{why}");
        // Without GSO: the next one, and the line says why gso was skipped.
        let (e, why) = choose(&sup(false, true, true), 8192, Some(9000), false);
        assert_eq!(e, *PREFERENCE.iter().find(|&&e| e != Engine::Gso).unwrap());
        assert!(why.contains("gso probe failed"), "{why}");
        let (e, why) = choose(&sup(false, false, false), 8192, Some(9000), false);
        assert_eq!(e, Engine::Mmsg, "{why}");
        assert!(!why.contains('\n'));
    }

    #[test]
    fn gso_needs_datagrams_that_fit_the_mtu_and_room_for_two() {
        let s = sup(true, true, true);
        let e = check(Engine::Gso, &s, 8192, Some(1500), false).unwrap_err();
        assert!(e.contains("must fit the 1500-byte MTU"), "{e}");
        assert!(check(Engine::Gso, &s, 1472, Some(1500), false).is_ok());
        let (e, why) = choose(&s, 40_000, None, false);
        assert_ne!(e, Engine::Gso, "{why}");
        let (e, _) = choose(&s, 8192, Some(1500), false);
        assert_ne!(e, Engine::Gso);
    }

    #[test]
    fn zerocopy_needs_send_zc() {
        let s = sup(true, true, false);
        assert!(check(Engine::Uring, &s, 8192, None, false).is_ok());
        assert!(check(Engine::Uring, &s, 8192, None, true).unwrap_err().contains("zc probe failed"));
    }

    #[test]
    fn this_machine_probes_without_error() {
        let s = engine_support(Some("lo"));
        // The development machines have both (kernel 6.18).
        assert!(s.gso.is_ok(), "{:?}", s.gso);
        assert!(s.uring.is_ok(), "{:?}", s.uring);
        assert!(engine_support(Some("mcb-nope0")).gso.unwrap_err().contains("ETHTOOL_GTXCSUM on mcb-nope0 failed"));
    }
}
