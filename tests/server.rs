//! `dam serve` end to end: the real binary on 127.0.0.1 (a free port) with
//! the tiny fixture model, driven by tests/server/client.py through the
//! official `openai` package and raw HTTP. Needs the Python of the set-up
//! line (`bash scripts/setup.sh`: .venv with openai and pillow) or
//! `$DAM_PYTHON`.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::fixtures;

/// Tokens of the greedy captions compared.
const MAX_TOKENS: usize = 24;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `dam` to completion; its stdout.
fn dam(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dam"))
        .args(args)
        .output()
        .expect("cannot run dam");
    assert!(
        out.status.success(),
        "dam {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The tiny model converted to f32 into `dir`.
fn tiny_model(dir: &Path) -> String {
    let ck = fixtures().join("tiny/checkpoint");
    let out = dir.to_str().unwrap();
    dam(&[
        "convert",
        ck.to_str().unwrap(),
        "--outdir",
        out,
        "--type",
        "f32",
        "--name",
        "tiny",
    ]);
    out.to_string()
}

/// The sam-tiny fixture segmenter converted to f32 into `dir` (as
/// tests/cli_segment.rs): the path `dam convert` prints.
fn tiny_segmenter(dir: &Path) -> String {
    let ck = fixtures().join("segmenter/sam-tiny/checkpoint");
    let out = dir.join("seg");
    let args = ["--type", "f32", "--name", "sam-tiny"];
    let printed = dam(&[
        &[
            "convert",
            ck.to_str().unwrap(),
            "--outdir",
            out.to_str().unwrap(),
        ],
        &args[..],
    ]
    .concat());
    printed.trim().to_string()
}

/// A running server; killed when dropped (a failing test leaves none).
struct Server {
    child: Child,
    url: String,
    stderr: mpsc::Receiver<String>,
}

impl Server {
    fn start(model: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dam"))
            .args([
                "serve",
                "-m",
                model,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "-t",
                "1",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start dam serve");
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let (etx, erx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            let _ = etx.send(s);
        });
        let mut server = Server {
            child,
            url: String::new(),
            stderr: erx,
        };
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("dam serve printed no address within 120 s");
        server.url = line
            .trim()
            .strip_prefix("dam serve: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        server
    }

    /// Runs the client script in `mode` against this server.
    fn client(&self, mode: &str, expected: &str) -> String {
        let cases = fixtures().join("tiny/cases");
        let out = Command::new(common::python("openai, PIL"))
            .arg(root().join("tests/server/client.py"))
            .args([mode, &self.url, expected, cases.to_str().unwrap()])
            .output()
            .expect("cannot run the client's Python (run the README's set-up line: bash scripts/setup.sh)");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "client.py {mode} failed (if a package is missing: run bash scripts/setup.sh):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// SIGTERM: the server must exit 0 within 60 s, without a panic.
    fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(s)) = self.child.try_wait() {
                let err = self
                    .stderr
                    .recv_timeout(Duration::from_secs(10))
                    .unwrap_or_default();
                assert_eq!(s.code(), Some(0), "exit after SIGTERM; stderr:\n{err}");
                assert!(!err.contains("panicked"), "{err}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("dam serve did not exit within 60 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reference precision (f32 KV, no flash attention) for the CLI and the
/// server alike: batched decoding then equals single decoding exactly
/// (tests/batch.rs), so the server's batches of concurrent requests must
/// give each request its lone caption, at any length.
const EXACT: [&str; 4] = ["--kv-type", "f32", "--flash-attn", "off"];

/// `dam describe`'s greedy caption (MAX_TOKENS tokens, EXACT precision,
/// `flags`) of `region` on `image`.
fn cli_caption(model: &str, image: &Path, flags: &[&str], region: &[&str]) -> String {
    let n = MAX_TOKENS.to_string();
    let mut a = vec!["describe", "-m", model, "-t", "1", "--greedy", "-n", &n];
    a.extend(EXACT);
    a.extend(flags);
    a.extend(["-i", image.to_str().unwrap()]);
    a.extend(region);
    dam(&a).trim_end_matches('\n').to_string()
}

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("dam-server-tests-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

#[test]
fn serve_answers_like_describe_and_survives_bad_input() {
    let dir = tmp("main");
    let model = tiny_model(&dir);
    let case = fixtures().join("tiny/cases");
    let (image, mask) = (case.join("c2_image.png"), case.join("c2_mask.png"));
    let describe = |region: &[&str]| cli_caption(&model, &image, &[], region);
    let expected = serde_json::json!({
        "alpha": describe(&["--mask", mask.to_str().unwrap()]),
        "box": describe(&["--box", "10,10,60,50"]),
        "max_tokens": MAX_TOKENS,
    });
    let mut server = Server::start(&model, &[&["--max-body-mib", "1"], &EXACT[..]].concat());
    let out = server.client("main", &expected.to_string());
    assert!(out.contains("client: ok"), "{out}");
    server.terminate();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn serve_describes_clicks_and_segmented_boxes_with_a_segmenter() {
    let dir = tmp("segment");
    let model = tiny_model(&dir);
    let seg = tiny_segmenter(&dir);
    let image = fixtures().join("tiny/cases/c2_image.png");
    let flags = ["--segmenter", seg.as_str()];
    let describe = |region: &[&str]| cli_caption(&model, &image, &flags, region);
    let expected = serde_json::json!({
        "points": describe(&["--points", "30,30;70,40", "--labels", "1,0"]),
        "segment_box": describe(&["--box", "10,10,60,50", "--segment-box"]),
        "max_tokens": MAX_TOKENS,
    });
    let mut server = Server::start(&model, &[&EXACT[..], &flags].concat());
    let out = server.client("segment", &expected.to_string());
    assert!(out.contains("segment: ok"), "{out}");
    server.terminate();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn serve_answers_503_when_its_queue_is_full() {
    let dir = tmp("busy");
    let model = tiny_model(&dir);
    let mut server = Server::start(
        &model,
        &["--queue", "1", "--max-batch", "1", "--max-images", "1"],
    );
    server.client("busy", "{}");
    server.terminate();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn serve_fetches_http_images_only_with_allow_remote_images() {
    let dir = tmp("remote");
    let model = tiny_model(&dir);
    let mut server = Server::start(
        &model,
        &[
            "--allow-remote-images",
            "--max-body-mib",
            "1",
            "--remote-timeout",
            "2",
        ],
    );
    let out = server.client("remote", "{}");
    assert!(out.contains("remote: ok"), "{out}");
    server.terminate();
    let _ = std::fs::remove_dir_all(dir);
}
