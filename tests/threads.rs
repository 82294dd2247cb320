//! Threads, cancellation and memory:
//! - one `Model` shared (through its `Arc`) by four threads, each with its
//!   own `Session`, gives exactly the captions of serial runs;
//! - a cancel from another thread stops the vision graph and the decode
//!   loop, and the session works afterwards;
//! - 200 consecutive calls do not grow the process's memory.
//!
//! The tests take one lock: they measure time and the process's RSS.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use dam::GgmlType;
use dam::{Caption, DescribeOptions, Error, Model, ModelParams, Session};

// Static assertions: a model is shared by threads, a session moves to one.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<Model>();
    send_sync::<Arc<Model>>();
    send::<Session>();
    send_sync::<dam::CancelHandle>();
};

static LOCK: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn describe(s: &mut Session, inp: &Input, opts: &DescribeOptions) -> dam::Result<Caption> {
    let fr = inp.frames();
    if let [f] = fr.as_slice() {
        s.describe(&f.image, &f.region, opts)
    } else {
        s.describe_video(&fr, opts, &mut |_| true)
    }
}

fn greedy(max_new_tokens: usize) -> DescribeOptions {
    DescribeOptions {
        max_new_tokens,
        ..DescribeOptions::greedy()
    }
}

fn tiny_model(threads: usize) -> Arc<Model> {
    let (llm, vision) = converted("tiny", GgmlType::F32);
    Model::load(
        &llm,
        &vision,
        ModelParams {
            threads,
            ..ModelParams::reference()
        },
    )
    .unwrap()
}

#[test]
fn one_model_four_threads_match_serial_runs() {
    let _g = one_at_a_time();
    let model = tiny_model(1);
    let names = ["c2", "c3", "c4", "c5", "v1"];
    // Thread t describes 4 different cases, starting at case t.
    let plan: Vec<Vec<&str>> = (0..4)
        .map(|t| (0..4).map(|k| names[(t + k) % names.len()]).collect())
        .collect();
    let opts = greedy(24);

    let mut s = model.session().unwrap();
    let serial: Vec<Vec<(Vec<i32>, String)>> = plan
        .iter()
        .map(|cases| {
            cases
                .iter()
                .map(|c| {
                    let cap = describe(&mut s, &Input::load("tiny", c), &opts).unwrap();
                    (cap.tokens, cap.text)
                })
                .collect()
        })
        .collect();
    drop(s);

    let barrier = Arc::new(Barrier::new(plan.len()));
    let t0 = Instant::now();
    let handles: Vec<_> = plan
        .iter()
        .map(|cases| {
            let model = Arc::clone(&model);
            let barrier = Arc::clone(&barrier);
            let opts = opts.clone();
            let cases: Vec<String> = cases.iter().map(|c| c.to_string()).collect();
            std::thread::spawn(move || {
                let mut s = model.session().unwrap();
                let inputs: Vec<Input> = cases.iter().map(|c| Input::load("tiny", c)).collect();
                barrier.wait();
                inputs
                    .iter()
                    .map(|inp| {
                        let cap = describe(&mut s, inp, &opts).unwrap();
                        (cap.tokens, cap.text)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let parallel: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    println!(
        "4 threads x 4 captions in {:.0} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    for (t, (cases, caps)) in plan.iter().zip(&parallel).enumerate() {
        for (c, (tokens, text)) in cases.iter().zip(caps) {
            println!("thread {t} {c}: {} tokens {text:?}", tokens.len());
        }
    }
    assert_eq!(
        parallel, serial,
        "parallel captions differ from serial ones"
    );
    // Every session is gone; the model is only ours again.
    assert_eq!(Arc::strong_count(&model), 1);
}

#[test]
fn cancel_during_the_vision_stage() {
    let _g = one_at_a_time();
    let (llm, vision) = converted("geom", GgmlType::F32);
    let model = Model::load(
        &llm,
        &vision,
        ModelParams {
            threads: 2,
            ..ModelParams::default()
        },
    )
    .unwrap();
    assert_eq!(model.max_frames(), 8);
    let video = Input::video("geom", &["c2", "c3", "c4", "c2", "c3", "c4", "c2", "c3"]);
    let frames = video.frames();
    assert_eq!(frames.len(), 8);
    let opts = greedy(4);
    let mut s = model.session().unwrap();

    let t = Instant::now();
    let full = s.describe_video(&frames, &opts, &mut |_| true).unwrap();
    let full_ms = t.elapsed().as_secs_f64() * 1e3;
    let tm = &full.timings;
    println!(
        "uncancelled: {full_ms:.0} ms (preprocess {:.0}, vision {:.0}, prefill {:.0}, decode {:.0})",
        tm.preprocess_ms, tm.vision_ms, tm.prefill_ms, tm.decode_ms
    );

    // Cancel from another thread a fifth into the vision stage.
    let delay = Duration::from_secs_f64((tm.preprocess_ms + 0.2 * tm.vision_ms) / 1e3);
    let handle = s.cancel_handle();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(delay);
        handle.cancel();
        Instant::now()
    });
    let t = Instant::now();
    let r = s.describe_video(&frames, &opts, &mut |_| true);
    let returned = Instant::now();
    let cancelled_at = canceller.join().unwrap();
    let elapsed_ms = (returned - t).as_secs_f64() * 1e3;
    let reaction_ms = returned
        .saturating_duration_since(cancelled_at)
        .as_secs_f64()
        * 1e3;
    println!(
        "cancelled after {:.0} ms: returned at {elapsed_ms:.0} ms ({reaction_ms:.1} ms after the cancel): {:?}",
        delay.as_secs_f64() * 1e3,
        r.as_ref().err()
    );
    assert_eq!(r.unwrap_err(), Error::Cancelled);
    assert!(
        elapsed_ms < tm.preprocess_ms + tm.vision_ms + tm.prefill_ms + tm.decode_ms,
        "the cancelled call ran as long as a whole one ({elapsed_ms:.0} ms)"
    );

    // The session works after the cancel, and gives the same caption.
    let again = s.describe_video(&frames, &opts, &mut |_| true).unwrap();
    assert_eq!(again.tokens, full.tokens);
    assert_eq!(again.text, full.text);
}

#[test]
fn cancel_during_decode() {
    let _g = one_at_a_time();
    let model = tiny_model(2);
    let mut s = model.session().unwrap();
    let opts = greedy(200);
    // A case whose greedy caption is long enough to cancel in the middle.
    let (inp, reference) = ["c2", "c3", "c4", "c5"]
        .iter()
        .map(|c| {
            let inp = Input::load("tiny", c);
            let cap = describe(&mut s, &inp, &opts).unwrap();
            (inp, cap)
        })
        .max_by_key(|(_, cap)| cap.tokens.len())
        .unwrap();
    println!("reference caption: {} tokens", reference.tokens.len());
    assert!(reference.tokens.len() >= 12, "no long caption to cancel");
    let fr = inp.frames();
    let (image, region) = (&fr[0].image, &fr[0].region);

    // 1. From a watcher thread, while pieces stream (the callback is slowed
    //    down a little so that decoding is still going on).
    let delivered = Arc::new(AtomicUsize::new(0));
    let at_cancel = Arc::new(AtomicUsize::new(usize::MAX));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (delivered, at_cancel, done) = (delivered.clone(), at_cancel.clone(), done.clone());
        let handle = s.cancel_handle();
        std::thread::spawn(move || {
            while delivered.load(Ordering::SeqCst) < 3 {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::yield_now();
            }
            handle.cancel();
            // Read after the cancel: later pieces were delivered after it.
            at_cancel.store(delivered.load(Ordering::SeqCst), Ordering::SeqCst);
        })
    };
    let r = s.describe_stream(image, region, &opts, &mut |_| {
        delivered.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(2));
        true
    });
    done.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let (total, at) = (
        delivered.load(Ordering::SeqCst),
        at_cancel.load(Ordering::SeqCst),
    );
    println!("async cancel: {at} pieces before the cancel, {total} in all: {r:?}");
    assert_eq!(r.unwrap_err(), Error::Cancelled);
    assert!(total - at <= 1, "{} pieces after the cancel", total - at);

    // 2. From another thread, synchronously inside the callback: nothing
    //    more is delivered.
    let handle = s.cancel_handle();
    let mut count = 0usize;
    let r = s.describe_stream(image, region, &opts, &mut |_| {
        count += 1;
        if count == 5 {
            let h = handle.clone();
            std::thread::spawn(move || h.cancel()).join().unwrap();
        }
        true
    });
    println!("sync cancel at piece 5: {count} pieces: {r:?}");
    assert_eq!(r.unwrap_err(), Error::Cancelled);
    assert!(count <= 6, "{} pieces after the cancel", count - 5);

    // The session works afterwards.
    let again = s.describe(image, region, &opts).unwrap();
    assert_eq!(again.tokens, reference.tokens);
    assert_eq!(again.text, reference.text);
}

/// VmRSS of this process, in KiB.
#[cfg(target_os = "linux")]
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[cfg(target_os = "linux")]
#[test]
fn memory_does_not_grow_over_200_calls() {
    let _g = one_at_a_time();
    let model = tiny_model(2);
    let mut s = model.session().unwrap();
    let inputs: Vec<Input> = ["c2", "c3", "c4", "c5"]
        .iter()
        .map(|c| Input::load("tiny", c))
        .collect();
    let opts = greedy(8);
    let mut run = |n: usize| {
        for i in 0..n {
            let cap = describe(&mut s, &inputs[i % inputs.len()], &opts).unwrap();
            assert!(!cap.tokens.is_empty());
        }
    };
    run(20);
    let before = rss_kib();
    let t = Instant::now();
    run(200);
    let after = rss_kib();
    println!(
        "VmRSS after 20 warm-up calls: {before} KiB; after 200 more: {after} KiB (growth {} KiB; {:.1} ms per call)",
        after as i64 - before as i64,
        t.elapsed().as_secs_f64() * 1e3 / 200.0
    );
    assert!(
        after < before + 8 * 1024,
        "memory grew by {} KiB over 200 calls",
        after - before
    );
}
