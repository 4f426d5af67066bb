//! A capability in the literal sense: one node opens a file and hands the
//! open descriptor to a worker node that cannot open the file itself. The
//! acceptor removes the file's name right after opening it, so no path
//! leads to it any more; the worker is told the old path, fails to open it,
//! and then reads and writes the file through the descriptor it was given.
//!
//! ```text
//! cargo run --example fdpass            # prints what each side sees
//! cargo run --example fdpass -- --short # the same, with checks (CI)
//! ```

use procrt::actor::{spawn_actor, Context, Reply};
use procrt::node;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::time::Duration;

/// The worker: port "read" takes (path, fd), tries the path, uses the fd.
fn worker() {
    procrt::run(|| {
        type Msg = ((String, OwnedFd), Reply<(bool, String)>);
        let reader = spawn_actor(
            (),
            |_: &mut (), ((path, fd), reply): Msg, _: &Context<Msg>| {
                let could_open = File::open(&path).is_ok();
                println!(
                    "fdpass worker {}: open({path:?}) {}",
                    std::process::id(),
                    if could_open {
                        "worked"
                    } else {
                        "failed: no such file"
                    }
                );
                let mut f = File::from(fd);
                let mut text = String::new();
                f.read_to_string(&mut text).expect("read through the fd");
                println!("fdpass worker: read through the descriptor: {text:?}");
                f.write_all(b" -- and the worker wrote this")
                    .expect("write through the fd");
                let _ = reply.send((could_open, text));
            },
        );
        node::export_calls("read", reader, |m: (String, OwnedFd), r| (m, r));
        let parent = node::connect_parent().expect("fdpass worker: no link to the parent");
        parent.wait_closed();
    });
}

fn main() {
    if node::role().as_deref() == Some("fdpass-worker") {
        worker();
        return;
    }
    let short = std::env::args().any(|a| a == "--short");
    procrt::run(move || {
        let dir = std::env::temp_dir().join(format!("procrt-fdpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret.txt");
        std::fs::write(&path, "the secret is 42").unwrap();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        // From here on, no name leads to the file: only the descriptor.
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        println!("fdpass: opened {path:?} and removed its name");

        let w = node::spawn_worker("fdpass-worker").expect("start the worker");
        let fd: OwnedFd = file.try_clone().unwrap().into();
        let (could_open, text) = w
            .link()
            .caller::<(String, OwnedFd), (bool, String)>("read")
            .call((path.display().to_string(), fd), Duration::from_secs(10))
            .expect("call the worker");
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut after = String::new();
        file.read_to_string(&mut after).unwrap();
        println!("fdpass: the file now holds {after:?}");
        if short {
            assert!(!could_open, "the worker opened the file by name");
            assert_eq!(text, "the secret is 42");
            assert_eq!(after, "the secret is 42 -- and the worker wrote this");
            println!("fdpass: ok");
        }
    });
}
