//! `time.TimeService`: the node's clock next to a time server's.

use std::sync::Arc;

use talos_node_sys::clock::Clock;
use talos_node_sys::fs::Linux;
use talos_proto::time::time_service_server::TimeService;
use talos_proto::time::{Time, TimeRequest, TimeResponse};
use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::timesync;

#[derive(Debug, Clone)]
pub struct TimeApi {
    pub node: Arc<Node>,
}

async fn compare(server: String) -> Result<Response<TimeResponse>, Status> {
    let addr = timesync::server_address(&server)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let sample = timesync::query(addr, &Linux)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    Ok(Response::new(TimeResponse {
        messages: vec![Time {
            metadata: None,
            server,
            localtime: Some(Linux.now().into()),
            remotetime: Some(sample.server_time.into()),
        }],
    }))
}

#[tonic::async_trait]
impl TimeService for TimeApi {
    async fn time(&self, _: Request<()>) -> Result<Response<TimeResponse>, Status> {
        let server = self
            .node
            .time_servers()
            .into_iter()
            .next()
            .unwrap_or_else(|| timesync::DEFAULT_SERVER.to_owned());
        compare(server).await
    }

    async fn time_check(
        &self,
        request: Request<TimeRequest>,
    ) -> Result<Response<TimeResponse>, Status> {
        let server = request.into_inner().server;
        if server.is_empty() {
            return Err(Status::invalid_argument("server is empty"));
        }
        compare(server).await
    }
}
