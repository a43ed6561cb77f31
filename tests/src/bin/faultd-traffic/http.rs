//! HTTP/1.1 for the drill: a service that answers 200, or 500 while a file
//! exists (the test makes it fail), and a client that calls its upstreams
//! in a loop over keep-alive connections, exporting Prometheus counters of
//! its requests and reporting each request's latency.
//!
//! Plain blocking sockets: one thread per connection on the server, one
//! loop on the client. Each request is one write(2), so a delay on the
//! client's egress adds to each request exactly once.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use crate::{
    report::{emit, emit_ready},
    stop::stopped,
};

/// Reads one request's head (up to the blank line); false at EOF.
fn read_head(reader: &mut BufReader<TcpStream>) -> std::io::Result<bool> {
    let mut line = String::new();
    let mut first = true;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(!first);
        }
        first = false;
        if line == "\r\n" || line == "\n" {
            return Ok(true);
        }
    }
}

/// Serves `GET` on `bind` until stopped: 200 "ok", or 500 while `fail_file`
/// exists.
pub fn http_server(bind: SocketAddr, fail_file: &Path) -> Result<()> {
    let listener = TcpListener::bind(bind).with_context(|| format!("binding {bind}"))?;
    listener.set_nonblocking(true)?;
    emit_ready(listener.local_addr()?.port())?;
    let served = Arc::new(Mutex::new((0_u64, 0_u64)));
    while !stopped() {
        match listener.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false)?;
                let (fail_file, served) = (fail_file.to_owned(), Arc::clone(&served));
                std::thread::spawn(move || serve(conn, &fail_file, &served));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e).context("accept"),
        }
    }
    let (ok, failed) = *served.lock().unwrap_or_else(|p| p.into_inner());
    emit(json!({ "ok": ok, "failed": failed }))
}

fn serve(conn: TcpStream, fail_file: &Path, served: &Mutex<(u64, u64)>) {
    let _ = conn.set_nodelay(true);
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while let Ok(true) = read_head(&mut reader) {
        let fail = fail_file.exists();
        let (status, body) = if fail {
            ("500 Internal Server Error", "failing")
        } else {
            ("200 OK", "ok")
        };
        {
            let mut s = served.lock().unwrap_or_else(|p| p.into_inner());
            if fail {
                s.1 += 1;
            } else {
                s.0 += 1;
            }
        }
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// One upstream the client calls: a name for the metrics, and where.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
}

/// "NAME=IP:PORT".
pub fn parse_upstream(text: &str) -> Result<Upstream, String> {
    let (name, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=IP:PORT"))?;
    Ok(Upstream {
        name: name.to_owned(),
        addr: addr.parse().map_err(|e| format!("{addr:?}: {e}"))?,
    })
}

/// Counters the metrics endpoint serves: per (upstream, code) requests, and
/// per upstream the sum of request seconds.
#[derive(Default)]
struct Counters {
    requests: BTreeMap<(String, String), u64>,
    seconds: BTreeMap<String, f64>,
}

impl Counters {
    fn exposition(&self) -> String {
        let mut s = String::from(
            "# HELP checkout_requests_total Requests to each upstream, by HTTP status (\"error\": no answer).\n\
             # TYPE checkout_requests_total counter\n",
        );
        for ((upstream, code), n) in &self.requests {
            s.push_str(&format!(
                "checkout_requests_total{{upstream=\"{upstream}\",code=\"{code}\"}} {n}\n"
            ));
        }
        s.push_str(
            "# HELP checkout_request_duration_seconds Time from sending a request to its whole answer.\n\
             # TYPE checkout_request_duration_seconds summary\n",
        );
        for (upstream, sum) in &self.seconds {
            let count: u64 = self
                .requests
                .iter()
                .filter(|((u, _), _)| u == upstream)
                .map(|(_, n)| n)
                .sum();
            s.push_str(&format!(
                "checkout_request_duration_seconds_sum{{upstream=\"{upstream}\"}} {sum}\n\
                 checkout_request_duration_seconds_count{{upstream=\"{upstream}\"}} {count}\n"
            ));
        }
        s
    }
}

/// Serves the counters at `/metrics` (any path) until the process ends.
fn serve_metrics(listener: TcpListener, counters: Arc<Mutex<Counters>>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let counters = Arc::clone(&counters);
        std::thread::spawn(move || {
            let Ok(mut writer) = conn.try_clone() else {
                return;
            };
            let mut reader = BufReader::new(conn);
            if !matches!(read_head(&mut reader), Ok(true)) {
                return;
            }
            let body = counters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .exposition();
            let _ = write!(
                writer,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: \
                 {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
    }
}

/// A keep-alive connection to one upstream, made again after an error.
struct Conn {
    upstream: Upstream,
    stream: Option<(TcpStream, BufReader<TcpStream>)>,
}

impl Conn {
    /// One `GET /`: the status code.
    fn get(&mut self) -> Result<u16> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.upstream.addr, Duration::from_secs(5))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let reader = BufReader::new(s.try_clone()?);
            self.stream = Some((s, reader));
        }
        let result = self.exchange();
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn exchange(&mut self) -> Result<u16> {
        let Some((stream, reader)) = self.stream.as_mut() else {
            bail!("not connected");
        };
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nUser-Agent: checkout\r\n\r\n",
            self.upstream.addr
        );
        stream.write_all(request.as_bytes())?;
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("status line {line:?}"))?;
        let mut length = 0_usize;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                bail!("connection closed in the headers");
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().context("content-length")?;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        Ok(status)
    }
}

/// Calls every upstream in turn, `interval` apart, until stopped; serves
/// the counters on `metrics`; then reports every request as
/// `[unix_ms, upstream index, latency_us, status]` (status 0: no answer).
pub fn http_client(upstreams: &[Upstream], interval: Duration, metrics: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(metrics).with_context(|| format!("binding {metrics}"))?;
    let counters = Arc::new(Mutex::new(Counters::default()));
    for u in upstreams {
        let mut c = counters.lock().unwrap_or_else(|p| p.into_inner());
        c.seconds.insert(u.name.clone(), 0.0);
        c.requests.insert((u.name.clone(), "200".into()), 0);
        c.requests.insert((u.name.clone(), "500".into()), 0);
    }
    let port = listener.local_addr()?.port();
    {
        let counters = Arc::clone(&counters);
        std::thread::spawn(move || serve_metrics(listener, counters));
    }
    emit_ready(port)?;
    let mut conns: Vec<Conn> = upstreams
        .iter()
        .map(|u| Conn {
            upstream: u.clone(),
            stream: None,
        })
        .collect();
    let mut samples: Vec<[u64; 4]> = Vec::new();
    while !stopped() {
        for (i, conn) in conns.iter_mut().enumerate() {
            let unix_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let start = Instant::now();
            let status = conn.get().unwrap_or(0);
            let took = start.elapsed();
            let code = if status == 0 {
                "error".to_owned()
            } else {
                status.to_string()
            };
            {
                let mut c = counters.lock().unwrap_or_else(|p| p.into_inner());
                *c.requests
                    .entry((conn.upstream.name.clone(), code))
                    .or_default() += 1;
                *c.seconds.entry(conn.upstream.name.clone()).or_default() += took.as_secs_f64();
            }
            samples.push([
                unix_ms,
                i as u64,
                u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                u64::from(status),
            ]);
        }
        std::thread::sleep(interval);
    }
    let names: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
    emit(json!({ "upstreams": names, "samples": samples }))
}
