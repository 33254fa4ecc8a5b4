//! Time: an SNTP client that steps or slews the clock, and a last-known-time floor so a board
//! without an RTC never believes it is 1970 when it checks certificates.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use talos_node_sys::clock::Clock;

use crate::services::{ServiceRegistry, ServiceState};

pub const NTP_PORT: u16 = 123;
/// Upstream's default time server.
pub const DEFAULT_SERVER: &str = "time.cloudflare.com";
/// Offsets larger than this are stepped; smaller ones are slewed.
pub const STEP_THRESHOLD: Duration = Duration::from_millis(128);
pub const FLOOR_FILE: &str = "time-floor";
const SECONDS_1900_TO_1970: u64 = 2_208_988_800;
const POLL_INTERVAL: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum TimeError {
    #[error("NTP server {server:?}: {reason}")]
    Server { server: String, reason: String },
    #[error("NTP reply from {0} is malformed or not for us")]
    BadReply(SocketAddr),
    #[error("NTP server {0} sent a kiss-o'-death (stratum 0)")]
    Kiss(SocketAddr),
    #[error("No answer from NTP server {0} within 3 s")]
    Timeout(SocketAddr),
}

fn ntp_timestamp(t: SystemTime) -> [u8; 8] {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = u32::try_from((since.as_secs() + SECONDS_1900_TO_1970) & 0xffff_ffff).unwrap_or(0);
    let frac = u32::try_from((u64::from(since.subsec_nanos()) << 32) / 1_000_000_000).unwrap_or(0);
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&secs.to_be_bytes());
    out[4..].copy_from_slice(&frac.to_be_bytes());
    out
}

fn from_ntp(bytes: &[u8]) -> Option<SystemTime> {
    let secs = u64::from(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?));
    let frac = u64::from(u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?));
    let unix = secs.checked_sub(SECONDS_1900_TO_1970)?;
    Some(
        UNIX_EPOCH + Duration::from_secs(unix) + Duration::from_nanos((frac * 1_000_000_000) >> 32),
    )
}

/// An SNTP client request (version 4, mode 3) carrying `sent` as its transmit time.
pub fn request(sent: SystemTime) -> [u8; 48] {
    let mut packet = [0u8; 48];
    packet[0] = 0x23;
    packet[40..48].copy_from_slice(&ntp_timestamp(sent));
    packet
}

fn nanos_between(a: SystemTime, b: SystemTime) -> i128 {
    let ns = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128)
    };
    ns(b) - ns(a)
}

/// One measurement: how far our clock is behind the server (positive: we are behind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub offset_ns: i64,
    pub delay: Duration,
    pub server_time: SystemTime,
}

/// Reads a server reply to the request sent at `sent`, received at `received`.
pub fn parse_reply(
    reply: &[u8],
    sent: SystemTime,
    received: SystemTime,
    from: SocketAddr,
) -> Result<Sample, TimeError> {
    if reply.len() < 48 || reply[0] & 0x07 != 4 || reply[24..32] != ntp_timestamp(sent) {
        return Err(TimeError::BadReply(from));
    }
    if reply[1] == 0 {
        return Err(TimeError::Kiss(from));
    }
    let t2 = from_ntp(&reply[32..40]).ok_or(TimeError::BadReply(from))?;
    let t3 = from_ntp(&reply[40..48]).ok_or(TimeError::BadReply(from))?;
    let offset = (nanos_between(sent, t2) + nanos_between(received, t3)) / 2;
    let delay = nanos_between(sent, received) - nanos_between(t2, t3);
    Ok(Sample {
        offset_ns: i64::try_from(offset).unwrap_or(i64::MAX),
        delay: Duration::from_nanos(u64::try_from(delay.max(0)).unwrap_or(0)),
        server_time: t3,
    })
}

/// `host`, `host:port` or `[v6]:port`; names are resolved with the network's nameservers.
pub async fn server_address(server: &str) -> Result<SocketAddr, TimeError> {
    if let Ok(addr) = server.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = server
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(SocketAddr::new(ip, NTP_PORT));
    }
    let (host, port) = match server.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse().map_err(|_| TimeError::Server {
                server: server.into(),
                reason: "the port is not a number".into(),
            })?,
        ),
        None => (server, NTP_PORT),
    };
    let ips = crate::dns::resolve(host)
        .await
        .map_err(|e| TimeError::Server {
            server: server.into(),
            reason: e.to_string(),
        })?;
    Ok(SocketAddr::new(IpAddr::V4(ips[0]), port))
}

/// Asks `addr` for the time once.
pub async fn query(addr: SocketAddr, clock: &(dyn Clock + Sync)) -> Result<Sample, TimeError> {
    let io = |e: std::io::Error| TimeError::Server {
        server: addr.to_string(),
        reason: e.to_string(),
    };
    let bind: SocketAddr = if addr.is_ipv4() {
        ([0u8; 4], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(bind).await.map_err(io)?;
    let sent = clock.now();
    socket.send_to(&request(sent), addr).await.map_err(io)?;
    let mut buf = [0u8; 128];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (n, from) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf))
            .await
            .map_err(|_| TimeError::Timeout(addr))?
            .map_err(io)?;
        if from == addr {
            return parse_reply(&buf[..n], sent, clock.now(), addr);
        }
    }
}

/// Corrects the clock by `sample`: a step for large offsets, a slew otherwise. Returns
/// whether it stepped.
pub fn correct(clock: &dyn Clock, sample: &Sample) -> Result<bool, talos_node_sys::SysError> {
    if sample.offset_ns.unsigned_abs() > STEP_THRESHOLD.as_nanos() as u64 {
        let now = clock.now();
        let target = if sample.offset_ns >= 0 {
            now + Duration::from_nanos(sample.offset_ns.unsigned_abs())
        } else {
            now - Duration::from_nanos(sample.offset_ns.unsigned_abs())
        };
        clock.step(target).map(|()| true)
    } else {
        clock.slew(sample.offset_ns).map(|()| false)
    }
}

/// The floor: the newest of the build time and the time last saved on STATE.
pub fn floor(build_epoch: Option<u64>, saved: Option<&str>) -> Option<SystemTime> {
    let saved = saved.and_then(|s| s.trim().parse::<u64>().ok());
    build_epoch
        .into_iter()
        .chain(saved)
        .max()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// Moves the clock forward to the floor if it is behind it. Returns the new time if it did.
pub fn apply_floor(
    clock: &dyn Clock,
    floor: Option<SystemTime>,
) -> Result<Option<SystemTime>, talos_node_sys::SysError> {
    match floor {
        Some(f) if clock.now() < f => clock.step(f).map(|()| Some(f)),
        _ => Ok(None),
    }
}

pub fn save_floor(dir: &Path, now: SystemTime) {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if let Err(e) =
        crate::storage::write_atomically(dir, FLOOR_FILE, format!("{secs}\n").as_bytes())
    {
        tracing::warn!("saving the time floor in {}: {e}", dir.display());
    }
}

/// Set once an NTP server has corrected the clock since boot (the clock is process-wide, and so
/// is this).
static SYNCED: AtomicBool = AtomicBool::new(false);

/// Whether the clock has been synchronized since boot; before that it is only a lower bound
/// on the real time (the floor, or a clock without RTC counting from it).
pub fn clock_synced() -> bool {
    SYNCED.load(Ordering::Relaxed)
}

/// Keeps the clock in sync with the configured servers, forever. `on_step` runs after each
/// step of the clock, so what was issued at the old time (the API certificate) is redone.
pub async fn run(
    clock: Arc<dyn Clock + Send + Sync>,
    servers: impl Fn() -> Vec<String>,
    floor_dir: Option<std::path::PathBuf>,
    services: ServiceRegistry,
    on_step: impl Fn(),
) {
    const SERVICE: &str = "timed";
    let mut backoff = Duration::from_secs(2);
    services.set(
        SERVICE,
        ServiceState::Waiting,
        "waiting for the first NTP answer",
    );
    loop {
        let mut synced = None;
        let mut last_error = String::from("no NTP server configured");
        for server in servers() {
            let result = match server_address(&server).await {
                Ok(addr) => query(addr, clock.as_ref()).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(sample) => {
                    synced = Some((server, sample));
                    break;
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        match synced {
            Some((server, sample)) => {
                match correct(clock.as_ref(), &sample) {
                    Ok(stepped) => {
                        SYNCED.store(true, Ordering::Relaxed);
                        if stepped {
                            on_step();
                        }
                        let how = if stepped { "stepped" } else { "slewed" };
                        tracing::info!(
                            server,
                            offset_ms = sample.offset_ns / 1_000_000,
                            "clock {how}"
                        );
                        services.set(
                            SERVICE,
                            ServiceState::Running,
                            &format!(
                                "in sync with {server} (offset {} ms, {how})",
                                sample.offset_ns / 1_000_000
                            ),
                        );
                    }
                    Err(e) => services.set(SERVICE, ServiceState::Failed, &e.to_string()),
                }
                if let Some(dir) = &floor_dir {
                    save_floor(dir, clock.now());
                }
                backoff = Duration::from_secs(2);
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            None => {
                tracing::warn!("time sync: {last_error}; retrying in {backoff:?}");
                services.set(SERVICE, ServiceState::Waiting, &last_error);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use talos_node_sys::fake::{Call, FakeSystem};

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn reply(sent: SystemTime, server_receive: SystemTime, server_transmit: SystemTime) -> Vec<u8> {
        let mut r = vec![0u8; 48];
        r[0] = 0x24;
        r[1] = 2;
        r[24..32].copy_from_slice(&ntp_timestamp(sent));
        r[32..40].copy_from_slice(&ntp_timestamp(server_receive));
        r[40..48].copy_from_slice(&ntp_timestamp(server_transmit));
        r
    }

    const FROM: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 123);

    #[test]
    fn timestamps_round_trip() {
        let t = at(1_764_000_000) + Duration::from_millis(250);
        let back = from_ntp(&ntp_timestamp(t)).unwrap();
        assert!(nanos_between(t, back).abs() < 1_000);
        assert_eq!(request(t)[0], 0x23);
    }

    #[test]
    fn offset_and_delay() {
        // We are 10 s behind; the round trip took 200 ms, 100 ms of it inside the server.
        let sent = at(1_000);
        let received = sent + Duration::from_millis(200);
        let sample = parse_reply(
            &reply(
                sent,
                at(1_010) + Duration::from_millis(50),
                at(1_010) + Duration::from_millis(150),
            ),
            sent,
            received,
            FROM,
        )
        .unwrap();
        // NTP fractions are 1/2^32 s, so allow a microsecond of rounding.
        assert!(
            (sample.offset_ns - 10_000_000_000).abs() < 1_000,
            "{sample:?}"
        );
        assert!(
            sample.delay.abs_diff(Duration::from_millis(100)) < Duration::from_micros(1),
            "{sample:?}"
        );
    }

    #[test]
    fn refuses_replies_not_for_us_and_kisses() {
        let sent = at(1_000);
        let r = reply(at(999), at(1_000), at(1_000));
        assert!(matches!(
            parse_reply(&r, sent, sent, FROM),
            Err(TimeError::BadReply(_))
        ));
        let mut kiss = reply(sent, at(1_000), at(1_000));
        kiss[1] = 0;
        assert!(matches!(
            parse_reply(&kiss, sent, sent, FROM),
            Err(TimeError::Kiss(_))
        ));
        assert!(matches!(
            parse_reply(&[0u8; 10], sent, sent, FROM),
            Err(TimeError::BadReply(_))
        ));
    }

    #[test]
    fn big_offsets_step_small_ones_slew() {
        let fake = FakeSystem::default();
        *fake.clock.lock().unwrap() = Some(at(1_000));
        let step = Sample {
            offset_ns: 5_000_000_000,
            delay: Duration::ZERO,
            server_time: at(1_005),
        };
        assert!(correct(&fake, &step).unwrap());
        let slew = Sample {
            offset_ns: -20_000_000,
            delay: Duration::ZERO,
            server_time: at(1_005),
        };
        assert!(!correct(&fake, &slew).unwrap());
        assert_eq!(
            fake.calls(),
            vec![Call::StepClock(at(1_005)), Call::SlewClock(-20_000_000)]
        );
    }

    #[test]
    fn the_floor_only_moves_the_clock_forward() {
        let fake = FakeSystem::default();
        *fake.clock.lock().unwrap() = Some(at(0));
        let f = floor(Some(1_700_000_000), Some("1764000000\n"));
        assert_eq!(f, Some(at(1_764_000_000)));
        assert_eq!(apply_floor(&fake, f).unwrap(), Some(at(1_764_000_000)));
        assert_eq!(
            apply_floor(&fake, Some(at(5))).unwrap(),
            None,
            "never backwards"
        );
        assert_eq!(floor(None, Some("garbage")), None);
    }

    #[test]
    fn the_floor_survives_in_a_file() {
        let dir = tempfile::tempdir().unwrap();
        save_floor(dir.path(), at(1_764_000_123));
        let text = std::fs::read_to_string(dir.path().join(FLOOR_FILE)).unwrap();
        assert_eq!(floor(None, Some(&text)), Some(at(1_764_000_123)));
    }

    /// A UDP time server that answers once, an hour ahead of the real time.
    async fn hour_ahead_server() -> SocketAddr {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 48];
            let (_, peer) = server.recv_from(&mut buf).await.unwrap();
            let origin = from_ntp(&buf[40..48]).unwrap();
            let ahead = SystemTime::now() + Duration::from_secs(3600);
            let mut r = reply(origin, ahead, ahead);
            r[24..32].copy_from_slice(&buf[40..48]);
            server.send_to(&r, peer).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn queries_a_real_udp_server() {
        let addr = hour_ahead_server().await;
        let sample = query(addr, &talos_node_sys::fs::Linux).await.unwrap();
        assert!(
            (sample.offset_ns - 3_600_000_000_000).abs() < 1_000_000_000,
            "{sample:?}"
        );
        assert_eq!(
            server_address("10.0.2.2:12345").await.unwrap(),
            "10.0.2.2:12345".parse().unwrap()
        );
        assert_eq!(
            server_address("10.0.2.2").await.unwrap(),
            "10.0.2.2:123".parse().unwrap()
        );
    }

    #[tokio::test]
    async fn a_step_is_reported_so_certificates_are_reissued() {
        let addr = hour_ahead_server().await;
        let fake = Arc::new(FakeSystem::default());
        *fake.clock.lock().unwrap() = Some(SystemTime::now());
        let (stepped, mut steps) = tokio::sync::mpsc::unbounded_channel();
        let sync = tokio::spawn(run(
            fake.clone(),
            move || vec![addr.to_string()],
            None,
            ServiceRegistry::default(),
            move || stepped.send(()).unwrap(),
        ));
        tokio::time::timeout(Duration::from_secs(10), steps.recv())
            .await
            .expect("no step reported within 10 s")
            .unwrap();
        sync.abort();
        assert!(
            matches!(fake.calls()[..], [Call::StepClock(_)]),
            "{:?}",
            fake.calls()
        );
    }
}
