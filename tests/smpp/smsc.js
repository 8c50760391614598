#!/usr/bin/env node
// An SMSC for Herald's SMPP tests, built on the `smpp` package's server (a
// parser Herald does not share). Listens on 127.0.0.1 (a free port) and prints
// `READY <port>`; then one JSON line per PDU it receives, as the package decoded
// it. Each accepted submit_sm gets a delivery receipt (a deliver_sm with
// esm_class 0x04, the `id: … stat: … err: …` text and the receipted_message_id
// and message_state TLVs): DELIVRD, or UNDELIV for the numbers given with
// --undeliverable. With --hold-receipts no receipt goes until a JSON line on
// stdin, {"receipt": <message_id>}, asks for that one; it goes on a session
// bound then. A JSON line {"from": …, "to": …, "text": …} sends that message to
// every bound session as a person's reply.
//
// With --tls-key and --tls-cert (PEM files) it speaks TLS from the first byte.
// Each submit's short_message is printed as the octets received (hex) and as
// text; with --gsm7-packed, data_coding 0 is read as packed GSM 7-bit septets
// (GSM 03.38), decoded with the package's own GSM table.
//
//   smsc.js --system-id herald --password secret [--undeliverable 447700900999]
//           [--hold-receipts] [--tls-key key.pem --tls-cert cert.pem] [--gsm7-packed]

'use strict';

const fs = require('fs');
const readline = require('readline');
const smpp = require('smpp');
const { gsmCoder } = require('smpp/lib/defs');

const args = process.argv.slice(2);
const option = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const systemId = option('--system-id') || 'herald';
const password = option('--password') || 'secret';
const undeliverable = new Set(
  args.flatMap((a, i) => (a === '--undeliverable' ? [args[i + 1]] : [])),
);

const holdReceipts = args.includes('--hold-receipts');
const gsm7Packed = args.includes('--gsm7-packed');
const tlsKey = option('--tls-key');
const tlsCert = option('--tls-cert');
const tls = tlsKey && tlsCert ? { key: fs.readFileSync(tlsKey), cert: fs.readFileSync(tlsCert) } : {};

const bound = new Set();
// Receipts not sent yet (with --hold-receipts), by message_id.
const heldReceipts = new Map();
let nextId = 1;

// Keeps each short_message's octets as received, before the package decodes them.
const filter = smpp.PDU.prototype._filter;
smpp.PDU.prototype._filter = function (func) {
  if (func === 'decode' && Buffer.isBuffer(this.short_message)) {
    this.received_short_message = Buffer.from(this.short_message);
  }
  return filter.call(this, func);
};

// The text of GSM 7-bit septets packed after a header of `headerLength` octets,
// the first septet on a septet boundary. Octets hold no septet count: a last
// septet that only fills the last octet is read too, and GSM 03.38 has the
// sender make it a CR, which is dropped here as padding.
const unpackGsm7 = (octets, headerLength) => {
  const start = Math.ceil((headerLength * 8) / 7) * 7;
  const bits = octets.length * 8 - start;
  const septets = [];
  for (let i = 0; i < Math.floor(bits / 7); i++) {
    const bit = start + i * 7;
    const pair = octets[bit >> 3] | ((octets[(bit >> 3) + 1] || 0) << 8);
    septets.push((pair >> (bit & 7)) & 0x7f);
  }
  if (bits % 7 === 0 && septets[septets.length - 1] === 0x0d) septets.pop();
  return gsmCoder.decode(Buffer.from(septets), 0);
};

// The text of a submit's short_message, as this SMSC reads it.
const text = (pdu) => {
  const sm = pdu.short_message || {};
  const octets = pdu.received_short_message || Buffer.alloc(0);
  if (gsm7Packed && (pdu.data_coding & 0x0f) === 0) {
    return unpackGsm7(octets, pdu.esm_class & 0x40 && octets.length ? octets[0] + 1 : 0);
  }
  return typeof sm.message === 'string' ? sm.message : Buffer.from(sm.message || []).toString('hex');
};

const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
const hex = (buffers) => (buffers || []).map((b) => Buffer.from(b).toString('hex'));

const server = smpp.createServer(tls, (session) => {
  session.on('error', () => {});
  session.on('close', () => bound.delete(session));
  const bind = (pdu) => {
    const ok = pdu.system_id === systemId && pdu.password === password;
    print({ pdu: pdu.command, system_id: pdu.system_id, ok, interface_version: pdu.interface_version });
    session.send(pdu.response({ command_status: ok ? 0 : smpp.ESME_RBINDFAIL, system_id: 'smsc' }));
    if (ok) bound.add(session);
  };
  session.on('bind_transceiver', bind);
  session.on('bind_transmitter', bind);
  session.on('enquire_link', (pdu) => session.send(pdu.response()));
  session.on('unbind', (pdu) => {
    print({ pdu: 'unbind' });
    session.send(pdu.response());
    bound.delete(session);
  });
  session.on('deliver_sm_resp', (pdu) => print({ pdu: 'deliver_sm_resp', status: pdu.command_status }));
  session.on('submit_sm', (pdu) => {
    const id = `smsc-${nextId++}`;
    const sm = pdu.short_message || {};
    print({
      pdu: 'submit_sm',
      message_id: id,
      source_addr: pdu.source_addr,
      source_addr_ton: pdu.source_addr_ton,
      source_addr_npi: pdu.source_addr_npi,
      destination_addr: pdu.destination_addr,
      dest_addr_ton: pdu.dest_addr_ton,
      dest_addr_npi: pdu.dest_addr_npi,
      esm_class: pdu.esm_class,
      registered_delivery: pdu.registered_delivery,
      data_coding: pdu.data_coding,
      udh: hex(sm.udh),
      short_message: (pdu.received_short_message || Buffer.alloc(0)).toString('hex'),
      message: text(pdu),
      sar_msg_ref_num: pdu.sar_msg_ref_num,
      sar_total_segments: pdu.sar_total_segments,
      sar_segment_seqnum: pdu.sar_segment_seqnum,
    });
    session.send(pdu.response({ message_id: id }));
    if (!(pdu.registered_delivery & 0x01)) return;
    const failed = undeliverable.has(pdu.destination_addr);
    const stat = failed ? 'UNDELIV' : 'DELIVRD';
    const receipt = {
      source_addr: pdu.destination_addr,
      source_addr_ton: pdu.dest_addr_ton,
      destination_addr: pdu.source_addr,
      esm_class: smpp.ESM_CLASS.MC_DELIVERY_RECEIPT,
      short_message: `id:${id} sub:001 dlvrd:${failed ? '000' : '001'} submit date:2506011200 done date:2506011201 stat:${stat} err:${failed ? '001' : '000'} text:`,
      receipted_message_id: id,
      message_state: failed ? smpp.MESSAGE_STATE.UNDELIVERABLE : smpp.MESSAGE_STATE.DELIVERED,
    };
    if (holdReceipts) {
      heldReceipts.set(id, receipt);
    } else {
      session.deliver_sm(receipt);
    }
  });
});

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`READY ${server.address().port}\n`);
});

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line.trim()) return;
  const reply = JSON.parse(line);
  if (reply.receipt !== undefined) {
    const receipt = heldReceipts.get(reply.receipt);
    const session = bound.values().next().value;
    if (!receipt || !session) throw new Error(`cannot send the receipt of ${reply.receipt}`);
    heldReceipts.delete(reply.receipt);
    session.deliver_sm(receipt);
    return;
  }
  for (const session of bound) {
    session.deliver_sm({
      source_addr: reply.from,
      source_addr_ton: 1,
      source_addr_npi: 1,
      destination_addr: reply.to,
      short_message: reply.text,
    });
  }
});
process.stdin.on('end', () => process.exit(0));
