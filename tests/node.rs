//! Nodes: worker processes (this test binary run again with a role), typed
//! messages of every `Wire` type, large messages, ordering, fd passing,
//! calls, remote monitors, and a worker killed with SIGKILL.
//!
//! A worker is started with `spawn_worker_with(this binary, [WORKER_TEST,
//! "--exact", ...], role)`; the test `worker_entry` finds the role and plays
//! it (in a normal run it finds none and passes at once).

use procrt::actor::{spawn_actor, Context, Reply};
use procrt::chan::channel;
use procrt::node::{self, Bytes, GlobalId, Link, RemoteDown, Worker};
use procrt::ExitReason;
use std::io::{Read, Seek, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

const WORKER_TEST: &str = "worker_entry";
const T: Duration = Duration::from_secs(20);

fn start(role: &str) -> Worker {
    let exe = std::env::current_exe().unwrap();
    node::spawn_worker_with(
        &exe,
        &[WORKER_TEST, "--exact", "--nocapture", "--test-threads=1"],
        role,
    )
    .expect("start a worker node")
}

/// An actor on port `name` that answers each request with itself.
fn echo_port<T: node::Wire + 'static>(name: &str) {
    let addr = spawn_actor(
        (),
        |_: &mut (), (v, r): (T, Reply<T>), _: &Context<(T, Reply<T>)>| {
            let _ = r.send(v);
        },
    );
    node::export_calls(name, addr, |v: T, r: Reply<T>| (v, r));
}

fn memfd(contents: &[u8]) -> OwnedFd {
    // SAFETY: memfd_create with a valid C string.
    let fd = unsafe { libc::memfd_create(c"procrt-node-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: a fresh fd we own.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    f.write_all(contents).unwrap();
    f.rewind().unwrap();
    f.into()
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut p = [0; 2];
    // SAFETY: room for two fds.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh fds we own.
    unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) }
}

/// The worker side. Roles: "serve" (ports for the tests below, until the
/// parent goes away).
#[test]
fn worker_entry() {
    let Some(role) = node::role() else { return };
    assert_eq!(role, "serve");
    procrt::run(|| {
        // Ports first: the parent may call as soon as the handshake is done.
        echo_port::<u64>("u64");
        echo_port::<i32>("i32");
        echo_port::<bool>("bool");
        echo_port::<char>("char");
        echo_port::<f64>("f64");
        echo_port::<String>("string");
        echo_port::<Bytes>("bytes");
        echo_port::<Vec<u16>>("vec");
        echo_port::<Option<String>>("option");
        echo_port::<(u8, String, Vec<Option<i64>>)>("tuple");
        echo_port::<Result<u32, String>>("result");
        // Writes into the fd it is given (a pipe's write end or a file),
        // and answers with a new memfd holding the text it was sent.
        let fd_addr = spawn_actor(
            (),
            |_: &mut (), (m, r): ((String, OwnedFd), Reply<OwnedFd>), _: &Context<_>| {
                let (text, fd) = m;
                let mut f = std::fs::File::from(fd);
                f.write_all(format!("worker saw: {text}").as_bytes())
                    .unwrap();
                let _ = r.send(memfd(text.as_bytes()));
            },
        );
        node::export_calls("fd", fd_addr, |m: (String, OwnedFd), r: Reply<OwnedFd>| {
            (m, r)
        });
        // Reads the fd it is given to its end and answers with the text.
        let read_addr = spawn_actor(
            (),
            |_: &mut (), (fd, r): (OwnedFd, Reply<String>), _: &Context<_>| {
                let mut text = String::new();
                std::fs::File::from(fd).read_to_string(&mut text).unwrap();
                let _ = r.send(text);
            },
        );
        node::export_calls("read", read_addr, |fd: OwnedFd, r: Reply<String>| (fd, r));
        // Sends every number it gets back to the parent's port "back", in
        // order.
        let (tx, rx) = channel::<u64>();
        node::export_channel("seq", tx);
        // A proc that parks until told to end; "sleeper" names it.
        let (stop_tx, stop_rx) = channel::<()>();
        let sleeper = procrt::spawn(move || {
            let _ = stop_rx.recv();
        })
        .unwrap();
        let gid = GlobalId::local(sleeper.id());
        let stop_tx = std::cell::RefCell::new(Some(stop_tx));
        let ctl = spawn_actor(
            (),
            move |_: &mut (), (cmd, r): (String, Reply<Option<GlobalId>>), _: &Context<_>| match cmd
                .as_str()
            {
                "sleeper" => {
                    let _ = r.send(Some(gid));
                }
                "stop sleeper" => {
                    stop_tx.borrow_mut().take();
                    let _ = r.send(None);
                }
                c if c.starts_with("connect ") => {
                    // Link to a listener by path, and say hello through it.
                    let link =
                        node::connect(&c["connect ".len()..]).expect("connect to the listener");
                    link.addr::<u64>("via_listener").send(7).unwrap();
                    let _ = r.send(None);
                    // Keep the link open until the other side closes it.
                    procrt::spawn(move || drop(link.wait_closed())).unwrap();
                }
                _ => panic!("unknown command {cmd}"),
            },
        );
        node::export_calls("ctl", ctl, |c: String, r: Reply<Option<GlobalId>>| (c, r));
        let parent = node::connect_parent().expect("link to the parent");
        let back = parent.addr::<u64>("back");
        procrt::spawn(move || {
            for n in rx {
                back.send(n).unwrap();
            }
        })
        .unwrap();
        parent.wait_closed();
    });
    std::process::exit(0);
}

fn call<T: node::Wire + 'static>(l: &Link, port: &str, v: T) -> T {
    l.caller::<T, T>(port)
        .call(v, T)
        .unwrap_or_else(|e| panic!("call to {port}: {e:?}"))
}

#[test]
fn every_wire_type_crosses_and_comes_back() {
    procrt::run(|| {
        let w = start("serve");
        let l = w.link();
        assert_eq!(l.peer().0, w.pid());
        assert_eq!(call(l, "u64", u64::MAX - 3), u64::MAX - 3);
        assert_eq!(call(l, "i32", -77), -77);
        assert!(call(l, "bool", true));
        assert_eq!(call(l, "char", 'ж'), 'ж');
        assert_eq!(call(l, "f64", -2.5), -2.5);
        assert_eq!(call(l, "string", "héllo".to_string()), "héllo");
        assert_eq!(
            call(l, "bytes", Bytes(vec![0, 255, 7])),
            Bytes(vec![0, 255, 7])
        );
        assert_eq!(call(l, "vec", vec![1u16, 2, 3]), vec![1, 2, 3]);
        assert_eq!(call(l, "option", Some("x".to_string())), Some("x".into()));
        assert_eq!(call(l, "option", None::<String>), None);
        let t = (9u8, "t".to_string(), vec![Some(-1i64), None]);
        assert_eq!(call(l, "tuple", t.clone()), t);
        assert_eq!(
            call(l, "result", Err::<u32, String>("e".into())),
            Err("e".into())
        );
        // A port with other types, and an unknown port: Gone, link up.
        assert_eq!(
            l.caller::<u32, u32>("u64").call(1, T),
            Err(procrt::actor::CallError::Gone)
        );
        assert_eq!(
            l.caller::<u64, u64>("nope").call(1, T),
            Err(procrt::actor::CallError::Gone)
        );
        assert_eq!(call(l, "u64", 5u64), 5);
    });
}

#[test]
fn a_message_larger_than_the_socket_buffer_arrives_whole() {
    procrt::run(|| {
        let w = start("serve");
        // 3 MiB: many fragments, far beyond the default socket buffers.
        let big: Vec<u8> = (0..3u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
        let back = call(w.link(), "bytes", Bytes(big.clone()));
        assert_eq!(back.0.len(), big.len());
        assert!(back.0 == big);
    });
}

#[test]
fn messages_keep_their_order() {
    procrt::run(|| {
        let (tx, rx) = channel::<u64>();
        node::export_channel("back", tx);
        let w = start("serve");
        let seq = w.link().addr::<u64>("seq");
        for n in 0..20_000 {
            seq.send(n).unwrap();
        }
        for n in 0..20_000 {
            assert_eq!(rx.recv_timeout(T), Ok(n));
        }
    });
}

#[test]
fn fds_of_files_pipes_and_sockets_cross_and_work() {
    procrt::run(|| {
        let w = start("serve");
        let fd_call = w.link().caller::<(String, OwnedFd), OwnedFd>("fd");
        // A pipe: the worker writes into our pipe's write end.
        let (r, wr) = pipe();
        let got = fd_call.call(("pipe".into(), wr), T).unwrap();
        let mut s = String::new();
        std::fs::File::from(r).read_to_string(&mut s).unwrap();
        assert_eq!(s, "worker saw: pipe");
        // Its answer is a memfd (a file made there) holding our text.
        let mut s = String::new();
        std::fs::File::from(got).read_to_string(&mut s).unwrap();
        assert_eq!(s, "pipe");
        // A file opened here, written there.
        let f = memfd(b"");
        let dup = f.try_clone().unwrap();
        fd_call.call(("file".into(), dup), T).unwrap();
        let mut f = std::fs::File::from(f);
        f.rewind().unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "worker saw: file");
        // A socket: one end of a stream pair.
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        fd_call
            .call(("socket".into(), OwnedFd::from(b)), T)
            .unwrap();
        let mut s = String::new();
        (&a).read_to_string(&mut s).unwrap();
        assert_eq!(s, "worker saw: socket");

        // The other way: what this node wrote, the worker reads.
        let read = w.link().caller::<OwnedFd, String>("read");
        let (r, wr) = pipe();
        std::fs::File::from(wr).write_all(b"into the pipe").unwrap();
        assert_eq!(read.call(r, T).unwrap(), "into the pipe");
        assert_eq!(read.call(memfd(b"in a file"), T).unwrap(), "in a file");
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        (&a).write_all(b"over a socket").unwrap();
        a.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read.call(OwnedFd::from(b), T).unwrap(), "over a socket");
    });
}

#[test]
fn remote_monitors_see_normal_ends_and_sigkill_as_node_down() {
    procrt::run(|| {
        let w = start("serve");
        let ctl = w.link().caller::<String, Option<GlobalId>>("ctl");
        let gid = ctl.call("sleeper".into(), T).unwrap().unwrap();
        assert_eq!(gid.node.0, w.pid());
        let (tx, rx) = channel::<RemoteDown>();
        w.link().monitor(gid, &tx);
        // Let the MONITOR arrive before the proc ends.
        assert_eq!(call(w.link(), "u64", 1u64), 1);
        ctl.call("stop sleeper".into(), T).unwrap();
        assert_eq!(
            rx.recv_timeout(T).unwrap(),
            RemoteDown {
                id: gid,
                reason: ExitReason::Normal
            }
        );

        // A second worker, killed while a monitor and a call wait on it.
        let w2 = start("serve");
        let ctl2 = w2.link().caller::<String, Option<GlobalId>>("ctl");
        let gid2 = ctl2.call("sleeper".into(), T).unwrap().unwrap();
        w2.link().monitor(gid2, &tx);
        assert_eq!(call(w2.link(), "u64", 2u64), 2);
        w2.kill().unwrap();
        let down = rx.recv_timeout(T).unwrap();
        assert_eq!(down.id, gid2);
        assert!(matches!(down.reason, ExitReason::NodeDown(_)), "{down:?}");
        let status = w2.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        assert!(w2.link().is_closed());
        assert_eq!(
            w2.link().caller::<u64, u64>("u64").call(1, T),
            Err(procrt::actor::CallError::Gone)
        );
        // The first worker is unaffected.
        assert_eq!(call(w.link(), "u64", 3u64), 3);
        // Monitoring through a closed link: NodeDown at once.
        w2.link().monitor(gid2, &tx);
        assert!(matches!(
            rx.recv_timeout(T).unwrap().reason,
            ExitReason::NodeDown(_)
        ));
        // Monitoring a proc that has ended: NoProc.
        w.link().monitor(gid, &tx);
        assert_eq!(
            rx.recv_timeout(T).unwrap(),
            RemoteDown {
                id: gid,
                reason: ExitReason::NoProc
            }
        );
    });
}

#[test]
fn nodes_that_start_apart_link_through_a_listener() {
    procrt::run(|| {
        let (tx, rx) = channel::<u64>();
        node::export_channel("via_listener", tx);
        let path = format!("@procrt-node-test-{}", std::process::id());
        let listener = node::listen(&path).unwrap();
        let w = start("serve");
        let ctl = w.link().caller::<String, Option<GlobalId>>("ctl");
        let asked = procrt::spawn(move || ctl.call(format!("connect {path}"), T)).unwrap();
        let link = listener.accept().expect("accept the worker");
        assert_eq!(link.peer().0, w.pid());
        assert_eq!(rx.recv_timeout(T), Ok(7));
        assert_eq!(asked.join().unwrap(), Ok(None));
        // The listener's link carries calls like any other.
        assert_eq!(call(&link, "u64", 11u64), 11);
        // A filesystem path works too.
        let dir = std::env::temp_dir().join(format!("procrt-node-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file_path = dir.join("node.sock");
        let fs_listener = node::listen(&file_path).unwrap();
        let ctl = w.link().caller::<String, Option<GlobalId>>("ctl");
        let p = file_path.display().to_string();
        let asked = procrt::spawn(move || ctl.call(format!("connect {p}"), T)).unwrap();
        let link2 = fs_listener.accept().unwrap();
        assert_eq!(link2.peer().0, w.pid());
        assert_eq!(rx.recv_timeout(T), Ok(7));
        assert_eq!(asked.join().unwrap(), Ok(None));
        std::fs::remove_dir_all(&dir).unwrap();
    });
}
