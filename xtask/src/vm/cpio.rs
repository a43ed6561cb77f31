//! A writer for the `newc` cpio format, the one the kernel unpacks as an
//! initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! Each entry is a 110-byte ASCII header (`070701` and thirteen 8-digit hex
//! fields), the NUL-terminated name, padding to 4 bytes, the data, padding to
//! 4 bytes. The archive ends with an entry named `TRAILER!!!`. The kernel
//! ignores the checksum field for `070701`, so it stays 0.
//!
//! Parent directories are created on demand, so callers name only what they
//! put in. Every entry belongs to root.

use std::{
    collections::BTreeSet,
    io::{self, Write},
    path::Path,
};

use anyhow::{Context as _, bail};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
    dirs: BTreeSet<String>,
    names: BTreeSet<String>,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
            dirs: BTreeSet::new(),
            names: BTreeSet::new(),
        }
    }

    /// A directory (and its parents), mode 0755.
    pub fn dir(&mut self, path: &str) -> anyhow::Result<()> {
        let path = normalize(path)?;
        self.ensure_dir(&path)
    }

    /// A regular file with `data`.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> anyhow::Result<()> {
        let path = self.prepare(path)?;
        self.entry(&path, S_IFREG | (mode & 0o7777), 1, (0, 0), data)
    }

    /// A regular file with the contents of `source` (symlinks followed).
    pub fn file_from(&mut self, path: &str, mode: u32, source: &Path) -> anyhow::Result<()> {
        let data =
            std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
        self.file(path, mode, &data)
    }

    /// A symbolic link at `path` pointing to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> anyhow::Result<()> {
        let path = self.prepare(path)?;
        self.entry(&path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// A character device node, e.g. `dev/console` (5, 1): the kernel opens
    /// it for init's stdio before any filesystem is mounted.
    pub fn char_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> anyhow::Result<()> {
        let path = self.prepare(path)?;
        self.entry(&path, S_IFCHR | (mode & 0o7777), 1, (major, minor), &[])
    }

    /// Whether `path` was already added (as anything).
    pub fn contains(&self, path: &str) -> bool {
        normalize(path).is_ok_and(|p| self.names.contains(&p) || self.dirs.contains(&p))
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> anyhow::Result<W> {
        self.header("TRAILER!!!", 0, 0, 1, 0, (0, 0))?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn prepare(&mut self, path: &str) -> anyhow::Result<String> {
        let path = normalize(path)?;
        if self.names.contains(&path) || self.dirs.contains(&path) {
            bail!("cpio: {path} added twice");
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.ensure_dir(parent)?;
        }
        self.names.insert(path.clone());
        Ok(path)
    }

    fn ensure_dir(&mut self, path: &str) -> anyhow::Result<()> {
        if self.dirs.contains(path) {
            return Ok(());
        }
        if self.names.contains(path) {
            bail!("cpio: {path} is a file, not a directory");
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.ensure_dir(parent)?;
        }
        self.dirs.insert(path.to_owned());
        self.entry(path, S_IFDIR | 0o755, 2, (0, 0), &[])
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> anyhow::Result<()> {
        let size = u32::try_from(data.len())
            .with_context(|| format!("cpio: {name} is larger than 4 GiB"))?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.header(name, ino, mode, nlink, size, rdev)?;
        self.write(data)?;
        self.pad()
    }

    fn header(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        size: u32,
        (rmajor, rminor): (u32, u32),
    ) -> anyhow::Result<()> {
        let namesize = u32::try_from(name.len() + 1).context("cpio: name too long")?;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor
        // rdevminor namesize check. mtime 0 keeps the archive reproducible.
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rmajor, rminor, namesize, 0,
        ];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> anyhow::Result<()> {
        let padding = (4 - (self.written % 4) as usize) % 4;
        self.write(&[0; 3][..padding])?;
        Ok(())
    }
}

/// Archive names are relative (`bin/sh`, not `/bin/sh`) and plain.
fn normalize(path: &str) -> anyhow::Result<String> {
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    if trimmed.is_empty()
        || trimmed
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        bail!("cpio: bad archive path {path:?}");
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// Reads back (name, mode, rdev, data) of every entry, checking alignment.
    fn parse(mut buf: &[u8]) -> Vec<Entry> {
        let total = buf.len();
        let mut entries = Vec::new();
        loop {
            let offset = total - buf.len();
            assert_eq!(offset % 4, 0, "entry at {offset} is not 4-aligned");
            assert_eq!(&buf[..6], b"070701");
            let field = |i: usize| {
                let text = std::str::from_utf8(&buf[6 + 8 * i..14 + 8 * i]).expect("ascii");
                u32::from_str_radix(text, 16).expect("hex")
            };
            let (mode, size, rdev, namesize) =
                (field(1), field(6), (field(9), field(10)), field(11));
            let name_end = 110 + namesize as usize;
            let name = std::str::from_utf8(&buf[110..name_end - 1])
                .expect("utf-8 name")
                .to_owned();
            assert_eq!(buf[name_end - 1], 0, "name is NUL-terminated");
            let data_start = (offset + name_end).div_ceil(4) * 4 - offset;
            let data = buf[data_start..data_start + size as usize].to_vec();
            let next = (offset + data_start + size as usize).div_ceil(4) * 4 - offset;
            buf = &buf[next.min(buf.len())..];
            if name == "TRAILER!!!" {
                assert!(buf.is_empty(), "nothing after the trailer");
                return entries;
            }
            entries.push((name, mode, rdev, data));
        }
    }

    #[test]
    fn round_trips_files_links_devices_and_parents() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("/usr/sbin/tc", 0o755, b"hello").expect("file");
        w.symlink("bin/sh", "busybox").expect("link");
        w.char_device("dev/console", 0o600, 5, 1).expect("dev");
        w.file("init", 0o755, b"#!/bin/sh\n").expect("init");
        assert!(w.contains("usr/sbin") && w.contains("/usr/sbin/tc"));
        let entries = parse(&w.finish().expect("finish"));
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "usr",
                "usr/sbin",
                "usr/sbin/tc",
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "init"
            ]
        );
        assert_eq!(entries[0].1, 0o040_755);
        assert_eq!(
            (entries[2].1, entries[2].3.as_slice()),
            (0o100_755, &b"hello"[..])
        );
        assert_eq!(
            (entries[4].1, entries[4].3.as_slice()),
            (0o120_777, &b"busybox"[..])
        );
        assert_eq!((entries[6].1, entries[6].2), (0o020_600, (5, 1)));
    }

    #[test]
    fn refuses_duplicates_and_bad_paths() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("a/b", 0o644, b"").expect("file");
        assert!(w.file("a/b", 0o644, b"").is_err());
        assert!(w.file("a/b/c", 0o644, b"").is_err(), "a/b is a file");
        assert!(w.file("../etc", 0o644, b"").is_err());
        assert!(w.file("/", 0o644, b"").is_err());
    }
}
