//! `recv --sink`: whether the kernel counter drops the datagrams it counted. With `auto` (the default) it does
//! for the kernel counter alone when nothing else on this host would take them: no socket is bound to the
//! port, the interface is no port of a bridge or other device, and no multicast routing forwards from it.
//! Passed on, they would only make the stack find no socket and free them, work that on the lab costs more
//! than the counter itself (docs/performance.md). A socket bound to the port later turns the sink off
//! ([`Sink::follow`]).

use crate::iface::Iface;

/// The sink as resolved, and why when `auto` chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sink {
    /// Whether the counter drops what it counted, from the start.
    pub on: bool,
    /// What `--sink auto` found (None when the flags decided).
    pub why: Option<String>,
    /// Whether [`follow`](Self::follow) turned it off in the middle of the run.
    pub turned_off: bool,
}

impl Sink {
    /// As the flags say.
    pub fn asked(on: bool) -> Sink {
        Sink { on, why: None, turned_off: false }
    }

    /// `--sink auto` for the kernel counter alone on `iface` and `port`: on when nothing else takes the datagrams.
    pub fn auto(iface: &Iface, port: u16) -> Sink {
        let off = |why: String| Sink { on: false, why: Some(why), turned_off: false };
        match crate::sys::net::udp_sockets_on(port) {
            None => return off("cannot read /proc/net/udp to see who else reads the port".into()),
            Some(n) if n > 0 => return off(sockets_bound(n, port)),
            Some(_) => {}
        }
        let takers = crate::iface::takers(&iface.name);
        if !takers.is_empty() {
            return off(format!("{} passes its packets on to {}", iface.name, takers.join(", ")));
        }
        if crate::iface::mc_forwarding(&iface.name) {
            return off(format!("multicast routing forwards from {}", iface.name));
        }
        let why = format!(
            "nothing else here takes port {port}: no socket bound to it, {} no other device's port, no multicast routing",
            iface.name
        );
        Sink { on: true, why: Some(why), turned_off: false }
    }

    /// Whether the sink `auto` turned on must now go off: the sockets that a process bound to the port since
    /// (their count; the sink counts as turned off from then), else None. Asked while the run goes on.
    pub fn follow(&mut self, port: u16) -> Option<usize> {
        if !self.on || self.why.is_none() || self.turned_off {
            return None;
        }
        let n = crate::sys::net::udp_sockets_on(port).filter(|&n| n > 0)?;
        self.turned_off = true;
        Some(n)
    }
}

/// "1 socket on this host is bound to port 5001".
pub fn sockets_bound(n: usize, port: u16) -> String {
    let s = if n == 1 { "socket is" } else { "sockets are" };
    format!("{n} {s} bound to port {port} here")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_off_while_a_socket_is_bound_to_the_port() {
        let lo = crate::iface::lookup("lo").unwrap();
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        let sink = Sink::auto(&lo, port);
        assert!(!sink.on, "{sink:?}");
        assert_eq!(sink.why.as_deref(), Some(sockets_bound(1, port).as_str()));
        // A sink the flags asked for is never turned off; one `auto` turned on is, once.
        assert_eq!(Sink::asked(true).follow(port), None);
        let mut auto_on = Sink { on: true, why: Some(String::new()), turned_off: false };
        assert_eq!(auto_on.follow(port), Some(1));
        assert!(auto_on.turned_off);
        assert_eq!(auto_on.follow(port), None);
    }
}
