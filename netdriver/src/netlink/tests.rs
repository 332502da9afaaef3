//! The privileged tests build their own namespaces: a throwaway "host" namespace where the
//! [`Netlink`] operations run (from a dedicated thread that enters it), and a "container"
//! namespace. The machine's root namespace is never changed.

use std::{
    future::Future,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
};

use nix::sched::{CloneFlags, setns};

use super::*;

const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
const CONTAINER_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
const MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0xd5, 0x00, 0x02];

/// A network namespace named `ndnl-<pid>-<tag>`, deleted on drop (also after a panic).
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("ndnl-{}-{tag}", std::process::id());
        run("ip", &["netns", "add", &name]);
        Self { name }
    }

    fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    /// Runs `ip -n <name> <args>` and returns its stdout.
    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs a command inside the namespace and returns whether it succeeded.
    fn exec_ok(&self, args: &[&str]) -> bool {
        let status = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .status()
            .expect("running ip netns exec");
        status.success()
    }

    /// Runs `f` inside the namespace: on a dedicated thread that entered it, on a
    /// multi-threaded tokio runtime, like the daemon's. A panic in `f` is re-raised here.
    fn run_in<F, Fut>(&self, f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let path = self.path();
        let thread = std::thread::spawn(move || {
            let file = File::open(&path).expect("opening the test namespace");
            setns(&file, CloneFlags::CLONE_NEWNET).expect("entering the test namespace");
            // Worker threads start in the namespace of the thread that builds the runtime.
            let runtime = runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("building a tokio runtime");
            runtime.block_on(f());
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let status = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "failed to delete network namespace {}: {status:?}",
                self.name
            );
        }
    }
}

/// Runs a command that must succeed and returns its stdout.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program} {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed (root and iproute2 are needed): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn net(addr: Ipv4Addr, prefix_len: u8) -> Ipv4Net {
    Ipv4Net::new(addr, prefix_len).unwrap()
}

/// Bounded: at most three single pings of one second each.
fn ping(netns: &Netns, addr: Ipv4Addr) -> bool {
    let addr = addr.to_string();
    (0..3).any(|_| netns.exec_ok(&["ping", "-q", "-c1", "-W1", &addr]))
}

#[test]
fn parses_port_range() {
    assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
    assert_eq!(parse_port_range("1024 1024"), Some((1024, 1024)));
    assert_eq!(parse_port_range("60999 32768"), None);
    assert_eq!(parse_port_range("32768"), None);
    assert_eq!(parse_port_range("1 2 3"), None);
    assert_eq!(parse_port_range("a b"), None);
}

#[test]
fn new_outside_a_runtime_is_an_error() {
    assert!(matches!(Netlink::new(), Err(NetlinkError::NoRuntime(_))));
}

#[test]
#[ignore = "needs root and network namespaces; run by cargo xtask test"]
fn bridge_veth_and_container_link() {
    let host = Netns::new("host");
    let container = Netns::new("ctr");
    let container_path = container.path();
    host.run_in(move || async move {
        let netlink = Netlink::new().unwrap();
        let bridge = bridge(&netlink).await;
        let (veth, peer) = veth(&netlink, &bridge).await;
        netlink
            .move_to_netns(peer.index, &container_path)
            .await
            .unwrap();
        assert!(netlink.link_by_name("ndv0c").await.unwrap().is_none());
        configure_container(&container_path).await;
        check_listings(&netlink, &bridge, &veth).await;
    });
    check_container(&container);
    assert!(
        ping(&container, BRIDGE_IP),
        "container cannot ping its gateway"
    );
    host.run_in(|| async {
        let netlink = Netlink::new().unwrap();
        let veth = netlink.link_by_name("ndv0h").await.unwrap().unwrap();
        netlink.delete_link(veth.index).await.unwrap();
        assert!(netlink.link_by_name("ndv0h").await.unwrap().is_none());
        netlink.delete_link(veth.index).await.unwrap();
    });
    assert!(
        !container.ip(&["-o", "link"]).contains("eth0"),
        "the pair is gone"
    );
    assert!(
        !run("ip", &["-o", "link"]).contains("ndv0"),
        "root namespace untouched"
    );
}

/// Creates bridge `ndbr0` with 10.213.0.1/24 and sets it up.
async fn bridge(netlink: &Netlink) -> LinkInfo {
    let bridge = netlink.create_bridge("ndbr0", Some(1400)).await.unwrap();
    assert_eq!(bridge.kind.as_deref(), Some("bridge"));
    assert_eq!(bridge.mtu, Some(1400));
    assert!(bridge.mac.is_some() && !bridge.up);
    let again = netlink.create_bridge("ndbr0", None).await;
    assert!(
        matches!(again, Err(NetlinkError::LinkExists { .. })),
        "{again:?}"
    );
    netlink
        .add_address(bridge.index, BRIDGE_IP.into(), 24)
        .await
        .unwrap();
    netlink.set_up(bridge.index).await.unwrap();
    let bridge = netlink.link_by_name("ndbr0").await.unwrap().unwrap();
    assert!(bridge.up);
    bridge
}

/// Creates the pair `ndv0h`/`ndv0c` and enslaves the host end to `bridge`.
async fn veth(netlink: &Netlink, bridge: &LinkInfo) -> (LinkInfo, LinkInfo) {
    let (veth, peer) = netlink
        .create_veth("ndv0h", "ndv0c", Some(1400))
        .await
        .unwrap();
    assert_eq!((veth.name.as_str(), peer.name.as_str()), ("ndv0h", "ndv0c"));
    assert_eq!(
        (veth.kind.as_deref(), veth.mtu, peer.mtu),
        (Some("veth"), Some(1400), Some(1400))
    );
    netlink.set_master(veth.index, bridge.index).await.unwrap();
    netlink.set_up(veth.index).await.unwrap();
    let veth = netlink.link_by_name("ndv0h").await.unwrap().unwrap();
    assert_eq!(veth.master, Some(bridge.index));
    assert!(veth.up);
    (veth, peer)
}

async fn configure_container(path: &Path) {
    let netns = NetnsHandle::open(path).await.unwrap();
    netns
        .configure_container_link(
            "ndv0c",
            "eth0",
            MAC,
            CONTAINER_IP,
            24,
            BRIDGE_IP,
            Some(1400),
        )
        .await
        .unwrap();
    let eth0 = netns.link_by_name("eth0").await.unwrap().unwrap();
    assert_eq!((eth0.mac, eth0.mtu, eth0.up), (Some(MAC), Some(1400), true));
    assert!(netns.link_by_name("ndv0c").await.unwrap().is_none());
    assert!(netns.link_by_name("lo").await.unwrap().unwrap().up);
    netns.delete_link("nosuchlink").await.unwrap();
}

async fn check_listings(netlink: &Netlink, bridge: &LinkInfo, veth: &LinkInfo) {
    let links = netlink.links().await.unwrap();
    for link in [bridge, veth] {
        assert!(
            links
                .iter()
                .any(|l| l.index == link.index && l.name == link.name)
        );
    }
    let routes = netlink.ipv4_routes().await.unwrap();
    assert!(
        routes.contains(&net(Ipv4Addr::new(10, 213, 0, 0), 24)),
        "{routes:?}"
    );
    let addresses = netlink.ipv4_addresses().await.unwrap();
    assert!(addresses.contains(&net(BRIDGE_IP, 24)), "{addresses:?}");
}

/// What `ip` sees in the container.
fn check_container(container: &Netns) {
    let routes = container.ip(&["-4", "route", "show", "default"]);
    assert!(
        routes.contains("default via 10.213.0.1 dev eth0"),
        "{routes}"
    );
    let addresses = container.ip(&["-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addresses.contains("inet 10.213.0.2/24"), "{addresses}");
    let link = container.ip(&["-o", "link", "show", "dev", "eth0"]);
    assert!(
        link.contains("02:42:0a:d5:00:02") && link.contains("mtu 1400"),
        "{link}"
    );
}

#[test]
#[ignore = "needs root and network namespaces; run by cargo xtask test"]
fn sysctls_are_per_namespace() {
    let host = Netns::new("sysctl");
    let root_forwarding = std::fs::read_to_string(IP_FORWARD).unwrap();
    host.run_in(|| async {
        assert_eq!(std::fs::read_to_string(IP_FORWARD).unwrap().trim(), "0");
        enable_ipv4_forwarding().unwrap();
        let (low, high) = ip_local_port_range().unwrap();
        assert!(0 < low && low <= high, "{low}..{high}");
    });
    let forwarding = run("ip", &["netns", "exec", &host.name, "cat", IP_FORWARD]);
    assert_eq!(forwarding.trim(), "1");
    assert_eq!(
        std::fs::read_to_string(IP_FORWARD).unwrap(),
        root_forwarding
    );
}

#[test]
#[ignore = "needs root and network namespaces; run by cargo xtask test"]
fn open_reports_missing_and_non_netns_paths() {
    let missing = PathBuf::from(format!(
        "/var/run/netns/ndnl-{}-missing",
        std::process::id()
    ));
    let runtime = runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let error = runtime.block_on(NetnsHandle::open(&missing)).err().unwrap();
    assert!(matches!(&error, NetlinkError::OpenNetns { path, .. } if *path == missing));
    assert!(
        error.to_string().contains(&*missing.to_string_lossy()),
        "{error}"
    );
    let uts = Path::new("/proc/self/ns/uts");
    let error = runtime.block_on(NetnsHandle::open(uts)).err().unwrap();
    let NetlinkError::EnterNetns { source, .. } = error else {
        panic!("{error:?}");
    };
    assert_eq!(source, Errno::EINVAL);
}
