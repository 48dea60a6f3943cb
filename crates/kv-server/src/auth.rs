//! Client authentication with a shared token (`--auth-token-file` or
//! `KV_AUTH_TOKEN`).
//!
//! Each connection starts unauthenticated. An [`AuthRequest`](kv_proto::AuthRequest) carrying the
//! right token authenticates it for the rest of its life; until then every
//! other request is answered UNAUTHENTICATED and does nothing. A wrong
//! token is answered UNAUTHENTICATED too, logged with the client's address,
//! and slowed: the connection reads nothing more for a delay that doubles
//! with each failure on it, up to [`MAX_FAILURE_DELAY`], so guessing costs
//! time that a client cannot parallelise beyond `--max-connections`.
//!
//! The server keeps only a SHA-256 digest of the token, and compares the
//! digest of what a client presents with it in constant time: the time
//! taken tells nothing of how much of a guess was right, nor of the
//! token's length.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kv_proto::{AuthResponse, ErrorCode, Request, Response, request::Command, response};

/// Delay after the first failed attempt on a connection; each further
/// failure doubles it.
pub const FIRST_FAILURE_DELAY: Duration = Duration::from_millis(100);

/// The longest delay after a failed attempt.
pub const MAX_FAILURE_DELAY: Duration = Duration::from_secs(5);

/// The token clients must present, as the server holds it: its SHA-256
/// digest only. `Debug` shows nothing of it.
#[derive(Clone)]
pub struct AuthToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

/// Why no token could be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token file could not be read.
    #[error("cannot read --auth-token-file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The token is empty (a file with nothing but a newline counts).
    #[error("{0} is empty: an empty token would let anyone in")]
    Empty(String),
}

impl AuthToken {
    /// A token of these bytes.
    ///
    /// # Errors
    /// [`TokenError::Empty`] for no bytes; `what` names the source in the
    /// message.
    pub fn new(token: &[u8], what: &str) -> Result<AuthToken, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Empty(what.to_owned()));
        }
        Ok(AuthToken {
            digest: sha256(token),
        })
    }

    /// The token in a file: its bytes, less one trailing newline (`\n` or
    /// `\r\n`) as editors and `echo` leave.
    ///
    /// # Errors
    /// [`TokenError::Read`] if it cannot be read, [`TokenError::Empty`] if
    /// nothing is left.
    pub fn from_file(path: &Path) -> Result<AuthToken, TokenError> {
        let bytes = std::fs::read(path).map_err(|source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        AuthToken::new(
            trim_newline(&bytes),
            &format!("--auth-token-file {}", path.display()),
        )
    }

    /// Whether `presented` is this token, in time independent of both.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest = sha256(presented);
        let diff = self
            .digest
            .iter()
            .zip(&digest)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// `bytes` without one trailing `\n` or `\r\n`.
pub fn trim_newline(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

/// The answer to an auth request that succeeded (or needed nothing).
pub(crate) fn accepted(id: u64) -> Response {
    Response::new(id, response::Result::Auth(AuthResponse {}))
}

/// What the gate does with one request.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Serve it.
    Pass(Request),
    /// Answer it with this, after `delay` (during which the connection
    /// reads nothing).
    Answer { response: Response, delay: Duration },
}

/// One connection's authentication state.
#[derive(Debug)]
pub(crate) struct Gate<'a> {
    token: Option<&'a AuthToken>,
    peer: SocketAddr,
    authenticated: bool,
    failures: u32,
}

impl<'a> Gate<'a> {
    /// The gate of a new connection from `peer`; `token: None` lets
    /// everything through.
    pub(crate) fn new(token: Option<&'a AuthToken>, peer: SocketAddr) -> Gate<'a> {
        Gate {
            token,
            peer,
            authenticated: false,
            failures: 0,
        }
    }

    /// Decides what happens to `request`.
    pub(crate) fn admit(&mut self, request: Request) -> Admission {
        let id = request.id;
        let Some(token) = self.token else {
            return match request.command {
                // No token needed: any token is fine.
                Some(Command::Auth(_)) => Admission::Answer {
                    response: accepted(id),
                    delay: Duration::ZERO,
                },
                _ => Admission::Pass(request),
            };
        };
        match &request.command {
            Some(Command::Auth(auth)) if token.matches(&auth.token) => {
                if !self.authenticated {
                    tracing::debug!(peer = %self.peer, "client authenticated");
                }
                self.authenticated = true;
                Admission::Answer {
                    response: accepted(id),
                    delay: Duration::ZERO,
                }
            }
            Some(Command::Auth(_)) => {
                self.failures = self.failures.saturating_add(1);
                let delay = failure_delay(self.failures);
                tracing::warn!(
                    peer = %self.peer,
                    failures = self.failures,
                    delay_ms = delay.as_millis() as u64,
                    "authentication failed: wrong auth token"
                );
                Admission::Answer {
                    response: Response::error(id, ErrorCode::Unauthenticated, "wrong auth token"),
                    delay,
                }
            }
            _ if self.authenticated => Admission::Pass(request),
            _ => Admission::Answer {
                response: Response::error(
                    id,
                    ErrorCode::Unauthenticated,
                    "this server needs an auth token: authenticate first (kv-client reads it \
                     from --auth-token-file or KV_AUTH_TOKEN)",
                ),
                delay: Duration::ZERO,
            },
        }
    }
}

/// The delay after the `failures`-th failed attempt on a connection.
fn failure_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_FAILURE_DELAY
        .saturating_mul(1 << doublings)
        .min(MAX_FAILURE_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_proto::{AuthRequest, GetRequest};

    fn auth(id: u64, token: &str) -> Request {
        Request::new(
            id,
            Command::Auth(AuthRequest {
                token: token.to_owned().into(),
            }),
        )
    }

    fn get(id: u64) -> Request {
        Request::new(id, Command::Get(GetRequest { key: "k".into() }))
    }

    fn code(admission: &Admission) -> Option<ErrorCode> {
        match admission {
            Admission::Answer { response, .. } => match &response.result {
                Some(response::Result::Error(e)) => Some(e.code()),
                _ => None,
            },
            Admission::Pass(_) => None,
        }
    }

    #[test]
    fn tokens_compare_by_content_only() {
        let token = AuthToken::new(b"s3cret", "test").unwrap();
        assert!(token.matches(b"s3cret"));
        assert!(!token.matches(b"s3cre"));
        assert!(!token.matches(b"s3cret "));
        assert!(!token.matches(b""));
        assert!(AuthToken::new(b"", "KV_AUTH_TOKEN").is_err());
        assert_eq!(format!("{token:?}"), "AuthToken(<redacted>)");
    }

    #[test]
    fn a_file_loses_one_trailing_newline_and_must_not_be_empty() {
        assert_eq!(trim_newline(b"abc\n"), b"abc");
        assert_eq!(trim_newline(b"abc\r\n"), b"abc");
        assert_eq!(trim_newline(b"abc\n\n"), b"abc\n");
        assert_eq!(trim_newline(b"abc"), b"abc");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "tok\n").unwrap();
        assert!(AuthToken::from_file(&path).unwrap().matches(b"tok"));
        std::fs::write(&path, "\n").unwrap();
        let err = AuthToken::from_file(&path).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        let err = AuthToken::from_file(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
    }

    #[test]
    fn nothing_passes_before_the_right_token() {
        let token = AuthToken::new(b"right", "test").unwrap();
        let mut gate = Gate::new(Some(&token), "127.0.0.1:1".parse().unwrap());
        assert_eq!(code(&gate.admit(get(1))), Some(ErrorCode::Unauthenticated));
        let wrong = gate.admit(auth(2, "wrong"));
        assert_eq!(code(&wrong), Some(ErrorCode::Unauthenticated));
        assert!(matches!(wrong, Admission::Answer { delay, .. } if delay == FIRST_FAILURE_DELAY));
        let again = gate.admit(auth(3, "wrong"));
        assert!(
            matches!(again, Admission::Answer { delay, .. } if delay == 2 * FIRST_FAILURE_DELAY)
        );
        assert_eq!(code(&gate.admit(get(4))), Some(ErrorCode::Unauthenticated));
        let right = gate.admit(auth(5, "right"));
        assert!(matches!(right, Admission::Answer { ref response, delay }
            if delay.is_zero() && matches!(response.result, Some(response::Result::Auth(_)))));
        assert!(matches!(gate.admit(get(6)), Admission::Pass(_)));
    }

    #[test]
    fn without_a_token_everything_passes_and_auth_is_accepted() {
        let mut gate = Gate::new(None, "127.0.0.1:1".parse().unwrap());
        assert!(matches!(gate.admit(get(1)), Admission::Pass(_)));
        assert!(
            matches!(gate.admit(auth(2, "any")), Admission::Answer { delay, .. } if delay.is_zero())
        );
    }

    #[test]
    fn the_failure_delay_is_bounded() {
        assert_eq!(failure_delay(1), FIRST_FAILURE_DELAY);
        assert_eq!(failure_delay(3), 4 * FIRST_FAILURE_DELAY);
        assert_eq!(failure_delay(100), MAX_FAILURE_DELAY);
        assert_eq!(failure_delay(u32::MAX), MAX_FAILURE_DELAY);
    }
}
