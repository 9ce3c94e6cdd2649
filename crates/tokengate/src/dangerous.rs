//! Operations that skip verification. Nothing here checks a signature:
//! use them to inspect tokens (debugging, the `token decode` command), never
//! to make an access decision.

use serde_json::Value;

use crate::b64;
use crate::error::Error;

/// A token's header and payload, decoded but **not verified**.
#[derive(Debug, Clone, PartialEq)]
pub struct Unverified {
    /// The header JSON.
    pub header: Value,
    /// The payload JSON (a JWT's claims).
    pub payload: Value,
}

/// Decodes a compact JWS without checking its signature or claims. The same
/// length limit and strict base64url apply as when verifying.
pub fn decode_unverified(token: &str, max_len: usize) -> Result<Unverified, Error> {
    if token.len() > max_len {
        return Err(Error::TooLarge {
            len: token.len(),
            max: max_len,
        });
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::Malformed(
            "a compact JWS has exactly three dot-separated parts",
        ));
    };
    let header = b64::decode(header).map_err(|_| Error::Malformed("header is not base64url"))?;
    let payload = b64::decode(payload).map_err(|_| Error::Malformed("payload is not base64url"))?;
    let header: Value =
        serde_json::from_slice(&header).map_err(|_| Error::Malformed("header is not JSON"))?;
    let payload: Value =
        serde_json::from_slice(&payload).map_err(|_| Error::Malformed("payload is not JSON"))?;
    Ok(Unverified { header, payload })
}
