//! Who may call what: roles from the client certificate's Organization, checked per RPC
//! against upstream's rules table before the call reaches a handler.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use talos_machinery::pki;
use talos_machinery::role::{Role, RoleSet};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::node::Node;

use Role::{Admin as A, EtcdBackup as EB, MetaWriter as MW, Operator as O, Reader as R};

const READ: &[Role] = &[A, O, R];
const OPERATE: &[Role] = &[A, O];
const ADMIN: &[Role] = &[A];

/// Upstream's rules for the methods we declare; any other method is admin-only.
const RULES: &[(&str, &[Role])] = &[
    ("/machine.MachineService/ApplyConfiguration", &[A, R]),
    ("/machine.MachineService/Bootstrap", ADMIN),
    ("/machine.MachineService/Containers", READ),
    ("/machine.MachineService/Copy", ADMIN),
    ("/machine.MachineService/CPUInfo", READ),
    ("/machine.MachineService/Dmesg", READ),
    ("/machine.MachineService/Events", READ),
    ("/machine.MachineService/EtcdMemberList", &[A, O, R, EB]),
    ("/machine.MachineService/EtcdRemoveMemberByID", ADMIN),
    ("/machine.MachineService/EtcdLeaveCluster", ADMIN),
    ("/machine.MachineService/EtcdForfeitLeadership", ADMIN),
    ("/machine.MachineService/EtcdRecover", ADMIN),
    ("/machine.MachineService/EtcdSnapshot", &[A, O, EB]),
    ("/machine.MachineService/EtcdStatus", &[A, O, R, EB]),
    ("/machine.MachineService/Hostname", READ),
    ("/machine.MachineService/Kubeconfig", ADMIN),
    ("/machine.MachineService/List", READ),
    ("/machine.MachineService/LoadAvg", READ),
    ("/machine.MachineService/Logs", READ),
    ("/machine.MachineService/Memory", READ),
    ("/machine.MachineService/Mounts", READ),
    ("/machine.MachineService/Processes", READ),
    ("/machine.MachineService/Read", ADMIN),
    ("/machine.MachineService/Reboot", OPERATE),
    ("/machine.MachineService/Restart", OPERATE),
    ("/machine.MachineService/Rollback", ADMIN),
    ("/machine.MachineService/Reset", ADMIN),
    ("/machine.MachineService/ServiceList", READ),
    ("/machine.MachineService/ServiceRestart", OPERATE),
    ("/machine.MachineService/ServiceStart", OPERATE),
    ("/machine.MachineService/ServiceStop", OPERATE),
    ("/machine.MachineService/Shutdown", OPERATE),
    ("/machine.MachineService/Stats", READ),
    ("/machine.MachineService/Upgrade", ADMIN),
    ("/machine.MachineService/Version", READ),
    ("/machine.MachineService/GenerateClientConfiguration", ADMIN),
    ("/machine.MachineService/MetaWrite", &[A, MW]),
    ("/machine.MachineService/MetaDelete", &[A, MW]),
    ("/time.TimeService/Time", READ),
    ("/time.TimeService/TimeCheck", READ),
];

/// Methods whose reader permission only holds while the node is unconfigured.
const MAINTENANCE_ONLY_FOR_READERS: &[&str] = &["/machine.MachineService/ApplyConfiguration"];

pub fn allowed_roles(path: &str) -> RoleSet {
    RULES
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(RoleSet::of(ADMIN), |(_, roles)| RoleSet::of(roles))
}

/// The roles of a caller, decided once per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerRoles(pub RoleSet);

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    NoClientCertificate,
    NotAuthorized,
    UnknownNode(String),
}

impl Denied {
    fn status(&self) -> tonic::Status {
        match self {
            Denied::NoClientCertificate => tonic::Status::unauthenticated(
                "this node is configured: a client certificate signed by its OS CA is required",
            ),
            Denied::NotAuthorized => tonic::Status::permission_denied("not authorized"),
            Denied::UnknownNode(node) => tonic::Status::unavailable(format!(
                "node {node:?} is not this node, and talos-rs does not proxy to other nodes yet"
            )),
        }
    }
}

/// Decides the caller's roles and whether it may call `path`.
pub fn authorize(
    node: &Node,
    path: &str,
    peer_certs: Option<&[Vec<u8>]>,
) -> Result<RoleSet, Denied> {
    let configured = node.is_configured();
    let roles = if !configured {
        RoleSet::of(&[R])
    } else {
        let leaf = peer_certs
            .and_then(|c| c.first())
            .ok_or(Denied::NoClientCertificate)?;
        let orgs = pki::cert_organizations(leaf).map_err(|_| Denied::NotAuthorized)?;
        RoleSet::from_organizations(orgs.iter().map(String::as_str))
    };
    let mut allowed = allowed_roles(path);
    if configured && MAINTENANCE_ONLY_FOR_READERS.contains(&path) {
        allowed = RoleSet::of(ADMIN);
    }
    if roles.intersects(allowed) {
        Ok(roles)
    } else {
        Err(Denied::NotAuthorized)
    }
}

/// A tower layer running [`authorize`] and the `node` metadata check in front of every RPC.
#[derive(Debug, Clone)]
pub struct AuthzLayer {
    pub node: Arc<Node>,
}

impl<S> tower::Layer<S> for AuthzLayer {
    type Service = Authz<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authz {
            inner,
            node: self.node.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Authz<S> {
    inner: S,
    node: Arc<Node>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Authz<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let peer_certs: Option<Vec<Vec<u8>>> = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs())
            .map(|certs| certs.iter().map(|c| c.to_vec()).collect());
        let target = req
            .headers()
            .get("node")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let decision = match target {
            Some(t) if !self.node.is_local_target(&t) => Err(Denied::UnknownNode(t)),
            _ => authorize(&self.node, req.uri().path(), peer_certs.as_deref()),
        };
        match decision {
            Ok(roles) => {
                req.extensions_mut().insert(CallerRoles(roles));
                let mut inner = self.inner.clone();
                std::mem::swap(&mut inner, &mut self.inner);
                Box::pin(inner.call(req))
            }
            Err(denied) => {
                tracing::info!(method = req.uri().path(), reason = ?denied, "call refused");
                let response = denied.status().into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_follow_upstream_for_the_walking_skeleton_rpcs() {
        let reader = RoleSet::of(&[R]);
        let operator = RoleSet::of(&[O]);
        let admin = RoleSet::of(&[A]);
        for path in ["Version", "Hostname", "Memory", "ServiceList", "Dmesg"] {
            let allowed = allowed_roles(&format!("/machine.MachineService/{path}"));
            assert!(allowed.intersects(reader), "{path}");
        }
        for path in ["Reboot", "Shutdown"] {
            let allowed = allowed_roles(&format!("/machine.MachineService/{path}"));
            assert!(
                !allowed.intersects(reader),
                "{path} must not be allowed to readers"
            );
            assert!(allowed.intersects(operator) && allowed.intersects(admin));
        }
        assert!(!allowed_roles("/machine.MachineService/Read").intersects(RoleSet::of(&[R, O])));
        assert_eq!(allowed_roles("/machine.MachineService/SomethingNew"), admin);
        assert_eq!(allowed_roles("/cosi.resource.State/Create"), admin);
    }

    #[test]
    fn every_rule_is_listed_once() {
        let mut paths: Vec<&str> = RULES.iter().map(|(p, _)| *p).collect();
        paths.sort_unstable();
        let before = paths.len();
        paths.dedup();
        assert_eq!(before, paths.len());
    }
}
