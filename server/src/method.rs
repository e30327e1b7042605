//! The gRPC methods this server knows, for labels and log lines: a fixed table, so that a
//! client calling made-up paths cannot grow a label set.

/// The known gRPC methods, and whether each streams its response. Anything else is counted as
/// `unknown`, so a client cannot grow the label set by calling made-up paths.
pub const METHODS: [(&str, bool); 20] = [
    ("jsonkv.v1.JsonKv/Get", false),
    ("jsonkv.v1.JsonKv/Insert", false),
    ("jsonkv.v1.JsonKv/Delete", false),
    ("jsonkv.v1.JsonKv/List", false),
    ("jsonkv.v1.JsonKv/Patch", false),
    ("jsonkv.v1.JsonKv/Txn", false),
    ("jsonkv.v1.JsonKv/WatchKey", true),
    ("jsonkv.v1.JsonKv/WatchPrefix", true),
    ("jsonkv.v1.JsonKv/Status", false),
    ("jsonkv.v1.JsonKv/Backup", true),
    ("jsonkv.v1.JsonKv/LeaseGrant", false),
    ("jsonkv.v1.JsonKv/LeaseKeepAlive", false),
    ("jsonkv.v1.JsonKv/LeaseKeepAliveStream", true),
    ("jsonkv.v1.JsonKv/LeaseRevoke", false),
    ("jsonkv.v1.JsonKv/LeaseTimeToLive", false),
    ("jsonkv.v1.JsonKv/LeaseList", false),
    ("grpc.health.v1.Health/Check", false),
    ("grpc.health.v1.Health/Watch", true),
    (
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        true,
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        true,
    ),
];

/// A call's method, as metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {
    /// Position in [`METHODS`]; `METHODS.len()` for an unknown one.
    pub index: usize,
    pub name: &'static str,
    pub streaming: bool,
}

pub fn method_of(path: &str) -> Method {
    let name = path.strip_prefix('/').unwrap_or(path);
    match METHODS.iter().position(|(known, _)| *known == name) {
        Some(index) => Method {
            index,
            name: METHODS[index].0,
            streaming: METHODS[index].1,
        },
        None => Method {
            index: METHODS.len(),
            name: "unknown",
            streaming: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_share_one_label() {
        let get = method_of("/jsonkv.v1.JsonKv/Get");
        assert_eq!((get.name, get.streaming), ("jsonkv.v1.JsonKv/Get", false));
        let watch = method_of("/jsonkv.v1.JsonKv/WatchKey");
        assert_eq!(
            (watch.name, watch.streaming),
            ("jsonkv.v1.JsonKv/WatchKey", true)
        );
        let made_up = method_of("/made.up/Path");
        assert_eq!((made_up.name, made_up.streaming), ("unknown", false));
        assert_eq!(made_up, method_of("/another/One"));
    }
}
