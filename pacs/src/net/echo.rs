//! C-ECHO ("test connection") with a verdict a user can act on: OK, refused, timeout,
//! AE rejected, or another failure.

use std::time::Instant;

use serde::Serialize;

use super::dimse::{self, C_ECHO_RQ, C_ECHO_RSP, Incoming, StatusKind};
use super::node::PacsNode;
use super::syntax::{Proposal, UNCOMPRESSED_TRANSFER_SYNTAXES};
use crate::error::{Error, Result};

/// The Verification SOP Class.
pub const VERIFICATION_SOP_CLASS: &str = "1.2.840.10008.1.1";

/// The outcome of [`echo`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum EchoVerdict {
    /// The peer answered C-ECHO with success.
    Ok { round_trip_ms: f64 },
    /// Nothing listens at the address (wrong host or port, or the PACS is down).
    Refused,
    /// No answer within the node's timeout (firewall, wrong host, hung peer).
    Timeout { timeout_s: f64 },
    /// The peer rejected the association: usually our AE title (or its own) is not configured there.
    AeRejected { reason: String },
    /// Anything else (protocol error, failure status, invalid node).
    Failed { detail: String },
}

impl EchoVerdict {
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok { .. })
    }
}

impl std::fmt::Display for EchoVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ok { round_trip_ms } => write!(f, "OK ({round_trip_ms:.0} ms)"),
            Self::Refused => f.write_str("connection refused (nothing listens at that host and port)"),
            Self::Timeout { timeout_s } => write!(f, "no answer within {timeout_s:.1} s"),
            Self::AeRejected { reason } => {
                write!(f, "association rejected: {reason} (check both AE titles on both sides)")
            }
            Self::Failed { detail } => write!(f, "failed: {detail}"),
        }
    }
}

/// Tests the connection to `node` with C-ECHO.
pub fn echo(node: &PacsNode) -> EchoVerdict {
    let started = Instant::now();
    match echo_inner(node) {
        Ok(()) => EchoVerdict::Ok { round_trip_ms: started.elapsed().as_secs_f64() * 1e3 },
        Err(Error::ConnectionRefused { .. }) => EchoVerdict::Refused,
        Err(Error::Timeout { timeout_s, .. }) => EchoVerdict::Timeout { timeout_s },
        Err(Error::AssociationRejected { reason, .. }) => EchoVerdict::AeRejected { reason },
        Err(e) => EchoVerdict::Failed { detail: e.to_string() },
    }
}

fn echo_inner(node: &PacsNode) -> Result<()> {
    let mut link =
        dimse::connect(node, &[Proposal::new(VERIFICATION_SOP_CLASS, &UNCOMPRESSED_TRANSFER_SYNTAXES)], &[], None)?;
    let context = link.contexts().first().map(|c| c.id).ok_or_else(|| Error::NoPresentationContext {
        peer: link.peer().to_owned(),
        abstract_syntax: VERIFICATION_SOP_CLASS.to_owned(),
        transfer_syntax: None,
    })?;
    let id = link.next_message_id();
    link.send_command(context, &dimse::request(C_ECHO_RQ, id, VERIFICATION_SOP_CLASS, false, Vec::new()))?;
    match link.receive_command()? {
        Incoming::Released => {
            return Err(Error::ConnectionLost {
                peer: link.peer().to_owned(),
                detail: "released before answering C-ECHO".to_owned(),
            });
        }
        Incoming::Command { command, .. } if command.field() == C_ECHO_RSP && command.responded_id() == Some(id) => {
            let status = command.status().unwrap_or(0xFFFF);
            if !matches!(dimse::status_kind(status), StatusKind::Success | StatusKind::Warning) {
                return Err(Error::DimseFailure {
                    peer: link.peer().to_owned(),
                    operation: "C-ECHO",
                    status,
                    meaning: dimse::status_meaning(status),
                });
            }
        }
        Incoming::Command { .. } => {
            return Err(Error::Network {
                peer: link.peer().to_owned(),
                detail: "unexpected message instead of C-ECHO-RSP".to_owned(),
            });
        }
    }
    link.release()
}
