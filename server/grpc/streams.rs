//! `herald.v1.Streams`: not implemented yet (issue #4).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::AppState;
use crate::proto;

pub struct StreamsService {
    #[allow(dead_code)]
    state: Arc<AppState>,
}

impl StreamsService {
    pub fn new(state: Arc<AppState>) -> Self {
        StreamsService { state }
    }
}

#[tonic::async_trait]
impl proto::streams_server::Streams for StreamsService {
    type SubscribeStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<proto::SubscribeResponse, Status>> + Send>,
    >;

    async fn subscribe(
        &self,
        _request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented(
            "Streams/Subscribe is not implemented yet",
        ))
    }

    async fn ack(
        &self,
        _request: Request<proto::AckRequest>,
    ) -> Result<Response<proto::AckResponse>, Status> {
        Err(Status::unimplemented("Streams/Ack is not implemented yet"))
    }
}
