//! Test-side helpers for delivery: a real HTTP receiver that records what it
//! is sent and answers as told, an independent signature check, and rows
//! written straight into the server's database.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// A status with this body.
    Body(u16, &'static str),
    /// A status with one extra header (`Retry-After`, `Location`).
    WithHeader(u16, &'static str, String),
    /// Never answers (for 30 s).
    Hang,
    /// Answers 200 after this long.
    Slow(Duration),
    /// 200 with a 1 MiB body.
    Huge,
    /// 200, then one byte of body every 200 ms.
    Trickle,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }
}

struct ReceiverState {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    /// Requests being answered now, and the most there ever were at once.
    open: std::sync::atomic::AtomicUsize,
    most_open: std::sync::atomic::AtomicUsize,
}

pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// A receiver on a fresh port that answers `default` unless scripted.
    pub async fn start(default: Reply) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        Self::start_on(listener, default)
    }

    pub fn start_on(listener: TcpListener, default: Reply) -> Receiver {
        let addr = listener.local_addr().expect("receiver addr");
        let state = Arc::new(ReceiverState {
            received: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(default),
            open: Default::default(),
            most_open: Default::default(),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next requests get these answers, in order, then the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().expect("lock").extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        *self.state.default.lock().expect("lock") = reply;
    }

    /// The most requests this receiver was answering at once.
    pub fn most_concurrent(&self) -> usize {
        self.state
            .most_open
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    /// Waits until at least `count` requests arrived.
    pub async fn wait_for_count(&self, count: usize, deadline: Duration) -> Vec<Received> {
        crate::common::wait_for(&format!("{count} requests"), deadline, || async {
            let received = self.received();
            (received.len() >= count).then_some(received)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts a request as open until it is answered (or abandoned).
struct Open(Arc<ReceiverState>);

impl Open {
    fn new(state: &Arc<ReceiverState>) -> Open {
        use std::sync::atomic::Ordering;
        let now = state.open.fetch_add(1, Ordering::SeqCst) + 1;
        state.most_open.fetch_max(now, Ordering::SeqCst);
        Open(state.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn handle(
    State(state): State<Arc<ReceiverState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _open = Open::new(&state);
    state.received.lock().expect("lock").push(Received {
        path: uri.path().to_owned(),
        headers,
        body: body.to_vec(),
        at: Instant::now(),
    });
    let reply = state
        .script
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or_else(|| state.default.lock().expect("lock").clone());
    let status = |code: u16| StatusCode::from_u16(code).expect("status");
    match reply {
        Reply::Status(code) => Response::builder()
            .status(status(code))
            .body(Body::from("received"))
            .expect("response"),
        Reply::Body(code, body) => Response::builder()
            .status(status(code))
            .body(Body::from(body))
            .expect("response"),
        Reply::WithHeader(code, name, value) => Response::builder()
            .status(status(code))
            .header(name, value)
            .body(Body::empty())
            .expect("response"),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Response::new(Body::empty())
        }
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            Response::new(Body::from("slow but fine"))
        }
        Reply::Huge => Response::new(Body::from(vec![b'x'; 1024 * 1024])),
        Reply::Trickle => {
            let stream = futures::stream::unfold(0u32, |sent| async move {
                if sent >= 300 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), sent + 1))
            });
            Response::new(Body::from_stream(stream))
        }
    }
}

/// Checks a `webhook-signature` header against one secret with an HMAC
/// written here, independent of the server's signing code.
pub fn signature_matches(received: &Received, secret: &str) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("hmac key");
    let signed = format!(
        "{}.{}.",
        received.header("webhook-id"),
        received.header("webhook-timestamp")
    );
    mac.update(signed.as_bytes());
    mac.update(&received.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    received
        .header("webhook-signature")
        .split(' ')
        .any(|signature| signature == expected)
}

/// Rows written straight into the server's database: the Subscriptions and
/// Events services are tested elsewhere; here rows only need to exist.
pub mod rows {
    use herald::domain::ids;
    use herald::domain::secret::SigningSecret;
    use herald::domain::time::now_millis;
    use herald::storage::entities::{
        attempt, consumer, delivery, endpoint, endpoint_secret, event,
    };
    use sea_orm::{
        ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    };

    pub struct Rows {
        pub db: DatabaseConnection,
    }

    #[derive(Debug, Clone)]
    pub struct EndpointSpec {
        pub url: String,
        pub headers: &'static str,
        pub rate_limit: i32,
        pub max_in_flight: i32,
        pub ordered: bool,
        /// The filter as stored: a JSON list.
        pub event_types: String,
        pub enabled: bool,
        pub receive_broadcasts: bool,
    }

    impl EndpointSpec {
        pub fn to(url: String) -> EndpointSpec {
            EndpointSpec {
                url,
                headers: "{}",
                rate_limit: 0,
                max_in_flight: 0,
                ordered: false,
                event_types: "[]".into(),
                enabled: true,
                receive_broadcasts: true,
            }
        }
    }

    pub struct Consumer {
        pub id: String,
        pub callback_secret: String,
    }

    impl Rows {
        pub async fn open(url: &str) -> Rows {
            let db = sea_orm::Database::connect(url)
                .await
                .expect("test connects to the server's database");
            Rows { db }
        }

        pub async fn consumer(&self) -> Consumer {
            let id = ids::new_id(ids::CONSUMER);
            let callback_secret = SigningSecret::generate().expose().to_owned();
            let now = now_millis();
            consumer::Entity::insert(consumer::ActiveModel {
                id: Set(id.clone()),
                uid: Set(id.to_lowercase()),
                name: Set("delivery test".into()),
                metadata: Set("{}".into()),
                callback_secret: Set(callback_secret.clone()),
                created_at: Set(now),
                updated_at: Set(now),
            })
            .exec_without_returning(&self.db)
            .await
            .expect("insert consumer");
            Consumer {
                id,
                callback_secret,
            }
        }

        /// A webhook endpoint with one current secret; returns (id, secret).
        pub async fn endpoint(&self, consumer_id: &str, spec: EndpointSpec) -> (String, String) {
            let id = ids::new_id(ids::ENDPOINT);
            let now = now_millis();
            endpoint::Entity::insert(endpoint::ActiveModel {
                id: Set(id.clone()),
                consumer_id: Set(consumer_id.to_owned()),
                kind: Set("webhook".into()),
                url: Set(Some(spec.url)),
                description: Set(String::new()),
                event_types: Set(spec.event_types),
                enabled: Set(spec.enabled),
                disabled_reason: Set(None),
                headers: Set(spec.headers.to_owned()),
                rate_limit: Set(spec.rate_limit),
                max_in_flight: Set(spec.max_in_flight),
                ordered: Set(spec.ordered),
                failing_since: Set(None),
                pinned_spki_sha256: Set(None),
                ca_pem: Set(None),
                receive_broadcasts: Set(spec.receive_broadcasts),
                created_at: Set(now),
                updated_at: Set(now),
            })
            .exec_without_returning(&self.db)
            .await
            .expect("insert endpoint");
            let secret = self.secret(&id, None).await;
            (id, secret)
        }

        /// Adds a secret to an endpoint (a rotated one has an expiry).
        pub async fn secret(&self, endpoint_id: &str, expires_at: Option<i64>) -> String {
            let secret = SigningSecret::generate().expose().to_owned();
            endpoint_secret::Entity::insert(endpoint_secret::ActiveModel {
                id: Set(ids::new_id(ids::SECRET)),
                endpoint_id: Set(endpoint_id.to_owned()),
                secret: Set(secret.clone()),
                created_at: Set(now_millis()),
                expires_at: Set(expires_at),
            })
            .exec_without_returning(&self.db)
            .await
            .expect("insert secret");
            secret
        }

        /// A committed event with one pending, unleased delivery, as a
        /// publish leaves it when its node died before the hot path ran:
        /// only the engine's sweep can find it. Returns (event id, delivery id).
        pub async fn publish(
            &self,
            consumer_id: &str,
            endpoint_id: Option<&str>,
            callback_url: Option<&str>,
            payload: &str,
        ) -> (String, String) {
            let event_id = ids::new_id(ids::EVENT);
            let delivery_id = ids::new_id(ids::DELIVERY);
            let now = now_millis();
            event::Entity::insert(event::ActiveModel {
                id: Set(event_id.clone()),
                consumer_id: Set(consumer_id.to_owned()),
                event_type: Set("test.event".into()),
                payload: Set(payload.to_owned()),
                idempotency_key: Set(None),
                callback_url: Set(callback_url.map(str::to_owned)),
                created_at: Set(now),
                trace_parent: Set(None),
            })
            .exec_without_returning(&self.db)
            .await
            .expect("insert event");
            delivery::Entity::insert(delivery::ActiveModel {
                id: Set(delivery_id.clone()),
                event_id: Set(event_id.clone()),
                endpoint_id: Set(endpoint_id.map(str::to_owned)),
                url: Set(callback_url.map(str::to_owned)),
                status: Set("pending".into()),
                attempt_count: Set(0),
                next_attempt_at: Set(Some(now)),
                lease_owner: Set(None),
                lease_expires_at: Set(None),
                last_attempt_at: Set(None),
                created_at: Set(now),
                updated_at: Set(now),
            })
            .exec_without_returning(&self.db)
            .await
            .expect("insert delivery");
            (event_id, delivery_id)
        }

        pub async fn delivery(&self, id: &str) -> Option<delivery::Model> {
            delivery::Entity::find_by_id(id.to_owned())
                .one(&self.db)
                .await
                .expect("read delivery")
        }

        pub async fn endpoint_row(&self, id: &str) -> endpoint::Model {
            endpoint::Entity::find_by_id(id.to_owned())
                .one(&self.db)
                .await
                .expect("read endpoint")
                .expect("endpoint exists")
        }

        pub async fn attempts(&self, delivery_id: &str) -> Vec<attempt::Model> {
            attempt::Entity::find()
                .filter(attempt::Column::DeliveryId.eq(delivery_id))
                .order_by_asc(attempt::Column::Id)
                .all(&self.db)
                .await
                .expect("read attempts")
        }

        /// Waits until the delivery reaches `status`; returns it.
        pub async fn wait_for_status(
            &self,
            delivery_id: &str,
            status: &str,
            deadline: std::time::Duration,
        ) -> delivery::Model {
            crate::common::wait_for(
                &format!("delivery {delivery_id} {status}"),
                deadline,
                || async {
                    self.delivery(delivery_id)
                        .await
                        .filter(|row| row.status == status)
                },
            )
            .await
        }
    }
}
