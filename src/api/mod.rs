//! The HTTP API (axum). Its parts:
//!
//! - `route`: the routes table (`routes()`), the one list that builds the
//!   router, the OpenAPI document (`GET /openapi.json`), the `GET /v1` index and
//!   the token tests; the token check; `/healthz` and `/metrics`.
//! - `state`: [`AppState`], what every handler shares.
//! - `submit`: `POST /v1/batches` accepts a batch (JSON, or streamed as NDJSON or
//!   CSV through `upload`), with its idempotency key and dry run.
//! - `batch`: `GET /v1/batches`, `GET /v1/batches/{id}` and
//!   `GET /v1/batches/{id}/messages` read the ledger; `POST /v1/batches/{id}/{action}`
//!   pauses, resumes, cancels or retries; `events` streams one's progress.
//! - `templates` and `suppressions` keep stored templates and the addresses never
//!   to message; `seed` keeps the seed recipe's `POST /send-sms` working;
//!   `receipts` takes the providers' delivery receipts, `inbound` their replies,
//!   `replies` lists them; `webhooks` lists and replays the status webhooks'
//!   deliveries; `spend` answers `GET /v1/spend`, each provider's spend today
//!   against its daily budget, and the spend families of `/metrics`.
//! - `GET /` and `/assets/{name}` serve the web page (`crate::web`).
//! - `messages`: `GET /v1/messages` finds messages across batches by address or
//!   ref; `erase`: `DELETE /v1/recipients/{address}` forgets a person; `csv_out`
//!   streams a batch's ledger or a search's result as CSV (`?format=csv`).
//! - `openapi` builds the OpenAPI document from the table and the handlers'
//!   types; its `path` says what each route's methods take and answer.
//! - `audit`: who the caller is, recording operator actions and `GET /v1/audit`.
//! - `request` reads query strings, bodies and JSON; `error` holds the one error
//!   type every route answers with.

mod audit;
mod batch;
mod csv_out;
mod erase;
mod error;
mod events;
mod inbound;
mod messages;
mod openapi;
mod pushed;
mod receipts;
mod replies;
mod request;
mod route;
mod seed;
mod spend;
mod state;
mod submit;
mod suppressions;
mod templates;
mod upload;
mod webhooks;

pub use self::batch::{BatchPage, BatchView, MessagePage, MessageView};
pub use self::csv_out::HEADER as CSV_COLUMNS;
pub use self::erase::ErasureView;
pub use self::error::Error;
pub use self::events::Progress;
pub use self::messages::{FoundPage, FoundView};
pub use self::pushed::Pushing;
pub use self::route::router;
pub use self::state::AppState;

#[cfg(test)]
mod tests;
