//! `/v1/kv`: a document as a resource. GET, PUT, DELETE and PATCH on `/v1/kv/{key}` (the rest
//! of the path, percent-decoded, is the key), and `GET /v1/kv?prefix=` for a page of keys. A
//! document's `mod_revision` is its ETag, so `If-Match` is compare-and-swap and
//! `If-None-Match: *` creates only. Values travel as JSON text, stored as the lossless
//! `value_json` path stores them.

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use jsonkv::pb::{self, json_kv_server::JsonKv, ValueEncoding};
use serde::Deserialize;

use super::call::{query, Api};
use super::json;
use super::problem::Problem;
use crate::service::STORE_ID_HEADER;

/// What `If-Match` / `If-None-Match` ask of the key's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Always,
    /// `If-Match: "N"`: the key's mod revision is N.
    At(i64),
    /// `If-Match: *`: the key exists.
    Exists,
    /// `If-None-Match: *`: the key does not exist.
    Absent,
}

/// The write condition of a PUT, DELETE or PATCH.
fn condition(headers: &HeaderMap) -> Result<Condition, Problem> {
    let if_match = header_text(headers, header::IF_MATCH)?;
    let if_none_match = header_text(headers, header::IF_NONE_MATCH)?;
    match (if_match, if_none_match) {
        (None, None) => Ok(Condition::Always),
        (Some(_), Some(_)) => Err(Problem::bad_request(
            "send If-Match or If-None-Match, not both",
        )),
        (Some("*"), None) => Ok(Condition::Exists),
        (Some(tag), None) => Ok(Condition::At(entity_tag(tag, "If-Match")?)),
        (None, Some("*")) => Ok(Condition::Absent),
        (None, Some(_)) => Err(Problem::bad_request(
            "on a write, If-None-Match takes only * (create only); use If-Match for a revision",
        )),
    }
}

fn header_text(headers: &HeaderMap, name: HeaderName) -> Result<Option<&str>, Problem> {
    headers
        .get(&name)
        .map(|value| {
            value
                .to_str()
                .map(str::trim)
                .map_err(|_| Problem::bad_request(format!("{name} is not ASCII text")))
        })
        .transpose()
}

/// The mod revision an entity tag (`"5"`) names. Weak tags and lists are refused: a document
/// has exactly one strong tag, its mod revision.
fn entity_tag(tag: &str, header: &str) -> Result<i64, Problem> {
    tag.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(|t| t.parse::<i64>().ok())
        .filter(|revision| *revision > 0)
        .ok_or_else(|| {
            Problem::bad_request(format!(
                "{header} must be one entity tag, a quoted mod revision such as \"5\" (or *), not {tag:?}"
            ))
        })
}

/// The document's JSON text with its metadata in headers, as GET and PATCH answer.
fn document(api: &Api, kv: &pb::KeyValue, revision: i64) -> Response {
    let mut response = api.json(kv.value_json.clone());
    metadata(response.headers_mut(), kv, revision);
    response
}

/// ETag and the revisions, as headers.
fn metadata(headers: &mut HeaderMap, kv: &pb::KeyValue, revision: i64) {
    headers.insert(header::ETAG, etag(kv.mod_revision));
    for (name, value) in [
        ("jsonkv-revision", revision),
        ("jsonkv-create-revision", kv.create_revision),
        ("jsonkv-mod-revision", kv.mod_revision),
        ("jsonkv-version", kv.version),
        ("jsonkv-lease", kv.lease),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
}

fn etag(revision: i64) -> HeaderValue {
    HeaderValue::try_from(format!("\"{revision}\"")).expect("digits are a valid header")
}

/// `{"revision":N}`, with the ETag a later If-Match sends back.
fn written(api: &Api, revision: i64, mod_revision: Option<i64>) -> Response {
    let mut response = api.json(format!("{{\"revision\":{revision}}}"));
    if let Some(mod_revision) = mod_revision {
        response
            .headers_mut()
            .insert(header::ETAG, etag(mod_revision));
    }
    response
}

/// The key a path names: the rest of it after `/v1/kv/`, percent-decoded (400 if that is not
/// UTF-8).
pub struct Key(String);

impl<S: Send + Sync> FromRequestParts<S> for Key {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Key, Problem> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(key)| Key(key))
            .map_err(|e| Problem::bad_request(format!("bad key in the path: {}", e.body_text())))
    }
}

/// The answer when `/v1/kv/` names no key.
pub async fn no_key() -> Problem {
    Problem::bad_request("the path names no key: use /v1/kv/{key}, or GET /v1/kv?prefix= to list")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    #[serde(default)]
    min_revision: i64,
    #[serde(default)]
    linearizable: bool,
    #[serde(default)]
    store_id: String,
}

pub async fn get(State(api): State<Api>, Key(key): Key, parts: Parts) -> Result<Response, Problem> {
    let ReadQuery {
        min_revision,
        linearizable,
        store_id: store,
    } = query(&parts)?;
    let if_none_match = header_text(&parts.headers, header::IF_NONE_MATCH)?.map(str::to_owned);
    let request = api.request(
        "Get",
        &parts,
        pb::GetRequest {
            key,
            value_encoding: ValueEncoding::Json as i32,
            min_revision,
            linearizable,
            store_id: store,
        },
    )?;
    let answer = api.unary(api.service.get(request)).await?.into_inner();
    let kv = answer.kv.unwrap_or_default();
    if let Some(tags) = if_none_match {
        let current = format!("\"{}\"", kv.mod_revision);
        if tags == "*" || tags.split(',').any(|tag| tag.trim() == current) {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            let headers = response.headers_mut();
            metadata(headers, &kv, answer.revision);
            headers.insert(STORE_ID_HEADER, api.store_id_header());
            return Ok(response);
        }
    }
    Ok(document(&api, &kv, answer.revision))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteQuery {
    #[serde(default)]
    lease: i64,
}

pub async fn put(
    State(api): State<Api>,
    Key(key): Key,
    parts: Parts,
    body: Body,
) -> Result<Response, Problem> {
    let WriteQuery { lease } = query(&parts)?;
    let condition = condition(&parts.headers)?;
    let value_json = api.body_text(body).await?;
    let insert = pb::InsertRequest {
        key: key.clone(),
        new_value: Some(pb::insert_request::NewValue::ValueJson(value_json)),
        expected_mod_revision: match condition {
            Condition::At(revision) => Some(revision),
            Condition::Absent => Some(0),
            Condition::Always | Condition::Exists => None,
        },
        lease,
        ..Default::default()
    };
    if condition == Condition::Exists {
        // Insert has no "only if present": a transaction that compares existence does it.
        let txn = pb::TxnRequest {
            compare: vec![pb::Compare {
                key: key.clone(),
                result: pb::CompareResult::Equal as i32,
                target: Some(pb::compare::Target::Exists(true)),
            }],
            success: vec![pb::Op {
                request: Some(pb::op::Request::Insert(insert)),
            }],
            failure: vec![],
        };
        let request = api.request("Txn", &parts, txn)?;
        let response = api.unary(api.service.txn(request)).await?.into_inner();
        if !response.succeeded {
            return Err(absent(&key));
        }
        return Ok(written(&api, response.revision, Some(response.revision)));
    }
    let request = api.request("Insert", &parts, insert)?;
    let response =
        api.unary(api.service.insert(request))
            .await
            .map_err(|problem| match condition {
                Condition::Absent => exists(&key, problem),
                _ => problem,
            })?;
    let answer = response.into_inner();
    Ok(written(&api, answer.revision, Some(answer.revision)))
}

/// A failed `If-None-Match: *` says so, rather than "expected mod revision 0".
fn exists(key: &str, problem: Problem) -> Problem {
    if problem.reason.as_deref() != Some("REVISION_MISMATCH") {
        return problem;
    }
    let current = problem
        .metadata
        .get("current_mod_revision")
        .cloned()
        .unwrap_or_default();
    Problem {
        message: format!(
            "key {key:?} exists (mod revision {current}); If-None-Match: * only creates"
        ),
        ..problem
    }
}

/// 412 for `If-Match: *` on a key that does not exist.
fn absent(key: &str) -> Problem {
    Problem {
        status: StatusCode::PRECONDITION_FAILED,
        code: "FAILED_PRECONDITION",
        message: format!("If-Match: * but key {key:?} does not exist"),
        reason: Some("REVISION_MISMATCH".into()),
        metadata: [("current_mod_revision".to_owned(), "0".to_owned())].into(),
    }
}

pub async fn delete(
    State(api): State<Api>,
    Key(key): Key,
    parts: Parts,
) -> Result<Response, Problem> {
    query::<NoQuery>(&parts)?;
    let condition = condition(&parts.headers)?;
    let expected_mod_revision = match condition {
        Condition::At(revision) => Some(revision),
        Condition::Absent => {
            return Err(Problem::bad_request(
                "If-None-Match: * on DELETE would delete nothing; use If-Match",
            ))
        }
        Condition::Always | Condition::Exists => None,
    };
    let request = api.request(
        "Delete",
        &parts,
        pb::DeleteRequest {
            key: key.clone(),
            expected_mod_revision,
            allow_missing: condition == Condition::Exists,
            ..Default::default()
        },
    )?;
    let response = api.unary(api.service.delete(request)).await?;
    let answer = response.into_inner();
    if !answer.deleted {
        return Err(absent(&key));
    }
    Ok(written(&api, answer.revision, None))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoQuery {}

/// The media types PATCH takes.
const MERGE_PATCH: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";

pub async fn patch(
    State(api): State<Api>,
    Key(key): Key,
    parts: Parts,
    body: Body,
) -> Result<Response, Problem> {
    let WriteQuery { lease } = query(&parts)?;
    let media_type = header_text(&parts.headers, header::CONTENT_TYPE)?.map(|t| {
        t.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let expected_mod_revision = match condition(&parts.headers)? {
        Condition::Always => None,
        Condition::At(revision) => Some(revision),
        Condition::Absent => Some(0),
        Condition::Exists => {
            return Err(Problem::bad_request(
                "If-Match: * is not taken on PATCH; send the document's ETag",
            ))
        }
    };
    let text = api.body_text(body).await?;
    let patch = match media_type.as_deref() {
        Some(MERGE_PATCH) => pb::patch_request::Patch::MergeJson(text),
        Some(JSON_PATCH) => pb::patch_request::Patch::JsonPatch(text),
        other => {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                tonic::Code::InvalidArgument,
                format!(
                    "PATCH takes Content-Type {MERGE_PATCH} (RFC 7396) or {JSON_PATCH} (RFC 6902), not {}",
                    other.unwrap_or("none")
                ),
            ))
        }
    };
    let request = api.request(
        "Patch",
        &parts,
        pb::PatchRequest {
            key,
            patch: Some(patch),
            expected_mod_revision,
            lease,
            value_encoding: ValueEncoding::Json as i32,
        },
    )?;
    let response = api.unary(api.service.patch(request)).await?;
    let answer = response.into_inner();
    Ok(document(
        &api,
        &answer.kv.unwrap_or_default(),
        answer.revision,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    limit: i32,
    #[serde(default)]
    page_token: String,
    #[serde(default)]
    keys_only: bool,
    #[serde(default)]
    min_revision: i64,
    #[serde(default)]
    linearizable: bool,
    #[serde(default)]
    store_id: String,
    #[serde(default)]
    filter: String,
    #[serde(default)]
    fields: Vec<String>,
}

pub async fn list(State(api): State<Api>, parts: Parts) -> Result<Response, Problem> {
    let q: ListQuery = query(&parts)?;
    if q.limit < 0 {
        return Err(Problem::bad_request("limit must not be negative"));
    }
    let request = api.request(
        "List",
        &parts,
        pb::ListRequest {
            prefix: q.prefix,
            page_size: q.limit,
            page_token: q.page_token,
            value_encoding: ValueEncoding::Json as i32,
            keys_only: q.keys_only,
            min_revision: q.min_revision,
            linearizable: q.linearizable,
            store_id: q.store_id,
            filter: q.filter,
            fields: q.fields,
        },
    )?;
    let page = api.unary(api.service.list(request)).await?.into_inner();
    Ok(api.json(json::list(&page)))
}
