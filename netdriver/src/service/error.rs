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

impl ServiceError {
    /// The error with its causes (`outer: inner: root`), so a kernel failure reaches the user
    /// with the reason the kernel gave, not only the step that failed.
    #[must_use]
    pub fn message(&self) -> String {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        message
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn message_carries_the_cause_chain() {
        let err = ServiceError::Netlink(NetlinkError::Connect(io::Error::from_raw_os_error(17)));
        assert_eq!(
            err.message(),
            "opening a rtnetlink connection: File exists (os error 17)"
        );
        assert_eq!(ServiceError::Invalid("bad".into()).message(), "bad");
    }
}
