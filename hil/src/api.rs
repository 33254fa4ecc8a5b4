//! The node's API as the rig uses it: a small synchronous trait over `talos-client`, with a
//! transcript of every call and answer (a per-test artifact).

use std::fmt::Debug;
use std::time::{Duration, Instant};

use talos_client::{Client, ClientError, Endpoint, TlsMode};
use talos_proto::machine::UpgradeRequest;
use talos_proto::machine::apply_configuration_request::Mode as ApplyMode;
use talos_proto::machine::reboot_request::Mode as RebootMode;

/// An API call that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{call} on {endpoint}: {message}")]
pub struct ApiError {
    pub call: &'static str,
    pub endpoint: String,
    /// The gRPC code, when the node answered.
    pub code: Option<String>,
    pub message: String,
}

impl ApiError {
    /// The node answered and refused (rather than not answering).
    pub fn is_refusal(&self) -> bool {
        self.code.is_some()
    }
}

/// One transcript entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRecord {
    /// Time since the API driver was created.
    pub at: Duration,
    pub call: &'static str,
    pub endpoint: String,
    /// `insecure` or `mutual`.
    pub tls: &'static str,
    pub answer: String,
}

impl std::fmt::Display for ApiRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{:10.3}] {} {} ({}) -> {}",
            self.at.as_secs_f64(),
            self.call,
            self.endpoint,
            self.tls,
            self.answer
        )
    }
}

/// The calls the strategies and suites make. Answers are short human-readable summaries.
pub trait NodeApi: Send + Debug {
    /// Calls Version until a real answer arrives or `timeout` passes.
    fn wait_version(
        &mut self,
        endpoint: &Endpoint,
        tls: &TlsMode,
        timeout: Duration,
    ) -> Result<String, ApiError>;
    /// One Version call, no retries.
    fn version(&mut self, endpoint: &Endpoint, tls: &TlsMode) -> Result<String, ApiError>;
    fn apply_config(
        &mut self,
        endpoint: &Endpoint,
        tls: &TlsMode,
        config: &[u8],
    ) -> Result<String, ApiError>;
    fn reboot(&mut self, endpoint: &Endpoint, tls: &TlsMode) -> Result<String, ApiError>;
    /// Upgrade from the installer `image` (an OCI reference the node pulls); the node reboots.
    fn upgrade(
        &mut self,
        endpoint: &Endpoint,
        tls: &TlsMode,
        image: &str,
    ) -> Result<String, ApiError>;
    /// The kernel log.
    fn dmesg(&mut self, endpoint: &Endpoint, tls: &TlsMode) -> Result<String, ApiError>;
    /// Service ids.
    fn services(&mut self, endpoint: &Endpoint, tls: &TlsMode) -> Result<Vec<String>, ApiError>;
    /// Every call so far.
    fn transcript(&self) -> Vec<ApiRecord>;
}

/// [`NodeApi`] over talos-client, on a private current-thread tokio runtime.
#[derive(Debug)]
pub struct TalosApi {
    runtime: tokio::runtime::Runtime,
    started: Instant,
    records: Vec<ApiRecord>,
    cached: Option<(String, &'static str, Client)>,
}

/// Per-call limit for calls that are not retried.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Upgrade answers once the node has pulled the installer and written the new slot.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(600);

fn tls_name(tls: &TlsMode) -> &'static str {
    match tls {
        TlsMode::Insecure => "insecure",
        TlsMode::Mutual { .. } => "mutual",
    }
}

fn api_error(call: &'static str, endpoint: &Endpoint, err: &ClientError) -> ApiError {
    ApiError {
        call,
        endpoint: endpoint.to_string(),
        code: err.code().map(|c| format!("{c:?}")),
        message: err.to_string(),
    }
}

impl TalosApi {
    pub fn new() -> std::io::Result<TalosApi> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(TalosApi {
            runtime,
            started: Instant::now(),
            records: Vec::new(),
            cached: None,
        })
    }

    fn record<T>(
        &mut self,
        call: &'static str,
        endpoint: &Endpoint,
        tls: &TlsMode,
        result: Result<T, ApiError>,
        summary: impl FnOnce(&T) -> String,
    ) -> Result<T, ApiError> {
        let answer = match &result {
            Ok(value) => format!("ok: {}", summary(value)),
            Err(err) => {
                // A failed connection is not reused.
                self.cached = None;
                format!("error: {}", err.message)
            }
        };
        self.records.push(ApiRecord {
            at: self.started.elapsed(),
            call,
            endpoint: endpoint.to_string(),
            tls: tls_name(tls),
            answer,
        });
        result
    }

    /// A connected client for `endpoint` and `tls`, reused across calls.
    fn client(
        &mut self,
        call: &'static str,
        endpoint: &Endpoint,
        tls: &TlsMode,
    ) -> Result<Client, ApiError> {
        let key = endpoint.to_string();
        if let Some((cached_key, cached_tls, client)) = &self.cached
            && *cached_key == key
            && *cached_tls == tls_name(tls)
        {
            return Ok(client.clone());
        }
        let client = self
            .runtime
            .block_on(async {
                tokio::time::timeout(CALL_TIMEOUT, Client::connect(endpoint, tls.clone())).await
            })
            .map_err(|_| timeout_error(call, endpoint, CALL_TIMEOUT))?
            .map_err(|e| api_error(call, endpoint, &e))?;
        self.cached = Some((key, tls_name(tls), client.clone()));
        Ok(client)
    }

    fn call<T, F, Fut>(
        &mut self,
        call: &'static str,
        endpoint: &Endpoint,
        tls: &TlsMode,
        rpc: F,
    ) -> Result<T, ApiError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        self.call_within(CALL_TIMEOUT, call, endpoint, tls, rpc)
    }

    fn call_within<T, F, Fut>(
        &mut self,
        limit: Duration,
        call: &'static str,
        endpoint: &Endpoint,
        tls: &TlsMode,
        rpc: F,
    ) -> Result<T, ApiError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let client = self.client(call, endpoint, tls)?;
        self.runtime
            .block_on(async { tokio::time::timeout(limit, rpc(client)).await })
            .map_err(|_| timeout_error(call, endpoint, limit))?
            .map_err(|e| api_error(call, endpoint, &e))
    }
}

fn timeout_error(call: &'static str, endpoint: &Endpoint, limit: Duration) -> ApiError {
    ApiError {
        call,
        endpoint: endpoint.to_string(),
        code: None,
        message: format!("no answer within {limit:?}"),
    }
}

fn describe_version(version: &talos_proto::machine::Version) -> String {
    match &version.version {
        Some(info) => format!("tag {} arch {} os {:?}", info.tag, info.arch, info.os),
        None => "no version info".to_owned(),
    }
}

/// The version tag in a Version answer (`tag v1.0.0 arch ...`).
pub fn version_tag(answer: &str) -> Option<&str> {
    answer
        .strip_prefix("tag ")?
        .split_whitespace()
        .next()
        .filter(|tag| !tag.is_empty())
}

impl NodeApi for TalosApi {
    fn wait_version(
        &mut self,
        endpoint: &Endpoint,
        tls: &TlsMode,
        timeout: Duration,
    ) -> Result<String, ApiError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let result = self.runtime.block_on(async {
            let client = Client::connect_with_retry(endpoint, tls.clone(), deadline.into_std())
                .await
                .map_err(|e| api_error("Version", endpoint, &e))?;
            let version = client
                .version()
                .await
                .map_err(|e| api_error("Version", endpoint, &e))?;
            Ok((client, version))
        });
        let result = result.map(|(client, version)| {
            self.cached = Some((endpoint.to_string(), tls_name(tls), client));
            describe_version(&version)
        });
        self.record("Version", endpoint, tls, result, Clone::clone)
    }

    fn version(&mut self, endpoint: &Endpoint, tls: &TlsMode) -> Result<String, ApiError> {
        let result = self
            .call(
                "Version",
                endpoint,
                tls,
                |c| async move { c.version().await },
            )
            .map(|v| describe_version(&v));
        self.record("Version", endpoint, tls, result, Clone::clone)
    }

    fn apply_config(
        &mut self,
        endpoint: &Endpoint,
        tls: &TlsMode,
        config: &[u8],
    ) -> Result<String, ApiError> {
        let config = config.to_vec();
        let result = self
            .call("ApplyConfiguration", endpoint, tls, |c| async move {
                c.apply_configuration(config, ApplyMode::Auto, false).await
            })
            .map(|a| {
                format!(
                    "mode {:?}",
                    ApplyMode::try_from(a.mode).unwrap_or(ApplyMode::Auto)
                )
            });
        self.record("ApplyConfiguration", endpoint, tls, result, Clone::clone)
    }

    fn reboot(&mut self, endpoint: &Endpoint, tls: &TlsMode) -> Result<String, ApiError> {
        let result = self
            .call("Reboot", endpoint, tls, |c| async move {
                c.reboot(RebootMode::Default).await
            })
            .map(|_| "rebooting".to_owned());
        self.record("Reboot", endpoint, tls, result, Clone::clone)
    }

    fn upgrade(
        &mut self,
        endpoint: &Endpoint,
        tls: &TlsMode,
        image: &str,
    ) -> Result<String, ApiError> {
        let request = UpgradeRequest {
            image: image.to_owned(),
            ..Default::default()
        };
        let result = self
            .call_within(UPGRADE_TIMEOUT, "Upgrade", endpoint, tls, |c| async move {
                c.upgrade(request).await
            })
            .map(|answer| answer.ack);
        self.record("Upgrade", endpoint, tls, result, Clone::clone)
    }

    fn dmesg(&mut self, endpoint: &Endpoint, tls: &TlsMode) -> Result<String, ApiError> {
        let result = self.call("Dmesg", endpoint, tls, |c| async move {
            let mut stream = c.dmesg(false, false).await?;
            let mut log = Vec::new();
            while let Some(chunk) = stream.next_chunk().await? {
                log.extend(chunk);
            }
            Ok(String::from_utf8_lossy(&log).into_owned())
        });
        self.record("Dmesg", endpoint, tls, result, |log| {
            format!("{} bytes, {} lines", log.len(), log.lines().count())
        })
    }

    fn services(&mut self, endpoint: &Endpoint, tls: &TlsMode) -> Result<Vec<String>, ApiError> {
        let result = self
            .call("ServiceList", endpoint, tls, |c| async move {
                c.service_list().await
            })
            .map(|list| list.services.into_iter().map(|s| s.id).collect::<Vec<_>>());
        self.record("ServiceList", endpoint, tls, result, |ids| ids.join(","))
    }

    fn transcript(&self) -> Vec<ApiRecord> {
        self.records.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_tags_come_from_version_answers() {
        let answer = describe_version(&talos_proto::machine::Version {
            version: Some(talos_proto::machine::VersionInfo {
                tag: "v2.0.0".into(),
                arch: "arm64".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(version_tag(&answer), Some("v2.0.0"));
        assert_eq!(version_tag("no version info"), None);
        assert_eq!(version_tag("tag "), None);
    }
}
