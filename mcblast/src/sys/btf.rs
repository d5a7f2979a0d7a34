//! Just enough of a BTF reader for the drop tracer: byte offsets of struct
//! members (through anonymous structs/unions and typedefs) and the names of
//! an enum's values, read from the running kernel's `/sys/kernel/btf/vmlinux`.
//! Format: `Documentation/bpf/btf.rst` (header, type section, string section).

#![deny(unsafe_code)]

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow, bail};

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: String,
    ty: u32,
    /// Offset in bits from the start of the enclosing struct/union.
    bit_offset: u32,
}

#[derive(Debug, Clone)]
enum Type {
    /// Struct or union.
    Composite { name: String, members: Vec<Member> },
    /// Typedef, const, volatile, restrict, type tag: the type it stands for.
    Alias(u32),
    Enum { name: String, values: Vec<(String, u64)> },
    Ptr(u32),
    /// A function prototype with this many parameters.
    Proto(usize),
    Other,
}

/// The parsed types of one BTF blob (type id = index + 1).
pub struct Btf {
    types: Vec<Type>,
    by_name: HashMap<String, u32>,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16> {
    b.get(off..off + 2).map(|s| u16::from_le_bytes([s[0], s[1]])).ok_or_else(|| anyhow!("BTF truncated"))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32> {
    b.get(off..off + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])).ok_or_else(|| anyhow!("BTF truncated"))
}

/// The type and string sections of raw BTF, after its header is checked.
fn sections(data: &[u8]) -> Result<(&[u8], &[u8])> {
    if u16_at(data, 0)? != MAGIC {
        bail!("not little-endian BTF (bad magic)");
    }
    let hdr_len = u32_at(data, 4)? as usize;
    let type_off = u32_at(data, 8)? as usize;
    let type_len = u32_at(data, 12)? as usize;
    let str_off = u32_at(data, 16)? as usize;
    let str_len = u32_at(data, 20)? as usize;
    let types_sec = data
        .get(hdr_len + type_off..hdr_len + type_off + type_len)
        .ok_or_else(|| anyhow!("BTF type section out of bounds"))?;
    let strs = data.get(hdr_len + str_off..hdr_len + str_off + str_len).ok_or_else(|| anyhow!("BTF string section out of bounds"))?;
    Ok((types_sec, strs))
}

/// The NUL-terminated string at `off` of the string section (empty when out of bounds).
fn str_at(strs: &[u8], off: u32) -> String {
    let s = strs.get(off as usize..).unwrap_or_default();
    let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
    String::from_utf8_lossy(&s[..end]).into_owned()
}

/// The `vlen` members of a struct or union at `*p` (moved past them).
fn members(types_sec: &[u8], p: &mut usize, vlen: usize, kflag: bool, strs: &[u8]) -> Result<Vec<Member>> {
    let mut members = Vec::with_capacity(vlen);
    for _ in 0..vlen {
        let off = u32_at(types_sec, *p + 8)?;
        members.push(Member {
            name: str_at(strs, u32_at(types_sec, *p)?),
            ty: u32_at(types_sec, *p + 4)?,
            bit_offset: if kflag { off & 0x00ff_ffff } else { off },
        });
        *p += 12;
    }
    Ok(members)
}

/// The `vlen` values of a 32-bit enum at `*p` (moved past them), sign-extended when `kflag` says signed.
fn enum_values(types_sec: &[u8], p: &mut usize, vlen: usize, kflag: bool, strs: &[u8]) -> Result<Vec<(String, u64)>> {
    let mut values = Vec::with_capacity(vlen);
    for _ in 0..vlen {
        let v = u32_at(types_sec, *p + 4)?;
        let v = if kflag { v as i32 as i64 as u64 } else { v as u64 };
        values.push((str_at(strs, u32_at(types_sec, *p)?), v));
        *p += 8;
    }
    Ok(values)
}

/// The `vlen` values of a 64-bit enum at `*p` (moved past them).
fn enum64_values(types_sec: &[u8], p: &mut usize, vlen: usize, strs: &[u8]) -> Result<Vec<(String, u64)>> {
    let mut values = Vec::with_capacity(vlen);
    for _ in 0..vlen {
        let lo = u32_at(types_sec, *p + 4)? as u64;
        let hi = u32_at(types_sec, *p + 8)? as u64;
        values.push((str_at(strs, u32_at(types_sec, *p)?), hi << 32 | lo));
        *p += 12;
    }
    Ok(values)
}

impl Btf {
    /// The running kernel's BTF.
    pub fn from_kernel() -> Result<Btf> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).with_context(|| format!("cannot read {path}: the kernel needs CONFIG_DEBUG_INFO_BTF=y"))?;
        Btf::parse(&data).with_context(|| format!("cannot parse {path}"))
    }

    /// Parses a little-endian BTF blob.
    pub fn parse(data: &[u8]) -> Result<Btf> {
        let (types_sec, strs) = sections(data)?;
        let name = |off: u32| str_at(strs, off);
        let mut types = Vec::new();
        let mut by_name = HashMap::new();
        let mut p = 0usize;
        while p < types_sec.len() {
            let name_off = u32_at(types_sec, p)?;
            let info = u32_at(types_sec, p + 4)?;
            let size_or_type = u32_at(types_sec, p + 8)?;
            p += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kflag = info >> 31 == 1;
            let ty = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => {
                    p += 4;
                    Type::Other
                }
                KIND_PTR => Type::Ptr(size_or_type),
                KIND_FWD | KIND_FUNC | KIND_FLOAT => Type::Other,
                KIND_TYPEDEF => {
                    by_name.entry(format!("typedef:{}", name(name_off))).or_insert(types.len() as u32 + 1);
                    Type::Alias(size_or_type)
                }
                KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => Type::Alias(size_or_type),
                KIND_ARRAY => {
                    p += 12;
                    Type::Other
                }
                KIND_STRUCT | KIND_UNION => {
                    Type::Composite { name: name(name_off), members: members(types_sec, &mut p, vlen, kflag, strs)? }
                }
                KIND_ENUM => Type::Enum { name: name(name_off), values: enum_values(types_sec, &mut p, vlen, kflag, strs)? },
                KIND_ENUM64 => Type::Enum { name: name(name_off), values: enum64_values(types_sec, &mut p, vlen, strs)? },
                KIND_FUNC_PROTO => {
                    p += 8 * vlen;
                    Type::Proto(vlen)
                }
                KIND_DATASEC => {
                    p += 12 * vlen;
                    Type::Other
                }
                k => bail!("unknown BTF kind {k}"),
            };
            let id = types.len() as u32 + 1;
            if let Type::Composite { name, .. } | Type::Enum { name, .. } = &ty
                && !name.is_empty()
            {
                // The first type of a name wins (vmlinux has one sk_buff).
                by_name.entry(format!("{}:{name}", if matches!(ty, Type::Enum { .. }) { "enum" } else { "struct" })).or_insert(id);
            }
            types.push(ty);
        }
        Ok(Btf { types, by_name })
    }

    fn get(&self, id: u32) -> Option<&Type> {
        id.checked_sub(1).and_then(|i| self.types.get(i as usize))
    }

    /// The struct/union behind `id`, through typedefs and qualifiers.
    fn composite(&self, mut id: u32) -> Option<&[Member]> {
        for _ in 0..32 {
            match self.get(id)? {
                Type::Alias(t) => id = *t,
                Type::Composite { members, .. } => return Some(members),
                _ => return None,
            }
        }
        None
    }

    /// Bit offset of member `name` in the composite `id`, looking through
    /// anonymous members; with its type.
    fn member(&self, id: u32, name: &str, depth: u32) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        let members = self.composite(id)?;
        if let Some(m) = members.iter().find(|m| m.name == name) {
            return Some((m.bit_offset, m.ty));
        }
        members
            .iter()
            .filter(|m| m.name.is_empty())
            .find_map(|m| self.member(m.ty, name, depth + 1).map(|(off, ty)| (m.bit_offset + off, ty)))
    }

    /// Byte offset of a dotted member path in a struct, e.g.
    /// `offset("sk_buff", "network_header")` or `offset("sock", "__sk_common.skc_net.net")`.
    pub fn offset(&self, strct: &str, path: &str) -> Result<u32> {
        let mut id = *self
            .by_name
            .get(&format!("struct:{strct}"))
            .ok_or_else(|| anyhow!("the kernel's BTF has no struct {strct}"))?;
        let mut bits = 0;
        for part in path.split('.') {
            let (off, ty) =
                self.member(id, part, 0).ok_or_else(|| anyhow!("the kernel's struct {strct} has no member {path}"))?;
            bits += off;
            id = ty;
        }
        if bits % 8 != 0 {
            bail!("{strct}.{path} is a bitfield");
        }
        Ok(bits / 8)
    }

    /// How many arguments a BTF-enabled tracepoint passes (the parameters of
    /// its `btf_trace_<name>` prototype, less the leading `void *` data).
    pub fn tracepoint_args(&self, tracepoint: &str) -> Result<usize> {
        let name = format!("btf_trace_{tracepoint}");
        let mut id = *self.by_name.get(&format!("typedef:{name}")).ok_or_else(|| anyhow!("the kernel has no tracepoint {tracepoint} (no {name} in its BTF)"))?;
        for _ in 0..8 {
            match self.get(id) {
                Some(Type::Alias(t) | Type::Ptr(t)) => id = *t,
                Some(Type::Proto(n)) => return n.checked_sub(1).ok_or_else(|| anyhow!("{name} has no data parameter")),
                _ => break,
            }
        }
        bail!("{name} is not a pointer to a function prototype")
    }

    /// The values of an enum, by name: (value, name).
    pub fn enum_values(&self, name: &str) -> Result<Vec<(u64, String)>> {
        let id = self.by_name.get(&format!("enum:{name}")).ok_or_else(|| anyhow!("the kernel's BTF has no enum {name}"))?;
        match self.get(*id) {
            Some(Type::Enum { values, .. }) => Ok(values.iter().map(|(n, v)| (*v, n.clone())).collect()),
            _ => bail!("enum {name} is not an enum"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built BTF blob: struct outer { int a; union { struct { int x; int y; }; }; typedef-of-struct t; }
    /// and enum e { A = 1, B = 7 }.
    fn blob() -> Vec<u8> {
        let mut strs = vec![0u8];
        let mut s = |t: &str| {
            let off = strs.len() as u32;
            strs.extend_from_slice(t.as_bytes());
            strs.push(0);
            off
        };
        let (n_int, n_outer, n_a, n_x, n_y, n_t, n_inner, n_net, n_e, n_ea, n_eb) =
            (s("int"), s("outer"), s("a"), s("x"), s("y"), s("t"), s("inner"), s("net"), s("e"), s("A"), s("B"));
        let n_tp = s("btf_trace_tp");
        let mut t = Vec::new();
        let mut ty = |name: u32, kind: u32, vlen: u32, size: u32, extra: &[u32]| {
            for w in [name, kind << 24 | vlen, size].iter().chain(extra) {
                t.extend_from_slice(&w.to_le_bytes());
            }
        };
        ty(n_int, KIND_INT, 0, 4, &[32]); // 1: int
        ty(0, KIND_STRUCT, 2, 8, &[n_x, 1, 0, n_y, 1, 32]); // 2: anon struct {x, y}
        ty(0, KIND_UNION, 1, 8, &[0, 2, 0]); // 3: anon union { anon struct }
        ty(n_inner, KIND_STRUCT, 1, 8, &[n_net, 1, 32]); // 4: struct inner { pad; int net @4 }
        ty(n_t, KIND_TYPEDEF, 0, 4, &[]); // 5: typedef t = inner
        ty(n_outer, KIND_STRUCT, 3, 24, &[n_a, 1, 0, 0, 3, 64, n_t, 5, 128]); // 6: outer
        ty(n_e, KIND_ENUM, 2, 4, &[n_ea, 1, n_eb, 7]); // 7: enum e
        ty(0, KIND_FUNC_PROTO, 3, 0, &[0, 0, 0, 1, 0, 4]); // 8: void (void *, int, struct inner)
        ty(0, KIND_PTR, 0, 8, &[]); // 9: pointer to 8
        ty(n_tp, KIND_TYPEDEF, 0, 9, &[]); // 10: typedef btf_trace_tp
        let mut b = Vec::new();
        for w in [MAGIC as u32 | 1 << 16, 24, 0, t.len() as u32, t.len() as u32, strs.len() as u32] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&t);
        b.extend_from_slice(&strs);
        b
    }

    #[test]
    fn offsets_through_anonymous_members_and_typedefs() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.offset("outer", "x").unwrap(), 8);
        assert_eq!(btf.offset("outer", "y").unwrap(), 12);
        assert_eq!(btf.offset("outer", "t.net").unwrap(), 16 + 4);
        assert!(btf.offset("outer", "nope").is_err());
        assert!(btf.offset("nope", "a").is_err());
        assert_eq!(btf.enum_values("e").unwrap(), vec![(1, "A".to_string()), (7, "B".to_string())]);
        assert_eq!(btf.tracepoint_args("tp").unwrap(), 2);
        assert!(btf.tracepoint_args("nope").is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(&[0u8; 8]).is_err());
        let mut b = blob();
        b.truncate(30);
        assert!(Btf::parse(&b).is_err());
    }

    #[test]
    fn running_kernel_has_what_the_tracer_needs() {
        let Ok(btf) = Btf::from_kernel() else {
            eprintln!("SKIP: no readable /sys/kernel/btf/vmlinux");
            return;
        };
        for (s, p) in [
            ("sk_buff", "dev"),
            ("sk_buff", "head"),
            ("sk_buff", "data"),
            ("sk_buff", "len"),
            ("sk_buff", "data_len"),
            ("sk_buff", "network_header"),
            ("net_device", "ifindex"),
            ("net_device", "nd_net.net"),
            ("sock", "__sk_common.skc_net.net"),
            ("net", "ns.inum"),
        ] {
            btf.offset(s, p).unwrap_or_else(|e| panic!("{s}.{p}: {e}"));
        }
        assert!(btf.tracepoint_args("kfree_skb").unwrap() >= 3, "skb, location, reason");
        let reasons = btf.enum_values("skb_drop_reason").unwrap();
        assert!(reasons.iter().any(|(_, n)| n == "SKB_DROP_REASON_NETFILTER_DROP"));
    }
}
