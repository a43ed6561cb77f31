//! A real Prometheus server (Debian's `prometheus` package) for the stop
//! condition tests, and a gauge it scrapes whose value the test sets. Both
//! run inside a network namespace (the lab's hub, where the coordinator
//! is), on its loopback.

use std::{
    fs::{self, File},
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Runs `f` on a thread that entered the network namespace at `netns`
/// (setns affects only the calling thread).
fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let netns = netns.to_owned();
    std::thread::spawn(move || -> io::Result<T> {
        let ns = File::open(&netns)?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("netns thread panicked"))?
}

/// A `/metrics` endpoint serving one gauge, `faultd_test_value`, whose
/// value the test sets; served until dropped.
#[derive(Debug)]
pub struct Gauge {
    value: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
}

impl Gauge {
    /// Listens on 127.0.0.1 inside `netns`.
    ///
    /// # Panics
    /// If the listener cannot be created.
    pub fn start(netns: &Path, initial: f64) -> Self {
        let listener = in_netns(netns, || TcpListener::bind("127.0.0.1:0"))
            .and_then(|r| r)
            .expect("gauge listener in the namespace");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("gauge addr");
        let value = Arc::new(AtomicU64::new(initial.to_bits()));
        let stop = Arc::new(AtomicBool::new(false));
        let (v, s) = (Arc::clone(&value), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = serve(conn, f64::from_bits(v.load(Ordering::Relaxed)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self { value, stop, addr }
    }

    pub fn set(&self, value: f64) {
        self.value.store(value.to_bits(), Ordering::Relaxed);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(mut conn: TcpStream, value: f64) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    // The request line and headers, up to the blank line.
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let body = format!(
        "# HELP faultd_test_value A value the test sets.\n# TYPE faultd_test_value gauge\n\
         faultd_test_value {value}\n"
    );
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `GET path` on `addr` from inside `netns`: (status, body).
///
/// # Errors
/// When the connection or the exchange fails.
pub fn http_get_in(netns: &Path, addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let path = path.to_owned();
    in_netns(netns, move || -> io::Result<(u16, String)> {
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut text = String::new();
        conn.read_to_string(&mut text)?;
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    })?
}

/// The Prometheus binary, or None (with the reason printed) when it is not
/// installed.
pub fn prometheus_bin() -> Option<PathBuf> {
    let bin = PathBuf::from("/usr/bin/prometheus");
    if bin.is_file() {
        Some(bin)
    } else {
        crate::cgroup::skip(
            "no /usr/bin/prometheus (Debian's `prometheus` package; `./x setup` installs it)",
        );
        None
    }
}

/// A Prometheus server inside a namespace, scraping one target; killed
/// on drop.
#[derive(Debug)]
pub struct PrometheusGuard {
    child: Child,
    netns: PathBuf,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl PrometheusGuard {
    /// Starts `bin` in `netns`, listening on `addr`, scraping `target`
    /// every `scrape`, with its storage and log under `dir`; returns once
    /// it is ready.
    ///
    /// # Panics
    /// If it does not start or become ready within 60 s.
    pub fn start(
        bin: &Path,
        netns: &Path,
        addr: SocketAddr,
        target: SocketAddr,
        scrape: Duration,
        dir: &Path,
    ) -> Self {
        Self::scraping(bin, netns, addr, &[target], scrape, dir)
    }

    /// [`Self::start`] with several targets, all in one job.
    ///
    /// # Panics
    /// As [`Self::start`].
    pub fn scraping(
        bin: &Path,
        netns: &Path,
        addr: SocketAddr,
        targets: &[SocketAddr],
        scrape: Duration,
        dir: &Path,
    ) -> Self {
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {ms}ms\n  evaluation_interval: {ms}ms\n\
                 scrape_configs:\n  - job_name: faultd-test\n    scrape_interval: {ms}ms\n    \
                 scrape_timeout: {ms}ms\n    static_configs:\n      - targets: [{targets}]\n",
                ms = scrape.as_millis(),
                targets = targets.join(", "),
            ),
        )
        .expect("prometheus config");
        let log = dir.join("prometheus.log");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .arg("--")
            .arg(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("prometheus log"))
            .spawn()
            .expect("starting prometheus");
        let guard = Self {
            child,
            netns: netns.to_owned(),
            addr,
            log,
        };
        let start = Instant::now();
        loop {
            if let Ok((200, _)) = http_get_in(netns, addr, "/-/ready") {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "prometheus not ready after 60 s:\n{}",
                guard.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        guard
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An instant query's answer, as JSON.
    ///
    /// # Panics
    /// If Prometheus cannot be asked.
    pub fn query(&self, query: &str) -> serde_json::Value {
        let encoded: String = query
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let (status, body) = http_get_in(
            &self.netns,
            self.addr,
            &format!("/api/v1/query?query={encoded}"),
        )
        .expect("querying prometheus");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("prometheus JSON")
    }

    /// The first sample's value of an instant query, if any.
    ///
    /// # Panics
    /// If Prometheus cannot be asked.
    pub fn value(&self, query: &str) -> Option<f64> {
        self.query(query)["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
    }

    /// Waits until `query`'s first sample satisfies `ok`; returns it.
    ///
    /// # Panics
    /// After `limit`.
    pub fn wait_until(&self, query: &str, ok: impl Fn(f64) -> bool, limit: Duration) -> f64 {
        let start = Instant::now();
        loop {
            if let Some(v) = self.value(query)
                && ok(v)
            {
                return v;
            }
            assert!(
                start.elapsed() < limit,
                "prometheus: {query} not as expected after {limit:?}: {}",
                self.query(query)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `query` returns a sample equal to `value`.
    ///
    /// # Panics
    /// After `limit`.
    pub fn wait_for(&self, query: &str, value: f64, limit: Duration) {
        let start = Instant::now();
        loop {
            let answer = self.query(query);
            let got = answer["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok());
            if got == Some(value) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "prometheus: {query} is not {value} after {limit:?}: {answer}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrometheusGuard {
    fn drop(&mut self) {
        self.kill();
    }
}
