//! Host-side imports: the program's own TOC slots.
//!
//! # Design note
//!
//! Host code (procs of the program that loads the units) calls a unit
//! through an [`Import`], which owns one slot in a heap box. Unlike a
//! unit's slots it is resolved when made, so that a missing export or a
//! signature mismatch is an `Err` at the place the import is written, not
//! an abort at its first call. It is registered like any slot: it is in
//! the relink index, the host counts as a dependent of its provider, and a
//! reload re-points it. Dropping it takes it out of the registry.
//!
//! [`Import::get`] is the raw TOC call: one load of the slot, then the
//! caller's indirect call. [`Import::call`] is the *tracked* call: it also
//! makes the target image the running proc's current unit for the length
//! of the call (see `current.rs`), which is what lets a third load decide
//! whether old code may still be running.

use super::current::enter;
use super::registry;
use super::{ImageInfo, TocError};
use procrt_toc_abi::Slot;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicPtr, Ordering};

/// A function pointer type a unit may export: `extern "C" fn(A, ...) -> R`
/// with up to six parameters.
///
/// # Safety
///
/// Implemented only for `extern "C"` function pointer types (one word, any
/// non-null code address of the right signature is a valid value).
pub unsafe trait FnPtr: Copy + 'static {}

macro_rules! fn_ptrs {
    ($( ($($a:ident),*) )*) => {
        $(
            // SAFETY: an extern "C" fn pointer type.
            unsafe impl<R: 'static, $($a: 'static),*> FnPtr for extern "C" fn($($a),*) -> R {}
        )*
    };
}
fn_ptrs!(()(A)(A, B)(A, B, C)(A, B, C, D)(A, B, C, D, E)(
    A, B, C, D, E, G
));

/// The slot and the image its target lives in.
struct HostSlot {
    /// The slot (same type as a unit's).
    slot: Slot,
    /// The image the slot points into.
    image: AtomicPtr<ImageInfo>,
}

/// A host-side import of one function of a unit, made with
/// [`import!`](crate::toc::import) (or [`import`](super::import)).
///
/// ```no_run
/// let counter = procrt::toc::Unit::load("target/toc-units/release/libunit_counter_v1.so")?;
/// let bump = procrt::toc::import!("counter", fn bump(u64) -> u64)?;
/// let n = bump.call(|f| f(1)); // tracked: toc::current() is `counter` inside
/// let m = (bump.get())(1);     // raw: one load and one indirect call
/// assert_eq!(m, n + 1);
/// # let _ = counter;
/// # Ok::<(), procrt::toc::TocError>(())
/// ```
pub struct Import<F: FnPtr> {
    /// Boxed: the registry holds its address.
    slot: Box<HostSlot>,
    /// `provider::name`, for Debug.
    what: String,
    _f: PhantomData<F>,
}

impl<F: FnPtr> std::fmt::Debug for Import<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Import")
            .field("what", &self.what)
            .field("generation", &self.image().generation())
            .finish()
    }
}

/// Resolves `provider::name` now, checking `sig` (a
/// [`sig!`](crate::toc::abi::sig) hash that must describe `F`; the
/// [`import!`](crate::toc::import) macro derives both from one signature).
pub fn import<F: FnPtr>(provider: &str, name: &str, sig: u64) -> Result<Import<F>, TocError> {
    let slot = Box::new(HostSlot {
        slot: Slot::new(std::ptr::null()),
        image: AtomicPtr::new(std::ptr::null_mut()),
    });
    registry::with(|r| r.add_host_slot(provider, name, sig, &slot.slot, &slot.image))?;
    Ok(Import {
        slot,
        what: format!("{provider}::{name}"),
        _f: PhantomData,
    })
}

impl<F: FnPtr> Import<F> {
    /// The function the slot points at now: one load. Calls made through
    /// it are not tracked (see [`call`](Import::call)).
    #[inline(always)]
    pub fn get(&self) -> F {
        let p = self.slot.slot.get();
        // SAFETY: the registry only ever stores into this slot the address
        // of an export whose signature hash is this import's, and F is an
        // extern "C" fn pointer type of that signature (FnPtr, import!).
        unsafe { std::mem::transmute_copy::<*const (), F>(&p) }
    }

    /// Calls `f` with the target, with the target's image as the running
    /// proc's current unit ([`current`](super::current)) until it returns.
    #[inline(always)]
    pub fn call<R>(&self, f: impl FnOnce(F) -> R) -> R {
        let _in = enter(self.image());
        f(self.get())
    }

    /// The image the slot points into now.
    pub fn image(&self) -> &'static ImageInfo {
        let p = self.slot.image.load(Ordering::Acquire);
        // SAFETY: set to a leaked ImageInfo before `import` returned, and
        // only ever replaced by another one.
        unsafe { &*p }
    }
}

impl<F: FnPtr> Drop for Import<F> {
    fn drop(&mut self) {
        registry::with(|r| r.remove_host_slot(&self.slot.slot));
    }
}
