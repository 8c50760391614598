#!/usr/bin/env python3
"""A real SMTP server for Herald's tests, built on aiosmtpd.

Listens on 127.0.0.1 (port 0 picks a free one) and prints `READY <port>` once it
accepts connections. Every message it accepts is parsed with Python's own `email`
package and written as one JSON file to --out, so a test checks what a mail client
would see, decoded by a parser Herald does not share. Replies can be scripted per
recipient, at RCPT or at the end of DATA; DATA can be made to stall.

Examples:
  sink.py --out DIR --rcpt 'gone@shop.test=550 5.1.1 no such user'
  sink.py --out DIR --auth user:secret --starttls --tls-dir DIR2
"""

import argparse
import asyncio
import email
import email.policy
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def scripted(values):
    """`address=reply` pairs as a dict, addresses in lower case."""
    table = {}
    for value in values:
        address, sep, reply = value.partition("=")
        if not sep or not reply:
            sys.exit(f"sink: expected ADDRESS=REPLY, got {value!r}")
        table[address.strip().lower()] = reply.strip()
    return table


def certificates(directory):
    """A throwaway CA and a server certificate it signed, for localhost and
    127.0.0.1, made with the openssl command line; returns the server's (cert, key).
    The CA is left in `ca.pem` for the client to trust."""
    os.makedirs(directory, exist_ok=True)
    path = lambda name: os.path.join(directory, name)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    with open(path("server.ext"), "w") as f:
        f.write(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        )
    steps = [
        ["openssl", "req", "-x509", *ec, "-keyout", path("ca.key"), "-out", path("ca.pem"),
         "-days", "2", "-subj", "/CN=Herald test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", *ec, "-keyout", path("server.key"), "-out", path("server.csr"),
         "-subj", "/CN=localhost"],
        ["openssl", "x509", "-req", "-in", path("server.csr"), "-CA", path("ca.pem"),
         "-CAkey", path("ca.key"), "-CAcreateserial", "-out", path("server.pem"),
         "-days", "2", "-extfile", path("server.ext")],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            sys.exit(f"sink: {' '.join(step[:2])} failed: {done.stderr}")
    return path("server.pem"), path("server.key")


def header(message, name):
    value = message[name]
    return None if value is None else str(value)


def mailbox(message, name):
    """The first mailbox of an address header: (display name, address)."""
    value = message[name]
    if value is None or not value.addresses:
        return None
    first = value.addresses[0]
    return {"name": first.display_name, "address": first.addr_spec}


class Sink:
    def __init__(self, args):
        self.out = args.out
        self.rcpt = scripted(args.rcpt)
        self.data = scripted(args.data)
        self.stall = {a: float(s) for a, s in scripted(args.stall_data).items()}
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.rcpt.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        recipients = [a.lower() for a in envelope.rcpt_tos]
        for address in recipients:
            if address in self.stall:
                await asyncio.sleep(self.stall[address])
        for address in recipients:
            if address in self.data:
                return self.data[address]
        self.count += 1
        raw = envelope.original_content
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "peer_port": session.peer[1],
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "auth_user": session.auth_data.login.decode() if session.authenticated else None,
            "raw": raw.decode("utf-8", "replace"),
            "raw_is_ascii": raw.isascii(),
            "from": mailbox(parsed, "From"),
            "to": mailbox(parsed, "To"),
            "reply_to": mailbox(parsed, "Reply-To"),
            "subject": header(parsed, "Subject"),
            "message_id": header(parsed, "Message-ID"),
            "date": header(parsed, "Date"),
            "mime_version": header(parsed, "MIME-Version"),
            "list_unsubscribe": header(parsed, "List-Unsubscribe"),
            "list_unsubscribe_post": header(parsed, "List-Unsubscribe-Post"),
            "content_type": parsed.get_content_type(),
            "charset": parsed.get_content_charset(),
            "transfer_encoding": header(parsed, "Content-Transfer-Encoding"),
            "body": parsed.get_content(),
            "defects": [repr(d) for d in parsed.defects]
            + [repr(d) for name in parsed.keys() for d in parsed[name].defects],
        }
        name = os.path.join(self.out, f"{self.count:05}.json")
        with open(name + ".tmp", "w") as f:
            json.dump(record, f)
        os.replace(name + ".tmp", name)  # readers never see half a file
        return f"250 2.0.0 Ok: queued as sink-{self.count}"


async def serve(args):
    os.makedirs(args.out, exist_ok=True)
    sink = Sink(args)
    tls = None
    if args.starttls or args.implicit_tls:
        if not args.tls_dir:
            sys.exit("sink: --starttls and --implicit-tls need --tls-dir")
        cert, key = certificates(args.tls_dir)
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)

    options = {"hostname": "sink.test", "enable_SMTPUTF8": True}
    if args.starttls:
        options.update(tls_context=tls, require_starttls=True)
    if args.auth:
        user, _, password = args.auth.partition(":")

        def authenticator(server, session, envelope, mechanism, data):
            ok = (
                isinstance(data, LoginPassword)
                and data.login.decode() == user
                and data.password.decode() == password
            )
            return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

        # Herald may send credentials in clear when configured with security = "none".
        options.update(authenticator=authenticator, auth_required=True, auth_require_tls=False)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(128)
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(sink, **options),
        sock=listener,
        ssl=tls if args.implicit_tls else None,
    )
    print(f"READY {listener.getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--out", required=True, help="directory for one JSON file per message")
    parser.add_argument("--rcpt", action="append", default=[], metavar="ADDRESS=REPLY",
                        help="answer RCPT TO:<ADDRESS> with REPLY, e.g. '550 5.1.1 no such user'")
    parser.add_argument("--data", action="append", default=[], metavar="ADDRESS=REPLY",
                        help="answer the end of DATA with REPLY for a message to ADDRESS")
    parser.add_argument("--stall-data", action="append", default=[], metavar="ADDRESS=SECONDS",
                        help="wait SECONDS before answering DATA for a message to ADDRESS")
    parser.add_argument("--auth", metavar="USER:PASSWORD", help="require AUTH PLAIN or LOGIN")
    parser.add_argument("--starttls", action="store_true", help="require STARTTLS")
    parser.add_argument("--implicit-tls", action="store_true", help="TLS from the first byte")
    parser.add_argument("--tls-dir", help="where the CA (ca.pem) and server certificate go")
    args = parser.parse_args()
    # aiosmtpd warns about AUTH without TLS, which the tests ask for on purpose.
    warnings.simplefilter("ignore")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
