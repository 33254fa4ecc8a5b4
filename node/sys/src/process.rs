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

/// How the node is named and finds names: the kernel hostname, `/etc/hosts` and
/// `/etc/resolv.conf`.
pub trait Hostname {
    fn set_hostname(&self, name: &str) -> Result<(), SysError>;
    /// Replaces `/etc/hosts` and `/etc/resolv.conf`, each by a rename.
    fn write_name_files(&self, hosts: &str, resolv_conf: &str) -> Result<(), SysError>;
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

    fn write_name_files(&self, hosts: &str, resolv_conf: &str) -> Result<(), SysError> {
        for (path, text) in [("/etc/hosts", hosts), ("/etc/resolv.conf", resolv_conf)] {
            let tmp = format!("{path}.tmp");
            std::fs::write(&tmp, text)
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(|e| SysError::new("write", path, e))?;
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

/// Makes the child that `command` spawns join a cgroup, take an OOM score and lead its own
/// session, all before it executes its program, so nothing it starts runs outside the cgroup.
///
/// `cgroup_procs` is the cgroup's open `cgroup.procs`; the child writes `0` to it (cgroup v2:
/// "move the writer").
pub fn confine(
    command: &mut std::process::Command,
    cgroup_procs: std::fs::File,
    oom_score_adj: i32,
) -> Result<(), SysError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let oom_path = cstring("open", "/proc/self/oom_score_adj")?;
    let oom_value = oom_score_adj.to_string().into_bytes();
    let hook = move || {
        // SAFETY: between fork and exec only async-signal-safe calls are made (write, open,
        // close, setsid), on buffers allocated before the fork and descriptors we own.
        unsafe {
            if libc::write(cgroup_procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            let oom = libc::open(oom_path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if oom < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(oom, oom_value.as_ptr().cast(), oom_value.len());
            libc::close(oom);
            if written < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe calls (see above).
    unsafe { command.pre_exec(hook) };
    Ok(())
}

/// Signals a service may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Kill,
}

/// Sends `signal` to process `pid`.
pub fn send_signal(pid: i32, signal: Signal) -> Result<(), SysError> {
    let number = match signal {
        Signal::Terminate => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
    };
    // SAFETY: kill takes plain integers and touches no memory.
    if unsafe { libc::kill(pid, number) } != 0 {
        return Err(SysError::last("kill", pid.to_string()));
    }
    Ok(())
}

/// Reaps child `pid` if it has exited, without blocking; its raw wait status.
pub fn reap(pid: i32) -> Option<i32> {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG only writes to `status`, a valid local.
    let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    (reaped == pid).then_some(status)
}
