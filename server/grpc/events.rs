//! `herald.v1.Events`: not implemented yet (issue #3).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::AppState;
use crate::proto;

pub struct EventsService {
    #[allow(dead_code)]
    state: Arc<AppState>,
}

impl EventsService {
    pub fn new(state: Arc<AppState>) -> Self {
        EventsService { state }
    }
}

#[tonic::async_trait]
impl proto::events_server::Events for EventsService {
    async fn publish(
        &self,
        _request: Request<proto::PublishRequest>,
    ) -> Result<Response<proto::PublishResponse>, Status> {
        Err(Status::unimplemented(
            "Events/Publish is not implemented yet",
        ))
    }

    async fn publish_batch(
        &self,
        _request: Request<proto::PublishBatchRequest>,
    ) -> Result<Response<proto::PublishBatchResponse>, Status> {
        Err(Status::unimplemented(
            "Events/PublishBatch is not implemented yet",
        ))
    }

    async fn get_event(
        &self,
        _request: Request<proto::GetEventRequest>,
    ) -> Result<Response<proto::Event>, Status> {
        Err(Status::unimplemented(
            "Events/GetEvent is not implemented yet",
        ))
    }

    async fn list_events(
        &self,
        _request: Request<proto::ListEventsRequest>,
    ) -> Result<Response<proto::ListEventsResponse>, Status> {
        Err(Status::unimplemented(
            "Events/ListEvents is not implemented yet",
        ))
    }

    async fn list_deliveries(
        &self,
        _request: Request<proto::ListDeliveriesRequest>,
    ) -> Result<Response<proto::ListDeliveriesResponse>, Status> {
        Err(Status::unimplemented(
            "Events/ListDeliveries is not implemented yet",
        ))
    }

    async fn list_attempts(
        &self,
        _request: Request<proto::ListAttemptsRequest>,
    ) -> Result<Response<proto::ListAttemptsResponse>, Status> {
        Err(Status::unimplemented(
            "Events/ListAttempts is not implemented yet",
        ))
    }

    async fn redeliver(
        &self,
        _request: Request<proto::RedeliverRequest>,
    ) -> Result<Response<proto::RedeliverResponse>, Status> {
        Err(Status::unimplemented(
            "Events/Redeliver is not implemented yet",
        ))
    }

    async fn replay(
        &self,
        _request: Request<proto::ReplayRequest>,
    ) -> Result<Response<proto::ReplayResponse>, Status> {
        Err(Status::unimplemented(
            "Events/Replay is not implemented yet",
        ))
    }
}
