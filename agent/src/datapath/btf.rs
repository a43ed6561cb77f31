//! Reads struct member offsets from the kernel's BTF
//! (/sys/kernel/btf/vmlinux), which the path-prefix filter needs: Rust eBPF
//! programs get no CO-RE relocations, so the agent looks the layout up and
//! hands the offsets to the programs as read-only globals.
//!
//! Format: include/uapi/linux/btf.h and Documentation/bpf/btf.rst.

use std::collections::HashMap;

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("kernel BTF: {0}")]
    Format(&'static str),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
}

/// Byte offsets of the members the path walk reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileOffsets {
    /// `file.f_path` + `path.dentry`.
    pub file_dentry: u32,
    pub dentry_parent: u32,
    pub dentry_inode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
}

/// The structs and unions of a BTF blob: members (name, type id, byte
/// offset) by type id, and named structs by name.
#[derive(Debug, Default)]
pub struct Structs {
    members: HashMap<u32, Vec<(String, u32, u32)>>,
    by_name: HashMap<String, u32>,
}

impl Structs {
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let u32_at = |o: usize| {
            data.get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if u16_at(0) != Some(BTF_MAGIC) {
            return Err(BtfError::Format("bad magic (not little-endian BTF)"));
        }
        let field = |o| {
            u32_at(o)
                .map(|v| v as usize)
                .ok_or(BtfError::Format("short header"))
        };
        let hdr_len = field(4)?;
        let (type_off, type_len, str_off, str_len) =
            (field(8)?, field(12)?, field(16)?, field(20)?);
        let types = hdr_len + type_off;
        let strings = hdr_len + str_off;
        if data.len() < strings + str_len || data.len() < types + type_len {
            return Err(BtfError::Format("sections past the end"));
        }
        let string_section = &data[strings..strings + str_len];
        // A name offset past the string section names nothing (the
        // `btf` fuzz target found the slice this used to index past it).
        let name = |off: u32| -> String {
            let Some(rest) = string_section.get(off as usize..) else {
                return String::new();
            };
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end]).into_owned()
        };
        let mut out = Self::default();
        let mut at = types;
        let end = types + type_len;
        // Type ids count from 1 in section order (0 is void).
        let mut id = 0u32;
        while at + 12 <= end {
            id += 1;
            let (name_off, info) = (u32_at(at).unwrap_or(0), u32_at(at + 4).unwrap_or(0));
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kflag = info >> 31 == 1;
            at += 12;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for m in 0..vlen {
                        let base = at + m * 12;
                        let (Some(m_name), Some(m_type), Some(offset)) =
                            (u32_at(base), u32_at(base + 4), u32_at(base + 8))
                        else {
                            return Err(BtfError::Format("truncated struct"));
                        };
                        // With kflag the low 24 bits are the bit offset.
                        let bits = if kflag { offset & 0x00ff_ffff } else { offset };
                        if bits % 8 == 0 {
                            members.push((name(m_name), m_type, bits / 8));
                        }
                    }
                    let strukt = name(name_off);
                    if kind == KIND_STRUCT && !strukt.is_empty() {
                        out.by_name.entry(strukt).or_insert(id);
                    }
                    out.members.insert(id, members);
                    vlen * 12
                }
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                _ => 0,
            };
            at += extra;
        }
        Ok(out)
    }

    /// Byte offset of `member` in struct `strukt`, looking through anonymous
    /// unions and structs (6.x wraps `file.f_path` in one).
    pub fn offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .by_name
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        self.find(id, member, 0).ok_or_else(|| BtfError::NoMember {
            strukt: strukt.to_owned(),
            member: member.to_owned(),
        })
    }

    fn find(&self, id: u32, member: &str, depth: u32) -> Option<u32> {
        let members = self.members.get(&id)?;
        if let Some((_, _, off)) = members.iter().find(|(n, _, _)| n == member) {
            return Some(*off);
        }
        if depth >= 4 {
            return None;
        }
        members
            .iter()
            .filter(|(n, _, _)| n.is_empty())
            .find_map(|(_, ty, off)| self.find(*ty, member, depth + 1).map(|inner| off + inner))
    }

    pub fn file_offsets(&self) -> Result<FileOffsets, BtfError> {
        Ok(FileOffsets {
            file_dentry: self.offset("file", "f_path")? + self.offset("path", "dentry")?,
            dentry_parent: self.offset("dentry", "d_parent")?,
            dentry_inode: self.offset("dentry", "d_inode")?,
            inode_ino: self.offset("inode", "i_ino")?,
            inode_sb: self.offset("inode", "i_sb")?,
            sb_dev: self.offset("super_block", "s_dev")?,
        })
    }
}

/// The running kernel's offsets, or why they are unknown.
pub fn kernel_file_offsets() -> Result<FileOffsets, String> {
    let data = std::fs::read("/sys/kernel/btf/vmlinux")
        .map_err(|e| format!("reading /sys/kernel/btf/vmlinux: {e}"))?;
    Structs::parse(&data)
        .and_then(|s| s.file_offsets())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage() {
        assert!(Structs::parse(b"not btf").is_err());
    }

    /// Inputs the `btf` fuzz target found crashing the parser, kept in
    /// fuzz/regressions/btf: each parses or is refused, without a panic.
    #[test]
    fn fuzz_regressions_do_not_panic() {
        for data in crate::fuzz_regressions("btf") {
            if let Ok(s) = Structs::parse(&data) {
                let _ = s.file_offsets();
            }
        }
    }

    /// A struct whose name offset points past the string section: it has no
    /// name, and the rest of the blob still parses.
    #[test]
    fn a_name_past_the_strings_is_empty() {
        let mut blob = Vec::new();
        blob.extend(BTF_MAGIC.to_le_bytes());
        blob.extend([1u8, 0]);
        // Header: len 24, types at 0 (12 bytes: one struct, no members),
        // strings at 12 (2 bytes).
        for w in [24u32, 0, 12, 12, 2] {
            blob.extend(w.to_le_bytes());
        }
        for w in [0xdead_beefu32, KIND_STRUCT << 24, 8] {
            blob.extend(w.to_le_bytes());
        }
        blob.extend([0u8, 0]);
        let structs = Structs::parse(&blob).expect("parses");
        assert!(structs.by_name.is_empty());
        assert_eq!(structs.members.len(), 1);
    }

    /// The host's own BTF: every member the walk needs is found, and the
    /// offsets are plausible (inside the structs' first pages).
    #[test]
    fn reads_this_kernels_offsets() {
        match kernel_file_offsets() {
            Ok(o) => {
                for v in [
                    o.file_dentry,
                    o.dentry_parent,
                    o.dentry_inode,
                    o.inode_ino,
                    o.inode_sb,
                    o.sb_dev,
                ] {
                    assert!(v < 4096, "{o:?}");
                }
                assert_ne!(o.dentry_parent, o.dentry_inode);
                println!("{o:?}");
            }
            Err(e) => println!("SKIP: reads_this_kernels_offsets: {e}"),
        }
    }
}
