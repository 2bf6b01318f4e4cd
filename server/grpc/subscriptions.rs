//! `herald.v1.Subscriptions`: not implemented yet (issue #2).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::AppState;
use crate::proto;

pub struct SubscriptionsService {
    #[allow(dead_code)]
    state: Arc<AppState>,
}

impl SubscriptionsService {
    pub fn new(state: Arc<AppState>) -> Self {
        SubscriptionsService { state }
    }
}

#[tonic::async_trait]
impl proto::subscriptions_server::Subscriptions for SubscriptionsService {
    async fn create_consumer(
        &self,
        _request: Request<proto::CreateConsumerRequest>,
    ) -> Result<Response<proto::CreateConsumerResponse>, Status> {
        Err(Status::unimplemented(
            "Subscriptions/CreateConsumer is not implemented yet",
        ))
    }

    async fn get_consumer(
        &self,
        _request: Request<proto::GetConsumerRequest>,
    ) -> Result<Response<proto::Consumer>, Status> {
        Err(Status::unimplemented(
            "Subscriptions/GetConsumer is not implemented yet",
        ))
    }

    async fn list_consumers(
        &self,
        _request: Request<proto::ListConsumersRequest>,
    ) -> Result<Response<proto::ListConsumersResponse>, Status> {
        Err(Status::unimplemented(
            "Subscriptions/ListConsumers is not implemented yet",
        ))
    }

    async fn update_consumer(
        &self,
        _request: Request<proto::UpdateConsumerRequest>,
    ) -> Result<Response<proto::Consumer>, Status> {
        Err(Status::unimplemented(
            "Subscriptions/UpdateConsumer is not implemented yet",
        ))
    }

    async fn delete_consumer(
        &self,
        _request: Request<proto::DeleteConsumerRequest>,
    ) -> Result<Response<proto::DeleteConsumerResponse>, Status> {
        Err(Status::unimplemented(
            "Subscriptions/DeleteConsumer is not implemented yet",
        ))
    }

    async fn rotate_consumer_callback_secret(
        &self,
        _request: Request<proto::RotateConsumerCallbackSecretRequest>,
    ) -> Result<Response<proto::RotateConsumerCallbackSecretResponse>, Status> {
        Err(Status::unimplemented(
            "Subscriptions/RotateConsumerCallbackSecret is not implemented yet",
        ))
    }

    async fn create_endpoint(
        &self,
        _request: Request<proto::CreateEndpointRequest>,
    ) -> Result<Response<proto::CreateEndpointResponse>, Status> {
        Err(Status::unimplemented(
            "Subscriptions/CreateEndpoint is not implemented yet",
        ))
    }

    async fn get_endpoint(
        &self,
        _request: Request<proto::GetEndpointRequest>,
    ) -> Result<Response<proto::Endpoint>, Status> {
        Err(Status::unimplemented(
            "Subscriptions/GetEndpoint is not implemented yet",
        ))
    }

    async fn list_endpoints(
        &self,
        _request: Request<proto::ListEndpointsRequest>,
    ) -> Result<Response<proto::ListEndpointsResponse>, Status> {
        Err(Status::unimplemented(
            "Subscriptions/ListEndpoints is not implemented yet",
        ))
    }

    async fn update_endpoint(
        &self,
        _request: Request<proto::UpdateEndpointRequest>,
    ) -> Result<Response<proto::Endpoint>, Status> {
        Err(Status::unimplemented(
            "Subscriptions/UpdateEndpoint is not implemented yet",
        ))
    }

    async fn delete_endpoint(
        &self,
        _request: Request<proto::DeleteEndpointRequest>,
    ) -> Result<Response<proto::DeleteEndpointResponse>, Status> {
        Err(Status::unimplemented(
            "Subscriptions/DeleteEndpoint is not implemented yet",
        ))
    }

    async fn rotate_endpoint_secret(
        &self,
        _request: Request<proto::RotateEndpointSecretRequest>,
    ) -> Result<Response<proto::RotateEndpointSecretResponse>, Status> {
        Err(Status::unimplemented(
            "Subscriptions/RotateEndpointSecret is not implemented yet",
        ))
    }

    async fn get_endpoint_secret(
        &self,
        _request: Request<proto::GetEndpointSecretRequest>,
    ) -> Result<Response<proto::GetEndpointSecretResponse>, Status> {
        Err(Status::unimplemented(
            "Subscriptions/GetEndpointSecret is not implemented yet",
        ))
    }

    async fn enable_endpoint(
        &self,
        _request: Request<proto::EnableEndpointRequest>,
    ) -> Result<Response<proto::Endpoint>, Status> {
        Err(Status::unimplemented(
            "Subscriptions/EnableEndpoint is not implemented yet",
        ))
    }

    async fn disable_endpoint(
        &self,
        _request: Request<proto::DisableEndpointRequest>,
    ) -> Result<Response<proto::Endpoint>, Status> {
        Err(Status::unimplemented(
            "Subscriptions/DisableEndpoint is not implemented yet",
        ))
    }

    async fn create_event_type(
        &self,
        _request: Request<proto::CreateEventTypeRequest>,
    ) -> Result<Response<proto::EventType>, Status> {
        Err(Status::unimplemented(
            "Subscriptions/CreateEventType is not implemented yet",
        ))
    }

    async fn get_event_type(
        &self,
        _request: Request<proto::GetEventTypeRequest>,
    ) -> Result<Response<proto::EventType>, Status> {
        Err(Status::unimplemented(
            "Subscriptions/GetEventType is not implemented yet",
        ))
    }

    async fn list_event_types(
        &self,
        _request: Request<proto::ListEventTypesRequest>,
    ) -> Result<Response<proto::ListEventTypesResponse>, Status> {
        Err(Status::unimplemented(
            "Subscriptions/ListEventTypes is not implemented yet",
        ))
    }

    async fn update_event_type(
        &self,
        _request: Request<proto::UpdateEventTypeRequest>,
    ) -> Result<Response<proto::EventType>, Status> {
        Err(Status::unimplemented(
            "Subscriptions/UpdateEventType is not implemented yet",
        ))
    }

    async fn delete_event_type(
        &self,
        _request: Request<proto::DeleteEventTypeRequest>,
    ) -> Result<Response<proto::DeleteEventTypeResponse>, Status> {
        Err(Status::unimplemented(
            "Subscriptions/DeleteEventType is not implemented yet",
        ))
    }
}
