//! Against a real two-member etcd cluster on loopback (Debian's etcd-server). Without
//! /usr/bin/etcd the cluster test skips with a message, unless `TALOS_RS_E2E_REQUIRED` is set
//! (as `cargo xtask test` does), which makes it fail.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use talos_machinery::pki::{CaSubject, SubjectAltName};

use super::*;

const ETCD: &str = "/usr/bin/etcd";

fn etcd_installed() -> bool {
    if Path::new(ETCD).is_file() {
        return true;
    }
    assert!(
        std::env::var_os("TALOS_RS_E2E_REQUIRED").is_none(),
        "{ETCD} is missing: install Debian's etcd-server package (apt-get install etcd-server)"
    );
    eprintln!("skipped: {ETCD} is missing; install Debian's etcd-server package");
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// One etcd process, killed when dropped.
struct EtcdProcess {
    name: &'static str,
    client: SocketAddr,
    peer_url: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EtcdProcess {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

/// Starts `names` as one new cluster, each with mutual TLS from `ca` on its own ports.
fn start_cluster(ca: &CertAndKey, names: &[&'static str]) -> Vec<EtcdProcess> {
    let ports: Vec<(u16, u16)> = names.iter().map(|_| (free_port(), free_port())).collect();
    let peer_url = |port: u16| format!("https://127.0.0.1:{port}");
    let initial_cluster = names
        .iter()
        .zip(&ports)
        .map(|(name, (_, peer))| format!("{name}={}", peer_url(*peer)))
        .collect::<Vec<_>>()
        .join(",");
    let sans = [
        SubjectAltName::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SubjectAltName::Dns("localhost".into()),
    ];
    names
        .iter()
        .zip(&ports)
        .map(|(name, (client, peer))| {
            let dir = tempfile::tempdir().unwrap();
            let write = |file: &str, pem: &str| {
                let path = dir.path().join(file);
                std::fs::write(&path, pem).unwrap();
                path.display().to_string()
            };
            let cert =
                pki::issue_peer_cert(ca, name, &sans, CLIENT_CERT_VALIDITY, SystemTime::now())
                    .unwrap();
            let ca_file = write("ca.crt", &ca.cert_pem);
            let cert_file = write("member.crt", &cert.cert_pem);
            let key_file = write("member.key", &cert.key_pem);
            let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
            let client_url = format!("https://127.0.0.1:{client}");
            let mut command = Command::new(ETCD);
            command
                .args([
                    format!("--name={name}"),
                    format!("--data-dir={}", dir.path().join("data").display()),
                    format!("--listen-client-urls={client_url}"),
                    format!("--advertise-client-urls={client_url}"),
                    format!("--listen-peer-urls={}", peer_url(*peer)),
                    format!("--initial-advertise-peer-urls={}", peer_url(*peer)),
                    format!("--initial-cluster={initial_cluster}"),
                    "--initial-cluster-state=new".into(),
                    format!("--trusted-ca-file={ca_file}"),
                    format!("--cert-file={cert_file}"),
                    format!("--key-file={key_file}"),
                    "--client-cert-auth=true".into(),
                    format!("--peer-trusted-ca-file={ca_file}"),
                    format!("--peer-cert-file={cert_file}"),
                    format!("--peer-key-file={key_file}"),
                    "--peer-client-cert-auth=true".into(),
                ])
                .env_clear()
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            if cfg!(target_arch = "aarch64") {
                command.env("ETCD_UNSUPPORTED_ARCH", "arm64");
            }
            EtcdProcess {
                name,
                client: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), *client),
                peer_url: peer_url(*peer),
                child: command.spawn().unwrap(),
                dir,
            }
        })
        .collect()
}

/// A client of `member` once every member of its cluster has started (has a name).
async fn client_when_started(
    member: &EtcdProcess,
    tls: &Arc<ClientConfig>,
    size: usize,
) -> EtcdClient {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        match EtcdClient::connect(member.client, tls.clone()).await {
            Ok(mut client) => match client.member_list().await {
                Ok(list)
                    if list.members.len() == size
                        && list.members.iter().all(|m| !m.name.is_empty()) =>
                {
                    return client;
                }
                Ok(list) => last = format!("members so far: {:?}", list.members),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = format!("{e}: {:?}", std::error::Error::source(&e)),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "etcd {} did not start within 60 s: {last}\n{}",
        member.name,
        member.log()
    );
}

#[tokio::test]
async fn lists_both_members_moves_leadership_removes_one_and_refuses_the_last() {
    if !etcd_installed() {
        return;
    }
    let ca = pki::new_ecdsa_ca(CaSubject::Organization("etcd".into()), SystemTime::now()).unwrap();
    let cluster = start_cluster(&ca, &["cp-a", "cp-b"]);
    let (a, b) = (&cluster[0], &cluster[1]);
    let tls = client_tls(&ca, SystemTime::now()).unwrap();

    let mut client_a = client_when_started(a, &tls, 2).await;
    let listed = client_a.member_list().await.unwrap();
    assert_ne!(listed.header.unwrap().member_id, 0);
    let mut names: Vec<(String, Vec<String>)> = listed
        .members
        .iter()
        .map(|m| (m.name.clone(), m.peer_urls.clone()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("cp-a".to_owned(), vec![a.peer_url.clone()]),
            ("cp-b".to_owned(), vec![b.peer_url.clone()]),
        ]
    );

    // Leadership moves to the other member, and only the leader has it to give.
    let mut client_b = client_when_started(b, &tls, 2).await;
    let status_a = client_a.status().await.unwrap();
    let (mut leader, mut follower, follower_name) =
        if status_a.leader == status_a.header.unwrap().member_id {
            (client_a.clone(), client_b.clone(), "cp-b")
        } else {
            (client_b.clone(), client_a.clone(), "cp-a")
        };
    assert_eq!(forfeit_leadership(&mut follower).await.unwrap(), None);
    assert_eq!(
        forfeit_leadership(&mut leader).await.unwrap().as_deref(),
        Some(follower_name)
    );
    let status = follower.status().await.unwrap();
    assert_eq!(status.leader, status.header.unwrap().member_id);

    let left = leave(&mut client_a, "cp-a", &[]).await.unwrap();
    assert_eq!(left.name, "cp-a");
    client_b = client_when_started(b, &tls, 1).await;
    let remaining = client_b.member_list().await.unwrap().members;
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0].name, "cp-b");

    // Found by its peer URL this time, and refused: it is the last member.
    let refused = leave(&mut client_b, "renamed", std::slice::from_ref(&b.peer_url))
        .await
        .unwrap_err();
    assert!(matches!(&refused, EtcdError::LastMember { name, .. } if name == "cp-b"));
    assert!(
        refused.to_string().contains("--graceful=false"),
        "{refused}"
    );
    // etcd itself refuses it as well, which is where upstream's graceful reset fails.
    let by_etcd = client_b.member_remove(remaining[0].id).await.unwrap_err();
    assert!(
        by_etcd.to_string().contains("not enough started members"),
        "{by_etcd}"
    );
    assert_eq!(client_b.member_list().await.unwrap().members.len(), 1);

    let stranger = leave(&mut client_b, "nobody", &[]).await.unwrap_err();
    assert!(
        stranger
            .to_string()
            .starts_with("no etcd member is named \"nobody\""),
        "{stranger}"
    );
}

#[tokio::test]
async fn snapshots_carry_the_database_and_its_checksum() {
    if !etcd_installed() {
        return;
    }
    let ca = pki::new_ecdsa_ca(CaSubject::Organization("etcd".into()), SystemTime::now()).unwrap();
    let cluster = start_cluster(&ca, &["cp-solo"]);
    let tls = client_tls(&ca, SystemTime::now()).unwrap();
    let mut client = client_when_started(&cluster[0], &tls, 1).await;
    let members = client.member_list().await.unwrap().members;
    assert_eq!(
        members[0].client_urls,
        [format!("https://{}", cluster[0].client)]
    );
    assert!(!members[0].is_learner);
    let status = client.status().await.unwrap();
    let own = status.header.as_ref().unwrap().member_id;
    assert_eq!((own, status.leader), (members[0].id, members[0].id));
    assert!(status.db_size >= status.db_size_in_use && status.db_size_in_use > 0);
    assert!(
        status.raft_index > 0 && status.version.starts_with("3."),
        "{status:?}"
    );

    let mut chunks = client.snapshot().await.unwrap();
    let mut check = talos_machinery::etcd_snapshot::SnapshotCheck::default();
    let mut received = 0;
    while let Some(chunk) = chunks.message().await.unwrap() {
        received += chunk.blob.len();
        check.update(&chunk.blob);
    }
    let database = check.finish().unwrap();
    assert_eq!(database as usize + 32, received);
}

#[test]
fn clearing_the_data_keeps_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("member/wal")).unwrap();
    std::fs::write(dir.path().join("member/wal/0.wal"), b"x").unwrap();
    std::fs::write(dir.path().join("stray"), b"y").unwrap();
    clear_data(dir.path()).unwrap();
    assert!(dir.path().is_dir());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    clear_data(&dir.path().join("absent")).unwrap();
}
