//! The load generator of `bench/run.sh`.
//!
//! - `get`: N keep-alive connections, each sending the same request as fast
//!   as answers come back (what wrk or oha do, so one tool measures every
//!   scenario the same way);
//! - `refresh`: N refresh-rotation chains: each logs in once, then every
//!   response's refresh token is the next request's (wrk and oha cannot
//!   chain a response into the next request);
//! - `login`: a login flood, N requests in flight;
//! - `hash`: the raw argon2id hash rate at given parameters, one thread (the
//!   limit a login flood is compared with);
//! - `raw-verify`: the raw aws-lc-rs signature-check rate of one algorithm
//!   on this thread (the limit of a protected route without the cache);
//! - `ready`: how long from a given start instant until a URL answers 200;
//! - `chart`: a horizontal bar chart (SVG, written by hand) from a TSV file.
//!
//! Each load mode prints one line of `key=value` pairs (`rate`, `p50_ms`,
//! `p99_ms`, `ok`, `errors`) for the script to read. Only responses that
//! complete after the warm-up count. One thread by default (the script pins
//! it to its own core); `--threads` for more.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(about = "Load generator for bench/run.sh")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// The same GET on N connections.
    Get {
        /// `http://host:port/path`.
        url: String,
        /// Extra request headers, `name: value`; repeatable.
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        #[command(flatten)]
        load: Load,
    },
    /// N refresh-rotation chains: log in once, then refresh with the token
    /// of the previous answer.
    Refresh {
        /// `http://host:port`.
        base: String,
        /// The login request's path and JSON body.
        #[arg(long, default_value = "/auth/login")]
        login_path: String,
        #[arg(long)]
        login_body: String,
        #[arg(long, default_value = "/auth/refresh")]
        refresh_path: String,
        /// The refresh token's member name in requests and answers.
        #[arg(long, default_value = "refresh_token")]
        field: String,
        #[command(flatten)]
        load: Load,
    },
    /// The same POST (a login) with N requests in flight; or, with
    /// `--bodies`, each line of a file posted once (one account per login,
    /// for logins that change the account, like an imported hash's first).
    Login {
        url: String,
        #[arg(long, required_unless_present = "bodies")]
        body: Option<String>,
        /// A file with one JSON body per line, each sent once; a worker
        /// stops when they run out (counted as an error).
        #[arg(long, conflicts_with = "body")]
        bodies: Option<PathBuf>,
        #[command(flatten)]
        load: Load,
    },
    /// Polls `url` every 2 ms until it answers 200; prints the time since
    /// `--since-ns` (nanoseconds since the epoch, taken before the start).
    Ready {
        url: String,
        #[arg(long)]
        since_ns: u128,
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
    },
    /// Hashes a password with argon2id (or checks one against a bcrypt
    /// hash, with `--bcrypt-cost`) for the given seconds on this thread;
    /// prints the rate.
    Hash {
        /// Check a bcrypt hash of this cost instead of hashing with argon2id.
        #[arg(long)]
        bcrypt_cost: Option<u32>,
        #[arg(long, default_value_t = 19456)]
        memory_kib: u32,
        #[arg(long, default_value_t = 2)]
        iterations: u32,
        #[arg(long, default_value_t = 1)]
        parallelism: u32,
        #[arg(short = 'd', long, default_value_t = 5.0)]
        duration: f64,
    },
    /// Writes N accounts sharing one bcrypt hash of `--password` as a CSV
    /// for `tokengate user import`, and their login bodies, one per line,
    /// for `login --bodies` (an imported hash is replaced by argon2id at its
    /// first login, so each account gives one bcrypt login).
    BcryptAccounts {
        #[arg(long, default_value_t = 10)]
        cost: u32,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        password: String,
        #[arg(long)]
        csv: PathBuf,
        #[arg(long)]
        bodies: PathBuf,
    },
    /// Checks one signature over a 400-byte message with aws-lc-rs for the
    /// given seconds on this thread; prints the rate.
    RawVerify {
        /// ES256, EdDSA, RS256 or HS256.
        alg: String,
        #[arg(short = 'd', long, default_value_t = 3.0)]
        duration: f64,
    },
    /// A bar chart from TSV lines `group<TAB>label<TAB>value`.
    Chart {
        input: PathBuf,
        output: PathBuf,
        #[arg(long, default_value = "")]
        title: String,
        #[arg(long, default_value = "req/s")]
        unit: String,
    },
}

#[derive(Args, Clone, Copy)]
struct Load {
    /// Connections (or chains) kept busy at once.
    #[arg(short = 'c', long, default_value_t = 32)]
    concurrency: usize,
    /// Measured seconds, after the warm-up.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(short = 'w', long, default_value_t = 2.0)]
    warmup: f64,
    /// Runtime threads (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() {
    let cli = Cli::parse();
    let threads = match &cli.mode {
        Mode::Get { load, .. } | Mode::Refresh { load, .. } | Mode::Login { load, .. } => {
            load.threads
        }
        _ => 1,
    };
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let result = runtime
        .map_err(Error::from)
        .and_then(|rt| rt.block_on(run(cli.mode)));
    if let Err(error) = result {
        eprintln!("loadgen: {error}");
        std::process::exit(1);
    }
}

async fn run(mode: Mode) -> Result<(), Error> {
    match mode {
        Mode::Get { url, headers, load } => {
            let target = Target::parse(&url)?;
            let headers = headers
                .iter()
                .map(|h| {
                    h.split_once(':')
                        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                        .ok_or_else(|| Error::from(format!("header without a colon: {h}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let job = Job::Fixed {
                method: Method::GET,
                body: Bytes::new(),
                headers,
            };
            let report = drive(&target, job, load, vec![None; load.concurrency]).await;
            println!("mode=get {report}");
        }
        Mode::Login {
            url,
            body,
            bodies,
            load,
        } => {
            let target = Target::parse(&url)?;
            let headers = vec![("content-type".into(), "application/json".into())];
            let job = match (body, bodies) {
                (_, Some(file)) => Job::EachOnce {
                    bodies: std::fs::read_to_string(&file)?
                        .lines()
                        .filter(|line| !line.trim().is_empty())
                        .map(|line| Bytes::from(line.to_owned()))
                        .collect(),
                    next: AtomicUsize::new(0),
                    headers,
                },
                (Some(body), None) => Job::Fixed {
                    method: Method::POST,
                    body: Bytes::from(body),
                    headers,
                },
                (None, None) => return Err("--body or --bodies".into()),
            };
            let report = drive(&target, job, load, vec![None; load.concurrency]).await;
            println!("mode=login {report}");
        }
        Mode::Refresh {
            base,
            login_path,
            login_body,
            refresh_path,
            field,
            load,
        } => {
            let login = Target::parse(&format!("{base}{login_path}"))?;
            let target = Target::parse(&format!("{base}{refresh_path}"))?;
            // The chains' first tokens, from one login each (sequential: a
            // login is a password hash, and this is set-up, not measured).
            let mut seeds = Vec::with_capacity(load.concurrency);
            let mut conn = connect(&login.authority).await?;
            for _ in 0..load.concurrency {
                let (status, body) = send(
                    &mut conn,
                    &login,
                    Method::POST,
                    &[("content-type".into(), "application/json".into())],
                    Bytes::from(login_body.clone()),
                )
                .await?;
                if status != StatusCode::OK {
                    return Err(format!("login answered {status}: {body:?}").into());
                }
                seeds.push(Some(member(&body, &field).ok_or("no refresh token")?));
            }
            let job = Job::Chain { field };
            let report = drive(&target, job, load, seeds).await;
            println!("mode=refresh {report}");
        }
        Mode::Ready {
            url,
            since_ns,
            timeout_secs,
        } => {
            let target = Target::parse(&url)?;
            let give_up = Instant::now() + Duration::from_secs(timeout_secs);
            loop {
                if let Ok(mut conn) = connect(&target.authority).await
                    && let Ok((StatusCode::OK, _)) =
                        send(&mut conn, &target, Method::GET, &[], Bytes::new()).await
                {
                    break;
                }
                if Instant::now() > give_up {
                    return Err(format!("{url} not ready after {timeout_secs} s").into());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
            println!("ready_ms={:.1}", now.saturating_sub(since_ns) as f64 / 1e6);
        }
        Mode::Hash {
            bcrypt_cost,
            memory_kib,
            iterations,
            parallelism,
            duration,
        } => {
            use argon2::{Algorithm, Argon2, Params, PasswordHasher};
            let password = "load testing is a long sentence too";
            let mut hash_once: Box<dyn FnMut() -> Result<(), Error>> = match bcrypt_cost {
                Some(cost) => {
                    let hash = bcrypt::hash(password, cost)?;
                    Box::new(move || {
                        if bcrypt::verify(password, &hash)? {
                            Ok(())
                        } else {
                            Err("bcrypt: the password does not match its own hash".into())
                        }
                    })
                }
                None => {
                    let params = Params::new(memory_kib, iterations, parallelism, None)
                        .map_err(|e| format!("argon2 parameters: {e}"))?;
                    let hasher = Argon2::new(Algorithm::Argon2id, argon2::Version::V0x13, params);
                    Box::new(move || {
                        hasher
                            .hash_password(password.as_bytes())
                            .map(|_| ())
                            .map_err(|e| format!("argon2: {e}").into())
                    })
                }
            };
            let start = Instant::now();
            let mut hashes = 0u64;
            while start.elapsed().as_secs_f64() < duration {
                hash_once()?;
                hashes += 1;
            }
            println!(
                "mode=hash rate={:.2} hashes={hashes}",
                hashes as f64 / start.elapsed().as_secs_f64()
            );
        }
        Mode::BcryptAccounts {
            cost,
            count,
            password,
            csv,
            bodies,
        } => {
            // One hash for all: the same salt is harmless here and saves
            // hashing N times at the cost under test.
            let hash = bcrypt::hash(&password, cost)?;
            let mut table = String::from("email,password_hash,roles\n");
            let mut lines = String::new();
            for n in 0..count {
                let email = format!("imported{n}@example.com");
                writeln!(table, "{email},{hash},user")?;
                writeln!(
                    lines,
                    "{}",
                    serde_json::json!({ "email": email, "password": password })
                )?;
            }
            std::fs::write(&csv, table)?;
            std::fs::write(&bodies, lines)?;
        }
        Mode::RawVerify { alg, duration } => {
            let rate = raw_verify_rate(&alg, duration)?;
            println!("mode=raw-verify alg={alg} rate={rate:.1}");
        }
        Mode::Chart {
            input,
            output,
            title,
            unit,
        } => {
            let text = std::fs::read_to_string(&input)?;
            std::fs::write(&output, chart(&text, &title, &unit)?)?;
        }
    }
    Ok(())
}

/// Signature checks per second of `alg` on this thread, with a key parsed
/// once (as tokengate keeps its keys).
fn raw_verify_rate(alg: &str, seconds: f64) -> Result<f64, Error> {
    use aws_lc_rs::signature::{self, KeyPair, ParsedPublicKey};
    use aws_lc_rs::{hmac, rand::SystemRandom};
    let message = [b'a'; 400];
    let rng = SystemRandom::new();
    let check: Box<dyn Fn() -> bool> = match alg {
        "HS256" => {
            let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).map_err(|_| "hmac key")?;
            let tag = hmac::sign(&key, &message);
            Box::new(move || hmac::verify(&key, &message, tag.as_ref()).is_ok())
        }
        "ES256" => {
            let pair =
                signature::EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| "P-256 key")?;
            let sig = pair.sign(&rng, &message).map_err(|_| "sign")?;
            let public = ParsedPublicKey::new(
                &signature::ECDSA_P256_SHA256_FIXED,
                pair.public_key().as_ref(),
            )
            .map_err(|_| "public key")?;
            let sig = sig.as_ref().to_vec();
            Box::new(move || public.verify_sig(&message, &sig).is_ok())
        }
        "EdDSA" => {
            let pair = signature::Ed25519KeyPair::generate().map_err(|_| "Ed25519 key")?;
            let sig = pair.sign(&message).as_ref().to_vec();
            let public = ParsedPublicKey::new(&signature::ED25519, pair.public_key().as_ref())
                .map_err(|_| "public key")?;
            Box::new(move || public.verify_sig(&message, &sig).is_ok())
        }
        "RS256" => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| "RSA key")?;
            let mut sig = vec![0u8; pair.public_modulus_len()];
            pair.sign(&signature::RSA_PKCS1_SHA256, &rng, &message, &mut sig)
                .map_err(|_| "sign")?;
            let public = ParsedPublicKey::new(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                pair.public_key().as_ref(),
            )
            .map_err(|_| "public key")?;
            Box::new(move || public.verify_sig(&message, &sig).is_ok())
        }
        other => return Err(format!("no raw check for {other}").into()),
    };
    let start = Instant::now();
    let mut checks = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..64 {
            if !check() {
                return Err("a signature did not verify".into());
            }
        }
        checks += 64;
    }
    Ok(checks as f64 / start.elapsed().as_secs_f64())
}

/// Where requests go.
struct Target {
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, Error> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("only http:// URLs: {url}"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        Ok(Target {
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// What each connection sends.
enum Job {
    /// The same request every time.
    Fixed {
        method: Method,
        body: Bytes,
        headers: Vec<(String, String)>,
    },
    /// A POST of `{"<field>": token}`, the token taken from the last answer.
    Chain { field: String },
    /// A POST of each body once, in order, shared by all workers.
    EachOnce {
        bodies: Vec<Bytes>,
        next: AtomicUsize,
        headers: Vec<(String, String)>,
    },
}

async fn connect(authority: &str) -> Result<SendRequest<Full<Bytes>>, Error> {
    let stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _closed = connection.await;
    });
    Ok(sender)
}

async fn send(
    conn: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    method: Method,
    headers: &[(String, String)],
    body: Bytes,
) -> Result<(StatusCode, Bytes), Error> {
    send_keeping(conn, target, method, headers, body)
        .await
        .map(|(status, body, _)| (status, body))
}

/// [`send`], also saying whether the server keeps the connection open (a
/// server without keep-alive, like gunicorn's sync workers, answers
/// `connection: close`: the next request goes on a new connection rather
/// than failing on the closed one).
async fn send_keeping(
    conn: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    method: Method,
    headers: &[(String, String)],
    body: Bytes,
) -> Result<(StatusCode, Bytes, bool), Error> {
    let mut request = Request::builder()
        .method(method)
        .uri(target.path.as_str())
        .header("host", target.authority.as_str());
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    conn.ready().await?;
    let response = conn.send_request(request.body(Full::new(body))?).await?;
    let status = response.status();
    let keep_alive = !response
        .headers()
        .get("connection")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body, keep_alive))
}

/// A string member of a JSON object answer.
fn member(body: &[u8], field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get(field)?.as_str().map(str::to_owned)
}

#[derive(Default)]
struct Stats {
    /// Microseconds, for the answers that completed after the warm-up.
    latencies: Vec<u32>,
    errors: u64,
    broken_chains: u64,
}

/// Runs one worker per seed (a chain's first token, or `None`), all for the
/// warm-up plus the measured duration, and sums up.
async fn drive(target: &Target, job: Job, load: Load, seeds: Vec<Option<String>>) -> Report {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(load.warmup);
    let end = measure_from + Duration::from_secs_f64(load.duration);
    let shared = Arc::new((
        Target {
            authority: target.authority.clone(),
            path: target.path.clone(),
        },
        job,
    ));
    let workers: Vec<_> = seeds
        .into_iter()
        .map(|seed| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let (target, job) = &*shared;
                worker(target, job, seed, measure_from, end).await
            })
        })
        .collect();
    let mut total = Stats::default();
    for handle in workers {
        match handle.await {
            Ok(stats) => {
                total.latencies.extend(stats.latencies);
                total.errors += stats.errors;
                total.broken_chains += stats.broken_chains;
            }
            Err(_) => total.errors += 1,
        }
    }
    Report::new(total, load.duration)
}

async fn worker(
    target: &Target,
    job: &Job,
    mut token: Option<String>,
    measure_from: Instant,
    end: Instant,
) -> Stats {
    let mut stats = Stats::default();
    let mut conn = None;
    while Instant::now() < end {
        let sender = match conn.as_mut() {
            Some(sender) => sender,
            None => match connect(&target.authority).await {
                Ok(sender) => conn.insert(sender),
                Err(_) => {
                    stats.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let sent = Instant::now();
        let result = match job {
            Job::Fixed {
                method,
                body,
                headers,
            } => send_keeping(sender, target, method.clone(), headers, body.clone()).await,
            Job::Chain { field } => {
                let Some(current) = token.as_deref() else {
                    break;
                };
                let body = serde_json::json!({ field.as_str(): current }).to_string();
                send_keeping(
                    sender,
                    target,
                    Method::POST,
                    &[("content-type".into(), "application/json".into())],
                    Bytes::from(body),
                )
                .await
            }
            Job::EachOnce {
                bodies,
                next,
                headers,
            } => {
                let Some(body) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    stats.errors += 1;
                    break;
                };
                send_keeping(sender, target, Method::POST, headers, body.clone()).await
            }
        };
        let done = Instant::now();
        if matches!(result, Ok((_, _, false))) {
            conn = None;
        }
        let ok = match result {
            Ok((StatusCode::OK, body, _)) => {
                if let Job::Chain { field } = job {
                    token = member(&body, field);
                    if token.is_none() {
                        stats.broken_chains += 1;
                    }
                }
                true
            }
            Ok((_, _, _)) => {
                if matches!(job, Job::Chain { .. }) {
                    // A refused rotation ends the chain: its token is spent.
                    token = None;
                    stats.broken_chains += 1;
                }
                false
            }
            Err(_) => {
                conn = None;
                false
            }
        };
        if done >= measure_from && done < end {
            if ok {
                let micros = done.duration_since(sent).as_micros();
                stats
                    .latencies
                    .push(u32::try_from(micros).unwrap_or(u32::MAX));
            } else {
                stats.errors += 1;
            }
        }
    }
    stats
}

struct Report {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    ok: usize,
    errors: u64,
    broken_chains: u64,
}

impl Report {
    fn new(mut stats: Stats, seconds: f64) -> Report {
        stats.latencies.sort_unstable();
        let at = |q: f64| -> f64 {
            let n = stats.latencies.len();
            if n == 0 {
                return 0.0;
            }
            let index = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            stats.latencies.get(index).copied().unwrap_or(0) as f64 / 1e3
        };
        Report {
            rate: stats.latencies.len() as f64 / seconds,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
            ok: stats.latencies.len(),
            errors: stats.errors,
            broken_chains: stats.broken_chains,
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rate={:.1} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} ok={} errors={} broken_chains={}",
            self.rate,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.ok,
            self.errors,
            self.broken_chains
        )
    }
}

/// A horizontal bar chart, one section per group, each bar labelled with
/// its value. Bars of a group share the scale of that group (the groups
/// measure different things: req/s of a route, logins/s, MiB).
fn chart(tsv: &str, title: &str, unit: &str) -> Result<String, Error> {
    let mut groups: Vec<(String, Vec<(String, f64)>)> = Vec::new();
    for line in tsv.lines().filter(|l| !l.trim().is_empty()) {
        let mut cells = line.split('\t');
        let (Some(group), Some(label), Some(value)) = (cells.next(), cells.next(), cells.next())
        else {
            return Err(format!("not group<TAB>label<TAB>value: {line}").into());
        };
        let value: f64 = value.trim().parse()?;
        match groups.last_mut() {
            Some((name, bars)) if name == group => bars.push((label.to_owned(), value)),
            _ => groups.push((group.to_owned(), vec![(label.to_owned(), value)])),
        }
    }
    const WIDTH: f64 = 900.0;
    const LABEL: f64 = 330.0;
    const BAR: f64 = 18.0;
    const GAP: f64 = 6.0;
    let bars: usize = groups.iter().map(|(_, b)| b.len()).sum();
    let height = 50.0 + groups.len() as f64 * 34.0 + bars as f64 * (BAR + GAP) + 10.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="24" font-size="16" font-weight="bold">{}</text>
"#,
        escape(title)
    );
    let mut y = 50.0;
    let palette = [
        "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
    ];
    for (g, (group, bars)) in groups.iter().enumerate() {
        let _ = writeln!(
            svg,
            r#"<text x="10" y="{:.0}" font-weight="bold">{} ({})</text>"#,
            y + 14.0,
            escape(group),
            escape(unit)
        );
        y += 24.0;
        let max = bars.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max);
        let scale = if max > 0.0 {
            (WIDTH - LABEL - 110.0) / max
        } else {
            0.0
        };
        let colour = palette.get(g % palette.len()).copied().unwrap_or("#4e79a7");
        for (label, value) in bars {
            let w = value * scale;
            let _ = writeln!(
                svg,
                r#"<text x="{:.0}" y="{:.0}" text-anchor="end">{}</text><rect x="{LABEL}" y="{y:.0}" width="{w:.1}" height="{BAR}" fill="{colour}"/><text x="{:.1}" y="{:.0}">{}</text>"#,
                LABEL - 6.0,
                y + 13.0,
                escape(label),
                LABEL + w + 4.0,
                y + 13.0,
                format_value(*value)
            );
            y += BAR + GAP;
        }
        y += 10.0;
    }
    svg.push_str("</svg>\n");
    Ok(svg)
}

fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
