//! A bank built from actors. Accounts are actors that hold balances. A
//! teller actor moves money between them. The teller crashes now and then,
//! on purpose, and its supervisor restarts it. Clients retry the transfers
//! that failed, and the program checks that no money appears or vanishes.
//!
//! ```text
//! cargo run --release --example bank                # 200,000 transfers
//! cargo run --release --example bank -- --short     # 10,000, for CI
//! cargo run --release --example bank -- --crash-loop
//! ```
//!
//! With `--crash-loop` the teller crashes on every transfer. The
//! supervisor then exceeds its restart-intensity limit and gives up, and
//! the program reports that and exits non-zero, as it should.
//!
//! # Why a crash cannot lose or duplicate money
//!
//! A transfer has an id, which the client picks, and two legs. The teller
//! asks the source account to *debit* the id, then the destination account
//! to *credit* it. Each account remembers the ids it has debited or
//! credited and applies each id at most once. A leg that is repeated is
//! answered "done" and changes nothing. The teller itself keeps no money
//! and no record: it only coordinates.
//!
//! The teller can crash at three points:
//!
//! - before the debit: nothing happened;
//! - between the debit and the credit: the money has left the source and
//!   has not reached the destination;
//! - after the credit, before it replies: the transfer happened, but the
//!   client does not know.
//!
//! In every case the client's call fails (`CallError::Panicked`, or
//! `Gone` for requests that were queued behind the crash). The client
//! looks the teller up again, finds the incarnation that the supervisor
//! restarted, and retries the *same id* until it gets an answer. The
//! retry's debit is then a no-op if the debit happened already, and so is
//! its credit. So when the client has its answer, both legs have been
//! applied exactly once, or (when the source lacked the funds) neither
//! leg. Money is "in flight" only between a crash in the middle and the
//! retry that completes the transfer.
//!
//! # What is checked
//!
//! The clients work in phases. After each phase, once every client has its
//! answers, no transfer is in flight, and the sum of all balances must
//! equal the money the bank opened with. (An audit while transfers run
//! would read some accounts before a transfer and others after it. That is
//! not a consistent snapshot, so audits happen only between phases.) At
//! the end, the ledgers must match id by id: every debited id was credited
//! once, with the same amount, and the number of ids is the number of
//! transfers the clients saw succeed. Then the accounts are shut down, and
//! the final balances they return must add up to the same total. The run
//! also checks that the teller crashed and was restarted once per injected
//! fault. Any failed check exits non-zero.
//!
//! The faults come from a seeded xorshift generator, and the scheduler is
//! deterministic, so every run makes the same transfers and hits the same
//! faults. Only the elapsed time varies.

use procrt::actor::{
    whereis, ActorBuilder, Addr, CallError, ChildSpec, Context, Reply, Supervisor, SupervisorError,
};
use procrt::{spawn, yield_now, JoinHandle};
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Accounts in the bank.
const ACCOUNTS: u64 = 16;
/// Each account's opening balance.
const OPENING: u64 = 1_000;
/// Client procs making transfers at the same time.
const CLIENTS: u64 = 8;
/// Phases of transfers. The books are audited after each one.
const PHASES: u64 = 5;
/// The teller crashes on about one transfer attempt in this many.
const FAULT_ONE_IN: u64 = 200;
/// Never reached unless something is stuck.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client waits for the teller's name to be registered again
/// after a crash. A restart takes microseconds, so a teller missing this
/// long means that its supervisor gave up.
const TELLER_WAIT: Duration = Duration::from_secs(1);
/// Attempts at one transfer before a client gives up (and the run fails).
/// This is more than `MAX_RESTARTS`, so in a crash loop the supervisor
/// gives up first.
const MAX_ATTEMPTS: u32 = 1_000;

/// Restart intensity: the teller may be restarted at most `MAX_RESTARTS`
/// times within any `RESTART_PERIOD`. Faults come at about 1 in 200
/// attempts. On the development VM a release build made 290,000 to
/// 400,000 transfers per second, which gives 15 to 20 crashes per 10 ms,
/// about ten times below the limit (a debug build is slower and crashes
/// less often). A teller that crashes on *every* transfer (`--crash-loop`)
/// crashes and restarts in about 11 us, so it exceeds the limit in about
/// 2 ms, and the supervisor gives up instead of restarting it forever.
const MAX_RESTARTS: u32 = 200;
const RESTART_PERIOD: Duration = Duration::from_millis(10);

/// A transfer's id: which client, which phase, which of its transfers.
type TransferId = u64;

/// xorshift64*: a small seeded generator, so no `rand` crate is needed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Mix the seed so that nearby seeds give unrelated streams; never 0.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The source account lacked the funds: nothing was moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Insufficient;

/// The messages of an account.
enum AccountMsg {
    /// Takes `amount` out, once per id.
    Debit {
        id: TransferId,
        amount: u64,
        reply: Reply<Result<(), Insufficient>>,
    },
    /// Puts `amount` in, once per id.
    Credit {
        id: TransferId,
        amount: u64,
        reply: Reply<()>,
    },
    /// The balance now.
    Balance(Reply<u64>),
    /// Every id debited and credited, with its amount.
    Ledger(Reply<Ledger>),
}

/// An account's record of the transfer legs it applied.
#[derive(Clone, Default)]
struct Ledger {
    debits: HashMap<TransferId, u64>,
    credits: HashMap<TransferId, u64>,
}

/// An account's state.
struct Account {
    balance: u64,
    ledger: Ledger,
}

fn account(acct: &mut Account, msg: AccountMsg, _: &Context<AccountMsg>) {
    match msg {
        AccountMsg::Debit { id, amount, reply } => {
            let answer = if acct.ledger.debits.contains_key(&id) {
                Ok(()) // a retry: this leg is done already
            } else if acct.balance < amount {
                Err(Insufficient)
            } else {
                acct.balance -= amount;
                acct.ledger.debits.insert(id, amount);
                Ok(())
            };
            let _ = reply.send(answer);
        }
        AccountMsg::Credit { id, amount, reply } => {
            if let std::collections::hash_map::Entry::Vacant(e) = acct.ledger.credits.entry(id) {
                e.insert(amount);
                acct.balance += amount;
            }
            let _ = reply.send(());
        }
        AccountMsg::Balance(reply) => {
            let _ = reply.send(acct.balance);
        }
        AccountMsg::Ledger(reply) => {
            let _ = reply.send(acct.ledger.clone());
        }
    }
}

/// The teller's one message.
struct Transfer {
    id: TransferId,
    from: usize,
    to: usize,
    amount: u64,
    reply: Reply<Result<(), Insufficient>>,
}

/// The teller's state. It holds no money: a fresh one after a crash has
/// lost nothing.
struct Teller {
    accounts: Rc<Vec<Addr<AccountMsg>>>,
    /// Decides when to fail.
    faults: Rng,
    /// One attempt in this many fails.
    fault_one_in: u64,
    /// Injected faults so far at each point, over all incarnations.
    injected: Rc<[Cell<u64>; 3]>,
}

/// The panic payload of an injected fault (the panic hook keeps it quiet).
struct InjectedFault;

impl Teller {
    /// Crashes if this attempt's fault falls at `point` (0, 1 or 2).
    fn maybe_crash(&self, fault: u64, point: u64) {
        if fault == point {
            let n = &self.injected[point as usize];
            n.set(n.get() + 1);
            std::panic::panic_any(InjectedFault);
        }
    }
}

fn teller(t: &mut Teller, msg: Transfer, _: &Context<Transfer>) {
    let Transfer {
        id,
        from,
        to,
        amount,
        reply,
    } = msg;
    // One attempt in `fault_one_in` crashes, at one of three points.
    let fault = t.faults.below(3 * t.fault_one_in);
    t.maybe_crash(fault, 0); // before the debit
    let debited = t.accounts[from]
        .call(
            |reply| AccountMsg::Debit { id, amount, reply },
            CALL_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("account {from} failed: {e}"));
    if debited.is_err() {
        let _ = reply.send(debited);
        return;
    }
    t.maybe_crash(fault, 1); // debited, not yet credited
    t.accounts[to]
        .call(
            |reply| AccountMsg::Credit { id, amount, reply },
            CALL_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("account {to} failed: {e}"));
    t.maybe_crash(fault, 2); // done, but the client will not hear of it
    let _ = reply.send(Ok(()));
}

/// What the clients saw.
#[derive(Default)]
struct Stats {
    done: Cell<u64>,
    refused: Cell<u64>,
    retries: Cell<u64>,
}

/// One client's share of one phase: `count` transfers between random
/// accounts, each retried until it gets an answer.
fn client(k: u64, phase: u64, count: u64, stats: Rc<Stats>) -> Result<(), String> {
    let mut rng = Rng::new((phase << 8) | k);
    let mut teller: Option<Addr<Transfer>> = None;
    for seq in 0..count {
        let id = (k << 48) | (phase << 32) | seq;
        let from = rng.below(ACCOUNTS) as usize;
        let to = (from + 1 + rng.below(ACCOUNTS - 1) as usize) % ACCOUNTS as usize;
        let amount = 1 + rng.below(OPENING / 4);
        let mut attempts = 0;
        loop {
            let t = match teller.take().filter(Addr::is_alive) {
                Some(t) => t,
                None => find_teller()?,
            };
            attempts += 1;
            let call = t.call(
                |reply| Transfer {
                    id,
                    from,
                    to,
                    amount,
                    reply,
                },
                CALL_TIMEOUT,
            );
            match call {
                Ok(answer) => {
                    let counter = if answer.is_ok() {
                        &stats.done
                    } else {
                        &stats.refused
                    };
                    counter.set(counter.get() + 1);
                    teller = Some(t);
                    break;
                }
                // Any failure: the same id again, which is safe (see the
                // top of the file).
                Err(e) => {
                    if attempts >= MAX_ATTEMPTS {
                        return Err(format!("transfer {id:#x} failed {attempts} times: {e}"));
                    }
                    stats.retries.set(stats.retries.get() + 1);
                    if e != CallError::Panicked && e != CallError::Gone {
                        eprintln!("bank: transfer {id:#x}: {e}; retrying");
                    }
                }
            }
        }
    }
    Ok(())
}

/// The teller's current address. Right after a crash the name may be free
/// until the supervisor has run; wait for it, but not forever.
fn find_teller() -> Result<Addr<Transfer>, String> {
    let start = Instant::now();
    for round in 0u32.. {
        if let Some(t) = whereis::<Transfer>("teller") {
            return Ok(t);
        }
        if start.elapsed() > TELLER_WAIT {
            break;
        }
        // Let the supervisor run; if that is not enough, stop spinning.
        if round < 10 {
            yield_now();
        } else {
            procrt::sleep(Duration::from_millis(1));
        }
    }
    Err(format!("no teller registered for {TELLER_WAIT:?}"))
}

/// The sum of all balances, asked of each account.
fn audit(accounts: &[Addr<AccountMsg>]) -> Result<u64, String> {
    let mut sum = 0;
    for (i, a) in accounts.iter().enumerate() {
        sum += a
            .call(AccountMsg::Balance, CALL_TIMEOUT)
            .map_err(|e| format!("audit: account {i}: {e}"))?;
    }
    Ok(sum)
}

/// What a successful run reports.
struct Report {
    transfers: u64,
    done: u64,
    refused: u64,
    retries: u64,
    restarts: u64,
    /// Crashes before the debit, between debit and credit, after the credit.
    crashes: [u64; 3],
    checkpoints: u64,
    total: u64,
}

fn bank(transfers: u64, fault_one_in: u64) -> Result<Report, String> {
    let total = ACCOUNTS * OPENING;
    let mut handles: Vec<JoinHandle<Account>> = Vec::new();
    let mut accounts = Vec::new();
    for i in 0..ACCOUNTS {
        let (addr, handle) = ActorBuilder::new()
            .name(format!("account {i}"))
            .capacity(64)
            .spawn(
                Account {
                    balance: OPENING,
                    ledger: Ledger::default(),
                },
                account,
            )
            .map_err(|e| format!("spawn account: {e}"))?;
        accounts.push(addr);
        handles.push(handle);
    }
    let accounts = Rc::new(accounts);

    // Each incarnation of the teller starts fresh, but with its own fault
    // stream, so it does not repeat its predecessor's crashes.
    let incarnation = Rc::new(Cell::new(0u64));
    let injected: Rc<[Cell<u64>; 3]> = Rc::default();
    let (accts, inj) = (accounts.clone(), injected.clone());
    let init = move || {
        incarnation.set(incarnation.get() + 1);
        Teller {
            accounts: accts.clone(),
            faults: Rng::new(0x7e11e5 ^ (incarnation.get() << 20)),
            fault_one_in,
            injected: inj.clone(),
        }
    };
    let sup = Supervisor::new()
        .name("bank supervisor")
        .max_restarts(MAX_RESTARTS)
        .period(RESTART_PERIOD)
        .child(ChildSpec::new("teller", init, teller).capacity(2 * CLIENTS as usize))
        .spawn()
        .map_err(|e| format!("start the teller: {e}"))?;

    let stats = Rc::new(Stats::default());
    let per_client = transfers / (PHASES * CLIENTS);
    let mut checkpoints = 0;
    for phase in 0..PHASES {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|k| {
                let stats = stats.clone();
                spawn(move || client(k, phase, per_client, stats))
                    .map_err(|e| format!("spawn client: {e}"))
            })
            .collect::<Result<_, _>>()?;
        for c in clients {
            let done = c.join().map_err(|e| format!("client proc failed: {e}"));
            if let Err(e) = done.and_then(|r| r) {
                // A client that gives up usually means the supervisor did.
                return Err(if sup.is_finished() {
                    format!("{e}; {}", describe(sup.join()))
                } else {
                    e
                });
            }
        }
        // Every client has its answers: nothing is in flight.
        let sum = audit(&accounts)?;
        if sum != total {
            return Err(format!(
                "after phase {phase}: the balances sum to {sum}, not {total}"
            ));
        }
        checkpoints += 1;
    }

    // The ledgers, id by id.
    let mut debits = HashMap::new();
    let mut credits = HashMap::new();
    for (i, a) in accounts.iter().enumerate() {
        let l = a
            .call(AccountMsg::Ledger, CALL_TIMEOUT)
            .map_err(|e| format!("ledger of account {i}: {e}"))?;
        debits.extend(l.debits);
        credits.extend(l.credits);
    }
    if debits != credits {
        return Err(format!(
            "ledgers disagree: {} ids debited, {} credited",
            debits.len(),
            credits.len()
        ));
    }
    if debits.len() as u64 != stats.done.get() {
        return Err(format!(
            "{} transfers applied, but clients saw {} succeed",
            debits.len(),
            stats.done.get()
        ));
    }

    let restarts = sup.restarts();
    sup.stop();
    sup.join().map_err(|e| format!("supervisor: {e}"))?;
    let crashes = [0, 1, 2].map(|i| injected[i].get());
    if restarts != crashes.iter().sum::<u64>() || restarts == 0 {
        return Err(format!(
            "{crashes:?} faults injected but {restarts} teller restarts"
        ));
    }

    // Shut the accounts down: with their last addresses gone they end and
    // hand back their states.
    drop(accounts);
    let mut end_sum = 0;
    for (i, h) in handles.into_iter().enumerate() {
        end_sum += h
            .join()
            .map_err(|e| format!("account {i} failed: {e}"))?
            .balance;
    }
    if end_sum != total {
        return Err(format!(
            "at the end the balances sum to {end_sum}, not {total}"
        ));
    }
    checkpoints += 1;

    Ok(Report {
        transfers: per_client * PHASES * CLIENTS,
        done: stats.done.get(),
        refused: stats.refused.get(),
        retries: stats.retries.get(),
        restarts,
        crashes,
        checkpoints,
        total,
    })
}

/// How a supervisor ended, in words.
fn describe(r: Result<(), SupervisorError>) -> String {
    match r {
        Ok(()) => "the supervisor ended normally".to_owned(),
        Err(e) => e.to_string(),
    }
}

fn main() {
    let short = std::env::args().any(|a| a == "--short");
    let crash_loop = std::env::args().any(|a| a == "--crash-loop");
    let transfers = if short { 10_000 } else { 200_000 };
    let fault_one_in = if crash_loop { 1 } else { FAULT_ONE_IN };

    // Injected faults are expected: keep their panic messages quiet, and
    // print every other panic as usual.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.payload().is::<InjectedFault>() {
            default_hook(info);
        }
    }));

    let start = Instant::now();
    let result = procrt::run(move || bank(transfers, fault_one_in));
    let elapsed = start.elapsed();
    match result {
        Ok(r) => println!(
            "bank: {} transfers ({} done, {} refused for lack of funds); {} teller restarts \
             (crashes: {} before the debit, {} between debit and credit, {} after the credit), \
             {} client retries; total {} intact at {} checkpoints; {:.1} ms",
            r.transfers,
            r.done,
            r.refused,
            r.restarts,
            r.crashes[0],
            r.crashes[1],
            r.crashes[2],
            r.retries,
            r.total,
            r.checkpoints,
            elapsed.as_secs_f64() * 1e3
        ),
        Err(e) => {
            eprintln!("bank: FAILED: {e}");
            std::process::exit(1);
        }
    }
}
