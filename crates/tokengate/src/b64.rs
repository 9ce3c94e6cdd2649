//! Strict base64url (RFC 4648 §5) without padding, as JWS requires (RFC 7515 §2).
//!
//! The decoder refuses padding, whitespace, characters outside the URL-safe
//! alphabet and non-zero trailing bits, so every byte string has exactly one
//! accepted encoding: a token cannot be altered without altering its bytes.

use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

const STRICT: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

/// Encodes bytes as unpadded base64url.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    STRICT.encode(bytes)
}

/// Decodes canonical unpadded base64url; anything else is an error.
pub fn decode(text: impl AsRef<[u8]>) -> Result<Vec<u8>, base64::DecodeError> {
    STRICT.decode(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_padding_whitespace_and_stray_bits() {
        assert_eq!(decode("Zm9v").ok(), Some(b"foo".to_vec()));
        assert!(decode("Zm8=").is_err());
        assert!(decode("Zm8").is_ok());
        assert!(decode("Zm9").is_err(), "trailing bits must be zero");
        assert!(decode(" Zm9v").is_err());
        assert!(
            decode("Zm+v").is_err(),
            "standard alphabet is not base64url"
        );
        assert!(decode("Zm/v").is_err());
        assert!(decode("Z").is_err());
    }
}
