//! The posting loop: claims due deliveries from the store's outbox, posts them per
//! endpoint as signed JSON arrays of at most `batch_size` events, and settles each
//! delivery posted, to retry, or failed. Several processes share the outbox by
//! leases (the embedded store lets one process post at a time). Posts run
//! concurrently, at most a quarter of them (and one at least) to any one endpoint
//! (each batch's `callback_url` counting as one), and only full ones while that
//! endpoint has a post in flight. The rest of an endpoint's claimed deliveries
//! wait their turn in memory, gathering into full posts, except that an endpoint
//! whose last post failed keeps no more waiting than it has in flight, the others
//! being put back for later. So an endpoint that is slow or down delays only its
//! own deliveries, and a busy one gets full posts.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::retry::{BACKOFF, Posted, RetryRule};
use super::sign::{headers, request_id};
use crate::config::{WebhookConfig, WebhookSettings};
use crate::domain::{HttpUrl, SigningSecret, millis, now_ms};
use crate::metrics::Metrics;
use crate::provider::{exchange, http_client};
use crate::queue::{CALLBACK, Delivery, DeliveryKey, DeliveryOutcome, Queue};

/// How often the loop looks for due deliveries while it finds some, and at most
/// how long it waits when it finds none for a while (the wait doubles each time).
/// A change in this process that may record events ends an idle wait at once.
const POLL: Duration = Duration::from_millis(50);
const IDLE_POLL: Duration = Duration::from_millis(400);
/// How often posted deliveries older than `keep_posted` are deleted, and how
/// many at most each time.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const PRUNE_LIMIT: u32 = 10_000;

/// Why the posting loop could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build the webhooks' HTTP client: {0}")]
    Client(String),
}

/// Where an endpoint's posts go and what signs them.
#[derive(Clone)]
struct Target {
    url: reqwest::Url,
    secret: SigningSecret,
}

/// The posting loop of one process.
pub struct Poster {
    queue: Queue,
    client: reqwest::Client,
    endpoints: HashMap<String, Target>,
    callback_secret: Option<SigningSecret>,
    batch_size: usize,
    concurrency: usize,
    per_endpoint: usize,
    lease: Duration,
    timeout: Duration,
    keep_posted: Duration,
    rule: RetryRule,
    metrics: Metrics,
    /// [`POLL`] and [`IDLE_POLL`]; a test lengthens them.
    poll: Duration,
    idle_poll: Duration,
}

/// Deliveries to post together: one endpoint, one URL, at most `batch_size`.
struct Group {
    endpoint: String,
    /// What the posts in flight are counted by: the endpoint, and for `callback`
    /// its URL too (each batch's own is an endpoint of its own).
    lane: String,
    target: Result<Target, String>,
    deliveries: Vec<Delivery>,
}

impl Poster {
    /// A loop posting to `endpoints` as `settings` say, counting in `metrics`.
    pub fn new(
        queue: Queue,
        endpoints: &[WebhookConfig],
        settings: &WebhookSettings,
        metrics: Metrics,
    ) -> Result<Poster, Error> {
        let concurrency = settings.concurrency.max(1);
        let callback = settings.callback_secret.is_some().then_some(CALLBACK);
        metrics.webhook_endpoints(endpoints.iter().map(|e| e.name.as_str()).chain(callback));
        Ok(Poster {
            queue,
            client: http_client(settings.timeout).map_err(Error::Client)?,
            endpoints: endpoints
                .iter()
                .map(|e| {
                    let target = Target {
                        url: e.url.url().clone(),
                        secret: e.secret.clone(),
                    };
                    (e.name.clone(), target)
                })
                .collect(),
            callback_secret: settings.callback_secret.clone(),
            batch_size: settings.batch_size.max(1) as usize,
            concurrency,
            per_endpoint: (concurrency / 4).max(1),
            // A group may wait for one post of its endpoint, then take its own.
            lease: settings.timeout * 3 + Duration::from_secs(5),
            timeout: settings.timeout,
            keep_posted: settings.keep_posted,
            rule: RetryRule {
                retry_for: settings.retry_for,
                backoff: BACKOFF,
            },
            metrics,
            poll: POLL,
            idle_poll: IDLE_POLL,
        })
    }

    /// Posts until `stop`, then lets the posts in flight finish (each is bounded
    /// by the timeout) and settles them. Deliveries claimed and not posted come
    /// back when their lease lapses.
    pub async fn run(self, stop: CancellationToken) {
        let this = Arc::new(self);
        let mut in_flight: JoinSet<(Group, Posted)> = JoinSet::new();
        let mut busy: HashMap<String, usize> = HashMap::new();
        // The lanes whose last post was refused: a slow or failing endpoint.
        let mut failing: HashSet<String> = HashSet::new();
        let mut held: VecDeque<Group> = VecDeque::new();
        let mut next_prune = tokio::time::Instant::now();
        let mut poll = this.poll;
        while !stop.is_cancelled() {
            // Groups held for a busy endpoint go first, as it frees up.
            for _ in 0..held.len() {
                let Some(group) = held.pop_front() else { break };
                if this.may_post(&group, &busy) {
                    this.dispatch(group, &mut in_flight, &mut busy);
                } else {
                    held.push_back(group);
                }
            }
            let room = this.concurrency.saturating_sub(in_flight.len());
            let held_events: usize = held.iter().map(|g| g.deliveries.len()).sum();
            let budget = (room * this.batch_size).saturating_sub(held_events);
            let mut full = false;
            if budget > 0 {
                let limit = u32::try_from(budget).unwrap_or(u32::MAX);
                match this
                    .queue
                    .claim_deliveries(limit, this.lease, now_ms())
                    .await
                {
                    Ok(claimed) => {
                        full = claimed.len() == budget;
                        poll = if claimed.is_empty() {
                            (poll * 2).min(this.idle_poll)
                        } else {
                            this.poll
                        };
                        let mut turned_away = Vec::new();
                        for mut group in this.groups(claimed) {
                            this.top_up(&mut held, &mut group);
                            if group.deliveries.is_empty() {
                                continue;
                            }
                            let waiting = held.iter().filter(|g| g.lane == group.lane).count();
                            if this.may_post(&group, &busy) {
                                this.dispatch(group, &mut in_flight, &mut busy);
                            } else if waiting < this.per_endpoint || !failing.contains(&group.lane)
                            {
                                // A healthy endpoint drains its queue fast; a
                                // failing one may hold no more than it posts.
                                held.push_back(group);
                            } else {
                                turned_away.push(group);
                            }
                        }
                        if !turned_away.is_empty() {
                            let refused = Posted::Refused {
                                error:
                                    "not posted: the endpoint's earlier posts are still in flight"
                                        .into(),
                                retry_after: Some(this.timeout),
                            };
                            let settled = turned_away
                                .iter()
                                .flat_map(|g| this.outcomes(g, &refused))
                                .collect();
                            this.settle(settled).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming webhook deliveries failed; will try again")
                    }
                }
            }
            if next_prune <= tokio::time::Instant::now() {
                this.prune().await;
                next_prune = tokio::time::Instant::now() + PRUNE_EVERY;
            }
            if full && in_flight.len() < this.concurrency {
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => {}
                Some(done) = in_flight.join_next() => {
                    let mut settled = this.finished(done, &mut busy, &mut failing);
                    // Posts that ended meanwhile settle with it, in one write.
                    while let Some(done) = in_flight.try_join_next() {
                        settled.extend(this.finished(done, &mut busy, &mut failing));
                    }
                    this.settle(settled).await;
                }
                () = tokio::time::sleep(poll) => {}
                // Idle, it looks again as soon as a change here records events;
                // while busy, it keeps its pace, so claims stay large.
                () = this.queue.events_recorded().notified(), if poll > this.poll => {}
            }
        }
        let mut settled = Vec::new();
        while let Some(done) = in_flight.join_next().await {
            settled.extend(this.finished(done, &mut busy, &mut failing));
        }
        this.settle(settled).await;
    }

    /// The claimed deliveries in groups: per endpoint and URL, in the order
    /// claimed, at most `batch_size` each.
    fn groups(&self, claimed: Vec<Delivery>) -> Vec<Group> {
        // (endpoint, its URL when a batch's own) and its deliveries
        type Keyed = ((String, Option<String>), Vec<Delivery>);
        let mut by_target: Vec<Keyed> = Vec::new();
        for delivery in claimed {
            let key = (delivery.endpoint.clone(), delivery.url.clone());
            match by_target.iter_mut().find(|(k, _)| *k == key) {
                Some((_, list)) => list.push(delivery),
                None => by_target.push((key, vec![delivery])),
            }
        }
        let mut groups = Vec::new();
        for ((endpoint, url), deliveries) in by_target {
            let target = self.target(&endpoint, url.as_deref());
            let lane = match &url {
                Some(url) if endpoint == CALLBACK => format!("{endpoint} {url}"),
                _ => endpoint.clone(),
            };
            let mut deliveries = deliveries.into_iter().peekable();
            while deliveries.peek().is_some() {
                groups.push(Group {
                    endpoint: endpoint.clone(),
                    lane: lane.clone(),
                    target: target.clone(),
                    deliveries: deliveries.by_ref().take(self.batch_size).collect(),
                });
            }
        }
        groups
    }

    /// Where `endpoint`'s posts go (`url`: a batch's `callback_url`), or why they
    /// cannot go anywhere now (the configuration changed since the event was
    /// recorded): that is retried like a refused post, until the window ends.
    fn target(&self, endpoint: &str, url: Option<&str>) -> Result<Target, String> {
        if endpoint != CALLBACK {
            return self.endpoints.get(endpoint).cloned().ok_or_else(|| {
                format!("not posted: no [[webhooks]] entry is named `{endpoint}` any more")
            });
        }
        let secret = self.callback_secret.clone().ok_or_else(|| {
            "not posted: webhook.callback_secret is not set any more, to sign it".to_string()
        })?;
        let url = HttpUrl::parse(url.unwrap_or_default())
            .map_err(|e| format!("not posted: the batch's callback_url {e}"))?;
        Ok(Target {
            url: url.url().clone(),
            secret,
        })
    }

    /// Whether `group` may be posted now: its lane has a post to spare, and the
    /// group is full or the lane has nothing in flight. A smaller group waits for
    /// the lane's posts to end, gathering what is claimed meanwhile, so a busy
    /// endpoint gets full posts and an idle one gets each event at once.
    fn may_post(&self, group: &Group, busy: &HashMap<String, usize>) -> bool {
        let sending = busy.get(&group.lane).copied().unwrap_or(0);
        sending < self.per_endpoint && (sending == 0 || group.deliveries.len() >= self.batch_size)
    }

    /// Moves what fits of `group` into the last group held for its lane, so that
    /// the lane's next post goes full.
    fn top_up(&self, held: &mut VecDeque<Group>, group: &mut Group) {
        if let Some(last) = held.iter_mut().rev().find(|g| g.lane == group.lane) {
            let room = self.batch_size.saturating_sub(last.deliveries.len());
            let n = room.min(group.deliveries.len());
            last.deliveries.extend(group.deliveries.drain(..n));
        }
    }

    /// Starts posting `group`.
    fn dispatch(
        self: &Arc<Self>,
        group: Group,
        in_flight: &mut JoinSet<(Group, Posted)>,
        busy: &mut HashMap<String, usize>,
    ) {
        *busy.entry(group.lane.clone()).or_default() += 1;
        let this = Arc::clone(self);
        in_flight.spawn(async move {
            let posted = this.post(&group).await;
            (group, posted)
        });
    }

    /// Posts one group: its events as a JSON array, signed.
    async fn post(&self, group: &Group) -> Posted {
        let target = match &group.target {
            Ok(target) => target,
            Err(error) => {
                return Posted::Refused {
                    error: error.clone(),
                    retry_after: None,
                };
            }
        };
        let events: Vec<_> = group.deliveries.iter().map(|d| &d.event).collect();
        let body = serde_json::to_vec(&events).expect("events serialize");
        let id = request_id(events.iter().map(|e| e.id.as_str()));
        let timestamp = jiff::Timestamp::now().as_second();
        let mut request = self
            .client
            .post(target.url.clone())
            .header("content-type", "application/json")
            .header("user-agent", concat!("herald/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers(&target.secret, &id, timestamp, &body) {
            request = request.header(name, value);
        }
        let who = format!("webhook `{}`", group.endpoint);
        match exchange(request.body(body), &who).await {
            Ok(answer) if answer.status.is_success() => Posted::Taken,
            Ok(answer) => Posted::Refused {
                error: format!("{who}: {}", answer.unexplained()),
                retry_after: answer.retry_after,
            },
            Err(e) => Posted::Refused {
                error: e.to_string(),
                retry_after: None,
            },
        }
    }

    /// Counts a post that ended and answers what it makes of its deliveries, to
    /// settle.
    fn finished(
        &self,
        done: Result<(Group, Posted), tokio::task::JoinError>,
        busy: &mut HashMap<String, usize>,
        failing: &mut HashSet<String>,
    ) -> Vec<(DeliveryKey, DeliveryOutcome)> {
        let (group, posted) = match done {
            Ok(done) => done,
            Err(e) => {
                // Its deliveries come back when their lease lapses.
                tracing::error!(error = %e, "a webhook post panicked");
                return Vec::new();
            }
        };
        if let Some(n) = busy.get_mut(&group.lane) {
            *n = n.saturating_sub(1);
        }
        match &posted {
            Posted::Taken => {
                failing.remove(&group.lane);
                self.metrics
                    .webhook_posted(&group.endpoint, group.deliveries.len() as u64);
            }
            Posted::Refused { error, .. } => {
                failing.insert(group.lane.clone());
                tracing::warn!(endpoint = %group.endpoint, events = group.deliveries.len(), %error, "a webhook post failed");
            }
        }
        self.outcomes(&group, &posted)
    }

    /// What `posted` makes of each of `group`'s deliveries.
    fn outcomes(&self, group: &Group, posted: &Posted) -> Vec<(DeliveryKey, DeliveryOutcome)> {
        let now = now_ms();
        group
            .deliveries
            .iter()
            .map(|d| {
                let outcome =
                    self.rule
                        .outcome(posted, d.attempts, d.first_at_ms, now, fastrand::f64());
                if let DeliveryOutcome::Failed { error } = &outcome {
                    tracing::warn!(endpoint = %group.endpoint, event = %d.event.id, %error, "a webhook event failed: its retry window is over");
                }
                (d.key, outcome)
            })
            .collect()
    }

    async fn settle(&self, settled: Vec<(DeliveryKey, DeliveryOutcome)>) {
        if settled.is_empty() {
            return;
        }
        if let Err(e) = self.queue.settle_deliveries(settled, now_ms()).await {
            // Their leases lapse and they are posted again: at least once.
            tracing::warn!(error = %e, "settling webhook deliveries failed; they will be posted again");
        }
    }

    async fn prune(&self) {
        let before = now_ms() - millis(self.keep_posted);
        match self.queue.prune_deliveries(before, PRUNE_LIMIT).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "old posted webhook deliveries deleted"),
            Err(e) => {
                tracing::warn!(error = %e, "pruning posted webhook deliveries failed; will try again")
            }
        }
    }
}

#[cfg(test)]
mod tests;
