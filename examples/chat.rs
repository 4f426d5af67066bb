//! A broadcast chat server: a proc per connection and a room actor.
//!
//! ```text
//! cargo run --release --example chat                 # serve on 127.0.0.1:7879
//! nc 127.0.0.1 7879                                  # in two or more terminals
//! cargo run --release --example chat -- --short      # 4 in-process clients, checked
//! ```
//!
//! Each connection has two procs: a reader that turns lines into `Say`
//! messages for the room, and a writer that sends the room's lines to the
//! socket from a channel of its own. The room is an actor
//! (`procrt::actor`) whose state is the members' channels: it broadcasts
//! each line to everyone else, so a slow client slows only its own writer.
//! `/nick NAME` renames; the room announces joins, renames and leaves.
//! `--short` runs the server and four clients in one runtime; each client
//! says one line and must receive the other three, and the program exits
//! non-zero otherwise.

use procrt::actor::{spawn_actor, Addr, Context};
use procrt::chan::{channel, Sender};
use procrt::net::{TcpListener, TcpStream};
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::rc::Rc;

const DEFAULT_ADDR: &str = "127.0.0.1:7879";

/// What the room is told.
enum Room {
    /// A member joins with the channel to its writer.
    Join(u64, Sender<Rc<str>>),
    /// A member said a line.
    Say(u64, String),
    /// A member leaves (its connection ended).
    Leave(u64),
}

/// A member of the room.
struct Member {
    name: String,
    out: Sender<Rc<str>>,
}

/// The room's state: members by connection number.
type Members = HashMap<u64, Member>;

fn broadcast(members: &Members, except: u64, line: &str) {
    let line: Rc<str> = Rc::from(line);
    for (&id, m) in members {
        if id != except {
            // A member whose writer is gone is removed by its Leave.
            let _ = m.out.send(line.clone());
        }
    }
}

fn room(members: &mut Members, msg: Room, _: &Context<Room>) {
    match msg {
        Room::Join(id, out) => {
            let name = format!("guest{id}");
            let _ = out.send(Rc::from(format!(
                "welcome, {name}; {} other(s) here; /nick NAME to rename\n",
                members.len()
            )));
            broadcast(members, id, &format!("* {name} joined\n"));
            members.insert(id, Member { name, out });
        }
        Room::Say(id, text) => {
            let Some(m) = members.get_mut(&id) else {
                return;
            };
            if let Some(nick) = text.strip_prefix("/nick ") {
                let nick = nick.trim().to_owned();
                let old = std::mem::replace(&mut m.name, nick.clone());
                broadcast(members, u64::MAX, &format!("* {old} is now {nick}\n"));
            } else {
                let line = format!("{}: {text}\n", m.name);
                broadcast(members, id, &line);
            }
        }
        Room::Leave(id) => {
            if let Some(m) = members.remove(&id) {
                broadcast(members, id, &format!("* {} left\n", m.name));
            }
        }
    }
}

/// Serves one connection: a writer proc fed by the room, and this proc
/// reading lines.
fn connection(id: u64, s: TcpStream, room: Addr<Room>) {
    let s = Rc::new(s);
    let (tx, rx) = channel::<Rc<str>>();
    let ws = s.clone();
    let writer = procrt::spawn(move || {
        for line in rx {
            if (&*ws).write_all(line.as_bytes()).is_err() {
                break;
            }
        }
    });
    if room.send(Room::Join(id, tx)).is_err() {
        return;
    }
    let mut r = BufReader::new(&*s);
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = line.trim_end_matches(['\r', '\n']).to_owned();
                if room.send(Room::Say(id, text)).is_err() {
                    break;
                }
            }
        }
    }
    let _ = room.send(Room::Leave(id));
    // The room dropped our sender: the writer drains and ends.
    if let Ok(w) = writer {
        let _ = w.join();
    }
}

/// Accepts forever.
fn serve(l: TcpListener) {
    let room = spawn_actor(Members::new(), room);
    for id in 1.. {
        match l.accept() {
            Ok((s, _)) => {
                let room = room.clone();
                if let Err(e) = procrt::spawn(move || connection(id, s, room)) {
                    eprintln!("chat: cannot start a proc for a connection: {e}");
                }
            }
            Err(e) => eprintln!("chat: accept: {e}"),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--short") {
        short();
        return;
    }
    let addr = args
        .first()
        .cloned()
        .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    procrt::run(move || {
        let l = TcpListener::bind(&addr).unwrap_or_else(|e| {
            eprintln!("chat: cannot bind {addr}: {e}");
            std::process::exit(1)
        });
        let a = l.local_addr().unwrap();
        println!(
            "chat: listening on {a}; connect with `nc {} {}`",
            a.ip(),
            a.port()
        );
        serve(l);
    });
}

/// Server and four clients in one runtime; checks the broadcast.
fn short() {
    const CLIENTS: usize = 4;
    let r = procrt::run(|| -> Result<(), String> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        let _server = procrt::spawn(move || serve(l));
        // Join one by one (each reads its welcome, so the room has it),
        // then everyone speaks.
        let mut conns = Vec::new();
        for _ in 0..CLIENTS {
            let s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
            let mut r = BufReader::new(s);
            let mut welcome = String::new();
            r.read_line(&mut welcome).map_err(|e| e.to_string())?;
            if !welcome.starts_with("welcome, guest") {
                return Err(format!("unexpected welcome {welcome:?}"));
            }
            conns.push(r);
        }
        for (i, r) in conns.iter().enumerate() {
            r.get_ref()
                .write_all(format!("/nick c{i}\nhello from c{i}\n").as_bytes())
                .map_err(|e| e.to_string())?;
        }
        // Each client must see the others' lines (and skip the notices).
        let readers: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                procrt::spawn(move || -> Result<(), String> {
                    let want: BTreeSet<String> = (0..CLIENTS)
                        .filter(|&j| j != i)
                        .map(|j| format!("c{j}: hello from c{j}\n"))
                        .collect();
                    let mut got = BTreeSet::new();
                    let mut line = String::new();
                    r.get_ref()
                        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                        .map_err(|e| e.to_string())?;
                    while got.len() < want.len() {
                        line.clear();
                        r.read_line(&mut line)
                            .map_err(|e| format!("client c{i}: {e}"))?;
                        if line.starts_with("* ") {
                            continue;
                        }
                        if !want.contains(&line) {
                            return Err(format!("client c{i} got an unexpected line {line:?}"));
                        }
                        got.insert(line.clone());
                    }
                    Ok(())
                })
                .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        for h in readers {
            h.join().map_err(|e| format!("{e:?}"))??;
        }
        Ok(())
    });
    match r {
        Ok(()) => println!("chat --short: {CLIENTS} clients, every line broadcast to the others"),
        Err(e) => {
            eprintln!("chat --short: {e}");
            std::process::exit(1);
        }
    }
}
