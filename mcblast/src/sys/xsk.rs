//! AF_XDP for sending: a thin layer over the syscalls (no libxdp, no
//! crate). One [`Xsk`] is one AF_XDP socket with its own UMEM, bound to one
//! queue of one interface, with a TX ring and a completion ring (the fill
//! ring exists because bind requires it, but TX-only never uses it, so it is
//! not mapped). No XDP program and no XSKMAP are needed to transmit.
//!
//! Why our own layer rather than `xdpilone` or `xsk-rs`: `xsk-rs` wraps
//! libxdp (C libraries that are not on these machines); `xdpilone` is pure
//! Rust, but the sender needs things a general ring API hides — rewriting
//! descriptors the kernel has not consumed yet (copy mode consumes only
//! inside our own `sendto`, see `send::engine::xdp`), reading the TX
//! consumer index to know exactly which frames a kick took, and multi-buffer
//! descriptors — and the project keeps all `unsafe` in `sys/`. The whole
//! layer is the dozen calls below.
//!
//! Shape (kernel `Documentation/networking/af_xdp.rst`):
//! socket(AF_XDP) → mmap UMEM → XDP_UMEM_REG → ring sizes (fill,
//! completion, TX) → getsockopt XDP_MMAP_OFFSETS → mmap TX and completion
//! rings → bind(ifindex, queue, XDP_ZEROCOPY | XDP_COPY [| XDP_USE_SG]) →
//! getsockopt XDP_OPTIONS (did zero-copy happen?). Sending: write
//! descriptors, publish the producer index (release), `sendto(MSG_DONTWAIT)`
//! to kick; the kernel hands each frame's address back on the completion
//! ring when it is done with it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{cvt, setsockopt};

/// `XDP_PKT_CONTD`: more descriptors of this packet follow.
pub const PKT_CONTD: u32 = libc::XDP_PKT_CONTD;

/// What to build.
#[derive(Debug, Clone, Copy)]
pub struct XskConfig {
    pub ifindex: u32,
    pub queue: u32,
    /// UMEM chunk size (a power of two, 2048..=page size).
    pub chunk: u32,
    /// Chunks in the UMEM.
    pub chunks: u32,
    /// TX and completion ring entries (powers of two).
    pub tx_size: u32,
    pub cq_size: u32,
    /// Ask for zero-copy (else copy mode).
    pub zerocopy: bool,
    /// Multi-buffer frames (XDP_USE_SG).
    pub sg: bool,
}

/// An anonymous private mapping, unmapped on drop.
struct Map {
    ptr: NonNull<u8>,
    len: usize,
}

impl Map {
    fn anon(len: usize) -> io::Result<Map> {
        // SAFETY: anonymous private mapping of `len` bytes at an address the
        // kernel picks; no file, no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        Map::checked(p, len)
    }

    fn ring(fd: &OwnedFd, len: usize, offset: u64) -> io::Result<Map> {
        // SAFETY: maps the kernel's ring behind `fd` at the page offset the
        // AF_XDP ABI defines for it; `len` is what XDP_MMAP_OFFSETS says the
        // ring spans; the kernel refuses (EINVAL) anything larger.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        Map::checked(p, len)
    }

    fn checked(p: *mut libc::c_void, len: usize) -> io::Result<Map> {
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Map { ptr: NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?, len })
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly one mapping made in `Map::anon` or
        // `Map::ring`, unmapped only here; no reference into it outlives
        // `self` (the rings and frame slices borrow the owning `Xsk`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One single-producer/single-consumer ring shared with the kernel.
struct Ring {
    _map: Map,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    desc: *mut u8,
    mask: u32,
}

impl Ring {
    fn new(map: Map, off: &libc::xdp_ring_offset, size: u32) -> Ring {
        let base = map.ptr.as_ptr();
        // SAFETY: the offsets come from XDP_MMAP_OFFSETS and lie inside the
        // mapping (it spans `off.desc + size * entry`, the largest of them);
        // the kernel aligns producer/consumer for 32-bit atomics.
        unsafe {
            Ring {
                producer: base.add(off.producer as usize).cast(),
                consumer: base.add(off.consumer as usize).cast(),
                desc: base.add(off.desc as usize),
                mask: size - 1,
                _map: map,
            }
        }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into `self.map`, alive as long as `self`; the
        // kernel accesses it only atomically too.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { &*self.consumer }
    }
}

/// An AF_XDP socket with its UMEM, TX ring and completion ring.
pub struct Xsk {
    // Field order is drop order: the rings and the socket go before the UMEM.
    tx: Ring,
    cq: Ring,
    fd: OwnedFd,
    umem: Map,
    tx_size: u32,
    cq_size: u32,
    /// Our TX producer index (published with release).
    tx_prod: u32,
    /// Our completion consumer index.
    cq_cons: u32,
    zerocopy: bool,
}

// SAFETY: `Xsk` owns its mappings and socket outright; the raw pointers
// point only into those mappings. Nothing is shared with another thread of
// this process, so moving the whole value to another thread (the worker
// that sends) is sound. It is not `Sync`: one thread drives the rings.
unsafe impl Send for Xsk {}

/// Why an AF_XDP socket could not be set up, by step, for one-line messages.
#[derive(Debug)]
pub struct XskError {
    pub step: &'static str,
    pub err: io::Error,
}

impl std::fmt::Display for XskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.err)
    }
}

impl std::error::Error for XskError {}

fn step<T>(step: &'static str, r: io::Result<T>) -> Result<T, XskError> {
    r.map_err(|err| XskError { step, err })
}

impl Xsk {
    /// Builds and binds an AF_XDP socket as `cfg` says.
    pub fn open(cfg: &XskConfig) -> Result<Xsk, XskError> {
        for (what, n) in [("tx_size", cfg.tx_size), ("cq_size", cfg.cq_size), ("chunk", cfg.chunk)] {
            if !n.is_power_of_two() {
                return Err(XskError { step: what, err: io::Error::from_raw_os_error(libc::EINVAL) });
            }
        }
        // SAFETY: plain socket(2); the result is checked.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        let raw = step("socket(AF_XDP)", cvt(raw))?;
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem = Self::register_umem(&fd, cfg)?;
        let (tx, cq) = Self::map_rings(&fd, cfg)?;
        Self::bind(&fd, cfg)?;
        let zerocopy = Self::bound_zerocopy(&fd)?;
        let tx_prod = tx.producer().load(Ordering::Relaxed);
        let cq_cons = cq.consumer().load(Ordering::Relaxed);
        Ok(Xsk { tx, cq, fd, umem, tx_size: cfg.tx_size, cq_size: cfg.cq_size, tx_prod, cq_cons, zerocopy })
    }

    /// The UMEM, mapped and registered on `fd`, with the sizes of the fill, completion and TX rings set.
    fn register_umem(fd: &OwnedFd, cfg: &XskConfig) -> Result<Map, XskError> {
        let umem_len = cfg.chunk as usize * cfg.chunks as usize;
        let umem = step("UMEM mmap", Map::anon(umem_len))?;
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr.as_ptr() as u64,
            len: umem_len as u64,
            chunk_size: cfg.chunk,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        step("XDP_UMEM_REG", setsockopt(fd, libc::SOL_XDP, libc::XDP_UMEM_REG, &reg))?;
        // The fill ring is only for receiving, but bind wants one: the smallest.
        step("XDP_UMEM_FILL_RING", setsockopt(fd, libc::SOL_XDP, libc::XDP_UMEM_FILL_RING, &16u32))?;
        step("XDP_UMEM_COMPLETION_RING", setsockopt(fd, libc::SOL_XDP, libc::XDP_UMEM_COMPLETION_RING, &cfg.cq_size))?;
        step("XDP_TX_RING", setsockopt(fd, libc::SOL_XDP, libc::XDP_TX_RING, &cfg.tx_size))?;
        Ok(umem)
    }

    /// The TX and completion rings of `fd`, mapped at the offsets the kernel gives.
    fn map_rings(fd: &OwnedFd, cfg: &XskConfig) -> Result<(Ring, Ring), XskError> {
        // SAFETY: all-zero is a valid xdp_mmap_offsets (plain integers).
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off` and `len` are valid and writable; `len` is its size.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                &mut len,
            )
        };
        step("XDP_MMAP_OFFSETS", cvt(rc))?;
        if len as usize != std::mem::size_of::<libc::xdp_mmap_offsets>() {
            return Err(XskError {
                step: "XDP_MMAP_OFFSETS (pre-5.4 kernel layout)",
                err: io::Error::from_raw_os_error(libc::ENOTSUP),
            });
        }
        let desc = std::mem::size_of::<libc::xdp_desc>();
        let tx_map = step(
            "TX ring mmap",
            Map::ring(fd, off.tx.desc as usize + cfg.tx_size as usize * desc, libc::XDP_PGOFF_TX_RING as u64),
        )?;
        let cq_map = step(
            "completion ring mmap",
            Map::ring(fd, off.cr.desc as usize + cfg.cq_size as usize * 8, libc::XDP_UMEM_PGOFF_COMPLETION_RING),
        )?;
        Ok((Ring::new(tx_map, &off.tx, cfg.tx_size), Ring::new(cq_map, &off.cr, cfg.cq_size)))
    }

    /// Binds `fd` to the interface's queue, in zero-copy or copy mode (and multi-buffer with `sg`).
    fn bind(fd: &OwnedFd, cfg: &XskConfig) -> Result<(), XskError> {
        let mut flags = if cfg.zerocopy { libc::XDP_ZEROCOPY } else { libc::XDP_COPY };
        if cfg.sg {
            flags |= libc::XDP_USE_SG;
        }
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: cfg.ifindex,
            sxdp_queue_id: cfg.queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `sa` is a valid sockaddr_xdp of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        step("bind", cvt(rc))?;
        Ok(())
    }

    /// Whether the kernel bound `fd` in zero-copy mode (XDP_OPTIONS).
    fn bound_zerocopy(fd: &OwnedFd) -> Result<bool, XskError> {
        let mut opts = libc::xdp_options { flags: 0 };
        let mut len = std::mem::size_of::<libc::xdp_options>() as libc::socklen_t;
        // SAFETY: `opts` and `len` are valid and writable; `len` is its size.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_OPTIONS,
                (&mut opts as *mut libc::xdp_options).cast(),
                &mut len,
            )
        };
        step("XDP_OPTIONS", cvt(rc))?;
        Ok(opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0)
    }

    /// Whether the kernel bound it in zero-copy mode.
    pub fn zerocopy(&self) -> bool {
        self.zerocopy
    }

    /// The whole UMEM, to write frames into. In copy mode the kernel reads a
    /// frame only inside our `sendto`; in zero-copy mode the NIC reads
    /// frames on the TX ring until they complete, and the caller must not
    /// write those (a logic error, not memory unsafety: the kernel never
    /// writes a TX frame).
    pub fn umem_mut(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `umem.len` bytes, alive as long as `self`;
        // `&mut self` makes this the only Rust reference to it.
        unsafe { std::slice::from_raw_parts_mut(self.umem.ptr.as_ptr(), self.umem.len) }
    }

    /// The UMEM's size in bytes (an address at or past it is invalid to the kernel).
    pub fn umem_len(&self) -> usize {
        self.umem.len
    }

    /// Asks the kernel to send up to `budget` descriptors per copy-mode
    /// kick (`XDP_MAX_TX_SKB_BUDGET`, option number `opt`, Linux 6.17+;
    /// the kernel caps it at the TX ring size). Returns the budget set, or
    /// None when the kernel does not know the option (then it is 32).
    pub fn raise_tx_budget(&self, opt: libc::c_int, budget: u32) -> Option<u32> {
        let b = budget.min(self.tx_size).max(32);
        setsockopt(&self.fd, libc::SOL_XDP, opt, &b).ok().map(|_| b)
    }

    /// Sets the socket's send buffer (copy mode charges each frame's skb to it).
    pub fn set_sndbuf(&self, bytes: usize) -> io::Result<usize> {
        super::send::set_buffer(&self.fd, super::send::Buffer::Send, bytes)
    }

    /// TX ring entries our producer may still fill.
    pub fn tx_room(&self) -> u32 {
        self.tx_size - self.tx_prod.wrapping_sub(self.tx_consumer())
    }

    /// The kernel's TX consumer index: descriptors before it were taken.
    pub fn tx_consumer(&self) -> u32 {
        self.tx.consumer().load(Ordering::Acquire)
    }

    /// Our TX producer index (descriptors before it are published).
    pub fn tx_producer(&self) -> u32 {
        self.tx_prod
    }

    /// Writes the descriptor at ring index `idx`, which must be one the
    /// kernel has not consumed: either not yet published (`idx` in
    /// `tx_prod..tx_prod + tx_room()`), or published but — in copy mode,
    /// where the kernel reads the ring only inside our own syscalls —
    /// still ahead of the consumer. Returns false (and writes nothing) for
    /// any other index.
    pub fn set_tx_desc(&mut self, idx: u32, addr: u64, len: u32, options: u32) -> bool {
        let cons = self.tx_consumer();
        let ahead = idx.wrapping_sub(cons);
        let limit = if self.zerocopy { self.tx_prod.wrapping_sub(cons)..self.tx_size } else { 0..self.tx_size };
        if !limit.contains(&ahead) {
            return false;
        }
        let d = libc::xdp_desc { addr, len, options };
        // SAFETY: `idx & mask` < ring size, so the entry lies inside the
        // descriptor array of the mapping; the check above keeps us off
        // entries the kernel may be reading (copy mode reads only during
        // our own syscalls, which cannot run while we hold `&mut self`).
        unsafe {
            std::ptr::write_volatile(self.tx.desc.cast::<libc::xdp_desc>().add((idx & self.tx.mask) as usize), d)
        };
        true
    }

    /// Publishes `n` more descriptors (written with [`Xsk::set_tx_desc`]).
    pub fn tx_submit(&mut self, n: u32) {
        debug_assert!(n <= self.tx_room());
        self.tx_prod = self.tx_prod.wrapping_add(n);
        self.tx.producer().store(self.tx_prod, Ordering::Release);
    }

    /// Tells the kernel to transmit: `sendto(fd, NULL, 0, MSG_DONTWAIT)`.
    /// In copy mode the kernel sends published frames inside this call.
    pub fn kick(&self) -> io::Result<()> {
        // SAFETY: a zero-length send with no buffer and no address, the
        // AF_XDP wake-up; the kernel reads nothing from userspace.
        let rc =
            unsafe { libc::sendto(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Takes every address on the completion ring, calling `f` on each.
    /// Returns how many.
    pub fn reap(&mut self, mut f: impl FnMut(u64)) -> u32 {
        let prod = self.cq.producer().load(Ordering::Acquire);
        let n = prod.wrapping_sub(self.cq_cons).min(self.cq_size);
        for i in 0..n {
            let idx = self.cq_cons.wrapping_add(i) & self.cq.mask;
            // SAFETY: idx ≤ mask, inside the completion ring's u64 array;
            // the kernel published it (acquire above) and will not touch it
            // until we move the consumer past it.
            let addr = unsafe { std::ptr::read_volatile(self.cq.desc.cast::<u64>().add(idx as usize)) };
            f(addr);
        }
        self.cq_cons = self.cq_cons.wrapping_add(n);
        self.cq.consumer().store(self.cq_cons, Ordering::Release);
        n
    }

    /// The socket's XDP_STATISTICS: (tx_invalid_descs, tx_ring_empty_descs).
    pub fn tx_stats(&self) -> io::Result<(u64, u64)> {
        // SAFETY: all-zero is a valid xdp_statistics (plain integers).
        let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: `st` and `len` are valid and writable; `len` is its size.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&mut st as *mut libc::xdp_statistics).cast(),
                &mut len,
            )
        };
        cvt(rc)?;
        Ok((st.tx_invalid_descs, st.tx_ring_empty_descs))
    }
}

/// The number of TX queues of an interface (sysfs `queues/tx-*`), 1 when unknown.
pub fn tx_queues(ifname: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{ifname}/queues"))
        .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with("tx-")).count() as u32)
        .unwrap_or(1)
        .max(1)
}

/// An interface's MAC address from sysfs.
pub fn mac_address(ifname: &str) -> io::Result<[u8; 6]> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))?;
    let parts: Vec<u8> = s.trim().split(':').filter_map(|h| u8::from_str_radix(h, 16).ok()).collect();
    parts
        .try_into()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{ifname} has no Ethernet address")))
}
