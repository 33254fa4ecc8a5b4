//! U-Boot legacy images of type "script" (`boot.scr`), as `mkimage -T script` makes them.

const MAGIC: u32 = 0x2705_1956;
const OS_LINUX: u8 = 5;
const TYPE_SCRIPT: u8 = 6;
const COMPRESSION_NONE: u8 = 0;
const HEADER_LEN: usize = 64;
const NAME_LEN: usize = 32;

/// U-Boot's architecture numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UbootArch {
    Arm64 = 22,
    X86_64 = 24,
}

/// Wraps `script` with a zero timestamp, so the output depends on the script alone.
pub fn script_image(script: &str, arch: UbootArch, name: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(8 + script.len());
    data.extend_from_slice(&(script.len() as u32).to_be_bytes());
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(script.as_bytes());

    let mut header = [0u8; HEADER_LEN];
    header[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    header[12..16].copy_from_slice(&(data.len() as u32).to_be_bytes());
    header[24..28].copy_from_slice(&crc32fast::hash(&data).to_be_bytes());
    header[28] = OS_LINUX;
    header[29] = arch as u8;
    header[30] = TYPE_SCRIPT;
    header[31] = COMPRESSION_NONE;
    let name = name.as_bytes();
    let n = name.len().min(NAME_LEN - 1);
    header[32..32 + n].copy_from_slice(&name[..n]);
    let header_crc = crc32fast::hash(&header);
    header[4..8].copy_from_slice(&header_crc.to_be_bytes());
    [header.as_slice(), &data].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn matches_mkimage() {
        let dir = std::env::temp_dir().join(format!("uimage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = "echo hello\nboot\n";
        std::fs::write(dir.join("boot.cmd"), script).unwrap();
        let status = Command::new("mkimage")
            .env("SOURCE_DATE_EPOCH", "0")
            .args([
                "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none", "-n", "talos",
            ])
            .arg("-d")
            .arg(dir.join("boot.cmd"))
            .arg(dir.join("boot.scr"))
            .output();
        let Ok(out) = status else {
            eprintln!("mkimage (u-boot-tools) is not installed; comparing with it skipped");
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = std::fs::read(dir.join("boot.scr")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(script_image(script, UbootArch::Arm64, "talos"), expected);
    }
}
