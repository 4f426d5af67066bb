//! Code units with a TOC: hot code reload while procs run.
//!
//! # Design note
//!
//! The design note says: code lives in crates that a loader maps at any
//! address; each crate has a TOC of lazily resolved import addresses and
//! the set of crates that use it, who are told when it is reloaded; every
//! inter-crate call vectors through the TOC; a strippable relink section
//! indexes every reloc by pointee and by pointer; a reloaded module is
//! mapped at a fresh address and incrementally relinked. Here:
//!
//! - A **unit** is a `cdylib` that links only the small `procrt-toc-abi`
//!   crate (re-exported as [`abi`]) and declares itself with
//!   [`abi::unit!`]: name, exports and imports, each function with a
//!   signature hash, optional state, `migrate` and `on_reload`.
//!   [`Unit::load`] copies the file to a fresh name and `dlopen`s it
//!   (`image.rs`).
//! - A unit's **TOC** is its array of import slots. A slot starts at a
//!   resolver stub; the first call resolves it against the provider's
//!   current exports (signature hashes must match), fills it, and every
//!   later call is one load and one indirect call (see `procrt-toc-abi`).
//!   The program's own calls into units go through [`Import`]s, host-side
//!   slots resolved when made (`import.rs`).
//! - The **registry** (`registry.rs`) knows every slot, the **dependents**
//!   of each unit (the units whose images import from it, and `"host"`),
//!   and the **relink index** by pointee and by pointer.
//!   [`Toc::strip_relink`] drops a unit's part of it; that unit's reload is
//!   then refused with [`TocError::RelinkStripped`].
//! - [`Unit::reload`] maps the new version, checks it (every declared
//!   import of it, every import of it, its state layout), moves the state,
//!   and re-points exactly the slots whose pointee is in the unit. Each
//!   dependent's `on_reload` is then called.
//!
//! # Two versions, like Erlang
//!
//! A unit has at most two live images: *current* and *old*. A reload makes
//! the new image current and the previous one old. The old image is never
//! unmapped while it is live: a proc that was inside it (its code had
//! called back into the host, which switched procs) resumes there and
//! finishes that call in old code; when it returns, its next call through
//! a TOC slot reaches the new code, because every slot into the unit was
//! re-pointed at the reload.
//!
//! **A third load** purges the old image first, as Erlang's `load` does,
//! but softly, like `code:soft_purge`: it is refused with
//! [`TocError::OldCodeInUse`] while any tracked call ([`Import::call`]) is
//! inside the old image or inside any image of a unit that (transitively)
//! imports from this one (such a call may have reached the old image before
//! the reload; the test is conservative). Erlang kills the processes still
//! running old code; procrt cannot end a proc that is inside foreign code,
//! so it refuses instead and the caller retries.
//!
//! # Releasing old images
//!
//! A purged image leaves the registry and the relink index (its slots are
//! no longer re-pointed) and is **never unmapped**: procrt does not
//! `dlclose` an image that ever ran. An image can be released when no proc
//! can be running in it and nothing points into it: it is purged, no
//! tracked call was inside it or its dependents at the purge, and no raw
//! call ([`Import::get`]) or function pointer obtained from it is still in
//! use. procrt can prove the first two, not the last; and `dlclose` of a
//! Rust `cdylib` that registered thread-local destructors is unreliable
//! (rust-lang/rust#59629). So the cost of a reload is one image's mapping
//! kept until the process exits; the refused reload's image, which never
//! ran, is closed at once.
//!
//! # State across a reload
//!
//! A unit's state is one `static` declared with [`abi::state!`] (atomics
//! only), with a layout hash. On reload, equal hashes: the bytes are copied
//! into the new image before it becomes current. Different hashes: the new
//! image's `migrate(old, old_hash, old_size)` converts them, and a non-zero
//! status refuses the reload; no `migrate`: the reload is refused with
//! [`TocError::StateLayoutChanged`] and the old code keeps running. Writes
//! that a proc still inside the old image makes after the reload stay in
//! the old image's copy.
//!
//! # The current unit of a proc
//!
//! [`current()`] is the image the running proc entered through a tracked
//! call, one thread-local load kept by the switch; see `current.rs` for how
//! it maps onto the note's dedicated TOC register on x86_64 and i386.
//!
//! # Threads
//!
//! Slots are atomics and the registry is behind a mutex, so units may be
//! called from any thread. A reload is meant to be run on the thread whose
//! procs use the unit: the state copy and the purge check assume no other
//! thread is inside the unit meanwhile.
//!
//! # Limitations
//!
//! - Unit functions are `extern "C"`: a panic cannot cross them. A host
//!   callback that a unit calls must not panic, and a proc suspended
//!   inside unit code (through such a callback) must not be cancelled by a
//!   runtime drop or an exit signal: unwinding into the unit's frames ends
//!   the process.
//! - Signature hashes cover the type *names* of the parameters and return
//!   value; a struct passed by pointer that changed under the same name is
//!   not detected (state layouts are, by [`abi::state!`]).
//! - Calls from one unit into another do not update [`current()`], and raw
//!   calls ([`Import::get`]) are not tracked (see "Two versions").
//!
//! # Example
//!
//! ```no_run
//! use procrt::toc::{import, Unit};
//!
//! let dir = std::path::Path::new("target/toc-units/release");
//! let counter = Unit::load(dir.join("libunit_counter_v1.so"))?;
//! let bump = import!("counter", fn bump(u64) -> u64)?;
//! assert_eq!(bump.call(|f| f(1)) >> 48, 1); // version 1 answers
//! counter.reload(dir.join("libunit_counter_v2.so"))?;
//! assert_eq!(bump.call(|f| f(1)) >> 48, 2); // the same slot, version 2
//! # Ok::<(), procrt::toc::TocError>(())
//! ```

mod current;
mod error;
mod image;
mod import;
mod registry;

pub use current::current;
pub(crate) use current::set_running_unit;
pub use error::TocError;
pub use image::ImageInfo;
pub use import::{import, FnPtr, Import};
/// The unit-side ABI: the tables and the macros a unit declares itself
/// with (the `procrt-toc-abi` crate).
pub use procrt_toc_abi as abi;

use registry::UnitIdx;
use std::path::Path;
use std::time::Duration;

/// How a reload re-points the slots into the reloaded unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RelinkMode {
    /// Write the new export's address into each slot now (the default).
    #[default]
    Eager,
    /// Put each unit-held slot back on its resolver; its next call
    /// resolves it again. Host slots are re-pointed eagerly.
    Reset,
}

/// What happened to the state in a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateTransfer {
    /// The old version had no state: the new one starts with its own.
    Fresh,
    /// Same layout: this many bytes were copied.
    Copied {
        /// `size_of` the state.
        bytes: usize,
    },
    /// Different layouts: the new version's `migrate` converted it.
    Migrated {
        /// The old layout hash.
        from: u64,
        /// The new layout hash (0: no state).
        to: u64,
    },
}

/// What a reload did.
#[derive(Clone, Debug)]
pub struct ReloadReport {
    /// The unit.
    pub unit: String,
    /// The new image's generation.
    pub generation: u64,
    /// Slots into the unit now pointing at the new image.
    pub repointed: usize,
    /// Slots into the unit put back on their resolver
    /// ([`RelinkMode::Reset`]).
    pub reset: usize,
    /// Slots of the new image linked from the old image's (by pointer).
    pub prelinked: usize,
    /// The generation purged to make room, on a third load.
    pub purged: Option<u64>,
    /// The units told (through `on_reload`), and `"host"` if the program
    /// holds imports from the unit.
    pub dependents: Vec<String>,
    /// What happened to the state.
    pub state: StateTransfer,
    /// Time spent re-pointing the slots into the unit.
    pub relink_time: Duration,
}

/// A loaded unit. Cheap to clone; units stay loaded for the process's life.
#[derive(Clone, Debug)]
pub struct Unit {
    /// Its index in the registry.
    idx: UnitIdx,
    /// Its name.
    name: String,
}

impl Unit {
    /// Copies the library at `path` to a fresh name and maps it.
    ///
    /// Refused if a unit of the same name is loaded, or if an import of it,
    /// or an import from it, does not match (name or signature hash).
    pub fn load(path: impl AsRef<Path>) -> Result<Unit, TocError> {
        registry::with(|r| {
            let idx = r.load(path.as_ref())?;
            Ok(Unit {
                idx,
                name: r.name(idx).to_string(),
            })
        })
    }

    /// The loaded unit called `name`.
    pub fn find(name: &str) -> Option<Unit> {
        registry::with(|r| {
            r.find(name).map(|idx| Unit {
                idx,
                name: name.to_string(),
            })
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Replaces the unit with the library at `path`, re-pointing eagerly.
    pub fn reload(&self, path: impl AsRef<Path>) -> Result<ReloadReport, TocError> {
        self.reload_with(path, RelinkMode::Eager)
    }

    /// Replaces the unit with the library at `path` (see the module docs).
    /// Each dependent's `on_reload` runs before this returns.
    pub fn reload_with(
        &self,
        path: impl AsRef<Path>,
        mode: RelinkMode,
    ) -> Result<ReloadReport, TocError> {
        let (report, hooks) = registry::with(|r| r.reload(self.idx, path.as_ref(), mode))?;
        registry::notify(&report, hooks);
        Ok(report)
    }

    /// The current image.
    pub fn image(&self) -> &'static ImageInfo {
        registry::with(|r| r.current_info(self.idx))
    }

    /// The live images, oldest first (one, or old and current).
    pub fn images(&self) -> Vec<&'static ImageInfo> {
        registry::with(|r| r.live_infos(self.idx))
    }

    /// The units that import from this one, and `"host"` if the program
    /// holds an [`Import`] from it.
    pub fn dependents(&self) -> Vec<String> {
        registry::with(|r| r.dependents(self.idx))
    }

    /// The unit's TOC and relink index.
    pub fn toc(&self) -> Toc {
        Toc { idx: self.idx }
    }
}

/// A unit's TOC: its import slots and its part of the relink index.
#[derive(Clone, Copy, Debug)]
pub struct Toc {
    /// The unit's index in the registry.
    idx: UnitIdx,
}

impl Toc {
    /// Drops the unit's part of the relink index (the slots that point into
    /// it, and the slots its images hold) and stops keeping it. Returns the
    /// number of entries dropped. The unit can no longer be reloaded
    /// ([`TocError::RelinkStripped`]); the units it imports from still
    /// can, and its slots into them are still re-pointed.
    pub fn strip_relink(&self) -> usize {
        registry::with(|r| r.strip(self.idx))
    }

    /// Whether [`strip_relink`](Toc::strip_relink) was called.
    pub fn is_stripped(&self) -> bool {
        registry::with(|r| r.stripped(self.idx))
    }

    /// Relink index entries about the unit: slots into it plus slots its
    /// images hold.
    pub fn relink_entries(&self) -> usize {
        registry::with(|r| r.index_entries(self.idx))
    }

    /// `(resolved, total)` import slots of the current image.
    pub fn slots(&self) -> (usize, usize) {
        registry::with(|r| r.slot_counts(self.idx))
    }
}

/// A host-side [`Import`] of `provider::name`, with the function type and
/// the signature hash derived from one signature.
///
/// ```no_run
/// let bump = procrt::toc::import!("counter", fn bump(u64) -> u64)?;
/// let n: u64 = bump.call(|f| f(1));
/// # Ok::<(), procrt::toc::TocError>(())
/// ```
#[doc(hidden)]
#[macro_export]
macro_rules! __toc_import {
    ($provider:expr, fn $name:ident ( $( $ty:ty ),* $(,)? ) $( -> $ret:ty )? ) => {
        $crate::toc::import::<extern "C" fn( $( $ty ),* ) $( -> $ret )?>(
            $provider,
            stringify!($name),
            $crate::toc::abi::sig!(fn( $( $ty ),* ) $( -> $ret )?),
        )
    };
}
pub use __toc_import as import;
