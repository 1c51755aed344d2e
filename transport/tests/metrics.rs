//! Transport metrics through the `metrics` facade (cargo feature `metrics`): the exporter's
//! text shows exactly the node's own counters, and a refused handshake by its reason.
#![cfg(feature = "metrics")]

use std::io::Write;
use std::sync::OnceLock;

use percore::Runtime;
use percore_transport::Backend;

use crate::common::{config, eventually, node, spawn_counter, Counter, Reply, LONG};

fn recorder() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static H: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    H.get_or_init(|| metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().expect("first recorder"))
}

/// The value of the series `metric{...labels...}` that has all of `labels`, or 0.
fn value(metric: &str, labels: &[&str]) -> u64 {
    recorder()
        .render()
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && labels.iter().all(|x| l.contains(x)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}

#[test]
fn node_counters_reach_the_exporter_exactly() {
    recorder();
    let rt = |name: &str| Runtime::builder().name(name).shards(2).pin_to_cores(false).metrics(true).build().unwrap();
    let (ra, rb) = (rt("ma"), rt("mb"));
    let (na, nb) = (node(&ra, config(Backend::Mio)), node(&rb, config(Backend::Mio)));
    spawn_counter(&rb, "counter");
    let c = na.remote_ref::<Counter>(&format!("{}/user/counter", nb.address())).unwrap();
    for seq in 0..1000 {
        c.tell(Counter::Hit { from: 0, seq }).unwrap();
    }
    assert_eq!(c.blocking_ask(Counter::Get, LONG).unwrap(), Reply { total: 1000, in_order: true });
    let (a, b) = (format!("node=\"{}\"", na.addr()), format!("node=\"{}\"", nb.addr()));
    eventually("sender's messages published", || value("percore_transport_messages_sent_total", &[&a]) == 1001);
    eventually("receiver's messages published", || value("percore_transport_messages_received_total", &[&b]) == 1001);
    eventually("bytes match NodeStats", || {
        let s = na.stats();
        s.bytes_sent > 1001 * 8 && value("percore_transport_bytes_sent_total", &[&a]) == s.bytes_sent
    });
    assert!(value("percore_transport_handshakes_total", &[&a]) >= 1);

    // Not a percore peer: a hello frame (length 5, kind 1) with the wrong magic number is
    // refused in the handshake and counted by its reason.
    let mut s = std::net::TcpStream::connect(nb.addr()).unwrap();
    s.write_all(&[5, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef]).unwrap();
    eventually("refusal counted", || value("percore_transport_handshake_failures_total", &[&b]) == 1);
    let lines: Vec<String> = recorder().render().lines().filter(|l| l.contains("handshake_failures") && l.contains(&b) && !l.ends_with(" 0")).map(String::from).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("reason=\"bad_magic\""), "{lines:?}");
    drop((ra, rb));
}
