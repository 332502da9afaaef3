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

pub mod dockerd;
pub mod sctp;
pub mod sockets;

pub const HOST_IP: &str = "198.51.100.1";
pub const EXT_IP: &str = "198.51.100.2";
/// A server "on the internet": an address of the external namespace behind a route
/// (see [`World::route_outside`]).
pub const OUTSIDE_IP: &str = "203.0.113.10";
/// The IPv6 addresses of the uplink (host side) and of the external namespace, on one /64
/// (see [`World::ipv6_uplink`]).
pub const HOST_IP6: &str = "2001:db8:ff::1";
pub const EXT_IP6: &str = "2001:db8:ff::2";
/// How long a client waits for an answer that should come.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// How long a client waits to conclude that no answer comes.
pub const SILENCE: Duration = Duration::from_millis(1500);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// `op` (one socket read), again while a signal interrupts it (for at most 60 s). A read
/// with a timeout (`SO_RCVTIMEO`) is not restarted after a signal, even one that is then
/// ignored, and this process does get such signals: when a short-lived child (`ip`,
/// `bpftool`) exits before glibc's `posix_spawn` has unblocked signals in the thread that
/// spawned it (a loaded machine), its `SIGCHLD` is queued and wakes another thread.
/// `read_exact`, `read_to_string` and `write_all` retry by themselves; a plain `read`,
/// `recv` or `recv_from` needs this.
pub fn retry_interrupted<T>(mut op: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let start = Instant::now();
    loop {
        match op() {
            Err(e)
                if e.kind() == std::io::ErrorKind::Interrupted
                    && start.elapsed() < Duration::from_secs(60) => {}
            result => return result,
        }
    }
}

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

/// `ETHTOOL_STXCSUM` from linux/ethtool.h.
const ETHTOOL_STXCSUM: u32 = 0x17;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct IfreqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// Turns tx checksum offload off on `ifname` in `ns`.
pub fn tx_checksum_off(ns: &Netns, ifname: &'static str) {
    ns.run(move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let mut value = EthtoolValue {
            cmd: ETHTOOL_STXCSUM,
            data: 0,
        };
        let mut req = IfreqData {
            name: [0; libc::IFNAMSIZ],
            data: (&raw mut value).cast(),
            _pad: [0; 16],
        };
        for (dst, src) in req.name.iter_mut().zip(ifname.bytes()) {
            *dst = src.cast_signed();
        }
        // SAFETY: a valid ifreq pointing at a live ethtool_value.
        let rc = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                libc::SIOCETHTOOL,
                &raw mut req,
            )
        };
        assert_eq!(
            rc,
            0,
            "ETHTOOL_STXCSUM: {}",
            std::io::Error::last_os_error()
        );
    });
}

/// `ND_TEST_UPLINK_MODE=xdp` runs every daemon of the suite with `--uplink-mode xdp` (and
/// the external veth computing its own checksums, see `tests/xdp_uplink.rs`).
pub fn xdp_suite() -> bool {
    std::env::var("ND_TEST_UPLINK_MODE").is_ok_and(|m| m == "xdp")
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
        if xdp_suite() {
            tx_checksum_off(&ext, "ext0");
        }
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

    /// Gives the external namespace [`OUTSIDE_IP`] and the host a route to 203.0.113.0/24
    /// through it: a destination beyond the uplink that stays inside the test.
    pub fn route_outside(&self) {
        self.ext
            .ip(&["addr", "add", &format!("{OUTSIDE_IP}/32"), "dev", "lo"]);
        self.host
            .ip(&["route", "add", "203.0.113.0/24", "via", EXT_IP]);
    }
}

impl World {
    /// Gives the uplink [`HOST_IP6`] and the external namespace [`EXT_IP6`] (no duplicate
    /// address detection, so they are usable at once). IPv4 tests do not call it.
    pub fn ipv6_uplink(&self) {
        self.host.ip(&[
            "addr",
            "add",
            &format!("{HOST_IP6}/64"),
            "dev",
            "up0",
            "nodad",
        ]);
        self.ext.ip(&[
            "addr",
            "add",
            &format!("{EXT_IP6}/64"),
            "dev",
            "ext0",
            "nodad",
        ]);
    }
}

/// `[addr]:port`, for IPv6 socket addresses.
pub fn sa6(addr: &str, port: u16) -> String {
    format!("[{addr}]:{port}")
}

/// A UDP socket created in `ns` (it stays in that namespace whichever thread uses it), with
/// the answer timeout `wait`.
pub fn udp_socket(ns: &Netns, wait: Duration) -> UdpSocket {
    let s = ns.run(|| UdpSocket::bind("0.0.0.0:0").expect("bind udp client"));
    s.set_read_timeout(Some(wait)).unwrap();
    s
}

/// Sends one datagram on `sock` and waits for one answer.
pub fn udp_ask(sock: &UdpSocket, addr: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    sock.send_to(b"hello", addr).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 128];
    let (n, _) = retry_interrupted(|| sock.recv_from(&mut buf)).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A UDP server answering every datagram with the full peer address (`"IP:PORT"`).
pub fn udp_peer_server(ns: &Netns, addr: &str) -> UdpServer {
    UdpServer::start_with(ns, addr, |peer| peer.to_string())
}

/// One ICMP echo from `ns` to `addr`; whether the reply came.
pub fn ping(ns: &Netns, addr: &str) -> bool {
    ns.exec("ping", &["-c", "1", "-W", "2", "-q", addr])
        .status
        .success()
}

/// The entries of a pinned map, as `bpftool -j` prints them with BTF (named fields).
pub fn map_dump(daemon: &Daemon, map: &str) -> Vec<Value> {
    let path = daemon.bpffs.join(map);
    let out = run(
        "bpftool",
        &["-j", "map", "dump", "pinned", path.to_str().unwrap()],
    );
    serde_json::from_str::<Vec<Value>>(&out)
        .unwrap_or_else(|e| panic!("bpftool output: {e}: {out}"))
        .into_iter()
        .map(|e| e.get("formatted").cloned().unwrap_or(e))
        .collect()
}

/// No iptables rule and no nftables NAT anywhere in the host namespace.
pub fn assert_no_firewall_rules(world: &World) {
    let rules = String::from_utf8_lossy(&world.host.exec("iptables-save", &[]).stdout).into_owned();
    assert!(
        !rules.lines().any(|l| l.starts_with("-A")),
        "unexpected iptables rules:\n{rules}"
    );
    let nft =
        String::from_utf8_lossy(&world.host.exec("nft", &["list", "ruleset"]).stdout).into_owned();
    assert!(
        !nft.contains("masquerade") && !nft.contains("snat") && !nft.contains("dnat"),
        "unexpected nftables rules:\n{nft}"
    );
}

/// The real `netdriver daemon` in the host namespace; SIGTERM and cleanup on drop.
pub struct Daemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// The Docker plugin socket (a per-test path: never the machine's /run/docker/plugins).
    pub plugin_socket: PathBuf,
    pub bpffs: PathBuf,
    host_ns: PathBuf,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl Daemon {
    pub fn start(world: &World, extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("ndt{}", world.tag));
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = Self {
            child: None,
            socket: dir.join("nd.sock"),
            plugin_socket: dir.join("plugins/netdriver.sock"),
            bpffs: PathBuf::from(format!("/sys/fs/bpf/ndt{}", world.tag)),
            dir,
            host_ns: world.host.path(),
            extra: extra
                .iter()
                .map(ToString::to_string)
                .chain(
                    (xdp_suite() && !extra.contains(&"--uplink-mode"))
                        .then(|| ["--uplink-mode".to_string(), "xdp".to_string()])
                        .into_iter()
                        .flatten(),
                )
                .collect(),
            env: Vec::new(),
        };
        d.spawn();
        d
    }

    /// Sets an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.into(), value.into()));
    }

    pub fn clear_env(&mut self) {
        self.env.clear();
    }

    /// Starts the daemon, expecting it to crash at a crash point later.
    pub fn restart_expecting_crash(&mut self) {
        self.restart();
    }

    /// Waits for a daemon that hit its crash point to be gone.
    pub fn wait_crashed(&mut self) {
        let mut child = self.child.take().expect("daemon started");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("daemon did not crash:\n{}", self.log());
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
            .arg("--docker-plugin-socket")
            .arg(&self.plugin_socket)
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
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
            // The daemon binds the plugin socket just after the API socket.
            let plugin = !self.extra.iter().any(|a| a == "--no-docker-plugin");
            if UnixStream::connect(&self.socket).is_ok()
                && (!plugin || UnixStream::connect(&self.plugin_socket).is_ok())
            {
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

    /// Runs `netdriver [global..] cleanup` on this daemon's state and pins from `host` (the
    /// daemon must be down) and expects it to succeed.
    pub fn cleanup_offline(&self, host: &Netns, global: &[&str]) {
        let state = self.dir.join("state");
        let mut args = global.to_vec();
        args.extend([
            "cleanup",
            "--state-dir",
            state.to_str().unwrap(),
            "--bpffs",
            self.bpffs.to_str().unwrap(),
        ]);
        let out = host.exec(netdriver_bin().to_str().unwrap(), &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
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

/// A keep-alive connection to the Docker plugin socket that sends requests exactly as dockerd
/// does: POST, no Content-Type, an empty body for argument-less calls.
pub struct PluginConn {
    stream: UnixStream,
    pending: Vec<u8>,
}

impl PluginConn {
    pub fn open(d: &Daemon) -> Self {
        let stream = UnixStream::connect(&d.plugin_socket)
            .unwrap_or_else(|e| panic!("connect {}: {e}", d.plugin_socket.display()));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Self {
            stream,
            pending: Vec::new(),
        }
    }

    /// Sends raw bytes as the request body; returns (status, content type, body).
    pub fn raw(&mut self, method: &str, call: &str, body: &[u8]) -> (u16, String, String) {
        let head = format!(
            "{method} /{call} HTTP/1.1\r\nHost: plugin.moby.localhost\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).unwrap();
        self.stream.write_all(body).unwrap();
        self.read_response()
    }

    /// A call with a JSON body (`Null` sends an empty body); returns (status, JSON answer).
    pub fn call(&mut self, call: &str, body: &Value) -> (u16, Value) {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            format!("{body}\n").into_bytes()
        };
        let (status, _, text) = self.raw("POST", call, &bytes);
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{call}: answer is not JSON ({e}): {text:?}"));
        (status, value)
    }

    /// A call that must succeed: asserts a 200 answer without `Err` and returns it.
    pub fn ok(&mut self, call: &str, body: &Value) -> Value {
        let (status, v) = self.call(call, body);
        assert_eq!(status, 200, "{call}: {v}");
        assert!(v.get("Err").is_none(), "{call}: {v}");
        v
    }

    fn read_response(&mut self) -> (u16, String, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.pending[..end]).into_owned();
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                        })
                        .unwrap_or_default()
                };
                let len: usize = header("content-length").parse().expect("content-length");
                if self.pending.len() >= end + 4 + len {
                    let body = self.pending[end + 4..end + 4 + len].to_vec();
                    self.pending.drain(..end + 4 + len);
                    let status = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let body = String::from_utf8_lossy(&body).into_owned();
                    return (status, header("content-type"), body);
                }
            }
            assert!(Instant::now() < deadline, "no complete answer in 30s");
            let mut buf = [0u8; 4096];
            let n = retry_interrupted(|| self.stream.read(&mut buf)).expect("read plugin answer");
            assert!(n > 0, "plugin closed the connection");
            self.pending.extend_from_slice(&buf[..n]);
        }
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
                let n = retry_interrupted(|| conn.read(&mut buf)).unwrap_or(0);
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
        Self::start_with(ns, addr, move |peer| format!("{tag} saw {}", peer.ip()))
    }

    /// A server whose answer to each datagram is `answer(peer)`.
    pub fn start_with(
        ns: &Netns,
        addr: &str,
        answer: impl Fn(SocketAddr) -> String + Send + 'static,
    ) -> Self {
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
                    let _ = sock.send_to(answer(peer).as_bytes(), peer);
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
    tcp_exchange(ns, addr, wait, false)
}

/// [`tcp_request`], the connection closed with a RST (`SO_LINGER` 0) as load generators and
/// impatient clients do.
pub fn tcp_request_reset(ns: &Netns, addr: &str, wait: Duration) -> Result<String, String> {
    tcp_exchange(ns, addr, wait, true)
}

fn tcp_exchange(ns: &Netns, addr: &str, wait: Duration, reset: bool) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&addr, wait).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(wait)).unwrap();
        s.write_all(b"hello").map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        if reset {
            linger_zero(&s);
        }
        Ok(out)
    })
}

/// `SO_LINGER` 0: closing the socket sends a RST.
fn linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a `linger` of the size given.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            u32::try_from(size_of::<libc::linger>()).unwrap(),
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
}

/// Sends one datagram from `ns` and waits for one answer.
pub fn udp_request(ns: &Netns, addr: &str, wait: Duration) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.run(move || {
        let any = if addr.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        let s = UdpSocket::bind(any).unwrap();
        s.set_read_timeout(Some(wait)).unwrap();
        s.send_to(b"hello", addr).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 128];
        let (n, _) = retry_interrupted(|| s.recv_from(&mut buf)).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// An echo server (TCP: every connection, every byte; UDP: every datagram) for flows that
/// must survive daemon restarts. Stops on drop; serves at most 120 s.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl EchoServer {
    /// Serves on `port` of every address; UDP answers from `udp_ip` (a UDP socket bound to
    /// every address answers from whatever address the route back picks).
    pub fn start(ns: &Netns, udp_ip: &str, port: u16) -> Self {
        let udp_ip: std::net::IpAddr = udp_ip.parse().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (flag, ready) = (Arc::clone(&stop), tx.clone());
        let tcp = ns.spawn(move || {
            let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind echo");
            listener.set_nonblocking(true).unwrap();
            ready.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut conns = Vec::new();
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                if let Ok((conn, _)) = listener.accept() {
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    conns.push(std::thread::spawn(move || echo_tcp(conn)));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            drop(conns);
        });
        let flag = Arc::clone(&stop);
        let udp = ns.spawn(move || {
            let sock = UdpSocket::bind((udp_ip, port)).expect("bind udp echo");
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            tx.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], peer);
                }
            }
        });
        for _ in 0..2 {
            rx.recv_timeout(TIMEOUT).expect("echo server started");
        }
        Self {
            stop,
            handles: vec![tcp, udp],
        }
    }
}

fn echo_tcp(mut conn: TcpStream) {
    let mut buf = [0u8; 1500];
    while let Ok(n) = retry_interrupted(|| conn.read(&mut buf)) {
        if n == 0 || conn.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// `-p SPEC` for each of `ports` (extra arguments of `endpoint create`).
pub fn publish_args<'a>(ports: &[&'a str]) -> Vec<&'a str> {
    ports.iter().flat_map(|p| ["-p", p]).collect()
}

/// Creates endpoint `role` (a new container namespace) on `net`; returns the daemon's answer.
pub fn create_endpoint(
    world: &mut World,
    daemon: &Daemon,
    net: &str,
    role: &str,
    extra: &[&str],
) -> Value {
    let netns = world.container(role);
    let mut args = vec![
        "endpoint",
        "create",
        net,
        "--netns",
        netns.to_str().unwrap(),
        "--name",
        role,
    ];
    args.extend_from_slice(extra);
    daemon.json(&args)
}

/// Creates an `--ipv6` network (dual stack) with the given extra options.
pub fn network6(daemon: &Daemon, name: &str, subnet: &str, subnet6: &str, extra: &[&str]) {
    let mut args = vec![
        "network",
        "create",
        name,
        "--subnet",
        subnet,
        "--ipv6",
        "--subnet-v6",
        subnet6,
    ];
    args.extend_from_slice(extra);
    daemon.json(&args);
}

/// Creates endpoint `role` on `net`; returns its IPv6 address.
pub fn endpoint6(
    world: &mut World,
    daemon: &Daemon,
    net: &str,
    role: &str,
    extra: &[&str],
) -> String {
    endpoint_addr(world, daemon, net, role, extra, "ip6")
}

/// Creates endpoint `role` (a new container namespace) on `net`; returns its address.
pub fn endpoint(
    world: &mut World,
    daemon: &Daemon,
    net: &str,
    role: &str,
    extra: &[&str],
) -> String {
    endpoint_addr(world, daemon, net, role, extra, "ip")
}

/// Creates endpoint `role` on `net`; returns its address under `field` (`ip`, `ip6`).
fn endpoint_addr(
    world: &mut World,
    daemon: &Daemon,
    net: &str,
    role: &str,
    extra: &[&str],
    field: &str,
) -> String {
    let ep = create_endpoint(world, daemon, net, role, extra);
    ep[field]
        .as_str()
        .unwrap_or_else(|| panic!("endpoint {role} has no {field}: {ep}"))
        .to_string()
}

/// Drop counter `name` from `netdriver status`.
pub fn drops(daemon: &Daemon, name: &str) -> u64 {
    let status = daemon.json(&["status"]);
    let i = status["drop_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .position(|n| n == name)
        .unwrap();
    status["drops"][i].as_u64().unwrap()
}
