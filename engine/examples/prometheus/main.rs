//! Serves percore's runtime metrics in the Prometheus text format over HTTP.
//!
//! ```text
//! cargo run --release --example prometheus --features metrics -- 127.0.0.1:9091
//! curl -s http://127.0.0.1:9091/metrics | grep percore_
//! ```
//!
//! The order matters: install the exporter (the `metrics` global recorder) first, then
//! build the runtime with `.metrics(true)`, whose shards register their metrics as they
//! start. Events (failures, restarts, stalls) go to a `tracing` subscriber, installed here
//! too. The example runs a ping-pong load for 30 s (or the seconds given second).

use std::net::TcpListener;
use std::time::{Duration, Instant};

use percore::{Actor, ActorError, ActorRef, Context, Props, Runtime};

mod server;

/// One side of a ping-pong: answers every ball by sending it back.
struct Player {
    peer: Option<ActorRef<Ball>>,
}

/// The message: a ball and the side that should get it back.
enum Ball {
    Serve(ActorRef<Ball>),
    Hit,
}

impl Actor for Player {
    type Msg = Ball;

    fn handle(&mut self, _ctx: &mut Context<Self>, msg: Ball) -> Result<(), ActorError> {
        match msg {
            Ball::Serve(peer) => {
                let _ = peer.tell(Ball::Hit);
                self.peer = Some(peer);
            }
            Ball::Hit => {
                if let Some(peer) = &self.peer {
                    let _ = peer.tell(Ball::Hit);
                }
            }
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_max_level(tracing::Level::INFO).init();
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9091".to_string());
    let secs: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(30);

    let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let listener = TcpListener::bind(&addr)?;
    println!("metrics on http://{}/metrics for {secs} s", listener.local_addr()?);
    server::serve(listener, handle)?;

    let rt = Runtime::builder().name("prometheus-demo").shards(2).pin_to_cores(false).metrics(true).build()?;
    let a = rt.spawn(Props::from(Player { peer: None }).shard(0))?;
    let b = rt.spawn(Props::from(Player { peer: Some(a.clone()) }).shard(0))?;
    // A rally that never ends, on shard 0; shard 1 idles (see its idle time and parks).
    a.tell(Ball::Serve(b))?;
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
    }
    rt.shutdown();
    Ok(())
}
