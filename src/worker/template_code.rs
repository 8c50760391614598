//! The provider codes of stored templates, as the workers read them.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::domain::ProviderTemplate;
use crate::provider;
use crate::queue::Queue;

/// How long a stored template's provider codes are reused before being read again,
/// so that a replaced template reaches the workers soon without a read per message.
const TEMPLATE_CODES_FOR: Duration = Duration::from_secs(10);

/// A stored template's code and sign name per provider.
type Codes = BTreeMap<String, ProviderTemplate>;

/// The provider codes of stored templates, read from the store and kept briefly.
#[derive(Default)]
pub(super) struct TemplateCodes {
    read: std::sync::Mutex<HashMap<String, (Instant, Codes)>>,
}

impl TemplateCodes {
    /// Template `id`'s code and sign at `provider`, if it has them. A store that
    /// cannot answer is a transient failure of the send; a deleted template has no
    /// codes (the provider decides whether it can send without).
    pub(super) async fn code(
        &self,
        queue: &Queue,
        id: &str,
        provider: &str,
    ) -> Result<Option<ProviderTemplate>, provider::Error> {
        let fresh = |read: &Instant| read.elapsed() < TEMPLATE_CODES_FOR;
        {
            let read = self.read.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, codes)) = read.get(id)
                && fresh(at)
            {
                return Ok(codes.get(provider).cloned());
            }
        }
        let codes = match queue.records().template(id).await {
            Ok(template) => template.map(|t| t.providers).unwrap_or_default(),
            Err(e) => {
                return Err(provider::Error::Transient {
                    reason: format!("cannot read template `{id}`: {e}"),
                    retry_after: None,
                });
            }
        };
        let found = codes.get(provider).cloned();
        let mut read = self.read.lock().unwrap_or_else(|p| p.into_inner());
        read.retain(|_, (at, _)| fresh(at));
        read.insert(id.to_string(), (Instant::now(), codes));
        Ok(found)
    }
}
