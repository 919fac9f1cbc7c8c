#!/usr/bin/python3
"""sigv4_vectors.py — makes tests/unit/sigv4_vectors.h, the SigV4 requests test_sigv4.c
checks mta/sigv4.c against, signed by the clients that will call kiln: Debian's boto3
(python3-boto3 1.26 / python3-botocore 1.29, whose v4 signer is awscrt's C signer when
python3-awscrt is installed, as on Debian) and botocore's pure-Python SigV4Auth (the signer
Debian's awscli 2.9 uses). Also SES SMTP passwords made with AWS's documented derivation.

Run once by hand (its output is committed; the C test never runs Python):
    /usr/bin/python3 tests/unit/sigv4_vectors.py > tests/unit/sigv4_vectors.h
    /usr/bin/python3 tests/unit/sigv4_vectors.py --seeds tests/fuzz/corpus/sigv4
(the second writes the same requests as seeds of tests/fuzz/fuzz_sigv4.c).

The clock is pinned to 2026-12-06 01:00:00 UTC by replacing the datetime that botocore's
signers read (both call datetime.datetime.utcnow()). Requests are captured in the
'before-send' event, after signing, and never sent. urllib3 would add the Host header
(host:port, as botocore signs it); the vectors add it the same way.
"""
import base64
import datetime
import hashlib
import hmac
import types
import uuid
from urllib.parse import urlsplit

import boto3
import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

try:
    import botocore.crt.auth as crt_auth
except ImportError:        # python3-awscrt missing: boto3 would sign with SigV4Auth
    crt_auth = None

KEY_ID = 'AKIAKILNTEST0000001'
SECRET = 'kilnTestSecretKey/0123456789abcdefghijklm'
REGION = 'us-east-1'
ENDPOINT = 'http://127.0.0.1:8587'
NOW = (2026, 12, 6, 1, 0, 0)
NOW_MS = int(datetime.datetime(*NOW, tzinfo=datetime.timezone.utc).timestamp()) * 1000


class FixedDateTime(datetime.datetime):
    @classmethod
    def utcnow(cls):
        return cls(*NOW)


botocore.auth.datetime = types.SimpleNamespace(datetime=FixedDateTime)
if crt_auth:
    crt_auth.datetime = types.SimpleNamespace(datetime=FixedDateTime,
                                              timezone=datetime.timezone)


# amz-sdk-invocation-id (unsigned) from a counter, so that a rerun changes nothing
_uuid_count = [0]


def _fixed_uuid4():
    _uuid_count[0] += 1
    return uuid.UUID(int=_uuid_count[0])


uuid.uuid4 = _fixed_uuid4


class RecordingSigV4Auth(botocore.auth.SigV4Auth):
    """botocore's SigV4Auth, keeping the canonical request it signed."""
    last_canonical = None

    def canonical_request(self, request):
        cr = super().canonical_request(request)
        RecordingSigV4Auth.last_canonical = cr
        return cr


class Captured(Exception):
    pass


def capture(call, python_signer):
    """Runs one sesv2 call with boto3; returns the signed request and, for the Python
    signer, its canonical request."""
    saved = botocore.auth.AUTH_TYPE_MAPS['v4']
    if python_signer:
        botocore.auth.AUTH_TYPE_MAPS['v4'] = RecordingSigV4Auth
    RecordingSigV4Auth.last_canonical = None
    try:
        client = boto3.client('sesv2', region_name=REGION, endpoint_url=ENDPOINT,
                              aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
        got = {}

        def before_send(request, **kwargs):
            got['r'] = request
            raise Captured()

        client.meta.events.register('before-send', before_send)
        try:
            call(client)
        except Captured:
            pass
        return got['r'], RecordingSigV4Auth.last_canonical
    finally:
        botocore.auth.AUTH_TYPE_MAPS['v4'] = saved


def sign_direct(method, url, headers=(), body=b''):
    """Signs a hand-made request with botocore's SigV4Auth (paths and headers no sesv2
    operation makes: dot segments, blanks, repeated headers)."""
    r = AWSRequest(method=method, url=url, data=body)
    for name, value in headers:
        r.headers[name] = value          # HTTPHeaders: a second assignment adds a field
    signer = RecordingSigV4Auth(Credentials(KEY_ID, SECRET), 'ses', REGION)
    signer.add_auth(r)
    return r, RecordingSigV4Auth.last_canonical


def sign_with_iso_date_header(method, url):
    """A request dated by a Date header in ISO 8601 basic form and no X-Amz-Date (AWS's
    rule: X-Amz-Date is optional when Date has that form). botocore's add_auth would turn
    Date into RFC 1123 form, so this runs SigV4Auth's steps without that one."""
    r = AWSRequest(method=method, url=url, data=b'')
    r.headers['Date'] = datetime.datetime(*NOW).strftime(botocore.auth.SIGV4_TIMESTAMP)
    signer = RecordingSigV4Auth(Credentials(KEY_ID, SECRET), 'ses', REGION)
    r.context['timestamp'] = r.headers['Date']
    cr = signer.canonical_request(r)
    signer._inject_signature_to_request(r, signer.signature(signer.string_to_sign(r, cr), r))
    return r, cr


def c_str(b):
    """A C string literal of b (UTF-8 if str), bytes outside printable ASCII as \\xNN."""
    if isinstance(b, str):
        b = b.encode('utf-8')
    out, after_hex = '"', False
    for ch in b:
        if ch in (0x22, 0x5c):
            out += '\\' + chr(ch)
            after_hex = False
        elif ch == 0x0a:
            out += '\\n'
            after_hex = False
        elif 0x20 <= ch < 0x7f:
            if after_hex and chr(ch) in '0123456789abcdefABCDEF':
                out += '""'            # a hex escape would swallow the digit
            out += chr(ch)
            after_hex = False
        else:
            out += '\\x%02x' % ch
            after_hex = True
    return out + '"'


SEEDS = []     # (file name, request text) for tests/fuzz/corpus/sigv4 (--seeds DIR)


def seed_text(method, path, query, headers, body):
    text = method + '\n' + path + ('?' + query if query else '') + '\n'
    text += ''.join('%s: %s\r\n' % (k, v) for k, v in headers) + '\r\n'
    return text.encode('utf-8') + body


def emit_request(name, signer, r, canonical):
    url = urlsplit(r.url)
    headers = []
    for k, v in r.headers.items():
        headers.append((k, v.decode() if isinstance(v, bytes) else v))
    if not any(k.lower() == 'host' for k, _ in headers):   # awscrt adds it itself
        headers.insert(0, ('host', url.netloc))
    body = r.body or b''
    if isinstance(body, str):
        body = body.encode('utf-8')
    print('    {')
    print('        .name = %s,' % c_str(name))
    print('        .signer = %s,' % c_str(signer))
    print('        .method = %s,' % c_str(r.method))
    print('        .path = %s,' % c_str(url.path or '/'))
    print('        .query = %s,' % c_str(url.query))
    print('        .nheaders = %d,' % len(headers))
    print('        .headers = {')
    for k, v in headers:
        print('            {%s, %s},' % (c_str(k), c_str(v)))
    print('        },')
    print('        .body = %s,' % c_str(body))
    print('        .body_len = %d,' % len(body))
    print('        .canonical = %s,' % (c_str(canonical) if canonical else 'NULL'))
    print('    },')
    SEEDS.append(('%02d-%s.req' % (len(SEEDS) + 1, signer.lower()),
                  seed_text(r.method, url.path or '/', url.query, headers, body)))


# ---- SES SMTP passwords: AWS's documented script (SES Developer Guide, "Obtaining Amazon
# SES SMTP credentials", Python), without its check that the region has an SES SMTP
# endpoint (kiln's regions are the operator's names, "local" by default). ----
DATE = "11111111"
SERVICE = "ses"
MESSAGE = "SendRawEmail"
TERMINAL = "aws4_request"
VERSION = 0x04


def sign(key, msg):
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def calculate_key(secret_access_key, region):
    signature = sign(("AWS4" + secret_access_key).encode("utf-8"), DATE)
    signature = sign(signature, region)
    signature = sign(signature, SERVICE)
    signature = sign(signature, TERMINAL)
    signature = sign(signature, MESSAGE)
    signature_and_version = bytes([VERSION]) + signature
    smtp_password = base64.b64encode(signature_and_version)
    return smtp_password.decode("utf-8")


def main():
    calls = [
        ('ListSuppressedDestinations: GET, Reason twice, StartDate with \':\'',
         lambda c: c.list_suppressed_destinations(
             Reasons=['COMPLAINT', 'BOUNCE'],
             StartDate=datetime.datetime(2026, 12, 1, 0, 0, 0, tzinfo=datetime.timezone.utc),
             PageSize=10)),
        ('PutDedicatedIpWarmupAttributes: PUT JSON',
         lambda c: c.put_dedicated_ip_warmup_attributes(Ip='192.0.2.10', WarmupPercentage=50)),
        ('GetSuppressedDestination: %2B and %40 in the path',
         lambda c: c.get_suppressed_destination(EmailAddress='user+tag@example.com')),
        ('SendEmail: POST JSON, UTF-8 subject',
         lambda c: c.send_email(
             FromEmailAddress='sender@example.com',
             Destination={'ToAddresses': ['to@example.net']},
             Content={'Simple': {'Subject': {'Data': 'Caf\u00e9 \u2615', 'Charset': 'UTF-8'},
                                 'Body': {'Text': {'Data': 'Hello\nworld'}}}})),
    ]
    print('/* sigv4_vectors.h — GENERATED by tests/unit/sigv4_vectors.py with Debian\'s')
    print(' * /usr/bin/python3 (boto3 %s, botocore %s); do not edit. Requests signed by'
          % (boto3.__version__, botocore.__version__))
    print(' * the clients that call kiln (key %s, region %s, service ses,'
          % (KEY_ID, REGION))
    print(' * at %s),' % datetime.datetime(*NOW).strftime('%Y%m%dT%H%M%SZ'))
    print(' * with the canonical request botocore\'s SigV4Auth made where it signed; SES SMTP')
    print(' * passwords from AWS\'s documented derivation. */')
    print('#ifndef KILN_SIGV4_VECTORS_H')
    print('#define KILN_SIGV4_VECTORS_H')
    print()
    print('#include <stddef.h>')
    print('#include <stdint.h>')
    print()
    print('#define SIGV4_VEC_KEY_ID %s' % c_str(KEY_ID))
    print('#define SIGV4_VEC_SECRET %s' % c_str(SECRET))
    print('#define SIGV4_VEC_REGION %s' % c_str(REGION))
    print('#define SIGV4_VEC_NOW_MS INT64_C(%d)' % NOW_MS)
    print()
    print('typedef struct sigv4_vector {')
    print('    const char *name;')
    print('    const char *signer;     /* "awscrt" (boto3 on Debian) or "SigV4Auth" (awscli) */')
    print('    const char *method, *path, *query;')
    print('    size_t nheaders;')
    print('    const char *headers[16][2];')
    print('    const char *body;')
    print('    size_t body_len;')
    print('    const char *canonical;  /* botocore\'s canonical request; NULL for awscrt */')
    print('} sigv4_vector;')
    print()
    print('static const sigv4_vector sigv4_vectors[] = {')
    boto3_signer = 'awscrt' if (crt_auth and botocore.auth.AUTH_TYPE_MAPS['v4'] is
                                crt_auth.CrtSigV4Auth) else 'SigV4Auth'
    for name, call in calls:
        r, _ = capture(call, python_signer=False)
        emit_request(name + ' (boto3)', boto3_signer, r, None)
        r, cr = capture(call, python_signer=True)
        emit_request(name + ' (botocore SigV4Auth)', 'SigV4Auth', r, cr)
    r, cr = sign_direct('GET', ENDPOINT + '/v2/email/templates/caf%C3%A9%20menu/./a/../b//c/'
                        '?b=2&a=3&a=1&c&Token=x%2By%3D',
                        headers=[('X-Kiln-Test', '  two   blanks\there '),
                                 ('X-Kiln-Test', 'second'),
                                 ('Content-Type', 'text/plain')])
    emit_request('dot segments, %20 and UTF-8 in the path, query sorted, repeated header',
                 'SigV4Auth', r, cr)
    r, cr = sign_direct('POST', ENDPOINT + '/v2/email/outbound-emails',
                        headers=[('X-Amz-Content-SHA256',
                                  hashlib.sha256(b'{"a":1}').hexdigest()),
                                 ('Content-Type', 'application/json')],
                        body=b'{"a":1}')
    emit_request('POST with x-amz-content-sha256', 'SigV4Auth', r, cr)
    r, cr = sign_with_iso_date_header('GET', ENDPOINT + '/v2/email/account')
    emit_request('Date in ISO 8601 basic form instead of X-Amz-Date', 'SigV4Auth', r, cr)
    print('};')
    print()
    print('typedef struct sigv4_smtp_vector {')
    print('    const char *secret, *region, *password;')
    print('} sigv4_smtp_vector;')
    print()
    print('static const sigv4_smtp_vector sigv4_smtp_vectors[] = {')
    for secret, region in [(SECRET, REGION), (SECRET, 'local'),
                           ('wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', 'eu-west-1')]:
        print('    {%s, %s, %s},' % (c_str(secret), c_str(region),
                                     c_str(calculate_key(secret, region))))
    print('};')
    print()
    print('#endif')


def write_seeds(directory):
    """The vectors' requests as fuzz seeds, plus AWS's get-vanilla and a few broken ones."""
    import os
    SEEDS.append(('get-vanilla.req', seed_text('GET', '/', '', [
        ('Host', 'example.amazonaws.com'), ('X-Amz-Date', '20150830T123600Z'),
        ('Authorization', 'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/'
         'aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e'
         '8372ff2a2260956d9b8aae1d763fbf31')], b'')))
    SEEDS.append(('no-authorization.req', seed_text('POST', '/v2/email/outbound-emails', '',
                                                    [('Host', 'h')], b'{}')))
    SEEDS.append(('bad-credential.req', seed_text('GET', '/a/./b/../../c//d', 'x=%zz&y', [
        ('Host', 'h'), ('X-Amz-Date', '20261206T010000Z'),
        ('Authorization', 'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/2026/x,SignedHeaders=host;;,'
         'Signature=zz')], b'')))
    SEEDS.append(('iso-date-header.req', seed_text('GET', '/', '', [
        ('Host', 'h'), ('Date', '20261206T010000Z'),
        ('Authorization', 'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261206/us-east-1/ses/'
         'aws4_request, SignedHeaders=date;host, Signature=00')], b'')))
    os.makedirs(directory, exist_ok=True)
    for name, text in SEEDS:
        with open(os.path.join(directory, name), 'wb') as f:
            f.write(text)


if __name__ == '__main__':
    import contextlib
    import io
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == '--seeds':
        with contextlib.redirect_stdout(io.StringIO()):
            main()
        write_seeds(sys.argv[2])
    else:
        main()
