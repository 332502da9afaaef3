//! Namespaces, processes and commands for the bench worlds. Everything made here is
//! removed on drop (testing.md: own namespaces only, nothing left behind).

use std::{
    fs::File,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// Runs a command and fails with its stderr if it does not succeed; returns stdout.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    check(cmd, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check(cmd: &Command, out: &Output) -> Result<()> {
    if out.status.success() {
        Ok(())
    } else {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

/// A named network namespace with `lo` up, deleted on drop.
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new(name: String) -> Result<Self> {
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    /// `ip -n NS ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs inside the namespace. nsenter (not `ip netns exec`) keeps /sys
    /// and bpffs visible, and it execs in place, so the child's pid is the command's.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display()))
            .arg(program)
            // Error messages of our own agent stay one line.
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0");
        cmd
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        run(self
            .cmd("sysctl")
            .args(["-q", "-w", &format!("{key}={value}")]))
        .map(drop)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A child process killed (SIGTERM, then SIGKILL after 5 s) and reaped on drop.
pub struct Proc {
    child: Child,
}

impl Proc {
    pub fn spawn(what: &str, cmd: &mut Command, log: Option<&Path>) -> Result<Self> {
        let stderr = match log {
            Some(path) => Stdio::from(File::create(path)?),
            None => Stdio::null(),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Self { child })
    }

    /// Starts a process that signals readiness on fd 3 the way Docker's `docker-proxy`
    /// (20.10) does: it writes "0\n" when it listens, or "1\n<error>" and exits.
    pub fn spawn_fd3(what: &str, cmd: &mut Command) -> Result<Self> {
        let (read, write) = pipe()?;
        let write_fd = write.as_raw_fd();
        // SAFETY: dup2 is async-signal-safe; it runs in the child between fork and exec.
        // dup2 clears close-on-exec on fd 3, so the proxy inherits it through nsenter.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(write_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let proc = Self::spawn(what, cmd, None)?;
        drop(write);
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut File::from(read), &mut answer)?;
        if !answer.starts_with('0') {
            bail!("{what} did not start: {}", answer.trim());
        }
        Ok(proc)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling our own, not yet reaped, child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors that we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
pub fn proc_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Waits until `probe` returns true, for at most `limit`.
pub fn wait_for(what: &str, limit: Duration, mut probe: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if probe() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} not ready after {limit:?}")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
