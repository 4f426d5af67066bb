//! `chan::Select`: readiness, waiting, timeouts, fairness.

use procrt::chan::{channel, sync_channel, Select, TryRecvError};
use std::time::{Duration, Instant};

#[test]
fn select_wakes_when_a_message_arrives_from_another_proc() {
    procrt::run(|| {
        let (tx1, rx1) = channel::<u32>();
        let (tx2, rx2) = channel::<u32>();
        let h = procrt::spawn(move || {
            procrt::sleep(Duration::from_millis(5));
            tx2.send(7).unwrap();
            tx1
        })
        .unwrap();
        let mut sel = Select::new();
        let a = sel.recv(&rx1);
        let b = sel.recv(&rx2);
        let i = sel.ready();
        assert_eq!(i, b);
        assert_ne!(i, a);
        assert_eq!(rx2.try_recv(), Ok(7));
        drop(h.join().unwrap());
    });
}

#[test]
fn a_disconnected_channel_is_ready() {
    procrt::run(|| {
        let (tx, rx) = channel::<u32>();
        drop(tx);
        let mut sel = Select::new();
        let i = sel.recv(&rx);
        assert_eq!(sel.ready(), i);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    });
}

#[test]
fn a_send_case_is_ready_when_a_full_channel_gets_room() {
    procrt::run(|| {
        let (tx, rx) = sync_channel::<u32>(1);
        tx.send(1).unwrap();
        let h = procrt::spawn(move || {
            procrt::sleep(Duration::from_millis(5));
            rx.recv().unwrap() + rx.recv().unwrap()
        })
        .unwrap();
        {
            let mut sel = Select::new();
            let s = sel.send(&tx);
            assert_eq!(sel.try_ready(), None, "full channel reported ready");
            assert_eq!(sel.ready(), s);
        }
        tx.try_send(2).expect("ready send case must not be full");
        assert_eq!(h.join().unwrap(), 3);
    });
}

#[test]
fn ready_timeout_times_out_and_the_proc_is_withdrawn() {
    procrt::run(|| {
        let (tx, rx) = channel::<u32>();
        let t = Instant::now();
        {
            let mut sel = Select::new();
            sel.recv(&rx);
            assert!(sel.ready_timeout(Duration::from_millis(10)).is_err());
        }
        assert!(t.elapsed() >= Duration::from_millis(10));
        // The withdrawn select left no waiter behind: a later send and recv
        // work as usual.
        tx.send(3).unwrap();
        assert_eq!(rx.recv(), Ok(3));
    });
}

#[test]
fn ready_cases_are_chosen_fairly() {
    procrt::run(|| {
        let (tx1, rx1) = channel::<u32>();
        let (tx2, rx2) = channel::<u32>();
        let (tx3, rx3) = channel::<u32>();
        for i in 0..300 {
            tx1.send(i).unwrap();
            tx2.send(i).unwrap();
            tx3.send(i).unwrap();
        }
        let mut counts = [0usize; 3];
        for _ in 0..300 {
            let mut sel = Select::new();
            sel.recv(&rx1);
            sel.recv(&rx2);
            sel.recv(&rx3);
            let i = sel.ready();
            counts[i] += 1;
            let _ = [&rx1, &rx2, &rx3][i].try_recv().unwrap();
        }
        // Every case ready every time: round robin gives each about a third.
        for c in counts {
            assert!((80..=120).contains(&c), "unfair choice: {counts:?}");
        }
    });
}

#[test]
fn a_select_sending_and_receiving_on_one_rendezvous_channel_does_not_spin() {
    // Found by the chan_ops fuzzer: the receive case's registration woke the
    // same select's send entry, so it never parked and nothing else ran.
    procrt::run(|| {
        let (tx, rx) = sync_channel::<u32>(0);
        let tx2 = tx.clone();
        let h = procrt::spawn(move || {
            procrt::sleep(Duration::from_millis(1));
            tx2.send(7).unwrap();
        })
        .unwrap();
        let mut sel = Select::new();
        let _s = sel.send(&tx);
        let r = sel.recv(&rx);
        assert_eq!(sel.ready(), r);
        assert_eq!(rx.try_recv(), Ok(7));
        h.join().unwrap();
    });
}

#[test]
fn a_select_that_takes_another_case_passes_the_room_on() {
    // Found by reading the code (chan_ops encodes it): room on a full
    // channel woke a select that then took another case; the sender parked
    // behind it must still be woken.
    procrt::run(|| {
        let (tx_c, rx_c) = sync_channel::<u32>(1);
        let (tx_d, rx_d) = channel::<u32>();
        tx_c.send(0).unwrap(); // c is full
        let tx_c2 = tx_c.clone();
        let s2 = procrt::spawn(move || {
            let mut sel = Select::new();
            let send_c = sel.send(&tx_c2);
            let recv_d = sel.recv(&rx_d);
            let i = sel.ready();
            assert!(i == send_c || i == recv_d);
            if i == recv_d {
                rx_d.try_recv().unwrap();
            } else {
                tx_c2.try_send(2).unwrap();
            }
            i == recv_d
        })
        .unwrap();
        let s1 = procrt::spawn(move || tx_c.send(1).unwrap()).unwrap();
        tx_d.send(9).unwrap(); // wakes the select
        let first = rx_c.try_recv().unwrap(); // room: wakes the first sender waiter
        assert_eq!(first, 0);
        // Whatever the select chose, the blocked sender gets through.
        let took_d = s2.join().unwrap();
        let mut got = vec![rx_c.recv().unwrap()];
        if !took_d {
            got.push(rx_c.recv().unwrap());
        }
        s1.join().unwrap();
        got.sort();
        assert!(
            got.contains(&1),
            "blocked sender never got through: {got:?}"
        );
    });
}
