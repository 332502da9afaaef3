//! The one ethtool setting netdriver needs, through the `SIOCETHTOOL` ioctl of the current
//! network namespace: GRO on a container's end of its veth, so that frames an XDP program
//! redirects to the host end are accepted (a veth only takes `ndo_xdp_xmit` frames when its
//! peer runs NAPI, which GRO or an XDP program turns on; GRO does so since Linux 5.13, "veth:
//! allow enabling NAPI even without XDP").

use std::{io, os::fd::AsRawFd};

use super::NetlinkError;

/// `ETHTOOL_SGRO` from linux/ethtool.h.
const ETHTOOL_SGRO: u32 = 0x0000_002c;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the `ifr_data` member.
#[repr(C)]
struct IfreqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// Turns generic receive offload on or off on `ifname` (in the current namespace).
pub fn set_gro(ifname: &str, on: bool) -> Result<(), NetlinkError> {
    let err = |source: io::Error| NetlinkError::Ethtool {
        ifname: ifname.to_owned(),
        source,
    };
    if ifname.len() >= libc::IFNAMSIZ {
        return Err(err(io::Error::from(io::ErrorKind::InvalidInput)));
    }
    // Any socket of the namespace carries the ioctl.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").map_err(err)?;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_SGRO,
        data: u32::from(on),
    };
    let mut req = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: (&raw mut value).cast(),
        _pad: [0; 16],
    };
    for (dst, src) in req.name.iter_mut().zip(ifname.bytes()) {
        *dst = src.cast_signed();
    }
    // SAFETY: `req` is a valid ifreq whose data points at a live `ethtool_value`.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, &raw mut req) };
    if rc < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}
