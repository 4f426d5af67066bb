//! The tables a procrt **code unit** declares itself with, and the macros
//! that write them.
//!
//! # Design note
//!
//! A unit is a `cdylib` that procrt's loader (`procrt::toc`) maps with
//! `dlopen` at whatever address the system picks. The loader learns
//! everything about a unit from one exported symbol, [`UNIT_SYMBOL`]
//! (`PROCRT_TOC_UNIT`), a `#[repr(C)]` [`UnitTable`]: the unit's name, its
//! exports (name, signature hash, address), its imports (provider, name,
//! signature hash, the address of the import's slot and of its resolver),
//! its state (layout hash, size, address), and two optional hooks
//! (`migrate`, `on_reload`). [`unit!`] writes that table.
//!
//! **This crate and not procrt.** A unit links only this crate: a handful
//! of `#[repr(C)]` types, two `const fn` hashes and the macros. It carries no
//! scheduler, no thread-locals of procrt's, no allocator state of procrt's:
//! if a unit linked procrt itself, the `cdylib` would hold a second copy of
//! the runtime's thread-locals (the running proc, the stack chain, the
//! current unit) that the host's scheduler never updates, and a call into it
//! would see "no runtime". The one thing a unit needs from the host, the
//! resolver of lazy imports, reaches it as a function pointer that the
//! loader writes into the unit's own copy of [`HOST`] before any code of the
//! unit runs.
//!
//! **The TOC of a unit** is its array of import [`Slot`]s. Each slot is one
//! word in the unit's writable data holding the address the unit calls for
//! that import. It starts at the import's *resolver*, a stub written by
//! [`unit!`] with exactly the import's signature: the first call lands in
//! the stub, which asks the host for the target (the host checks the
//! signature hash, fills the slot and records it in its relink index) and
//! then calls the target with the same arguments. Every later call is one
//! load of the slot and one indirect call ([`Slot::get`]); on x86_64 the
//! load is `mov rax, [rip + slot]`, on i386 `mov eax, [ebx + slot@GOTOFF]`.
//!
//! **Signature hashes** are FNV-1a (64-bit) of the signature's type text as
//! `stringify!` prints it with all whitespace removed, in the canonical form
//! `extern"C"fn(A,B)->R` (`->()` when there is no return type). Two
//! declarations of the same function hash alike wherever they are spelled;
//! a changed parameter or return type changes the hash. Type *names* are
//! hashed, not type *structure*: a type alias, or a struct whose fields
//! changed under the same name, is not caught (state layouts have their own
//! hash, below). Rejected: hashing `core::any::type_name` (not `const`, and
//! it spells paths differently in different crates).
//!
//! **State** that must outlive a reload is one `static` declared with
//! [`state!`]: a `#[repr(C)]` struct whose fields are all atomics (the loader
//! overwrites the new image's copy bytewise, which is sound only for
//! interior-mutable fields). Its layout hash covers the field names, the
//! field types' text, the size and the alignment. On reload the loader
//! copies the old bytes into the new image when the hashes match, calls the
//! new image's `migrate` when they differ, and refuses the reload when they
//! differ and there is no `migrate`.
//!
//! # Example (a unit's `lib.rs`)
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! procrt_toc_abi::state! {
//!     /// Calls served so far.
//!     pub struct Counter { pub calls: AtomicU64 }
//!     static COUNTER = Counter { calls: AtomicU64::new(0) };
//! }
//!
//! /// Counts a call and returns the count.
//! pub extern "C" fn bump(by: u64) -> u64 {
//!     COUNTER.calls.fetch_add(by, Ordering::Relaxed) + by
//! }
//!
//! procrt_toc_abi::unit! {
//!     name: "counter",
//!     exports: { fn bump(by: u64) -> u64; },
//!     imports: {},
//!     state: COUNTER,
//! }
//! # fn main() { assert_eq!(bump(2), 2); }
//! ```

use std::sync::atomic::{AtomicPtr, Ordering};

/// First word of every [`UnitTable`]: `b"procrtTC"` read little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"procrtTC");

/// Version of the table layout; the loader refuses any other.
pub const ABI_VERSION: u32 = 1;

/// The exported symbol holding a unit's [`UnitTable`], NUL-terminated for
/// `dlsym`.
pub const UNIT_SYMBOL: &[u8] = b"PROCRT_TOC_UNIT\0";

/// A `&'static str` as a pointer and a length (`&str` is not FFI-safe).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AbiStr {
    /// First byte.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

// SAFETY: an AbiStr only ever points at immutable `'static` UTF-8 bytes
// (it is built by `AbiStr::new` from a `&'static str`).
unsafe impl Sync for AbiStr {}
// SAFETY: as for Sync: immutable static bytes may be read from any thread.
unsafe impl Send for AbiStr {}

impl AbiStr {
    /// Points at `s`.
    pub const fn new(s: &'static str) -> AbiStr {
        AbiStr {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// The string.
    ///
    /// # Safety
    ///
    /// `self` was made by [`AbiStr::new`] in an image that is still mapped
    /// for as long as the result is used.
    pub unsafe fn as_str<'a>(self) -> &'a str {
        // SAFETY: by the caller, ptr/len are those of a `&'static str` of a
        // mapped image: valid UTF-8, immutable.
        unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(self.ptr, self.len)) }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over the bytes of `s` that are not ASCII whitespace.
const fn fnv(mut h: u64, s: &str) -> u64 {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_whitespace() {
            h ^= b[i] as u64;
            h = h.wrapping_mul(FNV_PRIME);
        }
        i += 1;
    }
    h
}

/// The signature hash of `extern "C" fn(args...) -> ret`: FNV-1a of
/// `extern"C"fn(A,B)->R` with whitespace removed (`ret` is `"()"` for a
/// function without a return type).
///
/// ```
/// use procrt_toc_abi::sig_hash;
/// assert_eq!(sig_hash(&["u64", "* const u8"], "u64"), sig_hash(&["u64", "*const u8"], "u64"));
/// assert_ne!(sig_hash(&["u64"], "u64"), sig_hash(&["u32"], "u64"));
/// ```
pub const fn sig_hash(args: &[&str], ret: &str) -> u64 {
    let mut h = fnv(FNV_OFFSET, "extern\"C\"fn(");
    let mut i = 0;
    while i < args.len() {
        if i > 0 {
            h = fnv(h, ",");
        }
        h = fnv(h, args[i]);
        i += 1;
    }
    h = fnv(h, ")->");
    fnv(h, ret)
}

/// The layout hash of a state struct: FNV-1a of its field list's text
/// (whitespace removed), then the size and the alignment mixed in.
pub const fn layout_hash(fields: &str, size: usize, align: usize) -> u64 {
    let mut h = fnv(FNV_OFFSET, fields);
    h ^= size as u64;
    h = h.wrapping_mul(FNV_PRIME);
    h ^= align as u64;
    h.wrapping_mul(FNV_PRIME)
}

/// One exported function.
#[repr(C)]
#[derive(Debug)]
pub struct Export {
    /// Its name (the Rust identifier).
    pub name: AbiStr,
    /// Its [`sig_hash`].
    pub sig: u64,
    /// Its address in this image.
    pub addr: *const (),
}

// SAFETY: an Export is immutable after its static initializer; `addr` is a
// code address, which any thread may read.
unsafe impl Sync for Export {}

/// One import slot: the word a unit's code loads and calls through.
///
/// It holds the import's resolver until the first call, then the target's
/// address; a reload of the provider re-points it (or resets it to the
/// resolver). Loads are `Acquire` (a plain `mov` on x86), stores `Release`.
#[repr(transparent)]
#[derive(Debug)]
pub struct Slot(AtomicPtr<()>);

impl Slot {
    /// A slot that starts at `resolver`.
    pub const fn new(resolver: *const ()) -> Slot {
        Slot(AtomicPtr::new(resolver as *mut ()))
    }

    /// The address a call through this slot reaches now.
    #[inline(always)]
    pub fn get(&self) -> *const () {
        self.0.load(Ordering::Acquire)
    }

    /// Points the slot at `target`. Only procrt's loader does this.
    pub fn set(&self, target: *const ()) {
        self.0.store(target as *mut (), Ordering::Release)
    }
}

/// One imported function.
#[repr(C)]
#[derive(Debug)]
pub struct Import {
    /// The name of the unit that provides it.
    pub provider: AbiStr,
    /// Its name in the provider's exports.
    pub name: AbiStr,
    /// Its [`sig_hash`] as this unit declares it.
    pub sig: u64,
    /// The slot the unit calls through.
    pub slot: *const Slot,
    /// The stub a fresh (or reset) slot holds.
    pub resolver: *const (),
}

// SAFETY: an Import is immutable after its static initializer; `slot`
// points at an atomic, `resolver` at code.
unsafe impl Sync for Import {}

/// Where a unit's state lives and what it looks like.
#[repr(C)]
#[derive(Debug)]
pub struct StateDecl {
    /// [`UnitState::LAYOUT_HASH`] of the state type.
    pub hash: u64,
    /// `size_of` the state type.
    pub size: usize,
    /// `align_of` the state type.
    pub align: usize,
    /// The state static in this image.
    pub ptr: *mut u8,
}

// SAFETY: immutable after its static initializer; `ptr` points at a static
// whose fields are all atomics (`UnitState`).
unsafe impl Sync for StateDecl {}

impl StateDecl {
    /// Describes the state static `s`.
    pub const fn of<T: UnitState>(s: &'static T) -> StateDecl {
        StateDecl {
            hash: T::LAYOUT_HASH,
            size: std::mem::size_of::<T>(),
            align: std::mem::align_of::<T>(),
            ptr: s as *const T as *mut u8,
        }
    }
}

/// A unit's state type, implemented by [`state!`].
///
/// # Safety
///
/// The type is `#[repr(C)]` and every field is a [`StateField`] (an atomic
/// or an array of them), so the loader may overwrite a value of it bytewise
/// through a shared reference, and `LAYOUT_HASH` is [`layout_hash`] of its
/// fields.
pub unsafe trait UnitState: Sync {
    /// Changes whenever a field, its type, the size or the alignment does.
    const LAYOUT_HASH: u64;
}

/// A type a state field may have: interior-mutable plain data (atomics).
///
/// # Safety
///
/// Every byte of the type lies inside an `UnsafeCell`, and any bit pattern
/// copied from another value of the type is valid.
pub unsafe trait StateField {}

macro_rules! state_fields {
    ($($t:ty),*) => {
        $(
            // SAFETY: an atomic is an UnsafeCell around a plain integer.
            unsafe impl StateField for $t {}
        )*
    };
}
state_fields!(
    std::sync::atomic::AtomicBool,
    std::sync::atomic::AtomicU8,
    std::sync::atomic::AtomicU16,
    std::sync::atomic::AtomicU32,
    std::sync::atomic::AtomicU64,
    std::sync::atomic::AtomicUsize,
    std::sync::atomic::AtomicI8,
    std::sync::atomic::AtomicI16,
    std::sync::atomic::AtomicI32,
    std::sync::atomic::AtomicI64,
    std::sync::atomic::AtomicIsize
);
// SAFETY: an array of StateFields is all StateField bytes.
unsafe impl<T: StateField, const N: usize> StateField for [T; N] {}

#[doc(hidden)]
pub const fn __assert_state_field<T: StateField>() {}

/// `migrate(old, old_hash, old_size) -> status`, exported by a new version
/// of a unit whose state layout changed: it reads the old image's state at
/// `old` (`old_size` bytes, laid out as the old version's type with hash
/// `old_hash`) and fills its own. 0 means success; any other value makes
/// the loader refuse the reload and keep the old image current.
///
/// It runs before the new image is linked: it must not call the unit's
/// imports (the process would end with a message saying so).
pub type MigrateFn = extern "C" fn(old: *const u8, old_hash: u64, old_size: usize) -> i32;

/// `on_reload(provider, generation)`: called in a dependent after a unit it
/// imports from was reloaded and its slots relinked.
pub type OnReloadFn = extern "C" fn(provider: AbiStr, generation: u64);

/// The host's resolver: given a slot of this unit, check the import,
/// fill the slot and return the target. It never returns null (it ends the
/// process with a message instead).
pub type ResolveFn = unsafe extern "C" fn(slot: *const Slot) -> *const ();

/// The host's entry points into this unit's copy of this crate.
#[derive(Debug)]
pub struct HostLink {
    /// A [`ResolveFn`], or null before procrt loaded the unit.
    resolve: AtomicPtr<()>,
}

impl HostLink {
    /// Installs the host's resolver. Only procrt's loader does this.
    pub fn install(&self, resolve: ResolveFn) {
        self.resolve.store(resolve as *mut (), Ordering::Release);
    }
}

/// This image's link to the host (each unit has its own copy of this
/// crate, hence its own `HOST`).
pub static HOST: HostLink = HostLink {
    resolve: AtomicPtr::new(std::ptr::null_mut()),
};

/// Called by an import's resolver stub: asks the host for `slot`'s target.
#[doc(hidden)]
#[inline(never)]
pub fn __resolve(slot: &'static Slot) -> *const () {
    let r = HOST.resolve.load(Ordering::Acquire);
    if r.is_null() {
        eprintln!(
            "procrt-toc-abi: an import was called in a unit that procrt's loader did not load"
        );
        std::process::abort();
    }
    // SAFETY: the only non-null value ever stored is a ResolveFn
    // (`HostLink::install`).
    let resolve = unsafe { std::mem::transmute::<*mut (), ResolveFn>(r) };
    // SAFETY: `slot` is one of this unit's slots, the contract of ResolveFn.
    unsafe { resolve(slot) }
}

/// The table procrt's loader reads, exported as [`UNIT_SYMBOL`].
#[repr(C)]
#[derive(Debug)]
pub struct UnitTable {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`ABI_VERSION`].
    pub abi_version: u32,
    /// The unit's name: what importers name as provider.
    pub name: AbiStr,
    /// First export.
    pub exports: *const Export,
    /// Number of exports.
    pub n_exports: usize,
    /// First import.
    pub imports: *const Import,
    /// Number of imports.
    pub n_imports: usize,
    /// The unit's state, or null.
    pub state: *const StateDecl,
    /// Converts an old state layout into this version's.
    pub migrate: Option<MigrateFn>,
    /// Told when a unit this one imports from was reloaded.
    pub on_reload: Option<OnReloadFn>,
    /// This image's [`HOST`].
    pub host: *const HostLink,
}

// SAFETY: immutable after its static initializer; every pointer in it
// points at other immutable statics (or atomics) of the same image.
unsafe impl Sync for UnitTable {}

#[doc(hidden)]
#[macro_export]
macro_rules! __ret_text {
    () => {
        "()"
    };
    ($t:ty) => {
        stringify!($t)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __state_decl {
    () => {
        ::std::ptr::null()
    };
    ($state:path) => {{
        static DECL: $crate::StateDecl = $crate::StateDecl::of(&$state);
        &DECL as *const $crate::StateDecl
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __opt_fn {
    ($t:ty;) => {
        None
    };
    ($t:ty; $f:path) => {
        Some($f as $t)
    };
}

/// The [`sig_hash`] of a signature written as `fn(A, B) -> R`.
///
/// ```
/// assert_eq!(procrt_toc_abi::sig!(fn(u64) -> u64), procrt_toc_abi::sig_hash(&["u64"], "u64"));
/// ```
#[macro_export]
macro_rules! sig {
    (fn ( $( $ty:ty ),* $(,)? ) $( -> $ret:ty )? ) => {
        $crate::sig_hash(&[ $( stringify!($ty) ),* ], $crate::__ret_text!($( $ret )?))
    };
}

/// Declares a unit's state: a `#[repr(C)]` struct of atomics and the one
/// static holding it (see the crate docs, "State").
///
/// ```
/// use std::sync::atomic::AtomicU64;
/// procrt_toc_abi::state! {
///     /// What the unit keeps.
///     pub struct Totals { pub calls: AtomicU64, pub sum: AtomicU64 }
///     static TOTALS = Totals { calls: AtomicU64::new(0), sum: AtomicU64::new(0) };
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! state {
    (
        $(#[$m:meta])*
        $vis:vis struct $ty:ident { $( $(#[$fm:meta])* $fvis:vis $field:ident : $fty:ty ),* $(,)? }
        static $st:ident = $init:expr ;
    ) => {
        $(#[$m])*
        #[repr(C)]
        $vis struct $ty { $( $(#[$fm])* $fvis $field : $fty ),* }

        // SAFETY: repr(C), and every field is a StateField (checked by the
        // const below); the hash is layout_hash of the field list.
        unsafe impl $crate::UnitState for $ty {
            const LAYOUT_HASH: u64 = $crate::layout_hash(
                stringify!($( $field : $fty ),*),
                ::std::mem::size_of::<$ty>(),
                ::std::mem::align_of::<$ty>(),
            );
        }

        const _: () = { $( $crate::__assert_state_field::<$fty>(); )* };

        static $st: $ty = $init;
    };
}

/// Declares a unit: its name, its exports, its imports, and optionally its
/// state static (from [`state!`]), a [`MigrateFn`] and an [`OnReloadFn`].
/// Writes the exported [`UnitTable`], and for each import a [`Slot`], a
/// resolver stub and a wrapper function of the same name that calls through
/// the slot.
///
/// Each export names an `extern "C" fn` in scope; the macro checks that its
/// type is the declared one. Import names must be distinct within a unit.
///
/// ```
/// pub extern "C" fn twice(x: u64) -> u64 {
///     add(x, x) // an import: one load of its slot, one indirect call
/// }
///
/// procrt_toc_abi::unit! {
///     name: "app",
///     exports: { fn twice(x: u64) -> u64; },
///     imports: { from "math" { fn add(a: u64, b: u64) -> u64; } },
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! unit {
    (
        name: $name:literal,
        exports: { $( fn $ename:ident ( $( $earg:ident : $ety:ty ),* $(,)? ) $( -> $eret:ty )? ; )* },
        imports: { $( from $prov:literal { $( fn $iname:ident ( $( $iarg:ident : $ity:ty ),* $(,)? ) $( -> $iret:ty )? ; )* } )* }
        $(, state: $state:path )?
        $(, migrate: $migrate:path )?
        $(, on_reload: $on_reload:path )?
        $(,)?
    ) => {
        /// This unit's import slots: its TOC.
        #[allow(non_upper_case_globals, dead_code)]
        mod __procrt_toc_slots {
            $( $(
                pub(super) static $iname: $crate::Slot =
                    $crate::Slot::new(super::__procrt_toc_resolvers::$iname as *const ());
            )* )*
        }

        /// The resolver stubs: a fresh slot's target.
        #[allow(dead_code)]
        mod __procrt_toc_resolvers {
            #[allow(unused_imports)]
            use super::*;
            $( $(
                pub(super) extern "C" fn $iname( $( $iarg : $ity ),* ) $( -> $iret )? {
                    let f = $crate::__resolve(&super::__procrt_toc_slots::$iname);
                    // SAFETY: the host returns the address of an export
                    // whose signature hash equals this import's, i.e. a
                    // function of exactly this type.
                    let f = unsafe {
                        ::std::mem::transmute::<*const (), extern "C" fn( $( $ity ),* ) $( -> $iret )?>(f)
                    };
                    f( $( $iarg ),* )
                }
            )* )*
        }

        $( $(
            /// An import: one load of its TOC slot and one indirect call.
            #[inline(always)]
            #[allow(dead_code)]
            pub fn $iname( $( $iarg : $ity ),* ) $( -> $iret )? {
                let f = __procrt_toc_slots::$iname.get();
                // SAFETY: a slot holds either this import's resolver stub or
                // an export the host checked has this import's signature.
                let f = unsafe {
                    ::std::mem::transmute::<*const (), extern "C" fn( $( $ity ),* ) $( -> $iret )?>(f)
                };
                f( $( $iarg ),* )
            }
        )* )*

        static __PROCRT_TOC_EXPORTS: [$crate::Export; { let n: &[&str] = &[ $( stringify!($ename) ),* ]; n.len() }] = [
            $(
                $crate::Export {
                    name: $crate::AbiStr::new(stringify!($ename)),
                    sig: $crate::sig_hash(&[ $( stringify!($ety) ),* ], $crate::__ret_text!($( $eret )?)),
                    addr: {
                        let f: extern "C" fn( $( $ety ),* ) $( -> $eret )? = $ename;
                        f as *const ()
                    },
                }
            ),*
        ];

        static __PROCRT_TOC_IMPORTS: [$crate::Import; { let n: &[&str] = &[ $( $( stringify!($iname) ),* ),* ]; n.len() }] = [
            $( $(
                $crate::Import {
                    provider: $crate::AbiStr::new($prov),
                    name: $crate::AbiStr::new(stringify!($iname)),
                    sig: $crate::sig_hash(&[ $( stringify!($ity) ),* ], $crate::__ret_text!($( $iret )?)),
                    slot: &__procrt_toc_slots::$iname,
                    resolver: __procrt_toc_resolvers::$iname as *const (),
                }
            ),* ),*
        ];

        /// The table procrt's loader reads.
        #[no_mangle]
        pub static PROCRT_TOC_UNIT: $crate::UnitTable = $crate::UnitTable {
            magic: $crate::MAGIC,
            abi_version: $crate::ABI_VERSION,
            name: $crate::AbiStr::new($name),
            exports: __PROCRT_TOC_EXPORTS.as_ptr(),
            n_exports: __PROCRT_TOC_EXPORTS.len(),
            imports: __PROCRT_TOC_IMPORTS.as_ptr(),
            n_imports: __PROCRT_TOC_IMPORTS.len(),
            state: $crate::__state_decl!($( $state )?),
            migrate: $crate::__opt_fn!($crate::MigrateFn; $( $migrate )?),
            on_reload: $crate::__opt_fn!($crate::OnReloadFn; $( $on_reload )?),
            host: &$crate::HOST,
        };
    };
}
