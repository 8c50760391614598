// Herald's page: compose a batch, watch it go out, manage batches. It talks to the
// API like any client; routes are in the URL's hash (#/, #/batches, #/batches/<id>,
// #/replies, #/messages to find a person's messages)
// so a batch has its own address without server routes.

const $ = (selector, root = document) => root.querySelector(selector);
const TOKEN_KEY = 'herald.token';
const PREVIEW_DELAY_MS = 400;

// ---------------------------------------------------------------- API access

/** An API answer that was not a success, with its JSON body. */
class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

async function jsonOf(response) {
  const text = await response.text();
  try {
    return text ? JSON.parse(text) : {};
  } catch {
    return { error: 'not_json', message: `HTTP ${response.status}: ${text.slice(0, 200)}` };
  }
}

/**
 * fetch with the stored token. A 401 asks for a token once and tries again;
 * a network failure becomes an ApiError with status 0.
 */
async function request(path, { method = 'GET', headers = {}, body, signal } = {}) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const sent = new Headers(headers);
    const token = localStorage.getItem(TOKEN_KEY);
    if (token) sent.set('authorization', `Bearer ${token}`);
    let response;
    try {
      response = await fetch(path, { method, headers: sent, body, signal });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, { error: 'unreachable', message: `Herald cannot be reached (${e.message}).` });
    }
    if (response.status !== 401) return response;
    await askToken(await jsonOf(response), Boolean(token));
  }
  throw new ApiError(401, { error: 'unauthorized', message: 'The token was refused.' });
}

/** The JSON answer of a call; an ApiError unless it succeeded. */
async function api(path, options) {
  const response = await request(path, options);
  const body = await jsonOf(response);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

let tokenAsked = null;

/** Shows the token dialog (once for all callers waiting); resolves when a token is saved. */
function askToken(body, hadToken) {
  if (tokenAsked) return tokenAsked;
  const dialog = $('#token-dialog');
  const error = $('#token-error');
  error.hidden = !hadToken;
  error.textContent = hadToken ? `The saved token was refused: ${body.message || 'unauthorized'}` : '';
  tokenAsked = new Promise((resolve, reject) => {
    const done = () => {
      $('#token-form').removeEventListener('submit', save);
      $('#token-cancel').removeEventListener('click', cancel);
      dialog.removeEventListener('cancel', cancel);
      tokenAsked = null;
    };
    const save = (event) => {
      event.preventDefault();
      const token = $('#token').value.trim();
      if (!token) return;
      localStorage.setItem(TOKEN_KEY, token);
      $('#token').value = '';
      dialog.close();
      done();
      resolve();
    };
    const cancel = (event) => {
      event.preventDefault();
      dialog.close();
      done();
      reject(new ApiError(401, { error: 'unauthorized', message: body.message || 'This Herald needs an API token.' }));
    };
    $('#token-form').addEventListener('submit', save);
    $('#token-cancel').addEventListener('click', cancel);
    dialog.addEventListener('cancel', cancel);
  });
  dialog.showModal();
  $('#token').focus();
  return tokenAsked;
}

/**
 * Follows a batch's event stream (read with fetch, which can send the token),
 * calling onProgress(batch, finished) for each event. Resolves when the batch is
 * finished or the signal aborts; reconnects when the connection drops.
 */
async function follow(id, onProgress, signal) {
  let failures = 0;
  while (!signal.aborted) {
    try {
      const response = await request(`/v1/batches/${encodeURIComponent(id)}/events`, {
        headers: { accept: 'text/event-stream' },
        signal,
      });
      if (!response.ok) throw new ApiError(response.status, await jsonOf(response));
      if (await readEvents(response, onProgress)) return;
      failures = 0;
    } catch (e) {
      if (e.name === 'AbortError') return;
      if (e.status > 0 || ++failures > 20) throw e;
      await new Promise((resolve) => setTimeout(resolve, Math.min(500 * failures, 5000)));
    }
  }
}

/** Reads server-sent events until the stream ends; true when an `end` event came. */
async function readEvents(response, onProgress) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer = (buffer + value).replace(/\r\n?/g, '\n');
    let cut;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') event = text;
        else if (field === 'data') data.push(text);
      }
      if (event !== 'progress' && event !== 'end') continue;
      const finished = event === 'end';
      onProgress(JSON.parse(data.join('\n')), finished);
      if (finished) {
        reader.cancel().catch(() => {});
        return true;
      }
    }
  }
}

// ---------------------------------------------------------------- rendering

/** `text` with each `quoted` part as a code element, as the API writes names and values. */
function withCode(text) {
  return text.split('`').map((part, i) => (i % 2 ? h('code', {}, part) : part));
}

/**
 * The line each recipient of a CSV starts on, by recipient index, counted as the
 * server counts them: the header row is not a recipient, blank lines are skipped,
 * and a quoted field may span lines.
 */
function recordLines(text) {
  const starts = [];
  let line = 1;
  let quoted = false;
  let blank = true;
  let start = 1;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') quoted = !quoted;
    if ((c === '\n' || c === '\r') && !quoted) {
      if (c === '\r' && text[i + 1] === '\n') i++;
      if (!blank) starts.push(start);
      line++;
      blank = true;
      start = line;
      continue;
    }
    if (c === '\n') line++;
    if (c !== '\r' && c !== '\n' && c !== '\uFEFF') blank = false;
  }
  if (!blank) starts.push(start);
  return starts.slice(1);
}

/** `recordLines` of the recipients being composed: pasted text, or a chosen file. */
async function composedLines(csv) {
  return recordLines(typeof csv === 'string' ? csv : await csv.text());
}

/** An element with properties and children (strings become text, never HTML). */
function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'class') element.className = value;
    else if (key.startsWith('data-') || key.startsWith('aria-')) element.setAttribute(key, value);
    else element[key] = value;
  }
  element.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

const number = new Intl.NumberFormat();

function when(text) {
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? text : date.toLocaleString();
}

function duration(seconds) {
  if (seconds < 1) return 'under a second';
  if (seconds < 60) return `${Math.ceil(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

const CONTROLS = { 'template.body': '#body', 'template.subject': '#subject', template: '#body', template_id: '#template-id', channel: '#channel', recipients: '#recipients' };

/**
 * Shows an error in `box`: what went wrong, where (the field, the line or the
 * recipient), and each rejected recipient when none could be sent to.
 */
function showError(box, error, lines = null) {
  const body = error instanceof ApiError ? error.body : { message: String(error) };
  const status = error instanceof ApiError && error.status ? ` (HTTP ${error.status})` : '';
  box.replaceChildren(h('p', {}, h('strong', {}, withCode(body.message || 'Something went wrong.')), status));
  if (body.field) box.append(h('p', {}, 'Where: ', h('code', {}, body.field)));
  if (Array.isArray(body.rejected) && body.rejected.length) box.append(rejectionList(body.rejected, lines));
  box.hidden = false;
  const field = body.field || '';
  const control = CONTROLS[field] || (/^(line |recipients\[)/.test(field) ? '#recipients' : null);
  if (control && $(control)) {
    $(control).setAttribute('aria-invalid', 'true');
    $(control).setAttribute('aria-describedby', box.id);
  }
}

function clearError(box) {
  box.hidden = true;
  box.replaceChildren();
  for (const control of document.querySelectorAll('[aria-invalid]')) {
    control.removeAttribute('aria-invalid');
    control.removeAttribute('aria-describedby');
  }
}

const SHOWN_REJECTIONS = 20;

/**
 * The rejected recipients, each named by its CSV line when `lines` (from
 * `recordLines`) has it, else by its index; `code` in the API's words is shown as code.
 */
function rejectionList(rejected, lines = null) {
  const where = (r) => (lines && lines[r.index] ? `line ${lines[r.index]}` : `index ${r.index}`);
  const list = h('ul', { class: 'rejections' },
    rejected.slice(0, SHOWN_REJECTIONS).map((r) =>
      h('li', {}, `${where(r)}: `, h('code', {}, r.to), `: ${r.reason.replaceAll('_', ' ')}`, r.detail ? [' — ', withCode(r.detail)] : '')));
  if (rejected.length > SHOWN_REJECTIONS) list.append(h('li', {}, `and ${number.format(rejected.length - SHOWN_REJECTIONS)} more`));
  return list;
}

/**
 * Messages no longer waiting to go: sent, delivered, undelivered, failed, expired, cancelled.
 * Pending, sending, paused and unknown ones (whose send is asked about, then tried
 * again) are still to go.
 */
function settled(counts) {
  return counts.total - counts.pending - counts.sending - (counts.paused || 0) - (counts.unknown || 0);
}

/** Messages the provider took: sent, and those a receipt has since said more of. */
function sentCount(counts) {
  return counts.sent + (counts.delivered || 0) + (counts.undelivered || 0);
}

const COUNT_ORDER = ['sent', 'delivered', 'failed', 'expired', 'undelivered', 'unknown', 'cancelled', 'paused', 'sending', 'pending'];

/** A progress bar with counts, rate and ETA; `update(batch, finished)` refreshes it. */
function progressWidget(container) {
  const widget = $('#progress-template').content.firstElementChild.cloneNode(true);
  container.replaceChildren(widget);
  let announced = null;
  return {
    update(batch, finished) {
      const counts = batch.counts;
      const done = settled(counts);
      const percent = counts.total ? Math.floor((done * 100) / counts.total) : 100;
      const bar = $('.bar', widget);
      bar.setAttribute('aria-valuenow', String(percent));
      bar.setAttribute('aria-valuetext', `${percent} %: ${number.format(done)} of ${number.format(counts.total)} messages settled`);
      // The final width at once, with the words that say it is finished.
      $('.fill', widget).style.transition = finished ? 'none' : '';
      $('.fill', widget).style.width = `${percent}%`;
      $('.percent', widget).textContent = `${percent} %`;
      const keys = [...COUNT_ORDER.filter((k) => k in counts), ...Object.keys(counts).filter((k) => k !== 'total' && !COUNT_ORDER.includes(k))];
      const parts = keys.filter((k) => counts[k] || k === 'sent' || k === 'failed').map((k) => `${k} ${number.format(counts[k])}`);
      $('.counts', widget).textContent = `${parts.join(' · ')} of ${number.format(counts.total)}`;
      widget.classList.toggle('has-failed', counts.failed + (counts.expired || 0) > 0);
      let rate = '';
      if (finished || batch.state === 'done' || batch.state === 'cancelled') rate = `Finished: ${batch.state}.`;
      else if (batch.state === 'paused') rate = 'Paused.';
      else if (typeof batch.rate_per_sec === 'number') {
        rate = `${batch.rate_per_sec.toFixed(1)} messages/s`;
        if (typeof batch.eta_seconds === 'number') rate += ` · about ${duration(batch.eta_seconds)} left`;
      }
      $('.progress-rate', widget).textContent = rate;
      // Screen readers hear every tenth and the end, not each of up to four updates a second.
      const step = rate.startsWith('Finished') ? 'end' : Math.floor(percent / 10);
      if (step !== announced) {
        announced = step;
        $('.announce', widget).textContent = `${percent} % of the messages settled. ${rate}`;
      }
    },
  };
}

// ---------------------------------------------------------------- compose

const compose = {
  previewTimer: null,
  previewAbort: null,
  sending: false,
  watch: null,
  templates: [],
};

function source() {
  return document.querySelector('input[name="source"]:checked').value;
}

/** The batch as the form describes it: query options and the CSV body, or why it is incomplete. */
function composed() {
  const channel = $('#channel').value;
  const params = new URLSearchParams({ channel });
  if (source() === 'stored') {
    const id = $('#template-id').value;
    if (!id) return { missing: `Choose a stored ${channel === 'sms' ? 'SMS' : 'e-mail'} template.` };
    params.set('template_id', id);
  } else {
    const body = $('#body').value;
    if (!body.trim()) return { missing: 'Write the message.' };
    params.set('template', body);
    if (channel === 'email') params.set('subject', $('#subject').value);
  }
  const file = $('#csv-file').files[0];
  const csv = file || $('#recipients').value;
  if (!file && !csv.trim()) return { missing: 'Add recipients.' };
  return { params, csv };
}

function csvHeaders(csv) {
  // Pasted text goes out as UTF-8; a file's bytes go as they are, and the server
  // tells UTF-8 from GBK by itself.
  return { 'content-type': csv instanceof File ? 'text/csv' : 'text/csv; charset=utf-8' };
}

function schedulePreview() {
  clearTimeout(compose.previewTimer);
  compose.previewTimer = setTimeout(preview, PREVIEW_DELAY_MS);
  $('#preview-pane').setAttribute('aria-busy', 'true');
  if (!compose.sending) {
    $('#send').disabled = false;
    clearError($('#send-error'));
  }
}

async function preview() {
  compose.previewAbort?.abort();
  const status = $('#preview-status');
  const batch = composed();
  if (batch.missing) {
    status.textContent = batch.missing;
    $('#preview-pane').setAttribute('aria-busy', 'false');
    $('#preview-summary').replaceChildren();
    $('#preview-list').replaceChildren();
    $('#preview-rejected').replaceChildren();
    return;
  }
  const abort = new AbortController();
  compose.previewAbort = abort;
  status.textContent = 'Checking…';
  batch.params.set('dry_run', 'true');
  try {
    const report = await api(`/v1/batches?${batch.params}`, {
      method: 'POST', headers: csvHeaders(batch.csv), body: batch.csv, signal: abort.signal,
    });
    renderPreview(report, report.rejected?.length ? await composedLines(batch.csv) : null);
    $('#preview-pane').setAttribute('aria-busy', 'false');
  } catch (e) {
    if (e.name === 'AbortError') return;
    $('#preview-pane').setAttribute('aria-busy', 'false');
    const box = h('div', { class: 'error', id: 'preview-error' });
    showError(box, e);
    status.textContent = 'This batch cannot be sent as it is:';
    $('#preview-summary').replaceChildren(box);
    $('#preview-list').replaceChildren();
    $('#preview-rejected').replaceChildren();
  }
}

function renderPreview(report, lines) {
  const rejected = report.rejected || [];
  $('#preview-status').textContent =
    `${number.format(report.accepted)} ${report.accepted === 1 ? 'message' : 'messages'} ready` +
    (rejected.length ? `, ${number.format(rejected.length)} recipients rejected.` : '.');
  const facts = [['Provider', report.provider]];
  if (report.sms) {
    facts.push(['Segments', number.format(report.sms.segments)]);
    facts.push(['GSM-7', `${number.format(report.sms.gsm7.messages)} messages, ${number.format(report.sms.gsm7.segments)} segments`]);
    facts.push(['UCS-2', `${number.format(report.sms.ucs2.messages)} messages, ${number.format(report.sms.ucs2.segments)} segments`]);
  }
  if (report.cost) facts.push(['Cost', `${report.cost.amount} ${report.cost.currency || ''}`.trim()]);
  if (typeof report.eta_seconds === 'number') facts.push(['Takes', `about ${duration(report.eta_seconds)} at the provider's rate`]);
  $('#preview-summary').replaceChildren(h('dl', { class: 'facts' }, facts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])));
  $('#preview-list').replaceChildren(...(report.preview || []).map((m) => h('li', { class: 'message' },
    h('p', { class: 'to' }, h('code', {}, m.to),
      m.encoding ? h('span', { class: 'tag' }, m.encoding === 'gsm7' ? 'GSM-7' : 'UCS-2') : null,
      m.segments ? h('span', { class: 'tag' }, `${m.segments} ${m.segments === 1 ? 'segment' : 'segments'}`) : null),
    m.subject ? h('p', { class: 'subject' }, m.subject) : null,
    h('p', { class: 'text' }, m.body))));
  $('#preview-rejected').replaceChildren(...(rejected.length ? [h('h3', {}, 'Rejected'), rejectionList(rejected, lines)] : []));
}

async function send(event) {
  event.preventDefault();
  if (compose.sending) return;
  const button = $('#send');
  const box = $('#send-error');
  clearError(box);
  const batch = composed();
  if (batch.missing) {
    showError(box, batch.missing);
    return;
  }
  compose.sending = true;
  button.disabled = true;
  const status = $('#send-status');
  $('#progress-pane').hidden = false;
  $('#open-batch').hidden = true;
  $('#compose-progress').replaceChildren();
  status.textContent = 'Sending…';
  try {
    const report = await api(`/v1/batches?${batch.params}`, { method: 'POST', headers: csvHeaders(batch.csv), body: batch.csv });
    const rejected = report.rejected?.length || 0;
    status.textContent = `Accepted: ${number.format(report.accepted)} messages queued` +
      (rejected ? `, ${number.format(rejected)} recipients rejected.` : '.');
    $('#open-batch').href = `#/batches/${report.batch_id}`;
    $('#open-batch').hidden = false;
    watchFromCompose(report.batch_id);
  } catch (e) {
    status.textContent = 'Not sent.';
    $('#progress-pane').hidden = true;
    const rejected = e instanceof ApiError && e.body?.rejected?.length;
    showError(box, e, rejected ? await composedLines(batch.csv) : null);
    button.disabled = false;
  } finally {
    compose.sending = false;
  }
}

function watchFromCompose(id) {
  compose.watch?.abort();
  const abort = new AbortController();
  compose.watch = abort;
  const widget = progressWidget($('#compose-progress'));
  follow(id, (batch, finished) => widget.update(batch, finished), abort.signal)
    .catch((e) => showError($('#send-error'), e));
}

async function loadTemplates() {
  const templates = [];
  let after = '';
  try {
    for (let page = 0; page < 10; page++) {
      const answer = await api(`/v1/templates?limit=1000${after}`);
      templates.push(...answer.templates);
      if (!answer.next_after) break;
      after = `&after=${encodeURIComponent(answer.next_after)}`;
    }
  } catch (e) {
    showError($('#send-error'), e);
  }
  compose.templates = templates;
  fillTemplates();
}

function fillTemplates() {
  const channel = $('#channel').value;
  const select = $('#template-id');
  const current = select.value;
  const usable = compose.templates.filter((t) => t.channel === channel);
  select.replaceChildren(
    h('option', { value: '' }, usable.length ? 'Choose…' : `No stored ${channel} templates`),
    ...usable.map((t) => h('option', { value: t.id, selected: t.id === current }, t.id)));
  showTemplateText();
}

function showTemplateText() {
  const template = compose.templates.find((t) => t.id === $('#template-id').value);
  $('#template-text').textContent = template ? [template.subject, template.body].filter(Boolean).join(' — ') : '';
}

function fitChannel() {
  const stored = source() === 'stored';
  $('#inline-fields').hidden = stored;
  $('#stored-fields').hidden = !stored;
  $('#subject-field').hidden = $('#channel').value !== 'email';
  fillTemplates();
}

function setUpCompose() {
  const form = $('#compose');
  form.addEventListener('submit', send);
  form.addEventListener('input', schedulePreview);
  form.addEventListener('change', (event) => {
    // Stored templates are read again on choosing one: they may have changed since.
    if (event.target.matches('input[name="source"]') && source() === 'stored') loadTemplates();
    if (event.target.matches('#channel, input[name="source"]')) fitChannel();
    if (event.target.matches('#template-id')) showTemplateText();
    if (event.target.matches('#csv-file')) $('#file-note').hidden = !$('#csv-file').files.length;
    schedulePreview();
  });
  $('#clear-file').addEventListener('click', () => {
    $('#csv-file').value = '';
    $('#file-note').hidden = true;
    schedulePreview();
  });
  fitChannel();
  loadTemplates();
}

// ---------------------------------------------------------------- batches

const list = { before: null };

/** An amount in a provider's currency, when it has one. */
function money(amount, currency) {
  return currency ? `${amount} ${currency}` : String(amount);
}

/** Each priced provider's spend today, and whether its daily budget pauses it. */
async function loadSpend() {
  try {
    const { providers } = await api('/v1/spend');
    $('#spend').replaceChildren(...providers.map((p) => {
      let text = `${p.provider}: ${money(p.spent, p.currency)} spent on ${p.day}`;
      if (p.daily_budget !== undefined) text += ` of a daily budget of ${money(p.daily_budget, p.currency)}`;
      if (p.paused_until) text += ` — budget spent, sending paused until ${when(p.paused_until)}`;
      return h('p', { class: p.paused_until ? 'warn' : 'hint' }, text);
    }));
  } catch (e) {
    showError($('#batches-error'), e);
  }
}

async function loadBatches(more) {
  const body = $('#batches-body');
  const status = $('#batches-status');
  clearError($('#batches-error'));
  if (!more) {
    list.before = null;
    body.replaceChildren();
  }
  status.textContent = 'Loading…';
  if (!more) loadSpend();
  try {
    const before = list.before ? `&before=${encodeURIComponent(list.before)}` : '';
    const page = await api(`/v1/batches?limit=25${before}`);
    body.append(...page.batches.map((b) => h('tr', {},
      h('td', {}, h('a', { href: `#/batches/${b.id}` }, h('code', {}, b.id))),
      h('td', {}, when(b.created_at)),
      h('td', {}, b.channel),
      h('td', {}, b.state),
      h('td', { class: 'num' }, number.format(sentCount(b.counts))),
      h('td', { class: 'num' }, number.format(b.counts.failed)),
      h('td', { class: 'num' }, number.format(b.counts.total)))));
    list.before = page.next_before;
    $('#batches-more').hidden = !page.next_before;
    status.textContent = body.children.length ? '' : 'No batches yet.';
  } catch (e) {
    status.textContent = '';
    showError($('#batches-error'), e);
  }
}

// ---------------------------------------------------------------- replies

const replies = { after: null };
const keywordNames = { opt_out: 'opted out', opt_in: 'opted in' };

async function loadReplies(more) {
  const body = $('#replies-body');
  const status = $('#replies-status');
  clearError($('#replies-error'));
  if (!more) {
    replies.after = null;
    body.replaceChildren();
  }
  status.textContent = 'Loading…';
  try {
    const after = replies.after ? `&after=${replies.after}` : '';
    const page = await api(`/v1/replies?limit=50${after}`);
    body.append(...page.replies.map((r) => h('tr', {},
      h('td', {}, when(r.received_at)),
      h('td', {}, r.from),
      h('td', {}, r.body),
      h('td', {}, keywordNames[r.keyword] || ''),
      h('td', {}, r.answers
        ? h('a', { href: `#/batches/${r.answers.batch_id}` }, r.answers.ref || r.answers.message_id)
        : ''))));
    replies.after = page.next_after;
    $('#replies-more').hidden = !page.next_after;
    status.textContent = body.children.length ? '' : 'No replies yet.';
  } catch (e) {
    status.textContent = '';
    showError($('#replies-error'), e);
  }
}

// ---------------------------------------------------------------- finding messages

const found = { query: '', before: null };

/** Messages to the recipient or with the ref in the search form, newest first. */
async function findMessages(more) {
  const body = $('#messages-body');
  const status = $('#messages-status');
  clearError($('#messages-error'));
  if (!more) {
    const query = new URLSearchParams();
    for (const name of ['to', 'ref']) {
      const value = $(`#find-${name}`).value.trim();
      if (value) query.set(name, value);
    }
    found.query = query.toString();
    found.before = null;
    body.replaceChildren();
  }
  if (!found.query) {
    status.textContent = 'Give a recipient, a ref, or both.';
    return;
  }
  status.textContent = 'Searching…';
  try {
    const before = found.before ? `&before=${found.before}` : '';
    const page = await api(`/v1/messages?limit=50&${found.query}${before}`);
    body.append(...page.messages.map((m) => h('tr', {},
      h('td', {}, when(m.created_at)),
      h('td', {}, h('a', { href: `#/batches/${m.batch_id}` }, h('code', {}, m.batch_id.slice(0, 8)))),
      h('td', {}, m.to),
      h('td', {}, m.ref || ''),
      h('td', {}, m.state),
      h('td', {}, m.provider))));
    found.before = page.next_before;
    $('#messages-more').hidden = !page.next_before;
    status.textContent = body.children.length ? '' : 'No messages found.';
  } catch (e) {
    status.textContent = '';
    showError($('#messages-error'), e);
  }
}

// ---------------------------------------------------------------- audit trail

const audit = { before: null };

async function loadAudit(more) {
  const body = $('#audit-body');
  const status = $('#audit-status');
  clearError($('#audit-error'));
  if (!more) {
    audit.before = null;
    body.replaceChildren();
  }
  status.textContent = 'Loading…';
  try {
    const before = audit.before ? `&before=${audit.before}` : '';
    const page = await api(`/v1/audit?limit=50${before}`);
    const batchAction = new Set(['submit', 'pause', 'resume', 'cancel', 'retry']);
    body.append(...page.entries.map((e) => h('tr', {},
      h('td', {}, when(e.at)),
      h('td', {}, e.actor),
      h('td', {}, e.action),
      h('td', {}, batchAction.has(e.action) && e.target
        ? h('a', { href: `#/batches/${e.target}` }, e.target)
        : e.target),
      h('td', {}, e.result))));
    audit.before = page.next_before;
    $('#audit-more').hidden = !page.next_before;
    status.textContent = body.children.length ? '' : 'No actions recorded yet.';
  } catch (e) {
    status.textContent = '';
    showError($('#audit-error'), e);
  }
}

// ---------------------------------------------------------------- one batch

const view = { id: null, abort: null, widget: null, failedAfter: null, failedState: 'failed', failedCount: null, failedLoads: 0, watching: false };

/** Messages a retry sends again: failed, and expired (not sent by the deadline). */
function unsentCount(counts) {
  return counts.failed + (counts.expired || 0);
}

function renderBatch(batch, finished = false) {
  const facts = [['State', batch.state], ['Channel', batch.channel], ['Created', when(batch.created_at)],
    ['Sends from', when(batch.send_at)], ['Priority', String(batch.priority)], ['Source', batch.source]];
  if (batch.expires_at) facts.splice(4, 0, ['Not sent after', when(batch.expires_at)]);
  if (batch.max_cost !== undefined) facts.push(['Spent', `${batch.spent} of its cap of ${batch.max_cost}`]);
  $('#batch-facts').replaceChildren(...facts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]).flat());
  view.widget.update(batch, finished);
  const live = ['queued', 'sending'].includes(batch.state);
  const enable = { pause: live, resume: batch.state === 'paused', cancel: live || batch.state === 'paused', retry: unsentCount(batch.counts) > 0 };
  for (const button of document.querySelectorAll('#view-batch [data-action]')) button.disabled = !enable[button.dataset.action];
  if (unsentCount(batch.counts) !== view.failedCount) {
    view.failedCount = unsentCount(batch.counts);
    loadFailed(false);
  }
}

async function openBatch(id, signal) {
  view.id = id;
  view.abort = signal;
  view.failedCount = null;
  $('#batch-id').textContent = id;
  $('#batch-facts').replaceChildren();
  $('#batch-action-status').textContent = '';
  $('#failed-body').replaceChildren();
  $('#failed-status').textContent = '';
  clearError($('#batch-error'));
  view.widget = progressWidget($('#batch-progress'));
  try {
    renderBatch(await api(`/v1/batches/${encodeURIComponent(id)}`, { signal }));
    watchBatch();
  } catch (e) {
    if (e.name !== 'AbortError') showError($('#batch-error'), e);
  }
}

/** Follows the open batch's events, unless already following them. */
function watchBatch() {
  if (view.watching) return;
  const { id, abort } = view;
  view.watching = true;
  follow(id, (batch, finished) => {
    if (view.id === id) renderBatch(batch, finished);
  }, abort)
    .catch((e) => showError($('#batch-error'), e))
    .finally(() => {
      if (view.abort === abort) view.watching = false;
    });
}

/** The failed messages, then the expired ones, a page at a time. */
async function loadFailed(more) {
  const id = view.id;
  const load = ++view.failedLoads;
  const body = $('#failed-body');
  if (!more) {
    view.failedState = 'failed';
    view.failedAfter = null;
  }
  const state = view.failedState;
  const after = view.failedAfter !== null ? `&after=${view.failedAfter}` : '';
  try {
    const page = await api(`/v1/batches/${encodeURIComponent(id)}/messages?state=${state}&limit=100${after}`, { signal: view.abort });
    if (view.id !== id || load !== view.failedLoads) return;
    const rows = page.messages.map((m) => h('tr', {},
      h('td', { class: 'num' }, String(m.index)),
      h('td', {}, h('code', {}, m.to)),
      h('td', {}, m.ref || ''),
      h('td', { class: 'num' }, String(m.attempts)),
      h('td', { class: 'wrap' }, state === 'expired' ? `expired: not sent by the deadline${m.last_error ? `; last error: ${m.last_error}` : ''}` : m.last_error || '')));
    if (more) body.append(...rows);
    else body.replaceChildren(...rows);
    const last = page.next_after === null || page.next_after === undefined;
    view.failedAfter = last ? null : page.next_after;
    if (last && state === 'failed') view.failedState = 'expired';
    $('#failed-more').hidden = last && (state === 'expired' || (view.failedCount || 0) <= body.children.length);
    $('#failed-status').textContent = body.children.length ? '' : 'No failed messages.';
    body.closest('.table-wrap').hidden = !body.children.length;
  } catch (e) {
    if (e.name !== 'AbortError') showError($('#batch-error'), e);
  }
}

async function control(action, button) {
  const status = $('#batch-action-status');
  clearError($('#batch-error'));
  button.disabled = true;
  status.textContent = `${button.textContent}…`;
  try {
    const batch = await api(`/v1/batches/${encodeURIComponent(view.id)}/${action}`, { method: 'POST', signal: view.abort });
    status.textContent = `${button.textContent}: done. The batch is ${batch.state}.`;
    renderBatch(batch);
    watchBatch();
  } catch (e) {
    if (e.name === 'AbortError') return;
    status.textContent = '';
    showError($('#batch-error'), e);
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- routing

let routeAbort = null;

function route() {
  const path = location.hash.replace(/^#/, '') || '/';
  const batch = path.match(/^\/batches\/([^/]+)$/);
  const views = { '/batches': 'batches', '/replies': 'replies', '/messages': 'messages', '/audit': 'audit' };
  const name = batch ? 'batch' : views[path] || 'compose';
  routeAbort?.abort();
  routeAbort = new AbortController();
  view.watching = false;
  for (const section of document.querySelectorAll('.view')) section.hidden = section.id !== `view-${name}`;
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (link.dataset.nav === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (name === 'batch') {
    document.title = 'Batch · Herald';
    openBatch(decodeURIComponent(batch[1]), routeAbort.signal);
  } else if (name === 'batches') {
    document.title = 'Batches · Herald';
    loadBatches(false);
  } else if (name === 'replies') {
    document.title = 'Replies · Herald';
    loadReplies(false);
  } else if (name === 'messages') {
    document.title = 'Find messages · Herald';
  } else if (name === 'audit') {
    document.title = 'Audit · Herald';
    loadAudit(false);
  } else {
    document.title = 'New batch · Herald';
  }
}

setUpCompose();
$('#batches-more').addEventListener('click', () => loadBatches(true));
$('#replies-more').addEventListener('click', () => loadReplies(true));
$('#find').addEventListener('submit', (event) => {
  event.preventDefault();
  findMessages(false);
});
$('#messages-more').addEventListener('click', () => findMessages(true));
$('#audit-more').addEventListener('click', () => loadAudit(true));
$('#failed-more').addEventListener('click', () => loadFailed(true));
for (const button of document.querySelectorAll('#view-batch [data-action]')) {
  button.addEventListener('click', () => control(button.dataset.action, button));
}
window.addEventListener('hashchange', route);
route();
