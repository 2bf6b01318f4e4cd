//! Herald from another language: Python stubs generated from `proto/` with
//! grpcio-tools, and the README's Python example run against a real server,
//! as a user outside Rust would.

use std::process::Command;

use herald_client::Herald;

use crate::common::{ADMIN_TOKEN, Backend, TestServer};

/// Generates the Python stubs as the example's docstring says, then runs
/// the example twice: it publishes, reads the event back, sees a precise
/// refusal, and its second run is answered with the first event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_publishes_with_stubs_generated_from_the_protos() {
    let root = env!("CARGO_MANIFEST_DIR");
    let generated = tempfile::tempdir().expect("temp dir");
    let out = generated.path().to_string_lossy().into_owned();
    let protos: Vec<String> = std::fs::read_dir(format!("{root}/proto/herald/v1"))
        .expect("proto/herald/v1")
        .map(|entry| entry.expect("entry").path().to_string_lossy().into_owned())
        .filter(|path| path.ends_with(".proto"))
        .collect();
    let protoc = Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I", &format!("{root}/proto")])
        .args([
            format!("--python_out={out}"),
            format!("--grpc_python_out={out}"),
        ])
        .args(&protos)
        .output()
        .expect("python3 is required for this test");
    assert!(
        protoc.status.success(),
        "grpcio-tools is required for this test (pip install grpcio grpcio-tools): {}",
        String::from_utf8_lossy(&protoc.stderr)
    );

    let server = TestServer::start(Backend::Sqlite).await;
    let run = || {
        let output = Command::new("python3")
            .arg(format!("{root}/examples/python/publish.py"))
            .env("PYTHONPATH", &out)
            .env("HERALD_ADDR", server.addr.to_string())
            .env("HERALD_TOKEN", ADMIN_TOKEN)
            .output()
            .expect("run the Python example");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("one JSON line")
    };
    let first = run();
    assert_eq!(first["type"], "order.created");
    assert_eq!(first["payload"], serde_json::json!({"order": 42}));
    assert_eq!(first["duplicate"], false);
    assert_eq!(first["refused"]["code"], "INVALID_ARGUMENT");
    assert!(
        first["refused"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("payload")),
        "{first}"
    );
    let second = run();
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["duplicate"], true);

    // What Python published is what Herald's Rust client reads.
    let herald = Herald::connect(server.url())
        .token(ADMIN_TOKEN)
        .await
        .expect("connect");
    let id = first["id"].as_str().expect("an id");
    let event = herald.get_event(id).await.expect("the event");
    assert_eq!(
        event.consumer_id,
        first["consumer_id"].as_str().expect("consumer")
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&event.payload).expect("JSON"),
        serde_json::json!({"order": 42})
    );
    server.finish().await;
}
