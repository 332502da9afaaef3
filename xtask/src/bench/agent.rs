//! The measuring agent: `xtask bench-agent ...`, started by the bench inside a namespace.
//! An echo server (TCP and UDP), and clients for request/response latency (RR) and new
//! connections per second (CRR: connect, one byte each way, close). Every loop is bounded in
//! time and count; results are one JSON object on stdout.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use serde_json::json;

/// Upper bound of any single measurement, whatever the caller asks.
const MAX_SECS: f64 = 120.0;
/// Upper bound of transactions in one measurement.
const MAX_COUNT: usize = 20_000_000;
const IO_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, ValueEnum)]
pub enum Proto {
    Tcp,
    Udp,
}

#[derive(Subcommand)]
pub enum AgentCmd {
    /// Echo every TCP and UDP message on ADDR until killed (at most `max_secs`).
    Serve {
        addr: SocketAddr,
        #[arg(long, default_value_t = 3600)]
        max_secs: u64,
    },
    /// One request/response exchange; exit status 0 when the echo comes back.
    Probe {
        #[arg(value_enum)]
        proto: Proto,
        addr: SocketAddr,
    },
    /// Request/response on one connection (`TCP_NODELAY`) or one UDP socket.
    Rr {
        #[arg(value_enum)]
        proto: Proto,
        addr: SocketAddr,
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// New connections: connect, 1 byte out, 1 byte back, close with RST (`SO_LINGER` 0, so
    /// `TIME_WAIT` never bounds the client).
    Crr {
        addr: SocketAddr,
        #[arg(long)]
        secs: f64,
    },
}

pub fn run(cmd: &AgentCmd) -> Result<()> {
    match *cmd {
        AgentCmd::Serve { addr, max_secs } => serve(addr, max_secs),
        AgentCmd::Probe { proto, addr } => {
            if let Err(e) = probe(proto, addr) {
                // One line for the bench's "unsupported" reason.
                eprintln!("{e}");
                std::process::exit(1);
            }
            Ok(())
        }
        AgentCmd::Rr {
            proto,
            addr,
            secs,
            size,
        } => {
            let limit = Duration::from_secs_f64(secs.clamp(0.01, MAX_SECS));
            let out = match proto {
                Proto::Tcp => rr_tcp(addr, limit, size)?,
                Proto::Udp => rr_udp(addr, limit, size)?,
            };
            println!("{out}");
            Ok(())
        }
        AgentCmd::Crr { addr, secs } => {
            let limit = Duration::from_secs_f64(secs.clamp(0.01, MAX_SECS));
            println!("{}", crr(addr, limit)?);
            Ok(())
        }
    }
}

fn serve(addr: SocketAddr, max_secs: u64) -> Result<()> {
    // One thread, like the single-threaded epoll server of the pilot measurements.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let tcp = tokio::net::TcpListener::bind(addr).await?;
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        tokio::spawn(echo_udp(udp));
        let accept = async move {
            loop {
                let (conn, _) = tcp.accept().await?;
                tokio::spawn(echo_tcp(conn));
            }
        };
        tokio::select! {
            r = accept => r,
            () = tokio::time::sleep(Duration::from_secs(max_secs)) => Ok::<(), anyhow::Error>(()),
        }
    })
}

async fn echo_tcp(mut conn: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = conn.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn echo_udp(sock: tokio::net::UdpSocket) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(&buf[..n], peer).await;
        }
    }
}

fn probe(proto: Proto, addr: SocketAddr) -> Result<()> {
    let msg = b"netdriver-probe";
    let mut back = [0u8; 15];
    match proto {
        Proto::Tcp => {
            let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.write_all(msg)?;
            s.read_exact(&mut back)?;
        }
        Proto::Udp => {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.connect(addr)?;
            s.send(msg)?;
            s.recv(&mut back)?;
        }
    }
    if &back != msg {
        bail!("the echo came back changed");
    }
    Ok(())
}

fn rr_tcp(addr: SocketAddr, limit: Duration, size: usize) -> Result<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).context("connect")?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    let msg = vec![0x5a; size];
    let mut back = vec![0; size];
    let mut lat = Vec::with_capacity(1 << 16);
    let start = Instant::now();
    while start.elapsed() < limit && lat.len() < MAX_COUNT {
        let t = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        lat.push(t.elapsed());
    }
    Ok(summary(&mut lat, start.elapsed(), 0))
}

fn rr_udp(addr: SocketAddr, limit: Duration, size: usize) -> Result<serde_json::Value> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.connect(addr)?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let msg = vec![0x5a; size];
    let mut back = vec![0; size + 1];
    let mut lat = Vec::with_capacity(1 << 16);
    let mut lost = 0u64;
    let start = Instant::now();
    while start.elapsed() < limit && lat.len() < MAX_COUNT {
        let t = Instant::now();
        s.send(&msg)?;
        match s.recv(&mut back) {
            Ok(n) if n == size => lat.push(t.elapsed()),
            Ok(_) => bail!("short UDP echo"),
            Err(e) if is_timeout(&e) => lost += 1,
            Err(e) => return Err(e.into()),
        }
    }
    if lat.is_empty() {
        bail!("no UDP answer at all ({lost} lost)");
    }
    Ok(summary(&mut lat, start.elapsed(), lost))
}

fn crr(addr: SocketAddr, limit: Duration) -> Result<serde_json::Value> {
    let mut lat = Vec::with_capacity(1 << 16);
    let mut errors = 0u64;
    let start = Instant::now();
    while start.elapsed() < limit && lat.len() < MAX_COUNT {
        let t = Instant::now();
        match one_connection(addr) {
            Ok(()) => lat.push(t.elapsed()),
            Err(_) => errors += 1,
        }
        if lat.is_empty() && errors >= 3 {
            bail!("no connection succeeded ({errors} failed)");
        }
    }
    Ok(summary(&mut lat, start.elapsed(), errors))
}

fn one_connection(addr: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.write_all(b"x")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            u32::try_from(size_of::<libc::linger>()).expect("small"),
        );
    }
    Ok(())
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

#[expect(
    clippy::cast_precision_loss,
    reason = "counts and nanoseconds far below 2^52"
)]
fn summary(lat: &mut [Duration], elapsed: Duration, errors: u64) -> serde_json::Value {
    lat.sort_unstable();
    let pct = |p: f64| {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() - 1) as f64 * p).round();
        // The index is within 0..len by construction.
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "in range"
        )]
        let i = i as usize;
        lat[i].as_nanos() as f64 / 1000.0
    };
    json!({
        "count": lat.len(),
        "errors": errors,
        "secs": elapsed.as_secs_f64(),
        "rate": lat.len() as f64 / elapsed.as_secs_f64(),
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
    })
}
