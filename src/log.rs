//! Where log lines go: dam's own lines and llama.cpp's / ggml's.
//!
//! llama.cpp's logging is process-global, but the engine is used by several
//! models and threads at once. A [`Logger`] is entered on a thread for the
//! duration of some work ([`Logger::enter`]); every line logged on that
//! thread meanwhile (by dam or by llama.cpp) goes to it. Lines logged where
//! no logger is entered go to the process-wide one ([`set_global`]), if any;
//! otherwise they are dropped. Nothing is installed, and dam is quiet,
//! until a logger is entered or set.
//!
//! ```no_run
//! use dam::log::{LogLevel, Logger};
//! let logger = Logger::new(LogLevel::Info, |level, text| eprint!("[{level:?}] {text}"));
//! let _routed = logger.enter(); // lines of this thread go to `logger` until dropped
//! ```
//!
//! Lines that llama.cpp logs from its own worker threads reach only the
//! global logger.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Once, RwLock};

use crate::sys::llama;

/// Severity of a log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Debug,
    Info,
    /// The least severe level a logger delivers unless told otherwise.
    #[default]
    Warn,
    Error,
}

type Callback = dyn Fn(LogLevel, &str) + Send + Sync;

/// A receiver of log lines (each with its newline) of at least `min_level`.
/// Cheap to clone (shared).
#[derive(Clone)]
pub struct Logger {
    callback: Arc<Callback>,
    min_level: LogLevel,
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Logger(at least {:?})", self.min_level)
    }
}

impl Logger {
    /// A logger calling `callback` with every line of at least `min_level`.
    /// The callback may be called from any thread that enters the logger,
    /// concurrently when several do.
    pub fn new(
        min_level: LogLevel,
        callback: impl Fn(LogLevel, &str) + Send + Sync + 'static,
    ) -> Logger {
        Logger {
            callback: Arc::new(callback),
            min_level,
        }
    }

    pub fn min_level(&self) -> LogLevel {
        self.min_level
    }

    /// Delivers `text` when `level` is at least the logger's minimum.
    pub fn emit(&self, level: LogLevel, text: &str) {
        if level >= self.min_level {
            (self.callback)(level, text);
        }
    }

    /// Routes the lines logged on this thread to this logger until the
    /// returned guard is dropped (the previous routing is then restored).
    pub fn enter(&self) -> LogScope {
        enter(Some(self.clone()))
    }
}

thread_local! {
    /// The logger entered on this thread.
    static CURRENT: RefCell<Option<Logger>> = const { RefCell::new(None) };
    /// The level of the last llama.cpp line on this thread (for continuations).
    static LAST_LEVEL: Cell<LogLevel> = const { Cell::new(LogLevel::Info) };
}

static GLOBAL: RwLock<Option<Logger>> = RwLock::new(None);

/// Routes this thread's lines to `logger` (`None`: to no thread logger)
/// until the guard is dropped. [`Logger::enter`] for an optional logger.
pub fn enter(logger: Option<Logger>) -> LogScope {
    if logger.is_some() {
        install();
    }
    let prev = CURRENT
        .try_with(|c| {
            c.try_borrow_mut()
                .map(|mut c| std::mem::replace(&mut *c, logger))
        })
        .ok()
        .and_then(|r| r.ok())
        .flatten();
    LogScope { prev }
}

/// The routing of one [`Logger::enter`]; restores the previous one on drop.
#[must_use = "the logger is entered only while the scope lives"]
pub struct LogScope {
    prev: Option<Logger>,
}

impl Drop for LogScope {
    fn drop(&mut self) {
        let prev = self.prev.take();
        let _ = CURRENT.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                *c = prev;
            }
        });
    }
}

/// Sets (or with `None` removes) the logger of lines logged where no logger
/// is entered.
pub fn set_global(logger: Option<Logger>) {
    if logger.is_some() {
        install();
    }
    *GLOBAL.write().unwrap_or_else(|e| e.into_inner()) = logger;
}

/// Sends one of dam's own lines (`dam: {msg}` and a newline) where the
/// thread's lines go.
pub fn emit(level: LogLevel, msg: &str) {
    deliver(level, &format!("dam: {msg}\n"));
}

fn deliver(level: LogLevel, text: &str) {
    let current = CURRENT
        .try_with(|c| c.try_borrow().ok().and_then(|c| c.clone()))
        .ok()
        .flatten();
    if let Some(logger) = current {
        logger.emit(level, text);
    } else if let Ok(global) = GLOBAL.read() {
        if let Some(logger) = global.as_ref() {
            logger.emit(level, text);
        }
    }
}

/// Installs the router of llama.cpp's lines, once per process.
fn install() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        llama::set_log_hook(Some(Box::new(|level, text| {
            let level = match level {
                llama::LogLevel::Debug => LogLevel::Debug,
                llama::LogLevel::Info => LogLevel::Info,
                llama::LogLevel::Warn => LogLevel::Warn,
                llama::LogLevel::Error => LogLevel::Error,
                llama::LogLevel::Cont => LAST_LEVEL.try_with(Cell::get).unwrap_or(LogLevel::Info),
            };
            let _ = LAST_LEVEL.try_with(|l| l.set(level));
            deliver(level, text);
        })));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn lines_go_to_the_entered_logger_then_back() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let logger = Logger::new(LogLevel::Info, move |l, t| {
            sink.lock().unwrap().push((l, t.to_string()))
        });
        {
            let _scope = logger.enter();
            emit(LogLevel::Debug, "hidden");
            emit(LogLevel::Warn, "shown");
            llama::log(llama::LogLevel::Info, "from llama\n");
        }
        emit(LogLevel::Error, "after the scope");
        let seen = seen.lock().unwrap();
        assert_eq!(
            *seen,
            [
                (LogLevel::Warn, "dam: shown\n".to_string()),
                (LogLevel::Info, "from llama\n".to_string())
            ]
        );
    }
}
