//! Reads a server's `/metrics` over plain HTTP/1.0, the way a Prometheus scraper would, and
//! picks values out of the text.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The body of `GET /metrics` at `addr`; panics unless the answer is 200 with OpenMetrics text.
pub async fn scrape(addr: SocketAddr) -> String {
    let mut socket = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics endpoint");
    socket
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: jsonkv\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("an HTTP response has a head");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    body.to_owned()
}

/// The value of the sample `series` (a metric name with its labels exactly as printed, e.g.
/// `jsonkv_requests_total{method="jsonkv.v1.JsonKv/Get",code="OK"}`), or 0 when absent.
pub fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(series)?;
            rest.strip_prefix(' ')?.trim().parse().ok()
        })
        .unwrap_or(0.0)
}

/// Scrapes until `series` satisfies `ok`, for up to 20 s; returns the last text.
pub async fn wait_for(addr: SocketAddr, series: &str, ok: impl Fn(f64) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = scrape(addr).await;
        if ok(value(&text, series)) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never reached the expected value; last scrape:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
