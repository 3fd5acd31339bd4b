//! A repository on S3-compatible object storage, `s3://BUCKET/PREFIX`:
//! the same files with the same names as in a directory, one object each
//! under the prefix. Endpoint, region and credentials come from the
//! standard AWS environment and files (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, `~/.aws/credentials`, ...), read by
//! Apache OpenDAL's S3 service; requests are path-style, which every
//! S3-compatible store takes. The calls block on a small runtime of our
//! own.
//!
//! This version reads: listing the objects, and reading small ones whole
//! (`.dat`, blob lists). Writing, streaming reads and the lock come with
//! the modes that need them.

use std::collections::BTreeMap;

use opendal::{ErrorKind, Operator};

use crate::error::{Error, Result};

/// How long one call may wait for the store before it counts as failed.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How many times a call that failed for a temporary reason (throttling,
/// a dropped connection, a server error, a timeout) is tried again.
const RETRIES: usize = 4;

/// The URL scheme of an object-storage repository.
pub const SCHEME: &str = "s3://";

/// An object-storage repository, connected.
pub struct Remote {
    op: Operator,
    rt: tokio::runtime::Runtime,
    /// `s3://BUCKET/PREFIX` as given.
    url: String,
    /// The endpoint, for messages.
    endpoint: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.url)
    }
}

/// `s3://BUCKET/PREFIX` → (bucket, prefix without slashes at either end);
/// `None` when `url` is not one.
pub fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix(SCHEME)?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return None;
    }
    Some((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

impl Remote {
    /// Connect to `url` and check that the prefix can be listed: a wrong
    /// key, a missing bucket or an endpoint that does not answer is one
    /// clear error here, before anything else.
    pub fn connect(url: &str) -> Result<Remote> {
        let (bucket, prefix) = parse_url(url).ok_or_else(|| {
            Error::Remote(format!(
                "{url:?} is not s3://BUCKET/PREFIX (a bucket name is needed)"
            ))
        })?;
        // the HTTP transport, once per process (later calls are no-ops)
        opendal::install_default();
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .unwrap_or_else(|_| "AWS S3".to_string());
        let mut builder = opendal::services::S3::default()
            .bucket(&bucket)
            .root(&format!("/{prefix}"));
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            // S3-compatible stores mostly ignore it; AWS needs the right one
            builder = builder.region("us-east-1");
        }
        let op = Operator::new(builder)
            .map_err(|e| Error::Remote(format!("cannot use {url}: {}", short(&e))))?
            // a call that hangs (an endpoint that drops packets) fails
            // after TIMEOUT, and is retried like any temporary failure
            // (throttling, a dropped connection, 5xx), with backoff
            .layer(
                opendal::layers::TimeoutLayer::new()
                    .with_timeout(TIMEOUT)
                    .with_io_timeout(TIMEOUT),
            )
            .layer(
                opendal::layers::RetryLayer::new()
                    .with_jitter()
                    .with_max_times(RETRIES)
                    .with_min_delay(std::time::Duration::from_millis(200))
                    .with_max_delay(std::time::Duration::from_secs(5)),
            );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Remote(format!("cannot start the S3 client: {e}")))?;
        let remote = Remote {
            op,
            rt,
            url: url.to_string(),
            endpoint,
        };
        remote.list()?;
        Ok(remote)
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// An error of a call on `what`, as one line a user can act on.
    fn error(&self, what: &str, e: opendal::Error) -> Error {
        let why = match e.kind() {
            ErrorKind::PermissionDenied => format!(
                "access denied: check the key (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE) \
                 and its rights on the bucket ({})",
                short(&e)
            ),
            _ if short(&e).starts_with("NoSuchBucket") => {
                format!("no such bucket at {} ({})", self.endpoint, short(&e))
            }
            _ if e.to_string().contains("send http request") => format!(
                "cannot reach {} (AWS_ENDPOINT_URL): {}",
                self.endpoint,
                short(&e)
            ),
            ErrorKind::NotFound => format!("not found ({})", short(&e)),
            ErrorKind::ConfigInvalid => format!("configuration: {}", short(&e)),
            _ => format!("{} at {}", short(&e), self.endpoint),
        };
        Error::Remote(format!("{what} {}: {why}", self.url))
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

    /// The whole object `name`; `None` when there is none.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.rt.block_on(async { self.op.read(name).await }) {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error(&format!("read {name} of"), e)),
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
    if let (Some(code), Some(msg)) = (field("code"), field("message")) {
        return format!("{code}: {msg}");
    }
    match s.rsplit_once("=> ") {
        Some((_, cause)) => cause.trim().to_string(),
        None => s,
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
        assert_eq!(parse_url("/var/backups"), None);
    }
}
