//! The scenarios: what one request (or flow) is, the closed loop that keeps `conns` of them in
//! flight, the open loop at a fixed arrival rate, the overload burst, and the soak.
//!
//! Every client assertion a measurement uses is signed before it starts ([`Target::supply`]);
//! the timed loops only take the next pre-built body. A loop that runs out of them stops and
//! marks its measurement `starved` (the caller repeats it with more).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use serde_json::{Value, json};

use crate::common::Timing;
use crate::creds::{self, ClientKey, MtlsIdentity};
use crate::http::{Conn, Endpoint, Extra, Resp, enc};
use crate::server::{Instance, Server, machine_busy_seconds, own_cpu_seconds};

pub const REDIRECT_URI: &str = "https://client.example/cb";
const ASSERTION_TYPE: &str = "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer";
const SESSION_COOKIE: &str = "__Host-strongroom-session";
pub const USERNAME: &str = "bench-user";
pub const PASSWORD: &str = "bench password, not a secret";
/// The scope client_credentials asks for, and the code flow's.
const CC_SCOPE: &str = "accounts";
const FLOW_SCOPE: &str = "openid accounts";

/// What one unit of work is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// client_credentials, private_key_jwt, keep-alive, main listener.
    CcJwt,
    /// client_credentials, tls_client_auth, bound token, keep-alive, mTLS listener.
    CcMtls,
    /// PAR → /authorize (session + remembered consent) → token, private_key_jwt.
    CodeFlow,
    /// client_credentials, private_key_jwt, a new TLS connection per request.
    CcJwtNewConn,
}

impl Kind {
    /// Client assertions per unit.
    pub fn assertions(self) -> usize {
        match self {
            Kind::CcJwt | Kind::CcJwtNewConn => 1,
            Kind::CcMtls => 0,
            Kind::CodeFlow => 2,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Set-up: clients, user, login, the target of the scenarios

/// The clients of one instance (registered once, with the CLI).
#[derive(Debug, Clone)]
pub struct Clients {
    pub cc: String,
    pub mtls: String,
    pub code: String,
}

pub fn register(inst: &Instance, key: &ClientKey, mtls: &MtlsIdentity) -> Result<Clients, String> {
    let jwks = json!({"keys": [key.jwk()]});
    let cc = inst.create_client(
        "cc",
        &json!({
            "client_name": "bench client_credentials (private_key_jwt)",
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": jwks,
            "grant_types": ["client_credentials"],
            "scope": "accounts payments",
        }),
    )?;
    let mtls_id = inst.create_client(
        "mtls",
        &json!({
            "client_name": "bench client_credentials (tls_client_auth)",
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_san_dns": mtls.san_dns,
            "tls_client_certificate_bound_access_tokens": true,
            "grant_types": ["client_credentials"],
            "scope": "accounts payments",
        }),
    )?;
    let code = inst.create_client(
        "code",
        &json!({
            "client_name": "bench code flow (private_key_jwt, PAR, PKCE)",
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": jwks,
            "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "scope": "openid accounts",
            "require_pushed_authorization_requests": true,
        }),
    )?;
    inst.create_user(USERNAME, PASSWORD)?;
    Ok(Clients {
        cc,
        mtls: mtls_id,
        code,
    })
}

/// Everything a scenario needs from one running server.
#[derive(Debug)]
pub struct Target {
    pub main: Endpoint,
    pub mtls: Endpoint,
    pub issuer: String,
    pub clients: Clients,
    pub key: Arc<ClientKey>,
    /// `__Host-strongroom-session=…` of a signed-in user who consented once.
    pub session_cookie: String,
}

/// A small cookie jar for the one-time login.
#[derive(Debug, Default)]
struct Jar(Vec<(String, String)>);

impl Jar {
    fn take(&mut self, r: &Resp) {
        for set in r.headers.get_all("set-cookie") {
            let Ok(set) = set.to_str() else { continue };
            let Some((n, v)) = set.split(';').next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let (n, v) = (n.trim().to_owned(), v.trim().to_owned());
            self.0.retain(|(name, _)| *name != n);
            if !v.is_empty() && !set.to_ascii_lowercase().contains("max-age=0") {
                self.0.push((n, v));
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn csrf(html: &str) -> Option<String> {
    let i = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    let rest = html.get(i..)?;
    Some(rest.get(..rest.find('"')?)?.to_owned())
}

fn location_path(r: &Resp) -> Result<String, String> {
    r.header("location")
        .map(str::to_owned)
        .ok_or_else(|| format!("{} without Location: {}", r.status, r.body_text()))
}

/// The query parameters of a redirect to the client (code, state, iss or error).
fn redirect_params(location: &str) -> Result<BTreeMap<String, String>, String> {
    if !location.starts_with(REDIRECT_URI) {
        return Err(format!("redirect to {location}, not to the client"));
    }
    let url = url::Url::parse(location).map_err(|e| format!("{location}: {e}"))?;
    Ok(url.query_pairs().into_owned().collect())
}

impl Target {
    /// Signs the user in once and approves the consent page (the only time a password is
    /// checked and a consent shown), then walks one flow on the remembered consent and checks
    /// every token each scenario gets. Returns the target and what was issued.
    pub async fn prepare(
        server: &Server,
        clients: &Clients,
        key: Arc<ClientKey>,
        mtls: &MtlsIdentity,
    ) -> Result<(Target, Issued), String> {
        let main = Endpoint::new(server.main, None)?;
        let mtls_ep = Endpoint::new(server.mtls, Some((mtls.chain.clone(), mtls.key())))?;
        let mut target = Target {
            main,
            mtls: mtls_ep,
            issuer: server.issuer.clone(),
            clients: clients.clone(),
            key,
            session_cookie: String::new(),
        };
        let mut conn = target.main.connect().await?;
        let mut jar = Jar::default();
        // PAR, then /authorize without a session: the login page.
        let Supply::Flows(flows) = target.supply(Kind::CodeFlow, 2, 1)? else {
            return Err("no flow supply".into());
        };
        let [first, second] = <[FlowItem; 2]>::try_from(flows).map_err(|_| "two flows")?;
        let request_uri = par(&mut conn, &first).await?;
        let r = conn
            .send(
                Method::GET,
                &target.authorize_path(&request_uri),
                None,
                Extra::default(),
            )
            .await?;
        jar.take(&r);
        if r.status != 303 {
            return Err(format!(
                "/authorize answered {}: {}",
                r.status,
                r.body_text()
            ));
        }
        let mut next = location_path(&r)?;
        let mut code = None;
        for _ in 0..4 {
            if next.starts_with(REDIRECT_URI) {
                let p = redirect_params(&next)?;
                code = p.get("code").cloned();
                if code.is_none() {
                    return Err(format!("no code in {next}"));
                }
                break;
            }
            let cookie = jar.header();
            let page = conn
                .send(
                    Method::GET,
                    &next,
                    None,
                    Extra {
                        cookie: Some(&cookie),
                        ..Default::default()
                    },
                )
                .await?;
            jar.take(&page);
            if page.status != 200 {
                return Err(format!(
                    "{next} answered {}: {}",
                    page.status,
                    page.body_text()
                ));
            }
            let html = page.body_text();
            let token = csrf(&html).ok_or_else(|| format!("no csrf field on {next}"))?;
            let body = if next.ends_with("/login") {
                format!(
                    "csrf={}&username={}&password={}",
                    enc(&token),
                    enc(USERNAME),
                    enc(PASSWORD)
                )
            } else {
                format!("csrf={}&decision=approve", enc(&token))
            };
            let cookie = jar.header();
            let r = conn
                .send(
                    Method::POST,
                    &next,
                    Some(Bytes::from(body)),
                    Extra {
                        cookie: Some(&cookie),
                        origin: true,
                        ..Default::default()
                    },
                )
                .await?;
            jar.take(&r);
            if r.status != 303 {
                return Err(format!(
                    "POST {next} answered {}: {}",
                    r.status,
                    r.body_text()
                ));
            }
            next = location_path(&r)?;
        }
        let code = code.ok_or("the login and consent pages did not end at the client")?;
        let session = jar
            .get(SESSION_COOKIE)
            .ok_or("no login session cookie after signing in")?;
        target.session_cookie = format!("{SESSION_COOKIE}={session}");
        let r = conn
            .post("/token", format!("{}{}", first.token_prefix, enc(&code)))
            .await?;
        if r.status != 200 {
            return Err(format!(
                "code exchange after login: {} {}",
                r.status,
                r.body_text()
            ));
        }

        // The scenarios' own requests, once each, and what they issued.
        let mut issued = Issued::default();
        let steps = flow(&mut conn, &target, &second).await;
        let Outcome::Ok(_) = steps.0 else {
            return Err(format!(
                "a flow on the remembered consent failed: {:?}",
                steps.0
            ));
        };
        let body: Value = serde_json::from_slice(&steps.1.unwrap_or_default())
            .map_err(|e| format!("token response: {e}"))?;
        issued.id_token = header_of(&body["id_token"]);
        issued.flow_access_token = header_of(&body["access_token"]);

        let Supply::Bodies(bodies) = target.supply(Kind::CcJwt, 1, 1)? else {
            return Err("no supply".into());
        };
        let r = conn
            .post("/token", String::from_utf8_lossy(&bodies[0]).into_owned())
            .await?;
        let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
        if r.status != 200 {
            return Err(format!(
                "client_credentials: {} {}",
                r.status,
                r.body_text()
            ));
        }
        issued.access_token = header_of(&body["access_token"]);
        issued.kid = creds::jwt_parts(body["access_token"].as_str().unwrap_or(""))
            .and_then(|(h, _)| h["kid"].as_str().map(str::to_owned))
            .unwrap_or_default();

        let mut mconn = target.mtls.connect().await?;
        let r = mconn
            .post(
                "/token",
                format!(
                    "grant_type=client_credentials&scope={CC_SCOPE}&client_id={}",
                    enc(&clients.mtls)
                ),
            )
            .await?;
        if r.status != 200 {
            return Err(format!(
                "tls_client_auth client_credentials: {} {}",
                r.status,
                r.body_text()
            ));
        }
        let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
        let cnf = creds::jwt_parts(body["access_token"].as_str().unwrap_or(""))
            .and_then(|(_, c)| c["cnf"]["x5t#S256"].as_str().map(str::to_owned));
        if cnf.as_deref() != Some(mtls.thumbprint().as_str()) {
            return Err(format!(
                "the mTLS token is not bound to the certificate: cnf {cnf:?}"
            ));
        }
        issued.bound = true;
        issued.tls = target.main.handshake_seen().unwrap_or_default();
        Ok((target, issued))
    }

    fn authorize_path(&self, request_uri: &str) -> String {
        format!(
            "/authorize?client_id={}&request_uri={}",
            enc(&self.clients.code),
            enc(request_uri)
        )
    }

    fn auth(&self, assertion: &str) -> String {
        format!("client_assertion_type={ASSERTION_TYPE}&client_assertion={assertion}")
    }

    /// `n` units of work for `kind`, every assertion signed now on `threads` threads.
    pub fn supply(&self, kind: Kind, n: usize, threads: usize) -> Result<Supply, String> {
        match kind {
            Kind::CcMtls => Ok(Supply::Constant(Bytes::from(format!(
                "grant_type=client_credentials&scope={CC_SCOPE}&client_id={}",
                enc(&self.clients.mtls)
            )))),
            Kind::CcJwt | Kind::CcJwtNewConn => {
                let a = self
                    .key
                    .assertions(&self.clients.cc, &self.issuer, n, threads)?;
                Ok(Supply::Bodies(
                    a.iter()
                        .map(|a| {
                            Bytes::from(format!(
                                "grant_type=client_credentials&scope={CC_SCOPE}&{}",
                                self.auth(a)
                            ))
                        })
                        .collect(),
                ))
            }
            Kind::CodeFlow => {
                let a = self
                    .key
                    .assertions(&self.clients.code, &self.issuer, 2 * n, threads)?;
                let tag = creds::b64(&(creds::now() * 1000 + n as u64).to_be_bytes());
                let flows = a
                    .chunks_exact(2)
                    .enumerate()
                    .map(|(i, pair)| {
                        let pkce = creds::pkce();
                        let state = format!("s{tag}{i}");
                        let par = format!(
                            "response_type=code&client_id={}&redirect_uri={}&scope={}\
                             &state={state}&nonce=n{i}&code_challenge={}\
                             &code_challenge_method=S256&{}",
                            enc(&self.clients.code),
                            enc(REDIRECT_URI),
                            enc(FLOW_SCOPE),
                            pkce.challenge,
                            self.auth(&pair[0])
                        );
                        let token_prefix = format!(
                            "grant_type=authorization_code&redirect_uri={}&code_verifier={}&{}&code=",
                            enc(REDIRECT_URI),
                            pkce.verifier,
                            self.auth(&pair[1])
                        );
                        FlowItem {
                            par: Bytes::from(par),
                            token_prefix,
                            state,
                        }
                    })
                    .collect();
                Ok(Supply::Flows(flows))
            }
        }
    }
}

fn header_of(token: &Value) -> String {
    match creds::jwt_parts(token.as_str().unwrap_or("")) {
        Some((h, _)) => format!(
            "{} {}",
            h["alg"].as_str().unwrap_or("?"),
            h["typ"].as_str().unwrap_or("")
        )
        .trim()
        .to_owned(),
        None => "none".into(),
    }
}

/// What the set-up flow saw the server issue.
#[derive(Debug, Default, Clone)]
pub struct Issued {
    /// alg and typ of the client_credentials access token.
    pub access_token: String,
    pub flow_access_token: String,
    pub id_token: String,
    /// kid of the access-token key (its CKA_ID in the token).
    pub kid: String,
    pub bound: bool,
    pub tls: String,
}

/// The pre-built work of one measurement.
#[derive(Debug)]
pub enum Supply {
    /// Complete /token bodies, one per request.
    Bodies(Vec<Bytes>),
    /// One PAR body and one token body prefix per flow.
    Flows(Vec<FlowItem>),
    /// The same body every time (tls_client_auth: nothing to sign).
    Constant(Bytes),
}

#[derive(Debug, Clone)]
pub struct FlowItem {
    par: Bytes,
    token_prefix: String,
    state: String,
}

// ---------------------------------------------------------------------------------------------
// One unit of work

#[derive(Debug)]
enum Outcome {
    /// Done; the flow's three steps in µs.
    Ok([u32; 3]),
    Fail {
        key: String,
        example: String,
        /// The connection is unusable.
        broken: bool,
    },
    Starved,
}

fn fail(key: impl Into<String>, example: impl Into<String>, broken: bool) -> Outcome {
    Outcome::Fail {
        key: key.into(),
        example: example.into(),
        broken,
    }
}

fn has(body: &[u8], needle: &[u8]) -> bool {
    body.windows(needle.len()).any(|w| w == needle)
}

fn us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

async fn token_request(conn: &mut Conn, body: Bytes, close: bool) -> Outcome {
    let extra = Extra {
        close,
        ..Default::default()
    };
    match conn.send(Method::POST, "/token", Some(body), extra).await {
        Err(e) => fail("token: transport error", e, true),
        Ok(r) if r.status == 200 && has(&r.body, b"\"access_token\"") => Outcome::Ok([0; 3]),
        Ok(r) => fail(format!("token {}", r.status), r.body_text(), false),
    }
}

async fn par(conn: &mut Conn, item: &FlowItem) -> Result<String, String> {
    let r = conn
        .send(
            Method::POST,
            "/par",
            Some(item.par.clone()),
            Extra::default(),
        )
        .await?;
    if r.status != 201 {
        return Err(format!("PAR {}: {}", r.status, r.body_text()));
    }
    let v: Value = serde_json::from_slice(&r.body).map_err(|e| format!("PAR: {e}"))?;
    v["request_uri"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("PAR without request_uri: {}", r.body_text()))
}

/// PAR → /authorize → token; returns the outcome and, when it worked, the token response.
async fn flow(conn: &mut Conn, target: &Target, item: &FlowItem) -> (Outcome, Option<Bytes>) {
    let t0 = Instant::now();
    let r = match conn
        .send(
            Method::POST,
            "/par",
            Some(item.par.clone()),
            Extra::default(),
        )
        .await
    {
        Err(e) => return (fail("par: transport error", e, true), None),
        Ok(r) => r,
    };
    if r.status != 201 {
        return (
            fail(format!("par {}", r.status), r.body_text(), false),
            None,
        );
    }
    let request_uri = match serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v["request_uri"].as_str().map(str::to_owned))
    {
        Some(u) => u,
        None => return (fail("par: no request_uri", r.body_text(), false), None),
    };
    let t1 = Instant::now();
    let extra = Extra {
        cookie: Some(&target.session_cookie),
        ..Default::default()
    };
    let r = match conn
        .send(
            Method::GET,
            &target.authorize_path(&request_uri),
            None,
            extra,
        )
        .await
    {
        Err(e) => return (fail("authorize: transport error", e, true), None),
        Ok(r) => r,
    };
    if r.status != 303 {
        return (
            fail(format!("authorize {}", r.status), r.body_text(), false),
            None,
        );
    }
    let params = match r.header("location").map(redirect_params) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            return (
                fail("authorize: not a redirect to the client", e, false),
                None,
            );
        }
        None => return (fail("authorize: 303 without Location", "", false), None),
    };
    if params.get("state") != Some(&item.state) {
        return (
            fail("authorize: wrong state", format!("{params:?}"), false),
            None,
        );
    }
    let Some(code) = params.get("code") else {
        return (
            fail("authorize: no code", format!("{params:?}"), false),
            None,
        );
    };
    let t2 = Instant::now();
    let body = format!("{}{}", item.token_prefix, enc(code));
    let r = match conn.post("/token", body).await {
        Err(e) => return (fail("token: transport error", e, true), None),
        Ok(r) => r,
    };
    if r.status != 200 || !has(&r.body, b"\"access_token\"") || !has(&r.body, b"\"id_token\"") {
        return (
            fail(format!("token {}", r.status), r.body_text(), false),
            None,
        );
    }
    let t3 = Instant::now();
    (
        Outcome::Ok([us(t1 - t0), us(t2 - t1), us(t3 - t2)]),
        Some(r.body),
    )
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// One measurement's figures.
#[derive(Debug, Default, Clone)]
pub struct Sample {
    /// Units (tokens or flows) completed inside the window.
    pub ok: u64,
    pub rate: f64,
    /// Latencies of those, µs, sorted.
    pub lat_us: Vec<u32>,
    /// Every failure, by step and status (warm-up included).
    pub errors: BTreeMap<String, u64>,
    pub examples: BTreeMap<String, String>,
    /// Ran out of pre-signed assertions before the end: not a valid measurement.
    pub starved: bool,
    /// Mean µs of the flow's steps (PAR, authorize, token).
    pub steps_us: [f64; 3],
    /// CPU seconds in the window: server process, its worker processes, the generator.
    pub server_cpu: f64,
    pub worker_cpu: f64,
    pub gen_cpu: f64,
    /// CPU seconds every other process of the machine used in the window (other work on a
    /// shared machine: it skews the figures).
    pub other_cpu: f64,
    /// VmHWM (KiB) of the server and of its workers (summed) over this measurement.
    pub rss_server_kib: u64,
    pub rss_workers_kib: u64,
    pub workers: usize,
    /// The window as sampled (for `other_cpu` in cores).
    pub window_secs: f64,
}

impl Sample {
    pub fn pct_ms(&self, q: f64) -> f64 {
        pct(&self.lat_us, q)
    }

    pub fn max_ms(&self) -> f64 {
        self.lat_us.last().map_or(0.0, |&v| f64::from(v) / 1000.0)
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Cores other processes used, on average, in the window.
    pub fn other_cores(&self) -> f64 {
        if self.window_secs > 0.0 {
            self.other_cpu / self.window_secs
        } else {
            f64::NAN
        }
    }

    pub fn gen_cpu_ms_per_unit(&self) -> f64 {
        if self.ok == 0 {
            return f64::NAN;
        }
        self.gen_cpu * 1000.0 / self.ok as f64
    }

    fn absorb(&mut self, r: TaskResult) {
        self.ok += r.ok;
        self.lat_us.extend(r.lat);
        for (k, n) in r.errors {
            *self.errors.entry(k).or_default() += n;
        }
        for (k, e) in r.examples {
            self.examples.entry(k).or_insert(e);
        }
        self.starved |= r.starved;
        for i in 0..3 {
            self.steps_us[i] += r.steps[i];
        }
    }
}

/// The `q` quantile (0..1) of sorted µs values, in ms.
pub fn pct(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    f64::from(sorted_us[i]) / 1000.0
}

#[derive(Debug, Default)]
struct TaskResult {
    ok: u64,
    lat: Vec<u32>,
    errors: BTreeMap<String, u64>,
    examples: BTreeMap<String, String>,
    starved: bool,
    steps: [f64; 3],
}

impl TaskResult {
    fn failed(&mut self, key: String, example: String) {
        *self.errors.entry(key.clone()).or_default() += 1;
        self.examples.entry(key).or_insert_with(|| {
            let mut e = example;
            e.truncate(300);
            e
        });
    }
}

/// Connects `n` connections to `ep` (before anything is timed), at most 8 handshakes at a
/// time: each is a signature by the server's HSM key, and a burst of them would overflow a
/// small signing queue (the server then drops the handshake: TLS has no 503).
async fn connect_all(ep: &Endpoint, n: usize) -> Result<Vec<Conn>, String> {
    let limit = Arc::new(tokio::sync::Semaphore::new(8));
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let (ep, limit) = (ep.clone(), limit.clone());
        handles.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await.map_err(|e| e.to_string())?;
            let mut last = String::new();
            for _ in 0..3 {
                match ep.connect().await {
                    Ok(c) => return Ok(c),
                    Err(e) => last = e,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(last)
        }));
    }
    let mut conns = Vec::with_capacity(n);
    for h in handles {
        conns.push(h.await.map_err(|e| e.to_string())??);
    }
    Ok(conns)
}

/// Samples the server's and the generator's CPU at the window's start and end, and the peak
/// RSS at the end, into `sample`.
struct CpuWindow {
    c0: (f64, f64),
    g0: f64,
    m0: f64,
    at: Instant,
}

impl CpuWindow {
    fn start(server: &Server) -> Self {
        CpuWindow {
            c0: server.cpu(),
            g0: own_cpu_seconds(),
            m0: machine_busy_seconds(),
            at: Instant::now(),
        }
    }

    fn end(self, server: &Server, s: &mut Sample) {
        let c1 = server.cpu();
        s.server_cpu = c1.0 - self.c0.0;
        s.worker_cpu = c1.1 - self.c0.1;
        s.gen_cpu = own_cpu_seconds() - self.g0;
        let busy = machine_busy_seconds() - self.m0;
        s.other_cpu = (busy - s.server_cpu - s.worker_cpu - s.gen_cpu).max(0.0);
        s.window_secs = self.at.elapsed().as_secs_f64();
    }
}

fn finish_memory(server: &Server, s: &mut Sample) {
    let (srv, wrk) = server.memory_kib("VmHWM");
    s.rss_server_kib = srv;
    s.rss_workers_kib = wrk;
    s.workers = server.workers().len();
}

/// `conns` connections, each sending its next unit as soon as the last one is answered, for
/// `t.warm + t.window`; units completed inside the window count.
pub async fn closed_loop(
    target: Arc<Target>,
    kind: Kind,
    supply: Arc<Supply>,
    conns: usize,
    t: Timing,
    server: &Server,
) -> Sample {
    let mut sample = Sample::default();
    let ep = if kind == Kind::CcMtls {
        target.mtls.clone()
    } else {
        target.main.clone()
    };
    let mut pre: Vec<Option<Conn>> = Vec::with_capacity(conns);
    if kind == Kind::CcJwtNewConn {
        pre.resize_with(conns, || None);
    } else {
        match connect_all(&ep, conns).await {
            Ok(c) => pre.extend(c.into_iter().map(Some)),
            Err(e) => {
                sample.errors.insert(format!("connect: {e}"), 1);
                return sample;
            }
        }
    }
    server.reset_peak_rss();
    let start = Instant::now() + Duration::from_millis(50);
    let ws = start + t.warm;
    let end = ws + t.window;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(conns);
    for conn in pre {
        let (target, supply, next, ep) = (target.clone(), supply.clone(), next.clone(), ep.clone());
        tasks.push(tokio::spawn(async move {
            let mut res = TaskResult::default();
            let mut conn = conn;
            tokio::time::sleep_until(start.into()).await;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                if conn.is_none() {
                    match ep.connect().await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            res.failed("connect".into(), e);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else { continue };
                let outcome = match (&*supply, kind) {
                    (Supply::Constant(body), _) => token_request(c, body.clone(), false).await,
                    (Supply::Bodies(bodies), _) => {
                        match bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                            Some(b) => {
                                token_request(c, b.clone(), kind == Kind::CcJwtNewConn).await
                            }
                            None => Outcome::Starved,
                        }
                    }
                    (Supply::Flows(flows), _) => {
                        match flows.get(next.fetch_add(1, Ordering::Relaxed)) {
                            Some(f) => flow(c, &target, f).await.0,
                            None => Outcome::Starved,
                        }
                    }
                };
                let t1 = Instant::now();
                if kind == Kind::CcJwtNewConn {
                    conn = None;
                }
                match outcome {
                    Outcome::Ok(steps) => {
                        if t1 >= ws && t1 < end {
                            res.ok += 1;
                            res.lat.push(us(t1 - t0));
                            for (sum, step) in res.steps.iter_mut().zip(steps) {
                                *sum += f64::from(step);
                            }
                        }
                    }
                    Outcome::Fail {
                        key,
                        example,
                        broken,
                    } => {
                        res.failed(key, example);
                        if broken {
                            conn = None;
                        }
                    }
                    Outcome::Starved => {
                        res.starved = true;
                        break;
                    }
                }
            }
            res
        }));
    }
    tokio::time::sleep_until(ws.into()).await;
    let cpu = CpuWindow::start(server);
    tokio::time::sleep_until(end.into()).await;
    cpu.end(server, &mut sample);
    for task in tasks {
        match task.await {
            Ok(r) => sample.absorb(r),
            Err(e) => {
                sample
                    .errors
                    .insert(format!("generator task failed: {e}"), 1);
            }
        }
    }
    finish_memory(server, &mut sample);
    sample.lat_us.sort_unstable();
    sample.rate = sample.ok as f64 / t.window.as_secs_f64();
    if sample.ok > 0 {
        for s in &mut sample.steps_us {
            *s /= sample.ok as f64;
        }
    }
    sample
}

/// An open loop: units arrive at `rate` per second whatever the answers (over `conns`
/// keep-alive connections, unit `j` on connection `j % conns`); latency counts from the
/// scheduled arrival, so a late answer delays the next ones and shows.
pub async fn open_loop(
    target: Arc<Target>,
    bodies: Arc<Vec<Bytes>>,
    rate: f64,
    conns: usize,
    t: Timing,
    server: &Server,
) -> Sample {
    let mut sample = Sample::default();
    let pre = match connect_all(&target.main, conns).await {
        Ok(c) => c,
        Err(e) => {
            sample.errors.insert(format!("connect: {e}"), 1);
            return sample;
        }
    };
    server.reset_peak_rss();
    let start = Instant::now() + Duration::from_millis(50);
    let ws = start + t.warm;
    let end = ws + t.window;
    let interval = 1.0 / rate;
    let mut tasks = Vec::with_capacity(conns);
    for (i, conn) in pre.into_iter().enumerate() {
        let (bodies, ep) = (bodies.clone(), target.main.clone());
        tasks.push(tokio::spawn(async move {
            let mut res = TaskResult::default();
            let mut conn = Some(conn);
            let mut j = i;
            loop {
                let at = start + Duration::from_secs_f64(j as f64 * interval);
                if at >= end {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                let Some(body) = bodies.get(j) else {
                    res.starved = true;
                    break;
                };
                j += conns;
                if conn.is_none() {
                    match ep.connect().await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            res.failed("connect".into(), e);
                            continue;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else { continue };
                let outcome = token_request(c, body.clone(), false).await;
                let done = Instant::now();
                match outcome {
                    Outcome::Ok(_) => {
                        if at >= ws {
                            res.ok += 1;
                            res.lat.push(us(done - at));
                        }
                    }
                    Outcome::Fail {
                        key,
                        example,
                        broken,
                    } => {
                        res.failed(key, example);
                        if broken {
                            conn = None;
                        }
                    }
                    Outcome::Starved => {}
                }
            }
            res
        }));
    }
    tokio::time::sleep_until(ws.into()).await;
    let cpu = CpuWindow::start(server);
    tokio::time::sleep_until(end.into()).await;
    cpu.end(server, &mut sample);
    for task in tasks {
        match task.await {
            Ok(r) => sample.absorb(r),
            Err(e) => {
                sample
                    .errors
                    .insert(format!("generator task failed: {e}"), 1);
            }
        }
    }
    finish_memory(server, &mut sample);
    sample.lat_us.sort_unstable();
    sample.rate = sample.ok as f64 / t.window.as_secs_f64();
    sample
}

// ---------------------------------------------------------------------------------------------
// Overload

/// One answer during the overload run.
#[derive(Debug, Clone, Copy)]
struct Event {
    /// When it was sent, since the start.
    sent: Duration,
    /// When it was answered, since the start.
    done: Duration,
    /// 0: transport error.
    status: u16,
    retry_after: bool,
}

#[derive(Debug, Default)]
pub struct OverloadReport {
    pub burst_conns: usize,
    pub low_conns: usize,
    pub phase_secs: f64,
    pub queue_depth: usize,
    // the burst
    pub ok: u64,
    pub busy: u64,
    pub other: BTreeMap<String, u64>,
    pub busy_with_retry_after: u64,
    pub busy_ms: [f64; 3],
    pub ok_ms: [f64; 3],
    pub ok_rate: f64,
    pub busy_rate: f64,
    // after the drop
    pub low_ok_rate_first: f64,
    pub low_ok_rate_rest: f64,
    pub low_busy: u64,
    /// From the drop to the last 503 answered (to a request sent after the drop).
    pub last_busy_after_drop_ms: Option<f64>,
    /// From the drop to the first 200 answered to a request sent after it.
    pub first_ok_after_drop_ms: Option<f64>,
    /// From the drop to the end of the first 100 ms in which requests sent after the drop got
    /// at least 80% of the 200s per second of the second half of that phase.
    pub recovered_after_ms: Option<f64>,
    /// 200s per second in the second half of the phase after the drop.
    pub low_ok_rate_steady: f64,
    pub low_ms: [f64; 3],
    pub examples: BTreeMap<String, String>,
}

/// `burst` connections (tls_client_auth client_credentials: nothing to sign, so the offered
/// load is not bounded by a supply) for `phase`, then only `low` of them for another `phase`.
pub async fn overload(
    target: Arc<Target>,
    burst: usize,
    low: usize,
    phase: Duration,
    server: &Server,
) -> OverloadReport {
    let mut report = OverloadReport {
        burst_conns: burst,
        low_conns: low,
        phase_secs: phase.as_secs_f64(),
        queue_depth: server.options.queue_depth,
        ..Default::default()
    };
    let pre = match connect_all(&target.mtls, burst).await {
        Ok(c) => c,
        Err(e) => {
            report.other.insert(format!("connect: {e}"), 1);
            return report;
        }
    };
    let body = Bytes::from(format!(
        "grant_type=client_credentials&scope={CC_SCOPE}&client_id={}",
        enc(&target.clients.mtls)
    ));
    let start = Instant::now() + Duration::from_millis(50);
    let drop_at = start + phase;
    let end = drop_at + phase;
    let mut tasks = Vec::with_capacity(burst);
    for (i, conn) in pre.into_iter().enumerate() {
        let (body, ep) = (body.clone(), target.mtls.clone());
        let stop = if i < low { end } else { drop_at };
        tasks.push(tokio::spawn(async move {
            let mut events = Vec::new();
            let mut examples = BTreeMap::new();
            let mut conn = Some(conn);
            tokio::time::sleep_until(start.into()).await;
            loop {
                let t0 = Instant::now();
                if t0 >= stop {
                    break;
                }
                if conn.is_none() {
                    match ep.connect().await {
                        Ok(c) => conn = Some(c),
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else { continue };
                let r = c
                    .send(Method::POST, "/token", Some(body.clone()), Extra::default())
                    .await;
                let t1 = Instant::now();
                let (status, retry_after) = match &r {
                    Ok(r) => {
                        if r.status != 200 && r.status != 503 {
                            examples.entry(r.status).or_insert_with(|| r.body_text());
                        }
                        (r.status, r.header("retry-after").is_some())
                    }
                    Err(_) => {
                        conn = None;
                        (0, false)
                    }
                };
                events.push(Event {
                    sent: t0 - start,
                    done: t1 - start,
                    status,
                    retry_after,
                });
            }
            (events, examples)
        }));
    }
    let mut events = Vec::new();
    for task in tasks {
        if let Ok((e, ex)) = task.await {
            events.extend(e);
            for (k, v) in ex {
                report.examples.entry(format!("token {k}")).or_insert(v);
            }
        }
    }
    let phase_d = phase;
    let lat = |e: &Event| us(e.done - e.sent);
    let quantiles = |mut v: Vec<u32>| {
        v.sort_unstable();
        [
            pct(&v, 0.5),
            pct(&v, 0.99),
            v.last().map_or(f64::NAN, |&m| f64::from(m) / 1000.0),
        ]
    };
    let (burst_ev, low_ev): (Vec<Event>, Vec<Event>) =
        events.into_iter().partition(|e| e.sent < phase_d);
    for e in &burst_ev {
        match e.status {
            200 => report.ok += 1,
            503 => {
                report.busy += 1;
                report.busy_with_retry_after += u64::from(e.retry_after);
            }
            0 => *report.other.entry("transport error".into()).or_default() += 1,
            s => *report.other.entry(format!("token {s}")).or_default() += 1,
        }
    }
    report.ok_rate = report.ok as f64 / phase.as_secs_f64();
    report.busy_rate = report.busy as f64 / phase.as_secs_f64();
    report.busy_ms = quantiles(
        burst_ev
            .iter()
            .filter(|e| e.status == 503)
            .map(lat)
            .collect(),
    );
    report.ok_ms = quantiles(
        burst_ev
            .iter()
            .filter(|e| e.status == 200)
            .map(lat)
            .collect(),
    );
    // After the drop: the first half second against the rest.
    let first = Duration::from_millis(500).min(phase / 2);
    let mut ok_first = 0u64;
    let mut ok_rest = 0u64;
    for e in &low_ev {
        match e.status {
            200 if e.done < phase_d + first => ok_first += 1,
            200 => ok_rest += 1,
            503 => {
                report.low_busy += 1;
                let after = (e.done.saturating_sub(phase_d)).as_secs_f64() * 1000.0;
                report.last_busy_after_drop_ms = Some(
                    report
                        .last_busy_after_drop_ms
                        .map_or(after, |m: f64| m.max(after)),
                );
            }
            0 => {
                *report
                    .other
                    .entry("transport error (after the drop)".into())
                    .or_default() += 1
            }
            s => {
                *report
                    .other
                    .entry(format!("token {s} (after the drop)"))
                    .or_default() += 1
            }
        }
    }
    report.low_ok_rate_first = ok_first as f64 / first.as_secs_f64();
    // Recovery: 100 ms buckets of 200s (to requests sent after the drop), by answer time.
    let bucket = Duration::from_millis(100);
    let n_buckets = (phase.as_millis() / bucket.as_millis()).max(1) as usize;
    let mut buckets = vec![0u64; n_buckets];
    for e in low_ev.iter().filter(|e| e.status == 200) {
        let since = e.done.saturating_sub(phase_d);
        let b = (since.as_millis() / bucket.as_millis()) as usize;
        if let Some(slot) = buckets.get_mut(b) {
            *slot += 1;
        }
        let ms = since.as_secs_f64() * 1000.0;
        report.first_ok_after_drop_ms =
            Some(report.first_ok_after_drop_ms.map_or(ms, |m: f64| m.min(ms)));
    }
    let second_half = &buckets[n_buckets / 2..];
    report.low_ok_rate_steady =
        second_half.iter().sum::<u64>() as f64 / (second_half.len() as f64 * bucket.as_secs_f64());
    let per_bucket = report.low_ok_rate_steady * bucket.as_secs_f64();
    report.recovered_after_ms = buckets
        .iter()
        .position(|&n| n as f64 >= 0.8 * per_bucket && n > 0)
        .map(|i| ((i + 1) as u128 * bucket.as_millis()) as f64);
    report.low_ok_rate_rest = ok_rest as f64 / (phase - first).as_secs_f64().max(1e-3);
    report.low_ms = quantiles(low_ev.iter().filter(|e| e.status == 200).map(lat).collect());
    report
}

// ---------------------------------------------------------------------------------------------
// Soak

/// What the soak saw at one report.
#[derive(Debug, Clone)]
pub struct SoakPoint {
    pub at_secs: f64,
    pub rate: f64,
    pub rss_server_kib: u64,
    pub hwm_server_kib: u64,
    pub rss_workers_kib: u64,
}

/// Scenario 1 for `total`, reporting every `every`. Assertions are signed as the run goes, by
/// one producer thread (a soak measures memory, not the rate; the rate it prints is bounded by
/// that thread too).
pub async fn soak(
    target: Arc<Target>,
    conns: usize,
    total: Duration,
    every: Duration,
    server: &Server,
    mut on_point: impl FnMut(&SoakPoint),
) -> (
    Vec<SoakPoint>,
    BTreeMap<String, u64>,
    BTreeMap<String, String>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16_384);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (target, stop) = (target.clone(), stop.clone());
        std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::Relaxed) {
                let Supply::Bodies(bodies) = target.supply(Kind::CcJwt, 256, 1)? else {
                    return Err("no supply".into());
                };
                for b in bodies {
                    if tx.blocking_send(b).is_err() {
                        return Ok(());
                    }
                }
            }
            Ok(())
        })
    };
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(std::sync::Mutex::new((BTreeMap::new(), BTreeMap::new())));
    let start = Instant::now();
    let end = start + total;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (rx, ok, errors, ep) = (rx.clone(), ok.clone(), errors.clone(), target.main.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn: Option<Conn> = None;
            while Instant::now() < end {
                let body = {
                    let mut rx = rx.lock().await;
                    tokio::select! {
                        b = rx.recv() => b,
                        _ = tokio::time::sleep_until(end.into()) => None,
                    }
                };
                let Some(body) = body else { break };
                if conn.is_none() {
                    match ep.connect().await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            if let Ok(mut m) = errors.lock() {
                                *m.0.entry("connect".to_owned()).or_insert(0u64) += 1;
                                m.1.entry("connect".to_owned()).or_insert(e);
                            }
                            continue;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else { continue };
                match token_request(c, body, false).await {
                    Outcome::Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::Fail {
                        key,
                        example,
                        broken,
                    } => {
                        if let Ok(mut m) = errors.lock() {
                            *m.0.entry(key.clone()).or_insert(0u64) += 1;
                            m.1.entry(key).or_insert(example);
                        }
                        if broken {
                            conn = None;
                        }
                    }
                    Outcome::Starved => break,
                }
            }
        }));
    }
    let mut points = Vec::new();
    let mut last_ok = 0u64;
    let mut last_t = start;
    let mut at = start;
    while at < end {
        at = (at + every).min(end);
        tokio::time::sleep_until(at.into()).await;
        let now_ok = ok.load(Ordering::Relaxed);
        let now = Instant::now();
        let (rss_server, rss_workers) = server.memory_kib("VmRSS");
        let point = SoakPoint {
            at_secs: (now - start).as_secs_f64(),
            rate: (now_ok - last_ok) as f64 / (now - last_t).as_secs_f64().max(1e-3),
            rss_server_kib: rss_server,
            hwm_server_kib: server.memory_kib("VmHWM").0,
            rss_workers_kib: rss_workers,
        };
        on_point(&point);
        points.push(point);
        last_ok = now_ok;
        last_t = now;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    drop(rx);
    let produced = producer.join();
    let (mut errs, examples) = errors.lock().map(|m| m.clone()).unwrap_or_default();
    match produced {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            errs.insert(format!("assertion producer: {e}"), 1);
        }
        Err(_) => {
            errs.insert("assertion producer panicked".into(), 1);
        }
    }
    (points, errs, examples)
}
