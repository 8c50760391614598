//! The redis engine (in progress).

use std::sync::Arc;

use super::{Engine, Error, Result};

/// Opens the redis store at `url`.
pub(crate) async fn open(url: &str) -> Result<Arc<dyn Engine>> {
    Err(Error::Unsupported(format!(
        "`{url}`: the redis engine is not available in this build yet"
    )))
}

/// A store of this engine for one conformance test, with a guard that cleans it up;
/// `None` while the engine is not built.
#[cfg(test)]
pub(crate) async fn test_store() -> Option<super::tests::TestStore> {
    None
}
