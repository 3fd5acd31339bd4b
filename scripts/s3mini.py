"""A minimal S3 client on the standard library (SigV4, path-style), for
scripts/garage-cluster.sh and scripts/test-s3-cluster.sh: they need to see
the raw objects under a prefix (what a listing shows, not what repozo makes
of it) without boto3 or awscli.

    python3 s3mini.py ls BUCKET PREFIX        one "SIZE KEY" line per object
    python3 s3mini.py put BUCKET KEY FILE     upload FILE (one PUT)
    python3 s3mini.py get BUCKET KEY FILE     download to FILE
    python3 s3mini.py rm BUCKET KEY

Endpoint, region and key from AWS_ENDPOINT_URL, AWS_REGION,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY. Exit 1 with one line on an error.
"""

import datetime
import hashlib
import hmac
import http.client
import os
import sys
import urllib.parse
import xml.etree.ElementTree as ET

EMPTY = hashlib.sha256(b"").hexdigest()


def sign(method, path, query, payload_hash):
    url = urllib.parse.urlsplit(os.environ["AWS_ENDPOINT_URL"])
    region = os.environ.get("AWS_REGION", "us-east-1")
    key = os.environ["AWS_ACCESS_KEY_ID"]
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    now = datetime.datetime.now(datetime.timezone.utc)
    amz = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    qs = "&".join(
        "%s=%s" % (urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~"))
        for k, v in sorted(query.items())
    )
    headers = {"host": url.netloc, "x-amz-content-sha256": payload_hash, "x-amz-date": amz}
    signed = ";".join(sorted(headers))
    canon = "\n".join(
        [method, urllib.parse.quote(path, safe="/-_.~"), qs]
        + ["%s:%s" % (k, headers[k]) for k in sorted(headers)]
        + ["", signed, payload_hash]
    )
    scope = "%s/%s/s3/aws4_request" % (day, region)
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(canon.encode()).hexdigest()]
    )
    k = ("AWS4" + secret).encode()
    for part in (day, region, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s"
        % (key, scope, signed, sig)
    )
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    return conn, urllib.parse.quote(path, safe="/-_.~") + ("?" + qs if qs else ""), headers


def request(method, path, query=None, body=b"", payload_hash=EMPTY):
    conn, target, headers = sign(method, path, query or {}, payload_hash)
    conn.request(method, target, body=body, headers=headers)
    r = conn.getresponse()
    return r


def fail(r):
    body = r.read().decode(errors="replace")
    code = ""
    try:
        code = ET.fromstring(body).findtext("Code") or ""
    except ET.ParseError:
        pass
    sys.exit("s3mini: HTTP %d %s %s" % (r.status, r.reason, code))


def ls(bucket, prefix):
    token = None
    while True:
        q = {"list-type": "2", "prefix": prefix}
        if token:
            q["continuation-token"] = token
        r = request("GET", "/" + bucket, q)
        if r.status != 200:
            fail(r)
        root = ET.fromstring(r.read())
        ns = {"s": root.tag.split("}")[0].strip("{")} if "}" in root.tag else {}
        p = "s:" if ns else ""
        for c in root.findall(p + "Contents", ns):
            print(c.findtext(p + "Size", None, ns), c.findtext(p + "Key", None, ns))
        if root.findtext(p + "IsTruncated", None, ns) != "true":
            return
        token = root.findtext(p + "NextContinuationToken", None, ns)


def main():
    cmd, bucket = sys.argv[1], sys.argv[2]
    try:
        if cmd == "ls":
            ls(bucket, sys.argv[3] if len(sys.argv) > 3 else "")
        elif cmd == "put":
            with open(sys.argv[4], "rb") as f:
                data = f.read()
            r = request("PUT", "/%s/%s" % (bucket, sys.argv[3]), body=data,
                        payload_hash=hashlib.sha256(data).hexdigest())
            if r.status != 200:
                fail(r)
        elif cmd == "get":
            r = request("GET", "/%s/%s" % (bucket, sys.argv[3]))
            if r.status != 200:
                fail(r)
            with open(sys.argv[4], "wb") as f:
                while True:
                    b = r.read(1 << 20)
                    if not b:
                        break
                    f.write(b)
        elif cmd == "rm":
            r = request("DELETE", "/%s/%s" % (bucket, sys.argv[3]))
            if r.status not in (200, 204):
                fail(r)
        else:
            sys.exit("s3mini: unknown command %s" % cmd)
    except OSError as e:
        sys.exit("s3mini: %s" % e)


if __name__ == "__main__":
    main()
