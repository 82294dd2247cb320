//! The bounded request queue and the engine workers. Each worker owns one
//! [`Session`]; it takes the oldest request and, when that one is a single
//! image, every other waiting single-image request (up to `max_batch`
//! regions), and runs them as one [`Session::describe_batch_each`]: one
//! batched vision pass, captions decoded as parallel sequences, each with
//! its own request's options (query, length, token limit, sampling).
//!
//! Gathering: a batch that has room waits up to `--batch-wait-ms` for
//! requests that have arrived (their headers) and are still being read or
//! parsed (decoding their images), so that requests sent together share one
//! engine call instead of the first running alone while the others queue
//! behind it; and for [`BURST`] after the latest arrival, because requests
//! sent together reach the server up to a few milliseconds apart (1-5 ms
//! for 4 clients on loopback), the first sometimes parsed before the next
//! one's headers come. Right after a batch, the next one with room also
//! waits (up to the same time after the batch ended) for as many requests
//! as that batch answered: clients that send their next request when
//! answered (evaluation scripts, load tests) would otherwise split into
//! groups that take turns, each a smaller batch. A batch never waits
//! longer than `--batch-wait-ms` in all; an idle server (nothing arriving,
//! no batch just ended) never waits.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::api::Parsed;
use super::metrics::Metrics;
use crate::{Caption, Error, Frame, Region, Session};

/// How long after the latest arrival a batch with room waits for another.
/// A lone request pays at most this, less its own parse time.
pub const BURST: Duration = Duration::from_millis(3);

/// What a worker tells the request's handler.
pub enum Event {
    /// A piece of region `.0`'s caption.
    Piece(usize, String),
    /// The captions, one per region (a video has one), or the failure.
    Done(Result<Vec<Caption>, Error>),
}

/// One request waiting for, or in, the engine.
pub struct Job {
    pub req: Parsed,
    pub events: UnboundedSender<Event>,
    /// Set when the client goes away: its generation stops.
    pub cancel: Arc<AtomicBool>,
    pub arrived: Instant,
}

impl Job {
    fn batchable(&self) -> bool {
        !self.req.is_video()
    }

    fn send(&self, e: Event) {
        if self.events.send(e).is_err() {
            self.cancel.store(true, Relaxed);
        }
    }
}

/// The queue shared by the handlers (push) and the workers (pop).
pub struct Queue {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
    /// The longest a batch with room waits for more requests, in all.
    gather_wait: Duration,
    /// Requests whose headers came, being read or parsed (not yet pushed
    /// or refused).
    parsing: AtomicUsize,
    /// Requests that have arrived so far (counted at their headers).
    arrivals: AtomicUsize,
    /// When the latest one arrived (microseconds after `epoch`).
    latest_us: AtomicU64,
    epoch: Instant,
}

/// A worker's last batch: when it ended, how many requests it answered,
/// and the queue's arrivals then.
#[derive(Clone, Copy, Debug)]
struct Answered {
    at: Instant,
    jobs: usize,
    arrivals: usize,
}

/// Counts a request as being parsed until dropped (after its push, or when
/// it fails): a gathering worker waits for it meanwhile.
pub struct Arriving<'a>(&'a Queue);

impl Drop for Arriving<'_> {
    fn drop(&mut self) {
        self.0.parsing.fetch_sub(1, Relaxed);
        // A worker waiting for this request stops waiting.
        self.0.ready.notify_all();
    }
}

struct State {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl Queue {
    pub fn new(capacity: usize, gather_wait: Duration) -> Self {
        Queue {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity,
            gather_wait,
            parsing: AtomicUsize::new(0),
            arrivals: AtomicUsize::new(0),
            latest_us: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Marks a request as arriving (parsed next, then pushed).
    pub fn arriving(&self) -> Arriving<'_> {
        self.arrivals.fetch_add(1, Relaxed);
        let us = self.epoch.elapsed().as_micros();
        self.latest_us
            .fetch_max(u64::try_from(us).unwrap_or(u64::MAX), Relaxed);
        self.parsing.fetch_add(1, Relaxed);
        Arriving(self)
    }

    /// Notes that a batch of `jobs` requests has just been answered.
    fn answered(&self, jobs: usize) -> Answered {
        Answered {
            at: Instant::now(),
            jobs,
            arrivals: self.arrivals.load(Relaxed),
        }
    }

    /// Until when a batch with room should wait at `now` (None: not at
    /// all): while a request is arriving; until [`BURST`] after the latest
    /// arrival; until `gather_wait` after `last` ended while fewer requests
    /// have arrived since than it answered. The caller caps it.
    fn wait_until(&self, last: Option<Answered>, now: Instant) -> Option<Instant> {
        let parsing = (self.parsing.load(Relaxed) > 0).then_some(now + self.gather_wait);
        let latest = self.epoch + Duration::from_micros(self.latest_us.load(Relaxed));
        let burst = Some(latest + BURST);
        let returning = last
            .filter(|l| self.arrivals.load(Relaxed).wrapping_sub(l.arrivals) < l.jobs)
            .map(|l| l.at + self.gather_wait);
        [parsing, burst, returning]
            .into_iter()
            .flatten()
            .max()
            .filter(|&t| t > now)
    }

    /// Queues a job; gives it back when the queue is full or closed.
    pub fn push(&self, job: Job) -> Result<(), Box<Job>> {
        let Ok(mut s) = self.state.lock() else {
            return Err(Box::new(job));
        };
        if s.closed || s.jobs.len() >= self.capacity {
            return Err(Box::new(job));
        }
        s.jobs.push_back(job);
        self.ready.notify_one();
        Ok(())
    }

    pub fn depth(&self) -> usize {
        self.state.lock().map_or(0, |s| s.jobs.len())
    }

    /// Wakes every worker; they finish what is queued, then stop.
    pub fn close(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.closed = true;
        }
        self.ready.notify_all();
    }

    /// Waits for the next batch; None once closed and empty. Jobs whose
    /// client has gone are dropped here. `last`: the worker's previous batch.
    fn pop_batch(&self, max_regions: usize, last: Option<Answered>) -> Option<Vec<Job>> {
        let mut s = self.state.lock().ok()?;
        loop {
            while let Some(j) = s.jobs.front() {
                if !j.cancel.load(Relaxed) {
                    break;
                }
                s.jobs.pop_front();
            }
            if let Some(first) = s.jobs.pop_front() {
                let mut batch = vec![first];
                if !batch[0].batchable() {
                    return Some(batch);
                }
                let mut n = gather(&mut s.jobs, &mut batch, max_regions);
                let cap = Instant::now() + self.gather_wait;
                while n < max_regions && !s.closed {
                    let now = Instant::now();
                    let Some(until) = self.wait_until(last, now) else {
                        break;
                    };
                    let left = until.min(cap).saturating_duration_since(now);
                    if left.is_zero() {
                        break;
                    }
                    s = self.ready.wait_timeout(s, left).ok()?.0;
                    n = gather(&mut s.jobs, &mut batch, max_regions);
                }
                return Some(batch);
            }
            if s.closed {
                return None;
            }
            s = self.ready.wait(s).ok()?;
        }
    }
}

/// Moves the waiting single-image jobs into `batch` while they fit in
/// `max_regions`; the regions now in `batch`.
fn gather(jobs: &mut VecDeque<Job>, batch: &mut Vec<Job>, max_regions: usize) -> usize {
    let mut n: usize = batch.iter().map(|j| j.req.regions.len()).sum();
    let mut i = 0;
    while i < jobs.len() {
        let j = &jobs[i];
        let fits = n + j.req.regions.len() <= max_regions;
        if fits && j.batchable() && !j.cancel.load(Relaxed) {
            n += j.req.regions.len();
            batch.extend(jobs.remove(i));
        } else {
            i += 1;
        }
    }
    n
}

/// A worker's loop: batches from `queue` through `session` until the queue
/// closes. `stop` (shutdown) cancels what is running.
pub fn work(
    mut session: Session,
    queue: &Queue,
    metrics: &Metrics,
    stop: &AtomicBool,
    max_batch: usize,
) {
    let mut last = None;
    while let Some(batch) = queue.pop_batch(max_batch, last) {
        if stop.load(Relaxed) {
            for job in &batch {
                job.send(Event::Done(Err(Error::Cancelled)));
            }
            continue;
        }
        metrics.in_flight.fetch_add(batch.len() as u64, Relaxed);
        let n = batch.len() as u64;
        run(&mut session, &batch, metrics, stop);
        metrics.in_flight.fetch_sub(n, Relaxed);
        last = Some(queue.answered(batch.len()));
    }
}

/// Runs one batch and answers each of its jobs. If a batch of several
/// fails, each job is retried alone, so that one request's failure is not
/// its neighbours'.
fn run(session: &mut Session, batch: &[Job], metrics: &Metrics, stop: &AtomicBool) {
    // Region k of the batch -> (job, region within the job).
    let owner: Vec<(usize, usize)> = batch
        .iter()
        .enumerate()
        .flat_map(|(j, job)| (0..job.req.regions.len()).map(move |r| (j, r)))
        .collect();
    let mut started = vec![false; batch.len()];
    let mut on_text = |k: usize, piece: &str| {
        let Some(&(j, r)) = owner.get(k) else {
            return false;
        };
        let job = &batch[j];
        if stop.load(Relaxed) || job.cancel.load(Relaxed) {
            return false;
        }
        if !std::mem::replace(&mut started[j], true) {
            metrics.first_token(job.arrived.elapsed());
        }
        job.send(Event::Piece(r, piece.to_string()));
        !job.cancel.load(Relaxed)
    };
    let result = describe(session, batch, &mut on_text);
    metrics.batches.fetch_add(1, Relaxed);
    metrics
        .batched_regions
        .fetch_add(owner.len() as u64, Relaxed);
    match result {
        Ok(captions) => {
            let mut it = captions.into_iter();
            for job in batch {
                let caps: Vec<Caption> = it.by_ref().take(job.req.regions.len()).collect();
                for c in &caps {
                    metrics
                        .tokens
                        .fetch_add(c.timings.n_generated as u64, Relaxed);
                    let us = (c.timings.decode_ms * 1e3) as u64;
                    metrics.decode_us.fetch_add(us, Relaxed);
                }
                job.send(Event::Done(Ok(caps)));
            }
        }
        Err(e) if batch.len() > 1 && e != Error::Cancelled => {
            for job in batch {
                run(session, std::slice::from_ref(job), metrics, stop);
            }
        }
        Err(e) => {
            for job in batch {
                job.send(Event::Done(Err(e.clone())));
            }
        }
    }
}

/// One engine call for a batch: a video alone, else every region of every
/// job, with its job's options, through `describe_batch_each`.
fn describe(
    session: &mut Session,
    batch: &[Job],
    on_text: &mut dyn FnMut(usize, &str) -> bool,
) -> Result<Vec<Caption>, Error> {
    let first = &batch[0].req;
    fn views(job: &Job) -> crate::Result<Vec<crate::ImageView<'_>>> {
        job.req.images.iter().map(|i| i.view()).collect()
    }
    if first.is_video() {
        let images = views(&batch[0])?;
        let regions = first
            .regions
            .iter()
            .map(|r| r.region())
            .collect::<crate::Result<Vec<_>>>()?;
        let frames: Vec<Frame> = images
            .iter()
            .enumerate()
            .map(|(k, image)| Frame {
                image: *image,
                region: regions.get(k).unwrap_or(&regions[0]).clone(),
            })
            .collect();
        return Ok(vec![session.describe_video(
            &frames,
            &first.opts,
            &mut |s| on_text(0, s),
        )?]);
    }
    let images = batch.iter().map(views).collect::<crate::Result<Vec<_>>>()?;
    let regions: Vec<Vec<Region>> = batch
        .iter()
        .map(|j| j.req.regions.iter().map(|r| r.region()).collect())
        .collect::<crate::Result<_>>()?;
    let frames: Vec<Frame> = images
        .iter()
        .zip(&regions)
        .flat_map(|(imgs, rs)| {
            rs.iter().map(|r| Frame {
                image: imgs[0],
                region: r.clone(),
            })
        })
        .collect();
    let opts: Vec<_> = batch
        .iter()
        .flat_map(|j| j.req.regions.iter().map(|_| j.req.opts.clone()))
        .collect();
    Ok(session
        .describe_batch_each(&frames, &opts, on_text)?
        .captions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::api::OwnedRegion;

    fn job() -> Job {
        Job {
            req: Parsed {
                images: Vec::new(),
                regions: vec![OwnedRegion::Alpha],
                opts: crate::DescribeOptions::default(),
                stream: false,
                model: "m".into(),
                compat: None,
            },
            events: tokio::sync::mpsc::unbounded_channel().0,
            cancel: Arc::new(AtomicBool::new(false)),
            arrived: Instant::now(),
        }
    }

    #[test]
    fn requests_with_different_options_share_a_batch() {
        let q = Queue::new(8, Duration::ZERO);
        let with = |f: fn(&mut crate::DescribeOptions)| {
            let mut j = job();
            f(&mut j.req.opts);
            j
        };
        assert!(q.push(job()).is_ok());
        assert!(q.push(with(|o| o.max_new_tokens = 7)).is_ok());
        assert!(q.push(with(|o| o.temperature = 0.0)).is_ok());
        assert!(q.push(with(|o| o.seed = 3)).is_ok());
        assert!(q
            .push(with(|o| o.query = Some("What is it?".into())))
            .is_ok());
        let batch = q.pop_batch(4, None).unwrap();
        assert_eq!(batch.len(), 4);
        assert_eq!(batch[1].req.opts.max_new_tokens, 7);
        assert_eq!(q.pop_batch(4, None).map(|b| b.len()), Some(1));
    }

    /// A request that arrives (headers, then push) as a client does.
    fn send(q: &Queue) {
        let a = q.arriving();
        assert!(q.push(job()).is_ok());
        drop(a);
    }

    #[test]
    fn a_batch_waits_a_burst_after_the_latest_arrival() {
        let q = Queue::new(8, Duration::from_secs(5));
        send(&q);
        let now = Instant::now();
        let until = q.wait_until(None, now).unwrap();
        assert!(until <= now + BURST);
        assert_eq!(q.wait_until(None, until), None);
        // A request whose headers came: as long as the caller allows.
        let parsing = q.arriving();
        assert!(q.wait_until(None, now).unwrap() >= now + Duration::from_secs(4));
        drop(parsing);
        // --batch-wait-ms 0: a batch never waits.
        let q = Queue::new(8, Duration::ZERO);
        send(&q);
        let _parsing = q.arriving();
        let last = Some(q.answered(4));
        assert_eq!(q.pop_batch(4, last).map(|b| b.len()), Some(1));
    }

    #[test]
    fn a_batch_waits_for_the_clients_the_last_one_answered() {
        let q = Arc::new(Queue::new(8, Duration::from_secs(5)));
        // A batch of 3 was just answered; one of its clients is back.
        let last = q.answered(3);
        send(&q);
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.pop_batch(4, Some(last)).map(|b| b.len()));
        std::thread::sleep(Duration::from_millis(50));
        send(&q);
        send(&q);
        assert_eq!(t.join().unwrap(), Some(3));
        // All of them back: no wait for a fourth.
        let last = q.answered(2);
        send(&q);
        send(&q);
        let t0 = Instant::now();
        assert_eq!(q.pop_batch(4, Some(last)).map(|b| b.len()), Some(2));
        assert!(t0.elapsed() < Duration::from_secs(2));
        // Clients that do not come back: the wait ends `gather_wait` after
        // the batch ended; a batch that ended longer ago is not waited for.
        let q = Queue::new(8, Duration::from_millis(40));
        let last = q.answered(4);
        send(&q);
        let t0 = Instant::now();
        assert_eq!(q.pop_batch(4, Some(last)).map(|b| b.len()), Some(1));
        assert!(
            t0.elapsed() >= Duration::from_millis(10),
            "{:?}",
            t0.elapsed()
        );
        let q = Queue::new(8, Duration::from_millis(500));
        let long_ago = Answered {
            at: Instant::now() - Duration::from_secs(1),
            ..q.answered(4)
        };
        send(&q);
        let t0 = Instant::now();
        assert_eq!(q.pop_batch(4, Some(long_ago)).map(|b| b.len()), Some(1));
        assert!(
            t0.elapsed() < Duration::from_millis(250),
            "{:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn a_batch_waits_only_for_requests_being_parsed() {
        let q = Arc::new(Queue::new(8, Duration::from_secs(5)));
        assert!(q.push(job()).is_ok());
        let parsing = q.arriving();
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.pop_batch(4, None).map(|b| b.len()));
        std::thread::sleep(Duration::from_millis(50));
        assert!(q.push(job()).is_ok());
        drop(parsing);
        assert_eq!(t.join().unwrap(), Some(2));
        // Nothing being parsed: no wait.
        assert!(q.push(job()).is_ok());
        let t0 = Instant::now();
        assert_eq!(q.pop_batch(4, None).map(|b| b.len()), Some(1));
        assert!(t0.elapsed() < Duration::from_secs(2));
        // A request that is still being parsed when the wait ends: the batch
        // goes without it.
        let q = Queue::new(8, Duration::from_millis(20));
        assert!(q.push(job()).is_ok());
        let _parsing = q.arriving();
        assert_eq!(q.pop_batch(4, None).map(|b| b.len()), Some(1));
    }
}
