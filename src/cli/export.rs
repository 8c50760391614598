//! `herald export`: a batch's ledger, or the messages to an address or with a
//! ref, as CSV (UTF-8 with a byte-order mark) into a file or to standard output,
//! written as it streams from the server: memory stays flat however long it is.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use super::ExportArgs;
use super::batch::resolve;
use super::person::find_query;
use super::server::{server_error, unreachable};

/// How long an export may take in all: a ledger of millions of rows streams for
/// minutes, which the other commands' five-minute limit would cut.
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

pub(super) async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let path = match &args.batch_id {
        Some(batch) => {
            let id = resolve(&args.server, batch).await?;
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("format", "csv");
            if let Some(state) = &args.find.state {
                query.append_pair("state", state);
            }
            format!("/v1/batches/{id}/messages?{}", query.finish())
        }
        None => {
            let mut query = find_query(&args.find);
            query.append_pair("format", "csv");
            format!("/v1/messages?{}", query.finish())
        }
    };
    let client = crate::provider::http_client(EXPORT_TIMEOUT).map_err(anyhow::Error::msg)?;
    let (request, url) = args.server.request(&client, reqwest::Method::GET, &path);
    let mut response = request.send().await.map_err(|e| unreachable(&e, &url))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        eprintln!("herald: {}", server_error(status, &body));
        return Ok(ExitCode::FAILURE);
    }
    let mut out: Box<dyn Write> = match &args.output {
        Some(file) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut bytes = 0_u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .context("the export stopped before its end: the server or the connection failed")?
    {
        out.write_all(&chunk).context("writing the export")?;
        bytes += chunk.len() as u64;
    }
    out.flush().context("writing the export")?;
    if let Some(file) = &args.output {
        eprintln!("wrote {bytes} bytes to {}", file.display());
    }
    Ok(ExitCode::SUCCESS)
}
