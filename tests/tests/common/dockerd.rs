//! A real dockerd (Debian's docker.io 20.10) with its own containerd, driving the netdriver
//! daemon of a test world through the plugin socket. Nothing of it is visible outside the test:
//!
//! - both run in the test's host network namespace (nsenter), with Docker's bridge,
//!   iptables and docker-proxy off;
//! - both run in a new mount namespace with a private tmpfs on /run, where the daemon's
//!   plugin directory is bind-mounted on /run/docker/plugins (dockerd looks for plugins only
//!   there and in /etc/docker/plugins): the machine's /run/docker is never touched;
//! - both run in a new PID namespace whose init is a small shell: stopping it stops dockerd
//!   then containerd gracefully, and when it exits the kernel kills whatever is left (shims,
//!   container processes), so nothing can outlive the test;
//! - what lives on disk (data root, containerd root, API sockets, logs) is under one
//!   per-test directory; what dockerd and containerd keep in /run (exec root with the
//!   containers' netns files, runc state, pidfile) is in that private tmpfs and vanishes with
//!   the namespace, as /run does at a reboot; storage is `vfs` (plain directories, no mounts
//!   to leak), and container cgroups go under a per-test cgroup parent removed at the end.

use std::{
    fmt::Write as _,
    fs::File,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use super::{Daemon, Netns, TIMEOUT, World, sh};

/// The image every test runs: busybox from `busybox-static`, imported from scratch.
pub const IMAGE: &str = "ndbusybox";

pub struct Dockerd {
    /// Everything dockerd and containerd write (short: socket paths are limited to 108 bytes).
    pub dir: PathBuf,
    host_ns: PathBuf,
    plugins: PathBuf,
    cgroup: String,
    child: Option<Child>,
}

impl Dockerd {
    pub fn start(world: &World, daemon: &Daemon) -> Self {
        for cmd in ["dockerd", "containerd", "docker", "busybox", "unshare"] {
            assert!(
                sh("which", &[cmd]).status.success(),
                "{cmd} is missing: `cargo xtask setup` installs docker.io, containerd and busybox-static"
            );
        }
        let dir = PathBuf::from(format!("/tmp/ndt{}d", world.tag));
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = Self {
            host_ns: world.host.path(),
            plugins: daemon
                .plugin_socket
                .parent()
                .expect("plugin socket has a directory")
                .to_path_buf(),
            cgroup: format!("ndt{}", world.tag),
            dir,
            child: None,
        };
        d.write_config();
        d.spawn();
        d
    }

    fn write_config(&self) {
        let d = self.dir.display();
        std::fs::write(
            self.dir.join("containerd.toml"),
            format!(
                "version = 2\nroot = \"{d}/ctd-root\"\nstate = \"/run/containerd\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/ctd.sock\"\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n"
            ),
        )
        .unwrap();
        std::fs::write(self.dir.join("daemon.json"), "{}\n").unwrap();
        // The PID namespace's init: starts containerd and dockerd, stops both on SIGTERM.
        let script = format!(
            r"D={d}
mount -t tmpfs -o mode=0755 tmpfs /run || exit 1
mkdir -p /run/docker/plugins && mount --bind {plugins} /run/docker/plugins || exit 1
rm -f $D/ctd.sock $D/docker.sock
containerd --config $D/containerd.toml >>$D/containerd.log 2>&1 &
cpid=$!
i=0; while [ ! -S $D/ctd.sock ]; do sleep 0.1; i=$((i+1)); [ $i -lt 300 ] || exit 1; done
dockerd --config-file $D/daemon.json --bridge=none --iptables=false --ip6tables=false \
  --ip-masq=false --userland-proxy=false --storage-driver vfs --data-root $D/data \
  -H unix://$D/docker.sock \
  --containerd $D/ctd.sock --cgroup-parent /{cgroup} --debug >>$D/dockerd.log 2>&1 &
dpid=$!
trap 'kill -TERM $dpid; wait $dpid; kill -TERM $cpid; wait $cpid; exit 0' TERM
wait $dpid
",
            plugins = self.plugins.display(),
            cgroup = self.cgroup,
        );
        std::fs::write(self.dir.join("init.sh"), script).unwrap();
    }

    fn spawn(&mut self) {
        let log = File::create(self.dir.join("init.log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.host_ns.display()))
            .args([
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
                "--kill-child=SIGTERM",
                "--mount-proc",
                "sh",
            ])
            .arg(self.dir.join("init.sh"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("dockerd exited early ({status}):\n{}", self.logs());
            }
            if self.dir.join("docker.sock").exists() && self.docker(&["version"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("dockerd not ready after 60s:\n{}", self.logs());
    }

    /// The last lines of every log (without dockerd's API-call noise), for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for f in ["init.log", "containerd.log", "dockerd.log"] {
            let text = std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| !l.contains("msg=\"Calling ") && !l.contains("msg=\"Registering "))
                .collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            let _ = writeln!(out, "--- {f}\n{tail}");
        }
        out
    }

    /// Runs the docker CLI against this dockerd (bounded to 2 minutes).
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg("120")
            .arg("docker")
            .args(args)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.dir.join("docker.sock").display()),
            )
            // The client is newer than dockerd 20.10.
            .env("DOCKER_API_VERSION", "1.41")
            .env("DOCKER_CONFIG", self.dir.join("client"))
            .output()
            .expect("run docker")
    }

    /// Runs docker and expects success; returns stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `docker inspect -f template container`, trimmed.
    pub fn inspect(&self, container: &str, template: &str) -> String {
        self.ok(&["inspect", "-f", template, container])
    }

    /// Runs docker and expects a failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            !out.status.success(),
            "docker {} should fail, printed {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Builds the busybox image from the host's static busybox, without a registry.
    pub fn import_busybox(&self) {
        let root = self.dir.join("rootfs");
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(root.join("www")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let busybox = which("busybox");
        let ldd = sh("ldd", &[busybox.to_str().unwrap()]);
        let ldd = String::from_utf8_lossy(&ldd.stdout).into_owned()
            + &String::from_utf8_lossy(&ldd.stderr);
        assert!(
            ldd.contains("not a dynamic executable") || ldd.contains("statically linked"),
            "{} is not static (install busybox-static): {ldd}",
            busybox.display()
        );
        std::fs::copy(&busybox, bin.join("busybox")).unwrap();
        let list = super::run("busybox", &["--list"]);
        for applet in list.lines().filter(|a| *a != "busybox" && !a.is_empty()) {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        let tar = self.dir.join("rootfs.tar");
        super::run(
            "tar",
            &[
                "-C",
                root.to_str().unwrap(),
                "-cf",
                tar.to_str().unwrap(),
                ".",
            ],
        );
        self.ok(&["import", tar.to_str().unwrap(), IMAGE]);
    }

    /// Stops dockerd then containerd (SIGTERM to the namespace's init), waits up to 60 s,
    /// then kills the whole PID namespace.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        let init = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<i32>().ok());
        if let Some(init) = init {
            // SAFETY: signalling the init of our own PID namespace (a child of our child).
            unsafe { libc::kill(init, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(init) = init {
            // SAFETY: as above; SIGKILL to a namespace's init kills the whole namespace.
            unsafe { libc::kill(init, libc::SIGKILL) };
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// SIGKILLs dockerd (no cleanup calls reach the plugin); the namespace's init then exits
    /// and the kernel kills containerd, the shims and the containers, as in a host crash.
    /// Then starts both again.
    pub fn crash_and_restart(&mut self) {
        let mut child = self.child.take().expect("dockerd running");
        let pid = child.id();
        let children = |p: u32| -> Vec<u32> {
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect()
        };
        let init = children(pid).first().copied().expect("namespace init");
        let dockerd = children(init)
            .into_iter()
            .find(|c| {
                std::fs::read_to_string(format!("/proc/{c}/comm"))
                    .is_ok_and(|n| n.trim() == "dockerd")
            })
            .expect("dockerd process");
        // SAFETY: signalling a process of our own PID namespace.
        unsafe { libc::kill(i32::try_from(dockerd).unwrap(), libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "namespace did not end after dockerd died"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.spawn();
    }

    /// Removes the per-test cgroup parent in every hierarchy (runc removed the containers').
    fn remove_cgroups(&self) {
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for h in hierarchies.flatten() {
            remove_dirs_depth_first(&h.path().join(&self.cgroup));
        }
    }
}

fn remove_dirs_depth_first(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_dirs_depth_first(&e.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
}

fn which(cmd: &str) -> PathBuf {
    let out = super::run("which", &[cmd]);
    PathBuf::from(out.trim())
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Containers first, so that dockerd releases their endpoints through the plugin.
            let out = self.docker(&["ps", "-aq"]);
            let ids = String::from_utf8_lossy(&out.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.docker(&args);
            }
        }
        self.stop();
        self.remove_cgroups();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An HTTP GET from `ns`; the response body (Err on refusal or timeout).
pub fn http_get(ns: &Netns, addr: &str, wait: Duration) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&addr, wait).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(wait)).unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        Ok(out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.trim().to_string())
            .unwrap_or(out))
    })
}

/// httpd needs a moment after `docker run` returns; retry for up to 10 s.
pub fn http_get_eventually(ns: &Netns, addr: &str) -> String {
    let mut last = String::new();
    for _ in 0..20 {
        match http_get(ns, addr, TIMEOUT) {
            Ok(body) => return body,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("GET {addr}: {last}");
}
