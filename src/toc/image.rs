//! Mapping a unit's library: copy, `dlopen`, read and check its table.
//!
//! # Design note
//!
//! `Unit::load` and `Unit::reload` hand a path to [`open`], which copies
//! the file to a fresh name in the temporary directory, `dlopen`s the copy
//! (`RTLD_NOW | RTLD_LOCAL`: every symbol bound before any code runs, and
//! none of the unit's symbols can interpose on another unit's), unlinks the
//! copy (the mapping keeps the inode alive) and reads the `PROCRT_TOC_UNIT`
//! table. The copy is what makes a rebuilt library really load again: glibc
//! returns the existing handle for a path (and for a file) it has mapped
//! already, so reloading `libfoo.so` in place would hand back the old
//! image. The system loader picks the address; the unit's code is
//! position-independent, so nothing is relocated by hand.
//!
//! Everything the registry needs from the table (names, hashes, addresses)
//! is copied out into an [`OpenImage`], so that an image that a refused
//! reload closes again leaves no pointer behind. An accepted image is never
//! closed (see `mod.rs`, "Releasing old images").
//!
//! `libc::dlopen` rather than `libloading`: the loader needs exactly four
//! calls (`dlopen`, `dlsym`, `dlclose`, `dlerror`) and raw addresses, not
//! typed symbols tied to a library's lifetime, which is what `libloading`
//! adds; `libc` is a dependency already.

use super::TocError;
use procrt_toc_abi::{Export, Import, Slot, StateDecl, UnitTable, ABI_VERSION, MAGIC, UNIT_SYMBOL};
use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// One mapped version of a unit, as the public API sees it. Lives for the
/// rest of the process (images are never unmapped).
#[derive(Debug)]
pub struct ImageInfo {
    /// The unit's name.
    name: String,
    /// 1 for the first load, then one more per reload.
    generation: u64,
    /// Where the table landed (tells images apart in output).
    table: usize,
    /// Tracked calls inside this image right now.
    active: AtomicUsize,
}

impl ImageInfo {
    /// The unit's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// 1 for the first load, one more for each reload.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The address of the image's unit table (different for each image).
    pub fn table_addr(&self) -> usize {
        self.table
    }

    /// Tracked calls ([`Import::call`](super::Import::call)) inside the
    /// image right now, over all procs and threads.
    pub fn active_calls(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub(crate) fn enter(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn leave(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An export, copied out of a table.
#[derive(Debug, Clone)]
pub(crate) struct ExportRec {
    pub(crate) name: String,
    pub(crate) sig: u64,
    pub(crate) addr: *const (),
}

/// An import, copied out of a table.
#[derive(Debug, Clone)]
pub(crate) struct ImportRec {
    pub(crate) provider: String,
    pub(crate) name: String,
    pub(crate) sig: u64,
    pub(crate) slot: *const Slot,
    pub(crate) resolver: *const (),
}

/// A unit's state, copied out of a table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StateRec {
    pub(crate) hash: u64,
    pub(crate) size: usize,
    pub(crate) ptr: *mut u8,
}

/// A freshly opened image, not yet part of the registry.
#[derive(Debug)]
pub(crate) struct OpenImage {
    pub(crate) handle: *mut libc::c_void,
    pub(crate) table: *const UnitTable,
    pub(crate) name: String,
    pub(crate) exports: Vec<ExportRec>,
    pub(crate) imports: Vec<ImportRec>,
    pub(crate) state: Option<StateRec>,
    pub(crate) migrate: Option<procrt_toc_abi::MigrateFn>,
    pub(crate) on_reload: Option<procrt_toc_abi::OnReloadFn>,
}

impl OpenImage {
    /// Unmaps an image that was refused (no code of it ever ran, and no
    /// pointer into it was kept).
    pub(crate) fn close(self) {
        // SAFETY: `handle` came from dlopen and is closed once (self is
        // consumed); the refused image's addresses were never stored.
        unsafe { libc::dlclose(self.handle) };
    }

    /// Installs the host resolver and makes the image's public record.
    pub(crate) fn accept(
        &self,
        generation: u64,
        resolve: procrt_toc_abi::ResolveFn,
    ) -> &'static ImageInfo {
        // SAFETY: `table` points at the image's PROCRT_TOC_UNIT, checked by
        // `open`; its `host` field points at the image's HOST static.
        unsafe { (*(*self.table).host).install(resolve) };
        Box::leak(Box::new(ImageInfo {
            name: self.name.clone(),
            generation,
            table: self.table as usize,
            active: AtomicUsize::new(0),
        }))
    }

    /// The export called `name`.
    pub(crate) fn export(&self, name: &str) -> Option<&ExportRec> {
        self.exports.iter().find(|e| e.name == name)
    }
}

/// Makes fresh file names distinct within the process.
static COPIES: AtomicU64 = AtomicU64::new(0);

/// The text of `dlerror()`.
fn dlerror() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string valid until
    // the next dl* call on this thread; it is copied at once.
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "unknown error".to_string()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

/// Copies `path` to a fresh name, maps it and reads its unit table.
pub(crate) fn open(path: &Path) -> Result<OpenImage, TocError> {
    let file = path
        .file_name()
        .map_or_else(|| "unit.so".into(), |f| f.to_string_lossy().into_owned());
    let copy = std::env::temp_dir().join(format!(
        "procrt-unit-{}-{}-{file}",
        std::process::id(),
        COPIES.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::copy(path, &copy).map_err(|error| TocError::Copy {
        path: path.to_path_buf(),
        error,
    })?;
    let c = CString::new(copy.as_os_str().as_bytes()).expect("temp path has no NUL");
    // SAFETY: `c` is a NUL-terminated path. dlopen runs the library's
    // initializers; a unit is a Rust cdylib, whose only initializers are
    // those of std.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    let err = if handle.is_null() {
        Some(dlerror())
    } else {
        None
    };
    // The mapping holds the inode; the name is no longer needed.
    let _ = std::fs::remove_file(&copy);
    if let Some(message) = err {
        return Err(TocError::Dlopen {
            path: path.to_path_buf(),
            message,
        });
    }
    match read_table(path, handle) {
        Ok(img) => Ok(img),
        Err(e) => {
            // SAFETY: `handle` came from dlopen just above and nothing of it
            // was kept.
            unsafe { libc::dlclose(handle) };
            Err(e)
        }
    }
}

/// Reads and checks the unit table of a mapped library.
fn read_table(path: &Path, handle: *mut libc::c_void) -> Result<OpenImage, TocError> {
    // SAFETY: `handle` is a live dlopen handle; the symbol name is
    // NUL-terminated.
    let sym = unsafe { libc::dlsym(handle, UNIT_SYMBOL.as_ptr().cast()) };
    if sym.is_null() {
        return Err(TocError::NotAUnit {
            path: path.to_path_buf(),
        });
    }
    let bad = |reason: String| TocError::BadTable {
        path: path.to_path_buf(),
        reason,
    };
    let table = sym as *const UnitTable;
    // SAFETY: the magic word is read first, as a plain u64, from the
    // start of the exported symbol (every unit table starts with it).
    let magic = unsafe { (table as *const u64).read_unaligned() };
    if magic != MAGIC {
        return Err(bad(format!("magic {magic:#x}, expected {MAGIC:#x}")));
    }
    // SAFETY: the magic says this is a UnitTable written by unit!.
    let t = unsafe { &*table };
    if t.abi_version != ABI_VERSION {
        return Err(bad(format!(
            "ABI version {}, this procrt reads {ABI_VERSION}",
            t.abi_version
        )));
    }
    // SAFETY: the table's pointers and lengths were written by unit! from
    // static arrays and strings of the same image, which is mapped.
    let (name, exports, imports, state) = unsafe {
        let name = t.name.as_str().to_owned();
        let exports: &[Export] = slice(t.exports, t.n_exports);
        let imports: &[Import] = slice(t.imports, t.n_imports);
        let exports = exports
            .iter()
            .map(|e| ExportRec {
                name: e.name.as_str().to_owned(),
                sig: e.sig,
                addr: e.addr,
            })
            .collect::<Vec<_>>();
        let imports = imports
            .iter()
            .map(|i| ImportRec {
                provider: i.provider.as_str().to_owned(),
                name: i.name.as_str().to_owned(),
                sig: i.sig,
                slot: i.slot,
                resolver: i.resolver,
            })
            .collect::<Vec<_>>();
        let state = t.state.as_ref().map(|s: &StateDecl| StateRec {
            hash: s.hash,
            size: s.size,
            ptr: s.ptr,
        });
        (name, exports, imports, state)
    };
    Ok(OpenImage {
        handle,
        table,
        name,
        exports,
        imports,
        state,
        migrate: t.migrate,
        on_reload: t.on_reload,
    })
}

/// `len` items at `p` (an empty slice when `len` is 0, whatever `p` is).
///
/// # Safety
///
/// When `len > 0`, `p` points at `len` initialized items that outlive `'a`.
unsafe fn slice<'a, T>(p: *const T, len: usize) -> &'a [T] {
    if len == 0 {
        &[]
    } else {
        // SAFETY: by the caller.
        unsafe { std::slice::from_raw_parts(p, len) }
    }
}
