//! The sandbox's git server: smart HTTP over TLS (the emulator's certificate), behind Basic
//! authentication with the sandbox's token, served by `git http-backend` as a CGI program.
//! Clones and pushes work as against a git host with an access token (`flux.bootstrap`
//! pushes; the simulated Flux controllers fetch).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::io::AsyncWriteExt;

/// What the server needs.
pub struct GitServer {
    /// The directory of bare repositories (`<root>/fleet.git`).
    pub root: PathBuf,
    /// The token a client gives as the Basic password (any user name).
    pub token: String,
}

/// Serves on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    server: Arc<GitServer>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let (acceptor, server) = (acceptor.clone(), server.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&server, peer, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_string())));
    *r.status_mut() = status;
    r
}

/// The Basic user name, when the password is the token.
fn authenticated(server: &GitServer, req: &Request<Incoming>) -> Option<String> {
    let v = req.headers().get("authorization")?.to_str().ok()?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v.strip_prefix("Basic ")?.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    (password == server.token).then(|| user.to_string())
}

async fn handle(
    server: &GitServer,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let Some(user) = authenticated(server, &req) else {
        let mut r = plain(StatusCode::UNAUTHORIZED, "authentication required\n");
        r.headers_mut().insert(
            "www-authenticate",
            hyper::header::HeaderValue::from_static("Basic realm=\"siteflow sandbox git\""),
        );
        return r;
    };
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (content_type, encoding, protocol) = (
        header("content-type"),
        header("content-encoding"),
        header("git-protocol"),
    );
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("reading the body: {e}\n")),
    };
    if path.split('/').any(|s| s == "..") {
        return plain(StatusCode::BAD_REQUEST, "bad path\n");
    }
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &server.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", &path)
        .env("QUERY_STRING", &query)
        .env("CONTENT_TYPE", &content_type)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", &user)
        .env("REMOTE_ADDR", peer.ip().to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if !encoding.is_empty() {
        cmd.env("HTTP_CONTENT_ENCODING", &encoding);
    }
    if !protocol.is_empty() {
        cmd.env("GIT_PROTOCOL", &protocol);
    }
    let Ok(mut child) = cmd.spawn() else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "git http-backend\n");
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&body).await;
    }
    let Ok(out) = child.wait_with_output().await else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "git http-backend\n");
    };
    cgi_response(&out.stdout)
}

/// A CGI program's output (headers, a blank line, the body) as a response.
fn cgi_response(out: &[u8]) -> Response<Full<Bytes>> {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((at, sep)) = split else {
        return plain(
            StatusCode::BAD_GATEWAY,
            "git http-backend gave no headers\n",
        );
    };
    let head = String::from_utf8_lossy(&out[..at]).into_owned();
    let mut resp = Response::new(Full::new(Bytes::copy_from_slice(&out[at + sep..])));
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            if let Some(code) = v
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
            {
                *resp.status_mut() = code;
            }
        } else if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(k.trim().as_bytes()),
            hyper::header::HeaderValue::from_str(v),
        ) {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_output_becomes_a_response() {
        let r = cgi_response(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()["content-type"], "text/plain");
        let r = cgi_response(b"Content-Type: application/x-git-upload-pack-advertisement\n\n0000");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(cgi_response(b"garbage").status(), StatusCode::BAD_GATEWAY);
    }
}
