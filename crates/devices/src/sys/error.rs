//! The error every real device returns when it cannot be opened or configured.

use std::fmt;
use std::io;

/// What kind of thing went wrong, so callers can react (fall back to another libOS, retry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The named interface does not exist in this network namespace.
    NoSuchInterface,
    /// The process lacks a privilege (root, or a capability such as CAP_NET_RAW).
    PermissionDenied,
    /// The kernel or the interface does not support what was asked (XDP mode, zero-copy).
    Unsupported,
    /// Something else holds the resource (an XDP program of another tool, a bound queue).
    Busy,
    /// The configuration is inconsistent (ring size not a power of two, frame too small).
    InvalidConfig,
    /// Any other failure of a system call.
    Io,
}

/// A device could not be opened or configured: what was being done, why it failed, and what to
/// do about it.
#[derive(Debug)]
pub struct DeviceError {
    kind: ErrorKind,
    what: String,
    source: Option<io::Error>,
    hint: String,
}

impl DeviceError {
    /// An error with no OS cause (bad configuration, a foreign program in the way).
    pub fn new(kind: ErrorKind, what: impl Into<String>, hint: impl Into<String>) -> DeviceError {
        DeviceError {
            kind,
            what: what.into(),
            source: None,
            hint: hint.into(),
        }
    }

    /// Classifies a failed system call. `needs` names the privileges the operation requires
    /// ("root or CAP_NET_RAW"); `instead` names the libOSes to try when it cannot work here.
    pub fn os(what: impl Into<String>, err: io::Error, needs: &str, instead: &str) -> DeviceError {
        let what = what.into();
        let (kind, hint) = match err.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => (
                ErrorKind::PermissionDenied,
                format!("needs {needs}; {instead}"),
            ),
            Some(libc::ENODEV) | Some(libc::ENXIO) => (
                ErrorKind::NoSuchInterface,
                format!("check the interface name with `ip link`; {instead}"),
            ),
            Some(libc::EOPNOTSUPP)
            | Some(libc::EAFNOSUPPORT)
            | Some(libc::EPROTONOSUPPORT)
            | Some(libc::ENOSYS) => (
                ErrorKind::Unsupported,
                format!("the kernel or the interface does not support it; {instead}"),
            ),
            Some(libc::EBUSY) | Some(libc::EEXIST) | Some(libc::EADDRINUSE) => (
                ErrorKind::Busy,
                "another user holds it; stop it or pick another interface or queue".to_string(),
            ),
            _ => (ErrorKind::Io, instead.to_string()),
        };
        DeviceError {
            kind,
            what,
            source: Some(err),
            hint,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The failed system call's error, if one caused this.
    pub fn os_error(&self) -> Option<&io::Error> {
        self.source.as_ref()
    }
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed", self.what)?;
        if let Some(err) = &self.source {
            let reason = match err.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => "permission denied".to_string(),
                Some(libc::ENODEV) => "no such interface".to_string(),
                _ => err.to_string(),
            };
            write!(f, ": {reason}")?;
        }
        if !self.hint.is_empty() {
            write!(f, " ({})", self.hint)?;
        }
        Ok(())
    }
}

impl std::error::Error for DeviceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

impl From<DeviceError> for io::Error {
    fn from(e: DeviceError) -> io::Error {
        let kind = match e.kind {
            ErrorKind::NoSuchInterface => io::ErrorKind::NotFound,
            ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
            ErrorKind::Unsupported => io::ErrorKind::Unsupported,
            ErrorKind::Busy => io::ErrorKind::ResourceBusy,
            ErrorKind::InvalidConfig => io::ErrorKind::InvalidInput,
            ErrorKind::Io => io::ErrorKind::Other,
        };
        io::Error::new(kind, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_errors_name_what_is_missing_and_what_to_try() {
        let e = DeviceError::os(
            "AF_XDP socket creation",
            io::Error::from_raw_os_error(libc::EPERM),
            "root or CAP_NET_RAW+CAP_BPF",
            "try --libos packet or --libos kernel",
        );
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert_eq!(
            e.to_string(),
            "AF_XDP socket creation failed: permission denied (needs root or CAP_NET_RAW+CAP_BPF; \
             try --libos packet or --libos kernel)"
        );
    }

    #[test]
    fn errno_classes_map_to_kinds() {
        let kind = |errno| DeviceError::os("x", io::Error::from_raw_os_error(errno), "", "").kind();
        assert_eq!(kind(libc::ENODEV), ErrorKind::NoSuchInterface);
        assert_eq!(kind(libc::EOPNOTSUPP), ErrorKind::Unsupported);
        assert_eq!(kind(libc::EBUSY), ErrorKind::Busy);
        assert_eq!(kind(libc::EIO), ErrorKind::Io);
        let io: io::Error = DeviceError::new(ErrorKind::InvalidConfig, "x", "y").into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidInput);
    }
}
