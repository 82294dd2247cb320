//! `dam serve`: an OpenAI-compatible captioning server, a drop-in for the
//! reference's `dam_server.py` (NVlabs/describe-anything). Requests are
//! parsed and checked on the async side ([`api`](crate::server::api)),
//! queued ([`queue`](crate::server::queue)) and captioned by engine worker
//! threads that batch what waits together; [`routes`](crate::server::routes)
//! shapes the answers.

pub mod api;
pub mod fetch;
pub mod metrics;
pub mod queue;
pub mod routes;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use crate::{Error, Model, Result};
use api::{Compat, ParseCtx};
use metrics::Metrics;
use queue::Queue;
use routes::App;

/// The reference's model name, which clients written for it send.
pub const REFERENCE_MODEL_NAME: &str = "describe_anything_model";

/// The flags of `dam serve` (the model's own flags are `dam`'s usual ones).
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0 = any free port; the address is printed on stdout).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Engine workers, each with its own session (KV cache). Each uses
    /// --threads CPU threads.
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// Requests that may wait; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Regions one engine call captions together (0 = the session's
    /// parallel sequences, 4).
    #[arg(long, default_value_t = 0)]
    pub max_batch: usize,
    /// Milliseconds a batch with room waits for requests that have arrived
    /// (their headers) and are still being read or parsed, or, right after
    /// a batch, for as many requests as it answered (0 = never; an idle
    /// server never waits). About one photo's parse: small against a
    /// caption's time.
    #[arg(long, default_value_t = 30)]
    pub batch_wait_ms: u64,
    /// How streamed pieces are spelt: reference (delta.content is a list of
    /// text items, as dam_server.py) or openai (a string). A request's
    /// "compat" field overrides it.
    #[arg(long, value_enum, default_value_t = Compat::Reference)]
    pub compat: Compat,
    /// Images one request may send (0 = the model's frame limit; 1 serves
    /// an image model: a second image is an error).
    #[arg(long, default_value_t = 0)]
    pub max_images: usize,
    /// The model name requests use (besides "describe_anything_model");
    /// default: the model file's name before "-llm-".
    #[arg(long)]
    pub model_name: Option<String>,
    /// The largest request body, MiB (larger: 413).
    #[arg(long, default_value_t = 32)]
    pub max_body_mib: usize,
    /// The most pixels of one decoded image.
    #[arg(long, default_value_t = 4096 * 4096)]
    pub max_image_pixels: u64,
    /// Fetch http:// image URLs that requests name (off: they are refused,
    /// as the server would fetch any address a client names, internal ones
    /// included: SSRF). No https (no TLS client). Images are limited to
    /// --max-body-mib and --max-image-pixels, fetches to --remote-timeout
    /// and 5 redirects.
    #[arg(long)]
    pub allow_remote_images: bool,
    /// Seconds one remote image may take, redirects included.
    #[arg(long, default_value_t = 10.0)]
    pub remote_timeout: f64,
    /// On SIGINT/SIGTERM, seconds that running requests may take to finish
    /// before they are cancelled.
    #[arg(long, default_value_t = 10)]
    pub shutdown_grace: u64,
}

/// The model's name from its LLM file (`tiny-llm-f32.gguf` -> `tiny`).
fn default_name(model: &Model) -> String {
    let stem = model
        .llm_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.split_once("-llm-") {
        Some((name, _)) => name.to_string(),
        None => stem,
    }
}

/// Serves `model` until SIGINT or SIGTERM; then stops accepting, lets
/// running requests finish (cancelling them after `--shutdown-grace`) and
/// returns.
pub fn run(model: Arc<Model>, args: ServeArgs) -> Result<()> {
    if args.parallel == 0 || args.queue == 0 {
        return Err(Error::InvalidArgument(
            "--parallel and --queue must be at least 1".into(),
        ));
    }
    let seqs = model.params.n_seq_max as usize;
    let max_batch = match args.max_batch {
        0 => seqs,
        n => n.min(crate::MAX_REGIONS),
    };
    let name = args
        .model_name
        .clone()
        .unwrap_or_else(|| default_name(&model));
    let mut names = vec![name.clone()];
    if name != REFERENCE_MODEL_NAME {
        names.push(REFERENCE_MODEL_NAME.into());
    }
    let timeout = Duration::try_from_secs_f64(args.remote_timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| Error::InvalidArgument("--remote-timeout must be > 0".into()))?;
    let max_body = args.max_body_mib.saturating_mul(1 << 20);
    let remote = args.allow_remote_images.then_some(fetch::FetchLimits {
        max_bytes: max_body,
        timeout,
    });
    let queue = Arc::new(Queue::new(
        args.queue,
        Duration::from_millis(args.batch_wait_ms),
    ));
    let metrics = Arc::new(Metrics::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    let mut cancels = Vec::new();
    for _ in 0..args.parallel {
        let session = model.session()?;
        cancels.push(session.cancel_handle());
        let (q, m, s) = (queue.clone(), metrics.clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            queue::work(session, &q, &m, &s, max_batch)
        }));
    }
    let app = Arc::new(App {
        parse: Arc::new(ParseCtx {
            model_names: names,
            max_frames: match args.max_images {
                0 => model.max_frames(),
                n => n.min(model.max_frames()),
            },
            max_pixels: args.max_image_pixels,
            max_regions: crate::MAX_REGIONS,
            remote,
            segmenter: model.segmenter.is_some(),
        }),
        queue: queue.clone(),
        metrics,
        compat: args.compat,
        name,
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Io(format!("cannot start the async runtime: {e}")))?;
    let stopper = Stopper {
        stop: stop.clone(),
        cancels,
    };
    let served = rt.block_on(serve(app, &args, stopper));
    // Workers finish what is queued (cancelled after a signal), then stop.
    stop.store(true, Relaxed);
    queue.close();
    for w in workers {
        let _ = w.join();
    }
    served
}

fn router(app: Arc<App>, max_body: usize) -> Router {
    Router::new()
        .route("/chat/completions", post(routes::chat))
        .route("/v1/chat/completions", post(routes::chat))
        .route("/health", get(routes::health))
        .route("/models", get(routes::models))
        .route("/v1/models", get(routes::models))
        .route("/metrics", get(routes::metrics))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(app)
}

/// Stops the workers' running and queued requests.
struct Stopper {
    stop: Arc<AtomicBool>,
    cancels: Vec<crate::CancelHandle>,
}

impl Stopper {
    fn stop(&self) {
        self.stop.store(true, Relaxed);
        for c in &self.cancels {
            c.cancel();
        }
    }
}

async fn serve(app: Arc<App>, args: &ServeArgs, stopper: Stopper) -> Result<()> {
    let addr = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| Error::Io(format!("cannot listen on {addr}: {e}")))?;
    let local: SocketAddr = listener
        .local_addr()
        .map_err(|e| Error::Io(format!("{addr}: {e}")))?;
    // The one line on stdout: scripts (and the tests) read the port here.
    println!("dam serve: listening on http://{local}");
    eprintln!(
        "dam serve: model {}; POST /v1/chat/completions; GET /health /v1/models /metrics",
        app.name
    );
    let grace = Duration::from_secs(args.shutdown_grace);
    let router = router(app, args.max_body_mib.saturating_mul(1 << 20));
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            signal().await;
            eprintln!(
                "dam serve: shutting down (running requests get {}s)",
                grace.as_secs()
            );
            // Running requests may finish within the grace period, then
            // their generations stop (their answers say so).
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                stopper.stop();
            });
        })
        .await
        .map_err(|e| Error::Io(format!("server: {e}")))
}

/// Resolves on SIGINT or SIGTERM.
async fn signal() {
    let int = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = int => {},
        _ = term => {},
    }
}
