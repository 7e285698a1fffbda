//! A minimal HTTP/1.1 server and client (one request per connection, JSON bodies) for the
//! simulator's API on port 6443. Plain HTTP: the `https://` in URLs is accepted and ignored.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;

/// A parsed request.
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `(user, password)` of a Basic Authorization header.
    pub fn basic_auth(&self) -> Option<(String, String)> {
        let v = self.header("authorization")?.strip_prefix("Basic ")?;
        let raw = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        Some((u.to_owned(), p.to_owned()))
    }

    /// The token of a Bearer Authorization header.
    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization")?.strip_prefix("Bearer ")
    }
}

/// A response: status, content type and body.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: serde_json::to_vec_pretty(v).unwrap_or_default(),
        }
    }
    pub fn text(status: u16, s: &str) -> Response {
        Response {
            status,
            content_type: "text/plain",
            body: s.as_bytes().to_vec(),
        }
    }
    /// A Kubernetes `Status` failure.
    pub fn status(code: u16, reason: &str, message: &str) -> Response {
        Response::json(
            code,
            &serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": message, "reason": reason, "code": code}),
        )
    }
}

type Handler = Arc<dyn Fn(Request) -> Response + Send + Sync>;

/// Serves `handler` on `listener` forever, a thread per connection. With `tls`, a
/// connection that opens with a TLS handshake is served over TLS (as k3s serves its API);
/// others (the simulator's own clients) in plain HTTP.
pub fn serve(listener: TcpListener, handler: Handler, tls: Option<Arc<rustls::ServerConfig>>) {
    for stream in listener.incoming().flatten() {
        let handler = handler.clone();
        let tls = tls.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut first = [0u8; 1];
            let is_tls = matches!(stream.peek(&mut first), Ok(1) if first[0] == 0x16);
            let _ = match tls {
                Some(config) if is_tls => rustls::ServerConnection::new(config)
                    .map_err(anyhow::Error::from)
                    .and_then(|conn| handle(rustls::StreamOwned::new(conn, stream), &handler)),
                _ => handle(stream, &handler),
            };
        });
    }
}

fn handle<S: Read + Write>(mut stream: S, handler: &Handler) -> Result<()> {
    let req = read_request(&mut stream)?;
    let resp = handler(req);
    let reason = match resp.status {
        200 => "OK",
        201 => "Created",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Error",
    };
    write!(
        stream,
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        resp.status,
        resp.content_type,
        resp.body.len()
    )?;
    stream.write_all(&resp.body)?;
    stream.flush()?;
    Ok(())
}

pub fn read_head(reader: &mut impl BufRead) -> Result<(String, Vec<(String, String)>)> {
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Ok((first.trim_end().to_owned(), headers))
}

pub fn read_body(reader: &mut impl BufRead, headers: &[(String, String)]) -> Result<Vec<u8>> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .context("bad chunk size")?;
            if size == 0 {
                let mut end = String::new();
                reader.read_line(&mut end)?;
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            let mut crlf = String::new();
            reader.read_line(&mut crlf)?;
        }
    }
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(body)
}

fn read_request(stream: &mut impl Read) -> Result<Request> {
    let mut reader = BufReader::new(stream);
    let (first, headers) = read_head(&mut reader)?;
    let mut parts = first.split_whitespace();
    let method = parts.next().context("empty request")?.to_owned();
    let path = parts.next().context("no path")?.to_owned();
    let body = read_body(&mut reader, &headers)?;
    Ok(Request {
        method,
        path,
        headers,
        body,
    })
}

/// `host:port` of an `https://host:port[/...]` URL (port 6443 if absent).
pub fn host_port(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .with_context(|| format!("not an https URL: {url}"))?;
    let hp = rest.split('/').next().unwrap_or(rest);
    if hp.is_empty() {
        bail!("no host in {url}");
    }
    Ok(if hp.contains(':') {
        hp.to_owned()
    } else {
        format!("{hp}:6443")
    })
}

/// Sends one request to the server at `url` and returns (status, body).
pub fn call(
    url: &str,
    method: &str,
    path: &str,
    auth: Option<String>,
    body: Option<&serde_json::Value>,
) -> Result<(u16, Vec<u8>)> {
    let addr = host_port(url)?;
    let sock = addr
        .parse()
        .or_else(|_| {
            std::net::ToSocketAddrs::to_socket_addrs(&addr)
                .map_err(anyhow::Error::from)?
                .next()
                .context("no address")
        })
        .with_context(|| format!("cannot resolve {addr}"))?;
    let stream = TcpStream::connect_timeout(&sock, Duration::from_secs(5))
        .with_context(|| format!("dial tcp {addr}: connection refused or unreachable"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    exchange(stream, method, &addr, path, auth.as_deref(), body)
}

/// Writes one request (JSON body, `Connection: close`) on `stream` and reads the response:
/// (status, body).
pub fn exchange(
    mut stream: impl Read + Write,
    method: &str,
    host: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Result<(u16, Vec<u8>)> {
    let body = body
        .map(|b| serde_json::to_vec(b).unwrap_or_default())
        .unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(a) = auth {
        head.push_str(&format!("Authorization: {a}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    stream.flush()?;
    let mut reader = BufReader::new(stream);
    let (status_line, headers) = read_head(&mut reader)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("bad status line")?;
    let body = read_body(&mut reader, &headers)?;
    Ok((status, body))
}

/// `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
