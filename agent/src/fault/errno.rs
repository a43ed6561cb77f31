//! The errnos a syscall fault may inject, by name.

/// An errno a fault may inject, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno {
    pub name: &'static str,
    pub value: i32,
}

/// The errnos faultd injects: those applications meet in practice for the
/// operations faultd can fail.
pub const ERRNOS: &[Errno] = &[
    Errno {
        name: "EPERM",
        value: libc::EPERM,
    },
    Errno {
        name: "ENOENT",
        value: libc::ENOENT,
    },
    Errno {
        name: "EINTR",
        value: libc::EINTR,
    },
    Errno {
        name: "EIO",
        value: libc::EIO,
    },
    Errno {
        name: "EAGAIN",
        value: libc::EAGAIN,
    },
    Errno {
        name: "ENOMEM",
        value: libc::ENOMEM,
    },
    Errno {
        name: "EACCES",
        value: libc::EACCES,
    },
    Errno {
        name: "EBUSY",
        value: libc::EBUSY,
    },
    Errno {
        name: "EEXIST",
        value: libc::EEXIST,
    },
    Errno {
        name: "EINVAL",
        value: libc::EINVAL,
    },
    Errno {
        name: "ENFILE",
        value: libc::ENFILE,
    },
    Errno {
        name: "EMFILE",
        value: libc::EMFILE,
    },
    Errno {
        name: "ENOSPC",
        value: libc::ENOSPC,
    },
    Errno {
        name: "EROFS",
        value: libc::EROFS,
    },
    Errno {
        name: "EAFNOSUPPORT",
        value: libc::EAFNOSUPPORT,
    },
    Errno {
        name: "EPROTONOSUPPORT",
        value: libc::EPROTONOSUPPORT,
    },
    Errno {
        name: "EADDRINUSE",
        value: libc::EADDRINUSE,
    },
    Errno {
        name: "EADDRNOTAVAIL",
        value: libc::EADDRNOTAVAIL,
    },
    Errno {
        name: "ENETDOWN",
        value: libc::ENETDOWN,
    },
    Errno {
        name: "ENETUNREACH",
        value: libc::ENETUNREACH,
    },
    Errno {
        name: "ECONNABORTED",
        value: libc::ECONNABORTED,
    },
    Errno {
        name: "ECONNRESET",
        value: libc::ECONNRESET,
    },
    Errno {
        name: "ENOBUFS",
        value: libc::ENOBUFS,
    },
    Errno {
        name: "ETIMEDOUT",
        value: libc::ETIMEDOUT,
    },
    Errno {
        name: "ECONNREFUSED",
        value: libc::ECONNREFUSED,
    },
    Errno {
        name: "EHOSTUNREACH",
        value: libc::EHOSTUNREACH,
    },
];

impl Errno {
    pub fn parse(name: &str) -> Option<Self> {
        let upper = name.trim().to_ascii_uppercase();
        ERRNOS.iter().copied().find(|e| e.name == upper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names() {
        assert_eq!(Errno::parse("EIO").map(|e| e.value), Some(libc::EIO));
        assert_eq!(
            Errno::parse(" etimedout ").map(|e| e.value),
            Some(libc::ETIMEDOUT)
        );
        assert!(Errno::parse("EWHATEVER").is_none());
        assert!(Errno::parse("5").is_none());
    }
}
