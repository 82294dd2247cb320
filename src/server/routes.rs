//! The HTTP endpoints: chat completions (whole or streamed as Server-Sent
//! Events), health, models and metrics.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::api::{self, ApiError, Compat, ParseCtx};
use super::metrics::Metrics;
use super::queue::{Event, Job, Queue};
use crate::Caption;

/// What every handler shares.
pub struct App {
    pub parse: Arc<ParseCtx>,
    pub queue: Arc<Queue>,
    pub metrics: Arc<Metrics>,
    pub compat: Compat,
    /// The served model's name (the first of `parse.model_names`).
    pub name: String,
    pub started: u64,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = json(self.status, &self.json());
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// Counts an error answer by its code.
fn fail(app: &App, e: ApiError) -> Response {
    app.metrics.error(e.code);
    e.into_response()
}

pub async fn health(State(app): State<Arc<App>>) -> Response {
    json(
        StatusCode::OK,
        &serde_json::json!({
            "status": "ok", "model": app.name, "queue_depth": app.queue.depth(),
            "segmenter": app.parse.segmenter,
        }),
    )
}

pub async fn models(State(app): State<Arc<App>>) -> Response {
    let data: Vec<_> = app
        .parse
        .model_names
        .iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": app.started, "owned_by": "dam"}))
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({"object": "list", "data": data}),
    )
}

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let body = app.metrics.render(app.queue.depth());
    let ct = "text/plain; version=0.0.4; charset=utf-8";
    (StatusCode::OK, [(header::CONTENT_TYPE, ct)], body).into_response()
}

/// Sets the request's cancel flag when dropped before `done`: the handler's
/// future (or the response stream) was dropped because the client left.
struct CancelOnDrop {
    cancel: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    done: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.done {
            self.cancel.store(true, Relaxed);
            self.metrics.cancelled.fetch_add(1, Relaxed);
        }
    }
}

/// What the answer needs to know of its request.
struct Meta {
    id: String,
    created: u64,
    model: String,
    compat: Compat,
}

pub async fn chat(State(app): State<Arc<App>>, req: Request) -> Response {
    app.metrics.requests.fetch_add(1, Relaxed);
    // From its headers until pushed (or refused), a worker may wait for
    // this request to batch it with others (--batch-wait-ms): counted
    // before its body is read, so that requests sent together are
    // counted before the first of them reaches the queue.
    let arriving = app.queue.arriving();
    let body: Result<Bytes, BytesRejection> = Bytes::from_request(req, &()).await;
    let body = match body {
        Ok(b) => b,
        Err(r) => {
            let status = r.status();
            let code = match status {
                StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
                _ => "invalid_body",
            };
            let e = ApiError {
                status,
                message: r.body_text(),
                kind: "invalid_request_error",
                code,
            };
            return fail(&app, e);
        }
    };
    let arrived = Instant::now();
    let ctx = app.parse.clone();
    let parsed = match tokio::task::spawn_blocking(move || api::parse(&body, &ctx)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return fail(&app, e),
        Err(_) => {
            return fail(
                &app,
                ApiError::engine(&crate::Error::Backend("parser task failed".into())),
            )
        }
    };
    let meta = Meta {
        id: request_id(),
        created: now_s(),
        model: parsed.model.clone(),
        compat: parsed.compat.unwrap_or(app.compat),
    };
    let stream = parsed.stream;
    let (tx, rx) = unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let job = Job {
        req: parsed,
        events: tx,
        cancel: cancel.clone(),
        arrived,
    };
    let pushed = app.queue.push(job);
    drop(arriving);
    if pushed.is_err() {
        let e = ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the server is busy (its queue is full); retry later".into(),
            kind: "server_error",
            code: "queue_full",
        };
        return fail(&app, e);
    }
    let guard = CancelOnDrop {
        cancel,
        metrics: app.metrics.clone(),
        done: false,
    };
    if stream {
        stream_answer(app, rx, guard, meta)
    } else {
        whole_answer(&app, rx, guard, &meta).await
    }
}

/// A unique id: the start time and a sequence number.
fn request_id() -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static START: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let start = START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    });
    format!("chatcmpl-{start:x}{:06x}", SEQ.fetch_add(1, Relaxed))
}

fn finish_reason(c: &Caption) -> &'static str {
    if c.stopped_by_eos {
        "stop"
    } else {
        "length"
    }
}

fn usage(caps: &[Caption]) -> serde_json::Value {
    // Regions of one request share one prompt: count it once.
    let prompt = caps.first().map_or(0, |c| c.timings.n_prompt_tokens);
    let completion: usize = caps.iter().map(|c| c.tokens.len()).sum();
    serde_json::json!({
        "prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

async fn whole_answer(
    app: &App,
    mut rx: UnboundedReceiver<Event>,
    mut guard: CancelOnDrop,
    meta: &Meta,
) -> Response {
    let result = loop {
        match rx.recv().await {
            Some(Event::Piece(..)) => {}
            Some(Event::Done(r)) => break r,
            None => break Err(crate::Error::Cancelled),
        }
    };
    guard.done = true;
    let caps = match result {
        Ok(c) => c,
        Err(e) => return fail(app, ApiError::engine(&e)),
    };
    app.metrics.completed.fetch_add(1, Relaxed);
    let choices: Vec<_> = caps
        .iter()
        .enumerate()
        .map(|(k, c)| {
            serde_json::json!({
                "index": k,
                "message": {"role": "assistant", "content": c.text},
                "finish_reason": finish_reason(c),
            })
        })
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({
            "id": meta.id, "object": "chat.completion", "created": meta.created,
            "model": meta.model, "choices": choices, "usage": usage(&caps),
        }),
    )
}

/// One `data:` event.
fn event(v: &serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

impl Meta {
    fn chunk(&self, choice: serde_json::Value) -> Bytes {
        event(&serde_json::json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": [choice],
        }))
    }

    /// A piece of region `k`'s caption, spelt as `compat` says.
    fn piece(&self, k: usize, text: &str, first: bool) -> Bytes {
        let delta = match self.compat {
            Compat::Reference => serde_json::json!({"content": [{"type": "text", "text": text}]}),
            Compat::Openai if first => serde_json::json!({"role": "assistant", "content": text}),
            Compat::Openai => serde_json::json!({"content": text}),
        };
        self.chunk(serde_json::json!({"index": k, "delta": delta, "finish_reason": null}))
    }
}

/// The streamed answer: pieces as they come, a `finish_reason` chunk per
/// region, `data: [DONE]`. Dropping the stream (client gone) cancels.
fn stream_answer(
    app: Arc<App>,
    rx: UnboundedReceiver<Event>,
    guard: CancelOnDrop,
    meta: Meta,
) -> Response {
    struct St {
        rx: UnboundedReceiver<Event>,
        guard: CancelOnDrop,
        meta: Meta,
        app: Arc<App>,
        started: Vec<bool>,
        ended: bool,
    }
    let st = St {
        rx,
        guard,
        meta,
        app,
        started: Vec::new(),
        ended: false,
    };
    let s = futures_util::stream::unfold(st, |mut st| async move {
        if st.ended {
            return None;
        }
        let bytes = match st.rx.recv().await {
            Some(Event::Piece(k, text)) => {
                if st.started.len() <= k {
                    st.started.resize(k + 1, false);
                }
                let first = !std::mem::replace(&mut st.started[k], true);
                st.meta.piece(k, &text, first)
            }
            done => {
                st.ended = true;
                st.guard.done = true;
                let r = match done {
                    Some(Event::Done(r)) => r,
                    _ => Err(crate::Error::Cancelled),
                };
                end_of_stream(&st.app, &st.meta, r)
            }
        };
        Some((Ok::<_, std::convert::Infallible>(bytes), st))
    });
    let mut r = Response::new(Body::from_stream(s));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The closing events: a `finish_reason` chunk per region (OpenAI mode: with
/// the usage), or an error event, then `[DONE]`.
fn end_of_stream(app: &App, meta: &Meta, r: Result<Vec<Caption>, crate::Error>) -> Bytes {
    let mut out = Vec::new();
    match r {
        Ok(caps) => {
            app.metrics.completed.fetch_add(1, Relaxed);
            for (k, c) in caps.iter().enumerate() {
                let choice =
                    serde_json::json!({"index": k, "delta": {}, "finish_reason": finish_reason(c)});
                out.extend_from_slice(&meta.chunk(choice));
            }
            if meta.compat == Compat::Openai {
                out.extend_from_slice(&event(&serde_json::json!({
                    "id": meta.id, "object": "chat.completion.chunk", "created": meta.created,
                    "model": meta.model, "choices": [], "usage": usage(&caps),
                })));
            }
        }
        Err(e) => {
            let e = ApiError::engine(&e);
            app.metrics.error(e.code);
            out.extend_from_slice(&event(&e.json()));
        }
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Bytes::from(out)
}
