//! The release appliance is one statically linked executable: it has no program interpreter
//! (no dynamic loader, no shared libraries) and runs in an otherwise empty directory tree —
//! only /proc and /sys mounted, as nflet mounts them itself when it boots as PID 1 — up to
//! "ports up" and traffic through a DPDK port.
//!
//! Built by `cargo static` (an alias in .cargo/config.toml), which ./tests/run.sh runs first.
#![cfg(feature = "dpdk")]

use std::path::{Path, PathBuf};
use std::process::Command;

use nflet_tests::{is_root, sh, target_dir};

/// `target/x86_64-unknown-linux-gnu/release/nflet`, next to the test profile's directory.
fn static_binary() -> PathBuf {
    let p = target_dir()
        .parent()
        .map(|t| t.join("x86_64-unknown-linux-gnu/release/nflet"))
        .expect("target directory");
    assert!(p.exists(), "{} is missing: build it with `cargo static`", p.display());
    p
}

/// The ELF program header types of `path`.
fn program_headers(path: &Path) -> Vec<u32> {
    let d = std::fs::read(path).expect("binary");
    assert_eq!(&d[..4], b"\x7fELF", "an ELF file");
    assert_eq!(d[4], 2, "64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes([d[o], d[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(d[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count)
        .map(|i| {
            let o = phoff + i * size;
            u32::from_le_bytes(d[o..o + 4].try_into().expect("4 bytes"))
        })
        .collect()
}

/// Mounts that are undone on drop, innermost first.
struct Mounts(Vec<PathBuf>);

impl Drop for Mounts {
    fn drop(&mut self) {
        for m in self.0.iter().rev() {
            let _ = Command::new("umount").arg(m).status();
        }
    }
}

#[test]
fn release_binary_is_static_and_runs_in_an_empty_root() {
    assert!(is_root(), "chroot needs root; run ./tests/run.sh as root");
    let bin = static_binary();
    const PT_INTERP: u32 = 3;
    let headers = program_headers(&bin);
    assert!(!headers.is_empty());
    assert!(!headers.contains(&PT_INTERP), "the binary asks for a dynamic loader: {headers:?}");

    let root = std::env::temp_dir().join(format!("nflet-chroot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for d in ["proc", "sys"] {
        std::fs::create_dir_all(root.join(d)).expect("mount point");
    }
    std::fs::copy(&bin, root.join("nflet")).expect("copy binary");
    std::fs::write(
        root.join("nflet.toml"),
        r#"
[dpdk]
hugepages = false
mbufs = 2047

[[port]]
name = "gen"
kind = "generator"
flows = 10
count = 1000

[[port]]
name = "out"
kind = "dpdk"
device = "net_null0"

[[chain]]
name = "c"
ingress = ["gen"]
steps = []
output = "out"
"#,
    )
    .expect("config");
    let mut mounts = Mounts(Vec::new());
    for (fs, dir) in [("proc", "proc"), ("sysfs", "sys")] {
        let target = root.join(dir);
        sh(&["mount", "-t", fs, fs, target.to_str().expect("utf-8 path")]);
        mounts.0.push(target);
    }
    let entries: Vec<String> = std::fs::read_dir(&root)
        .expect("root")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries.len(), 4, "nothing but the binary, its config and two mount points: {entries:?}");

    let out = Command::new("chroot")
        .arg(&root)
        .args(["/nflet", "run", "-q", "-c", "/nflet.toml", "--duration", "2"])
        .output()
        .expect("chroot");
    drop(mounts);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "nflet failed in the empty root:\n{stderr}");
    assert!(stderr.contains("ports up: gen, out"), "{stderr}");
    let out_line = stdout.lines().find(|l| l.trim_start().starts_with("out ")).unwrap_or_default();
    let numbers: Vec<u64> = out_line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert_eq!(numbers.get(1), Some(&1000), "all generated frames left through the DPDK port:\n{stdout}");
    let _ = std::fs::remove_dir_all(&root);
}
