//! TCP_NODELAY for PostgreSQL connections.
//!
//! sqlx 0.9.0 stopped setting TCP_NODELAY on its sockets (sqlx issue #4335;
//! the fix is merged upstream but not released), and offers no hook to reach
//! the socket. With Nagle's algorithm on, a small write that follows another
//! before the server's ACK waits for Linux's delayed ACK, ~40 ms: the
//! benchmark's PostgreSQL publish latency was bimodal (p50 13 ms, p90 62 ms)
//! and throughput capped near 2,800 events/s, while a Unix socket (no Nagle)
//! gave a unimodal p90 of 26 ms.
//!
//! So after sqlx opens a connection, this module finds the process's TCP
//! sockets whose peer is the database server and turns Nagle off on them. It
//! works on duplicates obtained with `pidfd_getfd` (owned file descriptors of
//! the same sockets), so it needs no unsafe code and cannot touch a descriptor
//! that another thread closes meanwhile. Where the kernel refuses (Linux
//! before 5.6, a seccomp profile), Herald logs it once and runs with Nagle on:
//! slower, never wrong. Drop this module once sqlx sets TCP_NODELAY again.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where the database server listens, as the connections' peers show it.
#[derive(Debug, Clone, Default)]
pub struct DatabasePeers {
    addresses: HashSet<SocketAddr>,
}

impl DatabasePeers {
    /// Resolves the server of a PostgreSQL URL; empty for a Unix socket (no
    /// Nagle there) or a name that does not resolve (sqlx will say so).
    pub async fn resolve(url: &str) -> DatabasePeers {
        use sea_orm::sqlx::postgres::PgConnectOptions;
        let Ok(options) = url.parse::<PgConnectOptions>() else {
            return DatabasePeers::default();
        };
        let host = options.get_host().to_owned();
        if host.starts_with('/') {
            return DatabasePeers::default();
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addresses = match tokio::net::lookup_host((host, options.get_port())).await {
            Ok(found) => found.collect(),
            Err(_) => HashSet::new(),
        };
        DatabasePeers { addresses }
    }

    /// Turns Nagle off on every TCP socket of this process connected to the
    /// database server; returns how many it changed.
    pub fn apply(&self) -> usize {
        if self.addresses.is_empty() {
            return 0;
        }
        match set_nodelay(&self.addresses) {
            Ok(changed) => changed,
            Err(err) => {
                static WARNED: AtomicBool = AtomicBool::new(false);
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %err, "cannot set TCP_NODELAY on PostgreSQL connections; queries may wait ~40 ms for delayed ACKs");
                }
                0
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn set_nodelay(peers: &HashSet<SocketAddr>) -> std::io::Result<usize> {
    use rustix::net::sockopt;
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};

    let me = pidfd_open(getpid(), PidfdFlags::empty())?;
    let mut changed = 0;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(number) = entry
            .ok()
            .and_then(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        else {
            continue;
        };
        // Closed meanwhile, or not a socket: skip.
        let Ok(fd) = pidfd_getfd(&me, number, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let Ok(Some(peer)) = rustix::net::getpeername(&fd) else {
            continue;
        };
        let Ok(peer) = SocketAddr::try_from(peer) else {
            continue;
        };
        if peers.contains(&peer) && sockopt::tcp_nodelay(&fd) == Ok(false) {
            sockopt::set_tcp_nodelay(&fd, true)?;
            changed += 1;
        }
    }
    Ok(changed)
}

#[cfg(not(target_os = "linux"))]
fn set_nodelay(_peers: &HashSet<SocketAddr>) -> std::io::Result<usize> {
    Err(std::io::Error::other("only implemented on Linux"))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn turns_nagle_off_on_sockets_to_the_database_only() {
        let database = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let to_database =
            std::net::TcpStream::connect(database.local_addr().expect("addr")).expect("connect");
        let elsewhere =
            std::net::TcpStream::connect(other.local_addr().expect("addr")).expect("connect");
        assert!(!to_database.nodelay().expect("nodelay"));

        let peers = DatabasePeers {
            addresses: HashSet::from([database.local_addr().expect("addr")]),
        };
        assert_eq!(peers.apply(), 1);
        assert!(to_database.nodelay().expect("nodelay"));
        assert!(
            !elsewhere.nodelay().expect("nodelay"),
            "other peers are left alone"
        );
        assert_eq!(peers.apply(), 0, "nothing left to change");
    }

    #[test]
    fn a_unix_socket_url_needs_nothing() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let peers = runtime.block_on(DatabasePeers::resolve(
            "postgres://postgres@%2Fvar%2Frun%2Fpostgresql/test",
        ));
        assert!(peers.addresses.is_empty());
        let peers = runtime.block_on(DatabasePeers::resolve("postgres://u@127.0.0.1:6543/db"));
        assert_eq!(
            peers.addresses,
            HashSet::from([SocketAddr::from(([127, 0, 0, 1], 6543))])
        );
    }
}
