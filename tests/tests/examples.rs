//! The shipped example configurations stay valid, and the in-memory one runs.

use std::process::Command;

use nflet_tests::binary;

fn examples() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    assert!(v.len() >= 3, "examples missing in {}", dir.display());
    v
}

#[test]
fn every_example_passes_check() {
    for path in examples() {
        let out = Command::new(binary("nflet")).arg("check").arg("-c").arg(&path).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        assert!(text.contains(": ok"), "{text}");
    }
}

#[test]
fn the_generator_example_forwards_traffic() {
    let path = examples().into_iter().find(|p| p.ends_with("generator-bench.toml")).unwrap();
    let out = Command::new(binary("nflet"))
        .args(["run", "-q", "--duration", "1", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // "received N frames ..., transmitted M frames ..., dropped D"
    let line = text.lines().find(|l| l.starts_with("received ")).unwrap();
    let nums: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    let (received, transmitted, dropped) = (nums[0], nums[1], nums[2]);
    assert!(received > 1000, "{text}");
    assert_eq!(received, transmitted + dropped, "every frame is accounted for: {text}");
    assert!(transmitted > 0, "{text}");
}
