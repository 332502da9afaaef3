//! The test world of ../shared/docs/testing.md: a throwaway "host" namespace where the real
//! `netdriver` daemon runs, an "external" namespace joined to it by a veth uplink
//! (198.51.100.0/24), and one namespace per container. Everything is removed on drop.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::{
    fs::File,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::{fd::AsRawFd, unix::net::UnixStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;

pub const HOST_IP: &str = "198.51.100.1";
pub const EXT_IP: &str = "198.51.100.2";
/// How long a client waits for an answer that should come.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// How long a client waits to conclude that no answer comes.
pub const SILENCE: Duration = Duration::from_millis(1500);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique short tag per test world: `<pid mod 10000><counter>`.
fn unique_tag() -> String {
    format!(
        "{}{}",
        std::process::id() % 10000,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// The netdriver binary under test (`cargo xtask test` sets `NETDRIVER_BIN`).
pub fn netdriver_bin() -> PathBuf {
    let bin = std::env::var_os("NETDRIVER_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/netdriver"),
        PathBuf::from,
    );
    assert!(
        bin.is_file(),
        "netdriver binary {} missing: run `cargo xtask test`",
        bin.display()
    );
    bin
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests need root (network namespaces, BPF): run `cargo xtask test` as root"
    );
}

pub fn sh(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"))
}

/// Runs a command and panics with its stderr if it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = sh(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Self {
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Self { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    /// `ip -n NS ARGS...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs a command inside the namespace (nsenter keeps /sys and bpffs visible).
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Output {
        let net = format!("--net={}", self.path().display());
        let mut all = vec![net.as_str(), cmd];
        all.extend_from_slice(args);
        sh("nsenter", &all)
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("namespace thread panicked")
    }

    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &Path) {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: a valid namespace fd; setns affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh("ip", &["netns", "del", &self.name]);
    }
}

/// The host and external namespaces, linked by the uplink veth.
pub struct World {
    pub tag: String,
    pub host: Netns,
    pub ext: Netns,
    containers: Vec<Netns>,
}

impl World {
    pub fn new() -> Self {
        require_root();
        let tag = unique_tag();
        let host = Netns::new(format!("ndt{tag}h"));
        let ext = Netns::new(format!("ndt{tag}e"));
        host.ip(&[
            "link", "add", "up0", "type", "veth", "peer", "name", "ext0", "netns", &ext.name,
        ]);
        host.ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", "up0"]);
        host.ip(&["link", "set", "up0", "up"]);
        ext.ip(&["addr", "add", &format!("{EXT_IP}/24"), "dev", "ext0"]);
        ext.ip(&["link", "set", "ext0", "up"]);
        Self {
            tag,
            host,
            ext,
            containers: Vec::new(),
        }
    }

    /// A new container namespace; returns its netns path.
    pub fn container(&mut self, role: &str) -> PathBuf {
        let ns = Netns::new(format!("ndt{}c{role}", self.tag));
        let path = ns.path();
        self.containers.push(ns);
        path
    }

    /// Deletes a container namespace (the container went away).
    pub fn remove_container(&mut self, role: &str) {
        let name = format!("ndt{}c{role}", self.tag);
        self.containers.retain(|c| c.name != name);
    }

    pub fn container_ns(&self, role: &str) -> &Netns {
        let name = format!("ndt{}c{role}", self.tag);
        self.containers
            .iter()
            .find(|c| c.name == name)
            .expect("container exists")
    }

    /// Starts the daemon in the host namespace.
    pub fn daemon(&self) -> Daemon {
        Daemon::start(self, &[])
    }
}

/// The real `netdriver daemon` in the host namespace; SIGTERM and cleanup on drop.
pub struct Daemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub bpffs: PathBuf,
    host_ns: PathBuf,
    extra: Vec<String>,
}

impl Daemon {
    pub fn start(world: &World, extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("ndt{}", world.tag));
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = Self {
            child: None,
            socket: dir.join("nd.sock"),
            bpffs: PathBuf::from(format!("/sys/fs/bpf/ndt{}", world.tag)),
            dir,
            host_ns: world.host.path(),
            extra: extra.iter().map(ToString::to_string).collect(),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let resolv = self.dir.join("resolv.conf");
        if !resolv.exists() {
            std::fs::write(&resolv, "nameserver 203.0.113.53\n").unwrap();
        }
        let log = File::create(self.dir.join("daemon.log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.host_ns.display()))
            .arg(netdriver_bin())
            .arg("--socket")
            .arg(&self.socket)
            .arg("daemon")
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--bpffs")
            .arg(&self.bpffs)
            .arg("--resolv-conf")
            .arg(&resolv)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn netdriver daemon");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited early ({status}):\n{}", self.log());
            }
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon not ready after 20s:\n{}", self.log());
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = i32::try_from(child.id()).unwrap();
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("daemon ignored SIGTERM for 10s");
        }
    }

    /// Kills the daemon with SIGKILL: no cleanup of any kind.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Runs the CLI against this daemon: (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(netdriver_bin())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run netdriver CLI");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs the CLI with `--json` and expects success.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (ok, out, err) = self.cli(&all);
        assert!(
            ok,
            "netdriver {}: {err}\ndaemon log:\n{}",
            args.join(" "),
            self.log()
        );
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("bad JSON from netdriver {}: {e}: {out}", args.join(" ")))
    }

    /// Runs the CLI and expects a failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.cli(args);
        assert!(
            !ok,
            "netdriver {} should fail, printed {out}",
            args.join(" ")
        );
        assert_eq!(
            err.trim().lines().count(),
            1,
            "expected a one-line error, got {err:?}"
        );
        err
    }

    /// A raw HTTP request on the API socket: (status, body).
    pub fn http(&self, raw: &str) -> (u16, String) {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The daemon may answer and close before reading an oversized request to the end.
        let _ = s.write_all(raw.as_bytes());
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.bpffs);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP server in a namespace that answers every connection with
/// `"<tag> saw <peer address>"` and records what it received. Stops on drop.
pub struct TcpServer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl TcpServer {
    pub fn start(ns: &Netns, addr: &str, tag: &'static str) -> Self {
        let addr: SocketAddr = addr.parse().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = ns.spawn(move || {
            let listener = TcpListener::bind(addr).expect("bind test server");
            listener.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            serve_tcp(&listener, &flag, tag);
        });
        rx.recv_timeout(TIMEOUT).expect("server started");
        Self {
            stop,
            handle: Some(handle),
        }
    }
}

/// Serves for at most 120 s (bounded even if the test forgets to stop it).
fn serve_tcp(listener: &TcpListener, stop: &AtomicBool, tag: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        match listener.accept() {
            Ok((mut conn, peer)) => {
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(TIMEOUT)).unwrap();
                let mut buf = [0u8; 64];
                let n = conn.read(&mut buf).unwrap_or(0);
                let msg = String::from_utf8_lossy(&buf[..n]);
                let _ = conn.write_all(format!("{tag} saw {} said {msg}", peer.ip()).as_bytes());
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A UDP server answering every datagram with `"<tag> saw <peer address>"`.
pub struct UdpServer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl UdpServer {
    pub fn start(ns: &Netns, addr: &str, tag: &'static str) -> Self {
        let addr: SocketAddr = addr.parse().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = ns.spawn(move || {
            let sock = UdpSocket::bind(addr).expect("bind udp server");
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            tx.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut buf = [0u8; 64];
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                if let Ok((_, peer)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(format!("{tag} saw {}", peer.ip()).as_bytes(), peer);
                }
            }
        });
        rx.recv_timeout(TIMEOUT).expect("server started");
        Self {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Connects from `ns` to `addr`, says hello, returns the answer (Err on refusal or timeout).
pub fn tcp_request(ns: &Netns, addr: &str, wait: Duration) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&addr, wait).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(wait)).unwrap();
        s.write_all(b"hello").map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    })
}

/// Sends one datagram from `ns` and waits for one answer.
pub fn udp_request(ns: &Netns, addr: &str, wait: Duration) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.run(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(wait)).unwrap();
        s.send_to(b"hello", addr).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 128];
        let (n, _) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}
