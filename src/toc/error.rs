//! The errors of the TOC layer.
//!
//! # Design note
//!
//! Every refusal names the unit (and the import or export) it is about and
//! says what the caller can do. A refused load or reload changes nothing:
//! the check runs before any slot, index entry or state is touched, and the
//! image that was opened for it is closed again.

use std::fmt;
use std::path::PathBuf;

/// Why a unit could not be loaded, reloaded, imported from or resolved.
#[derive(Debug)]
#[non_exhaustive]
pub enum TocError {
    /// Copying the library to a fresh name failed.
    Copy {
        /// The library.
        path: PathBuf,
        /// The error from the file system.
        error: std::io::Error,
    },
    /// `dlopen` refused the library.
    Dlopen {
        /// The library.
        path: PathBuf,
        /// `dlerror()`'s text.
        message: String,
    },
    /// The library exports no `PROCRT_TOC_UNIT` table.
    NotAUnit {
        /// The library.
        path: PathBuf,
    },
    /// The table's magic or ABI version is not this procrt's.
    BadTable {
        /// The library.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A unit of that name is loaded already (use `Unit::reload`).
    AlreadyLoaded {
        /// The unit.
        unit: String,
    },
    /// No unit of that name is loaded.
    NotLoaded {
        /// The unit.
        unit: String,
    },
    /// A lazily resolved import was called before its provider was loaded.
    ProviderNotLoaded {
        /// The importing unit.
        importer: String,
        /// The unit it imports from.
        provider: String,
        /// The function.
        name: String,
    },
    /// The library given to `reload` declares another unit name.
    NameMismatch {
        /// The unit being reloaded.
        unit: String,
        /// The name the new library declares.
        found: String,
    },
    /// An import names an export its provider does not have.
    MissingExport {
        /// The importing unit (`"host"` for the program itself).
        importer: String,
        /// The providing unit.
        provider: String,
        /// The function.
        name: String,
    },
    /// An import and the export it names have different signature hashes.
    SignatureMismatch {
        /// The importing unit (`"host"` for the program itself).
        importer: String,
        /// The providing unit.
        provider: String,
        /// The function.
        name: String,
        /// The importer's hash.
        expected: u64,
        /// The export's hash.
        found: u64,
    },
    /// The unit's relink index was dropped by `Toc::strip_relink`, so its
    /// dependents' slots can no longer be found to re-point.
    RelinkStripped {
        /// The unit.
        unit: String,
    },
    /// The state layout changed and the new version exports no `migrate`.
    StateLayoutChanged {
        /// The unit.
        unit: String,
        /// The running version's layout hash (0: no state).
        old: u64,
        /// The new version's layout hash (0: no state).
        new: u64,
    },
    /// The new version's `migrate` returned a non-zero status.
    MigrateFailed {
        /// The unit.
        unit: String,
        /// What `migrate` returned.
        status: i32,
    },
    /// A third version was loaded while a proc may still run in the oldest
    /// one (Erlang's `soft_purge` refusal).
    OldCodeInUse {
        /// The unit.
        unit: String,
        /// The generation that would have to be purged.
        generation: u64,
        /// Tracked calls still inside it or in a unit that may call it.
        calls: usize,
    },
}

impl fmt::Display for TocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TocError::Copy { path, error } => {
                write!(f, "cannot copy {} to a fresh name: {error}", path.display())
            }
            TocError::Dlopen { path, message } => {
                write!(f, "dlopen({}) failed: {message}", path.display())
            }
            TocError::NotAUnit { path } => write!(
                f,
                "{} is not a procrt unit: it exports no PROCRT_TOC_UNIT table (declare one with procrt_toc_abi::unit!)",
                path.display()
            ),
            TocError::BadTable { path, reason } => {
                write!(f, "{}: bad unit table: {reason}", path.display())
            }
            TocError::AlreadyLoaded { unit } => {
                write!(f, "unit `{unit}` is loaded already; use Unit::reload to replace it")
            }
            TocError::NotLoaded { unit } => write!(f, "no unit `{unit}` is loaded"),
            TocError::ProviderNotLoaded {
                importer,
                provider,
                name,
            } => write!(
                f,
                "`{importer}` called its import `{provider}::{name}`, but no unit `{provider}` is loaded"
            ),
            TocError::NameMismatch { unit, found } => write!(
                f,
                "cannot reload unit `{unit}` from a library that declares the unit `{found}`"
            ),
            TocError::MissingExport {
                importer,
                provider,
                name,
            } => write!(
                f,
                "`{importer}` imports `{provider}::{name}`, but `{provider}` exports no `{name}`"
            ),
            TocError::SignatureMismatch {
                importer,
                provider,
                name,
                expected,
                found,
            } => write!(
                f,
                "signature mismatch: `{importer}` imports `{provider}::{name}` with signature hash {expected:#018x}, \
                 but `{provider}` exports it with {found:#018x}; refusing to link a call through a wrong type"
            ),
            TocError::RelinkStripped { unit } => write!(
                f,
                "cannot reload unit `{unit}`: its relink index was stripped (Toc::strip_relink), \
                 so the slots that point into it can no longer be found and re-pointed"
            ),
            TocError::StateLayoutChanged { unit, old, new } => write!(
                f,
                "cannot reload unit `{unit}`: its state layout changed (hash {old:#018x} -> {new:#018x}) \
                 and the new version exports no `migrate`; the old version keeps running"
            ),
            TocError::MigrateFailed { unit, status } => write!(
                f,
                "cannot reload unit `{unit}`: the new version's `migrate` returned {status}; the old version keeps running"
            ),
            TocError::OldCodeInUse {
                unit,
                generation,
                calls,
            } => write!(
                f,
                "cannot load a third version of unit `{unit}`: generation {generation} may still be running \
                 ({calls} tracked call(s) inside `{unit}` or a unit that imports from it); retry when they returned"
            ),
        }
    }
}

impl std::error::Error for TocError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TocError::Copy { error, .. } => Some(error),
            _ => None,
        }
    }
}
