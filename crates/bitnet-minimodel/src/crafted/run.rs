//! Running a tool on a crafted file under a memory and a wall-time limit.

use std::path::Path;

/// How a tool run on a crafted file ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The exit code; `None` when a signal ended the process or it timed out.
    pub code: Option<i32>,
    /// The signal that ended it, if any (6 is an abort, 9 our kill after a timeout).
    pub signal: Option<i32>,
    /// Whether the time limit was reached (the process was then killed).
    pub timed_out: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Outcome {
    /// One line for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "code {:?}, signal {:?}, timed out {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.signal, self.timed_out, self.stdout, self.stderr
        )
    }
}

/// Run `program args` with at most `memory` bytes of address space (`prlimit --as`, inherited
/// by the processes it starts, so a C++ reference is held to it too) and at most `timeout`
/// of wall time, after which its whole process group is killed.
///
/// # Errors
/// When `prlimit` (util-linux) cannot be started.
pub fn run_limited(
    program: &Path,
    args: &[std::ffi::OsString],
    memory: u64,
    timeout: std::time::Duration,
) -> std::io::Result<Outcome> {
    use std::io::Read;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Command, Stdio};

    let mut child = Command::new("prlimit")
        .arg(format!("--as={memory}"))
        .arg("--")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = pipe(Box::new(child.stdout.take().expect("piped")));
    let err = pipe(Box::new(child.stderr.take().expect("piped")));
    let deadline = std::time::Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            timed_out = true;
            // The negative pid names the group: the tool and any reference it started.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            break child.wait()?;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Ok(Outcome {
        code: status.code(),
        signal: status.signal(),
        timed_out,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}
