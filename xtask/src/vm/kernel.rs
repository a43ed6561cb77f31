//! The pinned kernel matrix, fetched from Debian's mirror with `apt-get
//! download`, unpacked with `dpkg-deb -x` and cached. The kernel modules the
//! tests need are found in the unpacked tree and their dependencies resolved
//! from each module's `.modinfo` (the package ships no modules.dep: depmod
//! runs in its postinst, and kmod may not even be installed here).

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::util::cmd_output;

/// One kernel of the matrix.
#[derive(Debug, Clone, Copy)]
pub struct KernelSpec {
    /// Column name in the summary table and log file stem.
    pub name: &'static str,
    /// The pinned package: the newest of its series when pinned.
    pub package: &'static str,
    /// The series, as (prefix, suffix) of package names, for the fallback
    /// when the pinned package has left the mirror.
    pub series: (&'static str, &'static str),
    /// What this kernel offers, as checked by tests/tests/caps.rs
    /// (FAULTD_EXPECT_FEATURES). Known from Debian's config and verified in
    /// the VM; booted with `lsm=...,bpf`.
    pub expect_features: &'static str,
}

/// Debian bookworm's cloud kernels: 6.1 (the release kernel) and 6.12
/// (bookworm-backports / security). Both have CONFIG_BPF_LSM=y,
/// CONFIG_DEBUG_INFO_BTF=y and fq, netem, ifb and veth as modules; TCX came
/// in 6.6.
pub const MATRIX: &[KernelSpec] = &[
    KernelSpec {
        name: "debian-6.1",
        package: "linux-image-6.1.0-56-cloud-amd64-unsigned",
        series: ("linux-image-6.1.0-", "-cloud-amd64-unsigned"),
        // Debian has no CONFIG_FUNCTION_ERROR_INJECTION, so no kprobe override.
        expect_features: "bpf_lsm=1,lsm_cgroup=1,btf=1,fq_qdisc=1,tcx=0,bpf_link_cgroup=1,\
                          cgroup_skb=1,bpf_set_retval=1,cgroup_sock_hooks=1,path_filter=1,\
                          kprobe_override=0",
    },
    KernelSpec {
        name: "debian-6.12",
        package: "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
        series: ("linux-image-6.12.", "+deb12-cloud-amd64-unsigned"),
        expect_features: "bpf_lsm=1,lsm_cgroup=1,btf=1,fq_qdisc=1,tcx=1,bpf_link_cgroup=1,\
                          cgroup_skb=1,bpf_set_retval=1,cgroup_sock_hooks=1,path_filter=1,\
                          kprobe_override=0",
    },
];

/// Modules the tests (and the agent's fq probe) need, loaded with their
/// dependencies in dependency order. A name the kernel has built in is fine.
pub const MODULES: &[&str] = &[
    "sch_fq",      // EDT delay, the agent's fq probe
    "sch_netem",   // delay/loss reference for comparisons
    "ifb",         // ingress shaping via redirect
    "veth",        // namespaced test topologies
    "sch_ingress", // clsact, for tc programs on pre-TCX kernels
    "cls_bpf",     // tc BPF classifier (netlink attach before 6.6)
    "act_mirred",  // tc redirect to ifb
    "bridge",      // the lab's hub, for the drill (with stp and llc)
];

/// A kernel unpacked in the cache.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub spec: KernelSpec,
    /// The package actually used (the pinned one unless it left the mirror).
    pub package: String,
    /// `uname -r` of this kernel, from its lib/modules directory.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `<unpacked>/lib/modules/<release>`.
    pub modules_dir: PathBuf,
}

/// Makes every kernel of `specs` available, downloading and unpacking what
/// the cache lacks.
pub fn fetch_all(cache: &Path, specs: &[KernelSpec]) -> anyhow::Result<Vec<Kernel>> {
    specs.iter().map(|spec| fetch(cache, *spec)).collect()
}

/// Whether the pinned package of `spec` is unpacked in the cache.
pub fn is_cached(cache: &Path, spec: KernelSpec) -> bool {
    unpacked(&cache.join("kernels"), spec, spec.package).is_ok_and(|k| k.is_some())
}

fn fetch(cache: &Path, spec: KernelSpec) -> anyhow::Result<Kernel> {
    let kernels = cache.join("kernels");
    if let Some(kernel) = unpacked(&kernels, spec, spec.package)? {
        return Ok(kernel);
    }
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let (package, deb) = match download(&debs, spec.package) {
        Ok(deb) => (spec.package.to_owned(), deb),
        Err(pinned_err) => {
            let newest = newest_of_series(spec.series).with_context(|| {
                format!("downloading the pinned {}: {pinned_err:#}", spec.package)
            })?;
            eprintln!(
                "vm: WARNING: pinned kernel {} is not available ({pinned_err:#}); using the \
                 newest of its series, {newest}. Update MATRIX in xtask/src/vm/kernel.rs.",
                spec.package
            );
            if let Some(kernel) = unpacked(&kernels, spec, &newest)? {
                return Ok(kernel);
            }
            let deb = download(&debs, &newest)?;
            (newest, deb)
        }
    };
    let dest = kernels.join(&package);
    let tmp = kernels.join(format!(".{package}.partial"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    eprintln!("vm: unpacking {}", deb.display());
    cmd_output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
    let _ = fs::remove_dir_all(&dest);
    fs::rename(&tmp, &dest).with_context(|| format!("renaming to {}", dest.display()))?;
    // The .deb is only needed until it is unpacked.
    let _ = fs::remove_file(&deb);
    unpacked(&kernels, spec, &package)?
        .with_context(|| format!("{package} unpacked without a vmlinuz or lib/modules"))
}

/// The kernel if `package` is fully unpacked under `kernels/` (the directory
/// appears only after `dpkg-deb -x` succeeded).
fn unpacked(kernels: &Path, spec: KernelSpec, package: &str) -> anyhow::Result<Option<Kernel>> {
    let root = kernels.join(package);
    let modules = root.join("lib/modules");
    let Ok(entries) = fs::read_dir(&modules) else {
        return Ok(None);
    };
    let mut releases: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    releases.sort();
    let [release] = releases.as_slice() else {
        bail!(
            "{} should hold one kernel release, has {releases:?}",
            modules.display()
        );
    };
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        return Ok(None);
    }
    Ok(Some(Kernel {
        spec,
        package: package.to_owned(),
        release: release.clone(),
        vmlinuz,
        modules_dir: modules.join(release),
    }))
}

fn download(dir: &Path, package: &str) -> anyhow::Result<PathBuf> {
    if let Err(first) = try_download(dir, package) {
        // A fresh image's apt lists can be months old and miss the pinned
        // package (or its whole series); update once and try again.
        eprintln!("vm: {first:#}; updating apt's lists and retrying");
        crate::install::apt_update()?;
        try_download(dir, package)?;
    }
    deb_in(dir, package)
}

/// `apt-get download`, its progress on the terminal and its `E:` lines in
/// the error.
fn try_download(dir: &Path, package: &str) -> anyhow::Result<()> {
    eprintln!("vm: downloading {package}");
    let out = Command::new("apt-get")
        .args(["download", "-q", package])
        .current_dir(dir)
        .stdout(std::process::Stdio::inherit())
        .output()
        .context("running apt-get (is this a Debian machine?)")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("E:"))
            .collect();
        bail!("apt-get download {package}: {}", errors.join("; "));
    }
    Ok(())
}

fn deb_in(dir: &Path, package: &str) -> anyhow::Result<PathBuf> {
    // apt names the file <package>_<version>_<arch>.deb.
    let prefix = format!("{package}_");
    fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .with_context(|| {
            format!(
                "apt-get download {package} left no .deb in {}",
                dir.display()
            )
        })
}

/// The newest package of a series in apt's lists, by the number between
/// prefix and suffix (the ABI for 6.1, the patch level for 6.12).
fn newest_of_series((prefix, suffix): (&str, &str)) -> anyhow::Result<String> {
    let pattern = format!("^{}[0-9]+{}$", regex_escape(prefix), regex_escape(suffix));
    let listing = cmd_output(Command::new("apt-cache").args(["search", "--names-only", &pattern]))?;
    let names: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    newest(&names, prefix, suffix)
        .map(str::to_owned)
        .with_context(|| {
            format!("apt-cache knows no {prefix}N{suffix}; run `apt-get update` and retry")
        })
}

fn newest<'a>(names: &[&'a str], prefix: &str, suffix: &str) -> Option<&'a str> {
    names
        .iter()
        .filter_map(|n| {
            let number: u64 = n.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()?;
            Some((number, *n))
        })
        .max()
        .map(|(_, n)| n)
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escape = ".+*?()[]{}|^$\\".contains(c);
            escape.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// A module file of the kernel, ready to insmod.
#[derive(Debug, Clone)]
pub struct Module {
    pub name: String,
    /// Decompressed copy in the cache.
    pub path: PathBuf,
}

/// `wanted` and every module they depend on, dependencies first, each
/// decompressed into `<modules_dir>/../../../faultd-decompressed/`. Modules
/// the kernel has built in (modules.builtin) are left out.
pub fn resolve_modules(kernel: &Kernel, wanted: &[&str]) -> anyhow::Result<Vec<Module>> {
    let index = module_index(&kernel.modules_dir)?;
    let builtin =
        fs::read_to_string(kernel.modules_dir.join("modules.builtin")).unwrap_or_default();
    let builtin: Vec<String> = builtin
        .lines()
        .filter_map(|l| Path::new(l).file_name()?.to_str())
        .map(|f| canonical(f.trim_end_matches(".ko")))
        .collect();
    let out_dir = kernel
        .modules_dir
        .ancestors()
        .nth(3)
        .context("modules dir has no package root")?
        .join("faultd-decompressed");
    fs::create_dir_all(&out_dir)?;

    let mut order = Vec::new();
    let mut visiting = Vec::new();
    for name in wanted {
        visit(
            &canonical(name),
            &index,
            &builtin,
            &out_dir,
            &mut order,
            &mut visiting,
        )?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    index: &BTreeMap<String, PathBuf>,
    builtin: &[String],
    out_dir: &Path,
    order: &mut Vec<Module>,
    visiting: &mut Vec<String>,
) -> anyhow::Result<()> {
    if order.iter().any(|m| m.name == name) {
        return Ok(());
    }
    if visiting.iter().any(|v| v == name) {
        bail!(
            "module dependency cycle: {} -> {name}",
            visiting.join(" -> ")
        );
    }
    let Some(source) = index.get(name) else {
        if builtin.iter().any(|b| b == name) {
            return Ok(());
        }
        bail!("kernel module {name} is neither a module nor built in");
    };
    let path = out_dir.join(format!("{name}.ko"));
    if !path.is_file() {
        decompress(source, &path)?;
    }
    let data = fs::read(&path)?;
    let depends = modinfo(&data, "depends")
        .with_context(|| format!("reading .modinfo of {}", source.display()))?;
    visiting.push(name.to_owned());
    for dep in depends.split(',').filter(|d| !d.is_empty()) {
        visit(&canonical(dep), index, builtin, out_dir, order, visiting)?;
    }
    visiting.pop();
    order.push(Module {
        name: name.to_owned(),
        path,
    });
    Ok(())
}

/// Module names treat `-` and `_` alike (kmod's `modname_normalize`).
fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// Module name -> file, for every `.ko`, `.ko.xz`, `.ko.zst` or `.ko.gz`
/// under `modules_dir`.
fn module_index(modules_dir: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut index = BTreeMap::new();
    let mut stack = vec![modules_dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                .iter()
                .find_map(|ext| file.strip_suffix(ext));
            if let Some(stem) = stem {
                index.insert(canonical(stem), path);
            }
        }
    }
    Ok(index)
}

fn decompress(source: &Path, dest: &Path) -> anyhow::Result<()> {
    let name = source.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    let tmp = dest.with_extension("ko.partial");
    match tool {
        None => {
            fs::copy(source, &tmp)?;
        }
        Some(tool) => {
            let out = Command::new(tool)
                .arg("-dc")
                .arg(source)
                .output()
                .with_context(|| {
                    format!("running {tool} for {name}; run `cargo xtask setup` to install it")
                })?;
            if !out.status.success() {
                bail!(
                    "{tool} -dc {name}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            fs::write(&tmp, out.stdout)?;
        }
    }
    fs::rename(&tmp, dest)?;
    Ok(())
}

/// The value of `key` in an ELF module's `.modinfo` section (NUL-separated
/// `key=value` strings; include/linux/moduleparam.h, `__MODULE_INFO`).
/// Empty when the key is absent.
fn modinfo(elf: &[u8], key: &str) -> anyhow::Result<String> {
    let section = elf_section(elf, ".modinfo")?.context("no .modinfo section")?;
    let prefix = format!("{key}=");
    Ok(section
        .split(|b| *b == 0)
        .filter_map(|s| std::str::from_utf8(s).ok())
        .find_map(|s| s.strip_prefix(&prefix))
        .unwrap_or_default()
        .to_owned())
}

/// The bytes of a named section of a little-endian ELF64 file.
fn elf_section<'a>(elf: &'a [u8], wanted: &str) -> anyhow::Result<Option<&'a [u8]>> {
    let get = |offset: usize, len: usize| -> anyhow::Result<&'a [u8]> {
        elf.get(offset..offset + len).context("ELF file truncated")
    };
    let u16_at = |o: usize| -> anyhow::Result<usize> {
        let b = get(o, 2)?;
        Ok(usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let u64_at = |o: usize| -> anyhow::Result<usize> {
        let b: [u8; 8] = get(o, 8)?.try_into()?;
        Ok(usize::try_from(u64::from_le_bytes(b))?)
    };
    let u32_at = |o: usize| -> anyhow::Result<usize> {
        let b: [u8; 4] = get(o, 4)?.try_into()?;
        Ok(usize::try_from(u32::from_le_bytes(b))?)
    };
    // e_ident: magic, ELFCLASS64 (2), ELFDATA2LSB (1).
    if get(0, 6)? != b"\x7fELF\x02\x01" {
        bail!("not a little-endian ELF64 file");
    }
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?, u16_at(0x3e)?);
    let section = |i: usize| -> anyhow::Result<(usize, &'a [u8])> {
        let h = shoff + i * shentsize;
        let (name, offset, size) = (u32_at(h)?, u64_at(h + 0x18)?, u64_at(h + 0x20)?);
        Ok((name, get(offset, size)?))
    };
    let (_, names) = section(shstrndx)?;
    for i in 0..shnum {
        let (name_offset, data) = section(i)?;
        let name = names
            .get(name_offset..)
            .and_then(|n| n.split(|b| *b == 0).next())
            .unwrap_or_default();
        if name == wanted.as_bytes() {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_newest_of_a_series_numerically() {
        let names = [
            "linux-image-6.12.99+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.115+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.120+deb12-cloud-amd64-dbg",
        ];
        assert_eq!(
            newest(&names, "linux-image-6.12.", "+deb12-cloud-amd64-unsigned"),
            Some("linux-image-6.12.117+deb12-cloud-amd64-unsigned")
        );
        assert_eq!(
            newest(&names, "linux-image-6.1.0-", "-cloud-amd64-unsigned"),
            None
        );
    }

    #[test]
    fn escapes_regex_metacharacters() {
        assert_eq!(regex_escape("6.12.+deb"), "6\\.12\\.\\+deb");
    }

    #[test]
    fn pinned_packages_belong_to_their_series() {
        for spec in MATRIX {
            let (prefix, suffix) = spec.series;
            assert!(
                newest(&[spec.package], prefix, suffix).is_some(),
                "{} is not in its series",
                spec.package
            );
        }
    }

    /// A minimal ELF64 with a section-name table and a .modinfo section.
    fn tiny_module(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let shstrtab_off = elf.len();
        elf.extend_from_slice(shstrtab);
        let modinfo_off = elf.len();
        elf.extend_from_slice(modinfo);
        let shoff = elf.len();
        let mut header = |name: u32, offset: usize, size: usize| {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(offset as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        header(0, 0, 0);
        header(1, shstrtab_off, shstrtab.len());
        header(11, modinfo_off, modinfo.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn reads_depends_from_modinfo() {
        let elf = tiny_module(b"license=GPL\0depends=nf_conntrack,libcrc32c\0name=x\0");
        assert_eq!(
            modinfo(&elf, "depends").expect("modinfo"),
            "nf_conntrack,libcrc32c"
        );
        assert_eq!(modinfo(&elf, "softdep").expect("modinfo"), "");
        assert!(modinfo(b"not elf at all", "depends").is_err());
    }
}
