//! The smallest HTTP server that Prometheus can scrape: `GET` any path on the listener and
//! get the exporter's text format back. It uses `std::net` only, so the example needs
//! neither tokio nor hyper (`metrics-exporter-prometheus` without its default features).
//! One connection at a time is plenty for a scraper; a real service mounts
//! [`PrometheusHandle::render`] on its own HTTP stack instead.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;

/// Longest request head the server reads before it answers anyway.
const MAX_REQUEST: usize = 8 * 1024;

/// Serves `handle`'s metrics on `listener` from a background thread, forever.
pub fn serve(listener: TcpListener, handle: PrometheusHandle) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("prometheus-http".into()).spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            if let Err(e) = answer(stream, &handle) {
                eprintln!("prometheus: a scrape failed: {e}");
            }
        }
    })
}

/// Reads one request head (bounded, with a deadline) and writes the metrics.
fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    // Summaries roll their windows forward on upkeep; do it before every render.
    handle.run_upkeep();
    let body = handle.render();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}
