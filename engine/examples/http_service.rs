//! An HTTP service whose request handlers ask actors: axum on a tokio runtime beside a
//! percore runtime. The handlers `await` `ActorRef::ask` (a plain `Future`), so no tokio
//! worker ever blocks on an actor.
//!
//! ```text
//! cargo run --release -p percore --example http_service -- 127.0.0.1:3000
//! curl -X POST 127.0.0.1:3000/add/5     # 5
//! curl 127.0.0.1:3000/count             # 5
//! ```
//! `engine/tests/tokio_bridge.rs` runs this same code against a real socket with a real
//! HTTP client.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use percore::{Actor, ActorError, ActorRef, Context, ReplyTo, Runtime};

/// The state behind the service: one counter actor.
#[derive(Debug)]
pub struct Counter {
    /// The sum so far.
    pub total: u64,
}

/// What the counter does.
#[derive(Debug)]
pub enum CounterMsg {
    /// Add `n`; answers the new total.
    Add(u64, ReplyTo<u64>),
    /// Answers the total.
    Get(ReplyTo<u64>),
}

impl Actor for Counter {
    type Msg = CounterMsg;
    fn handle(&mut self, _: &mut Context<Self>, msg: CounterMsg) -> Result<(), ActorError> {
        match msg {
            CounterMsg::Add(n, reply) => {
                self.total += n;
                reply.reply(self.total);
            }
            CounterMsg::Get(reply) => reply.reply(self.total),
        }
        Ok(())
    }
}

/// How long a request waits for the actor before answering 503.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

fn unavailable(e: percore::AskError) -> (StatusCode, String) {
    (StatusCode::SERVICE_UNAVAILABLE, format!("counter unavailable: {e}\n"))
}

async fn count(State(counter): State<ActorRef<CounterMsg>>) -> Result<String, (StatusCode, String)> {
    let total = counter.ask(CounterMsg::Get).timeout(ASK_TIMEOUT).await.map_err(unavailable)?;
    Ok(format!("{total}\n"))
}

async fn add(State(counter): State<ActorRef<CounterMsg>>, Path(n): Path<u64>) -> Result<String, (StatusCode, String)> {
    let total = counter.ask(|r| CounterMsg::Add(n, r)).timeout(ASK_TIMEOUT).await.map_err(unavailable)?;
    Ok(format!("{total}\n"))
}

/// The routes: `GET /count`, `POST /add/{n}`.
pub fn app(counter: ActorRef<CounterMsg>) -> Router {
    Router::new().route("/count", get(count)).route("/add/{n}", post(add)).with_state(counter)
}

/// Serves `app` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, counter: ActorRef<CounterMsg>) -> std::io::Result<()> {
    axum::serve(listener, app(counter)).await
}

#[allow(dead_code)] // the test includes this file for `app`/`serve` and has its own main
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3000".into());
    let actors = Runtime::builder().shards(1).name("http").build()?;
    let counter = actors.spawn(Counter { total: 0 })?;
    let io = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    io.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("listening on http://{}", listener.local_addr()?);
        serve(listener, counter).await
    })?;
    actors.shutdown();
    Ok(())
}
