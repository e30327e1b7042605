//! Transactions: [`Client::txn`] starts a [`Txn`], conditions on keys ([`Cmp`]) and two
//! branches of operations ([`TxnOp`]); [`Txn::commit`] runs one branch at one revision and
//! answers with a [`TxnResult`].
//!
//! ```no_run
//! # async fn demo(client: jsonkv_client::Client) -> Result<(), jsonkv_client::Error> {
//! use jsonkv_client::{Cmp, TxnOp};
//! use serde_json::json;
//!
//! // Move one unit from a to b, unless a changed since it was read at mod revision 5.
//! let done = client
//!     .txn()
//!     .when(Cmp::mod_revision("stock/a").eq(5))
//!     .then([
//!         TxnOp::insert("stock/a", &json!({"units": 9})),
//!         TxnOp::merge("stock/b", &json!({"units": 1})),
//!     ])
//!     .otherwise(TxnOp::get("stock/a"))
//!     .commit()
//!     .await?;
//! if !done.succeeded {
//!     let current = done.results[0].entry::<serde_json::Value>()?;
//! }
//! # Ok(()) }
//! ```

use jsonkv::pb::CompareResult;
use jsonkv::pb::{self, compare::Target as WireTarget, op::Request, op_result::Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::client::JSON;
use crate::consistency::store_of;
use crate::entry::JsonText;
use crate::failover::CallKind;
use crate::patch::Patch;
use crate::{Client, Entry, Error, InsertResult, Precondition};

/// One condition of a transaction, on one key: built by [`Cmp::mod_revision`],
/// [`Cmp::create_revision`] and [`Cmp::version`] (then `.eq`, `.ne`, `.lt` or `.gt` a number),
/// [`Cmp::value`] (then `.eq` or `.ne` a document), [`Cmp::exists`], [`Cmp::absent`] and
/// [`Cmp::precondition`]. An absent key has mod revision, create revision and version 0, and
/// equals no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmp {
    key: String,
    result: CompareResult,
    target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    ModRevision(i64),
    CreateRevision(i64),
    Version(i64),
    Value(JsonText),
    Exists(bool),
}

/// Which number of a key's metadata a [`CmpNumber`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Number {
    ModRevision,
    CreateRevision,
    Version,
}

/// A key's mod revision, create revision or version, to compare with a number: finish it with
/// [`eq`](CmpNumber::eq), [`ne`](CmpNumber::ne), [`lt`](CmpNumber::lt) or
/// [`gt`](CmpNumber::gt).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a comparison needs its number: .eq(n), .ne(n), .lt(n) or .gt(n)"]
pub struct CmpNumber {
    key: String,
    number: Number,
}

/// A key's document, to compare with one: finish it with [`eq`](CmpValue::eq) or
/// [`ne`](CmpValue::ne). (Documents have no order.)
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a comparison needs its document: .eq(&value) or .ne(&value)"]
pub struct CmpValue {
    key: String,
}

impl Cmp {
    /// The key's mod revision (the revision that last changed it; 0 if absent).
    pub fn mod_revision(key: impl Into<String>) -> CmpNumber {
        CmpNumber {
            key: key.into(),
            number: Number::ModRevision,
        }
    }

    /// The key's create revision (0 if absent).
    pub fn create_revision(key: impl Into<String>) -> CmpNumber {
        CmpNumber {
            key: key.into(),
            number: Number::CreateRevision,
        }
    }

    /// The key's version: its modifications since it was created (0 if absent).
    pub fn version(key: impl Into<String>) -> CmpNumber {
        CmpNumber {
            key: key.into(),
            number: Number::Version,
        }
    }

    /// The key's document. JSON equality: objects equal whatever their member order, integers
    /// compare exactly, other numbers by value (1.0 equals 1).
    pub fn value(key: impl Into<String>) -> CmpValue {
        CmpValue { key: key.into() }
    }

    /// Holds when the key exists.
    pub fn exists(key: impl Into<String>) -> Cmp {
        Cmp::new(key.into(), CompareResult::Equal, Target::Exists(true))
    }

    /// Holds when the key does not exist.
    pub fn absent(key: impl Into<String>) -> Cmp {
        Cmp::new(key.into(), CompareResult::Equal, Target::Exists(false))
    }

    /// Holds when `precondition` holds for the key, as [`Client::insert_if`] checks it.
    pub fn precondition(key: impl Into<String>, precondition: Precondition) -> Cmp {
        match precondition {
            Precondition::Absent => Cmp::absent(key),
            Precondition::ModRevision(revision) => Cmp::mod_revision(key).eq(revision),
        }
    }

    /// The key this condition is on.
    pub fn key(&self) -> &str {
        &self.key
    }

    fn new(key: String, result: CompareResult, target: Target) -> Cmp {
        Cmp {
            key,
            result,
            target,
        }
    }

    fn to_wire(&self) -> Result<pb::Compare, Error> {
        let target = match &self.target {
            Target::ModRevision(n) => WireTarget::ModRevision(*n),
            Target::CreateRevision(n) => WireTarget::CreateRevision(*n),
            Target::Version(n) => WireTarget::Version(*n),
            Target::Value(text) => WireTarget::ValueJson(text.text(&self.key)?),
            Target::Exists(exists) => WireTarget::Exists(*exists),
        };
        Ok(pb::Compare {
            key: self.key.clone(),
            result: self.result as i32,
            target: Some(target),
        })
    }
}

/// One condition is a collection of one, so [`Txn::when`] takes either.
impl IntoIterator for Cmp {
    type Item = Cmp;
    type IntoIter = std::iter::Once<Cmp>;

    fn into_iter(self) -> Self::IntoIter {
        std::iter::once(self)
    }
}

impl CmpNumber {
    /// Holds when the key's number equals `n`.
    pub fn eq(self, n: i64) -> Cmp {
        self.finish(CompareResult::Equal, n)
    }

    /// Holds when the key's number is not `n`.
    pub fn ne(self, n: i64) -> Cmp {
        self.finish(CompareResult::NotEqual, n)
    }

    /// Holds when the key's number is less than `n`.
    pub fn lt(self, n: i64) -> Cmp {
        self.finish(CompareResult::Less, n)
    }

    /// Holds when the key's number is greater than `n`.
    pub fn gt(self, n: i64) -> Cmp {
        self.finish(CompareResult::Greater, n)
    }

    fn finish(self, result: CompareResult, n: i64) -> Cmp {
        let target = match self.number {
            Number::ModRevision => Target::ModRevision(n),
            Number::CreateRevision => Target::CreateRevision(n),
            Number::Version => Target::Version(n),
        };
        Cmp::new(self.key, result, target)
    }
}

impl CmpValue {
    /// Holds when the key exists and its document equals `value`.
    pub fn eq(self, value: &impl Serialize) -> Cmp {
        Cmp::new(
            self.key,
            CompareResult::Equal,
            Target::Value(JsonText::of(value)),
        )
    }

    /// Holds when the key is absent or its document is not `value`.
    pub fn ne(self, value: &impl Serialize) -> Cmp {
        Cmp::new(
            self.key,
            CompareResult::NotEqual,
            Target::Value(JsonText::of(value)),
        )
    }
}

/// One operation of a transaction. Operations run in order, and a get sees the writes of the
/// operations before it; a branch may write each key at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOp(Op);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Get {
        key: String,
    },
    Insert {
        key: String,
        value: JsonText,
        lease: i64,
    },
    Delete {
        key: String,
    },
    Patch {
        key: String,
        patch: Patch,
    },
}

impl TxnOp {
    /// Reads the key: [`TxnOpResult::Get`], `None` if it does not exist.
    pub fn get(key: impl Into<String>) -> TxnOp {
        TxnOp(Op::Get { key: key.into() })
    }

    /// Creates or replaces the key's value: [`TxnOpResult::Insert`].
    pub fn insert(key: impl Into<String>, value: &impl Serialize) -> TxnOp {
        TxnOp::insert_leased(key, value, 0)
    }

    /// Creates or replaces the key's value, attached to the live lease `lease` (0: none): the
    /// key is deleted when the lease ends. A lease that is not live fails the whole
    /// transaction with [`Error::NotFound`].
    pub fn insert_leased(key: impl Into<String>, value: &impl Serialize, lease: i64) -> TxnOp {
        TxnOp(Op::Insert {
            key: key.into(),
            value: JsonText::of(value),
            lease,
        })
    }

    /// Deletes the key: [`TxnOpResult::Delete`], `None` if it did not exist (not an error).
    pub fn delete(key: impl Into<String>) -> TxnOp {
        TxnOp(Op::Delete { key: key.into() })
    }

    /// Applies an RFC 7396 merge patch to the key ([`Patch::merge`]): [`TxnOpResult::Patch`].
    pub fn merge(key: impl Into<String>, patch: &impl Serialize) -> TxnOp {
        TxnOp::patch(key, Patch::merge(patch))
    }

    /// Applies an RFC 6902 JSON Patch to the key ([`Patch::json_patch`]): a failed `test` or
    /// an absent key fails the whole transaction ([`Error::PatchFailed`], [`Error::NotFound`]).
    pub fn json_patch(key: impl Into<String>, operations: &impl Serialize) -> TxnOp {
        TxnOp::patch(key, Patch::json_patch(operations))
    }

    /// Applies `patch` to the key: [`TxnOpResult::Patch`].
    pub fn patch(key: impl Into<String>, patch: Patch) -> TxnOp {
        TxnOp(Op::Patch {
            key: key.into(),
            patch,
        })
    }

    /// The key this operation is on.
    pub fn key(&self) -> &str {
        match &self.0 {
            Op::Get { key }
            | Op::Insert { key, .. }
            | Op::Delete { key }
            | Op::Patch { key, .. } => key,
        }
    }

    fn to_wire(&self) -> Result<pb::Op, Error> {
        let request = match &self.0 {
            Op::Get { key } => Request::Get(pb::GetRequest {
                key: key.clone(),
                value_encoding: JSON,
                // A transaction always reads the source of truth: these do not apply.
                min_revision: 0,
                linearizable: false,
                store_id: String::new(),
            }),
            Op::Insert { key, value, lease } => Request::Insert(pb::InsertRequest {
                key: key.clone(),
                new_value: Some(pb::insert_request::NewValue::ValueJson(value.text(key)?)),
                expected_mod_revision: None,
                return_previous: false,
                value_encoding: JSON,
                lease: *lease,
            }),
            Op::Delete { key } => Request::Delete(pb::DeleteRequest {
                key: key.clone(),
                expected_mod_revision: None,
                return_previous: false,
                value_encoding: JSON,
                // An absent key is an answer (`None`), as in `Client::delete`.
                allow_missing: true,
            }),
            Op::Patch { key, patch } => Request::Patch(patch.request(key, None)?),
        };
        Ok(pb::Op {
            request: Some(request),
        })
    }
}

/// One operation is a collection of one, so [`Txn::then`] and [`Txn::otherwise`] take either.
impl IntoIterator for TxnOp {
    type Item = TxnOp;
    type IntoIter = std::iter::Once<TxnOp>;

    fn into_iter(self) -> Self::IntoIter {
        std::iter::once(self)
    }
}

/// A transaction being built: [`Client::txn`], then [`when`](Txn::when),
/// [`then`](Txn::then) and [`otherwise`](Txn::otherwise), each as often as needed, then
/// [`commit`](Txn::commit).
#[derive(Debug, Clone)]
#[must_use = "a transaction does nothing until it is committed"]
pub struct Txn {
    client: Client,
    compare: Vec<Cmp>,
    success: Vec<TxnOp>,
    failure: Vec<TxnOp>,
}

/// What a committed transaction did.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnResult {
    /// Whether every condition held, so that the `then` operations ran (otherwise the
    /// `otherwise` ones did).
    pub succeeded: bool,
    /// The revision of the transaction's writes, all of them; if it wrote nothing, the revision
    /// it read at.
    pub revision: i64,
    /// One per operation of the branch that ran, in order.
    pub results: Vec<TxnOpResult>,
}

/// What one operation of a transaction did.
#[derive(Debug, Clone, PartialEq)]
pub enum TxnOpResult {
    /// The key as the get read it; `None` if it did not exist.
    Get(Option<Entry<Value>>),
    Insert(InsertResult),
    /// `Some(revision of the delete)`, or `None` if the key did not exist.
    Delete(Option<i64>),
    /// The key after the patch.
    Patch(Entry<Value>),
}

impl TxnOpResult {
    /// The entry a get read (`None`: the key did not exist) or a patch left, as `T`; `None` for
    /// an insert or a delete.
    pub fn entry<T: DeserializeOwned>(&self) -> Result<Option<Entry<T>>, Error> {
        match self {
            TxnOpResult::Get(entry) => entry.as_ref().map(Entry::decode).transpose(),
            TxnOpResult::Patch(entry) => entry.decode().map(Some),
            TxnOpResult::Insert(_) | TxnOpResult::Delete(_) => Ok(None),
        }
    }

    fn from_wire(result: pb::OpResult) -> Result<TxnOpResult, Error> {
        Ok(match result.response {
            Some(Response::Get(get)) => TxnOpResult::Get(get.kv.map(Entry::from_wire).transpose()?),
            Some(Response::Insert(insert)) => TxnOpResult::Insert(InsertResult {
                revision: insert.revision,
                create_revision: insert.create_revision,
                version: insert.version,
            }),
            Some(Response::Delete(delete)) => {
                TxnOpResult::Delete(delete.deleted.then_some(delete.revision))
            }
            Some(Response::Patch(patch)) => {
                let kv = patch.kv.ok_or_else(|| {
                    Error::Protocol("a transaction's patch returned no key-value".into())
                })?;
                TxnOpResult::Patch(Entry::from_wire(kv)?)
            }
            None => return Err(Error::Protocol("an empty operation result".into())),
        })
    }
}

impl Client {
    /// Starts a transaction: if every condition given to [`Txn::when`] holds (none: always),
    /// the operations given to [`Txn::then`] run, otherwise those given to [`Txn::otherwise`];
    /// either way all at one revision, seen by every watcher at once, all or nothing. A failed
    /// condition is an answer ([`TxnResult::succeeded`] false); a failed operation (a patch
    /// that does not apply, an unknown lease) is an error, and nothing changes. At most 128
    /// conditions and operations in all.
    pub fn txn(&self) -> Txn {
        Txn {
            client: self.clone(),
            compare: Vec::new(),
            success: Vec::new(),
            failure: Vec::new(),
        }
    }

    /// Runs a transaction given in its wire form, as tools that speak the proto do (`jsonkv
    /// txn`); [`Client::txn`] builds one for you. Its writes raise the revision floor.
    pub async fn txn_request(&self, request: pb::TxnRequest) -> Result<pb::TxnResponse, Error> {
        // Without a write in either branch it is a read, which may go to the next server after
        // any failure; with one, only when it provably never left.
        let writes = request
            .success
            .iter()
            .chain(&request.failure)
            .any(|op| !matches!(op.request, Some(Request::Get(_)) | None));
        let kind = if writes {
            CallKind::Write
        } else {
            CallKind::Read
        };
        let response = self
            .servers
            .call(kind, |mut rpc| {
                let request = request.clone();
                async move { rpc.txn(request).await }
            })
            .await?;
        let store_id = store_of(response.metadata());
        let response = response.into_inner();
        // Without a write the revision is only where the store stood: no write to wait for.
        if response.results.iter().any(wrote) {
            self.consistency
                .observe_write(response.revision, store_id.as_deref());
        }
        Ok(response)
    }
}

impl Txn {
    /// Adds conditions: one [`Cmp`], or any collection of them. All must hold.
    pub fn when(mut self, conditions: impl IntoIterator<Item = Cmp>) -> Txn {
        self.compare.extend(conditions);
        self
    }

    /// Adds operations to run if every condition holds: one [`TxnOp`], or any collection.
    pub fn then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Txn {
        self.success.extend(ops);
        self
    }

    /// Adds operations to run if a condition does not hold: one [`TxnOp`], or any collection.
    pub fn otherwise(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Txn {
        self.failure.extend(ops);
        self
    }

    /// Runs the transaction. Its writes raise the client's revision floor, as an insert's do.
    pub async fn commit(self) -> Result<TxnResult, Error> {
        let request = pb::TxnRequest {
            compare: self
                .compare
                .iter()
                .map(Cmp::to_wire)
                .collect::<Result<_, _>>()?,
            success: self
                .success
                .iter()
                .map(TxnOp::to_wire)
                .collect::<Result<_, _>>()?,
            failure: self
                .failure
                .iter()
                .map(TxnOp::to_wire)
                .collect::<Result<_, _>>()?,
        };
        let response = self.client.txn_request(request).await?;
        let ran = if response.succeeded {
            self.success.len()
        } else {
            self.failure.len()
        };
        if response.results.len() != ran {
            return Err(Error::Protocol(format!(
                "a transaction's branch of {ran} operations returned {} results",
                response.results.len()
            )));
        }
        let results = response
            .results
            .into_iter()
            .map(TxnOpResult::from_wire)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TxnResult {
            succeeded: response.succeeded,
            revision: response.revision,
            results,
        })
    }
}

/// Whether an operation changed the store.
fn wrote(result: &pb::OpResult) -> bool {
    match &result.response {
        Some(Response::Insert(_) | Response::Patch(_)) => true,
        Some(Response::Delete(delete)) => delete.deleted,
        Some(Response::Get(_)) | None => false,
    }
}
