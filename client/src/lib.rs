pub mod proto {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("herald.v1");
}
