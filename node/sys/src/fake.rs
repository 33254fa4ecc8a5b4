//! Recording fakes of every trait in this crate.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::SysError;
use crate::block::Partitions;
use crate::clock::Clock;
use crate::fs::{Freezer, ModuleLoader, MountSpec, Mounter};
use crate::loopdev::{LoopDevice, LoopDevices};
use crate::net::NetConfig;
use crate::power::{Power, RebootAction};
use crate::process::Hostname;

/// One side effect the fake saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mount(MountSpec),
    LoadModule(PathBuf),
    Sync,
    Reboot(RebootAction),
    SetHostname(String),
    NameFiles {
        hosts: String,
        resolv_conf: String,
    },
    LinkUp(String),
    SetIpv4 {
        link: String,
        addr: Ipv4Addr,
        prefix: u8,
    },
    Route {
        link: String,
        destination: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
    },
    SetMtu {
        link: String,
        mtu: u32,
    },
    StepClock(std::time::SystemTime),
    SlewClock(i64),
    Freeze(PathBuf),
    Thaw(PathBuf),
    AttachLoop(PathBuf),
    Unmount(PathBuf),
    AddPartition {
        disk: PathBuf,
        number: u32,
        start: u64,
        len: u64,
    },
}

/// Records calls; the module loader fails for paths listed in `failing_modules`.
#[derive(Debug, Default)]
pub struct FakeSystem {
    pub calls: Mutex<Vec<Call>>,
    pub failing_modules: Vec<PathBuf>,
    /// What `Clock::now` returns; the real clock when unset.
    pub clock: Mutex<Option<std::time::SystemTime>>,
}

impl FakeSystem {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("fake lock poisoned").clone()
    }

    fn record(&self, call: Call) {
        self.calls.lock().expect("fake lock poisoned").push(call);
    }
}

impl Mounter for FakeSystem {
    fn mount(&self, spec: &MountSpec) -> Result<(), SysError> {
        self.record(Call::Mount(spec.clone()));
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<(), SysError> {
        self.record(Call::Unmount(target.to_owned()));
        Ok(())
    }
}

impl Partitions for FakeSystem {
    fn add_partition(
        &self,
        disk: &Path,
        number: u32,
        start: u64,
        len: u64,
    ) -> Result<(), SysError> {
        self.record(Call::AddPartition {
            disk: disk.to_owned(),
            number,
            start,
            len,
        });
        Ok(())
    }
}

/// Every file goes to `/dev/loop0`.
impl LoopDevices for FakeSystem {
    fn attach_read_only(&self, file: &Path) -> Result<LoopDevice, SysError> {
        self.record(Call::AttachLoop(file.to_owned()));
        Ok(LoopDevice::new(PathBuf::from("/dev/loop0"), None))
    }
}

impl Freezer for FakeSystem {
    fn freeze(&self, mount_point: &Path) -> Result<(), SysError> {
        self.record(Call::Freeze(mount_point.to_owned()));
        Ok(())
    }

    fn thaw(&self, mount_point: &Path) -> Result<(), SysError> {
        self.record(Call::Thaw(mount_point.to_owned()));
        Ok(())
    }
}

impl ModuleLoader for FakeSystem {
    fn load_module(&self, path: &Path) -> Result<(), SysError> {
        self.record(Call::LoadModule(path.to_owned()));
        if self.failing_modules.iter().any(|p| p == path) {
            return Err(SysError::new(
                "finit_module",
                path.display().to_string(),
                std::io::Error::from_raw_os_error(libc::ENOEXEC),
            ));
        }
        Ok(())
    }
}

impl Power for FakeSystem {
    fn sync(&self) {
        self.record(Call::Sync);
    }

    fn reboot(&self, action: RebootAction) -> SysError {
        self.record(Call::Reboot(action));
        SysError::new(
            "reboot",
            "fake",
            std::io::Error::other("fake system does not reboot"),
        )
    }
}

impl Hostname for FakeSystem {
    fn set_hostname(&self, name: &str) -> Result<(), SysError> {
        self.record(Call::SetHostname(name.to_owned()));
        Ok(())
    }

    fn write_name_files(&self, hosts: &str, resolv_conf: &str) -> Result<(), SysError> {
        self.record(Call::NameFiles {
            hosts: hosts.to_owned(),
            resolv_conf: resolv_conf.to_owned(),
        });
        Ok(())
    }
}

impl NetConfig for FakeSystem {
    fn link_up(&self, link: &str) -> Result<(), SysError> {
        self.record(Call::LinkUp(link.to_owned()));
        Ok(())
    }

    fn set_ipv4(&self, link: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), SysError> {
        self.record(Call::SetIpv4 {
            link: link.to_owned(),
            addr,
            prefix,
        });
        Ok(())
    }

    fn add_route(
        &self,
        link: &str,
        destination: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
    ) -> Result<(), SysError> {
        self.record(Call::Route {
            link: link.to_owned(),
            destination,
            prefix,
            gateway,
        });
        Ok(())
    }

    fn set_mtu(&self, link: &str, mtu: u32) -> Result<(), SysError> {
        self.record(Call::SetMtu {
            link: link.to_owned(),
            mtu,
        });
        Ok(())
    }
}

impl Clock for FakeSystem {
    fn now(&self) -> std::time::SystemTime {
        self.clock
            .lock()
            .expect("fake lock poisoned")
            .unwrap_or_else(std::time::SystemTime::now)
    }

    fn step(&self, to: std::time::SystemTime) -> Result<(), SysError> {
        *self.clock.lock().expect("fake lock poisoned") = Some(to);
        self.record(Call::StepClock(to));
        Ok(())
    }

    fn slew(&self, offset_ns: i64) -> Result<(), SysError> {
        self.record(Call::SlewClock(offset_ns));
        Ok(())
    }
}
