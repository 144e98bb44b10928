//! A fault-injecting HTTP proxy between ferry and the real registry. It understands just
//! enough HTTP/1.1 (request line, headers, Content-Length bodies) to forward one request per
//! connection and, for requests matching a rule, to: answer a status itself (500/502/503,
//! 429 with Retry-After), reset the connection after N body bytes, stall, dribble the answer
//! slowly, or hold the request until the client goes away. It counts the body bytes it
//! forwards, so tests can measure what crossed the "wire".
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer this status without forwarding (with `Retry-After: secs` when given).
    Status(u16, Option<u64>),
    /// Forward the head and this many body bytes, then close both sides.
    ResetAfter(u64),
    /// Read the request, then say nothing for this long and close.
    Stall(Duration),
    /// Forward normally, but relay the answer one byte every this often.
    Dribble(Duration),
    /// Forward nothing; keep the client waiting until it disconnects (or 60 s).
    Hold,
    /// Forward the request body at about this many bytes per second (a slow link that keeps
    /// moving).
    SlowBody(u64),
    /// Forward normally, but point the answer's `Location` header at this origin instead
    /// (a hostile or misconfigured hop).
    RewriteLocation(&'static str),
    /// Forward the whole request and wait for the registry's answer, then close the client's
    /// connection without relaying it: the request took effect, the client never heard.
    DropAnswer,
    /// Forward normally, but flip one byte of the answer's body (a faulty cache or proxy).
    CorruptBody,
    /// Hold the request this long, then forward it normally (a slow answer).
    Delay(Duration),
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub method: &'static str,
    pub path_contains: String,
    /// Let this many matching requests through first.
    pub skip: usize,
    /// Then apply the fault to this many (usize::MAX: forever).
    pub times: usize,
    pub fault: Fault,
    /// Only requests carrying this header (lower case name).
    pub header: Option<&'static str>,
    /// Only requests without this header (lower case name).
    pub without: Option<&'static str>,
}

impl Rule {
    pub fn new(method: &'static str, path_contains: &str, fault: Fault) -> Self {
        Rule {
            method,
            path_contains: path_contains.to_string(),
            skip: 0,
            times: 1,
            fault,
            header: None,
            without: None,
        }
    }
    pub fn with_header(mut self, name: &'static str) -> Self {
        self.header = Some(name);
        self
    }
    pub fn without_header(mut self, name: &'static str) -> Self {
        self.without = Some(name);
        self
    }
    pub fn skip(mut self, n: usize) -> Self {
        self.skip = n;
        self
    }
    pub fn times(mut self, n: usize) -> Self {
        self.times = n;
        self
    }
}

#[derive(Default)]
pub struct Stats {
    /// Body bytes forwarded to the registry.
    pub body_bytes: AtomicU64,
    /// A `Hold` fault is holding a request now.
    pub holding: AtomicBool,
    pub faults: AtomicU64,
    /// Every request as it arrived, in order.
    pub seen: Mutex<Vec<Seen>>,
}

/// A request as the proxy saw it arrive.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: std::time::Instant,
    pub method: String,
    pub path: String,
    /// It carried an `Authorization` header.
    pub authorized: bool,
}

pub struct Proxy {
    pub port: u16,
    pub stats: Arc<Stats>,
    rules: Arc<Mutex<Vec<(Rule, usize)>>>,
}

impl Proxy {
    pub fn start(upstream: u16, rules: Vec<Rule>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stats = Arc::new(Stats::default());
        let rules = Arc::new(Mutex::new(
            rules.into_iter().map(|r| (r, 0)).collect::<Vec<_>>(),
        ));
        let (s, r) = (stats.clone(), rules.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (s, r) = (s.clone(), r.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, upstream, &s, &r);
                });
            }
        });
        Proxy { port, stats, rules }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn set_rules(&self, rules: Vec<Rule>) {
        *self.rules.lock().unwrap() = rules.into_iter().map(|r| (r, 0)).collect();
    }

    pub fn bytes(&self) -> u64 {
        self.stats.body_bytes.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.stats.seen.lock().unwrap().clone()
    }

    pub fn reset_bytes(&self) {
        self.stats.body_bytes.store(0, Ordering::SeqCst);
    }
}

fn pick(rules: &Mutex<Vec<(Rule, usize)>>, method: &str, path: &str, head: &str) -> Option<Fault> {
    let mut rules = rules.lock().unwrap();
    for (rule, seen) in rules.iter_mut() {
        let header_ok = rule
            .header
            .is_none_or(|h| head.contains(&format!("\n{h}:")))
            && rule
                .without
                .is_none_or(|h| !head.contains(&format!("\n{h}:")));
        if (rule.method.is_empty() || rule.method == method)
            && path.contains(&rule.path_contains)
            && header_ok
        {
            *seen += 1;
            if *seen > rule.skip && *seen - rule.skip <= rule.times {
                return Some(rule.fault.clone());
            }
        }
    }
    None
}

fn handle(
    client: TcpStream,
    upstream: u16,
    stats: &Stats,
    rules: &Mutex<Vec<(Rule, usize)>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut content_length = 0u64;
    let mut chunked = false;
    let mut first = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if first.is_empty() {
            first = line.clone();
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
        if lower.starts_with("connection:") {
            continue;
        }
        head.extend_from_slice(line.as_bytes());
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let lower_head = format!("\n{}", String::from_utf8_lossy(&head).to_ascii_lowercase());
    stats.seen.lock().unwrap().push(Seen {
        at: std::time::Instant::now(),
        method: method.clone(),
        path: path.clone(),
        authorized: lower_head.contains("\nauthorization:"),
    });
    let fault = pick(rules, &method, &path, &lower_head);
    if fault.is_some() {
        stats.faults.fetch_add(1, Ordering::SeqCst);
    }
    let mut client_w = client;
    let drain = |reader: &mut BufReader<TcpStream>| {
        let _ = std::io::copy(
            &mut reader.by_ref().take(content_length),
            &mut std::io::sink(),
        );
    };
    match fault {
        Some(Fault::Status(code, retry_after)) => {
            drain(&mut reader);
            let ra = retry_after
                .map(|s| format!("Retry-After: {s}\r\n"))
                .unwrap_or_default();
            let body =
                format!(r#"{{"errors":[{{"code":"UNAVAILABLE","message":"injected {code}"}}]}}"#);
            write!(client_w, "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{ra}Connection: close\r\n\r\n{body}", body.len())?;
            return Ok(());
        }
        Some(Fault::Stall(d)) => {
            drain(&mut reader);
            std::thread::sleep(d);
            return Ok(());
        }
        Some(Fault::Delay(d)) => std::thread::sleep(d),
        Some(Fault::Hold) => {
            stats.holding.store(true, Ordering::SeqCst);
            client_w.set_read_timeout(Some(Duration::from_secs(60)))?;
            // Wait for the client to give up or die; forward nothing.
            let mut buf = [0u8; 65536];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            stats.holding.store(false, Ordering::SeqCst);
            return Ok(());
        }
        _ => {}
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(&head)?;
    if chunked {
        // Forward the chunked framing as is, counting payload bytes.
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            up.write_all(line.as_bytes())?;
            let size =
                u64::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            let mut data = vec![0u8; size as usize + 2];
            reader.read_exact(&mut data)?;
            up.write_all(&data)?;
            stats.body_bytes.fetch_add(size, Ordering::SeqCst);
            if size == 0 {
                break;
            }
        }
        std::io::copy(&mut up, &mut client_w)?;
        return Ok(());
    }
    let limit = match fault {
        Some(Fault::ResetAfter(n)) => n.min(content_length),
        _ => content_length,
    };
    let mut body = reader.by_ref().take(limit);
    let (mut buf, pace) = match fault {
        Some(Fault::SlowBody(rate)) => (vec![0u8; (rate / 10).max(1) as usize], true),
        _ => (vec![0u8; 256 * 1024], false),
    };
    loop {
        let n = body.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if pace {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        up.write_all(&buf[..n])?;
        stats.body_bytes.fetch_add(n as u64, Ordering::SeqCst);
    }
    if let Some(Fault::DropAnswer) = fault {
        let mut b = [0u8; 1];
        let _ = up.read(&mut b);
        let _ = client_w.shutdown(Shutdown::Both);
        let _ = up.shutdown(Shutdown::Both);
        return Ok(());
    }
    if let Some(Fault::ResetAfter(_)) = fault {
        let _ = up.shutdown(Shutdown::Both);
        let _ = client_w.shutdown(Shutdown::Both);
        return Ok(());
    }
    match fault {
        Some(Fault::RewriteLocation(origin)) => {
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && up.read(&mut b)? == 1 {
                head.push(b[0]);
            }
            let text = String::from_utf8_lossy(&head).into_owned();
            let rewritten: Vec<String> = text
                .split("\r\n")
                .map(|line| {
                    if line.to_ascii_lowercase().starts_with("location:") {
                        let value = line[9..].trim();
                        let path = value
                            .split_once("://")
                            .map(|(_, rest)| rest.find('/').map_or("/", |i| &rest[i..]))
                            .unwrap_or(value);
                        format!("Location: {origin}{path}")
                    } else {
                        line.to_string()
                    }
                })
                .collect();
            client_w.write_all(rewritten.join("\r\n").as_bytes())?;
            std::io::copy(&mut up, &mut client_w)?;
        }
        Some(Fault::CorruptBody) => {
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && up.read(&mut b)? == 1 {
                head.push(b[0]);
            }
            client_w.write_all(&head)?;
            let mut body = Vec::new();
            up.read_to_end(&mut body)?;
            if let Some(first) = body.first_mut() {
                *first ^= 0xff;
            }
            client_w.write_all(&body)?;
        }
        Some(Fault::Dribble(every)) => {
            let mut b = [0u8; 1];
            while up.read(&mut b)? == 1 {
                client_w.write_all(&b)?;
                std::thread::sleep(every);
            }
        }
        _ => {
            std::io::copy(&mut up, &mut client_w)?;
        }
    }
    Ok(())
}
