//! What the benchmark examples share on the caller's side: an admin-key
//! channel and percentiles of sorted samples. Included with `#[path]` (not
//! an example itself).

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A channel that sends `authorization: Bearer <token>` with every call.
pub type Authed = InterceptedService<Channel, Bearer>;

#[derive(Clone)]
pub struct Bearer(pub tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// The `p`th percentile (nearest rank) of `sorted`; 0 for no samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
