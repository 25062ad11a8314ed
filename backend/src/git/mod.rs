//! Everything done with git2. All of it blocks: callers run it in
//! `spawn_blocking`.

mod clone;
mod workspace;

pub use clone::{clone, CloneError, CloneProgress, CloneRequest, Credentials, DiskLimits};
pub use workspace::{
    changes, diff, read_file, snapshot, tree, Changes, Diff, FileContent, FileError, Snapshot,
    Tree, TreeEntry,
};
