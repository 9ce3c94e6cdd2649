//! Parse, don't validate: once an `Email`, a `NewPassword` or a
//! `RefreshToken` exists, it is valid.

use std::fmt;

use aws_lc_rs::{digest, hmac};
use tokengate::b64;
use zeroize::Zeroizing;

/// Why an email address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// Not an address of the form name@example.com.
    #[error("email must be an address like name@example.com")]
    Malformed,
}

/// Why a new password was refused; the text says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Shorter than [`MIN_PASSWORD_CHARS`].
    #[error(
        "password must be at least {MIN_PASSWORD_CHARS} characters; a few unrelated words make a strong one"
    )]
    TooShort,
    /// Longer than [`MAX_PASSWORD_CHARS`].
    #[error("password must be at most {MAX_PASSWORD_CHARS} characters")]
    TooLong,
    /// Too easy to guess, with zxcvbn's advice.
    #[error("{0}")]
    Guessable(String),
}

/// Why role names were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolesError {
    /// Empty list, or a name with other characters.
    #[error(
        "roles must be a non-empty list of names made of letters, digits, '-', '_', '.' or ':'"
    )]
    Invalid,
}

/// Declares an opaque id: 128 random bits in base64url when made here,
/// otherwise what storage or a verified token says. Reads as `&str`.
macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(String);

        impl $name {
            /// A new random id; `None` only if the system random generator fails.
            pub fn random() -> Option<$name> {
                random_id().map($name)
            }

            /// The id's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> $name {
                $name(text)
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> $name {
                $name(text.to_owned())
            }
        }

        impl From<&$name> for String {
            fn from(id: &$name) -> String {
                id.0.clone()
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

opaque_id!(
    /// A user's id: the `sub` of their tokens.
    UserId
);
opaque_id!(
    /// A session's id: the `sid` of its tokens, one refresh-token family.
    SessionId
);

/// A normalised email address: trimmed, lower-cased, one `@` with a local
/// part and a dotted domain of letters, digits and hyphens, at most 254
/// characters; no whitespace, no invisible characters, none of the
/// characters that separate addresses or list items (`,;<>()[]":\`).
/// The address is an identity other systems read (the forward-auth
/// `X-Auth-Email` header): `ceo@corp.example,evil.example` or one with a
/// zero-width space must not pass for another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

/// Characters that render as nothing (format and filler characters), by
/// which two addresses can look the same.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{E0000}'..='\u{E007F}')
}

impl Email {
    /// Normalises and checks an address.
    pub fn parse(raw: &str) -> Result<Email, EmailError> {
        let email = raw.trim().to_lowercase();
        let valid = email.len() <= 254
            && !email.chars().any(|c| {
                c.is_whitespace()
                    || c.is_control()
                    || is_invisible(c)
                    || ",;<>()[]\":\\".contains(c)
            })
            && match email.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && local.len() <= 64
                        && domain.contains('.')
                        && domain.split('.').all(|label| {
                            !label.is_empty()
                                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
                        })
                }
                None => false,
            };
        if valid {
            Ok(Email(email))
        } else {
            Err(EmailError::Malformed)
        }
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password accepted for a new account: 12 to 128 characters and a
/// zxcvbn score of at least 3. Wiped on drop, never printed.
pub struct NewPassword(Zeroizing<String>);

/// The smallest password length accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The largest password length accepted (argon2 cost is bounded).
pub const MAX_PASSWORD_CHARS: usize = 128;

impl NewPassword {
    /// Checks length and strength, with advice on failure. `context` are
    /// words the password must not lean on (the email's parts).
    pub fn parse(raw: &str, context: &[&str]) -> Result<NewPassword, PasswordError> {
        let chars = raw.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            return Err(PasswordError::TooShort);
        }
        if chars > MAX_PASSWORD_CHARS {
            return Err(PasswordError::TooLong);
        }
        let estimate = zxcvbn::zxcvbn(raw, context);
        if u8::from(estimate.score()) < 3 {
            // zxcvbn's warning and suggestions are whole sentences
            // ("This is a very common password."); they follow ours as
            // sentences, not in brackets or after semicolons.
            let mut advice = String::from("password is too easy to guess.");
            if let Some(feedback) = estimate.feedback() {
                if let Some(warning) = feedback.warning() {
                    push_sentence(&mut advice, &warning.to_string());
                }
                for suggestion in feedback.suggestions() {
                    push_sentence(&mut advice, &suggestion.to_string());
                }
            }
            push_sentence(&mut advice, "A few unrelated words make a strong one.");
            return Err(PasswordError::Guessable(advice));
        }
        Ok(NewPassword(Zeroizing::new(raw.to_owned())))
    }

    /// The password text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword([redacted])")
    }
}

/// Appends `sentence` after a space, ending it with a full stop if it has none.
fn push_sentence(text: &mut String, sentence: &str) {
    let sentence = sentence.trim();
    if sentence.is_empty() {
        return;
    }
    text.push(' ');
    text.push_str(sentence);
    if !sentence.ends_with(['.', '!', '?']) {
        text.push('.');
    }
}

/// The words of an email address (local part and domain labels), which a
/// password must not lean on.
pub fn email_words(email: &str) -> Vec<&str> {
    email
        .split(['@', '.', '_', '-', '+'])
        .filter(|p| !p.is_empty())
        .collect()
}

/// A random 128-bit id, base64url (user, session and token ids); `None` only
/// if the system random generator fails.
pub fn random_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(tokengate::b64::encode(bytes))
}

/// A user's roles: valid names (letters, digits, `-_.:`, at most 64
/// characters each), at least one, no repeats, in the order given. Stored
/// as one space-separated text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Roles(Vec<String>);

impl Roles {
    /// Checks role names from a client or an operator.
    pub fn parse<S: AsRef<str>>(roles: &[S]) -> Result<Roles, RolesError> {
        let valid = roles.iter().all(|r| {
            let r = r.as_ref();
            !r.is_empty()
                && r.len() <= 64
                && r.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        });
        if roles.is_empty() || !valid {
            return Err(RolesError::Invalid);
        }
        let mut unique: Vec<String> = Vec::new();
        for r in roles {
            if !unique.iter().any(|u| u == r.as_ref()) {
                unique.push(r.as_ref().to_owned());
            }
        }
        Ok(Roles(unique))
    }

    /// The roles as storage keeps them (written only from [`Roles::parse`]).
    pub fn from_stored(text: &str) -> Roles {
        Roles(text.split_whitespace().map(str::to_owned).collect())
    }

    /// The text storage keeps.
    pub fn stored(&self) -> String {
        self.0.join(" ")
    }

    /// Whether `role` is one of them.
    pub fn contains(&self, role: &str) -> bool {
        self.0.iter().any(|r| r == role)
    }

    /// The names, in order.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl From<&str> for Roles {
    fn from(stored: &str) -> Roles {
        Roles::from_stored(stored)
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.stored())
    }
}

/// A refresh token: 256 random bits, base64url (43 characters). Only its
/// SHA-256 is stored; a rotation's child is derived from it with an HMAC,
/// so a retried rotation yields the same child. Wiped on drop.
pub struct RefreshToken(Zeroizing<String>);

impl RefreshToken {
    /// The length of a refresh token's text.
    pub const LEN: usize = 43;

    /// A new random token; `None` only if the system random generator fails.
    pub fn generate() -> Option<RefreshToken> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut *bytes).ok()?;
        Some(RefreshToken(Zeroizing::new(b64::encode(*bytes))))
    }

    /// A presented token, if it has the shape of one (surrounding
    /// whitespace ignored); anything else can be refused unread.
    pub fn parse(raw: &str) -> Option<RefreshToken> {
        let raw = raw.trim();
        (raw.len() == Self::LEN && b64::decode(raw).is_ok())
            .then(|| RefreshToken(Zeroizing::new(raw.to_owned())))
    }

    /// The token's text, for the client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What storage keeps: base64url(SHA-256(token)).
    pub fn stored_hash(&self) -> String {
        b64::encode(digest::digest(&digest::SHA256, self.0.as_bytes()))
    }

    /// The token a rotation of this one issues: HMAC(key, token).
    pub fn child(&self, key: &hmac::Key) -> RefreshToken {
        RefreshToken(Zeroizing::new(b64::encode(hmac::sign(
            key,
            self.0.as_bytes(),
        ))))
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_checked_and_deduplicated() {
        let roles = Roles::parse(&["user", "admin", "user"]);
        assert_eq!(roles.as_ref().map(Roles::stored), Ok("user admin".into()));
        assert_eq!(roles.map(|r| r.contains("admin")), Ok(true));
        assert_eq!(Roles::parse::<&str>(&[]), Err(RolesError::Invalid));
        assert!(Roles::parse(&["a b"]).is_err());
        assert!(Roles::parse(&[""]).is_err());
        assert!(Roles::parse(&["é"]).is_err());
        assert_eq!(
            Roles::from_stored("user  admin").as_slice(),
            ["user", "admin"]
        );
    }

    #[test]
    fn emails_are_normalised() {
        assert_eq!(
            Email::parse("  Alice.Smith@Example.COM ").map(|e| e.0),
            Ok("alice.smith@example.com".into())
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@.com",
            "a@com.",
            "ceo@corp.example,mallory.example",
            "ceo@corp.example;x",
            "\"ceo@corp.example\"@x.com",
            "ceo@corp.example\u{200b}",
            "c\u{feff}eo@corp.example",
            "ceo@corp\u{00ad}.example",
            "ceo@corp..example",
            "ceo@corp_x.example",
            "ceo@[127.0.0.1]",
            "ceo<ceo@corp.example>",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        for good in [
            "o'brien+tag@example.co.uk",
            "a%b@example.com",
            "josé@exämple.de",
            "x-y@sub-domain.example",
        ] {
            assert!(Email::parse(good).is_ok(), "{good}");
        }
    }

    proptest::proptest! {
        #[test]
        fn an_accepted_email_has_no_separator_or_invisible_character(raw in "\\PC{0,80}") {
            if let Ok(email) = Email::parse(&raw) {
                proptest::prop_assert!(!email.as_str().chars().any(|c| c.is_whitespace()
                    || c.is_control() || is_invisible(c) || ",;<>\"".contains(c)));
            }
        }

        /// An accepted email is stored normalised: parsed again, it is
        /// itself (so a lookup by what was stored finds it).
        #[test]
        fn a_parsed_email_reads_back_to_itself(
            raw in proptest::prop_oneof![
                " {0,2}[A-Za-z0-9._%+\u{e9}-]{1,20}@[A-Za-z0-9-]{1,15}(\\.[A-Za-z]{2,6}){1,2} {0,2}",
                "\\PC{0,80}",
            ],
        ) {
            if let Ok(email) = Email::parse(&raw) {
                let lowered = email.as_str().to_lowercase();
                proptest::prop_assert_eq!(email.as_str(), lowered.trim());
                let again = Email::parse(email.as_str());
                proptest::prop_assert_eq!(again.as_ref().map(Email::as_str), Ok(email.as_str()));
            }
        }

        /// Roles: what storage keeps reads back to the same list.
        #[test]
        fn stored_roles_read_back_to_the_same_roles(
            names in proptest::collection::vec("[A-Za-z0-9._:-]{1,64}", 1..6),
        ) {
            let roles = Roles::parse(&names).unwrap();
            proptest::prop_assert_eq!(Roles::from_stored(&roles.stored()), roles.clone());
            proptest::prop_assert_eq!(Roles::parse(roles.as_slice()).unwrap(), roles);
        }

        /// Refresh tokens: any 32 bytes written as a token parse back to the
        /// same text, with or without surrounding whitespace; one character
        /// more or less does not parse.
        #[test]
        fn a_written_refresh_token_parses_back(bytes in proptest::array::uniform32(proptest::num::u8::ANY), pad in "[ \t\n]{0,3}") {
            let text = b64::encode(bytes);
            let parsed = RefreshToken::parse(&format!("{pad}{text}{pad}"));
            proptest::prop_assert_eq!(parsed.as_ref().map(RefreshToken::expose), Some(text.as_str()));
            proptest::prop_assert!(RefreshToken::parse(&text[1..]).is_none());
            let longer = format!("{text}A");
            proptest::prop_assert!(RefreshToken::parse(&longer).is_none());
        }
    }

    #[test]
    fn weak_passwords_are_refused_with_advice() {
        for weak in [
            "short",
            "password1234",
            "aaaaaaaaaaaaaaa",
            "qwertyuiop123",
            "alicealice1234",
        ] {
            let err = NewPassword::parse(weak, &["alice", "example"]).err();
            assert!(err.is_some(), "{weak} accepted");
        }
        let err = NewPassword::parse("password1234", &[])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            err,
            "password is too easy to guess. This is a very common password. \
             Add another word or two. Uncommon words are better. \
             A few unrelated words make a strong one."
        );
        assert!(NewPassword::parse("correct horse battery staple", &[]).is_ok());
        assert!(NewPassword::parse(&"x".repeat(129), &[]).is_err());
    }

    #[test]
    fn refresh_tokens_are_parsed_once_and_derive_their_child() {
        let token = RefreshToken::generate();
        let Some(token) = token else { panic!("rng") };
        assert_eq!(token.expose().len(), RefreshToken::LEN);
        let again = RefreshToken::parse(&format!("  {}\n", token.expose()));
        assert_eq!(again.map(|t| t.stored_hash()), Some(token.stored_hash()));
        for bad in [
            "",
            "short",
            &"a".repeat(44),
            &"é".repeat(22),
            &"+".repeat(43),
        ] {
            assert!(RefreshToken::parse(bad).is_none(), "{bad}");
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"a derivation key for the test only");
        assert_eq!(token.child(&key).expose(), token.child(&key).expose());
        assert_ne!(token.child(&key).expose(), token.expose());
        assert!(!format!("{token:?}").contains(token.expose()));
    }
}
