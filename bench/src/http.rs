//! HTTP/1.1 request load: `http-get` and `http-put`, against jsonkv's HTTP API
//! (`GET`/`PUT /v1/kv/{key}`) or etcd's JSON gateway (`POST /v3/kv/range`, `/v3/kv/put`, keys
//! and values in base64), in the closed loop of the gRPC workloads; and [`Conn`], the HTTP/1.1
//! connection they and the watch fan-out over HTTP (`http_watch`) use.
//!
//! HTTP/1.1 carries one request at a time on a connection, so each request in flight has a
//! connection of its own: --concurrency 64 is 64 connections, where gRPC multiplexes the 64
//! on one HTTP/2 connection.
//!
//! The client is hyper's HTTP/1.1 connection (`hyper::client::conn::http1`), held by its
//! worker, rather than reqwest (or hyper-util's pooled client under it). On this 2-core box
//! the client's CPU is taken from the server's: a worker that owns its connection needs no
//! pool to check a connection out of and back in, no URL to parse and no per-request timeout
//! or redirect machinery. It cost less client CPU per request and so loaded the server harder
//! (the figures are in BENCHMARKS.md's Method section).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::prelude::{Engine as _, BASE64_STANDARD};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::load::{self, Calls, Plan, Rng};
use crate::progress::{Progress, Unit};
use crate::report::Report;
use crate::target::CallError;
use crate::{RunArgs, TargetKind, Workload};

/// Where HTTP requests go: `host:port` of an `http://HOST:PORT` address.
#[derive(Clone)]
pub struct Addr {
    authority: String,
    host: HeaderValue,
}

impl Addr {
    pub fn parse(addr: &str) -> Result<Addr, String> {
        let uri: http::Uri = addr
            .parse()
            .map_err(|err| format!("bad address {addr}: {err}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "bad address {addr}: HTTP load is over http:// only"
            ));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("bad address {addr}: no host"))?
            .as_str()
            .to_owned();
        let host = HeaderValue::try_from(authority.as_str())
            .map_err(|err| format!("bad address {addr}: {err}"))?;
        Ok(Addr { authority, host })
    }
}

/// One HTTP/1.1 connection: one request at a time, each answered before the next is sent.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

impl Conn {
    /// Connects, retrying for up to `patience` (the server may be starting).
    pub async fn open(addr: &Addr, patience: Duration) -> Result<Conn, String> {
        let deadline = Instant::now() + patience;
        let stream = loop {
            match TcpStream::connect(addr.authority.as_str()).await {
                Ok(stream) => break stream,
                Err(err) if Instant::now() >= deadline => {
                    return Err(format!("cannot connect to {}: {err}", addr.authority))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        // As the gRPC connections do (and the server): Nagle would hold small requests back.
        stream
            .set_nodelay(true)
            .map_err(|err| format!("TCP_NODELAY: {err}"))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| format!("HTTP/1.1 handshake with {}: {err}", addr.authority))?;
        // The connection's own task; it ends when the sender is dropped or the server closes.
        tokio::spawn(connection);
        Ok(Conn {
            sender,
            host: addr.host.clone(),
        })
    }

    /// Sends a request for `path` (with the query) and waits for the answer's head; the body
    /// is the caller's to read (or drop, closing the connection).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Response<Incoming>, CallError> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone());
        if let Some(body) = &body {
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .header(CONTENT_LENGTH, body.len());
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|err| format!("bad request {path}: {err}"))?;
        self.sender
            .ready()
            .await
            .map_err(|err| format!("connection closed: {err}"))?;
        self.sender
            .send_request(request)
            .await
            .map_err(|err| format!("{path}: {err}"))
    }

    /// Sends a request and reads the whole answer; an error unless it is 200 OK.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes, CallError> {
        let response = self.send(method, path, body).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| format!("{path}: reading the body: {err}"))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(format!(
                "{path}: {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ));
        }
        Ok(body)
    }
}

/// Which HTTP API the requests speak.
#[derive(Clone, Copy)]
enum Api {
    /// jsonkv: `GET`/`PUT /v1/kv/{key}`, the document as the body.
    Jsonkv,
    /// etcd's gateway: `POST /v3/kv/range` and `/v3/kv/put`, JSON bodies in base64.
    EtcdGateway,
}

/// Every request of a run, made once beforehand: what a worker sends for key `i` is a clone
/// of a reference-counted buffer, so building requests costs the client next to nothing.
struct Requests {
    api: Api,
    plan: Arc<Plan>,
    /// jsonkv: `/v1/kv/{key}` for each key.
    paths: Vec<String>,
    /// jsonkv: the document every PUT writes.
    value: Bytes,
    /// etcd: the body of each key's range and put.
    ranges: Vec<Bytes>,
    puts: Vec<Bytes>,
}

const ETCD_RANGE: &str = "/v3/kv/range";
const ETCD_PUT: &str = "/v3/kv/put";

impl Requests {
    fn new(api: Api, plan: &Arc<Plan>) -> Requests {
        let b64 = |text: &str| BASE64_STANDARD.encode(text);
        let mut requests = Requests {
            api,
            plan: Arc::clone(plan),
            paths: Vec::new(),
            value: Bytes::from(plan.value.clone()),
            ranges: Vec::new(),
            puts: Vec::new(),
        };
        match api {
            Api::Jsonkv => {
                // The keys are `{prefix}k{digits}`: nothing in them needs percent-encoding.
                requests.paths = plan.keys.iter().map(|k| format!("/v1/kv/{k}")).collect();
            }
            Api::EtcdGateway => {
                let value = b64(&plan.value);
                for key in &plan.keys {
                    let key = b64(key);
                    requests
                        .ranges
                        .push(Bytes::from(format!("{{\"key\":\"{key}\"}}")));
                    requests.puts.push(Bytes::from(format!(
                        "{{\"key\":\"{key}\",\"value\":\"{value}\"}}"
                    )));
                }
            }
        }
        requests
    }

    /// Reads key `i`; an error unless it is there.
    async fn get(&self, conn: &mut Conn, i: usize) -> Result<(), CallError> {
        match self.api {
            Api::Jsonkv => {
                let body = conn.call(Method::GET, &self.paths[i], None).await?;
                if body.len() != self.value.len() {
                    return Err(format!(
                        "{}: {} bytes, not the value",
                        self.paths[i],
                        body.len()
                    ));
                }
            }
            Api::EtcdGateway => {
                let body = conn
                    .call(Method::POST, ETCD_RANGE, Some(self.ranges[i].clone()))
                    .await?;
                // The gateway leaves out empty fields: no `kvs` when the key is not there.
                if memchr::memmem::find(&body, b"\"kvs\"").is_none() {
                    return Err(format!(
                        "{ETCD_RANGE}: key not found: {}",
                        self.plan.keys[i]
                    ));
                }
            }
        }
        Ok(())
    }

    /// Writes key `i`.
    async fn put(&self, conn: &mut Conn, i: usize) -> Result<(), CallError> {
        match self.api {
            Api::Jsonkv => {
                conn.call(Method::PUT, &self.paths[i], Some(self.value.clone()))
                    .await?;
            }
            Api::EtcdGateway => {
                conn.call(Method::POST, ETCD_PUT, Some(self.puts[i].clone()))
                    .await?;
            }
        }
        Ok(())
    }
}

pub async fn run(args: &RunArgs) -> Result<Report, String> {
    let addr = Addr::parse(&args.addr)?;
    let api = match args.target {
        TargetKind::Jsonkv => Api::Jsonkv,
        TargetKind::Etcd => Api::EtcdGateway,
        TargetKind::Echo => return Err("the HTTP workloads run against jsonkv or etcd".into()),
    };
    let plan = Arc::new(Plan::new(args, &format!("{}k", args.key_prefix)));
    let requests = Arc::new(Requests::new(api, &plan));
    let progress = Progress::new(args.quiet);
    let mut conns = Vec::with_capacity(plan.concurrency);
    progress.stage("connecting", plan.concurrency as u64, Unit::Items);
    for i in 0..plan.concurrency {
        let patience = if i == 0 {
            args.connect_timeout()
        } else {
            Duration::ZERO
        };
        conns.push(Conn::open(&addr, patience).await?);
        progress.set(i as u64 + 1, String::new());
    }
    if args.workload == Workload::HttpGet {
        conns = prefill(conns, &requests, &progress).await?;
    }
    let reads = args.workload == Workload::HttpGet;

    let workers = conns
        .into_iter()
        .map(|conn| HttpCalls {
            conn,
            reads,
            keys: plan.keys.len(),
            requests: Arc::clone(&requests),
        })
        .collect();
    let measured = load::closed_loop_of(workers, &plan, &progress).await;
    progress.finish();
    Ok(measured.into_report())
}

/// Writes every key once over the run's connections, so that gets find them.
async fn prefill(
    conns: Vec<Conn>,
    requests: &Arc<Requests>,
    progress: &Progress,
) -> Result<Vec<Conn>, String> {
    let keys = requests.plan.keys.len();
    let workers = conns.len();
    progress.stage("prefill", keys as u64, Unit::Items);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(worker, mut conn)| {
            let requests = Arc::clone(requests);
            tokio::spawn(async move {
                for i in (worker..keys).step_by(workers) {
                    requests.put(&mut conn, i).await?;
                }
                Ok::<_, CallError>(conn)
            })
        })
        .collect();
    let mut conns = Vec::with_capacity(workers);
    for task in tasks {
        let conn = task
            .await
            .expect("a prefill task panicked")
            .map_err(|err| format!("prefill failed: {err}"))?;
        conns.push(conn);
    }
    progress.set(keys as u64, String::new());
    Ok(conns)
}

/// An http-get or http-put worker: its own connection, a key picked at random each time.
struct HttpCalls {
    conn: Conn,
    reads: bool,
    keys: usize,
    requests: Arc<Requests>,
}

impl Calls for HttpCalls {
    async fn call(&mut self, rng: &mut Rng) -> Result<(), CallError> {
        let i = rng.below(self.keys);
        if self.reads {
            self.requests.get(&mut self.conn, i).await
        } else {
            self.requests.put(&mut self.conn, i).await
        }
    }
}
