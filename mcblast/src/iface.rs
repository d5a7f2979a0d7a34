//! Network interfaces: lookup by name with a helpful error, MTU, address.

use anyhow::{Result, anyhow};
use std::net::Ipv4Addr;

/// A resolved network interface.
#[derive(Debug, Clone)]
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub mtu: u32,
    pub addr: Option<Ipv4Addr>,
}

/// Names of the interfaces in this network namespace.
pub fn names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Looks an interface up; the error lists the real ones.
pub fn lookup(name: &str) -> Result<Iface> {
    let index = crate::sys::if_index(name).ok_or_else(|| {
        anyhow!("interface {name} not found; interfaces here: {}", names().join(", "))
    })?;
    let mtu = std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1500);
    let addr = crate::sys::ipv4_addrs()
        .unwrap_or_default()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, a)| a);
    Ok(Iface { name: name.to_string(), index, mtu, addr })
}

/// The devices that take the interface's packets besides its own IP stack: the master it is a port of (a
/// bridge, bond, team, VRF) and its upper devices (VLAN, macvlan, ...), from /sys/class/net.
pub fn takers(name: &str) -> Vec<String> {
    let dir = format!("/sys/class/net/{name}");
    let master = std::fs::read_link(format!("{dir}/master")).ok().and_then(|p| Some(p.file_name()?.to_string_lossy().into_owned()));
    let uppers = std::fs::read_dir(&dir).into_iter().flatten().filter_map(|e| {
        let n = e.ok()?.file_name().to_string_lossy().into_owned();
        n.strip_prefix("upper_").map(str::to_string)
    });
    let mut v: Vec<String> = master.into_iter().chain(uppers).collect();
    v.dedup();
    v
}

/// Whether multicast routing forwards what arrives on the interface (a multicast routing daemon runs).
pub fn mc_forwarding(name: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{name}/mc_forwarding")).is_ok_and(|s| s.trim() == "1")
}

/// The interface the kernel would use for a multicast group: the one with a
/// route for it, from `ip route get`. Returns None when there is no route.
pub fn default_for_group(group: Ipv4Addr) -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "route", "get", &group.to_string()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "dev" {
            return words.next().map(str::to_string);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn unknown_interface_lists_real_ones() {
        let e = super::lookup("mcb-no-such-if0").unwrap_err().to_string();
        assert!(e.contains("not found"), "{e}");
        assert!(e.contains("lo"), "{e}");
    }
    #[test]
    fn loopback_resolves() {
        let lo = super::lookup("lo").unwrap();
        assert!(lo.index > 0);
        assert!(lo.mtu >= 1500);
    }
}
