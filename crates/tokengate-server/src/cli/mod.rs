//! Command-line definitions (clap) and the one place failures become exit codes.

pub mod commands;
pub mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokengate::Algorithm;

/// JWT authentication for APIs: the auth service, keys and tokens.
#[derive(Debug, Parser)]
#[command(name = "tokengate", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the auth service (SQLite in ./tokengate-data unless configured).
    Serve(ServeArgs),
    /// Apply database migrations and exit (serve also applies them).
    Migrate(DataArgs),
    /// Copy every row from one database into another (SQLite to PostgreSQL),
    /// in one transaction on the target.
    MigrateData(MigrateDataArgs),
    /// Administer accounts directly in the database.
    #[command(subcommand)]
    User(UserCommand),
    /// Signing keys: key files (generate, jwks) and the service's keys (rotate, list, export-public).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Sign, verify and inspect tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Make random secrets.
    #[command(subcommand)]
    Secret(SecretCommand),
}

/// Where the data lives: shared by the commands that touch it.
#[derive(Debug, Args, Clone)]
pub struct DataArgs {
    /// Data directory (SQLite file, master key); env TOKENGATE_DATA_DIR.
    /// Only serve and migrate create it; other commands refuse a missing one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Configuration file (default ./tokengate.toml if present); env TOKENGATE_CONFIG.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `tokengate serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen address (default 127.0.0.1:8080); env TOKENGATE_ADDR.
    #[arg(long)]
    pub addr: Option<String>,
    #[command(flatten)]
    pub data: DataArgs,
    /// TLS certificate chain (PEM); with --tls-key, serve HTTPS (reloaded on SIGHUP).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// `tokengate migrate-data` arguments. The URLs are taken as plain text:
/// clap never echoes them (they may hold passwords); the store layer
/// checks them.
#[derive(Debug, Args)]
pub struct MigrateDataArgs {
    /// The database to copy from: sqlite://PATH or postgres://… (brought up
    /// to this version's schema first, as serve would).
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// The database to copy into: postgres://… or sqlite://PATH (created up
    /// to date; it must hold no rows unless --force). Leave the password
    /// out and set PGPASSWORD to keep it off the command line.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Delete the target's rows first, in the same transaction as the copy.
    #[arg(long)]
    pub force: bool,
}

/// `tokengate user …`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account; prints its id. The password is typed twice
    /// without echo, or read from standard input with --password-stdin.
    Add {
        /// Email address.
        #[arg(long)]
        email: String,
        /// An extra role (repeatable), e.g. --role admin. Everyone has `user`.
        #[arg(long)]
        role: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        data: DataArgs,
    },
    /// List accounts (optionally those whose email contains --email).
    List {
        /// Email substring to search for.
        #[arg(long)]
        email: Option<String>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Disable an account: no login or refresh; its sessions end and a
    /// running server rejects its access tokens within seconds.
    Disable {
        /// Email address.
        #[arg(long)]
        email: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Enable a disabled account.
    Enable {
        /// Email address.
        #[arg(long)]
        email: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Replace an account's roles.
    SetRoles {
        /// Email address.
        #[arg(long)]
        email: String,
        /// The roles, e.g. --roles user,admin.
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Import accounts from a CSV with columns email, password_hash (bcrypt
    /// $2a/$2b/$2y$ or argon2 PHC) and optionally roles. All or nothing:
    /// any bad row is reported by line number and nothing is imported.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Leave emails that already have accounts alone instead of refusing.
        #[arg(long)]
        skip_existing: bool,
        #[command(flatten)]
        data: DataArgs,
    },
}

/// `tokengate keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a key: DIR/<kid>.pem (private, PKCS#8, mode 0600) and
    /// DIR/<kid>.jwk.json (public JWK); for HS* a secret JWK
    /// DIR/<kid>.secret.jwk.json (mode 0600) instead. Prints the kid.
    Generate {
        /// Algorithm: HS256/384/512, RS256/384/512, PS256/384/512, ES256, ES384, EdDSA.
        #[arg(long, value_parser = parse_alg)]
        alg: Algorithm,
        /// Key id (default: the RFC 7638 thumbprint; random for HS*).
        #[arg(long)]
        kid: Option<String>,
        /// Directory to write into (created if missing).
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Print a JWKS of the public halves of the keys in DIRs (*.pem and
    /// *.jwk.json only; other files are ignored) and FILEs (PEM, JWK or
    /// JWKS). Secrets are never included.
    Jwks {
        /// Directories or key files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Rotate the service's signing key: the new key is published in the
    /// JWKS at once, signs after key_publish_delay, and the old key verifies
    /// until its last token has expired. Running servers pick it up.
    Rotate {
        #[command(flatten)]
        data: DataArgs,
    },
    /// List the service's signing keys: kid, algorithm, state, created,
    /// activates, retires.
    List {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Print the JWKS of the service's live keys (for air-gapped verifiers).
    ExportPublic {
        #[command(flatten)]
        data: DataArgs,
    },
}

/// `tokengate token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Sign claims with a private key and print the token.
    Sign(SignArgs),
    /// Verify a token; print its claims (exit 0) or why it was rejected (exit 1).
    Verify(VerifyArgs),
    /// Print a token's header and claims WITHOUT verifying anything.
    Decode {
        /// The token, or - to read it from standard input.
        token: String,
    },
}

/// `tokengate token sign` arguments.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// Private key: a PEM (PKCS#8, PKCS#1 or SEC1) or a JWK with private members.
    #[arg(long)]
    pub key: PathBuf,
    /// Claims as a JSON object, or @FILE to read them from a file.
    #[arg(long)]
    pub claims: String,
    /// Lifetime: exp = now + this, unless the claims set exp (e.g. 15m, 1h, 30s).
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub exp: Duration,
    /// Algorithm, for keys that allow more than one: an RSA PEM takes the
    /// alg of the <kid>.jwk.json beside it, else needs this flag.
    #[arg(long, value_parser = parse_alg)]
    pub alg: Option<Algorithm>,
    /// Key id for a PEM key (default: the file name without .pem).
    #[arg(long)]
    pub kid: Option<String>,
    /// Header typ (at+jwt for RFC 9068 access tokens).
    #[arg(long, default_value = "JWT")]
    pub typ: String,
}

/// `tokengate token verify` arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Verification key: a public (or private) PEM, a JWK, or a JWKS.
    #[arg(long, conflicts_with = "jwks", required_unless_present = "jwks")]
    pub key: Option<PathBuf>,
    /// A JWKS file to verify against.
    #[arg(long)]
    pub jwks: Option<PathBuf>,
    /// Accepted issuer (repeatable). Without it, iss is not checked.
    #[arg(long)]
    pub iss: Vec<String>,
    /// Accepted audience (repeatable). Without it, aud is not checked.
    #[arg(long)]
    pub aud: Vec<String>,
    /// Algorithm for a PEM key that allows more than one: an RSA PEM takes
    /// the alg of the <kid>.jwk.json beside it, else needs this flag.
    #[arg(long, value_parser = parse_alg)]
    pub alg: Option<Algorithm>,
    /// Key id for a PEM key (default: the file name without .pem).
    #[arg(long)]
    pub kid: Option<String>,
    /// Required header typ, e.g. at+jwt.
    #[arg(long)]
    pub typ: Option<String>,
    /// Clock-skew allowance (at most 300s).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub leeway: Duration,
    /// The token, or - to read it from standard input.
    pub token: String,
}

/// `tokengate secret …`.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Print a random secret, base64url (default 32 bytes = 256 bits).
    Generate {
        /// Number of random bytes (at least 32).
        #[arg(long, default_value_t = 32)]
        bytes: usize,
    },
}

fn parse_alg(s: &str) -> Result<Algorithm, String> {
    Algorithm::from_name(s).map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 15m, 1h, 14d)"))
}

/// How a command failed. Each carries one line for standard error.
#[derive(Debug)]
pub enum Failure {
    /// The input was wrong (a file, a PEM, an argument): exit 2.
    Input(String),
    /// The token was checked and rejected: exit 1.
    Rejected(String),
    /// Whoever read standard output stopped reading (`… | head`): exit 141
    /// and nothing on stderr, as a Unix tool killed by SIGPIPE (see
    /// [`output`]).
    OutputClosed,
}

impl From<crate::service::ServiceError> for Failure {
    /// A refusal's own words for the operator; every service failure is
    /// input to fix (or a fault to report), exit 2.
    fn from(e: crate::service::ServiceError) -> Self {
        match e {
            crate::service::ServiceError::Invalid { detail, .. } => Failure::Input(detail),
            other => Failure::Input(other.to_string()),
        }
    }
}

impl From<crate::infra::files::FileError> for Failure {
    /// A key, claims or output file the operator named: input to fix.
    fn from(e: crate::infra::files::FileError) -> Self {
        Failure::Input(e.to_string())
    }
}

impl From<crate::store::MigrateDataError> for Failure {
    /// A refused or failed copy (a URL, a non-empty target, a constraint
    /// the target enforces): the operator's to fix, exit 2. The message
    /// names neither URL nor value.
    fn from(e: crate::store::MigrateDataError) -> Self {
        Failure::Input(e.to_string())
    }
}

impl Failure {
    fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Rejected(_) => ExitCode::from(1),
            Failure::Input(_) => ExitCode::from(2),
            Failure::OutputClosed => ExitCode::from(141),
        }
    }
}

/// Runs the command line and maps every failure to one line on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => commands::serve::serve(args),
        Command::Migrate(args) => commands::serve::migrate(args),
        Command::MigrateData(args) => commands::migrate_data::run(args),
        Command::User(cmd) => commands::user::run(cmd),
        Command::Keys(cmd) => commands::keys::run(cmd),
        Command::Token(cmd) => commands::token::run(cmd),
        Command::Secret(SecretCommand::Generate { bytes }) => commands::secret::generate(bytes),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            match &failure {
                Failure::Input(line) => eprintln!("error: {line}"),
                Failure::Rejected(line) => eprintln!("invalid token: {line}"),
                Failure::OutputClosed => {}
            }
            failure.exit_code()
        }
    }
}
