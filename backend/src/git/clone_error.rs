//! [`CloneError`]: why a clone (or the read of a local source) failed, in
//! words a person can act on. A leaf, so that `clone` and `local_source`
//! both use it without importing each other.

/// Why a clone failed, in words a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    #[error("repository not found: check the URL (a private repository also needs a token)")]
    NotFound,
    #[error("authentication required: the repository is private or the token was refused")]
    AuthRequired,
    #[error("ref {0:?} was not found in the repository (no such branch, tag or commit)")]
    RefNotFound(String),
    #[error(
        "the repository is larger than the clone limit of {0} bytes (BACKEND_MAX_CLONE_BYTES)"
    )]
    TooLarge(u64),
    #[error(
        "the repository's files add up to more than the checkout limit of {0} bytes (BACKEND_MAX_CHECKOUT_BYTES)"
    )]
    CheckoutTooLarge(u64),
    #[error(
        "not enough free disk space for the workspace: {free} bytes free, {needed} needed (BACKEND_MIN_FREE_DISK_BYTES are kept free)"
    )]
    DiskFull { free: u64, needed: u64 },
    #[error("the clone was cancelled")]
    Cancelled,
    #[error(
        "the local repository is in, or reaches through a symlink, a .git file or alternates into, a folder local clones may not read (WORKSPACES_ROOT or BACKEND_FORBIDDEN_CLONE_PATHS)"
    )]
    ForbiddenSource,
    #[error("the local repository holds a FIFO, a socket or a device, which a clone could wait on for good")]
    SpecialFile,
    #[error("disk error while writing the workspace: {0}")]
    Disk(String),
    /// One message for every way a host can be out of reach (no such name,
    /// refused by the policy, closed port, no answer), so a clone URL cannot
    /// be used to tell open ports from closed ones.
    #[error("could not reach the repository host")]
    Unreachable,
    #[error("network error: {0}")]
    Network(String),
    #[error(
        "the server redirected the clone elsewhere; redirects are not followed: use the final URL"
    )]
    Redirected,
    #[error("{0}")]
    Other(String),
}
