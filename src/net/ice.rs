//! [`IceServer`]: a STUN or TURN server for the transport's ICE, with the credentials a TURN
//! relay needs, and [`IceServer::turn_rest`], the time-limited TURN credentials of the "TURN
//! REST API" scheme that coturn implements (`use-auth-secret`): whoever holds the relay's shared
//! secret (a game server, the room's owner) hands each player a username that names an expiry
//! and a password that is the HMAC of it, and the relay checks both without a user database.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// One STUN or TURN server, as WebRTC's `RTCIceServer` takes it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct IceServer {
    /// Its URLs: `stun:host:port`, `turn:host:port?transport=udp`, `turns:host:port`.
    pub urls: Vec<String>,
    /// The TURN username (none for STUN).
    pub username: Option<String>,
    /// The TURN password (none for STUN). Never printed.
    pub credential: Option<String>,
}

impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServer").field("urls", &self.urls).field("username", &self.username).field("credential", &self.credential.as_ref().map(|_| "..")).finish()
    }
}

impl IceServer {
    /// A STUN server (or a TURN server that needs no credentials) at `url`.
    pub fn stun(url: impl Into<String>) -> Self {
        Self { urls: vec![url.into()], username: None, credential: None }
    }

    /// A TURN server at `urls` with a fixed `username` and `credential`.
    pub fn turn(urls: impl IntoIterator<Item = impl Into<String>>, username: impl Into<String>, credential: impl Into<String>) -> Self {
        Self { urls: urls.into_iter().map(Into::into).collect(), username: Some(username.into()), credential: Some(credential.into()) }
    }

    /// A TURN server at `urls` with credentials for `user` valid for `ttl` from `now_unix_s`
    /// (seconds since 1970), made from the relay's `shared_secret` as coturn's
    /// `use-auth-secret` / `static-auth-secret` expects: the username is `expiry:user`, the
    /// password base64(HMAC-SHA1(secret, username)).
    pub fn turn_rest(urls: impl IntoIterator<Item = impl Into<String>>, shared_secret: &[u8], user: &str, ttl: Duration, now_unix_s: u64) -> Self {
        let username = format!("{}:{user}", now_unix_s + ttl.as_secs());
        let mut mac = Hmac::<Sha1>::new_from_slice(shared_secret).expect("HMAC takes a key of any length");
        mac.update(username.as_bytes());
        let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        Self::turn(urls, username, credential)
    }
}

/// The one ICE configuration the transport takes (matchbox 0.15 takes one list of URLs with one
/// username and credential): every server's URLs, and the credentials of the first server that
/// has them. The servers whose other credentials are left out are returned, to be reported.
#[cfg_attr(not(feature = "p2p"), allow(dead_code, reason = "the transport is the p2p feature's"))]
pub(super) fn merged(servers: &[IceServer]) -> (IceServer, Vec<IceServer>) {
    let credentialed = servers.iter().find(|s| s.username.is_some() || s.credential.is_some());
    let (kept, dropped): (Vec<&IceServer>, Vec<&IceServer>) = servers.iter().partition(|s| {
        let plain = s.username.is_none() && s.credential.is_none();
        plain || credentialed.is_some_and(|c| c.username == s.username && c.credential == s.credential)
    });
    let merged = IceServer {
        urls: kept.iter().flat_map(|s| s.urls.iter().cloned()).collect(),
        username: credentialed.and_then(|c| c.username.clone()),
        credential: credentialed.and_then(|c| c.credential.clone()),
    };
    (merged, dropped.into_iter().cloned().collect())
}

/// A URL alone: a STUN server, or a TURN server without credentials.
impl From<&str> for IceServer {
    fn from(url: &str) -> Self {
        Self::stun(url)
    }
}

/// A URL alone: a STUN server, or a TURN server without credentials.
impl From<String> for IceServer {
    fn from(url: String) -> Self {
        Self::stun(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_rest_credentials_are_the_hmac_of_the_expiry_and_user_as_coturn_checks_them() {
        // Reference computed independently (Python: base64.b64encode(hmac.new(b"north-relay-secret",
        // b"1765200000:player-7", hashlib.sha1).digest())).
        let server = IceServer::turn_rest(["turn:203.0.113.5:3478?transport=udp"], b"north-relay-secret", "player-7", Duration::from_secs(3_600), 1_765_196_400);
        assert_eq!(server.username.as_deref(), Some("1765200000:player-7"));
        assert_eq!(server.credential.as_deref(), Some("7dz3bwsPqryb0obxKVwBVu0eTGE="));
        assert_eq!(server.urls, ["turn:203.0.113.5:3478?transport=udp"]);
        let other_secret = IceServer::turn_rest(["turn:x"], b"another", "player-7", Duration::from_secs(3_600), 1_765_196_400);
        assert_ne!(other_secret.credential, server.credential);
    }

    #[test]
    fn the_transport_gets_every_url_and_the_first_turn_credentials_and_other_credentials_are_reported() {
        let stun = IceServer::stun("stun:stun.example.org:3478");
        let relay = IceServer::turn(["turn:relay:3478?transport=udp", "turns:relay:5349"], "game", "pw");
        let other = IceServer::turn(["turn:other:3478"], "someone", "else");
        let (merged, dropped) = merged(&[stun, relay.clone(), other.clone()]);
        assert_eq!(merged.urls, ["stun:stun.example.org:3478", "turn:relay:3478?transport=udp", "turns:relay:5349"]);
        assert_eq!((merged.username.as_deref(), merged.credential.as_deref()), (Some("game"), Some("pw")));
        assert_eq!(dropped, vec![other]);
        assert_eq!(super::merged(&[]).0, IceServer::default());
    }

    #[test]
    fn a_url_is_a_server_without_credentials_and_a_credential_is_never_printed() {
        assert_eq!(IceServer::from("stun:stun.example.org:3478"), IceServer { urls: vec!["stun:stun.example.org:3478".into()], username: None, credential: None });
        let turn = IceServer::turn(["turn:relay:3478"], "game", "hunter2");
        assert!(!format!("{turn:?}").contains("hunter2"));
    }
}
