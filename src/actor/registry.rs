//! Names for actors: a per-thread map from names to type-erased addresses.

use super::addr::{Addr, ErasedAddr, Status};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

thread_local! {
    /// Registered names on this thread (see "Registry" in the module docs).
    static NAMES: RefCell<HashMap<String, Box<dyn ErasedAddr>>> = RefCell::new(HashMap::new());
}

/// Why [`register`] refused a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// A live actor already has this name; [`unregister`] it first.
    Taken(String),
    /// The actor being registered has ended.
    Dead(String),
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::Taken(n) => write!(f, "the name {n:?} belongs to a live actor"),
            RegisterError::Dead(n) => write!(f, "cannot register {n:?}: that actor has ended"),
        }
    }
}

impl std::error::Error for RegisterError {}

/// Why [`lookup`] found no address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// No live actor has this name.
    NotFound,
    /// The name belongs to an actor of another message type.
    WrongType {
        /// The message type of the registered actor.
        registered: &'static str,
        /// The message type asked for.
        requested: &'static str,
    },
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::NotFound => f.write_str("no live actor has this name"),
            LookupError::WrongType {
                registered,
                requested,
            } => write!(
                f,
                "the actor registered under this name takes {registered}, not {requested}"
            ),
        }
    }
}

impl std::error::Error for LookupError {}

/// Registers `addr` under `name` in this thread's registry.
///
/// The registry keeps a clone of `addr`, which keeps the actor reachable
/// until it ends or the name is [`unregister`]ed. When the actor ends, its
/// names are removed. Registering the same actor under the same name again
/// does nothing. Registering a name that a dead actor had is allowed.
///
/// ```
/// use procrt::actor::{register, spawn_actor, whereis, Context, RegisterError};
///
/// procrt::run(|| {
///     let a = spawn_actor((), |_: &mut (), _: u8, _: &Context<u8>| {});
///     let b = spawn_actor((), |_: &mut (), _: u8, _: &Context<u8>| {});
///     register("logger", &a).unwrap();
///     assert_eq!(register("logger", &b), Err(RegisterError::Taken("logger".into())));
///     assert_eq!(whereis::<u8>("logger"), Some(a));
///     assert_eq!(whereis::<u16>("logger"), None); // wrong message type
/// });
/// ```
pub fn register<M: 'static>(name: impl Into<String>, addr: &Addr<M>) -> Result<(), RegisterError> {
    let name = name.into();
    if !addr.is_alive() {
        return Err(RegisterError::Dead(name));
    }
    register_erased(&name, Box::new(addr.clone()))
}

/// Removes `name` from this thread's registry. Returns true if it named a
/// live actor. The actor itself runs on.
pub fn unregister(name: &str) -> bool {
    let removed = NAMES.with(|names| names.borrow_mut().remove(name));
    match removed {
        Some(old) => {
            old.status().names.borrow_mut().retain(|n| n != name);
            old.status().is_alive()
        }
        None => false,
    }
}

/// The address registered under `name`, if a live actor with message type
/// `M` has it. A wrong `M` gives `None`; [`lookup`] says why.
pub fn whereis<M: 'static>(name: &str) -> Option<Addr<M>> {
    lookup(name).ok()
}

/// Like [`whereis`], with the reason when there is no address. A name
/// whose actor has ended is removed here if it was still registered.
pub fn lookup<M: 'static>(name: &str) -> Result<Addr<M>, LookupError> {
    let (found, dead) = NAMES.with(|names| {
        let mut names = names.borrow_mut();
        let Some(entry) = names.get(name) else {
            return (Err(LookupError::NotFound), None);
        };
        if !entry.status().is_alive() {
            return (Err(LookupError::NotFound), names.remove(name));
        }
        let found = match entry.as_any().downcast_ref::<Addr<M>>() {
            Some(addr) => Ok(addr.clone()),
            None => Err(LookupError::WrongType {
                registered: entry.msg_type(),
                requested: std::any::type_name::<M>(),
            }),
        };
        (found, None)
    });
    drop(dead);
    found
}

/// The names of live actors in this thread's registry, sorted.
pub fn registered() -> Vec<String> {
    let mut v: Vec<String> = NAMES.with(|names| {
        names
            .borrow()
            .iter()
            .filter(|(_, a)| a.status().is_alive())
            .map(|(n, _)| n.clone())
            .collect()
    });
    v.sort();
    v
}

/// Registers a type-erased address (for supervisors). Same rules as
/// [`register`].
pub(crate) fn register_erased(name: &str, addr: Box<dyn ErasedAddr>) -> Result<(), RegisterError> {
    let displaced = NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if let Some(old) = names.get(name) {
            if Rc::ptr_eq(old.status(), addr.status()) {
                return Ok(None);
            }
            if old.status().is_alive() {
                return Err(RegisterError::Taken(name.to_owned()));
            }
        }
        addr.status().names.borrow_mut().push(name.to_owned());
        Ok(names.insert(name.to_owned(), addr))
    });
    // Addresses are dropped outside the map's borrow: a drop may run
    // channel code, which must not find the registry borrowed.
    drop(displaced?);
    Ok(())
}

/// Removes the names of the actor whose status this is (it has ended).
/// Quietly does nothing while the thread's locals are being destroyed.
pub(crate) fn forget(status: &Rc<Status>) {
    let mine = std::mem::take(&mut *status.names.borrow_mut());
    if mine.is_empty() {
        return;
    }
    let removed: Vec<Box<dyn ErasedAddr>> = NAMES
        .try_with(|names| {
            let Ok(mut names) = names.try_borrow_mut() else {
                return Vec::new();
            };
            let mut removed = Vec::new();
            for n in &mine {
                if names.get(n).is_some_and(|a| Rc::ptr_eq(a.status(), status)) {
                    removed.extend(names.remove(n));
                }
            }
            removed
        })
        .unwrap_or_default();
    drop(removed);
}
