//! The native signalling client for a `wss://` server whose certificate the game ships: its own
//! certificate authority, or a self-signed certificate in development. matchbox's own client
//! trusts the web's public roots only; this one trusts those and the game's
//! ([`super::SessionConfig::signaling_roots`]). In the browser, the browser's trust store
//! decides.

use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::smol::{connect_async_with_tls_connector, ConnectStream};
use async_tungstenite::tungstenite::Message as WsMessage;
use async_tungstenite::WebSocketStream;
use futures_lite::StreamExt;
use futures_rustls::rustls::pki_types::CertificateDer;
use futures_rustls::rustls::{ClientConfig, RootCertStore};
use futures_rustls::TlsConnector;
use matchbox_socket::async_trait::async_trait;
use matchbox_socket::{PeerEvent, PeerRequest, SignalingError, Signaller, SignallerBuilder};

/// Why the game's signalling certificates cannot be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SignalingRootError {
    /// A certificate did not parse as DER.
    #[error("signaling root certificate {index} is not a valid DER certificate: {reason}")]
    Invalid {
        /// Its position in the list.
        index: usize,
        /// What rustls said.
        reason: String,
    },
}

/// Connects to the signalling server trusting the web's public roots and the game's own.
#[derive(Debug)]
pub(super) struct TrustingSignallerBuilder {
    tls: Arc<ClientConfig>,
}

impl TrustingSignallerBuilder {
    /// A client trusting the public roots and `roots` (DER certificates).
    pub(super) fn new(roots: &[Vec<u8>]) -> Result<Self, SignalingRootError> {
        let mut store = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        for (index, der) in roots.iter().enumerate() {
            store.add(CertificateDer::from(der.clone())).map_err(|error| SignalingRootError::Invalid { index, reason: error.to_string() })?;
        }
        let tls = ClientConfig::builder_with_provider(Arc::new(futures_rustls::rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|error| SignalingRootError::Invalid { index: 0, reason: error.to_string() })?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(Self { tls: Arc::new(tls) })
    }
}

/// How long to wait between attempts to reach the signalling server (matchbox's own wait).
const RETRY_AFTER: Duration = Duration::from_secs(3);

#[async_trait]
impl SignallerBuilder for TrustingSignallerBuilder {
    async fn new_signaller(&self, mut attempts: Option<u16>, room_url: String) -> Result<Box<dyn Signaller>, SignalingError> {
        loop {
            match connect_async_with_tls_connector(&room_url, Some(TlsConnector::from(self.tls.clone()))).await {
                Ok((websocket, _)) => return Ok(Box::new(TrustingSignaller { websocket })),
                Err(error) => {
                    if let Some(left) = attempts.as_mut() {
                        if *left <= 1 {
                            return Err(SignalingError::NegotiationFailed(Box::new(SignalingError::from(error))));
                        }
                        *left -= 1;
                    }
                    bevy::log::warn!("cannot reach the signaling server at {room_url}: {error}; trying again in {RETRY_AFTER:?}");
                    async_io::Timer::after(RETRY_AFTER).await;
                }
            }
        }
    }
}

/// One connection to the signalling server: matchbox's JSON messages over a websocket.
struct TrustingSignaller {
    websocket: WebSocketStream<ConnectStream>,
}

#[async_trait]
impl Signaller for TrustingSignaller {
    async fn send(&mut self, request: PeerRequest) -> Result<(), SignalingError> {
        let text = serde_json::to_string(&request).map_err(|error| SignalingError::UserImplementationError(error.to_string()))?;
        self.websocket.send(WsMessage::Text(text.into())).await.map_err(SignalingError::from)
    }

    async fn next_message(&mut self) -> Result<PeerEvent, SignalingError> {
        match self.websocket.next().await {
            Some(Ok(WsMessage::Text(text))) => serde_json::from_str(&text).map_err(|_| SignalingError::UnknownFormat),
            Some(Ok(_)) => Err(SignalingError::UnknownFormat),
            Some(Err(error)) => Err(SignalingError::from(error)),
            None => Err(SignalingError::StreamExhausted),
        }
    }
}
