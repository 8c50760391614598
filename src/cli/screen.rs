//! A terminal in memory for the progress bars' tests: the last line drawn.

use std::io;
use std::sync::{Arc, Mutex};

/// Keeps the last line a progress bar drew; clones share it.
#[derive(Clone, Default)]
pub(super) struct Screen(Arc<Mutex<String>>);

impl Screen {
    /// A draw target writing to this screen.
    pub(super) fn target(&self) -> indicatif::ProgressDrawTarget {
        indicatif::ProgressDrawTarget::term_like(Box::new(self.clone()))
    }

    /// The line on the screen.
    pub(super) fn line(&self) -> String {
        self.0.lock().expect("no test panics holding it").clone()
    }
}

impl std::fmt::Debug for Screen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line())
    }
}

impl indicatif::TermLike for Screen {
    fn width(&self) -> u16 {
        160
    }

    fn move_cursor_up(&self, _: usize) -> io::Result<()> {
        Ok(())
    }

    fn move_cursor_down(&self, _: usize) -> io::Result<()> {
        Ok(())
    }

    fn move_cursor_right(&self, _: usize) -> io::Result<()> {
        Ok(())
    }

    fn move_cursor_left(&self, _: usize) -> io::Result<()> {
        Ok(())
    }

    fn write_line(&self, s: &str) -> io::Result<()> {
        self.write_str(s)
    }

    fn write_str(&self, s: &str) -> io::Result<()> {
        if !s.trim().is_empty() {
            *self.0.lock().expect("no test panics holding it") = s.to_owned();
        }
        Ok(())
    }

    fn clear_line(&self) -> io::Result<()> {
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}
