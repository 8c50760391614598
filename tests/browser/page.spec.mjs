// Herald's web page in a real browser: headless Chromium driven by Playwright.
//
//   node tests/browser/page.spec.mjs <herald base url> [<API token>]
//
// Run by the end-to-end test `the_page_…` (tests/e2e/page.rs), which starts a
// Herald whose provider refuses numbers ending in 7 on their first attempt, and
// which holds one reply from +8613900000001. With a
// token, Herald is expected to ask for it, and the page to ask the user once.
// Exits 0 when every check passes; otherwise prints what failed and exits 1.
// Chromium is Debian's (`apt-get install chromium`); CHROMIUM_PATH names another.

import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const [base, token] = process.argv.slice(2);
if (!base) {
  console.error('usage: node page.spec.mjs <herald base url> [<API token>]');
  process.exit(2);
}
const auth = token ? { authorization: `Bearer ${token}` } : {};
const RECIPIENTS = 200;
const REFUSED = 20; // the numbers ending in 7
const WAIT = { timeout: 30_000 };

const step = (what) => console.log(`- ${what}`);
// PAGE_SCREENSHOTS=<dir> keeps a picture of each screen, to look at the layout.
const shot = (page, name) =>
  process.env.PAGE_SCREENSHOTS ? page.screenshot({ path: `${process.env.PAGE_SCREENSHOTS}/${name}.png`, fullPage: true }) : null;
const text = (page, selector) => page.locator(selector).innerText();

function recipientsCsv(n) {
  const lines = ['to,name'];
  for (let i = 0; i < n; i++) lines.push(`+8613800000${String(i).padStart(3, '0')},n${i}`);
  return lines.join('\n');
}

/** Waits until the preview answers the form as it is (the pane is busy until then). */
const previewDone = (page) =>
  page.waitForFunction(() => document.querySelector('#preview-pane').getAttribute('aria-busy') === 'false', null, WAIT);

/** Waits for the preview and checks that it has `n` messages ready. */
async function previewReady(page, n) {
  await previewDone(page);
  const status = await text(page, '#preview-status');
  assert.ok(status.startsWith(`${n} ${n === 1 ? 'message' : 'messages'} ready`), status);
}

/** No horizontal scrolling: the document is no wider than the viewport. */
async function assertNoOverflow(page, where) {
  const { scroll, client } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    client: document.documentElement.clientWidth,
  }));
  assert.ok(scroll <= client, `${where}: the page is ${scroll}px wide in a ${client}px viewport`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
});
const problems = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  // Nothing the page loads by itself is missing (the icon included); the API's own 404s are answers.
  page.on('response', (r) => {
    if (r.status() === 404 && !new URL(r.url()).pathname.startsWith('/v1/')) problems.push(`404: ${r.url()}`);
  });
  page.on('console', (m) => {
    // A failed request is logged by the browser; the page shows those itself.
    if (m.type() === 'error' && !m.text().includes('Failed to load resource')) problems.push(`console: ${m.text()}`);
  });

  step('the page loads, with the compose form first');
  await page.goto(`${base}/`);
  await page.getByRole('heading', { name: 'New batch' }).waitFor(WAIT);
  assert.equal(await page.title(), 'New batch · Herald');

  if (token) {
    step('the page asks for the API token, and again when one is refused');
    const dialog = page.getByRole('dialog', { name: 'API token' });
    await dialog.waitFor(WAIT);
    await page.getByLabel('Token', { exact: true }).fill('herald_not_a_token');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.locator('#token-error').waitFor(WAIT);
    assert.match(await text(page, '#token-error'), /refused/);
    await page.getByLabel('Token', { exact: true }).fill(token);
    await page.getByRole('button', { name: 'Save' }).click();
    await dialog.waitFor({ state: 'hidden', ...WAIT });
  }

  step('an error the API answers names the field');
  await page.getByLabel('Body').fill('Hello {{ name');
  await page.locator('#recipients').fill('to,name\n+8613800000001,Li');
  await previewDone(page);
  const templateError = await text(page, '#preview-summary .error');
  assert.match(templateError, /template\.body/, templateError);
  assert.equal(await page.locator('#body').getAttribute('aria-invalid'), 'true');

  step('a batch nobody can receive is refused, each recipient with its reason');
  await page.getByLabel('Body').fill('Hello {{name}}');
  await page.locator('#recipients').fill('to,name\nnot-a-number,Li\n+86123,Wang');
  await page.getByRole('button', { name: 'Send' }).click();
  await page.locator('#send-error').waitFor(WAIT);
  const refusal = await text(page, '#send-error');
  assert.match(refusal, /none of the 2 recipients/, refusal);
  assert.match(refusal, /line 2: not-a-number: invalid address/, refusal);
  assert.match(refusal, /line 3: \+86123: invalid address/, refusal);
  assert.ok(!refusal.includes('`'), `the API's backticks are shown as code, not as marks: ${refusal}`);
  assert.ok(await page.getByRole('button', { name: 'Send' }).isEnabled(), 'Send works again after a refusal');

  const previewed = () => previewDone(page);
  const ready = (n) => previewReady(page, n);

  step('a CSV file is sent instead of the pasted lines');
  await page.locator('#csv-file').setInputFiles({
    name: 'recipients.csv',
    mimeType: 'text/csv',
    buffer: Buffer.from('\ufeffto,name\r\n+8613700000001,Zhang\r\n+8613700000002,Zhao\r\n'),
  });
  await ready(2);
  assert.match(await text(page, '#preview-list'), /Hello Zhang[\s\S]*Hello Zhao/);
  await page.getByRole('button', { name: 'Use the pasted lines' }).click();
  // Back to the two pasted lines, neither of them a number.
  await previewed();
  assert.match(await text(page, '#preview-summary'), /none of the 2/);

  step('a stored template of the channel can be chosen');
  const stored = await fetch(`${base}/v1/templates`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...auth },
    body: JSON.stringify({ id: 'greeting', channel: 'sms', body: 'Welcome, {{name}}!' }),
  });
  assert.equal(stored.status, 201, await stored.text());
  await page.getByLabel('Use a stored template').check();
  await page.locator('#template-id option[value="greeting"]').waitFor({ state: 'attached', ...WAIT });
  await page.getByLabel('Template', { exact: true }).selectOption('greeting');
  await page.locator('#recipients').fill('to,name\n+8613800000001,Li');
  await ready(1);
  assert.match(await text(page, '#preview-list'), /Welcome, Li!/);
  assert.match(await text(page, '#template-text'), /Welcome, \{\{name\}\}!/);
  await page.getByLabel('Write it here').check();

  step('an e-mail needs a subject and previews it');
  await page.getByLabel('Channel').selectOption('email');
  await page.getByLabel('Subject').fill('For {{name}}');
  await page.locator('#recipients').fill('to,name\nLi Wei <li@example.com>,Li');
  await ready(1);
  const mail = await text(page, '#preview-list');
  assert.match(mail, /For Li/, mail);
  assert.doesNotMatch(mail, /GSM-7|segment/, mail);
  await page.getByLabel('Channel').selectOption('sms');
  assert.ok(await page.getByLabel('Subject').isHidden(), 'SMS has no subject');

  step(`composing ${RECIPIENTS} recipients previews the first messages`);
  await page.locator('#recipients').fill(recipientsCsv(RECIPIENTS));
  await previewReady(page, RECIPIENTS);
  assert.equal(await page.locator('#send-error').isVisible(), false, 'the old error is gone once the form changes');
  const previews = page.locator('#preview-list li');
  assert.equal(await previews.count(), 5);
  const first = await previews.first().innerText();
  assert.match(first, /\+8613800000000/, first);
  assert.match(first, /GSM-7/, first);
  assert.match(first, /1 segment/, first);
  assert.match(first, /Hello n0/, first);
  assert.match(await text(page, '#preview-summary'), /Segments\s+200/);
  await shot(page, 'compose');

  step('Send answers at once, then the bar climbs to 100 %');
  // Every value the bar shows, from before the click on.
  await page.evaluate(() => {
    window.seenProgress = [];
    new MutationObserver(() => {
      const bar = document.querySelector('#compose-progress .bar');
      if (bar) window.seenProgress.push(Number(bar.getAttribute('aria-valuenow')));
    }).observe(document.querySelector('#compose-progress'), { subtree: true, childList: true, attributes: true });
  });
  const clicked = Date.now();
  await page.getByRole('button', { name: 'Send' }).click();
  await page.waitForFunction(() => document.querySelector('#send-status').textContent.startsWith('Accepted'), null, { timeout: 1_000 });
  const answeredIn = Date.now() - clicked;
  assert.ok(answeredIn < 1_000, `the page answered the click in ${answeredIn} ms`);
  assert.match(await text(page, '#send-status'), new RegExp(`Accepted: ${RECIPIENTS} messages queued`));
  assert.ok(await page.getByRole('button', { name: 'Send' }).isDisabled(), 'Send is disabled once the batch is accepted');
  console.log(`  accepted ${answeredIn} ms after the click`);

  const composeBar = page.locator('#compose-progress [role="progressbar"]');
  await page.waitForFunction(() => document.querySelector('#compose-progress .bar')?.getAttribute('aria-valuenow') === '100', null, WAIT);
  const seen = await page.evaluate(() => window.seenProgress);
  assert.ok(seen.some((v) => v > 0 && v < 100), `the bar showed progress on the way: ${seen.join(' ')}`);
  await page.waitForFunction(() => document.querySelector('#compose-progress .progress-rate').textContent.startsWith('Finished'), null, WAIT);
  const counts = await text(page, '#compose-progress .counts');
  assert.match(counts, new RegExp(`sent ${RECIPIENTS - REFUSED}\\b`), counts);
  assert.match(counts, new RegExp(`failed ${REFUSED}\\b`), counts);
  assert.equal(await composeBar.getAttribute('aria-valuenow'), '100');
  await shot(page, 'sent');

  step('the batch has its own page with its failed messages');
  await page.getByRole('link', { name: 'Open the batch' }).click();
  await page.waitForURL(/#\/batches\/[0-9a-f-]{36}$/, WAIT);
  const batchId = decodeURIComponent(new URL(page.url()).hash.split('/')[2]);
  await page.waitForFunction((n) => document.querySelectorAll('#failed-body tr').length === n, REFUSED, WAIT);
  const failedRow = await page.locator('#failed-body tr').first().innerText();
  assert.match(failedRow, /7\b/, failedRow);
  assert.match(await text(page, '#batch-facts'), /State\s+done/);
  await shot(page, 'batch-failed');
  assert.ok(await page.getByRole('button', { name: 'Pause' }).isDisabled(), 'a finished batch cannot be paused');

  step('Retry failed sends the failed messages again and the page follows');
  await page.getByRole('button', { name: 'Retry failed' }).click();
  await page.waitForFunction(() => document.querySelector('#failed-status').textContent === 'No failed messages.', null, WAIT);
  await page.waitForFunction(() => document.querySelector('#batch-progress .progress-rate').textContent.startsWith('Finished'), null, WAIT);
  const after = await text(page, '#batch-progress .counts');
  assert.match(after, new RegExp(`sent ${RECIPIENTS}\\b`), after);
  assert.match(after, /failed 0\b/, after);
  assert.equal(await page.locator('#failed-body tr').count(), 0);
  assert.ok(await page.getByRole('button', { name: 'Retry failed' }).isDisabled(), 'nothing is left to retry');

  step('the batches list shows the batch, newest first');
  await page.getByRole('link', { name: 'Batches', exact: true }).click();
  await page.locator('#batches-body tr').first().waitFor(WAIT);
  const newest = await page.locator('#batches-body tr').first().innerText();
  assert.ok(newest.includes(batchId), newest);
  assert.match(newest, /done/, newest);
  await shot(page, 'batches');

  step('a scheduled batch is paused, resumed and cancelled from its page');
  const scheduled = await fetch(`${base}/v1/batches`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...auth },
    body: JSON.stringify({
      channel: 'sms',
      template: { body: 'Later, {{name}}' },
      send_at: new Date(Date.now() + 3_600_000).toISOString(),
      recipients: [{ to: '+8613900000001', vars: { name: 'Li' } }, { to: '+8613900000002', vars: { name: 'Wang' } }],
    }),
  });
  assert.equal(scheduled.status, 202);
  const later = (await scheduled.json()).batch_id;
  await page.goto(`${base}/#/batches/${later}`);
  const state = (name) => page.waitForFunction((s) => /State\s+(\S+)/.exec(document.querySelector('#batch-facts').innerText)?.[1] === s, name, WAIT);
  await state('queued');
  assert.ok(await page.getByRole('button', { name: 'Resume' }).isDisabled(), 'a queued batch cannot be resumed');
  await page.getByRole('button', { name: 'Pause' }).click();
  await state('paused');
  assert.ok(await page.getByRole('button', { name: 'Pause' }).isDisabled(), 'a paused batch cannot be paused again');
  await page.getByRole('button', { name: 'Resume' }).click();
  await state('queued');
  await page.getByRole('button', { name: 'Cancel' }).click();
  await state('cancelled');
  await page.waitForFunction(() => document.querySelector('#batch-progress .bar').getAttribute('aria-valuenow') === '100', null, WAIT);
  assert.match(await text(page, '#batch-progress .counts'), /cancelled 2\b/);
  assert.match(await text(page, '#batch-action-status'), /The batch is cancelled/);

  step('the Replies view lists the reply the test posted, with its sender and text');
  await page.getByRole('link', { name: 'Replies' }).click();
  await page.getByRole('heading', { name: 'Replies' }).waitFor(WAIT);
  assert.equal(await page.title(), 'Replies · Herald');
  const row = page.locator('#replies-body tr', { hasText: '+8613900000001' });
  await row.waitFor(WAIT);
  assert.match(await row.innerText(), /收到，谢谢/);
  await shot(page, 'replies');

  step('Find messages lists the messages to a recipient across batches, linked to their batch');
  await page.getByRole('link', { name: 'Find messages' }).click();
  await page.getByRole('heading', { name: 'Find messages' }).waitFor(WAIT);
  assert.equal(await page.title(), 'Find messages · Herald');
  await page.locator('#find-to').fill('+8613900000001');
  await page.getByRole('button', { name: 'Find', exact: true }).click();
  const found = page.locator('#messages-body tr', { hasText: later.slice(0, 8) });
  await found.waitFor(WAIT);
  assert.match(await found.innerText(), /\+8613900000001[\s\S]*cancelled/);
  await shot(page, 'messages');

  step('the Audit view lists the cancel the page made, newest first, linked to its batch');
  await page.getByRole('link', { name: 'Audit' }).click();
  await page.getByRole('heading', { name: 'Audit trail' }).waitFor(WAIT);
  assert.equal(await page.title(), 'Audit · Herald');
  const cancelled = page.locator('#audit-body tr', { hasText: later }).filter({ hasText: 'cancel' });
  await cancelled.first().waitFor(WAIT);
  assert.match(await cancelled.first().innerText(), /\bok\b/);
  await shot(page, 'audit');

  step('a phone-sized screen gets one column and no sideways scrolling');
  const phone = await browser.newContext({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true });
  // A new browser profile: give it the token the first one saved.
  if (token) await phone.addInitScript((t) => localStorage.setItem('herald.token', t), token);
  const small = await phone.newPage();
  small.on('pageerror', (e) => problems.push(`phone page error: ${e.message}`));
  await small.goto(`${base}/`);
  // Long unbroken words, which must wrap or scroll inside their own boxes.
  const long = 'Lixiaolong'.repeat(12);
  await small.locator('#recipients').fill(`to,name\n+8613800000001,${long}\n+8613800000002,Li\n+8613800000003,Wang`);
  await small.getByLabel('Body').fill(`Hello {{name}}, see https://shop.example/${'a'.repeat(120)}`);
  await previewReady(small, 3);
  await assertNoOverflow(small, 'compose');
  await shot(small, 'phone-compose');
  const form = await small.locator('#compose').boundingBox();
  const pane = await small.locator('#preview-title').boundingBox();
  assert.ok(pane.y >= form.y + form.height, 'the preview comes below the form');
  for (const path of [`#/batches/${batchId}`, '#/batches']) {
    await small.goto(`${base}/${path}`);
    await small.locator('tbody tr, #failed-status:has-text("No failed")').first().waitFor(WAIT);
    await assertNoOverflow(small, path);
    await shot(small, `phone-${path.split('/')[1]}${path.split('/').length > 2 ? '-one' : ''}`);
  }
  await phone.close();
  await context.close();
} catch (e) {
  problems.unshift(e.stack || String(e));
} finally {
  await browser.close();
}

if (problems.length) {
  console.error(`FAILED:\n${problems.join('\n')}`);
  process.exit(1);
}
console.log('all page checks passed');
