//! A value per thread that uses it, made on that thread's first use.
//!
//! For clients whose connections are driven by a task on the runtime that dialed them
//! (the Redis store's connection manager, the HTTP/2 upstream client): one per thread
//! gives every connection worker (`server::workers`) connections of its own, so no
//! request wakes another thread to send it or to hand back the answer. Only a handful
//! of threads ever ask (the workers and the main thread), so a list is searched.

use std::sync::RwLock;
use std::thread::ThreadId;

pub struct PerThread<T> {
    made: RwLock<Vec<(ThreadId, T)>>,
}

impl<T: Clone> PerThread<T> {
    pub fn new() -> Self {
        PerThread {
            made: RwLock::new(Vec::new()),
        }
    }

    /// This thread's value, made by `make` if the thread has none yet.
    pub fn get_or_make(&self, make: impl FnOnce() -> T) -> T {
        match self.get_or_try_make(|| Ok::<_, std::convert::Infallible>(make())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// This thread's value, made by `make` if the thread has none yet; a failure to
    /// make it is returned (and the next call tries again).
    pub fn get_or_try_make<E>(&self, make: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let here = std::thread::current().id();
        let find = |made: &[(ThreadId, T)]| {
            made.iter()
                .find(|(thread, _)| *thread == here)
                .map(|(_, value)| value.clone())
        };
        // The list only grows, and whatever panicked while holding it left it whole.
        if let Some(value) = find(&self.made.read().unwrap_or_else(|p| p.into_inner())) {
            return Ok(value);
        }
        let mut made = self.made.write().unwrap_or_else(|p| p.into_inner());
        if let Some(value) = find(&made) {
            return Ok(value);
        }
        let value = make()?;
        made.push((here, value.clone()));
        Ok(value)
    }

    /// How many threads have a value.
    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.made.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl<T: Clone> Default for PerThread<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn each_thread_gets_a_value_of_its_own_made_once() {
        let made = AtomicUsize::new(0);
        let values = PerThread::new();
        let make = || made.fetch_add(1, Ordering::SeqCst);
        assert_eq!(values.get_or_make(make), 0);
        assert_eq!(values.get_or_make(make), 0);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                assert_eq!(values.get_or_make(make), 1);
                assert_eq!(values.get_or_make(make), 1);
            });
        });
        assert_eq!(values.get_or_make(make), 0);
        assert_eq!(values.count(), 2);
        assert_eq!(made.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_value_that_could_not_be_made_is_tried_again_next_time() {
        let values = PerThread::new();
        assert_eq!(values.get_or_try_make(|| Err::<u8, _>("down")), Err("down"));
        assert_eq!(values.count(), 0);
        assert_eq!(values.get_or_try_make(|| Ok::<_, &str>(7)), Ok(7));
        assert_eq!(values.get_or_try_make(|| Err("not asked")), Ok(7));
    }
}
