//! A local Aliyun SMS API (Dysmsapi) on 127.0.0.1: `SendSms` answers after 20 ms,
//! or 2 ms a number when that is longer (a request of many numbers takes a
//! while), and records when each number arrived; `QuerySendDetails` lists what
//! was sent to a number, as Aliyun documents, so that Herald can ask about a send
//! whose outcome it does not know. Each message of a bench batch has its own
//! number, so a number received twice is a repeated message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::State;
use serde_json::json;

use crate::dysmsapi;

/// The provider's delay before it answers a `SendSms`: at least this long…
const DELAY: Duration = Duration::from_millis(20);
/// …and this long for each number of the request.
const PER_NUMBER: Duration = Duration::from_millis(2);

#[derive(Default)]
struct Shared {
    /// By number: when each `SendSms` naming it arrived, and its `OutId`.
    sends: Mutex<HashMap<String, (Vec<Instant>, String)>>,
    /// By number: when each `QuerySendDetails` about it arrived.
    queries: Mutex<HashMap<String, Vec<Instant>>>,
}

/// The running provider; stops when dropped.
pub struct Provider {
    endpoint: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Provider {
    pub async fn start() -> anyhow::Result<Provider> {
        let shared = Arc::new(Shared::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the provider")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/", axum::routing::post(dysmsapi))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("the provider stopped: {e}");
            }
        });
        Ok(Provider {
            endpoint,
            shared,
            task,
        })
    }

    /// The `HERALD_PROVIDERS` value of an `ali` provider sending here.
    pub fn config(&self) -> String {
        format!(
            r#"[{{name="ali", kind="aliyun", channels=["sms"], access_key_id="LTAI-bench",
                 access_key_secret="bench", sign_name="Herald", endpoint="{}"}}]"#,
            self.endpoint
        )
    }

    /// Every number's arrival times.
    pub fn arrivals(&self) -> HashMap<String, Vec<Instant>> {
        let sends = self.shared.sends.lock().expect("no handler panics");
        sends
            .iter()
            .map(|(n, (at, _))| (n.clone(), at.clone()))
            .collect()
    }

    /// Every number's `QuerySendDetails` times.
    pub fn queries(&self) -> HashMap<String, Vec<Instant>> {
        self.shared
            .queries
            .lock()
            .expect("no handler panics")
            .clone()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn dysmsapi(State(shared): State<Arc<Shared>>, body: String) -> String {
    let params: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let param = |name: &str| params.get(name).cloned().unwrap_or_default();
    match param("Action").as_str() {
        "SendSms" => {
            let now = Instant::now();
            let numbers = param("PhoneNumbers");
            let count = numbers.split(',').count();
            {
                let mut sends = shared.sends.lock().expect("no handler panics");
                for number in numbers.split(',') {
                    let entry = sends.entry(number.to_owned()).or_default();
                    entry.0.push(now);
                    entry.1 = param("OutId");
                }
            }
            tokio::time::sleep(DELAY.max(PER_NUMBER * count as u32)).await;
            dysmsapi::sent(&format!("{}^0", fastrand::u64(..)))
        }
        "QuerySendDetails" => {
            let number = param("PhoneNumber");
            (shared.queries.lock().expect("no handler panics"))
                .entry(number.clone())
                .or_default()
                .push(Instant::now());
            let sends = shared.sends.lock().expect("no handler panics");
            let out_id = sends.get(&number).map(|(_, out_id)| out_id.as_str());
            dysmsapi::send_details(&number, out_id)
        }
        other => {
            json!({"Code": "isv.UNKNOWN", "Message": format!("unknown action {other}")}).to_string()
        }
    }
}
