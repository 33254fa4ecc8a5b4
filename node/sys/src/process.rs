//! PID 1 duties: reaping children and naming the host.

use crate::error::{SysError, cstring};

/// A child that exited and was reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub pid: i32,
    pub status: i32,
}

/// Reaps every exited child without blocking.
pub fn reap_children() -> Vec<Reaped> {
    let mut reaped = Vec::new();
    loop {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG only writes to `status`, a valid local.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return reaped;
        }
        reaped.push(Reaped { pid, status });
    }
}

pub trait Hostname {
    fn set_hostname(&self, name: &str) -> Result<(), SysError>;
}

impl Hostname for crate::fs::Linux {
    fn set_hostname(&self, name: &str) -> Result<(), SysError> {
        let c = cstring("sethostname", name)?;
        // SAFETY: the pointer and length describe the bytes of a live CString.
        if unsafe { libc::sethostname(c.as_ptr(), name.len()) } != 0 {
            return Err(SysError::last("sethostname", name));
        }
        Ok(())
    }
}

/// True when this process is the init process of its PID namespace.
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Makes /dev/console this process's stdin, stdout and stderr (the kernel may start init
/// without them when the initramfs has no /dev/console node).
pub fn attach_console() -> Result<(), SysError> {
    use std::os::fd::AsRawFd;
    let console = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
        .map_err(|e| SysError::new("open", "/dev/console", e))?;
    for target in 0..=2 {
        // SAFETY: dup2 on an open descriptor we own onto the standard descriptors; no memory
        // is involved and the old descriptors, if any, are closed atomically.
        if unsafe { libc::dup2(console.as_raw_fd(), target) } < 0 {
            return Err(SysError::last(
                "dup2",
                format!("/dev/console onto fd {target}"),
            ));
        }
    }
    Ok(())
}
