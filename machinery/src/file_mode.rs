//! File modes on the wire: the API carries Go's `fs.FileMode` bits, as upstream nodes send
//! them: permissions low, the file type and setuid/setgid/sticky high.

pub const DIR: u32 = 1 << 31;
pub const SYMLINK: u32 = 1 << 27;
pub const DEVICE: u32 = 1 << 26;
pub const NAMED_PIPE: u32 = 1 << 25;
pub const SOCKET: u32 = 1 << 24;
pub const SETUID: u32 = 1 << 23;
pub const SETGID: u32 = 1 << 22;
pub const CHAR_DEVICE: u32 = 1 << 21;
pub const STICKY: u32 = 1 << 20;
pub const IRREGULAR: u32 = 1 << 19;

/// A POSIX `st_mode` as Go's mode bits.
pub fn from_unix(st_mode: u32) -> u32 {
    let kind = match st_mode & 0o170_000 {
        0o100_000 => 0,
        0o040_000 => DIR,
        0o120_000 => SYMLINK,
        0o060_000 => DEVICE,
        0o020_000 => DEVICE | CHAR_DEVICE,
        0o010_000 => NAMED_PIPE,
        0o140_000 => SOCKET,
        _ => IRREGULAR,
    };
    let special = [(0o4000, SETUID), (0o2000, SETGID), (0o1000, STICKY)]
        .iter()
        .filter(|(unix, _)| st_mode & unix != 0)
        .fold(0, |acc, (_, go)| acc | go);
    kind | special | (st_mode & 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_each_file_type() {
        assert_eq!(from_unix(0o040_755), DIR | 0o755);
        assert_eq!(from_unix(0o100_644), 0o644);
        assert_eq!(from_unix(0o120_777), SYMLINK | 0o777);
        assert_eq!(from_unix(0o020_620), DEVICE | CHAR_DEVICE | 0o620);
        assert_eq!(from_unix(0o041_777), DIR | STICKY | 0o777);
        assert_eq!(from_unix(0o104_755), SETUID | 0o755);
    }
}
