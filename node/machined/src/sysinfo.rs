//! Readings from /proc for the API, parsed by pure functions.

use std::collections::BTreeMap;

use std::path::Path;

use talos_proto::machine::{CpuInfo, LoadAvg, MemInfo, MountStat, ProcessInfo};

/// `/proc/meminfo` as name → kB (bytes for counts without a unit); names are lowercased with
/// punctuation removed, which is how the API's MemInfo fields are spelt.
pub fn parse_meminfo(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let value = rest.split_whitespace().next()?.parse().ok()?;
            let key: String = name
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
                .to_ascii_lowercase();
            Some((key, value))
        })
        .collect()
}

macro_rules! meminfo_fields {
    ($values:expr, $($field:ident),+ $(,)?) => {
        MemInfo { $($field: $values.get(stringify!($field)).copied().unwrap_or(0)),+ }
    };
}

pub fn meminfo(text: &str) -> MemInfo {
    let v = parse_meminfo(text);
    meminfo_fields!(
        v,
        memtotal,
        memfree,
        memavailable,
        buffers,
        cached,
        swapcached,
        active,
        inactive,
        activeanon,
        inactiveanon,
        activefile,
        inactivefile,
        unevictable,
        mlocked,
        swaptotal,
        swapfree,
        dirty,
        writeback,
        anonpages,
        mapped,
        shmem,
        slab,
        sreclaimable,
        sunreclaim,
        kernelstack,
        pagetables,
        nfsunstable,
        bounce,
        writebacktmp,
        commitlimit,
        committedas,
        vmalloctotal,
        vmallocused,
        vmallocchunk,
        hardwarecorrupted,
        anonhugepages,
        shmemhugepages,
        shmempmdmapped,
        cmatotal,
        cmafree,
        hugepagestotal,
        hugepagesfree,
        hugepagesrsvd,
        hugepagessurp,
        hugepagesize,
        directmap4k,
        directmap2m,
        directmap1g,
    )
}

/// Seconds since boot, from `/proc/uptime`.
pub fn uptime(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

pub fn loadavg(text: &str) -> LoadAvg {
    let mut fields = text
        .split_whitespace()
        .map(|f| f.parse::<f64>().unwrap_or(0.0));
    LoadAvg {
        metadata: None,
        load1: fields.next().unwrap_or(0.0),
        load5: fields.next().unwrap_or(0.0),
        load15: fields.next().unwrap_or(0.0),
    }
}

/// `/proc/cpuinfo`, one entry per processor block (x86 and arm64 key names).
pub fn cpuinfo(text: &str) -> Vec<CpuInfo> {
    text.split("\n\n")
        .filter(|block| block.contains("processor"))
        .map(|block| {
            let mut cpu = CpuInfo::default();
            for line in block.lines() {
                let Some((key, value)) = line.split_once(':') else {
                    continue;
                };
                let value = value.trim().to_owned();
                let number = || value.parse().unwrap_or(0);
                match key.trim() {
                    "processor" => cpu.processor = number(),
                    "vendor_id" | "CPU implementer" => cpu.vendor_id = value,
                    "cpu family" | "CPU architecture" => cpu.cpu_family = value,
                    "model" | "CPU part" => cpu.model = value,
                    "model name" => cpu.model_name = value,
                    "stepping" | "CPU revision" => cpu.stepping = value,
                    "microcode" => cpu.microcode = value,
                    "cpu MHz" => cpu.cpu_mhz = value.parse().unwrap_or(0.0),
                    "cache size" => cpu.cache_size = value,
                    "physical id" => cpu.physical_id = value,
                    "siblings" => cpu.siblings = number(),
                    "core id" => cpu.core_id = value,
                    "cpu cores" => cpu.cpu_cores = number(),
                    "apicid" => cpu.apic_id = value,
                    "initial apicid" => cpu.initial_apic_id = value,
                    "fpu" => cpu.fpu = value,
                    "fpu_exception" => cpu.fpu_exception = value,
                    "cpuid level" => cpu.cpu_id_level = number(),
                    "wp" => cpu.wp = value,
                    "flags" | "Features" => {
                        cpu.flags = value.split_whitespace().map(str::to_owned).collect()
                    }
                    "bugs" => cpu.bugs = value.split_whitespace().map(str::to_owned).collect(),
                    "bogomips" | "BogoMIPS" => cpu.bogo_mips = value.parse().unwrap_or(0.0),
                    "clflush size" => cpu.cl_flush_size = number(),
                    "cache_alignment" => cpu.cache_alignment = number(),
                    "address sizes" => cpu.address_sizes = value,
                    "power management" => cpu.power_management = value,
                    _ => {}
                }
            }
            cpu
        })
        .collect()
}

/// `/proc/mounts` with the size and free space of each, from `space`.
pub fn mounts(text: &str, space: impl Fn(&Path) -> Option<(u64, u64)>) -> Vec<MountStat> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let filesystem = f.next()?.to_owned();
            let mounted_on = f.next()?.replace("\\040", " ");
            let (size, available) = space(Path::new(&mounted_on)).unwrap_or((0, 0));
            Some(MountStat {
                filesystem,
                size,
                available,
                mounted_on,
            })
        })
        .collect()
}

/// Clock ticks per second in /proc/<pid>/stat (USER_HZ, 100 on every Linux we build for).
const USER_HZ: f64 = 100.0;

/// One process from `/proc/<pid>/{stat,status,cmdline}` texts.
pub fn process_info(
    pid: i32,
    stat: &str,
    status: &str,
    cmdline: &[u8],
    executable: String,
) -> Option<ProcessInfo> {
    let (comm_part, rest) = stat.rsplit_once(')')?;
    let command = comm_part.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let kb = |name: &str| {
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(name).and_then(|v| {
                    v.trim_start_matches(':')
                        .split_whitespace()
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
            })
            .unwrap_or(0)
            * 1024
    };
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(ProcessInfo {
        pid,
        ppid: fields.get(1)?.parse().ok()?,
        state: fields.first()?.to_string(),
        threads: fields.get(17).and_then(|v| v.parse().ok()).unwrap_or(1),
        cpu_time: (ticks(11) + ticks(12)) as f64 / USER_HZ,
        virtual_memory: kb("VmSize"),
        resident_memory: kb("VmRSS"),
        command,
        executable,
        args: args.join(" "),
        label: String::new(),
    })
}

/// Every process in `proc_root` (normally /proc).
pub fn processes(proc_root: &Path) -> Vec<ProcessInfo> {
    let mut list: Vec<ProcessInfo> = std::fs::read_dir(proc_root)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let dir = e.path();
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
            let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            let exe = std::fs::read_link(dir.join("exe"))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            process_info(pid, &stat, &status, &cmdline, exe)
        })
        .collect();
    list.sort_by_key(|p| p.pid);
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_cpu_and_mounts() {
        assert_eq!(uptime("12.34 20.00\n"), Some(12.34));
        let l = loadavg("0.52 0.31 0.10 1/80 1234\n");
        assert_eq!((l.load1, l.load5, l.load15), (0.52, 0.31, 0.10));
        let cpus = cpuinfo(
            "processor\t: 0\nBogoMIPS\t: 125.00\nFeatures\t: fp asimd\nCPU part\t: 0xd08\n\nprocessor\t: 1\nBogoMIPS\t: 125.00\n\nHardware\t: virt\n",
        );
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[0].flags, ["fp", "asimd"]);
        assert_eq!(cpus[0].model, "0xd08");
        assert_eq!(cpus[1].processor, 1);
        let m = mounts(
            "proc /proc proc rw 0 0\n/dev/vda /system/state ext4 rw 0 0\n",
            |p| (p == Path::new("/system/state")).then_some((100, 40)),
        );
        assert_eq!(m[1].filesystem, "/dev/vda");
        assert_eq!((m[1].size, m[1].available), (100, 40));
        assert_eq!(m[0].size, 0);
    }

    #[test]
    fn parses_a_process_with_spaces_in_its_name() {
        let stat = "1 (machined (x)) S 0 1 1 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 5 12345678 900 18446744073709551615";
        let status = "Name:\tmachined\nVmSize:\t   12000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        let p = process_info(1, stat, status, b"/init\0--flag\0", "/init".into()).unwrap();
        assert_eq!(p.command, "machined (x)");
        assert_eq!(p.state, "S");
        assert_eq!(p.ppid, 0);
        assert_eq!(p.threads, 3);
        assert!((p.cpu_time - 3.0).abs() < 1e-9);
        assert_eq!(p.resident_memory, 5120 * 1024);
        assert_eq!(p.virtual_memory, 12000 * 1024);
        assert_eq!(p.args, "/init --flag");
    }

    #[test]
    fn lists_this_machine_s_processes() {
        let me = std::process::id() as i32;
        assert!(
            processes(Path::new("/proc"))
                .iter()
                .any(|p| p.pid == me && p.resident_memory > 0)
        );
    }

    const SAMPLE: &str = "MemTotal:         496516 kB\nMemFree:          431852 kB\nMemAvailable:     440000 kB\n\
Active(anon):       1234 kB\nNFS_Unstable:          0 kB\nCommitted_AS:      12345 kB\nHugePages_Total:       7\n\
Hugepagesize:       2048 kB\nDirectMap2M:      524288 kB\n";

    #[test]
    fn meminfo_fields_map_by_name() {
        let m = meminfo(SAMPLE);
        assert_eq!(m.memtotal, 496_516);
        assert_eq!(m.memfree, 431_852);
        assert_eq!(m.memavailable, 440_000);
        assert_eq!(m.activeanon, 1234);
        assert_eq!(m.committedas, 12_345);
        assert_eq!(m.hugepagestotal, 7);
        assert_eq!(m.hugepagesize, 2048);
        assert_eq!(m.directmap2m, 524_288);
        assert_eq!(m.cmatotal, 0);
    }

    #[test]
    fn reads_this_machine_s_meminfo() {
        let text = std::fs::read_to_string("/proc/meminfo").unwrap();
        let m = meminfo(&text);
        assert!(m.memtotal > 0 && m.memfree <= m.memtotal);
    }
}
