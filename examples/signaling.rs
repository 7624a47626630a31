//! A matchbox signalling server (full mesh) for the `peer` example, the tests and a game's
//! deployment: `wss://` with a certificate and key (PEM), or plain `ws://` without; rooms of at
//! most `--max-room-size` players and at most `--max-connections` connections open at once.
//!
//! ```text
//! cargo run --example signaling -- --port 3536
//! cargo run --example signaling -- --host 0.0.0.0 --port 443 --cert fullchain.pem --key privkey.pem
//! ```

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::serve::ListenerExt;
use clap::Parser;
use matchbox_signaling::SignalingServer;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "Run a matchbox signaling server (on 127.0.0.1 unless --host says otherwise)")]
struct Args {
    /// TCP port.
    #[arg(long, default_value_t = 3536)]
    port: u16,
    /// The address to listen on (0.0.0.0 for players on other hosts or namespaces).
    #[arg(long, default_value_t = Ipv4Addr::LOCALHOST)]
    host: Ipv4Addr,
    /// The server's certificate chain (PEM): serve `wss://` (needs --key).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Players in one room at most; the next one is refused (503).
    #[arg(long, default_value_t = 16)]
    max_room_size: usize,
    /// Connections open at once at most (TLS handshakes included); more are closed at once.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn tls_config(cert: &PathBuf, key: &PathBuf) -> Result<ServerConfig, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("--cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("--cert {}: no certificate in it", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--key {}: {e}", key.display()))?;
    ServerConfig::builder_with_provider(Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| format!("the certificate and key do not make a TLS server: {e}"))
}

/// An open connection, plain or TLS, holding one of the `--max-connections` slots until it
/// closes, and closed once nothing has come from it for [`IDLE_TIMEOUT`].
struct Connection {
    stream: Pin<Box<dyn Duplex>>,
    idle: Pin<Box<tokio::time::Sleep>>,
    _slot: OwnedSemaphorePermit,
}

/// How long a connection may send nothing (players' sockets send a keep-alive every 10 s; a
/// browser tab busy compiling shaders on a software adapter may send none for a minute).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

trait Duplex: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> Duplex for T {}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match this.stream.as_mut().poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.idle.as_mut().reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.idle.as_mut().poll(cx).is_ready() => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
            other => other,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().stream.as_mut().poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream.as_mut().poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream.as_mut().poll_shutdown(cx)
    }
}

/// Connections as they are accepted and (with a certificate) through their TLS handshake,
/// which runs on a task of its own so that a slow client holds up no one else.
struct Connections {
    ready: mpsc::Receiver<(Connection, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for Connections {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

fn accept_connections(tcp: TcpListener, tls: Option<TlsAcceptor>, max: usize) -> io::Result<Connections> {
    let local = tcp.local_addr()?;
    let (ready, incoming) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(max));
    tokio::spawn(async move {
        loop {
            let (stream, from) = match tcp.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    eprintln!("accept: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                eprintln!("refused {from}: {max} connections open");
                continue;
            };
            let (tls, ready) = (tls.clone(), ready.clone());
            tokio::spawn(async move {
                let stream: Pin<Box<dyn Duplex>> = match tls {
                    None => Box::pin(stream),
                    Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => Box::pin(stream),
                        Ok(Err(error)) => return eprintln!("TLS handshake with {from} failed: {error}"),
                        Err(_) => return eprintln!("TLS handshake with {from} took over {HANDSHAKE_TIMEOUT:?}"),
                    },
                };
                let idle = Box::pin(tokio::time::sleep(IDLE_TIMEOUT));
                let _ = ready.send((Connection { stream, idle, _slot: slot }, from)).await;
            });
        }
    });
    Ok(Connections { ready: incoming, local })
}

/// Who is in which room, to keep rooms within `--max-room-size`. A request takes a place in
/// its room at once (so that players asking together cannot overfill it), its peer id comes
/// with the id assignment that follows, and the place is given back when the player leaves, or
/// after [`JOIN_TIMEOUT`] if it never joins (an upgrade that failed).
#[derive(Default)]
struct Rooms {
    /// Places taken by requests not yet joined: by the connection's address, then its peer id.
    requested: HashMap<SocketAddr, (String, Instant)>,
    joining: HashMap<matchbox_socket::PeerId, (String, Instant)>,
    joined: HashMap<matchbox_socket::PeerId, String>,
    size: HashMap<String, usize>,
}

/// How long a place taken by a request waits for its player to join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

impl Rooms {
    fn leave(&mut self, room: &str) {
        if let Some(size) = self.size.get_mut(room) {
            *size -= 1;
            if *size == 0 {
                self.size.remove(room);
            }
        }
    }

    /// Gives back the places of requests that never joined.
    fn expire(&mut self, now: Instant) {
        let stale: Vec<String> = self.requested.values().chain(self.joining.values()).filter(|(_, at)| now - *at > JOIN_TIMEOUT).map(|(room, _)| room.clone()).collect();
        self.requested.retain(|_, (_, at)| now - *at <= JOIN_TIMEOUT);
        self.joining.retain(|_, (_, at)| now - *at <= JOIN_TIMEOUT);
        stale.iter().for_each(|room| self.leave(room));
    }
}

#[tokio::main(flavor = "current_thread")]
#[expect(clippy::result_large_err, reason = "matchbox_signaling's connection callback answers with an axum Response")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let tls = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => match tls_config(cert, key) {
            Ok(config) => Some(TlsAcceptor::from(Arc::new(config))),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let address = SocketAddr::from((args.host, args.port));
    let rooms = Arc::new(Mutex::new(Rooms::default()));
    let max_room_size = args.max_room_size;
    let (asked, named, joined, left) = (rooms.clone(), rooms.clone(), rooms.clone(), rooms);
    let mut router = None;
    // Served below through this example's own listener; kept, since its handlers watch it.
    let _server = SignalingServer::full_mesh_builder(address)
        .on_connection_request(move |request| {
            let room = request.path.unwrap_or_else(|| "world".into());
            let mut rooms = asked.lock().expect("not poisoned");
            let now = Instant::now();
            rooms.expire(now);
            if rooms.size.get(&room).copied().unwrap_or(0) >= max_room_size {
                eprintln!("refused {}: room {room:?} has {max_room_size} players", request.origin);
                return Err((StatusCode::SERVICE_UNAVAILABLE, format!("room {room:?} is full")).into_response());
            }
            *rooms.size.entry(room.clone()).or_default() += 1;
            if let Some((earlier, _)) = rooms.requested.insert(request.origin, (room, now)) {
                rooms.leave(&earlier);
            }
            Ok(true)
        })
        .on_id_assignment(move |(origin, peer)| {
            let mut rooms = named.lock().expect("not poisoned");
            if let Some(place) = rooms.requested.remove(&origin) {
                rooms.joining.insert(peer, place);
            }
        })
        .on_peer_connected(move |peer| {
            let mut rooms = joined.lock().expect("not poisoned");
            if let Some((room, _)) = rooms.joining.remove(&peer) {
                rooms.joined.insert(peer, room);
            }
        })
        .on_peer_disconnected(move |peer| {
            let mut rooms = left.lock().expect("not poisoned");
            if let Some(room) = rooms.joined.remove(&peer).or_else(|| rooms.joining.remove(&peer).map(|(room, _)| room)) {
                rooms.leave(&room);
            }
        })
        .build_with(|routes| {
            router = Some(routes.clone());
            routes
        });
    let router = router.expect("build_with hands over the router");
    let tcp = match TcpListener::bind(address).await {
        Ok(tcp) => tcp,
        Err(error) => {
            eprintln!("error: cannot bind {address}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let connections = match accept_connections(tcp, tls, args.max_connections) {
        Ok(connections) => connections,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("signaling on {scheme}://{}", connections.local);
    // Tapped, so that the websocket handler learns each connection's address.
    let served = axum::serve(connections.tap_io(|_| {}), router.into_make_service_with_connect_info::<SocketAddr>()).await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: signaling server stopped: {error}");
            ExitCode::FAILURE
        }
    }
}
