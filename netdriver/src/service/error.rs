use crate::{
    dataplane::DataplaneError,
    ipam::IpamError,
    netlink::NetlinkError,
    ports::{PortError, reserved::ReservedPortsError},
    store::StoreError,
};

/// Every way an operation can fail; `status` maps it to the HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Port(#[from] PortError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    ReservedPorts(#[from] ReservedPortsError),
}

impl ServiceError {
    /// The HTTP status code for this error.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::Invalid(_)
            | Self::Ipam(
                IpamError::BadSubnet(_)
                | IpamError::BadSubnet6(_)
                | IpamError::TooSmall { .. }
                | IpamError::OutOfSubnet { .. },
            )
            | Self::Port(PortError::Syntax { .. }) => 400,
            Self::NotFound(_) => 404,
            Self::Conflict(_) | Self::Ipam(_) | Self::Port(_) => 409,
            Self::Netlink(_) | Self::Dataplane(_) | Self::Store(_) | Self::ReservedPorts(_) => 500,
        }
    }
}
