//! Crash recovery with the real `herald` binary: events committed while the
//! receiver is down are delivered after a `kill -9` and a restart.

use std::time::Duration;

use tokio::net::TcpListener;

use crate::both_backends;
use crate::common::{ADMIN_TOKEN, Backend, HeraldProcess, TestDatabase, wait_for};
use crate::receiver::rows::{EndpointSpec, Rows};
use crate::receiver::{Receiver, Reply};

both_backends!(acknowledged_events_survive_kill_9);

fn spawn_herald(database_url: &str) -> HeraldProcess {
    HeraldProcess::spawn(HeraldProcess::serve_command(
        database_url,
        &[
            "--retry-schedule",
            "300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms",
            "--request-timeout",
            "2s",
            // A short lease: the killed node's work resumes after 5 s
            // rather than the default 60 s.
            "--lease",
            "5s",
        ],
    ))
}

#[derive(Clone)]
struct AdminBearer;

impl tonic::service::Interceptor for AdminBearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let value = format!("Bearer {ADMIN_TOKEN}")
            .parse()
            .expect("ascii token");
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

type EventsClient = herald_client::proto::events_client::EventsClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, AdminBearer>,
>;

async fn connect_events(herald: &HeraldProcess) -> EventsClient {
    let url = herald.url();
    let channel = wait_for("herald to listen", Duration::from_secs(30), || {
        let url = url.clone();
        async move {
            tonic::transport::Channel::from_shared(url)
                .ok()?
                .connect()
                .await
                .ok()
        }
    })
    .await;
    EventsClient::new(tonic::service::interceptor::InterceptedService::new(
        channel,
        AdminBearer,
    ))
}

async fn acknowledged_events_survive_kill_9(backend: Backend) {
    use herald_client::proto;

    let database = TestDatabase::new(backend).await;
    // Migrate and write the consumer and endpoint before the server starts.
    herald::storage::Database::open(&database.url)
        .await
        .expect("migrate");
    let rows = Rows::open(&database.url).await;
    let receiver_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let receiver_addr = receiver_listener.local_addr().expect("addr");
    // The receiver is down: nothing listens on its port until the restart.
    drop(receiver_listener);
    let consumer = rows.consumer().await;
    let (endpoint, _) = rows
        .endpoint(
            &consumer.id,
            EndpointSpec::to(format!("http://{receiver_addr}/hook")),
        )
        .await;

    let mut herald = spawn_herald(&database.url);
    let mut events = connect_events(&herald).await;
    let mut acknowledged = Vec::new();
    for n in 0..40 {
        let response = events
            .publish(proto::PublishRequest {
                consumer_id: consumer.id.clone(),
                event_type: "crash.test".into(),
                payload: format!("{{\"n\":{n}}}"),
                ..Default::default()
            })
            .await
            .expect("publish")
            .into_inner();
        acknowledged.push(response.event.expect("event").id);
    }
    // Let some attempts fail against the closed port, then kill -9.
    wait_for("failed attempts", Duration::from_secs(15), || async {
        use herald::storage::entities::attempt;
        use sea_orm::{EntityTrait, PaginatorTrait};
        (attempt::Entity::find().count(&rows.db).await.ok()? > 0).then_some(())
    })
    .await;
    herald.kill9();
    drop(events);

    let listener = TcpListener::bind(receiver_addr)
        .await
        .expect("rebind the receiver's port");
    let receiver = Receiver::start_on(listener, Reply::Status(200));
    let mut herald = spawn_herald(&database.url);
    // PostgreSQL: the dead node's leases lapse after --lease (5 s here);
    // SQLite: a new process takes them over at once.
    let deadline = Duration::from_secs(30);
    wait_for("every acknowledged event delivered", deadline, || async {
        let received = receiver.received();
        acknowledged
            .iter()
            .all(|id| received.iter().any(|r| r.header("webhook-id") == id))
            .then_some(())
    })
    .await;
    let _ = endpoint;
    herald.kill9();
    database.drop_database().await;
}
