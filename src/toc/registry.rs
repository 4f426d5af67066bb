//! The registry of loaded units: their images, every import slot, the
//! relink index, and the load / resolve / reload / strip algorithms.
//!
//! # Design note
//!
//! One registry per process, behind a mutex: `dlopen` maps an image into
//! the whole process, so its slots are process-wide too. The hot path never
//! takes the lock: a call through a resolved slot is one load and one
//! indirect call. The lock is taken by `load`, `reload`, `strip_relink`,
//! host [`Import`](super::Import)s being made or dropped, and a slot's first
//! call (the resolver).
//!
//! **Slots.** Every slot of every live image, and every host `Import`, has a
//! [`SlotRec`] keyed by the slot's address: who holds it, what it imports
//! (provider, name, signature hash), its resolver (host slots have none:
//! they are resolved when made), and the unit it points into once resolved.
//!
//! **The relink index** has the two halves of the design note:
//! - `by_pointee[(U, name)]`: the resolved slots that point at export
//!   `name` of unit `U`. Reloading `U` walks exactly these, and nothing
//!   else: the cost of a reload is proportional to the slots into `U`, not
//!   to all slots.
//! - `by_pointer[holder]`: the resolved slots an image (or the host) holds.
//!   Reloading the holder `V` uses it to pre-link the new image's slots to
//!   the targets the old image's slots had, so the new image does not pay a
//!   resolver call per import; purging an image uses it to drop its
//!   entries from `by_pointee`.
//!
//! `strip_relink` on `U` drops `by_pointee[(U, *)]` and `by_pointer[U's
//! images]` and stops recording them; `U` can then not be reloaded
//! (`TocError::RelinkStripped`). The slots themselves and the other units'
//! entries stay: the units `U` imports from can still be reloaded, and
//! `U`'s slots into them are still re-pointed.
//!
//! **Reload, eager or reset.** Reloading `U` re-points every slot in
//! `by_pointee[(U, *)]`. *Eager* (the default) writes the new export's
//! address into each. *Reset* writes the slot's resolver back and removes
//! the entry; the next call re-resolves through the lock. Both are measured
//! in `benches/toc.rs`: eager is a store per slot at reload time and leaves
//! every later call at full speed; reset is as cheap a store at reload
//! time but costs each slot a resolver call (a mutex, two map lookups)
//! afterwards, and a slot nobody calls again stops occupying the index.
//! Eager is the default because a reload happens while procs are calling:
//! it moves the cost away from the calls. Host slots have no resolver and
//! are always re-pointed eagerly.
//!
//! **Order of a reload**, so that a refusal changes nothing: open the new
//! image; check its name, every declared import of every live image and of
//! the host that names `U` against its exports, its own imports against
//! the loaded providers, and the state layout; transfer the state (a copy,
//! or `migrate`); only then purge the oldest image if there are already
//! two, pre-link the new image's slots, re-point the slots into `U`, and
//! make the new image current. A refusal at any check closes the new image.

use super::image::{open, OpenImage};
use super::{ImageInfo, RelinkMode, ReloadReport, StateTransfer, TocError};
use procrt_toc_abi::{AbiStr, OnReloadFn, Slot};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Index of a unit in the registry (units are never removed).
pub(crate) type UnitIdx = usize;

/// Who holds a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Holder {
    /// An image of a unit.
    Image {
        /// The unit.
        unit: UnitIdx,
        /// Which of its images.
        generation: u64,
    },
    /// The program itself (an `Import`).
    Host,
}

/// What the registry knows of one slot.
#[derive(Debug)]
struct SlotRec {
    /// Who holds it.
    holder: Holder,
    /// The name of the providing unit.
    provider: String,
    /// The imported function.
    name: String,
    /// The importer's signature hash.
    sig: u64,
    /// Its resolver stub; `None` for host slots.
    resolver: Option<*const ()>,
    /// Host slots: where the image of the target is recorded.
    image_cell: Option<*const AtomicPtr<ImageInfo>>,
    /// The unit it points into, once resolved.
    target: Option<UnitIdx>,
}

/// A live or purged image.
#[derive(Debug)]
struct ImageRec {
    /// Its public record.
    info: &'static ImageInfo,
    /// Its tables, copied out.
    img: OpenImage,
}

/// One unit: its images and whether its index was stripped.
#[derive(Debug)]
struct UnitRec {
    /// Its name.
    name: String,
    /// Live images, oldest first; the last is current. At most two.
    images: Vec<ImageRec>,
    /// Purged images: out of the index, still mapped.
    purged: Vec<ImageRec>,
    /// `strip_relink` was called.
    stripped: bool,
}

/// The process's units, slots and relink index.
pub(crate) struct Registry {
    /// Every unit ever loaded.
    units: Vec<UnitRec>,
    /// Every slot of every live image and every host `Import`, by address.
    slots: BTreeMap<usize, SlotRec>,
    /// Resolved slots by the export they point at.
    by_pointee: BTreeMap<(UnitIdx, String), BTreeSet<usize>>,
    /// Resolved slots by the image (or host) holding them.
    by_pointer: BTreeMap<Holder, BTreeSet<usize>>,
}

// SAFETY: the raw pointers in the registry point into mapped images (never
// unmapped once accepted; a refused one is closed before any pointer to it
// is stored) or at leaked host slots that deregister before they are freed;
// all access goes through REGISTRY's mutex.
unsafe impl Send for Registry {}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    units: Vec::new(),
    slots: BTreeMap::new(),
    by_pointee: BTreeMap::new(),
    by_pointer: BTreeMap::new(),
});

thread_local! {
    /// This thread holds the registry (re-entry would deadlock).
    static HELD: Cell<bool> = const { Cell::new(false) };
}

/// Holds the registry lock and the `HELD` flag.
struct Held(MutexGuard<'static, Registry>);

impl Drop for Held {
    fn drop(&mut self) {
        HELD.with(|h| h.set(false));
    }
}

/// Runs `f` with the registry locked.
pub(crate) fn with<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    if HELD.with(|h| h.get()) {
        crate::fatal(format_args!(
            "toc: the TOC was entered again while it was being changed \
             (a unit's `migrate` called one of its imports?)"
        ));
    }
    let mut held = Held(REGISTRY.lock().unwrap_or_else(|p| p.into_inner()));
    HELD.with(|h| h.set(true));
    f(&mut held.0)
}

/// The resolver every unit's lazy imports call (installed in each image's
/// `HOST`): resolves `slot`, or ends the process with the reason.
///
/// # Safety
///
/// `slot` is a slot of an image procrt loaded (the ABI contract).
pub(crate) unsafe extern "C" fn resolve_slot(slot: *const Slot) -> *const () {
    match with(|r| r.resolve(slot as usize)) {
        Ok(p) => p,
        Err(e) => crate::fatal(format_args!("toc: a lazily resolved import failed: {e}")),
    }
}

/// The unit name of a holder, for messages.
fn holder_name(units: &[UnitRec], h: Holder) -> String {
    match h {
        Holder::Image { unit, .. } => units[unit].name.clone(),
        Holder::Host => "host".to_string(),
    }
}

/// Checks an import against the image that would provide it.
fn check(
    importer: &str,
    provider: &str,
    name: &str,
    sig: u64,
    img: &OpenImage,
) -> Result<*const (), TocError> {
    let e = img.export(name).ok_or_else(|| TocError::MissingExport {
        importer: importer.to_string(),
        provider: provider.to_string(),
        name: name.to_string(),
    })?;
    if e.sig != sig {
        return Err(TocError::SignatureMismatch {
            importer: importer.to_string(),
            provider: provider.to_string(),
            name: name.to_string(),
            expected: sig,
            found: e.sig,
        });
    }
    Ok(e.addr)
}

impl Registry {
    /// The unit called `name`.
    pub(crate) fn find(&self, name: &str) -> Option<UnitIdx> {
        self.units.iter().position(|u| u.name == name)
    }

    /// The unit's name.
    pub(crate) fn name(&self, u: UnitIdx) -> &str {
        &self.units[u].name
    }

    /// The unit's current image.
    fn current(&self, u: UnitIdx) -> &ImageRec {
        self.units[u]
            .images
            .last()
            .expect("a loaded unit has an image")
    }

    /// The public record of the unit's current image.
    pub(crate) fn current_info(&self, u: UnitIdx) -> &'static ImageInfo {
        self.current(u).info
    }

    /// The public records of the unit's live images, oldest first.
    pub(crate) fn live_infos(&self, u: UnitIdx) -> Vec<&'static ImageInfo> {
        self.units[u].images.iter().map(|i| i.info).collect()
    }

    /// Loads a unit that is not loaded yet.
    pub(crate) fn load(&mut self, path: &Path) -> Result<UnitIdx, TocError> {
        let img = open(path)?;
        if self.find(&img.name).is_some() {
            let unit = img.name.clone();
            img.close();
            return Err(TocError::AlreadyLoaded { unit });
        }
        if let Err(e) = self.check_against(&img) {
            img.close();
            return Err(e);
        }
        let u = self.units.len();
        self.units.push(UnitRec {
            name: img.name.clone(),
            images: Vec::new(),
            purged: Vec::new(),
            stripped: false,
        });
        self.install(u, img, 1);
        Ok(u)
    }

    /// Checks `img` (a new unit, or a new image of a loaded one) against the slots that name it and the units it names.
    fn check_against(&self, img: &OpenImage) -> Result<(), TocError> {
        for rec in self.slots.values() {
            if rec.provider == img.name {
                let importer = holder_name(&self.units, rec.holder);
                check(&importer, &img.name, &rec.name, rec.sig, img)?;
            }
        }
        for i in &img.imports {
            if i.provider == img.name {
                check(&img.name, &i.provider, &i.name, i.sig, img)?;
            } else if let Some(p) = self.find(&i.provider) {
                check(&img.name, &i.provider, &i.name, i.sig, &self.current(p).img)?;
            }
        }
        Ok(())
    }

    /// Makes `img` the current image of `u` and registers its slots.
    fn install(&mut self, u: UnitIdx, img: OpenImage, generation: u64) -> &'static ImageInfo {
        let info = img.accept(generation, resolve_slot);
        let holder = Holder::Image {
            unit: u,
            generation,
        };
        for i in &img.imports {
            self.slots.insert(
                i.slot as usize,
                SlotRec {
                    holder,
                    provider: i.provider.clone(),
                    name: i.name.clone(),
                    sig: i.sig,
                    resolver: Some(i.resolver),
                    image_cell: None,
                    target: None,
                },
            );
        }
        self.units[u].images.push(ImageRec { info, img });
        info
    }

    /// Points the slot at `addr` (export `name` of `target`) and records it.
    fn link(&mut self, slot: usize, target: UnitIdx, addr: *const ()) {
        let info = self.current(target).info;
        let rec = self.slots.get_mut(&slot).expect("link: unknown slot");
        // SAFETY: every key of `slots` is the address of a live Slot (an
        // image's static, or a host Import's box, deregistered on drop).
        unsafe { (*(slot as *const Slot)).set(addr) };
        if let Some(cell) = rec.image_cell {
            // SAFETY: host slots' image cells live beside the slot.
            unsafe {
                (*cell).store(
                    info as *const ImageInfo as *mut ImageInfo,
                    Ordering::Release,
                )
            };
        }
        rec.target = Some(target);
        let holder = rec.holder;
        let name = rec.name.clone();
        if !self.units[target].stripped {
            self.by_pointee
                .entry((target, name))
                .or_default()
                .insert(slot);
        }
        let holder_stripped = match holder {
            Holder::Image { unit, .. } => self.units[unit].stripped,
            Holder::Host => false,
        };
        if !holder_stripped {
            self.by_pointer.entry(holder).or_default().insert(slot);
        }
    }

    /// Takes a slot out of the index (it stays registered).
    fn unindex(&mut self, slot: usize) {
        let Some(rec) = self.slots.get_mut(&slot) else {
            return;
        };
        if let Some(t) = rec.target.take() {
            let key = (t, rec.name.clone());
            if let Some(set) = self.by_pointee.get_mut(&key) {
                set.remove(&slot);
                if set.is_empty() {
                    self.by_pointee.remove(&key);
                }
            }
        }
        if let Some(set) = self.by_pointer.get_mut(&rec.holder) {
            set.remove(&slot);
            if set.is_empty() {
                self.by_pointer.remove(&rec.holder);
            }
        }
    }

    /// A slot's first call: find its target, check it, fill the slot.
    fn resolve(&mut self, slot: usize) -> Result<*const (), TocError> {
        let rec = self.slots.get(&slot).ok_or_else(|| TocError::NotLoaded {
            unit: format!("<the image holding slot {slot:#x}>"),
        })?;
        let importer = holder_name(&self.units, rec.holder);
        let p = self
            .find(&rec.provider)
            .ok_or_else(|| TocError::ProviderNotLoaded {
                importer: importer.clone(),
                provider: rec.provider.clone(),
                name: rec.name.clone(),
            })?;
        let addr = check(
            &importer,
            &rec.provider,
            &rec.name,
            rec.sig,
            &self.current(p).img,
        )?;
        self.link(slot, p, addr);
        Ok(addr)
    }

    /// Registers and resolves a host slot (an `Import`).
    pub(crate) fn add_host_slot(
        &mut self,
        provider: &str,
        name: &str,
        sig: u64,
        slot: *const Slot,
        image_cell: *const AtomicPtr<ImageInfo>,
    ) -> Result<(), TocError> {
        let p = self.find(provider).ok_or_else(|| TocError::NotLoaded {
            unit: provider.to_string(),
        })?;
        let addr = check("host", provider, name, sig, &self.current(p).img)?;
        self.slots.insert(
            slot as usize,
            SlotRec {
                holder: Holder::Host,
                provider: provider.to_string(),
                name: name.to_string(),
                sig,
                resolver: None,
                image_cell: Some(image_cell),
                target: None,
            },
        );
        self.link(slot as usize, p, addr);
        Ok(())
    }

    /// Forgets a host slot (its `Import` is being dropped).
    pub(crate) fn remove_host_slot(&mut self, slot: *const Slot) {
        self.unindex(slot as usize);
        self.slots.remove(&(slot as usize));
    }

    /// Units whose live images import from `u` (not `u` itself).
    fn direct_dependents(&self, u: UnitIdx) -> Vec<UnitIdx> {
        let name = &self.units[u].name;
        (0..self.units.len())
            .filter(|&d| d != u)
            .filter(|&d| {
                self.units[d]
                    .images
                    .iter()
                    .any(|i| i.img.imports.iter().any(|imp| &imp.provider == name))
            })
            .collect()
    }

    /// Names of the units that import from `u`, plus `"host"` if the
    /// program holds `Import`s from it.
    pub(crate) fn dependents(&self, u: UnitIdx) -> Vec<String> {
        let mut v: Vec<String> = self
            .direct_dependents(u)
            .into_iter()
            .map(|d| self.units[d].name.clone())
            .collect();
        let name = &self.units[u].name;
        if self
            .slots
            .values()
            .any(|s| s.holder == Holder::Host && &s.provider == name)
        {
            v.push("host".to_string());
        }
        v
    }

    /// Tracked calls that may be running in an old image of `u`: those
    /// inside its old images and inside any image of a unit that imports
    /// from it, directly or not.
    fn calls_that_may_be_in_old(&self, u: UnitIdx) -> usize {
        let mut seen = BTreeSet::new();
        let mut todo = self.direct_dependents(u);
        while let Some(d) = todo.pop() {
            if seen.insert(d) {
                todo.extend(self.direct_dependents(d));
            }
        }
        let unit = &self.units[u];
        let old: usize = unit.images[..unit.images.len() - 1]
            .iter()
            .map(|i| i.info.active_calls())
            .sum();
        let deps: usize = seen
            .iter()
            .flat_map(|&d| self.units[d].images.iter())
            .map(|i| i.info.active_calls())
            .sum();
        old + deps
    }

    /// Replaces `u`'s current image with the library at `path`.
    pub(crate) fn reload(
        &mut self,
        u: UnitIdx,
        path: &Path,
        mode: RelinkMode,
    ) -> Result<(ReloadReport, Vec<OnReloadFn>), TocError> {
        let name = self.units[u].name.clone();
        if self.units[u].stripped {
            return Err(TocError::RelinkStripped { unit: name });
        }
        if self.units[u].images.len() >= 2 {
            let calls = self.calls_that_may_be_in_old(u);
            if calls > 0 {
                return Err(TocError::OldCodeInUse {
                    unit: name,
                    generation: self.units[u].images[0].info.generation(),
                    calls,
                });
            }
        }
        let img = open(path)?;
        if img.name != name {
            let found = img.name.clone();
            img.close();
            return Err(TocError::NameMismatch { unit: name, found });
        }
        let checked = self
            .check_against(&img)
            .and_then(|()| self.transfer_state(u, &img));
        let state = match checked {
            Ok(s) => s,
            Err(e) => {
                img.close();
                return Err(e);
            }
        };

        // Committed: nothing below can fail.
        let old_gen = self.current(u).info.generation();
        let generation = old_gen + 1;
        let purged = if self.units[u].images.len() >= 2 {
            Some(self.purge_oldest(u))
        } else {
            None
        };
        self.install(u, img, generation);

        // By pointer: the new image's slots take the targets the old
        // image's slots had.
        let old_holder = Holder::Image {
            unit: u,
            generation: old_gen,
        };
        let old_slots: Vec<usize> = self
            .by_pointer
            .get(&old_holder)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let mut prelinked = 0;
        for s in old_slots {
            let (provider, iname, sig) = {
                let r = &self.slots[&s];
                (r.provider.clone(), r.name.clone(), r.sig)
            };
            let new_slot = self
                .current(u)
                .img
                .imports
                .iter()
                .find(|i| i.provider == provider && i.name == iname && i.sig == sig)
                .map(|i| i.slot as usize);
            let Some(ns) = new_slot else { continue };
            let p = if provider == name {
                Some(u)
            } else {
                self.find(&provider)
            };
            if let Some(p) = p {
                if let Ok(addr) = check(&name, &provider, &iname, sig, &self.current(p).img) {
                    self.link(ns, p, addr);
                    prelinked += 1;
                }
            }
        }

        // By pointee: every slot into `u` now reaches the new image.
        let start = Instant::now();
        let keys: Vec<(UnitIdx, String)> = self
            .by_pointee
            .range((u, String::new())..)
            .take_while(|(k, _)| k.0 == u)
            .map(|(k, _)| k.clone())
            .collect();
        let info = self.current(u).info;
        let (mut repointed, mut reset) = (0, 0);
        for key in keys {
            let slots: Vec<usize> = self.by_pointee[&key].iter().copied().collect();
            let addr = self
                .current(u)
                .img
                .export(&key.1)
                .expect("checked: the new image has every export a slot names")
                .addr;
            for s in slots {
                match (mode, self.slots[&s].resolver) {
                    (RelinkMode::Reset, Some(r)) => {
                        self.unindex(s);
                        // SAFETY: `s` is a registered, hence live, slot.
                        unsafe { (*(s as *const Slot)).set(r) };
                        reset += 1;
                    }
                    _ => {
                        // The entry stays where it is (same pointee key,
                        // same holder): re-pointing is the store alone.
                        // SAFETY: `s` is a registered, hence live, slot.
                        unsafe { (*(s as *const Slot)).set(addr) };
                        if let Some(cell) = self.slots[&s].image_cell {
                            // SAFETY: host slots' image cells live beside
                            // the slot.
                            unsafe {
                                (*cell).store(
                                    info as *const ImageInfo as *mut ImageInfo,
                                    Ordering::Release,
                                )
                            };
                        }
                        repointed += 1;
                    }
                }
            }
        }
        let relink_time = start.elapsed();

        let hooks = self
            .direct_dependents(u)
            .into_iter()
            .filter_map(|d| self.current(d).img.on_reload)
            .collect();
        let report = ReloadReport {
            unit: name,
            generation,
            repointed,
            reset,
            prelinked,
            purged,
            dependents: self.dependents(u),
            state,
            relink_time,
        };
        Ok((report, hooks))
    }

    /// Copies or migrates `u`'s state into `img`, or says why it cannot.
    fn transfer_state(&self, u: UnitIdx, img: &OpenImage) -> Result<StateTransfer, TocError> {
        let old = self.current(u).img.state;
        let new = img.state;
        let hash = |s: Option<super::image::StateRec>| s.map_or(0, |s| s.hash);
        match (old, new) {
            (None, _) => Ok(StateTransfer::Fresh),
            (Some(o), Some(n)) if o.hash == n.hash && o.size == n.size => {
                // SAFETY: both point at state statics of the same layout
                // (equal hash and size), made only of atomics (UnitState),
                // in two distinct mapped images; no code of the new image
                // has run yet, and this thread is the only one reloading.
                unsafe { std::ptr::copy_nonoverlapping(o.ptr, n.ptr, o.size) };
                Ok(StateTransfer::Copied { bytes: o.size })
            }
            (Some(o), n) => match img.migrate {
                Some(m) => {
                    let status = m(o.ptr, o.hash, o.size);
                    if status == 0 {
                        Ok(StateTransfer::Migrated {
                            from: o.hash,
                            to: hash(n),
                        })
                    } else {
                        Err(TocError::MigrateFailed {
                            unit: self.units[u].name.clone(),
                            status,
                        })
                    }
                }
                None => Err(TocError::StateLayoutChanged {
                    unit: self.units[u].name.clone(),
                    old: o.hash,
                    new: hash(n),
                }),
            },
        }
    }

    /// Purges `u`'s oldest live image: its slots leave the registry and
    /// the index; it stays mapped. Returns its generation.
    fn purge_oldest(&mut self, u: UnitIdx) -> u64 {
        let rec = self.units[u].images.remove(0);
        let generation = rec.info.generation();
        for i in &rec.img.imports {
            self.unindex(i.slot as usize);
            self.slots.remove(&(i.slot as usize));
        }
        self.by_pointer.remove(&Holder::Image {
            unit: u,
            generation,
        });
        self.units[u].purged.push(rec);
        generation
    }

    /// Drops `u`'s half of the relink index; returns the entries dropped.
    pub(crate) fn strip(&mut self, u: UnitIdx) -> usize {
        self.units[u].stripped = true;
        let mut dropped = 0;
        self.by_pointee.retain(|k, v| {
            let keep = k.0 != u;
            if !keep {
                dropped += v.len();
            }
            keep
        });
        self.by_pointer.retain(|k, v| {
            let keep = !matches!(k, Holder::Image { unit, .. } if *unit == u);
            if !keep {
                dropped += v.len();
            }
            keep
        });
        dropped
    }

    /// Whether `strip_relink` was called on `u`.
    pub(crate) fn stripped(&self, u: UnitIdx) -> bool {
        self.units[u].stripped
    }

    /// Index entries about `u`: slots into it plus slots its images hold.
    pub(crate) fn index_entries(&self, u: UnitIdx) -> usize {
        let into: usize = self
            .by_pointee
            .iter()
            .filter(|(k, _)| k.0 == u)
            .map(|(_, v)| v.len())
            .sum();
        let held: usize = self
            .by_pointer
            .iter()
            .filter(|(k, _)| matches!(k, Holder::Image { unit, .. } if *unit == u))
            .map(|(_, v)| v.len())
            .sum();
        into + held
    }

    /// (resolved, total) slots of `u`'s current image.
    pub(crate) fn slot_counts(&self, u: UnitIdx) -> (usize, usize) {
        let img = &self.current(u).img;
        let resolved = img
            .imports
            .iter()
            .filter(|i| {
                let r = i.resolver;
                // SAFETY: the slot is a static of the mapped current image.
                let now = unsafe { (*i.slot).get() };
                now != r
            })
            .count();
        (resolved, img.imports.len())
    }
}

/// Tells each dependent (outside the lock) that `report.unit` was reloaded.
pub(crate) fn notify(report: &ReloadReport, hooks: Vec<OnReloadFn>) {
    let name = AbiStr {
        ptr: report.unit.as_ptr(),
        len: report.unit.len(),
    };
    for h in hooks {
        h(name, report.generation);
    }
}
