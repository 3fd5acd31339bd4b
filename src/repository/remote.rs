//! A repository on S3-compatible object storage, `s3://BUCKET/PREFIX`:
//! the same files with the same names as in a directory, one object each
//! under the prefix. Endpoint, region and credentials come from the
//! standard AWS environment and files (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, `~/.aws/credentials`, ...), read by
//! Apache OpenDAL's S3 service; requests are path-style, which every
//! S3-compatible store takes. The calls block on a small runtime of our
//! own.
//!
//! Reading streams an object in ranges of [`PART`] bytes, [`PARALLEL`]
//! of them in flight, handed out in order; writing streams a multipart
//! upload of parts of [`PART`] bytes, [`PARALLEL`] in flight, that makes
//! the object visible only when it completes (a run that dies before
//! leaves no object under the name). Peak memory per stream is about
//! `PART * (PARALLEL + 1)`, whatever the size of the object.

use std::collections::BTreeMap;

use opendal::layers::TimeoutLayer;
use opendal::{ErrorKind, Operator};

use crate::error::{Error, Result};

/// How many times a call that failed for a temporary reason (throttling,
/// a dropped connection, a server error, a timeout) is tried again.
const RETRIES: usize = 4;

/// The size of the ranges read and of the parts uploaded.
pub const PART: usize = 8 << 20;

/// Ranges read, or parts uploaded, at the same time per object.
pub const PARALLEL: usize = 4;

/// The URL scheme of an object-storage repository.
pub const SCHEME: &str = "s3://";

/// How long a call may wait for the store (each request, each part of a
/// listing or of a body) before it fails: an endpoint that accepts the
/// connection and never answers must not hang `-L`.
const TIMEOUT_SECS: u64 = 30;

/// How many times [`TIMEOUT_SECS`] one read or write of a stream may take
/// in all (an hour), while bytes keep moving.
const STREAM_FACTOR: u32 = 120;

/// Testing hook: replaces [`TIMEOUT_SECS`] (seconds).
const TIMEOUT_ENV: &str = "REPOZO_TEST_S3_TIMEOUT";

fn timeout() -> std::time::Duration {
    let secs = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(TIMEOUT_SECS);
    std::time::Duration::from_secs(secs)
}

/// An object-storage repository, connected.
pub struct Remote {
    /// For listings, stats and small objects.
    op: Operator,
    /// For streamed reads ([`Remote::reader`]).
    reads: Operator,
    /// For streamed writes ([`Remote::writer`]).
    writes: Operator,
    /// For the calls OpenDAL does not make ([`Remote::abort_unfinished_uploads`]).
    http: opendal::HttpTransporter,
    rt: tokio::runtime::Runtime,
    /// `s3://BUCKET/PREFIX` as given.
    url: String,
    /// The endpoint, for messages.
    endpoint: String,
    /// The bucket, the prefix (no slash at either end) and the region,
    /// for the calls OpenDAL does not make ([`Remote::abort_unfinished_uploads`]).
    bucket: String,
    prefix: String,
    region: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.url)
    }
}

/// `s3://BUCKET/PREFIX` → (bucket, prefix without slashes at either end);
/// `None` when `url` is not one.
/// S3 keys are literal: a prefix with an empty, `.` or `..` component, or
/// a `?` or `#` (a URL's query or fragment), would not name the objects a
/// user meant, so it is not one.
pub fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix(SCHEME)?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() || bucket.contains(['?', '#']) {
        return None;
    }
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    if !prefix.is_empty()
        && (prefix.contains(['?', '#']) || prefix.split('/').any(|c| matches!(c, "" | "." | "..")))
    {
        return None;
    }
    Some((bucket.to_string(), prefix.to_string()))
}

/// The region when the environment names none: the `region` of the
/// profile (`AWS_PROFILE`, else `default`) in the AWS config file
/// (`AWS_CONFIG_FILE`, else `~/.aws/config`), as the AWS tools read it;
/// else `us-east-1` (S3-compatible stores mostly ignore it).
fn region_from_config() -> String {
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let file = std::env::var_os("AWS_CONFIG_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".aws/config")));
    let text = file
        .and_then(|f| std::fs::read_to_string(f).ok())
        .unwrap_or_default();
    let wanted = [format!("[{profile}]"), format!("[profile {profile}]")];
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = wanted.iter().any(|w| w == line);
        } else if inside {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == "region" && !v.trim().is_empty() {
                    return v.trim().to_string();
                }
            }
        }
    }
    "us-east-1".to_string()
}

impl Remote {
    /// Connect to `url` and check that the prefix can be listed: a wrong
    /// key, a missing bucket or an endpoint that does not answer is one
    /// clear error here, before anything else. The listing of the prefix
    /// ([`Remote::list`]) comes with it.
    pub fn connect(url: &str) -> Result<(Remote, BTreeMap<String, u64>)> {
        let (bucket, prefix) = parse_url(url).ok_or_else(|| {
            Error::Remote(format!(
                "{url:?} is not s3://BUCKET/PREFIX (a bucket name, and a prefix without \
                 empty, '.' or '..' parts, '?' or '#')"
            ))
        })?;
        // the HTTP transports: for requests with small bodies and for
        // streamed reads, a connection that stops answering (no byte for
        // the timeout) fails however long a range takes while bytes flow
        // (a slow link); uploads wait for their answer until a part is
        // sent, so they have no such timeout (only the operator's below)
        let transport = |read_timeout: bool| -> Result<opendal::HttpTransporter> {
            let mut b = reqwest::Client::builder().connect_timeout(timeout());
            if read_timeout {
                b = b.read_timeout(timeout());
            }
            let client = b
                .build()
                .map_err(|e| Error::Remote(format!("cannot start the HTTP client: {e}")))?;
            Ok(opendal::HttpTransporter::new(
                opendal_http_transport_reqwest::ReqwestTransport::new(client),
            ))
        };
        opendal::install_default();
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .unwrap_or_else(|_| "AWS S3".to_string());
        let (region, from_config) =
            match std::env::var("AWS_REGION").or_else(|_| std::env::var("AWS_DEFAULT_REGION")) {
                Ok(r) => (r, false),
                Err(_) => (region_from_config(), true),
            };
        let builder = || {
            let b = opendal::services::S3::default()
                .bucket(&bucket)
                .root(&format!("/{prefix}"));
            match from_config {
                true => b.region(&region),
                false => b,
            }
        };
        // a call that hangs (an endpoint that drops packets) fails after
        // the timeout, and is retried like any temporary failure
        // (throttling, a dropped connection, 5xx), with backoff; moving
        // the bytes of parts or ranges takes as long as the link needs
        // (4 parts of 8 MiB over a 256 kbit/s uplink: 17 min), so streams
        // have an operator whose reads and writes may take STREAM_FACTOR
        // times the timeout, a stall being caught by the client's read
        // timeout above
        let operator =
            |io: std::time::Duration, read_timeout: bool, retries: usize| -> Result<Operator> {
                let ctx =
                    opendal::OperationContext::new().with_http_transport(transport(read_timeout)?);
                Ok(Operator::new(builder())
                    .map_err(|e| Error::Remote(format!("cannot use {url}: {}", short(&e))))?
                    .layer(
                        TimeoutLayer::new()
                            .with_timeout(timeout())
                            .with_io_timeout(io),
                    )
                    .layer(
                        opendal::layers::RetryLayer::new()
                            .with_jitter()
                            .with_max_times(retries)
                            .with_min_delay(std::time::Duration::from_millis(200))
                            .with_max_delay(std::time::Duration::from_secs(5)),
                    )
                    .with_context(ctx))
            };
        let http = transport(true)?;
        let op = operator(timeout(), true, RETRIES)?;
        let reads = operator(timeout() * STREAM_FACTOR, true, RETRIES)?;
        // the parts in flight of an upload share its retries (a failed
        // part is sent again at once, without backoff): twice as many
        let writes = operator(timeout() * STREAM_FACTOR, false, RETRIES * 2)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Remote(format!("cannot start the S3 client: {e}")))?;
        let remote = Remote {
            op,
            reads,
            writes,
            http,
            rt,
            url: url.to_string(),
            endpoint,
            bucket,
            prefix,
            region,
        };
        let objects = remote.list()?;
        if objects.is_empty() {
            remote.check_is_s3()?;
        }
        Ok((remote, objects))
    }

    /// An empty listing is also what a server that is not S3 (a web page
    /// answering 200 to everything: a console port, a proxy) gives: ask
    /// for an object that cannot exist, which S3 says is not found.
    fn check_is_s3(&self) -> Result<()> {
        const PROBE: &str = ".repozo-probe-of-a-missing-object";
        match self.rt.block_on(async { self.op.stat(PROBE).await }) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.error("list", e)),
            Ok(_) => Err(Error::Remote(format!(
                "list {}: {} does not answer as an S3 store (it has an object \
                 that cannot exist, {PROBE}): check AWS_ENDPOINT_URL",
                self.url, self.endpoint
            ))),
        }
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// An error of a call on `what`, as one line a user can act on.
    fn error(&self, what: &str, e: opendal::Error) -> Error {
        Error::Remote(format!("{what} {}: {}", self.url, why(&e, &self.endpoint)))
    }

    /// The objects directly under the prefix (not in a "subdirectory"),
    /// with their sizes, by name.
    pub fn list(&self) -> Result<BTreeMap<String, u64>> {
        self.list_under("")
    }

    /// The objects under `dir/` (a "subdirectory" of the prefix, `""` for
    /// the prefix itself), recursively when `dir` is not empty, by name
    /// relative to the prefix.
    pub fn list_under(&self, dir: &str) -> Result<BTreeMap<String, u64>> {
        let path = if dir.is_empty() {
            String::new()
        } else {
            format!("{}/", dir.trim_end_matches('/'))
        };
        let entries = self
            .rt
            .block_on(async { self.op.list_with(&path).recursive(!dir.is_empty()).await })
            .map_err(|e| self.error("list", e))?;
        let mut out = BTreeMap::new();
        for e in entries {
            if e.metadata().is_dir() {
                continue;
            }
            let name = e.path().trim_start_matches('/').to_string();
            if name.is_empty() {
                continue;
            }
            out.insert(name, e.metadata().content_length());
        }
        Ok(out)
    }

    /// A reader of the object `name` (`len` bytes, from the listing) from
    /// its start: ranges fetched [`PARALLEL`] at a time, in order. An
    /// object that ends before `len` is an error, never a short read.
    pub fn reader(&self, name: &str, len: u64) -> Result<ObjectReader> {
        let stream = self
            .rt
            .block_on(async {
                let r = self
                    .reads
                    .reader_with(name)
                    .chunk(PART)
                    .concurrent(PARALLEL)
                    .await?;
                r.into_stream(0..len).await
            })
            .map_err(|e| self.error(&format!("read {name} of"), e))?;
        Ok(ObjectReader {
            rt: self.rt.handle().clone(),
            stream,
            cur: opendal::Buffer::new(),
            left: len,
            endpoint: self.endpoint.clone(),
        })
    }

    /// Store `bytes` as the object `name` in one request (small files:
    /// a `.dat`, a blob list, a lock), replacing any object of that name.
    pub fn write_small(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.rt
            .block_on(async { self.op.write(name, bytes.to_vec()).await })
            .map(|_| ())
            .map_err(|e| self.error(&format!("write {name} to"), e))
    }

    /// A new object `name`, written as a stream ([`ObjectWriter`]): not
    /// visible until [`ObjectWriter::finish`].
    pub fn writer(&self, name: &str) -> Result<ObjectWriter<'_>> {
        let w = self
            .rt
            .block_on(async {
                self.writes
                    .writer_with(name)
                    .chunk(PART)
                    .concurrent(PARALLEL)
                    .await
            })
            .map_err(|e| self.error(&format!("write {name} to"), e))?;
        Ok(ObjectWriter {
            remote: self,
            name: name.to_string(),
            w: Some(w),
            pending: Vec::with_capacity(PART),
        })
    }

    /// Remove the object `name` (no error when there is none).
    pub fn delete(&self, name: &str) -> Result<()> {
        self.rt
            .block_on(async { self.op.delete(name).await })
            .map_err(|e| self.error(&format!("remove {name} from"), e))
    }

    /// Copy the object `from` to `to` inside the store (`to` replaced).
    pub fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.rt
            .block_on(async { self.op.copy(from, to).await })
            .map(|_| ())
            .map_err(|e| self.error(&format!("copy {from} to {to} in"), e))
    }

    /// The size of the object `name` as the store says now; `None` when
    /// there is none.
    pub fn stat(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.metadata(name)?.map(|m| m.content_length()))
    }

    /// The metadata of the object `name` as the store says now; `None`
    /// when there is none.
    fn metadata(&self, name: &str) -> Result<Option<opendal::Metadata>> {
        match self.rt.block_on(async { self.op.stat(name).await }) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error(&format!("stat {name} of"), e)),
        }
    }

    /// Abort the multipart uploads of objects directly under the prefix
    /// that were started and never completed nor aborted (a run killed
    /// while uploading): their parts take space and are invisible
    /// otherwise. Only under the exclusive lock, when no run of ours is
    /// uploading. Returns the names of the objects whose uploads were
    /// aborted. OpenDAL has no call for this: the requests are signed by
    /// reqsign (the signer OpenDAL's S3 service uses, with the same AWS
    /// credential chain) and sent by OpenDAL's HTTP transport.
    pub fn abort_unfinished_uploads(&self) -> Result<Vec<String>> {
        let mut aborted = Vec::new();
        let dir = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut query = format!("uploads=&prefix={}", encode(&dir, true));
            if let Some((k, u)) = &markers {
                query.push_str(&format!(
                    "&key-marker={}&upload-id-marker={}",
                    encode(k, true),
                    encode(u, true)
                ));
            }
            let body = self.signed("GET", "", &query)?;
            let text = String::from_utf8_lossy(&body).into_owned();
            for upload in xml_all(&text, "Upload") {
                let (Some(key), Some(id)) = (xml_one(upload, "Key"), xml_one(upload, "UploadId"))
                else {
                    continue;
                };
                let Some(name) = key.strip_prefix(&dir) else {
                    continue;
                };
                if name.is_empty() || name.contains('/') && !name.starts_with("blobs/") {
                    continue;
                }
                self.signed(
                    "DELETE",
                    &encode(&key, false),
                    &format!("uploadId={}", encode(&id, true)),
                )?;
                aborted.push(name.to_string());
            }
            if xml_one(&text, "IsTruncated").as_deref() != Some("true") {
                return Ok(aborted);
            }
            match (
                xml_one(&text, "NextKeyMarker"),
                xml_one(&text, "NextUploadIdMarker"),
            ) {
                (Some(k), Some(u)) if markers.as_ref() != Some(&(k.clone(), u.clone())) => {
                    markers = Some((k, u));
                }
                _ => return Ok(aborted),
            }
        }
    }

    /// A request `method` on `key` (percent-encoded; empty: the bucket)
    /// with `query`, signed with the AWS credential chain; the body of a
    /// 2xx answer.
    fn signed(&self, method: &str, key: &str, query: &str) -> Result<Vec<u8>> {
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .unwrap_or_else(|_| format!("https://s3.{}.amazonaws.com", self.region));
        let path = match key {
            "" => format!("/{}", self.bucket),
            k => format!("/{}/{k}", self.bucket),
        };
        let url = format!("{}{path}?{query}", endpoint.trim_end_matches('/'));
        let what = format!("{method} {path}?{query}");
        let fail = |e: String| Error::Remote(format!("{what} at {}: {e}", self.endpoint));
        let transport = self.http.clone();
        let ctx = reqsign_core::Context::new()
            .with_file_read(reqsign_file_read_tokio::TokioFileRead)
            .with_http_send(transport.clone())
            .with_env(reqsign_core::OsEnv);
        let mut provider = reqsign_aws_v4::DefaultCredentialProvider::new();
        if let Ok(p) = std::env::var("AWS_PROFILE") {
            provider = reqsign_aws_v4::DefaultCredentialProvider::builder()
                .with_profile(&p)
                .build();
        }
        let signer = reqsign_core::Signer::new(
            ctx,
            provider,
            reqsign_aws_v4::RequestSigner::new("s3", &self.region),
        );
        let req = http::Request::builder()
            .method(method)
            .uri(&url)
            .header("x-amz-content-sha256", reqsign_aws_v4::EMPTY_STRING_SHA256)
            .body(opendal::Buffer::new())
            .map_err(|e| fail(e.to_string()))?;
        let (mut parts, body) = req.into_parts();
        let resp = self.rt.block_on(async {
            let signed = async {
                signer
                    .sign(&mut parts, None)
                    .await
                    .map_err(|e| fail(format!("cannot sign: {e}")))?;
                transport
                    .send(http::Request::from_parts(parts, body))
                    .await
                    .map_err(|e| fail(why(&e, &self.endpoint)))
            };
            tokio::time::timeout(timeout(), signed)
                .await
                .unwrap_or_else(|_| Err(fail(format!("no answer in {} s", timeout().as_secs()))))
        })?;
        let status = resp.status();
        let body = resp.into_body().to_vec();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(fail(format!(
                "HTTP {status}: {} {}",
                xml_one(&text, "Code").unwrap_or_default(),
                xml_one(&text, "Message").unwrap_or_default()
            )));
        }
        Ok(body)
    }

    /// When the store last wrote the object `name`, in seconds since the
    /// epoch by the store's clock; `None` when there is none or the store
    /// does not say.
    pub fn modified(&self, name: &str) -> Result<Option<u64>> {
        Ok(self
            .metadata(name)?
            .and_then(|m| m.last_modified())
            .and_then(|t| {
                std::time::SystemTime::from(t)
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs())
            }))
    }

    /// The object's `s3://` URL, for messages.
    pub fn url_of(&self, name: &str) -> String {
        format!("{}/{name}", self.url.trim_end_matches('/'))
    }

    /// The whole object `name`; `None` when there is none.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.rt.block_on(async { self.op.read(name).await }) {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error(&format!("read {name} of"), e)),
        }
    }
}

/// Whether `e` comes from the HTTP client's timeout (no byte of an
/// answer in time).
fn timed_out(e: &opendal::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.downcast_ref::<reqwest::Error>()
            .is_some_and(|r| r.is_timeout())
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Why a call failed, as a user can act on it: the key, the bucket, the
/// endpoint (`endpoint`), the credentials, or what the store said.
fn why(e: &opendal::Error, endpoint: &str) -> String {
    match e.kind() {
            ErrorKind::PermissionDenied => format!(
                "access denied: check the key (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE) \
                 and its rights on the bucket ({})",
                short(e)
            ),
            _ if short(e).starts_with("NoSuchBucket") => {
                format!("no such bucket at {} ({})", endpoint, short(e))
            }
            _ if e.to_string().contains("load signing credential") => format!(
                "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE \
                 to a profile of ~/.aws/credentials{}",
                std::env::var("AWS_PROFILE")
                    .map(|p| format!(" (AWS_PROFILE={p}: no such profile, or no key in it)"))
                    .unwrap_or_default()
            ),
            _ if e.to_string().contains("timeout reached") || timed_out(e) =>
            {
                format!(
                "no answer from {} (AWS_ENDPOINT_URL) in {} s",
                endpoint,
                timeout().as_secs()
            )
            }
            _ if e.to_string().contains("send http request") => format!(
                "cannot reach {} (AWS_ENDPOINT_URL): {}",
                endpoint,
                short(e)
            ),
            ErrorKind::NotFound => format!("not found ({})", short(e)),
            ErrorKind::ConfigInvalid => format!("configuration: {}", short(e)),
            _ => format!("{} at {}", short(e), endpoint),
    }
}

/// `s` percent-encoded for a URL's path (`/` kept) or, with `query`, a
/// query value.
fn encode(s: &str, query: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if !query => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The texts of the elements `<tag>...</tag>` in `xml`.
fn xml_all<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find(&open) {
        let after = &rest[at + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

/// The text of the first element `<tag>` in `xml`, unescaped.
fn xml_one(xml: &str, tag: &str) -> Option<String> {
    let t = xml_all(xml, tag).into_iter().next()?;
    Some(
        t.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// The bytes of an object, streamed ([`Remote::reader`]).
pub struct ObjectReader {
    rt: tokio::runtime::Handle,
    stream: opendal::BufferStream,
    /// What was fetched and not yet handed out.
    cur: opendal::Buffer,
    /// Bytes still expected.
    left: u64,
    /// The endpoint, for messages.
    endpoint: String,
}

impl std::io::Read for ObjectReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use bytes::Buf;
        use futures::StreamExt;
        loop {
            if self.cur.has_remaining() {
                let n = out.len().min(self.cur.remaining());
                self.cur.copy_to_slice(&mut out[..n]);
                self.left = self.left.saturating_sub(n as u64);
                return Ok(n);
            }
            if out.is_empty() {
                return Ok(0);
            }
            match self.rt.block_on(self.stream.next()) {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(why(&e, &self.endpoint))),
                None if self.left > 0 => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("the object ended {} bytes early", self.left),
                    ))
                }
                None => return Ok(0),
            }
        }
    }
}

/// A new object on its way in ([`Remote::writer`]): parts are uploaded
/// as they fill, [`PARALLEL`] at a time. Dropped without
/// [`ObjectWriter::finish`], the upload is aborted and no object appears.
pub struct ObjectWriter<'a> {
    remote: &'a Remote,
    name: String,
    w: Option<opendal::Writer>,
    /// Bytes not yet handed to the upload (whole parts are handed over).
    pending: Vec<u8>,
}

impl ObjectWriter<'_> {
    fn send(&mut self) -> std::io::Result<()> {
        let Some(w) = self.w.as_mut() else {
            return Err(std::io::Error::other("the upload was aborted"));
        };
        let part = std::mem::replace(&mut self.pending, Vec::with_capacity(PART));
        self.remote
            .rt
            .block_on(async { w.write(part).await })
            .map_err(|e| std::io::Error::other(why(&e, &self.remote.endpoint)))
    }

    /// Complete the upload: the object appears whole under its name.
    pub fn finish(mut self) -> Result<()> {
        let r = if self.pending.is_empty() {
            Ok(())
        } else {
            self.send()
        };
        let url = self.remote.url_of(&self.name);
        r.map_err(|e| Error::Remote(format!("write {url}: {e}")))?;
        let mut w = self.w.take().expect("finished once");
        self.remote
            .rt
            .block_on(async { w.close().await })
            .map(|_| ())
            .map_err(|e| self.remote.error(&format!("write {} to", self.name), e))
    }
}

impl std::io::Write for ObjectWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(PART - self.pending.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == PART {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ObjectWriter<'_> {
    fn drop(&mut self) {
        if let Some(mut w) = self.w.take() {
            // best effort, within one timeout (a store that is gone is not
            // waited for through every retry): the next backup aborts
            // what is left
            let _ = self
                .remote
                .rt
                .block_on(async { tokio::time::timeout(timeout(), w.abort()).await });
        }
    }
}

/// What an OpenDAL error says, short: the store's own code and message
/// when it answered (`NoSuchBucket: Bucket not found: x`), else the cause
/// after OpenDAL's context (`error sending request ...`).
fn short(e: &opendal::Error) -> String {
    let s = e.to_string();
    let s = crate::log::one_line(&s).into_owned();
    let field = |key: &str| -> Option<String> {
        let at = s.find(&format!("{key}: \""))? + key.len() + 3;
        let end = s[at..].find('"')? + at;
        Some(s[at..end].to_string())
    };
    let empty_s3_error = match (field("code"), field("message")) {
        (Some(code), Some(msg)) if !code.is_empty() || !msg.is_empty() => {
            return format!("{code}: {msg}");
        }
        (Some(_), Some(_)) => true,
        _ => false,
    };
    if let Some((_, cause)) = s.rsplit_once("=> ").filter(|_| !empty_s3_error) {
        return cause.trim().to_string();
    }
    // no answer of the store's own: the kind and the call, without the
    // request's whole context, and the HTTP status of what answered
    let head = s.split([',', '=']).next().unwrap_or(&s).trim();
    let status = s.find("status: ").and_then(|at| {
        let rest = &s[at + 8..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        (end > 0).then(|| rest[..end].to_string())
    });
    match status {
        Some(st) => format!("{head}: HTTP {st} without an S3 error, check AWS_ENDPOINT_URL"),
        None => head.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse_url("s3://b/p/q/"), Some(("b".into(), "p/q".into())));
        assert_eq!(parse_url("s3://b"), Some(("b".into(), "".into())));
        assert_eq!(parse_url("s3:///p"), None);
        for bad in [
            "s3://b/x/../p",
            "s3://b/./p",
            "s3://b//p",
            "s3://b/p?x=1",
            "s3://b/p#f",
            "s3://b?x/p",
        ] {
            assert_eq!(parse_url(bad), None, "{bad}");
        }
        assert_eq!(parse_url("/var/backups"), None);
    }
}
